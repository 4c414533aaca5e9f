"""A drop-in that survives real use: eval mode, bounds, finiteness, shape contracts, autocast."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hyperkern import SparseHyperLayer, SparseLayer, SparseLinear, ops, sparse_layer
from tests.helpers import BACKENDS

FLOATS = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def _regression(seed: int) -> tuple[float, float]:
    """Train ``Linear -> ReLU -> SparseLinear`` on Y = X W for 300 Adam steps; train-mode and
    eval-mode test MSE."""
    torch.manual_seed(seed)
    target = torch.randn(20, 5)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), SparseLinear(64, 5, k=128))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        x = torch.randn(128, 20)
        loss = ((model(x) - x @ target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    x = torch.randn(2000, 20)
    with torch.no_grad():
        train_mse = ((model(x) - x @ target) ** 2).mean().item()
        model.eval()
        eval_mse = ((model(x) - x @ target) ** 2).mean().item()
    return train_mse, eval_mse


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eval_mode_keeps_what_training_learned(seed):
    train_mse, eval_mse = _regression(seed)
    assert eval_mse <= 2 * train_mse, (train_mse, eval_mse)


def test_eval_modes_and_dense_weight():
    torch.manual_seed(0)
    layer = SparseLinear(6, 4, k=10).eval()
    x = torch.randn(3, 6)
    for mode in ("expected", "sample", "round"):
        w = layer.dense_weight(mode)
        assert w.shape == (4, 6)
        layer.options = type(layer.options)(**{**vars(layer.options), "eval_mode": mode})
        torch.testing.assert_close(layer(x), x @ w.T + layer.bias)
        torch.testing.assert_close(layer(x), layer(x))  # deterministic
    assert SparseLayer((6,), (4,), k=3).options.eval_mode == "round"  # the paper's evaluation


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("dtype", "size"), [(torch.float32, 2**24 + 3), (torch.bfloat16, 300), (torch.float16, 2053)]
)
def test_every_sample_in_bounds_and_mass_kept_at_the_upper_bound(backend, dtype, size):
    """A mean on the upper bound of a dimension where ``size - 1`` rounds up in ``dtype``: W is
    ``(1, size)`` and ``x`` all ones, so ``y`` is the total mass of W."""
    x = torch.ones(1, size, dtype=dtype)
    means = torch.tensor([[0.0, 40.0]], dtype=dtype)  # sigmoid(40) == 1: mu = size - 1
    y = sparse_layer(
        x,
        means,
        torch.tensor([-30.0], dtype=dtype),
        torch.tensor([1.0], dtype=dtype),
        (1,),
        generator=0,
        backend=backend,
        n_local=3,
        n_global=3,
    )
    assert y.shape == (1, 1)
    assert float(y.float().sum()) == pytest.approx(1.0, rel=1e-2)
    mu = torch.tensor([[[size - 1.0, 0.0]]])
    points = ops.sample_tuples(mu, (size, 1), 4, 4, generator=1, backend=backend)
    assert int(points[..., 0].max()) <= size - 1 and int(points.min()) >= 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("raw_sigma", [-300.0, -105.0, -45.0, 0.0, 30.0])
def test_finite_outputs_and_gradients_for_finite_parameters(backend, dtype, raw_sigma):
    torch.manual_seed(0)
    x = torch.randn(3, 7, dtype=dtype, requires_grad=True)
    params = [
        torch.randn(4, 2, dtype=dtype, requires_grad=True),
        torch.full((4,), raw_sigma, dtype=dtype, requires_grad=True),
        torch.randn(4, dtype=dtype, requires_grad=True),
    ]
    y = sparse_layer(x, *params, (5,), generator=1, backend=backend)
    grads = torch.autograd.grad(y.float().square().sum(), [x, *params])
    assert y.dtype == dtype and torch.isfinite(y).all()
    for g in grads:
        assert torch.isfinite(g).all()


def test_shape_contracts():
    with pytest.raises(ValueError, match=r"x must have shape \(b, \*in_shape\) = \(b, 6\)"):
        SparseLayer((6,), (5,), k=2)(torch.randn(3, 7))
    with pytest.raises(ValueError, match="in_features=6"):
        SparseLinear(6, 5, k=2)(torch.randn(3, 7))

    class WrongK(nn.Module):
        def forward(self, x):
            b = x.shape[0]
            return torch.randn(b, 4, 2), torch.zeros(b, 4), torch.randn(b, 4)

    with pytest.raises(ValueError, match=r"source\(x\) must return means of shape \(2, 3, 2\)"):
        SparseHyperLayer((6,), (5,), k=3, source=WrongK())(torch.randn(2, 6))


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch_works_like_linear(backend):
    layer = SparseLinear(6, 5, k=9, backend=backend)
    x = torch.randn(0, 6, requires_grad=True)
    y = layer(x)
    assert y.shape == (0, 5) == nn.Linear(6, 5)(x).shape
    y.sum().backward()
    assert x.grad.shape == (0, 6)
    assert SparseLayer((2, 3), (4,), k=3, backend=backend)(torch.randn(0, 2, 3)).shape == (0, 4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("chunk_size", [None, 2])
def test_second_derivatives_are_refused_on_every_path(backend, chunk_size):
    layer = SparseLayer((5,), (4,), k=3, backend=backend, chunk_size=chunk_size).double()
    y = layer(torch.randn(2, 5, dtype=torch.float64), generator=0).square().sum()
    (g,) = torch.autograd.grad(y, layer.means, create_graph=True)
    with pytest.raises(RuntimeError, match="second derivatives"):
        g.sum().backward()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(generator=True), TypeError, "generator"),
        (dict(generator=2**64), ValueError, "generator"),
        (dict(generator=-1), ValueError, "generator"),
        (dict(region=3), ValueError, "region"),
        (dict(region=(True, True)), ValueError, "region"),
        (dict(sigma_scale="a"), TypeError, "sigma_scale"),
        (dict(sigma_scale=float("nan")), ValueError, "sigma_scale"),
        (dict(min_sigma=None), TypeError, "min_sigma"),
        (dict(out_shape=(True,)), ValueError, "out_shape"),
        (dict(n_local=True), ValueError, "n_local"),
        (dict(eval_mode="mean"), ValueError, "eval_mode"),
        (dict(deterministic="yes"), TypeError, "deterministic"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, error, match):
    args = dict(x=torch.randn(2, 4), means=torch.randn(3, 2), sigmas=torch.zeros(3))
    args.update(values=torch.randn(3), out_shape=(5,))
    args.update(kwargs)
    with pytest.raises(error, match=match):
        sparse_layer(**args)


def test_building_blocks_check_index_ranges_on_request():
    points = torch.tensor([[[[0, 1], [3, 1]]]])  # (1, 1, 2, 2); 3 is outside dims (3, 2)
    with pytest.raises(ValueError, match=r"points must lie in \[0, dims\)"):
        ops.duplicate_mask(points, (3, 2), validate=True)
    with pytest.raises(ValueError, match="larger than W"):
        ops.sample_tuples(torch.zeros(1, 1, 2), (3, 2), 1, 1, region=(4, 1))


def test_sparse_linear_default_context_is_linear_in_k_and_paper_one_is_available():
    assert SparseLinear(8, 4, k=512).options.context_size == 128
    assert SparseLinear(8, 4, k=512, context_size=None).options.context_size is None


def test_autocast_bfloat16_through_linear_and_sparse_linear():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), SparseLinear(16, 4, k=12))
    x = torch.randn(5, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
    y.float().sum().backward()
    assert y.shape == (5, 4) and torch.isfinite(y).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
