"""The whole sparse layer: semantics, gradients, modules."""

import math

import pytest
import torch
from torch import nn

from hyperkern import SparseHyperLayer, SparseLayer, SparseLinear, ops, sparse_layer


def _logit_of_index(t: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    p = t.double() / (torch.tensor(dims, dtype=torch.float64) - 1)
    return torch.log(p) - torch.log1p(-p)


def test_gradcheck_whole_layer_means_sigmas_values_x():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    means = torch.randn(4, 2, dtype=torch.float64, generator=gen, requires_grad=True)
    sigmas = torch.randn(4, dtype=torch.float64, generator=gen, requires_grad=True)
    values = torch.randn(4, dtype=torch.float64, generator=gen, requires_grad=True)

    def layer(x, m, s, v):
        return sparse_layer(x, m, s, v, (3,), n_local=2, n_global=2, generator=11)

    assert torch.autograd.gradcheck(layer, (x, means, sigmas, values))
    per_instance = (
        x,
        means.detach().expand(3, 4, 2).clone().requires_grad_(),
        sigmas.detach().expand(3, 4).clone().requires_grad_(),
        values.detach().expand(3, 4).clone().requires_grad_(),
    )
    assert torch.autograd.gradcheck(layer, per_instance)
    chunked = lambda x, m, s, v: sparse_layer(x, m, s, v, (3,), chunk_size=3, generator=11)  # noqa: E731
    assert torch.autograd.gradcheck(chunked, (x, means, sigmas, values))


def test_tiny_sigma_on_integer_tuples_equals_dense_matmul():
    dims = (9, 11)
    targets = torch.tensor([[1, 2], [4, 7], [7, 1], [3, 3], [1, 9]])
    means = _logit_of_index(targets, dims)
    sigmas = torch.full((5,), -30.0, dtype=torch.float64)
    values = torch.randn(5, dtype=torch.float64)
    x = torch.randn(6, 11, dtype=torch.float64)
    y = sparse_layer(
        x, means, sigmas, values, (9,), n_local=3, n_global=5, sigma_scale=1e-8, generator=0
    )
    W = torch.zeros(dims, dtype=torch.float64)
    W[targets[:, 0], targets[:, 1]] = values
    assert torch.allclose(y, x @ W.T, atol=1e-10)


def test_rank3_input_to_rank2_output_matches_dense_einsum():
    gen = torch.Generator().manual_seed(3)
    in_shape, out_shape = (3, 4, 5), (2, 3)
    dims = out_shape + in_shape
    x = torch.randn(2, *in_shape, dtype=torch.float64, generator=gen)
    means = torch.randn(2, 6, 5, dtype=torch.float64, generator=gen)
    sigmas = torch.randn(2, 6, dtype=torch.float64, generator=gen)
    values = torch.randn(2, 6, dtype=torch.float64, generator=gen)
    y = sparse_layer(x, means, sigmas, values, out_shape, n_local=3, n_global=2, generator=5)
    # the same steps through the public building blocks, then a dense W
    mu = ops.transform_means(means, dims)
    points = ops.sample_tuples(mu, dims, 3, 2, generator=5)
    dup = ops.duplicate_mask(points, dims)
    vprime = ops.proportions(points, mu, ops.transform_sigmas(sigmas, dims), values, dup)
    W = torch.zeros(2, *dims, dtype=torch.float64)
    flat = W.view(2, -1)
    lin = ops.linear_keys(points, dims).flatten(1)
    flat.scatter_add_(1, lin, vprime.flatten(1))
    expected = torch.einsum("bopijk,bijk->bop", W, x)
    assert y.shape == (2, *out_shape)
    assert torch.allclose(y, expected)


def test_shared_and_per_instance_agree_for_equal_parameters():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(5, 7, dtype=torch.float64, generator=gen)
    means = torch.randn(6, 2, dtype=torch.float64, generator=gen)
    sigmas = torch.randn(6, dtype=torch.float64, generator=gen)
    values = torch.randn(6, dtype=torch.float64, generator=gen)
    per = (means.expand(5, 6, 2), sigmas.expand(5, 6), values.expand(5, 6))
    for kw in (dict(n_local=0, n_global=0), dict(training=False)):
        shared = sparse_layer(x, means, sigmas, values, (4,), **kw)
        assert torch.allclose(shared, sparse_layer(x, *per, (4,), **kw))


def test_same_seed_same_output_different_seed_different_output():
    layer = SparseLayer((12,), (12,), 8, n_local=2, n_global=4)
    x = torch.randn(3, 12)
    assert torch.equal(layer(x, generator=1), layer(x, generator=1))
    assert not torch.equal(layer(x, generator=1), layer(x, generator=2))
    torch.manual_seed(0)
    a = layer(x)
    torch.manual_seed(0)
    assert torch.equal(a, layer(x))


def test_eval_mode_rounds_means_and_carries_full_values():
    layer = SparseLayer((6,), (5,), 4).double()
    x = torch.randn(3, 6, dtype=torch.float64)
    layer.eval()
    idx = torch.round(layer.index_means()).long()
    W = torch.zeros(5, 6, dtype=torch.float64)
    W.index_put_((idx[:, 0], idx[:, 1]), layer.values.detach(), accumulate=True)
    assert torch.allclose(layer(x), x @ W.T)


def test_context_size_and_chunk_size_run_and_chunks_match():
    x = torch.randn(4, 10, dtype=torch.float64)
    f64 = dict(dtype=torch.float64)
    means, sigmas, values = (
        torch.randn(4, 9, 2, **f64),
        torch.randn(4, 9, **f64),
        torch.randn(4, 9, **f64),
    )
    base = sparse_layer(x, means, sigmas, values, (8,), context_size=4, generator=3)
    chunked = sparse_layer(
        x, means, sigmas, values, (8,), context_size=4, chunk_size=3, generator=3
    )
    assert torch.allclose(base, chunked)


def test_nan_in_x_propagates_to_the_outputs_it_touches():
    dims = (4, 4)
    means = _logit_of_index(torch.tensor([[1, 1], [2, 2]]), dims)
    x = torch.randn(2, 4, dtype=torch.float64)
    x[0, 1] = float("nan")
    ones = torch.ones(2, dtype=torch.float64)
    y = sparse_layer(x, means, ones, ones, (4,), training=False)
    assert torch.isnan(y[0, 1]) and torch.isfinite(y[0, 2]) and torch.isfinite(y[1]).all()


def test_hyper_layer_uses_source_parameters_per_instance():
    class Source(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(6, 3 * (2 + 2))

        def forward(self, x):
            out = self.lin(x).view(-1, 3, 4)
            return out[..., :2], out[..., 2], out[..., 3]

    layer = SparseHyperLayer((6,), (5,), 3, Source().double())
    x = torch.randn(4, 6, dtype=torch.float64)
    y = layer(x, generator=0)
    means, sigmas, values = layer.source(x)
    assert torch.allclose(y, sparse_layer(x, means, sigmas, values, (5,), generator=0))
    y.sum().backward()
    assert layer.source.lin.weight.grad.abs().sum() > 0
    with pytest.raises(TypeError, match="source"):
        SparseHyperLayer((6,), (5,), 3, lambda x: x)(x)


def test_sparse_linear_replaces_linear_in_sequential_and_trains():
    torch.manual_seed(0)
    teacher = nn.Linear(8, 4)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    model[2] = SparseLinear(16, 4, k=32, n_local=2, n_global=2)
    assert model[2].in_features == 16 and model[2].out_features == 4
    assert "in_features=16" in repr(model)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x = torch.randn(128, 8)
    target = teacher(x).detach()
    losses = []
    for _ in range(120):
        loss = nn.functional.mse_loss(model(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10
    assert model(torch.randn(2, 3, 8)).shape == (2, 3, 4)


def test_layer_learns_small_identity():
    torch.manual_seed(1)
    layer = SparseLayer((4,), (4,), 4, n_local=1, n_global=2, region=(2, 2))
    opt = torch.optim.Adam(layer.parameters(), lr=0.05)
    for _ in range(400):
        x = torch.randn(64, 4)
        loss = nn.functional.mse_loss(layer(x), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    # The sampled layer (the function being trained) fits fresh data; the zero matrix scores 1.
    x = torch.randn(1000, 4)
    with torch.no_grad():
        fresh = nn.functional.mse_loss(layer(x, generator=0), x).item()
    assert fresh < 0.5
    assert math.isfinite(loss.item())
