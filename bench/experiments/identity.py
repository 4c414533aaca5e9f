"""Identity experiment (paper section 3.1, Fig. 2 and 3): learn ``W x = x`` with a sparse layer.

Inputs ``x ~ N(0, I_n)``, loss ``MSE(W x, x)``, batch 64, Adam. Evaluation: means rounded (the
layer in ``eval()`` mode), loss over ``--eval-size`` (10 000) fresh vectors. The REINFORCE
baseline parametrises W the same way (means, sigmas, values) but, each iteration, draws one
continuous point per tuple from ``N(mu, diag(sigma))``, rounds it to an integer tuple, builds W
from those tuples and estimates the means' and sigmas' gradient with REINFORCE (the values get
their ordinary gradient). As in the original code, each instance of the batch draws its own W and
its own loss weighs its own log-probability (no variance-reducing baseline).

Outputs under ``--out``: per run ``<method>-n<size>/`` with ``log.csv``, ``checkpoint.pt``,
``snapshots.pt`` and ``means.png`` (Fig. 3), plus ``loss.png`` (Fig. 2) and ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.experiments.common import (
    CSVLogger,
    load_checkpoint,
    plot_curves,
    progress,
    read_csv,
    resolve_device,
    save_checkpoint,
    seed_everything,
)
from hyperkern.demo import finetune_values, negative_value_penalty

# size -> (lr, n_local, n_global, iterations); 8..64 from the paper's appendix (iterations for
# 8, 16, 32 from Fig. 2's caption); 64's iteration count and everything above 64 are our choice,
# keeping n_local + n_global < 2 log2 n.
PAPER_SETTINGS: dict[int, tuple[float, int, int, int]] = {
    8: (0.005, 1, 2, 10_000),
    16: (0.005, 2, 2, 20_000),
    32: (0.005, 2, 8, 40_000),
    64: (0.001, 2, 10, 80_000),
    128: (0.001, 2, 11, 100_000),
    256: (0.001, 2, 13, 100_000),
    1024: (0.001, 2, 17, 100_000),
}
SNAPSHOTS = (0, 1_000, 5_000, 9_000, 13_000)


def settings_for(size: int) -> tuple[float, int, int, int]:
    """``(lr, n_local, n_global, iterations)`` for ``size`` (paper's table, else a log rule)."""
    if size in PAPER_SETTINGS:
        return PAPER_SETTINGS[size]
    log = max(1, math.ceil(math.log2(max(size, 2))))
    return 0.001, min(2, log), max(1, 2 * log - 3), 100_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Identity-specific flags (the dispatcher adds seed, device, out, resume, eval-every)."""
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32], help="sizes n")
    parser.add_argument(
        "--method", choices=["sparse", "reinforce", "both"], default="sparse", help="model(s)"
    )
    parser.add_argument("--iterations", type=int, default=None, help="per size (paper default)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=None, help="sparse lr (paper default)")
    parser.add_argument("--reinforce-lr", type=float, default=0.001, help="REINFORCE lr")
    parser.add_argument("--n-local", type=int, default=None, help="a_l (paper default)")
    parser.add_argument("--n-global", type=int, default=None, help="a_g (paper default)")
    parser.add_argument("--region", type=int, default=None, help="local region (log2 n)")
    parser.add_argument(
        "--tau", type=float, default=0.1, help="paper's variance floor tau (index units)"
    )
    parser.add_argument("--eval-size", type=int, default=10_000, help="fresh vectors per eval")
    parser.add_argument(
        "--snapshots", type=int, nargs="*", default=list(SNAPSHOTS), help="Fig. 3 iterations"
    )
    parser.add_argument(
        "--time-limit", type=float, default=None, help="stop (checkpointed) after this many s"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument(
        "--recipe", choices=["paper", "improved"], default="paper",
        help="improved: k = 2n, lr 0.03, 5000 iterations, --neg-penalty 1, --finetune-steps 1000 "
        "(the demo's recipe; explicit flags override it)",
    )  # fmt: skip
    parser.add_argument("--k", type=int, default=None, help="means (paper: n)")
    parser.add_argument(
        "--neg-penalty", type=float, default=None,
        help="weight of sum(relu(-values)**2) added to the sparse loss (paper: 0)",
    )  # fmt: skip
    parser.add_argument(
        "--finetune-steps", type=int, default=None,
        help="sparse only: values-only Adam steps (lr 0.01) with means rounded, after training",
    )  # fmt: skip


IMPROVED = dict(k_per_n=2, lr=0.03, iterations=5_000, neg_penalty=1.0, finetune_steps=1_000)


class ReinforceIdentity(nn.Module):
    """The REINFORCE baseline: means ``(k, 2)``, sigmas ``(k,)``, values ``(k,)``, the raw
    parameters of docs/algorithm.md §1."""

    def __init__(
        self, size: int, k: int, tau: float = 0.1, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        self.size, self.tau = size, tau
        self.means = nn.Parameter(torch.randn(k, 2, generator=generator))
        self.sigmas = nn.Parameter(torch.zeros(k))
        self.values = nn.Parameter(torch.randn(k, generator=generator))

    @property
    def dims(self) -> tuple[int, int]:
        return (self.size, self.size)

    def index_means(self) -> torch.Tensor:
        """``(k, 2)`` means in index space."""
        return torch.sigmoid(self.means) * (self.size - 1)

    def index_sigmas(self) -> torch.Tensor:
        """``(k, 2)`` variances in index space, ``softplus(raw + 2) * n * 0.1 + tau``."""
        var = F.softplus(self.sigmas + 2) * self.size * 0.1 + self.tau
        return var.unsqueeze(-1).expand(-1, 2)

    def dense(self, tuples: torch.Tensor) -> torch.Tensor:
        """W with ``values`` at the integer ``tuples``: ``(k, 2) -> (n, n)`` or, one W per
        instance, ``(b, k, 2) -> (b, n, n)``; repeated tuples add up."""
        batched = tuples.dim() == 3
        tuples = tuples if batched else tuples.unsqueeze(0)
        flat = tuples[..., 0] * self.size + tuples[..., 1]  # (b, k)
        w = torch.zeros(flat.shape[0], self.size * self.size, dtype=self.values.dtype,
                        device=flat.device)  # fmt: skip
        w = w.scatter_add(1, flat, self.values.expand_as(flat).to(w.dtype))
        w = w.view(-1, self.size, self.size)
        return w if batched else w[0]

    def sample(
        self, b: int, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One integer tuple per mean and instance ``(b, k, 2)``, and the log-probability of
        each instance's draw ``(b,)``."""
        mu, var = self.index_means(), self.index_sigmas()
        noise = torch.randn((b, *mu.shape), generator=generator).to(mu.device)
        point = (mu + var.sqrt() * noise).detach()
        log_prob = torch.distributions.Normal(mu, var.sqrt()).log_prob(point).sum((1, 2))
        tuples = point.round().clamp(0, self.size - 1).long()
        return tuples, log_prob

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(b, n) -> (b, n)``; in training mode each instance gets its own sampled W (as the
        original code does) and ``last_log_prob (b,)`` keeps the draws' log-probabilities."""
        if self.training:
            tuples, self.last_log_prob = self.sample(x.shape[0], generator)
            w = self.dense(tuples)  # (b, n, n)
            return torch.bmm(w, x.unsqueeze(-1)).squeeze(-1)
        return x @ self.dense(self.index_means().round().long()).T


def _build(
    method: str, size: int, k: int, n_local: int, n_global: int, region: int, tau: float, gen
):
    if method == "reinforce":
        return ReinforceIdentity(size, size, tau, generator=gen)
    from hyperkern import SparseLayer

    # min_sigma is added before the scaling by dims * sigma_scale (0.1), see docs/algorithm.md
    # §1: this converts the paper's tau, added after it, to the same floor in index units.
    layer = SparseLayer(
        (size,),
        (size,),
        k,
        n_local=n_local,
        n_global=n_global,
        region=(region, region),
        min_sigma=tau / (size * 0.1),
    )
    layer.reset_parameters(generator=gen)
    return layer


@torch.no_grad()
def evaluate(model: nn.Module, size: int, n: int, seed: int, device: torch.device) -> float:
    """MSE of the rounded model on ``n`` fresh ``N(0, I)`` vectors drawn from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, size, generator=gen).to(device)
    was_training = model.training
    model.eval()
    loss = F.mse_loss(model(x), x).item()
    model.train(was_training)
    return loss


def _snapshot(model: nn.Module, it: int, gen: torch.Generator) -> dict:
    snap = {
        "iteration": it,
        "means": model.index_means().detach().cpu(),
        "sigmas": model.index_sigmas().detach().cpu(),
    }
    if hasattr(model, "options"):
        from hyperkern import ops

        o = model.options
        mu = snap["means"].unsqueeze(0)
        snap["tuples"] = ops.sample_tuples(
            mu, model.dims, o.n_local, o.n_global, o.region, generator=gen
        )[0].reshape(-1, 2)
    else:
        snap["tuples"] = model.sample(1, gen)[0][0].detach().cpu()
    return snap


def train_one(args: argparse.Namespace, method: str, size: int, out: Path) -> dict:
    """Train one model on one size, with checkpoints, CSV log and plots; return its summary."""
    lr, n_local, n_global, iterations = settings_for(size)
    improved = args.recipe == "improved" and method == "sparse"
    if improved:
        lr, iterations = IMPROVED["lr"], IMPROVED["iterations"]
    k = args.k or (IMPROVED["k_per_n"] * size if improved else size)
    neg_penalty = args.neg_penalty if args.neg_penalty is not None else (
        IMPROVED["neg_penalty"] if improved else 0.0)  # fmt: skip
    finetune_steps = args.finetune_steps if args.finetune_steps is not None else (
        IMPROVED["finetune_steps"] if improved else 0)  # fmt: skip
    lr = args.reinforce_lr if method == "reinforce" else (args.lr or lr)
    n_local = args.n_local if args.n_local is not None else n_local
    n_global = args.n_global if args.n_global is not None else n_global
    region = args.region or max(1, round(math.log2(max(size, 2))))
    iterations = args.iterations or iterations
    eval_every = args.eval_every or max(1, min(500, iterations // 20))
    device = resolve_device(args.device)
    settings = dict(
        method=method, size=size, k=k, neg_penalty=neg_penalty, finetune_steps=finetune_steps,
        recipe=args.recipe, lr=lr, n_local=n_local, n_global=n_global, region=region,
        iterations=iterations, batch_size=args.batch_size, eval_size=args.eval_size, tau=args.tau,
        seed=args.seed, device=str(device),
    )  # fmt: skip

    gen = seed_everything(args.seed * 1_000_003 + size)
    model = _build(method, size, k, n_local, n_global, region, args.tau, gen).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    run_dir = out / f"{method}-n{size}"
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, csv_path = run_dir / "checkpoint.pt", run_dir / "log.csv"
    start, wall, snapshots = 0, 0.0, []
    state = load_checkpoint(ckpt_path) if args.resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        start, wall, snapshots = state["iteration"], state["wall"], state["snapshots"]
    elif csv_path.exists():
        csv_path.unlink()
    logger = CSVLogger(csv_path, ["iteration", "train_loss", "eval_loss", "wall_s"])
    logger.truncate_after("iteration", start)

    def checkpoint(it: int) -> None:
        save_checkpoint(ckpt_path, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "generator": gen.get_state(), "iteration": it, "wall": wall,
            "snapshots": snapshots, "settings": settings,
        })  # fmt: skip

    wanted = set(args.snapshots)
    if start == 0:
        logger.log(iteration=0, eval_loss=evaluate(model, size, args.eval_size, 0, device))
    t0, recent, reached = time.perf_counter(), [], start
    bar = progress(
        total=iterations, initial=start, enabled=not args.no_progress, desc=f"{method} n={size}"
    )
    for it in bar:
        if it in wanted and all(s["iteration"] != it for s in snapshots):
            snapshots.append(_snapshot(model, it, torch.Generator().manual_seed(it)))
        x = torch.randn(args.batch_size, size, generator=gen).to(device)
        per_instance = F.mse_loss(model(x, generator=gen), x, reduction="none").mean(1)
        loss = per_instance.mean()
        objective = loss
        if neg_penalty and method == "sparse":  # I has no negative entries: no cancelling pairs
            objective = objective + neg_penalty * negative_value_penalty(model.values)
        if method == "reinforce":  # score-function estimate for means and sigmas
            objective = loss + (per_instance.detach() * model.last_log_prob).mean()
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        optimizer.step()
        recent.append(loss.item())
        done = reached = it + 1
        elapsed = wall + time.perf_counter() - t0
        timed_out = args.time_limit is not None and elapsed > args.time_limit
        if done % eval_every == 0 or done == iterations or timed_out:
            wall += time.perf_counter() - t0
            t0 = time.perf_counter()
            eval_loss = evaluate(model, size, args.eval_size, done, device)
            logger.log(
                iteration=done, train_loss=sum(recent) / len(recent), eval_loss=eval_loss,
                wall_s=round(wall, 3),
            )  # fmt: skip
            recent = []
            checkpoint(done)
            if timed_out:
                break

    if method == "sparse" and finetune_steps and reached >= iterations:
        t0 = time.perf_counter()
        finetune_values(model, size, gen, finetune_steps, args.batch_size, 0.01, device)
        wall += time.perf_counter() - t0
        logger.log(
            iteration=iterations + finetune_steps, eval_loss=evaluate(
                model, size, args.eval_size, iterations + finetune_steps, device),
            wall_s=round(wall, 3),
        )  # fmt: skip
    rows = read_csv(csv_path)
    evals = [(int(r["iteration"]), float(r["eval_loss"])) for r in rows if r["eval_loss"]]
    plot_means(snapshots, size, run_dir / "means.png", f"{method}, n={size}")
    torch.save(snapshots, run_dir / "snapshots.pt")
    return dict(
        settings, iterations_done=evals[-1][0], finished=evals[-1][0] >= iterations,
        diagonal_covered=diagonal_covered(model),
        initial_eval_loss=evals[0][1], final_eval_loss=evals[-1][1],
        best_eval_loss=min(v for _, v in evals), wall_s=round(wall, 1),
    )  # fmt: skip


@torch.no_grad()
def diagonal_covered(model: nn.Module) -> int:
    """How many distinct diagonal entries ``(i, i)`` a rounded mean sits on (``size`` = all)."""
    rounded = model.index_means().round().long()
    return len(set(rounded[rounded[:, 0] == rounded[:, 1], 0].tolist()))


def plot_means(snapshots: list[dict], size: int, path: Path, title: str) -> None:
    """Fig. 3: means (blue dots), sqrt-variance circles and sampled integer tuples (grey)."""
    if not snapshots:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Ellipse

    snaps = sorted(snapshots, key=lambda s: s["iteration"])
    fig, axes = plt.subplots(1, len(snaps), figsize=(3 * len(snaps), 3.2), squeeze=False)
    for ax, snap in zip(axes[0], snaps, strict=True):
        tuples = snap["tuples"].float().numpy()
        means = snap["means"].numpy()
        ax.scatter(tuples[:, 1], tuples[:, 0], marker="D", s=6, c="grey", alpha=0.5)
        for (r, c), (vr, vc) in zip(snap["means"].tolist(), snap["sigmas"].tolist(), strict=True):
            ax.add_patch(Ellipse((c, r), 2 * vc**0.5, 2 * vr**0.5, color="C0", alpha=0.1))
        ax.scatter(means[:, 1], means[:, 0], s=8, c="C0")
        ax.set_xlim(-1, size)
        ax.set_ylim(size, -1)
        ax.set_aspect("equal")
        ax.set_title(f"{title}\niteration {snap['iteration']}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> dict:
    """Train every requested (method, size); write ``loss.png`` and ``results.json``."""
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    methods = ["sparse", "reinforce"] if args.method == "both" else [args.method]
    for size in args.sizes:
        if size < 2:
            raise ValueError(f"--sizes must be at least 2, got {size}")
    results = {f"{m}-n{s}": train_one(args, m, s, out) for m in methods for s in args.sizes}
    curves = {}
    for name in results:
        rows = [r for r in read_csv(out / name / "log.csv") if r["eval_loss"]]
        curves[name] = ([int(r["iteration"]) for r in rows], [float(r["eval_loss"]) for r in rows])
    plot_curves(curves, out / "loss.png", ylabel="eval MSE (rounded means)",
                title="identity (Fig. 2)")  # fmt: skip
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return results
