"""MNIST with hypernetworks: the tutorial's three setups, done with hyperkern.hypernets.

--kind full        FullHypernetwork: learned embedding -> every weight of a 784-h-10 MLP
                   (output sized exactly to the MLP's parameter count).
--kind chunked     ChunkedHypernetwork: the same MLP generated in fixed-size chunks by one
                   shared generator with learned chunk embeddings.
--kind per-sample  PerSampleMLPHypernetwork: an encoder maps each image to an embedding e_b and
                   every image is classified by its own generated 784-h-10 MLP.

Example: python examples/hypernet_mnist.py --kind full --epochs 1 --train-size 20000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hyperkern.hypernets import (
    ChunkedHypernetwork,
    FullHypernetwork,
    PerSampleMLPHypernetwork,
    count_params,
)

# The offline MNIST loader lives with the paper experiments in bench/ (a source checkout, not the
# installed package): put the repository root on the path so this script runs from anywhere.
ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
from bench.experiments.data.mnist import load_mnist  # noqa: E402

MEAN, STD = 0.1307, 0.3081


def load_split(split: str, size: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First ``size`` images of a seeded permutation of ``split``: ``(n, 784)`` float, ``(n,)``."""
    images, labels = load_mnist(split)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    if size is not None:
        order = order[:size]
    x = (images[order].reshape(len(order), -1).float() / 255.0 - MEAN) / STD
    return x, labels[order]


class PerSampleClassifier(nn.Module):
    """Encoder ``(b, 784) -> (b, e_dim)`` then each sample's own generated MLP."""

    def __init__(self, hidden: int, embedding_dim: int, path: str, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.encoder = nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, embedding_dim))
        self.hyper = PerSampleMLPHypernetwork(
            (784, hidden, 10), embedding_dim, gain=2**0.5, seed=seed
        )
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.encoder(x)
        e = e / e.pow(2).mean(dim=1, keepdim=True).add(1e-6).sqrt()  # E[e²] = 1 for hyperfan
        return self.hyper(x, e, backend=self.path)


def build_model(kind: str, hidden: int, path: str, seed: int) -> nn.Module:
    target = nn.Sequential(nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    if kind == "full":
        return FullHypernetwork(target, embedding_dim=8, hidden_sizes=(32,), gain=2**0.5, seed=seed)
    if kind == "chunked":
        return ChunkedHypernetwork(
            target,
            chunk_size=1024,
            embedding_dim=8,
            chunk_embedding_dim=8,
            hidden_sizes=(64,),
            gain=2**0.5,
            seed=seed,
        )
    if kind == "per-sample":
        return PerSampleClassifier(hidden, embedding_dim=8, path=path, seed=seed)
    raise ValueError(f"kind must be full, chunked or per-sample, got {kind!r}")


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    model.eval()
    correct = sum(
        (model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum().item()
        for i in range(0, len(y), batch_size)
    )
    model.train()
    return correct / max(len(y), 1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=["full", "chunked", "per-sample"], default="full")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-size", type=int, default=20000)
    parser.add_argument("--test-size", type=int, default=None, help="default: all 10 000")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument(
        "--path", default="auto", help="per-sample path (auto: fused on CUDA, else outer)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Train and evaluate; returns (and prints as JSON) settings, losses and test accuracy."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    path = args.path if args.path != "auto" else ("fused" if device.type == "cuda" else "outer")
    x_train, y_train = load_split("train", args.train_size, args.seed)
    x_test, y_test = load_split("test", args.test_size, args.seed)
    x_train, y_train = x_train.to(device), y_train.to(device)
    x_test, y_test = x_test.to(device), y_test.to(device)
    model = build_model(args.kind, args.hidden, path, args.seed).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    shuffle = torch.Generator().manual_seed(args.seed + 1)
    losses: list[float] = []
    start = time.perf_counter()
    for _ in range(args.epochs):
        order = torch.randperm(len(y_train), generator=shuffle).to(device)
        for i in range(0, len(order), args.batch_size):
            batch = order[i : i + args.batch_size]
            loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    train_seconds = time.perf_counter() - start
    result = {
        "kind": args.kind,
        "path": path if args.kind == "per-sample" else None,
        "epochs": args.epochs,
        "train_size": len(y_train),
        "test_size": len(y_test),
        "batch_size": args.batch_size,
        "hidden": args.hidden,
        "seed": args.seed,
        "device": str(device),
        "threads": args.threads,
        "hypernet_params": sum(p.numel() for p in model.parameters()),
        "target_params": count_params(
            nn.Sequential(nn.Linear(784, args.hidden), nn.Linear(args.hidden, 10))
        ),
        "first_loss": sum(losses[:10]) / max(len(losses[:10]), 1),
        "last_loss": sum(losses[-10:]) / max(len(losses[-10:]), 1),
        "train_seconds": round(train_seconds, 1),
        "test_accuracy": accuracy(model, x_test, y_test),
    }
    print(json.dumps(result))
    result["losses"] = losses
    return result


if __name__ == "__main__":
    main()
