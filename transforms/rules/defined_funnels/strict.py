"""``order: strict``: as sequential, and nothing comes between step k-1
and step k: no record strictly between their instants (records at either
instant are not between) matches a step of the funnel other than step k-1
(``strict_breaks_on: steps``), or is any record of the unit that does not
match step k-1 (``any_record``). Repeats of step k-1 are allowed."""

from __future__ import annotations

import numpy as np

from schemas.funnels import BreaksOn, Funnel
from transforms.rules.defined_funnels.records import NO_TIME, Entries, Matches, first, pairs
from transforms.rules.defined_funnels.sequential import candidates
from transforms.rules.defined_funnels.steps import StepRecords


def reach(
    funnel: Funnel,
    entries: Entries,
    steps: list[Matches],
    records: StepRecords,
    window_end: np.ndarray,
    every_record: Matches | None = None,
) -> np.ndarray:
    """As ``sequential.reach``; ``every_record``: the unit's records of every
    kind, sorted by unit and time (``any_record``)."""
    n = len(entries.at)
    reached = np.full((n, len(steps)), NO_TIME, np.int64)
    reached[:, 0] = entries.at
    if funnel.strict_breaks_on == BreaksOn.ANY_RECORD:
        assert every_record is not None
        others, masks = every_record, records.masks_of(every_record.record)
    else:
        others, masks = records.all, records.mask
    for k in range(1, len(steps)):
        e, t = candidates(funnel, k, entries, steps, records, reached, window_end)
        at = first(n, e, t)
        # the first record after step k-1's instant that is not a repeat of it
        breaking = others.take(np.flatnonzero(~(masks >> (k - 1) & 1).astype(bool)))
        be, bm = pairs(entries, breaking, window_end)
        bt = breaking.t[bm]
        after = bt > reached[be, k - 1]
        broken = first(n, be[after], bt[after])
        reached[:, k] = np.where(at <= broken, at, NO_TIME)
    return reached
