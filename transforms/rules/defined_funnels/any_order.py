"""``order: any``: "k of n steps" is reached at the first instant by which
k distinct steps each have a record of their own, from the entry to its
window's end."""

from __future__ import annotations

import numpy as np

from schemas.funnels import Funnel
from transforms.rules.defined_funnels.records import NO_TIME, Entries, Matches, first, pairs
from transforms.rules.defined_funnels.steps import StepRecords, matched


def reach(funnel: Funnel, entries: Entries, steps: list[Matches], records: StepRecords, window_end) -> np.ndarray:
    """Column k: when the entry had reached k+1 distinct steps (``NO_TIME``: never)."""
    n = len(entries.at)
    firsts = np.full((n, len(steps)), NO_TIME, np.int64)
    for k, step in enumerate(steps):
        matches = step.by_unit_and_time()
        e, m = pairs(entries, matches, window_end)
        t = matches.t[m]
        keep = (t >= entries.at[e]) & (t <= window_end[e])
        firsts[:, k] = first(n, e[keep], t[keep])
    reached = np.sort(firsts, axis=1)
    if records.overlap:
        # where a record of the entry matches two steps, each step's first time is not enough
        shared = records.all.take(np.flatnonzero(records.mask & (records.mask - 1)))
        e, _ = pairs(entries, shared, window_end)
        for entry in np.unique(e):
            reached[entry] = _walk(
                records, int(entries.unit[entry]), int(entries.at[entry]), window_end[entry], len(steps)
            )
    return reached


def _walk(records: StepRecords, unit: int, start: int, end: int, n: int) -> np.ndarray:
    """One entry's reach times, instant by instant: the most steps its records so far can each serve."""
    every = records.all
    low, high = np.searchsorted(every.unit, unit, "left"), np.searchsorted(every.unit, unit, "right")
    t, masks = every.t[low:high], records.mask[low:high]
    inside = (t >= start) & (t <= end)
    t, masks = t[inside], masks[inside]
    out = np.full(n, NO_TIME, np.int64)
    kept: dict[int, int] = {}  # mask -> records of it (more than n of one mask never help)
    done = 0
    for i in range(len(t)):
        mask = int(masks[i])
        kept[mask] = min(kept.get(mask, 0) + 1, n)
        if i + 1 < len(t) and t[i + 1] == t[i]:
            continue  # an instant's records count together
        most = matched(list(range(n)), [m for m, count in kept.items() for _ in range(count)])
        out[done:most] = t[i]
        done = max(done, most)
    return out
