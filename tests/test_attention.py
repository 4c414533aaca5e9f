"""hyperkern.SparseSelfAttention against a naive gather-based reference, on both backends."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import hyperkern._shared
from hyperkern import SparseSelfAttention
from hyperkern import reference as ref
from hyperkern.seeds import seed_tensor
from tests.grid import assert_close, grid
from tests.helpers import BACKENDS


def naive(module: SparseSelfAttention, x: torch.Tensor, seed: int) -> torch.Tensor:
    """The module's forward from the plain-torch reference ops and dense gathers."""
    b, t, emb = x.shape
    h, k, d = module.heads, module.k, emb // module.heads
    mu, sigma = module.key_positions(x)
    seed_t = seed_tensor(torch.Generator().manual_seed(seed), x.device)
    region = [min(module.region, t)]
    points, keys, _, _ = ref.sample(mu, seed_t, [t], 0, module.n_local, module.n_global, region,
                                    ref.resolve_key_kind((t,)) == "cantor")  # fmt: skip
    dup = ref.duplicate_mask_from_keys(keys, k)
    vprime = ref.proportions(points, mu, sigma, torch.ones(mu.shape[:2]), dup, k)
    S = points.shape[2]
    cols = points[..., 0].reshape(b * h, t, k * S)
    keep = ~dup.reshape(b * h, t, k * S)
    if module.causal:
        keep &= cols <= torch.arange(t)[:, None]
    q, key, v = module.to_qkv(x).view(b, t, 3, h, d).permute(2, 0, 3, 1, 4).reshape(3, b * h, t, d)
    gathered = torch.gather(
        key[:, None].expand(-1, t, -1, -1), 2, cols[..., None].expand(-1, -1, -1, d)
    )
    scores = (gathered * q[:, :, None, :]).sum(-1) * vprime.reshape(b * h, t, k * S) / math.sqrt(d)
    attention = torch.softmax(scores.masked_fill(~keep, float("-inf")), -1).nan_to_num(0.0)
    values = torch.gather(
        v[:, None].expand(-1, t, -1, -1), 2, cols[..., None].expand(-1, -1, -1, d)
    )
    out = (attention[..., None] * values).sum(2)
    return module.unify(out.view(b, h, t, d).transpose(1, 2).reshape(b, t, emb))


def _module(backend, causal, dtype=torch.float64, **kw):
    torch.manual_seed(0)
    options = dict(heads=2, k=3, n_local=2, n_global=1, region=4, causal=causal)
    return SparseSelfAttention(8, backend=backend, **{**options, **kw}).to(dtype)


@grid(backend=BACKENDS, causal=(False, True), t=(1, 7, 13))
def test_matches_naive_reference(backend, causal, t):
    module = _module(backend, causal)
    x = torch.randn(2, t, 8, dtype=torch.float64, requires_grad=True)
    got = module(x, generator=torch.Generator().manual_seed(4))
    want = naive(module, x, seed=4)
    assert_close(got, want, msg="y")
    grads = torch.autograd.grad(got.square().sum(), [x, *module.parameters()])
    want_grads = torch.autograd.grad(want.square().sum(), [x, *module.parameters()])
    for i, (g, w) in enumerate(zip(grads, want_grads, strict=True)):
        assert_close(g, w, scale=10, msg=f"grad {i}")


@grid(backend=BACKENDS)
def test_causal_outputs_ignore_the_future(backend):
    module = _module(backend, causal=True)
    x = torch.randn(1, 12, 8, dtype=torch.float64)
    changed = x.clone()
    changed[:, 7:] += 5.0
    y, y_changed = (module(t, generator=3) for t in (x, changed))
    assert torch.equal(y[:, :7], y_changed[:, :7])
    assert not torch.allclose(y[:, 7:], y_changed[:, 7:])


@grid(backend=BACKENDS, causal=(False, True), t=(1, 11))
def test_eval_corners_are_the_training_samples_without_random_ones(backend, causal, t):
    x = torch.randn(2, t, 8, dtype=torch.float64)
    corners_only = _module(backend, causal, n_local=0, n_global=0)  # the same weights
    got = _module(backend, causal).eval()(x)
    assert_close(got, naive(corners_only, x, seed=5))
    assert torch.equal(got, _module(backend, causal).eval()(x))


@grid(backend=BACKENDS)
def test_eval_sample_is_the_training_draw_of_seed_0(backend):
    x = torch.randn(2, 10, 8, dtype=torch.float64)
    module = _module(backend, causal=True, eval_mode="sample")
    want = module(x, generator=0)
    assert torch.equal(module.eval()(x), want)
    assert not torch.equal(want, module.train()(x, generator=1))


@grid(backend=BACKENDS, causal=(False, True))
def test_eval_rounded_attends_to_the_rounded_means_once(backend, causal):
    """``eval_mode="round"`` against a dense ``(t, t)`` mask of the rounded means."""
    module = _module(backend, causal, eval_mode="round").eval()
    b, t, emb = 2, 9, 8
    h, d = module.heads, emb // module.heads
    x = torch.randn(b, t, emb, dtype=torch.float64)
    mu, _ = module.key_positions(x)
    rounded = mu.round().long().view(b * h, t, module.k)
    allowed = torch.zeros(b * h, t, t, dtype=torch.bool).scatter_(2, rounded, True)
    if causal:
        allowed &= torch.ones(t, t, dtype=torch.bool).tril()
    q, key, v = module.to_qkv(x).view(b, t, 3, h, d).permute(2, 0, 3, 1, 4).reshape(3, b * h, t, d)
    scores = (q @ key.transpose(1, 2) / math.sqrt(d)).masked_fill(~allowed, float("-inf"))
    out = torch.softmax(scores, -1) @ v
    want = module.unify(out.view(b, h, t, d).transpose(1, 2).reshape(b, t, emb))
    assert_close(module(x), want)
    assert not torch.allclose(module(x), _module(backend, causal).eval()(x))


def test_memory_is_linear_in_t():
    """No intermediate has ``t^2`` elements: every tensor the forward and backward create is
    at most ``t k S`` per instance and head (plus the projections)."""
    t, k = 257, 2
    module = _module("torch", causal=True, k=k, dtype=torch.float32)
    x = torch.randn(1, t, 8, requires_grad=True)

    class Largest(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for o in out if isinstance(out, tuple | list) else (out,):
                if isinstance(o, torch.Tensor):
                    Largest.largest = max(Largest.largest, o.numel())
            return out

    with Largest():
        module(x, generator=0).sum().backward()
    S = 2 + module.n_local + module.n_global
    assert Largest.largest <= module.heads * t * k * S * 8 < t * t


@pytest.mark.parametrize("checkpoint", [False, True])
def test_compiles_fullgraph(checkpoint, monkeypatch):
    # a cold constant cache: filling it while tracing is a side effect a checkpoint cannot hold
    monkeypatch.setattr(hyperkern._shared, "_CONSTANTS", {})
    module = _module("torch", causal=True, dtype=torch.float32, checkpoint=checkpoint)
    x = torch.randn(2, 10, 8, requires_grad=True)
    # inductor once; the checkpointed layer's graph capture through aot_eager (compiles faster)
    compiled = torch.compile(
        module, fullgraph=True, backend="aot_eager" if checkpoint else "inductor"
    )
    got = compiled(x, generator=torch.tensor(5))
    want = module(x, generator=torch.tensor(5))
    assert_close(got, want)
    assert_close(torch.autograd.grad(got.sum(), x)[0], torch.autograd.grad(want.sum(), x)[0])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"emb": 10, "heads": 4}, ValueError, "multiple of heads"),
        ({"emb": 8, "k": 0}, ValueError, "k must be"),
        ({"emb": 8, "backend": "cuda"}, ValueError, "backend"),
        ({"emb": 8, "eval_mode": "mean"}, ValueError, "eval_mode must be one of"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, error, match):
    with pytest.raises(error, match=match):
        SparseSelfAttention(**kwargs)


def test_bad_input_names_the_shape():
    module = _module("torch", causal=False, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"\(b, t, emb=8\)"):
        module(torch.randn(2, 5, 7))


@pytest.mark.parametrize("causal", [False, True])
def test_every_row_keeps_a_key_so_outputs_stay_finite(causal):
    """Means pushed to the ends of their range (huge source outputs), in both modes: no row is
    left without a key, so the softmax never sees an all -inf row (no NaN)."""
    module = _module("torch", causal, dtype=torch.float32, n_local=0, n_global=0)
    with torch.no_grad():
        module.to_params[-1].bias.mul_(1e4).add_(torch.randn_like(module.to_params[-1].bias) * 1e4)
    x = 100 * torch.randn(3, 17, 8, requires_grad=True)
    for train in (True, False):
        module.train(train)
        y = module(x, generator=torch.Generator().manual_seed(1))
        (grad,) = torch.autograd.grad(y.sum(), x)
        assert y.isfinite().all() and grad.isfinite().all()


@pytest.mark.parametrize("causal", [False, True])
def test_checkpoint_recomputes_the_same_samples(causal):
    """``checkpoint=True`` keeps only x and recomputes the layer in the backward: the same seed
    draws the same samples, so outputs and every gradient equal the plain layer's; the global
    RNG (generator=None) is read once per step either way."""
    x = torch.randn(2, 11, 8, dtype=torch.float64, requires_grad=True)
    results = []
    for checkpoint in (False, True):
        module = _module("torch", causal, checkpoint=checkpoint)
        torch.manual_seed(5)
        y = module(x)
        grads = torch.autograd.grad(y.square().sum(), [x, *module.parameters()])
        results.append((y, grads, torch.randint(1 << 30, ())))
    (y0, grads0, next0), (y1, grads1, next1) = results
    assert torch.equal(y0, y1) and torch.equal(next0, next1)
    for g0, g1 in zip(grads0, grads1, strict=True):
        assert torch.equal(g0, g1)
