"""Segment-reduced sparse contraction ``y = W x`` (docs/algorithm.md §5), as Triton kernels.

W is given as ``P`` nonzeros per instance: ``rows``, ``cols``, ``vprime`` of shape ``(B, P)``.
The dense side is ``x (b, n_in, c)``; ``B == b`` gives one W per instance and ``B == 1`` one W
shared by the batch. Inside the kernels the dense side is ``(instances, n, C)``: per instance
``C = c``; for a shared W the batch is folded into the channels (:func:`_fold_batch`,
``C = b c``, the ``(in, b)`` dense side of ``Y = W X``), so instance ``i`` always reads row
``i`` of the dense side.

- forward, deterministic (default): nonzeros sorted by the key ``instance * n_out + row``
  (stable ``torch.sort``), CSR offsets by ``torch.searchsorted``, then
  :func:`_segment_kernel`: one program per (instance, output row, column block) sums its
  segment in a fixed order, no atomics; the same inputs give bitwise the same ``y`` in every
  process (tiles are pinned by :func:`_pinned`, not autotuned).
- ``dx = W^T dy``: the same kernel on the transposed CSR (sorted by ``instance * n_in + col``).
- ``dv'[j] = sum_q dy[row_j, q] x[col_j, q]`` (summed over the batch too for a shared W):
  :func:`_gather_dot_kernel`, one program per block of nonzeros, in the original order.
- ``deterministic=False``: :func:`_scatter_kernel` adds every product into ``y`` (or ``dx``)
  with ``tl.atomic_add`` and skips the sort; the summation order, and so the last bits, may
  change from run to run. Its tiles are autotuned on sizes rounded up to powers of two.

- row-grouped W (:func:`contract_rows`, row ``i`` holds the ``m`` nonzeros ``cols[:, i]``, as
  in sampled attention): the segments are the rows, so :func:`_segment_kernel` runs on the
  offsets ``m g`` with no sort; its ``dv'`` (and attention's scores) is the gather-dot with
  the row computed (``GROUPED``).

Grids are one-dimensional (axis 0 takes 2^31 - 1 programs, the others 65535), so any batch or
channel count launches. Half-precision inputs run in float32 (:func:`half_as_float32`).

Indices outside ``[0, n_out)`` / ``[0, n_in)`` contribute nothing and get ``dv' = 0``
(:func:`hyperkern.ops.contract` checks the bounds before dispatching). :mod:`hyperkern.library`
registers these launchers as the CUDA implementation of ``hyperkern::contract``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from hyperkern._shared import half_as_float32, interpreting

from ._launch import guard, on_device

_MAX_GRID = 2**31 - 1  # launch grids are one-dimensional: only axis 0 holds more than 65535


def _pinned(nq: int) -> dict:
    """Fixed tiles of the deterministic kernels (a segment's summation order depends on them,
    so timing-based autotuning could give other bits in another process)."""
    if interpreting():
        return dict(BLOCK_P=16, BLOCK_Q=4 if nq <= 4 else 16, num_warps=1)
    if nq <= 4:
        return dict(BLOCK_P=64, BLOCK_Q=4, num_warps=2)
    return dict(BLOCK_P=32, BLOCK_Q=min(64, triton.next_power_of_2(nq)), num_warps=4)


def _scatter_configs(narrow: bool) -> list[triton.Config]:
    """Autotuned tiles of the atomic kernel (its order is not fixed anyway)."""
    if interpreting():
        sizes = [(16, 4 if narrow else 16, 1)]
    elif narrow:
        sizes = [(32, 1, 1), (64, 1, 2), (128, 1, 4), (32, 4, 1), (64, 4, 2), (128, 4, 4)]
    else:
        sizes = [(16, 32, 1), (16, 64, 2), (32, 32, 2), (32, 64, 4), (16, 128, 4), (64, 64, 4)]
    return [triton.Config({"BLOCK_P": p, "BLOCK_Q": q}, num_warps=w) for p, q, w in sizes]


def _check_grid(n_programs: int) -> int:
    if n_programs > _MAX_GRID:
        raise ValueError(
            f"contraction too large for one launch: {n_programs} programs > 2^31 - 1; "
            "split the batch"
        )
    return n_programs


def _bucket(n: int) -> int:
    """Autotune keys are powers of two, so a ragged last batch reuses the tuned config."""
    return triton.next_power_of_2(max(n, 1))


@triton.jit
def _program(C, BLOCK_Q: tl.constexpr):
    """Axis 0 as (outer index, block of the ``C`` dense columns): ``(outer, q, q < C)``."""
    pid = tl.program_id(0).to(tl.int64)
    n_q = tl.cdiv(C, BLOCK_Q)
    q = (pid % n_q) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    return pid // n_q, q, q < C


@triton.jit
def _index_pairs(a_ptr, b_ptr, j, mask_j, n_a, n_b):
    """``(a[j], b[j], ok)`` of nonzeros ``j``, ok where both indices are in range."""
    a = tl.load(a_ptr + j, mask=mask_j, other=0)
    b = tl.load(b_ptr + j, mask=mask_j, other=0)
    return a, b, mask_j & (a >= 0) & (a < n_a) & (b >= 0) & (b < n_b)


@triton.jit
def _segment_kernel(
    offsets_ptr, idx_ptr, val_ptr, src_ptr, dst_ptr,
    n_seg, n_src, C,
    BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr,
):  # fmt: skip
    """dst[i, s, :] = sum_{j in segment (i, s)} val[j] * src[i, idx[j], :] over columns q.

    Program (segment i * n_seg + s, q block); segment j runs over [offsets[g], offsets[g + 1]).
    src is (., n_src, C), dst (., n_seg, C), both contiguous.
    """
    g, q, mask_q = _program(C, BLOCK_Q)
    inst = g // n_seg
    start = tl.load(offsets_ptr + g)
    end = tl.load(offsets_ptr + g + 1)
    acc = tl.zeros((BLOCK_P, BLOCK_Q), dtype=dst_ptr.dtype.element_ty)
    for j0 in range(start, end, BLOCK_P):
        j = j0 + tl.arange(0, BLOCK_P)
        mask_j = j < end
        idx = tl.load(idx_ptr + j, mask=mask_j, other=0)
        val = tl.load(val_ptr + j, mask=mask_j, other=0.0)
        ok = mask_j & (idx >= 0) & (idx < n_src)
        src = tl.load(
            src_ptr + (inst * n_src + idx[:, None]) * C + q[None, :],
            mask=ok[:, None] & mask_q[None, :],
            other=0.0,
        )
        acc += val[:, None] * src
    total = tl.sum(acc, axis=0)
    tl.store(dst_ptr + g * C + q, total, mask=mask_q)


@triton.jit
def _scatter_kernel(
    dst_idx_ptr, src_idx_ptr, val_ptr, src_ptr, dst_ptr,
    P, n_dst, n_src, C, P_KEY, N_KEY, C_KEY,
    BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr,
):  # fmt: skip
    """dst[i, dst_idx[i, j], :] += val[i, j] * src[i, src_idx[i, j], :] by atomics.

    Program (instance i, P block, q block); layout of src/dst as in :func:`_segment_kernel`.
    ``*_KEY`` are the bucketed sizes autotuning keys on.
    """
    outer, q, mask_q = _program(C, BLOCK_Q)
    n_p = tl.cdiv(P, BLOCK_P)
    inst = outer // n_p
    j = (outer % n_p) * BLOCK_P + tl.arange(0, BLOCK_P)
    first = inst * P
    dst_idx, src_idx, ok = _index_pairs(
        dst_idx_ptr + first, src_idx_ptr + first, j, j < P, n_dst, n_src
    )
    val = tl.load(val_ptr + first + j, mask=j < P, other=0.0)
    mask = ok[:, None] & mask_q[None, :]
    src = tl.load(
        src_ptr + (inst * n_src + src_idx[:, None]) * C + q[None, :], mask=mask, other=0.0
    )
    dst = dst_ptr + (inst * n_dst + dst_idx[:, None]) * C + q[None, :]
    tl.atomic_add(dst, val[:, None] * src, mask=mask)


@triton.jit
def _gather_dot_kernel(
    rows_ptr, cols_ptr, dy_ptr, x_ptr, dv_ptr,
    P, n_out, n_in, C, m,
    GROUPED: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr,
):  # fmt: skip
    """dv[i, j] = sum_q dy[i, rows[i, j], q] * x[i, cols[i, j], q] (layout as above). With
    ``GROUPED`` the W is row-grouped (:func:`contract_rows`): ``rows[i, j] = j // m`` is
    computed, not loaded (``rows_ptr`` unused)."""
    pid = tl.program_id(0).to(tl.int64)
    n_p = tl.cdiv(P, BLOCK_P)
    inst = pid // n_p
    j = (pid % n_p) * BLOCK_P + tl.arange(0, BLOCK_P)
    mask_j = j < P
    if GROUPED:
        row = j // m
        col = tl.load(cols_ptr + inst * P + j, mask=mask_j, other=0)
        ok = mask_j & (col >= 0) & (col < n_in)
    else:
        row, col, ok = _index_pairs(
            rows_ptr + inst * P, cols_ptr + inst * P, j, mask_j, n_out, n_in
        )
    acc = tl.zeros((BLOCK_P, BLOCK_Q), dtype=dv_ptr.dtype.element_ty)
    for q0 in range(0, C, BLOCK_Q):
        q = q0 + tl.arange(0, BLOCK_Q)
        mask = ok[:, None] & (q < C)[None, :]
        dy = tl.load(dy_ptr + (inst * n_out + row[:, None]) * C + q[None, :], mask=mask, other=0.0)
        x = tl.load(x_ptr + (inst * n_in + col[:, None]) * C + q[None, :], mask=mask, other=0.0)
        acc += dy * x
    tl.store(dv_ptr + inst * P + j, tl.sum(acc, axis=1), mask=mask_j)


_scatter = {
    narrow: triton.autotune(
        configs=_scatter_configs(narrow), key=["P_KEY", "N_KEY", "C_KEY"], reset_to_zero=["dst_ptr"]
    )(_scatter_kernel)
    for narrow in (True, False)
}


def _fold_batch(n_w: int, t: Tensor) -> Tensor:
    """For one W shared by ``b > 1`` rows, ``(b, n, c) -> (1, n, b c)`` (a contiguous copy):
    the batch becomes channels, so the gather of one nonzero's dense row is one contiguous read
    of ``b c`` values instead of ``b`` reads ``n c`` elements apart. Otherwise ``t`` itself."""
    if n_w == 1 and t.shape[0] > 1:
        return t.permute(1, 0, 2).reshape(1, t.shape[1], -1).contiguous()
    return t


def _unfold_batch(t: Tensor, b: int, c: int) -> Tensor:
    """Inverse of :func:`_fold_batch`: ``(1, n, b c) -> (b, n, c)`` contiguous."""
    if t.shape[0] == b:
        return t
    return t.reshape(t.shape[1], b, c).permute(1, 0, 2).contiguous()


def _reduce(
    dst_idx: Tensor, src_idx: Tensor, vals: Tensor, src: Tensor, n_dst: int, deterministic: bool
) -> Tensor:
    """``dst[i, d] = sum_{j: dst_idx[j] = d} vals[j] src[i, src_idx[j]]``: ``dst_idx``,
    ``src_idx``, ``vals`` ``(B, P)``, ``src (b, n_src, c)`` -> ``(b, n_dst, c)``. Segment-reduced
    in a fixed order (``deterministic``) or by atomic adds."""
    n_w, P = dst_idx.shape
    b, n_src, c = src.shape
    if n_w * n_dst == 0 or b * c == 0 or P == 0:
        return torch.zeros(b, n_dst, c, dtype=src.dtype, device=src.device)
    src = _fold_batch(n_w, src)
    nq = src.shape[2]  # dense columns per instance (the batch folded in for a shared W)
    dst = torch.zeros(src.shape[0], n_dst, nq, dtype=src.dtype, device=src.device)
    if deterministic:
        _segment_reduce(dst_idx, src_idx, vals, src, dst)
    else:

        def grid(meta):
            n_p, n_q = triton.cdiv(P, meta["BLOCK_P"]), triton.cdiv(nq, meta["BLOCK_Q"])
            return (_check_grid(n_w * n_p * n_q),)

        keys = _bucket(P), _bucket(n_dst), _bucket(nq)
        _scatter[nq <= 4][grid](dst_idx, src_idx, vals, src, dst, P, n_dst, n_src, nq, *keys)
    return _unfold_batch(dst, b, c)


def _segment_reduce(dst_idx: Tensor, src_idx: Tensor, vals: Tensor, src: Tensor, dst: Tensor):
    """Sort the nonzeros by ``instance * n_dst + dst_idx`` (stable), CSR offsets, then one
    :func:`_segment_kernel` program per (segment, column block) writes ``dst``."""
    n_w, n_dst, nq = dst_idx.shape[0], dst.shape[1], dst.shape[2]
    n_segments = n_w * n_dst
    instance = torch.arange(n_w, device=dst_idx.device).unsqueeze(1)
    in_range = (dst_idx >= 0) & (dst_idx < n_dst)
    seg_key = torch.where(in_range, instance * n_dst + dst_idx, n_segments).flatten()
    key_dtype = torch.int32 if n_segments < 2**31 - 1 else torch.int64  # int32 sorts faster
    sorted_key, order = torch.sort(seg_key.to(key_dtype), stable=True)
    bounds = torch.arange(n_segments + 1, device=dst_idx.device, dtype=key_dtype)
    offsets = torch.searchsorted(sorted_key, bounds)
    sorted_src_idx = src_idx.flatten()[order]
    sorted_vals = vals.flatten()[order]
    tiles = _pinned(nq)
    n_programs = _check_grid(n_segments * triton.cdiv(nq, tiles["BLOCK_Q"]))
    _segment_kernel[(n_programs,)](
        offsets, sorted_src_idx, sorted_vals, src, dst, n_dst, src.shape[1], nq, **tiles
    )


@half_as_float32
def contract_forward(
    rows: Tensor, cols: Tensor, vprime: Tensor, x: Tensor, n_out: int, deterministic: bool = True
) -> Tensor:
    """``y[b, row_j, :] += vprime[j] x[b, col_j, :]``: ``(B, P)`` nonzeros, ``x (b, n_in, c)``
    -> ``(b, n_out, c)``; segment-reduced (``deterministic``) or by atomic adds."""
    rows, cols, vprime, x = guard(rows, cols, vprime.to(x.dtype), x)
    with on_device(x):
        return _reduce(rows, cols, vprime, x, n_out, deterministic)


@half_as_float32
def contract_dvprime(rows: Tensor, cols: Tensor, x: Tensor, grad_y: Tensor) -> Tensor:
    """``dv' (B, P)`` from ``x (b, n_in, c)`` and ``grad_y (b, n_out, c)`` (a gather-dot)."""
    rows, cols, x, grad_y = guard(rows, cols, x, grad_y.to(x.dtype))
    n_w, P = rows.shape
    b, n_in, c = x.shape
    n_out = grad_y.shape[1]
    dv = torch.zeros(n_w, P, dtype=x.dtype, device=x.device)
    if n_w * P == 0 or b * c == 0:
        return dv
    x, grad_y = _fold_batch(n_w, x), _fold_batch(n_w, grad_y)
    nq = x.shape[2]
    tiles = _pinned(nq)
    with on_device(x):
        grid = (_check_grid(n_w * triton.cdiv(P, tiles["BLOCK_P"])),)
        _gather_dot_kernel[grid](
            rows, cols, grad_y, x, dv, P, n_out, n_in, nq, 1, GROUPED=False, **tiles
        )
    return dv


@half_as_float32
def contract_rows(cols: Tensor, vprime: Tensor, x: Tensor) -> Tensor:
    """Row-grouped W (row ``i`` holds the nonzeros ``cols[:, i]``): ``cols``, ``vprime``
    ``(B, n, m)``, ``x (b, n_in, c)`` -> ``(b, n, c)``. The segments are the rows themselves,
    so :func:`_segment_kernel` runs on offsets ``m * g`` without a sort."""
    cols, vprime, x = guard(cols, vprime.to(x.dtype), x)
    B, n, m = cols.shape
    b, n_in, c = x.shape
    if B * n == 0 or b * c == 0 or m == 0:
        return torch.zeros(b, n, c, dtype=x.dtype, device=x.device)
    src = _fold_batch(B, x)
    nq = src.shape[2]
    dst = torch.empty(src.shape[0], n, nq, dtype=x.dtype, device=x.device)
    offsets = torch.arange(B * n + 1, device=x.device) * m
    tiles = _pinned(nq)
    n_programs = _check_grid(B * n * triton.cdiv(nq, tiles["BLOCK_Q"]))
    with on_device(x):
        _segment_kernel[(n_programs,)](offsets, cols, vprime, src, dst, n, n_in, nq, **tiles)
    return _unfold_batch(dst, b, c)


@half_as_float32
def contract_rows_dot(cols: Tensor, x: Tensor, z: Tensor) -> Tensor:
    """``(B, n, m)`` sampled dot products ``<z[i], x[cols[i, s]]>`` of a row-grouped W
    (summed over the batch for a shared W): :func:`_gather_dot_kernel` with ``GROUPED``."""
    cols, x, z = guard(cols, x, z.to(x.dtype))
    B, n, m = cols.shape
    b, n_in, c = x.shape
    out = torch.zeros(B, n, m, dtype=x.dtype, device=x.device)
    if B * n * m == 0 or b * c == 0:
        return out
    x, z = _fold_batch(B, x), _fold_batch(B, z)
    nq = x.shape[2]
    tiles = _pinned(nq)
    with on_device(x):
        grid = (_check_grid(B * triton.cdiv(n * m, tiles["BLOCK_P"])),)
        _gather_dot_kernel[grid](
            cols, cols, z, x, out, n * m, n, n_in, nq, m, GROUPED=True, **tiles
        )
    return out
