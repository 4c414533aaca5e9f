"""Proportions: each sampled tuple's share of every mean's value (SPEC §4, §6).

Plain torch, log space. Materialises the ``(points, means)`` density matrix per context, or per
chunk of means when ``chunk_size`` is given (the exact chunked path of SPEC §6).
"""

from __future__ import annotations

import torch

from .contexts import from_contexts, to_contexts


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


class _ChunkedPointValues(torch.autograd.Function):
    """Exact ``point_values`` over chunks of means; backward recomputes each chunk."""

    @staticmethod
    def forward(ctx, points, mu, sigma, values, duplicates, chunk_size):
        out = points.new_zeros(points.shape[:2])
        for start in range(0, mu.shape[1], chunk_size):
            part = slice(start, start + chunk_size)
            out += point_values(points, mu[:, part], sigma[:, part], values[:, part], duplicates)
        ctx.save_for_backward(points, mu, sigma, values, duplicates)
        ctx.chunk_size = chunk_size
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        points, mu, sigma, values, duplicates = ctx.saved_tensors
        grads = [torch.zeros_like(mu), torch.zeros_like(sigma), torch.zeros_like(values)]
        for start in range(0, mu.shape[1], ctx.chunk_size):
            part = slice(start, start + ctx.chunk_size)
            with torch.enable_grad():
                leaves = [t[:, part].detach().requires_grad_() for t in (mu, sigma, values)]
                out = point_values(points, *leaves, duplicates)
                chunk_grads = torch.autograd.grad(out, leaves, grad_out)
            for full, g in zip(grads, chunk_grads, strict=True):
                full[:, part] = g
        return None, grads[0], grads[1], grads[2], None, None


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
    points; every point receives mass from every mean of its context.

    Args:
        points: ``(B, k, S, r)`` int64 tuples (constants).
        mu: ``(B, k, r)`` means in index space.
        sigma: ``(B, k, r)`` per-column variances (> 0).
        values: ``(B, k)``.
        duplicates: ``(B, k, S)`` bool, True where a point is masked.
        context_size: means per context (``None``: all ``k``).
        chunk_size: process this many means at a time, recomputing in backward (SPEC §6).

    Returns:
        ``v'`` of shape ``(B, k, S)``, dtype of ``mu``.
    """
    B, k, S, r = points.shape
    pts = to_contexts(points.to(mu.dtype), context_size)  # (C, cs, S, r)
    C, cs = pts.shape[:2]
    pts = pts.reshape(C, cs * S, r)
    mu_c = to_contexts(mu, context_size)
    sigma_c = to_contexts(sigma, context_size, pad_value=1.0)
    values_c = to_contexts(values, context_size)  # padding means carry value 0
    dup_c = to_contexts(duplicates, context_size, pad_value=True).reshape(C, cs * S)
    if chunk_size is None or chunk_size >= cs:
        out = point_values(pts, mu_c, sigma_c, values_c, dup_c)
    else:
        out = _ChunkedPointValues.apply(pts, mu_c, sigma_c, values_c, dup_c, chunk_size)
    return from_contexts(out.reshape(C, cs, S), B, k)
