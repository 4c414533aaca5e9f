"""The sparse layer's options as one frozen, validated value (docs/algorithm.md §7).

Modules build one :class:`SparseOptions` at construction; :func:`hyperkern.sparse_layer` builds
one per call. Every check of a user argument that does not depend on tensors lives here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from hyperkern.backend import check_backend
from hyperkern.reference.params import MEANS_TRANSFORMS

EVAL_MODES = ("round", "expected", "sample")


MAX_SAMPLES = 2**16  # per mean (n_local, n_global) and eval draws: beyond is a typo, not a plan


def _check_int(
    name: str, value: object, minimum: int, optional: bool = False, maximum: int | None = None
) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        prefix = "None or " if optional else ""
        raise ValueError(f"{name} must be {prefix}an int >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {value!r}")


def _check_real(name: str, value: object, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not math.isfinite(value) or (value <= 0 if positive else value < 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value!r}")
    return float(value)


def check_sizes(name: str, sizes: object, free: bool = False) -> tuple[int, ...]:
    """A non-empty tuple of positive ints (an int is a 1-tuple); bools are not ints. With
    ``free``, ``None`` entries (a size given by each call's input) are allowed too."""
    if isinstance(sizes, int) and not isinstance(sizes, bool):
        sizes = (sizes,)
    if not isinstance(sizes, Sequence):
        raise TypeError(f"{name} must be a sequence of ints, got {sizes!r}")
    sizes = tuple(sizes)
    if not sizes or not all(
        (free and s is None) or (isinstance(s, int) and not isinstance(s, bool) and s > 0)
        for s in sizes
    ):
        kind = "positive ints or None" if free else "positive ints"
        raise ValueError(f"{name} must be a non-empty sequence of {kind}, got {sizes}")
    return sizes


@dataclasses.dataclass(frozen=True)
class SparseOptions:
    """How a sparse layer samples, normalises, evaluates and which implementation runs it.

    Attributes:
        n_local, n_global: local and global samples per mean (plus the ``2**r`` corners).
        region: ``(r,)`` local box; ``None``: ``max(2, ceil(log2 d))`` per column.
        sigma_scale, min_sigma: the width transform (docs/algorithm.md §1).
        context_size: means per duplicate/normalisation context; ``None``: all ``k``.
        chunk_size: means per block of the proportions pass (memory bound; same result).
        backend: ``"auto"``, ``"torch"`` or ``"triton"``.
        deterministic: fixed-order contraction; ``None``: for a shared W only.
        validate: opt-in checks that read device values (finite parameters).
        eval_mode: what ``training=False`` computes: ``"round"`` (means rounded, full value:
            the paper's evaluation), ``"expected"`` (the average of ``eval_samples`` draws with
            fixed seeds: a deterministic estimate of the trained layer's expected W) or
            ``"sample"`` (one draw with a fixed seed).
        eval_samples: draws averaged by ``eval_mode="expected"``.
        means_transform: raw means -> index space: ``"sigmoid"`` (the paper's), ``"clamp"`` or
            ``"modulo"`` (:func:`hyperkern.reference.transform_means`).
        normalize: ``None``, or normalise every row of the sampled W over its own entries:
            ``"softmax"`` or ``"sum"`` (:func:`hyperkern.ops.normalize_rows`; attention-like
            layers whose rows are distributions).
    """

    n_local: int = 2
    n_global: int = 2
    region: tuple[int, ...] | None = None
    sigma_scale: float = 0.1
    min_sigma: float = 0.0
    context_size: int | None = None
    chunk_size: int | None = None
    backend: str = "auto"
    deterministic: bool | None = None
    validate: bool = False
    eval_mode: str = "round"
    eval_samples: int = 8
    normalize: str | None = None
    means_transform: str = "sigmoid"

    def __post_init__(self) -> None:
        _check_int("n_local", self.n_local, 0, maximum=MAX_SAMPLES)
        _check_int("n_global", self.n_global, 0, maximum=MAX_SAMPLES)
        if self.region is not None:
            object.__setattr__(self, "region", check_sizes("region", self.region))
        object.__setattr__(self, "sigma_scale", _check_real("sigma_scale", self.sigma_scale, True))
        object.__setattr__(self, "min_sigma", _check_real("min_sigma", self.min_sigma, False))
        _check_int("context_size", self.context_size, 1, optional=True)
        _check_int("chunk_size", self.chunk_size, 1, optional=True)
        check_backend(self.backend)
        if self.deterministic is not None and not isinstance(self.deterministic, bool):
            raise TypeError(f"deterministic must be None or a bool, got {self.deterministic!r}")
        if not isinstance(self.validate, bool):
            raise TypeError(f"validate must be a bool, got {self.validate!r}")
        if self.eval_mode not in EVAL_MODES:
            raise ValueError(f"eval_mode must be one of {EVAL_MODES}, got {self.eval_mode!r}")
        _check_int("eval_samples", self.eval_samples, 1, maximum=MAX_SAMPLES)
        if self.means_transform not in MEANS_TRANSFORMS:
            raise ValueError(
                f"means_transform must be one of {MEANS_TRANSFORMS}, got {self.means_transform!r}"
            )
        if self.normalize not in (None, "softmax", "sum"):
            raise ValueError(f"normalize must be None, 'softmax' or 'sum', got {self.normalize!r}")

    def check_region(self, dims: tuple[int, ...]) -> tuple[int, ...] | None:
        """The region, checked against W's ``dims``."""
        if self.region is None:
            return None
        if len(self.region) != len(dims):
            raise ValueError(
                f"region must have one size per dimension of W ({len(dims)}), got {self.region}"
            )
        for d, (size, dim) in enumerate(zip(self.region, dims, strict=True)):
            if dim is not None and size > dim:
                raise ValueError(
                    f"region[{d}]={size} is larger than W's dimension {d} of size {dim}"
                )
        return self.region

    def describe(self) -> str:
        """``name=value`` for every option that differs from the default."""
        default = SparseOptions()
        changed = [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        ]
        return ", ".join(changed)
