"""Layer steps beyond the shared-W sweep: one W per instance (``SparseHyperLayer``-style, vector
inputs) and the shared-W step replayed as a CUDA graph (GPU only).

Each round is one forward + backward (input, means, sigmas, values). Medians and minimums over
``--benchmark`` rounds come from pytest-benchmark; ``extra_info`` records the configuration.
"""

from __future__ import annotations

import pytest
import torch

from hyperkern import SparseLayer, sparse_layer

SIZES = {"tiny": (4, 16, 8), "cpu": (16, 256, 64), "gpu": (64, 4096, 256)}  # (b, n, k)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_per_instance_step(benchmark, impl, hk_scale, hk_device, hk_rounds):
    if impl == "triton" and hk_device.type != "cuda":
        pytest.skip("needs CUDA")
    b, n, k = SIZES[hk_scale]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, n, generator=gen).to(hk_device).requires_grad_()
    leaves = [
        torch.randn(b, k, 2, generator=gen).to(hk_device).requires_grad_(),
        torch.zeros(b, k, device=hk_device, requires_grad=True),
        torch.randn(b, k, generator=gen).to(hk_device).requires_grad_(),
    ]

    def step():
        y = sparse_layer(x, *leaves, (n,), generator=1, backend=impl)
        grads = torch.autograd.grad(y.square().sum(), [x, *leaves])
        _sync(hk_device)
        return y, grads

    step()  # compile, autotune, cache constants
    benchmark.group = "per-instance layer step"
    benchmark.extra_info.update(impl=impl, b=b, n=n, k=k, device=str(hk_device))
    benchmark.pedantic(step, rounds=hk_rounds, iterations=1)


def test_shared_step_cuda_graph(benchmark, hk_scale, hk_device, hk_rounds):
    if hk_device.type != "cuda":
        pytest.skip("CUDA graphs need CUDA")
    b, n, k = SIZES[hk_scale]
    layer = SparseLayer((n,), (n,), k=k).to(hk_device)
    x = torch.randn(b, n, device=hk_device, requires_grad=True)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            layer(x).square().sum().backward()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        layer(x).square().sum().backward()

    def replay():
        graph.replay()
        torch.cuda.synchronize(hk_device)

    benchmark.group = "shared layer step (CUDA graph)"
    benchmark.extra_info.update(impl="triton_graph", b=b, n=n, k=k, device=str(hk_device))
    benchmark.pedantic(replay, rounds=hk_rounds, iterations=1, warmup_rounds=1)
