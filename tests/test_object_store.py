"""The lake on an object store: every pipeline, the maintenance command and
the report against a local S3 server (moto), compared with the same runs on
a local folder."""

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from apache_beam.io.filesystems import FileSystems

from pipelines import backfill, export_audience, gold_daily, maintain, report, stream_ingest
from schemas.tables import BRONZE, GOLD, RAW, SILVER
from simulator import traffic
from simulator.publisher import ensure_topic_and_subscription, lines_of, publish
from transforms.lake.tables import read_arrow, snapshot

pytestmark = pytest.mark.emulator

DEADLINE_SECONDS = 900


# When each run received the records: two runs over the same files differ there, and only there.
RECEIPT_TIME = ("ingested_at", "merge_versions")


def _rows(lake, table):
    rows = read_arrow(lake, table).to_pylist()
    return sorted(repr({c: v for c, v in r.items() if c not in RECEIPT_TIME}) for r in rows)


def test_batch_pipelines_report_export_and_maintenance_on_an_object_store_lake(s3_lake, tmp_path):
    landing = tmp_path / "landing"
    traffic.generate(traffic.Config(users=60, days=1, seed=13), str(landing))
    local = str(tmp_path / "lake")
    for lake in (s3_lake, local):
        backfill.main(["--input", str(landing / "*.jsonl"), "--lake", lake])
        gold_daily.main(["--lake", lake])
    for table in [RAW, *BRONZE.values(), *SILVER.values()]:
        assert snapshot(s3_lake, table).rows == snapshot(local, table).rows, table.name
    for table in [*SILVER.values(), *GOLD.values()]:
        assert _rows(s3_lake, table) == _rows(local, table), table.name

    # A replay of the raw layer for one day, read through the object store's Delta log.
    day = str(min(read_arrow(s3_lake, BRONZE["bronze_views"]).column("event_date").to_pylist()))
    bronze = {t.name: snapshot(s3_lake, t).rows for t in BRONZE.values()}
    backfill.main(["--input", f"{s3_lake}/raw/**/*.parquet", "--from", day, "--to", day, "--lake", s3_lake])
    assert {t.name: snapshot(s3_lake, t).rows for t in BRONZE.values()} == bronze

    summary = report.main(["--lake", s3_lake])
    assert summary == report.main(["--lake", local, "--out", str(tmp_path / "reports")])
    for name in ("funnel.html", "funnel.png"):
        assert FileSystems.exists(f"{s3_lake}/reports/{name}")
    assert export_audience.main(["--lake", s3_lake, "--out", str(tmp_path / "s3.csv")]) == export_audience.main(
        ["--lake", local, "--out", str(tmp_path / "local.csv")]
    )

    gold_before = {t.name: _rows(s3_lake, t) for t in GOLD.values()}
    reports = maintain.main(["--lake", s3_lake, "--retention-hours", "0"])
    assert reports[RAW.name].version is not None
    assert {t.name: _rows(s3_lake, t) for t in GOLD.values()} == gold_before


def test_stream_ingest_on_an_object_store_lake(s3_lake, pubsub_emulator, tmp_path):
    run = uuid.uuid4().hex[:8]
    topic = f"projects/{pubsub_emulator}/topics/raw-events-{run}"
    subscription = f"projects/{pubsub_emulator}/subscriptions/stream-ingest-{run}"
    ensure_topic_and_subscription(topic, subscription)
    # Event times of yesterday: within the streaming job's allowed lateness.
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    landing = tmp_path / "landing"
    traffic.generate(traffic.Config(users=30, days=1, seed=21, start=yesterday), str(landing))
    messages = lines_of(sorted(str(p) for p in landing.glob("*.jsonl")))
    publish(topic, messages)

    def landed():
        counts = stream_ingest.landed_rows(s3_lake)
        if counts["raw"] < len(messages) or counts["bronze"] + counts["dead letter"] < len(messages):
            return False
        sessions = set(read_arrow(s3_lake, BRONZE["bronze_sessions"]).column("session_id").to_pylist())
        streamed = set(read_arrow(s3_lake, SILVER["silver_sessions"]).column("session_id").to_pylist())
        return bool(sessions) and sessions <= streamed

    started = time.time()
    stream_ingest.main(
        [
            "--subscription",
            subscription,
            "--lake",
            s3_lake,
            "--window-seconds",
            "5",
            "--run-for",
            str(DEADLINE_SECONDS),
        ],
        stop_when=landed,
    )
    assert landed(), f"not landed after {time.time() - started:.0f} s: {stream_ingest.landed_rows(s3_lake)}"
    assert sorted(read_arrow(s3_lake, RAW).column("data").to_pylist()) == sorted(messages)
