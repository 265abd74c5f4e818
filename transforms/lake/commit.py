"""Committing written data files (``transforms.lake.files``) to the lake's
Delta tables: which rows a run restates (``Replace``), one atomic commit per
table, releases for whole layers, and application transaction ids so a
retried commit is a no-op.

* Every commit carries ``Transaction(run_id, 1)`` (a streaming batch:
  ``(run_id, batch number)``); before committing, the table's recorded
  ``transaction_version(run_id)`` is checked, so a committer that runs again
  (a runner retrying its bundle, a rerun after a crash between two tables)
  skips what is already in.
* A replace commits against the table version the run read when it was
  planned (``Snapshot.version``): the files it removes are that version's
  files in its scope, so files other writers added since (a streaming
  append) stay; two runs replacing the same files conflict, and the second
  fails with ``LakeConflictError``.
* Delta does not check that an added file lies inside what an overwrite
  replaces; ``Replace.check`` does, before anything is committed.
* Raw copies of landing files are added once per content: each commit
  records ``Transaction("landing:<sha256>", first received at, micros)``
  for the contents it adds, and a content already recorded is not added
  again (a run reading it again gives its records that ingest time).
"""

from __future__ import annotations

import enum
import json
import logging
import os
import signal
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from deltalake import CommitProperties, Transaction
from deltalake.exceptions import CommitFailedError
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from schemas.table import Table
from schemas.tables import RAW, RELEASES
from transforms.lake.files import DataFile, remove_action, write_data_file
from transforms.lake.lock import commit_lock, ensure_held
from transforms.lake.tables import LakeFile, Snapshot, ensure_table, open_table, snapshot

LANDING_TRANSACTION = "landing:"


_LAST_COMMIT: list[str] = []  # this process's latest commit, for an interrupted command's last line
# A failpoint for the fault-injection tests (tests/test_faults.py): "N" kills this process with SIGKILL
# just before its Nth commit to a lake table, a table's name just before its first commit to that
# table, as a lost machine would stop it.
KILL_BEFORE_COMMIT_ENV = "FUNNEL_KILL_BEFORE_COMMIT"
_COMMITS = [0]


def _failpoint(table: Table) -> None:
    at = os.environ.get(KILL_BEFORE_COMMIT_ENV)
    if at is None:
        return
    _COMMITS[0] += 1
    if (at.isdigit() and _COMMITS[0] == int(at)) or at == table.name:
        os.kill(os.getpid(), signal.SIGKILL)


def _committed(table: Table, version: int, run_id: str) -> None:
    _LAST_COMMIT[:] = [f"{table.name} version {version} ({run_id})"]


def last_commit() -> str | None:
    """This process's latest commit to a lake table, described (None: none)."""
    return _LAST_COMMIT[0] if _LAST_COMMIT else None


class LakeConflictError(RuntimeError):
    """Another run changed what this run replaces since it read it."""


class ReplaceScope(enum.Enum):
    TABLE = "table"  # every row: truncate and load
    SOURCES = "sources"  # the rows read from given landing files (None: from Pub/Sub)
    PARTITIONS = "partitions"  # the rows of given values of the first partition column
    FILES = "files"  # the rows of given data files (relpaths): a merge rewriting the files it touches


@dataclass(frozen=True)
class Replace:
    """Which rows of ``table`` a run restates, so which files its commit
    removes (``transforms.sinks.bigquery`` reads the same rule as the rows a
    MERGE deletes). ``values``: landing files (``SOURCES``) or values of the
    table's first partition column, as text (``PARTITIONS``)."""

    table: Table
    scope: ReplaceScope
    values: frozenset = field(default_factory=frozenset)

    @property
    def partition_column(self) -> str:
        return self.table.partition_by[0]

    def replaces(self, file: LakeFile) -> bool:
        if self.scope is ReplaceScope.TABLE:
            return True
        if self.scope is ReplaceScope.FILES:
            return file.relpath in self.values
        if self.scope is ReplaceScope.SOURCES:
            # One landing file per data file (transforms.lake.files writes them so): its statistics say which.
            return (None in self.values and file.from_pubsub) or (
                file.source is not None and file.source in self.values
            )
        return file.partition.get(self.partition_column) in self.values

    def conflict(self, read: Snapshot, latest: Snapshot) -> str | None:
        """What another writer changed in this rule's scope between ``read``
        and ``latest`` (None: nothing, and committing against ``read`` is
        committing against ``latest``). Files appended from Pub/Sub since
        are new records, not a restatement, and stay (``SOURCES`` and
        ``PARTITIONS``); a whole-table replace conflicts with any change."""
        if read.version == latest.version:
            return None
        before = {f.relpath for f in read.files if self.replaces(f)}
        now = {f.relpath: f for f in latest.files if self.replaces(f)}
        if before - set(now):
            return "another run replaced or removed files this run replaces"
        streamed_ok = self.scope in (ReplaceScope.SOURCES, ReplaceScope.PARTITIONS)
        if any(path not in before and not (streamed_ok and f.from_pubsub) for path, f in now.items()):
            return "another run wrote rows of what this run replaces"
        return None

    def surviving(self, version: Snapshot) -> list[LakeFile]:
        return [f for f in version.files if not self.replaces(f)]

    def check(self, files: list[DataFile]) -> None:
        """Raises unless every new file lies inside what the run restates
        (a merge's files may lie anywhere: it upserts rows by key)."""
        for file in files:
            if self.scope is ReplaceScope.PARTITIONS:
                value = dict(file.partitions).get(self.partition_column)
                if value not in self.values:
                    raise ValueError(
                        f"{self.table.name}: new file {file.relpath} is outside the replaced "
                        f"{self.partition_column} values"
                    )
            elif self.scope is ReplaceScope.SOURCES and not self.replaces(
                LakeFile(file.path, file.relpath, file.partitions, file.size, file.rows, *_source_of(file))
            ):
                raise ValueError(
                    f"{self.table.name}: new file {file.relpath} holds rows of a landing file this run does not replace"
                )


def _source_of(file: DataFile) -> tuple[str | None, bool]:
    stats = json.loads(file.stats)
    source = stats.get("minValues", {}).get("source_file")
    return source, stats.get("nullCount", {}).get("source_file") == stats["numRecords"]


def conflict_line(lake: str, table: Table, read: Snapshot, problem: str) -> str:
    """One line: what changed under a run, who changed it last, what to do."""
    dt = open_table(lake, table)
    last = dt.history(1)[0] if dt is not None else {}
    by = f"{last.get('pipeline', 'another writer')} {last.get('run_id', '')}".strip()
    when = datetime.fromtimestamp(last.get("timestamp", 0) / 1000, UTC).strftime("%H:%M:%S UTC")
    return (
        f"{table.name}: {problem} (the last commit: {by} at {when}, after this run read it); nothing of this "
        "run was committed: rerun the same command once that run has ended"
    )


def check_plan(lake: str, rules: tuple[tuple[Replace, Snapshot], ...]) -> None:
    """Raises ``LakeConflictError`` when another writer changed any rule's
    scope since the run read it: checked for every table before the first
    commit (under the commit lock), so a run commits all of its tables or none."""
    for rule, read in rules:
        latest = snapshot(lake, rule.table)
        problem = rule.conflict(read, latest)
        if problem is not None:
            raise LakeConflictError(conflict_line(lake, rule.table, read, problem))


def _properties(transactions: list[Transaction], **metadata) -> CommitProperties:
    return CommitProperties(app_transactions=transactions, custom_metadata={k: str(v) for k, v in metadata.items()})


def already_committed(lake: str, table: Table, run_id: str, sequence: int = 1, latest=None) -> bool:
    """Whether ``(run_id, sequence)`` is in the table (``latest``: the table, opened already)."""
    dt = latest if latest is not None else open_table(lake, table)
    recorded = None if dt is None else dt.transaction_version(run_id)
    return recorded is not None and recorded >= sequence


def commit_replace(
    lake: str, rule: Replace, files: list[DataFile], run_id: str, read: Snapshot, pipeline: str, sequence: int = 1
) -> int | None:
    """One atomic commit of ``files`` replacing what ``rule`` restates in
    the ``read`` version, recorded as ``(run_id, sequence)``. Returns the
    new version (None: that commit is in already)."""
    table = rule.table
    rule.check(files)
    ensure_held(lake)
    latest = ensure_table(lake, table)
    if already_committed(lake, table, run_id, sequence, latest):
        logging.info("commit %s: run %s is in already", table.name, run_id)
        return None
    # Conflicts are judged against what the run read (one request fewer when that is the latest).
    if read.version != latest.version():
        problem = rule.conflict(read, snapshot(lake, table))
        if problem is not None:
            raise LakeConflictError(conflict_line(lake, table, read, problem))
    base = latest if read.version in (None, latest.version()) else open_table(lake, table, read.version)
    adds = [f.add_action() for f in files]
    removed = [f for f in read.files if rule.replaces(f)]
    _failpoint(table)
    # Explicit removes of exactly the read version's files in scope: a file appended since stays.
    actions = adds + [remove_action(f.relpath, f.size, f.partition) for f in removed]
    try:
        base.create_write_transaction(
            actions,
            "append",
            table.arrow_schema(),
            list(table.partition_by) or None,
            commit_properties=_properties(
                [Transaction(run_id, sequence)],
                pipeline=pipeline,
                run_id=run_id,
                change="replace",
                scope=rule.scope.value,
            ),
        )
    except CommitFailedError as error:
        raise LakeConflictError(
            conflict_line(lake, table, read, "another run replaced or removed files this run replaces")
        ) from error
    base.update_incremental()
    version = base.version()
    _committed(table, version, run_id)
    logging.info("commit %s: version %d, %d files in, %d replaced", table.name, version, len(adds), len(removed))
    return version


@retry(
    retry=retry_if_exception_type(CommitFailedError),
    stop=stop_after_attempt(8),
    wait=wait_random_exponential(multiplier=0.2, max=10),
    reraise=True,
)
def _append(dt, table: Table, actions, properties: CommitProperties) -> None:
    # An append conflicts with nothing another writer does; a failure is a
    # lost race for the next log entry (delta-rs retries those itself too).
    dt.update_incremental()
    dt.create_write_transaction(
        actions, "append", table.arrow_schema(), list(table.partition_by) or None, commit_properties=properties
    )


def commit_append(
    lake: str,
    table: Table,
    files: list[DataFile],
    run_id: str,
    sequence: int = 1,
    pipeline: str = "",
    transactions: tuple[Transaction, ...] = (),
) -> bool:
    """Appends ``files`` in one commit recorded as ``(run_id, sequence)``;
    False if that is in already (the files are then deleted: no version
    names them)."""
    ensure_held(lake)
    latest = ensure_table(lake, table)
    if already_committed(lake, table, run_id, sequence, latest):
        _delete([f.path for f in files])
        return False
    if files or transactions:
        _failpoint(table)
        _append(
            latest,
            table,
            [f.add_action() for f in files],
            _properties(
                [Transaction(run_id, sequence), *transactions], pipeline=pipeline, run_id=run_id, change="append"
            ),
        )
        _committed(table, latest.version() + 1, run_id)
    return True


def first_received(lake: str, content_sha256: str) -> int | None:
    """When a landing content was first received (micros), if the raw layer
    holds it: its transaction's version (1 in lakes from before this was
    recorded, which say only that it was)."""
    dt = open_table(lake, RAW)
    version = None if dt is None else dt.transaction_version(LANDING_TRANSACTION + content_sha256)
    return version if version is not None and version > 1 else None


def commit_raw(lake: str, files: list[DataFile], run_id: str, pipeline: str) -> int:
    """Raw copies of landing files: each content added once ever (see the
    module docstring), its transaction's version the time it was first
    received; returns how many were added."""
    dt = ensure_table(lake, RAW)
    new, seen, dropped = [], {}, []
    for f in sorted(files, key=lambda f: f.relpath):
        if f.content_sha256 in seen or dt.transaction_version(LANDING_TRANSACTION + f.content_sha256) is not None:
            dropped.append(f.path)
        else:
            seen[f.content_sha256] = f.received_at or 1
            new.append(f)
    committed = commit_append(
        lake,
        RAW,
        new,
        run_id,
        pipeline=pipeline,
        transactions=tuple(Transaction(LANDING_TRANSACTION + s, seen[s]) for s in sorted(seen)),
    )
    _delete(dropped)
    return len(new) if committed else 0


def release(lake: str, layer: str, versions: dict[str, int], run_id: str) -> None:
    """Appends the release of ``layer`` (see ``transforms.lake.tables``), once per run."""
    now = datetime.now(UTC)
    rows = [
        {"layer": layer, "table_name": name, "version": version, "run_id": run_id, "released_at": now}
        for name, version in sorted(versions.items())
    ]
    if already_committed(lake, RELEASES, f"{run_id}:{layer}"):
        return  # checked before writing: a retried committer leaves no file behind
    written = write_data_file(lake, RELEASES, pa.Table.from_pylist(rows, RELEASES.arrow_schema()))
    commit_append(lake, RELEASES, [written], f"{run_id}:{layer}", pipeline="release")


def _delete(paths: list[str]) -> None:
    existing = [p for p in paths if FileSystems.exists(p)]
    if existing:
        FileSystems.delete(existing)


@dataclass(frozen=True)
class CommitPlan:
    """What one run commits: ``rules`` (each with the version it read),
    raw copies to add, and the layers whose tables it releases together."""

    run_id: str
    pipeline: str
    rules: tuple[tuple[Replace, Snapshot], ...]
    releases: tuple[str, ...] = ()  # layers: every rule's table of that layer is released together


class CommitFn(beam.DoFn):
    """All ``DataFile``s of a run -> committed: raw first, then each rule's
    table, then the releases. Emits ``(table name, version or None)``."""

    def __init__(self, lake: str, plan: CommitPlan):
        self._lake, self._plan = lake, plan

    def process(self, files: list[DataFile], gate=None):
        if gate is not None and not gate.release:
            logging.error(
                "%s %s: nothing committed or released (%s)", self._plan.pipeline, self._plan.run_id, gate.blocking
            )
            return
        with commit_lock(self._lake, self._plan.pipeline, self._plan.run_id):
            yield from self.commit(files_by_table(files))

    def run_plan(self, by_table: dict[str, list[DataFile]]) -> CommitPlan:
        """The plan with the landing identities of the run's raw copies (``with_landing_identities``)."""
        return with_landing_identities(self._plan, by_table.get(RAW.name, []))

    def check(self, by_table: dict[str, list[DataFile]], plan: CommitPlan | None = None) -> None:
        """Raises ``LakeConflictError`` unless the whole plan still holds (``check_plan``), its files deleted."""
        _check_or_discard(self._lake, plan or self.run_plan(by_table), by_table)

    def commit(self, by_table: dict[str, list[DataFile]]):
        """Commits under the commit lock (held by the caller), once ``check`` passes."""
        plan = self.run_plan(by_table)
        self.check(by_table, plan)
        by_table = defaultdict(list, by_table)
        raw = by_table.pop(RAW.name, [])
        if raw:
            yield RAW.name, commit_raw(self._lake, raw, plan.run_id, plan.pipeline)
        known = {rule.table.name for rule, _ in plan.rules}
        if set(by_table) - known:
            raise ValueError(f"data files without a Replace rule: {sorted(set(by_table) - known)}")
        versions = {}
        for rule, read in plan.rules:
            version = commit_replace(
                self._lake, rule, by_table.get(rule.table.name, []), plan.run_id, read, plan.pipeline
            )
            if version is None:  # in already: the version that run made
                version = _committed_version(self._lake, rule.table, plan.run_id)
            versions[rule.table.name] = version
            yield rule.table.name, version
        for layer in plan.releases:
            release(
                self._lake,
                layer,
                {r.table.name: versions[r.table.name] for r, _ in plan.rules if r.table.layer == layer},
                plan.run_id,
            )


def with_landing_identities(plan: CommitPlan, raw_copies: list[DataFile]) -> CommitPlan:
    """``plan`` with each ``SOURCES`` rule also restating the identity of
    every landing file it names: a content received before under another
    path keeps that path as its records' ``source_file``
    (``transforms.lake.landing``), so those rows are the ones it restates."""
    identity = {f.landing_path: _source_of(f)[0] for f in raw_copies if f.landing_path is not None}
    identity = {given: first for given, first in identity.items() if first is not None and first != given}
    if not identity:
        return plan
    rules = tuple(
        (
            replace(rule, values=rule.values | {identity[v] for v in rule.values if v in identity})
            if rule.scope is ReplaceScope.SOURCES
            else rule,
            read,
        )
        for rule, read in plan.rules
    )
    return replace(plan, rules=rules)


def _check_or_discard(lake: str, plan: CommitPlan, by_table: dict[str, list[DataFile]]) -> None:
    try:
        # A committer run again after committing some tables: those changes are its own.
        check_plan(
            lake, tuple((r, read) for r, read in plan.rules if not already_committed(lake, r.table, plan.run_id))
        )
    except LakeConflictError:
        _delete([f.path for files in by_table.values() for f in files])  # named by no version: nothing stays
        raise


def _committed_version(lake: str, table: Table, run_id: str) -> int:
    for entry in open_table(lake, table).history():
        if entry.get("run_id") == run_id:  # commit metadata (custom_metadata) sits at the top level
            return entry["version"]
    raise LookupError(f"{table.name}: no commit of run {run_id} in its history")


def files_by_table(files: list[DataFile]) -> dict[str, list[DataFile]]:
    by_table = defaultdict(list)
    for f in files:
        by_table[f.table].append(f)
    return dict(by_table)


class CommitLakeWrites(beam.PTransform):
    """All ``DataFile``s of a run -> committed by one final step (``CommitFn``,
    or ``fn``: one that does more after the commits). ``gate``: a
    PCollection of one ``Gate`` (``transforms.rules.quality``): nothing is
    committed unless it releases (the files stay unreferenced until a vacuum)."""

    def __init__(self, lake: str, plan: CommitPlan, fn: CommitFn | None = None, gate=None):
        super().__init__()
        self._fn, self._gate = fn or CommitFn(lake, plan), gate

    def expand(self, files):
        gated = {} if self._gate is None else {"gate": beam.pvalue.AsSingleton(self._gate)}
        return files | "AllDataFiles" >> beam.combiners.ToList() | "CommitToLake" >> beam.ParDo(self._fn, **gated)


def read_plan(lake: str, rules: list[Replace]) -> tuple[tuple[Replace, Snapshot], ...]:
    """Each rule with the version of its table the run reads now (when it is planned)."""
    return tuple((rule, snapshot(lake, rule.table)) for rule in rules)
