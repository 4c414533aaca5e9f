"""Integer keys for index tuples and the duplicate mask (docs/algorithm.md §3). No gradient."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hyperkern._shared import (
    INT64_MAX,
    cantor_fits,
    cantor_max,
    linear_fits,
    resolve_key_kind,
    row_major_strides,
)

from .contexts import from_contexts, to_contexts
from .params import dims_tensor

__all__ = [
    "INT64_MAX",
    "cantor_fits",
    "cantor_keys",
    "cantor_max",
    "duplicate_mask",
    "duplicate_mask_from_keys",
    "linear_fits",
    "linear_keys",
    "mark_sorted_duplicates",
    "resolve_key_kind",
    "tuple_keys",
]


def _cantor_pair(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # (a + b)(a + b + 1) / 2 + b, halving the even factor first so no product overflows.
    t = a + b
    even = t % 2 == 0
    tri = torch.where(even, (t // 2) * (t + 1), t * ((t + 1) // 2))
    return tri + b


def cantor_keys(points: torch.Tensor) -> torch.Tensor:
    """Nested Cantor code ``u(d1, u(d2, ... dr))`` per tuple, exact int64.

    Args:
        points: ``(..., r)`` int64, non-negative.
    Returns:
        ``(...)`` int64. Callers must check :func:`cantor_fits` first.
    """
    code = points[..., -1].clone()  # a new tensor also for r = 1 (never a view of points)
    for d in range(points.shape[-1] - 2, -1, -1):
        code = _cantor_pair(points[..., d], code)
    return code


def linear_keys(points: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """Row-major linear index per tuple: ``(..., r)`` int64 -> ``(...)`` int64."""
    if points.shape[-1] == 0:
        return points.new_zeros(points.shape[:-1])
    return (points * dims_tensor(row_major_strides(dims), points.device)).sum(-1)


def tuple_keys(points: torch.Tensor, dims: Sequence[int], kind: str = "auto") -> torch.Tensor:
    """Keys for ``(..., r)`` tuples, ``kind`` as in :func:`resolve_key_kind`."""
    if resolve_key_kind(dims, kind) == "cantor":
        return cantor_keys(points)
    return linear_keys(points, dims)


def mark_sorted_duplicates(keys: torch.Tensor) -> torch.Tensor:
    """``(C, P)`` keys -> ``(C, P)`` bool, True at every later occurrence of a key per row."""
    if keys.numel() == 0:
        return torch.zeros_like(keys, dtype=torch.bool)
    sorted_keys, order = torch.sort(keys, dim=-1, stable=True)
    repeat = torch.zeros_like(sorted_keys, dtype=torch.bool)
    repeat[:, 1:] = sorted_keys[:, 1:] == sorted_keys[:, :-1]
    return torch.zeros_like(repeat).scatter_(-1, order, repeat)


def duplicate_mask_from_keys(keys: torch.Tensor, context_size: int | None = None) -> torch.Tensor:
    """``(B, k, S)`` int64 keys (non-negative) -> ``(B, k, S)`` bool, True where the key already
    occurred earlier in its context (order: mean-major, then sample)."""
    B, k, S = keys.shape
    ctx = to_contexts(keys, context_size, pad_value=-1)  # (C, cs, S); padding keys are -1
    repeat = mark_sorted_duplicates(ctx.reshape(ctx.shape[0], ctx.shape[1] * S)).reshape(ctx.shape)
    return from_contexts(repeat, B, k).contiguous()


def duplicate_mask(
    points: torch.Tensor,
    dims: Sequence[int],
    context_size: int | None = None,
    key_kind: str = "auto",
) -> torch.Tensor:
    """Mask every repeated tuple within a context, keeping its first occurrence.

    Args:
        points: ``(B, k, S, r)`` int64 tuples, ``S`` samples for each of ``k`` means.
        dims: ``(r,)`` index-space sizes (choose the key).
        context_size: means per context; ``None`` = all ``k`` means of an instance.
        key_kind: ``"auto"``, ``"cantor"`` or ``"linear"`` (see :func:`tuple_keys`).

    Returns:
        ``(B, k, S)`` bool, True where the tuple already occurred earlier in its context
        (order: mean-major, then sample).
    """
    return duplicate_mask_from_keys(tuple_keys(points, dims, key_kind), context_size)
