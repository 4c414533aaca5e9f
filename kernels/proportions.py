"""Streaming proportions ``v'`` (docs/algorithm.md §4, §6), FlashAttention-style: never
``(points, means)``.

Per context of ``cs`` means and their ``P = cs * S`` points, with
``logd[j, m] = -0.5 * sum_d (p[j, d] - mu[m, d])^2 / sigma[m, d]`` (``-inf`` for masked points):

    pass 1  lognorm[m] = logsumexp_j logd[j, m]      (0 where every point is masked)
    pass 2  v'[j]      = sum_m values[m] * exp(logd[j, m] - lognorm[m])

Pass 1 streams blocks of points past a block of means keeping an online max and sum-exp; pass 2
streams blocks of means past a block of points. Only ``lognorm`` ``(B, k)`` is saved for the
backward, which recomputes ``prop = exp(logd - lognorm)`` tile by tile. With ``g = dL/dv'``:

    dvalues[m]  = a[m] = sum_j g[j] prop[j, m]                               (backward pass 1)
    dlogd[j, m] = values[m] prop[j, m] (g[j] - a[m])
    dmu[m, d]    = sum_j dlogd[j, m] (p[j, d] - mu[m, d]) / sigma[m, d]        (backward pass 2)
    dsigma[m, d] = sum_j dlogd[j, m] (p[j, d] - mu[m, d])^2 / (2 sigma[m, d]^2)

The per-mean passes may split the points of a context over several programs (partial results
of shape ``(splits, B * k, ...)``, merged in torch) so that a few large contexts still fill the
GPU. Contexts are addressed in place: context ``c`` of instance ``b`` holds means
``c*cs .. min((c+1)*cs, k)`` and their points, so nothing is padded or copied (padding means of
the reference carry value 0 and padding points are masked: neither changes ``v'``).

``chunk_size`` (§6): the kernels' working set is already bounded by their tiles, so the
chunked path only launches pass 2 once per chunk of means of every context and accumulates
``v'``; the result equals the unchunked one to float tolerance, as the reference's chunked path
does. The backward is per mean and needs no chunking.

:mod:`hyperkern.library` registers these launchers as the CUDA implementation of the op
``hyperkern::proportions``; the plain-torch oracle is :func:`hyperkern.reference.proportions`.
"""

import torch
import triton
import triton.language as tl

from hyperkern._shared import context_count
from hyperkern._shared import interpreting as _interpreting

from ._launch import guard, on_device


def _active(sizes: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    return sizes[:1] if _interpreting() else sizes


def _configs(sizes: list[tuple[int, int, int]]) -> list[triton.Config]:
    return [triton.Config({"BLOCK_P": p, "BLOCK_M": m}, num_warps=w) for p, m, w in _active(sizes)]


# (BLOCK_P, BLOCK_M, num_warps); the first is the interpreter's only config.
_TILE_2D = [(32, 16, 2), (64, 16, 2), (64, 32, 4), (128, 32, 4), (64, 64, 4), (128, 64, 8)]
_TILE_3D = [(16, 16, 2), (32, 16, 2), (32, 32, 4), (64, 16, 4), (64, 32, 8)]
_MIN_POINTS_PER_SPLIT = 256
_TARGET_PROGRAMS = 1024  # per-mean passes split points until about this many programs run


@triton.jit
def _log_densities(
    pts_ptr, mu_ptr, sig_ptr, pt_rows, mean_rows, mask_p, mask_m, R,
    BLOCK_P: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    """``(BLOCK_P, BLOCK_M)`` tile of ``-0.5 * sum_d (p - mu)^2 / sigma`` (rows of width R)."""
    dtype = mu_ptr.dtype.element_ty
    acc = tl.zeros((BLOCK_P, BLOCK_M), dtype=dtype)
    for d in range(R):
        p = tl.load(pts_ptr + pt_rows * R + d, mask=mask_p, other=0).to(dtype)
        mu = tl.load(mu_ptr + mean_rows * R + d, mask=mask_m, other=0.0)
        sg = tl.load(sig_ptr + mean_rows * R + d, mask=mask_m, other=1.0)
        diff = p[:, None] - mu[None, :]
        acc += diff * diff / sg[None, :]
    return -0.5 * acc


@triton.jit
def _context(n_ctx, cs, k, S):
    """``(n_means, mean_base, pt_base)`` of the context of this program (axis 0 runs over
    (instance b, context c)): means ``c*cs .. c*cs + n_means`` and their points, in place."""
    cid = tl.program_id(0).to(tl.int64)
    m0 = (cid % n_ctx) * cs
    mean_base = (cid // n_ctx) * k + m0
    return tl.minimum(cs, k - m0), mean_base, mean_base * S


@triton.jit
def _mean_block(n_means, mean_base, S, points_per_split, BLOCK_M: tl.constexpr):
    """The block of means (axis 1) and the split of their context's points (axis 2) of a
    per-mean pass: ``(split, offs_m, mask_m, mean_rows, p_lo, p_hi)``."""
    split = tl.program_id(2)
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    p_lo = split * points_per_split
    p_hi = tl.minimum(p_lo + points_per_split, n_means * S)
    return split, offs_m, offs_m < n_means, mean_base + offs_m, p_lo, p_hi


@triton.jit
def _kept(dup_ptr, pt_rows, mask_p):
    """Points that are in range and not masked as duplicates."""
    return mask_p & (tl.load(dup_ptr + pt_rows, mask=mask_p, other=1) == 0)


@triton.jit
def _proportion(logd, keep, mask_m, lognorm):
    """``prop = exp(logd - lognorm)`` on live (point, mean) pairs of a tile, 0 elsewhere."""
    live = keep[:, None] & mask_m[None, :]
    return tl.where(live, tl.exp(logd - lognorm[None, :]), 0.0)


@triton.jit
def _lognorm_kernel(
    pts_ptr, mu_ptr, sig_ptr, dup_ptr, max_ptr, sum_ptr,
    n_ctx, cs, k, S, R, points_per_split, n_rows,
    BLOCK_P: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    """Pass 1 on one (context, block of means, split of points): running max and sum-exp."""
    n_means, mean_base, pt_base = _context(n_ctx, cs, k, S)
    split, offs_m, mask_m, mean_rows, p_lo, p_hi = _mean_block(
        n_means, mean_base, S, points_per_split, BLOCK_M
    )
    dtype = mu_ptr.dtype.element_ty
    run_max = tl.full((BLOCK_M,), float("-inf"), dtype=dtype)
    run_sum = tl.zeros((BLOCK_M,), dtype=dtype)
    for p0 in range(p_lo, p_hi, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        mask_p = offs_p < p_hi
        pt_rows = pt_base + offs_p
        logd = _log_densities(pts_ptr, mu_ptr, sig_ptr, pt_rows, mean_rows, mask_p, mask_m, R,
                              BLOCK_P, BLOCK_M)  # fmt: skip
        keep = _kept(dup_ptr, pt_rows, mask_p)
        logd = tl.where(keep[:, None], logd, float("-inf"))
        new_max = tl.maximum(run_max, tl.max(logd, axis=0))
        shift = tl.where(new_max == float("-inf"), 0.0, new_max)
        run_sum = run_sum * tl.exp(run_max - shift) + tl.sum(tl.exp(logd - shift[None, :]), axis=0)
        run_max = new_max
    out = split * n_rows + mean_rows
    tl.store(max_ptr + out, run_max, mask=mask_m)
    tl.store(sum_ptr + out, run_sum, mask=mask_m)


@triton.jit
def _point_values_kernel(
    pts_ptr, mu_ptr, sig_ptr, val_ptr, dup_ptr, lognorm_ptr, out_ptr,
    n_ctx, cs, k, S, R, m_start, m_stop,
    ACCUMULATE: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    """Pass 2 on one (context, block of points): ``v'`` from the means ``m_start .. m_stop``."""
    n_means, mean_base, pt_base = _context(n_ctx, cs, k, S)
    offs_p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    mask_p = offs_p < n_means * S
    pt_rows = pt_base + offs_p
    keep = _kept(dup_ptr, pt_rows, mask_p)
    m_hi = tl.minimum(m_stop, n_means)
    acc = tl.zeros((BLOCK_P,), dtype=mu_ptr.dtype.element_ty)
    for m0 in range(m_start, m_hi, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        mask_m = offs_m < m_hi
        mean_rows = mean_base + offs_m
        logd = _log_densities(pts_ptr, mu_ptr, sig_ptr, pt_rows, mean_rows, mask_p, mask_m, R,
                              BLOCK_P, BLOCK_M)  # fmt: skip
        lognorm = tl.load(lognorm_ptr + mean_rows, mask=mask_m, other=0.0)
        value = tl.load(val_ptr + mean_rows, mask=mask_m, other=0.0)
        prop = _proportion(logd, keep, mask_m, lognorm)
        acc += tl.sum(prop * value[None, :], axis=1)
    if ACCUMULATE:
        acc += tl.load(out_ptr + pt_rows, mask=mask_p, other=0.0)
    tl.store(out_ptr + pt_rows, acc, mask=mask_p)


@triton.jit
def _grad_values_kernel(
    pts_ptr, mu_ptr, sig_ptr, dup_ptr, lognorm_ptr, grad_ptr, dval_ptr,
    n_ctx, cs, k, S, R, points_per_split, n_rows,
    BLOCK_P: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    """Backward pass 1 on one (context, block of means, split): ``sum_j g[j] prop[j, m]``."""
    n_means, mean_base, pt_base = _context(n_ctx, cs, k, S)
    split, offs_m, mask_m, mean_rows, p_lo, p_hi = _mean_block(
        n_means, mean_base, S, points_per_split, BLOCK_M
    )
    lognorm = tl.load(lognorm_ptr + mean_rows, mask=mask_m, other=0.0)
    acc = tl.zeros((BLOCK_M,), dtype=mu_ptr.dtype.element_ty)
    for p0 in range(p_lo, p_hi, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        mask_p = offs_p < p_hi
        pt_rows = pt_base + offs_p
        logd = _log_densities(pts_ptr, mu_ptr, sig_ptr, pt_rows, mean_rows, mask_p, mask_m, R,
                              BLOCK_P, BLOCK_M)  # fmt: skip
        keep = _kept(dup_ptr, pt_rows, mask_p)
        grad = tl.load(grad_ptr + pt_rows, mask=mask_p, other=0.0)
        prop = _proportion(logd, keep, mask_m, lognorm)
        acc += tl.sum(prop * grad[:, None], axis=0)
    tl.store(dval_ptr + split * n_rows + mean_rows, acc, mask=mask_m)


@triton.jit
def _grad_params_kernel(
    pts_ptr, mu_ptr, sig_ptr, val_ptr, dup_ptr, lognorm_ptr, grad_ptr, dval_ptr,
    dmu_ptr, dsig_ptr,
    n_ctx, cs, k, S, R, points_per_split, n_rows,
    BLOCK_P: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    """Backward pass 2 on one (context, block of means, split): ``dmu`` and ``dsigma``.

    Tiles are ``(BLOCK_P, BLOCK_M, BLOCK_R)`` so that every column ``d`` accumulates at once.
    """
    n_means, mean_base, pt_base = _context(n_ctx, cs, k, S)
    split, offs_m, mask_m, mean_rows, p_lo, p_hi = _mean_block(
        n_means, mean_base, S, points_per_split, BLOCK_M
    )
    offs_r = tl.arange(0, BLOCK_R)
    mask_r = offs_r < R
    mask_mr = mask_m[:, None] & mask_r[None, :]
    mean_cells = mean_rows[:, None] * R + offs_r[None, :]
    mu = tl.load(mu_ptr + mean_cells, mask=mask_mr, other=0.0)
    sg = tl.load(sig_ptr + mean_cells, mask=mask_mr, other=1.0)
    lognorm = tl.load(lognorm_ptr + mean_rows, mask=mask_m, other=0.0)
    value = tl.load(val_ptr + mean_rows, mask=mask_m, other=0.0)
    a = tl.load(dval_ptr + mean_rows, mask=mask_m, other=0.0)
    dtype = mu_ptr.dtype.element_ty
    acc_mu = tl.zeros((BLOCK_M, BLOCK_R), dtype=dtype)
    acc_sig = tl.zeros((BLOCK_M, BLOCK_R), dtype=dtype)
    for p0 in range(p_lo, p_hi, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        mask_p = offs_p < p_hi
        pt_rows = pt_base + offs_p
        pts = tl.load(pts_ptr + pt_rows[:, None] * R + offs_r[None, :],
                      mask=mask_p[:, None] & mask_r[None, :], other=0).to(dtype)  # fmt: skip
        diff = pts[:, None, :] - mu[None, :, :]  # (P, M, R)
        sq = diff * diff
        logd = -0.5 * tl.sum(sq / sg[None, :, :], axis=2)
        keep = _kept(dup_ptr, pt_rows, mask_p)
        grad = tl.load(grad_ptr + pt_rows, mask=mask_p, other=0.0)
        prop = _proportion(logd, keep, mask_m, lognorm)
        dlogd = value[None, :] * prop * (grad[:, None] - a[None, :])
        acc_mu += tl.sum(dlogd[:, :, None] * diff, axis=0)
        acc_sig += tl.sum(dlogd[:, :, None] * sq, axis=0)
    out = (split * n_rows + mean_rows)[:, None] * R + offs_r[None, :]
    tl.store(dmu_ptr + out, acc_mu / sg, mask=mask_mr)
    tl.store(dsig_ptr + out, 0.5 * (acc_sig / sg) / sg, mask=mask_mr)


_KEY = ["cs", "S", "R"]
_SPLIT_KEY = ["cs", "S", "R", "points_per_split"]
_lognorm = triton.autotune(_configs(_TILE_2D), key=_SPLIT_KEY)(_lognorm_kernel)
_point_values = triton.autotune(_configs(_TILE_2D), key=_KEY, restore_value=["out_ptr"])(
    _point_values_kernel
)
_grad_values = triton.autotune(_configs(_TILE_2D), key=_SPLIT_KEY)(_grad_values_kernel)
_grad_params = triton.autotune(_configs(_TILE_3D), key=_SPLIT_KEY)(_grad_params_kernel)


def _point_splits(n_programs_unsplit: int, n_points: int) -> int:
    """How many programs share the points of one context in the per-mean passes."""
    if _interpreting():
        return 1
    wanted = max(1, _TARGET_PROGRAMS // max(n_programs_unsplit, 1))
    return max(1, min(wanted, triton.cdiv(n_points, _MIN_POINTS_PER_SPLIT)))


def _layout(points: torch.Tensor, cs: int, n_splits: int | None = None):
    """Geometry shared by the launchers: contexts, sizes and the split of points."""
    B, k, S, R = points.shape
    n_ctx = context_count(k, cs)[0]
    n_points = cs * S
    if n_splits is None:
        n_splits = _point_splits(B * n_ctx * triton.cdiv(cs, 32), n_points)
    quantum = max(p for p, _, _ in _active(_TILE_2D) + _active(_TILE_3D))  # whole blocks
    per_split = triton.cdiv(triton.cdiv(max(n_points, 1), n_splits), quantum) * quantum
    n_splits = triton.cdiv(max(n_points, 1), per_split)
    return B, k, S, R, n_ctx, per_split, n_splits


def _kernel_operands(points, mu, sigma, values, duplicates):
    """Contiguous operands in kernel form: float or int64 points, uint8 duplicate flags."""
    pts = points.to(mu.dtype) if points.is_floating_point() else points.to(torch.int64)
    return guard(pts, mu, sigma.to(mu.dtype), values.to(mu.dtype), duplicates.view(torch.uint8))


def _merge_lognorm(part_max: torch.Tensor, part_sum: torch.Tensor) -> torch.Tensor:
    """logsumexp over splits from per-split (max, sum-exp); 0 where every point is masked."""
    top = part_max.amax(0)
    shift = torch.where(torch.isinf(top), torch.zeros_like(top), top)
    total = (part_sum * torch.exp(part_max - shift)).sum(0)
    return torch.where(torch.isinf(top), torch.zeros_like(top), shift + torch.log(total))


def proportions_forward(
    points: torch.Tensor,
    mu: torch.Tensor,
    sigma: torch.Tensor,
    values: torch.Tensor,
    duplicates: torch.Tensor,
    cs: int,
    chunk: int | None = None,
    n_splits: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel forward: ``(v' (B, k, S), lognorm (B, k))``; ``cs`` means per context, ``chunk``
    means per launch of pass 2 (shapes as in :func:`hyperkern.reference.proportions`)."""
    pts, mu, sigma, values, dup = _kernel_operands(points, mu, sigma, values, duplicates)
    B, k, S, R, n_ctx, per_split, n_splits = _layout(pts, cs, n_splits)
    chunk = cs if chunk is None else min(chunk, cs)
    out = mu.new_zeros((B, k, S))
    if B * k == 0:
        return out, mu.new_zeros((B, k))
    part_max = mu.new_empty((n_splits, B * k))
    part_sum = mu.new_empty((n_splits, B * k))

    def means_grid(meta):
        return (B * n_ctx, triton.cdiv(cs, meta["BLOCK_M"]), n_splits)

    def points_grid(meta):
        return (B * n_ctx, triton.cdiv(cs * S, meta["BLOCK_P"]))

    with on_device(mu):
        _lognorm[means_grid](
            pts, mu, sigma, dup, part_max, part_sum,
            n_ctx, cs, k, S, R, per_split, B * k,
        )  # fmt: skip
        lognorm = _merge_lognorm(part_max, part_sum).reshape(B, k)
        for start in range(0, cs if S else 0, chunk):
            _point_values[points_grid](
                pts, mu, sigma, values, dup, lognorm, out,
                n_ctx, cs, k, S, R, start, start + chunk,
                ACCUMULATE=start > 0,
            )  # fmt: skip
    return out, lognorm


def proportions_backward(
    grad: torch.Tensor,
    points: torch.Tensor,
    mu: torch.Tensor,
    sigma: torch.Tensor,
    values: torch.Tensor,
    duplicates: torch.Tensor,
    lognorm: torch.Tensor,
    cs: int,
    n_splits: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Kernel backward: ``grad`` ``(B, k, S)`` -> ``(dmu (B, k, r), dsigma (B, k, r),
    dvalues (B, k))``, recomputing densities from ``lognorm`` ``(B, k)``."""
    pts, mu, sigma, values, dup = _kernel_operands(points, mu, sigma, values, duplicates)
    grad, lognorm = guard(grad.to(mu.dtype), lognorm.to(mu.dtype))
    B, k, S, R, n_ctx, per_split, n_splits = _layout(pts, cs, n_splits)
    if B * k * S == 0:
        return torch.zeros_like(mu), torch.zeros_like(sigma), torch.zeros_like(values)
    part_dval = mu.new_empty((n_splits, B, k))
    part_dmu = mu.new_empty((n_splits, B, k, R))
    part_dsig = mu.new_empty((n_splits, B, k, R))

    def means_grid(meta):
        return (B * n_ctx, triton.cdiv(cs, meta["BLOCK_M"]), n_splits)

    with on_device(mu):
        _grad_values[means_grid](
            pts, mu, sigma, dup, lognorm, grad, part_dval,
            n_ctx, cs, k, S, R, per_split, B * k,
        )  # fmt: skip
        dvalues = part_dval.sum(0)
        _grad_params[means_grid](
            pts, mu, sigma, values, dup, lognorm, grad, dvalues, part_dmu, part_dsig,
            n_ctx, cs, k, S, R, per_split, B * k,
            BLOCK_R=triton.next_power_of_2(max(R, 1)),
        )  # fmt: skip
    return part_dmu.sum(0), part_dsig.sum(0), dvalues
