"""``python -m bench.lm train|profile ...`` from the repository root (see :mod:`bench.lm`)."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from . import paired, profile, train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.lm",
        description="Byte-level language modelling on the Python standard library's sources "
        "with dense, sliding-window and learned sparse attention.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,profile,paired}")
    for name, module, summary in (
        ("train", train, "train one model: results.json and log.csv in --out"),
        ("profile", profile, "seconds and peak memory per training step against seq"),
        ("paired", paired, "several models' steps timed in turn in one process"),
    ):
        module.add_arguments(sub.add_parser(name, help=summary, description=module.__doc__))
    sub.add_parser("_measure").add_argument("request")  # internal: one profile configuration
    return parser


def main(argv: Sequence[str] | None = None) -> object:
    args = build_parser().parse_args(argv)
    if args.command == "_measure":
        return profile.run_measure(args.request)
    if args.command == "train":
        words = list(argv) if argv is not None else sys.argv[1:]
        args.command_line = "python -m bench.lm " + shlex.join(words)
        return train.run(args)
    if args.command == "paired":
        return paired.run(args)
    return profile.run(args)


if __name__ == "__main__":
    main()
