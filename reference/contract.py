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


# Nonzeros are processed in chunks of about this many gathered elements (512 KiB in float32):
# the gathered rows stay in cache and no buffer of P rows is allocated. One (P, c) buffer per
# operand cost 6x more time at P = 393k, c = 16 (page faults on fresh memory, cache misses).
CHUNK_ELEMENTS = 1 << 17


def _flat_index(index: torch.Tensor, b: int, n: int) -> torch.Tensor:
    """``(b, P)`` indices into ``n`` rows per instance -> ``(b P,)`` indices into ``b n`` rows."""
    offsets = torch.arange(b, device=index.device, dtype=index.dtype)[:, None] * n
    return (index + offsets).reshape(-1)


def _row_table(x: torch.Tensor, shared: bool) -> torch.Tensor:
    """``x (b, n, c)`` as a table whose rows the nonzeros pick: ``(n, b c)`` for a shared W,
    else ``(b n, c)``."""
    b, n, c = x.shape
    return x.transpose(0, 1).reshape(n, b * c) if shared else x.reshape(b * n, c)


def _is_shared(B: int, b: int) -> bool:
    """One W for a batch of ``b > 1``: the nonzeros index the ``(n, b c)`` table."""
    return B == 1 and b > 1


def _table_index(index: torch.Tensor, b: int, n: int, shared: bool) -> torch.Tensor:
    """``index (B, P)`` into ``n`` rows per instance as indices into the rows of
    :func:`_row_table`: ``(P,)`` for a shared W, else ``(b P,)`` flat."""
    return index[0] if shared else _flat_index(index.expand(b, index.shape[1]), b, n)


def _pairs(
    rows: torch.Tensor, cols: torch.Tensor, b: int, n_out: int, n_in: int
) -> tuple[bool, torch.Tensor, torch.Tensor]:
    """``(shared, row index, col index)`` into the tables of :func:`_row_table`."""
    shared = _is_shared(rows.shape[0], b)
    return shared, _table_index(rows, b, n_out, shared), _table_index(cols, b, n_in, shared)


def _chunks(count: int, width: int):
    """``(start, stop)`` slices of ``count`` nonzeros whose gathered rows of ``width`` hold
    about :data:`CHUNK_ELEMENTS` elements."""
    step = max(1, CHUNK_ELEMENTS // max(width, 1))
    starts = range(0, count, step) if count else [0]  # one empty chunk keeps autograd's graph
    return ((start, min(start + step, count)) for start in starts)


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
    b, n_in, c = x3.shape
    out_dtype = torch.promote_types(x.dtype, vprime.dtype)
    shared, row_index, col_index = _pairs(rows, cols, b, n_out, n_in)
    values = vprime[0] if shared else vprime.expand(b, rows.shape[1]).reshape(-1)
    table = _row_table(x3, shared)
    y = table.new_zeros(n_out if shared else b * n_out, table.shape[1], dtype=out_dtype)
    for start, stop in _chunks(row_index.shape[0], table.shape[1]):
        gathered = table.index_select(0, col_index[start:stop]) * values[start:stop, None]
        y.index_add_(0, row_index[start:stop], gathered.to(out_dtype))
    y = y.view(n_out, b, c).transpose(0, 1) if shared else y.view(b, n_out, c)
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
    b, n_in, c = x.shape
    shared, row_index, col_index = _pairs(rows, cols, b, grad_y.shape[1], n_in)
    x_table, grad_table = _row_table(x, shared), _row_table(grad_y, shared)
    dv = torch.cat(
        [
            (
                grad_table.index_select(0, row_index[a:z]) * x_table.index_select(0, col_index[a:z])
            ).sum(-1)
            for a, z in _chunks(row_index.shape[0], x_table.shape[1])
        ]
    )
    if shared:
        return dv[None]
    dv = dv.view(b, P)
    return dv.sum(0, keepdim=True) if B == 1 else dv


# ---- row-grouped W: every output row holds m nonzeros (ELL layout) --------------------------


def _ell_operands(cols: torch.Tensor, x: torch.Tensor):
    """``(shared, flat cols, table)``: ``cols (B, n, m)`` as indices into the rows of
    :func:`_row_table` of ``x (b, n_in, c)``."""
    B, n, m = cols.shape
    b, n_in, _ = x.shape
    shared = _is_shared(B, b)
    return shared, _table_index(cols.reshape(B, n * m), b, n_in, shared), _row_table(x, shared)


def _small_bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.bmm(a, b)`` for ``a (r, p, q)``, ``b (r, q, s)`` with many tiny matrices: a
    broadcast multiply and a sum over ``q`` where ``q <= 24``. On the CPU (torch 2.13, MKL)
    ``bmm`` of ``(1, q) @ (q, 16)`` took 2.4x longer than that for ``q`` = 6, 12, 24 and half
    as long for ``q`` = 27, 32, 48 (a slow path for short inner dimensions); in
    :func:`contract_rows` at ``m = 24`` the whole op ran 1.65x faster."""
    if a.shape[2] > 24:
        return torch.bmm(a, b)
    return (a.unsqueeze(3) * b.unsqueeze(1)).sum(2)


@half_as_float32
def contract_rows(cols: torch.Tensor, vprime: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``y[b, i] = sum_s vprime[i, s] x[b, cols[i, s]]``: :func:`contract` for a W whose output
    row ``i`` holds the ``m`` nonzeros ``cols[:, i]`` (no scatter: a gather and a batched
    product per chunk of rows).

    Args:
        cols: ``(B, n, m)`` int64 input index per nonzero; ``vprime``: ``(B, n, m)``.
        x: ``(b, n_in, c)``; ``B == b`` (one W per instance) or ``B == 1`` (shared).
    Returns:
        ``(b, n, c)``.
    """
    B, n, m = cols.shape
    b, _, c = x.shape
    shared, flat, table = _ell_operands(cols, x)
    rows = n if shared else b * n
    values = (vprime if shared else vprime.expand(b, n, m)).reshape(rows, 1, m)
    width = table.shape[1]
    out = table.new_zeros(values.shape[0], width)
    for start, stop in _chunks(values.shape[0], m * width) if m else ():
        gathered = table.index_select(0, flat[start * m : stop * m]).view(stop - start, m, width)
        out[start:stop] = _small_bmm(values[start:stop].to(table.dtype), gathered).squeeze(1)
    return out.view(n, b, c).transpose(0, 1).contiguous() if shared else out.view(b, n, c)


@half_as_float32
def contract_rows_dot(cols: torch.Tensor, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``s[i, s] = sum_{b, c} z[b, i, c] x[b, cols[i, s], c]`` (summed over the batch for a
    shared W): :func:`contract_dvprime` for the row-grouped W of :func:`contract_rows`, and the
    scores of sampled attention (``z`` the queries, ``x`` the keys).

    Args:
        cols: ``(B, n, m)`` int64; ``x``: ``(b, n_in, c)``; ``z``: ``(b, n, c)``.
    Returns:
        ``(B, n, m)`` in the dtype of ``x``.
    """
    B, n, m = cols.shape
    b = x.shape[0]
    shared, flat, table = _ell_operands(cols, x)
    queries = _row_table(z.to(x.dtype), shared)[:, None, :]  # (rows, 1, width)
    width = table.shape[1]
    out = table.new_zeros(queries.shape[0], m)
    for start, stop in _chunks(queries.shape[0], m * width) if m else ():
        gathered = table.index_select(0, flat[start * m : stop * m]).view(stop - start, m, width)
        out[start:stop] = (gathered * queries[start:stop]).sum(-1)
    if shared:
        return out[None]
    out = out.view(b, n, m)
    return out.sum(0, keepdim=True) if B == 1 else out
