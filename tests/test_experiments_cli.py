"""The experiments dispatcher and the shared plumbing in bench.experiments.common."""

import builtins
import json
import os

import pytest
import torch

from bench.experiments import __main__ as cli
from bench.experiments import common


def test_top_level_help_lists_every_experiment(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for name in ("identity", "attention", "sort", "campaign", "tables"):
        assert name in text


@pytest.mark.parametrize("name", ["identity", "attention", "sort"])
def test_subcommand_help_has_common_and_own_flags(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([name, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "--seed",
        "--device",
        "--out",
        "--resume",
        "--eval-every",
        "--no-progress",
        "--time-limit",
        "--compile",
        "--time-steps",
        "--recipe",
    ):
        assert flag in text
    assert {"identity": "--sizes", "attention": "--glimpse-size", "sort": "--protocol"}[
        name
    ] in text
    assert "recipes (--recipe" in text  # the epilog says which recipe reproduces what


def test_common_flag_defaults():
    args = cli.build_parser("identity").parse_args(["identity"])
    assert (args.seed, args.device, args.out, args.resume) == (0, "cpu", "runs/identity", False)
    assert args.eval_every is None and args.no_progress is False
    assert (args.recipe, args.fix_values, args.compile, args.time_steps) == (
        "improved",
        False,
        False,
        None,
    )
    assert cli.build_parser("attention").parse_args(["attention"]).recipe == "paper"


def test_missing_module_fails_alone(monkeypatch, capsys):
    monkeypatch.setitem(cli.EXPERIMENTS, "nonexistent_experiment", "not there")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["nonexistent_experiment"])
    assert exit_info.value.code == 2
    assert "unavailable" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["identity", "--help"])
    assert exit_info.value.code == 0


def test_unknown_experiment_is_an_error():
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["nope"])
    assert exit_info.value.code == 2


def test_csv_logger_round_trip_partial_rows_and_truncate(tmp_path):
    path = tmp_path / "sub" / "log.csv"
    log = common.CSVLogger(path, ["step", "loss", "acc"])
    log.log(step=0, acc=0.5)
    log.log(step=1, loss=torch.tensor(0.25), acc=0.75)
    log.log(step=2, loss=0.125)
    with pytest.raises(ValueError, match="bogus"):
        log.log(step=3, bogus=1)
    rows = common.read_csv(path)
    assert [r["step"] for r in rows] == ["0", "1", "2"]
    assert rows[0]["loss"] == "" and float(rows[1]["loss"]) == 0.25
    reopened = common.CSVLogger(path)  # header taken from the file
    assert reopened.fieldnames == ["step", "loss", "acc"]
    reopened.truncate_after("step", 1)
    assert [r["step"] for r in common.read_csv(path)] == ["0", "1"]


def test_checkpoint_is_atomic_and_missing_gives_none(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    assert common.load_checkpoint(path) is None
    common.save_checkpoint(path, {"step": 3, "w": torch.arange(4)})
    state = common.load_checkpoint(path)
    assert state["step"] == 3 and torch.equal(state["w"], torch.arange(4))

    def broken_save(obj, f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        common.save_checkpoint(path, {"step": 4})
    monkeypatch.undo()
    assert common.load_checkpoint(path)["step"] == 3  # the old checkpoint survived
    assert os.listdir(tmp_path) == ["ckpt.pt"]  # no temp file left behind
    with pytest.raises(TypeError, match="dict"):
        common.save_checkpoint(path, [1, 2])


def test_seed_everything_repeats_and_checks_type():
    g1 = common.seed_everything(5)
    a = torch.randn(3, generator=g1), torch.randn(3)
    g2 = common.seed_everything(5)
    b = torch.randn(3, generator=g2), torch.randn(3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(TypeError, match="seed"):
        common.seed_everything(1.5)


def test_progress_variants(monkeypatch, capsys):
    assert list(common.progress(range(5), enabled=False)) == [0, 1, 2, 3, 4]
    assert list(common.progress(total=4, initial=1, enabled=True, desc="t")) == [1, 2, 3]
    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name.startswith("tqdm"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    assert list(common.progress(range(3), desc="plain")) == [0, 1, 2]
    assert "plain" in capsys.readouterr().out
    with pytest.raises(ValueError, match="total"):
        common.progress()


def test_resolve_device():
    assert common.resolve_device("cpu") == torch.device("cpu")
    assert common.resolve_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            common.resolve_device("cuda")


def test_plot_curves_writes_png(tmp_path):
    path = common.plot_curves(
        {"a": ([0, 1, 2], [3.0, 2.0, 1.0]), "b": ([0, 2], [1.0, 0.5])},
        tmp_path / "p.png",
        logy=True,
        title="t",
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_maybe_compile_falls_back_to_eager(monkeypatch):
    def double(x):
        return 2 * x

    x = torch.arange(3.0)
    assert common.maybe_compile(double, False) is double
    compiled = common.maybe_compile(double, True, backend="eager")
    assert torch.equal(compiled(x), 2 * x) and torch.equal(compiled(x + 1), 2 * x + 2)

    def unavailable(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", unavailable)
    with pytest.warns(UserWarning, match="unavailable"):
        assert common.maybe_compile(double, True) is double

    monkeypatch.setattr(torch, "compile", lambda fn, backend: unavailable)
    fails_at_first_call = common.maybe_compile(double, True)
    with pytest.warns(UserWarning, match="failed"):
        assert torch.equal(fails_at_first_call(x), 2 * x)
    assert torch.equal(fails_at_first_call(x), 2 * x)  # eager from now on, no new warning


def test_loss_buffer_and_results_file(tmp_path):
    buffer = common.LossBuffer()
    buffer.add(1, torch.tensor(0.5, requires_grad=True), 0.1)
    buffer.add(2, torch.tensor(0.25, dtype=torch.bfloat16), 0.2)
    assert buffer.drain() == [(1, 0.5, 0.1), (2, 0.25, 0.2)] and buffer.drain() == []
    result = common.write_results(
        tmp_path,
        "sort",
        {"size": 4},
        {"error": 0.5},
        finished=False,
        device=torch.device("cpu"),
        wall_s=1.234,
        steps=7,
    )
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == result and tuple(saved) == common.RESULT_KEYS
    assert (saved["device"], saved["wall_s"], saved["steps"]) == ("cpu", 1.23, 7)


def test_trainer_resumes_and_reseeds_a_generator_from_another_device(tmp_path):
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(0)

    def step(_step):
        loss = model(torch.randn(3, 2, generator=gen)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss

    def trainer(total, resume):
        return common.Trainer(
            tmp_path,
            model,
            optimizer,
            {"g": gen},
            total=total,
            eval_every=2,
            resume=resume,
            columns=["step", "train_loss", "x", "wall_s"],
            show_progress=False,
        )

    assert trainer(2, False).run(step, lambda s: {"x": 10 * s}) is True
    state = common.load_checkpoint(tmp_path / "checkpoint.pt")
    state["generators"]["g"] = torch.zeros(16, dtype=torch.uint8)  # not a CPU generator's state
    common.save_checkpoint(tmp_path / "checkpoint.pt", state)
    with pytest.warns(UserWarning, match="another device"):
        resumed = trainer(4, True)
    assert resumed.step == 2 and resumed.run(step, lambda s: {"x": 10 * s}) is True
    rows = common.read_csv(tmp_path / "log.csv")
    assert [(r["step"], r["x"]) for r in rows] == [("0", "0"), ("2", "20"), ("4", "40")]
    assert rows[0]["train_loss"] == "" and float(rows[2]["train_loss"]) > 0
    del state["generators"]
    common.save_checkpoint(tmp_path / "checkpoint.pt", state)
    with pytest.raises(ValueError, match="older version"):
        trainer(4, True)


def test_schedule_lr_scales_each_group_from_its_first_lr():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([{"params": [a], "lr": 1e-3}, {"params": [b], "lr": 1e-4}])
    for step, factor in ((0, 1.0), (25, 0.5 + 0.5 * 2**-0.5), (50, 0.5), (100, 0.0), (120, 0.0)):
        common.schedule_lr(optimizer, "cosine", step, 100)
        lrs = [group["lr"] for group in optimizer.param_groups]
        assert lrs == pytest.approx([1e-3 * factor, 1e-4 * factor], abs=1e-15), step
    common.schedule_lr(optimizer, "constant", 70, 100)
    assert [group["lr"] for group in optimizer.param_groups] == [1e-3, 1e-4]
    with pytest.raises(ValueError, match="schedule must be one of"):
        common.schedule_lr(optimizer, "linear", 0, 100)
