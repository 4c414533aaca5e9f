"""Identity experiment: the CLI smoke run (loss falls), resume, fixed values, timing and the
REINFORCE baseline."""

import json

import torch

from bench.experiments.__main__ import main
from bench.experiments.common import RESULT_KEYS, read_csv
from bench.experiments.identity import (
    PAPER_SETTINGS,
    ReinforceIdentity,
    diagonal_covered,
    evaluate,
    settings_for,
)


def _train_losses(path):
    return [float(r["train_loss"]) for r in read_csv(path) if r["train_loss"]]


def test_paper_settings():
    assert settings_for(8)[:3] == (0.005, 1, 2)
    assert settings_for(16)[:3] == (0.005, 2, 2)
    assert settings_for(32)[:3] == (0.005, 2, 8)
    assert settings_for(64)[:3] == (0.001, 2, 10)
    for size, (_, n_local, n_global, _) in PAPER_SETTINGS.items():
        assert n_local + n_global <= 2 * torch.tensor(float(size)).log2()  # 32, 64: equal
    _, n_local, n_global, _ = settings_for(48)
    assert n_local + n_global <= 2 * torch.tensor(48.0).log2()


def test_smoke_sparse_and_reinforce_loss_falls(tmp_path):
    out = tmp_path / "id"
    result = main(
        [
            "identity",
            "--sizes",
            "6",
            "--method",
            "both",
            "--iterations",
            "240",
            "--recipe",
            "paper",
            "--eval-every",
            "60",
            "--eval-size",
            "256",
            "--snapshots",
            "0",
            "120",
            "--lr",
            "0.02",
            "--reinforce-lr",
            "0.01",
            "--out",
            str(out),
            "--no-progress",
            "--seed",
            "1",
        ]
    )
    for name in ("sparse-n6", "reinforce-n6"):
        losses = _train_losses(out / name / "log.csv")
        assert len(losses) == 4
        assert losses[-1] < 0.8 * losses[0], (name, losses)
        assert result[name]["finished"] and result[name]["steps"] == 240
        assert (out / name / "means.png").stat().st_size > 0
        assert len(torch.load(out / name / "snapshots.pt", weights_only=False)) == 2
        saved = json.loads((out / name / "results.json").read_text())
        assert tuple(saved) == RESULT_KEYS and saved == result[name]
        assert saved["experiment"] == "identity" and saved["config"]["size"] == 6
        assert saved["metrics"]["eval_mse"] == float(
            read_csv(out / name / "log.csv")[-1]["eval_loss"]
        )
    assert (out / "loss.png").stat().st_size > 0


def test_resume_matches_uninterrupted_run(tmp_path):
    common = [
        "--sizes",
        "5",
        "--eval-every",
        "10",
        "--eval-size",
        "64",
        "--no-progress",
        "--recipe",
        "paper",
        "--snapshots",
    ]
    main(["identity", *common, "--iterations", "30", "--out", str(tmp_path / "a")])
    main(["identity", *common, "--iterations", "10", "--out", str(tmp_path / "b")])
    main(["identity", *common, "--iterations", "30", "--out", str(tmp_path / "b"), "--resume"])
    a = torch.load(tmp_path / "a" / "sparse-n5" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "sparse-n5" / "checkpoint.pt", weights_only=False)
    assert a["step"] == b["step"] == 30
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    rows_a = read_csv(tmp_path / "a" / "sparse-n5" / "log.csv")
    rows_b = read_csv(tmp_path / "b" / "sparse-n5" / "log.csv")
    assert [r["eval_loss"] for r in rows_a] == [r["eval_loss"] for r in rows_b]


def test_time_limit_stops_and_says_unfinished(tmp_path):
    result = main(
        [
            "identity",
            "--sizes",
            "4",
            "--iterations",
            "100000",
            "--time-limit",
            "0",
            "--eval-size",
            "32",
            "--out",
            str(tmp_path),
            "--no-progress",
            "--snapshots",
        ]
    )
    assert result["sparse-n4"]["finished"] is False
    assert result["sparse-n4"]["steps"] == 1


def test_fix_values_holds_every_value_at_one(tmp_path):
    """--fix-values (the original code's -F): values 1 and frozen, k = n, no penalty and no
    values-only phase; the means still learn. Both methods."""
    result = main(
        [
            "identity",
            "--sizes",
            "4",
            "--method",
            "both",
            "--fix-values",
            "--iterations",
            "40",
            "--eval-every",
            "20",
            "--eval-size",
            "64",
            "--snapshots",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )
    for name in ("sparse-n4", "reinforce-n4"):
        config = result[name]["config"]
        assert config["fix_values"] and config["k"] == 4, config
        assert config["finetune_steps"] == 0 and config["neg_penalty"] == 0.0
        assert result[name]["steps"] == 40
        state = torch.load(tmp_path / name / "checkpoint.pt", weights_only=False)
        assert torch.equal(state["model"]["values"], torch.ones(4))
        assert len(state["optimizer"]["param_groups"][0]["params"]) == 2  # means and sigmas
        assert state["optimizer"]["state"][0]["step"] == 40  # the means did learn


def test_time_steps_measures_without_training(tmp_path):
    report = main(
        [
            "identity",
            "--sizes",
            "4",
            "--recipe",
            "paper",
            "--time-steps",
            "3",
            "--eval-size",
            "32",
            "--out",
            str(tmp_path),
            "--no-progress",
        ]
    )["sparse-n4"]
    assert report["seconds_per_step"] > 0 and report["timed_steps"] == 3
    assert report["total_steps"] == settings_for(4)[3]
    assert report["projected_wall_s"] >= report["seconds_per_step"] * report["total_steps"]
    saved = json.loads((tmp_path / "sparse-n4" / "timing.json").read_text())
    assert saved["seconds_per_step"] == report["seconds_per_step"]
    assert not (tmp_path / "sparse-n4" / "checkpoint.pt").exists()


def test_reinforce_model_builds_w_from_tuples_and_rounds_in_eval():
    model = ReinforceIdentity(4, 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.values.copy_(torch.tensor([1.0, 2.0, 3.0]))
    w = model.dense(torch.tensor([[0, 1], [2, 2], [0, 1]]))
    expected = torch.zeros(4, 4)
    expected[0, 1], expected[2, 2] = 4.0, 2.0
    assert torch.equal(w, expected)
    both = model.dense(torch.tensor([[[0, 1], [2, 2], [0, 1]], [[3, 3], [3, 3], [1, 0]]]))
    assert torch.equal(both[0], expected) and both[1, 3, 3] == 3.0 and both[1, 1, 0] == 3.0

    model4 = ReinforceIdentity(4, 4)
    with torch.no_grad():  # means on the diagonal, values 1: eval loss 0
        diag = torch.logit(torch.tensor([0.0, 1.0, 2.0, 3.0]).clamp(1e-3, 3 - 1e-3) / 3)
        model4.means.copy_(diag[:, None].repeat(1, 2))
        model4.values.fill_(1.0)
    assert evaluate(model4, 4, 100, 0, torch.device("cpu")) == 0.0
    assert diagonal_covered(model4) == 4
    with torch.no_grad():
        model4.means[1] = model4.means[2]  # two means on (2, 2), none on (1, 1)
    assert diagonal_covered(model4) == 3

    model.train()
    x = torch.randn(2, 4)
    y = model(x, generator=torch.Generator().manual_seed(1))
    tuples, _ = model.sample(2, torch.Generator().manual_seed(1))
    for b in range(2):  # each instance through its own sampled W
        assert torch.allclose(y[b], model.dense(tuples[b]) @ x[b])
    assert model.last_log_prob.shape == (2,)
    model.last_log_prob.sum().backward()
    assert model.means.grad.abs().sum() > 0 and model.sigmas.grad.abs().sum() > 0


def test_improved_recipe_fits_small_identity_with_means_rounded(tmp_path):
    """The demo's recipe (k = 2n, negative-value penalty, values fine-tuned with means rounded)
    on n = 4: the rounded evaluation, the paper's metric, gets well below W = 0's 1.0."""
    result = main(
        [
            "identity",
            "--sizes",
            "4",
            "--iterations",
            "600",
            "--finetune-steps",
            "200",
            "--eval-every",
            "300",
            "--eval-size",
            "512",
            "--snapshots",
            "--out",
            str(tmp_path),
            "--no-progress",
            "--seed",
            "0",
        ]
    )["sparse-n4"]
    config, metrics = result["config"], result["metrics"]
    assert config["k"] == 8 and config["neg_penalty"] == 1.0 and config["recipe"] == "improved"
    assert result["steps"] == 800  # 600 sampled + 200 values-only
    rows = read_csv(tmp_path / "sparse-n4" / "log.csv")
    assert [int(r["iteration"]) for r in rows if r["eval_loss"]] == [0, 300, 600, 800]
    assert metrics["eval_mse"] < 0.25 * metrics["initial_eval_mse"]
    assert metrics["eval_mse"] < 0.05  # one uncovered diagonal entry alone costs 0.25
