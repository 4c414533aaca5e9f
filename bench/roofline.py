"""An honest roofline: every kernel against HBM *and* L2 traffic, each at its measured bandwidth.

Why two terms. The old bound of the contraction counted the bytes of the operands once (values,
indices, ``x``, ``y``: 20 B per nonzero plus the dense sides) against the HBM copy bandwidth.
But every nonzero of a gather-per-nonzero design (hyperkern's segment kernel, ``torch.sparse.mm``,
gather + ``scatter_add``) reads a whole dense row: ``b * c * value_bytes`` bytes, 256 B for one W
shared by ``b = 64`` rows. At 2^24 nonzeros that is 4.3 GB (4 GiB) gathered from L2 for 0.34 GB
of operands; no such design can get near the old bound. Here a kernel is bounded by

    bound_seconds = max(hbm_bytes / hbm_bandwidth, l2_gathered_bytes / l2_bandwidth)

with both bandwidths measured in the same run (:func:`measure_bandwidths`), and the time of the
sort the kernel does (segment keys, duplicate keys) measured apart (:func:`sort_seconds`) and
reported next to the kernel time ("kernel time, of which sort"), never inside the bound.

The model (pure; CPU-testable). Every family returns a :class:`Traffic`, counted with one
:class:`Model` (the byte widths, the two L2 knobs below and the proportions' tiles):

- ``hbm_bytes``: compulsory traffic. Every input read once, every output written once, what an
  ideal kernel that never re-reads DRAM must move. Intermediates a fused design can avoid
  (hyperkern's folded copy of ``x``, its sorted copies of the nonzeros) are not counted.
- ``l2_gathered_bytes``: bytes the design must pull through L2 by indirect (gathered) or
  re-streamed (tiled) reads, first touch included. For gathers: one dense row per nonzero and
  gathered operand. ``sector_bytes`` rounds every gathered row up to whole L2 sectors (pass 32
  to count what a row narrower than a sector moves on an L1 miss); the default 1 counts the
  useful bytes only, which keeps the bound a lower bound.

Per-element accounting (``v`` value bytes, ``i`` index bytes, ``W`` weight matrices: 1 for a
shared W, ``b`` per instance; ``row = (b if shared else 1) * c * v``; ``N = b k S`` tuples):

==================  =========================================================  ==================
family              HBM bytes                                                  L2-gathered bytes
==================  =========================================================  ==================
contraction fwd     ``W nnz (v + 2i) + b n_in c v (x) + b n_out c v (y)``       ``W nnz row``
contraction bwd     ``W nnz (v + 2i) + dy + x (read) + dx (written)``           ``g W nnz row``
                    ``+ W nnz v (dv')``                                         (``g`` gathers)
proportions fwd     ``N (r i + 1) + b k (2r + 1) v + N v (v') + b k v``         tiles, see below
proportions bwd     ``N (v + r i + 1) + b k (2r + 2) v + b k (2r + 1) v``       tiles, see below
duplicate mask      ``N r i + N 8`` (keys) ``+ 2 N 8 + N`` (mark)                ``N`` (mask stores)
sampling            ``b k r v + N r i`` (points) ``+ N 8`` (keys) ``+ 2 N i``    0
layer step          the sum of the above (no credit for fusion)                the sum
==================  =========================================================  ==================

The backward's ``g`` is 1 for the ideal fused design: nonzeros sorted by column, each program owns
one row of ``x`` and ``dx`` and gathers ``dy[row_j]`` once for both ``dx`` and ``dv'_j``.
hyperkern's kernels gather three rows per nonzero (``dy`` in the ``dx`` kernel, ``dy`` and ``x``
in the gather-dot kernel): :data:`HYPERKERN_BACKWARD_ROW_GATHERS`.

The proportions stream tiles: pass 1 streams each context's ``p`` points (``r i + 1`` bytes with
the mask) past every block of ``block_means`` means, pass 2 each context's ``m`` means
(``mu``, ``sigma``, value, lognorm: ``(2r + 2) v``) past every block of ``block_points``
points; the backward is one per-mean pass that also reads ``g`` (``r i + 1 + v`` per point).
They are compute-bound (one ``exp2`` and ``3r`` flops per (point, mean) pair), so their memory
bound is far below their time: read it as a floor, not a target.

Caveats. The L2 term is a bound for designs that gather a row per nonzero; a design that tiles
``x`` into shared memory (many nonzeros per row) can go below it. With ``l2_capacity_bytes``
(the bench passes the device's L2 size) a gathered buffer larger than L2 is read from HBM not
once but as often as uniformly random gathers miss (a fraction ``1 - capacity / buffer`` of the
gathered bytes, when that is more): an estimate, right for the benchmark's random nonzeros.

Measurement (CUDA only; each helper skips the calling test without CUDA):
:func:`measure_hbm_bandwidth` (device-to-device copy of a buffer at least 8x L2, read + write
bytes, median of CUDA-event timings), :func:`measure_l2_bandwidth` (random rows gathered from a
16 MiB buffer, gathered bytes / median time) and :func:`sort_seconds`. Bandwidths are bytes per
second here; reports print decimal GB/s and binary memory sizes (bench/units.py).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from units import GB, MiB

H100_L2_BYTES = 50 * MiB  # fallback when the device does not report its L2 size
SECTOR_BYTES = 32  # an L2 sector on NVIDIA GPUs since Volta
KEY_BYTES = 8  # duplicate-mask keys and torch.sort's order are int64
HYPERKERN_BACKWARD_ROW_GATHERS = 3  # rows per nonzero the current backward kernels gather


# ---- the model ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Traffic:
    """Bytes a kernel must move: compulsory HBM traffic and bytes gathered through L2."""

    hbm_bytes: int
    l2_gathered_bytes: int

    def __add__(self, other: Traffic) -> Traffic:
        return Traffic(
            self.hbm_bytes + other.hbm_bytes, self.l2_gathered_bytes + other.l2_gathered_bytes
        )


def bound_seconds(traffic: Traffic, hbm_bw: float, l2_bw: float) -> float:
    """``max(hbm_bytes / hbm_bw, l2_gathered_bytes / l2_bw)``; bandwidths in bytes per second."""
    if hbm_bw <= 0 or l2_bw <= 0:
        raise ValueError(f"bandwidths must be positive, got hbm {hbm_bw}, l2 {l2_bw}")
    return max(traffic.hbm_bytes / hbm_bw, traffic.l2_gathered_bytes / l2_bw)


def bound_by(traffic: Traffic, hbm_bw: float, l2_bw: float) -> str:
    """Which term sets :func:`bound_seconds`: ``"hbm"`` or ``"l2"`` (``"hbm"`` on a tie)."""
    return "l2" if traffic.l2_gathered_bytes / l2_bw > traffic.hbm_bytes / hbm_bw else "hbm"


def round_up(nbytes: int, sector_bytes: int = 1) -> int:
    """``nbytes`` rounded up to a whole number of ``sector_bytes`` (0 stays 0)."""
    if sector_bytes < 1:
        raise ValueError(f"sector_bytes must be >= 1, got {sector_bytes}")
    return -(-nbytes // sector_bytes) * sector_bytes


@dataclass(frozen=True)
class Model:
    """What every family counts with: the byte widths ``v`` (``value_bytes``) and ``i``
    (``index_bytes``), the L2 knobs ``sector_bytes`` and ``l2_capacity_bytes`` (module
    docstring; ``None``: every gathered buffer fits in L2) and the proportions kernels' tiles
    (``block_points`` points by ``block_means`` means)."""

    value_bytes: int = 4
    index_bytes: int = 8
    sector_bytes: int = 1
    l2_capacity_bytes: int | None = None
    block_points: int = 64
    block_means: int = 32

    @property
    def nonzero_bytes(self) -> int:
        """One nonzero: its value, row and column (``v + 2i``)."""
        return self.value_bytes + 2 * self.index_bytes

    def source_reads(self, source_bytes: int, gathered: int) -> int:
        """HBM reads of a buffer ``gathered`` bytes are gathered from: once, or the expected
        misses of uniformly random gathers when it is larger than L2 (whichever is more)."""
        capacity = self.l2_capacity_bytes
        if capacity is None or source_bytes <= capacity:
            return source_bytes
        return max(source_bytes, math.ceil(gathered * (1 - capacity / source_bytes)))


FP32 = Model()  # the default: float32 values, int64 indices, useful bytes only, L2 unlimited


def _contraction(
    nnz: int, b: int, n_in: int, n_out: int, shared: bool, c: int, model: Model
) -> tuple[int, int, int, int]:
    """``(nonzeros, bytes they gather, x bytes, y bytes)``: every nonzero of the ``W`` matrices
    gathers one dense row (the batch folded into it for a shared W), in whole sectors."""
    nonzeros = (1 if shared else b) * nnz
    row = round_up((b if shared else 1) * c * model.value_bytes, model.sector_bytes)
    dense = b * c * model.value_bytes
    return nonzeros, nonzeros * row, dense * n_in, dense * n_out


def contraction_forward(
    nnz: int, b: int, n_in: int, n_out: int, *, shared: bool = True, c: int = 1, model: Model = FP32
) -> Traffic:
    """``y = W x``: ``nnz`` nonzeros per W, ``x (b, n_in, c)`` -> ``y (b, n_out, c)``.

    HBM: the nonzeros (value, row, col: ``v + 2i`` each, ``W`` matrices), ``x`` read once and
    ``y`` written once. L2: one dense row of ``x`` per nonzero.
    """
    nonzeros, gathered, x_bytes, y_bytes = _contraction(nnz, b, n_in, n_out, shared, c, model)
    hbm = nonzeros * model.nonzero_bytes + model.source_reads(x_bytes, gathered) + y_bytes
    return Traffic(hbm, gathered)


def contraction_backward(
    nnz: int,
    b: int,
    n_in: int,
    n_out: int,
    *,
    shared: bool = True,
    c: int = 1,
    row_gathers: int = 1,
    dx: bool = True,
    model: Model = FP32,
) -> Traffic:
    """``dx = W^T dy`` (if ``dx``) and ``dv'_j = <dy[row_j], x[col_j]>``.

    HBM: the nonzeros read, ``dy`` and ``x`` read once, ``dx`` written, ``dv'`` (``v`` per
    nonzero) written. L2: ``row_gathers`` dense rows per nonzero (1 = the ideal fused design,
    :data:`HYPERKERN_BACKWARD_ROW_GATHERS` = today's kernels).
    """
    nonzeros, gathered, x_bytes, dy_bytes = _contraction(nnz, b, n_in, n_out, shared, c, model)
    gathered *= row_gathers
    hbm = nonzeros * (model.nonzero_bytes + model.value_bytes)  # the nonzeros read, dv' written
    hbm += model.source_reads(dy_bytes, gathered) + (2 if dx else 1) * x_bytes  # x read, dx
    return Traffic(hbm, gathered)


def _per_context(
    b: int, k: int, S: int, context_size: int | None, bytes_of: Callable[[int, int], int]
) -> int:
    """``bytes_of(means, points)`` summed over every context (``context_size`` means and their
    ``points``; the last one ragged) of every one of the ``b`` instances of ``k`` means."""
    cs = k if context_size is None else min(context_size, k)
    if cs <= 0:
        return 0
    full, rest = divmod(k, cs)
    return b * (full * bytes_of(cs, cs * S) + (bytes_of(rest, rest * S) if rest else 0))


def proportions_forward(
    b: int, k: int, S: int, r: int, *, context_size: int | None = None, model: Model = FP32
) -> Traffic:
    """``v' (b, k, S)`` from points ``(b, k, S, r)``, ``mu``, ``sigma (b, k, r)``, ``values``
    and the duplicate mask, in two streaming passes (see the module docstring)."""
    v, point = model.value_bytes, r * model.index_bytes + 1  # a point: coordinates and mask
    n = b * k * S
    hbm = n * point + b * k * (2 * r + 1) * v + n * v + b * k * v  # in; v', lognorm out

    def tiles(means: int, points: int) -> int:
        pass1 = math.ceil(means / model.block_means) * points * point
        pass2 = math.ceil(points / model.block_points) * means * (2 * r + 2) * v
        return pass1 + pass2

    return Traffic(hbm, _per_context(b, k, S, context_size, tiles))


def proportions_backward(
    b: int, k: int, S: int, r: int, *, context_size: int | None = None, model: Model = FP32
) -> Traffic:
    """``dmu, dsigma (b, k, r)``, ``dvalues (b, k)`` from ``g = dL/dv'`` in one per-mean pass."""
    v, point = model.value_bytes, r * model.index_bytes + 1 + model.value_bytes  # with g
    n = b * k * S
    hbm = n * point + b * k * (2 * r + 2) * v  # in
    hbm += b * k * (2 * r + 1) * v  # dmu, dsigma, dvalues

    def stream(means: int, points: int) -> int:
        return math.ceil(means / model.block_means) * points * point

    return Traffic(hbm, _per_context(b, k, S, context_size, stream))


def duplicate_mask(
    n_tuples: int, r: int, *, from_keys: bool = False, model: Model = FP32
) -> Traffic:
    """The sort-based duplicate mask, its sort left out (timed apart by :func:`sort_seconds`).

    HBM: the keys kernel (read ``r`` coordinates, write an int64 key; skipped ``from_keys``: the
    fused sampler writes the keys) and the mark kernel (read the sorted keys and the sort's
    int64 order, write one bool per tuple). L2: the mark kernel stores each flag at the tuple's
    original position, a scattered 1-byte store (rounded up to ``sector_bytes``).
    """
    keys = 0 if from_keys else n_tuples * (r * model.index_bytes + KEY_BYTES)
    mark = n_tuples * (2 * KEY_BYTES + 1)
    return Traffic(keys + mark, n_tuples * round_up(1, model.sector_bytes))


def sampling(
    b: int, k: int, S: int, r: int, *, keys: bool = True, flat: bool = True, model: Model = FP32
) -> Traffic:
    """The fused sampler: read ``mu (b, k, r)``, write points ``(b, k, S, r)``, their int64 keys
    (``keys``) and flat ``rows``, ``cols`` (``flat``). Streaming stores only: no L2 term."""
    n, i = b * k * S, model.index_bytes
    hbm = b * k * r * model.value_bytes + n * r * i
    hbm += (n * KEY_BYTES if keys else 0) + (2 * n * i if flat else 0)
    return Traffic(hbm, 0)


def layer_step(
    b: int,
    k: int,
    S: int,
    n_in: int,
    n_out: int,
    *,
    context_size: int | None = None,
    x_grad: bool = True,
    backward_row_gathers: int = 1,
    model: Model = FP32,
) -> Traffic:
    """One training step of a layer ``(n_out,) x (n_in,)`` with ``k`` means of rank 2 shared by
    ``b`` rows: sampling, duplicate mask, proportions and contraction forward, then the
    contraction's and the proportions' backward. The sum of the parts: no credit for fusion."""
    r, nnz, cs = 2, k * S, context_size
    return (
        sampling(1, k, S, r, model=model)
        + duplicate_mask(nnz, r, from_keys=True, model=model)
        + proportions_forward(1, k, S, r, context_size=cs, model=model)
        + contraction_forward(nnz, b, n_in, n_out, model=model)
        + contraction_backward(
            nnz, b, n_in, n_out, row_gathers=backward_row_gathers, dx=x_grad, model=model
        )
        + proportions_backward(1, k, S, r, context_size=cs, model=model)
    )


# ---- the sorts, timed apart -----------------------------------------------------------------


@dataclass(frozen=True)
class SortSpec:
    """One ``torch.sort(keys, dim=-1, stable=True)`` a kernel does: keys of ``shape`` and
    ``dtype``, uniformly random in ``[0, key_range)``."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    key_range: int


def segment_key_dtype(n_segments: int) -> torch.dtype:
    """The contraction's key dtype (kernels/contract.py): int32 below 2^31 - 1 segments."""
    return torch.int32 if n_segments < 2**31 - 1 else torch.int64


def contraction_sorts(
    nnz: int, b: int, n_in: int, n_out: int, *, shared: bool = True, backward: bool = False
) -> list[SortSpec]:
    """The segment-key sorts of the deterministic contraction: the forward's (by output row) and,
    with ``backward``, the one of ``dx = W^T dy`` (by input column)."""
    n_w = 1 if shared else b
    segments = [n_w * n_out] + ([n_w * n_in] if backward else [])
    return [SortSpec((n_w * nnz,), segment_key_dtype(s), max(s, 1)) for s in segments]


def duplicate_mask_sorts(
    b: int, k: int, S: int, context_size: int | None = None, key_range: int = 2**62
) -> list[SortSpec]:
    """The duplicate mask's sort: each context's ``cs * S`` int64 keys (``b * ceil(k / cs)``
    contexts, the last one padded)."""
    cs = k if context_size is None else min(context_size, k)
    if cs <= 0 or b * S == 0:
        return []
    return [SortSpec((b * math.ceil(k / cs), cs * S), torch.int64, max(min(key_range, 2**62), 1))]


# ---- measurement on CUDA --------------------------------------------------------------------


def _cuda_device(device: torch.device | str | None) -> torch.device:
    """The CUDA device to measure on; skips the calling test when there is none."""
    if not torch.cuda.is_available():
        import pytest

        pytest.skip("needs CUDA")
    device = torch.device("cuda", torch.cuda.current_device()) if device is None else device
    device = torch.device(device)
    if device.type != "cuda":
        import pytest

        pytest.skip(f"needs CUDA, got {device}")
    return device


def l2_cache_bytes(device: torch.device | str | None = None) -> int:
    """The device's L2 size (``H100_L2_BYTES`` when torch does not report it)."""
    device = _cuda_device(device)
    size = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0)
    return int(size) if size else H100_L2_BYTES


def cuda_seconds(fn: Callable[[], object], *, repeats: int = 10, warmup: int = 2) -> float:
    """Median seconds of ``repeats`` calls of ``fn``, each between two CUDA events on the current
    stream, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def measure_hbm_bandwidth(
    nbytes: int = 2**31, *, device: torch.device | str | None = None, repeats: int = 10
) -> float:
    """HBM bandwidth in bytes per second: a device-to-device ``copy_`` of ``nbytes`` (raised to
    at least 8x the L2 size, so that it streams from DRAM), ``2 * nbytes`` read + written, over
    the median time."""
    device = _cuda_device(device)
    nbytes = max(nbytes, 8 * l2_cache_bytes(device)) // 16 * 16
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    with torch.cuda.device(device):
        seconds = cuda_seconds(lambda: dst.copy_(src), repeats=repeats)
    return 2 * nbytes / seconds


@dataclass(frozen=True)
class GatherProbe:
    """The L2 probe: ``gathers`` random rows of ``row_bytes`` (256 B: one nonzero's row of ``x``
    for a W shared by 64 rows) from ``buffer_bytes`` of float32 rows, in bags of ``bag``, by
    ``method`` (:func:`l2_gather_probe`), the row indices drawn from ``seed``."""

    buffer_bytes: int = 16 * MiB
    row_bytes: int = 256
    gathers: int = 2**20
    bag: int = 64
    method: str = "embedding_bag"
    seed: int = 0

    def __post_init__(self) -> None:
        row, bag = self.row_bytes, self.bag
        if row % 4 or row <= 0 or self.buffer_bytes < row or self.gathers < bag or bag < 1:
            raise ValueError(
                "need row_bytes a positive multiple of 4, buffer >= row, gathers >= bag"
            )

    def fitted(self, l2_bytes: int) -> GatherProbe:
        """This probe with its buffer cut to at most a third of an L2 of ``l2_bytes``."""
        return replace(self, buffer_bytes=min(self.buffer_bytes, l2_bytes // 3))


def l2_gather_probe(
    device: torch.device | str, probe: GatherProbe = GatherProbe()
) -> tuple[Callable[[], torch.Tensor], int]:
    """A gather of random rows from a small buffer: ``(fn, gathered_bytes)``. Runs anywhere (the
    timing does not).

    ``probe.method``:

    - ``"embedding_bag"`` (default): sums every ``bag`` gathered rows (a segment reduction, as
      the contraction does), so the output is ``1 / bag`` of the gathered bytes and the whole
      working set (buffer, indices, output: 28 MiB by default) stays in L2;
    - ``"index_select"``: writes every gathered row out; that output streams to DRAM, so this
      reads lower than L2's gather bandwidth.

    ``gathered_bytes`` counts the rows gathered, not the index reads or the output.
    """
    n_rows, width = probe.buffer_bytes // probe.row_bytes, probe.row_bytes // 4
    generator = torch.Generator().manual_seed(probe.seed)
    table = torch.randn(n_rows, width, generator=generator).to(device)
    n_bags = probe.gathers // probe.bag
    index = torch.randint(0, n_rows, (n_bags, probe.bag), generator=generator)
    index = index.to(device)
    gathered = n_bags * probe.bag * probe.row_bytes
    if probe.method == "embedding_bag":
        return (lambda: torch.nn.functional.embedding_bag(index, table, mode="sum")), gathered
    if probe.method == "index_select":
        flat = index.flatten()
        out = torch.empty(flat.numel(), width, device=table.device)
        return (lambda: torch.index_select(table, 0, flat, out=out)), gathered
    raise ValueError(f"method must be 'embedding_bag' or 'index_select', got {probe.method!r}")


def measure_l2_bandwidth(
    *,
    device: torch.device | str | None = None,
    probe: GatherProbe = GatherProbe(),
    repeats: int = 10,
) -> float:
    """L2 gather bandwidth in bytes per second: :func:`l2_gather_probe` on a buffer that fits in
    L2 (at most a third of it), gathered bytes over the median time.

    This is what a stock gather-reduce achieves, not a datasheet peak: a kernel that gathers
    faster than ``embedding_bag`` shows more than 100% of its bound, and then the probe, not the
    kernel, is the weak side (a tuned probe would raise the figure)."""
    device = _cuda_device(device)
    fn, gathered = l2_gather_probe(device, probe.fitted(l2_cache_bytes(device)))
    with torch.cuda.device(device):
        return gathered / cuda_seconds(fn, repeats=repeats)


def sort_seconds(
    specs: Sequence[SortSpec], *, device: torch.device | str | None = None, repeats: int = 10
) -> float:
    """Summed median time of the sorts ``specs`` (stable ``torch.sort`` along the last dim)."""
    device = _cuda_device(device)
    total = 0.0
    for spec in specs:
        if math.prod(spec.shape) == 0:
            continue
        keys = torch.randint(0, spec.key_range, spec.shape, device=device, dtype=torch.int64)
        keys = keys.to(spec.dtype)
        with torch.cuda.device(device):
            total += cuda_seconds(
                lambda k=keys: torch.sort(k, dim=-1, stable=True), repeats=repeats
            )
    return total


@dataclass(frozen=True)
class Bandwidths:
    """Bandwidths (bytes per second) measured once per benchmark session."""

    hbm: float
    l2: float
    l2_capacity_bytes: int
    l2_buffer_bytes: int
    l2_row_bytes: int
    l2_method: str = "embedding_bag"

    @property
    def probe(self) -> GatherProbe:
        """The L2 probe these bandwidths were measured with (default gathers, bags and seed)."""
        return GatherProbe(self.l2_buffer_bytes, self.l2_row_bytes, method=self.l2_method)

    def info(self) -> dict[str, float | int]:
        """For ``machine_info`` and ``extra_info``: GB/s (decimal) and the probe's sizes."""
        return {
            "hbm_gbps": self.hbm / GB,
            "l2_gbps": self.l2 / GB,
            "l2_capacity_bytes": self.l2_capacity_bytes,
            "l2_buffer_bytes": self.l2_buffer_bytes,
            "l2_row_bytes": self.l2_row_bytes,
            "l2_method": self.l2_method,
        }


def measure_bandwidths(
    *,
    hbm_bytes: int = 2**31,
    device: torch.device | str | None = None,
    probe: GatherProbe = GatherProbe(),
    repeats: int = 10,
) -> Bandwidths:
    """:func:`measure_hbm_bandwidth` and :func:`measure_l2_bandwidth` in one go."""
    device = _cuda_device(device)
    capacity = l2_cache_bytes(device)
    hbm = measure_hbm_bandwidth(hbm_bytes, device=device, repeats=repeats)
    torch.cuda.empty_cache()
    l2 = measure_l2_bandwidth(device=device, probe=probe, repeats=repeats)
    fitted = probe.fitted(capacity)
    return Bandwidths(hbm, l2, capacity, fitted.buffer_bytes, fitted.row_bytes, fitted.method)


def roofline_info(
    traffic: Traffic,
    bandwidths: Bandwidths,
    seconds: float | None = None,
    sort_s: float | None = None,
) -> dict[str, float | int | str]:
    """``extra_info`` fields of one benchmark: the bound (``bound_ms``, which term sets it), the
    measured time's share of it (``pct_of_bound``, in percent, for the kernel time including its
    sort), the sort time (``sort_ms``) and the share without it (``pct_of_bound_excl_sort``)."""
    bound = bound_seconds(traffic, bandwidths.hbm, bandwidths.l2)
    info: dict[str, float | int | str] = {
        "hbm_bytes": int(traffic.hbm_bytes),
        "l2_bytes": int(traffic.l2_gathered_bytes),
        "hbm_gbps": bandwidths.hbm / GB,
        "l2_gbps": bandwidths.l2 / GB,
        "bound_ms": bound * 1e3,
        "bound_by": bound_by(traffic, bandwidths.hbm, bandwidths.l2),
    }
    if sort_s is not None:
        info["sort_ms"] = sort_s * 1e3
    if seconds:
        info["pct_of_bound"] = 100 * bound / seconds
        if sort_s is not None and seconds > sort_s:
            info["pct_of_bound_excl_sort"] = 100 * bound / (seconds - sort_s)
    return info
