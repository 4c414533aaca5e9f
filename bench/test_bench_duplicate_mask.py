"""Duplicate mask (docs/algorithm.md §3): hyperkern Triton, plain torch (sort + neighbours),
torch.unique.

Sweeps: k (means) and rank r, ``S = 2**r + 4`` samples per mean. Each result carries the
roofline model's bytes (keys + mark kernel, bench/roofline.py); on CUDA also the bound and, for
the two sort-based paths, the time of their sort of each context's keys (timed apart).
"""

import math

import pytest
import roofline
import torch
from inputs import tuple_inputs
from measure import run_benchmark, triton_or_skip
from peers import unique_duplicate_mask

from hyperkern import reference

HK_GROUP = "duplicate_mask"
IMPLS = ["triton", "torch", "unique"]


@pytest.mark.parametrize("impl", IMPLS)
def test_duplicate_mask(
    benchmark, impl, hk_case, hk_device, hk_rounds, hk_memory, hk_roofline, hk_generator
):
    if impl == "triton":
        fn = triton_or_skip("duplicate_mask", hk_device)
    else:
        fn = {"torch": reference.duplicate_mask, "unique": unique_duplicate_mask}[impl]
    points = tuple_inputs(hk_case, hk_device, hk_generator)
    traffic = roofline.duplicate_mask(hk_case.b * hk_case.points, hk_case.r)
    sorts = roofline.duplicate_mask_sorts(
        hk_case.b, hk_case.k, hk_case.samples, hk_case.context_size, math.prod(hk_case.dims)
    )
    result = run_benchmark(
        benchmark, lambda: fn(points, hk_case.dims, hk_case.context_size), group="duplicate mask",
        case=hk_case, impl=impl, device=hk_device, rounds=hk_rounds, tracker=hk_memory,
        traffic=traffic, bandwidths=hk_roofline, sorts=sorts if impl != "unique" else (),
    )  # fmt: skip
    benchmark.extra_info["masked"] = int(result.sum())
    if impl != "torch" and hk_case.points <= 2**16:
        torch.testing.assert_close(result, reference.duplicate_mask(points, hk_case.dims))
