"""Contraction forward + backward (docs/algorithm.md §5): ``dx = W^T dy`` and
``dv'[j] = dy[row_j] x[col_j]``.

Same implementations and roofline as test_bench_contract_forward.py: the forward's traffic plus
the ideal fused backward's (one gathered row of ``dy`` per nonzero; bench/roofline.py), and for
Triton both segment-key sorts (forward by row, ``dx`` by column) timed apart. Sweeps: nonzeros
(shared W), batch (one W per instance), in/out size.
"""

import pytest
import torch
from measure import contraction_setup
from sweeps import total_nonzeros

from hyperkern import reference

HK_GROUP = "contract_forward_backward"
IMPLS = ["triton", "triton_atomic", "torch", "index_add", "coo", "csr"]


@pytest.mark.parametrize("impl", IMPLS)
def test_contract_forward_backward(impl, hk_case, hk_device, hk_roofline, hk_generator, hk_run):
    fn, (rows, cols, vprime, x, dy), options = contraction_setup(
        impl, hk_case, hk_device, hk_generator, hk_roofline, backward=True
    )
    leaves = [vprime.requires_grad_(), x.requires_grad_()]

    def step():
        y = fn(rows, cols, vprime, x, hk_case.n_out)
        return (y, *torch.autograd.grad(y, leaves, dy))

    result = hk_run(step, group="contract fwd+bwd", **options)
    if impl != "torch" and total_nonzeros(hk_case) <= 2**16:
        y = reference.contract(rows, cols, vprime, x, hk_case.n_out)
        expected = (y, *torch.autograd.grad(y, leaves, dy))
        for got, want in zip(result, expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
