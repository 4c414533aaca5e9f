"""Proportions: each sampled tuple's share of every mean's value (docs/algorithm.md §4, §6).

Two plain-torch versions of one formula:

- :func:`proportions` is the readable oracle: it materialises the ``(points, means)`` density
  matrix of every context and lets autograd differentiate it.
- :func:`proportions_forward` / :func:`proportions_backward` are the CPU path behind
  ``hyperkern.ops.proportions``: they stream over blocks of means (so ``(P, k, r)`` never exists
  and each block stays in cache) and the backward uses the closed-form gradients below,
  recomputing the densities from the saved per-mean log-normalisers. With ``g = dL/dv'`` and
  ``prop = exp(logd - lognorm)``:

      dvalues[m]   = a[m] = sum_j g[j] prop[j, m]
      dlogd[j, m]  = values[m] prop[j, m] (g[j] - a[m])
      dmu[m, d]    = sum_j dlogd[j, m] (p[j, d] - mu[m, d]) / sigma[m, d]
      dsigma[m, d] = sum_j dlogd[j, m] (p[j, d] - mu[m, d])^2 / (2 sigma[m, d]^2)
"""

from __future__ import annotations

import torch

from hyperkern._shared import half_as_float32

from .contexts import from_contexts, to_contexts

__all__ = [
    "log_densities",
    "point_values",
    "proportions",
    "proportions_backward",
    "proportions_forward",
]

_BLOCK_ELEMENTS = 1 << 18  # (contexts x points x means) per block: about 1 MiB in float32


def log_densities(points: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``-0.5 * sum_d (p - mu)^2 / sigma`` for every (point, mean) pair of a context.

    Args:
        points: ``(C, P, r)`` float tuples.
        mu: ``(C, m, r)`` means.
        sigma: ``(C, m, r)`` per-column variances.
    Returns:
        ``(C, P, m)``.
    """
    diff = points.unsqueeze(2) - mu.unsqueeze(1)
    return -0.5 * (diff * diff / sigma.unsqueeze(1)).sum(-1)


def point_values(
    points: torch.Tensor,
    mu: torch.Tensor,
    sigma: torch.Tensor,
    values: torch.Tensor,
    duplicates: torch.Tensor,
) -> torch.Tensor:
    """``v'[j] = sum_m values[m] * prop[j, m]`` for contexts laid out flat.

    Args:
        points: ``(C, P, r)`` float tuples; ``mu``/``sigma``: ``(C, m, r)``; ``values``: ``(C, m)``;
        duplicates: ``(C, P)`` bool, True where the point is masked.
    Returns:
        ``(C, P)``. A mean whose density underflows at every point contributes nothing.
    """
    logd = log_densities(points, mu, sigma)
    logd = logd.masked_fill(duplicates.unsqueeze(-1), float("-inf"))
    lognorm = torch.logsumexp(logd, dim=1, keepdim=True)  # (C, 1, m)
    lognorm = torch.where(torch.isfinite(lognorm), lognorm, torch.zeros_like(lognorm))
    prop = torch.exp(logd - lognorm)
    return (prop * values.unsqueeze(1)).sum(-1)


def _contexts(points, mu, sigma, values, duplicates, context_size):
    """Context layout: points ``(C, P, r)`` in mu's dtype, mu/sigma ``(C, cs, r)``,
    values ``(C, cs)`` (padding means carry 0), duplicates ``(C, P)`` (padding points masked)."""
    pts = to_contexts(points.to(mu.dtype), context_size)
    C, cs, S, r = pts.shape
    return (
        pts.reshape(C, cs * S, r),
        to_contexts(mu, context_size),
        to_contexts(sigma, context_size, pad_value=1.0),
        to_contexts(values, context_size),
        to_contexts(duplicates, context_size, pad_value=True).reshape(C, cs * S),
    )


def proportions(
    points: torch.Tensor,
    mu: torch.Tensor,
    sigma: torch.Tensor,
    values: torch.Tensor,
    duplicates: torch.Tensor,
    context_size: int | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Value of every sampled tuple: each mean's value spread over its context's tuples.

    ``v'[j] = sum_m values[m] * dens[j, m] / sum_j' dens[j', m]`` with
    ``dens[j, m] = exp(-0.5 * sum_d (p[j, d] - mu[m, d])^2 / sigma[m, d])`` and 0 for masked
    points; every point receives mass from every mean of its context. Autograd differentiates
    it (the oracle for the kernels and for :func:`proportions_backward`).

    Args:
        points: ``(B, k, S, r)`` int64 tuples (constants).
        mu: ``(B, k, r)`` means in index space.
        sigma: ``(B, k, r)`` per-column variances (> 0).
        values: ``(B, k)``.
        duplicates: ``(B, k, S)`` bool, True where a point is masked.
        context_size: means per context (``None``: all ``k``).
        chunk_size: accepted for the kernels' signature; the oracle takes all means at once
            (chunking does not change the result).

    Returns:
        ``v'`` of shape ``(B, k, S)``, dtype of ``mu``.
    """
    B, k, S, _ = points.shape
    pts, mu_c, sigma_c, values_c, dup_c = _contexts(
        points, mu, sigma, values, duplicates, context_size
    )
    out = point_values(pts, mu_c, sigma_c, values_c, dup_c)
    return from_contexts(out.reshape(-1, out.shape[1] // S if S else 0, S), B, k)


def _block_logd(pts, mu, coef, dup):
    """``(C, P, mb)`` log densities of one block of means, ``coef = -0.5 / sigma``, column by
    column (exact differences, no expansion of the square); masked points get ``-inf``."""
    logd = None
    for d in range(pts.shape[-1]):
        diff = pts[:, :, d, None] - mu[:, None, :, d]
        term = diff * diff * coef[:, None, :, d]
        logd = term if logd is None else logd.add_(term)
    if logd is None:
        logd = pts.new_zeros(pts.shape[0], pts.shape[1], mu.shape[1])
    return logd.masked_fill_(dup[:, :, None], float("-inf"))


def _exp_(logd: torch.Tensor) -> torch.Tensor:
    """``exp`` in place of log densities already shifted to ``<= 0``, with arguments clamped
    where the result would underflow (``-87`` in float32, ``-708`` in float64): CPUs take a slow
    path for every result that underflows (also ``exp(-inf)``), tens of times slower. The clamped
    terms are below ``1e-38`` of the largest term of their mean (``1e-307`` in float64), so
    normalisers and gradients do not change; masked points get exactly 0 afterwards."""
    floor = -708.0 if logd.dtype == torch.float64 else -87.0
    return logd.clamp_(min=floor).exp_()


def _blocks(C: int, P: int, cs: int, chunk: int | None) -> list[tuple[slice, slice]]:
    """``(contexts, means)`` slices whose ``(contexts, P, means)`` blocks hold about
    ``_BLOCK_ELEMENTS`` (so each stays in cache): all of a context's means at once where ``P``
    allows (many small contexts, as in attention), else blocks of means over every context."""
    means = max(1, min(cs, _BLOCK_ELEMENTS // max(P, 1), chunk or cs))
    contexts = max(1, _BLOCK_ELEMENTS // max(P * means, 1))
    return [
        (slice(c0, c0 + contexts), slice(m0, m0 + means))
        for c0 in range(0, max(C, 1), contexts)
        for m0 in range(0, cs, means)
    ]


@half_as_float32
def proportions_forward(
    points: torch.Tensor,
    mu: torch.Tensor,
    sigma: torch.Tensor,
    values: torch.Tensor,
    duplicates: torch.Tensor,
    context_size: int | None,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Streaming forward: ``(v' (B, k, S), lognorm (B, k))``, shapes as in :func:`proportions`.

    ``lognorm[m] = logsumexp_j logd[j, m]`` (0 where every point of the context is masked) is
    what :func:`proportions_backward` needs besides the inputs. ``chunk_size`` caps the means per
    block (the result does not depend on it).
    """
    B, k, S, _ = points.shape
    pts, mu_c, sigma_c, values_c, dup_c = _contexts(
        points, mu, sigma, values, duplicates, context_size
    )
    C, P = dup_c.shape
    cs = mu_c.shape[1]
    coef = -0.5 / sigma_c
    out = mu.new_zeros(C, P)
    lognorm = mu.new_zeros(C, cs)
    for ctx, part in _blocks(C, P, cs, chunk_size):
        logd = _block_logd(pts[ctx], mu_c[ctx, part], coef[ctx, part], dup_c[ctx])
        top = logd.amax(1, keepdim=True) if P else logd.new_full(logd[:, :1].shape, -torch.inf)
        empty = torch.isinf(top)  # every point of the mean masked: it contributes nothing
        top = torch.where(empty, torch.zeros_like(top), top)
        norm = _exp_(logd.sub_(top))  # exp(logd - top), in place
        total = norm.sum(1, keepdim=True)
        live = (total > 0) & ~empty
        block_lognorm = torch.where(live, total.log() + top, torch.zeros_like(top))
        lognorm[ctx, part] = block_lognorm[:, 0]
        scale = torch.where(live, values_c[ctx, None, part] / total, torch.zeros_like(total))
        out[ctx] += torch.bmm(norm, scale.transpose(1, 2)).squeeze(2)  # sum_m prop * values
    out.masked_fill_(dup_c, 0.0)
    vprime = from_contexts(out.reshape(C, cs, S), B, k)
    return vprime, from_contexts(lognorm, B, k)


@half_as_float32
def proportions_backward(
    grad: torch.Tensor,
    points: torch.Tensor,
    mu: torch.Tensor,
    sigma: torch.Tensor,
    values: torch.Tensor,
    duplicates: torch.Tensor,
    lognorm: torch.Tensor,
    context_size: int | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Closed-form backward of :func:`proportions_forward`: ``grad`` ``(B, k, S)`` ->
    ``(dmu (B, k, r), dsigma (B, k, r), dvalues (B, k))``, recomputing the densities."""
    B, k, S, r = points.shape
    pts, mu_c, sigma_c, values_c, dup_c = _contexts(
        points, mu, sigma, values, duplicates, context_size
    )
    C, P = dup_c.shape
    cs = mu_c.shape[1]
    g = to_contexts(grad.to(mu.dtype), context_size).reshape(C, P).masked_fill(dup_c, 0.0)
    lognorm_c = to_contexts(lognorm, context_size)
    coef = -0.5 / sigma_c
    dmu, dsigma, dvalues = torch.zeros_like(mu_c), torch.zeros_like(sigma_c), mu.new_zeros(C, cs)
    for ctx, part in _blocks(C, P, cs, None):
        logd = _block_logd(pts[ctx], mu_c[ctx, part], coef[ctx, part], dup_c[ctx])
        prop = _exp_(logd.sub_(lognorm_c[ctx, None, part]))  # (c, P, mb)
        a = torch.bmm(g[ctx, None, :], prop).squeeze(1)  # (c, mb)
        dvalues[ctx, part] = a
        # g centred on its prop-weighted mean a / W: W = sum_j prop is 1 up to rounding, and
        # that rounding, times g, would swamp (g - a) where one point holds nearly all mass
        weight = prop.sum(1)
        g_mean = torch.where(weight > 0, a / torch.where(weight > 0, weight, 1.0), 0.0)
        dlogd = prop.mul_(g[ctx, :, None] - g_mean[:, None, :]).mul_(values_c[ctx, None, part])
        for d in range(r):
            diff = pts[ctx, :, d, None] - mu_c[ctx, None, part, d]
            weighted = dlogd * diff
            dmu[ctx, part, d] = weighted.sum(1) / sigma_c[ctx, part, d]
            dsigma[ctx, part, d] = (weighted * diff).sum(1) / (2 * sigma_c[ctx, part, d] ** 2)
    return from_contexts(dmu, B, k), from_contexts(dsigma, B, k), from_contexts(dvalues, B, k)
