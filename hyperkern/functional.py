"""The sparse layer as one differentiable function (docs/algorithm.md §1-6)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from hyperkern import library, reference
from hyperkern._shared import context_count, default_region, resolve_key_kind
from hyperkern.backend import check_backend, resolve
from hyperkern.seeds import check_generator, seed_tensor
from hyperkern.validation import (
    check_count,
    check_finite,
    check_index_space,
    check_optional_count,
    check_positive_shape,
    check_region,
    check_same_device,
    check_same_dtype,
    check_shape,
    check_tensor,
)


def _check_layer_args(
    x: torch.Tensor,
    means: torch.Tensor,
    sigmas: torch.Tensor,
    values: torch.Tensor,
    out_shape: object,
    **options: object,
) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """Validate :func:`sparse_layer`'s arguments; return ``out_shape`` and the region."""
    check_tensor("x", x, tuple(range(2, 64)))
    out_shape = check_positive_shape("out_shape", out_shape)
    in_shape = tuple(x.shape[1:])
    if not all(s > 0 for s in in_shape):
        raise ValueError(f"x must be (b, *in_shape) with every in_shape size > 0, got {in_shape}")
    dims = out_shape + in_shape
    r = len(dims)
    check_tensor("means", means, (2, 3))
    check_tensor("sigmas", sigmas, (1, 2))
    check_tensor("values", values, (1, 2))
    check_same_dtype(x=x, means=means, sigmas=sigmas, values=values)
    check_same_device(x=x, means=means, sigmas=sigmas, values=values)
    k = means.shape[-2]
    if k < 1:
        raise ValueError(f"means must hold k >= 1 index tuples, got shape {tuple(means.shape)}")
    if means.dim() == 2:
        check_shape("means", means, (k, r), f"(k, r) with r = len(out_shape) + x.dim() - 1 = {r}")
        check_shape("sigmas", sigmas, (k,), "(k,)")
        check_shape("values", values, (k,), "(k,)")
    else:
        b = x.shape[0]
        meaning = f"(b, k, r) with b = x.shape[0] and r = len(out_shape) + x.dim() - 1 = {r}"
        check_shape("means", means, (b, k, r), meaning)
        check_shape("sigmas", sigmas, (b, k), "(b, k)")
        check_shape("values", values, (b, k), "(b, k)")
    check_index_space(dims)
    region = check_region(options["region"], dims)
    check_count("n_local", options["n_local"])
    check_count("n_global", options["n_global"])
    check_optional_count("context_size", options["context_size"], 1)
    check_optional_count("chunk_size", options["chunk_size"], 1)
    if not options["sigma_scale"] > 0:
        raise ValueError(f"sigma_scale must be > 0, got {options['sigma_scale']}")
    if not options["min_sigma"] >= 0:
        raise ValueError(f"min_sigma must be >= 0, got {options['min_sigma']}")
    check_generator(options["generator"])
    check_backend(options["backend"])
    if options["validate"]:
        for name, t in (("means", means), ("sigmas", sigmas), ("values", values)):
            check_finite(name, t)
    return out_shape, region


def sparse_layer(
    x: torch.Tensor,
    means: torch.Tensor,
    sigmas: torch.Tensor,
    values: torch.Tensor,
    out_shape: Sequence[int],
    n_local: int = 2,
    n_global: int = 2,
    region: Sequence[int] | None = None,
    sigma_scale: float = 0.1,
    min_sigma: float = 0.0,
    context_size: int | None = None,
    chunk_size: int | None = None,
    generator: torch.Generator | int | torch.Tensor | None = None,
    backend: str = "auto",
    training: bool = True,
    deterministic: bool | None = None,
    validate: bool = False,
) -> torch.Tensor:
    """Apply a sparse W, given by continuous index tuples, to ``x``.

    W has shape ``out_shape + in_shape`` (rank ``r``) with ``in_shape = x.shape[1:]``. A
    training call issues two autograd ops (``hyperkern::sparse_weight`` and
    ``hyperkern::contract``) and reads nothing back to the host.

    Args:
        x: ``(b, *in_shape)``. NaN or inf in ``x`` propagate to the outputs they touch.
        means: raw means, ``(k, r)`` for one W shared by the batch or ``(b, k, r)`` per instance.
        sigmas: raw widths, ``(k,)`` or ``(b, k)``.
        values: ``(k,)`` or ``(b, k)``.
        out_shape: shape of the output per instance.
        n_local, n_global: local and global samples per mean (plus ``2**r`` corners).
        region: ``(r,)`` local sampling box; default ``max(2, ceil(log2 dim))`` per column.
        sigma_scale, min_sigma: see docs/algorithm.md §1.
        context_size: means per duplicate/normalisation context (default: all ``k``).
        chunk_size: means per block of the proportions pass (memory bound; same result, §6).
        generator: int seed, ``torch.Generator``, ``()`` int64 seed tensor or ``None`` (torch's
            global RNG); see :mod:`hyperkern.seeds`. Same seed, same samples on either backend.
        backend: ``"auto"`` (Triton on CUDA tensors), ``"torch"`` or ``"triton"``.
        training: ``False`` skips sampling: each mean is rounded to its nearest tuple and
            carries its full value (means rounding onto the same tuple add up).
        deterministic: sum each output row in a fixed order (bitwise reproducible) instead of
            atomic adds; default ``True`` for a shared W and ``False`` for one W per instance,
            where it saves a global sort. The CPU path is always deterministic.
        validate: also check that the parameters are finite (reads a value back to the host,
            so it is off by default; turn it on while debugging).

    Returns:
        ``(b, *out_shape)``.

    Raises:
        TypeError / ValueError naming the offending argument for bad shapes, dtypes, devices,
        ``k < 1``, regions larger than W, an index space beyond int64, and (``validate=True``)
        non-finite parameters.
    """
    out_shape, region = _check_layer_args(
        x, means, sigmas, values, out_shape,
        n_local=n_local, n_global=n_global, region=region, sigma_scale=sigma_scale,
        min_sigma=min_sigma, context_size=context_size, chunk_size=chunk_size,
        generator=generator, backend=backend, validate=validate,
    )  # fmt: skip
    in_shape = tuple(x.shape[1:])
    dims = out_shape + in_shape
    triton = resolve(backend, x.device)
    shared = means.dim() == 2
    if shared:
        means, sigmas, values = means.unsqueeze(0), sigmas.unsqueeze(0), values.unsqueeze(0)
    if training:
        cs = context_count(means.shape[1], context_size)[1]
        rows, cols, vprime, *_ = library.sparse_weight(
            means, sigmas, values, seed_tensor(generator, x.device), list(dims),
            len(out_shape), n_local, n_global, list(region or default_region(dims)),
            float(sigma_scale), float(min_sigma), cs, min(chunk_size or cs, cs),
            resolve_key_kind(dims) == "cantor", triton,
        )  # fmt: skip
    else:
        points = reference.round_means(reference.transform_means(means, dims), dims)
        rows, cols = reference.flatten_tuples(points.flatten(1, 2), out_shape, in_shape)
        vprime = values
    b = x.shape[0]
    y = library.contract(
        rows, cols, vprime, x.reshape(b, -1, 1), math.prod(out_shape),
        shared if deterministic is None else bool(deterministic), triton,
    )  # fmt: skip
    return y.reshape(b, *out_shape)
