"""`make stream-demo`: the streaming ingest on the local Pub/Sub emulator.

Starts the emulator (unless one runs), creates a topic and subscription,
generates a day of funnel data, publishes it at ``--rate`` messages per
second while ``pipelines.stream_ingest`` runs for ``--seconds``, and prints
what landed in the lake as it goes, silver's sessions included.
"""

from __future__ import annotations

import argparse
import glob
import os
import threading
import uuid
from datetime import UTC, datetime, timedelta

from devtools import pubsub_emulator
from pipelines import stream_ingest
from simulator import traffic
from simulator.publisher import ensure_topic_and_subscription, lines_of, publish


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lake", default="lake-stream")
    parser.add_argument("--users", type=int, default=600)
    parser.add_argument(
        "--rate", type=float, default=40, help="messages per second the local runner drains (default 40)"
    )
    parser.add_argument("--seconds", type=float, default=120, help="how long the pipeline runs")
    parser.add_argument("--window-seconds", type=int, default=10)
    args = parser.parse_args(argv)
    host = os.environ.get("PUBSUB_EMULATOR_HOST", pubsub_emulator.DEFAULT_HOST)
    with pubsub_emulator.running(host):
        os.environ["PUBSUB_EMULATOR_HOST"] = host
        run = uuid.uuid4().hex[:8]
        topic = f"projects/{pubsub_emulator.PROJECT}/topics/funnel-raw-events-{run}"
        subscription = f"projects/{pubsub_emulator.PROJECT}/subscriptions/funnel-stream-ingest-{run}"
        ensure_topic_and_subscription(topic, subscription)
        landing = os.path.join(args.lake, "_demo_landing")
        # Yesterday's traffic: within the streaming job's allowed lateness; scans
        # the same day so none lies in the future.
        yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
        traffic.generate(
            traffic.Config(users=args.users, days=1, seed=42, start=yesterday, max_scan_lag_days=0), landing
        )
        messages = lines_of(sorted(glob.glob(os.path.join(landing, "*.jsonl"))))
        print(f"publishing {len(messages):,} messages at {args.rate:.0f}/s to {topic} (emulator {host})")
        publisher = threading.Thread(target=publish, args=(topic, messages, args.rate), daemon=True)
        publisher.start()
        stream_ingest.main(
            [
                "--subscription",
                subscription,
                "--lake",
                args.lake,
                "--window-seconds",
                str(args.window_seconds),
                "--run-for",
                str(args.seconds),
            ]
        )


if __name__ == "__main__":
    main()
