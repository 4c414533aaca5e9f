"""SparseConv2d: a SparseLayer over every kh x kw patch equals F.conv2d with its dense weight."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

import hyperkern
from hyperkern import SparseConv2d
from tests.helpers import BACKENDS

F64 = torch.float64


def _layer(backend="torch", c_in=2, c_out=3, kernel_size=3, k=6, **options):
    torch.manual_seed(0)
    return SparseConv2d(c_in, c_out, kernel_size, k, backend=backend, **options).double()


def _image(b=2, c=2, h=4, w=5, seed=1, requires_grad=False):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, h, w, dtype=F64, generator=gen).requires_grad_(requires_grad)


def _conv(layer, x, weight):
    return F.conv2d(x, weight, layer.bias, padding=layer.padding)


def test_exported_and_parameter_count():
    assert "SparseConv2d" in hyperkern.__all__
    layer = SparseConv2d(4, 8, 3, k=20)
    assert layer.dense_weight().shape == (8, 4, 3, 3)
    assert sum(p.numel() for p in layer.parameters()) == 6 * 20 + 8  # means (k, 4), sigmas, values
    assert SparseConv2d(4, 8, 3, k=20, bias=False).bias is None
    assert "kernel_size=(3, 3)" in repr(layer)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("dtype", "kernel_size"), [(torch.float32, 3), (F64, (1, 5))])
def test_output_shape_and_dtype(backend, dtype, kernel_size):
    layer = _layer(backend, kernel_size=kernel_size).to(dtype)
    x = _image().to(dtype)
    for mode in (layer.train, layer.eval):
        mode()
        y = layer(x, generator=0)
        assert y.shape == (2, 3, 4, 5) and y.dtype == dtype and torch.isfinite(y).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("eval_mode", "bias"), [("round", True), ("expected", False)])
def test_eval_forward_equals_conv2d_with_the_dense_weight(backend, eval_mode, bias):
    options = {"eval_mode": eval_mode, "eval_samples": 2, "bias": bias}
    layer = _layer(backend, kernel_size=(3, 5), **options).eval()
    x = _image()
    weight = layer.dense_weight()
    assert weight.shape == (3, 2, 3, 5)
    torch.testing.assert_close(layer(x), _conv(layer, x, weight))
    if eval_mode == "round":  # the paper's evaluation: at most k nonzeros
        assert 0 < (weight != 0).sum() <= layer.k


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_forward_with_seed_0_equals_conv2d_with_the_sampled_weight(backend):
    layer = _layer(backend).train()  # eval_mode="sample" draws W with seed 0, as training does
    x = _image()
    torch.testing.assert_close(layer(x, generator=0), _conv(layer, x, layer.dense_weight("sample")))


def _gradients(backend):
    layer = _layer(backend).train()
    x = _image(requires_grad=True)
    return torch.autograd.grad(layer(x, generator=3).square().sum(), [x, *layer.parameters()])


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_reach_means_sigmas_values_bias_and_x(backend):
    grads = _gradients(backend)
    names = ["x", "means", "sigmas", "values", "bias"]
    assert [name for name, _ in _layer().named_parameters()] == names[1:]
    for name, g in zip(names, grads, strict=True):
        assert torch.isfinite(g).all() and g.abs().sum() > 0, name
    if backend != "torch":  # same seed, same samples: the gradients of the reference
        for g, want in zip(grads, _gradients("torch"), strict=True):
            torch.testing.assert_close(g, want)


def _as_function(layer, generator):
    """The layer as a function of ``(x, means, sigmas, values, bias)`` for gradcheck."""
    names = [name for name, _ in layer.named_parameters()]

    def f(x, *params):
        return functional_call(
            layer, dict(zip(names, params, strict=True)), (x,), {"generator": generator}
        )

    return f, [p.detach().clone().requires_grad_() for p in layer.parameters()]


@pytest.mark.parametrize("training", [True, False])
def test_gradcheck_tiny(training):  # the Triton backend's gradients are compared to these above
    layer = _layer(c_in=1, c_out=2, k=3, eval_mode="round").train(training)
    f, params = _as_function(layer, generator=5)  # a fixed seed: the same samples every call
    x = _image(b=1, c=1, h=3, w=3, requires_grad=True)
    assert torch.autograd.gradcheck(f, (x, *params))


def test_the_modules_own_generator_reproduces_training_draws():
    x = _image()
    a = _layer(generator=torch.Generator().manual_seed(7))
    b = _layer(generator=torch.Generator().manual_seed(7))
    first = a(x)
    torch.testing.assert_close(first, b(x))
    assert not torch.equal(a(x), first)  # the generator advances: a new W per call


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "name"),
    [
        ((0, 3, 3, 4), {}, ValueError, "in_channels"),
        ((2.0, 3, 3, 4), {}, TypeError, "in_channels"),
        ((2, True, 3, 4), {}, TypeError, "out_channels"),
        ((2, 3, 2, 4), {}, ValueError, "kernel_size"),
        ((2, 3, (3, 4), 4), {}, ValueError, "kernel_size"),
        ((2, 3, (3, 3, 3), 4), {}, TypeError, "kernel_size"),
        ((2, 3, "3", 4), {}, TypeError, "kernel_size"),
        ((2, 3, 3, 0), {}, ValueError, "k must"),
        ((2, 3, 3, 4), {"bias": 1}, TypeError, "bias"),
        ((2, 3, 3, 4), {"region": (2, 2)}, ValueError, "region"),
        ((2, 3, 3, 4), {"n_local": -1}, ValueError, "n_local"),
        ((2, 3, 3, 4), {"generator": 3}, TypeError, "generator"),
    ],
)
def test_bad_construction_names_the_argument(args, kwargs, error, name):
    with pytest.raises(error, match=name):
        SparseConv2d(*args, **kwargs)


@pytest.mark.parametrize(
    ("x", "error", "name"),
    [
        ([[1.0]], TypeError, "x must be a torch.Tensor"),
        (torch.randn(2, 4, 5), ValueError, "4 dimensions"),
        (torch.randn(1, 3, 4, 5), ValueError, "in_channels=2"),
        (torch.randn(1, 2, 0, 5), ValueError, "H and W > 0"),
        (torch.zeros(1, 2, 4, 5, dtype=torch.int64), TypeError, "floating"),
    ],
)
def test_bad_input_names_the_argument(x, error, name):
    layer = SparseConv2d(2, 3, 3, k=4)
    with pytest.raises(error, match=name):
        layer(x)


def test_learns_a_fixed_sparse_3x3_convolution():
    torch.manual_seed(0)
    target = torch.zeros(2, 1, 3, 3)
    target[0, 0, 0, 1], target[0, 0, 2, 2], target[1, 0, 1, 0] = 1.0, -1.0, 1.0
    layer = SparseConv2d(1, 2, 3, k=6, bias=False, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(layer.parameters(), lr=0.05)
    data = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(150):
        x = torch.randn(8, 1, 8, 8, generator=data)
        loss = F.mse_loss(layer(x), F.conv2d(x, target, padding=1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.05 * first, (first, last)
    layer.eval()  # means rounded: the learned connections themselves
    x = torch.randn(64, 1, 8, 8, generator=data)
    rounded = F.mse_loss(layer(x), F.conv2d(x, target, padding=1)).item()
    assert rounded < 0.2 * first, (first, rounded)


def test_fullgraph_compile_matches_eager():
    torch._dynamo.reset()
    layer = _layer()
    x = _image(requires_grad=True)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    got, want = compiled(x, generator=2), layer(x, generator=2)
    torch.testing.assert_close(got, want)
    grads = torch.autograd.grad(got.sum(), [x, *layer.parameters()])
    for g, w in zip(grads, torch.autograd.grad(want.sum(), [x, *layer.parameters()]), strict=True):
        torch.testing.assert_close(g, w)
    layer.eval()
    torch.testing.assert_close(compiled(x), layer(x))
