"""Random inputs for every benchmark group, built on the CPU from a seeded generator."""

from __future__ import annotations

import torch

from hyperkern import reference


def proportion_inputs(case, device: torch.device, generator: torch.Generator):
    """Points ``(b, k, S, r)``, leaves ``[mu, sigma (b, k, r), values (b, k)]``, duplicates
    ``(b, k, S)`` and an output gradient ``(b, k, S)``."""
    b, k, r, dims = case.b, case.k, case.r, case.dims
    mu = reference.transform_means(torch.randn(b, k, r, generator=generator), dims)
    sigma = reference.transform_sigmas(torch.randn(b, k, generator=generator), dims)
    values = torch.randn(b, k, generator=generator)
    points = reference.sample_tuples(mu, dims, case.n_local, case.n_global, generator=generator)
    duplicates = reference.duplicate_mask(points, dims, case.context_size)
    grad = torch.randn(b, k, case.samples, generator=generator)
    leaves = [t.to(device).requires_grad_() for t in (mu, sigma, values)]
    return points.to(device), leaves, duplicates.to(device), grad.to(device)


def tuple_inputs(case, device: torch.device, generator: torch.Generator) -> torch.Tensor:
    """``(b, k, S, r)`` int64 tuples sampled around random means."""
    mu = reference.transform_means(
        torch.randn(case.b, case.k, case.r, generator=generator), case.dims
    )
    points = reference.sample_tuples(
        mu, case.dims, case.n_local, case.n_global, generator=generator
    )
    return points.to(device)


def contraction_inputs(case, device: torch.device, generator: torch.Generator):
    """``rows, cols (B, nnz)`` int64, ``vprime (B, nnz)``, ``x (b, n_in)``, ``dy (b, n_out)``;
    ``B = 1`` for a shared W, else ``b``."""
    B = 1 if case.shared else case.b
    rows = torch.randint(0, case.n_out, (B, case.nnz), generator=generator)
    cols = torch.randint(0, case.n_in, (B, case.nnz), generator=generator)
    vprime = torch.randn(B, case.nnz, generator=generator)
    x = torch.randn(case.b, case.n_in, generator=generator)
    dy = torch.randn(case.b, case.n_out, generator=generator)
    return tuple(t.to(device) for t in (rows, cols, vprime, x, dy))


def layer_inputs(case, device: torch.device, generator: torch.Generator):
    """``x (b, n_in)``, leaves ``[means (k, 2), sigmas (k,), values (k,)]``, ``dy (b, n_out)``:
    one W of shape ``(n_out, n_in)`` shared by the batch."""
    x = torch.randn(case.b, case.n_in, generator=generator)
    means = torch.randn(case.k, 2, generator=generator)
    sigmas = torch.zeros(case.k)
    values = torch.randn(case.k, generator=generator)
    dy = torch.randn(case.b, case.n_out, generator=generator)
    leaves = [t.to(device).requires_grad_() for t in (means, sigmas, values)]
    return x.to(device), leaves, dy.to(device)
