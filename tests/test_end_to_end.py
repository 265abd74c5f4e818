"""Backfill + gold end to end: the contract sample, and generated data checked
against the generator's manifest."""

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from collections import Counter
from datetime import date
from pathlib import Path

import duckdb
import orjson
import pyarrow.dataset as ds
import pytest

from benchmarks import reference
from pipelines import backfill, export_audience, gold_daily
from pipelines.common import counters
from schemas.contract import RECORD_TYPES, now_micros
from schemas.tables import BRONZE, GOLD, SILVER
from simulator import traffic
from tests.conftest import SAMPLE, content_checksums, read_table
from transforms.rules.pii import local_key

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("browse", "add_to_cart", "payment_successful", "email_confirmation", "barcode_scanned")


def run_backfill(lake, *args):
    return counters(backfill.main(["--lake", str(lake), *args]))


def run_gold(lake):
    return counters(gold_daily.main(["--lake", str(lake)]))


def bronze_rows(lake) -> list[dict]:
    return [r | {"table": name} for name in BRONZE for r in read_table(lake / "bronze" / name)]


# --- the contract's sample, through the documented CLI -----------------------------------------
def test_contract_sample_through_the_cli(tmp_path):
    lake = tmp_path / "lake"
    for module in ("pipelines.backfill", "pipelines.gold_daily"):
        args = ["--input", str(SAMPLE)] if module.endswith("backfill") else []
        subprocess.run(
            [sys.executable, "-m", module, *args, "--lake", str(lake)], check=True, cwd=ROOT, capture_output=True
        )
    lines = SAMPLE.read_bytes().splitlines()
    dead = {r["source_line"]: r["reason"] for r in read_table(lake / "dead_letter")}
    assert dead == {16: "invalid_json", 17: "invalid_timestamp", 18: "unknown_record_type"}

    bronze = {(r["table"], r["source_line"]) for r in bronze_rows(lake)}
    expected = {
        (RECORD_TYPES[orjson.loads(line)["record_type"]].bronze_table, n)
        for n, line in enumerate(lines, start=1)
        if n not in dead
    }
    assert bronze == expected
    assert len(lines) == len(bronze) + len(dead)  # records read = bronze rows + dead-letter rows

    funnel = {(r["session_id"], r["stage_name"]) for r in read_table(lake / "gold" / "fact_funnel_stage")}
    assert funnel == {("s-5001", s) for s in STAGES} | {("s-5002", "browse")}
    assert {t for t in os.listdir(lake / "gold")} == set(GOLD)


# --- generated data ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("generated")
    landing, lake = root / "landing", root / "lake"
    manifest = traffic.generate(traffic.Config(users=1500, days=5, seed=7), str(landing))
    first = run_backfill(lake, "--input", str(landing / "*.jsonl"))
    run_gold(lake)
    return {"landing": landing, "lake": lake, "manifest": manifest, "counters": first}


def test_every_record_is_accounted_for(generated):
    lake, manifest, c = generated["lake"], generated["manifest"], generated["counters"]
    dead = read_table(lake / "dead_letter")
    assert c["records_read"] == manifest["records_total"]
    assert len(bronze_rows(lake)) + len(dead) == manifest["records_total"]
    assert dict(Counter(r["reason"] for r in dead)) == manifest["invalid_by_reason"]


def test_silver_holds_each_identity_once_and_all_of_them(generated):
    lake, manifest = generated["lake"], generated["manifest"]
    for rt in RECORD_TYPES.values():
        keys = [r[rt.key] for r in read_table(lake / "silver" / rt.silver_table)]
        assert len(keys) == len(set(keys)), rt.silver_table
        expected = manifest["unique_identities"][rt.name]
        if rt.name == "session":
            expected += manifest["sessions_without_record"]  # inferred from their views/clicks/events
        assert len(keys) == expected, rt.silver_table
    conflicts = {
        k.removeprefix("conflicts_"): v for k, v in generated["counters"].items() if k.startswith("conflicts_")
    }
    assert conflicts == {
        k.removeprefix("conflicts_"): v for k, v in manifest["counters"].items() if k.startswith("conflicts_")
    }


def test_gold_funnel_recovers_the_true_journeys(generated):
    lake, manifest = generated["lake"], generated["manifest"]
    stages = Counter(r["stage_name"] for r in read_table(lake / "gold" / "fact_funnel_stage"))
    assert {s: stages[s] for s in STAGES} == manifest["sessions_per_stage"]
    by_day = {
        str(r["period_start"]): dict(
            zip(
                STAGES,
                (
                    r["sessions_browse"],
                    r["sessions_add_to_cart"],
                    r["sessions_payment"],
                    r["sessions_email_confirmation"],
                    r["sessions_barcode_scanned"],
                ),
            )
        )
        for r in read_table(lake / "gold" / "mart_conversion_rate")
        if r["period_grain"] == "day" and r["platform"] == "all" and r["sessions_browse"]
    }
    assert by_day == manifest["sessions_per_stage_by_day"]
    assert len(read_table(lake / "gold" / "dim_user")) == manifest["config"]["users"]


def test_the_contract_funnel_definition_holds_the_journeys_of_fact_funnel_stage(generated):
    lake = generated["lake"]
    stages = {
        (r["session_id"], r["stage_name"], r["reached_at"], r["user_id"], r["platform"], r["device_type"], r["country"])
        for r in read_table(lake / "gold" / "fact_funnel_stage")
    }
    defined = {
        (r["unit_id"], STAGES[k], at, r["user_id"], r["platform"], r["device_type"], r["country"])
        for r in read_table(lake / "gold" / "fact_funnel")
        if r["funnel"] == "contract"
        for k, at in enumerate(r["reached_at"])
    }
    assert defined == stages and len(stages) > 1000


def test_users_journeys_across_sessions_within_seven_days_are_the_planned_ones(tmp_path):
    """Users come back days later (inside the 7-day window and past it):
    journey_7d per entry and step equals the plan's truth, and the DuckDB
    reference computes every defined funnel the same, re-entries included."""
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    manifest = traffic.generate(traffic.Config(users=300, days=12, seed=5, p_return=0.5), str(landing))
    run_backfill(lake, "--input", str(landing / "*.jsonl"))
    run_gold(lake)
    truth = manifest["user_journeys_7d"]
    assert truth["returns_planned"] > 50 and truth["entries_across_sessions"] > 50 and "2" in truth["by_entry"]
    got = Counter(
        (str(r["entry_number"]), STAGES[k])
        for r in read_table(lake / "gold" / "fact_funnel")
        if r["funnel"] == "journey_7d"
        for k in range(r["steps_reached"])
    )
    assert {(n, stage): count for n, steps in truth["by_entry"].items() for stage, count in steps.items()} == got

    con = duckdb.connect()
    reference.build(con, sorted(map(str, landing.glob("*.jsonl"))), date.today(), now_micros(), local_key().secret)
    reference.write_gold(con, tmp_path / "reference")
    report = reference.compare_gold(lake, tmp_path / "reference", tables=["fact_funnel", "mart_funnel"])
    assert reference.differences(report) == []
    assert report["fact_funnel"]["rows"] > 1000


def test_landing_files_backfilled_one_at_a_time_in_shuffled_order_give_the_gold_of_one_backfill(generated, tmp_path):
    """Each daily run merges its file into silver (the first rebuilds, the
    others merge): late and duplicated records cross the files, so every
    merge touches earlier days. Gold equals one backfill of all of them,
    and the manifest's truths."""
    import random

    lake, manifest = tmp_path / "lake", generated["manifest"]
    files = sorted(generated["landing"].glob("*.jsonl"))
    random.Random(3).shuffle(files)
    merged = []
    for path in files:
        c = run_backfill(lake, "--input", str(path))
        merged.append(c.get("bronze_rows_merged", 0))
    assert sum(merged[1:]) > 0  # the later runs merged (the first rebuilt)
    gold_daily.main(["--lake", str(lake), "--as-of", "2026-11-30"])
    reference = tmp_path / "reference"
    shutil.copytree(generated["lake"], reference)
    gold_daily.main(["--lake", str(reference), "--as-of", "2026-11-30"])
    assert content_checksums(lake, GOLD, "gold") == content_checksums(reference, GOLD, "gold")
    stages = Counter(r["stage_name"] for r in read_table(lake / "gold" / "fact_funnel_stage"))
    assert {s: stages[s] for s in STAGES} == manifest["sessions_per_stage"]
    for rt in RECORD_TYPES.values():
        keys = [r[rt.key] for r in read_table(lake / "silver" / rt.silver_table)]
        expected = manifest["unique_identities"][rt.name] + (
            manifest["sessions_without_record"] if rt.name == "session" else 0
        )
        assert len(keys) == len(set(keys)) == expected, rt.silver_table


def _within(observed_k, n, p, sigmas=4.0):
    return abs(observed_k / n - p) <= sigmas * math.sqrt(p * (1 - p) / n)


def test_gold_rates_match_the_generators_probabilities(generated):
    """Within sampling tolerance (4 standard errors) of the configured truth."""
    lake, manifest = generated["lake"], generated["manifest"]
    cfg = manifest["config"]
    (year,) = [
        r
        for r in read_table(lake / "gold" / "mart_conversion_rate")
        if r["period_grain"] == "year" and r["platform"] == "all"
    ]
    assert _within(year["sessions_add_to_cart"], year["sessions_browse"], cfg["p_cart"])
    assert _within(year["sessions_barcode_scanned"], year["sessions_email_confirmation"], cfg["p_scan"])

    # The A/B test: checkout rate per variant, from silver assignments and gold stages.
    variant = {
        r["session_id"]: json.loads(r["experiments_json"])["checkout_button"]
        for r in read_table(lake / "silver" / "silver_sessions")
        if r["experiments_json"]
    }
    reached = Counter(
        (variant.get(r["session_id"]), r["stage_name"]) for r in read_table(lake / "gold" / "fact_funnel_stage")
    )
    for name, truth in cfg["p_pay"].items():
        assert _within(reached[(name, "payment_successful")], reached[(name, "add_to_cart")], truth), name
        assert reached[(name, "payment_successful")] == manifest["ab_test"]["variants"][name]["paid"]


def test_alerts_are_exactly_the_injected_failures_and_unconfirmed_payments(generated):
    lake, truth = generated["lake"], generated["manifest"]["alerts"]
    alerts = read_table(lake / "gold" / "ops_alerts")
    of_type = lambda t: [a for a in alerts if a["alert_type"] == t]  # noqa: E731
    # every injected failure raises exactly one email_failed
    assert sorted(a["response_id"] for a in of_type("email_failed")) == truth["email_failed"]
    # every payment left unconfirmed (none, or only after 30 minutes) raises one; no confirmed payment does
    assert sorted(a["event_id"] for a in of_type("confirmation_missing")) == truth["confirmation_missing"]
    assert truth["confirmation_missing"] and truth["email_failed"]
    # the failure burst raises the rate alert for its window
    windows = {json.loads(a["details"])["window_start"] for a in of_type("email_failure_rate")}
    assert {w.replace("+00:00", ".000000Z") for w in truth["email_failure_burst_windows"]} <= windows
    assert len({a["alert_id"] for a in alerts}) == len(alerts)


def test_retargeting_audience_is_the_planned_one_with_hashed_emails(generated):
    lake, manifest = generated["lake"], generated["manifest"]
    audience = read_table(lake / "gold" / "mart_retargeting")
    assert sorted(r["user_id"] for r in audience) == manifest["retargeting_users"]
    users = {r["user_id"]: r for r in read_table(lake / "silver" / "silver_users")}
    for row in audience:
        assert row["email_sha256"] == users[row["user_id"]]["email_sha256"] and len(row["email_sha256"]) == 64
        assert row["carted_articles"] and row["cart_value"] > 0


def test_audience_export_is_a_customer_match_file_of_hashed_emails(generated, tmp_path, capsys):
    lake, manifest = generated["lake"], generated["manifest"]

    def planned_email(user_id):  # the generator's plaintext address of each user
        i = int(user_id[2:])
        return f" User{i}.Name@Example.com " if i % 3 == 0 else f"user{i}@example.com"

    out = tmp_path / "audience.csv"
    assert export_audience.main(["--lake", str(lake), "--out", str(out)]) == len(manifest["retargeting_users"])
    lines = out.read_text().splitlines()
    assert lines[0] == "Email"
    assert lines[1:] == sorted(
        hashlib.sha256(planned_email(u).strip().lower().encode()).hexdigest() for u in manifest["retargeting_users"]
    )
    assert f"retargeting audience: {len(lines) - 1:,} users" in capsys.readouterr().out
    assert export_audience.main(["--lake", str(lake), "--out", str(out), "--since", "2099-01-01"]) == 0
    assert out.read_text().splitlines() == ["Email"]


def test_who_dropped_at_a_funnel_step_of_one_breakdown_value_is_an_audience(generated, tmp_path, capsys):
    """The contract funnel's sessions on iOS that browsed and never carted:
    their users' hashed emails (fact_funnel_stage says who they are)."""
    lake = generated["lake"]
    stages = Counter()
    for r in read_table(lake / "gold" / "fact_funnel_stage"):
        if r["platform"] == "ios":
            stages[(r["session_id"], r["user_id"])] = max(stages[(r["session_id"], r["user_id"])], r["stage_number"])
    users = {r["user_id"]: r["email_sha256"] for r in read_table(lake / "silver" / "silver_users")}
    dropped = [user for (_, user), furthest in stages.items() if furthest == 1]
    expected = sorted({users[u] for u in dropped if u in users})
    out = tmp_path / "dropped.csv"
    args = ["--lake", str(lake), "--out", str(out), "--funnel", "contract", "--step", "add_to_cart"]
    assert export_audience.main([*args, "--breakdown", "platform", "--value", "ios"]) == len(expected) > 20
    assert out.read_text().splitlines() == ["Email", *expected]
    left_out = sum(1 for u in dropped if u not in users)
    assert f"dropped at contract.add_to_cart, platform = ios: {len(expected):,} users" in capsys.readouterr().out
    assert left_out > 0  # anonymous sessions: no user to reach
    everyone = export_audience.main([*args])
    assert everyone > len(expected)
    with pytest.raises(SystemExit) as refused:
        export_audience.main([*args[:-1], "checkout"])
    assert refused.value.code == 2
    assert "funnel 'contract' has no step 'checkout' (steps: browse, add_to_cart" in capsys.readouterr().err


def test_ab_readout_counts_the_assigned_sessions(generated):
    lake, manifest = generated["lake"], generated["manifest"]
    rows = {(r["experiment"], r["variant"]): r for r in read_table(lake / "gold" / "mart_ab_test")}
    for experiment, truth in (("checkout_button", manifest["ab_test"]), ("banner_color", manifest["aa_test"])):
        for variant, counts in truth["variants"].items():
            row = rows[(experiment, variant)]
            assert row["sessions"] == counts["sessions"] and row["sessions_payment"] == counts["paid"]
            assert row["is_control"] == (variant in ("control", "A"))
            assert row["srm_flag"] is False  # an even split
    assert rows[("checkout_button", "B")]["lift_vs_control"] > 0


def test_no_plaintext_email_or_phone_outside_raw(generated):
    lake = generated["lake"]

    def leaks(folder):
        found = []
        for path in folder.rglob("*.parquet"):
            for row in ds.dataset(str(path)).to_table().to_pylist():
                for value in row.values():
                    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
                    if "@example.com" in text.lower() or "+34 6" in text:
                        found.append((path, text[:80]))
        return found

    assert leaks(lake / "raw"), "the check must be able to see plaintext where it is allowed"
    for layer in os.listdir(lake):
        if layer != "raw":
            assert leaks(lake / layer) == [], layer


def _snapshot(lake, tables, folder):
    return {
        name: sorted(json.dumps(r, sort_keys=True, default=str) for r in read_table(lake / folder / name))
        for name in tables
    }


def test_rerunning_the_same_input_is_idempotent(generated, tmp_path):
    lake = tmp_path / "lake"
    shutil.copytree(generated["lake"], lake)
    silver, gold = _snapshot(lake, SILVER, "silver"), _snapshot(lake, GOLD, "gold")
    bronze_count, dead_count = len(bronze_rows(lake)), len(read_table(lake / "dead_letter"))
    raw = sorted(p.name for p in (lake / "raw").rglob("*.parquet"))

    run_backfill(lake, "--input", str(generated["landing"] / "*.jsonl"))
    run_gold(lake)
    assert _snapshot(lake, SILVER, "silver") == silver
    assert _snapshot(lake, GOLD, "gold") == gold
    assert (len(bronze_rows(lake)), len(read_table(lake / "dead_letter"))) == (bronze_count, dead_count)
    assert sorted(p.name for p in (lake / "raw").rglob("*.parquet")) == raw


def test_replaying_the_raw_files_twice_gives_byte_identical_silver_and_gold(generated, tmp_path):
    lake = tmp_path / "lake"
    shutil.copytree(generated["lake"], lake)
    first = content_checksums(lake, SILVER, "silver"), content_checksums(lake, GOLD, "gold")
    assert len(read_table(lake / "silver" / "silver_sessions")) > 100
    for _ in range(2):
        run_backfill(lake, "--input", str(lake / "raw" / "**" / "*.parquet"))
        run_gold(lake)
        assert (content_checksums(lake, SILVER, "silver"), content_checksums(lake, GOLD, "gold")) == first


def test_a_date_range_backfill_replaces_exactly_that_range(generated, tmp_path):
    lake = tmp_path / "lake"
    shutil.copytree(generated["lake"], lake)
    day = "2026-11-03"
    outside = sorted(str(p) for p in (lake / "bronze").rglob("*.parquet") if f"event_date={day}" not in str(p))
    full_day = sorted(r["source_line"] for r in bronze_rows(lake) if str(r["event_date"]) == day)

    # Rebuild the day from one landing file only: the day now holds exactly that file's records of the day.
    one_file = generated["landing"] / f"raw_events_{day}.jsonl"
    c = run_backfill(lake, "--input", str(one_file), "--from", day, "--to", day)
    assert c["outside_date_range"] > 0
    in_day = [r for r in bronze_rows(lake) if str(r["event_date"]) == day]
    assert in_day and {Path(r["source_file"]).name for r in in_day} == {one_file.name}
    assert len(in_day) < len(full_day)
    assert sorted(str(p) for p in (lake / "bronze").rglob("*.parquet") if f"event_date={day}" not in str(p)) == outside

    # Replaying the raw layer for the range restores the day as it was.
    run_backfill(lake, "--input", str(lake / "raw" / "**" / "*.parquet"), "--from", day, "--to", day)
    assert sorted(r["source_line"] for r in bronze_rows(lake) if str(r["event_date"]) == day) == full_day
    assert _snapshot(lake, SILVER, "silver") == _snapshot(generated["lake"], SILVER, "silver")


def test_a_replay_of_some_stream_raw_files_is_refused_unless_it_names_a_date_range(tmp_path):
    """Rows from Pub/Sub carry no landing file, so a replay restates all of
    them: leaving some stream files out would drop their records from bronze."""
    from schemas.tables import RAW
    from transforms.lake.commit import commit_append
    from transforms.lake.files import write_data_file

    lake = tmp_path / "lake"
    lines = [line for line in SAMPLE.read_bytes().splitlines() if line.strip()]
    received = 1_793_700_000_000_000  # 2026-11-03T11:20:00Z
    stream_files = []
    for n, half in enumerate((lines[0::2], lines[1::2])):  # two streaming batches, as stream_ingest commits them
        written = write_data_file(
            str(lake),
            RAW,
            [
                {
                    "ingest_date": "2026-11-03",
                    "message_id": f"m-{n}-{i}",
                    "publish_time": received,
                    "attributes_json": None,
                    "ingested_at": received,
                    "source_file": None,
                    "source_line": None,
                    "data": data,
                }
                for i, data in enumerate(half)
            ],
            (("ingest_date", "2026-11-03"),),
        )
        assert commit_append(str(lake), RAW, [written], "stream_ingest-test", n + 1)
        stream_files.append(written.path)

    with pytest.raises(SystemExit):
        run_backfill(lake, "--input", stream_files[0])
    assert not (lake / "bronze").exists()

    run_backfill(lake, "--input", str(lake / "raw" / "**" / "*.parquet"))
    everything = {(str(r["event_date"]), r["message_id"]) for r in bronze_rows(lake)}
    assert {m.split("-")[1] for _, m in everything} == {"0", "1"}
    # With a date range only that range is restated, so one file is enough.
    day = "2026-11-02"
    assert any(d == day and m.startswith("m-1-") for d, m in everything)  # the day has records of both files
    run_backfill(lake, "--input", stream_files[0], "--from", day, "--to", day)
    after = {(str(r["event_date"]), r["message_id"]) for r in bronze_rows(lake)}
    assert {x for x in after if x[0] != day} == {x for x in everything if x[0] != day}
    assert {x for x in after if x[0] == day} == {x for x in everything if x[0] == day and x[1].startswith("m-0-")}


def test_parquet_landing_files(tmp_path):
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    manifest = traffic.generate(traffic.Config(users=300, days=3, seed=11, format="parquet"), str(landing))
    c = run_backfill(lake, "--input", str(landing / "*.parquet"))
    run_gold(lake)
    assert c["records_read"] == manifest["records_total"]
    assert dict(Counter(r["reason"] for r in read_table(lake / "dead_letter"))) == manifest["invalid_by_reason"]
    stages = Counter(r["stage_name"] for r in read_table(lake / "gold" / "fact_funnel_stage"))
    assert {s: stages[s] for s in STAGES} == manifest["sessions_per_stage"]
