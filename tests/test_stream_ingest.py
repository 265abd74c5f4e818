"""stream_ingest end to end on the real Pub/Sub emulator."""
import uuid
from collections import Counter

from pipelines import generate, stream_ingest
from pipelines.publish import ensure_topic_and_subscription, lines_of, publish
from tests.conftest import read_table


def _lake_counts(lake):
    landed = stream_ingest.landed_rows(str(lake))
    return landed["raw"], landed["bronze"], landed["dead letter"]


def test_every_message_lands_in_raw_and_in_bronze_or_dead_letter(pubsub_emulator, tmp_path):
    run = uuid.uuid4().hex[:8]
    topic = f"projects/{pubsub_emulator}/topics/raw-events-{run}"
    subscription = f"projects/{pubsub_emulator}/subscriptions/stream-ingest-{run}"
    ensure_topic_and_subscription(topic, subscription)

    landing, lake = tmp_path / "landing", tmp_path / "lake"
    manifest = generate.generate(generate.Config(users=40, days=1, seed=9, invalid_share=0.1), str(landing))
    assert len(manifest["invalid_by_reason"]) == 9  # every dead-letter reason, oversized included
    messages = lines_of(sorted(str(p) for p in landing.glob("*.jsonl")))
    # Retried publishes: valid records sent again (new message ids). The
    # generator names every invalid record's key "bad-...".
    messages += [m for m in messages if m.startswith(b"{") and b'"bad-' not in m][:25]
    # Published before the job starts: a backlog must be written, not dropped as late.
    publish(topic, messages)

    def all_landed():
        raw, bronze, dead = _lake_counts(lake)
        return raw >= len(messages) and bronze + dead >= len(messages)

    stream_ingest.main(["--subscription", subscription, "--lake", str(lake),
                                 "--window-seconds", "5", "--run-for", "240"], stop_when=all_landed)

    raw = read_table(lake / "raw")
    assert len(raw) == len(messages)                                   # messages = raw rows
    assert sorted(r["data"] for r in raw) == sorted(messages)          # byte for byte
    assert len({r["message_id"] for r in raw}) == len(messages)
    assert all(r["publish_time"] is not None and r["ingested_at"] is not None for r in raw)

    _, bronze, dead = _lake_counts(lake)
    assert bronze + dead == len(messages)                              # valid + dead-lettered = messages
    reasons = Counter(r["reason"] for r in read_table(lake / "dead_letter"))
    assert dict(reasons) == manifest["invalid_by_reason"]
    assert {r["pipeline"] for r in read_table(lake / "dead_letter")} == {"stream_ingest"}

