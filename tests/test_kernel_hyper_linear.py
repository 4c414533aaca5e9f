"""Fused per-sample linear head (kernels/hyper_linear.py) against the plain-torch reference.

On a machine without CUDA the kernels run under the Triton interpreter (TRITON_INTERPRET=1,
set by tests/conftest.py before triton is imported); with CUDA the same tests run on the GPU.
"""

from __future__ import annotations

import pytest
import torch
from hyperkern.kernels.hyper_linear import hyper_linear
from hyperkern.reference.hyper_linear import hyper_linear as reference
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperkern.hypernets import PerSampleMLPHypernetwork
from tests import grid as tg


def make_inputs(batch, in_f, out_f, e_dim, dtype, seed=0, device=tg.DEVICE, contiguous=True):
    """x (batch, in), e (batch, e_dim), weight (out * in, e_dim), bias (out * in,) requiring
    grad; in a strided layout unless ``contiguous``."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(batch, in_f), (batch, e_dim), (out_f * in_f, e_dim), (out_f * in_f,)]
    return [
        tg.make_layout(
            torch.randn(s, dtype=dtype, generator=g).to(device), contiguous
        ).requires_grad_()
        for s in shapes
    ]


def _assert_close(got, want, want32, dtype, name):
    """float64: elementwise. float32: elementwise with atol relative to the largest value, and
    the kernel's error (norm-wise, against the float64 reference) is at most a few times that
    of torch's own float32 reference, since long reductions (in * e_dim terms) make
    elementwise tolerances meaningless near zero."""
    if dtype == torch.float64:
        tg.assert_close(got, want, msg=name)
        return
    tg.assert_close(got, want, scale=tg.magnitude(want), msg=name)
    err = (got.double() - want).norm().item()
    baseline = (want32.double() - want).norm().item()
    assert err <= 4 * baseline + 1e-5 * want.norm().item(), (name, err, baseline)


def check_against_reference(
    batch, in_f, out_f, e_dim, dtype, seed=0, device=tg.DEVICE, contiguous=True
):
    args = make_inputs(batch, in_f, out_f, e_dim, dtype, seed, device, contiguous)
    ref_args = [a.detach().double().requires_grad_(True) for a in args]
    ref32_args = [a.detach().clone().requires_grad_(True) for a in args]
    y = hyper_linear(*args)
    y_ref = reference(*ref_args)
    y_ref32 = reference(*ref32_args)
    assert y.shape == (batch, out_f) and y.dtype == dtype
    _assert_close(y, y_ref, y_ref32, dtype, "y")
    g = torch.Generator().manual_seed(seed + 1)
    grad_y = torch.randn(batch, out_f, dtype=torch.float64, generator=g).to(device)
    grads = torch.autograd.grad(y, args, grad_y.to(dtype))
    grads_ref = torch.autograd.grad(y_ref, ref_args, grad_y)
    grads_ref32 = torch.autograd.grad(y_ref32, ref32_args, grad_y.to(dtype))
    names = ["dx", "de", "dA", "dc"]
    for name, got, want, want32 in zip(names, grads, grads_ref, grads_ref32, strict=True):
        assert got.shape == want.shape, name
        _assert_close(got, want, want32, dtype, name)


# (batch, in, out, e_dim): ones, empty batch, primes, non-powers of two, > one 16-tile.
SHAPES_64 = [(1, 1, 1, 1), (0, 3, 2, 2), (2, 3, 5, 7), (13, 11, 7, 5), (17, 6, 19, 3)]
SHAPES_32 = [(1, 1, 1, 1), (0, 3, 2, 2), (13, 11, 7, 5)]


# Contiguous float64 on every shape, both dtypes and layouts on the float32 shapes.
@tg.grid(
    {"shape": SHAPES_64, "dtype": [torch.float64], "contiguous": tg.CONTIGUOUS},
    {"shape": SHAPES_32, "dtype": tg.DTYPES, "contiguous": tg.CONTIGUITY},
    device=tg.DEVICES,
)
def test_matches_reference(shape, dtype, contiguous, device):
    check_against_reference(*shape, dtype, device=device, contiguous=contiguous)


@tg.grid(batch=tg.SIZES_WITH_EMPTY)
def test_awkward_batch_sizes_strided(batch):
    check_against_reference(batch, 3, 2, 2, torch.float64, seed=batch, contiguous=False)


@settings(max_examples=5, deadline=None, derandomize=True)
@given(
    batch=st.integers(0, 18),
    in_f=st.integers(1, 12),
    out_f=st.integers(1, 12),
    e_dim=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_random_shapes_float64(batch, in_f, out_f, e_dim, seed):
    check_against_reference(batch, in_f, out_f, e_dim, torch.float64, seed)


def test_gradcheck_float64():
    args = make_inputs(2, 2, 2, 1, torch.float64, seed=5)
    assert torch.autograd.gradcheck(hyper_linear, args, eps=1e-6, atol=1e-8)


def test_non_contiguous_inputs_and_partial_grads():
    x, e, a, c = make_inputs(6, 5, 4, 3, torch.float64, seed=2)
    xt = x.detach().t().contiguous().t()  # same values, transposed strides
    weight_t = tg.make_layout(a.detach(), contiguous=False).requires_grad_(True)
    y = hyper_linear(xt, e, weight_t, c)
    tg.assert_close(y, reference(x, e, a, c))
    (de,) = torch.autograd.grad(y.sum(), [e])
    (de_ref,) = torch.autograd.grad(reference(x, e, a, c).sum(), [e])
    tg.assert_close(de, de_ref)


def test_per_sample_mlp_fused_path_equals_bmm():
    hyper = PerSampleMLPHypernetwork((6, 5, 3), embedding_dim=4, seed=0).double().to(tg.DEVICE)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 6, dtype=torch.float64, generator=g).to(tg.DEVICE)
    e = torch.randn(7, 4, dtype=torch.float64, generator=g).to(tg.DEVICE).requires_grad_(True)
    results = []
    for path in ("bmm", "fused"):
        out = hyper(x, e, backend=path)
        grads = torch.autograd.grad(out.pow(2).sum(), [e, *hyper.parameters()])
        results.append((out, grads))
    tg.assert_close(results[1][0], results[0][0])
    for got, want in zip(results[1][1], results[0][1], strict=True):
        tg.assert_close(got, want)


@pytest.mark.parametrize(
    "mutate,error,match",
    [
        (
            lambda a: (a[0].long(), *a[1:]),
            TypeError,
            "x must be float16, bfloat16, float32 or float64",
        ),
        (lambda a: (a[0], a[1].float(), *a[2:]), TypeError, "e has dtype"),
        (lambda a: (a[0], a[1], a[2], [1.0]), TypeError, "bias must be a torch.Tensor"),
        (lambda a: (a[0][0], *a[1:]), ValueError, "x must have shape"),
        (lambda a: (a[0], a[1][:2], *a[2:]), ValueError, "e must have shape"),
        (lambda a: (a[0], a[1], a[2][:-1], a[3]), ValueError, "weight must have shape"),
        (lambda a: (a[0], a[1], a[2][:, :1], a[3]), ValueError, "weight must have shape"),
        (lambda a: (a[0], a[1], a[2], a[3][:-1]), ValueError, "bias must have shape"),
    ],
)
def test_rejects_bad_input(mutate, error, match):
    args = [a.detach() for a in make_inputs(3, 4, 2, 3, torch.float64)]
    with pytest.raises(error, match=match):
        hyper_linear(*mutate(args))
    with pytest.raises(error, match=match):
        reference(*mutate(args))


@pytest.mark.cuda
@pytest.mark.skipif(not tg.HAS_CUDA, reason="needs CUDA")
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (257, 129, 67, 13), (1024, 256, 128, 32)])
@pytest.mark.parametrize("dtype", tg.DTYPES)
def test_cuda_matches_reference(shape, dtype):
    check_against_reference(*shape, dtype, device="cuda")


@pytest.mark.cuda
@pytest.mark.skipif(not tg.HAS_CUDA, reason="needs CUDA")
def test_cuda_rejects_mixed_devices():
    x, e, a, c = [t.detach() for t in make_inputs(3, 4, 2, 3, torch.float32, device="cuda")]
    with pytest.raises(ValueError, match="e is on cpu"):
        hyper_linear(x, e.cpu(), a, c)
