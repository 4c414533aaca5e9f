"""Markdown tables of the experiments' ``results.json`` files next to the published numbers.

``python -m bench.experiments tables`` prints them for every ``results.json`` below
``bench/results/experiments/`` (one folder per committed run); ``--write`` replaces the part of
``bench/EXPERIMENTS.md`` between the markers ``<!-- tables:begin -->`` and
``<!-- tables:end -->`` with them. One table per experiment (two for sort: the paper's protocol
and NeuralSort's), a row per run, plus a row for every published number no run matches yet.

Published numbers: the paper (Bloem et al., "Learning sparse transformations through
backpropagation": Fig. 2, Table 1, Fig. 6) and, for sorting, NeuralSort (Grover et al. 2019,
Table 1). The paper gives Fig. 2 and Fig. 6 as plots, so those entries are words.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path

from bench.experiments.common import RESULT_KEYS

ROOT = Path("bench/results/experiments")
DOC = Path("bench/EXPERIMENTS.md")
BEGIN, END = "<!-- tables:begin -->", "<!-- tables:end -->"

PAPER_IDENTITY = {8: "converges", 16: "converges", 32: "converges", 64: "converges"}
PAPER_ATTENTION = {"glimpse1": 0.0085, "glimpse8": 0.0101}
RAM_ERROR = 0.0811  # RAM (Mnih et al. 2014), the best result the paper's Table 1 lists for it
PAPER_SORT = {4: "< 10 %", 8: "like n = 4, more variance", 16: "about 40 % (minimum)"}
NEURALSORT = {  # n -> (exact match, element-wise), Grover et al. 2019, Table 1
    3: (0.930, 0.951),
    5: (0.837, 0.927),
    7: (0.738, 0.909),
    9: (0.649, 0.896),
    15: (0.386, 0.857),
}
EPILOG = """examples:
  python -m bench.experiments tables                 # print the tables
  python -m bench.experiments tables --write         # rewrite the section of bench/EXPERIMENTS.md
  python -m bench.experiments tables --root runs/campaign/results"""


def load_results(root: str | Path) -> list[tuple[str, dict]]:
    """``(run, results)`` for every ``results.json`` below ``root`` whose keys are
    :data:`~bench.experiments.common.RESULT_KEYS` (others are skipped with a note on stderr);
    ``run`` is its folder relative to ``root``."""
    root = Path(root)
    found = []
    for path in sorted(root.rglob("results.json")) if root.exists() else []:
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            print(f"skipping {path}: {err}", file=sys.stderr)
            continue
        if not isinstance(data, dict) or set(data) != set(RESULT_KEYS):
            print(f"skipping {path}: not a results.json of this format", file=sys.stderr)
            continue
        found.append((path.parent.relative_to(root).as_posix(), data))
    return found


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f} %"


def _num(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}g}" if abs(x) < 1e-3 else f"{x:.{digits}f}"


def _count(x: object) -> str:
    return f"{x:,}" if isinstance(x, int) else "?"


def _status(result: dict, total: int | None) -> str:
    steps = f"{result['steps']:,}" + (f" / {total:,}" if total else "")
    done = "finished" if result["finished"] else "**unfinished**"
    return f"{steps} ({done})"


def _wall(result: dict) -> str:
    return f"{result['wall_s'] / 60:.1f} min"


def _table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _identity(results: list[tuple[str, dict]]) -> list[str]:
    by_size: dict[int, list] = {n: [] for n in PAPER_IDENTITY}
    for run, r in results:
        by_size.setdefault(int(r["config"]["size"]), []).append((run, r))
    rows = []
    for n in sorted(by_size):
        paper = PAPER_IDENTITY.get(n, "not in the paper")
        for run, r in by_size[n] or [(None, None)]:
            if r is None:
                rows.append([str(n), paper, "—", "", "", "", "", "", ""])
                continue
            c, m = r["config"], r["metrics"]
            recipe = f"{c.get('recipe', '?')}, {c.get('method', 'sparse')}" + (
                ", values fixed to 1" if c.get("fix_values") else ""
            )
            covered = m.get("diagonal_covered")
            total = (c.get("iterations") or 0) + (c.get("finetune_steps") or 0)
            rows.append(
                [
                    str(n),
                    paper,
                    f"`{run}`",
                    recipe,
                    _num(m.get("eval_mse")),
                    "—" if covered is None else f"{covered} / {n}",
                    _status(r, total),
                    r["device"],
                    _wall(r),
                ]
            )
    return [
        "### Identity (paper §3.1, Fig. 2)",
        "",
        "Eval MSE with the means rounded, on 10 000 fresh N(0, I) vectors (W = 0 scores 1.0).",
        "",
        *_table(
            [
                "n",
                "paper (Fig. 2)",
                "run",
                "recipe",
                "eval MSE",
                "diagonal covered",
                "steps",
                "device",
                "wall",
            ],
            rows,
        ),
    ]


#: the paper's attention settings: a run that changes one is a reduced run, and says so
PAPER_ATTENTION_SETTINGS = {
    "canvas": (100, "{0}x{0} canvas"),
    "width": (1.0, "ConvNet channels x{}"),
    "n_local": (32, "a_l = {}"),
    "n_global": (16, "a_g = {}"),
    "batch_size": (128, "batch {}"),
    "lr": (1e-4, "lr {:g}"),
    "source_lr": (None, "source lr {:g}"),
    "lr_schedule": ("constant", "{} lr"),
    "eval_mode": ("round", "eval read: {}"),
}
GLIMPSE_ONLY_SETTINGS = {"n_local", "n_global", "source_lr", "eval_mode"}


def _attention_setting(config: dict) -> str:
    """The recipe, then every setting that differs from the paper's."""
    changed = []
    for key, (paper, text) in PAPER_ATTENTION_SETTINGS.items():
        if config.get("model") == "convnet" and key in GLIMPSE_ONLY_SETTINGS:
            continue
        value = config.get(key, paper)
        if value != paper:
            changed.append(text.format(value))
    return ", ".join([config.get("recipe", "?"), *changed])


def _attention(results: list[tuple[str, dict]]) -> list[str]:
    by_model: dict[str, list] = {"glimpse1": [], "glimpse8": [], "convnet": []}
    for run, r in results:
        by_model.setdefault(r["config"]["model"], []).append((run, r))
    rows = []
    for model, runs in by_model.items():
        paper = _pct(PAPER_ATTENTION.get(model))
        for run, r in runs or [(None, None)]:
            if r is None:
                rows.append([model, paper, "—", "", "", "", "", "", ""])
                continue
            c, m = r["config"], r["metrics"]
            data = f"{_count(c.get('train_size'))} / {_count(c.get('test_size'))}"
            status = _status(r, c.get("total_steps"))
            rows.append(
                [
                    model,
                    paper,
                    f"`{run}`",
                    _attention_setting(c),
                    _pct(m.get("test_error")),
                    data,
                    status,
                    r["device"],
                    _wall(r),
                ]
            )
    rows.append(
        [
            "RAM (Mnih et al. 2014)",
            _pct(RAM_ERROR),
            "(as listed in the paper's Table 1)",
            "",
            "",
            "",
            "",
            "",
            "",
        ]
    )
    return [
        "### Attention, 100x100 cluttered MNIST (paper §3.2, Table 1)",
        "",
        "Test error; the glimpses read each mean's nearest pixel (the paper's rule) unless "
        "the settings say `eval read: sample` (the training read with one fixed seed).",
        "",
        *_table(
            [
                "model",
                "published",
                "run",
                "recipe, settings unlike the paper's",
                "test error",
                "train / test images",
                "steps",
                "device",
                "wall",
            ],
            rows,
        ),
    ]


def _sort(results: list[tuple[str, dict]]) -> list[str]:
    paper: dict[int, list] = {n: [] for n in PAPER_SORT}
    neural: dict[int, list] = {n: [] for n in NEURALSORT}
    for run, r in results:
        target = neural if r["config"].get("protocol") == "neuralsort" else paper
        target.setdefault(int(r["config"]["size"]), []).append((run, r))

    def setting(c: dict) -> str:
        loss = ", intermediate loss" if c.get("intermediate") else ""
        if c.get("lr_schedule", "constant") != "constant":
            loss += f", {c['lr_schedule']} lr"
        return f"{c.get('recipe', '?')} ({c.get('key_net', '?')} key net{loss})"

    paper_rows, neural_rows = [], []
    for n in sorted(paper):
        published = PAPER_SORT.get(n, "not in the paper")
        for run, r in paper[n] or [(None, None)]:
            if r is None:
                paper_rows.append([str(n), published, "—", "", "", "", "", "", "", ""])
                continue
            c, m = r["config"], r["metrics"]
            paper_rows.append(
                [
                    str(n),
                    published,
                    f"`{run}`",
                    setting(c),
                    _pct(m.get("error")),
                    _num(m.get("elementwise")),
                    _count(c.get("eval_instances")),
                    _status(r, c.get("iterations")),
                    r["device"],
                    _wall(r),
                ]
            )
    for n in sorted(neural):
        exact, elementwise = NEURALSORT.get(n, (None, None))
        for run, r in neural[n] or [(None, None)]:
            if r is None:
                neural_rows.append(
                    [str(n), _num(exact), _num(elementwise), "—", "", "", "", "", "", ""]
                )
                continue
            c, m = r["config"], r["metrics"]
            status = _status(r, c.get("iterations"))
            neural_rows.append(
                [
                    str(n),
                    _num(exact),
                    _num(elementwise),
                    f"`{run}`",
                    setting(c),
                    _num(m.get("exact_match")),
                    _num(m.get("elementwise")),
                    status,
                    r["device"],
                    _wall(r),
                ]
            )
    return [
        "### Sorting, paper protocol: 3-digit MNIST numbers (paper §3.3, Fig. 6)",
        "",
        "Error = fraction of test sets whose key order is not exactly right (chance for n = 4: "
        "0.958).",
        "",
        *_table(
            [
                "n",
                "paper (Fig. 6)",
                "run",
                "recipe",
                "error",
                "element-wise acc.",
                "test sets",
                "steps",
                "device",
                "wall",
            ],
            paper_rows,
        ),
        "",
        "### Sorting, NeuralSort protocol: 4-digit MNIST numbers (Grover et al. 2019, Table 1)",
        "",
        *_table(
            [
                "n",
                "NeuralSort exact",
                "NeuralSort element-wise",
                "run",
                "recipe",
                "exact match",
                "element-wise",
                "steps",
                "device",
                "wall",
            ],
            neural_rows,
        ),
    ]


def render(results: list[tuple[str, dict]], root: str = str(ROOT)) -> str:
    """The markdown of all tables for ``results`` (from :func:`load_results` of ``root``)."""
    groups: dict[str, list] = {"identity": [], "attention": [], "sort": []}
    for run, r in results:
        groups.setdefault(r["experiment"], []).append((run, r))
    intro = (
        f"Generated by `python -m bench.experiments tables --write` from the {len(results)} "
        f"`results.json` files under `{root}/`; do not edit by hand."
        if results
        else f"No `results.json` under `{root}/` yet: the tables list the published numbers "
        "only. Runs appear here once their folders (e.g. a campaign's `results/<job>/`) are "
        "committed there and `python -m bench.experiments tables --write` is run."
    )
    parts = [
        intro,
        "",
        *_identity(groups["identity"]),
        "",
        *_attention(groups["attention"]),
        "",
        *_sort(groups["sort"]),
    ]
    return "\n".join(parts) + "\n"


def rewrite_section(doc: str | Path, text: str) -> None:
    """Replace what lies between :data:`BEGIN` and :data:`END` in ``doc`` with ``text``."""
    doc = Path(doc)
    content = doc.read_text()
    if BEGIN not in content or END not in content:
        raise ValueError(f"{doc} has no {BEGIN} ... {END} section")
    head, rest = content.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{BEGIN}\n{text}{END}{tail}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the tables command."""
    parser.add_argument("--root", default=str(ROOT), help="folder searched for results.json")
    parser.add_argument(
        "--write",
        nargs="?",
        const=str(DOC),
        default=None,
        metavar="DOC",
        help=f"rewrite the marked section of DOC (default {DOC}) instead of printing",
    )


def run(args: argparse.Namespace) -> None:
    """Print the tables, or write them into the document."""
    text = render(load_results(args.root), args.root)
    if args.write:
        rewrite_section(args.write, text)
        print(f"wrote the tables into {args.write}")
    else:
        print(text, end="")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.experiments.tables",
        description=__doc__.split("\n\n")[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
