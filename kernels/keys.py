"""Duplicate detection by sorted integer keys (SPEC §3), as Triton kernels.

Three steps, batched over every context at once:

1. :func:`_cantor_kernel` / :func:`_linear_kernel`: one int64 key per tuple, either the nested
   Cantor code ``u(d1, u(d2, ... dr))`` (exact: the even factor of ``t (t + 1)`` is halved
   before the product) or the row-major linear index;
2. ``torch.sort(..., stable=True)`` of each context's keys (padding keys are ``-1``);
3. :func:`_mark_kernel`: ``sorted[i] == sorted[i - 1]`` marks a repeat, written straight to the
   tuple's original position (the sort order is a permutation, so no two writes collide).

The stable sort keeps the first occurrence in mean-major order, as
:func:`hyperkern.reference.keys.duplicate_mask` does. The choice of key and the int64 bounds
come from the reference (:func:`~hyperkern.reference.keys.cantor_fits`,
:func:`~hyperkern.reference.keys.linear_fits`). All three ops are ``torch.library`` custom ops
(``hyperkern::cantor_keys``, ``hyperkern::linear_keys``, ``hyperkern::duplicate_mask``) with
fake implementations, so ``torch.compile`` traces them without graph breaks.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from hyperkern.reference.contexts import from_contexts, to_contexts
from hyperkern.reference.keys import resolve_key_kind


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _block_configs(name: str) -> list[triton.Config]:
    if _interpreting():
        return [triton.Config({name: 128}, num_warps=1)]
    return [
        triton.Config({name: size}, num_warps=warps)
        for size, warps in ((256, 2), (512, 4), (1024, 4), (2048, 8))
    ]


@triton.autotune(configs=_block_configs("BLOCK"), key=["N", "R"])
@triton.jit
def _cantor_kernel(points_ptr, keys_ptr, N, R, BLOCK: tl.constexpr):
    """keys[n] = u(p[n, 0], u(p[n, 1], ... p[n, R-1])) for (N, R) int64 points, contiguous."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    code = tl.load(points_ptr + offs * R + (R - 1), mask=mask, other=0)
    for i in range(1, R):
        a = tl.load(points_ptr + offs * R + (R - 1 - i), mask=mask, other=0)
        t = a + code
        half_even = tl.where(t % 2 == 0, t // 2, t)  # t (t + 1) / 2 without overflow
        other = tl.where(t % 2 == 0, t + 1, (t + 1) // 2)
        code = half_even * other + code
    tl.store(keys_ptr + offs, code, mask=mask)


@triton.autotune(configs=_block_configs("BLOCK"), key=["N", "R"])
@triton.jit
def _linear_kernel(points_ptr, strides_ptr, keys_ptr, N, R, BLOCK: tl.constexpr):
    """keys[n] = sum_d p[n, d] * strides[d] for (N, R) int64 points, contiguous."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    code = tl.zeros((BLOCK,), dtype=tl.int64)
    for d in range(0, R):
        stride = tl.load(strides_ptr + d)
        code += tl.load(points_ptr + offs * R + d, mask=mask, other=0) * stride
    tl.store(keys_ptr + offs, code, mask=mask)


@triton.autotune(configs=_block_configs("BLOCK"), key=["L"])
@triton.jit
def _mark_kernel(sorted_ptr, order_ptr, repeat_ptr, L, BLOCK: tl.constexpr):
    """repeat[c, order[c, i]] = sorted[c, i] == sorted[c, i - 1] (i > 0); (C, L) contiguous."""
    row = tl.program_id(0).to(tl.int64) * L
    offs = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < L
    here = tl.load(sorted_ptr + row + offs, mask=mask, other=0)
    before = tl.load(sorted_ptr + row + offs - 1, mask=mask & (offs > 0), other=0)
    repeat = (offs > 0) & (here == before)
    target = tl.load(order_ptr + row + offs, mask=mask, other=0)
    tl.store(repeat_ptr + row + target, repeat.to(tl.int8), mask=mask)


def _row_major_strides(dims: Sequence[int]) -> list[int]:
    return [math.prod(dims[d + 1 :]) for d in range(len(dims))]


def _launch_keys(points: torch.Tensor, strides: list[int] | None) -> torch.Tensor:
    """``(..., r)`` int64 points -> ``(...)`` int64 keys; Cantor if ``strides`` is None."""
    r = points.shape[-1]
    flat = points.contiguous().reshape(-1, r)
    n = flat.shape[0]
    keys = torch.empty(n, dtype=torch.int64, device=points.device)
    if n == 0:
        return keys.reshape(points.shape[:-1])
    if r == 0:  # no coordinates: every tuple is the same (empty) tuple
        return keys.zero_().reshape(points.shape[:-1])

    def grid(meta):
        return (triton.cdiv(n, meta["BLOCK"]),)

    if strides is None:
        _cantor_kernel[grid](flat, keys, n, r)
    else:
        strides_t = torch.tensor(strides, dtype=torch.int64, device=points.device)
        _linear_kernel[grid](flat, strides_t, keys, n, r)
    return keys.reshape(points.shape[:-1])


def _mark_repeats(keys: torch.Tensor) -> torch.Tensor:
    """``(C, L)`` int64 keys -> ``(C, L)`` bool, True at every later occurrence per row."""
    n_ctx, length = keys.shape
    if keys.numel() == 0:
        return torch.zeros_like(keys, dtype=torch.bool)
    sorted_keys, order = torch.sort(keys, dim=-1, stable=True)
    repeat = torch.empty(n_ctx, length, dtype=torch.int8, device=keys.device)

    def grid(meta):
        return (n_ctx, triton.cdiv(length, meta["BLOCK"]))

    _mark_kernel[grid](sorted_keys.contiguous(), order.contiguous(), repeat, length)
    return repeat.bool()


# ---- custom ops --------------------------------------------------------------------------


@torch.library.custom_op("hyperkern::cantor_keys", mutates_args=())
def _cantor_keys_op(points: torch.Tensor) -> torch.Tensor:
    return _launch_keys(points, None)


@torch.library.custom_op("hyperkern::linear_keys", mutates_args=())
def _linear_keys_op(points: torch.Tensor, dims: list[int]) -> torch.Tensor:
    return _launch_keys(points, _row_major_strides(dims))


@torch.library.custom_op("hyperkern::duplicate_mask", mutates_args=())
def _duplicate_mask_op(
    points: torch.Tensor, dims: list[int], context_size: int | None, key_kind: str
) -> torch.Tensor:
    B, k, S = points.shape[:3]
    if B * k * S == 0:
        return torch.zeros(B, k, S, dtype=torch.bool, device=points.device)
    strides = None if key_kind == "cantor" else _row_major_strides(dims)
    keys = _launch_keys(points, strides)  # (B, k, S)
    ctx = to_contexts(keys, context_size, pad_value=-1)  # (C, cs, S); padding keys are -1
    n_ctx, cs = ctx.shape[:2]
    repeat = _mark_repeats(ctx.reshape(n_ctx, cs * S)).reshape(ctx.shape)
    return from_contexts(repeat, B, k).contiguous()


@_cantor_keys_op.register_fake
def _(points: torch.Tensor) -> torch.Tensor:
    return points.new_empty(points.shape[:-1])


@_linear_keys_op.register_fake
def _(points: torch.Tensor, dims: list[int]) -> torch.Tensor:
    return points.new_empty(points.shape[:-1])


@_duplicate_mask_op.register_fake
def _(
    points: torch.Tensor, dims: list[int], context_size: int | None, key_kind: str
) -> torch.Tensor:
    return points.new_empty(points.shape[:-1], dtype=torch.bool)


# ---- public API ----------------------------------------------------------------------------


def _check_points(points: object, ndim: int | None = None) -> None:
    if not isinstance(points, torch.Tensor):
        raise TypeError(f"points must be a torch.Tensor, got {type(points).__name__}")
    if points.dtype != torch.int64:
        raise TypeError(f"points must be int64, got dtype {points.dtype}")
    if ndim is not None and points.dim() != ndim:
        raise ValueError(f"points must have shape (B, k, S, r), got {tuple(points.shape)}")
    if points.dim() == 0:
        raise ValueError("points must have shape (..., r), got a 0-d tensor")
    if points.device.type != "cuda" and not _interpreting():
        raise ValueError(
            f"points is on {points.device}: the Triton kernels need CUDA tensors or "
            "TRITON_INTERPRET=1; use hyperkern.reference.keys on CPU"
        )


def _check_dims(dims: Sequence[int], points: torch.Tensor) -> list[int]:
    dims = [int(d) for d in dims]
    if len(dims) != points.shape[-1]:
        raise ValueError(
            f"dims must have one size per tuple column ({points.shape[-1]}), got {tuple(dims)}"
        )
    return dims


def cantor_keys(points: torch.Tensor) -> torch.Tensor:
    """Nested Cantor code ``u(d1, u(d2, ... dr))`` per tuple, exact int64, by a Triton kernel.

    Args:
        points: ``(..., r)`` int64, non-negative.
    Returns:
        ``(...)`` int64. Callers must check :func:`hyperkern.reference.keys.cantor_fits` first.
    """
    _check_points(points)
    return _cantor_keys_op(points)


def linear_keys(points: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """Row-major linear index per tuple: ``(..., r)`` int64 -> ``(...)`` int64 (Triton kernel)."""
    _check_points(points)
    return _linear_keys_op(points, _check_dims(dims, points))


def duplicate_mask(
    points: torch.Tensor,
    dims: Sequence[int],
    context_size: int | None = None,
    key_kind: str = "auto",
) -> torch.Tensor:
    """Mask every repeated tuple within a context, keeping its first occurrence (Triton kernels).

    Same result as :func:`hyperkern.reference.keys.duplicate_mask`.

    Args:
        points: ``(B, k, S, r)`` int64 tuples, ``S`` samples for each of ``k`` means.
        dims: ``(r,)`` index-space sizes (choose the key).
        context_size: means per context; ``None`` = all ``k`` means of an instance.
        key_kind: ``"auto"``, ``"cantor"`` or ``"linear"``; ``"auto"`` takes the Cantor code
            where it fits int64 and the linear index otherwise.

    Returns:
        ``(B, k, S)`` bool, True where the tuple already occurred earlier in its context
        (order: mean-major, then sample).
    """
    _check_points(points, ndim=4)
    dims = _check_dims(dims, points)
    kind = resolve_key_kind(dims, key_kind)
    if context_size is not None and (
        not isinstance(context_size, int) or isinstance(context_size, bool) or context_size < 1
    ):
        raise ValueError(f"context_size must be None or an int >= 1, got {context_size!r}")
    return _duplicate_mask_op(points, dims, context_size, kind)
