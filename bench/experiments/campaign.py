"""The GPU campaign: the paper-scale configurations, most valuable first, run in resumable pieces
within a time budget.

``python -m bench.experiments campaign --budget-minutes 30 --device cuda --out runs/campaign``

Each job is one experiment run in ``<out>/runs/<job>``, trained in pieces of at most
``--piece-minutes`` (each piece: ``--resume --time-limit``, so it continues from the run's last
checkpoint). Jobs run in the order of :data:`JOBS`; a job is done when its run reports
``finished``. The state file ``<out>/campaign.json`` records every job's status, pieces, steps
and latest ``results.json`` and every call's budget, so a second call continues where the first
stopped, also after the process was killed mid-piece (the run then resumes from its checkpoint).
After every piece the job's ``results.json``, ``log.csv``, PNGs and ``timing.json`` are copied to
``<out>/results/<job>/`` (the layout of ``bench/results/experiments/``) and ``<out>/summary.md``
is rewritten (status table and :mod:`bench.experiments.tables`).

``--smoke`` swaps every job for a tiny configuration of the same experiment (CPU, seconds), for
the tests.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from bench.experiments import common

STATE_FILE = "campaign.json"


@dataclass(frozen=True)
class Job:
    """One campaign entry: ``argv`` (paper scale) or ``smoke`` (tiny) after the experiment."""

    name: str
    experiment: str
    argv: tuple[str, ...]
    smoke: tuple[str, ...]
    reproduces: str


_SMOKE_IDENTITY = ("--iterations", "6", "--eval-every", "3", "--eval-size", "64",
                   "--finetune-steps", "4", "--snapshots")  # fmt: skip
_SMOKE_ATTENTION = ("--canvas", "32", "--width", "0.25", "--glimpse-size", "4",
                    "--n-local", "4", "--n-global", "2", "--region", "6", "6",
                    "--train-size", "32", "--test-size", "16", "--batch-size", "16",
                    "--epochs", "2")  # fmt: skip
_SMOKE_SORT = ("--digits", "1", "--key-net", "mlp", "--batch-size", "4", "--iterations", "2",
               "--eval-every", "1", "--eval-instances", "16", "--eval-batch", "16",
               "--train-limit", "600", "--test-limit", "300")  # fmt: skip
_PAPER_SORT = ("--protocol", "paper", "--recipe", "paper")

JOBS: tuple[Job, ...] = (
    Job("attention-glimpse1", "attention", ("--model", "glimpse1", "--recipe", "paper"),
        ("--model", "glimpse1", *_SMOKE_ATTENTION), "Table 1: 0.85 % test error"),
    Job("sort-n4", "sort", (*_PAPER_SORT, "--size", "4"),
        ("--size", "4", *_SMOKE_SORT), "Fig. 6: error < 10 % for n = 4"),
    Job("identity-n128", "identity", ("--sizes", "128"),
        ("--sizes", "4", *_SMOKE_IDENTITY), "beyond Fig. 2 (n = 8..64 converge)"),
    Job("identity-n256", "identity", ("--sizes", "256"),
        ("--sizes", "5", *_SMOKE_IDENTITY), "beyond Fig. 2"),
    Job("attention-glimpse8", "attention", ("--model", "glimpse8", "--recipe", "paper"),
        ("--model", "glimpse8", "--glimpses", "2", *_SMOKE_ATTENTION),
        "Table 1: 1.01 % test error"),
    Job("sort-n8", "sort", (*_PAPER_SORT, "--size", "8", "--intermediate"),
        ("--size", "8", "--intermediate", *_SMOKE_SORT), "Fig. 6: n = 8 near n = 4"),
    Job("sort-n16", "sort", (*_PAPER_SORT, "--size", "16", "--intermediate"),
        ("--size", "16", "--intermediate", *_SMOKE_SORT), "Fig. 6: n = 16 about 40 %"),
)  # fmt: skip

EPILOG = (
    "jobs, most valuable first:\n"
    + "\n".join(
        f"  {job.name:<20} {job.experiment} {' '.join(job.argv)}  ({job.reproduces})"
        for job in JOBS
    )
    + """

On a machine lent for 10 minutes per command, call it repeatedly with a budget below that, e.g.
  python -m bench.experiments campaign --budget-minutes 9 --device cuda --out runs/campaign
and copy <out>/results/* to bench/results/experiments/ to commit the runs."""
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the campaign."""
    add = parser.add_argument
    add("--budget-minutes", type=float, default=30.0, help="wall time this call may use")
    add("--piece-minutes", type=float, default=9.0, help="the longest piece, setup included")
    add("--overhead-s", type=float, default=60.0,
        help="seconds of each piece kept for setup (data, model) and evaluation")  # fmt: skip
    add("--min-piece-s", type=float, default=60.0,
        help="do not start a piece with less budget left than this")  # fmt: skip
    add("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    add("--out", default="runs/campaign", help="campaign folder (state, runs, results)")
    add("--only", nargs="+", default=None, metavar="JOB", help="these jobs only (in order)")
    add("--max-pieces", type=int, default=None, help="stop after this many pieces")
    add("--retry-failed", action="store_true", help="run failed jobs again")
    add("--smoke", action="store_true", help="tiny configurations (CPU tests)")
    add("--seed", type=int, default=0)
    add("--threads", type=int, default=1, help="torch CPU threads")
    add("--compile", action="store_true", help="pass --compile to every run")
    add("--bf16", action="store_true", help="pass --bf16 to the attention and sort runs")
    add("--list", action="store_true", help="print the jobs and their state, run nothing")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def load_state(out: Path) -> dict:
    """The campaign state in ``out`` (a fresh one if there is none)."""
    path = out / STATE_FILE
    if path.exists():
        return json.loads(path.read_text())
    return {"created": _now(), "jobs": {}, "calls": [], "spent_s": 0.0}


def _selected(only: list[str] | None) -> list[Job]:
    if not only:
        return list(JOBS)
    names = {job.name for job in JOBS}
    unknown = [name for name in only if name not in names]
    if unknown:
        raise ValueError(f"unknown jobs {unknown}; the jobs are {sorted(names)}")
    return [job for job in JOBS if job.name in only]


def _piece_argv(job: Job, args: argparse.Namespace, run_dir: Path, limit: float) -> list[str]:
    argv = [job.experiment, *(job.smoke if args.smoke else job.argv), "--out", str(run_dir),
            "--device", args.device, "--seed", str(args.seed), "--threads", str(args.threads),
            "--resume", "--no-progress", "--time-limit", f"{limit:.1f}"]  # fmt: skip
    if args.compile:
        argv.append("--compile")
    if args.bf16 and job.experiment != "identity":
        argv.append("--bf16")
    return argv


def _collect(run_dir: Path, results_dir: Path) -> None:
    """Copy the run's ``results.json``, ``log.csv``, PNGs and ``timing.json`` (from the folder
    that holds ``results.json``: the run itself, or identity's ``<method>-n<size>``)."""
    found = sorted(run_dir.rglob("results.json"))
    if not found:
        return
    source = found[0].parent
    results_dir.mkdir(parents=True, exist_ok=True)
    for pattern in ("results.json", "log.csv", "timing.json", "*.png"):
        for path in source.glob(pattern):
            shutil.copy2(path, results_dir / path.name)
    for path in run_dir.glob("*.png"):  # identity's loss.png lies one level up
        shutil.copy2(path, results_dir / path.name)


def _run_piece(argv: list[str]) -> dict:
    import torch

    from bench.experiments.__main__ import run_experiment

    try:
        result = run_experiment(argv)
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if "experiment" not in result:  # identity: {"<method>-n<size>": results} for its one size
        (result,) = result.values()
    return result


def run(args: argparse.Namespace) -> dict:
    """Run pieces until every selected job is done, the budget is spent or ``--max-pieces``;
    return the state of the selected jobs and why the call stopped."""
    out = Path(args.out)
    jobs = _selected(args.only)
    state = load_state(out)
    if args.list:
        return {job.name: state["jobs"].get(job.name, {"status": "pending"}) for job in jobs}
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    deadline = start + 60 * args.budget_minutes
    call = {"started": _now(), "budget_minutes": args.budget_minutes, "device": args.device,
            "smoke": args.smoke, "pieces": 0, "spent_s": 0.0}  # fmt: skip
    state["calls"].append(call)

    def save() -> None:
        call["spent_s"] = round(time.monotonic() - start, 1)
        common.write_json(out / STATE_FILE, state)

    stopped = None
    for job in jobs:
        js = state["jobs"].setdefault(job.name, {
            "experiment": job.experiment, "status": "pending", "pieces": 0, "seconds": 0.0,
            "steps": 0, "finished": False, "results": None, "error": None,
        })  # fmt: skip
        if js["status"] == "failed" and args.retry_failed:
            js["status"], js["error"] = "partial", None
        while js["status"] not in ("done", "failed"):
            remaining = deadline - time.monotonic()
            if args.max_pieces is not None and call["pieces"] >= args.max_pieces:
                stopped = f"--max-pieces {args.max_pieces} reached"
            elif remaining <= 0 or remaining < args.min_piece_s:
                stopped = f"budget spent ({remaining:.0f} s left)"
            if stopped:
                break
            limit = max(0.0, min(60 * args.piece_minutes, remaining) - args.overhead_s)
            run_dir = out / "runs" / job.name
            js["argv"] = _piece_argv(job, args, run_dir, limit)
            js["status"], js["piece_started"] = "running", _now()
            save()
            began = time.monotonic()
            try:
                result = _run_piece(js["argv"])
            except Exception as err:  # noqa: BLE001 - a failed job must not end the campaign
                js["status"], js["error"] = "failed", repr(err)
                result = None
            seconds = time.monotonic() - began
            js["pieces"] += 1
            js["seconds"] = round(js["seconds"] + seconds, 1)
            call["pieces"] += 1
            state["spent_s"] = round(state["spent_s"] + seconds, 1)
            if result is not None:
                js.update(steps=result["steps"], finished=result["finished"], results=result,
                          status="done" if result["finished"] else "partial")  # fmt: skip
                _collect(run_dir, out / "results" / job.name)
            save()
            write_summary(out, state)
        if stopped:
            break
    stopped = stopped or "every selected job is done or failed"
    save()
    write_summary(out, state)
    summary = {name: {k: v for k, v in js.items() if k in ("status", "pieces", "steps",
               "finished", "seconds", "error")} for name, js in state["jobs"].items()}  # fmt: skip
    return {"stopped": stopped, "spent_s": call["spent_s"], "jobs": summary}


def write_summary(out: Path, state: dict) -> None:
    """``<out>/summary.md``: a status line per job and the results tables."""
    from bench.experiments import tables

    lines = ["# Campaign", "", f"Calls: {len(state['calls'])}, pieces run for "
             f"{state['spent_s'] / 60:.1f} min in all.", "",
             "| job | status | pieces | steps | finished | minutes | reproduces |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    reproduces = {job.name: job.reproduces for job in JOBS}
    for name, js in state["jobs"].items():
        cells = [name, js["status"], js["pieces"], js["steps"], js["finished"],
                 f"{js['seconds'] / 60:.1f}", reproduces.get(name, "")]  # fmt: skip
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    lines += ["", tables.render(tables.load_results(out / "results"), str(out / "results"))]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
