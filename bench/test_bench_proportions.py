"""Proportions forward + backward (docs/algorithm.md §4): hyperkern Triton, plain torch, the
original code.

Peers: ``dense_prop`` (the original code: probability-space ``(points, means)`` matrix).
Sweeps: k (means), rank r, samples per mean S, batch.
"""

import pytest
import torch
from inputs import proportion_inputs
from measure import fits_or_skip, run_benchmark, triton_or_skip
from peers import dense_proportions
from sweeps import dense_elements

from hyperkern import reference

HK_GROUP = "proportions"
IMPLS = ["triton", "torch", "dense_prop"]


def pick(impl, device):
    if impl == "triton":
        return triton_or_skip("proportions", device)
    return {"torch": reference.proportions, "dense_prop": dense_proportions}[impl]


@pytest.mark.parametrize("impl", IMPLS)
def test_proportions(benchmark, impl, hk_case, hk_device, hk_rounds, hk_memory, hk_generator):
    fn = pick(impl, hk_device)
    if impl != "triton":  # (b, P, k, r) differences plus autograd copies of the (b, P, k) matrix
        fits_or_skip(dense_elements(hk_case) * 4 * (hk_case.r + 6), hk_device, "(P, k) matrix")
    points, leaves, duplicates, grad = proportion_inputs(hk_case, hk_device, hk_generator)

    def step():
        out = fn(points, *leaves, duplicates, hk_case.context_size, hk_case.chunk_size)
        return (out, *torch.autograd.grad(out, leaves, grad))

    result = run_benchmark(
        benchmark, step, group="proportions fwd+bwd", case=hk_case, impl=impl, device=hk_device,
        rounds=hk_rounds, tracker=hk_memory,
    )  # fmt: skip
    if impl != "torch" and hk_case.points <= 4096:
        expected = reference.proportions(points, *leaves, duplicates)
        expected = (expected, *torch.autograd.grad(expected, leaves, grad))
        for got, want in zip(result, expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4)
