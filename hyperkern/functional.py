"""The sparse layer as one differentiable function (docs/algorithm.md §1-6)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from hyperkern import library, reference
from hyperkern._shared import context_count, default_region, resolve_key_kind
from hyperkern.backend import resolve
from hyperkern.ops import normalize_rows
from hyperkern.options import SparseOptions, check_sizes
from hyperkern.seeds import check_generator, seed_tensor
from hyperkern.template import check_template, rounded_tuples, templated_weight
from hyperkern.validation import (
    check_finite,
    check_index_space,
    check_same_device,
    check_same_dtype,
    check_shape,
    check_tensor,
)


def _check_tensors(
    x: torch.Tensor,
    means: torch.Tensor,
    sigmas: torch.Tensor,
    values: torch.Tensor,
    out_shape: object,
    options: SparseOptions,
    template: torch.Tensor | None = None,
    learn: Sequence[int] | None = None,
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...] | None]:
    """Validate the tensors against each other; return ``out_shape``, ``dims`` and ``learn``
    (sorted; ``None`` without a template)."""
    check_tensor("x", x, tuple(range(2, 64)))
    out_shape = check_sizes("out_shape", out_shape)
    in_shape = tuple(x.shape[1:])
    if not all(s > 0 for s in in_shape):
        raise ValueError(f"x must be (b, *in_shape) with every in_shape size > 0, got {in_shape}")
    dims = out_shape + in_shape
    check_tensor("means", means, (2, 3))
    check_tensor("sigmas", sigmas, (1, 2))
    check_tensor("values", values, (1, 2))
    check_same_dtype(means=means, sigmas=sigmas, values=values)
    check_same_device(x=x, means=means, sigmas=sigmas, values=values)
    k = means.shape[-2]
    if k < 1:
        raise ValueError(f"means must hold k >= 1 index tuples, got shape {tuple(means.shape)}")
    learn = check_template(template, learn, k, dims, read_values=options.validate)
    r = len(dims) if learn is None else len(learn)
    what = f"r = len(out_shape) + x.dim() - 1 = {r}" if learn is None else f"r = len(learn) = {r}"
    if means.dim() == 2:
        check_shape("means", means, (k, r), f"(k, r) with {what}")
        check_shape("sigmas", sigmas, (k,), "(k,)")
        check_shape("values", values, (k,), "(k,)")
    else:
        b = x.shape[0]
        check_shape("means", means, (b, k, r), f"(b, k, r) with b = x.shape[0] and {what}")
        check_shape("sigmas", sigmas, (b, k), "(b, k)")
        check_shape("values", values, (b, k), "(b, k)")
    check_index_space(dims)
    options.check_region(dims)
    if options.validate:
        for name, t in (("means", means), ("sigmas", sigmas), ("values", values)):
            check_finite(name, t)
    return out_shape, dims, learn


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
    eval_mode: str = "round",
    eval_samples: int = 8,
    normalize: str | None = None,
    template: torch.Tensor | None = None,
    learn: Sequence[int] | None = None,
) -> torch.Tensor:
    """Apply a sparse W, given by continuous index tuples, to ``x``.

    W has shape ``out_shape + in_shape`` (rank ``r``) with ``in_shape = x.shape[1:]``. A
    training call issues two autograd ops (``hyperkern::sparse_weight`` and
    ``hyperkern::contract``) and reads nothing back to the host.

    Args:
        x: ``(b, *in_shape)``, any floating dtype (the layer computes in the promoted dtype of
            ``x`` and the parameters). NaN or inf in ``x`` propagate to the outputs they touch.
        means: raw means, ``(k, r)`` for one W shared by the batch or ``(b, k, r)`` per instance.
        sigmas: raw widths, ``(k,)`` or ``(b, k)``; dtype of ``means``.
        values: ``(k,)`` or ``(b, k)``; dtype of ``means``.
        out_shape: shape of the output per instance.
        n_local, n_global: local and global samples per mean (plus ``2**r`` corners).
        region: ``(r,)`` local sampling box; default ``max(2, ceil(log2 dim))`` per column.
        sigma_scale, min_sigma: see docs/algorithm.md §1.
        context_size: means per duplicate/normalisation context (default: all ``k``).
        chunk_size: means per block of the proportions pass (memory bound; same result, §6).
        generator: int seed, ``torch.Generator``, ``()`` int64 seed tensor or ``None`` (torch's
            global RNG); see :mod:`hyperkern.seeds`. Same seed, same samples on either backend.
        backend: ``"auto"`` (Triton on CUDA tensors), ``"torch"`` or ``"triton"``.
        training: ``False`` evaluates as ``eval_mode`` says instead of sampling.
        deterministic: sum each output row in a fixed order (bitwise reproducible) instead of
            atomic adds; default ``True`` for a shared W and ``False`` for one W per instance,
            where it saves a global sort. The CPU path is always deterministic.
        validate: also check that the parameters are finite (reads a value back to the host,
            so it is off by default; turn it on while debugging).
        eval_mode, eval_samples, normalize: see :class:`hyperkern.options.SparseOptions`.
        template, learn: fixed integer columns ``(k, r)`` int64 and the learned columns; the
            means are then ``(k, len(learn))`` (:mod:`hyperkern.template`, §9).

    Returns:
        ``(b, *out_shape)``.

    Raises:
        TypeError / ValueError naming the offending argument for bad shapes, dtypes, devices,
        ``k < 1``, regions larger than W, an index space beyond int64, and (``validate=True``)
        non-finite parameters.
    """
    options = SparseOptions(
        n_local=n_local, n_global=n_global, region=region, sigma_scale=sigma_scale,
        min_sigma=min_sigma, context_size=context_size, chunk_size=chunk_size, backend=backend,
        deterministic=deterministic, validate=validate, eval_mode=eval_mode,
        eval_samples=eval_samples, normalize=normalize,
    )  # fmt: skip
    return apply(x, means, sigmas, values, out_shape, options, generator, training, template, learn)


def _sampled_weight(
    means, sigmas, values, dims, n_out_dims, options, seed, triton, draws=1, template=None,
    learn=None,
):  # fmt: skip
    """``rows, cols, v'`` ``(B, draws * P)`` of ``draws`` independent W per instance, ``v'``
    divided by ``draws`` (their average)."""
    B = means.shape[0]
    if draws > 1:  # draw d of instance i is instance d * B + i of one call: one seed, new draws
        means, sigmas, values = (
            t.expand(draws, *t.shape).flatten(0, 1) for t in (means, sigmas, values)
        )
    if template is not None:
        tuples, vprime, duplicates = templated_weight(
            means, sigmas, values, seed, template, learn, dims, options, triton
        )
        rows, cols = reference.flatten_tuples(
            tuples.flatten(1, 2), dims[:n_out_dims], dims[n_out_dims:]
        )
    else:
        cs = context_count(means.shape[1], options.context_size)[1]
        rows, cols, vprime, _, duplicates, _ = library.sparse_weight(
            means, sigmas, values, seed, list(dims), n_out_dims, options.n_local,
            options.n_global, list(options.region or default_region(dims)), options.sigma_scale,
            options.min_sigma, cs, min(options.chunk_size or cs, cs),
            resolve_key_kind(dims) == "cantor", options.means_transform, triton,
        )  # fmt: skip
    if options.normalize:  # per draw, so that the average's rows are normalised too
        keep = ~duplicates.flatten(1)
        n_rows = math.prod(dims[:n_out_dims])
        vprime = normalize_rows(rows, vprime, n_rows, options.normalize, keep)
    if draws > 1:
        rows, cols, vprime = (
            t.view(draws, B, t.shape[1]).transpose(0, 1).reshape(B, draws * t.shape[1])
            for t in (rows, cols, vprime)
        )
        vprime = vprime / draws
    return rows, cols, vprime


def apply(
    x: torch.Tensor,
    means: torch.Tensor,
    sigmas: torch.Tensor,
    values: torch.Tensor,
    out_shape: Sequence[int],
    options: SparseOptions,
    generator: torch.Generator | int | torch.Tensor | None = None,
    training: bool = True,
    template: torch.Tensor | None = None,
    learn: Sequence[int] | None = None,
) -> torch.Tensor:
    """:func:`sparse_layer` with its options as one validated :class:`SparseOptions`."""
    out_shape, dims, learn = _check_tensors(
        x, means, sigmas, values, out_shape, options, template, learn
    )
    check_generator(generator)
    triton = resolve(options.backend, x.device)
    shared = means.dim() == 2
    if shared:
        means, sigmas, values = means.unsqueeze(0), sigmas.unsqueeze(0), values.unsqueeze(0)
    if training or options.eval_mode != "round":
        seed = seed_tensor(generator if training else 0, x.device)
        draws = 1 if training or options.eval_mode == "sample" else options.eval_samples
        rows, cols, vprime = _sampled_weight(
            means, sigmas, values, dims, len(out_shape), options, seed, triton, draws, template,
            learn,
        )  # fmt: skip
    else:
        if template is None:
            mu = reference.transform_means(means, dims, options.means_transform)
            points = reference.round_means(mu, dims)
        else:
            points = rounded_tuples(means, template, learn, dims, options.means_transform)
        rows, cols = reference.flatten_tuples(points.flatten(1, 2), out_shape, x.shape[1:])
        vprime = values
        if options.normalize:
            vprime = normalize_rows(rows, vprime, math.prod(out_shape), options.normalize)
    b = x.shape[0]
    dtype = x.dtype if x.dtype == vprime.dtype else torch.promote_types(x.dtype, vprime.dtype)
    y = library.contract(
        rows,
        cols,
        vprime.to(dtype),
        x.reshape(b, math.prod(x.shape[1:]), 1).to(dtype),
        math.prod(out_shape),
        shared if options.deterministic is None else options.deterministic,
        triton,
    )
    return y.reshape(b, *out_shape)
