"""The main job runs end to end on a tiny setting and writes its outputs."""

from hyperkern import demo


def test_demo_runs_and_writes_plot(tmp_path, capsys):
    final = demo.main(["--size", "8", "--steps", "60", "--log-every", "30", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "final eval loss (means rounded" in out and "step     60/60" in out
    assert final >= 0
    assert (tmp_path / "means.png").stat().st_size > 1000
    assert (tmp_path / "layer.pt").exists()
