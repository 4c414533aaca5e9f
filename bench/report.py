"""Turn ``pytest bench/ --benchmark-json=FILE`` output into a CSV, log-log plots and a summary.

Usage: ``python bench/report.py results.json --out bench/results/``

Writes ``results.csv`` (one row per benchmark: op, sweep, x, impl, times in seconds, peak memory
and every ``extra_info`` field), one ``<op>__<sweep>.png`` per op and sweep (best time of the
timed rounds and peak memory against the swept size, log-log, one line per implementation;
where the run measured the roofline (bench/roofline.py), the percentage of the bound
``max(HBM bytes / HBM bw, L2 bytes / L2 bw)`` the best time reaches) and ``summary.md`` (the
same numbers as markdown tables, memory in binary units, with each Triton kernel's sort time).
Results of runs from before the roofline (an HBM-only ``bw_fraction``) are shown as
"% of bw".
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pandas as pd

try:
    from units import format_bytes
except ImportError:  # loaded by file path (tests/test_bench_report.py): bench/ is not on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from units import format_bytes

TIME_FIELDS = ("min", "median", "mean", "stddev", "max", "rounds")


def load(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """Benchmarks of one ``--benchmark-json`` file as a frame, plus its machine info."""
    data = json.loads(Path(path).read_text())
    rows = []
    for bench in data.get("benchmarks", []):
        row = {"name": bench["name"], "group": bench.get("group")}
        stats = bench.get("stats") or {}
        for field in TIME_FIELDS:
            row[field if field == "rounds" else f"{field}_s"] = stats.get(field)
        for key, value in (bench.get("extra_info") or {}).items():
            row[key] = json.dumps(value) if isinstance(value, (list, dict)) else value
        rows.append(row)
    frame = pd.DataFrame(rows)
    if not {"op", "sweep", "x", "impl"} <= set(frame.columns):
        return pd.DataFrame(), {}
    # benchmarks without op/sweep/x (skipped ones, other suites) are left out
    frame = frame.dropna(subset=["op", "sweep", "x", "impl"])
    if not frame.empty:
        frame = frame.sort_values(["op", "sweep", "impl", "x"]).reset_index(drop=True)
    machine = dict(data.get("machine_info") or {})
    machine["datetime"] = data.get("datetime")
    return frame, machine


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", str(text)).strip("_")


def plot(frame: pd.DataFrame, out: Path) -> list[Path]:
    """One PNG per (op, sweep): time and peak memory (and bandwidth fraction) vs ``x``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for (op, sweep), part in frame.groupby(["op", "sweep"], sort=True):
        panels = [("min_s", "best time of rounds (s)"), ("peak_mem_bytes", "peak memory (bytes)")]
        if "pct_of_bound" in part and part["pct_of_bound"].notna().any():
            panels.append(("pct_of_bound", "% of roofline bound (HBM, L2)"))
        elif "bw_fraction" in part and part["bw_fraction"].notna().any():
            panels.append(("bw_fraction", "fraction of copy bandwidth (HBM-only bound)"))
        fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
        for ax, (column, label) in zip(axes[0], panels, strict=True):
            for impl, line in part.groupby("impl", sort=True):
                line = line[line[column].notna() & (line[column] > 0)].sort_values("x")
                if not line.empty:
                    ax.plot(line["x"], line[column], marker="o", label=impl)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel(sweep)
            ax.set_ylabel(label)
            ax.grid(True, which="both", alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
        fig.suptitle(f"{op}: sweep over {sweep}")
        fig.tight_layout()
        path = out / f"{_slug(op)}__{_slug(sweep)}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def markdown_table(frame: pd.DataFrame) -> str:
    """A frame as a GitHub markdown table (no tabulate dependency)."""
    header = [str(c) for c in frame.columns]
    rows = [[str(v) for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _field(row, name: str) -> float:
    value = getattr(row, name, float("nan"))
    return float(value) if pd.notna(value) else float("nan")


def _cell(row) -> str:
    """``"3 ms, 731 MiB, 18.2% of bound, sort 1.2 ms"`` (the roofline parts where measured)."""
    cell = f"{row.min_s * 1e3:.3g} ms, {format_bytes(row.peak_mem_bytes)}"
    pct, fraction, sort_ms = (_field(row, n) for n in ("pct_of_bound", "bw_fraction", "sort_ms"))
    if pct == pct:  # not NaN
        cell += f", {pct:.1f}% of bound"
    elif fraction == fraction:
        cell += f", {fraction:.1%} of bw"
    if sort_ms == sort_ms:
        cell += f", sort {sort_ms:.3g} ms"
    return cell


def summary(frame: pd.DataFrame, machine: dict) -> str:
    """Markdown tables: best time (ms) and peak memory (binary units) per op, sweep, size, impl.

    The best of the timed rounds, not the median: on a shared machine the minimum is the
    least disturbed estimate (the CSV holds min, median, mean, stddev and max).
    """
    lines = [
        f"Run {machine.get('datetime')}, scale {machine.get('hk_scale')}, "
        f"device {machine.get('cuda_device') or machine.get('cpu', {}).get('brand_raw', 'cpu')}, "
        f"torch {machine.get('torch_version')}, triton {machine.get('triton_version')}, "
        f"threads {machine.get('torch_threads')}, copy bandwidth "
        f"{machine.get('bandwidth_gbps') or float('nan'):.2f} GB/s, "
        f"memory via {machine.get('mem_method')}",
        "",
    ]
    if machine.get("l2_gbps"):
        lines[0] += (
            f", roofline: HBM {machine['hbm_gbps']:.0f} GB/s (copy), L2 {machine['l2_gbps']:.0f} "
            f"GB/s (gather of {machine.get('l2_row_bytes')} B rows from a "
            f"{format_bytes(machine.get('l2_buffer_bytes') or 0)} buffer)"
        )
    lines[1:1] = [
        "",
        "Cells: best time, peak memory; where measured, the % of the roofline bound "
        "max(HBM bytes / HBM bw, L2 bytes / L2 bw) the best time reaches and the time of the "
        "kernel's sort (part of its time, timed apart; bench/roofline.py).",
    ]
    for (op, sweep), part in frame.groupby(["op", "sweep"], sort=True):
        if op == "roofline":
            continue
        lines.append(f"### {op} / {sweep}\n")
        cells: dict[int, dict[str, str]] = {}
        for row in part.itertuples(index=False):
            cells.setdefault(int(row.x), {})[row.impl] = _cell(row)
        table = pd.DataFrame.from_dict(cells, orient="index").sort_index()
        table = table[sorted(table.columns)].fillna("")
        lines.append(markdown_table(table.rename_axis(sweep).reset_index()))
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="+", help="files written by pytest --benchmark-json")
    parser.add_argument("--out", default="bench/results", help="output folder")
    parser.add_argument("--no-plots", action="store_true", help="CSV and summary only")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    loaded = [load(path) for path in args.json]
    frames = [frame for frame, _ in loaded if not frame.empty]
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    machine = next((info for _, info in loaded if info), {})
    if frame.empty:
        parser.error(f"{args.json} holds no hyperkern benchmarks with timings")
    frame.to_csv(out / "results.csv", index=False)
    pngs = [] if args.no_plots else plot(frame[frame["min_s"].notna()], out)
    (out / "summary.md").write_text(summary(frame[frame["min_s"].notna()], machine))
    print(f"wrote {out / 'results.csv'} ({len(frame)} rows), {len(pngs)} plots, summary.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
