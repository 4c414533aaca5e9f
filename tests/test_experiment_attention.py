"""Attention experiment: glimpse geometry, one connection per output pixel, CLI smoke + resume."""

import json
import math

import pytest
import torch

from bench.experiments.__main__ import main
from bench.experiments.attention import (
    ConvNetBaseline,
    GlimpseNet,
    SourceConvNet,
    loss_fn,
    parameter_groups,
)
from bench.experiments.common import read_csv

CANVAS = 24


def _net(glimpses=2, size=3, **kw) -> GlimpseNet:
    torch.manual_seed(0)
    return GlimpseNet(
        glimpses, size, canvas=CANVAS, n_local=3, n_global=2, region=(5, 5), width=0.125, **kw
    )


def _fixed_boxes(net: GlimpseNet, boxes: torch.Tensor) -> None:
    """Make the source output ``boxes (g, 4)`` raw for every image."""
    head = net.source.head[-1]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(boxes.flatten())


def test_source_convnet_shapes():
    net = SourceConvNet(12, canvas=CANVAS, width=0.25)
    assert net(torch.rand(3, 1, CANVAS, CANVAS)).shape == (3, 12)
    assert SourceConvNet(4)(torch.rand(1, 1, 100, 100)).shape == (1, 4)  # paper's 100x100 input


def test_means_are_equally_spaced_in_the_raw_box():
    net = _net(glimpses=2, size=3)
    boxes = torch.tensor([[-1.0, -2.0, 1.0, 2.0], [0.5, 0.0, 0.5, 3.0]])
    _fixed_boxes(net, boxes)
    raw = net.raw_means(torch.rand(2, 1, CANVAS, CANVAS))
    assert raw.shape == (2, 2 * 9, 2)
    first = raw[0, :9].view(3, 3, 2)
    assert torch.allclose(first[:, 0, 0], torch.tensor([-1.0, 0.0, 1.0]))  # rows along y
    assert torch.allclose(first[0, :, 1], torch.tensor([-2.0, 0.0, 2.0]))  # columns along x
    second = raw[1, 9:].view(3, 3, 2)
    assert torch.allclose(second[..., 0], torch.full((3, 3), 0.5))
    assert torch.allclose(second[0, :, 1], torch.tensor([0.0, 1.5, 3.0]))


def test_each_output_pixel_gets_exactly_its_glimpse_value_on_a_flat_image():
    net = _net(glimpses=2, size=4)
    with torch.no_grad():
        net.values.copy_(torch.tensor([0.7, -1.3]))
        net.sigmas.fill_(1.0)  # wide: each mean still spreads only over its own samples
    out = net.glimpse(torch.ones(3, 1, CANVAS, CANVAS), generator=torch.Generator().manual_seed(0))
    expected = torch.tensor([0.7, -1.3]).view(1, 2, 1, 1).expand(3, 2, 4, 4)
    assert torch.allclose(out, expected, atol=1e-5)


def test_eval_glimpse_reads_the_pixels_at_the_rounded_means():
    net = _net(glimpses=1, size=3).eval()
    with torch.no_grad():
        net.values.fill_(2.0)
    x = torch.rand(2, 1, CANVAS, CANVAS)
    out = net.glimpse(x)
    idx = net.last_means.round().long()  # (b, k, 2)
    for b in range(2):
        picked = x[b, 0, idx[b, :, 0], idx[b, :, 1]]
        assert torch.allclose(out[b].flatten(), 2.0 * picked)


def test_eval_mode_sample_is_the_training_read_with_seed_zero():
    from hyperkern.seeds import seed_tensor

    net = _net(glimpses=2, size=3, eval_mode="sample")
    x = torch.rand(2, 1, CANVAS, CANVAS)
    trained_read = net.glimpse(x, generator=seed_tensor(0, x.device))
    net.eval()
    assert torch.equal(net.glimpse(x), trained_read)
    assert torch.equal(net.glimpse(x), trained_read)  # the same draw on every call
    rounded = _net(glimpses=2, size=3).eval().glimpse(x)
    assert not torch.allclose(rounded, trained_read)
    with pytest.raises(ValueError, match="eval_mode must be one of"):
        _net(eval_mode="corners")


def test_gradients_reach_source_sigmas_and_values():
    net = _net()
    x = torch.rand(4, 1, CANVAS, CANVAS)
    logits = net(x, generator=torch.Generator().manual_seed(1))
    assert logits.shape == (4, 10)
    loss_fn(logits, torch.tensor([0, 1, 2, 3]), "bce").backward()
    assert net.source.head[-1].weight.grad.abs().sum() > 0
    assert net.sigmas.grad.abs().sum() > 0 and net.values.grad.abs().sum() > 0


def test_loss_fn_bce_matches_definition():
    logits = torch.randn(5, 10, dtype=torch.float64)
    labels = torch.tensor([0, 3, 9, 9, 1])
    p = logits.softmax(-1)
    onehot = torch.nn.functional.one_hot(labels, 10).double()
    manual = -(onehot * p.log() + (1 - onehot) * (1 - p).log()).mean()
    assert torch.allclose(loss_fn(logits, labels, "bce"), manual)


SMOKE = [
    "--canvas", "32", "--width", "0.25", "--glimpses", "2", "--glimpse-size", "4",
    "--n-local", "4", "--n-global", "2", "--region", "6", "6", "--train-size", "64",
    "--test-size", "32", "--batch-size", "16", "--lr", "3e-3", "--no-progress",
]  # fmt: skip


def test_smoke_glimpse_and_convnet_loss_falls(tmp_path):
    # the ConvNet leaves chance level slowly: it gets cross-entropy and a smaller bar (its first
    # epoch starts at ~log 10 = 2.30)
    for model, extra, drop in (("glimpse8", [], 0.1), ("convnet", ["--loss", "ce"], 0.03)):
        out = tmp_path / model
        result = main(["attention", "--model", model, *SMOKE, "--epochs", "6", *extra,
                       "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])  # fmt: skip
        losses = [float(r["train_loss"]) for r in read_csv(out / "log.csv") if r["train_loss"]]
        assert len(losses) == 6 and losses[-1] < (1 - drop) * losses[0], (model, losses)
        assert result["finished"] and result["steps"] == 24
        assert 0.0 <= result["metrics"]["test_error"] <= 1.0
        assert result["config"]["model"] == model and result["config"]["test_size"] == 32
        assert json.loads((out / "results.json").read_text()) == result
        assert (out / "test_error.png").stat().st_size > 0
    assert (tmp_path / "glimpse8" / "glimpses.png").stat().st_size > 0


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_resume_matches_uninterrupted_run(tmp_path, schedule):
    args = ["attention", "--model", "glimpse1", *SMOKE, "--cache-dir", str(tmp_path / "c"),
            "--eval-every", "3", "--train-size", "48", "--test-size", "16",
            "--lr-schedule", schedule, "--source-lr", "1e-4"]  # fmt: skip
    main([*args, "--epochs", "2", "--out", str(tmp_path / "a")])
    main([*args, "--epochs", "2", "--out", str(tmp_path / "b"), "--time-limit", "0"])
    main([*args, "--epochs", "2", "--out", str(tmp_path / "b"), "--resume"])
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    assert a["step"] == b["step"] == 6
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    # the last step (index 5 of 6) trained each group at its lr times the schedule's factor
    factor = 0.5 * (1 + math.cos(math.pi * 5 / 6)) if schedule == "cosine" else 1.0
    groups = a["optimizer"]["param_groups"]
    assert [g["lr"] for g in groups] == pytest.approx([g["initial_lr"] * factor for g in groups])
    assert sorted(g["initial_lr"] for g in groups) == pytest.approx([1e-4, 3e-3])


def test_evaluate_only_reevaluates_the_checkpoint(tmp_path):
    args = ["attention", "--model", "glimpse1", *SMOKE, "--cache-dir", str(tmp_path / "c"),
            "--epochs", "1", "--out", str(tmp_path / "run")]  # fmt: skip
    with pytest.raises(ValueError, match="needs a checkpoint"):
        main([*args, "--evaluate-only"])
    result = main([*args, "--recipe", "improved"])
    assert result["config"]["eval_mode"] == "sample"
    again = main([*args, "--recipe", "improved", "--evaluate-only"])
    assert again["test_error"] == result["metrics"]["test_error"]
    assert (again["eval_mode"], again["step"], again["eval_split"]) == ("sample", 4, "test")
    saved = json.loads((tmp_path / "run" / "eval-test-sample.json").read_text())
    assert saved == again
    assert json.loads((tmp_path / "run" / "results.json").read_text()) == result  # untouched
    val = main([*args, "--evaluate-only", "--eval-mode", "round", "--eval-split", "val"])
    assert val["eval_mode"] == "round" and 0.0 <= val["test_error"] <= 1.0
    assert (tmp_path / "run" / "eval-val-round.json").exists()


def test_time_steps_with_bf16_projects_the_configured_run(tmp_path):
    report = main(["attention", "--model", "glimpse8", *SMOKE, "--epochs", "5", "--bf16",
                   "--time-steps", "2", "--cache-dir", str(tmp_path / "c"),
                   "--out", str(tmp_path / "t")])  # fmt: skip
    assert report["total_steps"] == 5 * 4 and report["seconds_per_step"] > 0
    assert report["projected_eval_s"] > 0 and report["config"]["bf16"] is True
    assert report["config"]["source_lr"] is None  # the paper's recipe: one lr
    improved = main(["attention", *SMOKE, "--recipe", "improved", "--time-steps", "1",
                     "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "i")])  # fmt: skip
    assert improved["config"]["source_lr"] == 1e-4 and improved["config"]["lr"] == 3e-3
    assert (tmp_path / "t" / "timing.json").exists()
    assert not (tmp_path / "t" / "checkpoint.pt").exists()


def test_bf16_keeps_the_sparse_part_in_float32():
    net = _net()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net.glimpse(torch.rand(2, 1, CANVAS, CANVAS), generator=torch.Generator())
        logits = net.classifier(out.flatten(1))
    assert out.dtype == torch.float32 and logits.dtype == torch.bfloat16
    assert net.last_means.dtype == torch.float32


def test_source_lr_puts_the_source_convnet_in_its_own_group():
    net = _net()
    source = {id(p) for p in net.source.parameters()}
    rest, inner = parameter_groups(net, 1e-3, 1e-4)
    assert (rest["lr"], inner["lr"]) == (1e-3, 1e-4)
    assert {id(p) for p in inner["params"]} == source
    assert not source & {id(p) for p in rest["params"]}
    assert len(rest["params"]) + len(inner["params"]) == len(list(net.parameters()))
    for model in (net, ConvNetBaseline(CANVAS, 0.125)):  # one group without --source-lr
        (group,) = parameter_groups(model, 1e-3, None)
        assert len(group["params"]) == len(list(model.parameters()))
