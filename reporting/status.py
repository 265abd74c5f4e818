"""One screen of the lake's health: its tables, the last runs and their
accounting, freshness, the failing checks of each pipeline's latest run,
the last days' volume and their completeness. Read from the Delta log,
``ops/run_log``, ``ops/dq_results`` and ``ops/dq_completeness`` only; no
data file of a layer is opened.

The command: ``status`` (``pipelines/status.py``)."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from schemas.contract import micros_to_datetime, now_micros
from schemas.quality import COMPLETENESS, Severity
from schemas.tables import BRONZE, DQ_COMPLETENESS, DQ_RESULTS, GOLD, RUN_LOG, SILVER
from schemas.vocabulary import Layer
from transforms.lake.funnel_definitions import Definitions, in_force
from transforms.lake.tables import ALL_LAKE_TABLES, layer_versions, read_arrow, snapshot
from transforms.rules.quality import Verdict

# Counters the runs table shows, when a run has them.
RUN_COUNTERS = ("records_read", "bronze_rows_merged", "dq_checks_failed", "dq_checks_blocking")
RECENT_RUNS = 6
RECENT_DAYS = 7
# A lake is stale when a table's newest receipt is older than this before the clock: a daily backfill
# lands a day's file after the day ends, so a day and a half allows one late run.
STALE_AFTER_HOURS = 36.0
HOUR = 3600 * 1_000_000


@dataclass(frozen=True)
class ClockLag:
    """How far a table's (and platform's) newest records are behind the clock."""

    table: str
    platform: str
    newest_event: int | None  # micros (None: files written before event times were recorded)
    newest_ingest: int | None
    as_of: int
    stale_after_hours: float

    def hours(self, at: int | None) -> float | None:
        return None if at is None else (self.as_of - at) / HOUR

    @property
    def stale(self) -> bool:
        lag = self.hours(self.newest_ingest)
        return lag is None or lag > self.stale_after_hours


def clock_lags(snapshots, as_of: int, stale_after_hours: float) -> list[ClockLag]:
    """Per table and platform partition: the newest event and receipt in the
    Delta log's statistics, against ``as_of``."""
    lags = []
    for snap in snapshots:
        by_platform = defaultdict(list)
        for f in snap.files:
            by_platform[f.partition.get("platform") or "(all)"].append(f)
        for platform, files in sorted(by_platform.items()):
            event = max((f.newest_event for f in files if f.newest_event is not None), default=None)
            ingest = max((f.newest_ingest for f in files if f.newest_ingest is not None), default=None)
            lags.append(ClockLag(snap.table.name, platform, event, ingest, as_of, stale_after_hours))
    return lags


@dataclass
class Health:
    tables: list[tuple[str, int | None, int | None, int]] = field(default_factory=list)  # name, version, released, rows
    runs: list[dict] = field(default_factory=list)
    failing: list[dict] = field(default_factory=list)  # failed results of each pipeline's latest evaluated run
    freshness: list[dict] = field(default_factory=list)
    days: dict[str, Counter] = field(default_factory=dict)  # bronze table -> event day -> rows
    completeness: list[dict] = field(default_factory=list)  # the latest estimate's newest days
    clock: list[ClockLag] = field(default_factory=list)  # per bronze table and platform, against the clock
    definitions: Definitions | None = None  # the funnel definitions of the latest gold release
    as_of: int = 0  # micros: the clock the lags are measured from

    @property
    def stale(self) -> list[ClockLag]:
        return [lag for lag in self.clock if lag.stale]

    @property
    def blocking(self) -> list[dict]:
        return [r for r in self.failing if r["severity"] == Severity.BLOCK]


def health(lake: str, as_of: int | None = None, stale_after_hours: float = STALE_AFTER_HOURS) -> Health:
    """``as_of``: the clock freshness is measured from (micros; default now)."""
    h = Health(as_of=as_of if as_of is not None else now_micros())
    released = {Layer.SILVER: layer_versions(lake, SILVER), Layer.GOLD: layer_versions(lake, GOLD)}
    bronze = []
    for table in ALL_LAKE_TABLES:
        snap = snapshot(lake, table)
        if snap.version is None:
            continue
        if table.name in BRONZE:
            bronze.append(snap)
        version = released.get(table.layer, {}).get(table.name)
        h.tables.append((table.name, snap.version, version, snap.rows))
        if table.name in BRONZE:
            per_day: Counter = Counter()
            for f in snap.files:
                per_day[f.partition.get("event_date")] += f.rows
            h.days[table.name] = per_day
    h.runs = _runs(lake)
    results = read_arrow(lake, DQ_RESULTS).to_pylist()
    latest: dict[str, tuple] = {}
    for r in results:
        key = (r["evaluated_at"], r["run_id"])
        if r["pipeline"] not in latest or key > latest[r["pipeline"]]:
            latest[r["pipeline"]] = key
    latest_runs = {run for _, run in latest.values()}
    current = [r for r in results if r["run_id"] in latest_runs]
    h.failing = sorted(
        (r for r in current if r["verdict"] == Verdict.FAIL),
        key=lambda r: (r["severity"] != Severity.BLOCK, r["check_id"], r["subject"]),
    )
    h.freshness = sorted(
        (r for r in current if r["check_kind"] == "freshness"), key=lambda r: (r["table_name"], r["subject"])
    )
    h.completeness = _latest_completeness(lake)
    h.clock = clock_lags(bronze, h.as_of, stale_after_hours)
    h.definitions = in_force(lake)
    return h


def _latest_completeness(lake: str) -> list[dict]:
    rows = read_arrow(lake, DQ_COMPLETENESS).to_pylist()
    if not rows:
        return []
    latest = max((r["as_of"], r["run_id"]) for r in rows)
    mine = [r for r in rows if (r["as_of"], r["run_id"]) == latest]
    return sorted(mine, key=lambda r: r["event_date"])[-COMPLETENESS.shown_days :]


def _runs(lake: str) -> list[dict]:
    log = read_arrow(lake, RUN_LOG)
    if not log.num_rows:
        return []
    runs: dict[str, dict] = defaultdict(dict)
    for run_id, pipeline, finished, counter, value, balanced in zip(
        *(log.column(c).to_pylist() for c in ("run_id", "pipeline", "finished_at", "counter", "value", "balanced"))
    ):
        run = runs[run_id]
        run.update(run_id=run_id, pipeline=pipeline, finished_at=finished, balanced=balanced)
        run[counter] = value
    return sorted(runs.values(), key=lambda r: r["finished_at"], reverse=True)[:RECENT_RUNS]


def _when(at: datetime | None) -> str:
    return "-" if at is None else at.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def _num(value) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.3f}"


def render(h: Health, lake: str) -> str:
    lines = [f"lake {lake}", "", f"{'table':<26}{'version':>8}{'released':>10}{'rows':>14}"]
    for name, version, released, rows in h.tables:
        lines.append(f"{name:<26}{version:>8}{'-' if released is None else released:>10}{rows:>14,}")
    if not any(released is not None for *_, released, _ in h.tables):
        lines.append("(no release of silver or gold yet)")
    lines += ["", "last runs", f"{'finished (UTC)':<18}{'pipeline':<20}{'balanced':<10}counters"]
    for run in h.runs:
        counters = ", ".join(f"{c} {run[c]:,}" for c in RUN_COUNTERS if c in run)
        lines.append(
            f"{_when(run['finished_at']):<18}{run['pipeline']:<20}{str(run['balanced']).lower():<10}{counters}"
        )
    if not h.runs:
        lines.append("(none)")
    lines += _definitions_lines(h)
    lines += _clock_lines(h)
    lines += ["", "freshness (hours behind the table's newest record, as the latest checks measured it)"]
    for r in h.freshness:
        mark = "FAIL" if r["verdict"] == Verdict.FAIL else "ok"
        at_most = _num(r["expected_high"])
        lines.append(f"  {r['table_name']:<24}{r['subject']:<20}{_num(r['observed']):>8}  (at most {at_most}) {mark}")
    if not h.freshness:
        lines.append("  (not measured yet)")
    lines += ["", f"rows per event day, the last {RECENT_DAYS} days of sessions in bronze"]
    # the days people's sessions started on (the later tail is scans and late confirmations)
    reference = h.days.get("bronze_sessions") or next(iter(h.days.values()), Counter())
    all_days = sorted((d for d in reference if d), reverse=True)[:RECENT_DAYS]
    if all_days:
        lines.append(f"  {'table':<24}" + "".join(f"{d[5:]:>9}" for d in reversed(all_days)))
        for name, per_day in h.days.items():
            lines.append(f"  {name:<24}" + "".join(f"{per_day.get(d, 0):>9,}" for d in reversed(all_days)))
    lines += _completeness_lines(h.completeness)
    lines += ["", f"failing checks ({len(h.blocking)} blocking, {len(h.failing) - len(h.blocking)} warnings)"]
    for r in h.failing:
        band = f"{_num(r['expected_low'])}..{_num(r['expected_high'])}"
        lines.append(f"  {r['severity']:<6}{r['check_id']:<48}  {r['subject']}")
        lines.append(f"  {'':<6}observed {_num(r['observed'])}, expected {band}  ({r['pipeline']} {r['run_id']})")
    if not h.failing:
        lines.append("  (none)")
    return "\n".join(lines)


def _definitions_lines(h: Health) -> list[str]:
    d = h.definitions
    if d is None:
        return ["", "funnel definitions in force: the packaged schemas/funnels.yaml (no gold release recorded any)"]
    names = ", ".join(f.name for f in d.funnels)
    return ["", f"funnel definitions in force: {names} (from {d.source}; gold run {d.run_id})"]


def _at(micros: int | None) -> str:
    return "-" if micros is None else micros_to_datetime(micros).strftime("%Y-%m-%d %H:%M")


def _clock_lines(h: Health) -> list[str]:
    if not h.clock:
        return ["", "freshness against the clock: no bronze yet"]
    stale_after = h.clock[0].stale_after_hours
    verdict = f"STALE: {len(h.stale)} of {len(h.clock)} behind by over {stale_after:g} h" if h.stale else "fresh"
    lines = [
        "",
        f"freshness against the clock ({_at(h.as_of)} UTC): {verdict}",
        f"  {'table':<24}{'newest event':>17}{'newest receipt':>17}  hours behind, per platform",
    ]
    by_table: dict[str, list[ClockLag]] = defaultdict(list)
    for lag in h.clock:
        by_table[lag.table].append(lag)
    for table, lags in by_table.items():
        events = [lag.newest_event for lag in lags if lag.newest_event is not None]
        ingests = [lag.newest_ingest for lag in lags if lag.newest_ingest is not None]
        platforms = ", ".join(
            f"{lag.platform} {'-' if lag.hours(lag.newest_ingest) is None else f'{lag.hours(lag.newest_ingest):,.1f}'}"
            + (" STALE" if lag.stale else "")
            for lag in lags
        )
        lines.append(
            f"  {table:<24}{_at(max(events, default=None)):>17}{_at(max(ingests, default=None)):>17}  {platforms}"
        )
    return lines


def _completeness_lines(rows: list[dict]) -> list[str]:
    if not rows:
        return ["", "completeness: not estimated yet"]
    profile = rows[0]["profile_days"]
    lines = [
        "",
        f"completeness at {_when(rows[0]['as_of'])} (share of each day's records received, "
        f"from the lateness of {profile} complete days)",
    ]
    for r in rows:
        share = r["expected_share"]
        told = "too few complete days to tell" if share is None else f"{share:6.1%}"
        bar = "" if share is None else "#" * round(share * 20)
        lines.append(f"  {r['event_date'].isoformat()}  {r['received']:>10,} received  {told}  {bar}")
    return lines
