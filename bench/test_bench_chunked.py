"""Chunked path (docs/algorithm.md §6): the layer's training step with and without
``chunk_size``.

W is ``n x n`` with ``k = n`` means (``S = 8`` samples each) and grows along the sweep. Unchunked
proportions hold ``(P, k)`` densities, quadratic in k; chunked ones ``(P, chunk_size)``, so the
peak memory per sampled point stays flat. Implementations: hyperkern torch and Triton, each
chunked and not.
"""

from dataclasses import replace

import pytest
import torch
from inputs import layer_inputs
from measure import fits_or_skip, run_benchmark
from peers import layer_fn, train_step
from sweeps import dense_elements

HK_GROUP = "chunked"
IMPLS = ["triton", "triton-chunked", "torch", "torch-chunked"]


@pytest.mark.parametrize("impl", IMPLS)
def test_chunked_train_step(
    benchmark, impl, hk_case, hk_device, hk_rounds, hk_memory, hk_generator
):
    backend, _, chunked = impl.partition("-")
    case = hk_case if chunked else replace(hk_case, chunk_size=None)
    fn = layer_fn(backend, case, hk_device)
    if backend == "torch" and not chunked:
        fits_or_skip(dense_elements(case, instances=1) * 4 * 8, hk_device, "(P, k) matrix")
    x, leaves, dy = layer_inputs(case, hk_device, hk_generator)
    result = run_benchmark(
        benchmark, lambda: train_step(fn, x, leaves, dy), group="chunked layer train step",
        case=hk_case, impl=impl, device=hk_device, rounds=hk_rounds, tracker=hk_memory,
        extra={"chunked": bool(chunked)},
    )  # fmt: skip
    benchmark.extra_info["peak_mem_per_point"] = (
        benchmark.extra_info["peak_mem_bytes"] / hk_case.points
    )
    if chunked and hk_case.points <= 4096:
        whole = layer_fn(backend, replace(hk_case, chunk_size=None), hk_device)
        expected = train_step(whole, x, leaves, dy)
        for got, want in zip(result, expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
