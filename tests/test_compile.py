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
