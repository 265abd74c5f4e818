"""Dead letters parsed again (after a fix) from the raw records they came from, merged into bronze and silver.

The command: ``replay_dead_letter`` (``pipelines/replay_dead_letter.py``)."""

from __future__ import annotations

import uuid
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from schemas import contract
from schemas.tables import BRONZE, DEAD_LETTER, RAW
from transforms.lake.commit import commit_append
from transforms.lake.erasure import provenance_condition, raw_rows_holding
from transforms.lake.files import write_table_files
from transforms.lake.lock import commit_lock
from transforms.lake.silver import catch_up
from transforms.lake.tables import open_table, read_arrow
from transforms.rules.bronze_arrow import parse_chunk
from transforms.rules.pii import PiiKeySource

PIPELINE = "replay_dead_letter"
PROVENANCE = ("source_file", "source_line", "message_id")


def _keys(rows: pa.Table) -> list[tuple]:
    return list(zip(*(rows.column(c).to_pylist() for c in PROVENANCE)))


def dead_letters(lake: str, reason: str | None, since: int | None) -> pa.Table:
    rows = read_arrow(lake, DEAD_LETTER)
    if reason is not None:
        rows = rows.filter(pc.equal(rows.column("reason"), reason))
    if since is not None:
        rows = rows.filter(
            pc.greater_equal(
                rows.column("ingested_at"),
                pa.scalar(since, pa.timestamp("us", "UTC")).cast(rows.schema.field("ingested_at").type),
            )
        )
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


def replay(
    lake: str,
    reason: str | None = None,
    since: int | None = None,
    key_source: PiiKeySource | None = None,
    run_id: str | None = None,
) -> Counter:
    run_id = run_id or f"{PIPELINE}-{uuid.uuid4().hex}"
    with commit_lock(lake, PIPELINE, run_id):
        return _replay(lake, reason, since, key_source, run_id)


def _replay(lake, reason, since, key_source, run_id) -> Counter:
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
    condition = provenance_condition(
        {(f, n) for f, n, _ in accepted if f is not None}, {m for f, _, m in accepted if f is None}
    )
    if condition is not None:
        metrics = open_table(lake, DEAD_LETTER).delete(condition)
        counts["dead_letters_removed"] = int(metrics.get("num_deleted_rows") or 0)
    # Silver takes the accepted rows now (with whatever else bronze gained), by the merge every path uses.
    merged = catch_up(lake, PIPELINE)
    for record_type, n in merged.counts.items():
        counts[f"silver_new_{record_type}"] += n.unique
    return counts
