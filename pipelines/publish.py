"""Publish landing files to Pub/Sub, one message per line, at a chosen rate.

    python -m pipelines.publish --topic projects/P/topics/T --input 'DIR/*.jsonl' [--rate 500] \\
        [--subscription projects/P/subscriptions/S]

For local runs against the emulator (``PUBSUB_EMULATOR_HOST``): creates the
topic, and the subscription when given, if they do not exist. Lines are sent
as they are (duplicates, invalid records and all), in file order.
"""
from __future__ import annotations

import glob
import time

from google.api_core.exceptions import AlreadyExists
from google.cloud import pubsub_v1

from pipelines.arguments import command_parser, positive_float


def ensure_topic_and_subscription(topic: str, subscription: str | None = None,
                                  retain_acked_messages: bool = False) -> None:
    with pubsub_v1.PublisherClient() as publisher:
        try:
            publisher.create_topic(name=topic)
        except AlreadyExists:
            pass
    if subscription:
        with pubsub_v1.SubscriberClient() as subscriber:
            try:
                subscriber.create_subscription(request={
                    "name": subscription, "topic": topic, "ack_deadline_seconds": 60,
                    # lets a test seek back and have acked messages delivered again
                    "retain_acked_messages": retain_acked_messages})
            except AlreadyExists:
                pass


def lines_of(paths: list[str]) -> list[bytes]:
    out = []
    for path in paths:
        with open(path, "rb") as f:
            out.extend(line.rstrip(b"\r\n") for line in f if line.strip())
    return out


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


def main(argv=None):
    parser = command_parser(__doc__)
    parser.add_argument("--topic", required=True, help="projects/P/topics/T")
    parser.add_argument("--input", required=True, help="glob of JSONL landing files")
    parser.add_argument("--rate", type=positive_float, help="messages per second (default: as fast as possible)")
    parser.add_argument("--subscription", help="create this subscription on the topic too")
    args = parser.parse_args(argv)
    files = sorted(glob.glob(args.input))
    if not files:
        parser.error(f"--input {args.input} matches no file; name JSONL landing files (e.g. landing/*.jsonl)")
    if not args.topic.startswith("projects/") or "/topics/" not in args.topic:
        parser.error(f"--topic {args.topic} is not a topic path; write projects/P/topics/T")
    ensure_topic_and_subscription(args.topic, args.subscription)
    messages = lines_of(files)
    started = time.time()
    n = publish(args.topic, messages, args.rate)
    print(f"published {n:,} messages to {args.topic} in {time.time() - started:.1f} s")


if __name__ == "__main__":
    main()
