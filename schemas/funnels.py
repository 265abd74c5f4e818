"""Funnels people define, declared in one YAML file and validated at load.

The default file is ``schemas/funnels.yaml`` (the contract's funnel and three
more); ``funnel gold --funnels PATH`` reads another. A mistake ends the load
with one line naming it (``FunnelDefinitionError``). The rules that compute a
funnel are ``transforms.rules.defined_funnels``; gold writes ``fact_funnel``
and ``mart_funnel`` for every definition.

A definition::

    - name: checkout_week          # unique, [a-z0-9_]
      description: ...             # optional
      unit: user                   # session (default) | user: every session of a user
      order: sequential            # sequential (default) | strict | any
      count: entries               # entries (default): a unit enters again after each window |
                                   # units: each unit once per entry cohort, on its best try
      strict_breaks_on: steps      # strict only: steps (default), a record of another step breaks the
                                   # order; any_record: any record of the unit (as PostHog's strict)
      window: 7d                   # from the entry; optional (none: no limit); s, m, h or d (a unit is required)
      step_gap: 1d                 # longest time from one step to the next; optional
      steps:                       # two or more
        - name: browse
          any_of:                  # a record matching any of these conditions
            - record: view
            - {record: event, where: {event_type: browse}}
        - name: paid
          record: event            # one condition written in place of any_of
          where: {event_type: payment_successful}
        - name: confirmed
          record: event_response
          where: {response_type: email_confirmation, status: [sent, delivered]}
          parent: paid             # the record's parent (its event) matches step 'paid', same unit
          after_previous: false    # may come before the previous step's time, not before the entry
      exclusions:                  # an entry with such a record between the steps is left out
        - {name: refund, record: view, where: {page_type: refund}, from_step: browse, to_step: paid}
      breakdowns: [platform, country, landing_page, referral, experiment:checkout_button]
      breakdown_limit: 10          # values shown per breakdown; the rest are 'other'

What entry, each order, exclusions, breakdowns and pending mean, where the
contract is silent: docs/funnels.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import yaml

from schemas.tables import SILVER

DEFAULT_PATH = Path(__file__).with_name("funnels.yaml")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class FunnelDefinitionError(ValueError):
    """A mistake in a funnel definitions file; the message is one line naming it."""


class Unit(StrEnum):
    SESSION = "session"
    USER = "user"


class Order(StrEnum):
    SEQUENTIAL = "sequential"
    STRICT = "strict"
    ANY = "any"


class Count(StrEnum):
    """What a funnel counts: entries (a unit again after each window), or units once per cohort on their best try."""

    ENTRIES = "entries"
    UNITS = "units"


class BreaksOn(StrEnum):
    """What breaks a strict order between two steps: a record of another step, or any record of the unit."""

    STEPS = "steps"
    ANY_RECORD = "any_record"


@dataclass(frozen=True)
class RecordKind:
    """A kind of silver record a step can match: its table, time column and
    the column naming its parent record (a response's event, an activity's
    response)."""

    table: str
    time: str
    parent_key: str | None = None
    parent: str | None = None


RECORDS = {
    "session": RecordKind("silver_sessions", "session_start_time"),
    "view": RecordKind("silver_views", "view_timestamp"),
    "click": RecordKind("silver_clicks", "click_timestamp"),
    "event": RecordKind("silver_events", "timestamp"),
    "event_response": RecordKind("silver_event_responses", "sent_at", "event_id", "event"),
    "user_activity": RecordKind("silver_user_activity", "activity_time", "response_id", "event_response"),
}
# First-touch properties a funnel can be broken down by; 'experiment:<name>' too.
BREAKDOWN_PROPERTIES = ("platform", "device_type", "country", "landing_page", "referral")
EXPERIMENT_PREFIX = "experiment:"
ALL = "all"  # the breakdown (and its value) of the rows over every entry
OTHER = "other"  # the values past a breakdown's limit
NONE = "(none)"  # an entry without a value for the breakdown


@dataclass(frozen=True)
class Condition:
    """Records of one kind whose ``where`` columns hold one of the listed
    values, and (``parent``) whose parent record matches that step."""

    record: str
    where: tuple[tuple[str, tuple], ...] = ()
    parent: str | None = None

    @property
    def kind(self) -> RecordKind:
        return RECORDS[self.record]


@dataclass(frozen=True)
class Step:
    name: str
    any_of: tuple[Condition, ...]
    after_previous: bool = True


@dataclass(frozen=True)
class Exclusion:
    name: str
    any_of: tuple[Condition, ...]
    from_step: int = 0  # step indexes
    to_step: int = -1


@dataclass(frozen=True)
class Funnel:
    name: str
    steps: tuple[Step, ...]
    description: str = ""
    unit: Unit = Unit.SESSION
    order: Order = Order.SEQUENTIAL
    count: Count = Count.ENTRIES
    strict_breaks_on: BreaksOn = BreaksOn.STEPS
    window_seconds: float | None = None
    step_gap_seconds: float | None = None
    exclusions: tuple[Exclusion, ...] = ()
    breakdowns: tuple[str, ...] = ()
    breakdown_limit: int = 10

    def step_label(self, number: int) -> str:
        """What step ``number`` (1-based) is called in the fact and the mart."""
        if self.order == Order.ANY:
            return f"{number} of {len(self.steps)} steps"
        return self.steps[number - 1].name


def duration_seconds(value, where: str) -> float:
    """'7d', '30m', '2h', '45s' -> seconds (positive). A bare number is an
    error (``window: 2`` read as two seconds surprised people who meant days)."""
    if isinstance(value, bool):
        raise FunnelDefinitionError(f"{where}: {value!r} is not a duration (write 7d, 12h, 30m or 45s)")
    match = _DURATION.match(str(value))
    if match is None:
        raise FunnelDefinitionError(f"{where}: {value!r} is not a duration (write 7d, 12h, 30m or 45s)")
    seconds = float(match.group(1)) * _SECONDS[match.group(2)]
    if seconds <= 0:
        raise FunnelDefinitionError(f"{where}: {value!r} must be longer than zero")
    if not match.group(2):
        number = match.group(1)
        raise FunnelDefinitionError(
            f"{where}: {value!r} has no unit (write {number}s, {number}m, {number}h or {number}d)"
        )
    return seconds


def _fields(raw, allowed: set[str], required: set[str], where: str) -> dict:
    if not isinstance(raw, dict):
        raise FunnelDefinitionError(f"{where}: expected a mapping of fields, got {type(raw).__name__}")
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise FunnelDefinitionError(f"{where}: unknown field '{unknown[0]}' (known: {', '.join(sorted(allowed))})")
    missing = sorted(required - set(raw))
    if missing:
        raise FunnelDefinitionError(f"{where}: '{missing[0]}' is missing")
    return raw


def _name(raw, where: str) -> str:
    if not isinstance(raw, str) or not _NAME.match(raw):
        raise FunnelDefinitionError(f"{where}: name {raw!r} must be lower case letters, digits and _")
    return raw


def _condition(raw: dict, where: str, earlier_steps: dict[str, Step] | None) -> Condition:
    record = raw.get("record")
    if record not in RECORDS:
        raise FunnelDefinitionError(f"{where}: record {record!r} is not one of {', '.join(RECORDS)}")
    columns = set(SILVER[RECORDS[record].table].column_names)
    where_raw = raw.get("where") or {}
    if not isinstance(where_raw, dict):
        raise FunnelDefinitionError(f"{where}: 'where' must map columns to a value or a list of values")
    conditions = []
    for column, values in where_raw.items():
        if column not in columns:
            raise FunnelDefinitionError(f"{where}: {record} has no column '{column}'")
        values = tuple(values) if isinstance(values, list) else (values,)
        if not values:
            raise FunnelDefinitionError(f"{where}: where '{column}' lists no value")
        conditions.append((column, values))
    parent = raw.get("parent")
    if parent is not None:
        kind = RECORDS[record]
        if kind.parent is None:
            raise FunnelDefinitionError(f"{where}: a {record} has no parent record")
        if earlier_steps is None or parent not in earlier_steps:
            raise FunnelDefinitionError(f"{where}: parent '{parent}' is not an earlier step")
        if any(c.record != kind.parent for c in earlier_steps[parent].any_of):
            raise FunnelDefinitionError(f"{where}: parent step '{parent}' matches no {kind.parent} only")
    return Condition(record, tuple(conditions), parent)


_CONDITION_FIELDS = {"record", "where", "parent"}


def _conditions(raw: dict, where: str, earlier_steps: dict[str, Step] | None) -> tuple[Condition, ...]:
    if "any_of" in raw:
        if set(raw) & _CONDITION_FIELDS:
            raise FunnelDefinitionError(f"{where}: write either any_of or record/where, not both")
        options = raw["any_of"]
        if not isinstance(options, list) or not options:
            raise FunnelDefinitionError(f"{where}: any_of must list one condition or more")
        return tuple(
            _condition(_fields(o, _CONDITION_FIELDS, {"record"}, f"{where} any_of #{i + 1}"), where, earlier_steps)
            for i, o in enumerate(options)
        )
    if "record" not in raw:
        raise FunnelDefinitionError(f"{where}: 'record' (or any_of) is missing")
    return (_condition(raw, where, earlier_steps),)


def _funnel(raw, source: str, number: int) -> Funnel:
    where = f"{source}: funnel #{number}"
    raw = _fields(
        raw,
        {
            "name",
            "description",
            "unit",
            "order",
            "count",
            "strict_breaks_on",
            "window",
            "step_gap",
            "steps",
            "exclusions",
            "breakdowns",
            "breakdown_limit",
        },
        {"name"},
        where,
    )
    name = _name(raw["name"], where)
    where = f"{source}: funnel '{name}'"
    try:
        unit = Unit(raw.get("unit", Unit.SESSION))
    except ValueError:
        raise FunnelDefinitionError(f"{where}: unit {raw['unit']!r} is not session or user") from None
    try:
        order = Order(raw.get("order", Order.SEQUENTIAL))
    except ValueError:
        raise FunnelDefinitionError(f"{where}: order {raw['order']!r} is not sequential, strict or any") from None
    try:
        count = Count(raw.get("count", Count.ENTRIES))
    except ValueError:
        raise FunnelDefinitionError(f"{where}: count {raw['count']!r} is not entries or units") from None
    try:
        breaks_on = BreaksOn(raw.get("strict_breaks_on", BreaksOn.STEPS))
    except ValueError:
        raise FunnelDefinitionError(
            f"{where}: strict_breaks_on {raw['strict_breaks_on']!r} is not steps or any_record"
        ) from None
    if "strict_breaks_on" in raw and order != Order.STRICT:
        raise FunnelDefinitionError(f"{where}: strict_breaks_on needs order strict")
    window = duration_seconds(raw["window"], f"{where}: window") if raw.get("window") is not None else None
    gap = duration_seconds(raw["step_gap"], f"{where}: step_gap") if raw.get("step_gap") is not None else None
    if gap is not None and order == Order.ANY:
        raise FunnelDefinitionError(f"{where}: step_gap needs order sequential or strict (steps come in any order)")
    steps_raw = raw.get("steps")
    if not isinstance(steps_raw, list) or not steps_raw:
        raise FunnelDefinitionError(f"{where}: no steps (list two or more)")
    if len(steps_raw) < 2:
        raise FunnelDefinitionError(f"{where}: one step is no funnel (list two or more)")
    steps: dict[str, Step] = {}
    for i, step_raw in enumerate(steps_raw):
        step_where = f"{where}: step #{i + 1}"
        step_raw = _fields(step_raw, {"name", "any_of", "after_previous"} | _CONDITION_FIELDS, {"name"}, step_where)
        step_name = _name(step_raw["name"], step_where)
        step_where = f"{where}: step '{step_name}'"
        if step_name in steps:
            raise FunnelDefinitionError(f"{step_where}: the name is used twice")
        after = step_raw.get("after_previous", True)
        if not isinstance(after, bool):
            raise FunnelDefinitionError(f"{step_where}: after_previous must be true or false")
        if not after and (i == 0 or order != Order.SEQUENTIAL):
            raise FunnelDefinitionError(f"{step_where}: after_previous: false needs order sequential, not step 1")
        steps[step_name] = Step(step_name, _conditions(step_raw, step_where, dict(steps)), after)
    exclusions, names = [], set(steps)
    for i, ex_raw in enumerate(raw.get("exclusions") or []):
        ex_where = f"{where}: exclusion #{i + 1}"
        ex_raw = _fields(ex_raw, {"name", "any_of", "from_step", "to_step"} | _CONDITION_FIELDS, {"name"}, ex_where)
        ex_name = _name(ex_raw["name"], ex_where)
        ex_where = f"{where}: exclusion '{ex_name}'"
        if ex_name in names:
            raise FunnelDefinitionError(f"{ex_where}: the name is used twice")
        names.add(ex_name)
        bounds = []
        for bound, default in (("from_step", 0), ("to_step", len(steps) - 1)):
            step = ex_raw.get(bound)
            if step is None:
                bounds.append(default)
            elif step not in steps:
                raise FunnelDefinitionError(f"{ex_where}: {bound} '{step}' is not a step")
            else:
                bounds.append(list(steps).index(step))
        if bounds[0] >= bounds[1]:
            raise FunnelDefinitionError(f"{ex_where}: from_step must come before to_step")
        if order == Order.ANY:
            raise FunnelDefinitionError(f"{ex_where}: exclusions need order sequential or strict")
        exclusions.append(Exclusion(ex_name, _conditions(ex_raw, ex_where, None), bounds[0], bounds[1]))
    breakdowns = raw.get("breakdowns") or []
    if not isinstance(breakdowns, list):
        raise FunnelDefinitionError(f"{where}: breakdowns must be a list")
    for b in breakdowns:
        known = b in BREAKDOWN_PROPERTIES or (
            isinstance(b, str) and b.startswith(EXPERIMENT_PREFIX) and len(b) > len(EXPERIMENT_PREFIX)
        )
        if not known:
            raise FunnelDefinitionError(
                f"{where}: breakdown {b!r} is not one of {', '.join(BREAKDOWN_PROPERTIES)} or experiment:<name>"
            )
    if len(breakdowns) != len(set(breakdowns)):
        raise FunnelDefinitionError(f"{where}: a breakdown is listed twice")
    limit = raw.get("breakdown_limit", 10)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise FunnelDefinitionError(f"{where}: breakdown_limit must be a whole number of at least 1")
    return Funnel(
        name=name,
        steps=tuple(steps.values()),
        description=str(raw.get("description") or ""),
        unit=unit,
        order=order,
        count=count,
        strict_breaks_on=breaks_on,
        window_seconds=window,
        step_gap_seconds=gap,
        exclusions=tuple(exclusions),
        breakdowns=tuple(breakdowns),
        breakdown_limit=limit,
    )


def parse(text: str, source: str = "funnels.yaml") -> tuple[Funnel, ...]:
    """The definitions in ``text`` (YAML), or FunnelDefinitionError naming the first mistake."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise FunnelDefinitionError(f"{source}: not YAML{at} ({getattr(e, 'problem', e)})") from None
    raw = _fields(raw, {"funnels"}, {"funnels"}, source)
    if not isinstance(raw["funnels"], list) or not raw["funnels"]:
        raise FunnelDefinitionError(f"{source}: 'funnels' must list one definition or more")
    funnels: dict[str, Funnel] = {}
    for i, funnel_raw in enumerate(raw["funnels"]):
        funnel = _funnel(funnel_raw, source, i + 1)
        if funnel.name in funnels:
            raise FunnelDefinitionError(f"{source}: funnel '{funnel.name}': the name is used twice")
        funnels[funnel.name] = funnel
    return tuple(funnels.values())


def load(path: str | Path | None = None) -> tuple[Funnel, ...]:
    """The definitions of the file at ``path`` (default ``DEFAULT_PATH``)."""
    path = Path(path) if path is not None else DEFAULT_PATH
    try:
        text = path.read_text()
    except OSError as e:
        raise FunnelDefinitionError(f"{path}: cannot be read ({e.strerror or e})") from None
    return parse(text, str(path) if path != DEFAULT_PATH else "schemas/funnels.yaml")
