"""The original code's smaller layer options: fixed values, per-instance sampling, bias types
and the clamp / modulo means transforms."""

from __future__ import annotations

import pytest
import torch

import hyperkern
from hyperkern import reference as ref
from tests.grid import assert_close, grid
from tests.helpers import BACKENDS


@grid(backend=BACKENDS)
def test_fixed_values_are_ones_and_not_learned(backend):
    torch.manual_seed(0)
    layer = hyperkern.SparseLayer((8,), (6,), k=5, fix_values=True, backend=backend)
    assert "values" not in dict(layer.named_parameters())
    assert torch.equal(layer.values, torch.ones(5))
    layer(torch.randn(3, 8), generator=1).square().sum().backward()
    assert layer.means.grad.abs().sum() > 0
    assert torch.equal(layer.values, torch.ones(5))
    linear = hyperkern.SparseLinear(8, 6, k=5, fix_values=True)
    assert torch.equal(linear.values, torch.ones(5))


@grid(backend=BACKENDS)
def test_per_instance_draws_one_w_per_instance(backend):
    torch.manual_seed(0)
    x = torch.randn(1, 10).expand(4, 10)
    shared = hyperkern.SparseLayer((10,), (7,), k=6, backend=backend)
    y = shared(x, generator=3)
    assert torch.equal(y, y[:1].expand_as(y))  # one W: identical rows in, identical rows out
    per = hyperkern.SparseLayer((10,), (7,), k=6, per_instance=True, backend=backend)
    y = per(x, generator=3)
    assert not torch.allclose(y[0], y[1])
    y.sum().backward()
    assert per.means.grad.shape == (6, 2)
    per.eval()
    y = per(x)
    assert torch.equal(y, y[:1].expand_as(y))  # evaluation rounds the shared means


@grid(backend=BACKENDS)
def test_bias_kinds(backend):
    torch.manual_seed(0)
    x = torch.zeros(2, 9)
    none = hyperkern.SparseLayer((9,), (4,), k=5, backend=backend)
    assert none.bias is None and none.sparse_bias is None
    assert torch.equal(none(x, generator=0), torch.zeros(2, 4))
    dense = hyperkern.SparseLayer((9,), (4,), k=5, bias="dense", backend=backend)
    with torch.no_grad():
        dense.bias.copy_(torch.arange(4.0))
    assert_close(dense(x, generator=0), torch.arange(4.0).expand(2, 4).double())
    sparse = hyperkern.SparseLayer((9,), (4,), k=5, bias="sparse", bias_k=2, backend=backend)
    y = sparse(x, generator=0)
    assert (y != 0).any() and ((y != 0).sum(1) <= 2 * 6).all()
    y.sum().backward()
    assert sparse.sparse_bias.values.grad.abs().sum() > 0
    assert sum(p.numel() for p in sparse.sparse_bias.parameters()) == 2 * 2 + 2 + 2
    with pytest.raises(ValueError, match="bias"):
        hyperkern.SparseLayer((9,), (4,), k=5, bias="full")


def test_sparse_linear_bias_stays_like_nn_linear():
    layer = hyperkern.SparseLinear(16, 3, k=8)
    assert (
        layer.bias.shape == (3,) and (layer.bias.abs() <= 0.25).all() and layer.bias.abs().sum() > 0
    )
    assert hyperkern.SparseLinear(16, 3, k=8, bias=False).bias is None


@pytest.mark.parametrize("transform", ["sigmoid", "clamp", "modulo"])
def test_means_transforms_and_their_chain_rule(transform):
    dims = (5, 9)
    raw = (torch.randn(4, 2, dtype=torch.float64) * 6).requires_grad_()
    mu = ref.transform_means(raw, dims, transform)
    assert (mu >= 0).all() and (mu <= torch.tensor([4.0, 8.0], dtype=torch.float64)).all()
    grad = torch.randn_like(mu)
    (want,) = torch.autograd.grad(mu, raw, grad)
    assert_close(ref.transform_means_grad(grad, raw.detach(), dims, transform), want)


@grid(backend=BACKENDS, transform=("clamp", "modulo"))
def test_layers_train_with_other_transforms(backend, transform):
    torch.manual_seed(0)
    layer = hyperkern.SparseLayer((12,), (6,), k=7, means_transform=transform, backend=backend)
    mu = layer.index_means()
    assert (mu >= 0).all() and (mu <= torch.tensor([5.0, 11.0])).all()
    layer(torch.randn(3, 12), generator=2).square().sum().backward()
    assert torch.isfinite(layer.means.grad).all() and layer.means.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="means_transform"):
        hyperkern.SparseLayer((12,), (6,), k=7, means_transform="tanh")


@grid(backend=BACKENDS)
def test_free_input_sizes_change_between_calls(backend):
    """``None`` in ``in_shape``: the size comes from each call's input; sigmoid means are
    fractions of W, so one layer serves 9- and 30-wide inputs."""
    torch.manual_seed(0)
    layer = hyperkern.SparseLayer((None,), (4,), k=6, backend=backend)
    for n in (9, 30):
        y = layer(torch.randn(2, n), generator=1)
        assert y.shape == (2, 4) and torch.isfinite(y).all()
    layer.eval()
    w = layer.dense_weight(in_shape=(30,))
    assert_close(layer(torch.eye(30)).T, w)
    with pytest.raises(ValueError, match="free sizes"):
        layer.dense_weight()
    with pytest.raises(ValueError, match="x must have shape"):
        layer(torch.randn(2, 3, 3))
    with pytest.raises(ValueError, match="free sizes"):
        hyperkern.SparseLayer((None,), (4,), k=6, means_transform="clamp")
