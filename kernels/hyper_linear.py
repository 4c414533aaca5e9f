"""Fused per-sample linear head with generated weights: ``y_b = reshape(A e_b + c) x_b``.

The per-sample weights ``W_b = reshape(A e_b + c, (out, in))`` are never written to memory.
With ``A`` viewed as ``(out, in, e_dim)`` every pass is a GEMM whose left operand is an outer
product ``u_b ⊗ v_b``, formed tile by tile in registers from two contiguous loads, plus (where
``c`` takes part) a plain GEMM with ``u`` accumulated beside it:

    forward  y[b, o]  = sum_{i, d} (x_b ⊗ e_b)[i, d]  · A[o, i, d]  + sum_i x[b, i] c[o, i]
    dx       dx[b, i] = sum_{o, d} (dy_b ⊗ e_b)[o, d] · A[o, i, d]  + sum_o dy[b, o] c[o, i]
    de       de[b, d] = sum_{i, o} (x_b ⊗ dy_b)[i, o] · A[o, i, d]
    dA, dc   dA[o, i, d] = sum_b dy[b, o] (x_b ⊗ e_b)[i, d],   dc[o, i] = sum_b dy[b, o] x[b, i]

The first three share :func:`_outer_gemm_kernel`: a program owns a (batch block, output block)
tile and walks the ``(p, q)`` blocks of the outer product, so nothing divides or takes a modulus
per element; strides select the role of each axis of ``A``. When the output is narrow (the
10-class head), the ``p`` axis is split over several programs (split-K) whose partial tiles are
summed in torch, so the GPU fills. :func:`_outer_grad_kernel` forms the weight gradient the same
way, splitting the batch. float32 uses tensor cores in TF32 exactly when torch's
``torch.backends.cuda.matmul.allow_tf32`` allows it, IEEE float32 otherwise; float16/bfloat16
inputs run in float32; float64 reduces by broadcast-and-sum. Offsets are int64.
The plain-torch oracle is :func:`hyperkern.reference.hyper_linear.hyper_linear`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from hyperkern._shared import compute_dtype
from hyperkern._shared import interpreting as _interpreting
from hyperkern.validation import check_hyper_linear_inputs

_TARGET_PROGRAMS = 264  # about two programs per SM of an H100: split-K below this
_MAX_SPLITS = 32


def _tf32(t: Tensor) -> bool:
    """Follow torch: TF32 only for float32 CUDA tensors when ``allow_tf32`` is set."""
    return t.is_cuda and t.dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32


def _configs(names: tuple[str, str, str], small: bool) -> list[triton.Config]:
    """Tiles ``names`` = (rows, columns, reduction) of a GEMM; ``small`` for float64."""
    if _interpreting():
        sizes = [(16, 16, 16, 1)]
    elif small:  # broadcast-and-sum: keep tiles small
        sizes = [(16, 16, 4, 2), (32, 16, 4, 4), (16, 32, 4, 4)]
    else:
        sizes = [(32, 32, 4, 4), (64, 32, 4, 4), (64, 64, 2, 4), (128, 64, 2, 8), (64, 128, 2, 8)]
    return [
        triton.Config(dict(zip(names, size[:3], strict=True)), num_warps=size[3]) for size in sizes
    ]


def _bucket(n: int) -> int:
    """Autotune keys are powers of two, so a ragged last batch reuses the tuned config."""
    return triton.next_power_of_2(max(n, 1))


@triton.jit
def _mm(a, b, USE_DOT: tl.constexpr, TF32: tl.constexpr):
    """(M, K) @ (K, N), accumulated in the operands' dtype: tl.dot for float32 (TF32 tensor
    cores only when torch allows TF32 matmuls), broadcast-and-sum for float64."""
    if USE_DOT:
        if TF32:
            out = tl.dot(a, b, input_precision="tf32")
        else:
            out = tl.dot(a, b, input_precision="ieee")
    else:
        out = tl.sum(a[:, :, None] * b[None, :, :], axis=1)
    return out


@triton.jit
def _outer(u_ptr, v_ptr, offs_b, mask_b, offs_p, mask_p, offs_q, mask_q, P, Q):
    """``(BLOCK_B, BLOCK_P * BLOCK_Q)`` tile of ``u_b ⊗ v_b`` from two contiguous loads
    (``u (B, P)``, ``v (B, Q)``); also the ``u`` tile."""
    u = tl.load(
        u_ptr + offs_b[:, None] * P + offs_p[None, :],
        mask=mask_b[:, None] & mask_p[None, :],
        other=0.0,
    )
    v = tl.load(
        v_ptr + offs_b[:, None] * Q + offs_q[None, :],
        mask=mask_b[:, None] & mask_q[None, :],
        other=0.0,
    )
    z = u[:, :, None] * v[:, None, :]
    return tl.reshape(z, (z.shape[0], z.shape[1] * z.shape[2])), u


@triton.jit
def _outer_gemm_kernel(
    u_ptr, v_ptr, a_ptr, c_ptr, out_ptr,
    B, P, Q, N, p_per_split,
    sa_p, sa_q, sa_n, sc_p, sc_n,
    B_KEY, P_KEY, Q_KEY, N_KEY,
    HAS_C: tl.constexpr, USE_DOT: tl.constexpr, TF32: tl.constexpr, BLOCK_Q: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    """out[s, b, n] = sum_{p in split s, q} u[b, p] v[b, q] M[p, q, n] (+ sum_p u[b, p] C[p, n]).

    ``M[p, q, n] = a[p*sa_p + q*sa_q + n*sa_n]``, ``C[p, n] = c[p*sc_p + n*sc_n]``; the grid is
    (split, batch block, output block) on axis 0; ``*_KEY`` are the bucketed autotune keys.
    """
    pid = tl.program_id(0).to(tl.int64)
    n_bn = tl.cdiv(B, BLOCK_B) * tl.cdiv(N, BLOCK_N)
    split = pid // n_bn
    offs_b = ((pid % n_bn) // tl.cdiv(N, BLOCK_N)) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_n = (pid % tl.cdiv(N, BLOCK_N)) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_b = offs_b < B
    mask_n = offs_n < N
    p_lo = split * p_per_split
    p_hi = tl.minimum(p_lo + p_per_split, P)
    acc = tl.zeros((BLOCK_B, BLOCK_N), dtype=out_ptr.dtype.element_ty)
    for p0 in range(p_lo, p_hi, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        mask_p = offs_p < p_hi
        for q0 in range(0, Q, BLOCK_Q):
            offs_q = q0 + tl.arange(0, BLOCK_Q)
            mask_q = offs_q < Q
            z, u = _outer(u_ptr, v_ptr, offs_b, mask_b, offs_p, mask_p, offs_q, mask_q, P, Q)
            cell = offs_p[:, None, None] * sa_p + offs_q[None, :, None] * sa_q
            m_mask = (mask_p[:, None] & mask_q[None, :])[:, :, None] & mask_n[None, None, :]
            m = tl.load(a_ptr + cell + offs_n[None, None, :] * sa_n, mask=m_mask, other=0.0)
            acc += _mm(z, tl.reshape(m, (BLOCK_P * BLOCK_Q, BLOCK_N)), USE_DOT, TF32)
        if HAS_C:  # the bias, once per block of p (u from the last q block is the same)
            cm = tl.load(
                c_ptr + offs_p[:, None] * sc_p + offs_n[None, :] * sc_n,
                mask=mask_p[:, None] & mask_n[None, :],
                other=0.0,
            )
            acc += _mm(u, cm, USE_DOT, TF32)
    out = out_ptr + (split * B + offs_b[:, None]) * N + offs_n[None, :]
    tl.store(out, acc, mask=mask_b[:, None] & mask_n[None, :])


@triton.jit
def _outer_grad_kernel(
    dy_ptr, x_ptr, e_ptr, da_ptr, dc_ptr,
    B, O, I, D, b_per_split,
    B_KEY, O_KEY, I_KEY, D_KEY,
    USE_DOT: tl.constexpr, TF32: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_O: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_B: tl.constexpr,
):  # fmt: skip
    """dA[s, o, i, d] = sum_{b in split s} dy[b, o] x[b, i] e[b, d] and dc[s, o, i] likewise
    without e. ``dy (B, O)``, ``x (B, I)``, ``e (B, D)``; grid (split, o, i, d blocks)."""
    pid = tl.program_id(0).to(tl.int64)
    n_d = tl.cdiv(D, BLOCK_D)
    n_i = tl.cdiv(I, BLOCK_I)
    n_oid = tl.cdiv(O, BLOCK_O) * n_i * n_d
    split = pid // n_oid
    rest = pid % n_oid
    offs_o = (rest // (n_i * n_d)) * BLOCK_O + tl.arange(0, BLOCK_O)
    offs_i = ((rest // n_d) % n_i) * BLOCK_I + tl.arange(0, BLOCK_I)
    first_d = (rest % n_d) * BLOCK_D
    offs_d = first_d + tl.arange(0, BLOCK_D)
    mask_o, mask_i, mask_d = offs_o < O, offs_i < I, offs_d < D
    b_lo = split * b_per_split
    b_hi = tl.minimum(b_lo + b_per_split, B)
    acc = tl.zeros((BLOCK_O, BLOCK_I * BLOCK_D), dtype=da_ptr.dtype.element_ty)
    acc_c = tl.zeros((BLOCK_O, BLOCK_I), dtype=da_ptr.dtype.element_ty)
    for b0 in range(b_lo, b_hi, BLOCK_B):
        offs_b = b0 + tl.arange(0, BLOCK_B)
        mask_b = offs_b < b_hi
        dy_t = tl.load(
            dy_ptr + offs_b[None, :] * O + offs_o[:, None],
            mask=mask_b[None, :] & mask_o[:, None],
            other=0.0,
        )
        z, x = _outer(x_ptr, e_ptr, offs_b, mask_b, offs_i, mask_i, offs_d, mask_d, I, D)
        acc += _mm(dy_t, z, USE_DOT, TF32)
        acc_c += _mm(dy_t, x, USE_DOT, TF32)
    rows = (split * O + offs_o[:, None, None]) * I + offs_i[None, :, None]
    mask = (mask_o[:, None] & mask_i[None, :])[:, :, None] & mask_d[None, None, :]
    tl.store(
        da_ptr + rows * D + offs_d[None, None, :],
        tl.reshape(acc, (BLOCK_O, BLOCK_I, BLOCK_D)),
        mask=mask,
    )
    if first_d == 0:
        c_rows = (split * O + offs_o[:, None]) * I + offs_i[None, :]
        tl.store(dc_ptr + c_rows, acc_c, mask=mask_o[:, None] & mask_i[None, :])


_GEMM_KEY = ["B_KEY", "P_KEY", "Q_KEY", "N_KEY", "BLOCK_Q"]
_GRAD_KEY = ["B_KEY", "O_KEY", "I_KEY", "D_KEY", "BLOCK_D"]
_outer_gemm = {
    dtype: triton.autotune(
        configs=_configs(("BLOCK_B", "BLOCK_N", "BLOCK_P"), small), key=_GEMM_KEY
    )(_outer_gemm_kernel)
    for dtype, small in ((torch.float32, False), (torch.float64, True))
}
_outer_grad = {
    dtype: triton.autotune(
        configs=_configs(("BLOCK_O", "BLOCK_I", "BLOCK_B"), small), key=_GRAD_KEY
    )(_outer_grad_kernel)
    for dtype, small in ((torch.float32, False), (torch.float64, True))
}


def _splits(n_programs: int, n_items: int, splits: int | None) -> int:
    """How many programs share the reduction: enough to fill the GPU, at most one per 64 items."""
    if splits is not None:
        return max(1, min(splits, n_items))
    if _interpreting() or n_programs >= _TARGET_PROGRAMS:
        return 1
    return max(1, min(_MAX_SPLITS, _TARGET_PROGRAMS // max(n_programs, 1), n_items // 64))


def _block_q(q: int) -> int:
    return min(16, triton.next_power_of_2(max(q, 1)))


def _launch_outer_gemm(
    u: Tensor,
    v: Tensor,
    a: Tensor,
    c: Tensor,
    n_out: int,
    a_strides: tuple[int, int, int],
    c_strides: tuple[int, int] | None,
    splits: int | None = None,
) -> Tensor:
    """``out (b, n_out)`` of :func:`_outer_gemm_kernel`; ``c_strides`` None: no bias term."""
    batch, p_size = u.shape
    q_size = v.shape[1]
    if batch == 0 or n_out == 0:
        return u.new_zeros(batch, n_out)
    n_splits = _splits(triton.cdiv(batch, 64) * triton.cdiv(n_out, 64), p_size, splits)
    per_split = triton.cdiv(p_size, n_splits)
    n_splits = triton.cdiv(p_size, per_split) if p_size else 1
    out = u.new_empty(n_splits, batch, n_out) if p_size else u.new_zeros(1, batch, n_out)

    def grid(meta):
        tiles = triton.cdiv(batch, meta["BLOCK_B"]) * triton.cdiv(n_out, meta["BLOCK_N"])
        return (n_splits * tiles,)

    if p_size:
        _outer_gemm[u.dtype][grid](
            u, v, a, c, out,
            batch, p_size, q_size, n_out, per_split,
            *a_strides, *(c_strides or (0, 0)),
            _bucket(batch), _bucket(p_size), _bucket(q_size), _bucket(n_out),
            HAS_C=c_strides is not None, USE_DOT=u.dtype == torch.float32, TF32=_tf32(u),
            BLOCK_Q=_block_q(q_size),
        )  # fmt: skip
    return out.sum(0) if n_splits > 1 else out[0]


def hyper_linear_forward(x: Tensor, e: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Kernel forward on contiguous inputs: x (b, in), e (b, e_dim), weight (out*in, e_dim),
    bias (out*in,) -> y (b, out). No validation; use :func:`hyper_linear`."""
    in_f, e_dim = x.shape[1], e.shape[1]
    out_f = weight.shape[0] // in_f
    # M[p=i, q=d, n=o] = A[o, i, d]; C[p=i, n=o] = c[o, i]
    return _launch_outer_gemm(x, e, weight, bias, out_f, (e_dim, 1, in_f * e_dim), (1, in_f))


def _launch_outer_grad(grad_y: Tensor, x: Tensor, e: Tensor, splits: int | None = None):
    """``(dA (out*in, e_dim), dc (out*in,))`` of :func:`_outer_grad_kernel`."""
    batch, in_f = x.shape
    out_f, e_dim = grad_y.shape[1], e.shape[1]
    block_d = min(32, triton.next_power_of_2(max(e_dim, 1)))
    n_tiles = triton.cdiv(out_f, 32) * triton.cdiv(in_f, 32) * triton.cdiv(e_dim, block_d)
    n_splits = _splits(n_tiles, batch, splits)
    per_split = triton.cdiv(max(batch, 1), n_splits)
    n_splits = triton.cdiv(max(batch, 1), per_split)
    da = x.new_zeros(n_splits, out_f * in_f, e_dim)
    dc = x.new_zeros(n_splits, out_f * in_f)
    if batch and out_f * in_f * e_dim:

        def grid(meta):
            tiles = triton.cdiv(out_f, meta["BLOCK_O"]) * triton.cdiv(in_f, meta["BLOCK_I"])
            return (n_splits * tiles * triton.cdiv(e_dim, block_d),)

        _outer_grad[x.dtype][grid](
            grad_y, x, e, da, dc, batch, out_f, in_f, e_dim, per_split,
            _bucket(batch), _bucket(out_f), _bucket(in_f), _bucket(e_dim),
            USE_DOT=x.dtype == torch.float32, TF32=_tf32(x), BLOCK_D=block_d,
        )  # fmt: skip
    return da.sum(0), dc.sum(0)


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
    in_f, e_dim = x.shape[1], e.shape[1]
    dx = de = da = dc = None
    if needs[0]:  # M[p=o, q=d, n=i] = A[o, i, d]; C[p=o, n=i] = c[o, i]
        strides = (in_f * e_dim, 1, e_dim)
        dx = _launch_outer_gemm(grad_y, e, weight, bias, in_f, strides, (in_f, 1))
    if needs[1]:  # M[p=i, q=o, n=d] = A[o, i, d]; no bias term
        de = _launch_outer_gemm(x, grad_y, weight, bias, e_dim, (e_dim, in_f * e_dim, 1), None)
    if needs[2] or needs[3]:
        da, dc = _launch_outer_grad(grad_y, x, e)
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
