"""A shard's ``fact_funnel`` rows: per funnel and unit entry, the steps it
reached and when, with its first-touch values; and per funnel the compact
entries ``mart.mart_rows`` counts."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.contract import SECOND
from schemas.funnels import BreaksOn, Count, Funnel, Order, Unit
from schemas.tables import GOLD
from transforms.rules.defined_funnels import any_order, sequential, strict, units
from transforms.rules.defined_funnels.codes import unit_column
from transforms.rules.defined_funnels.entries import entries as entries_of
from transforms.rules.defined_funnels.exclusions import excluded
from transforms.rules.defined_funnels.first_touch import first_touch
from transforms.rules.defined_funnels.mart import breakdown_values
from transforms.rules.defined_funnels.records import NO_TIME, Matches
from transforms.rules.defined_funnels.shard import Shard
from transforms.rules.defined_funnels.steps import StepRecords

# The fact's first-touch columns (what a breakdown reads).
BREAKDOWN_COLUMNS = ("platform", "device_type", "country", "landing_page", "referral", "experiments_json")


def funnel_rows(
    funnels: tuple[Funnel, ...], g: dict[str, pa.Table], clock: int | None = None
) -> tuple[pa.Table, dict[str, pa.Table]]:
    """A shard's ``fact_funnel`` rows (per funnel and unit entry: the steps
    it reached, as lists), and per funnel what ``mart_rows`` counts of its entries: one row
    per entry (``entry_date``; ``open``: its window is open at ``clock``;
    ``s1``.. the seconds from entry to each step and ``p1``.. from the step
    before, NaN where not reached; ``b1``.. its raw value of each breakdown;
    with ``count: units``, ``in_week`` and ``in_month``: whether that cohort
    counts it), a fraction of the fact's size."""
    schema = GOLD["fact_funnel"].arrow_schema()
    if not funnels:
        return schema.empty_table(), {}
    shard = Shard(funnels, g)
    touch = first_touch(g, shard.codes)
    facts, entries = [], {}
    for funnel in funnels:
        fact, entries[funnel.name] = _fact_of(funnel, shard, touch, schema, clock)
        if fact.num_rows:
            facts.append(fact)
    return (pa.concat_tables(facts) if facts else schema.empty_table()), entries


def fact_rows(funnels: tuple[Funnel, ...], g: dict[str, pa.Table]) -> pa.Table:
    """A shard's ``fact_funnel`` rows."""
    return funnel_rows(funnels, g)[0]


def _entries_schema(funnel: Funnel) -> pa.Schema:
    return pa.schema(
        [("entry_date", pa.date32()), ("open", pa.bool_())]
        + [(f"{prefix}{k}", pa.float64()) for prefix in ("s", "p") for k in range(1, len(funnel.steps) + 1)]
        + [(f"b{i}", pa.string()) for i in range(1, len(funnel.breakdowns) + 1)]
        + ([("in_month", pa.bool_()), ("in_week", pa.bool_())] if funnel.count == Count.UNITS else [])
    )


_TIMESTAMP = pa.timestamp("us", tz="UTC")


def _fact_of(
    funnel: Funnel, shard: Shard, touch: pa.Table, schema: pa.Schema, clock: int | None
) -> tuple[pa.Table, pa.Table]:
    codes = shard.codes
    found: dict[str, Matches] = {}
    steps = []
    parents = {c.parent for step in funnel.steps for c in step.any_of}
    for step in funnel.steps:
        found[step.name] = shard.matches(funnel, step.any_of, found, with_ids=step.name in parents)
        steps.append(found[step.name])
    for exclusion in funnel.exclusions:
        found[exclusion.name] = shard.matches(funnel, exclusion.any_of, found)
    window = None if funnel.window_seconds is None else int(funnel.window_seconds * SECOND)
    openers = Matches.of(steps) if funnel.order == Order.ANY else steps[0]
    by_unit = funnel.count == Count.UNITS
    entries = units.tries(openers) if by_unit else entries_of(openers, window)
    n = len(entries.at)
    if n == 0:
        return schema.empty_table(), _entries_schema(funnel).empty_table()
    window_end = np.full(n, NO_TIME, np.int64) if window is None else entries.at + window
    records = StepRecords(funnel, steps)
    if funnel.order == Order.STRICT:
        every = (
            shard.every_record(funnel).by_unit_and_time() if funnel.strict_breaks_on == BreaksOn.ANY_RECORD else None
        )
        reached = strict.reach(funnel, entries, steps, records, window_end, every)
    else:
        compute = any_order.reach if funnel.order == Order.ANY else sequential.reach
        reached = compute(funnel, entries, steps, records, window_end)
    if funnel.exclusions:
        kept = np.flatnonzero(~excluded(funnel, entries, reached, window_end, found, records))
        entries, reached, window_end = entries.take(kept), reached[kept], window_end[kept]
    counted: dict[str, np.ndarray] = {}
    if by_unit:
        steps_reached = (reached != NO_TIME).sum(axis=1)
        entries, kept = units.best_per_day(entries, steps_reached)
        reached, window_end = reached[kept], window_end[kept]
        counted = units.counted_in(entries, steps_reached[kept])

    # per entry its first touch and ids
    entry_at = entries.at
    properties = touch.take(pa.array(entries.session))
    unit_ids = codes.ids[unit_column(funnel)].take(pa.array(entries.unit))
    if funnel.unit == Unit.USER:
        properties = properties.set_column(0, "user_id", unit_ids)
    session_ids = codes.ids["session_id"].take(pa.array(entries.session))
    entry_dates = pc.cast(pa.array(entry_at, _TIMESTAMP), pa.date32())
    # the window holds its end: a record at that instant still counts, so the entry is pending then
    open_ = np.zeros(len(entry_at), bool) if clock is None or window is None else clock <= window_end
    # each entry's reached steps (always the first ones), flat in entry order
    done = reached != NO_TIME
    steps_reached = done.sum(axis=1)
    times = reached[done]
    starts = np.cumsum(steps_reached) - steps_reached  # each entry's first element
    to_step = (times - np.repeat(entry_at, steps_reached)) / SECOND
    from_previous = np.empty(len(times))
    from_previous[1:] = (times[1:] - times[:-1]) / SECOND
    from_previous[starts] = 0.0  # the entry's step: nothing before it
    # per step a column (NaN: not reached): from the entry, and from the step before
    columns_of: dict[str, list[np.ndarray]] = {"s": [], "p": []}
    for k in range(len(funnel.steps)):
        at, since = reached[:, k], reached[:, max(k - 1, 0)]
        columns_of["s"].append(np.where(done[:, k], (at - entry_at) / SECOND, np.nan))
        columns_of["p"].append(np.where(done[:, k], (at - since) / SECOND, np.nan))
    mart_entries = pa.Table.from_arrays(
        [entry_dates, pa.array(open_)]
        + [pa.array(column) for column in columns_of["s"]]
        + [pa.array(column) for column in columns_of["p"]]
        + [breakdown_values(properties, b) for b in funnel.breakdowns]
        + [pa.array(counted[grain]) for grain in sorted(counted)],
        schema=_entries_schema(funnel),
    )
    # one row per entry; its reached steps (always the first ones) as lists
    offsets = pa.array(np.concatenate(([0], np.cumsum(steps_reached))).astype(np.int32))
    columns = {
        "funnel": pa.repeat(pa.scalar(funnel.name), len(entry_at)),
        "unit": pa.repeat(pa.scalar(str(funnel.unit)), len(entry_at)),
        "unit_id": unit_ids,
        "entry_number": pa.array(entries.number),
        "session_id": session_ids,
        "entry_at": pa.array(entry_at, _TIMESTAMP),
        "entry_date": entry_dates,
        "window_ends_at": pa.nulls(len(entry_at), _TIMESTAMP) if window is None else pa.array(window_end, _TIMESTAMP),
        "steps_reached": pa.array(steps_reached.astype(np.int64)),
        "completed": pa.array(steps_reached == len(funnel.steps)),
        "reached_at": pa.ListArray.from_arrays(offsets, pa.array(times, _TIMESTAMP)),
        "seconds_to_step": pa.ListArray.from_arrays(offsets, pa.array(to_step)),
        "seconds_from_previous": pa.ListArray.from_arrays(offsets, pa.array(from_previous)),
        **dict(zip(properties.column_names, properties.columns)),
    }
    fact = pa.Table.from_arrays([pc.cast(columns[c], schema.field(c).type) for c in schema.names], schema=schema)
    return fact, mart_entries
