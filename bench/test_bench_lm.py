"""Training step of the byte-level language model (bench/lm) with dense, sliding-window, learned
sparse and naive ``(t, t)`` attention, against the sequence length ``t``; and
``lm_train_step_heads64``, dense against bench/LM.md section 4's sparse configuration (heads of 64,
k = 4, no global samples, ``checkpoint=True``).

Each round is one step on random bytes: forward, backward, clipping, AdamW. Groups
``lm_train_step / seq``; ``extra_info`` has the attention, ``t``, batch, parameter count and the
peak memory of one step (bench/measure.py, with glibc's default allocator settings, which make the
CPU figure depend on the allocation history). The numbers to quote, and the bits per character,
come from ``python -m bench.lm profile`` and ``train`` (bench/LM.md).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from lm.model import KINDS, LanguageModel, ModelConfig
from lm.train import make_step
from measure import fits_or_skip, run_benchmark

# scale -> model options, batch, sequence lengths
SIZES = {
    "tiny": (dict(emb=16, heads=2, depth=1, window=8, k=2), 2, (32, 64)),
    "cpu": (dict(emb=64, heads=4, depth=2), 4, (256, 1024)),
    "gpu": (dict(emb=64, heads=4, depth=2), 8, (1024, 4096, 16384)),
}

# bench/LM.md section 4: heads of 64, sparse k = 4 with no global samples and the recompute in
# the backward, against dense at equal parameters (scale -> emb, heads, batch, sequence lengths)
HEADS64 = {
    "tiny": (32, 2, 2, (32,)),
    "cpu": (256, 4, 4, (2048, 4096)),
    "gpu": (256, 4, 8, (4096, 16384)),
}
HEADS64_SPARSE = dict(k=4, n_global=0, checkpoint=True)


def lm_case(attention: str, seq: int, batch: int) -> SimpleNamespace:
    """A case for :func:`measure.run_benchmark`: ``sweep``, ``x`` (= seq) and ``info()``."""
    info = {"attention": attention, "seq": seq, "batch": batch}
    case = dict(sweep="seq", x=seq, attention=attention, id=f"{attention}-seq={seq}")
    return SimpleNamespace(**case, info=lambda: info)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "lm_case" in metafunc.fixturenames:
        _, batch, seqs = SIZES[metafunc.config.getoption("--hk-scale")]
        chosen = [lm_case(kind, seq, batch) for kind in KINDS for seq in seqs]
        metafunc.parametrize("lm_case", chosen, ids=[c.id for c in chosen])
    if "heads64_case" in metafunc.fixturenames:
        _, _, batch, seqs = HEADS64[metafunc.config.getoption("--hk-scale")]
        chosen = [lm_case(kind, seq, batch) for kind in ("dense", "sparse") for seq in seqs]
        metafunc.parametrize("heads64_case", chosen, ids=[c.id for c in chosen])


def test_lm_train_step(benchmark, lm_case, hk_scale, hk_device, hk_rounds, hk_memory):
    options, batch, _ = SIZES[hk_scale]
    cfg = ModelConfig(attention=lm_case.attention, seq=lm_case.x, **options)
    _bench_step(benchmark, cfg, batch, lm_case, "lm_train_step", hk_device, hk_rounds, hk_memory)


def test_lm_train_step_heads64(benchmark, heads64_case, hk_scale, hk_device, hk_rounds, hk_memory):
    emb, heads, batch, _ = HEADS64[hk_scale]
    cfg = ModelConfig(
        attention=heads64_case.attention, seq=heads64_case.x, emb=emb, heads=heads, depth=2,
        **HEADS64_SPARSE,
    )  # fmt: skip
    group = "lm_train_step_heads64"
    _bench_step(benchmark, cfg, batch, heads64_case, group, hk_device, hk_rounds, hk_memory)


def _bench_step(benchmark, cfg, batch, case, group, device, rounds, memory) -> None:
    """One training step of ``cfg``'s model on random bytes, benchmarked in ``group``."""
    if cfg.attention == "naive":  # scores, mask and softmax of (batch, heads, t, t), per block
        fits_or_skip(3 * 4 * batch * cfg.heads * cfg.seq**2 * cfg.depth, device, "(t, t)")
    torch.manual_seed(0)
    model = LanguageModel(cfg).to(device)
    step = make_step(model, torch.optim.AdamW(model.parameters()), lambda _: 1e-3)
    x, y = torch.randint(256, (2, batch, cfg.seq), generator=torch.Generator().manual_seed(0))
    x, y = x.to(device), y.to(device)
    step(x, y, 0)  # lazy state (optimizer moments) and compilation stay out of the numbers
    extra = {"parameters": cfg.info()["parameters"], "attention": cfg.attention}
    loss = run_benchmark(
        benchmark,
        lambda: step(x, y, 1),
        group=group,
        case=case,
        impl=cfg.attention,
        device=device,
        rounds=rounds,
        tracker=memory,
        extra=extra,
    )
    assert torch.isfinite(loss)
