"""Data-parallel training of a small regression model with a SparseLinear layer (DDP).

    torchrun --nproc_per_node=2 examples/ddp_train.py --steps 50

Each process trains on its own shard of one fixed data set (a sparse linear teacher, the same
on every rank), DistributedDataParallel averages the gradients, rank 0 prints the loss (the mean
over the ranks). Process group: nccl with one GPU per process (LOCAL_RANK) when CUDA is there,
gloo on CPU otherwise. Run without torchrun, it is a single process (world size 1).

Sampling seeds: SparseLinear draws its tuples from a counter-based stream, so ranks passing the
same seed would all draw the same W. Step ``s`` of rank ``r`` passes

    generator = fold_seed(seed * 1_000_003 + s, r)

one stream per (run seed, step, rank): ranks sample different W's, every step anew, and a rerun
with the same ``--seed`` and world size repeats the run. (Steps and seeds only collide past a
million steps.) See docs/distributed.md.
"""

from __future__ import annotations

import argparse
import os
import socket
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from hyperkern import SparseLinear
from hyperkern.seeds import fold_seed

STEP_STRIDE = 1_000_003  # seed * STEP_STRIDE + step: distinct per (seed, step) below 1e6 steps


class Regressor(nn.Module):
    """``Linear -> ReLU -> SparseLinear``; ``generator`` goes to the sparse layer."""

    def __init__(self, n_in: int, hidden: int, n_out: int, k: int) -> None:
        super().__init__()
        self.hidden = nn.Linear(n_in, hidden)
        self.sparse = SparseLinear(hidden, n_out, k=k)

    def forward(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        return self.sparse(torch.relu(self.hidden(x)), generator=generator)


def make_data(n: int, n_in: int, n_out: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` inputs ``N(0, I)`` and targets of a teacher W with 3 entries per output row."""
    gen = torch.Generator().manual_seed(seed)
    teacher = torch.zeros(n_out, n_in)
    for row in teacher:
        row[torch.randperm(n_in, generator=gen)[:3]] = torch.randn(3, generator=gen)
    x = torch.randn(n, n_in, generator=gen)
    return x, x @ teacher.T / 3**0.5


def setup() -> tuple[int, int, torch.device]:
    """Join the process group (torchrun's env, or a world of one); return rank, world, device."""
    if "RANK" not in os.environ:  # plain `python examples/ddp_train.py`
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        os.environ.update(
            RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
        )
    local_rank = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size(), device


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=64, help="per rank")
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--seed", type=int, default=0, help="data, init and sampling seed")
    p.add_argument("--k", type=int, default=96, help="means of the SparseLinear layer")
    p.add_argument("--log-every", type=int, default=10)
    return p.parse_args(argv)


def train(args: argparse.Namespace, rank: int, world: int, device: torch.device) -> list[float]:
    """The training loop; returns the loss of every step (the mean over the ranks)."""
    n_in, hidden, n_out = 16, 32, 4
    x_all, y_all = make_data(4096, n_in, n_out, args.seed)  # the same on every rank
    x, y = x_all[rank::world].to(device), y_all[rank::world].to(device)  # this rank's shard
    torch.manual_seed(args.seed)  # DDP broadcasts rank 0's parameters anyway
    model = Regressor(n_in, hidden, n_out, args.k).to(device)
    ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.Adam(ddp.parameters(), lr=args.lr)
    if rank == 0:
        print(f"world {world}, {dist.get_backend()} on {device.type}, {model.sparse}")
    losses, start = [], time.perf_counter()
    for step in range(args.steps):
        rows = torch.arange(step * args.batch_size, (step + 1) * args.batch_size) % len(x)
        seed = fold_seed(args.seed * STEP_STRIDE + step, rank)  # own W per rank and step
        loss = F.mse_loss(ddp(x[rows], generator=seed), y[rows])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)  # for the log only: the mean over the ranks
        losses.append(mean_loss.item() / world)
        if rank == 0 and (step % args.log_every == 0 or step == args.steps - 1):
            print(f"step {step:4d}  loss {losses[-1]:.5f}", flush=True)
    # DDP keeps the replicas equal: compare every rank's parameters with rank 0's
    flat = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    first = flat.clone()
    dist.broadcast(first, src=0)
    same = torch.tensor(int(torch.equal(flat, first)), device=device)
    dist.all_reduce(same, op=dist.ReduceOp.MIN)
    if rank == 0:
        print(f"parameters identical on all {world} ranks: {bool(same.item())}")
        print(f"{args.steps} steps in {time.perf_counter() - start:.1f} s")
    return losses


def main(argv: list[str] | None = None) -> list[float]:
    args = parse_args(argv)
    rank, world, device = setup()
    try:
        # DDP lives inside train() only: freeing it after destroy_process_group() can drop the
        # last reference to a gloo process group with the GIL held, which hangs (torch 2.13)
        return train(args, rank, world, device)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
