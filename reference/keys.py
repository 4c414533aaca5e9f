"""Integer keys for index tuples and the duplicate mask (SPEC §3). No gradient."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .contexts import from_contexts, to_contexts

INT64_MAX = 2**63 - 1


def _cantor_pair_int(a: int, b: int) -> int:
    return (a + b) * (a + b + 1) // 2 + b


def cantor_max(dims: Sequence[int]) -> int:
    """Largest nested Cantor code over ``dims`` (the code grows in every argument)."""
    code = dims[-1] - 1
    for d in reversed(dims[:-1]):
        code = _cantor_pair_int(d - 1, code)
    return code


def cantor_fits(dims: Sequence[int]) -> bool:
    """Whether every nested Cantor code over ``dims`` fits in int64."""
    return cantor_max(dims) <= INT64_MAX


def linear_fits(dims: Sequence[int]) -> bool:
    """Whether every row-major linear index over ``dims`` fits in int64."""
    return math.prod(dims) - 1 <= INT64_MAX


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
    code = points[..., -1]
    for d in range(points.shape[-1] - 2, -1, -1):
        code = _cantor_pair(points[..., d], code)
    return code


def linear_keys(points: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """Row-major linear index per tuple: ``(..., r)`` int64 -> ``(...)`` int64."""
    strides = [math.prod(dims[d + 1 :]) for d in range(len(dims))]
    strides_t = torch.tensor(strides, dtype=torch.int64, device=points.device)
    return (points * strides_t).sum(-1)


def resolve_key_kind(dims: Sequence[int], kind: str = "auto") -> str:
    """``"cantor"`` or ``"linear"`` for ``kind`` over ``dims``.

    ``"auto"`` takes the Cantor code where it fits int64 for ``dims`` and the linear index
    otherwise. Raises ``ValueError`` when the chosen key cannot fit int64.
    """
    if kind == "auto":
        kind = "cantor" if cantor_fits(dims) else "linear"
    if kind == "cantor":
        if not cantor_fits(dims):
            raise ValueError(f"Cantor keys for dims={tuple(dims)} exceed int64")
        return kind
    if kind == "linear":
        if not linear_fits(dims):
            raise ValueError(
                f"index space dims={tuple(dims)} has {math.prod(dims)} tuples, too many for int64"
            )
        return kind
    raise ValueError(f"key kind must be 'auto', 'cantor' or 'linear', got {kind!r}")


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
    keys = tuple_keys(points, dims, key_kind)  # (B, k, S)
    B, k, S = keys.shape
    ctx = to_contexts(keys, context_size, pad_value=-1)  # (C, cs, S); padding keys are -1
    repeat = mark_sorted_duplicates(ctx.reshape(ctx.shape[0], ctx.shape[1] * S)).reshape(ctx.shape)
    return from_contexts(repeat, B, k)
