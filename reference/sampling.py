"""Integer index tuples around each mean (docs/algorithm.md §2). No gradient flows through
sampling. Randomness is the counter-based stream of :mod:`hyperkern.reference.random`, so the
Triton sampler draws bit-identical tuples from the same seed."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hyperkern._shared import default_region, samples_per_mean
from hyperkern.seeds import seed_tensor

from .contract import flatten_tuples
from .keys import cantor_keys, linear_keys
from .params import dims_tensor
from .random import philox_word0

__all__ = [
    "corner_offsets",
    "default_region",
    "round_means",
    "sample",
    "sample_tuples",
    "samples_per_mean",
]


def corner_offsets(r: int, device: torch.device | None = None) -> torch.Tensor:
    """``(2**r, r)`` bool: row ``c`` picks ceil (True) or floor per column, bit ``d`` of ``c``."""
    codes = torch.arange(2**r, device=device)
    bits = 2 ** torch.arange(r - 1, -1, -1, device=device)
    return (codes.unsqueeze(-1) & bits) > 0


def sample_tuples(
    mu: torch.Tensor,
    dims: Sequence[int],
    n_local: int,
    n_global: int,
    region: Sequence[int] | None = None,
    generator: torch.Generator | int | torch.Tensor | None = None,
) -> torch.Tensor:
    """Sample integer tuples around every mean.

    Index math runs in float64 and int64 whatever the dtype of ``mu``, so every tuple is in
    bounds, also for a mean on the upper bound of a dimension above ``2^24``.

    Args:
        mu: ``(B, k, r)`` means in index space, ``0 <= mu <= dims - 1``.
        dims: ``(r,)`` sizes of W's index space, each below ``2^31``.
        n_local: tuples uniform in a ``region`` box centred on ``floor(mu + 0.5)``, shifted
            inside the bounds (never shrunk).
        n_global: tuples uniform over the whole index space.
        region: ``(r,)`` box size per column; ``None``: :func:`default_region`.
        generator: seed of the counter-based stream (:mod:`hyperkern.reference.random`): an int,
            a ``()`` int64 tensor, a ``torch.Generator`` to draw it from, or ``None`` (torch's
            global generator); see :func:`hyperkern.seeds.seed_tensor`.

    Returns:
        ``(B, k, S, r)`` int64, ``S = 2**r + n_local + n_global``: corners (every floor/ceil
        combination, in binary order), then local, then global samples.
    """
    B, k, r = mu.shape
    device = mu.device
    region = default_region(dims) if region is None else tuple(region)
    upper = dims_tensor([d - 1 for d in dims], device)
    mu64 = mu.detach().to(torch.float64)
    lo = torch.floor(mu64).long().clamp(min=0).minimum(upper)
    hi = torch.ceil(mu64).long().clamp(min=0).minimum(upper)
    corners = torch.where(corner_offsets(r, device), hi.unsqueeze(2), lo.unsqueeze(2))
    n_random = n_local + n_global
    if n_random == 0:
        return corners
    counter = torch.arange(B * k * n_random * r, device=device).view(B, k, n_random, r)
    words = philox_word0(seed_tensor(generator, device), counter)
    centre = torch.floor(mu64 + 0.5).long().clamp(min=0).minimum(upper)
    box = dims_tensor(region, device)
    start = (centre - box // 2).clamp(min=0).minimum(upper + 1 - box)  # shift, never shrink
    local = start.unsqueeze(2) + (words[:, :, :n_local] * box >> 32)
    glob = words[:, :, n_local:] * dims_tensor(dims, device) >> 32
    return torch.cat([corners, local, glob], dim=2)


def round_means(mu: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """Eval-mode tuples: each mean rounded to its nearest in-bounds integer tuple.

    Args:
        mu: ``(B, k, r)`` means in index space.
    Returns:
        ``(B, k, 1, r)`` int64.
    """
    upper = dims_tensor([d - 1 for d in dims], mu.device)
    rounded = torch.floor(mu.detach().to(torch.float64) + 0.5).long()
    return rounded.clamp(min=0).minimum(upper).unsqueeze(2)


def sample(
    mu: torch.Tensor,
    seed: torch.Tensor,
    dims: Sequence[int],
    n_out_dims: int,
    n_local: int,
    n_global: int,
    region: Sequence[int],
    cantor: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fused sampler's contract: ``mu (B, k, r)``, ``seed ()`` -> ``points (B, k, S, r)``
    and their ``keys`` (Cantor or linear), ``rows`` and ``cols`` ``(B, k, S)`` int64, the first
    ``n_out_dims`` columns indexing W's rows."""
    points = sample_tuples(mu, dims, n_local, n_global, region, seed)
    keys = cantor_keys(points) if cantor else linear_keys(points, dims)
    rows, cols = flatten_tuples(points, dims[:n_out_dims], dims[n_out_dims:])
    return points, keys, rows, cols
