"""A batch of new bronze rows merged into the lake's silver tables
(``transforms.silver_merge`` is the rule; this is the reading and the commits).

**Reading what the merge needs.** ``LakeLookup`` answers "the current rows of
a table whose column holds one of these values" from the tables' latest
versions: it scans that one column of every data file (once per table and
column) and reads whole only the files that hold a match. So a day's merge
reads the key columns of silver and the files of the rows it touches, never
all of silver's data and never bronze.

**Writing.** Silver tables are partitioned by date (``event_date``,
``session_date``); per table, the files holding a changed row are rewritten
(their other rows and the changed rows, one file per partition) and removed
in one commit against the version that was read (``ReplaceScope.FILES``), so
a late record costs a rewrite of its day's file, not of silver. Then the
seven tables' versions are released together (``transforms.lake_tables``).

**Once per batch.** Each table's commit carries ``(run_id, sequence)``: a
committer that runs again skips the tables it committed (their rows already
hold the batch), and merges the batch into the others.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.contract import RECORD_TYPES
from schemas.tables import BRONZE, SILVER
from transforms import metrics
from transforms.columnar import concat, first_of_groups, group_ids
from transforms.dedup import DedupCounters
from transforms.lake_commit import (CommitFn, Replace, ReplaceScope, already_committed, commit_replace,
                                    files_by_table, release)
from transforms.lake_files import read_data_file, write_table_files
from transforms.lake_tables import Snapshot, dataset, ensure_table, open_table, read_file, snapshot
from transforms.silver import shuffled_columns
from transforms.silver_merge import MergeResult, merge_batch

PROVENANCE = ("source_file", "source_line", "message_id")  # where a bronze row was received
KIND_OF_BRONZE = {rt.bronze_table: rt.name for rt in RECORD_TYPES.values()}


class LakeLookup:
    """``transforms.silver_merge.Lookup`` over the lake's silver tables at their
    latest versions (read once, when first asked)."""

    def __init__(self, lake: str):
        self._lake = lake
        self._snapshots: dict[str, Snapshot] = {}
        self._fragments: dict[str, dict] = {}
        self._columns: dict[tuple[str, str], list[tuple[str, pa.Array]]] = {}
        self._files: dict[tuple[str, str], pa.Table] = {}

    def snapshot(self, name: str) -> Snapshot:
        if name not in self._snapshots:
            self._snapshots[name] = snapshot(self._lake, SILVER[name])
            data = dataset(self._lake, SILVER[name], self._snapshots[name].version)
            self._fragments[name] = {} if data is None else {f.path: (f, data.schema) for f in data.get_fragments()}
        return self._snapshots[name]

    def _column(self, name: str, column: str) -> list[tuple[str, pa.Array]]:
        if (name, column) not in self._columns:
            self.snapshot(name)
            self._columns[name, column] = [(path, fragment.to_table(columns=[column]).column(0).combine_chunks())
                                           for path, (fragment, _) in self._fragments[name].items()]
        return self._columns[name, column]

    def file_rows(self, name: str, relpath: str) -> pa.Table:
        """Every row of one data file, typed by the table's schema."""
        if (name, relpath) not in self._files:
            fragment, schema = self._fragments[name][relpath]
            table = SILVER[name].arrow_schema()
            rows = fragment.to_table(schema=schema)
            self._files[name, relpath] = rows.select(table.names).cast(table)
        return self._files[name, relpath]

    def holding(self, name: str, column: str, values: pa.Array) -> list[str]:
        """The data files whose ``column`` holds one of ``values``."""
        if not len(values):
            return []
        return [path for path, found in self._column(name, column)
                if pc.any(pc.is_in(found, value_set=values)).as_py()]

    def rows(self, table: str, column: str, values: pa.Array) -> pa.Table:
        parts = [self.file_rows(table, path) for path in self.holding(table, column, values)]
        rows = [part.filter(pc.is_in(part.column(column), value_set=values)) for part in parts]
        return concat(rows, SILVER[table].arrow_schema())


@dataclass(frozen=True)
class SilverCommit:
    """What a merge committed: each silver table's version after it, and the result."""

    versions: dict[str, int]
    result: MergeResult


def commit_merge(lake: str, lookup: LakeLookup, result: MergeResult, run_id: str, pipeline: str,
                 sequence: int = 1) -> dict[str, int]:
    """Writes and commits ``result`` table by table (see the module docstring),
    then releases silver. Returns every silver table's version."""
    versions = {}
    for name, table in SILVER.items():
        read = lookup.snapshot(name)
        latest = ensure_table(lake, table)
        if already_committed(lake, table, run_id, sequence, latest):
            versions[name] = latest.version()
            continue
        key = table.key[0]
        changed = result.changed_keys(name)
        if not len(changed):
            versions[name] = latest.version()
            continue
        touched = lookup.holding(name, key, changed)
        kept = [lookup.file_rows(name, path) for path in touched]
        kept = [rows.filter(pc.invert(pc.is_in(rows.column(key), value_set=changed))) for rows in kept]
        upserts = [result.upserts[name]] if name in result.upserts else []
        files = write_table_files(lake, table, concat(kept + upserts, table.arrow_schema()))
        version = commit_replace(lake, Replace(table, ReplaceScope.FILES, frozenset(touched)), files, run_id,
                                 read, pipeline, sequence)
        versions[name] = version if version is not None else open_table(lake, table).version()
        logging.info("merge %s: %d rows upserted, %d files rewritten", name,
                     result.upserts[name].num_rows if name in result.upserts else 0, len(touched))
    release(lake, "silver", versions, f"{run_id}:{sequence}")
    return versions


class MergeCounters:
    """The merge's counters: per type new identities (``unique_<type>``) and
    the batch's other rows (``duplicates_``/``superseded_<type>``), conflicts,
    and rows upserted per silver table."""

    def __init__(self):
        self._dedup = DedupCounters()
        self._inferred = metrics.counter("sessions_inferred_without_record")
        self._upserted = {name: metrics.counter(f"silver_rows_upserted_{name}") for name in SILVER}

    def count(self, result: MergeResult) -> None:
        for record_type, counts in result.counts.items():
            self._dedup.count(record_type, counts)
        metrics.add(self._inferred, result.inferred_sessions)
        for name, rows in result.upserts.items():
            metrics.add(self._upserted[name], rows.num_rows)


def merge_into_silver(lake: str, batch: dict[str, pa.Table], run_id: str, pipeline: str,
                      sequence: int = 1, counters: MergeCounters | None = None) -> SilverCommit:
    """New bronze rows (``{record type: rows}``) -> merged into silver,
    committed and released."""
    lookup = LakeLookup(lake)
    result = merge_batch(batch, lookup)
    if counters is not None:
        counters.count(result)
    return SilverCommit(commit_merge(lake, lookup, result, run_id, pipeline, sequence), result)


class CommitAndMergeFn(CommitFn):
    """``CommitFn``, then the bronze rows the run added (those bronze did not
    hold before, by provenance: ``new_rows``) merged into silver."""

    def setup(self):
        self._counters = MergeCounters()
        self._already_in_bronze = metrics.counter("already_in_bronze")

    def process(self, files):
        by_table = files_by_table(files)
        yield from self.commit(by_table)
        plan = self._plan
        merge_into_silver(self._lake, self._added_bronze(plan.rules, by_table), plan.run_id, plan.pipeline,
                          counters=self._counters)

    def _added_bronze(self, rules, by_table: dict) -> dict[str, pa.Table]:
        added = {}
        for rule, read in rules:
            table = rule.table
            if table.name not in BRONZE:
                continue
            kind = KIND_OF_BRONZE[table.name]
            columns = list(dict.fromkeys([*shuffled_columns(kind), *PROVENANCE]))
            rows = concat([read_data_file(f, table).select(columns) for f in by_table.get(table.name, [])],
                          table.arrow_schema().empty_table().select(columns).schema)
            before = concat([read_file(f, table, PROVENANCE) for f in read.files if rule.replaces(f)],
                            table.arrow_schema().empty_table().select(list(PROVENANCE)).schema)
            fresh = new_rows(rows, before)
            metrics.add(self._already_in_bronze, rows.num_rows - fresh.num_rows)
            added[kind] = fresh
        return added


# --- which bronze rows are new ------------------------------------------------------------------
def _occurrences(rows: pa.Table) -> pa.Array:
    """Each row's provenance, numbered by its occurrence (a message Pub/Sub
    delivered twice is two rows with one provenance)."""
    text = pc.binary_join_element_wise(pc.fill_null(rows.column("source_file"), ""),
                                       pc.fill_null(rows.column("source_line").cast(pa.string()), ""),
                                       pc.fill_null(rows.column("message_id"), ""), "\x1f")
    text = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
    order = pc.sort_indices(text).to_numpy()
    ordered = text.take(pa.array(order))
    starts = first_of_groups(ordered)
    groups = group_ids(starts)
    rank = np.arange(len(order)) - np.flatnonzero(starts)[groups]
    numbered = np.empty(len(order), object)
    numbered[order] = [f"{t}\x1e{r}" for t, r in zip(ordered.to_pylist(), rank.tolist())]
    return pa.array(numbered, pa.string())


def new_rows(rows: pa.Table, before: pa.Table) -> pa.Table:
    """The rows of ``rows`` (bronze, this run's) not in ``before`` (the bronze
    rows they replace), matched by provenance: a rerun of the same landing
    file adds nothing to silver, a replay only what bronze lacked."""
    if before.num_rows == 0 or rows.num_rows == 0:
        return rows
    return rows.filter(pc.invert(pc.is_in(_occurrences(rows), value_set=_occurrences(before))))


def by_record_type(bronze: dict[str, pa.Table]) -> dict[str, pa.Table]:
    """``{bronze table: rows}`` -> ``{record type: rows}``."""
    return {rt.name: bronze[rt.bronze_table] for rt in RECORD_TYPES.values() if rt.bronze_table in bronze}
