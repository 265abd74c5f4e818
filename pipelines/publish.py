"""Publish landing files to Pub/Sub, one message per line, at a chosen rate.

    python -m pipelines.publish --topic projects/P/topics/T --input 'DIR/*.jsonl' [--rate 500] \\
        [--subscription projects/P/subscriptions/S] [--manifest DIR/manifest.json]

For local runs against the emulator (``PUBSUB_EMULATOR_HOST``): creates the
topic, and the subscription when given, if they do not exist. Lines are sent
as they are (duplicates, invalid records and all), in file order. With
``--manifest`` (the generator's), publishing pauses after the day of each
``stream_stall`` defect for its seconds, as a stalled producer would.
"""

from __future__ import annotations

import glob
import json
import time

from pipelines.arguments import command_parser, positive_float
from simulator.publisher import ensure_topic_and_subscription, publish_plan, stream_plan


def main(argv=None):
    parser = command_parser(__doc__)
    parser.add_argument("--topic", required=True, help="projects/P/topics/T")
    parser.add_argument("--input", required=True, help="glob of JSONL landing files")
    parser.add_argument("--rate", type=positive_float, help="messages per second (default: as fast as possible)")
    parser.add_argument("--subscription", help="create this subscription on the topic too")
    parser.add_argument("--manifest", help="the generator's manifest.json: pause where its stream_stall defects say")
    args = parser.parse_args(argv)
    files = sorted(glob.glob(args.input))
    if not files:
        parser.error(f"--input {args.input} matches no file; name JSONL landing files (e.g. landing/*.jsonl)")
    if not args.topic.startswith("projects/") or "/topics/" not in args.topic:
        parser.error(f"--topic {args.topic} is not a topic path; write projects/P/topics/T")
    manifest = None
    if args.manifest:
        try:
            with open(args.manifest) as f:
                manifest = json.load(f)
        except (OSError, ValueError) as e:
            parser.error(f"--manifest {args.manifest} cannot be read as the generator's manifest.json ({e})")
    ensure_topic_and_subscription(args.topic, args.subscription)
    started = time.time()
    n = publish_plan(args.topic, stream_plan(files, manifest), args.rate)
    print(f"published {n:,} messages to {args.topic} in {time.time() - started:.1f} s")


if __name__ == "__main__":
    main()
