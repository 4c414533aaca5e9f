"""Raw parameters -> index space (SPEC §1)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def dims_tensor(dims: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """``dims`` as a float tensor of ``like``'s dtype and device, shape ``(r,)``."""
    return torch.tensor(list(dims), dtype=like.dtype, device=like.device)


def transform_means(means_raw: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """``(..., k, r)`` raw means -> ``mu = sigmoid(means_raw) * (dims - 1)``, same shape."""
    return torch.sigmoid(means_raw) * (dims_tensor(dims, means_raw) - 1)


def transform_sigmas(
    sigmas_raw: torch.Tensor,
    dims: Sequence[int],
    sigma_scale: float = 0.1,
    min_sigma: float = 0.0,
) -> torch.Tensor:
    """``(..., k)`` raw widths -> per-column variances ``(..., k, r)``.

    ``sigma[d] = (softplus(sigmas_raw + 2) + min_sigma) * dims[d] * sigma_scale``.
    """
    base = F.softplus(sigmas_raw + 2) + min_sigma
    return base.unsqueeze(-1) * (dims_tensor(dims, sigmas_raw) * sigma_scale)
