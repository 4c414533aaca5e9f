"""Contraction forward + backward (docs/algorithm.md §5): ``dx = W^T dy`` and
``dv'[j] = dy[row_j] x[col_j]``.

Same implementations and roofline as test_bench_contract_forward.py: the forward's traffic plus
the ideal fused backward's (one gathered row of ``dy`` per nonzero; bench/roofline.py), and for
Triton both segment-key sorts (forward by row, ``dx`` by column) timed apart. Sweeps: nonzeros
(shared W), batch (one W per instance), in/out size.
"""

import pytest
import torch
from inputs import contraction_inputs
from measure import contraction_traffic, fits_or_skip, run_benchmark
from peers import contraction_fn
from sweeps import total_nonzeros

from hyperkern import reference

HK_GROUP = "contract_forward_backward"
IMPLS = ["triton", "torch", "index_add", "coo", "csr"]


@pytest.mark.parametrize("impl", IMPLS)
def test_contract_forward_backward(
    benchmark, impl, hk_case, hk_device, hk_rounds, hk_memory, hk_roofline, hk_generator
):
    fn = contraction_fn(impl, hk_device)
    if impl in ("torch", "index_add"):  # both gather a (b, nnz) copy of x, plus autograd buffers
        fits_or_skip(16 * hk_case.b * hk_case.nnz, hk_device, "(b, nnz) gathered x")
    rows, cols, vprime, x, dy = contraction_inputs(hk_case, hk_device, hk_generator)
    leaves = [vprime.requires_grad_(), x.requires_grad_()]
    traffic, sorts = contraction_traffic(hk_case, vprime.element_size(), hk_roofline, True)

    def step():
        y = fn(rows, cols, vprime, x, hk_case.n_out)
        return (y, *torch.autograd.grad(y, leaves, dy))

    result = run_benchmark(
        benchmark, step, group="contract fwd+bwd", case=hk_case, impl=impl, device=hk_device,
        rounds=hk_rounds, tracker=hk_memory, extra={"total_nnz": total_nonzeros(hk_case)},
        traffic=traffic, bandwidths=hk_roofline, sorts=sorts if impl == "triton" else (),
    )  # fmt: skip
    if impl != "torch" and total_nonzeros(hk_case) <= 2**16:
        y = reference.contract(rows, cols, vprime, x, hk_case.n_out)
        expected = (y, *torch.autograd.grad(y, leaves, dy))
        for got, want in zip(result, expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
