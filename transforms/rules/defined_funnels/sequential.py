"""``order: sequential``: step k is the earliest record at or after step
k-1's time (``after_previous: false``: the entry's) that is left to it,
inside the window and ``step_gap``; it counts only if every earlier step did."""

from __future__ import annotations

import numpy as np

from schemas.contract import SECOND
from schemas.funnels import Funnel
from transforms.rules.defined_funnels.records import NO_TIME, Entries, Matches, first, pairs
from transforms.rules.defined_funnels.steps import StepRecords


def step_gap(funnel: Funnel) -> int | None:
    return None if funnel.step_gap_seconds is None else int(funnel.step_gap_seconds * SECOND)


def candidates(
    funnel: Funnel, k: int, entries: Entries, steps: list[Matches], records: StepRecords, reached, window_end
) -> tuple[np.ndarray, np.ndarray]:
    """The (entry, time) pairs that can reach step ``k`` (per entry in time
    order), given the steps before it: ``reached`` (entries, steps)."""
    matches = steps[k].by_unit_and_time()
    e, m = pairs(entries, matches, window_end)
    t = matches.t[m]
    previous = reached[e, k - 1]
    keep = (previous != NO_TIME) & (t <= window_end[e])
    keep &= t >= previous if funnel.steps[k].after_previous else t >= reached[e, 0]
    gap = step_gap(funnel)
    if gap is not None:
        keep &= t <= previous + gap
    e, m, t = e[keep], m[keep], t[keep]
    fine = records.untaken(k, entries.unit, e, matches.record[m], t, reached)
    return e[fine], t[fine]


def reach(funnel: Funnel, entries: Entries, steps: list[Matches], records: StepRecords, window_end) -> np.ndarray:
    """Reach time of every step per entry (``NO_TIME``: not reached), as an (entries, steps) array."""
    n = len(entries.at)
    reached = np.full((n, len(steps)), NO_TIME, np.int64)
    reached[:, 0] = entries.at
    for k in range(1, len(steps)):
        e, t = candidates(funnel, k, entries, steps, records, reached, window_end)
        reached[:, k] = first(n, e, t)
    return reached
