"""Fused sampler (docs/algorithm.md §2-3, §5): integer tuples, their keys and their flat
``(row, col)`` in one launch, from a seed tensor and a counter-based generator.

One program handles ``BLOCK`` of the ``B * k * S`` samples. Sample ``s`` of mean ``m``:

- ``s < 2**R``: corner ``s`` (bit ``R - 1 - d`` of ``s`` picks ``ceil`` over ``floor`` in column
  ``d``);
- then ``n_local`` tuples uniform in a ``region`` box around ``floor(mu + 0.5)`` (shifted inside
  the bounds), then ``n_global`` tuples uniform over W.

Random words are Philox 4x32-10 (word 0) of the key ``seed`` and the counter
``((i * k + m) * n_random + t) * R + d``: bit-identical with
:mod:`hyperkern.reference.random`, so the kernel and the reference draw the same tuples.
Index math is float64/int64 whatever the dtype of ``mu``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from hyperkern._shared import (
    PHILOX_KEY_A,
    PHILOX_KEY_B,
    PHILOX_ROUND_A,
    PHILOX_ROUND_B,
    PHILOX_ROUNDS,
    constant,
    interpreting,
    row_major_strides,
)

from ._launch import guard, on_device
from .keys import cantor_step

_KEY_A = tl.constexpr(PHILOX_KEY_A)
_KEY_B = tl.constexpr(PHILOX_KEY_B)
_ROUND_A = tl.constexpr(PHILOX_ROUND_A)
_ROUND_B = tl.constexpr(PHILOX_ROUND_B)
_ROUNDS = tl.constexpr(PHILOX_ROUNDS)


@triton.jit
def _philox_word0(seed, counter):
    """Word 0 of Philox 4x32-10 for an int64 ``seed`` scalar and int64 ``counter`` block."""
    k0 = (seed & 0xFFFFFFFF).to(tl.uint32)
    k1 = ((seed >> 32) & 0xFFFFFFFF).to(tl.uint32)
    c0 = (counter & 0xFFFFFFFF).to(tl.uint32)
    c1 = ((counter >> 32) & 0xFFFFFFFF).to(tl.uint32)
    c2 = c0 * 0
    c3 = c0 * 0
    for _ in tl.static_range(_ROUNDS):
        a = tl.full(c0.shape, _ROUND_A, tl.uint32)
        b = tl.full(c0.shape, _ROUND_B, tl.uint32)
        prev0 = c0
        prev2 = c2
        c0 = tl.umulhi(b, prev2) ^ c1 ^ k0
        c2 = tl.umulhi(a, prev0) ^ c3 ^ k1
        c1 = b * prev2
        c3 = a * prev0
        k0 = k0 + tl.full((), _KEY_A, tl.uint32)
        k1 = k1 + tl.full((), _KEY_B, tl.uint32)
    return c0.to(tl.int64) & 0xFFFFFFFF


@triton.jit
def _sample_kernel(
    mu_ptr, seed_ptr, meta_ptr, points_ptr, keys_ptr, rows_ptr, cols_ptr,
    N, S, R, M, N_LOCAL, N_RANDOM,
    CANTOR: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """Samples ``n`` of ``(B * k * S)``: tuples ``(N, R)``, keys, rows and cols ``(N,)``.

    ``meta`` is ``(5, R)`` int64: dims, region, key strides, row strides (columns ``< M``),
    col strides (columns ``>= M``).
    """
    n = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = n < N
    mean = n // S
    s = n % S
    corner = s < (1 << R)
    t = s - (1 << R)  # random slot: local for t < N_LOCAL, then global
    seed = tl.load(seed_ptr)
    code = tl.zeros((BLOCK,), dtype=tl.int64)
    row = tl.zeros((BLOCK,), dtype=tl.int64)
    col = tl.zeros((BLOCK,), dtype=tl.int64)
    for i in range(R):
        d = R - 1 - i  # last column first: the nested Cantor code folds from the right
        dim = tl.load(meta_ptr + d)
        box = tl.load(meta_ptr + R + d)
        upper = dim - 1
        mu = tl.load(mu_ptr + mean * R + d, mask=mask, other=0.0).to(tl.float64)
        lo = tl.minimum(tl.maximum(tl.floor(mu).to(tl.int64), 0), upper)
        hi = tl.minimum(tl.maximum(tl.ceil(mu).to(tl.int64), 0), upper)
        pick_hi = ((s >> (R - 1 - d)) & 1) == 1
        word = _philox_word0(seed, (mean * N_RANDOM + t) * R + d)
        centre = tl.minimum(tl.maximum(tl.floor(mu + 0.5).to(tl.int64), 0), upper)
        start = tl.minimum(tl.maximum(centre - box // 2, 0), dim - box)
        local = start + ((word * box) >> 32)
        glob = (word * dim) >> 32
        p = tl.where(corner, tl.where(pick_hi, hi, lo), tl.where(t < N_LOCAL, local, glob))
        tl.store(points_ptr + n * R + d, p, mask=mask)
        if CANTOR:
            code = p if i == 0 else cantor_step(p, code)
        else:
            code += p * tl.load(meta_ptr + 2 * R + d)
        row += tl.where(d < M, p * tl.load(meta_ptr + 3 * R + d), 0)
        col += tl.where(d >= M, p * tl.load(meta_ptr + 4 * R + d), 0)
    tl.store(keys_ptr + n, code, mask=mask)
    tl.store(rows_ptr + n, row, mask=mask)
    tl.store(cols_ptr + n, col, mask=mask)


def _block() -> int:
    return 128 if interpreting() else 256


def sample(
    mu: Tensor,
    seed: Tensor,
    dims: list[int],
    n_out_dims: int,
    n_local: int,
    n_global: int,
    region: list[int],
    cantor: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``mu (B, k, r)``, ``seed ()`` int64 -> ``points (B, k, S, r)``, ``keys``, ``rows``,
    ``cols`` ``(B, k, S)`` int64; the first ``n_out_dims`` columns index W's rows."""
    B, k, R = mu.shape
    S = 2**R + n_local + n_global
    device = mu.device
    points = torch.empty(B, k, S, R, dtype=torch.int64, device=device)
    keys, rows, cols = (torch.empty(B, k, S, dtype=torch.int64, device=device) for _ in "kcr")
    N = B * k * S
    if N == 0:
        return points, keys, rows, cols
    out_dims, in_dims = dims[:n_out_dims], dims[n_out_dims:]
    meta = constant(
        [*dims, *region, *row_major_strides(dims),
         *row_major_strides(out_dims), *[0] * len(in_dims),
         *[0] * len(out_dims), *row_major_strides(in_dims)],
        device,
    )  # fmt: skip
    mu, seed = guard(mu, seed)
    block = _block()
    with on_device(mu):
        _sample_kernel[(triton.cdiv(N, block),)](
            mu, seed, meta, points, keys, rows, cols,
            N, S, R, n_out_dims, n_local, n_local + n_global,
            CANTOR=cantor, BLOCK=block,
        )  # fmt: skip
    return points, keys, rows, cols
