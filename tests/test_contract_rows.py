"""The row-grouped contraction ``hyperkern::contract_rows`` (+ ``contract_rows_dot``): every
output row holds ``m`` nonzeros (sampled attention). Both implementations, forward and every
gradient, against the general ``contract`` / ``contract_dvprime`` of the plain-torch reference
on the same W written as ``(row, col)`` pairs; gradcheck and opcheck of the ops.
"""

from __future__ import annotations

import pytest
import torch

from hyperkern import library, reference
from tests.grid import CONTIGUITY, CONTIGUOUS, DEVICE, DTYPES, assert_close, grid, make_layout

# (B, b, n, m, n_in, c): per instance (B == b), shared (B == 1 < b), empties, primes and 1.
CASES = [
    (3, 3, 5, 7, 11, 3),
    (2, 2, 13, 1, 3, 1),
    (1, 4, 6, 3, 5, 2),
    (1, 1, 1, 1, 1, 1),
    (2, 2, 0, 3, 4, 2),
    (2, 2, 3, 0, 4, 2),
    (1, 3, 4, 5, 17, 16),
]
CASE_IDS = [pytest.param(c, id="B{}-b{}-n{}-m{}-in{}-c{}".format(*c)) for c in CASES]
BACKENDS = (pytest.param(False, id="torch"), pytest.param(True, id="triton"))


def _inputs(B, b, n, m, n_in, c, dtype, seed, contiguous=True):
    g = torch.Generator().manual_seed(seed)
    cols = torch.randint(0, n_in, (B, n, m), generator=g)
    vprime = torch.randn(B, n, m, generator=g, dtype=dtype)
    x = torch.randn(b, n_in, c, generator=g, dtype=dtype)
    z = torch.randn(b, n, c, generator=g, dtype=dtype)
    cols = make_layout(cols.to(DEVICE), contiguous)
    return cols, *(make_layout(t.to(DEVICE).requires_grad_(), contiguous) for t in (vprime, x, z))


def _as_pairs(cols):
    """The same W as ``(rows, cols)`` pairs ``(B, n m)`` for the general ops."""
    B, n, m = cols.shape
    rows = torch.arange(n, device=cols.device).repeat_interleave(m).expand(B, n * m)
    return rows, cols.reshape(B, n * m)


@grid(
    {"case": CASE_IDS, "dtype": [torch.float64], "contiguous": CONTIGUOUS, "triton": BACKENDS},
    {"case": CASE_IDS[:3], "dtype": DTYPES, "contiguous": CONTIGUITY, "triton": BACKENDS},
)
def test_matches_general_contraction(case, dtype, contiguous, triton):
    B, b, n, m, n_in, c = case
    cols, vprime, x, z = _inputs(*case, dtype, seed=sum(case), contiguous=contiguous)
    rows, flat = _as_pairs(cols)
    y = library.contract_rows(cols, vprime, x, triton)
    y_ref = reference.contract(rows, flat, vprime.reshape(B, n * m), x, n)
    assert_close(y, y_ref, msg="y")
    s = library.contract_rows_dot(cols, x, z, triton)
    s_ref = reference.contract_dvprime(rows, flat, x, z).view(B, n, m)
    assert s.shape == (B, n, m)
    assert_close(s, s_ref, msg="scores")
    g = torch.Generator().manual_seed(1)
    grad_y, grad_s = (
        torch.randn(y.shape, generator=g, dtype=dtype),
        torch.randn(s.shape, dtype=dtype),
    )
    for got, want, grad, inputs, name in (
        (y, y_ref, grad_y, (vprime, x), "contract_rows"),
        (s, s_ref, grad_s, (x, z), "contract_rows_dot"),
    ):
        grads = torch.autograd.grad(got, inputs, grad.to(DEVICE), allow_unused=True)
        wants = torch.autograd.grad(want, inputs, grad.to(DEVICE), allow_unused=True)
        for a, w in zip(grads, wants, strict=True):
            assert_close(a, w, msg=f"{name} gradient")


@pytest.mark.parametrize("shared", [False, True])
def test_gradcheck_and_double_backward_on_the_reference(shared):
    B, b = (1, 3) if shared else (2, 2)
    cols, vprime, x, z = _inputs(B, b, 4, 3, 5, 2, torch.float64, seed=3)
    # a repeated column in a row: its two nonzeros add up
    cols[:, 0, 1] = cols[:, 0, 0]
    assert torch.autograd.gradcheck(
        lambda v, x: library.contract_rows(cols, v, x, False), (vprime, x)
    )
    assert torch.autograd.gradcheck(
        lambda x, z: library.contract_rows_dot(cols, x, z, False), (x, z)
    )
    assert torch.autograd.gradgradcheck(
        lambda v, x: library.contract_rows(cols, v, x, False), (vprime, x)
    )


def test_opcheck_custom_ops():
    cols, vprime, x, z = _inputs(2, 2, 3, 4, 5, 2, torch.float64, seed=5)
    torch.library.opcheck(library.contract_rows, (cols, vprime, x, True))
    torch.library.opcheck(library.contract_rows_dot, (cols, x, z, True))
    torch.library.opcheck(library.contract_rows, (cols[:1], vprime[:1], x, False))


def test_half_precision_runs_in_float32():
    cols, vprime, x, _ = _inputs(2, 2, 5, 3, 7, 4, torch.float64, seed=7)
    want = library.contract_rows(cols, vprime, x, False)
    for dtype in (torch.float16, torch.bfloat16):
        for triton in (False, True):
            got = library.contract_rows(cols, vprime.to(dtype), x.to(dtype), triton)
            assert got.dtype == dtype
            assert_close(got, want, dtype=dtype, scale=4.0)
