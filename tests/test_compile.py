"""torch.compile traces the sparse modules without graph breaks (reference backend on CPU)."""

import torch

from hyperkern import SparseLinear


def test_fullgraph_compile_matches_eager():
    torch.manual_seed(0)
    layer = SparseLinear(8, 6, 5, backend="torch").double()  # a SparseLayer plus a bias
    x = torch.randn(4, 8, dtype=torch.float64)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    torch.manual_seed(1)
    eager = layer(x)
    torch.manual_seed(1)
    traced = compiled(x)
    assert torch.allclose(traced, eager)
    grads = torch.autograd.grad(traced.sum(), list(layer.parameters()))
    eager_grads = torch.autograd.grad(eager.sum(), list(layer.parameters()))
    for g, e in zip(grads, eager_grads, strict=True):
        assert torch.allclose(g, e)
    layer.eval()
    assert torch.allclose(compiled(x), layer(x))


import pytest  # noqa: E402

from hyperkern import SparseLayer  # noqa: E402
from tests.helpers import BACKENDS  # noqa: E402


def _layer(backend, generator=None):
    torch.manual_seed(0)
    return SparseLayer((9,), (7,), k=6, backend=backend, generator=generator).double()


def _step(layer, x, **kwargs):
    y = layer(x, **kwargs)
    return (y, *torch.autograd.grad((y * y).sum(), [x, *layer.parameters()]))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["int", "tensor", "none"])
def test_fullgraph_every_generator_kind_forward_and_backward(backend, kind):
    torch._dynamo.reset()
    layer = _layer(backend)
    x = torch.randn(4, 9, dtype=torch.float64, requires_grad=True)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    if kind == "none":  # torch's global generator: same global seed, same samples
        torch.manual_seed(3)
        got = _step(compiled, x)
        torch.manual_seed(3)
        want = _step(layer, x)
    else:
        gen = 5 if kind == "int" else torch.tensor(5)
        got, want = _step(compiled, x, generator=gen), _step(layer, x, generator=gen)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fullgraph_with_the_modules_own_torch_generator(backend):
    torch._dynamo.reset()
    x = torch.randn(4, 9, dtype=torch.float64, requires_grad=True)
    eager = _layer(backend, generator=torch.Generator().manual_seed(11))
    compiled_layer = _layer(backend, generator=torch.Generator().manual_seed(11))
    compiled = torch.compile(compiled_layer, fullgraph=True, backend="aot_eager")
    for _ in range(2):  # the generator advances: a new W each call, the same in both
        got, want = _step(compiled, x), _step(eager, x)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w)
    assert not torch.equal(_step(eager, x)[0], want[0])


def test_a_torch_generator_argument_under_compile_says_what_to_do():
    torch._dynamo.reset()
    layer = _layer("torch")
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    with pytest.raises(Exception, match="generator"):
        compiled(torch.randn(2, 9, dtype=torch.float64), generator=torch.Generator())


CUDA = torch.cuda.is_available()


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="CUDA graphs need a CUDA device")
def test_cuda_graph_capture_of_a_training_step_without_syncs():
    torch.manual_seed(0)
    layer = SparseLayer((256,), (128,), k=64).cuda()
    opt = torch.optim.SGD(layer.parameters(), lr=0.0)
    x = torch.randn(16, 256, device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up: autotune, cached constants
        for _ in range(3):
            opt.zero_grad(set_to_none=False)
            layer(x).square().sum().backward()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=False)
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.cuda.graph(graph):
            loss = layer(x).square().sum()
            loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    graph.replay()
    first = layer.means.grad.clone()
    graph.replay()  # a new seed per replay (global generator): new samples, other gradients
    torch.cuda.synchronize()
    assert torch.isfinite(first).all() and not torch.equal(first, layer.means.grad)


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="reduce-overhead compiles CUDA graphs")
def test_reduce_overhead_compile_trains():
    torch.manual_seed(0)
    layer = SparseLayer((256,), (128,), k=64).cuda()
    step = torch.compile(lambda x: layer(x, generator=3).square().sum(), mode="reduce-overhead")
    x = torch.randn(16, 256, device="cuda")
    losses = [step(x) for _ in range(3)]
    eager = layer(x, generator=3).square().sum()
    torch.testing.assert_close(losses[-1], eager, rtol=1e-4, atol=1e-4)
