"""Time training steps of one sparse layer on the CPU (torch backend): a whole-process command.

    python bench/cpu_step.py --k 1024 --n 4096 --batch 16 --context 1024 --steps 3 --threads 2

Uses only the public API, so the same file runs against older commits (``PYTHONPATH=<checkout>``)
for side-by-side comparisons. Prints the median and minimum wall and CPU seconds per step.
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
    wall, cpu = [], []
    for step in range(args.steps + 1):  # the first step warms up
        start, start_cpu = time.perf_counter(), time.process_time()
        layer(x, generator=step).square().sum().backward()
        if step:
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    for name, t in (("wall", wall), ("cpu", cpu)):
        print(f"step {name} s: median {statistics.median(t):.4f} min {min(t):.4f} ({len(t)} steps)")


if __name__ == "__main__":
    main()
