"""HyperLSTM on a small sequence task: next-step prediction of noisy sine waves whose frequency,
phase and amplitude change from sequence to sequence (the model must infer them as it reads).

Reports the training loss curve and the test MSE (steps after a warm-up) next to the
"repeat the last value" baseline.

Example: python examples/hyperlstm_sequence.py --steps 300
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from hyperkern.hypernets import HyperLSTM


def make_batch(batch: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """Noisy sine waves ``(batch, length + 1, 1)``: inputs are ``[:, :-1]``, targets ``[:, 1:]``."""
    freq = 0.03 + 0.17 * torch.rand(batch, 1, generator=generator)
    phase = 2 * math.pi * torch.rand(batch, 1, generator=generator)
    amp = 0.5 + torch.rand(batch, 1, generator=generator)
    t = torch.arange(length + 1, dtype=torch.float32)
    wave = amp * torch.sin(2 * math.pi * freq * t + phase)
    noise = 0.05 * torch.randn(batch, length + 1, generator=generator)
    return (wave + noise).unsqueeze(-1)


class Predictor(nn.Module):
    """HyperLSTM followed by a linear read-out: ``(b, t, 1) -> (b, t, 1)``."""

    def __init__(self, hidden: int, hyper_hidden: int, hyper_embedding: int, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.rnn = HyperLSTM(1, hidden, hyper_hidden, hyper_embedding, seed=seed)
        self.readout = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.readout(self.rnn(x)[0])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--length", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10, help="steps ignored by the test MSE")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--hyper-hidden", type=int, default=16)
    parser.add_argument("--hyper-embedding", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Train, evaluate; returns (and prints as JSON) settings, losses and test MSEs."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    data = torch.Generator().manual_seed(args.seed)
    test = make_batch(256, args.length, torch.Generator().manual_seed(args.seed + 10_000))
    model = Predictor(args.hidden, args.hyper_hidden, args.hyper_embedding, args.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    losses: list[float] = []
    start = time.perf_counter()
    for _ in range(args.steps):
        seq = make_batch(args.batch_size, args.length, data)
        loss = F.mse_loss(model(seq[:, :-1]), seq[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    train_seconds = time.perf_counter() - start
    with torch.no_grad():
        pred = model(test[:, :-1])[:, args.warmup :]
        target = test[:, 1:][:, args.warmup :]
        last_value = test[:, :-1][:, args.warmup :]
        test_mse = F.mse_loss(pred, target).item()
        baseline_mse = F.mse_loss(last_value, target).item()
    result = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "length": args.length,
        "hidden": args.hidden,
        "hyper_hidden": args.hyper_hidden,
        "hyper_embedding": args.hyper_embedding,
        "seed": args.seed,
        "threads": args.threads,
        "first_loss": sum(losses[:10]) / max(len(losses[:10]), 1),
        "last_loss": sum(losses[-10:]) / max(len(losses[-10:]), 1),
        "test_mse": test_mse,
        "last_value_baseline_mse": baseline_mse,
        "noise_floor_mse": 0.05**2,
        "train_seconds": round(train_seconds, 1),
    }
    print(json.dumps(result))
    result["losses"] = losses
    return result


if __name__ == "__main__":
    main()
