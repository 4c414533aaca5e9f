"""The language-modelling benchmark (bench/lm): corpus split, the three attentions, causality,
parameter matching, the train CLI and the profile's measurement, on tiny sizes."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from bench.lm import corpus, model, paired, profile
from bench.lm.__main__ import main

TINY = dict(seq=24, emb=8, heads=2, depth=2, window=5, k=2, n_local=1, n_global=1, region=4)


def _write_tree(root, n=40):
    """``n`` small .py files in a few folders, plus files the corpus must leave out."""
    for i in range(n):
        folder = root / ("pkg" if i % 3 else "") / ("sub" if i % 5 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"mod_{i}.py").write_text(f"def f_{i}(x):\n    return x * {i}  # é\n")
    for skipped in ("site-packages/extra.py", "pkg/notes.txt", "__pycache__/mod.py"):
        (root / skipped).parent.mkdir(parents=True, exist_ok=True)
        (root / skipped).write_text("x = 1\n")


def test_corpus_split_is_deterministic_and_file_disjoint(tmp_path):
    _write_tree(tmp_path)
    first = corpus.load_corpus(tmp_path, valid=0.25, test=0.25)
    again = corpus.load_corpus(tmp_path, valid=0.25, test=0.25)
    listed = corpus.list_files(tmp_path)
    assert len(listed) == 40 and all(name.endswith(".py") for name in listed)
    assert not any("site-packages" in name or "__pycache__" in name for name in listed)
    names = [set(first.files[s]) for s in corpus.SPLITS]
    assert all(names) and sum(map(len, names)) == len(set().union(*names)) == len(listed)
    for split in corpus.SPLITS:
        assert first.files[split] == again.files[split] == sorted(first.files[split])
        assert torch.equal(first.data[split], again.data[split])
        assert first.data[split].dtype == torch.uint8
        raw = b"".join((tmp_path / name).read_bytes() for name in first.files[split])
        assert bytes(first.data[split].tolist()) == raw
        assert all(corpus.split_of(name, 0.25, 0.25) == split for name in first.files[split])
    assert first.info() == again.info()


def test_windows_are_seeded_and_shifted_by_one():
    data = torch.arange(200, dtype=torch.uint8)
    x, y = corpus.random_windows(data, 16, 3, torch.Generator().manual_seed(1))
    x2, _ = corpus.random_windows(data, 16, 3, torch.Generator().manual_seed(1))
    assert x.shape == y.shape == (3, 16) and torch.equal(x, x2)
    assert torch.equal(y[:, :-1], x[:, 1:])
    inputs, targets = corpus.eval_windows(data, 16, max_chars=64)
    assert inputs.shape == (4, 16) and torch.equal(targets[:, :-1], inputs[:, 1:])
    starts = inputs[:, 0].tolist()
    assert all(b - a >= 16 for a, b in zip(starts, starts[1:], strict=False))
    assert corpus.eval_windows(data, 16)[0].shape == (199 // 16, 16)


@pytest.mark.parametrize("kind", model.KINDS)
def test_each_model_trains_with_finite_loss(kind):
    torch.manual_seed(0)
    lm = model.LanguageModel(model.ModelConfig(attention=kind, **TINY))
    tokens = torch.randint(256, (2, TINY["seq"] + 1))
    loss = model.bits_per_char(lm(tokens[:, :-1], seed=3), tokens[:, 1:])
    loss.backward()
    assert torch.isfinite(loss) and 6 < loss.item() < 10  # about log2(256) = 8 at the start
    grads = [p.grad for p in lm.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize(("t", "window"), [(1, 3), (7, 3), (12, 4), (13, 5), (9, 20)])
def test_window_attention_equals_banded_dense_attention(t, window):
    q, k, v = torch.randn(3, 2, 3, t, 4, dtype=torch.float64).unbind(0)
    i, j = torch.arange(t)[:, None], torch.arange(t)
    band = (j <= i) & (j > i - window)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=band)
    torch.testing.assert_close(model.window_attention(q, k, v, window), want)


def test_naive_attention_equals_dense():
    torch.manual_seed(0)
    dense = model.LanguageModel(model.ModelConfig(attention="dense", **TINY))
    naive = model.LanguageModel(model.ModelConfig(attention="naive", **TINY))
    naive.load_state_dict(dense.state_dict())
    tokens = torch.randint(256, (2, TINY["seq"]))
    torch.testing.assert_close(naive(tokens), dense(tokens), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("kind", model.KINDS)
def test_logits_ignore_later_tokens(kind, training):
    torch.manual_seed(0)
    lm = model.LanguageModel(model.ModelConfig(attention=kind, **TINY)).train(training)
    tokens = torch.randint(256, (2, TINY["seq"]))
    changed = tokens.clone()
    changed[:, 10:] = (changed[:, 10:] + 7) % 256
    with torch.no_grad():
        before, after = lm(tokens, seed=5), lm(changed, seed=5)
    torch.testing.assert_close(before[:, :10], after[:, :10], rtol=0, atol=1e-6)
    assert not torch.allclose(before[:, 10:], after[:, 10:])


def test_parameter_counts_match_across_attentions():
    counts = {}
    for kind in model.KINDS:
        cfg = model.ModelConfig(attention=kind, seq=512)
        counts[kind] = sum(p.numel() for p in model.LanguageModel(cfg).parameters())
        assert counts[kind] == model.parameter_count(cfg)
    assert model.ff_width(model.ModelConfig(attention="dense")) > 4 * 64
    assert max(counts.values()) - min(counts.values()) <= 64 * 2  # within emb per block
    unmatched = model.ModelConfig(attention="dense", seq=512, match_params=False)
    assert model.parameter_count(unmatched) < counts["sparse"]


def test_train_cli_writes_results(tmp_path):
    _write_tree(tmp_path / "src", n=60)
    out = tmp_path / "run"
    argv = [
        "train",
        "--attention",
        "sparse",
        "--seq",
        "16",
        "--steps",
        "3",
        "--batch",
        "2",
        "--emb",
        "8",
        "--heads",
        "2",
        "--depth",
        "1",
        "--k",
        "2",
        "--eval-chars",
        "64",
        "--valid-chars",
        "32",
        "--corpus",
        str(tmp_path / "src"),
        "--valid-fraction",
        "0.2",
        "--test-fraction",
        "0.2",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    main(argv)
    result = json.loads((out / "results.json").read_text())
    assert result["steps"] == 3 and result["device"].startswith("cpu")
    assert result["config"]["attention"] == "sparse" and result["config"]["seq"] == 16
    for key in ("test_bpc", "valid_bpc", "test_bpc_sampled"):
        assert 0 < result["metrics"][key] < 10
    assert result["corpus"]["files"]["test"] > 0 and result["wall_s"] > 0
    assert result["command"].startswith("python -m bench.lm train --attention sparse")
    lines = (out / "log.csv").read_text().splitlines()
    assert lines[0] == "step,train_bpc,valid_bpc,lr,wall_s" and len(lines) == 4


def test_profile_measures_one_configuration_and_tabulates():
    cfg = model.ModelConfig(attention="window", **TINY)
    cpu = torch.device("cpu")
    row = profile.measure_time(cfg, batch=2, steps=2, warmup=1, max_step_s=60.0, device=cpu)
    assert row["seq"] == TINY["seq"] and 0 < row["min_s"] <= row["median_s"]
    row.update(profile.measure_memory(cfg, batch=2, steps=1, device=cpu))
    assert row["peak_bytes"] >= 0 and row["mem_method"] in ("rss_hwm", "ru_maxrss_growth")
    skipped = {"attention": "sparse", "seq": TINY["seq"], "not_run": "first step took 99 s"}
    text = profile.table([row, skipped])
    assert "| window s/step median (min) | sparse s/step median (min) |" in text
    assert f"| {TINY['seq']} | {row['median_s']:.3f} ({row['min_s']:.3f}) | not run |" in text


def test_paired_cli_times_every_variant_in_turn(tmp_path):
    out = tmp_path / "paired.json"
    rows = main(["paired", "--seq", "16", "--rounds", "2", "--batch", "1", "--variant", "dense",
                 "--variant", "sparse:k=2,n_global=0,checkpoint", "--json", str(out)])  # fmt: skip
    assert [r["variant"] for r in rows] == ["dense", "sparse:k=2,n_global=0,checkpoint"]
    assert all(0 < r["min_s"] <= r["median_s"] <= r["max_s"] for r in rows)
    assert json.loads(out.read_text()) == rows
    cfg = paired.parse_variant("sparse:k=2,n_global=0,checkpoint", 16)
    assert (cfg.k, cfg.n_global, cfg.checkpoint, cfg.seq) == (2, 0, True, 16)
    with pytest.raises(ValueError, match="unknown option"):
        paired.parse_variant("sparse:bogus=1", 16)
