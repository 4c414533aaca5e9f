"""Duplicate mask (docs/algorithm.md §3): hyperkern Triton, plain torch (sort + neighbours),
torch.unique.

Sweeps: k (means) and rank r, ``S = 2**r + 4`` samples per mean.
"""

import pytest
import torch
from inputs import tuple_inputs
from measure import run_benchmark, triton_or_skip
from peers import unique_duplicate_mask

from hyperkern import reference

HK_GROUP = "duplicate_mask"
IMPLS = ["triton", "torch", "unique"]


@pytest.mark.parametrize("impl", IMPLS)
def test_duplicate_mask(benchmark, impl, hk_case, hk_device, hk_rounds, hk_memory, hk_generator):
    if impl == "triton":
        fn = triton_or_skip("duplicate_mask", hk_device)
    else:
        fn = {"torch": reference.duplicate_mask, "unique": unique_duplicate_mask}[impl]
    points = tuple_inputs(hk_case, hk_device, hk_generator)
    result = run_benchmark(
        benchmark, lambda: fn(points, hk_case.dims, hk_case.context_size), group="duplicate mask",
        case=hk_case, impl=impl, device=hk_device, rounds=hk_rounds, tracker=hk_memory,
    )  # fmt: skip
    benchmark.extra_info["masked"] = int(result.sum())
    if impl != "torch" and hk_case.points <= 2**16:
        torch.testing.assert_close(result, reference.duplicate_mask(points, hk_case.dims))
