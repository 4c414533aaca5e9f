"""Shared plumbing for the experiment scripts: CSV logs, checkpoints, progress, seeding, plots,
the checkpointed training loop (:class:`Trainer`), speed options (compile, bf16, seconds per
step) and ``results.json``."""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import random
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CSVLogger",
    "save_checkpoint",
    "load_checkpoint",
    "progress",
    "seed_everything",
    "resolve_device",
    "read_csv",
    "plot_curves",
    "Trainer",
    "LossBuffer",
    "add_bf16_argument",
    "autocast",
    "maybe_compile",
    "measure_steps",
    "synchronize",
    "device_name",
    "write_json",
    "write_results",
    "RESULT_KEYS",
]


class CSVLogger:
    """Append rows of named values to a CSV file.

    The header is taken from the first row written (or from the existing file when appending,
    e.g. after a resume). Later rows may carry a subset of the columns (missing cells stay
    empty); a column not in the header raises ``ValueError``.
    """

    def __init__(self, path: str | os.PathLike, fieldnames: Sequence[str] | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fieldnames: list[str] | None = list(fieldnames) if fieldnames else None
        if self.path.exists() and self.path.stat().st_size > 0:
            with self.path.open(newline="") as f:
                header = next(csv.reader(f), None)
            if header:
                self.fieldnames = header

    def log(self, **row: Any) -> None:
        """Append one row; values are written with ``str`` (floats with ``repr`` precision)."""
        if self.fieldnames is None:
            self.fieldnames = list(row)
        unknown = [key for key in row if key not in self.fieldnames]
        if unknown:
            raise ValueError(f"columns {unknown} are not in the CSV header {self.fieldnames}")
        new_file = not self.path.exists() or self.path.stat().st_size == 0
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fieldnames)
            if new_file:
                writer.writeheader()
            writer.writerow({key: _cell(value) for key, value in row.items()})

    def truncate_after(self, column: str, last: float) -> None:
        """Drop rows whose ``column`` exceeds ``last`` (used on resume to forget lost steps)."""
        if not self.path.exists():
            return
        rows = read_csv(self.path)
        kept = [r for r in rows if r.get(column, "") == "" or float(r[column]) <= last]
        if len(kept) == len(rows):
            return
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fieldnames or list(rows[0]))
            writer.writeheader()
            writer.writerows(kept)


def _cell(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, float):
        return repr(value)
    return value


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """Read a CSV written by :class:`CSVLogger` into a list of string dicts."""
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write ``state`` with ``torch.save`` atomically (temp file in the same folder + rename).

    A run killed mid-write leaves the previous checkpoint intact.
    """
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict | None:
    """Load a checkpoint written by :func:`save_checkpoint`; ``None`` if the file is absent."""
    path = Path(path)
    if not path.exists():
        return None
    return torch.load(path, map_location=map_location, weights_only=False)


def progress(
    iterable: Iterable | None = None,
    total: int | None = None,
    enabled: bool = True,
    desc: str = "",
    initial: int = 0,
) -> Iterator:
    """Wrap ``iterable`` (or ``range(initial, total)``) in a tqdm bar, a plain one if tqdm is
    missing, or nothing when ``enabled`` is false."""
    if iterable is None:
        if total is None:
            raise ValueError("progress needs an iterable or a total")
        iterable = range(initial, total)
    if not enabled:
        return iter(iterable)
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _plain_progress(iterable, total, desc, initial)
    return iter(tqdm(iterable, total=total, desc=desc, initial=initial, dynamic_ncols=True))


def _plain_progress(iterable: Iterable, total: int | None, desc: str, initial: int) -> Iterator:
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    step = max(1, (total or 100) // 20)
    for i, item in enumerate(iterable, start=initial):
        if i % step == 0:
            print(f"{desc} {i}/{total if total is not None else '?'}", flush=True)
        yield item


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch globally; return a CPU ``torch.Generator`` seeded with
    ``seed`` for the explicit random choices of a run."""
    if not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def resolve_device(name: str) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"`` (cuda if available) -> a device;
    asking for cuda without one raises ``ValueError``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


def plot_curves(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: str | os.PathLike,
    xlabel: str = "iterations",
    ylabel: str = "loss",
    title: str = "",
    logy: bool = False,
) -> Path:
    """Plot named ``(x, y)`` curves into one PNG at ``path`` (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (xs, ys) in series.items():
        ax.plot(list(xs), list(ys), label=label, linewidth=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    if len(series) > 1:
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------
# speed: compile, bf16, sync-free losses, seconds per step


def add_bf16_argument(parser: argparse.ArgumentParser) -> None:
    """``--bf16``: autocast the dense networks (ConvNets, MLPs) to bfloat16; the sparse part
    (means, sampling, proportions, contraction) stays float32."""
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="autocast the dense networks to bfloat16 (the sparse layers stay float32); "
        "off by default: a GPU speed-up whose effect on the paper's numbers is untested",
    )


LR_SCHEDULES = ("constant", "cosine")


def add_lr_schedule_argument(parser: argparse.ArgumentParser) -> None:
    """``--lr-schedule``: constant, or a cosine decay from each group's lr to 0 over the run."""
    parser.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        default="constant",
        help="constant, or cosine: every learning rate decays to 0 along a half cosine over "
        "the whole run (it follows the step, so --resume continues it)",
    )


def schedule_lr(optimizer: torch.optim.Optimizer, schedule: str, step: int, total: int) -> None:
    """Set each parameter group's lr for ``step`` of ``total``: its first lr (kept in the
    group as ``initial_lr``) times the schedule's factor (1 for constant; cosine: 1 at step 0,
    0 at ``total``)."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"schedule must be one of {LR_SCHEDULES}, got {schedule!r}")
    factor = 1.0
    if schedule == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
        group["lr"] = group["initial_lr"] * factor


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on ``device`` when ``enabled``, else a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def maybe_compile(fn: Callable, enabled: bool, backend: str = "inductor") -> Callable:
    """``torch.compile(fn)`` when ``enabled``; where compiling is unavailable or fails (no
    compiler, an unsupported op), a warning and ``fn`` itself, run eagerly.

    Compilation happens at the first call, so a failure there switches to ``fn`` for good;
    errors after a successful first call are real errors and propagate.
    """
    if not enabled:
        return fn
    try:
        compiled = torch.compile(fn, backend=backend)
    except Exception as err:  # noqa: BLE001 - any failure means: run eagerly
        warnings.warn(f"torch.compile unavailable ({err!r}); running eagerly", stacklevel=2)
        return fn
    state: dict[str, Callable | None] = {"fn": None}

    def call(*args: Any, **kwargs: Any) -> Any:
        if state["fn"] is not None:
            return state["fn"](*args, **kwargs)
        try:
            out = compiled(*args, **kwargs)
        except Exception as err:  # noqa: BLE001
            warnings.warn(f"torch.compile failed ({err!r}); running eagerly", stacklevel=2)
            state["fn"] = fn
            return fn(*args, **kwargs)
        state["fn"] = compiled
        return out

    return call


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class LossBuffer:
    """Per-step losses kept on the device (no ``.item()``, so no sync per step), read back in
    one transfer by :meth:`drain`."""

    def __init__(self) -> None:
        self._steps: list[int] = []
        self._losses: list[torch.Tensor] = []
        self._walls: list[float] = []

    def add(self, step: int, loss: torch.Tensor, wall: float) -> None:
        self._steps.append(step)
        self._losses.append(loss.detach().float())
        self._walls.append(wall)

    def drain(self) -> list[tuple[int, float, float]]:
        """``(step, loss, wall)`` of every step added since the last call."""
        losses = torch.stack(self._losses).tolist() if self._losses else []
        rows = list(zip(self._steps, losses, self._walls, strict=True))
        self._steps, self._losses, self._walls = [], [], []
        return rows


def measure_steps(
    step: Callable[[int], Any],
    n: int,
    device: torch.device,
    *,
    label: str,
    total_steps: int,
    eval_batch: Callable[[], Any] | None = None,
    eval_batches: int = 0,
    evals: int = 0,
    warmup: int | None = None,
    out: str | os.PathLike | None = None,
    config: dict | None = None,
) -> dict:
    """Seconds per training step: the median of ``n`` timed calls ``step(i)`` after ``warmup``
    untimed ones (default 1, or 3 when ``config["compile"]``: compilation, caches), the device
    synchronised around each call. With ``eval_batch`` (one evaluation batch, timed the same
    way, 2 calls after one warm-up) the projection adds ``evals`` evaluations of
    ``eval_batches`` batches each.

    Prints one line and returns (and writes to ``out/timing.json`` when ``out`` is given) the
    timings, the projected wall time of the configured run (``total_steps`` steps) and the CPU
    load average at the end, since a shared machine inflates every number.
    """
    if n < 1:
        raise ValueError(f"--time-steps must be >= 1, got {n}")
    if warmup is None:
        warmup = 3 if (config or {}).get("compile") else 1

    def timed(fn: Callable[[int], Any], calls: int, skip: int) -> list[float]:
        for i in range(skip):
            fn(i)
        synchronize(device)
        times = []
        for i in range(skip, skip + calls):
            t0 = time.perf_counter()
            fn(i)
            synchronize(device)
            times.append(time.perf_counter() - t0)
        return times

    times = timed(step, n, warmup)
    per_step = statistics.median(times)
    eval_s = 0.0
    if eval_batch is not None and eval_batches and evals:
        batch_s = statistics.median(timed(lambda _: eval_batch(), 2, 1))
        eval_s = batch_s * eval_batches * evals
    report = {
        "label": label,
        "seconds_per_step": per_step,
        "min_seconds_per_step": min(times),
        "timed_steps": n,
        "warmup_steps": warmup,
        "total_steps": total_steps,
        "projected_train_s": per_step * total_steps,
        "projected_eval_s": eval_s,
        "projected_wall_s": per_step * total_steps + eval_s,
        "device": device_name(device),
        "threads": torch.get_num_threads(),
        "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "config": config or {},
    }
    print(
        f"{label}: {per_step:.4g} s/step (median of {n} after {warmup} warm-up) on "
        f"{report['device']}; full run {total_steps} steps -> "
        f"{_duration(report['projected_wall_s'])} ({_duration(per_step * total_steps)} training "
        f"+ {_duration(eval_s)} evaluation); load average {report['load_average']}",
        flush=True,
    )
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        write_json(Path(out) / "timing.json", report)
    return report


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def device_name(device: torch.device) -> str:
    """``"cuda:0 (NVIDIA H100 ...)"`` or ``"cpu"``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)


# ----------------------------------------------------------------------------------------------
# results.json


RESULT_KEYS = ("experiment", "config", "metrics", "finished", "device", "wall_s", "steps")


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def write_results(
    out: str | os.PathLike,
    experiment: str,
    config: dict,
    metrics: dict,
    *,
    finished: bool,
    device: torch.device,
    wall_s: float,
    steps: int,
) -> dict:
    """Write ``out/results.json`` with the keys of :data:`RESULT_KEYS` and return it:
    ``experiment`` (``identity``, ``attention``, ``sort``), ``config`` (every setting),
    ``metrics`` (final numbers), ``finished`` (all configured steps done), ``device``,
    ``wall_s`` (seconds of training and evaluation over all pieces of the run) and ``steps``
    (training steps done)."""
    result = {
        "experiment": experiment,
        "config": config,
        "metrics": metrics,
        "finished": bool(finished),
        "device": device_name(device),
        "wall_s": round(float(wall_s), 2),
        "steps": int(steps),
    }
    write_json(Path(out) / "results.json", result)
    return result


# ----------------------------------------------------------------------------------------------
# the checkpointed training loop


class Trainer:
    """The training loop the experiments share: resume from ``out/checkpoint.pt``, evaluation
    (a CSV row and a checkpoint) every ``eval_every`` steps, at the end and when the per-call
    ``time_limit`` runs out, and losses kept on the device between evaluations.

    Args:
        out: the run folder (``checkpoint.pt`` and ``log.csv``).
        model, optimizer: restored in place when ``resume`` finds a checkpoint.
        generators: named generators whose states the checkpoint keeps (any device).
        total: training steps of the whole run.
        eval_every: steps between evaluations.
        columns: the CSV header (``step_key`` and ``wall_s`` included).
        resume: continue from the checkpoint if there is one (one written on another kind of
            device continues with reseeded generators); otherwise start afresh (an old
            ``log.csv`` is removed).
        time_limit: seconds this call may spend in the loop (training and evaluation); then it
            evaluates, checkpoints and stops. ``None``: no limit.
        step_key: name of the step column and of the checkpoint's step field.
        per_step_losses: one CSV row per training step (column ``loss``) instead of the mean
            over the interval (column ``train_loss``) on each evaluation row.
        checkpoint_every: extra checkpoints between evaluations (steps).
        show_progress, desc: the progress bar.

    ``wall`` counts seconds in the loop over every call of the run (setup excluded).
    """

    def __init__(
        self,
        out: str | os.PathLike,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        generators: dict[str, torch.Generator],
        *,
        total: int,
        eval_every: int,
        columns: Sequence[str],
        resume: bool,
        time_limit: float | None = None,
        step_key: str = "step",
        per_step_losses: bool = False,
        checkpoint_every: int | None = None,
        show_progress: bool = True,
        desc: str = "",
    ) -> None:
        self.out = Path(out)
        self.model, self.optimizer, self.generators = model, optimizer, generators
        self.total, self.eval_every = total, max(1, eval_every)
        self.time_limit, self.step_key = time_limit, step_key
        self.per_step_losses, self.checkpoint_every = per_step_losses, checkpoint_every
        self.show_progress, self.desc = show_progress, desc
        self.ckpt_path, self.csv_path = self.out / "checkpoint.pt", self.out / "log.csv"
        self.step, self.wall, self.extra = 0, 0.0, None
        state = load_checkpoint(self.ckpt_path) if resume else None
        if state is not None and "generators" not in state:
            raise ValueError(
                f"{self.ckpt_path} comes from an older version of the experiment code; "
                "start afresh (without --resume) or in another --out"
            )
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            self.step, self.wall, self.extra = state["step"], state["wall"], state.get("extra")
            for i, (name, generator) in enumerate(generators.items()):
                try:
                    generator.set_state(state["generators"][name])
                except (RuntimeError, ValueError):  # saved on another kind of device
                    warnings.warn(
                        f"generator {name!r} was saved on another device: reseeded, so this "
                        "run continues correctly but not bit for bit",
                        stacklevel=2,
                    )
                    generator.manual_seed(1_000_003 * self.step + i)
        elif self.csv_path.exists():
            self.csv_path.unlink()
        self.log = CSVLogger(self.csv_path, columns)
        self.log.truncate_after(step_key, self.step)

    def checkpoint(self, extra: Any = None) -> None:
        """Write model, optimizer, generator states, step, wall and ``extra`` atomically."""
        save_checkpoint(
            self.ckpt_path,
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "generators": {name: g.get_state() for name, g in self.generators.items()},
                "step": self.step,
                "wall": self.wall,
                "extra": extra,
            },
        )

    def run(
        self,
        train_step: Callable[[int], torch.Tensor],
        evaluate: Callable[[int], dict],
        *,
        before_step: Callable[[int], None] | None = None,
        after_eval: Callable[[int], None] | None = None,
        extra_state: Callable[[], Any] | None = None,
    ) -> bool:
        """Train until ``total`` steps or the time limit; return whether the run is finished.

        ``train_step(step)`` does one optimiser step (``step``: steps done before it) and
        returns the loss tensor; ``evaluate(step)`` returns the CSV columns of an evaluation
        row; ``before_step(step)`` and ``after_eval(step)`` are hooks; ``extra_state()`` is
        stored in every checkpoint (``self.extra`` after a resume). A fresh run (step 0)
        evaluates once before training.
        """
        t_call, wall_start = time.perf_counter(), self.wall
        losses = LossBuffer()

        def now_wall() -> float:
            return wall_start + time.perf_counter() - t_call

        def eval_row() -> None:
            rows = losses.drain()
            if self.per_step_losses:
                for step, loss, wall in rows:
                    self.log.log(**{self.step_key: step, "loss": loss, "wall_s": round(wall, 3)})
            row = {self.step_key: self.step, **evaluate(self.step)}
            if rows and not self.per_step_losses:
                row["train_loss"] = sum(loss for _, loss, _ in rows) / len(rows)
            self.wall = now_wall()
            self.log.log(**row, wall_s=round(self.wall, 3))
            if after_eval is not None:
                after_eval(self.step)

        if self.step == 0:
            eval_row()
        timed_out = False
        bar = progress(
            total=self.total, initial=self.step, enabled=self.show_progress, desc=self.desc
        )
        for _ in bar:
            if before_step is not None:
                before_step(self.step)
            loss = train_step(self.step)
            self.step += 1
            losses.add(self.step, loss, now_wall())
            timed_out = (
                self.time_limit is not None and time.perf_counter() - t_call > self.time_limit
            )
            if self.step % self.eval_every == 0 or self.step == self.total or timed_out:
                eval_row()
                self.checkpoint(extra_state() if extra_state else None)
            elif self.checkpoint_every and self.step % self.checkpoint_every == 0:
                self.wall = now_wall()
                self.checkpoint(extra_state() if extra_state else None)
            if timed_out:
                break
        self.wall = now_wall()
        return self.step >= self.total

    def evaluations(self, column: str) -> list[tuple[int, float]]:
        """``(step, value)`` of every logged row with ``column`` filled."""
        return [
            (int(r[self.step_key]), float(r[column]))
            for r in read_csv(self.csv_path)
            if r.get(column, "") != ""
        ]
