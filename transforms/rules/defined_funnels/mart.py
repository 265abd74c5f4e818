"""``mart_funnel`` from every shard's entries: per funnel, cohort (day,
week from Monday, month), breakdown value and step, the entries, how many
converted, are pending or dropped, and the time to convert."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.funnels import ALL, EXPERIMENT_PREFIX, NONE, OTHER, Funnel
from schemas.tables import GOLD, TIME_TO_CONVERT_EDGES_SECONDS

COHORT_GRAINS = ("day", "week", "month")


def cohort_start(entry_date: pa.Array, grain: str) -> pa.Array:
    """The first day of each entry date's cohort of ``grain`` (day, week from Monday, month)."""
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


# The two durations the mart summarises per step: from the entry, and from the previous step.
DURATIONS = (
    ("s", "seconds_to_convert", "time_to_convert_histogram"),
    ("p", "seconds_from_previous", "time_from_previous_histogram"),
)
_HISTOGRAMS = tuple(histogram for _, _, histogram in DURATIONS)
_QUANTILES = tuple(f"{q}_{name}" for _, name, _ in DURATIONS for q in ("median", "p90"))
_BUCKETS = len(TIME_TO_CONVERT_EDGES_SECONDS)
_INNER_EDGES = np.array(TIME_TO_CONVERT_EDGES_SECONDS[1:], np.float64)  # the first bucket takes all under 60 s


class _Durations:
    """One duration of a funnel's entries, per step: the entries that reached
    it (``rows``, in entry order) with their histogram bucket, and the same
    entries sorted by the duration (``by_time``, ``times``): each grouping
    below keeps that order for its quantiles."""

    def __init__(self, columns: list[np.ndarray], like: _Durations | None = None):
        """``columns``: per step, each entry's seconds (NaN: not reached). ``like``: another duration whose
        steps this one's equal where their columns are the same object (the second step's time from the
        step before is its time from the entry): their quantiles are taken from it."""
        self.rows, self.bucket, self.by_time, self.times = [], [], [], []
        self.zero: list[bool] = []  # the step's seconds are all 0 (the entry's step)
        self.like = {k: like for k, column in enumerate(columns) if like is not None and column is like.columns[k]}
        self.columns = columns
        for seconds in columns:
            rows = np.flatnonzero(~np.isnan(seconds))
            values = seconds[rows]
            self.rows.append(rows)
            self.bucket.append(np.searchsorted(_INNER_EDGES, values, side="right"))
            self.zero.append(not (values != 0).any())
            if not self.zero[-1]:
                order = np.argsort(values, kind="stable")
                rows, values = rows[order], values[order]
            self.by_time.append(rows)
            self.times.append(values)

    def quantiles(self, group: np.ndarray, groups: int, known: dict) -> tuple[np.ndarray, np.ndarray]:
        """Median and p90 per (group, step); ``group``: each entry's (-1: not counted). The steps left to
        sort go in one pass, (step, group) as one group id; a step of zeros is 0 where it has values.
        ``known``: results per (duration, group array) already computed, which ``like`` steps read."""
        steps, every = len(self.times), group.min(initial=0) >= 0
        median, p90 = np.full((groups, steps), np.nan), np.full((groups, steps), np.nan)
        ids, values, sorted_steps = [], [], []
        for k, rows in enumerate(self.by_time):
            of, times = group[rows], self.times[k]
            if not every:
                of, times = of[of >= 0], times[of >= 0]
            if k in self.like:
                median[:, k], p90[:, k] = (q[:, k] for q in known[id(self.like[k])])
            elif self.zero[k]:
                has = np.bincount(of, minlength=groups) > 0
                median[has, k] = p90[has, k] = 0.0
            else:
                ids.append(of + len(sorted_steps) * groups)
                values.append(times)
                sorted_steps.append(k)
        if sorted_steps:
            found = _group_quantiles(
                np.concatenate(ids), np.concatenate(values), len(sorted_steps) * groups, (0.5, 0.9)
            )
            for out, q in zip((median, p90), found):
                out[:, sorted_steps] = q.reshape(len(sorted_steps), groups).T
        known[id(self)] = (median, p90)
        return median, p90


def _count(funnel: Funnel, of_funnel: pa.Table, columns: dict[str, list]) -> None:
    """Appends ``funnel``'s mart rows (every grain, breakdown and step) to ``columns``."""
    n_steps = len(funnel.steps)
    open_ = of_funnel.column("open").to_numpy(zero_copy_only=False)
    # the second step's time from the step before is its time from the entry: one column read for both
    columns_of = {
        prefix: [of_funnel.column(f"{prefix}{k}").to_numpy() for k in range(1, n_steps + 1)] for prefix in "sp"
    }
    columns_of["p"][1] = columns_of["s"][1]
    durations: dict[str, _Durations] = {"s": _Durations(columns_of["s"])}
    durations["p"] = _Durations(columns_of["p"], like=durations["s"])
    waiting = [np.flatnonzero(open_ & np.isnan(of_funnel.column(f"s{k}").to_numpy())) for k in range(1, n_steps + 1)]
    step_names = np.array([funnel.step_label(k) for k in range(1, n_steps + 1)], dtype=object)
    day = pc.cast(of_funnel.column("entry_date"), pa.int32()).to_numpy(zero_copy_only=False).astype(np.int64)
    days = np.unique(day)
    # each distinct day's week and month (as days since the epoch)
    starts_of = {
        grain: pc.cast(cohort_start(pa.array(days.astype(np.int32), pa.int32()).cast(pa.date32()), grain), pa.int32())
        .to_numpy(zero_copy_only=False)
        .astype(np.int64)
        for grain in COHORT_GRAINS
    }
    counted = {
        grain: of_funnel.column(f"in_{grain}").to_numpy(zero_copy_only=False)
        if f"in_{grain}" in of_funnel.column_names
        else None
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
        day_of_key, value_of_key = day_keys // width, day_keys % width
        by_mask: dict[int, dict] = {}
        for grain in COHORT_GRAINS:
            rows = counted[grain]
            if id(rows) not in by_mask:
                by_mask[id(rows)] = _by_day(rows, by_day, days_n, waiting, durations)
            of_day = by_mask[id(rows)]
            start_of_key = starts_of[grain][np.searchsorted(days, day_of_key)]
            keys, into = np.unique(start_of_key * width + value_of_key, return_inverse=True)
            into = into.reshape(-1)
            g = len(keys)
            entered = np.zeros(g, np.int64)
            converted, pending = np.zeros((g, n_steps), np.int64), np.zeros((g, n_steps), np.int64)
            np.add.at(entered, into, of_day["entered"])
            np.add.at(converted, into, of_day["converted"])
            np.add.at(pending, into, of_day["pending"])
            size = g * n_steps
            group = into[by_day] if rows is None else np.where(rows, into[by_day], -1)
            known: dict = {}
            for prefix, name, histogram_column in DURATIONS:
                histogram = np.zeros((g, n_steps, _BUCKETS), np.int64)
                np.add.at(histogram, into, of_day[prefix])
                median, p90 = durations[prefix].quantiles(group, g, known)
                columns[f"median_{name}"].append(median.reshape(-1))
                columns[f"p90_{name}"].append(p90.reshape(-1))
                columns[histogram_column].append(histogram.reshape(size, _BUCKETS))
            shown = entered > 0  # a week or month whose units' best tries are all on other values
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
            columns["conversion_rate"].append(converted / np.maximum(entered, 1))
            columns["pending"].append(pending)
            columns["dropped"].append(entered - converted - pending)
            columns["_shown"].append(np.repeat(shown, n_steps))


def _by_day(rows, by_day: np.ndarray, days_n: int, waiting: list[np.ndarray], durations: dict) -> dict:
    """Per (day, value) of the ``rows`` counted (None: all): entered, and per step converted, pending
    (``waiting``: per step, the open entries that have not reached it) and each duration's histogram."""
    n_steps = len(waiting)
    out = {
        "entered": np.bincount(by_day if rows is None else by_day[rows], minlength=days_n),
        "converted": np.zeros((days_n, n_steps), np.int64),
        "pending": np.zeros((days_n, n_steps), np.int64),
        **{prefix: np.zeros((days_n, n_steps, _BUCKETS), np.int64) for prefix in durations},
    }
    for k in range(n_steps):
        pending = waiting[k] if rows is None else waiting[k][rows[waiting[k]]]
        out["pending"][:, k] = np.bincount(by_day[pending], minlength=days_n)
        reached = durations["s"].rows[k]  # the same entries for every duration
        counted = None if rows is None else rows[reached]
        day = by_day[reached] if counted is None else by_day[reached[counted]]
        out["converted"][:, k] = np.bincount(day, minlength=days_n)
        for prefix, d in durations.items():
            bucket = d.bucket[k] if counted is None else d.bucket[k][counted]
            out[prefix][:, k] = np.bincount(day * _BUCKETS + bucket, minlength=days_n * _BUCKETS).reshape(
                days_n, _BUCKETS
            )
    return out


def mart_rows(funnels: tuple[Funnel, ...], entries: dict[str, list[pa.Table]]) -> pa.Table:
    """``mart_funnel`` from every shard's entries (``funnel_rows``): per
    funnel, cohort (grain, start), breakdown value and step: entered,
    converted, pending, dropped, time to convert and from the previous step.
    A grain counts the entries its column ``in_<grain>`` marks (``count:
    units``: each unit's best in the week or month), else every one."""
    schema = GOLD["mart_funnel"].arrow_schema()
    columns: dict[str, list] = {name: [] for name in (*schema.names, "_shown")}
    for funnel in funnels:
        parts = [t for t in entries.get(funnel.name, []) if t.num_rows]
        if parts:
            _count(funnel, pa.concat_tables(parts), columns)
    if not columns["funnel"]:
        return schema.empty_table()
    arrays = []
    for name in schema.names:
        parts = columns[name]
        field_type = schema.field(name).type
        if name in _HISTOGRAMS:
            flat = np.concatenate(parts)
            offsets = np.arange(0, flat.size + 1, _BUCKETS, dtype=np.int32)
            arrays.append(pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat.reshape(-1), pa.int64())))
        elif name == "cohort_start":
            arrays.append(pa.array(np.concatenate(parts), pa.int32()).cast(pa.date32()))
        elif name in _QUANTILES:
            values = np.concatenate(parts)
            arrays.append(pa.array(values, field_type, mask=np.isnan(values)))
        else:
            arrays.append(pa.array(np.concatenate(parts), field_type))
    mart = pa.Table.from_arrays([a.cast(schema.field(n).type) for a, n in zip(arrays, schema.names)], schema=schema)
    shown = np.concatenate(columns["_shown"])
    return mart if shown.all() else mart.filter(pa.array(shown))
