"""Command-line entry point: ``python -m bench.experiments identity|attention|sort ...``, run
from the repository root.

Experiment modules are imported lazily, so a broken or missing one only affects its own
subcommand. Each module exposes ``add_arguments(parser)`` and ``run(args) -> dict``.
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


def _load(name: str):
    return importlib.import_module(f"bench.experiments.{name}")


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The parser. Only the module of ``selected`` is imported (for its own arguments), so a
    broken or missing experiment module cannot break the others."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.experiments",
        description="Rerun the experiments of 'Learning sparse transformations through "
        "backpropagation' with hyperkern.",
    )
    sub = parser.add_subparsers(dest="experiment", metavar="{" + ",".join(EXPERIMENTS) + "}")
    sub.required = True
    for name, summary in EXPERIMENTS.items():
        module, error = None, None
        if name == selected:
            try:
                module = _load(name)
            except Exception as err:  # noqa: BLE001 - any import failure is reported per experiment
                error = err
        help_text = summary if error is None else f"{summary} [unavailable: {error!r}]"
        p = sub.add_parser(
            name,
            help=summary,
            description=help_text,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        if module is not None:
            module.add_arguments(p)
        _add_common(p, name)
        p.set_defaults(_module=module, _error=error)
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    """Parse ``argv``, run the chosen experiment and return its result dict (also printed)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if a in EXPERIMENTS), None)
    parser = build_parser(selected)
    args = parser.parse_args(argv)
    if args._module is None:
        parser.exit(2, f"experiment {args.experiment!r} is unavailable: {args._error!r}\n")
    module = args._module
    del args._module, args._error
    result = module.run(args)
    print(json.dumps(result, indent=2, default=str))
    return result


if __name__ == "__main__":
    main()
