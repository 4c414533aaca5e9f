"""Building blocks of the sparse layer (docs/algorithm.md §1-5), each a ``torch.library`` op of
:mod:`hyperkern.library` run by the Triton kernels or the plain-torch reference.

``backend="auto"`` runs Triton on CUDA tensors and the reference elsewhere; ``"torch"`` and
``"triton"`` force one. The shape arithmetic (transforms, keys, flat indices) is plain torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from hyperkern import library
from hyperkern._shared import (
    constant,
    context_count,
    default_region,
    resolve_key_kind,
    samples_per_mean,
)
from hyperkern.backend import resolve
from hyperkern.reference import (
    cantor_keys,
    flatten_tuples,
    linear_keys,
    round_means,
    transform_means,
    transform_sigmas,
    tuple_keys,
)
from hyperkern.seeds import check_generator, seed_tensor
from hyperkern.validation import (
    check_contract_inputs,
    check_index_space,
    check_proportions_inputs,
    check_region,
    check_tensor,
)

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


def _check_points(points: Tensor, dims: Sequence[int] | None = None) -> None:
    check_tensor("points", points, (4,), floating=False)
    if points.dtype != torch.int64:
        raise TypeError(f"points must be int64 (B, k, S, r), got dtype {points.dtype}")
    if dims is not None and len(dims) != points.shape[-1]:
        raise ValueError(
            f"dims must have one size per tuple column ({points.shape[-1]}), got {tuple(dims)}"
        )


def _check_context(name: str, size: object) -> None:
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"{name} must be None or an int >= 1, got {size!r}")


def sample_tuples(
    mu: Tensor,
    dims: Sequence[int],
    n_local: int,
    n_global: int,
    region: Sequence[int] | None = None,
    generator: torch.Generator | int | Tensor | None = None,
    backend: str = "auto",
) -> Tensor:
    """``(B, k, r)`` means in index space -> ``(B, k, S, r)`` int64 tuples (corners, local,
    global; §2), from the counter-based stream seeded by ``generator``."""
    check_tensor("mu", mu, (3,))
    dims = tuple(int(d) for d in dims)
    if len(dims) != mu.shape[-1]:
        raise ValueError(f"dims must have one size per column of mu ({mu.shape[-1]}), got {dims}")
    check_index_space(dims)
    region = check_region(region, dims) or default_region(dims)
    check_generator(generator)
    points, *_ = library.sample(
        mu,
        seed_tensor(generator, mu.device),
        list(dims),
        0,
        n_local,
        n_global,
        list(region),
        resolve_key_kind(dims) == "cantor",
        resolve(backend, mu.device),
    )
    return points


def duplicate_mask(
    points: Tensor,
    dims: Sequence[int],
    context_size: int | None = None,
    key_kind: str = "auto",
    backend: str = "auto",
    validate: bool = False,
) -> Tensor:
    """``(B, k, S, r)`` tuples -> ``(B, k, S)`` bool, True at repeats within a context (§3).

    Tuples must lie in ``[0, dims)``: keys of tuples outside may collide. ``validate=True``
    checks that (a host read)."""
    _check_points(points, dims)
    if validate and points.numel():
        upper = constant(dims, points.device)
        if bool((points < 0).any()) or bool((points >= upper).any()):
            raise ValueError(f"points must lie in [0, dims) per column, dims = {tuple(dims)}")
    _check_context("context_size", context_size)
    keys = tuple_keys(points, [int(d) for d in dims], key_kind)
    cs = context_count(points.shape[1], context_size)[1]
    return library.duplicate_mask(keys, cs, resolve(backend, points.device))


def proportions(
    points: Tensor,
    mu: Tensor,
    sigma: Tensor,
    values: Tensor,
    duplicates: Tensor,
    context_size: int | None = None,
    chunk_size: int | None = None,
    backend: str = "auto",
) -> Tensor:
    """Each tuple's share of its context's values, ``v'`` of shape ``(B, k, S)`` (§4).

    Shapes: ``points (B, k, S, r)`` int64, ``mu``/``sigma`` ``(B, k, r)``, ``values (B, k)``,
    ``duplicates (B, k, S)`` bool. Differentiable in ``mu``, ``sigma`` and ``values``.
    """
    check_proportions_inputs(points, mu, sigma, values, duplicates, context_size, chunk_size)
    cs = context_count(points.shape[1], context_size)[1]
    vprime, _ = library.proportions(
        points.to(torch.int64),
        mu,
        sigma,
        values,
        duplicates,
        cs,
        min(chunk_size or cs, cs),
        resolve(backend, mu.device),
    )
    return vprime


def contract(
    rows: Tensor,
    cols: Tensor,
    vprime: Tensor,
    x: Tensor,
    n_out: int,
    backend: str = "auto",
    deterministic: bool = True,
    validate: bool = False,
) -> Tensor:
    """Sparse W times dense x: ``(B, P)`` nonzeros, ``x (b, n_in[, c])`` -> ``(b, n_out[, c])``.

    ``B == b`` gives one W per instance, ``B == 1`` one W shared by the batch (§5). Indices
    must lie in ``[0, n_out)`` / ``[0, n_in)``; ``validate=True`` checks them (a host read).
    """
    check_contract_inputs(rows, cols, vprime, x, n_out)
    P = rows.shape[1]
    if validate and P and (int(rows.min()) < 0 or int(rows.max()) >= n_out):
        raise ValueError(f"rows must lie in [0, n_out={n_out})")
    if validate and P and (int(cols.min()) < 0 or int(cols.max()) >= x.shape[1]):
        raise ValueError(f"cols must lie in [0, x.shape[1]={x.shape[1]})")
    vector = x.dim() == 2
    dtype = torch.promote_types(x.dtype, vprime.dtype)
    x3 = (x.unsqueeze(-1) if vector else x).to(dtype)
    y = library.contract(
        rows, cols, vprime.to(dtype), x3, n_out, bool(deterministic), resolve(backend, x.device)
    )
    return y.squeeze(-1) if vector else y


def densify(rows: Tensor, cols: Tensor, vprime: Tensor, n_out: int, n_in: int) -> Tensor:
    """Dense W ``(B, n_out, n_in)`` from ``(B, P)`` nonzeros (repeats add up); tests, plots."""
    B = rows.shape[0]
    flat = torch.zeros(B, n_out * n_in, dtype=vprime.dtype, device=vprime.device)
    flat = flat.scatter_add(1, rows * n_in + cols, vprime)
    return flat.reshape(B, n_out, n_in)


NORMALIZE_MODES = ("softmax", "sum")


def normalize_rows(
    rows: Tensor, vprime: Tensor, n_rows: int, mode: str = "softmax", keep: Tensor | None = None
) -> Tensor:
    """Normalise every row of a sampled W over its own entries: ``(B, P)`` -> ``(B, P)``.

    ``"softmax"``: ``exp(v'_j) / sum_{j' in row} exp(v'_j')``; ``"sum"``: ``v'_j / sum_{j' in
    row} v'_j'`` (meant for non-negative values; a row that sums to 0 stays 0). ``keep (B, P)``
    bool leaves entries out (0 afterwards), e.g. the duplicates of a sampled W. Rows are any
    order; differentiable in ``vprime``. Runs as scatter/gather ops on any device.
    """
    if mode not in NORMALIZE_MODES:
        raise ValueError(f"mode must be one of {NORMALIZE_MODES}, got {mode!r}")
    B = rows.shape[0]
    if mode == "sum":
        entries = vprime if keep is None else vprime.masked_fill(~keep, 0.0)
        total = vprime.new_zeros(B, n_rows).scatter_add(1, rows, entries).gather(1, rows)
        return torch.where(total == 0, 0.0, entries / torch.where(total == 0, 1.0, total))
    scores = vprime if keep is None else vprime.masked_fill(~keep, float("-inf"))
    top = vprime.new_full((B, n_rows), float("-inf")).scatter_reduce(1, rows, scores, "amax")
    shift = top.detach().gather(1, rows)  # softmax does not depend on the shift
    weights = torch.exp(scores - torch.where(torch.isinf(shift), 0.0, shift))
    total = vprime.new_zeros(B, n_rows).scatter_add(1, rows, weights).gather(1, rows)
    return torch.where(total > 0, weights / torch.where(total > 0, total, 1.0), 0.0)
