"""Building blocks of the sparse layer, each dispatched to the reference or the Triton kernels.

Every op has the same signature in :mod:`hyperkern.reference` and :mod:`hyperkern.kernels`; the
``backend`` argument picks one (``"auto"``: Triton on CUDA tensors, reference elsewhere).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hyperkern import reference
from hyperkern.backend import implementation
from hyperkern.reference import (
    cantor_keys,
    default_region,
    flatten_tuples,
    linear_keys,
    round_means,
    samples_per_mean,
    transform_means,
    transform_sigmas,
    tuple_keys,
)
from hyperkern.validation import check_shape, check_tensor

__all__ = [
    "cantor_keys",
    "contract",
    "default_region",
    "densify",
    "duplicate_mask",
    "flatten_tuples",
    "linear_keys",
    "proportions",
    "round_means",
    "sample_tuples",
    "samples_per_mean",
    "transform_means",
    "transform_sigmas",
    "tuple_keys",
]


def _check_points(points: torch.Tensor) -> None:
    check_tensor("points", points, (4,), floating=False)
    if points.dtype != torch.int64:
        raise TypeError(f"points must be int64 (B, k, S, r), got dtype {points.dtype}")


def sample_tuples(
    mu: torch.Tensor,
    dims: Sequence[int],
    n_local: int,
    n_global: int,
    region: Sequence[int] | None = None,
    generator: torch.Generator | int | None = None,
) -> torch.Tensor:
    """``(B, k, r)`` means -> ``(B, k, S, r)`` int64 tuples (corners, local, global; SPEC §2).

    Plain torch on every device (a handful of elementwise ops; no kernel needed).
    """
    check_tensor("mu", mu, (3,))
    return reference.sample_tuples(mu, dims, n_local, n_global, region, generator)


def duplicate_mask(
    points: torch.Tensor,
    dims: Sequence[int],
    context_size: int | None = None,
    key_kind: str = "auto",
    backend: str = "auto",
) -> torch.Tensor:
    """``(B, k, S, r)`` tuples -> ``(B, k, S)`` bool, True at repeats within a context (SPEC §3)."""
    _check_points(points)
    fn = implementation("duplicate_mask", backend, points.device)
    return fn(points, dims, context_size, key_kind)


def proportions(
    points: torch.Tensor,
    mu: torch.Tensor,
    sigma: torch.Tensor,
    values: torch.Tensor,
    duplicates: torch.Tensor,
    context_size: int | None = None,
    chunk_size: int | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Each tuple's share of its context's values, ``v'`` of shape ``(B, k, S)`` (SPEC §4).

    Shapes: ``points (B, k, S, r)`` int64, ``mu``/``sigma`` ``(B, k, r)``, ``values (B, k)``,
    ``duplicates (B, k, S)`` bool.
    """
    _check_points(points)
    B, k, S, r = points.shape
    check_tensor("mu", mu, (3,))
    check_shape("mu", mu, (B, k, r), "(B, k, r)")
    check_shape("sigma", sigma, (B, k, r), "(B, k, r)")
    check_shape("values", values, (B, k), "(B, k)")
    check_shape("duplicates", duplicates, (B, k, S), "(B, k, S)")
    fn = implementation("proportions", backend, mu.device)
    return fn(points, mu, sigma, values, duplicates, context_size, chunk_size)


def contract(
    rows: torch.Tensor,
    cols: torch.Tensor,
    vprime: torch.Tensor,
    x: torch.Tensor,
    n_out: int,
    backend: str = "auto",
) -> torch.Tensor:
    """Sparse W times dense x: ``(B, P)`` nonzeros, ``x (b, n_in[, c])`` -> ``(b, n_out[, c])``.

    ``B == b`` gives one W per instance, ``B == 1`` one W shared by the batch (SPEC §5).
    """
    check_tensor("x", x, (2, 3))
    check_tensor("rows", rows, (2,), floating=False)
    P = rows.shape[1]
    for name, t in (("cols", cols), ("vprime", vprime)):
        check_shape(name, t, tuple(rows.shape), "(B, P)")
    if rows.shape[0] not in (1, x.shape[0]):
        raise ValueError(
            f"rows must have B = 1 or B = x.shape[0] = {x.shape[0]}, got B = {rows.shape[0]}"
        )
    if P and (int(rows.min()) < 0 or int(rows.max()) >= n_out):
        raise ValueError(f"rows must lie in [0, n_out={n_out})")
    if P and (int(cols.min()) < 0 or int(cols.max()) >= x.shape[1]):
        raise ValueError(f"cols must lie in [0, x.shape[1]={x.shape[1]})")
    fn = implementation("contract", backend, x.device)
    return fn(rows, cols, vprime, x, n_out)


def densify(
    rows: torch.Tensor, cols: torch.Tensor, vprime: torch.Tensor, n_out: int, n_in: int
) -> torch.Tensor:
    """Dense W ``(B, n_out, n_in)`` from ``(B, P)`` nonzeros (repeats add up); tests, plots."""
    B = rows.shape[0]
    flat = torch.zeros(B, n_out * n_in, dtype=vprime.dtype, device=vprime.device)
    flat = flat.scatter_add(1, rows * n_in + cols, vprime)
    return flat.reshape(B, n_out, n_in)
