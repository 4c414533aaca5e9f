"""Streaming proportions ``v'`` (docs/algorithm.md §4, §6), FlashAttention-style: never
``(points, means)``.

Per context of ``cs`` means and their ``P = cs * S`` points the kernels work in base 2 with one
coefficient per mean and column, ``w[m, d] = sqrt(log2(e) / (2 sigma[m, d]))``, so that a
(point, mean) pair costs a subtract, a multiply and a fused add per column and one ``exp2``:

    u[j, m, d] = (p[j, d] - mu[m, d]) w[m, d]
    l[j, m]    = -sum_d u[j, m, d]^2            (log2 density; -inf for masked points)
    pass 1     lognorm2[m] = log2 sum_j 2^l[j, m]      (0 where every point is masked)
    pass 2     v'[j]       = sum_m values[m] 2^(l[j, m] - lognorm2[m])

Pass 1 streams blocks of points past a block of means keeping an online max and sum; pass 2
streams blocks of means past a block of points. Only ``lognorm = lognorm2 ln 2`` ``(B, k)`` is
saved for the backward. With ``prop = 2^(l - lognorm2)`` and ``g = dL/dv'`` the backward is one
pass over the (point, mean) pairs, accumulating five sums per mean:

    a = sum_j prop g,   A1 = sum_j prop g u,   A2 = sum_j prop u,
                        B1 = sum_j prop g u^2, B2 = sum_j prop u^2        (per column d)
    dvalues = a
    dmu     = values (A1 - a A2) / (w sigma)          [= sum_j values prop (g - a) diff / sigma]
    dsigma  = values (B1 - a B2) / (log2(e) sigma)    [= ... diff^2 / (2 sigma^2)]

Every sum is linear in the points, so a context's points may be split over several programs
(partial sums of shape ``(splits, B * k, ...)``, added in torch) to fill the GPU. Contexts are
addressed in place: context ``c`` of instance ``b`` holds means ``c*cs .. min((c+1)*cs, k)``
and their points, so nothing is padded or copied.

Launch grids are one-dimensional (axis 0 holds up to 2^31 - 1 programs; the other axes only
65535), and tile sizes come from a fixed table, not from timing: the summation order, hence the
result, is the same bit for bit in every process.

``chunk_size`` (§6): the working set is already bounded by the tiles, so chunking launches pass
2 once per chunk of means and accumulates ``v'``, equal to the unchunked result to rounding.

:mod:`hyperkern.library` registers these launchers as the Triton implementation of the op
``hyperkern::proportions``; the plain-torch oracle is :func:`hyperkern.reference.proportions`.
"""

import torch
import triton
import triton.language as tl
from torch import Tensor

from hyperkern._shared import context_count, half_as_float32, interpreting

from ._launch import guard, on_device

LOG2E = 1.4426950408889634
_MIN_POINTS_PER_SPLIT = 256
_TARGET_PROGRAMS = 1024  # per-mean passes split points until about this many programs run


def _tiles(R: int, three_d: bool) -> tuple[int, int, int]:
    """``(BLOCK_P, BLOCK_M, num_warps)``: a fixed choice per column count, so that results do
    not depend on which configuration a timing run happened to pick."""
    if interpreting():
        return (16, 16, 1) if three_d else (32, 16, 1)
    if three_d:  # (P, M, R) tiles: keep P * M * R near 8192 elements
        return (32, 32, 4) if R <= 4 else (32, 16, 4)
    return (64, 32, 4)


@triton.jit
def _context(cid, n_ctx, cs, k, S):
    """``(n_means, mean_base, pt_base)`` of context ``cid`` (over (instance b, context c)):
    means ``c*cs .. c*cs + n_means`` and their points, in place."""
    m0 = (cid % n_ctx) * cs
    mean_base = (cid // n_ctx) * k + m0
    return tl.minimum(cs, k - m0), mean_base, mean_base * S


@triton.jit
def _mean_program(n_ctx, cs, k, S, n_blocks, n_splits, per_split, BLOCK_M: tl.constexpr):
    """A per-mean program: ``(out_row, mask_m, mean_rows, pt_base, p_lo, p_hi)`` for its
    (context, block of means, split of the context's points)."""
    pid = tl.program_id(0).to(tl.int64)
    split = pid % n_splits
    rest = pid // n_splits
    n_means, mean_base, pt_base = _context(rest // n_blocks, n_ctx, cs, k, S)
    offs_m = (rest % n_blocks) * BLOCK_M + tl.arange(0, BLOCK_M)
    p_lo = split * per_split
    p_hi = tl.minimum(p_lo + per_split, n_means * S)
    mean_rows = mean_base + offs_m
    return split, offs_m < n_means, mean_rows, pt_base, p_lo, p_hi


@triton.jit
def _points(dup_ptr, pt_base, p0, p_hi, BLOCK_P: tl.constexpr):
    """A block of points: ``(pt_rows, in_range, kept)``, kept = in range and not a duplicate."""
    offs_p = p0 + tl.arange(0, BLOCK_P)
    in_range = offs_p < p_hi
    pt_rows = pt_base + offs_p
    dup = tl.load(dup_ptr + pt_rows, mask=in_range, other=1)
    return pt_rows, in_range, in_range & (dup == 0)


@triton.jit
def _log2_densities(
    pts_ptr, mu_ptr, w_ptr, pt_rows, mean_rows, kept, mask_m, R,
    BLOCK_P: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    """``(BLOCK_P, BLOCK_M)`` tile of ``l = -sum_d ((p - mu) w)^2``, ``-inf`` off kept points."""
    acc = tl.zeros((BLOCK_P, BLOCK_M), dtype=mu_ptr.dtype.element_ty)
    for d in range(R):
        p = tl.load(pts_ptr + pt_rows * R + d, mask=kept, other=0).to(acc.dtype)
        mu = tl.load(mu_ptr + mean_rows * R + d, mask=mask_m, other=0.0)
        w = tl.load(w_ptr + mean_rows * R + d, mask=mask_m, other=0.0)
        u = (p[:, None] - mu[None, :]) * w[None, :]
        acc += u * u
    return tl.where(kept[:, None], -acc, float("-inf"))


@triton.jit
def _lognorm_kernel(
    pts_ptr, mu_ptr, w_ptr, dup_ptr, max_ptr, sum_ptr,
    n_ctx, cs, k, S, R, n_blocks, n_splits, per_split, n_rows,
    BLOCK_P: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    """Pass 1 on one (context, block of means, split of points): running max and sum of 2^l."""
    split, mask_m, mean_rows, pt_base, p_lo, p_hi = _mean_program(
        n_ctx, cs, k, S, n_blocks, n_splits, per_split, BLOCK_M
    )
    run_max = tl.full((BLOCK_M,), float("-inf"), dtype=mu_ptr.dtype.element_ty)
    run_sum = tl.zeros((BLOCK_M,), dtype=mu_ptr.dtype.element_ty)
    for p0 in range(p_lo, p_hi, BLOCK_P):
        pt_rows, _, kept = _points(dup_ptr, pt_base, p0, p_hi, BLOCK_P)
        logd = _log2_densities(
            pts_ptr, mu_ptr, w_ptr, pt_rows, mean_rows, kept, mask_m, R, BLOCK_P, BLOCK_M
        )
        new_max = tl.maximum(run_max, tl.max(logd, axis=0))
        shift = tl.where(new_max == float("-inf"), 0.0, new_max)
        run_sum = run_sum * tl.exp2(run_max - shift) + tl.sum(tl.exp2(logd - shift[None, :]), 0)
        run_max = new_max
    out = split * n_rows + mean_rows
    tl.store(max_ptr + out, run_max, mask=mask_m)
    tl.store(sum_ptr + out, run_sum, mask=mask_m)


@triton.jit
def _point_values_kernel(
    pts_ptr, mu_ptr, w_ptr, val_ptr, dup_ptr, lognorm2_ptr, out_ptr,
    n_ctx, cs, k, S, R, n_blocks, m_start, m_stop,
    ACCUMULATE: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    """Pass 2 on one (context, block of points): ``v'`` from the means ``m_start .. m_stop``."""
    pid = tl.program_id(0).to(tl.int64)
    n_means, mean_base, pt_base = _context(pid // n_blocks, n_ctx, cs, k, S)
    p0 = (pid % n_blocks) * BLOCK_P
    pt_rows, in_range, kept = _points(dup_ptr, pt_base, p0, n_means * S, BLOCK_P)
    m_hi = tl.minimum(m_stop, n_means)
    acc = tl.zeros((BLOCK_P,), dtype=mu_ptr.dtype.element_ty)
    for m0 in range(m_start, m_hi, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        mask_m = offs_m < m_hi
        mean_rows = mean_base + offs_m
        logd = _log2_densities(
            pts_ptr, mu_ptr, w_ptr, pt_rows, mean_rows, kept, mask_m, R, BLOCK_P, BLOCK_M
        )
        lognorm2 = tl.load(lognorm2_ptr + mean_rows, mask=mask_m, other=0.0)
        value = tl.load(val_ptr + mean_rows, mask=mask_m, other=0.0)
        acc += tl.sum(tl.exp2(logd - lognorm2[None, :]) * value[None, :], axis=1)
    if ACCUMULATE:
        acc += tl.load(out_ptr + pt_rows, mask=in_range, other=0.0)
    tl.store(out_ptr + pt_rows, acc, mask=in_range)


@triton.jit
def _safe_ratio(num, den):
    return tl.where(den > 0, num / tl.where(den > 0, den, 1.0), 0.0)


@triton.jit
def _grad_kernel(
    pts_ptr, mu_ptr, w_ptr, dup_ptr, lognorm2_ptr, grad_ptr, mean_ptr, sums_ptr,
    n_ctx, cs, k, S, R, n_blocks, n_splits, per_split, n_rows,
    BLOCK_P: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    """The backward on one (context, block of means, split of points), in one pass.

    Per mean it keeps the prop-weighted statistics of its points (Chan et al.'s pairwise
    update, one tile at a time): the weight ``W``, the means of ``g``, ``u`` and ``u^2``, and
    the co-moments ``C1 = sum prop (g - g_mean) u``, ``C2 = sum prop (g - g_mean) u^2``. The
    gradients need ``sum prop (g - a) u`` with ``a = sum prop g``: C1 is that sum, without the
    cancellation of ``A1 - a A2`` when one point holds nearly all of a mean's mass. Tiles are
    ``(BLOCK_P, BLOCK_M, BLOCK_R)`` so that every column accumulates at once.
    """
    split, mask_m, mean_rows, pt_base, p_lo, p_hi = _mean_program(
        n_ctx, cs, k, S, n_blocks, n_splits, per_split, BLOCK_M
    )
    offs_r = tl.arange(0, BLOCK_R)
    mask_r = offs_r < R
    mask_mr = mask_m[:, None] & mask_r[None, :]
    mean_cells = mean_rows[:, None] * R + offs_r[None, :]
    mu = tl.load(mu_ptr + mean_cells, mask=mask_mr, other=0.0)
    w = tl.load(w_ptr + mean_cells, mask=mask_mr, other=0.0)
    lognorm2 = tl.load(lognorm2_ptr + mean_rows, mask=mask_m, other=0.0)
    dtype = mu_ptr.dtype.element_ty
    weight = tl.zeros((BLOCK_M,), dtype=dtype)
    g_mean = tl.zeros((BLOCK_M,), dtype=dtype)
    u_mean = tl.zeros((BLOCK_M, BLOCK_R), dtype=dtype)
    uu_mean = tl.zeros((BLOCK_M, BLOCK_R), dtype=dtype)
    c1 = tl.zeros((BLOCK_M, BLOCK_R), dtype=dtype)
    c2 = tl.zeros((BLOCK_M, BLOCK_R), dtype=dtype)
    for p0 in range(p_lo, p_hi, BLOCK_P):
        pt_rows, in_range, kept = _points(dup_ptr, pt_base, p0, p_hi, BLOCK_P)
        cells = pt_rows[:, None] * R + offs_r[None, :]
        pts = tl.load(pts_ptr + cells, mask=kept[:, None] & mask_r[None, :], other=0).to(dtype)
        u = (pts[:, None, :] - mu[None, :, :]) * w[None, :, :]  # (P, M, R)
        uu = u * u
        live = kept[:, None] & mask_m[None, :]
        prop = tl.where(live, tl.exp2(-tl.sum(uu, axis=2) - lognorm2[None, :]), 0.0)
        uu = tl.where(prop[:, :, None] > 0, uu, 0.0)  # u^2 may overflow where prop is 0
        grad = tl.load(grad_ptr + pt_rows, mask=in_range, other=0.0)
        # the tile's own statistics, g centred on the tile's mean
        tile_w = tl.sum(prop, axis=0)
        tile_g = _safe_ratio(tl.sum(prop * grad[:, None], axis=0), tile_w)
        tile_u = _safe_ratio(tl.sum(prop[:, :, None] * u, axis=0), tile_w[:, None])
        tile_uu = _safe_ratio(tl.sum(prop[:, :, None] * uu, axis=0), tile_w[:, None])
        dev = (prop * (grad[:, None] - tile_g[None, :]))[:, :, None]
        # merged into the running statistics
        total = weight + tile_w
        f = _safe_ratio(tile_w, total)
        dg = tile_g - g_mean
        cross = (dg * weight * f)[:, None]
        c1 += tl.sum(dev * u, axis=0) + cross * (tile_u - u_mean)
        c2 += tl.sum(dev * uu, axis=0) + cross * (tile_uu - uu_mean)
        u_mean += (tile_u - u_mean) * f[:, None]
        uu_mean += (tile_uu - uu_mean) * f[:, None]
        g_mean += dg * f
        weight = total
    row = split * n_rows + mean_rows
    tl.store(mean_ptr + row * 2, weight, mask=mask_m)
    tl.store(mean_ptr + row * 2 + 1, g_mean, mask=mask_m)
    cell = (row[:, None] * 4) * R + offs_r[None, :]
    tl.store(sums_ptr + cell, u_mean, mask=mask_mr)
    tl.store(sums_ptr + cell + R, uu_mean, mask=mask_mr)
    tl.store(sums_ptr + cell + 2 * R, c1, mask=mask_mr)
    tl.store(sums_ptr + cell + 3 * R, c2, mask=mask_mr)


def _layout(points: Tensor, cs: int, n_splits: int | None, block_m: int):
    """``(B, k, S, R, n_ctx, n_blocks, per_split, n_splits)`` of a per-mean pass."""
    B, k, S, R = points.shape
    n_ctx = context_count(k, cs)[0]
    n_points = cs * S
    n_blocks = triton.cdiv(cs, block_m)
    if n_splits is None:
        wanted = max(1, _TARGET_PROGRAMS // max(B * n_ctx * n_blocks, 1))
        n_splits = (
            1 if interpreting() else min(wanted, triton.cdiv(n_points, _MIN_POINTS_PER_SPLIT))
        )
    quantum = 128  # whole blocks of points per split, for every tile size
    per_split = triton.cdiv(triton.cdiv(max(n_points, 1), max(n_splits, 1)), quantum) * quantum
    n_splits = triton.cdiv(max(n_points, 1), per_split)
    return B, k, S, R, n_ctx, n_blocks, per_split, n_splits


def _operands(points, mu, sigma, values, duplicates):
    """Kernel operands: contiguous; float or int64 points, uint8 duplicate flags and the
    per-mean coefficients ``w``."""
    dtype = mu.dtype
    pts = points.to(dtype) if points.is_floating_point() else points.to(torch.int64)
    mu, sigma, values = (t.to(dtype) for t in (mu, sigma, values))
    w = torch.rsqrt(sigma * (2.0 / LOG2E))
    return guard(pts, mu, w, values, duplicates.view(torch.uint8))


def _merge_lognorm2(part_max: Tensor, part_sum: Tensor) -> Tensor:
    """log2 of the total over splits from per-split (max, sum of 2^l); 0 where all masked."""
    top = part_max.amax(0)
    shift = torch.where(torch.isinf(top), torch.zeros_like(top), top)
    total = (part_sum * torch.exp2(part_max - shift)).sum(0)
    return torch.where(torch.isinf(top), torch.zeros_like(top), shift + torch.log2(total))


@half_as_float32
def proportions_forward(
    points: Tensor, mu: Tensor, sigma: Tensor, values: Tensor, duplicates: Tensor, cs: int,
    chunk: int | None = None, n_splits: int | None = None,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Kernel forward: ``(v' (B, k, S), lognorm (B, k))``; ``cs`` means per context, ``chunk``
    means per launch of pass 2 (shapes as in :func:`hyperkern.reference.proportions`)."""
    pts, mu_c, w, vals, dup = _operands(points, mu, sigma, values, duplicates)
    block_p, block_m, warps = _tiles(pts.shape[-1], three_d=False)
    B, k, S, R, n_ctx, n_blocks, per_split, n_splits = _layout(pts, cs, n_splits, block_m)
    chunk = cs if chunk is None else min(chunk, cs)
    out = mu_c.new_zeros((B, k, S))
    if B * k == 0:
        return out.to(mu.dtype), mu.new_zeros((B, k))
    part_max = mu_c.new_empty((n_splits, B * k))
    part_sum = mu_c.new_empty((n_splits, B * k))
    point_blocks = triton.cdiv(cs * S, block_p)
    tiles = dict(BLOCK_P=block_p, BLOCK_M=block_m, num_warps=warps)
    with on_device(mu_c):
        _lognorm_kernel[(B * n_ctx * n_blocks * n_splits,)](
            pts, mu_c, w, dup, part_max, part_sum,
            n_ctx, cs, k, S, R, n_blocks, n_splits, per_split, B * k, **tiles,
        )  # fmt: skip
        lognorm2 = _merge_lognorm2(part_max, part_sum).reshape(B, k)
        for start in range(0, cs if S else 0, chunk):
            _point_values_kernel[(B * n_ctx * point_blocks,)](
                pts, mu_c, w, vals, dup, lognorm2, out,
                n_ctx, cs, k, S, R, point_blocks, start, start + chunk,
                ACCUMULATE=start > 0, **tiles,
            )  # fmt: skip
    return out.to(mu.dtype), (lognorm2 / LOG2E).to(mu.dtype)


@half_as_float32
def proportions_backward(
    grad: Tensor, points: Tensor, mu: Tensor, sigma: Tensor, values: Tensor, duplicates: Tensor,
    lognorm: Tensor, cs: int, n_splits: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """Kernel backward: ``grad`` ``(B, k, S)`` -> ``(dmu (B, k, r), dsigma (B, k, r),
    dvalues (B, k))``, recomputing densities from ``lognorm`` ``(B, k)``."""
    pts, mu_c, w, vals, dup = _operands(points, mu, sigma, values, duplicates)
    grad, lognorm2 = guard(grad.to(mu_c.dtype), lognorm.to(mu_c.dtype) * LOG2E)
    block_p, block_m, warps = _tiles(pts.shape[-1], three_d=True)
    B, k, S, R, n_ctx, n_blocks, per_split, n_splits = _layout(pts, cs, n_splits, block_m)
    if B * k * S == 0:
        return torch.zeros_like(mu), torch.zeros_like(sigma), torch.zeros_like(values)
    part_means = mu_c.new_empty((n_splits, B * k, 2))
    part_sums = mu_c.new_empty((n_splits, B * k, 4, R))
    with on_device(mu_c):
        _grad_kernel[(B * n_ctx * n_blocks * n_splits,)](
            pts, mu_c, w, dup, lognorm2, grad, part_means, part_sums,
            n_ctx, cs, k, S, R, n_blocks, n_splits, per_split, B * k,
            BLOCK_P=block_p, BLOCK_M=block_m, BLOCK_R=triton.next_power_of_2(max(R, 1)),
            num_warps=warps,
        )  # fmt: skip
    a, c1, c2 = _merge_splits(part_means, part_sums)
    scale = vals.reshape(B * k, 1) / sigma.to(mu_c.dtype).reshape(B * k, R)
    dmu = (scale * c1 / w.reshape(B * k, R)).reshape(mu.shape)
    dsigma = (scale * c2 / LOG2E).reshape(sigma.shape)
    return dmu.to(mu.dtype), dsigma.to(sigma.dtype), a.reshape(B, k).to(values.dtype)


def _merge_splits(part_means: Tensor, part_sums: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(a, C1, C2)`` from the per-split statistics of :func:`_grad_kernel` (Chan et al.'s
    parallel formula): ``a = W g_mean`` and ``C = sum_s C_s + W_s (g_s - g)(u_s - u)``."""
    weight, g_mean = part_means.unbind(-1)  # (splits, rows)
    u_mean, uu_mean, c1, c2 = part_sums.unbind(-2)  # (splits, rows, R)
    total = weight.sum(0)
    share = torch.where(total > 0, weight / torch.where(total > 0, total, 1.0), 0.0)
    g = (share * g_mean).sum(0)
    u, uu = ((share[..., None] * t).sum(0) for t in (u_mean, uu_mean))
    cross = (weight * (g_mean - g))[..., None]
    c1 = (c1 + cross * (u_mean - u)).sum(0)
    c2 = (c2 + cross * (uu_mean - uu)).sum(0)
    return total * g, c1, c2
