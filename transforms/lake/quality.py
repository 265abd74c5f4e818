"""The data-quality checks evaluated on the lake (``transforms.rules.quality``
judges; this module gathers what it judges and keeps the results).

What a check reads is bounded by the days a run touched, never all of
history: row counts per day and platform come from the Delta log (no data
file is opened), a day's mix and schema from the columns the check names in
that day's files and its baseline days', freshness from the newest day's
files of each platform. ``transforms.sinks.quality`` keeps the results.

A day is judged once it is over: the newest day a table holds (the one
still filling) is left out of volume and mix.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from schemas import contract
from schemas.quality import (
    COMPLETENESS,
    CheckKind,
    Completeness,
    DeadLetterShare,
    Freshness,
    Mix,
    Relationship,
    RowCountChange,
    SchemaDrift,
    Volume,
)
from schemas.table import Table
from schemas.tables import BRONZE, DEAD_LETTER, DQ_RESULTS, GOLD, RAW, SILVER
from transforms.lake.files import DataFile
from transforms.lake.tables import (
    LakeFile,
    Snapshot,
    files_dataset,
    layer_versions,
    read_arrow,
    read_file,
    read_files,
    snapshot,
)
from transforms.rules import completeness, quality
from transforms.rules.quality import CheckResult

# Data files read at once (Parquet decoding releases the GIL; an object store's latency overlaps).
READ_THREADS = 8


def _day(file: LakeFile, table: Table) -> str | None:
    return file.partition.get(table.partition_by[0]) if table.partition_by else None


def _read(files: Iterable[LakeFile], table: Table, columns: tuple[str, ...]) -> pa.Table:
    """Data files a run wrote (not in a version yet), only ``columns``."""
    files = tuple(files)
    if not files:
        return table.arrow_schema().empty_table().select(list(columns))
    return read_files(files, table, columns)


def _scan(lake: str, snap: Snapshot, columns: tuple[str, ...], days: Iterable[str] | None = None) -> pa.Table:
    """``columns`` of a table version's rows on ``days`` (its first partition
    column; None: every day): only those days' files are opened (the log
    says which), several at a time."""
    table = snap.table
    wanted = set(days) if days is not None else None
    files = [f for f in snap.files if wanted is None or _day(f, table) in wanted]
    if not files:
        return table.arrow_schema().empty_table().select(list(columns))
    if "://" not in lake:  # several times faster than file by file for small files
        schema = table.arrow_schema()
        data = files_dataset(lake, table, files).to_table(columns=list(columns))
        return data.cast(pa.schema([schema.field(c) for c in columns]))
    with ThreadPoolExecutor(READ_THREADS) as pool:
        parts = list(pool.map(lambda f: read_file(f, table, columns), files))
    return pa.concat_tables(parts)


def _shift(day: str, days: int) -> str:
    return (date.fromisoformat(day) + timedelta(days=days)).isoformat()


# --- bronze -------------------------------------------------------------------------------
def bronze_results(lake: str, days: set[str]) -> list[CheckResult]:
    """The bronze checks of the event days ``days`` (the days a run wrote):
    each table's files are read once, for the columns and days its checks need."""
    results: list[CheckResult] = []
    observed: dict[str, _BronzeDays] = {}
    for name, table in BRONZE.items():
        snap = snapshot(lake, table)
        if snap.files:
            observed[name] = _observe(lake, snap, days)
    own_days = {name: o.rows.filter(o.on(days)) for name, o in observed.items()}  # not the baseline days
    seen = {name: _schemas_seen(rows) for name, rows in own_days.items()}
    known = _schemas_known(lake, seen, days)
    for name, o in observed.items():
        table = BRONZE[name]
        results += quality.row_results(table, own_days[name])
        for check in table.checks:
            if isinstance(check, Volume):
                results += quality.volume_results(name, check, o.counts, o.judged, o.first)
            elif isinstance(check, Mix):
                results += quality.mix_results(name, check, o.mix(check.column), o.judged, o.first)
            elif isinstance(check, Freshness):
                results += o.freshness(check)
            elif isinstance(check, SchemaDrift):
                results += [
                    quality.drift_result(name, check, day, seen[name][day], known.get(day))
                    for day in sorted(seen[name])
                ]
    return results


@dataclass
class _BronzeDays:
    """What a bronze table's checks read: rows per (day, platform) from the
    log, and one read of the days and columns they need."""

    table: Table
    counts: Counter
    first: str
    judged: set[str]
    rows: pa.Table

    def on(self, days: Iterable[str]) -> pc.Expression:
        return pc.field("event_date").isin([date.fromisoformat(d) for d in days])

    def mix(self, column: str) -> dict[str, Counter]:
        by_day: dict[str, Counter] = defaultdict(Counter)
        if column == "platform":  # a partition column: the Delta log's counts are enough
            for (day, platform), n in self.counts.items():
                by_day[day][platform] += n
            return by_day
        if column not in self.rows.column_names:  # not read: no day to judge had a baseline
            return by_day
        grouped = self.rows.group_by(["event_date", column]).aggregate([([], "count_all")])
        for day, value, n in zip(*(grouped.column(c).to_pylist() for c in ("event_date", column, "count_all"))):
            by_day[day.isoformat()][str(value)] += n
        return by_day

    def freshness(self, check: Freshness) -> list[CheckResult]:
        """Each platform's newest record against the table's newest."""
        newest_days = {*self._newest_days(check).values(), max(d for d, _ in self.counts)}
        rows = self.rows.filter(self.on(newest_days))
        if not rows.num_rows:
            return []
        grouped = rows.group_by("platform").aggregate([(check.time_column, "max")])
        newest = dict(zip(grouped.column("platform").to_pylist(), grouped.column(1).cast(pa.int64()).to_pylist()))
        return quality.freshness_results(self.table.name, check, newest, max(newest.values()))

    def _newest_days(self, check: Freshness) -> dict[str, str]:
        newest: dict[str, str] = {}
        for day, platform in self.counts:
            if platform in check.platforms and day > newest.get(platform, ""):
                newest[platform] = day
        return newest


def _observe(lake: str, snap: Snapshot, days: set[str]) -> _BronzeDays:
    table = snap.table
    counts: Counter = Counter()
    for f in snap.files:
        counts[(_day(f, table), f.partition.get("platform"))] += f.rows
    held = {d for d, _ in counts}
    first, open_day = min(held), max(held)
    judged = {d for d in days if d in held and d != open_day}
    obs = _BronzeDays(table, counts, first, judged, pa.table({}))
    columns = {"event_date", "platform", *_row_columns(table), "schema_version", "extra_json"}
    wanted = set(days)
    for check in table.checks:
        if isinstance(check, Mix) and check.column != "platform":
            with_baseline = [d for d in judged if len(quality.same_weekdays(d, check.weeks, first)) >= check.min_weeks]
            if with_baseline:  # no day with a baseline: nothing to read for it
                columns.add(check.column)
                wanted |= {_shift(d, -7 * w) for d in with_baseline for w in range(check.weeks + 1)}
        elif isinstance(check, Freshness):
            columns.add(check.time_column)
            wanted |= {*obs._newest_days(check).values(), open_day}
    obs.rows = _scan(lake, snap, tuple(sorted(columns)), sorted(wanted & held))
    return obs


def _row_columns(table: Table) -> tuple[str, ...]:
    row_kinds = (quality.NotNull, quality.Unique, quality.AcceptedValues, quality.Sanity)
    return tuple(dict.fromkeys(c for check in table.checks if isinstance(check, row_kinds) for c in check.columns))


def _schemas_seen(rows: pa.Table) -> dict[str, set]:
    """day -> the schema versions (``v<N>``) and extra fields (``payload.<name>``) of its rows."""
    seen: dict[str, set] = defaultdict(set)
    versions = rows.group_by(["event_date", "schema_version"]).aggregate([])
    for day, version in zip(versions.column(0).to_pylist(), versions.column(1).to_pylist()):
        seen[day.isoformat()].add(f"v{version}")
    extra = rows.filter(pc.is_valid(rows.column("extra_json")))
    extras = extra.group_by(["event_date", "extra_json"]).aggregate([])
    for day, text in zip(extras.column(0).to_pylist(), extras.column(1).to_pylist()):
        for part, fields in orjson.loads(text).items():
            seen[day.isoformat()].update(f"{part}.{k}" for k in fields)
    return seen


def _schemas_known(lake: str, seen: dict[str, dict[str, set]], days: set[str]) -> dict[str, set | None]:
    """Per day, what any bronze table held in the window before it: in this
    run's days, and as earlier runs recorded them (their drift results'
    ``seen``), so a day's run reads its own days only. None: nothing before."""
    if not days:
        return {}
    window = max(c.days for t in BRONZE.values() for c in t.checks if isinstance(c, SchemaDrift))
    by_day: dict[str, set] = defaultdict(set)
    for per_day in (*seen.values(), _recorded_schemas(lake, _shift(min(days), -window), max(days))):
        for day, names in per_day.items():
            by_day[day] |= names
    known: dict[str, set | None] = {}
    for day in days:
        before = [names for d, names in by_day.items() if _shift(day, -window) <= d < day]
        known[day] = set().union(*before) if before else None
    return known


def _recorded_schemas(lake: str, first: str, last: str) -> dict[str, set]:
    """day -> what earlier runs' drift results saw on it."""
    rows = read_arrow(lake, DQ_RESULTS, columns=["check_kind", "event_date", "details"])
    rows = rows.filter(pc.equal(rows.column("check_kind"), str(CheckKind.SCHEMA_DRIFT)))
    out: dict[str, set] = defaultdict(set)
    for day, details in zip(rows.column("event_date").to_pylist(), rows.column("details").to_pylist()):
        if day is not None and details and first <= day.isoformat() <= last:
            out[day.isoformat()].update(orjson.loads(details).get("seen", ()))
    return out


# --- silver -------------------------------------------------------------------------------
def silver_results(lake: str, days: set[str], received: dict[str, float] | None = None) -> list[CheckResult]:
    """Silver's checks over the partitions of ``days`` (its released version):
    keys, and each relationship's share of the day's rows without a parent.
    ``received``: day -> its estimated completeness (``completeness_estimates``):
    a day still arriving tolerates the parents it has yet to receive."""
    versions = layer_versions(lake, SILVER)
    snapshots = {name: snapshot(lake, table, versions[name]) for name, table in SILVER.items()}
    results: list[CheckResult] = []
    for name, table in SILVER.items():
        held = {_day(f, table) for f in snapshots[name].files}
        relationships = [c for c in table.checks if isinstance(c, Relationship)]
        columns = (table.partition_by[0], *_row_columns(table), *(c.column for c in relationships))
        rows = _scan(lake, snapshots[name], tuple(dict.fromkeys(columns)), sorted(days & held))
        results += quality.row_results(table, rows)
        for check in relationships:
            results += _relationship(lake, table, check, rows, snapshots[check.parent], days, received or {})
    return results


def _relationship(
    lake: str, table: Table, check: Relationship, rows: pa.Table, parent: Snapshot, days: set[str], received: dict
):
    parent_table = parent.table
    day_column = parent_table.partition_by[0]
    held = {_day(f, parent_table) for f in parent.files}
    window = {_shift(d, -back) for d in days for back in range(check.within_days + 1)}
    columns = (day_column, check.parent_column) + ((check.parent_flag,) if check.parent_flag else ())
    parents = _scan(lake, parent, columns, sorted(window & held))
    if check.parent_flag:
        parents = parents.filter(pc.fill_null(parents.column(check.parent_flag), False))
    child_days = rows.column(table.partition_by[0])
    out = []
    for day in sorted(days):
        d = date.fromisoformat(day)
        mine = rows.filter(pc.equal(child_days, pa.scalar(d)))
        if not mine.num_rows:
            continue
        low = pa.scalar(d - timedelta(days=check.within_days))
        mask = pc.and_(pc.greater_equal(parents.column(0), low), pc.less_equal(parents.column(0), pa.scalar(d)))
        keys = parents.column(1).filter(mask)
        to_come = 1.0 - received[day] if received.get(day) is not None else 0.0
        out.append(quality.relationship_result(table.name, check, day, mine.column(check.column), keys, to_come))
    return out


# --- the dead letter ------------------------------------------------------------------------
def dead_letter_results(lake: str, written: list[DataFile]) -> list[CheckResult]:
    """Per landing file the run read, the share of its records dead-lettered per reason."""
    rejected = _read([f.as_lake_file() for f in written], DEAD_LETTER, ("source_file", "reason"))
    if not rejected.num_rows:
        return []
    grouped = rejected.group_by(["source_file", "reason"]).aggregate([([], "count_all")])
    counts = {
        (s, r): n for s, r, n in zip(*(grouped.column(c).to_pylist() for c in ("source_file", "reason", "count_all")))
    }
    records: Counter = Counter()
    for f in snapshot(lake, RAW).files:
        if f.source is not None:
            records[f.source] += f.rows
    check = next(c for c in DEAD_LETTER.checks if isinstance(c, DeadLetterShare))
    return quality.dead_letter_results(DEAD_LETTER.name, check, records, counts)


# --- gold: the gate before a release ----------------------------------------------------------
def gold_results(lake: str, written: dict[str, list[DataFile]]) -> list[CheckResult]:
    """Gold's checks over the files a gold run wrote (not yet released), and
    each table's rows against its released version's."""
    released = layer_versions(lake, GOLD)
    results: list[CheckResult] = []
    for name, table in GOLD.items():
        files = [f.as_lake_file() for f in written.get(name, [])]
        results += quality.row_results(table, _read(files, table, _row_columns(table)))
        for check in table.checks:
            if isinstance(check, RowCountChange):
                before = snapshot(lake, table, released[name]).rows if released[name] is not None else None
                results.append(quality.row_count_change(name, check, sum(f.rows for f in files), before))
    return results


# --- completeness -------------------------------------------------------------------------
def completeness_estimates(
    lake: str, rule: Completeness = COMPLETENESS, as_of: int | None = None
) -> tuple[int | None, list[dict]]:
    """``(as_of, rows)``: how complete each recent event day of bronze is
    (``transforms.rules.completeness``) at ``as_of`` (default: the lake's
    clock, its newest ingest time; now when the log does not say). Records per day come from the Delta log;
    only the profile's days are read, two columns of them."""
    snaps = [s for s in (snapshot(lake, t) for t in BRONZE.values()) if s.files]
    if not snaps:
        return None, []
    if as_of is None:
        as_of = max((f.newest_ingest for s in snaps for f in s.files if f.newest_ingest is not None), default=None)
    if as_of is None:  # files written before their statistics named the newest receipt
        as_of = contract.now_micros()
    received: Counter = Counter()
    for s in snaps:
        for f in s.files:
            received[_day(f, s.table)] += f.rows
    days = completeness.profile_days(as_of, set(received), rule)
    profile = None
    if days:
        parts = [_scan(lake, s, ("event_date", "ingested_at"), days) for s in snaps]
        rows = pa.concat_tables(parts)
        profile = completeness.LatenessProfile.of(
            rows.column("event_date").cast(pa.int32()).to_numpy(),
            rows.column("ingested_at").cast(pa.int64()).to_numpy(),
            rule,
        )
    return as_of, completeness.estimates(received, as_of, profile, rule)
