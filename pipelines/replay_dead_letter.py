"""Replay dead letters through the current parser, after a fix.

    python -m pipelines.replay_dead_letter --lake DIR [--reason R] [--since T]
        [--pii-key-secret V]

Takes the dead letters (of ``--reason``, ingested at or after ``--since``),
finds each one's record in the raw layer by its provenance (landing file
and line, or Pub/Sub message id), and parses it again with today's code.
What now passes is appended to bronze (one commit per table) and leaves the
dead letter; the rest stays as it was. A record whose provenance is in
bronze already is never added again, so a replay run twice - or rerun after
it stopped between its bronze and dead-letter commits - adds nothing.

Then silver is brought up to bronze (``transforms.lake.silver.catch_up``:
the merge every path uses), so the accepted records are in silver when it
ends, and in gold at the next gold run. A local command, not a Beam job:
dead letters are few.
"""

from __future__ import annotations

import uuid
from collections import Counter

from pipelines.arguments import check_lake, command_parser, instant
from pipelines.common import add_pii_key_flags, setup_logging, use_filesystems
from schemas import contract
from transforms.lake.replay import PIPELINE, replay
from transforms.rules.pii import PiiKeySource
from transforms.sinks.run_log import write_run_log


def main(argv=None) -> Counter:
    parser = command_parser(__doc__)
    parser.add_argument("--lake", required=True, help="lakehouse root (local folder or gs://...)")
    parser.add_argument("--reason", choices=contract.REASONS, help="only dead letters of this reason")
    parser.add_argument("--since", type=instant, help="only dead letters ingested at or after this time (ISO 8601)")
    add_pii_key_flags(parser)
    args = parser.parse_args(argv)
    check_lake(parser, args.lake, must_exist=True)
    setup_logging()
    use_filesystems()
    run_id = f"{PIPELINE}-{uuid.uuid4().hex}"
    counts = replay(args.lake, args.reason, args.since, PiiKeySource(args.pii_key_secret), run_id)
    write_run_log(args.lake, PIPELINE, run_id, dict(counts))
    print(f"replay_dead_letter: {args.lake}")
    for name, n in sorted(counts.items()):
        print(f"  {name:<32} {n:>10,}")
    return counts


if __name__ == "__main__":
    main()
