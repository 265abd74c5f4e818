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
    """Seconds per entry and step (NaN: not reached) of one duration, sorted
    once per step: each grouping below keeps that order for its quantiles."""

    def __init__(self, seconds: np.ndarray):
        reached = ~np.isnan(seconds)
        self.bucket = np.searchsorted(_INNER_EDGES, np.nan_to_num(seconds), side="right")
        self.by_time, self.times = [], []
        for k in range(seconds.shape[1]):
            rows = np.flatnonzero(reached[:, k])
            self.by_time.append(rows[np.argsort(seconds[rows, k], kind="stable")])
            self.times.append(seconds[self.by_time[k], k])

    def histogram(self, cell: np.ndarray, reached: np.ndarray, cells: int) -> np.ndarray:
        """Reached entries per (cell, bucket)."""
        return np.bincount((cell * _BUCKETS + self.bucket)[reached], minlength=cells * _BUCKETS).reshape(
            cells, _BUCKETS
        )

    def quantiles(self, group: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray]:
        """Median and p90 per (group, step); ``group``: each entry's (-1: not counted)."""
        median, p90 = np.full((groups, len(self.times)), np.nan), np.full((groups, len(self.times)), np.nan)
        for k, times in enumerate(self.times):
            of = group[self.by_time[k]]
            counted = of >= 0
            median[:, k], p90[:, k] = _group_quantiles(of[counted], times[counted], groups, (0.5, 0.9))
        return median, p90


def _count(funnel: Funnel, of_funnel: pa.Table, columns: dict[str, list]) -> None:
    """Appends ``funnel``'s mart rows (every grain, breakdown and step) to ``columns``."""
    n_steps = len(funnel.steps)
    open_ = of_funnel.column("open").to_numpy(zero_copy_only=False)
    matrices = {
        prefix: np.stack([of_funnel.column(f"{prefix}{k}").to_numpy() for k in range(1, n_steps + 1)], axis=1)
        for prefix, _, _ in DURATIONS
    }
    reached = ~np.isnan(matrices["s"])
    durations = {prefix: _Durations(matrix) for prefix, matrix in matrices.items()}
    step_names = np.array([funnel.step_label(k) for k in range(1, n_steps + 1)], dtype=object)
    day = pc.cast(of_funnel.column("entry_date"), pa.int32()).to_numpy(zero_copy_only=False).astype(np.int64)
    days = np.unique(day)
    # each distinct day's week and month (as days since the epoch)
    starts_of = {
        grain: pc.cast(_cohort_start(pa.array(days.astype(np.int32), pa.int32()).cast(pa.date32()), grain), pa.int32())
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
        cell = by_day[:, None] * n_steps + np.arange(n_steps)
        day_of_key, value_of_key = day_keys // width, day_keys % width
        by_mask: dict[int, dict] = {}
        for grain in COHORT_GRAINS:
            rows = counted[grain]
            if id(rows) not in by_mask:
                by_mask[id(rows)] = _by_day(rows, by_day, cell, days_n, n_steps, reached, open_, durations)
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
            for prefix, name, histogram_column in DURATIONS:
                histogram = np.zeros((g, n_steps, _BUCKETS), np.int64)
                np.add.at(histogram, into, of_day[prefix])
                median, p90 = durations[prefix].quantiles(group, g)
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


def _by_day(rows, by_day, cell, days_n: int, n_steps: int, reached, open_, durations) -> dict:
    """Per (day, value) of the ``rows`` counted (None: all): entered, and per step converted, pending and
    each duration's histogram."""
    if rows is None:
        rows = np.ones(len(by_day), bool)
    by_day, cell, reached, open_ = by_day[rows], cell[rows], reached[rows], open_[rows]
    out = {
        "entered": np.bincount(by_day, minlength=days_n),
        "converted": np.bincount(cell[reached], minlength=days_n * n_steps).reshape(days_n, n_steps),
        "pending": np.bincount(cell[open_[:, None] & ~reached], minlength=days_n * n_steps).reshape(days_n, n_steps),
    }
    for prefix, d in durations.items():
        histogram = np.bincount(
            (cell * _BUCKETS + d.bucket[rows])[reached], minlength=days_n * n_steps * _BUCKETS
        ).reshape(days_n, n_steps, _BUCKETS)
        out[prefix] = histogram
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
