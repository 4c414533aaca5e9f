"""Property-based contracts of the public API (hypothesis): shapes, finiteness, determinism,
linearity in x, and clear errors for bad arguments."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperkern import SparseLayer, sparse_layer

shapes = st.lists(st.integers(1, 6), min_size=1, max_size=2).map(tuple)


@st.composite
def layers(draw):
    in_shape, out_shape = draw(shapes), draw(shapes)
    r = len(in_shape) + len(out_shape)
    k = draw(st.integers(1, 7))
    b = draw(st.integers(0, 4))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    per_instance = draw(st.booleans())
    lead = (b, k) if per_instance else (k,)
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    scale = draw(st.sampled_from([1.0, 10.0, 100.0]))  # raw parameters far into the tails too
    params = [
        (torch.randn(*lead, r, generator=gen, dtype=torch.float64) * scale).to(dtype),
        (torch.randn(*lead, generator=gen, dtype=torch.float64) * scale).to(dtype),
        torch.randn(*lead, generator=gen, dtype=torch.float64).to(dtype),
    ]
    x = torch.randn(b, *in_shape, generator=gen, dtype=torch.float64).to(dtype)
    options = dict(
        n_local=draw(st.integers(0, 3)),
        n_global=draw(st.integers(0, 3)),
        context_size=draw(st.none() | st.integers(1, 8)),
        chunk_size=draw(st.none() | st.integers(1, 8)),
        backend="torch",
    )
    return x, params, out_shape, options


@settings(max_examples=40, deadline=None, derandomize=True)
@given(case=layers(), seed=st.integers(0, 2**64 - 1))
def test_shape_finiteness_determinism_and_linearity(case, seed):
    x, params, out_shape, options = case
    leaves = [p.clone().requires_grad_() for p in params]
    y = sparse_layer(x, *leaves, out_shape, generator=seed, **options)
    assert y.shape == (x.shape[0], *out_shape) and y.dtype == x.dtype
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, sparse_layer(x, *params, out_shape, generator=seed, **options))
    if x.shape[0]:
        grads = torch.autograd.grad(y.square().sum(), leaves, allow_unused=True)
        assert all(g is None or torch.isfinite(g).all() for g in grads)
    if params[0].dim() == 2:  # one W for the batch: y is linear in x for a fixed seed
        x2 = torch.randn_like(x)
        combined = sparse_layer(2 * x + x2, *params, out_shape, generator=seed, **options)
        parts = 2 * y.detach() + sparse_layer(x2, *params, out_shape, generator=seed, **options)
        tol = 1e-4 if x.dtype == torch.float32 else 1e-10
        torch.testing.assert_close(combined, parts, rtol=tol, atol=tol)


@settings(max_examples=20, deadline=None, derandomize=True)
@given(case=layers(), mode=st.sampled_from(["round", "expected", "sample"]))
def test_eval_is_deterministic_and_ignores_the_generator(case, mode):
    x, params, out_shape, options = case
    a = sparse_layer(x, *params, out_shape, training=False, eval_mode=mode, **options)
    b = sparse_layer(x, *params, out_shape, training=False, eval_mode=mode, generator=5, **options)
    assert a.shape == (x.shape[0], *out_shape) and torch.isfinite(a).all()
    torch.testing.assert_close(a, b)


junk = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True),
    st.integers(-(2**70), 2**70),
    st.text(max_size=3),
    st.lists(st.integers(-3, 3), max_size=3),
)
OPTIONS = [
    "n_local",
    "n_global",
    "region",
    "sigma_scale",
    "min_sigma",
    "context_size",
    "chunk_size",
    "generator",
    "backend",
    "deterministic",
    "validate",
    "eval_mode",
    "eval_samples",
]


@settings(max_examples=150, deadline=None, derandomize=True)
@given(name=st.sampled_from(OPTIONS), value=junk)
def test_any_option_value_is_accepted_or_refused_with_a_named_error(name, value):
    """Never a crash deep inside: either it runs, or a TypeError/ValueError names the option."""
    x, means, sigmas, values = torch.randn(2, 4), torch.randn(3, 2), torch.zeros(3), torch.ones(3)
    try:
        y = sparse_layer(x, means, sigmas, values, (5,), **{name: value})
    except (TypeError, ValueError) as error:
        assert name.split("_")[0] in str(error) or name in str(error), str(error)
    else:
        assert y.shape == (2, 5) and torch.isfinite(y).all()


@settings(max_examples=30, deadline=None, derandomize=True)
@given(in_shape=shapes, out_shape=shapes, k=st.integers(1, 5), bad=st.integers(1, 3))
def test_modules_refuse_inputs_of_another_shape(in_shape, out_shape, k, bad):
    layer = SparseLayer(in_shape, out_shape, k=k)
    wrong = tuple(s + bad for s in in_shape)
    with pytest.raises(ValueError, match="x must have shape"):
        layer(torch.randn(2, *wrong))
