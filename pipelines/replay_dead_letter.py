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

Then silver is brought up to bronze (``transforms.silver_lake.catch_up``:
the merge every path uses), so the accepted records are in silver when it
ends, and in gold at the next gold run. A local command, not a Beam job:
dead letters are few.
"""
from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.arguments import check_lake, command_parser
from pipelines.common import add_pii_key_flags, setup_logging, use_filesystems
from schemas import contract
from schemas.tables import BRONZE, DEAD_LETTER, RAW
from transforms.accounting import write_run_log
from transforms.bronze_columnar import parse_chunk
from transforms.erasure import provenance_condition, raw_rows_holding
from transforms.lake_commit import commit_append
from transforms.lake_files import write_table_files
from transforms.lake_tables import open_table, read_arrow
from transforms.pii import PiiKeySource
from transforms.silver_lake import catch_up

PIPELINE = "replay_dead_letter"
PROVENANCE = ("source_file", "source_line", "message_id")


def _keys(rows: pa.Table) -> list[tuple]:
    return list(zip(*(rows.column(c).to_pylist() for c in PROVENANCE)))


def _since(text: str) -> int:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1_000_000)


def dead_letters(lake: str, reason: str | None, since: int | None) -> pa.Table:
    rows = read_arrow(lake, DEAD_LETTER)
    if reason is not None:
        rows = rows.filter(pc.equal(rows.column("reason"), reason))
    if since is not None:
        rows = rows.filter(pc.greater_equal(rows.column("ingested_at"), pa.scalar(since, pa.timestamp("us", "UTC"))
                                            .cast(rows.schema.field("ingested_at").type)))
    return rows


def raw_records(lake: str, wanted: set) -> pa.Table:
    """The raw rows with those provenance keys (``_provenance_key``)."""
    lines = {(f, n) for f, n, _ in wanted if f is not None}
    messages = {m for f, _, m in wanted if f is None}
    parts = [rows for _, rows in raw_rows_holding(lake, lines, messages)]
    return pa.concat_tables(parts) if parts else RAW.arrow_schema().empty_table()


def _provenance_key(f, n, m) -> tuple:
    # A landing record is named by its file and line, a Pub/Sub one by its message id.
    return (f, n, None) if f is not None else (None, None, m)


def replay(lake: str, reason: str | None = None, since: int | None = None, key_source: PiiKeySource | None = None,
           run_id: str | None = None) -> Counter:
    run_id = run_id or f"{PIPELINE}-{uuid.uuid4().hex}"
    counts = Counter()
    dead = dead_letters(lake, reason, since)
    counts["dead_letters_selected"] = dead.num_rows
    if not dead.num_rows:
        return counts
    wanted = {_provenance_key(*k) for k in _keys(dead)}
    raw = raw_records(lake, wanted)
    counts["raw_records_found"] = raw.num_rows
    parsed = parse_chunk(raw, (key_source or PiiKeySource()).resolve(), PIPELINE, contract.now_micros())
    in_bronze = set()
    for table in BRONZE.values():
        in_bronze |= {_provenance_key(*k) for k in _keys(read_arrow(lake, table, columns=list(PROVENANCE)))}
    accepted = set()
    for name, rows in parsed.bronze.items():
        keys = [_provenance_key(*k) for k in _keys(rows)]
        new = pa.array([k not in in_bronze for k in keys], pa.bool_())
        counts["already_in_bronze"] += rows.num_rows - pc.sum(new).as_py()
        accepted |= set(keys)
        rows = rows.filter(new)
        if rows.num_rows:
            files = write_table_files(lake, BRONZE[name], rows, by_source=True)
            commit_append(lake, BRONZE[name], files, run_id, pipeline=PIPELINE)
            counts[f"accepted_{name}"] += rows.num_rows
    counts["still_rejected"] = parsed.dead_letter.num_rows
    # The accepted records leave the dead letter (after bronze holds them: a stop in between loses nothing).
    condition = provenance_condition({(f, n) for f, n, _ in accepted if f is not None},
                              {m for f, _, m in accepted if f is None})
    if condition is not None:
        metrics = open_table(lake, DEAD_LETTER).delete(condition)
        counts["dead_letters_removed"] = int(metrics.get("num_deleted_rows") or 0)
    # Silver takes the accepted rows now (with whatever else bronze gained), by the merge every path uses.
    merged = catch_up(lake, PIPELINE)
    for record_type, n in merged.counts.items():
        counts[f"silver_new_{record_type}"] += n.unique
    return counts


def main(argv=None) -> Counter:
    parser = command_parser(__doc__)
    parser.add_argument("--lake", required=True, help="lakehouse root (local folder or gs://...)")
    parser.add_argument("--reason", choices=contract.REASONS, help="only dead letters of this reason")
    parser.add_argument("--since", type=_since, help="only dead letters ingested at or after this time (ISO 8601)")
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
