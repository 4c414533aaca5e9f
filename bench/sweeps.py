"""Benchmark sizes: one list of cases per op group and scale (``--hk-scale``).

Each case belongs to one *sweep*: it varies one quantity (``x``) from a base configuration.
``tiny`` keeps every case trivial (CI smoke), ``cpu`` fits the whole suite into a few minutes on
two cores, ``gpu`` sweeps to the sizes the targets in bench/RESULTS.md are stated at.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

SCALES = ("tiny", "cpu", "gpu")


@dataclass(frozen=True)
class Case:
    """One benchmark configuration.

    ``k`` means with ``S = 2**r + n_local + n_global`` samples each over an index space ``dims``
    (proportions, duplicate mask), a contraction with ``nnz`` nonzeros per W and ``b`` rows of x
    (one W shared by the batch when ``shared``), or a layer ``(n_out,) x (n_in,)`` with ``k``
    means (layer, chunked).
    """

    sweep: str
    x: int
    b: int = 1
    k: int = 256
    r: int = 2
    n_local: int = 2
    n_global: int = 2
    n_in: int = 1024
    n_out: int = 1024
    nnz: int = 4096
    shared: bool = True
    context_size: int | None = None
    chunk_size: int | None = None

    @property
    def samples(self) -> int:
        """``S``, samples per mean."""
        return 2**self.r + self.n_local + self.n_global

    @property
    def dims(self) -> tuple[int, ...]:
        """Index space of rank ``r`` with about ``2**24`` tuples (layer shape for ``r == 2``)."""
        if self.r == 2:
            return (self.n_out, self.n_in)
        return (2 ** (24 // self.r),) * self.r

    @property
    def points(self) -> int:
        """Sampled tuples per instance, ``k * S``."""
        return self.k * self.samples

    @property
    def id(self) -> str:
        return f"{self.sweep}={self.x}"

    def info(self) -> dict[str, object]:
        """Sizes for ``benchmark.extra_info``."""
        return {**asdict(self), "S": self.samples, "P": self.points, "dims": list(self.dims)}


def _sweep(name: str, base: Case, values: list[int]) -> list[Case]:
    cases = []
    for v in values:
        if name == "samples":  # v = S at rank 2: split the extra samples between local, global
            extra = v - 2**base.r
            change = {"n_local": extra - extra // 2, "n_global": extra // 2}
        elif name == "n":
            change = {"n_in": v, "n_out": v}
        elif name == "W":  # W = n x n with k = n means: nonzeros grow with W's side
            change = {"n_in": v, "n_out": v, "k": v}
        elif name == "batch":
            change = {"b": v}
        else:
            change = {name: v}
        cases.append(replace(base, sweep=name, x=v, **change))
    return cases


def _pow2(lo: int, hi: int, step: int = 1) -> list[int]:
    return [2**e for e in range(lo, hi + 1, step)]


def _proportions(scale: str) -> list[Case]:
    if scale == "tiny":
        base = Case("k", 0, k=8, n_in=64, n_out=64)
        return _sweep("k", base, [4, 8]) + _sweep("r", base, [2, 3]) + _sweep("batch", base, [2])
    if scale == "cpu":
        base = Case("k", 0, k=256)
        return (
            _sweep("k", base, _pow2(6, 10))
            + _sweep("r", replace(base, k=128), [2, 3, 4, 5, 6])
            + _sweep("samples", base, [8, 16, 40])
            + _sweep("batch", base, [1, 4, 8])
        )
    base = Case("k", 0, k=4096)
    return (
        _sweep("k", base, _pow2(6, 16, 2))
        + _sweep("r", base, [2, 3, 4, 5, 6])
        + _sweep("samples", base, [8, 16, 40, 132])
        + _sweep("batch", base, [1, 4, 16, 64])
    )


def _duplicates(scale: str) -> list[Case]:
    if scale == "tiny":
        base = Case("k", 0, k=8, n_in=64, n_out=64)
        return _sweep("k", base, [4, 8]) + _sweep("r", base, [2, 4])
    if scale == "cpu":
        base = Case("k", 0, k=1024, b=2)
        return _sweep("k", base, _pow2(6, 14, 2)) + _sweep("r", base, [2, 4, 6])
    base = Case("k", 0, k=2**14, b=16)
    return _sweep("k", base, _pow2(6, 20, 2)) + _sweep("r", base, [2, 3, 4, 5, 6])


def _contraction(scale: str, backward: bool) -> list[Case]:
    if scale == "tiny":
        base = Case("nnz", 0, b=3, nnz=50, n_in=17, n_out=13)
        return (
            _sweep("nnz", base, [1, 50])
            + _sweep("batch", replace(base, shared=False), [1, 3])
            + _sweep("n", base, [5])
        )
    if scale == "cpu":
        base = Case("nnz", 0, b=16, nnz=2**16, n_in=1024, n_out=1024)
        per_instance = replace(base, shared=False, nnz=2**13)
        nnz = _pow2(12, 20, 2) if not backward else _pow2(12, 18, 3)
        return (
            _sweep("nnz", base, nnz)
            + _sweep("batch", per_instance, [1, 8, 64] if not backward else [1, 16])
            + _sweep("n", base, _pow2(8, 14, 3))
        )
    base = Case("nnz", 0, b=64, nnz=2**20, n_in=2**14, n_out=2**14)
    per_instance = replace(base, shared=False, nnz=2**17)
    return (
        _sweep("nnz", base, _pow2(14, 26, 2))
        + _sweep("batch", per_instance, [1, 8, 64, 256])
        + _sweep("n", base, _pow2(8, 20, 3))
    )


def _layer(scale: str) -> list[Case]:
    if scale == "tiny":
        base = Case("k", 0, b=2, k=8, n_in=16, n_out=16)
        return _sweep("k", base, [4, 8]) + _sweep("batch", base, [1])
    if scale == "cpu":
        base = Case("k", 0, b=16, k=256, n_in=1024, n_out=1024)
        return _sweep("k", base, _pow2(6, 10)) + _sweep("batch", base, [1, 64])
    base = Case("k", 0, b=64, k=2**12, n_in=2**14, n_out=2**14, context_size=2**10)
    return _sweep("k", base, _pow2(6, 16, 2)) + _sweep("batch", base, [1, 16, 256])


def _chunked(scale: str) -> list[Case]:
    if scale == "tiny":
        return _sweep("W", Case("W", 0, b=2, chunk_size=4), [8, 16])
    if scale == "cpu":
        return _sweep("W", Case("W", 0, b=8, chunk_size=64), _pow2(7, 9))
    return _sweep("W", Case("W", 0, b=16, chunk_size=256), _pow2(8, 14))


_GROUPS = {
    "proportions": _proportions,
    "duplicate_mask": _duplicates,
    "contract_forward": lambda scale: _contraction(scale, backward=False),
    "contract_forward_backward": lambda scale: _contraction(scale, backward=True),
    "layer_train_step": _layer,
    "chunked": _chunked,
}


def cases(group: str, scale: str) -> list[Case]:
    """The cases of op ``group`` at ``scale`` (one of :data:`SCALES`)."""
    if scale not in SCALES:
        raise ValueError(f"--hk-scale must be one of {SCALES}, got {scale!r}")
    if group not in _GROUPS:
        raise ValueError(f"unknown benchmark group {group!r}; known: {sorted(_GROUPS)}")
    return _GROUPS[group](scale)


def rounds(scale: str) -> int:
    """Timed rounds per benchmark (after one untimed memory run)."""
    return {"tiny": 1, "cpu": 3, "gpu": 20}[scale]


def bandwidth_bytes(scale: str) -> int:
    """Buffer size of the bandwidth copy: far beyond the last-level cache."""
    return {"tiny": 2**24, "cpu": 2**28, "gpu": 2**31}[scale]


def total_nonzeros(case: Case) -> int:
    """Nonzeros over all Ws of a contraction case."""
    return case.nnz * (1 if case.shared else case.b)


def dense_elements(case: Case, instances: int | None = None) -> int:
    """Entries of the dense ``(points, means)`` matrices over all contexts (the naive
    algorithm): ``instances`` Ws (default ``case.b``; 1 for one W shared by the batch)."""
    cs = case.k if case.context_size is None else min(case.context_size, case.k)
    n_w = case.b if instances is None else instances
    return n_w * math.ceil(case.k / cs) * cs * case.samples * cs
