"""Fused per-sample linear head with generated weights: ``y_b = reshape(A e_b + c) x_b``.

The per-sample weights ``W_b = reshape(A e_b + c, (out, in))`` are never written to memory.
With ``A`` viewed as ``(out, in, e_dim)`` and ``e~ = [e, 1]`` (the trailing 1 picks up ``c``),
every pass is one GEMM whose left operand is an outer product formed tile by tile in registers:

    forward  y[b, o]    = sum_{(i, d)} (x_b ⊗ e~_b)[i, d]  · [A|c][o, i, d]
    dx       dx[b, i]   = sum_{(o, d)} (dy_b ⊗ e~_b)[o, d] · [A|c][o, i, d]
    de       de[b, d]   = sum_{(o, i)} (dy_b ⊗ x_b)[o, i]  · A[o, i, d]
    dA, dc   d[A|c][o, i, d] = sum_b dy[b, o] · (x_b ⊗ e~_b)[i, d]

The first three share :func:`_outer_gemm_kernel` (strides select the role of each axis of
``A``); the weight gradient is :func:`_outer_grad_kernel`. The plain-torch oracle is
:func:`hyperkern.reference.hyper_linear.hyper_linear`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from hyperkern._shared import compute_dtype
from hyperkern._shared import interpreting as _interpreting
from hyperkern.validation import check_hyper_linear_inputs


def _tf32(t: Tensor) -> bool:
    """Follow torch: TF32 only for float32 CUDA tensors when ``allow_tf32`` is set."""
    return t.is_cuda and t.dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32


def _gemm_configs(small: bool) -> list[triton.Config]:
    if _interpreting():
        return [triton.Config({"BLOCK_B": 16, "BLOCK_N": 16, "BLOCK_K": 16}, num_warps=1)]
    if small:  # float64 reduces by broadcast-and-sum: keep tiles small
        sizes = [(16, 16, 16, 2), (32, 16, 16, 4), (16, 32, 16, 4)]
    else:
        sizes = [
            (32, 32, 32, 4),
            (64, 64, 32, 4),
            (64, 128, 32, 4),
            (128, 64, 32, 4),
            (128, 128, 32, 8),
            (64, 64, 64, 4),
        ]
    return [
        triton.Config({"BLOCK_B": b, "BLOCK_N": n, "BLOCK_K": k}, num_warps=w)
        for b, n, k, w in sizes
    ]


def _grad_configs(small: bool) -> list[triton.Config]:
    if _interpreting():
        return [triton.Config({"BLOCK_O": 16, "BLOCK_K": 16, "BLOCK_B": 16}, num_warps=1)]
    if small:
        sizes = [(16, 16, 16, 2), (32, 16, 16, 4)]
    else:
        sizes = [(32, 32, 32, 4), (64, 64, 32, 4), (64, 128, 32, 4), (128, 64, 32, 8)]
    return [
        triton.Config({"BLOCK_O": o, "BLOCK_K": k, "BLOCK_B": b}, num_warps=w)
        for o, k, b, w in sizes
    ]


@triton.jit
def _mm(a, b, USE_DOT: tl.constexpr, TF32: tl.constexpr):
    """(M, K) @ (K, N) in the operands' dtype: tl.dot for fp32 (TF32 tensor cores only when
    torch allows TF32 matmuls), broadcast-and-sum for fp64."""
    if USE_DOT:
        if TF32:
            out = tl.dot(a, b, input_precision="tf32")
        else:
            out = tl.dot(a, b, input_precision="ieee")
    else:
        out = tl.sum(a[:, :, None] * b[None, :, :], axis=1)
    return out


@triton.jit
def _outer_gemm_kernel(
    u_ptr, v_ptr, a_ptr, c_ptr, out_ptr,
    B, P, Q, N,
    sa_p, sa_q, sa_n, sc_p, sc_n,
    HAS_EXT: tl.constexpr, USE_DOT: tl.constexpr, TF32: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """out[b, n] = sum_{p, q} u[b, p] v~[b, q] M[p, q, n]; v~ = [v, 1] and M[:, Q] = c if HAS_EXT.

    u: (B, P), v: (B, Q), out: (B, N), all contiguous; M[p, q, n] = a[p*sa_p + q*sa_q + n*sa_n].
    """
    pid = tl.program_id(0).to(tl.int64)  # int64: offsets may pass 2^31
    n_blocks_n = tl.cdiv(N, BLOCK_N)
    pid_b = pid // n_blocks_n
    pid_n = pid % n_blocks_n
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_b = offs_b < B
    mask_n = offs_n < N
    if HAS_EXT:
        q_ext = Q + 1
    else:
        q_ext = Q
    k_total = P * q_ext
    acc = tl.zeros((BLOCK_B, BLOCK_N), dtype=out_ptr.dtype.element_ty)
    for k0 in range(0, k_total, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < k_total
        p = offs_k // q_ext
        q = offs_k % q_ext
        gen_k = mask_k & (q < Q)
        u = tl.load(u_ptr + offs_b[:, None] * P + p[None, :],
                    mask=mask_b[:, None] & mask_k[None, :], other=0.0)  # fmt: skip
        v = tl.load(v_ptr + offs_b[:, None] * Q + q[None, :],
                    mask=mask_b[:, None] & gen_k[None, :], other=1.0)  # fmt: skip
        z = u * v
        m = tl.load(a_ptr + p[:, None] * sa_p + q[:, None] * sa_q + offs_n[None, :] * sa_n,
                    mask=gen_k[:, None] & mask_n[None, :], other=0.0)  # fmt: skip
        if HAS_EXT:
            ext_k = mask_k & (q == Q)
            m += tl.load(c_ptr + p[:, None] * sc_p + offs_n[None, :] * sc_n,
                         mask=ext_k[:, None] & mask_n[None, :], other=0.0)  # fmt: skip
        acc += _mm(z, m, USE_DOT, TF32)
    tl.store(out_ptr + offs_b[:, None] * N + offs_n[None, :], acc,
             mask=mask_b[:, None] & mask_n[None, :])  # fmt: skip


@triton.jit
def _outer_grad_kernel(
    dy_ptr, x_ptr, e_ptr, da_ptr, dc_ptr,
    B, O, I, D,
    USE_DOT: tl.constexpr, TF32: tl.constexpr,
    BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_B: tl.constexpr,
):  # fmt: skip
    """dA[o, i, d] = sum_b dy[b, o] x[b, i] e[b, d] and dc[o, i] = sum_b dy[b, o] x[b, i].

    dy: (B, O), x: (B, I), e: (B, D), dA: (O*I, D), dc: (O*I,), all contiguous.
    """
    pid = tl.program_id(0).to(tl.int64)  # int64: offsets may pass 2^31
    n_blocks_k = tl.cdiv(I * (D + 1), BLOCK_K)
    pid_o = pid // n_blocks_k
    pid_k = pid % n_blocks_k
    offs_o = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    d_ext = D + 1
    mask_o = offs_o < O
    mask_k = offs_k < I * d_ext
    i = offs_k // d_ext
    d = offs_k % d_ext
    gen_k = mask_k & (d < D)
    acc = tl.zeros((BLOCK_O, BLOCK_K), dtype=da_ptr.dtype.element_ty)
    for b0 in range(0, B, BLOCK_B):
        offs_b = b0 + tl.arange(0, BLOCK_B)
        mask_b = offs_b < B
        dy_t = tl.load(dy_ptr + offs_b[None, :] * O + offs_o[:, None],
                       mask=mask_b[None, :] & mask_o[:, None], other=0.0)  # fmt: skip
        x = tl.load(x_ptr + offs_b[:, None] * I + i[None, :],
                    mask=mask_b[:, None] & mask_k[None, :], other=0.0)  # fmt: skip
        e = tl.load(e_ptr + offs_b[:, None] * D + d[None, :],
                    mask=mask_b[:, None] & gen_k[None, :], other=1.0)  # fmt: skip
        acc += _mm(dy_t, x * e, USE_DOT, TF32)
    rows = offs_o[:, None] * I + i[None, :]
    tl.store(da_ptr + rows * D + d[None, :], acc, mask=mask_o[:, None] & gen_k[None, :])
    tl.store(dc_ptr + rows, acc, mask=mask_o[:, None] & (mask_k & (d == D))[None, :])


_GEMM_KEY = ["B", "P", "Q", "N", "HAS_EXT"]
_GRAD_KEY = ["B", "O", "I", "D"]
_outer_gemm = {
    torch.float32: triton.autotune(configs=_gemm_configs(small=False), key=_GEMM_KEY)(
        _outer_gemm_kernel
    ),
    torch.float64: triton.autotune(configs=_gemm_configs(small=True), key=_GEMM_KEY)(
        _outer_gemm_kernel
    ),
}
_outer_grad = {
    torch.float32: triton.autotune(configs=_grad_configs(small=False), key=_GRAD_KEY)(
        _outer_grad_kernel
    ),
    torch.float64: triton.autotune(configs=_grad_configs(small=True), key=_GRAD_KEY)(
        _outer_grad_kernel
    ),
}


def _launch_outer_gemm(
    u: Tensor,
    v: Tensor,
    a: Tensor,
    c: Tensor,
    n_out: int,
    a_strides: tuple[int, int, int],
    c_strides: tuple[int, int],
    has_ext: bool,
) -> Tensor:
    batch, p_size = u.shape
    q_size = v.shape[1]
    out = torch.empty(batch, n_out, device=u.device, dtype=u.dtype)
    if batch == 0:
        return out

    def grid(meta):
        return (triton.cdiv(batch, meta["BLOCK_B"]) * triton.cdiv(n_out, meta["BLOCK_N"]),)

    _outer_gemm[u.dtype][grid](
        u, v, a, c, out,
        batch, p_size, q_size, n_out,
        *a_strides, *c_strides,
        HAS_EXT=has_ext, USE_DOT=u.dtype == torch.float32, TF32=_tf32(u),
    )  # fmt: skip
    return out


def hyper_linear_forward(x: Tensor, e: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Kernel forward on contiguous inputs: x (b, in), e (b, e_dim), weight (out*in, e_dim),
    bias (out*in,) -> y (b, out). No validation; use :func:`hyper_linear`."""
    in_f, e_dim = x.shape[1], e.shape[1]
    out_f = weight.shape[0] // in_f
    # M[p=i, q=d, n=o] = A[o, i, d]; ext column c[o, i].
    return _launch_outer_gemm(
        x, e, weight, bias, out_f, (e_dim, 1, in_f * e_dim), (1, in_f), has_ext=True
    )


def hyper_linear_backward(
    grad_y: Tensor,
    x: Tensor,
    e: Tensor,
    weight: Tensor,
    bias: Tensor,
    needs: tuple[bool, bool, bool, bool] = (True, True, True, True),
) -> tuple[Tensor | None, ...]:
    """Kernel backward: grad_y (b, out) -> (dx (b, in), de (b, e_dim), dA (out*in, e_dim),
    dc (out*in,)); entries whose ``needs`` flag is False are None."""
    batch, in_f = x.shape
    e_dim = e.shape[1]
    out_f = weight.shape[0] // in_f
    dx = de = da = dc = None
    if needs[0]:  # M[p=o, q=d, n=i] = A[o, i, d]; ext column c[o, i]
        dx = _launch_outer_gemm(
            grad_y, e, weight, bias, in_f, (in_f * e_dim, 1, e_dim), (in_f, 1), has_ext=True
        )
    if needs[1]:  # M[p=o, q=i, n=d] = A[o, i, d]; no ext column
        de = _launch_outer_gemm(
            grad_y, x, weight, bias, e_dim, (in_f * e_dim, e_dim, 1), (0, 0), has_ext=False
        )
    if needs[2] or needs[3]:
        da = torch.zeros_like(weight)
        dc = torch.zeros_like(bias)
        if batch > 0:

            def grid(meta):
                n_k = triton.cdiv(in_f * (e_dim + 1), meta["BLOCK_K"])
                return (triton.cdiv(out_f, meta["BLOCK_O"]) * n_k,)

            _outer_grad[x.dtype][grid](
                grad_y, x, e, da, dc, batch, out_f, in_f, e_dim,
                USE_DOT=x.dtype == torch.float32, TF32=_tf32(x),
            )  # fmt: skip
        da = da if needs[2] else None
        dc = dc if needs[3] else None
    return dx, de, da, dc


class HyperLinearFunction(torch.autograd.Function):
    """Autograd glue for the fused kernels; inputs must already be validated and contiguous."""

    @staticmethod
    def forward(ctx, x, e, weight, bias):  # type: ignore[override]
        ctx.save_for_backward(x, e, weight, bias)
        return hyper_linear_forward(x, e, weight, bias)

    @staticmethod
    def backward(ctx, grad_y):  # type: ignore[override]
        x, e, weight, bias = ctx.saved_tensors
        return hyper_linear_backward(
            grad_y.contiguous(), x, e, weight, bias, tuple(ctx.needs_input_grad)
        )


def hyper_linear(x: Tensor, e: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Per-sample linear map ``y_b = reshape(A e_b + c, (out, in)) x_b`` by the fused kernel.

    Args:
        x: inputs ``(b, in)``.
        e: per-sample embeddings ``(b, e_dim)``.
        weight: generator matrix ``A`` ``(out*in, e_dim)``; row ``o*in + i`` generates ``W[o, i]``.
        bias: generator offset ``c`` ``(out*in,)``.

    Returns:
        ``y`` ``(b, out)``; differentiable in all four inputs. Needs CUDA tensors, or CPU tensors
        with ``TRITON_INTERPRET=1`` set before triton was imported.
    """
    check_hyper_linear_inputs(x, e, weight, bias)
    if x.device.type != "cuda" and not _interpreting():
        raise ValueError(
            f"x is on {x.device}: the Triton kernel needs CUDA tensors or TRITON_INTERPRET=1; "
            "use hyperkern.reference.hyper_linear.hyper_linear on CPU"
        )
    work = compute_dtype(x.dtype)  # float16/bfloat16 run in float32
    operands = (t.to(work).contiguous() for t in (x, e, weight, bias))
    return HyperLinearFunction.apply(*operands).to(x.dtype)
