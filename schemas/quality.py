"""Data-quality checks, declared beside each table (``Table.checks``).

A declaration says what must hold and how bad a failure is; it does not
evaluate anything (``transforms.rules.quality`` does, for the backfill, the
gold run and the stream alike; ``schemas.dbt`` writes the ones dbt can run
as dbt tests). Every check has a ``kind`` and a stable ``check_id``
(``<table>.<kind>[.<what>]``) that its results and alerts carry.

Baselines are robust and seasonal: a day's volume is compared with the same
weekday of the trailing weeks (median and MAD, at least ``min_weeks`` of
them), so a weekly rhythm or one on-sale day in the baseline does not move
the band. Volume alarms on drops only by default: a spike is business (an
on-sale), a drop is a broken producer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Severity(StrEnum):
    WARN = "warn"  # reported and alerted; the run goes on
    BLOCK = "block"  # gold is not released; the run exits non-zero


class CheckKind(StrEnum):
    NOT_NULL = "not_null"
    UNIQUE = "unique"
    ACCEPTED_VALUES = "accepted_values"
    RELATIONSHIP = "relationship"
    FRESHNESS = "freshness"
    VOLUME = "volume"
    MIX = "mix"
    DEAD_LETTER_SHARE = "dead_letter_share"
    SCHEMA_DRIFT = "schema_drift"
    SANITY = "sanity"
    ROW_COUNT_CHANGE = "row_count_change"
    STREAM_FRESHNESS = "stream_freshness"
    STREAM_VOLUME = "stream_volume"


@dataclass(frozen=True)
class Check:
    severity: Severity = Severity.WARN

    kind: CheckKind = field(init=False, default=CheckKind.NOT_NULL)

    @property
    def what(self) -> str:
        """What the check is about inside its table (a column, a rule name)."""
        return ""

    def check_id(self, table: str) -> str:
        return ".".join(p for p in (table, str(self.kind), self.what) if p)

    @property
    def columns(self) -> tuple[str, ...]:
        """Columns of its table the check reads."""
        return ()


@dataclass(frozen=True)
class _OfColumns(Check):
    of: tuple[str, ...] = ()

    @property
    def what(self) -> str:
        return "+".join(self.of)

    @property
    def columns(self):
        return self.of


@dataclass(frozen=True)
class NotNull(_OfColumns):
    """No row has a null in any of ``of``."""

    kind: CheckKind = field(init=False, default=CheckKind.NOT_NULL)


@dataclass(frozen=True)
class Unique(_OfColumns):
    """No two rows share the values of ``of``."""

    kind: CheckKind = field(init=False, default=CheckKind.UNIQUE)


@dataclass(frozen=True)
class AcceptedValues(Check):
    """Every non-null ``column`` value is one of ``values``."""

    column: str = ""
    values: tuple[str, ...] = ()
    kind: CheckKind = field(init=False, default=CheckKind.ACCEPTED_VALUES)

    @property
    def what(self) -> str:
        return self.column

    @property
    def columns(self):
        return (self.column,)


@dataclass(frozen=True)
class Relationship(Check):
    """At most ``tolerated_share`` of a day's rows have a ``column`` value
    that is no ``parent_column`` of ``parent`` (optionally only parent rows
    whose ``parent_flag`` is true) within the ``within_days`` days up to the
    row's own (the parent comes first: a session before its views)."""

    column: str = ""
    parent: str = ""
    parent_column: str = ""
    parent_flag: str | None = None
    tolerated_share: float = 0.0
    within_days: int = 1
    kind: CheckKind = field(init=False, default=CheckKind.RELATIONSHIP)

    @property
    def what(self) -> str:
        return f"{self.column}->{self.parent}" + (f"[{self.parent_flag}]" if self.parent_flag else "")

    @property
    def columns(self):
        return (self.column,)


@dataclass(frozen=True)
class Freshness(Check):
    """Per platform, the newest ``time_column`` lags the table's newest by
    at most ``max_lag_hours`` (a platform gone quiet), and the newest
    ingest is at most ``max_ingest_lag_hours`` before now (a stalled
    producer; streaming)."""

    time_column: str = ""
    platforms: tuple[str, ...] = ()
    max_lag_hours: float = 6.0
    max_ingest_lag_hours: float = 1.0
    kind: CheckKind = field(init=False, default=CheckKind.FRESHNESS)

    @property
    def columns(self):
        return (self.time_column, "ingested_at")


@dataclass(frozen=True)
class Volume(Check):
    """A day's rows per platform against the same weekday of the trailing
    ``weeks`` weeks: below ``median - max(k * 1.4826 * MAD, min_relative *
    median)`` fails (and above the mirror bound, with ``alarm_on_spike``)."""

    platforms: tuple[str, ...] = ()
    weeks: int = 8
    min_weeks: int = 4
    k: float = 4.0
    min_relative: float = 0.4
    alarm_on_spike: bool = False
    kind: CheckKind = field(init=False, default=CheckKind.VOLUME)


@dataclass(frozen=True)
class Mix(Check):
    """A day's distribution of ``column`` against the median shares of the
    same weekday of the trailing weeks: a total-variation distance above
    ``max_distance`` fails."""

    column: str = ""
    max_distance: float = 0.15
    weeks: int = 8
    min_weeks: int = 4
    kind: CheckKind = field(init=False, default=CheckKind.MIX)

    @property
    def what(self) -> str:
        return self.column

    @property
    def columns(self):
        return (self.column,)


@dataclass(frozen=True)
class DeadLetterShare(Check):
    """Per landing file (or streaming window), the share of its records
    dead-lettered for each reason is at most ``max_share``."""

    max_share: float = 0.01
    kind: CheckKind = field(init=False, default=CheckKind.DEAD_LETTER_SHARE)


@dataclass(frozen=True)
class SchemaDrift(Check):
    """A day's ``schema_version`` values and extra field names (``extra_json``)
    were all seen in the lake's bronze within the ``days`` days before it."""

    days: int = 28
    kind: CheckKind = field(init=False, default=CheckKind.SCHEMA_DRIFT)

    @property
    def columns(self):
        return ("schema_version", "extra_json")


@dataclass(frozen=True)
class Sanity(Check):
    """A funnel rule: ``total(at_most) <= total(of)`` per row (``per_row``)
    or summed over the table, e.g. confirmations at most payments."""

    name: str = ""
    at_most: str = ""
    of: str = ""
    per_row: bool = False
    kind: CheckKind = field(init=False, default=CheckKind.SANITY)

    @property
    def what(self) -> str:
        return self.name

    @property
    def columns(self):
        return (self.at_most, self.of)


@dataclass(frozen=True)
class RowCountChange(Check):
    """A rebuilt table keeps at least ``1 - max_drop`` of the rows of its
    released version (a gold run that lost half of its input)."""

    max_drop: float = 0.5
    kind: CheckKind = field(init=False, default=CheckKind.ROW_COUNT_CHANGE)


@dataclass(frozen=True)
class StreamFreshness(Check):
    """The streaming job's newest receipt is at most ``max_silence_seconds``
    behind the clock: a stalled producer, topic or subscription raises an
    alert within that (evaluated by the job itself, on a timer)."""

    max_silence_seconds: int = 600
    kind: CheckKind = field(init=False, default=CheckKind.STREAM_FRESHNESS)


@dataclass(frozen=True)
class StreamVolume(Check):
    """Records the streaming job receives per platform and window of
    ``window_seconds``: a platform whose trailing windows held at least
    ``min_records`` (median of the last ``baseline_windows``, at least
    ``min_windows`` of them) that receives none while other platforms do
    raises an alert (once, until it sends again). Drops to zero only: within
    minutes a partial drop is noise; the day's volume check judges those."""

    platforms: tuple[str, ...] = ()
    window_seconds: int = 300
    baseline_windows: int = 12
    min_windows: int = 3
    min_records: int = 20
    kind: CheckKind = field(init=False, default=CheckKind.STREAM_VOLUME)


def key_checks(key: tuple[str, ...], severity: Severity = Severity.BLOCK, unique: bool = True) -> tuple[Check, ...]:
    """The checks of a key: not null, and (one row per key) unique."""
    checks: tuple[Check, ...] = (NotNull(severity, key),)
    return checks + ((Unique(severity, key),) if unique else ())


@dataclass(frozen=True)
class Completeness:
    """How complete each recent event day is: the share of its records
    received so far, estimated from the lake's own lateness profile (when the
    records of earlier days arrived, counted from the start of their day).

    A day's records are those received within ``horizon_days`` of the day's
    end; later ones are not expected. The profile is drawn from the
    ``profile_days`` newest days old enough to be complete, and an estimate
    needs at least ``min_profile_days`` of them."""

    horizon_days: int = 14
    profile_days: int = 28
    min_profile_days: int = 7
    shown_days: int = 7  # what ``funnel status`` prints


COMPLETENESS = Completeness()
