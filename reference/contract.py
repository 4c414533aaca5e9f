"""Sparse W (tuples + values) times dense x (SPEC §5)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def row_major_index(points: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``(..., len(shape))`` int64 tuples -> ``(...)`` row-major flat index over ``shape``."""
    if len(shape) == 0:
        return points.new_zeros(points.shape[:-1])
    strides = [math.prod(shape[d + 1 :]) for d in range(len(shape))]
    return (points * torch.tensor(strides, dtype=points.dtype, device=points.device)).sum(-1)


def flatten_tuples(
    points: torch.Tensor, out_shape: Sequence[int], in_shape: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``(..., r)`` tuples of W (``out_shape + in_shape``) into flat ``(row, col)``."""
    m = len(out_shape)
    return row_major_index(points[..., :m], out_shape), row_major_index(points[..., m:], in_shape)


def contract(
    rows: torch.Tensor,
    cols: torch.Tensor,
    vprime: torch.Tensor,
    x: torch.Tensor,
    n_out: int,
) -> torch.Tensor:
    """``y[b, row] = sum_j vprime[j] * x[b, col_j]`` for a sparse W given as ``P`` nonzeros.

    Duplicate ``(row, col)`` pairs add up.

    Args:
        rows: ``(B, P)`` int64 output index per nonzero.
        cols: ``(B, P)`` int64 input index per nonzero.
        vprime: ``(B, P)`` values.
        x: ``(b, n_in)`` or ``(b, n_in, c)``. ``B == b``: one W per instance;
            ``B == 1``: one W shared by the batch (``Y = W X``).
        n_out: number of output rows.

    Returns:
        ``(b, n_out)`` or ``(b, n_out, c)``.
    """
    vector = x.dim() == 2
    x3 = x.unsqueeze(-1) if vector else x
    b, _, c = x3.shape
    P = rows.shape[1]
    rows, cols, vprime = (t.expand(b, P) for t in (rows, cols, vprime))
    gathered = x3.gather(1, cols.unsqueeze(-1).expand(b, P, c)) * vprime.unsqueeze(-1)
    out_dtype = torch.promote_types(x.dtype, vprime.dtype)
    y = torch.zeros(b, n_out, c, dtype=out_dtype, device=x.device)
    y = y.scatter_add(1, rows.unsqueeze(-1).expand(b, P, c), gathered.to(out_dtype))
    return y.squeeze(-1) if vector else y
