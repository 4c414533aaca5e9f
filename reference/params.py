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


MEANS_TRANSFORMS = ("sigmoid", "clamp", "modulo")


def transform_means(
    means_raw: torch.Tensor, dims: Sequence[int], transform: str = "sigmoid"
) -> torch.Tensor:
    """``(..., k, r)`` raw means -> index space ``[0, dims - 1]``, same shape.

    ``"sigmoid"``: ``sigmoid(raw) (dims - 1)`` (the paper's); ``"clamp"``: ``raw`` clamped into
    ``[0, dims - 1]`` (raw means are indices; no gradient outside); ``"modulo"``: ``raw`` modulo
    ``dims - 1`` (wraps around; gradient 1 everywhere).
    """
    upper = dims_tensor([d - 1 for d in dims], means_raw.device, means_raw.dtype)
    if transform == "sigmoid":
        return torch.sigmoid(means_raw) * upper
    if transform == "clamp":
        return torch.minimum(means_raw.clamp(min=0), upper)
    if transform == "modulo":
        return torch.remainder(means_raw, upper.clamp(min=1))
    raise ValueError(f"transform must be one of {MEANS_TRANSFORMS}, got {transform!r}")


def transform_means_grad(
    dmu: torch.Tensor, means_raw: torch.Tensor, dims: Sequence[int], transform: str = "sigmoid"
) -> torch.Tensor:
    """Chain rule through :func:`transform_means`: ``dL/dmu`` -> ``dL/dmeans_raw``."""
    upper = dims_tensor([d - 1 for d in dims], means_raw.device, dmu.dtype)
    if transform == "sigmoid":
        s = torch.sigmoid(means_raw)
        return dmu * s * (1 - s) * upper
    if transform == "clamp":
        return torch.where((means_raw >= 0) & (means_raw <= upper), dmu, 0.0)
    return dmu


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
