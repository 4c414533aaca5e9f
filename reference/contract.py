"""Sparse W (tuples + values) times dense x (docs/algorithm.md §5)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hyperkern._shared import half_as_float32, row_major_strides

from .params import dims_tensor


def row_major_index(points: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``(..., len(shape))`` int64 tuples -> ``(...)`` row-major flat index over ``shape``."""
    if len(shape) == 0:
        return points.new_zeros(points.shape[:-1])
    return (points * dims_tensor(row_major_strides(shape), points.device)).sum(-1)


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


@half_as_float32
def contract_forward(
    rows: torch.Tensor,
    cols: torch.Tensor,
    vprime: torch.Tensor,
    x: torch.Tensor,
    n_out: int,
    deterministic: bool = True,
) -> torch.Tensor:
    """:func:`contract` with the launcher signature of the kernels; ``x (b, n_in, c)``.
    ``scatter_add`` on the CPU is deterministic whatever ``deterministic`` says."""
    return contract(rows, cols, vprime.to(x.dtype), x, n_out)


@half_as_float32
def contract_dvprime(
    rows: torch.Tensor, cols: torch.Tensor, x: torch.Tensor, grad_y: torch.Tensor
) -> torch.Tensor:
    """Gradient of :func:`contract` in ``vprime``: ``dv'[i, j] = sum_{b, c} dy[b, row_j, c]
    x[b, col_j, c]`` (summed over the batch for a shared W, ``B == 1``).

    Args:
        rows, cols: ``(B, P)`` int64; ``x``: ``(b, n_in, c)``; ``grad_y``: ``(b, n_out, c)``.
    Returns:
        ``(B, P)`` in the dtype of ``x``.
    """
    B, P = rows.shape
    b, _, c = x.shape
    r3 = rows.expand(b, P).unsqueeze(-1).expand(b, P, c)
    c3 = cols.expand(b, P).unsqueeze(-1).expand(b, P, c)
    dv = (grad_y.gather(1, r3) * x.gather(1, c3)).sum(-1)  # (b, P)
    return dv.sum(0, keepdim=True) if B == 1 else dv
