"""Peak memory, copy bandwidth and the shared benchmark runner (the roofline: bench/roofline.py).

Peak memory is the memory an op allocates on top of what exists before it runs (its outputs,
temporaries and, for training steps, the tensors autograd saves):

- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus the
  allocated bytes before the call (method ``"cuda_max_memory_allocated"``).
- CPU: torch has no public CPU allocator statistics and ``tracemalloc`` does not see torch's
  allocations, so we measure the process's peak resident set: ``malloc_trim`` returns freed heap
  pages to the OS, writing ``5`` to ``/proc/self/clear_refs`` resets the kernel's high-water mark
  ``VmHWM``, and the peak is ``VmHWM`` after the call minus ``VmRSS`` before it (method
  ``"rss_hwm"``). Trimming first matters: freed heap pages that glibc keeps would otherwise be
  reused without raising the RSS. Allocations of a few MB and less drown in the allocator's
  noise (about 4 MB).
  Where ``clear_refs`` cannot be written we fall back to the growth of ``ru_maxrss`` (method
  ``"ru_maxrss_growth"``), which only sees new process-wide peaks: a lower bound.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import resource
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch
from inputs import contraction_inputs
from peers import contraction_fn
from roofline import (
    Bandwidths,
    Model,
    SortSpec,
    Traffic,
    contraction_backward,
    contraction_forward,
    contraction_sorts,
    roofline_info,
    sort_seconds,
)
from sweeps import total_nonzeros


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


_LIBC = _libc()


def _proc_status_bytes(key: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_rss_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


class PeakMemory:
    """Measures the peak bytes one call allocates on ``device`` (see the module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        if device.type == "cuda":
            self.method = "cuda_max_memory_allocated"
        elif _proc_status_bytes("VmHWM") is not None and _reset_rss_peak():
            self.method = "rss_hwm"
        else:
            self.method = "ru_maxrss_growth"

    def measure(self, fn: Callable[[], Any]) -> tuple[Any, int]:
        """Run ``fn()`` once; return its result and the peak bytes it allocated."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            base = torch.cuda.memory_allocated(self.device)
            result = fn()
            torch.cuda.synchronize(self.device)
            return result, torch.cuda.max_memory_allocated(self.device) - base
        if _LIBC is not None:
            _LIBC.malloc_trim(0)
        if self.method == "rss_hwm":
            _reset_rss_peak()
            base = _proc_status_bytes("VmRSS") or 0
            result = fn()
            peak = (_proc_status_bytes("VmHWM") or 0) - base
        else:
            base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            result = fn()
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
        return result, max(peak, 0)


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def copy_seconds(device: torch.device, nbytes: int, repeats: int = 5) -> float:
    """Best time of ``repeats`` device-to-device copies of ``nbytes`` bytes."""
    n = nbytes // 4
    src = torch.ones(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        dst.copy_(src)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def measure_bandwidth(device: torch.device, nbytes: int) -> float:
    """Device memory bandwidth in GB/s (1e9 bytes): a copy reads and writes ``nbytes`` each."""
    return 2 * nbytes / copy_seconds(device, nbytes) / 1e9


def run_benchmark(
    benchmark: Any,
    fn: Callable[[], Any],
    *,
    group: str,
    case: Any,
    impl: str,
    device: torch.device,
    rounds: int,
    tracker: PeakMemory,
    extra: dict[str, Any] | None = None,
    traffic: Traffic | None = None,
    bandwidths: Bandwidths | None = None,
    sorts: Sequence[SortSpec] = (),
) -> Any:
    """Measure peak memory once, time ``fn`` for ``rounds`` rounds, fill ``extra_info``.

    With ``traffic`` (bench/roofline.py) the model's HBM and L2 bytes go into ``extra_info``;
    with ``bandwidths`` too (measured once per session, CUDA only) the roofline bound, the best
    time's share of it and the time of ``sorts`` (timed apart, after the benchmark) as well.
    Returns ``fn``'s result from the memory run (for correctness checks).
    """

    def call() -> Any:
        try:
            out = fn()
        except torch.OutOfMemoryError as error:  # e.g. torch.sparse COO densifying a gradient
            torch.cuda.empty_cache()
            pytest.skip(f"{impl} ran out of device memory: {str(error).splitlines()[0]}")
        synchronize(device)
        return out

    benchmark.group = f"{group} / {case.sweep}"
    if device.type == "cuda" and not getattr(benchmark, "disabled", False):
        call()  # JIT compilation and autotuning stay out of the memory and time numbers
    result, peak = tracker.measure(call)
    info = benchmark.extra_info
    info.update(case.info())
    info.update(extra or {})
    info.update(
        op=group,
        impl=impl,
        device=str(device),
        peak_mem_bytes=int(peak),
        mem_method=tracker.method,
        threads=torch.get_num_threads(),
    )
    benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=0)
    stats = getattr(benchmark, "stats", None)
    best = stats.stats.min if stats is not None else None
    if traffic is not None:
        info.update(hbm_bytes=int(traffic.hbm_bytes), l2_bytes=int(traffic.l2_gathered_bytes))
        if bandwidths is not None:
            sort_s = sort_seconds(sorts, device=device) if sorts else None
            info.update(roofline_info(traffic, bandwidths, best, sort_s))
    return result


def contraction_setup(
    impl: str,
    case: Any,
    device: torch.device,
    generator: torch.Generator,
    bandwidths: Bandwidths | None,
    backward: bool = False,
) -> tuple[Callable, tuple[torch.Tensor, ...], dict[str, Any]]:
    """What both contraction benchmarks share: ``(fn, inputs, options)``, the implementation
    ``impl`` (skipped where the torch peers' gathered copy of ``x`` would not fit), the inputs
    ``rows, cols, vprime, x, dy`` and :func:`run_benchmark`'s ``impl``, ``extra``, ``traffic``
    (the roofline model of ``case``: forward, or forward + ideal backward) and ``sorts`` (the
    ones Triton does)."""
    fn = contraction_fn(impl, device)
    if impl in ("torch", "index_add"):  # both gather a (b, nnz) copy of x, plus autograd buffers
        fits_or_skip(16 * case.b * case.nnz, device, "(b, nnz) gathered x")
    inputs = contraction_inputs(case, device, generator)
    capacity = bandwidths.l2_capacity_bytes if bandwidths is not None else None
    model = Model(value_bytes=inputs[2].element_size(), l2_capacity_bytes=capacity)
    sizes = (case.nnz, case.b, case.n_in, case.n_out)
    traffic = contraction_forward(*sizes, shared=case.shared, model=model)
    if backward:
        traffic = traffic + contraction_backward(*sizes, shared=case.shared, model=model)
    sorts = contraction_sorts(*sizes, shared=case.shared, backward=backward)
    extra = {"total_nnz": total_nonzeros(case)}
    options = dict(impl=impl, extra=extra, traffic=traffic, sorts=sorts if impl == "triton" else ())
    return fn, inputs, options


def triton_or_skip(name: str, device: torch.device, **options) -> Callable:
    """The op ``hyperkern.ops.<name>`` on its Triton implementation (with ``options``); skips
    the benchmark without a CUDA device. On CUDA a missing op raises (a benchmark must not hide
    a missing feature)."""
    if device.type != "cuda":
        pytest.skip("needs CUDA")
    import functools

    from hyperkern import ops

    return functools.partial(getattr(ops, name), backend="triton", **options)


def fits_or_skip(nbytes: int, device: torch.device, what: str) -> None:
    """Skip when ``what`` needs more than half the device's memory (``nbytes`` estimated)."""
    if device.type == "cuda":
        limit = torch.cuda.get_device_properties(device).total_memory // 2
    else:
        limit = _mem_total() // 2
    if nbytes > limit:
        need, have = nbytes / 2**30, limit / 2**30
        pytest.skip(f"does not fit: {what} needs ~{need:.1f} GiB > {have:.1f} GiB")


def _mem_total() -> int:
    """Physical memory in bytes (8 GiB where /proc/meminfo cannot be read)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30
