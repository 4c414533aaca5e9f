"""Seconds and peak memory per training step against the sequence length:
``python -m bench.lm profile --seq 256 512 ... --attention dense window sparse``.

Every (attention, seq) configuration runs in two fresh subprocesses (``python -m bench.lm
_measure``), one for the time and one for the memory, so one configuration's allocations and
caches cannot shape another's numbers. Inputs are random bytes (the corpus does not change the
cost); a step is forward, backward, gradient clipping and the AdamW update.

Time: ``--warmup`` untimed steps (the first is timed only to decide whether the configuration is
affordable), then ``--steps`` steps timed one by one; the table gives their median and minimum.

Peak memory: one untimed step, then the largest of ``--memory-steps`` steps measured with
bench/measure.py's ``PeakMemory``: on CUDA ``torch.cuda.max_memory_allocated`` minus the bytes
allocated before the step; on the CPU the process's resident-set high-water mark
(``malloc_trim``, then ``VmHWM`` reset through ``/proc/self/clear_refs``) minus ``VmRSS`` before
the step, i.e. what the step adds on top of the resident model, optimizer state and inputs. On
glibc the memory process fixes the mmap threshold at 64 KiB before the model is built
(``mallopt(M_MMAP_THRESHOLD)``): every larger block is mapped on allocation and unmapped on
free, so the resident set follows the live bytes (method ``rss_hwm+mmap64k``). With glibc's
default, dynamic threshold freed blocks stay in the heap and the high-water mark depends on the
allocation history: for the sparse model at t = 512 it read 115 MiB with the threshold fixed
from the start, 144 to 176 MiB when fixed after four steps, and up to 341 MiB with the default.
The timing process keeps the default allocator settings.

A configuration whose first step takes longer than ``--max-step-s`` (60 s) is recorded as not
run, and so are the longer sequences of the same attention.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from .model import KINDS, LanguageModel, ModelConfig
from .train import add_model_arguments, machine, make_step, model_config, resolve_device

REPO_ROOT = Path(__file__).resolve().parents[2]
MiB = 2**20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seq", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    parser.add_argument("--attention", nargs="+", choices=KINDS, default=list(KINDS[:3]))
    add_model_arguments(parser)
    group = parser.add_argument_group("profile")
    group.add_argument("--steps", type=int, default=3, help="timed steps per configuration")
    group.add_argument("--warmup", type=int, default=1, help="untimed steps before them")
    group.add_argument("--memory-steps", type=int, default=1, help="steps measured for memory")
    group.add_argument("--max-step-s", type=float, default=60.0, help="skip slower configs")
    group.add_argument("--json", default=None, help="also write the rows to this file")


def peak_memory(device: torch.device):
    """bench/measure.py's ``PeakMemory`` for ``device`` (``bench/`` joins ``sys.path``, as
    pytest puts it there for the benchmark files)."""
    bench = str(REPO_ROOT / "bench")
    if bench not in sys.path:
        sys.path.append(bench)
    from measure import PeakMemory

    return PeakMemory(device)


def _setup(cfg: ModelConfig, batch: int, device: torch.device):
    """A training step of a fresh model, ``step(number)``, on fixed random bytes."""
    torch.manual_seed(0)
    model = LanguageModel(cfg).to(device)
    step = make_step(model, torch.optim.AdamW(model.parameters(), lr=1e-3), lambda _: 1e-3)
    data = torch.Generator().manual_seed(0)
    x, y = torch.randint(256, (2, batch, cfg.seq), generator=data).to(device).unbind(0)

    def run(number: int) -> None:
        step(x, y, number)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return run


def measure_time(
    cfg: ModelConfig, batch: int, steps: int, warmup: int, max_step_s: float, device: torch.device
) -> dict[str, object]:
    """Median and minimum seconds of ``steps`` training steps after ``warmup`` ones."""
    step = _setup(cfg, batch, device)
    row = dict(
        attention=cfg.attention, seq=cfg.seq, batch=batch, parameters=cfg.info()["parameters"]
    )
    times = []
    for number in range(warmup + steps):
        start = time.perf_counter()
        step(number)
        times.append(time.perf_counter() - start)
        if number == 0 and times[0] > max_step_s:
            return {**row, "not_run": f"first step took {times[0]:.0f} s > {max_step_s:.0f} s"}
    times = times[warmup:]
    row.update(median_s=statistics.median(times), min_s=min(times))
    return {**row, "timed_steps": steps, "warmup_steps": warmup}


def measure_memory(
    cfg: ModelConfig, batch: int, steps: int, device: torch.device, fix_mmap: bool = False
) -> dict[str, object]:
    """Peak bytes of a training step, the largest of ``steps`` after one more. ``fix_mmap``
    fixes glibc's mmap threshold first, for good: only in a fresh process of its own."""
    fixed = fix_mmap and device.type == "cpu" and _fixed_mmap_threshold()
    step = _setup(cfg, batch, device)
    memory = peak_memory(device)
    step(0)
    peaks = [memory.measure(lambda n=n: step(n))[1] for n in range(1, 1 + steps)]
    method = f"{memory.method}+mmap64k" if fixed else memory.method
    return {"peak_bytes": max(peaks), "memory_steps": steps, "mem_method": method}


def _fixed_mmap_threshold(nbytes: int = 64 * 1024) -> bool:
    """glibc: map every block above ``nbytes`` and unmap it on free (no dynamic threshold)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-3, nbytes))  # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def measure_in_subprocesses(cfg: ModelConfig, args: argparse.Namespace) -> dict[str, object]:
    """:func:`measure_time`, then :func:`measure_memory`, each in a fresh ``python -m bench.lm
    _measure`` process (see the module docstring); a crash or timeout becomes a ``not_run``
    row."""
    request = {"config": cfg.info(), "phase": "time", **_request_options(args)}
    row = _subprocess(request, args.max_step_s * (args.warmup + args.steps + 1) + 120, args)
    if "not_run" not in row:
        request["phase"] = "memory"
        limit = args.max_step_s * (args.memory_steps + 2) + 120
        row.update(_subprocess(request, limit, args))
    return {"attention": cfg.attention, "seq": cfg.seq, **row}


def _request_options(args: argparse.Namespace) -> dict[str, object]:
    keys = ("batch", "steps", "warmup", "memory_steps", "max_step_s", "device", "threads")
    return {key: getattr(args, key) for key in keys}


def _subprocess(request: dict, limit: float, args: argparse.Namespace) -> dict[str, object]:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    command = [sys.executable, "-m", "bench.lm", "_measure", json.dumps(request)]
    try:
        done = subprocess.run(
            command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=limit
        )
    except subprocess.TimeoutExpired:
        return {"not_run": f"{request['phase']} timed out ({limit:.0f} s)"}
    if done.returncode != 0:
        return {"not_run": f"failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_measure(request_json: str) -> dict[str, object]:
    """The ``_measure`` subcommand: one phase of one configuration, printed as the last line."""
    request = json.loads(request_json)
    torch.set_num_threads(request["threads"])
    fields = set(ModelConfig.__dataclass_fields__)
    cfg = ModelConfig(**{key: v for key, v in request["config"].items() if key in fields})
    device = resolve_device(request["device"])
    if request["phase"] == "memory":
        row = measure_memory(cfg, request["batch"], request["memory_steps"], device, True)
    else:
        options = (request[key] for key in ("batch", "steps", "warmup", "max_step_s"))
        row = {**measure_time(cfg, *options, device), **machine(device)}
    print(json.dumps(row), flush=True)
    return row


def run(args: argparse.Namespace) -> list[dict[str, object]]:
    """Every (attention, seq) configuration, the shorter sequences first; print the table."""
    rows = []
    for attention in args.attention:
        skipped = None
        for seq in sorted(args.seq):
            if skipped is not None:
                rows.append({"attention": attention, "seq": seq, "not_run": skipped})
                continue
            row = measure_in_subprocesses(model_config(args, attention, seq), args)
            if "not_run" in row:
                skipped = f"not run: seq {seq} was not ({row['not_run']})"
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return rows


def table(rows: list[dict[str, object]]) -> str:
    """Markdown: one line per seq, per attention ``median (min)`` seconds and peak MiB."""
    kinds = list(dict.fromkeys(str(r["attention"]) for r in rows))
    by = {(r["attention"], r["seq"]): r for r in rows}
    head = ["t"] + [f"{k} s/step median (min)" for k in kinds] + [f"{k} peak MiB" for k in kinds]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for seq in sorted({int(r["seq"]) for r in rows}):
        cells = [str(seq)]
        found = [by.get((k, seq), {"not_run": "-"}) for k in kinds]
        for r in found:
            ran = "not_run" not in r
            cells.append(f"{r['median_s']:.3f} ({r['min_s']:.3f})" if ran else "not run")
        for r in found:
            cells.append(f"{r['peak_bytes'] / MiB:.1f}" if "not_run" not in r else "not run")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
