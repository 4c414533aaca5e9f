"""The experiments dispatcher and the shared plumbing in bench.experiments.common."""

import builtins
import os

import pytest
import torch

from bench.experiments import __main__ as cli
from bench.experiments.common import (
    CSVLogger,
    load_checkpoint,
    plot_curves,
    progress,
    read_csv,
    resolve_device,
    save_checkpoint,
    seed_everything,
)


def test_top_level_help_lists_every_experiment(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for name in ("identity", "attention", "sort"):
        assert name in text


@pytest.mark.parametrize("name", ["identity", "attention"])
def test_subcommand_help_has_common_and_own_flags(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([name, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--seed", "--device", "--out", "--resume", "--eval-every", "--no-progress"):
        assert flag in text
    assert ("--sizes" if name == "identity" else "--glimpse-size") in text


def test_common_flag_defaults():
    args = cli.build_parser("identity").parse_args(["identity"])
    assert (args.seed, args.device, args.out, args.resume) == (0, "cpu", "runs/identity", False)
    assert args.eval_every is None and args.no_progress is False


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
    log = CSVLogger(path, ["step", "loss", "acc"])
    log.log(step=0, acc=0.5)
    log.log(step=1, loss=torch.tensor(0.25), acc=0.75)
    log.log(step=2, loss=0.125)
    with pytest.raises(ValueError, match="bogus"):
        log.log(step=3, bogus=1)
    rows = read_csv(path)
    assert [r["step"] for r in rows] == ["0", "1", "2"]
    assert rows[0]["loss"] == "" and float(rows[1]["loss"]) == 0.25
    reopened = CSVLogger(path)  # header taken from the file
    assert reopened.fieldnames == ["step", "loss", "acc"]
    reopened.truncate_after("step", 1)
    assert [r["step"] for r in read_csv(path)] == ["0", "1"]


def test_checkpoint_is_atomic_and_missing_gives_none(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    assert load_checkpoint(path) is None
    save_checkpoint(path, {"step": 3, "w": torch.arange(4)})
    state = load_checkpoint(path)
    assert state["step"] == 3 and torch.equal(state["w"], torch.arange(4))

    def broken_save(obj, f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, {"step": 4})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 3  # the old checkpoint survived
    assert os.listdir(tmp_path) == ["ckpt.pt"]  # no temp file left behind
    with pytest.raises(TypeError, match="dict"):
        save_checkpoint(path, [1, 2])


def test_seed_everything_repeats_and_checks_type():
    g1 = seed_everything(5)
    a = torch.randn(3, generator=g1), torch.randn(3)
    g2 = seed_everything(5)
    b = torch.randn(3, generator=g2), torch.randn(3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(TypeError, match="seed"):
        seed_everything(1.5)


def test_progress_variants(monkeypatch, capsys):
    assert list(progress(range(5), enabled=False)) == [0, 1, 2, 3, 4]
    assert list(progress(total=4, initial=1, enabled=True, desc="t")) == [1, 2, 3]
    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name.startswith("tqdm"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    assert list(progress(range(3), desc="plain")) == [0, 1, 2]
    assert "plain" in capsys.readouterr().out
    with pytest.raises(ValueError, match="total"):
        progress()


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            resolve_device("cuda")


def test_plot_curves_writes_png(tmp_path):
    path = plot_curves(
        {"a": ([0, 1, 2], [3.0, 2.0, 1.0]), "b": ([0, 2], [1.0, 0.5])},
        tmp_path / "p.png",
        logy=True,
        title="t",
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
