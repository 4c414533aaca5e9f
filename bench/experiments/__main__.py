"""Command-line entry point, run from the repository root:
``python -m bench.experiments identity|attention|sort ...`` trains one experiment,
``python -m bench.experiments campaign ...`` runs the paper-scale configurations in resumable
pieces (:mod:`bench.experiments.campaign`) and ``python -m bench.experiments tables ...``
prints the results tables (:mod:`bench.experiments.tables`).

Modules are imported lazily, so a broken or missing one only affects its own subcommand. Each
exposes ``add_arguments(parser)`` and ``run(args) -> dict``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence

EXPERIMENTS: dict[str, str] = {
    "identity": "Learn the identity matrix with a sparse layer (paper section 3.1).",
    "attention": "Glimpse attention on 100x100 cluttered MNIST (paper section 3.2).",
    "sort": "Differentiable quicksort (paper section 3.3).",
}
TOOLS: dict[str, str] = {
    "campaign": "Run the paper-scale configurations in resumable pieces within a time budget.",
    "tables": "Markdown tables of the committed results.json files next to the published numbers.",
}


def _add_common(parser: argparse.ArgumentParser, name: str) -> None:
    common = parser.add_argument_group("common")
    common.add_argument("--seed", type=int, default=0, help="random seed")
    common.add_argument("--device", type=str, default="cpu", help="cpu, cuda, cuda:N or auto")
    common.add_argument("--out", type=str, default=f"runs/{name}", help="output folder")
    common.add_argument(
        "--resume", action="store_true", help="continue from the checkpoint in --out if present"
    )
    common.add_argument(
        "--eval-every", type=int, default=None, help="evaluate every N steps (experiment default)"
    )
    common.add_argument("--no-progress", action="store_true", help="disable the progress bar")
    common.add_argument(
        "--time-limit",
        type=float,
        default=None,
        help="seconds this call may train (and evaluate); then it checkpoints, evaluates and "
        "stops with finished=false, to be continued with --resume",
    )
    common.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    common.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model (runs eagerly, with a warning, where compiling fails)",
    )
    common.add_argument("--compile-backend", default="inductor", help="torch.compile backend")
    common.add_argument(
        "--time-steps",
        type=int,
        default=None,
        metavar="N",
        help="measure instead of training: median seconds per step over N steps after warm-up, "
        "and the projected wall time of the configured run (printed, and --out/timing.json)",
    )


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the help, the epilog (recipes, examples) as written."""


def _load(name: str):
    return importlib.import_module(f"bench.experiments.{name}")


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The parser. Only the module of ``selected`` is imported (for its own arguments), so a
    broken or missing module cannot break the others."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.experiments",
        description="Rerun the experiments of 'Learning sparse transformations through "
        "backpropagation' with hyperkern.",
    )
    commands = {**EXPERIMENTS, **TOOLS}
    sub = parser.add_subparsers(dest="experiment", metavar="{" + ",".join(commands) + "}")
    sub.required = True
    for name, summary in commands.items():
        module, error = None, None
        if name == selected:
            try:
                module = _load(name)
            except Exception as err:  # noqa: BLE001 - any import failure is reported per command
                error = err
        help_text = summary if error is None else f"{summary} [unavailable: {error!r}]"
        p = sub.add_parser(
            name,
            help=summary,
            description=help_text,
            epilog=getattr(module, "EPILOG", None),
            formatter_class=_Formatter,
        )
        if module is not None:
            module.add_arguments(p)
        if name in EXPERIMENTS:
            _add_common(p, name)
        p.set_defaults(_module=module, _error=error)
    return parser


def run_experiment(argv: Sequence[str]) -> dict:
    """Parse ``argv`` (command first) and run it; return its result dict."""
    argv = list(argv)
    selected = next((a for a in argv if a in EXPERIMENTS or a in TOOLS), None)
    parser = build_parser(selected)
    args = parser.parse_args(argv)
    if args._module is None:
        parser.exit(2, f"command {args.experiment!r} is unavailable: {args._error!r}\n")
    module = args._module
    del args._module, args._error
    return module.run(args)


def main(argv: Sequence[str] | None = None) -> dict:
    """Parse ``argv``, run the chosen command and return its result dict (also printed)."""
    result = run_experiment(sys.argv[1:] if argv is None else argv)
    if result is not None:
        print(json.dumps(result, indent=2, default=str))
    return result


if __name__ == "__main__":
    main()
