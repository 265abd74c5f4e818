"""Keeping the lake's Delta tables healthy: compacting small files, log
checkpoints, and vacuuming files no version needs any more.

Compaction is ours, not ``DeltaTable.optimize.compact()``: a commit that
replaces a landing file's rows finds them through each data file's
``source_file`` statistics (``transforms.lake.commit``), which needs every
file to hold the rows of one landing file, or only rows from Pub/Sub. So
small files are merged only with files of the same partition and the same
origin, and the merge is committed like any other change (conflicting with
a replay that removed one of them, in which case the next run retries).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass

import pyarrow as pa
from deltalake import CommitProperties

from schemas.table import Table
from schemas.vocabulary import Layer
from transforms.lake.files import remove_action, write_data_file
from transforms.lake.tables import RELEASED_LAYERS, open_table, read_file, released_versions, snapshot

# Files below this size are merged (per partition and origin) into files of up to about this size.
SMALL_FILE_BYTES = 32 << 20
# Vacuum keeps files a version removed, and files no version names yet, this long. It must exceed the
# longest run: a running job's written but not yet committed files are not named by any version.
RETENTION_HOURS = 7 * 24


@dataclass
class TableReport:
    table: str
    files_before: int = 0
    files_after: int = 0
    compacted: int = 0
    vacuumed: int = 0
    version: int | None = None


def compact(lake: str, table: Table, small_bytes: int = SMALL_FILE_BYTES) -> int:
    """Merges small files of the same partition and origin; returns how many
    files were merged away (0: nothing to do)."""
    current = snapshot(lake, table)
    # Origin matters only where a replace finds files by landing file (bronze, raw, the dead letter);
    # silver's merges find rows by key, so its files merge per partition whatever their sources.
    by_origin = table.layer not in (Layer.SILVER, Layer.GOLD)
    groups = defaultdict(list)
    for file in current.files:
        if file.size < small_bytes:
            groups[
                (file.partitions, file.source, file.from_pubsub) if by_origin else (file.partitions, None, False)
            ].append(file)
    adds, removes = [], []
    for (partitions, _, _), files in sorted(groups.items(), key=lambda kv: repr(kv[0])):
        if len(files) < 2:
            continue
        for start in range(0, len(files), 64):  # bounded memory per merged file
            part = files[start : start + 64]
            if len(part) < 2:
                continue
            rows = pa.concat_tables([read_file(f, table) for f in part])
            merged = write_data_file(lake, table, rows, partitions, prefix="compacted-")
            adds.append(merged.add_action(data_change=False))
            removes += [remove_action(f.relpath, f.size, f.partition, data_change=False) for f in part]
    if not adds:
        return 0
    base = open_table(lake, table, current.version)
    base.create_write_transaction(
        adds + removes,
        "append",
        table.arrow_schema(),
        list(table.partition_by) or None,
        commit_properties=CommitProperties(custom_metadata={"pipeline": "maintain", "change": "compact"}),
    )
    return len(removes) - len(adds)


def maintain(
    lake: str, table: Table, retention_hours: int = RETENTION_HOURS, compact_files: bool = True
) -> TableReport:
    """Compacts (optionally), checkpoints the log, drops expired log
    entries and vacuums the table; a table that does not exist is skipped.

    Gold is rewritten whole by every run, so it is not compacted; silver is
    merged into, and the stream's batches leave small files, so it is (the
    compaction is a version no release names: readers keep reading the
    released one, the next merge releases one that includes it). Vacuum keeps
    the files of the version a released layer's latest release names, however
    old."""
    report = TableReport(table.name)
    if open_table(lake, table) is None:
        return report
    report.files_before = len(snapshot(lake, table).files)
    released = released_versions(lake, table.layer) if table.layer in RELEASED_LAYERS else None
    if compact_files and table.layer != Layer.GOLD:
        report.compacted = compact(lake, table)
    dt = open_table(lake, table)
    dt.create_checkpoint()
    dt.cleanup_metadata()
    # full=True also removes files no version ever named (a failed run's), once older than the retention.
    keep = [released[table.name]] if released and table.name in released else None
    report.vacuumed = len(
        dt.vacuum(
            retention_hours=retention_hours,
            dry_run=False,
            enforce_retention_duration=False,
            full=True,
            keep_versions=keep,
        )
    )
    report.files_after = len(snapshot(lake, table).files)
    report.version = open_table(lake, table).version()
    logging.info(
        "maintain %s: %d -> %d files, %d vacuumed", table.name, report.files_before, report.files_after, report.vacuumed
    )
    return report
