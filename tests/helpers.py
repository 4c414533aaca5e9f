"""Small builders shared by the tests."""

from __future__ import annotations

import pytest
import torch

from hyperkern import reference as ref
from tests.grid import INTERPRETING


def random_problem(
    B: int,
    k: int,
    dims: tuple[int, ...],
    n_local: int = 2,
    n_global: int = 2,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    context_size: int | None = None,
):
    """Sampled points, means, variances, values and duplicate mask for one random layer."""
    gen = torch.Generator().manual_seed(seed)
    r = len(dims)
    means = torch.randn(B, k, r, generator=gen, dtype=dtype)
    sigmas = torch.randn(B, k, generator=gen, dtype=dtype)
    values = torch.randn(B, k, generator=gen, dtype=dtype)
    mu = ref.transform_means(means, dims)
    sigma = ref.transform_sigmas(sigmas, dims)
    points = ref.sample_tuples(mu, dims, n_local, n_global, generator=gen)
    dup = ref.duplicate_mask(points, dims, context_size)
    return points, mu, sigma, values, dup


#: both backends on CPU tensors: Triton runs there only under its interpreter
BACKENDS = [
    "torch",
    pytest.param(
        "triton",
        marks=pytest.mark.skipif(not INTERPRETING, reason="CPU tensors need TRITON_INTERPRET=1"),
    ),
]
