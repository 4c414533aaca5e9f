"""Benchmark options and fixtures.

Options: ``--hk-scale`` = ``tiny`` | ``cpu`` (default) | ``gpu`` picks the sizes (bench/sweeps.py);
``--hk-threads`` sets ``torch.set_num_threads``. A module that defines ``HK_GROUP`` and takes an
``hk_case`` argument is parametrized over that group's cases.

Peak memory: see bench/measure.py (CUDA allocator peak on GPU, process RSS high-water mark on
CPU). The roofline (bench/roofline.py) measures HBM (a large copy) and L2 (a gather from a
16 MiB buffer) bandwidth once per session, on CUDA only; on the CPU only the copy bandwidth is
measured and no bound is reported.
"""

from __future__ import annotations

import functools
import platform
import warnings
from collections.abc import Callable

import pytest
import torch
from measure import PeakMemory, measure_bandwidth, run_benchmark
from roofline import GB, Bandwidths, measure_bandwidths
from sweeps import SCALES, bandwidth_bytes, cases, rounds

from hyperkern import sparse_layer

_SESSION: dict[str, object] = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hyperkern benchmarks")
    group.addoption(
        "--hk-scale",
        choices=SCALES,
        default="cpu",
        help="benchmark sizes: tiny (CI smoke), cpu (default) or gpu",
    )
    group.addoption(
        "--hk-threads",
        type=int,
        default=None,
        help="torch.set_num_threads for the run (default: torch's choice)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("filterwarnings", "ignore:Sparse CSR tensor support is in beta")
    threads = config.getoption("--hk-threads", default=None)
    if threads:
        torch.set_num_threads(threads)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    group = getattr(metafunc.module, "HK_GROUP", None)
    if group is None or "hk_case" not in metafunc.fixturenames:
        return
    chosen = cases(group, metafunc.config.getoption("--hk-scale"))
    metafunc.parametrize("hk_case", chosen, ids=[c.id for c in chosen])


@pytest.fixture(scope="session")
def hk_scale(request: pytest.FixtureRequest) -> str:
    """``tiny``, ``cpu`` or ``gpu``."""
    return request.config.getoption("--hk-scale")


@pytest.fixture(scope="session")
def hk_device() -> torch.device:
    """The first CUDA device if there is one, else the CPU."""
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


@pytest.fixture(scope="session")
def hk_rounds(hk_scale: str) -> int:
    return rounds(hk_scale)


@pytest.fixture(scope="session")
def hk_memory(hk_device: torch.device) -> PeakMemory:
    """Peak-memory tracker for ``hk_device``."""
    tracker = PeakMemory(hk_device)
    _warm_up(hk_device)
    _SESSION["mem_method"] = tracker.method
    return tracker


def _warm_up(device: torch.device) -> None:
    """One small layer training step, so that one-time allocations (thread pools, autograd
    engine, lazy module state) do not count towards the first benchmark's peak memory."""
    x = torch.randn(2, 8, device=device)
    means, sigmas, values = torch.randn(4, 2), torch.zeros(4), torch.randn(4)
    leaves = [t.to(device).requires_grad_() for t in (means, sigmas, values)]
    y = sparse_layer(x, *leaves, (8,), chunk_size=2, generator=0, backend="torch")
    torch.autograd.grad(y.sum(), leaves)


@pytest.fixture(scope="session")
def hk_roofline(hk_device: torch.device, hk_scale: str) -> Bandwidths | None:
    """HBM and L2 bandwidths for the roofline bound, measured once per session on CUDA (the copy
    at least 8x L2); ``None`` on the CPU, where nothing is measured."""
    if hk_device.type != "cuda":
        return None
    try:
        bandwidths = measure_bandwidths(hbm_bytes=bandwidth_bytes(hk_scale), device=hk_device)
    except Exception as error:  # a failed probe must not cost the run its timings
        _SESSION["roofline_error"] = f"{type(error).__name__}: {error}".splitlines()[0]
        warnings.warn(
            f"roofline bandwidths not measured: {_SESSION['roofline_error']}", stacklevel=1
        )
        return None
    _SESSION["roofline"] = bandwidths.info()
    return bandwidths


@pytest.fixture(scope="session")
def hk_bandwidth(hk_device: torch.device, hk_scale: str, hk_roofline: Bandwidths | None) -> float:
    """Copy bandwidth in GB/s: the roofline's HBM figure on CUDA, on the CPU the best large
    host-timed copy."""
    if hk_roofline is not None:
        gbps = hk_roofline.hbm / GB
    else:
        gbps = measure_bandwidth(hk_device, bandwidth_bytes(hk_scale))
    _SESSION["bandwidth_gbps"] = gbps
    return gbps


@pytest.fixture
def hk_generator() -> torch.Generator:
    """A fresh CPU generator seeded 0 for every benchmark's inputs."""
    return torch.Generator().manual_seed(0)


@pytest.fixture
def hk_run(
    benchmark,
    hk_case,
    hk_device: torch.device,
    hk_rounds: int,
    hk_memory: PeakMemory,
    hk_roofline: Bandwidths | None,
) -> Callable:
    """:func:`measure.run_benchmark` for this test's ``benchmark`` and ``hk_case`` on the
    session's device, rounds, peak-memory tracker and roofline bandwidths:
    ``hk_run(fn, group=..., impl=..., ...)``."""
    return functools.partial(
        run_benchmark,
        benchmark,
        case=hk_case,
        device=hk_device,
        rounds=hk_rounds,
        tracker=hk_memory,
        bandwidths=hk_roofline,
    )


def _device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return platform.processor() or platform.machine()


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    machine_info.update(
        hk_scale=config.getoption("--hk-scale"),
        torch_version=torch.__version__,
        triton_version=triton_version,
        cuda_device=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        torch_threads=torch.get_num_threads(),
        bandwidth_gbps=_SESSION.get("bandwidth_gbps"),
        mem_method=_SESSION.get("mem_method"),
        **_SESSION.get("roofline", {}),
    )


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if "bandwidth_gbps" in _SESSION:
        terminalreporter.write_line(
            f"hyperkern bench: device {_device_name()}, measured copy bandwidth "
            f"{_SESSION['bandwidth_gbps']:.1f} GB/s, peak memory via {_SESSION.get('mem_method')}"
        )
    if "roofline_error" in _SESSION:
        terminalreporter.write_line(
            f"hyperkern bench roofline: NOT measured ({_SESSION['roofline_error']})"
        )
    if "roofline" in _SESSION:
        bw = _SESSION["roofline"]
        terminalreporter.write_line(
            f"hyperkern bench roofline: HBM {bw['hbm_gbps']:.0f} GB/s (copy), L2 "
            f"{bw['l2_gbps']:.0f} GB/s (gather of {bw['l2_row_bytes']} B rows from a "
            f"{bw['l2_buffer_bytes'] / 2**20:.0f} MiB buffer)"
        )
