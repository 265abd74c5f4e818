"""Where a unit enters a funnel: its earliest record matching the first
step (any step for ``order: any``), and again at the first such record
after an entry's window has closed."""

from __future__ import annotations

import numpy as np

from transforms.rules.defined_funnels.records import Entries, Matches, UnitTimeKey


def entries(openers: Matches, window: int | None) -> Entries:
    """Entries from the records that open one: per unit its earliest (ties:
    the least session), and (with a window) the first after (not at) each
    entry's window's end, which the window holds; numbered 1, 2, .. per unit."""
    if not len(openers.t):
        empty = np.zeros(0, np.int64)
        return Entries(empty, empty, empty, empty)
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
        key = UnitTimeKey.of(units, times, slack=window)
        if key:
            # every unit at once, one entry further per round: the next opener after the current
            # entry's window's end, found on the (unit, time) key
            keys = key(units, times)
            current = starts
            while len(current):
                following = np.searchsorted(keys, key(units[current], times[current] + window), "right")
                inside = following < len(units)
                inside[inside] = units[following[inside]] == units[current[inside]]
                current = following[inside]
                keep[current] = True
        else:
            ends = np.append(starts[1:], len(times))
            for start, end in zip(starts, ends):
                i = start
                while True:  # the next opener after this entry's window's end
                    i = start + int(np.searchsorted(times[start:end], times[i] + window, "right"))
                    if i >= end:
                        break
                    keep[i] = True
    chosen = np.flatnonzero(keep)
    index = np.arange(len(chosen))
    unit_start = np.maximum.accumulate(np.where(first[chosen], index, 0))
    return Entries(units[chosen], index - unit_start + 1, times[chosen], sessions[chosen])
