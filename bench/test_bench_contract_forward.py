"""Contraction forward (docs/algorithm.md §5), the roofline's copy and its L2 gather.

Implementations: hyperkern Triton, plain torch (gather + scatter_add), ``index_add``, and
``torch.sparse.mm`` on COO and CSR (the sparse matrix is built inside the timed call: the
nonzeros change every training step). Each result carries the roofline model's HBM and
L2-gathered bytes (bench/roofline.py); on CUDA also the bound
``max(HBM bytes / HBM bw, L2 bytes / L2 bw)``, the share of it the best time reaches and, for
Triton, the time of its segment-key sort (timed apart). Sweeps: nonzeros (shared W), batch (one
W per instance), in/out size.
"""

import pytest
import roofline
import torch
from measure import contraction_setup, synchronize
from sweeps import bandwidth_bytes, total_nonzeros

from hyperkern import reference

HK_GROUP = "contract_forward"
IMPLS = ["triton", "triton_atomic", "torch", "index_add", "coo", "csr"]


@pytest.mark.parametrize("impl", IMPLS)
def test_contract_forward(impl, hk_case, hk_device, hk_roofline, hk_generator, hk_run):
    fn, (rows, cols, vprime, x, _), options = contraction_setup(
        impl, hk_case, hk_device, hk_generator, hk_roofline
    )
    result = hk_run(
        lambda: fn(rows, cols, vprime, x, hk_case.n_out), group="contract forward", **options
    )
    if impl != "torch" and total_nonzeros(hk_case) <= 2**16:
        expected = reference.contract(rows, cols, vprime, x, hk_case.n_out)
        torch.testing.assert_close(result, expected, rtol=1e-4, atol=1e-4)


def test_copy_bandwidth(benchmark, hk_device, hk_scale, hk_rounds, hk_bandwidth):
    """The roofline's HBM side: a device-to-device copy (reads and writes ``nbytes``)."""
    nbytes = bandwidth_bytes(hk_scale)
    src = torch.ones(nbytes // 4, device=hk_device)
    dst = torch.empty_like(src)

    def copy():
        dst.copy_(src)
        synchronize(hk_device)

    benchmark.group = "roofline / copy"
    benchmark.extra_info.update(op="roofline", impl="copy", sweep="bytes", x=nbytes,
                                hbm_bytes=2 * nbytes, bandwidth_gbps=hk_bandwidth)  # fmt: skip
    benchmark.pedantic(copy, rounds=hk_rounds, iterations=1, warmup_rounds=1)
    assert torch.equal(dst, src)
    assert hk_bandwidth > 0


def test_l2_gather_bandwidth(benchmark, hk_device, hk_rounds, hk_roofline):
    """The roofline's L2 side: random 256 B rows summed in bags from a 16 MiB buffer (CUDA)."""
    if hk_roofline is None:
        pytest.skip("needs CUDA")
    fn, gathered = roofline.l2_gather_probe(hk_device, hk_roofline.probe)

    def gather():
        out = fn()
        synchronize(hk_device)
        return out

    benchmark.group = "roofline / l2 gather"
    benchmark.extra_info.update(op="roofline", impl="l2_gather", sweep="bytes", x=gathered,
                                l2_bytes=gathered, **hk_roofline.info())  # fmt: skip
    benchmark.pedantic(gather, rounds=hk_rounds, iterations=1, warmup_rounds=1)
    assert hk_roofline.l2 > 0
