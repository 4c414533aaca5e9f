"""The fused Triton sampler (kernels/sampling.py) draws exactly the reference's tuples, keys and
flat indices from the same seed; the counter-based stream itself is checked against Philox."""

from __future__ import annotations

import pytest
import torch

from hyperkern import library, ops
from hyperkern import reference as ref
from hyperkern._shared import default_region
from tests.grid import CONTIGUOUS, DEVICES, DTYPES, STRIDED, grid, make_layout
from tests.helpers import BACKENDS

# (B, k, dims, n_out_dims, n_local, n_global): awkward sizes, rank 1..4, empty, huge columns
CASES = [
    (1, 1, (1,), 0, 0, 0),
    (2, 5, (7, 9), 1, 2, 3),
    (3, 4, (4, 5, 6), 2, 1, 2),
    (1, 3, (2**30, 5), 1, 2, 2),
    (2, 2, (3, 1, 2, 13), 3, 3, 0),
    (0, 3, (5, 5), 1, 2, 2),
    (2, 0, (5, 5), 1, 2, 2),
]


CASE_IDS = [pytest.param(c, id=str(c).replace(" ", "")) for c in CASES]


# strided where that is a layout (two or more means) and cheap (not the rank-3 case)
@grid(
    {"case": CASE_IDS, "dtype": DTYPES, "contiguous": CONTIGUOUS},
    {"case": [CASE_IDS[i] for i in (1, 3, 4)], "dtype": DTYPES, "contiguous": STRIDED},
    device=DEVICES,
)
def test_sampler_equals_reference(case, dtype, contiguous, device):
    B, k, dims, m, n_local, n_global = case
    upper = torch.tensor([d - 1 for d in dims], dtype=torch.float64)
    mu = torch.rand(
        B, k, len(dims), dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    mu = (mu * upper).to(dtype)
    if B * k:
        mu[0, 0] = upper.to(dtype)  # a mean on the upper bound (rounds up in float32 at 2**30)
    seed = torch.tensor(2**40 + 17)
    args = ([*dims], m, n_local, n_global, list(default_region(dims)))
    mu_kernel = make_layout(mu.to(device), contiguous)
    for cantor in (True, False):
        got = library.sample(mu_kernel, seed.to(device), *args, cantor, True)
        want = library.sample(mu, seed, *args, cantor, False)
        for g, w in zip(got, want, strict=True):
            assert torch.equal(g.cpu(), w)
    points = want[0]
    assert (points >= 0).all() and (points < torch.tensor(dims)).all()


def test_philox_matches_the_published_known_answer():
    # Random123's known-answer test for philox4x32-10, key (0, 0), counter (0, 0, 0, 0).
    word = ref.philox_word0(torch.tensor(0), torch.tensor([0]))
    assert word.item() == 0x6627E8D5


def test_stream_is_uniform_enough():
    words = ref.philox_word0(torch.tensor(7), torch.arange(200_000))
    counts = torch.bincount((words * 16) >> 32, minlength=16).double()
    chi2 = ((counts - counts.mean()) ** 2 / counts.mean()).sum()
    assert chi2 < 50  # 15 degrees of freedom: p < 1e-5 beyond this


@pytest.mark.parametrize("backend", BACKENDS)
def test_ops_sample_tuples_same_seed_same_tuples_on_both_backends(backend):
    mu = torch.rand(2, 3, 2, dtype=torch.float64) * 8
    a = ops.sample_tuples(mu, (9, 9), 2, 2, generator=3, backend=backend)
    b = ops.sample_tuples(mu, (9, 9), 2, 2, generator=3, backend="torch")
    assert torch.equal(a, b)
