"""Triton segment-reduced contraction (kernels/contract.py, the op ``hyperkern::contract``)
against the plain-torch reference.

Runs the kernels under TRITON_INTERPRET=1 on CPU (tests/conftest.py) or on CUDA when present.
"""

from __future__ import annotations

import pytest
import torch
from hyperkern.reference.contract import contract as reference_contract
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperkern import library, ops
from tests.grid import (
    CONTIGUITY,
    CONTIGUOUS,
    DEVICE,
    DEVICES,
    DTYPES,
    HAS_CUDA,
    SIZES_WITH_EMPTY,
    assert_close,
    grid,
    make_layout,
)


def contract(rows, cols, vprime, x, n_out, deterministic=True):
    """The op ``hyperkern::contract`` on its Triton implementation."""
    return ops.contract(rows, cols, vprime, x, n_out, backend="triton", deterministic=deterministic)


def _inputs(B, b, P, n_in, n_out, c, dtype, seed, device=DEVICE, contiguous=True):
    """Random ``rows/cols (B, P)``, ``vprime (B, P)``, ``x (b, n_in[, c])``, both requiring grad;
    all four in a strided layout unless ``contiguous``."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, n_out, (B, P), generator=g)
    cols = torch.randint(0, n_in, (B, P), generator=g)
    vprime = torch.randn(B, P, generator=g, dtype=dtype)
    x = torch.randn((b, n_in) if c is None else (b, n_in, c), generator=g, dtype=dtype)
    rows, cols = (make_layout(t.to(device), contiguous) for t in (rows, cols))
    vprime, x = (make_layout(t.to(device).requires_grad_(), contiguous) for t in (vprime, x))
    return rows, cols, vprime, x


def _check_against_reference(rows, cols, vprime, x, n_out, seed=0, deterministic=True):
    """Forward and both gradients of the kernel equal the reference's (float tolerance)."""
    y = contract(rows, cols, vprime, x, n_out, deterministic=deterministic)
    y_ref = reference_contract(rows, cols, vprime, x, n_out)
    assert y.shape == y_ref.shape and y.dtype == y_ref.dtype
    assert_close(y, y_ref, msg="y")
    g = torch.Generator().manual_seed(seed + 1)
    grad_y = torch.randn(y_ref.shape, generator=g, dtype=y_ref.dtype).to(y_ref.device)
    grads = torch.autograd.grad(y, (vprime, x), grad_y)
    grads_ref = torch.autograd.grad(y_ref, (vprime, x), grad_y)
    for name, got, want in zip(("dvprime", "dx"), grads, grads_ref, strict=True):
        assert got.dtype == want.dtype, name
        assert_close(got, want, msg=name)


# (B, b, P, n_in, n_out, c): per instance (B == b) and shared (B == 1, b == 4); primes and 1.
CASES = [
    (3, 3, 13, 7, 5, None),
    (3, 3, 7, 5, 2, 3),
    (3, 3, 64, 3, 2, 1),
    (3, 3, 0, 5, 3, None),
    (1, 1, 1, 1, 1, None),
    (1, 1, 64, 13, 3, 3),
    (1, 4, 13, 7, 5, None),
    (1, 4, 7, 1, 3, 3),
    (1, 4, 64, 5, 1, 1),
    (1, 4, 0, 3, 2, 3),
    (1, 4, 1, 2, 13, None),
]


# Contiguous float64 on every case, every dtype and layout on a few (the interpreter is slow).
CASE_IDS = [pytest.param(c, id="B{}-b{}-P{}-in{}-out{}-c{}".format(*c)) for c in CASES]
FEW = CASE_IDS[:2] + CASE_IDS[6:8]


@grid(
    {"case": CASE_IDS, "dtype": [torch.float64], "contiguous": CONTIGUOUS},
    {"case": FEW, "dtype": DTYPES, "contiguous": CONTIGUITY},
    device=DEVICES,
)
def test_matches_reference(case, dtype, contiguous, device):
    B, b, P, n_in, n_out, c = case
    args = B, b, P, n_in, n_out, c, dtype, P + 31 * n_in, device, contiguous
    rows, cols, vprime, x = _inputs(*args)
    _check_against_reference(rows, cols, vprime, x, n_out, seed=B + P)


@grid(P=SIZES_WITH_EMPTY, shared=[False, True])
def test_awkward_nonzero_counts_strided(P, shared):
    B, b = (1, 2) if shared else (2, 2)
    rows, cols, vprime, x = _inputs(B, b, P, 6, 3, 2, torch.float64, P, contiguous=False)
    _check_against_reference(rows, cols, vprime, x, 3, seed=P)


@pytest.mark.parametrize("shared", [False, True])
def test_atomic_variant_matches_reference(shared):
    B, b = (1, 4) if shared else (3, 3)
    rows, cols, vprime, x = _inputs(B, b, 13, 5, 3, 2, torch.float64, seed=5)
    _check_against_reference(rows, cols, vprime, x, 3, deterministic=False)


@pytest.mark.parametrize("shared", [False, True])
def test_repeated_pairs_add_up(shared):
    B, b = (1, 3) if shared else (3, 3)
    _, _, vprime, x = _inputs(B, b, 7, 5, 3, None, torch.float64, seed=7)
    rows = torch.full((B, 7), 2, device=DEVICE)
    cols = torch.full((B, 7), 4, device=DEVICE)
    y = contract(rows, cols, vprime, x, 3)
    expected = torch.zeros(b, 3, dtype=torch.float64, device=DEVICE)
    expected[:, 2] = vprime.detach().sum(1) * x.detach()[:, 4]
    assert_close(y, expected)
    _check_against_reference(rows, cols, vprime, x, 3)


def test_out_of_range_rows_and_empty_outputs():
    rows, cols, vprime, x = _inputs(2, 2, 5, 3, 4, None, torch.float64, seed=9)
    assert contract(rows, cols, vprime, x, 0).shape == (2, 0)
    empty_batch = torch.zeros(0, 3, 2, dtype=torch.float64, device=DEVICE)
    assert contract(rows[:1], cols[:1], vprime[:1], empty_batch, 4).shape == (0, 4, 2)
    wide = rows.clone()
    wide[:, 0] = 7  # out of range: contributes nothing (hyperkern.ops.contract rejects it)
    y = contract(wide, cols, vprime, x, 4)
    keep = torch.ones_like(vprime, dtype=torch.bool)
    keep[:, 0] = False
    expected = reference_contract(rows, cols, vprime * keep, x, 4)
    assert_close(y, expected)


def test_mixed_dtypes_promote_like_reference():
    rows, cols, vprime, x = _inputs(3, 3, 7, 5, 3, 2, torch.float64, seed=11)
    x32 = x.detach().float().requires_grad_()
    _check_against_reference(rows, cols, vprime, x32, 3)


@pytest.mark.parametrize("shared", [False, True])
def test_deterministic_runs_are_bitwise_equal(shared):
    B, b = (1, 4) if shared else (3, 3)
    rows, cols, vprime, x = _inputs(B, b, 64, 3, 2, 3, torch.float32, seed=13)
    grad_y = torch.randn(b, 2, 3, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    runs = []
    for _ in range(2):
        y = contract(rows, cols, vprime, x, 2)
        runs.append((y, *torch.autograd.grad(y, (vprime, x), grad_y)))
    for first, second in zip(*runs, strict=True):
        assert torch.equal(first, second)


def test_opcheck_custom_ops():
    rows, cols, vprime, x = _inputs(1, 2, 5, 3, 2, 2, torch.float64, seed=17)
    torch.library.opcheck(library.contract, (rows, cols, vprime, x, 2, True, True))
    grad_y = torch.randn(2, 2, 2, dtype=torch.float64, device=DEVICE)
    torch.library.opcheck(library.contract_dvprime, (rows, cols, x.detach(), grad_y, True))


def test_compiles_without_graph_breaks():
    rows, cols, vprime, x = _inputs(3, 3, 7, 5, 2, None, torch.float64, seed=19)

    def loss(rows, cols, vprime, x):
        return (contract(rows, cols, vprime, x, 2) ** 2).sum()

    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    got = torch.autograd.grad(compiled(rows, cols, vprime, x), (vprime, x))
    want = torch.autograd.grad(loss(rows, cols, vprime, x), (vprime, x))
    for g, w in zip(got, want, strict=True):
        assert_close(g, w)


def _bad(**change):
    rows, cols, vprime, x = _inputs(2, 2, 5, 3, 4, None, torch.float64, seed=0)
    args = {"rows": rows, "cols": cols, "vprime": vprime.detach(), "x": x.detach(), "n_out": 4}
    args.update(change)
    return args


@pytest.mark.parametrize(
    ("change", "error", "name"),
    [
        ({"rows": torch.zeros(2, 5, dtype=torch.int32)}, TypeError, "rows"),
        ({"cols": torch.zeros(2, 5)}, TypeError, "cols"),
        ({"vprime": torch.zeros(2, 5, dtype=torch.int32)}, TypeError, "vprime"),
        ({"x": torch.zeros(2, 3, dtype=torch.int64)}, TypeError, "x"),
        ({"rows": torch.zeros(10, dtype=torch.int64)}, ValueError, "rows"),
        ({"cols": torch.zeros(2, 4, dtype=torch.int64)}, ValueError, "cols"),
        ({"vprime": torch.zeros(2, 6, dtype=torch.float64)}, ValueError, "vprime"),
        ({"x": torch.zeros(2, dtype=torch.float64)}, ValueError, "x"),
        ({"x": torch.zeros(3, 3, dtype=torch.float64)}, ValueError, "B = 1"),
        ({"n_out": -1}, ValueError, "n_out"),
        ({"rows": [[0]]}, TypeError, "rows"),
    ],
)
def test_bad_inputs_raise_naming_the_argument(change, error, name):
    change = {k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v for k, v in change.items()}
    with pytest.raises(error, match=name):
        contract(**_bad(**change))


@settings(max_examples=10, deadline=None)
@given(
    shared=st.booleans(),
    b=st.integers(1, 3),
    P=st.integers(0, 20),
    n_in=st.integers(1, 6),
    n_out=st.integers(1, 4),
    c=st.sampled_from([None, 1, 2]),
    seed=st.integers(0, 2**16),
    contiguous=st.booleans(),
)
def test_random_shapes_match_reference(shared, b, P, n_in, n_out, c, seed, contiguous):
    B = 1 if shared else b
    rows, cols, vprime, x = _inputs(
        B, b, P, n_in, n_out, c, torch.float64, seed, DEVICE, contiguous
    )
    _check_against_reference(rows, cols, vprime, x, n_out, seed=seed)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device (the interpreter covers CPU above)")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shared", [False, True])
def test_cuda_larger_sizes_both_variants(dtype, shared):
    B, b = (1, 16) if shared else (16, 16)
    for deterministic in (True, False):
        rows, cols, vprime, x = _inputs(B, b, 4099, 257, 131, 5 if shared else None, dtype, 23)
        _check_against_reference(rows, cols, vprime, x, 131, deterministic=deterministic)
