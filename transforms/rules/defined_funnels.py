"""The funnels of ``schemas.funnels`` on Arrow tables: one shard's silver rows
-> its ``fact_funnel`` rows (``fact_rows``); every shard's fact rows -> the
``mart_funnel`` rows (``mart_rows``). What each order, window, gap and
exclusion means is in ``schemas.funnels``' docstring.

A shard holds every silver row of its users (``transforms.batch.gold``), so
a user's journey across sessions is whole in it, and an entry's cohort,
breakdown values and step times are decided in one place; the marts are
counted over all shards at the end (the fact rows of a funnel are a few per
entry).
"""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.funnels import (
    ALL,
    EXPERIMENT_PREFIX,
    NONE,
    OTHER,
    Condition,
    Funnel,
    Order,
    Unit,
)
from schemas.tables import GOLD, SILVER, TIME_TO_CONVERT_EDGES_SECONDS
from transforms.rules.arrow import micros
from transforms.rules.funnel import lookup
from transforms.rules.gold import GOLD_INPUTS, user_country

SECOND = 1_000_000
COHORT_GRAINS = ("day", "week", "month")
_NO_TIME = np.iinfo(np.int64).max  # an open upper bound
# What a shard's breakdown properties are read from.
SESSION_PROPERTIES = ("platform", "device_type", "experiments_json")
VIEW_PROPERTIES = ("landing_page", "is_referral")
# The fact's first-touch columns (what a breakdown reads).
BREAKDOWN_COLUMNS = ("platform", "device_type", "country", "landing_page", "referral", "experiments_json")


def required_columns(funnels: tuple[Funnel, ...]) -> dict[str, set[str]]:
    """Silver columns the funnels read, per table: keys, units, times, the
    columns their conditions test, and what the breakdowns need."""
    needed: dict[str, set[str]] = defaultdict(set)
    for funnel in funnels:
        for condition in _all_conditions(funnel):
            kind = condition.kind
            columns = needed[kind.table]
            columns.update({SILVER[kind.table].key[0], "session_id", "user_id", kind.time})
            columns.update(column for column, _ in condition.where)
            if condition.parent is not None:
                columns.add(kind.parent_key)
    if funnels:
        needed["silver_sessions"].update({"session_id", "user_id", "geo_location", *SESSION_PROPERTIES})
        needed["silver_views"].update({"view_id", "session_id", "view_timestamp", *VIEW_PROPERTIES})
        needed["silver_users"].update({"user_id", "country"})
    return dict(needed)


def gold_inputs(funnels: tuple[Funnel, ...]) -> dict[str, tuple[str, ...]]:
    """What gold reads of each silver table: its own columns and the funnels'."""
    needed = required_columns(funnels)
    return {name: cols + tuple(sorted(needed.get(name, set()) - set(cols))) for name, cols in GOLD_INPUTS.items()}


def _all_conditions(funnel: Funnel):
    for step in funnel.steps:
        yield from step.any_of
    for exclusion in funnel.exclusions:
        yield from exclusion.any_of


# --- matching records -------------------------------------------------------------------------
_MATCH_SCHEMA = pa.schema([("unit", pa.string()), ("t", pa.int64()), ("session", pa.string()), ("id", pa.string())])


def _unit_column(funnel: Funnel) -> str:
    return "user_id" if funnel.unit == Unit.USER else "session_id"


def _matches(
    funnel: Funnel, conditions: tuple[Condition, ...], g: dict[str, pa.Table], found: dict[str, pa.Table]
) -> pa.Table:
    """Records matching any of ``conditions``: (unit, time micros, session, record id).
    ``found``: the matches of the earlier steps, by name (for ``parent``)."""
    parts = []
    for condition in conditions:
        kind = condition.kind
        rows = g[kind.table]
        mask = pc.is_valid(rows.column(_unit_column(funnel)))
        mask = pc.and_(mask, pc.is_valid(rows.column(kind.time)))
        for column, values in condition.where:
            mask = pc.and_(mask, pc.fill_null(pc.is_in(rows.column(column), pa.array(values)), False))
        rows = rows.filter(mask)
        unit = rows.column(_unit_column(funnel))
        part = pa.table(
            {
                "unit": unit,
                "t": micros(rows.column(kind.time)),
                "session": rows.column("session_id"),
                "id": rows.column(SILVER[kind.table].key[0]),
            },
            schema=_MATCH_SCHEMA,
        )
        if condition.parent is not None:
            parents = found[condition.parent]
            # the parent record matched that step, in the same unit
            keys = pc.binary_join_element_wise(unit, rows.column(kind.parent_key), "\x1f")
            parent_keys = pc.binary_join_element_wise(parents.column("unit"), parents.column("id"), "\x1f")
            part = part.filter(pc.fill_null(pc.is_in(keys, value_set=parent_keys), False))
        parts.append(part)
    return pa.concat_tables(parts) if parts else _MATCH_SCHEMA.empty_table()


# --- entries ----------------------------------------------------------------------------------
_ENTRY_SCHEMA = pa.schema(
    [("unit", pa.string()), ("entry_number", pa.int64()), ("entry_at", pa.int64()), ("session", pa.string())]
)


def _entries(openers: pa.Table, window: int | None) -> pa.Table:
    """Entries from the records that open one: per unit its earliest, and
    (with a window) the first at or after each entry's window has closed.
    -> (unit, entry_number, entry_at, session) sorted by unit and time."""
    if openers.num_rows == 0:
        return _ENTRY_SCHEMA.empty_table()
    ordered = openers.sort_by([("unit", "ascending"), ("t", "ascending"), ("session", "ascending")])
    units = ordered.column("unit").combine_chunks()
    times = ordered.column("t").to_numpy()
    first = np.ones(len(times), bool)
    if len(times) > 1:
        first[1:] = pc.not_equal(units[1:], units[:-1]).to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(first)
    keep = np.zeros(len(times), bool)
    keep[starts] = True
    if window is not None:
        ends = np.append(starts[1:], len(times))
        span = times[ends - 1] - times[starts]
        for start, end in zip(starts[span >= window], ends[span >= window]):  # units that re-enter
            opened = times[start]
            for i in range(start + 1, end):
                if times[i] >= opened + window:
                    keep[i], opened = True, times[i]
    chosen = ordered.filter(pa.array(keep))
    kept_first = first[keep]
    number = np.ones(len(kept_first), np.int64)
    for i in range(1, len(kept_first)):  # 1, 2, .. within a unit
        if not kept_first[i]:
            number[i] = number[i - 1] + 1
    return pa.table(
        {
            "unit": chosen.column("unit"),
            "entry_number": pa.array(number),
            "entry_at": chosen.column("t"),
            "session": chosen.column("session"),
        },
        schema=_ENTRY_SCHEMA,
    )


def _per_entry(entries: pa.Table, matches: pa.Table) -> pa.Table:
    """Every (entry row, match) pair of a unit: (e, t)."""
    left = pa.table({"unit": entries.column("unit"), "e": pa.array(np.arange(entries.num_rows))})
    pairs = left.join(matches.select(["unit", "t"]), keys="unit", join_type="inner", use_threads=False)
    return pairs.select(["e", "t"])


def _first_per_entry(n: int, pairs: pa.Table) -> np.ndarray:
    """The least ``t`` per entry row (``_NO_TIME`` where none)."""
    out = np.full(n, _NO_TIME, np.int64)
    if pairs.num_rows:
        grouped = pairs.group_by("e", use_threads=False).aggregate([("t", "min")])
        out[grouped.column("e").to_numpy()] = grouped.column("t_min").to_numpy()
    return out


def _sequential(funnel: Funnel, entries: pa.Table, steps: list[pa.Table], window_end: np.ndarray) -> np.ndarray:
    """Reach time of every step per entry (``_NO_TIME``: not reached), as an
    (entries, steps) array."""
    n = entries.num_rows
    reached = np.full((n, len(steps)), _NO_TIME, np.int64)
    reached[:, 0] = entries.column("entry_at").to_numpy()
    gap = None if funnel.step_gap_seconds is None else int(funnel.step_gap_seconds * SECOND)
    for k in range(1, len(steps)):
        pairs = _per_entry(entries, steps[k])
        e, t = pairs.column("e").to_numpy(), pairs.column("t").to_numpy()
        previous = reached[e, k - 1]
        keep = (previous != _NO_TIME) & (t <= window_end[e])
        keep &= t >= previous if funnel.steps[k].after_previous else t >= reached[e, 0]
        if gap is not None:
            keep &= t <= previous + gap
        reached[:, k] = _first_per_entry(n, pa.table({"e": e[keep], "t": t[keep]}))
        reached[reached[:, k - 1] == _NO_TIME, k] = _NO_TIME
    return reached


def _strict(funnel: Funnel, entries: pa.Table, steps: list[pa.Table], window_end: np.ndarray) -> np.ndarray:
    """As ``_sequential``, walking each entry's step records in time order:
    the next record of another step than the last reached must be the next step's."""
    n = entries.num_rows
    reached = np.full((n, len(steps)), _NO_TIME, np.int64)
    entry_at = entries.column("entry_at").to_numpy()
    reached[:, 0] = entry_at
    gap = None if funnel.step_gap_seconds is None else int(funnel.step_gap_seconds * SECOND)
    labelled = [
        pa.table({"unit": s.column("unit"), "t": s.column("t"), "k": pa.array(np.full(s.num_rows, k, np.int64))})
        for k, s in enumerate(steps)
    ]
    pairs = (
        pa.table({"unit": entries.column("unit"), "e": pa.array(np.arange(n))})
        .join(pa.concat_tables(labelled), keys="unit", join_type="inner", use_threads=False)
        .sort_by([("e", "ascending"), ("t", "ascending"), ("k", "ascending")])
    )
    e, t, k = (pairs.column(c).to_numpy() for c in ("e", "t", "k"))
    bounds = np.flatnonzero(np.diff(e)) + 1
    for rows in np.split(np.arange(len(e)), bounds):
        if not len(rows):
            continue
        entry = e[rows[0]]
        at, end, current = entry_at[entry], window_end[entry], 0
        for i in rows:
            if t[i] < at or (t[i] == at and k[i] == 0):
                continue  # before the entry, or the entry record itself
            if t[i] > end or current == len(steps) - 1:
                break
            if k[i] == current:
                continue  # a repeat of the step last reached
            if k[i] != current + 1 or (gap is not None and t[i] > reached[entry, current] + gap):
                break
            current += 1
            reached[entry, current] = t[i]
    return reached


def _any_order(funnel: Funnel, entries: pa.Table, steps: list[pa.Table], window_end: np.ndarray) -> np.ndarray:
    """Column k: when the entry had reached k+1 distinct steps (``_NO_TIME``: never)."""
    n = entries.num_rows
    entry_at = entries.column("entry_at").to_numpy()
    first = np.full((n, len(steps)), _NO_TIME, np.int64)
    for k, matches in enumerate(steps):
        pairs = _per_entry(entries, matches)
        e, t = pairs.column("e").to_numpy(), pairs.column("t").to_numpy()
        keep = (t >= entry_at[e]) & (t <= window_end[e])
        first[:, k] = _first_per_entry(n, pa.table({"e": e[keep], "t": t[keep]}))
    return np.sort(first, axis=1)


def _excluded(funnel: Funnel, entries: pa.Table, reached: np.ndarray, window_end: np.ndarray, found) -> np.ndarray:
    """Entries with an exclusion record between its from and to steps."""
    out = np.zeros(entries.num_rows, bool)
    for exclusion in funnel.exclusions:
        pairs = _per_entry(entries, found[exclusion.name])
        e, t = pairs.column("e").to_numpy(), pairs.column("t").to_numpy()
        start = reached[e, exclusion.from_step]
        end = reached[e, exclusion.to_step]
        end = np.where(end == _NO_TIME, window_end[e], end)
        hit = (start != _NO_TIME) & (t >= start) & (t <= end)
        out[e[hit]] = True
    return out


# --- first-touch properties -------------------------------------------------------------------
def _properties(sessions_of_entries: pa.Array, g: dict[str, pa.Table]) -> dict[str, pa.Array]:
    """platform, device_type, country, landing_page, referral and
    experiments_json of each entry's session."""
    sessions = g["silver_sessions"]
    ids = sessions.column("session_id")
    out = {c: lookup(sessions_of_entries, ids, sessions.column(c)) for c in SESSION_PROPERTIES}
    out["country"] = lookup(sessions_of_entries, ids, user_country(sessions, g["silver_users"]))
    views = g["silver_views"].filter(pc.is_valid(g["silver_views"].column("view_timestamp")))
    views = views.sort_by([("session_id", "ascending"), ("view_timestamp", "ascending"), ("view_id", "ascending")])
    if views.num_rows:
        s = views.column("session_id").combine_chunks()
        first = np.ones(len(s), bool)
        first[1:] = pc.not_equal(s[1:], s[:-1]).to_numpy(zero_copy_only=False)
        views = views.filter(pa.array(first))
    view_ids = views.column("session_id")
    out["landing_page"] = lookup(sessions_of_entries, view_ids, views.column("landing_page"))
    referral = lookup(sessions_of_entries, view_ids, views.column("is_referral"))
    out["referral"] = pc.if_else(referral, pa.scalar("referral"), pa.scalar("direct"))
    return out


# --- the fact -----------------------------------------------------------------------------------
def fact_rows(funnels: tuple[Funnel, ...], g: dict[str, pa.Table]) -> pa.Table:
    """A shard's ``fact_funnel`` rows: per funnel, unit entry and reached step."""
    schema = GOLD["fact_funnel"].arrow_schema()
    parts = [_fact_of(funnel, g, schema) for funnel in funnels]
    parts = [p for p in parts if p.num_rows]
    return pa.concat_tables(parts) if parts else schema.empty_table()


def _fact_of(funnel: Funnel, g: dict[str, pa.Table], schema: pa.Schema) -> pa.Table:
    found: dict[str, pa.Table] = {}
    steps = []
    for step in funnel.steps:
        found[step.name] = _matches(funnel, step.any_of, g, found)
        steps.append(found[step.name])
    for exclusion in funnel.exclusions:
        found[exclusion.name] = _matches(funnel, exclusion.any_of, g, found)
    window = None if funnel.window_seconds is None else int(funnel.window_seconds * SECOND)
    openers = pa.concat_tables(steps) if funnel.order == Order.ANY else steps[0]
    entries = _entries(openers, window)
    n = entries.num_rows
    if n == 0:
        return schema.empty_table()
    entry_at = entries.column("entry_at").to_numpy()
    window_end = np.full(n, _NO_TIME, np.int64) if window is None else entry_at + window
    compute = {Order.SEQUENTIAL: _sequential, Order.STRICT: _strict, Order.ANY: _any_order}[funnel.order]
    reached = compute(funnel, entries, steps, window_end)
    keep = ~_excluded(funnel, entries, reached, window_end, found) if funnel.exclusions else np.ones(n, bool)

    unit = entries.column("unit")
    sessions = entries.column("session")
    user = (
        unit
        if funnel.unit == Unit.USER
        else lookup(sessions, g["silver_sessions"].column("session_id"), g["silver_sessions"].column("user_id"))
    )
    properties = _properties(sessions, g)
    parts = []
    for k in range(len(funnel.steps)):
        mask = keep & (reached[:, k] != _NO_TIME)
        if not mask.any():
            continue
        at = reached[mask, k]
        previous = None if k == 0 else reached[mask, k - 1]
        columns = {
            "funnel": pa.array([funnel.name] * int(mask.sum()), pa.string()),
            "unit": pa.array([str(funnel.unit)] * int(mask.sum()), pa.string()),
            "unit_id": unit.filter(pa.array(mask)),
            "entry_number": entries.column("entry_number").filter(pa.array(mask)),
            "user_id": user.filter(pa.array(mask)),
            "session_id": sessions.filter(pa.array(mask)),
            "entry_at": pa.array(entry_at[mask]).cast(pa.timestamp("us", tz="UTC")),
            "entry_date": pc.cast(pa.array(entry_at[mask]).cast(pa.timestamp("us", tz="UTC")), pa.date32()),
            "window_ends_at": None if window is None else pa.array(window_end[mask]).cast(pa.timestamp("us", tz="UTC")),
            "step_number": pa.array(np.full(int(mask.sum()), k + 1, np.int64)),
            "step_name": pa.array([funnel.step_label(k + 1)] * int(mask.sum()), pa.string()),
            "reached_at": pa.array(at).cast(pa.timestamp("us", tz="UTC")),
            "seconds_from_entry": pa.array((at - entry_at[mask]) / SECOND),
            "seconds_from_previous_step": pa.nulls(int(mask.sum()), pa.float64())
            if previous is None
            else pa.array((at - previous) / SECOND),
            **{name: values.filter(pa.array(mask)) for name, values in properties.items()},
        }
        parts.append(
            pa.Table.from_arrays(
                [
                    pa.nulls(int(mask.sum()), schema.field(c).type)
                    if columns[c] is None
                    else pc.cast(columns[c], schema.field(c).type)
                    for c in schema.names
                ],
                schema=schema,
            )
        )
    return pa.concat_tables(parts) if parts else schema.empty_table()


# --- the mart ------------------------------------------------------------------------------------
def _cohort_start(entry_date: pa.Array, grain: str) -> pa.Array:
    if grain == "day":
        return entry_date
    return pc.floor_temporal(entry_date, unit=grain, week_starts_monday=True)


def breakdown_values(entries: pa.Table, breakdown: str) -> pa.Array:
    """Each entry's value of ``breakdown`` as text (``NONE`` when it has none)."""
    if breakdown == ALL:
        return pa.array([ALL] * entries.num_rows, pa.string())
    if breakdown.startswith(EXPERIMENT_PREFIX):
        name = breakdown[len(EXPERIMENT_PREFIX) :]
        values = []
        for raw in entries.column("experiments_json").to_pylist():
            try:
                variant = json.loads(raw).get(name) if raw else None
            except (ValueError, AttributeError):
                variant = None
            values.append(NONE if variant is None else str(variant))
        return pa.array(values, pa.string())
    return pc.fill_null(pc.cast(entries.column(breakdown), pa.string()), NONE)


def _bucketed(values: pa.Array, limit: int) -> pa.Array:
    """The ``limit`` values with the most entries (ties: by value) kept, the rest ``OTHER``."""
    counts = pa.table({"v": values}).group_by("v", use_threads=False).aggregate([("v", "count")])
    ranked = counts.sort_by([("v_count", "descending"), ("v", "ascending")])
    top = ranked.column("v").slice(0, limit)
    return pc.if_else(pc.is_in(values, value_set=top), values, pa.scalar(OTHER))


def quantile(sorted_values: np.ndarray, q: float) -> float:
    """Linear interpolation between order statistics (DuckDB's quantile_cont)."""
    position = (len(sorted_values) - 1) * q
    low = int(np.floor(position))
    high = min(low + 1, len(sorted_values) - 1)
    return float(sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low))


def mart_rows(funnels: tuple[Funnel, ...], facts: pa.Table, clock: int | None) -> pa.Table:
    """``mart_funnel`` from every fact row: per funnel, cohort (grain, start),
    breakdown value and step: entered, converted, pending, dropped, time to
    convert. ``clock``: the gold run's now (epoch micros; None: every window closed)."""
    schema = GOLD["mart_funnel"].arrow_schema()
    rows: dict[str, list] = {name: [] for name in schema.names}
    edges = np.array(TIME_TO_CONVERT_EDGES_SECONDS, np.float64)
    bins = np.append(np.append(-np.inf, edges[1:]), np.inf)  # the first bucket takes anything under a minute
    for funnel in funnels:
        of_funnel = facts.filter(pc.equal(facts.column("funnel"), funnel.name))
        if of_funnel.num_rows == 0:
            continue
        entry_key = pc.binary_join_element_wise(
            of_funnel.column("unit_id"), pc.cast(of_funnel.column("entry_number"), pa.string()), "\x1f"
        )
        first_steps = pc.equal(of_funnel.column("step_number"), 1)
        entries = of_funnel.filter(first_steps)
        keys = entry_key.filter(first_steps)
        ends = entries.column("window_ends_at")
        if clock is None or funnel.window_seconds is None:
            open_ = np.zeros(entries.num_rows, bool)
        else:
            open_ = pc.fill_null(pc.less(pa.scalar(clock, pa.int64()), pc.cast(ends, pa.int64())), False).to_numpy(
                zero_copy_only=False
            )
        n_steps = len(funnel.steps)
        # seconds from entry per (entry, step): NaN where not reached
        seconds = np.full((entries.num_rows, n_steps), np.nan)
        row = pc.index_in(entry_key, value_set=keys).to_numpy(zero_copy_only=False)
        step = of_funnel.column("step_number").to_numpy() - 1
        seconds[row, step] = of_funnel.column("seconds_from_entry").to_numpy()
        for breakdown in (ALL, *funnel.breakdowns):
            values = breakdown_values(entries, breakdown)
            if breakdown != ALL:
                values = _bucketed(values, funnel.breakdown_limit)
            values = np.asarray(values.to_pylist(), dtype=object)
            for grain in COHORT_GRAINS:
                cohort = _cohort_start(entries.column("entry_date"), grain).to_pylist()
                groups: dict[tuple, list[int]] = defaultdict(list)
                for i, key in enumerate(zip(cohort, values)):
                    groups[key].append(i)
                for (start, value), members in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
                    members = np.array(members)
                    entered = len(members)
                    for k in range(n_steps):
                        done = seconds[members, k]
                        converted_mask = ~np.isnan(done)
                        converted = int(converted_mask.sum())
                        pending = int((open_[members] & ~converted_mask).sum())
                        times = np.sort(done[converted_mask])
                        histogram = np.histogram(times, bins=bins)[0] if converted else None
                        rows["funnel"].append(funnel.name)
                        rows["cohort_grain"].append(grain)
                        rows["cohort_start"].append(start)
                        rows["breakdown"].append(breakdown)
                        rows["breakdown_value"].append(value)
                        rows["step_number"].append(k + 1)
                        rows["step_name"].append(funnel.step_label(k + 1))
                        rows["entered"].append(entered)
                        rows["converted"].append(converted)
                        rows["conversion_rate"].append(converted / entered)
                        rows["pending"].append(pending)
                        rows["dropped"].append(entered - converted - pending)
                        rows["median_seconds_to_convert"].append(quantile(times, 0.5) if converted else None)
                        rows["p90_seconds_to_convert"].append(quantile(times, 0.9) if converted else None)
                        rows["time_to_convert_histogram"].append(
                            [int(c) for c in histogram] if histogram is not None else [0] * len(edges)
                        )
    return pa.table(rows, schema=schema)
