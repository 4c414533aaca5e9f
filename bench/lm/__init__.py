"""Character-level language modelling on the Python standard library's own sources: a small
transformer with dense, sliding-window or learned sparse (:class:`hyperkern.SparseSelfAttention`)
causal attention at equal parameter counts. Run from the repository root:

``python -m bench.lm train ...`` trains one model and writes ``results.json`` and ``log.csv``;
``python -m bench.lm profile ...`` measures seconds and peak memory per training step against
the sequence length and prints a markdown table. Results and commands: ``bench/LM.md``.

Modules: :mod:`bench.lm.corpus` (the corpus, its file-level split, random windows),
:mod:`bench.lm.model` (the model and the three attentions), :mod:`bench.lm.train` (training and
bits per character), :mod:`bench.lm.profile` (time and memory per step). Imports inside the
package are relative, so ``bench/test_bench_lm.py`` can import it as ``lm`` (pytest puts
``bench/`` on ``sys.path``) and the tests as ``bench.lm``.
"""
