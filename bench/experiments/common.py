"""Shared plumbing for the experiment scripts: CSV logs, checkpoints, progress, seeding, plots."""

from __future__ import annotations

import csv
import os
import random
import tempfile
from collections.abc import Iterable, Iterator, Sequence
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
