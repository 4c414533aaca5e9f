"""Time training steps of one sparse layer on the CPU (torch backend): a whole-process command.

    python bench/cpu_step.py --k 1024 --n 4096 --batch 16 --context 1024 --steps 3 --threads 2

Uses only the public API, so the same file runs against older commits (``PYTHONPATH=<checkout>``)
for side-by-side comparisons. Prints the median and minimum seconds per step.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from hyperkern import SparseLayer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=1024)
    parser.add_argument("--n", type=int, default=4096, help="W is n x n")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    layer = SparseLayer((args.n,), (args.n,), k=args.k, context_size=args.context, backend="torch")
    x = torch.randn(args.batch, args.n, requires_grad=True)
    times = []
    for step in range(args.steps + 1):  # the first step warms up
        start = time.perf_counter()
        layer(x, generator=step).square().sum().backward()
        if step:
            times.append(time.perf_counter() - start)
    print(f"step_s median {statistics.median(times):.4f} min {min(times):.4f} ({len(times)} steps)")


if __name__ == "__main__":
    main()
