"""Publish landing files to Pub/Sub, one message per line, at a chosen rate.

    python -m pipelines.publish --topic projects/P/topics/T --input 'DIR/*.jsonl' [--rate 500] \\
        [--subscription projects/P/subscriptions/S]

For local runs against the emulator (``PUBSUB_EMULATOR_HOST``): creates the
topic, and the subscription when given, if they do not exist. Lines are sent
as they are (duplicates, invalid records and all), in file order; with the
generator's manifest, publishing pauses where its ``stream_stall`` defects
say.
"""

from __future__ import annotations

import contextlib
import os
import time

from google.api_core.exceptions import AlreadyExists
from google.cloud import pubsub_v1


def ensure_topic_and_subscription(
    topic: str, subscription: str | None = None, retain_acked_messages: bool = False
) -> None:
    with pubsub_v1.PublisherClient() as publisher, contextlib.suppress(AlreadyExists):
        publisher.create_topic(name=topic)
    if subscription:
        with pubsub_v1.SubscriberClient() as subscriber, contextlib.suppress(AlreadyExists):
            subscriber.create_subscription(
                request={
                    "name": subscription,
                    "topic": topic,
                    "ack_deadline_seconds": 60,
                    # lets a test seek back and have acked messages delivered again
                    "retain_acked_messages": retain_acked_messages,
                }
            )


def lines_of(paths: list[str]) -> list[bytes]:
    out = []
    for path in paths:
        with open(path, "rb") as f:
            out.extend(line.rstrip(b"\r\n") for line in f if line.strip())
    return out


def stream_plan(paths: list[str], manifest: dict | None = None) -> list[tuple[list[bytes], float]]:
    """Landing files as publishing goes: ``(messages, then pause seconds)``
    per file, in the order given, pausing after the file of each
    ``stream_stall`` defect's day (``simulator.traffic.DEFECTS``)."""
    stalls = {
        f"raw_events_{d['day']}": d["seconds"]
        for d in (manifest or {}).get("defects", [])
        if d["kind"] == "stream_stall"
    }
    return [(lines_of([path]), stalls.get(os.path.basename(path).split(".")[0], 0.0)) for path in paths]


def publish(topic: str, messages: list[bytes], rate: float | None = None, sent_at: list | None = None) -> int:
    """Publishes every message (waiting for each batch's acks); ``rate`` in
    messages per second. ``sent_at`` collects each message's send time."""
    publisher = pubsub_v1.PublisherClient()
    started, futures = time.time(), []
    for n, data in enumerate(messages, start=1):
        if sent_at is not None:
            sent_at.append(time.time())
        futures.append(publisher.publish(topic, data))
        if rate:
            ahead = n / rate - (time.time() - started)
            if ahead > 0:
                time.sleep(ahead)
        if len(futures) >= 1000:
            [f.result() for f in futures]
            futures = []
    [f.result() for f in futures]
    return len(messages)


def publish_plan(topic: str, plan: list[tuple[list[bytes], float]], rate: float | None = None) -> int:
    """Publishes a ``stream_plan``: each file's messages at ``rate``, then its pause."""
    sent = 0
    for messages, pause in plan:
        sent += publish(topic, messages, rate)
        if pause:
            print(f"stream stall: publishing paused for {pause:g} s", flush=True)
            time.sleep(pause)
    return sent
