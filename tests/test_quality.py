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
from transforms.lake.commit import commit_append, release
from transforms.lake.files import write_data_file
from transforms.lake.tables import layer_versions, open_table, read_arrow, read_file, snapshot
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


# --- the gold gate ------------------------------------------------------------------------------
def _duplicate_silver_sessions(lake: str) -> None:
    """A merge bug: one silver_sessions file's rows twice, released."""
    table = SILVER["silver_sessions"]
    versions = layer_versions(lake, SILVER)
    file = snapshot(lake, table, versions[table.name]).files[0]
    copy = write_data_file(lake, table, read_file(file, table), file.partitions)
    commit_append(lake, table, [copy], "test-duplicate", pipeline="test")
    versions[table.name] = open_table(lake, table).version()
    release(lake, "silver", versions, "test-duplicate")


def test_a_blocking_failure_keeps_the_previous_gold_released(tmp_path):
    lake = str(tmp_path / "lake")
    landing = tmp_path / "landing"
    generate(Config(users=300, days=3, seed=5), str(landing))
    backfill.main(["--input", str(landing / "*.jsonl"), "--lake", lake])
    gold_daily.main(["--lake", lake])
    released = layer_versions(lake, GOLD)
    funnel = read_arrow(lake, GOLD["fact_funnel_stage"], released["fact_funnel_stage"])

    _duplicate_silver_sessions(lake)
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
