"""``count: units``: each unit once per entry cohort, on its best try, as
PostHog, Amplitude and Mixpanel count people. Every record matching the
first step (any step for ``order: any``) starts a try with its own window;
per unit and UTC day the try reaching the most steps is its row (ties: the
earliest), and per week and month the best of those rows is the one that
cohort counts."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.rules.defined_funnels.mart import cohort_start
from transforms.rules.defined_funnels.records import Entries, Matches


def tries(openers: Matches) -> Entries:
    """A try at each distinct instant a unit has an opener; its session the least of the openers then."""
    if not len(openers.t):
        empty = np.zeros(0, np.int64)
        return Entries(empty, empty, empty, empty)
    ordered = openers.by_unit_and_time()
    starts = np.flatnonzero(
        np.concatenate(([True], (ordered.unit[1:] != ordered.unit[:-1]) | (ordered.t[1:] != ordered.t[:-1])))
    )
    return Entries(
        ordered.unit[starts],
        np.zeros(len(starts), np.int64),
        ordered.t[starts],
        np.minimum.reduceat(ordered.session, starts),
    )


def _best(unit: np.ndarray, period: np.ndarray, steps: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Per (unit, period) the row reaching the most steps, the earliest of those; as a mask."""
    order = np.lexsort((at, -steps, period, unit))
    head = np.ones(len(order), bool)
    head[1:] = (unit[order][1:] != unit[order][:-1]) | (period[order][1:] != period[order][:-1])
    out = np.zeros(len(order), bool)
    out[order[head]] = True
    return out


def _cohorts(at: np.ndarray, grain: str) -> np.ndarray:
    """Each time's entry cohort of ``grain`` (its first day, days since the epoch), as the mart counts them."""
    dates = pc.cast(pa.array(at, pa.timestamp("us", tz="UTC")), pa.date32())
    return pc.cast(cohort_start(dates, grain), pa.int32()).to_numpy(zero_copy_only=False).astype(np.int64)


def best_per_day(entries: Entries, reached_steps: np.ndarray) -> tuple[Entries, np.ndarray]:
    """Of a funnel's tries (in unit and time order), each unit's best per day, numbered 1, 2, .. per unit,
    and which tries those are."""
    kept = np.flatnonzero(_best(entries.unit, _cohorts(entries.at, "day"), reached_steps, entries.at))
    unit = entries.unit[kept]
    index = np.arange(len(kept))
    first = np.concatenate(([True], unit[1:] != unit[:-1])) if len(kept) else np.zeros(0, bool)
    number = index - np.maximum.accumulate(np.where(first, index, 0)) + 1
    return Entries(unit, number, entries.at[kept], entries.session[kept]), kept


def counted_in(entries: Entries, reached_steps: np.ndarray) -> dict[str, np.ndarray]:
    """Per cohort grain, which rows (a unit's best per day) the week's and month's cohorts count."""
    return {
        grain: _best(entries.unit, _cohorts(entries.at, grain), reached_steps, entries.at)
        for grain in ("week", "month")
    }
