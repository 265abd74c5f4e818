"""A batch of new bronze rows merged into the lake's silver tables
(``transforms.rules.merge`` is the rule; this is the reading and the commits).

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
seven tables' versions are released together (``transforms.lake.tables``).

**Once per batch.** Each table's commit carries ``(run_id, sequence)``: a
committer that runs again skips the tables it committed (their rows already
hold the batch), and merges the batch into the others.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas import contract
from schemas.contract import RECORD_TYPES
from schemas.tables import BRONZE, RELEASES, SILVER, SILVER_HEAD
from schemas.vocabulary import Layer
from transforms import metrics
from transforms.lake.commit import (
    CommitFn,
    LakeConflictError,
    Replace,
    ReplaceScope,
    already_committed,
    commit_replace,
    files_by_table,
    release,
)
from transforms.lake.files import write_data_file, write_table_files
from transforms.lake.lock import commit_lock
from transforms.lake.tables import (
    Snapshot,
    dataset,
    ensure_table,
    open_table,
    read_arrow,
    read_file,
    snapshot,
    table_dir,
)
from transforms.metrics import DedupCounters
from transforms.rules.arrow import concat, first_of_groups, group_ids
from transforms.rules.merge import MergeResult, merge_batch
from transforms.rules.silver import shuffled_columns

PROVENANCE = ("source_file", "source_line", "message_id")  # where a bronze row was received
KIND_OF_BRONZE = {rt.bronze_table: rt.name for rt in RECORD_TYPES.values()}


class LakeLookup:
    """``transforms.rules.merge.Lookup`` over the lake's silver tables at their
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
            # keyed by the path below the table's folder, as the Delta log names files (a local lake's
            # dataset names them in full)
            root = table_dir(self._lake, SILVER[name]).rstrip("/") + "/"
            self._fragments[name] = (
                {} if data is None else {f.path.removeprefix(root): (f, data.schema) for f in data.get_fragments()}
            )
        return self._snapshots[name]

    def _column(self, name: str, column: str) -> list[tuple[str, pa.Array]]:
        if (name, column) not in self._columns:
            self.snapshot(name)
            # cast: files delta-rs rewrote (a DELETE) hold string_view columns
            wanted = SILVER[name].arrow_schema().field(column).type
            self._columns[name, column] = [
                (path, fragment.to_table(columns=[column]).column(0).combine_chunks().cast(wanted))
                for path, (fragment, _) in self._fragments[name].items()
            ]
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
        return [path for path, found in self._column(name, column) if pc.any(pc.is_in(found, value_set=values)).as_py()]

    def rows(self, table: str, column: str, values: pa.Array) -> pa.Table:
        parts = [self.file_rows(table, path) for path in self.holding(table, column, values)]
        rows = [part.filter(pc.is_in(part.column(column), value_set=values)) for part in parts]
        return concat(rows, SILVER[table].arrow_schema())


def commit_merge(
    lake: str, lookup: LakeLookup, result: MergeResult, run_id: str, pipeline: str, sequence: int = 1
) -> dict[str, int]:
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
        version = commit_replace(
            lake, Replace(table, ReplaceScope.FILES, frozenset(touched)), files, run_id, read, pipeline, sequence
        )
        versions[name] = version if version is not None else open_table(lake, table).version()
        logging.info(
            "merge %s: %d rows upserted, %d files rewritten",
            name,
            result.upserts[name].num_rows if name in result.upserts else 0,
            len(touched),
        )
    release(lake, Layer.SILVER, versions, run_id)
    return versions


class MergeCounters:
    """The merge's counters: per type new identities (``unique_<type>``) and
    the batch's other rows (``duplicates_``/``superseded_<type>``), conflicts,
    and rows upserted per silver table."""

    def __init__(self):
        self._dedup = DedupCounters()
        self._inferred = metrics.counter("sessions_inferred_without_record")
        self._upserted = {name: metrics.counter(f"silver_rows_upserted_{name}") for name in SILVER}

        self._merged = metrics.counter("bronze_rows_merged")

    def count(self, result: MergeResult, merged_rows: int = 0) -> None:
        metrics.add(self._merged, merged_rows)
        for record_type, counts in result.counts.items():
            self._dedup.count(record_type, counts)
        metrics.add(self._inferred, result.inferred_sessions)
        for name, rows in result.upserts.items():
            metrics.add(self._upserted[name], rows.num_rows)


# --- which bronze rows are new ------------------------------------------------------------------
def _occurrences(rows: pa.Table) -> pa.Array:
    """Each row's provenance, numbered by its occurrence (a message Pub/Sub
    delivered twice is two rows with one provenance)."""
    text = pc.binary_join_element_wise(
        pc.fill_null(rows.column("source_file"), ""),
        pc.fill_null(rows.column("source_line").cast(pa.string()), ""),
        pc.fill_null(rows.column("message_id"), ""),
        "\x1f",
    )
    text = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
    order = pc.sort_indices(text).to_numpy()
    ordered = text.take(pa.array(order))
    starts = first_of_groups(ordered)
    groups = group_ids(starts)
    rank = pa.array(np.arange(len(order)) - np.flatnonzero(starts)[groups]).cast(pa.string())
    numbered = pc.binary_join_element_wise(ordered, rank, "\x1e")
    return numbered.take(pc.sort_indices(pa.array(order)))  # back to the rows' own order


def new_rows(rows: pa.Table, before: pa.Table) -> pa.Table:
    """The rows of ``rows`` (bronze, this run's) not in ``before`` (the bronze
    rows they replace), matched by provenance: a rerun of the same landing
    file adds nothing to silver, a replay only what bronze lacked."""
    if before.num_rows == 0 or rows.num_rows == 0:
        return rows
    return rows.filter(pc.invert(pc.is_in(_occurrences(rows), value_set=_occurrences(before))))


# --- silver follows bronze: merges in turn through the head -------------------------------------
# A claim's commits to silver: a rebuild's replaces are (claim, 1), every merge's (claim, 2).
REBUILD_SEQUENCE, MERGE_SEQUENCE = 1, 2


@dataclass(frozen=True)
class Claim:
    """A merge: silver goes from holding bronze at ``start`` (None: nothing)
    to holding it at ``end`` (versions per bronze table). ``rebuild``: silver
    is first replaced by a recompute from bronze at ``start``."""

    claim_id: str
    pipeline: str
    claimed_at: int
    start: dict | None
    end: dict
    rebuild: bool = False

    def row(self) -> dict:
        return {
            "claim_id": self.claim_id,
            "pipeline": self.pipeline,
            "claimed_at": self.claimed_at,
            "rebuild": self.rebuild,
            "from_versions_json": json.dumps(self.start, sort_keys=True),
            "to_versions_json": json.dumps(self.end, sort_keys=True),
        }

    @classmethod
    def of(cls, row: dict) -> Claim:
        return cls(
            row["claim_id"],
            row["pipeline"],
            row["claimed_at"],
            json.loads(row["from_versions_json"]),
            json.loads(row["to_versions_json"]),
            row["rebuild"],
        )


def head(lake: str) -> tuple[Claim | None, Snapshot]:
    """The latest claim (None: silver has never been merged) and the version read."""
    read = snapshot(lake, SILVER_HEAD)
    if not read.files:
        return None, read
    rows = SILVER_HEAD.from_arrow(read_arrow(lake, SILVER_HEAD, read.version))
    return Claim.of(rows[0]), read


def released(lake: str, claim: Claim) -> bool:
    return already_committed(lake, RELEASES, f"{claim.claim_id}:silver")


def _write_head(lake: str, claim: Claim, read: Snapshot) -> bool:
    """Replaces the head with ``claim`` against the version read; False when
    another merger claimed since (the commits conflict)."""
    written = write_data_file(lake, SILVER_HEAD, [claim.row()])
    try:
        commit_replace(
            lake,
            Replace(SILVER_HEAD, ReplaceScope.TABLE),
            [written],
            claim.claim_id,
            read,
            claim.pipeline,
            sequence=int(time.time() * 1000),
        )
    except LakeConflictError:
        return False
    return True


def bronze_versions(lake: str) -> dict[str, int | None]:
    return {name: snapshot(lake, table).version for name, table in BRONZE.items()}


def _carried(table) -> list[str]:
    return list(dict.fromkeys([*shuffled_columns(KIND_OF_BRONZE[table.name]), *PROVENANCE]))


@dataclass(frozen=True)
class BronzeChanges:
    """What bronze gained between two versions (``added``: rows it did not
    hold before, ``{record type: rows}``) and which identities lost rows
    without getting them back (``restate``: ``{record type: (keys, every
    copy bronze still holds of them)}``)."""

    added: dict
    restate: dict

    @property
    def rows(self) -> int:
        """Bronze rows into silver: the added ones, and every copy of a restated identity."""
        return sum(rows.num_rows for rows in self.added.values()) + sum(
            rows.num_rows for _, rows in self.restate.values()
        )


def bronze_changes(lake: str, start: dict | None, end: dict, leave_out: frozenset = frozenset()) -> BronzeChanges:
    """Bronze between versions ``start`` and ``end``: the rows added and not
    held before (``new_rows``: a replace re-adding rows, a compaction, adds
    nothing), and the identities whose rows were removed and not re-added (a
    landing file sent again with lines missing, a date range rebuilt from
    fewer files), found again in all of bronze. Files in ``leave_out``
    (``"table/relpath"``) count as neither added nor removed."""
    added, restate = {}, {}
    for name, table in BRONZE.items():
        kind = KIND_OF_BRONZE[name]
        key = RECORD_TYPES[kind].key
        before = snapshot(lake, table, start.get(name)) if start and start.get(name) is not None else None
        after = snapshot(lake, table, end[name]) if end.get(name) is not None else None
        old = {f.relpath: f for f in (before.files if before else ()) if f"{name}/{f.relpath}" not in leave_out}
        new = {f.relpath: f for f in (after.files if after else ()) if f"{name}/{f.relpath}" not in leave_out}
        columns = _carried(table)
        rows = concat(
            [read_file(f, table, tuple(columns)) for path, f in new.items() if path not in old],
            table.arrow_schema().empty_table().select(columns).schema,
        )
        gone = concat(
            [read_file(f, table, (key, *PROVENANCE)) for path, f in old.items() if path not in new],
            table.arrow_schema().empty_table().select([key, *PROVENANCE]).schema,
        )
        added[kind] = new_rows(rows, gone.select(list(PROVENANCE)))
        withdrawn = new_rows(gone, rows.select(list(PROVENANCE)))
        if withdrawn.num_rows:
            keys = pc.unique(withdrawn.column(key).combine_chunks())
            restate[kind] = (keys, bronze_rows_with_keys(after, table, keys, columns))
    return BronzeChanges(added, restate)


def bronze_rows_with_keys(version: Snapshot | None, table, keys: pa.Array, columns: list[str]) -> pa.Table:
    """Every row of a bronze table version whose key is one of ``keys``: its
    key column read from every file (copies of one identity can lie in any
    partition), the files holding one read whole."""
    key = table.key[0]
    parts = []
    for f in version.files if version else ():
        found = pc.is_in(read_file(f, table, (key,)).column(0), value_set=keys)
        if pc.any(found).as_py():
            parts.append(read_file(f, table, tuple(columns)).filter(found))
    return concat(parts, table.arrow_schema().empty_table().select(columns).schema)


def apply_claim(
    lake: str,
    claim: Claim,
    counters: MergeCounters | None = None,
    leave_out: frozenset = frozenset(),
    before_commit=None,
) -> MergeResult:
    """Merges the bronze changes of ``claim`` into silver, commits (each
    table once per claim) and releases; ``before_commit(result)`` runs
    first (a batch's BigQuery MERGE: the lake is committed after it, so they
    never disagree). A conflict with another writer of silver (an erasure)
    is retried from a fresh read."""
    changes = bronze_changes(lake, claim.start, claim.end, leave_out)
    for attempt in range(5):
        lookup = LakeLookup(lake)
        result = merge_batch(changes.added, lookup, changes.restate)
        if before_commit is not None:
            before_commit(result)
        try:
            commit_merge(lake, lookup, result, claim.claim_id, claim.pipeline, MERGE_SEQUENCE)
        except LakeConflictError:
            if attempt == 4:
                raise
            continue
        if counters is not None:
            counters.count(result, changes.rows)
        return result
    raise AssertionError("unreachable")


def catch_up(lake: str, pipeline: str, counters: MergeCounters | None = None, before_commit=None) -> MergeResult:
    """Brings silver up to bronze as it is now: under the lake's commit lock
    (waiting while another writer commits), claims the head and merges what
    bronze gained since the last merge, whoever wrote it; a claim a merger
    that died left is rolled forward first."""
    with commit_lock(lake, pipeline, f"{pipeline}-catch-up"):
        return _catch_up(lake, pipeline, counters, before_commit)


def _catch_up(lake, pipeline, counters, before_commit) -> MergeResult:
    while True:
        current, read = head(lake)
        if current is not None and not released(lake, current):
            # Merges run only under the commit lock, which this process holds: a claim left unreleased is
            # a merger's that died (or lost the lock, and then commits nothing more), taken over now.
            if current.rebuild:
                raise RuntimeError(
                    f"silver: rebuild {current.claim_id} did not finish; run backfill --rebuild-silver again"
                )
            taken = Claim(current.claim_id, pipeline, contract.now_micros(), current.start, current.end)
            if _write_head(lake, taken, read):
                logging.warning(
                    "silver: taking over merge %s of %s (it did not finish)", current.claim_id, current.pipeline
                )
                apply_claim(lake, taken, counters, before_commit=before_commit)
            continue
        start = current.end if current is not None else None
        end = bronze_versions(lake)
        if start == end:
            return MergeResult()
        # A new id per claim: a merge retried after its claim was released must not match it.
        claim = Claim(f"{pipeline}-merge-{uuid.uuid4().hex}", pipeline, contract.now_micros(), start, end)
        if _write_head(lake, claim, read):
            return apply_claim(lake, claim, counters, before_commit=before_commit)


def claim_rebuild(lake: str, pipeline: str, claim_id: str, planned: dict) -> Claim:
    """Claims the head for a rebuild of silver from bronze as planned
    (``planned``: the versions it read), under the commit lock (a claim
    left unreleased is a dead merger's, replaced)."""
    while True:
        _, read = head(lake)
        claim = Claim(claim_id, pipeline, contract.now_micros(), planned, bronze_versions(lake), rebuild=True)
        if _write_head(lake, claim, read):
            return claim


class CommitAndMergeFn(CommitFn):
    """``CommitFn`` for a run that adds bronze rows, then silver brought up to
    bronze: merged (``catch_up``), or with ``rebuild`` replaced by the
    recompute the run wrote (its silver rules), then merged with what
    bronze gained meanwhile (rows others appended after the run read it)."""

    def __init__(self, lake: str, plan, rebuild: bool = False, before_commit=None):
        super().__init__(lake, plan)
        self._rebuild, self._before_commit = rebuild, before_commit

    def setup(self):
        self._counters = MergeCounters()

    def process(self, files):
        with commit_lock(self._lake, self._plan.pipeline, self._plan.run_id):
            yield from self._commit_and_merge(files_by_table(files))

    def _commit_and_merge(self, by_table):
        plan = self.run_plan(by_table)
        if not self._rebuild:
            yield from self.commit(by_table)
            catch_up(self._lake, plan.pipeline, counters=self._counters, before_commit=self._before_commit)
            return
        # The rebuilt silver tables too: a rebuild planned on a lake that others wrote since fails.
        self.check(by_table, plan)
        silver_rules = tuple((rule, read) for rule, read in plan.rules if rule.table.layer == Layer.SILVER)
        others = tuple((rule, read) for rule, read in plan.rules if rule.table.layer != Layer.SILVER)
        yield from CommitFn(self._lake, replace(plan, rules=others, releases=())).commit(
            {name: fs for name, fs in by_table.items() if name not in SILVER}
        )
        planned = {rule.table.name: read.version for rule, read in others if rule.table.name in BRONZE}
        claim = claim_rebuild(self._lake, plan.pipeline, f"{plan.run_id}-rebuild", planned)
        versions = {}
        for rule, read in silver_rules:
            version = commit_replace(
                self._lake,
                rule,
                by_table.get(rule.table.name, []),
                claim.claim_id,
                read,
                plan.pipeline,
                REBUILD_SEQUENCE,
            )
            versions[rule.table.name] = version if version is not None else open_table(self._lake, rule.table).version()
            yield rule.table.name, versions[rule.table.name]
        # The recompute holds the planned versions' kept files and the run's own; the files the run
        # replaced are no removal of others' rows.
        own = frozenset(f"{name}/{f.relpath}" for name, fs in by_table.items() if name in BRONZE for f in fs)
        replaced = frozenset(
            f"{rule.table.name}/{f.relpath}"
            for rule, read in others
            if rule.table.name in BRONZE
            for f in read.files
            if rule.replaces(f)
        )
        apply_claim(self._lake, claim, self._counters, leave_out=own | replaced, before_commit=self._before_commit)
