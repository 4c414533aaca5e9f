"""Duplicate detection by sorted integer keys (docs/algorithm.md §3), as Triton kernels.

1. :func:`_keys_kernel`: one int64 key per tuple, the nested Cantor code
   ``u(d1, u(d2, ... dr))`` (exact: the even factor of ``t (t + 1)`` is halved before the
   product, :func:`cantor_step`) or the row-major linear index; the fused sampler
   (:mod:`.sampling`) computes the same keys while it samples;
2. ``torch.sort(..., stable=True)`` of each context's keys (padding keys are ``-1``);
3. :func:`_mark_kernel`: ``sorted[i] == sorted[i - 1]`` marks a repeat, written straight to the
   tuple's original position (the sort order is a permutation, so no two writes collide).

The stable sort keeps the first occurrence in mean-major order, as the reference does.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from hyperkern._shared import (
    constant,
    from_contexts,
    interpreting,
    resolve_key_kind,
    row_major_strides,
    to_contexts,
)

from ._launch import guard, on_device


def _block() -> int:
    return 128 if interpreting() else 512


@triton.jit
def cantor_step(a, code):
    """``u(a, code) = (a + code)(a + code + 1) / 2 + code`` in exact int64."""
    t = a + code
    half = tl.where(t % 2 == 0, t // 2, t)
    other = tl.where(t % 2 == 0, t + 1, (t + 1) // 2)
    return half * other + code


@triton.jit
def _keys_kernel(
    points_ptr, strides_ptr, keys_ptr, N, R, CANTOR: tl.constexpr, BLOCK: tl.constexpr
):
    """keys[n] for (N, R) int64 points: nested Cantor code, or sum_d p[n, d] * strides[d]."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    code = tl.load(points_ptr + offs * R + (R - 1), mask=mask, other=0)
    if not CANTOR:
        code = code * tl.load(strides_ptr + R - 1)
    for i in range(1, R):
        p = tl.load(points_ptr + offs * R + (R - 1 - i), mask=mask, other=0)
        if CANTOR:
            code = cantor_step(p, code)
        else:
            code += p * tl.load(strides_ptr + R - 1 - i)
    tl.store(keys_ptr + offs, code, mask=mask)


@triton.jit
def _mark_kernel(sorted_ptr, order_ptr, repeat_ptr, L, BLOCK: tl.constexpr):
    """repeat[c, order[c, i]] = sorted[c, i] == sorted[c, i - 1] (i > 0); (C, L) contiguous.

    One-dimensional grid over (context, block of L): axis 0 takes 2^31 - 1 programs."""
    pid = tl.program_id(0).to(tl.int64)
    n_blocks = tl.cdiv(L, BLOCK)
    row = (pid // n_blocks) * L
    offs = (pid % n_blocks) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < L
    here = tl.load(sorted_ptr + row + offs, mask=mask, other=0)
    before = tl.load(sorted_ptr + row + offs - 1, mask=mask & (offs > 0), other=0)
    repeat = (offs > 0) & (here == before)
    target = tl.load(order_ptr + row + offs, mask=mask, other=0)
    tl.store(repeat_ptr + row + target, repeat.to(tl.int8), mask=mask)


def tuple_keys(points: Tensor, dims: list[int], kind: str = "auto") -> Tensor:
    """``(..., r)`` int64 points -> ``(...)`` int64 keys, ``kind`` ``"cantor"``, ``"linear"``
    or ``"auto"`` (see :func:`hyperkern._shared.resolve_key_kind`)."""
    cantor = resolve_key_kind(dims, kind) == "cantor"
    r = points.shape[-1]
    keys = torch.empty(points.shape[:-1], dtype=torch.int64, device=points.device)
    n = keys.numel()
    if n == 0:
        return keys
    if r == 0:  # no coordinates: every tuple is the same (empty) tuple
        return keys.zero_()
    (flat,) = guard(points)
    strides = constant(row_major_strides(dims), points.device)
    block = _block()
    with on_device(flat):
        _keys_kernel[(triton.cdiv(n, block),)](flat, strides, keys, n, r, cantor, block)
    return keys


def duplicate_mask_from_keys(keys: Tensor, context_size: int | None) -> Tensor:
    """``(B, k, S)`` non-negative int64 keys -> ``(B, k, S)`` bool, True where the key occurred
    earlier in its context (mean-major order)."""
    B, k, S = keys.shape
    if keys.numel() == 0:
        return torch.zeros(B, k, S, dtype=torch.bool, device=keys.device)
    ctx = to_contexts(keys, context_size, pad_value=-1)  # (C, cs, S)
    n_ctx, length = ctx.shape[0], ctx.shape[1] * S
    sorted_keys, order = torch.sort(ctx.reshape(n_ctx, length), dim=-1, stable=True)
    sorted_keys, order = guard(sorted_keys, order)
    repeat = torch.empty(n_ctx, length, dtype=torch.int8, device=keys.device)
    block = _block()
    with on_device(keys):
        grid = (n_ctx * triton.cdiv(length, block),)
        _mark_kernel[grid](sorted_keys, order, repeat, length, block)
    return from_contexts(repeat.view(torch.bool).reshape(ctx.shape), B, k).contiguous()
