"""bench/roofline.py: the HBM + L2 traffic model, the bound, units, and the CUDA helpers' skips."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import roofline  # noqa: E402
from roofline import Bandwidths, GatherProbe, Model, Traffic  # noqa: E402
from units import GiB, MiB, format_bytes, to_gib  # noqa: E402

# ---- contraction ------------------------------------------------------------------------------


def test_contraction_forward_shared_counts_a_row_of_x_per_nonzero():
    # 3 nonzeros, x (2, 5), y (2, 7), float32 values, int64 indices
    t = roofline.contraction_forward(3, 2, 5, 7)
    assert t.hbm_bytes == 3 * (4 + 2 * 8) + 2 * 5 * 4 + 2 * 7 * 4 == 156
    assert t.l2_gathered_bytes == 3 * (2 * 4) == 24  # each nonzero gathers b = 2 floats


def test_contraction_forward_per_instance_gathers_one_value_per_nonzero():
    t = roofline.contraction_forward(3, 2, 5, 7, shared=False)
    assert t.hbm_bytes == 6 * 20 + 40 + 56 == 216  # b = 2 Ws of 3 nonzeros
    assert t.l2_gathered_bytes == 6 * 4 == 24
    t = roofline.contraction_forward(3, 2, 5, 7, shared=False, c=3, model=Model(value_bytes=2))
    assert t.l2_gathered_bytes == 6 * 3 * 2
    assert t.hbm_bytes == 6 * (2 + 16) + 2 * 5 * 3 * 2 + 2 * 7 * 3 * 2


def test_contraction_forward_at_2_24_matches_the_issue():
    """b = 64, 16384 x 16384, 2^24 nonzeros: the old bound's bytes (the run-2 CSV's
    ``bytes_moved``) and 256 B gathered per nonzero, 4 GiB = 4.3 GB from L2."""
    t = roofline.contraction_forward(2**24, 64, 2**14, 2**14)
    assert t.hbm_bytes == 343_932_928
    assert t.l2_gathered_bytes == 2**24 * 256 == 4 * GiB
    assert round(t.l2_gathered_bytes / 1e9, 1) == 4.3
    assert t.l2_gathered_bytes / t.hbm_bytes > 12


def test_sector_rounding_of_gathered_rows():
    assert roofline.round_up(0, 32) == 0
    assert roofline.round_up(4, 32) == 32
    assert roofline.round_up(33, 32) == 64
    assert roofline.round_up(256, 32) == 256
    with pytest.raises(ValueError):
        roofline.round_up(4, 0)
    narrow = roofline.contraction_forward(3, 2, 5, 7, shared=False, model=Model(sector_bytes=32))
    assert narrow.l2_gathered_bytes == 6 * 32
    wide = roofline.contraction_forward(3, 64, 5, 7, model=Model(sector_bytes=32))
    assert wide.l2_gathered_bytes == roofline.contraction_forward(3, 64, 5, 7).l2_gathered_bytes


def test_contraction_backward_counts():
    t = roofline.contraction_backward(3, 2, 5, 7)
    # nonzeros 60, dy 56 read, x 40 read, dx 40 written, dv' 12 written
    assert t.hbm_bytes == 60 + 56 + 40 + 40 + 12 == 208
    assert t.l2_gathered_bytes == 24  # the ideal fused design: dy[row_j] once per nonzero
    built = roofline.contraction_backward(
        3, 2, 5, 7, row_gathers=roofline.HYPERKERN_BACKWARD_ROW_GATHERS
    )
    assert built.l2_gathered_bytes == 72 and built.hbm_bytes == 208
    assert roofline.contraction_backward(3, 2, 5, 7, dx=False).hbm_bytes == 208 - 40


def test_gathered_buffer_larger_than_l2_reads_its_misses_from_hbm():
    # x (1, 1000) float32 = 4000 B against a 1000 B L2: 3/4 of random gathers miss
    few = roofline.contraction_forward(100, 1, 1000, 1, model=Model(l2_capacity_bytes=1000))
    assert few.hbm_bytes == roofline.contraction_forward(100, 1, 1000, 1).hbm_bytes  # x once
    many = roofline.contraction_forward(10_000, 1, 1000, 1, model=Model(l2_capacity_bytes=1000))
    assert many.hbm_bytes == 10_000 * 20 + 30_000 + 4
    fits = roofline.contraction_forward(10_000, 1, 1000, 1, model=Model(l2_capacity_bytes=4000))
    assert fits.hbm_bytes == 10_000 * 20 + 4000 + 4
    assert many.l2_gathered_bytes == fits.l2_gathered_bytes == 40_000


# ---- the other families -------------------------------------------------------------------

TILES = Model(block_points=4, block_means=2)  # the proportions' tiles: 4 points x 2 means


def test_proportions_forward_counts():
    # b = 1, k = 4 means, S = 2, r = 2: N = 8 points; tiles of 4 points x 2 means
    t = roofline.proportions_forward(1, 4, 2, 2, model=TILES)
    assert t.hbm_bytes == 8 * (16 + 1) + 4 * 5 * 4 + 8 * 4 + 4 * 4 == 264
    pass1 = 2 * 8 * 17  # 2 blocks of means, each streams the 8 points + mask
    pass2 = 2 * 4 * 6 * 4  # 2 blocks of points, each streams 4 means (mu, sigma, value, lognorm)
    assert t.l2_gathered_bytes == pass1 + pass2 == 464


def test_proportions_forward_with_a_ragged_last_context():
    t = roofline.proportions_forward(1, 4, 2, 2, context_size=3, model=TILES)
    first = 2 * 6 * 17 + 2 * 3 * 24  # 3 means, 6 points
    last = 1 * 2 * 17 + 1 * 1 * 24  # 1 mean, 2 points
    assert t.l2_gathered_bytes == first + last == 406
    assert t.hbm_bytes == 264  # compulsory traffic does not depend on the contexts
    twice = roofline.proportions_forward(2, 4, 2, 2, context_size=3, model=TILES)
    assert twice == Traffic(2 * 264, 2 * 406)


def test_proportions_backward_counts():
    t = roofline.proportions_backward(1, 4, 2, 2, model=Model(block_means=2))
    assert t.hbm_bytes == 8 * (4 + 16 + 1) + 4 * 6 * 4 + 4 * 5 * 4 == 344
    assert t.l2_gathered_bytes == 2 * 8 * (16 + 1 + 4) == 336


def test_duplicate_mask_and_sampling_counts():
    t = roofline.duplicate_mask(10, 2)
    assert t == Traffic(10 * (16 + 8) + 10 * (8 + 8 + 1), 10)
    assert roofline.duplicate_mask(10, 2, from_keys=True).hbm_bytes == 170
    assert roofline.duplicate_mask(10, 2, model=Model(sector_bytes=32)).l2_gathered_bytes == 320
    s = roofline.sampling(1, 4, 2, 2)
    assert s == Traffic(4 * 2 * 4 + 8 * 2 * 8 + 8 * 8 + 2 * 8 * 8, 0)
    assert roofline.sampling(1, 4, 2, 2, keys=False, flat=False).hbm_bytes == 32 + 128


def test_layer_step_is_the_sum_of_its_ops():
    b, k, S, n_in, n_out, cs = 4, 8, 8, 32, 16, 4
    nnz = k * S
    parts = [
        roofline.sampling(1, k, S, 2),
        roofline.duplicate_mask(nnz, 2, from_keys=True),
        roofline.proportions_forward(1, k, S, 2, context_size=cs),
        roofline.contraction_forward(nnz, b, n_in, n_out),
        roofline.contraction_backward(nnz, b, n_in, n_out),
        roofline.proportions_backward(1, k, S, 2, context_size=cs),
    ]
    total = Traffic(sum(p.hbm_bytes for p in parts), sum(p.l2_gathered_bytes for p in parts))
    assert roofline.layer_step(b, k, S, n_in, n_out, context_size=cs) == total
    no_dx = roofline.layer_step(b, k, S, n_in, n_out, context_size=cs, x_grad=False)
    assert no_dx.hbm_bytes == total.hbm_bytes - b * n_in * 4


def test_traffic_adds():
    assert Traffic(1, 2) + Traffic(30, 40) == Traffic(31, 42)


# ---- the bound ----------------------------------------------------------------------------


def test_bound_is_the_larger_of_the_two_terms():
    t = Traffic(hbm_bytes=3 * 10**9, l2_gathered_bytes=4 * 10**9)
    assert roofline.bound_seconds(t, 3e12, 8e12) == pytest.approx(1e-3)  # HBM: 1 ms > 0.5 ms
    assert roofline.bound_by(t, 3e12, 8e12) == "hbm"
    assert roofline.bound_seconds(t, 3e12, 2e12) == pytest.approx(2e-3)  # L2: 2 ms > 1 ms
    assert roofline.bound_by(t, 3e12, 2e12) == "l2"
    assert roofline.bound_by(Traffic(4, 4), 1.0, 1.0) == "hbm"
    for hbm, l2 in ((0.0, 1.0), (1.0, -1.0)):
        with pytest.raises(ValueError):
            roofline.bound_seconds(t, hbm, l2)


def test_the_old_bound_ignored_the_gathers():
    """At 2^24 the HBM-only bound (0.115 ms at 2983 GB/s) is 8x below the L2 term even at an
    L2 bandwidth of 4x HBM's; the roofline takes the larger."""
    t = roofline.contraction_forward(2**24, 64, 2**14, 2**14)
    hbm_only = t.hbm_bytes / 2983e9
    assert hbm_only == pytest.approx(0.1153e-3, rel=1e-3)
    bound = roofline.bound_seconds(t, 2983e9, 4 * 2983e9)
    assert bound == pytest.approx(t.l2_gathered_bytes / (4 * 2983e9))
    assert bound > 3 * hbm_only


def test_roofline_info_fields():
    bw = Bandwidths(
        hbm=2e12, l2=8e12, l2_capacity_bytes=50 * MiB, l2_buffer_bytes=16 * MiB, l2_row_bytes=256
    )
    t = Traffic(2 * 10**9, 4 * 10**9)  # HBM 1 ms, L2 0.5 ms
    info = roofline.roofline_info(t, bw, seconds=4e-3, sort_s=2e-3)
    assert info["bound_ms"] == pytest.approx(1.0)
    assert info["bound_by"] == "hbm"
    assert info["pct_of_bound"] == pytest.approx(25.0)
    assert info["sort_ms"] == pytest.approx(2.0)
    assert info["pct_of_bound_excl_sort"] == pytest.approx(50.0)
    assert info["hbm_gbps"] == pytest.approx(2000) and info["l2_gbps"] == pytest.approx(8000)
    assert (info["hbm_bytes"], info["l2_bytes"]) == (2 * 10**9, 4 * 10**9)
    untimed = roofline.roofline_info(t, bw)
    assert "pct_of_bound" not in untimed and "sort_ms" not in untimed
    assert bw.info()["l2_buffer_bytes"] == 16 * MiB
    assert bw.probe == GatherProbe(buffer_bytes=16 * MiB, row_bytes=256)


# ---- units --------------------------------------------------------------------------------


def test_gib_is_two_to_the_thirty():
    assert GiB == 2**30 and MiB == 2**20
    assert to_gib(2**30) == 1.0
    assert to_gib(1253 * MiB) == pytest.approx(1.2236, abs=1e-4)  # not 1.25 (MiB / 1000)
    assert format_bytes(1253 * MiB) == "1.22 GiB"
    assert format_bytes(22_530 * MiB) == "22 GiB"
    assert format_bytes(6660 * MiB) == "6.5 GiB"
    assert format_bytes(2**21) == "2 MiB"
    assert format_bytes(1023 * MiB) == "1023 MiB"
    assert format_bytes(0.91 * MiB) == "932 KiB"
    assert format_bytes(512) == "512 B"


# ---- sorts --------------------------------------------------------------------------------


def test_contraction_sorts_mirror_the_launcher():
    (fwd,) = roofline.contraction_sorts(2**24, 64, 2**14, 2**15)
    assert fwd.shape == (2**24,) and fwd.dtype == torch.int32 and fwd.key_range == 2**15
    fwd, bwd = roofline.contraction_sorts(2**17, 64, 2**14, 2**15, shared=False, backward=True)
    assert fwd.shape == bwd.shape == (64 * 2**17,)
    assert (fwd.key_range, bwd.key_range) == (64 * 2**15, 64 * 2**14)
    assert roofline.segment_key_dtype(2**31 - 2) == torch.int32
    assert roofline.segment_key_dtype(2**31 - 1) == torch.int64


def test_duplicate_mask_sorts_per_context():
    (spec,) = roofline.duplicate_mask_sorts(16, 2**20, 8)
    assert spec.shape == (16, 2**23) and spec.dtype == torch.int64  # 8.4M tuples per instance
    (spec,) = roofline.duplicate_mask_sorts(2, 4096 + 1, 8, context_size=1024)
    assert spec.shape == (2 * 5, 1024 * 8)
    assert roofline.duplicate_mask_sorts(2, 0, 8) == []


# ---- measurement ----------------------------------------------------------------------------


def test_l2_probe_methods_gather_the_same_rows():
    kw = dict(buffer_bytes=64 * 256, row_bytes=256, gathers=48, bag=8)
    bag_sum, gathered = roofline.l2_gather_probe("cpu", GatherProbe(method="embedding_bag", **kw))
    rows, gathered_too = roofline.l2_gather_probe("cpu", GatherProbe(method="index_select", **kw))
    assert gathered == gathered_too == 48 * 256
    out = rows()
    assert out.shape == (48, 64)
    torch.testing.assert_close(bag_sum(), out.reshape(6, 8, 64).sum(1))
    with pytest.raises(ValueError):
        roofline.l2_gather_probe("cpu", GatherProbe(method="gather", **kw))
    with pytest.raises(ValueError):
        roofline.l2_gather_probe("cpu", GatherProbe(buffer_bytes=1024, row_bytes=6))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the skip without CUDA")
@pytest.mark.parametrize(
    "call",
    [
        lambda: roofline.measure_hbm_bandwidth(),
        lambda: roofline.measure_l2_bandwidth(),
        lambda: roofline.measure_bandwidths(),
        lambda: roofline.sort_seconds(roofline.contraction_sorts(16, 1, 4, 4)),
    ],
)
def test_measurement_skips_without_cuda(call):
    with pytest.raises(pytest.skip.Exception):
        call()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_measurement_on_cuda():
    bw = roofline.measure_bandwidths(hbm_bytes=2**28, repeats=3)
    assert bw.hbm > 0 and bw.l2 > 0
    assert bw.l2_buffer_bytes <= bw.l2_capacity_bytes // 3
    assert roofline.sort_seconds(roofline.contraction_sorts(2**16, 1, 64, 64), repeats=3) > 0


# ---- report -------------------------------------------------------------------------------


def _load_report():
    spec = importlib.util.spec_from_file_location("hk_bench_report_roofline", BENCH / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_report_shows_the_bound_and_the_sort(tmp_path):
    pytest.importorskip("pandas", reason="bench/report.py needs the bench extra: .[bench]")
    extra = {
        "op": "contract forward",
        "sweep": "nnz",
        "x": 2**24,
        "impl": "triton",
        "peak_mem_bytes": 1253 * MiB,
        "pct_of_bound": 18.24,
        "sort_ms": 1.2,
        "bound_ms": 0.55,
    }
    stats = {"min": 3e-3, "median": 3e-3, "mean": 3e-3, "stddev": 0.0, "max": 3e-3, "rounds": 3}
    bench = {"name": "t", "group": "g", "stats": stats, "extra_info": extra}
    machine = {
        "hk_scale": "gpu",
        "bandwidth_gbps": 2983.0,
        "hbm_gbps": 2983.0,
        "l2_gbps": 7000.0,
        "l2_row_bytes": 256,
        "l2_buffer_bytes": 16 * MiB,
    }
    source = tmp_path / "r.json"
    source.write_text(json.dumps({"machine_info": machine, "benchmarks": [bench]}))
    out = tmp_path / "out"
    assert _load_report().main([str(source), "--out", str(out), "--no-plots"]) == 0
    text = (out / "summary.md").read_text()
    assert "3 ms, 1.22 GiB, 18.2% of bound, sort 1.2 ms" in text
    assert "L2 7000 GB/s (gather of 256 B rows from a 16 MiB buffer)" in text
