"""bench/report.py on a small synthetic ``--benchmark-json`` file."""

import importlib.util
import json
from pathlib import Path

import pytest

pd = pytest.importorskip("pandas", reason="bench/report.py needs the bench extra: .[bench]")

REPORT = Path(__file__).resolve().parents[1] / "bench" / "report.py"


def load_report():
    spec = importlib.util.spec_from_file_location("hk_bench_report", REPORT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_bench(op, sweep, x, impl, median, peak, fraction=None):
    extra = {"op": op, "sweep": sweep, "x": x, "impl": impl, "peak_mem_bytes": peak, "dims": [x, x]}
    if fraction is not None:
        extra["bw_fraction"] = fraction
    stats = {
        "min": median * 0.5,
        "median": median,
        "mean": median,
        "stddev": 0.0,
        "max": median * 1.1,
        "rounds": 3,
    }
    return {
        "name": f"test_{op}[{sweep}={x}-{impl}]",
        "group": f"{op} / {sweep}",
        "stats": stats,
        "extra_info": extra,
    }


def write_json(path, benchmarks):
    machine = {
        "hk_scale": "tiny",
        "torch_version": "x",
        "triton_version": "y",
        "bandwidth_gbps": 12.5,
        "mem_method": "rss_hwm",
    }
    data = {"machine_info": machine, "datetime": "2026-01-01T00:00:00", "benchmarks": benchmarks}
    path.write_text(json.dumps(data))


def test_report_writes_csv_plots_and_summary(tmp_path):
    benchmarks = [
        fake_bench("contract forward", "nnz", 2**10, "torch", 1e-3, 2**20, 0.25),
        fake_bench("contract forward", "nnz", 2**12, "torch", 3e-3, 2**21, 0.5),
        fake_bench("contract forward", "nnz", 2**10, "coo", 2e-3, 3 * 2**20, 0.125),
        fake_bench("proportions fwd+bwd", "k", 64, "torch", 5e-3, 2**22),
        fake_bench("proportions fwd+bwd", "k", 128, "dense_prop", 7e-3, 0),
    ]
    skipped = {"name": "test_skipped", "group": None, "stats": None, "extra_info": {}}
    foreign = fake_bench("hypernet", "batch", 8, "loop", 1e-3, 1)
    del foreign["extra_info"]["op"]  # another suite's benchmark: no op, left out
    source = tmp_path / "results.json"
    write_json(source, benchmarks + [skipped, foreign])
    out = tmp_path / "out"
    assert load_report().main([str(source), "--out", str(out)]) == 0

    frame = pd.read_csv(out / "results.csv")
    assert len(frame) == 5
    row = frame[(frame["impl"] == "torch") & (frame["x"] == 2**12)].iloc[0]
    assert row["median_s"] == pytest.approx(3e-3)
    assert row["peak_mem_bytes"] == 2**21
    assert row["bw_fraction"] == pytest.approx(0.5)
    assert json.loads(row["dims"]) == [2**12, 2**12]

    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["contract_forward__nnz.png", "proportions_fwd_bwd__k.png"]
    for name in pngs:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    text = (out / "summary.md").read_text()
    assert "12.50 GB/s" in text
    assert "1.5 ms, 2 MiB, 50.0% of bw" in text  # best (min) time
    assert "| nnz | coo | torch |" in text


def test_report_rejects_json_without_benchmarks(tmp_path):
    source = tmp_path / "empty.json"
    write_json(source, [])
    with pytest.raises(SystemExit):
        load_report().main([str(source), "--out", str(tmp_path / "out"), "--no-plots"])
