"""Templated index tuples (docs/algorithm.md §9): some columns of every tuple fixed, the others
learned, as the original code's ``temp_indices`` / ``learn_cols``.

A template is a ``(k, r)`` integer tensor over W's dimensions and a tuple ``learn`` of the
columns that are learned. The means then have ``len(learn)`` columns; sampling, the width
transform and the proportions act on those columns only, and each sampled tuple takes its other
columns from the template row of its mean. Duplicates are found on the full tuples, per context
(so a context should hold means that share their fixed columns, e.g. one output row).

Example: every output row of a ``(n_out, n_in)`` W gets ``m`` learned input positions::

    template = torch.arange(n_out).repeat_interleave(m)[:, None] * torch.tensor([[1, 0]])
    layer = SparseLayer((n_in,), (n_out,), k=n_out * m, template=template, learn=(1,),
                        context_size=m)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from hyperkern import library, reference
from hyperkern._shared import context_count, default_region, resolve_key_kind


def check_template(
    template: object, learn: object, k: int, dims: Sequence[int], read_values: bool = True
) -> tuple[int, ...] | None:
    """Validate a template against ``k`` means and W's ``dims``; return ``learn`` as a sorted
    tuple (``None`` without a template). ``read_values`` also checks the fixed columns' bounds,
    a host read: modules do it once when built, functional calls only with ``validate=True``."""
    if template is None:
        if learn is not None:
            raise ValueError("learn (the learned columns) needs a template")
        return None
    if not isinstance(template, Tensor) or template.dtype != torch.int64:
        got = template.dtype if isinstance(template, Tensor) else type(template).__name__
        raise TypeError(f"template must be an int64 tensor (k, r), got {got}")
    r = len(dims)
    if tuple(template.shape) != (k, r):
        raise ValueError(f"template must have shape (k, r) = {(k, r)}, got {tuple(template.shape)}")
    if learn is None or isinstance(learn, (int, str)) or not isinstance(learn, Sequence):
        raise TypeError(f"learn must be a sequence of column indices, got {learn!r}")
    columns = tuple(sorted(set(learn)))
    if not columns or len(columns) != len(learn) or not all(0 <= c < r for c in columns):
        raise ValueError(f"learn must be distinct columns in [0, {r}), got {tuple(learn)}")
    for c in range(r if read_values else 0):
        upper = dims[c] if dims[c] is not None else torch.iinfo(torch.int64).max
        if c not in columns and bool(((template[:, c] < 0) | (template[:, c] >= upper)).any()):
            raise ValueError(f"template column {c} must lie in [0, {dims[c]})")
    return columns


def fill(template: Tensor, learned: Tensor, learn: Sequence[int]) -> Tensor:
    """``(B, k, S, len(learn))`` learned columns + the ``(k, r)`` template -> ``(B, k, S, r)``
    tuples (no tensor built from a Python list: columns are stacked)."""
    B, k, S, _ = learned.shape
    fixed = template.to(learned.device)[None, :, None, :].expand(B, k, S, -1)
    columns = [
        learned[..., learn.index(c)] if c in learn else fixed[..., c]
        for c in range(template.shape[1])
    ]
    return torch.stack(columns, dim=-1)


def templated_weight(
    means: Tensor,
    sigmas: Tensor,
    values: Tensor,
    seed: Tensor,
    template: Tensor,
    learn: tuple[int, ...],
    dims: Sequence[int],
    options,
    triton: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Sampled W of templated means: tuples ``(B, k, S, r)``, ``v'`` and ``duplicates``
    ``(B, k S)``.

    Shapes: ``means (B, k, len(learn))``, ``sigmas``/``values (B, k)``; the library's
    ``sample``, ``duplicate_mask`` and ``proportions`` ops, on either backend.
    """
    learned_dims = [dims[c] for c in learn]
    mu = reference.transform_means(means, learned_dims, options.means_transform)
    sigma = reference.transform_sigmas(sigmas, learned_dims, options.sigma_scale, options.min_sigma)
    region = [options.region[c] for c in learn] if options.region else None
    points, _, _, _ = library.sample(
        mu, seed, learned_dims, 0, options.n_local, options.n_global,
        region or list(default_region(learned_dims)),
        resolve_key_kind(learned_dims) == "cantor", triton,
    )  # fmt: skip
    tuples = fill(template, points, learn)
    keys = reference.tuple_keys(tuples, list(dims))
    cs = context_count(means.shape[1], options.context_size)[1]
    duplicates = library.duplicate_mask(keys, cs, triton)
    chunk = min(options.chunk_size or cs, cs)
    vprime, _ = library.proportions(points, mu, sigma, values, duplicates, cs, chunk, triton)
    return tuples, vprime.flatten(1), duplicates.flatten(1)


def rounded_tuples(
    means: Tensor, template: Tensor, learn: tuple[int, ...], dims, transform: str = "sigmoid"
) -> Tensor:
    """Eval-mode tuples ``(B, k, 1, r)``: the learned columns rounded, the rest the template."""
    learned_dims = [dims[c] for c in learn]
    mu = reference.transform_means(means, learned_dims, transform)
    rounded = reference.round_means(mu, learned_dims)
    return fill(template, rounded, learn)
