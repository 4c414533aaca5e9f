"""float16 / bfloat16 through every op, kernel and module, and the kernels' launch limits.

Half inputs compute in float32 (docs/algorithm.md §8), so each result is compared with the
float64 reference on the same (rounded) inputs within :data:`tests.grid.TOLERANCE` of its dtype.
Both backends run: the reference on CPU, the Triton kernels under the interpreter (or CUDA).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from hyperkern.kernels import contract as kernel_contract
from hyperkern.kernels import proportions as kernel_proportions
from hyperkern.kernels.hyper_linear import hyper_linear
from hyperkern.reference.hyper_linear import hyper_linear as reference_hyper_linear

import hyperkern
from hyperkern import ops
from hyperkern import reference as ref
from tests.grid import DEVICE, HALF_DTYPES, HAS_CUDA, assert_close, grid, magnitude
from tests.helpers import BACKENDS, INTERPRETING

TRITON = pytest.mark.skipif(
    not (INTERPRETING or HAS_CUDA), reason="Triton needs CUDA or the interpreter"
)


def _problem(dtype, seed=0, B=2, k=7, S=5, r=2, spread=6):
    g = torch.Generator().manual_seed(seed)
    points = torch.randint(0, spread, (B, k, S, r), generator=g)
    mu = torch.rand(B, k, r, generator=g, dtype=torch.float64) * spread
    sigma = 0.3 + 2 * torch.rand(B, k, r, generator=g, dtype=torch.float64)
    values = torch.randn(B, k, generator=g, dtype=torch.float64)
    dup = ref.duplicate_mask(points, (spread,) * r)
    floats = [t.to(dtype).double() for t in (mu, sigma, values)]  # the values half can hold
    return points, floats, dup


@grid(dtype=HALF_DTYPES, backend=BACKENDS)
def test_proportions_in_half(dtype, backend):
    points, floats, dup = _problem(dtype)
    half = [t.to(dtype).requires_grad_() for t in floats]
    full = [t.clone().requires_grad_() for t in floats]
    got = ops.proportions(points, *half, dup, backend=backend)
    want = ops.proportions(points, *full, dup, backend="torch")
    assert got.dtype == dtype
    assert_close(got, want, dtype, magnitude(want), msg="v'")
    grad = torch.randn(want.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    got_grads = torch.autograd.grad(got, half, grad.to(dtype))
    want_grads = torch.autograd.grad(want, full, grad.to(dtype).double())
    for name, g, w in zip(("dmu", "dsigma", "dvalues"), got_grads, want_grads, strict=True):
        assert g.dtype == dtype, name
        assert_close(g, w, dtype, magnitude(w), msg=name)


@grid(dtype=HALF_DTYPES, backend=BACKENDS, shared=(True, False))
def test_contract_in_half(dtype, backend, shared):
    g = torch.Generator().manual_seed(3)
    B, b, P, n_in, n_out, c = (1 if shared else 3), 3, 17, 6, 5, 2
    rows = torch.randint(0, n_out, (B, P), generator=g)
    cols = torch.randint(0, n_in, (B, P), generator=g)
    vprime = torch.randn(B, P, generator=g, dtype=torch.float64).to(dtype).double()
    x = torch.randn(b, n_in, c, generator=g, dtype=torch.float64).to(dtype).double()
    half = [t.to(dtype).requires_grad_() for t in (vprime, x)]
    full = [t.clone().requires_grad_() for t in (vprime, x)]
    got = ops.contract(rows, cols, *half, n_out, backend=backend)
    want = ops.contract(rows, cols, *full, n_out, backend="torch")
    assert got.dtype == dtype
    assert_close(got, want, dtype, magnitude(want), msg="y")
    grad_y = torch.randn(want.shape, generator=g, dtype=torch.float64).to(dtype)
    for name, gh, gw in zip(
        ("dvprime", "dx"),
        torch.autograd.grad(got, half, grad_y),
        torch.autograd.grad(want, full, grad_y.double()),
        strict=True,
    ):
        assert gh.dtype == dtype, name
        assert_close(gh, gw, dtype, magnitude(gw), msg=name)


@TRITON
@grid(dtype=HALF_DTYPES)
def test_hyper_linear_kernel_in_half(dtype):
    g = torch.Generator().manual_seed(5)
    shapes = {"x": (3, 5), "e": (3, 4), "weight": (7 * 5, 4), "bias": (7 * 5,)}
    full = {
        n: torch.randn(s, generator=g, dtype=torch.float64).to(dtype) for n, s in shapes.items()
    }
    y = hyper_linear(*(t.to(DEVICE) for t in full.values()))
    want = reference_hyper_linear(*(t.double() for t in full.values()))
    assert y.dtype == dtype
    assert_close(y.cpu(), want, dtype, magnitude(want), msg="y")


@grid(dtype=HALF_DTYPES, backend=BACKENDS)
def test_layers_train_in_half(dtype, backend):
    """Every module runs forward and backward on half parameters and inputs, finite."""
    torch.manual_seed(0)
    modules = [
        hyperkern.SparseLinear(12, 5, k=9, backend=backend),
        hyperkern.SparseLayer((12,), (5,), k=9, backend=backend),
    ]
    for module in modules:
        module = module.to(dtype)
        x = torch.randn(4, 12, dtype=dtype, requires_grad=True)
        y = module(x)
        assert y.dtype == dtype and y.shape == (4, 5)
        y.float().square().sum().backward()
        for name, p in module.named_parameters():
            assert p.grad is not None and p.grad.dtype == dtype, name
            assert torch.isfinite(p.grad).all(), name
        assert torch.isfinite(x.grad).all()


@grid(backend=BACKENDS)
def test_autocast_bfloat16_gives_the_float32_result_within_tolerance(backend):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(10, 16), hyperkern.SparseLinear(16, 4, k=12, backend=backend)
    )
    x = torch.randn(5, 10)
    torch.manual_seed(7)
    want = model(x)
    torch.manual_seed(7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = model(x)
    assert_close(got.float(), want.double(), torch.bfloat16, magnitude(want), msg="y")


# ---- limits -----------------------------------------------------------------------------------


def test_contraction_grid_guard_names_the_limit():
    with pytest.raises(ValueError, match="2\\^31 - 1"):
        kernel_contract._check_grid(2**31)
    assert kernel_contract._check_grid(2**31 - 1) == 2**31 - 1


def test_autotune_keys_are_bucketed():
    assert [kernel_contract._bucket(n) for n in (0, 1, 3, 64, 65, 1000)] == [1, 1, 4, 64, 128, 1024]


def test_deterministic_tiles_do_not_depend_on_timing():
    """The deterministic kernels' tiles are a pure function of the sizes."""
    assert kernel_contract._pinned(3) == kernel_contract._pinned(3)
    assert kernel_contract._pinned(1000) == kernel_contract._pinned(1000)
    assert kernel_proportions._tiles(2, False) == kernel_proportions._tiles(2, False)
    assert not hasattr(kernel_proportions, "_lognorm")  # no autotuner left in proportions


_BITS = """
import os, sys, torch
import hyperkern
torch.manual_seed(0)
gen = torch.Generator().manual_seed(5)
layer = hyperkern.SparseLayer((40,), (30,), k=64, backend=sys.argv[1], generator=gen)
x = torch.randn(8, 40, requires_grad=True)
y = layer(x)
y.square().sum().backward()
grads = [p.grad.flatten() for p in layer.parameters()]
blob = torch.cat([y.detach().flatten(), x.grad.flatten(), *grads])
sys.stdout.write(blob.numpy().tobytes().hex())
"""


@pytest.mark.slow
@grid(backend=BACKENDS)
def test_deterministic_step_is_bitwise_equal_across_processes(backend):
    """Two fresh processes (each with its own autotuning state) give the same bits."""
    runs = [
        subprocess.run(
            [sys.executable, "-c", _BITS, backend], capture_output=True, text=True, check=True
        ).stdout
        for _ in range(2)
    ]
    assert runs[0] and runs[0] == runs[1]


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="grid limits bind on CUDA launches only")
def test_cuda_launches_past_the_second_axis_limit():
    """More than 65535 instances / contexts: every grid puts them on axis 0."""
    B, P, n = 70_000, 3, 4
    rows = torch.randint(0, n, (B, P), device="cuda")
    cols = torch.randint(0, n, (B, P), device="cuda")
    vprime = torch.randn(B, P, device="cuda")
    x = torch.randn(B, n, 1, device="cuda")
    for deterministic in (True, False):
        y = kernel_contract.contract_forward(rows, cols, vprime, x, n, deterministic)
        want = ref.contract(rows, cols, vprime, x, n)
        torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)
    dv = kernel_contract.contract_dvprime(rows, cols, x, torch.randn(B, n, 1, device="cuda"))
    assert dv.shape == (B, P)
    keys = torch.randint(0, 5, (1, 70_000, 2), device="cuda")
    from hyperkern.kernels.keys import duplicate_mask_from_keys

    got = duplicate_mask_from_keys(keys, 1)
    assert not got[:, :, 0].any()
    assert (got[:, :, 1] == (keys[:, :, 1] == keys[:, :, 0])).all()


@TRITON
@grid(splits=(2, 3), dtype=(torch.float64, torch.float32))
def test_hyper_linear_split_reductions_match_reference(splits, dtype):
    """Split-K (narrow outputs) and split-batch (weight gradient) partial sums add up."""
    from hyperkern.kernels import hyper_linear as kernel

    g = torch.Generator().manual_seed(11)
    b, in_f, out_f, e_dim = 70, 37, 3, 5
    x, e = (torch.randn(b, n, generator=g, dtype=dtype).to(DEVICE) for n in (in_f, e_dim))
    weight = torch.randn(out_f * in_f, e_dim, generator=g, dtype=dtype).to(DEVICE)
    bias = torch.randn(out_f * in_f, generator=g, dtype=dtype).to(DEVICE)
    dy = torch.randn(b, out_f, generator=g, dtype=dtype).to(DEVICE)
    leaves = [t.double().cpu().requires_grad_() for t in (x, e, weight, bias)]
    y_ref = reference_hyper_linear(*leaves)
    want = torch.autograd.grad(y_ref, leaves, dy.double().cpu())
    y = kernel._launch_outer_gemm(
        x, e, weight, bias, out_f, (e_dim, 1, in_f * e_dim), (1, in_f), splits
    )
    da, dc = kernel._launch_outer_grad(dy, x, e, splits)
    for name, got, exp in (("y", y, y_ref), ("dA", da, want[2]), ("dc", dc, want[3])):
        assert_close(got.cpu(), exp, dtype, magnitude(exp) * 10, msg=name)
