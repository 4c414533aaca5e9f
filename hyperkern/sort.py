"""Differentiable quicksort from sparse half-permutations (docs/algorithm.md §8; paper §3.3,
A.2).

One quicksort step of order ``d`` (``d = 0 .. log2(n) - 1``) splits every bucket of
``c = n / 2**d`` consecutive positions into a lower and an upper half, keeping the order within
each half. A binary vector ``o`` (``(n,)``, ``c / 2`` ones per bucket) picks the upper half; the
permutation matrix ``P(o)`` has one nonzero per column, at row ``r(o)[i]`` (paper Algorithm 2).

The soft version samples several valid binary vectors per instance, weights each by its
probability under the soft bucket assignment ``o' = sigmoid((key - median of its bucket) * C)``,
masks repeated vectors (so that nothing is counted twice) and normalises every column of the
resulting sparse matrix to sum to 1. ``log2(n)`` such steps compose the sort; the keys travel
through the same soft matrices as the values, so each step takes the medians of the keys it
actually sees.

Conventions: ``o = 0`` sends an element to the lower (first) half of its bucket, so the sort is
ascending. Every computation is batched over instances; only the ``log2(n)`` steps loop.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from hyperkern import ops
from hyperkern.reference.keys import duplicate_mask

__all__ = [
    "HalfPermutation",
    "SortResult",
    "bucket_medians",
    "soft_assignment",
    "hard_assignment",
    "sample_half_permutations",
    "half_permutation_rows",
    "repeated_vectors",
    "half_permutation",
    "sparse_sort",
    "unsort_targets",
]


class HalfPermutation(NamedTuple):
    """A soft half-permutation of order ``depth`` as a sparse matrix, for ``b`` instances.

    Sample ``s`` contributes the entry ``(rows[:, s, i], i)`` with value ``weights[:, s, i]`` for
    every column ``i``; entries of the same position add up. Every column sums to 1.

    Fields:
        rows: ``(b, s, n)`` int64 row index of column ``i`` under sample ``s``.
        weights: ``(b, s, n)`` float, the normalised proportion of each entry (0 for repeated
            binary vectors).
        choices: ``(b, s, n)`` bool, the sampled binary vectors (True = upper half).
        soft: ``(b, n)`` float, the soft bucket assignment ``o'``.
        depth: the order ``d`` (buckets of ``n / 2**d`` positions).
    """

    rows: torch.Tensor
    weights: torch.Tensor
    choices: torch.Tensor
    soft: torch.Tensor
    depth: int

    def apply(self, values: torch.Tensor, backend: str = "auto") -> torch.Tensor:
        """``P @ values``: ``(b, n, *f)`` -> ``(b, n, *f)``."""
        return _contract(self.rows, self.weights, values, transpose=False, backend=backend)

    def apply_transpose(self, values: torch.Tensor, backend: str = "auto") -> torch.Tensor:
        """``P^T @ values``: ``(b, n, *f)`` -> ``(b, n, *f)``."""
        return _contract(self.rows, self.weights, values, transpose=True, backend=backend)

    def dense(self) -> torch.Tensor:
        """The matrix as a dense ``(b, n, n)`` tensor (rows = output positions)."""
        return _dense_matrix(self.rows, self.weights)


class SortResult(NamedTuple):
    """Output of :func:`sparse_sort`.

    Fields:
        values: ``(b, n, *f)`` the soft-sorted values.
        keys: ``(b, n)`` the keys after the same soft permutations.
        steps: the ``log2(n)`` :class:`HalfPermutation` s, first step first (empty unless
            ``intermediate=True``).
        intermediates: ``x_0 .. x_L`` (``L = log2(n)``), each ``(b, n, *f)``: the input and the
            values after each step (empty unless ``intermediate=True``).
    """

    values: torch.Tensor
    keys: torch.Tensor
    steps: list[HalfPermutation]
    intermediates: list[torch.Tensor]


# ----------------------------------------------------------------------------------------------
# validation


def _check_keys(keys: torch.Tensor, name: str = "keys") -> tuple[int, int]:
    if not isinstance(keys, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(keys).__name__}")
    if not keys.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (b, n), got dtype {keys.dtype}")
    if keys.dim() != 2:
        raise ValueError(f"{name} must have shape (b, n), got {tuple(keys.shape)}")
    b, n = keys.shape
    if n < 1 or n & (n - 1):
        raise ValueError(f"{name}: n = {n} (shape {tuple(keys.shape)}) must be a power of two")
    return b, n


def _check_depth(depth: int, n: int) -> None:
    if not isinstance(depth, int) or isinstance(depth, bool):
        raise TypeError(f"depth must be an int, got {type(depth).__name__}")
    if not 0 <= depth < max(1, int(math.log2(n))) or n < 2:
        raise ValueError(f"depth must be in [0, log2(n)) = [0, {int(math.log2(n))}) for n = {n}")


def _check_values(values: torch.Tensor, b: int, n: int) -> None:
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"values must be a torch.Tensor, got {type(values).__name__}")
    if not values.is_floating_point():
        raise TypeError(f"values must be floating point (b, n, ...), got dtype {values.dtype}")
    if values.dim() < 2 or values.shape[0] != b or values.shape[1] != n:
        raise ValueError(
            f"values must have shape (b, n, ...) = ({b}, {n}, ...), got {tuple(values.shape)}"
        )


def _check_positive_int(value: int, name: str, minimum: int = 0) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _make_generator(
    generator: torch.Generator | int | None, device: torch.device
) -> torch.Generator | None:
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, int) and not isinstance(generator, bool):
        gen = torch.Generator(device=device)
        gen.manual_seed(generator)
        return gen
    raise TypeError(f"generator must be a torch.Generator, an int seed or None, got {generator!r}")


# ----------------------------------------------------------------------------------------------
# building blocks


def bucket_medians(keys: torch.Tensor, depth: int) -> torch.Tensor:
    """Median of each element's bucket, broadcast back to the elements.

    Buckets are ``2**depth`` runs of ``c = n / 2**depth`` consecutive positions; the median of
    an even-sized bucket is the mean of its two middle keys (differentiable through ``sort``).

    Args:
        keys: ``(b, n)`` float.
        depth: bucket order, ``0 <= depth < log2(n)``.
    Returns:
        ``(b, n)`` float.
    """
    b, n = keys.shape
    c = n >> depth
    ordered = keys.reshape(b, 1 << depth, c).sort(dim=-1).values
    median = ordered[..., c // 2 - 1 : c // 2 + 1].mean(dim=-1, keepdim=True)
    return median.expand(b, 1 << depth, c).reshape(b, n)


def soft_assignment(keys: torch.Tensor, depth: int, certainty: float = 10.0) -> torch.Tensor:
    """``o' = sigmoid((keys - median of the bucket) * certainty)``: ``(b, n)`` -> ``(b, n)``."""
    return torch.sigmoid(_logits(keys, depth, certainty))


def _logits(keys: torch.Tensor, depth: int, certainty: float) -> torch.Tensor:
    return (keys - bucket_medians(keys, depth)) * certainty


def hard_assignment(keys: torch.Tensor, depth: int) -> torch.Tensor:
    """The binary vector of the exact quicksort step: the upper half of each bucket by rank.

    Equals ``round(o')`` whenever the keys of a bucket are distinct (and ``o'`` does not round
    to 0.5); ties are broken by position (the later element goes up), so the result is always a
    valid half-permutation.

    Args:
        keys: ``(b, n)`` float.
    Returns:
        ``(b, n)`` bool.
    """
    b, n = keys.shape
    c = n >> depth
    grouped = keys.detach().reshape(b, 1 << depth, c)
    order = grouped.argsort(dim=-1, stable=True)
    ranks = order.argsort(dim=-1)
    return (ranks >= c // 2).reshape(b, n)


def sample_half_permutations(
    keys: torch.Tensor,
    depth: int,
    n_samples: int,
    generator: torch.Generator | int | None = None,
) -> torch.Tensor:
    """Binary vectors of valid order-``depth`` half-permutations.

    Sample 0 is the exact step (:func:`hard_assignment`, i.e. ``round(o')``); samples
    ``1 .. n_samples`` are uniformly random: each bucket's ``c/2`` zeros and ``c/2`` ones in a
    random order. No gradient.

    Args:
        keys: ``(b, n)`` float.
        n_samples: number of random vectors (>= 0).
        generator: ``torch.Generator`` on ``keys.device``, an int seed, or ``None`` (global RNG).
    Returns:
        ``(b, 1 + n_samples, n)`` bool.
    """
    b, n = keys.shape
    c = n >> depth
    gen = _make_generator(generator, keys.device)
    noise = torch.rand(b, n_samples, 1 << depth, c, generator=gen, device=keys.device)
    ranks = noise.argsort(dim=-1).argsort(dim=-1)
    random_choices = (ranks >= c // 2).reshape(b, n_samples, n)
    return torch.cat([hard_assignment(keys, depth).unsqueeze(1), random_choices], dim=1)


def half_permutation_rows(choices: torch.Tensor, depth: int) -> torch.Tensor:
    """Row index of every column under each binary vector (paper Algorithm 2).

    Within a bucket starting at ``l`` with half size ``h``, an element with ``o = 0`` goes to
    ``l + cumsum(1 - o) - 1`` and one with ``o = 1`` to ``l + h + cumsum(o) - 1`` (cumulative
    sums restart in every bucket), so the relative order within each half is kept.

    Args:
        choices: ``(..., n)`` bool or 0/1 integers, valid half-permutations.
    Returns:
        ``(..., n)`` int64.
    """
    *lead, n = choices.shape
    c = n >> depth
    ones = choices.to(torch.int64).reshape(*lead, 1 << depth, c)
    up = ones.cumsum(dim=-1) - 1
    down = (1 - ones).cumsum(dim=-1) - 1
    starts = torch.arange(0, n, c, device=choices.device).unsqueeze(-1)
    rows = starts + torch.where(ones.bool(), c // 2 + up, down)
    return rows.reshape(*lead, n)


def half_permutation(
    keys: torch.Tensor,
    depth: int,
    n_samples: int = 0,
    certainty: float = 10.0,
    generator: torch.Generator | int | None = None,
) -> HalfPermutation:
    """The soft half-permutation of order ``depth`` defined by ``keys``.

    Each binary vector ``o`` (see :func:`sample_half_permutations`) gets the proportion
    ``p(o) = prod_i (o'_i if o_i else 1 - o'_i)``, computed in log space. Repeated vectors get
    proportion 0 (:func:`hyperkern.reference.keys.duplicate_mask`), then the proportions are
    normalised so that every column sums to 1. With ``n_samples=0`` the result is the exact
    (hard) step with weight 1 and no gradient to the keys.

    Args:
        keys: ``(b, n)`` float, ``n`` a power of two >= 2.
        depth: ``0 <= depth < log2(n)``.
        n_samples: random binary vectors besides the exact one.
        certainty: ``C`` in ``o' = sigmoid((key - median) * C)``.
        generator: ``torch.Generator``, int seed or ``None``.
    Returns:
        :class:`HalfPermutation` with ``s = 1 + n_samples`` samples.
    """
    b, n = _check_keys(keys)
    _check_depth(depth, n)
    _check_positive_int(n_samples, "n_samples")
    if not certainty > 0:
        raise ValueError(f"certainty must be > 0, got {certainty}")
    choices = sample_half_permutations(keys, depth, n_samples, generator)  # (b, s, n)
    logits = _logits(keys, depth, certainty)
    log_up, log_down = F.logsigmoid(logits), F.logsigmoid(-logits)
    log_p = torch.where(choices, log_up.unsqueeze(1), log_down.unsqueeze(1)).sum(dim=-1)
    s = choices.shape[1]
    if s > 1 and b > 0:
        log_p = log_p.masked_fill(repeated_vectors(choices), float("-inf"))
    # One entry per column per sample, so a column's sum is the sum over samples.
    weights = torch.softmax(log_p, dim=1).unsqueeze(-1).expand(b, s, n)
    rows = half_permutation_rows(choices, depth)
    return HalfPermutation(rows, weights, choices, torch.sigmoid(logits), depth)


_MAX_KEY_BITS = 62


def repeated_vectors(choices: torch.Tensor) -> torch.Tensor:
    """Mark every later occurrence of a binary vector among the samples of an instance.

    Up to 62 positions the vectors go to the shared key machinery
    (:func:`hyperkern.reference.keys.duplicate_mask`, tuples of rank ``n`` over ``dims = 2``);
    longer vectors are packed into 62-bit words and compared lexicographically, which marks
    exactly the same samples.

    Args:
        choices: ``(b, s, n)`` bool.
    Returns:
        ``(b, s)`` bool, True where an earlier sample holds the same vector.
    """
    b, s, n = choices.shape
    if n <= _MAX_KEY_BITS:
        return duplicate_mask(choices.to(torch.int64).unsqueeze(2), [2] * n).squeeze(2)
    return _repeated_vectors_packed(choices)


def _repeated_vectors_packed(choices: torch.Tensor) -> torch.Tensor:
    b, s, n = choices.shape
    words = -(-n // _MAX_KEY_BITS)
    padded = F.pad(choices.to(torch.int64), (0, words * _MAX_KEY_BITS - n))
    weights = 2 ** torch.arange(_MAX_KEY_BITS, device=choices.device, dtype=torch.int64)
    codes = (padded.reshape(b, s, words, _MAX_KEY_BITS) * weights).sum(-1)  # (b, s, words)
    order = torch.arange(s, device=choices.device).expand(b, s)
    for word in reversed(range(words)):  # least significant word first: a stable radix sort
        column = codes[..., word].gather(1, order)
        order = order.gather(1, column.argsort(dim=1, stable=True))
    ordered = codes.gather(1, order.unsqueeze(-1).expand(b, s, words))
    repeat = torch.zeros(b, s, dtype=torch.bool, device=choices.device)
    repeat[:, 1:] = (ordered[:, 1:] == ordered[:, :-1]).all(dim=-1)
    return torch.zeros_like(repeat).scatter(1, order, repeat)


# ----------------------------------------------------------------------------------------------
# contraction


def _dense_matrix(rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Dense ``(b, n, n)`` from ``rows (b, s, n)``: entry ``(rows[i, s, j], j)`` gets
    ``weights[i, s, j]`` (repeats add up)."""
    b, s, n = rows.shape
    cols = torch.arange(n, device=rows.device).expand(b, s, n).reshape(b, s * n)
    return ops.densify(rows.reshape(b, s * n), cols, weights.reshape(b, s * n), n, n)


def _contract(
    rows: torch.Tensor,
    weights: torch.Tensor,
    values: torch.Tensor,
    transpose: bool,
    backend: str,
) -> torch.Tensor:
    """``P @ values`` (or ``P^T @ values``) for the sparse matrix ``(rows, weights)``.

    ``"sparse"`` runs the layer's contraction op (``hyperkern::contract``, Triton on CUDA) on
    the ``s * n`` nonzeros per instance; ``"dense"``
    builds the ``(b, n, n)`` matrix and uses ``bmm``, cheaper once ``s > n``. ``"auto"`` picks
    the one with fewer multiply-adds.
    """
    b, s, n = rows.shape
    _check_values(values, b, n)
    if backend == "auto":
        backend = "dense" if s >= n else "sparse"
    if backend == "dense":
        matrix = _dense_matrix(rows, weights).to(values.dtype)
        if transpose:
            matrix = matrix.transpose(1, 2)
        flat = values.reshape(b, n, math.prod(values.shape[2:]))
        return torch.bmm(matrix, flat).reshape(values.shape)
    if backend != "sparse":
        raise ValueError(f"backend must be 'auto', 'sparse' or 'dense', got {backend!r}")
    # entry (rows[i, s, j], j) of P holds weights[i, s, j]: the layer's contraction op
    cols = torch.arange(n, device=rows.device).expand(b, s, n).reshape(b, s * n)
    out_rows, weights = rows.reshape(b, s * n), weights.reshape(b, s * n).to(values.dtype)
    src, dst = (out_rows, cols) if transpose else (cols, out_rows)
    flat = values.reshape(b, n, math.prod(values.shape[2:]))
    return ops.contract(dst, src, weights, flat, n, deterministic=True).reshape(values.shape)


# ----------------------------------------------------------------------------------------------
# the sort


def sparse_sort(
    keys: torch.Tensor,
    values: torch.Tensor,
    n_samples: int = 0,
    generator: torch.Generator | int | None = None,
    certainty: float = 10.0,
    intermediate: bool = False,
    backend: str = "auto",
) -> SortResult:
    """Soft-sort ``values`` by ``keys`` (ascending) with ``log2(n)`` sparse half-permutations.

    Step ``d`` builds :func:`half_permutation` from the current keys, then applies it to the
    values and the keys alike. Gradients reach ``keys`` through the proportions (and through
    ``values`` linearly); with ``n_samples=0`` every step is the exact quicksort step.

    Args:
        keys: ``(b, n)`` float, ``n`` a power of two.
        values: ``(b, n, *f)`` float, the items to sort (``f`` may be empty dims of size 1+).
        n_samples: random half-permutations per step besides the exact one (paper: ``a = n``).
        generator: ``torch.Generator`` on ``keys.device``, an int seed, or ``None``.
        certainty: ``C`` of the soft assignment (paper: 10).
        intermediate: also return the steps and the values after every step (for
            :func:`unsort_targets` and the intermediate loss).
        backend: contraction, ``"auto"``, ``"sparse"`` or ``"dense"``.
    Returns:
        :class:`SortResult`.
    """
    b, n = _check_keys(keys)
    _check_values(values, b, n)
    _check_positive_int(n_samples, "n_samples")
    gen = _make_generator(generator, keys.device)
    steps: list[HalfPermutation] = []
    intermediates = [values] if intermediate else []
    for depth in range(int(math.log2(n))):
        step = half_permutation(keys, depth, n_samples, certainty, gen)
        values = step.apply(values, backend)
        keys = step.apply(keys.unsqueeze(-1), backend).squeeze(-1)
        if intermediate:
            steps.append(step)
            intermediates.append(values)
    return SortResult(values, keys, steps, intermediates)


def unsort_targets(
    target: torch.Tensor, steps: list[HalfPermutation], backend: str = "auto"
) -> list[torch.Tensor]:
    """Feed the sorted target back through the transposed steps: ``t_{i-1} = P_i^T t_i``.

    Args:
        target: ``(b, n, *f)``, the correctly sorted values ``t_L``.
        steps: the ``L`` steps of :func:`sparse_sort` (``intermediate=True``), first step first.
    Returns:
        ``[t_0, .., t_L]`` (``t_L`` is ``target``), aligned with ``SortResult.intermediates``.
    """
    targets = [target]
    for step in reversed(steps):
        targets.insert(0, step.apply_transpose(targets[0], backend))
    return targets
