"""The benchmark harness and its independent SQL reference (timings are never asserted)."""

import hashlib
import hmac
import json
import shutil

import duckdb
import pyarrow.parquet as pq
import pytest

from benchmarks import baseline, reference, run
from transforms.rules.bronze import normalize_email, pseudonym


def test_benchmark_runs_and_the_reference_agrees_on_every_gold_table(tmp_path):
    report = run.main(
        ["--sizes", "3000,6000", "--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "out"), "--rounds", "1"]
    )
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert [r["size"] for r in saved["results"]] == [3000, 6000]
    for r in saved["results"]:
        # the figures are what the harness measured, and its totals and ratios follow from them
        landing = tmp_path / "work" / f"n{r['size']}" / "landing"
        assert r["records"] == sum(len(p.read_bytes().splitlines()) for p in landing.glob("*.jsonl"))
        assert abs(r["records"] - r["size"]) < 0.2 * r["size"]
        assert set(r["steps"]) == {"backfill", "gold_daily"}
        steps = r["steps"].values()
        assert r["wall_s"] == pytest.approx(sum(s["wall_s"] for s in steps), abs=0.02)
        assert r["cpu_s_per_million"] == pytest.approx(sum(s["cpu_s"] for s in steps) / r["records"] * 1e6, rel=0.01)
        assert r["peak_rss_mib"] == max(s["peak_rss_mib"] for s in steps)
        assert 50 < r["peak_rss_mib"] < 24 * 1024  # a Beam process, on this machine
        assert all(s["cpu_s"] > 0 and s["wall_s"] > 0 for s in steps)
        assert r["reference"]["time_ratio"] == pytest.approx(r["wall_s"] / r["reference"]["wall_s"], abs=0.01)
        assert r["differences"] == []
        assert [x["wall_s"] for x in r["rounds"]] == [r["wall_s"]]
        # one round: each step's fastest is that round's step
        assert r["fastest_steps"] == r["steps"]
        assert r["step_rounds"] == {name: [s["wall_s"]] for name, s in r["steps"].items()}
        # the comparison covered real rows in every gold table
        assert all(n > 0 for n in r["gold_rows"].values()), r["gold_rows"]
    [grown] = saved["growth"]
    small, large = saved["results"]
    assert grown["data_x"] == pytest.approx(large["records"] / small["records"], abs=0.01)
    assert grown["time_x"] == pytest.approx(large["wall_s"] / small["wall_s"], abs=0.01)
    if baseline.worktree(baseline.BASELINE, tmp_path / "work") is not None:  # a git checkout, not a tarball
        assert saved["baseline"] == baseline.BASELINE
        for r in saved["results"]:
            # the previous release ran over the same files, and its gold is the same
            assert r["baseline"]["differences"] == [] and r["baseline"]["tables_compared"]
            assert [x["wall_s"] for x in r["baseline"]["rounds"]] == [r["baseline"]["wall_s"]]
            assert r["speedup"]["time_x"] == pytest.approx(r["baseline"]["wall_s"] / r["wall_s"], abs=0.01)
            assert r["speedup"]["cpu_x"] == pytest.approx(
                r["baseline"]["cpu_s_per_million"] / r["cpu_s_per_million"], abs=0.01
            )
            assert r["speedup"]["step_time_x"] == {
                name: pytest.approx(r["baseline"]["fastest_steps"][name]["wall_s"] / s["wall_s"], abs=0.001)
                for name, s in r["fastest_steps"].items()
            }
    assert (tmp_path / "out" / "scaling.png").read_bytes()[:4] == b"\x89PNG"


def test_differential_check_reports_a_changed_value_and_a_missing_row(tmp_path):
    report = run.main(
        ["--sizes", "3000", "--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "out"), "--baseline", "none"]
    )
    # two rounds by default, the fastest reported with both kept
    [result] = report["results"]
    assert len(result["rounds"]) == 2 and result["wall_s"] == min(x["wall_s"] for x in result["rounds"])
    lake, ref = tmp_path / "work" / "n3000" / "lake", tmp_path / "work" / "n3000" / "reference_gold"
    assert reference.differences(reference.compare_gold(lake, ref)) == []

    changed = tmp_path / "changed"
    shutil.copytree(ref, changed)
    con = duckdb.connect()
    con.execute(
        f"COPY (SELECT * REPLACE (CASE WHEN platform = 'all' AND period_grain = 'year' "
        f"THEN sessions_browse + 1 ELSE sessions_browse END AS sessions_browse) "
        f"FROM '{ref}/mart_conversion_rate.parquet') TO '{changed}/mart_conversion_rate.parquet'"
    )
    con.execute(
        f"COPY (SELECT * FROM '{ref}/dim_user.parquet' ORDER BY user_id OFFSET 1) TO '{changed}/dim_user.parquet'"
    )
    report = reference.compare_gold(lake, changed)
    assert report["mart_conversion_rate"]["only_in_pipeline"] == 1
    assert report["mart_conversion_rate"]["only_in_reference"] == 1
    assert report["dim_user"]["only_in_pipeline"] == 1 and report["dim_user"]["only_in_reference"] == 0
    assert report["fact_funnel_stage"]["only_in_pipeline"] == 0
    lines = reference.differences(report)
    assert lines[0].startswith("dim_user: 1 rows only in the pipeline")
    assert any(line.startswith("mart_conversion_rate") for line in lines)
    assert len(pq.read_table(changed / "dim_user.parquet")) == report["dim_user"]["rows"] - 1


def test_sql_pseudonym_is_the_pipelines_hmac():
    key = b"some production secret"
    con = duckdb.connect()
    con.execute(reference.hmac_macro(key))
    for email in ("Someone@Example.com ", "x@y.z", "\u00e9l\u00e8ve@\u00e9cole.fr"):
        sql = con.execute("SELECT pii_hash(?)", [normalize_email(email)]).fetchone()[0]
        assert sql == pseudonym(key, normalize_email(email))
        assert sql == hmac.new(key, normalize_email(email).encode(), hashlib.sha256).hexdigest()
    long_key = b"k" * 100  # longer than a SHA-256 block: hashed first, as HMAC prescribes
    con.execute("DROP MACRO pii_hash")
    con.execute(reference.hmac_macro(long_key))
    assert con.execute("SELECT pii_hash('a@b.c')").fetchone()[0] == pseudonym(long_key, "a@b.c")


def test_streaming_benchmark_counts_only_valid_identities_and_uses_nearest_rank_percentiles():
    from benchmarks import stream

    view = {
        "record_type": "view",
        "schema_version": 1,
        "source": "web-app",
        "payload": {"view_id": "v-1", "session_id": "s-1", "view_timestamp": "2026-11-02T10:00:00Z"},
    }
    assert stream.identity(json.dumps(view).encode()) == ("silver_views", "v-1")
    assert stream.identity(b"{not json") is None
    oversized = {**view, "payload": {**view["payload"], "blob": "x" * (1 << 20)}}
    assert stream.identity(json.dumps(oversized).encode()) is None  # dead-lettered, never in silver
    assert stream.percentile(list(range(1, 101)), 95) == 95
    assert stream.percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert stream.percentile([], 50) is None


# --- every harness runs, baseline included, at a tiny size (a broken harness once landed unnoticed) ---
def test_the_streaming_cpu_harness_runs_both_trees(tmp_path):
    from benchmarks import stream_cpu

    report = stream_cpu.main(["--records", "400", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "streaming_cpu.json").read_text()) == json.loads(json.dumps(report))
    for name in ("baseline", "current") if "baseline" in report else ("current",):
        measured = report[name]
        assert measured["records"] == 400 and measured["cpu_s"] > 0
        assert measured["cpu_s_per_million"] == pytest.approx(measured["cpu_s"] / 400 * 1e6, rel=0.01)
        assert measured["graph"]["pardos"] > 0
    assert report["current"]["graph"]["stateful_pardos"] == 1  # the alerts' state only


def test_the_daily_harness_runs_both_trees(tmp_path):
    from benchmarks import daily

    report = daily.main(
        ["--users", "60", "--history", "1", "--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "out")]
    )
    assert report["history_days"] == [1] and report["day_lines"] > 0
    trees = ("baseline", "current") if baseline.worktree(daily.PREVIOUS_RELEASE, tmp_path / "w") else ("current",)
    assert tuple(report["runs"]) == trees
    for name in trees:
        runs = report["runs"][name]
        assert sorted(runs) == [0, 1]
        assert all(s["cpu_s"] > 0 and s["peak_rss_mib"] > 50 for steps in runs.values() for s in steps.values())
        assert report["backfill_cpu_x_empty"][name][0] == 1.0


@pytest.mark.emulator
def test_the_streaming_harness_runs_both_trees(tmp_path, pubsub_emulator):
    from benchmarks import stream

    report = stream.main(
        [
            "--rate",
            "5",
            "--seconds",
            "2",
            "--backlog",
            "20",
            "--window-seconds",
            "2",
            "--workdir",
            str(tmp_path / "work"),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    # this code merges every record into silver, late ones included
    assert report["paced"]["complete"] and report["paced"]["identities_in_silver"] == report["paced"]["identities"]
    assert report["backlog"]["identities_in_silver"] == report["backlog"]["identities"] > 0
    for job in (report, report.get("baseline")):
        if job is not None:  # the previous release's figures were measured (it leaves its late records out)
            assert job["lake_rows"]["raw"] >= 20 + 10 and job["backlog"]["raw_records_per_s"] > 0
