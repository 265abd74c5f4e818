"""The funnels of ``schemas.funnels`` on Arrow tables: one shard's silver rows
-> its ``fact_funnel`` rows and compact entries (``funnel_rows``); every
shard's entries -> the ``mart_funnel`` rows (``mart_rows``). What each
order, window, gap and exclusion means: docs/funnels.md.

A shard holds every silver row of its users (``transforms.batch.gold``), so
a user's journey across sessions is whole in it, and an entry's cohort,
breakdown values and step times are decided in one place; the mart is
counted over all shards' entries at the end. Ids become int codes per shard
and records are matched, paired with entries and ordered with numpy, not
per row in Python (BENCHMARKS.md: defined funnels).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.contract import SECOND
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
from transforms.rules.gold import GOLD_INPUTS, user_country

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


# --- a shard's ids as codes ---------------------------------------------------------------------
class _Codes:
    """A shard's session and user ids as int codes whose order is the ids'
    (so the least code is the least id), each table's columns coded once:
    matching, joining and ordering then work on integers."""

    def __init__(self, g: dict[str, pa.Table], tables: dict[str, tuple[str, ...]]):
        """``tables``: per column, the tables whose ids are coded (hashing ids
        is most of the cost: only the tables something reads by code)."""
        self.ids: dict[str, pa.Array] = {}
        self._coded: dict[tuple[str, str], np.ndarray] = {}
        for column in ("session_id", "user_id"):
            # one hash pass over the column of those tables, then the distinct ids ranked
            tables_of = tables.get(column, ())
            chunks = [c for name in tables_of for c in g[name].column(column).chunks]
            encoded = pc.dictionary_encode(pa.concat_arrays(chunks) if chunks else pa.array([], pa.string()))
            order = pc.array_sort_indices(encoded.dictionary).to_numpy()
            rank = np.empty(len(order), np.int64)
            rank[order] = np.arange(len(order))
            self.ids[column] = encoded.dictionary.take(pa.array(order))
            indices = encoded.indices
            codes = np.where(
                pc.is_valid(indices).to_numpy(zero_copy_only=False),
                rank[pc.fill_null(indices, 0).to_numpy(zero_copy_only=False)] if len(rank) else -1,
                -1,
            )
            start = 0
            for name in tables_of:
                end = start + g[name].num_rows
                self._coded[(name, column)] = codes[start:end]
                start = end

    def of(self, table: str, column: str) -> np.ndarray:
        """``column`` (session_id or user_id) of ``g[table]`` as codes; -1 where null."""
        return self._coded[(table, column)]


def _coded_tables(funnels: tuple[Funnel, ...]) -> dict[str, tuple[str, ...]]:
    """Per id column, the tables read by code: every table a condition tests
    (its unit and session), the views and sessions (each session's first touch)."""
    tables: dict[str, set[str]] = {"session_id": {"silver_views", "silver_sessions"}, "user_id": set()}
    for funnel in funnels:
        for condition in _all_conditions(funnel):
            tables["session_id"].add(condition.kind.table)
            tables[_unit_column(funnel)].add(condition.kind.table)
    return {column: tuple(sorted(names)) for column, names in tables.items()}


# --- matching records -------------------------------------------------------------------------
@dataclass
class _Matches:
    """Records matching a step: unit and session codes, time (epoch micros)
    and, when a later step names it as ``parent``, record ids."""

    unit: np.ndarray
    t: np.ndarray
    session: np.ndarray
    id: pa.Array | None = None
    _sorted: _Matches | None = None

    @staticmethod
    def of(parts: list[_Matches]) -> _Matches:
        empty = np.zeros(0, np.int64)
        return _Matches(
            np.concatenate([p.unit for p in parts]) if parts else empty,
            np.concatenate([p.t for p in parts]) if parts else empty,
            np.concatenate([p.session for p in parts]) if parts else empty,
            pa.concat_arrays([p.id for p in parts]) if parts and parts[0].id is not None else None,
        )

    def by_unit_and_time(self) -> _Matches:
        """The same records sorted by (unit, time), as ``_pairs`` reads them (sorted once)."""
        if self._sorted is None:
            order = _order_by_unit_and_time(self.unit, self.t)
            self._sorted = _Matches(self.unit[order], self.t[order], self.session[order])
            self._sorted._sorted = self._sorted
        return self._sorted


@dataclass(frozen=True)
class _UnitTimeKey:
    """(unit code, time) as one int64 that sorts as the pair: ``unit * span +
    (t - low)`` for times in ``[low, low + span)``; ``of`` only when it fits
    in 63 bits (else the callers sort or search the pair)."""

    low: int
    span: int

    @staticmethod
    def of(units: np.ndarray, times: np.ndarray, slack: int = 0) -> _UnitTimeKey | None:
        """The key for these units and times, room for ``slack`` past the last time; None if it does not fit."""
        low, high = int(times.min()), int(times.max())
        key = _UnitTimeKey(low, high - low + 1)
        return key if (int(units.max()) + 1) * key.span + slack < 2**62 else None

    def __call__(self, units: np.ndarray, times: np.ndarray) -> np.ndarray:
        return units * self.span + (times - self.low)


def _order_by_unit_and_time(unit: np.ndarray, t: np.ndarray) -> np.ndarray:
    """argsort by (unit, t): one sort of a combined key when it fits, else two."""
    if not len(t):
        return np.zeros(0, np.int64)
    key = _UnitTimeKey.of(unit, t)
    return np.argsort(key(unit, t), kind="stable") if key else np.lexsort((t, unit))


def _unit_column(funnel: Funnel) -> str:
    return "user_id" if funnel.unit == Unit.USER else "session_id"


class _Shard:
    """A shard's silver rows, their ids as codes, and what funnels share: the
    records each condition selects (before any unit) and each step's matches
    per unit (sorted once), so definitions with common steps pay once."""

    def __init__(self, funnels: tuple[Funnel, ...], g: dict[str, pa.Table]):
        self.g = g
        self.codes = _Codes(g, _coded_tables(funnels))
        self._selected: dict[Condition, tuple[np.ndarray, np.ndarray]] = {}
        self._steps: dict[tuple, _Matches] = {}

    def selected(self, condition: Condition) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the condition's table with a time and its ``where``
        values (not its parent), and their times (epoch micros)."""
        if condition not in self._selected:
            kind = condition.kind
            rows = self.g[kind.table]
            mask = pc.is_valid(rows.column(kind.time)).to_numpy(zero_copy_only=False)
            for column, values in condition.where:
                mask &= pc.fill_null(pc.is_in(rows.column(column), pa.array(values)), False).to_numpy(
                    zero_copy_only=False
                )
            picked = np.flatnonzero(mask)
            self._selected[condition] = picked, micros(rows.column(kind.time).take(pa.array(picked))).to_numpy()
        return self._selected[condition]

    def matches(
        self, funnel: Funnel, conditions: tuple[Condition, ...], found: dict, with_ids: bool = False
    ) -> _Matches:
        """Records matching any of ``conditions`` in ``funnel``'s unit.
        ``found``: the matches of the earlier steps, by name (for
        ``parent``); ``with_ids``: keep the record ids (a later step's
        parent)."""
        if any(c.parent is not None for c in conditions):
            return self._matches(funnel, conditions, found, with_ids)
        key = (conditions, funnel.unit, with_ids)
        if key not in self._steps:
            self._steps[key] = self._matches(funnel, conditions, found, with_ids)
        return self._steps[key]

    def _matches(self, funnel: Funnel, conditions: tuple[Condition, ...], found: dict, with_ids: bool) -> _Matches:
        parts = []
        for condition in conditions:
            kind = condition.kind
            rows = self.g[kind.table]
            picked, t = self.selected(condition)
            unit = self.codes.of(kind.table, _unit_column(funnel))[picked]
            keep = unit >= 0
            if condition.parent is not None:
                # the parent record matched that step, in the same unit
                parents = found[condition.parent]
                parent_keys = rows.column(kind.parent_key).take(pa.array(picked))
                at = pc.fill_null(pc.index_in(parent_keys, value_set=parents.id), -1).to_numpy(zero_copy_only=False)
                if len(parents.unit):
                    keep &= (at >= 0) & (parents.unit[np.maximum(at, 0)] == unit)
                else:  # no parent matched in the shard
                    keep &= False
            kept = picked[keep]
            parts.append(
                _Matches(
                    unit[keep],
                    t[keep],
                    self.codes.of(kind.table, "session_id")[kept],
                    rows.column(SILVER[kind.table].key[0]).take(pa.array(kept)).combine_chunks() if with_ids else None,
                )
            )
        return _Matches.of(parts)


def _pairs(entries: _Entries, matches: _Matches, window_end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (entry, match) of the same unit from the entry to its window's
    end (every order looks no further): entry indexes ascending, and per
    entry its matches in time order (indexes into ``matches``, which is
    sorted by unit and time). A unit's other entries' records are not
    paired, so a user with many entries costs their records once each."""
    if not len(matches.t) or not len(entries.at):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    key = _UnitTimeKey.of(np.concatenate([matches.unit, entries.unit]), matches.t)
    if key:
        # the range of each entry is two searches; times clipped into the key's range
        high = key.low + key.span - 1
        keys = key(matches.unit, matches.t)
        low = np.searchsorted(keys, key(entries.unit, np.clip(entries.at, key.low, high + 1)), "left")
        stop = np.searchsorted(keys, key(entries.unit, np.clip(window_end, key.low - 1, high)), "right")
        counts = np.maximum(stop - low, 0)
    else:
        low = np.searchsorted(matches.unit, entries.unit, "left")
        counts = np.searchsorted(matches.unit, entries.unit, "right") - low
    e = np.repeat(np.arange(len(entries.at)), counts)
    m = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + np.repeat(low, counts)
    return e, m


def _first(n: int, e: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per entry the first ``t`` of its pairs (in time order: the least), ``_NO_TIME`` where none."""
    out = np.full(n, _NO_TIME, np.int64)
    if len(e):
        first = np.ones(len(e), bool)
        first[1:] = e[1:] != e[:-1]
        out[e[first]] = t[first]
    return out


# --- entries ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Entries:
    unit: np.ndarray
    number: np.ndarray
    at: np.ndarray
    session: np.ndarray

    def take(self, rows: np.ndarray) -> _Entries:
        return _Entries(self.unit[rows], self.number[rows], self.at[rows], self.session[rows])


def _entries(openers: _Matches, window: int | None) -> _Entries:
    """Entries from the records that open one: per unit its earliest (ties:
    the least session), and (with a window) the first at or after each
    entry's window has closed; numbered 1, 2, .. per unit."""
    if not len(openers.t):
        empty = np.zeros(0, np.int64)
        return _Entries(empty, empty, empty, empty)
    ordered = openers.by_unit_and_time()
    units, times = ordered.unit, ordered.t
    first = np.ones(len(units), bool)
    first[1:] = units[1:] != units[:-1]
    # an entry's session: the least of the openers at its unit and time (the entry is the first of them)
    tie_start = first.copy()
    tie_start[1:] |= times[1:] != times[:-1]
    starts_of_ties = np.flatnonzero(tie_start)
    least = np.minimum.reduceat(ordered.session, starts_of_ties) if len(starts_of_ties) else ordered.session
    sessions = least[np.cumsum(tie_start) - 1]
    starts = np.flatnonzero(first)
    keep = first.copy()
    if window is not None:
        key = _UnitTimeKey.of(units, times, slack=window)
        if key:
            # every unit at once, one entry further per round: the next opener at or after the
            # current entry's window's end, found on the (unit, time) key
            keys = key(units, times)
            current = starts
            while len(current):
                following = np.searchsorted(keys, key(units[current], times[current] + window), "left")
                inside = following < len(units)
                inside[inside] = units[following[inside]] == units[current[inside]]
                current = following[inside]
                keep[current] = True
        else:
            ends = np.append(starts[1:], len(times))
            for start, end in zip(starts, ends):
                i = start
                while True:  # the next opener at or after this entry's window's end
                    i = start + int(np.searchsorted(times[start:end], times[i] + window, "left"))
                    if i >= end:
                        break
                    keep[i] = True
    chosen = np.flatnonzero(keep)
    index = np.arange(len(chosen))
    unit_start = np.maximum.accumulate(np.where(first[chosen], index, 0))
    return _Entries(units[chosen], index - unit_start + 1, times[chosen], sessions[chosen])


# --- orders -----------------------------------------------------------------------------------
def _sequential(funnel: Funnel, entries: _Entries, steps: list[_Matches], window_end: np.ndarray) -> np.ndarray:
    """Reach time of every step per entry (``_NO_TIME``: not reached), as an
    (entries, steps) array."""
    n = len(entries.at)
    reached = np.full((n, len(steps)), _NO_TIME, np.int64)
    reached[:, 0] = entries.at
    gap = None if funnel.step_gap_seconds is None else int(funnel.step_gap_seconds * SECOND)
    for k in range(1, len(steps)):
        matches = steps[k].by_unit_and_time()
        e, m = _pairs(entries, matches, window_end)
        t = matches.t[m]
        previous = reached[e, k - 1]
        keep = (previous != _NO_TIME) & (t <= window_end[e])
        keep &= t >= previous if funnel.steps[k].after_previous else t >= reached[e, 0]
        if gap is not None:
            keep &= t <= previous + gap
        reached[:, k] = _first(n, e[keep], t[keep])
    return reached


def _strict(funnel: Funnel, entries: _Entries, steps: list[_Matches], window_end: np.ndarray) -> np.ndarray:
    """As ``_sequential``, and the unit's step records after step k-1's must
    read k next: each entry's step records from its entry to its window's
    end, in (time, step) order, collapse into runs of one step (repeats of
    the step last reached stay in its run); run j reaches step j when every
    run before it did, each within ``step_gap`` of the one before."""
    n = len(entries.at)
    reached = np.full((n, len(steps)), _NO_TIME, np.int64)
    entry_at = entries.at
    reached[:, 0] = entry_at
    gap = None if funnel.step_gap_seconds is None else int(funnel.step_gap_seconds * SECOND)
    unit = np.concatenate([s.unit for s in steps])
    t_all = np.concatenate([s.t for s in steps])
    k_all = np.concatenate([np.full(len(s.t), k, np.int64) for k, s in enumerate(steps)])
    order = np.lexsort((k_all, t_all, unit))
    labelled = _Matches(unit[order], t_all[order], k_all[order])  # sorted; session holds the step
    e, m = _pairs(entries, labelled, window_end)  # per entry in (time, step) order
    t, k = labelled.t[m], labelled.session[m]
    # from the entry on (not the entry record itself), up to the window's end
    inside = ((t > entry_at[e]) | ((t == entry_at[e]) & (k > 0))) & (t <= window_end[e])
    e, t, k = e[inside], t[inside], k[inside]
    if not len(e):
        return reached
    first_of_entry = np.ones(len(e), bool)
    first_of_entry[1:] = e[1:] != e[:-1]
    previous_k = np.where(first_of_entry, 0, np.roll(k, 1))
    starts = k != previous_k  # a new run (the entry is step 0's run)
    e, t, k = e[starts], t[starts], k[starts]
    first_of_entry = np.ones(len(e), bool)
    first_of_entry[1:] = e[1:] != e[:-1]
    index = np.arange(len(e))
    run = index - np.maximum.accumulate(np.where(first_of_entry, index, 0)) + 1  # 1, 2, .. per entry
    ok = k == run
    if gap is not None:
        previous_t = np.where(first_of_entry, entry_at[e], np.roll(t, 1))
        ok &= t <= previous_t + gap
    # a run counts while every run before it in its entry did: the first failure ends the entry's walk
    failures = np.cumsum(~ok)
    failed_before = failures - np.maximum.accumulate(np.where(first_of_entry, failures - ~ok, 0))
    valid = ok & (failed_before == 0)
    reached[e[valid], run[valid]] = t[valid]
    return reached


def _any_order(funnel: Funnel, entries: _Entries, steps: list[_Matches], window_end: np.ndarray) -> np.ndarray:
    """Column k: when the entry had reached k+1 distinct steps (``_NO_TIME``: never)."""
    n = len(entries.at)
    first = np.full((n, len(steps)), _NO_TIME, np.int64)
    for k, step in enumerate(steps):
        matches = step.by_unit_and_time()
        e, m = _pairs(entries, matches, window_end)
        t = matches.t[m]
        keep = (t >= entries.at[e]) & (t <= window_end[e])
        first[:, k] = _first(n, e[keep], t[keep])
    return np.sort(first, axis=1)


def _excluded(funnel: Funnel, entries: _Entries, reached: np.ndarray, window_end: np.ndarray, found) -> np.ndarray:
    """Entries with an exclusion record between its from and to steps."""
    out = np.zeros(len(entries.at), bool)
    for exclusion in funnel.exclusions:
        matches = found[exclusion.name].by_unit_and_time()
        e, m = _pairs(entries, matches, window_end)
        t = matches.t[m]
        start = reached[e, exclusion.from_step]
        end = reached[e, exclusion.to_step]
        end = np.where(end == _NO_TIME, window_end[e], end)
        hit = (start != _NO_TIME) & (t >= start) & (t <= end)
        out[e[hit]] = True
    return out


# --- first-touch properties -------------------------------------------------------------------
def first_touch(g: dict[str, pa.Table], codes: _Codes) -> pa.Table:
    """Per session code of the shard: its user and what a breakdown reads
    (platform, device_type, country, the earliest view's landing_page and
    referral, experiments_json); computed once for every funnel."""
    sessions = g["silver_sessions"]
    views = g["silver_views"]
    # each session's earliest view (ties: the least view_id): sorted by session code and time as
    # numbers, then the few rows tied on both by view_id (sorting every id as text costs more)
    session = codes.of("silver_views", "session_id")
    has_time = pc.is_valid(views.column("view_timestamp")).to_numpy(zero_copy_only=False)
    at = pc.fill_null(micros(views.column("view_timestamp")), 0).to_numpy(zero_copy_only=False)
    if not has_time.all():  # a view without a time sorts last in its session
        at = np.where(has_time, at, at[has_time].max(initial=0) + 1)
    order = _order_by_unit_and_time(session, at)
    session_of, at_of = session[order], at[order]
    tied = np.zeros(len(order), bool)
    tied[1:] = (session_of[1:] == session_of[:-1]) & (at_of[1:] == at_of[:-1])
    if tied.any():
        tied[:-1] |= tied[1:]  # each run of ties, its first row too
        rows = np.flatnonzero(tied)
        ids = views.column("view_id").take(pa.array(order[rows]))
        by_id = pc.sort_indices(
            pa.table({"s": session_of[rows], "t": at_of[rows], "id": ids}),
            sort_keys=[("s", "ascending"), ("t", "ascending"), ("id", "ascending")],
        ).to_numpy()
        order[rows] = order[rows][by_id]
    first = np.ones(len(order), bool)
    first[1:] = session_of[1:] != session_of[:-1]
    first &= has_time[order] & (session_of >= 0)
    # row i: session code i (null properties for a session the shard has no row of)
    n = len(codes.ids["session_id"])
    session_codes = codes.of("silver_sessions", "session_id")
    has = session_codes >= 0
    session_row = np.full(n, -1, np.int64)
    session_row[session_codes[has]] = np.flatnonzero(has)
    view_row = np.full(n, -1, np.int64)
    view_row[session_of[first]] = order[first]
    no_session = session_row < 0
    session_rows = pa.array(session_row, mask=no_session)
    per_session = sessions.select(["user_id", "platform", "device_type", "experiments_json"]).take(session_rows)
    country = user_country(sessions, g["silver_users"]).take(session_rows)
    first_views = views.select(["landing_page", "is_referral"]).take(
        pa.array(view_row, mask=no_session | (view_row < 0))
    )
    referral = first_views.column("is_referral")
    return pa.table(
        {
            "user_id": per_session.column("user_id"),
            **{c: per_session.column(c) for c in ("platform", "device_type")},
            "country": country,
            "landing_page": first_views.column("landing_page"),
            "referral": pc.if_else(referral, pa.scalar("referral"), pa.scalar("direct")),
            "experiments_json": per_session.column("experiments_json"),
        }
    )


# --- the fact -----------------------------------------------------------------------------------
def funnel_rows(
    funnels: tuple[Funnel, ...], g: dict[str, pa.Table], clock: int | None = None
) -> tuple[pa.Table, dict[str, pa.Table]]:
    """A shard's ``fact_funnel`` rows (per funnel and unit entry: the steps
    it reached, as lists), and per funnel what ``mart_rows`` counts of its entries: one row
    per entry (``entry_date``; ``open``: its window is open at ``clock``;
    ``s1``.. the seconds from entry to each step, NaN where not reached;
    ``b1``.. its raw value of each breakdown), a fraction of the fact's size."""
    schema = GOLD["fact_funnel"].arrow_schema()
    if not funnels:
        return schema.empty_table(), {}
    shard = _Shard(funnels, g)
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
        + [(f"s{k}", pa.float64()) for k in range(1, len(funnel.steps) + 1)]
        + [(f"b{i}", pa.string()) for i in range(1, len(funnel.breakdowns) + 1)]
    )


_TIMESTAMP = pa.timestamp("us", tz="UTC")


def _fact_of(
    funnel: Funnel, shard: _Shard, touch: pa.Table, schema: pa.Schema, clock: int | None
) -> tuple[pa.Table, pa.Table]:
    codes = shard.codes
    found: dict[str, _Matches] = {}
    steps = []
    parents = {c.parent for step in funnel.steps for c in step.any_of}
    for step in funnel.steps:
        found[step.name] = shard.matches(funnel, step.any_of, found, with_ids=step.name in parents)
        steps.append(found[step.name])
    for exclusion in funnel.exclusions:
        found[exclusion.name] = shard.matches(funnel, exclusion.any_of, found)
    window = None if funnel.window_seconds is None else int(funnel.window_seconds * SECOND)
    openers = _Matches.of(steps) if funnel.order == Order.ANY else steps[0]
    entries = _entries(openers, window)
    n = len(entries.at)
    if n == 0:
        return schema.empty_table(), _entries_schema(funnel).empty_table()
    window_end = np.full(n, _NO_TIME, np.int64) if window is None else entries.at + window
    compute = {Order.SEQUENTIAL: _sequential, Order.STRICT: _strict, Order.ANY: _any_order}[funnel.order]
    reached = compute(funnel, entries, steps, window_end)
    if funnel.exclusions:
        kept = np.flatnonzero(~_excluded(funnel, entries, reached, window_end, found))
        entries, reached, window_end = entries.take(kept), reached[kept], window_end[kept]

    # per entry its first touch and ids; then one block of rows per step
    entry_at = entries.at
    properties = touch.take(pa.array(entries.session))
    unit_ids = codes.ids[_unit_column(funnel)].take(pa.array(entries.unit))
    if funnel.unit == Unit.USER:
        properties = properties.set_column(0, "user_id", unit_ids)
    session_ids = codes.ids["session_id"].take(pa.array(entries.session))
    entry_dates = pc.cast(pa.array(entry_at, _TIMESTAMP), pa.date32())
    open_ = np.zeros(len(entry_at), bool) if clock is None or window is None else clock < window_end
    mart_entries = pa.Table.from_arrays(
        [entry_dates, pa.array(open_)]
        + [
            pa.array(np.where(reached[:, k] != _NO_TIME, (reached[:, k] - entry_at) / SECOND, np.nan))
            for k in range(len(funnel.steps))
        ]
        + [breakdown_values(properties, b) for b in funnel.breakdowns],
        schema=_entries_schema(funnel),
    )
    # one row per entry; its reached steps (always the first ones) as lists
    done = reached != _NO_TIME
    steps_reached = done.sum(axis=1)
    offsets = pa.array(np.concatenate(([0], np.cumsum(steps_reached))).astype(np.int32))
    times = reached[done]  # row-major: each entry's reached steps in order
    to_step = (times - np.repeat(entry_at, steps_reached)) / SECOND
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
        **dict(zip(properties.column_names, properties.columns)),
    }
    fact = pa.Table.from_arrays([pc.cast(columns[c], schema.field(c).type) for c in schema.names], schema=schema)
    return fact, mart_entries


# --- the mart ------------------------------------------------------------------------------------
def _cohort_start(entry_date: pa.Array, grain: str) -> pa.Array:
    if grain == "day":
        return entry_date
    return pc.floor_temporal(entry_date, unit=grain, week_starts_monday=True)


def breakdown_values(entries: pa.Table, breakdown: str) -> pa.Array:
    """Each entry's value of ``breakdown`` as text (``NONE`` when it has none)."""
    if breakdown.startswith(EXPERIMENT_PREFIX):
        name = breakdown[len(EXPERIMENT_PREFIX) :]
        # few distinct assignments: each parsed once
        encoded = _dictionary(entries.column("experiments_json"))
        variants = []
        for raw in encoded.dictionary.to_pylist():
            try:
                variant = json.loads(raw).get(name)
            except (ValueError, AttributeError):
                variant = None
            variants.append(NONE if variant is None else str(variant))
        return pc.fill_null(pc.take(pa.array(variants, pa.string()), encoded.indices), NONE)
    return pc.fill_null(pc.cast(entries.column(breakdown), pa.string()), NONE)


def _dictionary(values) -> pa.DictionaryArray:
    """``values`` (an array or a chunked one) dictionary-encoded as one array."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return pc.dictionary_encode(values)


def _bucketed(values, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Breakdown values (no nulls) as (names, a code per entry): the
    ``limit`` values with the most entries (ties: by value) kept, the rest
    ``OTHER``."""
    encoded = _dictionary(values)
    names = np.asarray(encoded.dictionary.to_pylist(), dtype=object)
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    if len(names) <= limit:
        return names, codes
    counts = np.bincount(codes, minlength=len(names))
    top = sorted(range(len(names)), key=lambda i: (-counts[i], names[i]))[:limit]
    recode = np.full(len(names), limit, np.int64)
    recode[top] = np.arange(limit)
    return np.append(names[top], OTHER).astype(object), recode[codes]


def _group_quantiles(group: np.ndarray, values: np.ndarray, groups: int, qs: tuple[float, ...]) -> list[np.ndarray]:
    """``quantile`` of ``values`` (sorted ascending) per group id for each of
    ``qs`` (NaN for a group without values), vectorized: a stable sort by
    group keeps each group's values in order."""
    out = [np.full(groups, np.nan) for _ in qs]
    if not len(values):
        return out
    # small integer keys: numpy's stable sort is a radix sort, linear
    values = values[np.argsort(group.astype(np.int16 if groups < 2**15 else np.int64), kind="stable")]
    counts = np.bincount(group, minlength=groups)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    has = counts > 0
    for result, q in zip(out, qs):
        position = (counts[has] - 1) * q
        low = np.floor(position).astype(np.int64)
        high = np.minimum(low + 1, counts[has] - 1)
        lo, hi = values[starts[has] + low], values[starts[has] + high]
        result[has] = lo + (hi - lo) * (position - low)
    return out


def _dense_codes(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(keys, return_inverse=True)`` for keys in a narrow range
    (day and value), by counting instead of sorting."""
    if not len(keys):
        return keys, keys
    low = keys.min()
    present = np.bincount(keys - low) > 0
    index = np.cumsum(present) - 1
    return np.flatnonzero(present) + low, index[keys - low]


def mart_rows(funnels: tuple[Funnel, ...], entries: dict[str, list[pa.Table]]) -> pa.Table:
    """``mart_funnel`` from every shard's entries (``funnel_rows``): per
    funnel, cohort (grain, start), breakdown value and step: entered,
    converted, pending, dropped, time to convert."""
    schema = GOLD["mart_funnel"].arrow_schema()
    columns: dict[str, list] = {name: [] for name in schema.names}
    buckets = len(TIME_TO_CONVERT_EDGES_SECONDS)
    inner_edges = np.array(TIME_TO_CONVERT_EDGES_SECONDS[1:], np.float64)  # the first bucket takes all under 60 s
    for funnel in funnels:
        parts = [t for t in entries.get(funnel.name, []) if t.num_rows]
        if not parts:
            continue
        of_funnel = pa.concat_tables(parts)
        n_steps = len(funnel.steps)
        open_ = of_funnel.column("open").to_numpy(zero_copy_only=False)
        seconds = np.stack([of_funnel.column(f"s{k}").to_numpy() for k in range(1, n_steps + 1)], axis=1)
        reached = ~np.isnan(seconds)
        bucket = np.searchsorted(inner_edges, np.nan_to_num(seconds), side="right")
        step_names = np.array([funnel.step_label(k) for k in range(1, n_steps + 1)], dtype=object)
        # per step: the entries that reached it, by their time to it (each grouping below keeps this
        # order), and those times
        by_time, times = [], []
        for k in range(n_steps):
            rows = np.flatnonzero(reached[:, k])
            by_time.append(rows[np.argsort(seconds[rows, k], kind="stable")])
            times.append(seconds[by_time[k], k])
        day = pc.cast(of_funnel.column("entry_date"), pa.int32()).to_numpy(zero_copy_only=False).astype(np.int64)
        days = np.unique(day)
        # each distinct day's week and month (as days since the epoch)
        starts_of = {
            grain: pc.cast(
                _cohort_start(pa.array(days.astype(np.int32), pa.int32()).cast(pa.date32()), grain), pa.int32()
            )
            .to_numpy(zero_copy_only=False)
            .astype(np.int64)
            for grain in COHORT_GRAINS
        }
        for number, breakdown in enumerate((ALL, *funnel.breakdowns)):
            if breakdown == ALL:
                names, codes = np.array([ALL], dtype=object), np.zeros(of_funnel.num_rows, np.int64)
            else:
                names, codes = _bucketed(of_funnel.column(f"b{number}"), funnel.breakdown_limit)
            width = max(len(names), 1)
            # counted once per (day, value, step); weeks and months sum their days
            day_keys, by_day = _dense_codes(day * width + codes)
            days_n = len(day_keys)
            by_day_by_time = [by_day[rows] for rows in by_time]
            cell = by_day[:, None] * n_steps + np.arange(n_steps)
            entered_d = np.bincount(by_day, minlength=days_n)
            converted_d = np.bincount(cell[reached], minlength=days_n * n_steps).reshape(days_n, n_steps)
            pending_d = np.bincount(cell[open_[:, None] & ~reached], minlength=days_n * n_steps).reshape(
                days_n, n_steps
            )
            histogram_d = np.bincount((cell * buckets + bucket)[reached], minlength=days_n * n_steps * buckets).reshape(
                days_n, n_steps, buckets
            )
            day_of_key, value_of_key = day_keys // width, day_keys % width
            for grain in COHORT_GRAINS:
                start_of_key = starts_of[grain][np.searchsorted(days, day_of_key)]
                keys, into = np.unique(start_of_key * width + value_of_key, return_inverse=True)
                into = into.reshape(-1)
                g = len(keys)
                entered = np.zeros(g, np.int64)
                converted, pending = np.zeros((g, n_steps), np.int64), np.zeros((g, n_steps), np.int64)
                histogram = np.zeros((g, n_steps, buckets), np.int64)
                np.add.at(entered, into, entered_d)
                np.add.at(converted, into, converted_d)
                np.add.at(pending, into, pending_d)
                np.add.at(histogram, into, histogram_d)
                median, p90 = np.full((g, n_steps), np.nan), np.full((g, n_steps), np.nan)
                for k in range(n_steps):
                    median[:, k], p90[:, k] = _group_quantiles(into[by_day_by_time[k]], times[k], g, (0.5, 0.9))
                size = g * n_steps
                entered = np.repeat(entered, n_steps)
                converted, pending = converted.reshape(-1), pending.reshape(-1)
                columns["funnel"].append(np.full(size, funnel.name, object))
                columns["cohort_grain"].append(np.full(size, grain, object))
                columns["cohort_start"].append(np.repeat(keys // width, n_steps).astype(np.int32))
                columns["breakdown"].append(np.full(size, breakdown, object))
                columns["breakdown_value"].append(np.repeat(names[keys % width], n_steps))
                columns["step_number"].append(np.tile(np.arange(1, n_steps + 1), g))
                columns["step_name"].append(np.tile(step_names, g))
                columns["entered"].append(entered)
                columns["converted"].append(converted)
                columns["conversion_rate"].append(converted / entered)
                columns["pending"].append(pending)
                columns["dropped"].append(entered - converted - pending)
                columns["median_seconds_to_convert"].append(median.reshape(-1))
                columns["p90_seconds_to_convert"].append(p90.reshape(-1))
                columns["time_to_convert_histogram"].append(histogram.reshape(size, buckets))
    if not columns["funnel"]:
        return schema.empty_table()
    arrays = []
    for name in schema.names:
        parts = columns[name]
        field_type = schema.field(name).type
        if name == "time_to_convert_histogram":
            flat = np.concatenate(parts)
            offsets = np.arange(0, flat.size + 1, buckets, dtype=np.int32)
            arrays.append(pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat.reshape(-1), pa.int64())))
        elif name == "cohort_start":
            arrays.append(pa.array(np.concatenate(parts), pa.int32()).cast(pa.date32()))
        elif name in ("median_seconds_to_convert", "p90_seconds_to_convert"):
            values = np.concatenate(parts)
            arrays.append(pa.array(values, field_type, mask=np.isnan(values)))
        else:
            arrays.append(pa.array(np.concatenate(parts), field_type))
    return pa.Table.from_arrays([a.cast(schema.field(n).type) for a, n in zip(arrays, schema.names)], schema=schema)
