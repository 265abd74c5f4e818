"""Evaluating the data-quality checks declared in ``schemas`` (``schemas.quality``).

Pure rules over what was observed: Arrow rows, daily counts, shares, the
newest times. Gathering those from the lake and the stream is
``transforms.lake.quality`` and ``transforms.streaming.quality``; both turn
their observations into ``CheckResult``s here, so a check means the same
everywhere.
"""

from __future__ import annotations

import enum
import hashlib
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from schemas.quality import (
    AcceptedValues,
    Check,
    DeadLetterShare,
    Freshness,
    Mix,
    NotNull,
    Relationship,
    RowCountChange,
    Sanity,
    SchemaDrift,
    Severity,
    Unique,
    Volume,
)
from schemas.table import Table
from transforms.rules.alerts import AlertType, alert_id

# MAD of a normal sample times this estimates its standard deviation.
MAD_TO_SIGMA = 1.4826
HOUR_MICROS = 3_600_000_000
ALL = "all"  # the subject of a check on the whole table


class Verdict(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NO_BASELINE = "no_baseline"  # too little history to judge: neither pass nor fail


@dataclass(frozen=True)
class CheckResult:
    """One check on one subject (a day, a platform, a landing file, or all)."""

    table: str
    check: Check
    subject: str
    verdict: Verdict
    observed: float | None = None
    expected_low: float | None = None
    expected_high: float | None = None
    event_date: str | None = None
    platform: str | None = None
    details: dict = field(default_factory=dict)

    @property
    def check_id(self) -> str:
        return self.check.check_id(self.table)

    @property
    def failed(self) -> bool:
        return self.verdict is Verdict.FAIL

    @property
    def blocking(self) -> bool:
        return self.failed and self.check.severity is Severity.BLOCK

    def row(self, run_id: str, pipeline: str, now: int, run_date: str) -> dict:
        """The ``ops/dq_results`` row."""
        return {
            "run_date": run_date,
            "result_id": hashlib.sha256(f"{run_id}\0{self.check_id}\0{self.subject}".encode()).hexdigest(),
            "run_id": run_id,
            "pipeline": pipeline,
            "evaluated_at": now,
            "check_id": self.check_id,
            "check_kind": str(self.check.kind),
            "table_name": self.table,
            "severity": str(self.check.severity),
            "subject": self.subject,
            "event_date": self.event_date,
            "platform": self.platform,
            "observed": None if self.observed is None else float(self.observed),
            "expected_low": self.expected_low,
            "expected_high": self.expected_high,
            "verdict": str(self.verdict),
            "details": orjson.dumps(self.details, option=orjson.OPT_SORT_KEYS).decode() if self.details else None,
        }

    def alert(self, now: int) -> dict:
        """The ``ops_alerts`` row of a failure: one id per check and subject,
        so a condition still failing on the next run is the same alert."""
        return {
            "alert_id": alert_id(AlertType.DATA_QUALITY, f"{self.check_id}|{self.subject}"),
            "alert_type": AlertType.DATA_QUALITY.value,
            "detected_at": now,
            "event_id": None,
            "response_id": None,
            "details": orjson.dumps(
                {
                    "check_id": self.check_id,
                    "severity": str(self.check.severity),
                    "subject": self.subject,
                    "observed": self.observed,
                    "expected_low": self.expected_low,
                    "expected_high": self.expected_high,
                },
                option=orjson.OPT_SORT_KEYS,
            ).decode(),
        }


@dataclass(frozen=True)
class Gate:
    """The gold run's verdict before its release: ``release`` unless a
    blocking check failed (``blocking`` names them)."""

    release: bool
    blocking: str = ""

    @classmethod
    def of(cls, results: Iterable[CheckResult]) -> Gate:
        failed = [r for r in results if r.blocking]
        return cls(not failed, failure_summary(failed))


def failure_summary(results: Iterable[CheckResult]) -> str:
    """The failed checks in one line, ``check_id (subject)``, blocking first."""
    failed = sorted((r for r in results if r.failed), key=lambda r: (not r.blocking, r.check_id, r.subject))
    return "; ".join(f"{r.check_id} ({r.subject})" for r in failed)


def _within(value: float, low: float | None, high: float | None) -> Verdict:
    ok = (low is None or value >= low) and (high is None or value <= high)
    return Verdict.PASS if ok else Verdict.FAIL


def subject(event_date: str | None = None, platform: str | None = None, other: str | None = None) -> str:
    parts = [p for p in (event_date, platform and f"platform={platform}", other) if p]
    return " ".join(parts) or ALL


# --- row checks: keys, accepted values, funnel sanity (one Arrow table) ------------------------
def row_results(table: Table, rows: pa.Table, checks: Iterable[Check] | None = None) -> list[CheckResult]:
    """The checks that read a table's rows alone, over ``rows``."""
    out = []
    for check in table.checks if checks is None else checks:
        if isinstance(check, NotNull):
            nulls = sum(rows.column(c).null_count for c in check.of)
            out.append(CheckResult(table.name, check, ALL, _within(nulls, None, 0), nulls, None, 0.0))
        elif isinstance(check, Unique):
            keys = rows.select(list(check.of))
            groups = keys.group_by(list(check.of)).aggregate([])
            extra = keys.num_rows - groups.num_rows
            out.append(CheckResult(table.name, check, ALL, _within(extra, None, 0), extra, None, 0.0))
        elif isinstance(check, AcceptedValues):
            column = rows.column(check.column)
            bad = pc.and_(pc.is_valid(column), pc.invert(pc.is_in(column, pa.array(check.values, column.type))))
            unknown = pc.unique(pc.filter(column, bad)).to_pylist()
            n = int(pc.sum(bad).as_py() or 0)
            details = {"unknown_values": sorted(map(str, unknown))[:20]} if unknown else {}
            out.append(CheckResult(table.name, check, ALL, _within(n, None, 0), n, None, 0.0, details=details))
        elif isinstance(check, Sanity):
            out.append(_sanity(table.name, check, rows))
    return out


def _sanity(table: str, check: Sanity, rows: pa.Table) -> CheckResult:
    at_most, of = (pc.fill_null(rows.column(c), 0) for c in (check.at_most, check.of))
    if check.per_row:
        over = int(pc.sum(pc.greater(at_most, of)).as_py() or 0)
        return CheckResult(table, check, ALL, _within(over, None, 0), over, None, 0.0, details={"rows_over": over})
    a, b = (int(pc.sum(x).as_py() or 0) for x in (at_most, of))
    return CheckResult(table, check, ALL, _within(a, None, b), a, None, float(b))


def row_count_change(table: str, check: RowCountChange, rows: int, released_rows: int | None) -> CheckResult:
    """A rebuilt table's rows against its released version's."""
    if not released_rows:
        return CheckResult(table, check, ALL, Verdict.NO_BASELINE, rows)
    low = released_rows * (1 - check.max_drop)
    return CheckResult(
        table, check, ALL, _within(rows, low, None), rows, low, None, details={"released": released_rows}
    )


# --- seasonal baselines: volume and mix ------------------------------------------------------
def same_weekdays(day: str, weeks: int, first_day: str) -> list[str]:
    """The same weekday in each of the ``weeks`` weeks before ``day``, back to the lake's first day."""
    d = date.fromisoformat(day)
    days = [(d - timedelta(weeks=w)).isoformat() for w in range(1, weeks + 1)]
    return [x for x in days if x >= first_day]


def robust_band(history: list[float], k: float, min_relative: float) -> tuple[float, float, float]:
    """``(median, low, high)``: the median plus or minus ``max(k`` robust
    standard deviations (MAD), ``min_relative`` of the median)."""
    median = statistics.median(history)
    mad = statistics.median(abs(x - median) for x in history)
    half = max(k * MAD_TO_SIGMA * mad, min_relative * median)
    return median, median - half, median + half


def volume_results(
    table: str, check: Volume, counts: Mapping[tuple[str, str], int], days: Iterable[str], first_day: str
) -> list[CheckResult]:
    """``counts``: rows per ``(event_date, platform)``; one result per day in ``days`` and platform."""
    out = []
    for day in sorted(days):
        history_days = same_weekdays(day, check.weeks, first_day)
        for platform in check.platforms:
            observed = counts.get((day, platform), 0)
            where = {"event_date": day, "platform": platform, "subject": subject(day, platform)}
            if len(history_days) < check.min_weeks:
                out.append(CheckResult(table, check, verdict=Verdict.NO_BASELINE, observed=observed, **where))
                continue
            history = [counts.get((d, platform), 0) for d in history_days]
            median, low, high = robust_band(history, check.k, check.min_relative)
            high_bound = high if check.alarm_on_spike else None
            out.append(
                CheckResult(
                    table,
                    check,
                    verdict=_within(observed, low, high_bound),
                    observed=observed,
                    expected_low=round(low, 3),
                    expected_high=None if high_bound is None else round(high_bound, 3),
                    details={"baseline_days": history_days, "baseline": history, "median": median},
                    **where,
                )
            )
    return out


def shares(counts: Mapping[str, int]) -> dict[str, float]:
    total = sum(counts.values())
    return {k: v / total for k, v in counts.items()} if total else {}


def distance(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Total-variation distance of two distributions (0: same, 1: disjoint)."""
    return 0.5 * sum(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in set(a) | set(b))


def mix_results(
    table: str, check: Mix, counts_by_day: Mapping[str, Mapping[str, int]], days: Iterable[str], first_day: str
) -> list[CheckResult]:
    """``counts_by_day``: day -> value -> rows; the day's shares against the
    median share of each value over the same weekdays before it."""
    out = []
    for day in sorted(days):
        observed = shares(counts_by_day.get(day, {}))
        history_days = [d for d in same_weekdays(day, check.weeks, first_day) if counts_by_day.get(d)]
        where = {"event_date": day, "subject": subject(day)}
        if len(history_days) < check.min_weeks or not observed:
            out.append(CheckResult(table, check, verdict=Verdict.NO_BASELINE, **where))
            continue
        history = [shares(counts_by_day[d]) for d in history_days]
        values = set().union(*history, observed)
        baseline = shares({v: statistics.median(h.get(v, 0.0) for h in history) for v in values})
        d = distance(observed, baseline)
        moved = sorted(values, key=lambda v: -abs(observed.get(v, 0.0) - baseline.get(v, 0.0)))[:3]
        details = {
            v: {"share": round(observed.get(v, 0.0), 4), "baseline": round(baseline.get(v, 0.0), 4)} for v in moved
        }
        out.append(
            CheckResult(
                table,
                check,
                verdict=_within(d, None, check.max_distance),
                observed=round(d, 4),
                expected_low=None,
                expected_high=check.max_distance,
                details=details,
                **where,
            )
        )
    return out


# --- freshness ----------------------------------------------------------------------------
def freshness_results(
    table: str,
    check: Freshness,
    newest: Mapping[str, int],
    clock: int,
    newest_ingest: int | None = None,
    now: int | None = None,
) -> list[CheckResult]:
    """``newest``: platform -> newest record time (micros). Each platform's
    lag behind ``clock`` (the table's newest record; the stream: its
    watermark), and (given ``now``) the newest ingest's lag behind now."""
    out = []
    for platform in check.platforms:
        if platform not in newest:
            # never seen: nothing to be late against (a platform this lake never had)
            continue
        lag = (clock - newest[platform]) / HOUR_MICROS
        out.append(
            CheckResult(
                table,
                check,
                subject(None, platform),
                _within(lag, None, check.max_lag_hours),
                round(lag, 3),
                None,
                check.max_lag_hours,
                platform=platform,
            )
        )
    if now is not None and newest_ingest is not None:
        lag = (now - newest_ingest) / HOUR_MICROS
        out.append(
            CheckResult(
                table,
                check,
                subject(other="ingest"),
                _within(lag, None, check.max_ingest_lag_hours),
                round(lag, 3),
                None,
                check.max_ingest_lag_hours,
            )
        )
    return out


# --- relationships, dead letters, schema drift ----------------------------------------------
def relationship_result(
    table: str, check: Relationship, day: str, children: pa.Array, parents: pa.Array, still_to_come: float = 0.0
) -> CheckResult:
    """The share of a day's child keys that are not among the parents' keys.
    ``still_to_come``: the share of the day's records not received yet (its
    completeness estimate): a parent still on its way is not missing, so the
    tolerated share grows by it until the day is complete."""
    children = pc.drop_null(children)
    n = len(children)
    missing = int(pc.sum(pc.invert(pc.is_in(children, parents))).as_py() or 0) if n else 0
    share = missing / n if n else 0.0
    tolerated = round(check.tolerated_share + max(0.0, still_to_come), 5)
    return CheckResult(
        table,
        check,
        subject(day),
        _within(share, None, tolerated),
        round(share, 5),
        None,
        tolerated,
        event_date=day,
        details={"rows": n, "without_parent": missing, "still_to_come": round(still_to_come, 5)},
    )


def dead_letter_results(
    table: str, check: DeadLetterShare, records: Mapping[str, int], rejected: Mapping[tuple[str, str], int]
) -> list[CheckResult]:
    """``records``: landing file -> records read; ``rejected``: (file, reason) -> dead-lettered."""
    out = []
    for (source, reason), n in sorted(rejected.items()):
        total = records.get(source) or n
        share = n / total
        out.append(
            CheckResult(
                table,
                check,
                subject(other=f"{source} reason={reason}"),
                _within(share, None, check.max_share),
                round(share, 5),
                None,
                check.max_share,
                details={"records": total, "rejected": n, "reason": reason, "source_file": source},
            )
        )
    return out


def drift_result(table: str, check: SchemaDrift, day: str, seen: set[str], known: set[str] | None) -> CheckResult:
    """``seen``: the day's schema versions (``v<N>``) and extra field names;
    ``known``: those of the days before (None: no earlier day to compare with)."""
    if known is None:
        return CheckResult(table, check, subject(day), Verdict.NO_BASELINE, event_date=day)
    new = sorted(seen - known)
    return CheckResult(
        table,
        check,
        subject(day),
        _within(len(new), None, 0),
        len(new),
        None,
        0.0,
        event_date=day,
        # what it saw, for the next runs' baseline (transforms.lake.quality)
        details={"seen": sorted(seen), **({"new": new} if new else {})},
    )
