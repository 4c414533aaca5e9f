"""Integer index tuples around each mean (SPEC §2). No gradient flows through sampling."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def default_region(dims: Sequence[int]) -> tuple[int, ...]:
    """Per-column local box size when none is given: ``max(2, ceil(log2 d))``, at most ``d``."""
    return tuple(min(d, max(2, math.ceil(math.log2(max(d, 1))))) for d in dims)


def samples_per_mean(r: int, n_local: int, n_global: int) -> int:
    """``S = 2**r + n_local + n_global``."""
    return 2**r + n_local + n_global


def corner_offsets(r: int, device: torch.device | None = None) -> torch.Tensor:
    """``(2**r, r)`` bool: row ``c`` picks ceil (True) or floor per column, bit ``d`` of ``c``."""
    codes = torch.arange(2**r, device=device)
    bits = 2 ** torch.arange(r - 1, -1, -1, device=device)
    return (codes.unsqueeze(-1) & bits) > 0


def make_generator(
    generator: torch.Generator | int | None, device: torch.device
) -> torch.Generator | None:
    """An int seed becomes a fresh generator on ``device``; a generator passes through."""
    if isinstance(generator, int):
        gen = torch.Generator(device=device)
        gen.manual_seed(generator)
        return gen
    return generator


def _uniform_ints(
    shape: tuple[int, ...],
    high: torch.Tensor,
    generator: torch.Generator | None,
    device: torch.device,
) -> torch.Tensor:
    """Integers uniform in ``[0, high)``; ``high`` broadcasts over the last axis."""
    gen_device = generator.device if generator is not None else device
    u = torch.rand(shape, generator=generator, dtype=torch.float64, device=gen_device)
    u = u.to(device)
    ints = torch.floor(u * high.to(torch.float64)).long()
    return torch.minimum(ints, high.long() - 1)


def sample_tuples(
    mu: torch.Tensor,
    dims: Sequence[int],
    n_local: int,
    n_global: int,
    region: Sequence[int] | None = None,
    generator: torch.Generator | int | None = None,
) -> torch.Tensor:
    """Sample integer tuples around every mean.

    Args:
        mu: ``(B, k, r)`` means in index space, ``0 <= mu <= dims - 1``.
        dims: ``(r,)`` sizes of W's index space.
        n_local: tuples uniform in a ``region`` box centred on ``round(mu)``, shifted inside bounds.
        n_global: tuples uniform over the whole index space.
        region: ``(r,)`` box size per column; default :func:`default_region`.
        generator: ``torch.Generator`` or int seed; ``None`` uses torch's global RNG. Random
            numbers are drawn on the generator's device, so a seed gives the same tuples on CPU
            and CUDA.

    Returns:
        ``(B, k, S, r)`` int64, ``S = 2**r + n_local + n_global``: corners (every floor/ceil
        combination, in binary order), then local, then global samples.
    """
    B, k, r = mu.shape
    device = mu.device
    generator = make_generator(generator, device)
    region = default_region(dims) if region is None else tuple(region)
    dims_t = torch.tensor(list(dims), device=device)
    mu = mu.detach()
    upper = (dims_t - 1).to(mu.dtype)

    lo = torch.clamp(torch.floor(mu), min=0).minimum(upper).long()
    hi = torch.clamp(torch.ceil(mu), min=0).minimum(upper).long()
    pick_hi = corner_offsets(r, device)  # (2**r, r)
    corners = torch.where(pick_hi, hi.unsqueeze(2), lo.unsqueeze(2))  # (B, k, 2**r, r)

    region_t = torch.tensor(region, device=device)
    centre = torch.round(mu).long().clamp(min=0).minimum(dims_t - 1)
    start = (centre - region_t // 2).clamp(min=0).minimum(dims_t - region_t)  # shift, not shrink
    local = start.unsqueeze(2) + _uniform_ints((B, k, n_local, r), region_t, generator, device)
    glob = _uniform_ints((B, k, n_global, r), dims_t, generator, device)
    return torch.cat([corners, local, glob], dim=2)


def round_means(mu: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """Eval-mode tuples: each mean rounded to its nearest in-bounds integer tuple.

    Args:
        mu: ``(B, k, r)`` means in index space.
    Returns:
        ``(B, k, 1, r)`` int64.
    """
    dims_t = torch.tensor(list(dims), device=mu.device)
    return torch.round(mu.detach()).long().clamp(min=0).minimum(dims_t - 1).unsqueeze(2)
