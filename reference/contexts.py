"""Split the k means of each instance into contexts of ``context_size`` means (SPEC §3)."""

from __future__ import annotations

import torch


def context_count(k: int, context_size: int | None) -> tuple[int, int]:
    """``(contexts per instance, means per context)``; ``None`` means one context of ``k``."""
    if context_size is not None and context_size < 1:
        raise ValueError(f"context_size must be None or >= 1, got {context_size}")
    size = max(k if context_size is None else min(context_size, k), 1)
    return -(-k // size), size


def to_contexts(t: torch.Tensor, context_size: int | None, pad_value: float = 0) -> torch.Tensor:
    """``(B, k, ...)`` -> ``(B * n_ctx, cs, ...)``, padding ``k`` up to ``n_ctx * cs``."""
    B, k = t.shape[:2]
    n_ctx, cs = context_count(k, context_size)
    pad = n_ctx * cs - k
    if pad:
        filler = t.new_full((B, pad, *t.shape[2:]), pad_value)
        t = torch.cat([t, filler], dim=1)
    return t.reshape(B * n_ctx, cs, *t.shape[2:])


def from_contexts(t: torch.Tensor, B: int, k: int) -> torch.Tensor:
    """Inverse of :func:`to_contexts`: ``(B * n_ctx, cs, ...)`` -> ``(B, k, ...)``."""
    if B == 0:
        return t.new_empty((0, k, *t.shape[2:]))
    return t.reshape(B, (t.shape[0] // B) * t.shape[1], *t.shape[2:])[:, :k]
