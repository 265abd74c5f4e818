"""Data quality: the declared checks, their rules, the backfill's checks on
generated data (eight clean weeks with seasonality and an on-sale day; the
same weeks with each defect injected) and the gold gate."""

from __future__ import annotations

from datetime import date, timedelta

import pyarrow as pa
import pytest

from pipelines import backfill, gold_daily
from schemas.quality import (
    AcceptedValues,
    CheckKind,
    Freshness,
    Mix,
    NotNull,
    Relationship,
    Sanity,
    SchemaDrift,
    Severity,
    Unique,
    Volume,
)
from schemas.tables import ALL_TABLES, BRONZE, DQ_RESULTS, GOLD, OPS_ALERTS_STREAM, SILVER
from simulator.traffic import Config, generate
from tests.lake_defects import duplicate_silver_sessions
from transforms.lake.tables import layer_versions, open_table, read_arrow
from transforms.rules import quality
from transforms.rules.quality import Gate, Verdict
from transforms.sinks.quality import DataQualityError

HOUR = 3_600_000_000


# --- declarations --------------------------------------------------------------------------
def test_every_table_of_a_layer_declares_its_checks():
    for table in (*BRONZE.values(), *SILVER.values(), *GOLD.values()):
        kinds = {c.kind for c in table.checks}
        assert CheckKind.NOT_NULL in kinds, table.name
        if table.layer != "bronze":  # bronze keeps every copy: its keys repeat
            assert CheckKind.UNIQUE in kinds, table.name
    for name in ("bronze_sessions", "bronze_views", "bronze_events"):
        kinds = {c.kind for c in BRONZE[name].checks}
        assert {CheckKind.VOLUME, CheckKind.MIX, CheckKind.FRESHNESS, CheckKind.SCHEMA_DRIFT} <= kinds
    for table in ALL_TABLES.values():
        for check in table.checks:
            if isinstance(check, Relationship):
                assert check.parent in SILVER and check.parent_column in SILVER[check.parent].column_names


def test_gold_row_keys_are_the_unique_checks():
    from schemas.tables import GOLD_ROW_KEYS

    for name, table in GOLD.items():
        unique = [c for c in table.checks if isinstance(c, Unique)]
        assert GOLD_ROW_KEYS[name] == unique[0].of and unique[0].severity is Severity.BLOCK


def test_dbt_tests_come_from_the_declarations():
    from schemas.dbt import sources

    by_table = {t["name"]: t for s in sources()["sources"] for t in s["tables"]}
    status = next(c for c in by_table["bronze_event_responses"]["columns"] if c["name"] == "status")
    assert {
        "accepted_values": {
            "values": ["queued", "sent", "delivered", "failed", "bounced"],
            "config": {"severity": "warn"},
        }
    } in status["data_tests"]
    views_session = next(c for c in by_table["silver_views"]["columns"] if c["name"] == "session_id")
    relationship = next(t["relationships"] for t in views_session["data_tests"] if isinstance(t, dict))
    assert relationship["to"] == "source('silver', 'silver_sessions')" and relationship["field"] == "session_id"
    assert relationship["meta"] == {"tolerated_share": 0.1}
    key = next(c for c in by_table["silver_views"]["columns"] if c["name"] == "view_id")
    assert key["data_tests"] == ["not_null", "unique"]  # block checks: dbt's default severity, error


def test_a_check_on_an_unknown_column_is_refused():
    from schemas.table import Table, col

    with pytest.raises(ValueError, match="unknown columns"):
        Table("t", "gold", "d", (col("a", "STRING", "a"),), checks=(NotNull(of=("b",)),))


# --- the rules -------------------------------------------------------------------------------
def test_robust_band_ignores_one_spike():
    median, low, high = quality.robust_band([100, 104, 98, 300, 101], k=4, min_relative=0.4)
    assert median == 101 and low == pytest.approx(60.6) and high == pytest.approx(141.4)


def _weekly(day0: str, weeks: int, value, platform="web") -> dict:
    d = date.fromisoformat(day0)
    return {((d + timedelta(weeks=w)).isoformat(), platform): value(w) for w in range(weeks)}


def test_volume_against_the_same_weekday():
    check = Volume(platforms=("web",))
    counts = _weekly("2026-10-05", 5, lambda w: 1000 + 10 * w)
    counts[("2026-10-06", "web")] = 300  # another weekday: not in the Monday baseline
    ok = quality.volume_results("t", check, counts, ["2026-11-02"], "2026-10-05")[0]
    assert ok.verdict is Verdict.PASS and ok.expected_high is None  # drops only
    counts[("2026-11-02", "web")] = 500
    low = quality.volume_results("t", check, counts, ["2026-11-02"], "2026-10-05")[0]
    assert low.verdict is Verdict.FAIL and low.expected_low == pytest.approx(609.0)
    early = quality.volume_results("t", check, counts, ["2026-10-26"], "2026-10-05")[0]
    assert early.verdict is Verdict.NO_BASELINE  # three weeks before it only
    assert quality.volume_results("t", check, {}, ["2026-11-02"], "2026-10-05")[0].observed == 0


def test_mix_distance():
    check = Mix(column="platform")
    day_counts = {f"2026-10-{d:02d}": {"web": 60, "ios": 40} for d in (5, 12, 19, 26)}
    day_counts["2026-11-02"] = {"web": 60, "ios": 40}
    assert quality.mix_results("t", check, day_counts, ["2026-11-02"], "2026-10-05")[0].verdict is Verdict.PASS
    day_counts["2026-11-02"] = {"web": 60}
    moved = quality.mix_results("t", check, day_counts, ["2026-11-02"], "2026-10-05")[0]
    assert moved.verdict is Verdict.FAIL and moved.observed == pytest.approx(0.4)


def test_freshness_per_platform():
    check = Freshness(time_column="t", platforms=("web", "ios", "android"), max_lag_hours=6)
    results = quality.freshness_results("t", check, {"web": 100 * HOUR, "ios": 90 * HOUR}, 100 * HOUR)
    assert [(r.platform, r.verdict) for r in results] == [("web", Verdict.PASS), ("ios", Verdict.FAIL)]
    stalled = quality.freshness_results("t", check, {"web": 100 * HOUR}, 100 * HOUR, 100 * HOUR, 103 * HOUR)
    assert stalled[-1].subject == "ingest" and stalled[-1].verdict is Verdict.FAIL


def test_row_checks():
    from schemas.table import Table, col

    table = Table(
        "t",
        "gold",
        "d",
        (col("k", "STRING", "k"), col("s", "STRING", "s"), col("a", "INT64", "a"), col("b", "INT64", "b")),
        checks=(
            NotNull(Severity.BLOCK, ("k",)),
            Unique(Severity.BLOCK, ("k",)),
            AcceptedValues(column="s", values=("x", "y")),
            Sanity(Severity.BLOCK, name="a_at_most_b", at_most="a", of="b", per_row=True),
        ),
    )
    rows = pa.table({"k": ["1", "1", None], "s": ["x", "z", None], "a": [1, 5, None], "b": [2, 4, None]})
    results = {r.check_id: r for r in quality.row_results(table, rows)}
    assert results["t.not_null.k"].observed == 1 and results["t.unique.k"].observed == 1
    assert results["t.accepted_values.s"].details == {"unknown_values": ["z"]}
    assert results["t.sanity.a_at_most_b"].observed == 1
    gate = Gate.of(results.values())
    assert not gate.release and "t.unique.k (all)" in gate.blocking and "accepted_values" not in gate.blocking


def test_relationship_share_and_drift():
    check = Relationship(column="c", parent="p", parent_column="k", tolerated_share=0.25)
    r = quality.relationship_result("t", check, "2026-11-02", pa.array(["a", "b", "c", None]), pa.array(["a", "b"]))
    assert r.observed == pytest.approx(1 / 3, abs=1e-4) and r.verdict is Verdict.FAIL
    drift = quality.drift_result("t", SchemaDrift(), "2026-11-02", {"v1", "v3", "payload.x"}, {"v1"})
    assert drift.verdict is Verdict.FAIL and drift.details["new"] == ["payload.x", "v3"]
    assert quality.drift_result("t", SchemaDrift(), "2026-11-02", {"v1"}, None).verdict is Verdict.NO_BASELINE


# --- eight generated weeks ---------------------------------------------------------------------
WEEKLY = (0.8, 0.85, 0.9, 1.0, 1.2, 1.4, 0.85)  # Monday first
EIGHT_WEEKS = {
    "users": 6000,
    "days": 56,
    "seed": 11,
    "start": "2026-09-01",
    "weekday_factors": WEEKLY,
    "on_sale": {"2026-10-02": 3.0},
}
DEFECTS = [
    {"kind": "platform_silent", "day": "2026-09-30", "platform": "ios"},
    {"kind": "volume_drop", "day": "2026-10-08", "share": 0.6},
    {"kind": "null_key_burst", "day": "2026-10-14", "share": 0.15},
    {"kind": "schema_drift", "day": "2026-10-20", "share": 0.5},
    {"kind": "stream_stall", "day": "2026-10-24", "seconds": 900},  # the stream's to judge: the batch fails nothing
]


def _backfilled(tmp_path_factory, name: str, defects: list) -> tuple[str, dict]:
    out = tmp_path_factory.mktemp(name)
    manifest = generate(Config(**EIGHT_WEEKS, defects=defects), str(out / "landing"))
    lake = str(out / "lake")
    backfill.main(["--input", str(out / "landing" / "*.jsonl"), "--lake", lake])  # the defects only warn
    return lake, manifest


@pytest.fixture(scope="module")
def clean_weeks(tmp_path_factory):
    return _backfilled(tmp_path_factory, "clean", [])


@pytest.fixture(scope="module")
def defect_weeks(tmp_path_factory):
    return _backfilled(tmp_path_factory, "defects", DEFECTS)


def _results(lake: str) -> list[dict]:
    return read_arrow(lake, DQ_RESULTS).to_pylist()


def test_clean_weeks_with_seasonality_and_an_on_sale_day_fail_no_check(clean_weeks):
    lake, _ = clean_weeks
    results = _results(lake)
    assert not [(r["check_id"], r["subject"]) for r in results if r["verdict"] == Verdict.FAIL]
    judged = {r["check_kind"] for r in results if r["verdict"] == Verdict.PASS}
    # every kind of the backfill's checks judged something, the seasonal ones included
    assert {"volume", "mix", "freshness", "schema_drift", "relationship", "dead_letter_share", "unique"} <= judged
    on_sale = [r for r in results if r["check_id"] == "bronze_sessions.volume" and str(r["event_date"]) == "2026-10-02"]
    assert on_sale and all(r["verdict"] == Verdict.PASS for r in on_sale)
    assert not [a for a in read_arrow(lake, OPS_ALERTS_STREAM).to_pylist() if a["alert_type"] == "data_quality"]


def _matches(result: dict, expected: dict) -> bool:
    if result["check_id"] != expected["check_id"]:
        return False
    if "event_date" in expected and str(result["event_date"]) != expected["event_date"]:
        return False
    if "platform" in expected and result["platform"] != expected["platform"]:
        return False
    if "source_file" in expected:
        return expected["source_file"] in result["subject"] and f"reason={expected['reason']}" in result["subject"]
    return True


def test_each_defect_fails_exactly_its_own_checks(defect_weeks):
    lake, manifest = defect_weeks
    failed = [r for r in _results(lake) if r["verdict"] == Verdict.FAIL]
    for defect in manifest["defects"]:
        for expected in defect["fails"]:
            assert [r for r in failed if _matches(r, expected)], (defect["kind"], expected)
    unexplained = [
        (r["check_id"], r["subject"])
        for r in failed
        if not any(_matches(r, e) for d in manifest["defects"] for e in d["fails"])
    ]
    assert not unexplained
    assert len(failed) == sum(len(d["fails"]) for d in manifest["defects"])
    alerts = [a for a in read_arrow(lake, OPS_ALERTS_STREAM).to_pylist() if a["alert_type"] == "data_quality"]
    assert len(alerts) == len(failed)


def test_the_stream_defects_as_published_a_silent_platform_sends_nothing_that_day_and_a_stall_pauses(tmp_path):
    import json

    from simulator.publisher import stream_plan
    from simulator.traffic import CANONICAL_PLATFORM

    defects = [
        {"kind": "platform_silent", "day": "2026-11-02", "platform": "ios"},
        {"kind": "stream_stall", "day": "2026-11-02", "seconds": 90},
    ]
    config = Config(users=200, days=3, seed=4, start="2026-11-01", invalid_share=0, defects=defects)
    manifest = generate(config, str(tmp_path))
    paths = sorted(str(p) for p in tmp_path.glob("*.jsonl"))
    plan = stream_plan(paths, manifest)
    assert [pause for _, pause in plan] == [90 if p.endswith("2026-11-02.jsonl") else 0 for p in paths]
    platforms = {
        p.split("_")[-1][:10]: {CANONICAL_PLATFORM.get(json.loads(m).get("platform")) for m in messages}
        for p, (messages, _) in zip(paths, plan)
    }
    assert "ios" not in platforms["2026-11-02"]  # not even what earlier sessions held back
    assert "ios" in platforms["2026-11-01"] and "ios" in platforms["2026-11-03"]
    assert manifest["counters"]["defect_records_held"] > 0
    assert [d["stream_fails"] for d in manifest["defects"]] == [
        [{"check_id": "raw_messages.stream_volume", "platform": "ios"}],
        [{"check_id": "raw_messages.stream_freshness"}],
    ]
    assert manifest["defects"][1]["fails"] == []


# --- the gold gate ------------------------------------------------------------------------------
def test_a_blocking_failure_keeps_the_previous_gold_released(tmp_path):
    lake = str(tmp_path / "lake")
    landing = tmp_path / "landing"
    generate(Config(users=300, days=3, seed=5), str(landing))
    backfill.main(["--input", str(landing / "*.jsonl"), "--lake", lake])
    gold_daily.main(["--lake", lake])
    released = layer_versions(lake, GOLD)
    funnel = read_arrow(lake, GOLD["fact_funnel_stage"], released["fact_funnel_stage"])

    duplicate_silver_sessions(lake)
    with pytest.raises(DataQualityError, match=r"fact_funnel_stage\.unique\.session_id\+stage_number"):
        gold_daily.main(["--lake", lake])
    assert layer_versions(lake, GOLD) == released
    assert read_arrow(lake, GOLD["fact_funnel_stage"], released["fact_funnel_stage"]).equals(funnel)
    # the blocked run's tables were not committed either: a reader of the latest version sees the released one
    assert open_table(lake, GOLD["fact_funnel_stage"]).version() == released["fact_funnel_stage"]
    blocked = [r for r in _results(lake) if r["severity"] == "block" and r["verdict"] == Verdict.FAIL]
    assert {r["check_id"] for r in blocked} >= {"fact_funnel_stage.unique.session_id+stage_number"}

    # the fix: silver recomputed from bronze; the rerun releases
    backfill.main(["--input", str(landing / "*.jsonl"), "--lake", lake, "--rebuild-silver"])
    gold_daily.main(["--lake", lake])
    again = layer_versions(lake, GOLD)
    assert again != released
    rebuilt = read_arrow(lake, GOLD["fact_funnel_stage"], again["fact_funnel_stage"])
    key = [("session_id", "ascending"), ("stage_number", "ascending")]
    assert rebuilt.sort_by(key).equals(funnel.sort_by(key))


# --- completeness ---------------------------------------------------------------------------
def test_completeness_of_recent_days_is_within_five_points_of_what_they_end_up_with(tmp_path, capsys):
    """A lateness profile the generator knows (a quarter of the records 1-3
    days late, daily landing files): the lake holds the files landed by
    2026-09-24 and estimates how complete each recent day is; the rest of the
    files, backfilled after, give each day's true total."""
    import shutil

    from pipelines import status
    from schemas.tables import BRONZE, DQ_COMPLETENESS
    from transforms.lake.tables import snapshot

    landing, lake = tmp_path / "landing", str(tmp_path / "lake")
    first, rest = tmp_path / "by-09-24", tmp_path / "after"
    generate(Config(users=1200, days=30, seed=3, start="2026-09-01", late_share=0.25), str(landing))
    first.mkdir(), rest.mkdir()
    for f in sorted(landing.glob("*.jsonl")):
        shutil.copy2(f, first if f.name <= "raw_events_2026-09-24.jsonl" else rest)  # with its landing time
    backfill.main(["--input", str(first / "*.jsonl"), "--lake", lake])
    estimated = {r["event_date"].isoformat(): r for r in read_arrow(lake, DQ_COMPLETENESS).to_pylist()}
    status.main(["--lake", lake])
    screen = capsys.readouterr().out
    backfill.main(["--input", str(rest / "*.jsonl"), "--lake", lake])

    total: dict[str, int] = {}
    for table in BRONZE.values():
        for f in snapshot(lake, table).files:
            total[f.partition["event_date"]] = total.get(f.partition["event_date"], 0) + f.rows
    recent = sorted(estimated)[-4:]
    assert recent == ["2026-09-21", "2026-09-22", "2026-09-23", "2026-09-24"]
    truths = {}
    for day, row in estimated.items():
        truth = row["received"] / total[day]
        truths[day] = truth
        assert row["expected_share"] == pytest.approx(truth, abs=0.05), day
    assert truths["2026-09-24"] < 0.8  # the estimate has work to do: the newest day is far from complete
    assert estimated["2026-09-24"]["profile_days"] >= 7
    assert "completeness at 2026-09-25 00:05" in screen and "2026-09-24" in screen.split("completeness at")[1]


# --- revisions -----------------------------------------------------------------------------
def test_a_late_wave_revises_its_day_in_the_next_gold_release(tmp_path, capsys):
    """Gold released with the files landed by 2026-10-06; then 40% of
    2026-10-04's records arrive (5 days late) and gold is released again. The
    revision history names the two releases, and equals the differences
    between them read back by time travel."""
    import shutil

    from schemas.tables import METRIC_REVISIONS, RELEASES
    from transforms.lake.revisions import gold_releases
    from transforms.rules.revisions import HEADLINES, headline

    landing, lake = tmp_path / "landing", str(tmp_path / "lake")
    first, rest = tmp_path / "by-10-06", tmp_path / "after"
    wave = {"kind": "late_wave", "day": "2026-10-04", "share": 0.4, "delay_days": 5}
    manifest = generate(Config(users=600, days=8, seed=7, start="2026-10-01", defects=[wave]), str(landing))
    (defect,) = manifest["defects"]
    first.mkdir(), rest.mkdir()
    for f in sorted(landing.glob("*.jsonl")):
        shutil.copy2(f, first if f.name <= "raw_events_2026-10-06.jsonl" else rest)
    backfill.main(["--input", str(first / "*.jsonl"), "--lake", lake])
    failed = [r for r in _results(lake) if r["verdict"] == Verdict.FAIL]
    gold_daily.main(["--lake", lake])
    assert read_arrow(lake, METRIC_REVISIONS).num_rows == 0  # the first release revises nothing
    backfill.main(["--input", str(rest / "*.jsonl"), "--lake", lake])
    capsys.readouterr()
    gold_daily.main(["--lake", lake])
    printed = capsys.readouterr().out

    (_, first_run, before), (_, second_run, after) = gold_releases(lake)
    assert read_arrow(lake, RELEASES).num_rows > 0

    def values(versions):
        out = {}
        for mart in HEADLINES:
            out.update(headline(mart, read_arrow(lake, GOLD[mart], versions[mart])))
        return out

    old, new = values(before), values(after)
    differences = {k: (old[k], new.get(k)) for k in old if old[k] != new.get(k)}  # a day first published: none
    assert differences and len(new) > len(old)
    revised = read_arrow(lake, METRIC_REVISIONS).to_pylist()
    assert {r["release_run_id"] for r in revised} == {second_run}
    assert {r["previous_run_id"] for r in revised} == {first_run}
    assert {(r["period_start"].isoformat(), r["metric"]): (r["previous_value"], r["value"]) for r in revised} == (
        differences
    )
    by_metric = {(r["period_start"].isoformat(), r["metric"]): r for r in revised}
    conversion = by_metric[("2026-10-04", "conversion_rate")]
    # the wave's records were counted as late (bronze keeps every copy: at least the wave)
    assert conversion["late_records"] >= manifest["counters"]["defect_late_wave_records"] * 0.9
    assert (
        by_metric[("2026-10-04", "sessions_browse")]["value"]
        > by_metric[("2026-10-04", "sessions_browse")]["previous_value"]
    )
    assert "gold_daily: revised 2026-10-04 conversion_rate" in printed and "late records" in printed
    # while outstanding, the wave fails its day's relationships, and may fail later children's
    for expected in defect["fails"]:
        assert [r for r in failed if _matches(r, expected)], expected
    allowed = defect["fails"] + defect["may_fail"]
    assert not [(r["check_id"], r["subject"]) for r in failed if not any(_matches(r, e) for e in allowed)]


# --- the stream's health (the rule; the job on the emulator: tests/test_stream_ingest.py) ---------
def test_stream_health_raises_a_silent_platform_and_a_stall_once_each():
    from schemas.quality import StreamFreshness, StreamVolume
    from transforms.rules.stream_health import SECOND, StreamHealth

    health = StreamHealth(
        "raw_messages",
        StreamFreshness(max_silence_seconds=120),
        StreamVolume(platforms=("web", "ios"), window_seconds=60, min_windows=3, min_records=5),
        settle=10 * SECOND,
    )
    minute = 60 * SECOND

    def receive(platform, at, records, arrived=None):
        health.received(platform, at, records, at if arrived is None else arrived)

    for w in range(5):
        receive("web", w * minute + 5 * SECOND, 10)
        receive("ios", w * minute + 7 * SECOND, 8)
        assert health.judge(w * minute + 30 * SECOND) == []
    receive("web", 5 * minute + 5 * SECOND, 10)
    # The clock is past window 5's end and settle, but nothing received after
    # it has reached the judge: the window waits.
    assert health.judge(6 * minute + 30 * SECOND) == []
    receive("ios", 5 * minute + 50 * SECOND, 4, arrived=6 * minute + 35 * SECOND)  # late to the judge
    receive("web", 6 * minute + 20 * SECOND, 10, arrived=6 * minute + 36 * SECOND)
    assert health.judge(6 * minute + 40 * SECOND) == []  # window 5 judged: ios sent in it
    receive("web", 7 * minute + 15 * SECOND, 10)  # ios sends nothing in window 6
    (silent,) = health.judge(7 * minute + 20 * SECOND)
    assert (silent.check_id, silent.platform, silent.verdict) == ("raw_messages.stream_volume", "ios", Verdict.FAIL)
    assert "window" in silent.subject and silent.details["baseline_median"] == 8
    receive("web", 8 * minute + 15 * SECOND, 10)
    assert health.judge(8 * minute + 20 * SECOND) == []  # still silent in window 7: raised once
    # The job falls behind: these reach the judge two minutes after they were
    # received. Arriving steadily, they are no stall.
    receive("ios", 8 * minute + 30 * SECOND, 3, arrived=10 * minute + 20 * SECOND)
    receive("web", 8 * minute + 31 * SECOND, 9, arrived=10 * minute + 20 * SECOND)
    assert health.judge(10 * minute + 21 * SECOND) == []
    assert health.judge(10 * minute + 20 * SECOND + 119 * SECOND) == []
    (stall,) = health.judge(10 * minute + 20 * SECOND + 121 * SECOND)  # then nothing reaches it
    assert stall.check_id == "raw_messages.stream_freshness" and stall.observed == 230.0  # since the newest receipt
    assert health.judge(20 * minute) == []  # once per stall; its empty windows are no platform's silence
