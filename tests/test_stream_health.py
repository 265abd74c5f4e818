"""The streaming job's own health end to end on the real Pub/Sub emulator
(the rule: tests/test_quality.py). A file of its own, so the test runner
can run it beside the long ingestion tests."""

import json
import subprocess
import sys
import time

import pytest

from schemas.tables import DQ_RESULTS, OPS_ALERTS_STREAM
from simulator import traffic
from tests.test_stream_ingest import DATA_QUALITY, DEADLINE_SECONDS, fresh_topic, pull_all
from transforms.lake.tables import read_arrow

pytestmark = pytest.mark.emulator


def test_a_platform_gone_silent_and_a_stalled_stream_raise_data_quality_alerts(pubsub_emulator, tmp_path):
    """The stream judges its own health (schemas.tables.RAW's checks) and
    fails exactly the generator's stream truths: its landing files published
    in day order, ios silent on the second day (one stream_volume for ios),
    then publishing stalls (one stream_freshness); in ops_alerts, on the
    alerts topic and as failed dq_results rows. The test lasts until the
    stall has landed (the job's pace sets the test's)."""
    topic, subscription = fresh_topic(pubsub_emulator, "raw-events")
    alerts_topic, alerts_subscription = fresh_topic(pubsub_emulator, "alerts")
    landing, lake = tmp_path / "landing", tmp_path / "lake"
    defects = [
        {"kind": "platform_silent", "day": "2026-11-02", "platform": "ios"},
        {"kind": "stream_stall", "day": "2026-11-02", "seconds": DEADLINE_SECONDS},  # until the test ends
    ]
    manifest = traffic.generate(
        traffic.Config(users=400, days=2, seed=4, start="2026-11-01", defects=defects), str(landing)
    )
    # At 25 a second the first day takes about a minute and the second half
    # of one, in 10 s health windows of about 70 ios records against the
    # declared 20 a platform's windows need before its silence counts.
    window, stall = 10, 30

    def quality_alerts() -> list[dict]:
        alerts_now = read_arrow(str(lake), OPS_ALERTS_STREAM).to_pylist()
        return [json.loads(a["details"]) for a in alerts_now if a["alert_type"] == DATA_QUALITY]

    def stalled() -> bool:
        """The stall is in ops_alerts and in dq_results (two commits of one batch)."""
        results = read_arrow(str(lake), DQ_RESULTS, columns=["check_id"]).column("check_id").to_pylist()
        alerted = {a["check_id"] for a in quality_alerts()}
        return "raw_messages.stream_freshness" in alerted and "raw_messages.stream_freshness" in results

    # The job as it runs in production: a process of its own.
    job_log = open(tmp_path / "stream_ingest.log", "wb")  # noqa: SIM115 - the job writes it until stopped
    job = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines.stream_ingest",
            "--subscription",
            subscription,
            "--lake",
            str(lake),
            "--window-seconds",
            "2",
            "--health-window-seconds",
            str(window),
            "--stall-seconds",
            str(stall),
            "--alerts-topic",
            alerts_topic,
            "--run-for",
            str(DEADLINE_SECONDS),
        ],
        stdout=job_log,
        stderr=subprocess.STDOUT,
    )
    # The producers: the generator's files published in day order, stalling where its manifest says.
    sender = subprocess.Popen(
        [
            *(sys.executable, "-m", "pipelines.publish", "--topic", topic, "--rate", "25"),
            *("--input", str(landing / "*.jsonl"), "--manifest", str(landing / "manifest.json")),
        ]
    )
    try:
        while job.poll() is None and sender.poll() is None and not stalled():
            time.sleep(2)
    finally:
        sender.terminate()
        job.terminate()
        job.wait(timeout=120)
        job_log.close()
        sender.wait(timeout=120)
    assert stalled(), "the job or the publisher ended before the stall was raised"
    failed = [r for r in read_arrow(str(lake), DQ_RESULTS).to_pylist() if r["verdict"] == "fail"]
    expected = [f for d in manifest["defects"] for f in d["stream_fails"]]
    assert sorted((r["check_id"], r["platform"]) for r in failed) == sorted(
        (f["check_id"], f.get("platform")) for f in expected
    )
    assert {r["pipeline"] for r in failed} == {"stream_ingest"}
    assert sorted((a["check_id"], a["subject"].split(" ")[0]) for a in quality_alerts()) == [
        ("raw_messages.stream_freshness", "stream"),
        ("raw_messages.stream_volume", "platform=ios"),
    ]
    on_topic = [m for m in pull_all(alerts_subscription) if m.attributes["alert_type"] == DATA_QUALITY]
    assert sorted(json.loads(m.data)["details"] for m in on_topic) == sorted(
        a["details"] for a in read_arrow(str(lake), OPS_ALERTS_STREAM).to_pylist() if a["alert_type"] == DATA_QUALITY
    )
