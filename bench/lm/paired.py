"""Paired timing: several models' training steps in one process, taken in turn.

``python -m bench.lm paired --seq 2048 --rounds 5 --variant dense:k=4 --variant sparse:k=4
--variant sparse:k=4,checkpoint``: one step of each variant per round, in the order given, so a
change of the machine's load during the call hits every variant alike (the profile command runs
each configuration in its own process, minutes apart). Prints the median, minimum and maximum
seconds per step of each variant and the 1-minute load average; ``--json`` writes them too.
A variant is ``attention[:option=value,...]`` with the options of :class:`ModelConfig`
(``checkpoint`` alone means ``checkpoint=True``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import fields
from pathlib import Path

import torch

from .model import ModelConfig
from .profile import _setup

DEFAULT_VARIANTS = ("dense:k=4", "sparse:k=4", "sparse:k=4,checkpoint", "dense", "sparse")


def parse_variant(text: str, seq: int) -> ModelConfig:
    """``"sparse:k=4,checkpoint"`` -> ``ModelConfig(attention="sparse", k=4, checkpoint=True)``."""
    attention, _, options = text.partition(":")
    types = {f.name: f.type for f in fields(ModelConfig)}
    values: dict[str, object] = {}
    for item in filter(None, options.split(",")):
        name, has_value, value = item.partition("=")
        if name not in types or name in ("attention", "seq"):
            raise ValueError(f"unknown option {name!r} in variant {text!r}")
        if not has_value:
            values[name] = True
        elif value in ("True", "False"):
            values[name] = value == "True"
        else:
            values[name] = int(value) if value.lstrip("-").isdigit() else value
    return ModelConfig(attention=attention, seq=seq, **values)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seq", type=int, default=2048, help="sequence length t")
    parser.add_argument("--rounds", type=int, default=5, help="timed steps per variant")
    parser.add_argument("--batch", type=int, default=4, help="windows per step")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    variants = " ".join(DEFAULT_VARIANTS)
    parser.add_argument("--variant", action="append", default=None,
                        help=f"attention[:option=value,...] (default: {variants})")  # fmt: skip
    parser.add_argument("--json", default=None, help="also write the rows to this file")


def run(args: argparse.Namespace) -> list[dict[str, object]]:
    torch.set_num_threads(args.threads)
    variants = args.variant or list(DEFAULT_VARIANTS)
    steps = {
        v: _setup(parse_variant(v, args.seq), args.batch, torch.device("cpu")) for v in variants
    }
    for step in steps.values():
        step(0)  # warm-up: optimizer state, allocator
    times: dict[str, list[float]] = {v: [] for v in variants}
    loads = []
    for number in range(1, args.rounds + 1):
        for variant, step in steps.items():
            start = time.perf_counter()
            step(number)
            times[variant].append(time.perf_counter() - start)
        loads.append(os.getloadavg()[0])
    rows = [
        dict(variant=v, seq=args.seq, batch=args.batch, rounds=args.rounds,
             median_s=statistics.median(t), min_s=min(t), max_s=max(t),
             load_min=min(loads), load_max=max(loads))
        for v, t in times.items()
    ]  # fmt: skip
    print(f"t = {args.seq}, {args.rounds} rounds, load average {min(loads):.2f}-{max(loads):.2f}")
    for row in rows:
        print(f"  {row['variant']:28s} median {row['median_s']:.3f} s "
              f"(min {row['min_s']:.3f}, max {row['max_s']:.3f})")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return rows
