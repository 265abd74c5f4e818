"""The benchmark harness runs end to end at a tiny size (timings are never asserted)."""
import json

from benchmarks import run


def test_benchmark_runs_and_reports_every_measure(tmp_path):
    report = run.main(["--sizes", "3000,6000", "--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "out"),
                       "--one-core"])
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert [r["size"] for r in saved["results"]] == [3000, 6000]
    for r in saved["results"]:
        assert r["records"] > 0 and r["wall_s"] > 0 and r["peak_rss_mib"] > 0 and r["cpu_s_per_million"] > 0
        assert set(r["steps"]) == {"backfill", "gold_daily"}
        lake = tmp_path / "work" / f"n{r['size']}" / "lake"
        assert (lake / "gold" / "mart_conversion_rate").is_dir()
    assert len(saved["growth"]) == 1
    assert (tmp_path / "out" / "scaling.png").read_bytes()[:4] == b"\x89PNG"
