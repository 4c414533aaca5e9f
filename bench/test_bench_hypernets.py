"""Per-sample (conditional) hypernetwork MLP evaluation: loop vs grouped conv vs bmm vs vmap vs
outer (plain torch, never materialises W) vs the fused Triton kernel (CUDA only: on CPU Triton
runs in its interpreter, which says nothing about speed).

Each sample ``b`` has its own MLP ``in -> hidden -> out`` with weights ``A_l e_b + c_l``;
the timed call includes generating the weights. Groups: forward (inference, no grad) and
forward+backward (gradients w.r.t. every hypernetwork parameter and ``e``).

Memory (``extra_info``): ``peak_mem_bytes`` from bench/measure.py (CUDA allocator peak on GPU,
process RSS high-water mark on CPU, see ``mem_method``) and ``intermediate_bytes``, an analytic
estimate of the largest per-sample intermediate a path builds: the per-sample weights
``b * sum(out*in) * 4`` for loop/grouped_conv/bmm/vmap, ``x ⊗ e`` ``b * sum(in*e_dim) * 4`` for
outer, 0 for fused (tiles live in registers).
"""

from __future__ import annotations

import pytest
import torch
from measure import synchronize

from hyperkern.hypernets import PerSampleMLPHypernetwork

PATHS = ["loop", "grouped_conv", "bmm", "vmap", "outer", "fused"]
# (batch, (in, hidden, out), e_dim)
SIZES = {
    "tiny": (8, (16, 16, 4), 4),
    "cpu": (128, (256, 128, 10), 8),
    "gpu": (2048, (512, 512, 10), 32),
}
ROUNDS = {"tiny": 2, "cpu": 7, "gpu": 50}


@pytest.fixture(autouse=True)
def _ieee_float32():
    """Every path in IEEE float32: cuDNN's default TF32 would make grouped_conv both faster and
    less exact than the matmul paths (torch keeps TF32 off for matmuls by default)."""
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = before


def setup(path: str, scale: str, device: torch.device):
    if path == "fused" and device.type != "cuda":
        pytest.skip("fused Triton path is benchmarked on CUDA only (CPU runs the interpreter)")
    batch, sizes, e_dim = SIZES[scale]
    model = PerSampleMLPHypernetwork(sizes, e_dim, seed=0).to(device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, sizes[0], generator=g).to(device)
    e = torch.randn(batch, e_dim, generator=g).to(device).requires_grad_(True)
    dy = torch.randn(batch, sizes[-1], generator=g).to(device)
    if path == "fused":
        intermediate = 0
    elif path == "outer":
        intermediate = batch * sum(sizes[:-1]) * e_dim * 4
    else:
        intermediate = batch * sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True)) * 4
    info = dict(
        path=path, batch=batch, layer_sizes=list(sizes), e_dim=e_dim, device=str(device),
        intermediate_bytes=intermediate,
        threads=torch.get_num_threads(),
    )  # fmt: skip
    return model, x, e, dy, info


def run(benchmark, fn, device, scale, tracker, info):
    def call():
        out = fn()
        synchronize(device)
        return out

    call()  # warm-up: JIT compilation and autotuning stay out of time and memory
    _, peak = tracker.measure(call)
    benchmark.extra_info.update(info, peak_mem_bytes=int(peak), mem_method=tracker.method)
    benchmark.pedantic(call, rounds=ROUNDS[scale], iterations=1, warmup_rounds=1)


@pytest.mark.benchmark(group="hypernet-per-sample-fwd")
@pytest.mark.parametrize("path", PATHS)
def test_per_sample_forward(benchmark, path, hk_scale, hk_device, hk_memory):
    model, x, e, _, info = setup(path, hk_scale, hk_device)

    def forward():
        with torch.no_grad():
            return model(x, e, backend=path)

    run(benchmark, forward, hk_device, hk_scale, hk_memory, info)
    expected = model(x, e, backend="bmm").detach()
    torch.testing.assert_close(forward(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.benchmark(group="hypernet-per-sample-fwd-bwd")
@pytest.mark.parametrize("path", PATHS)
def test_per_sample_forward_backward(benchmark, path, hk_scale, hk_device, hk_memory):
    model, x, e, dy, info = setup(path, hk_scale, hk_device)
    leaves = [e, *model.parameters()]

    def step():
        out = model(x, e, backend=path)
        return torch.autograd.grad(out, leaves, dy)

    run(benchmark, step, hk_device, hk_scale, hk_memory, info)
    reference = torch.autograd.grad(model(x, e, backend="bmm"), leaves, dy)
    for got, want in zip(step(), reference, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4)
