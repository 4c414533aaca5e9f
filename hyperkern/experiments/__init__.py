"""Experiments of the paper, run as ``python -m hyperkern.experiments identity|attention|sort``.

Each experiment module exposes ``add_arguments(parser)`` and ``run(args) -> dict``; the shared
plumbing (CSV logs, checkpoints, progress bars, seeding, plots) lives in
:mod:`hyperkern.experiments.common`. The dispatcher is ``hyperkern.experiments.__main__.main``.
"""
