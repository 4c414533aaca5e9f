"""Raw parameters -> index space (docs/algorithm.md §1)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from hyperkern._shared import VARIANCE_FLOOR, constant


def dims_tensor(
    dims: Sequence[int], device: torch.device, dtype: torch.dtype = torch.int64
) -> torch.Tensor:
    """``dims`` as a cached ``(r,)`` tensor on ``device`` (:func:`hyperkern._shared.constant`)."""
    return constant(dims, device, dtype)


def transform_means(means_raw: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """``(..., k, r)`` raw means -> ``mu = sigmoid(means_raw) * (dims - 1)``, same shape."""
    scale = dims_tensor([d - 1 for d in dims], means_raw.device, means_raw.dtype)
    return torch.sigmoid(means_raw) * scale


def transform_sigmas(
    sigmas_raw: torch.Tensor,
    dims: Sequence[int],
    sigma_scale: float = 0.1,
    min_sigma: float = 0.0,
) -> torch.Tensor:
    """``(..., k)`` raw widths -> per-column variances ``(..., k, r)``.

    ``sigma[d] = max((softplus(sigmas_raw + 2) + min_sigma) * dims[d] * sigma_scale, floor)``
    with ``floor = 1e-4`` (:data:`hyperkern._shared.VARIANCE_FLOOR`): finite densities and
    gradients for every finite raw width (below the floor the width gets no gradient).
    """
    base = F.softplus(sigmas_raw + 2) + min_sigma
    scale = dims_tensor(dims, sigmas_raw.device, sigmas_raw.dtype) * sigma_scale
    return (base.unsqueeze(-1) * scale).clamp(min=VARIANCE_FLOOR)
