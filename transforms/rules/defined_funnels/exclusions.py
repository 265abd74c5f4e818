"""Exclusions: an entry is left out when a record of an exclusion comes
strictly between its ``from_step`` and its ``to_step`` (records at either
step's instant do not count, as in PostHog); while ``to_step`` is not
reached, up to the window's end. A record that matches a step of the
funnel is the funnel's own and excludes nothing."""

from __future__ import annotations

import numpy as np

from schemas.funnels import Funnel
from transforms.rules.defined_funnels.records import NO_TIME, Entries, Matches, pairs
from transforms.rules.defined_funnels.steps import StepRecords, may_overlap


def excluded(
    funnel: Funnel,
    entries: Entries,
    reached: np.ndarray,
    window_end: np.ndarray,
    found: dict[str, Matches],
    records: StepRecords,
) -> np.ndarray:
    """Per entry, whether a record of an exclusion comes between its steps."""
    out = np.zeros(len(entries.at), bool)
    for exclusion in funnel.exclusions:
        matches = found[exclusion.name].by_unit_and_time()
        e, m = pairs(entries, matches, window_end)
        t = matches.t[m]
        start = reached[e, exclusion.from_step]
        end = reached[e, exclusion.to_step]
        hit = (start != NO_TIME) & (t > start) & np.where(end == NO_TIME, t <= window_end[e], t < end)
        if any(may_overlap(a, b) for a in exclusion.any_of for step in funnel.steps for b in step.any_of):
            hit &= records.masks_of(matches.record[m]) == 0
        out[e[hit]] = True
    return out
