"""The whole layer on the Triton backend equals the torch backend (interpreter on CPU)."""

import dataclasses
import os

import pytest
import torch

from hyperkern import SparseLinear, sparse_layer

# CPU tensors reach the Triton kernels only through the interpreter (set when there is no GPU).
INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
DEVICES = (["cpu"] if INTERPRETING else []) + (["cuda"] if torch.cuda.is_available() else [])


def _params(device, dtype, b, k, r, per_instance, seed=0):
    gen = torch.Generator().manual_seed(seed)
    lead = (b, k) if per_instance else (k,)
    make = lambda *shape: torch.randn(*shape, generator=gen, dtype=dtype).to(device)  # noqa: E731
    return [
        make(*lead, r).requires_grad_(),
        make(*lead).requires_grad_(),
        make(*lead).requires_grad_(),
    ]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "dtype, in_shape, out_shape, k, per_instance, context_size, chunk_size",
    [
        (torch.float64, (7,), (5,), 3, False, None, None),
        (torch.float64, (3, 4), (2,), 5, True, 2, None),
        (torch.float64, (11,), (13,), 6, True, None, 4),
        (torch.float32, (6,), (1,), 1, False, None, None),
    ],
)
def test_triton_backend_equals_torch_backend(
    device, dtype, in_shape, out_shape, k, per_instance, context_size, chunk_size
):
    b = 3
    r = len(in_shape) + len(out_shape)
    x = torch.randn(b, *in_shape, dtype=dtype, device=device, requires_grad=True)
    params = _params(device, dtype, b, k, r, per_instance)
    outs, grads = [], []
    for backend in ("torch", "triton"):
        y = sparse_layer(
            x,
            *params,
            out_shape,
            n_local=2,
            n_global=3,
            context_size=context_size,
            chunk_size=chunk_size,
            generator=7,
            backend=backend,
        )
        weight = torch.linspace(-1, 1, y.numel(), dtype=dtype, device=device).view_as(y)
        outs.append(y)
        grads.append(torch.autograd.grad((y * weight).sum(), [x, *params]))
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(outs[1], outs[0], **tol)
    for g_triton, g_torch in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(g_triton, g_torch, **tol)


@pytest.mark.skipif(not INTERPRETING, reason="CPU tensors reach Triton only via TRITON_INTERPRET")
def test_auto_backend_is_reference_on_cpu_and_matches_triton():
    layer = SparseLinear(9, 4, 6).double()
    x = torch.randn(5, 9, dtype=torch.float64)
    auto = layer(x, generator=3)
    layer.options = dataclasses.replace(layer.options, backend="triton")
    torch.testing.assert_close(layer(x, generator=3), auto, rtol=1e-9, atol=1e-9)
