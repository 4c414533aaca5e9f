"""Training and evaluation: ``python -m bench.lm train``.

Each step draws ``batch`` random windows of ``seq + 1`` bytes from the train split (a
``torch.Generator`` seeded with ``--seed``), so dense, window and sparse runs with the same seed
see the same batches. AdamW (weight decay 0.01) with a linear warm-up over the first 5% of the
steps and a cosine decay to 10% of ``--lr``; gradients clipped at norm 1. The sparse
attentions draw their samples of step ``s`` with ``fold_seed(seed, s)``.

Bits per character: mean cross-entropy (log base 2) of every byte of non-overlapping windows of
``seq`` bytes (:func:`bench.lm.corpus.eval_windows`; at most ``--eval-chars``, spread evenly
over the split), each predicted from the bytes before it in its window. The model is evaluated in
``eval()`` mode, in which :class:`hyperkern.SparseSelfAttention` rounds its means (one key per
mean, no sampling); for the sparse model ``test_bpc_sampled`` adds the same measure in training
mode (sampled keys, fixed seed, no gradients). ``valid_bpc`` is the last log row's validation
(``--valid-chars`` bytes of the valid split).

Output under ``--out``: ``log.csv`` (one row per ``--eval-every`` steps: step, mean train
bits/char since the last row, validation bits/char, learning rate, seconds) and
``results.json`` (config, corpus, metrics, wall_s, steps, device).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from hyperkern.seeds import fold_seed

from .corpus import eval_windows, load_corpus, random_windows
from .model import KINDS, LanguageModel, ModelConfig, bits_per_char


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Model and device options, shared by ``train`` and ``profile``."""
    group = parser.add_argument_group("model")
    group.add_argument("--emb", type=int, default=64, help="embedding width")
    group.add_argument("--heads", type=int, default=4, help="attention heads")
    group.add_argument("--depth", type=int, default=2, help="transformer blocks")
    group.add_argument("--ff", type=int, default=None, help="feed-forward width (4 emb)")
    group.add_argument("--window", type=int, default=48, help="keys per query of 'window'")
    group.add_argument("--k", type=int, default=8, help="means per query and head of 'sparse'")
    group.add_argument("--n-local", type=int, default=2, help="local samples per mean")
    group.add_argument("--n-global", type=int, default=2, help="global samples per mean")
    group.add_argument("--region", type=int, default=8, help="local sampling region")
    group.add_argument("--hidden", type=int, default=None, help="source network width (emb)")
    group.add_argument(
        "--no-match-params",
        dest="match_params",
        action="store_false",
        help="keep the dense/window feed-forward at --ff instead of matching parameters",
    )
    group.add_argument("--backend", default="auto", help="sparse attention backend")
    group.add_argument("--checkpoint", action="store_true",
                       help="sparse: recompute the sampled attention in the backward")  # fmt: skip
    group.add_argument("--batch", type=int, default=8, help="windows per step")
    group.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    group.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    group.add_argument("--seed", type=int, default=0, help="data, initialisation and samples")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--attention", choices=KINDS, default="dense")
    parser.add_argument("--seq", type=int, default=512, help="sequence length t")
    add_model_arguments(parser)
    run = parser.add_argument_group("training")
    run.add_argument("--steps", type=int, default=300, help="training steps")
    run.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    run.add_argument("--eval-every", type=int, default=None, help="steps per log row (steps/10)")
    run.add_argument("--valid-chars", type=int, default=2**15, help="bytes per validation")
    run.add_argument("--eval-chars", type=int, default=2**17, help="test bytes (0: all)")
    run.add_argument("--corpus", default=None, help="folder of *.py files (the stdlib)")
    run.add_argument("--valid-fraction", type=float, default=0.05, help="share of files")
    run.add_argument("--test-fraction", type=float, default=0.05, help="share of files")
    run.add_argument("--out", default=None, help="output folder (runs/lm/<attention>-t<seq>)")


def resolve_device(name: str) -> torch.device:
    """``--device``: ``auto`` is the first GPU if there is one, else the CPU."""
    return torch.device(name if name != "auto" else "cuda" if torch.cuda.is_available() else "cpu")


def model_config(args: argparse.Namespace, attention: str, seq: int) -> ModelConfig:
    keys = ("emb", "heads", "depth", "ff", "window", "k", "n_local", "n_global", "region")
    extra = ("hidden", "match_params", "backend", "checkpoint")
    options = {key: getattr(args, key) for key in (*keys, *extra)}
    return ModelConfig(attention=attention, seq=seq, **options)


def cpu_name() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (the architecture where that is missing)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> dict[str, object]:
    """Device, threads, versions and the load average (a shared machine inflates times)."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {
        "device": f"{device} ({name})",
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def make_step(
    model: LanguageModel, optimizer: torch.optim.Optimizer, schedule: Callable[[int], float]
) -> Callable[[Tensor, Tensor, int], Tensor]:
    """One training step ``step(x, y, seed) -> bits/char`` (a 0-d tensor, not read back):
    forward, backward, clipping, optimizer step at the learning rate ``schedule(number)``."""
    count = [0]

    def step(x: Tensor, y: Tensor, seed: int) -> Tensor:
        for group in optimizer.param_groups:
            group["lr"] = schedule(count[0])
        count[0] += 1
        optimizer.zero_grad(set_to_none=True)
        loss = bits_per_char(model(x, seed=seed), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss.detach()

    return step


def cosine_schedule(lr: float, steps: int, warmup: float = 0.05, floor: float = 0.1):
    """Linear warm-up over ``warmup * steps``, then cosine from ``lr`` to ``floor * lr``."""
    ramp = max(1, round(warmup * steps))

    def at(step: int) -> float:
        if step < ramp:
            return lr * (step + 1) / ramp
        progress = min(1.0, (step - ramp) / max(1, steps - ramp))
        return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))

    return at


@torch.no_grad()
def evaluate(
    model: LanguageModel,
    data: Tensor,
    batch: int,
    max_chars: int | None,
    device: torch.device,
    sampled_seed: int | None = None,
) -> float:
    """Bits per character of ``data`` (see the module docstring); ``sampled_seed`` evaluates in
    training mode with the samples of that seed."""
    inputs, targets = eval_windows(data, model.cfg.seq, max_chars)
    was_training = model.training
    model.train(sampled_seed is not None)
    total = 0.0
    for start in range(0, inputs.shape[0], batch):
        x, y = inputs[start : start + batch].to(device), targets[start : start + batch].to(device)
        seed = None if sampled_seed is None else fold_seed(sampled_seed, start)
        total += bits_per_char(model(x, seed=seed), y).item() * y.numel()
    model.train(was_training)
    return total / targets.numel()


def run(args: argparse.Namespace) -> dict:
    """Train one model; write ``log.csv`` and ``results.json``; return the results."""
    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    started = time.perf_counter()
    corpus = load_corpus(args.corpus, args.valid_fraction, args.test_fraction)
    cfg = model_config(args, args.attention, args.seq)
    out = Path(args.out or f"runs/lm/{args.attention}-t{args.seq}")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    model = LanguageModel(cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    step = make_step(model, optimizer, cosine_schedule(args.lr, args.steps))
    batches = torch.Generator().manual_seed(args.seed)
    every = args.eval_every or max(1, args.steps // 10)
    eval_chars = args.eval_chars or None
    log_path = out / "log.csv"
    columns = ["step", "train_bpc", "valid_bpc", "lr", "wall_s"]
    with log_path.open("w", newline="") as handle:
        csv.writer(handle).writerow(columns)
    losses: list[Tensor] = []
    train_s = 0.0
    begin = time.perf_counter()
    for number in range(args.steps):
        x, y = random_windows(corpus.data["train"], args.seq, args.batch, batches)
        losses.append(step(x.to(device), y.to(device), fold_seed(args.seed, number)))
        if (number + 1) % every == 0 or number + 1 == args.steps:
            train_bpc = torch.stack(losses).mean().item()
            train_s += time.perf_counter() - begin
            valid = evaluate(model, corpus.data["valid"], args.batch, args.valid_chars, device)
            row = [number + 1, train_bpc, valid, optimizer.param_groups[0]["lr"], train_s]
            with log_path.open("a", newline="") as handle:
                csv.writer(handle).writerow(row)
            print(
                f"step {number + 1}: {train_bpc:.4f} train, {valid:.4f} valid bits/char", flush=True
            )
            losses = []
            begin = time.perf_counter()
    metrics = {
        "test_bpc": evaluate(model, corpus.data["test"], args.batch, eval_chars, device),
        "valid_bpc": valid,
        "train_bpc_last": train_bpc,
    }
    if cfg.attention == "sparse":
        metrics["test_bpc_sampled"] = evaluate(
            model, corpus.data["test"], args.batch, eval_chars, device, sampled_seed=args.seed
        )
    result = {
        "benchmark": "lm",
        "config": {**cfg.info(), **_train_settings(args)},
        "corpus": corpus.info(),
        "metrics": metrics,
        "steps": args.steps,
        "train_s": round(train_s, 2),
        "wall_s": round(time.perf_counter() - started, 2),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": getattr(args, "command_line", None),
        **machine(device),
    }
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(metrics), flush=True)
    return result


def _train_settings(args: argparse.Namespace) -> dict[str, object]:
    keys = ("steps", "batch", "lr", "seed", "eval_every", "valid_chars", "eval_chars")
    return {key: getattr(args, key) for key in keys}
