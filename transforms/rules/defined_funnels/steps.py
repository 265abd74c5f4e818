"""Which steps each record matches, and the rule that one record reaches at
most one step of an entry. Records at the same instant are not ordered
among themselves: a step is taken at an instant when the entry's steps
there, it included, can each have a record of their own (a bipartite
matching, most generous as PostHog plays every order of a tie).

Only definitions whose step conditions can meet one record pay for it: the
conditions of two steps overlap unless their record kinds differ or a
column both test has no value in common (``may_overlap``)."""

from __future__ import annotations

from functools import cached_property

import numpy as np

from schemas.funnels import Condition, Funnel
from transforms.rules.defined_funnels.records import Matches, order_by_unit_and_time


def may_overlap(a: Condition, b: Condition) -> bool:
    """Whether one record can meet both conditions (a parent test is not looked at)."""
    if a.record != b.record:
        return False
    theirs = dict(b.where)
    return all(set(values) & set(theirs[column]) for column, values in a.where if column in theirs)


def steps_overlap(funnel: Funnel) -> bool:
    """Whether two steps of ``funnel`` can match one record."""
    steps = funnel.steps
    return any(
        may_overlap(a, b)
        for j in range(len(steps))
        for k in range(j + 1, len(steps))
        for a in steps[j].any_of
        for b in steps[k].any_of
    )


def matched(steps: list[int], masks: list[int]) -> int:
    """How many of ``steps`` can each have their own record, among records
    matching the steps of ``masks`` (bit k: step k): a maximum bipartite
    matching by augmenting paths, on the few records of one instant or entry."""
    owner: dict[int, int] = {}  # record index -> step

    def place(step: int, seen: set[int]) -> bool:
        for r, mask in enumerate(masks):
            if mask >> step & 1 and r not in seen:
                seen.add(r)
                if r not in owner or place(owner[r], seen):
                    owner[r] = step
                    return True
        return False

    return sum(place(step, set()) for step in steps)


def can_take(steps: list[int], masks: list[int]) -> bool:
    """Whether each of ``steps`` can have a record of its own among ``masks``."""
    return matched(steps, masks) == len(steps)


class StepRecords:
    """The records of a funnel's steps, each once, with a bit mask of the
    steps it matches, sorted by unit and time (``all``, ``mask``)."""

    def __init__(self, funnel: Funnel, steps: list[Matches]):
        self.overlap = steps_overlap(funnel)
        self._steps = steps

    @cached_property
    def _by_record(self) -> tuple[np.ndarray, np.ndarray, Matches]:
        """(record keys ascending, their masks, the records in that order)."""
        joined = Matches.of(self._steps)
        bits = np.concatenate([np.full(len(s.t), 1 << k, np.int64) for k, s in enumerate(self._steps)])
        order = np.argsort(joined.record, kind="stable")
        keys = joined.record[order]
        starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1]))) if len(keys) else keys
        masks = np.bitwise_or.reduceat(bits[order], starts) if len(keys) else bits
        return keys[starts], masks, joined.take(order[starts])

    @cached_property
    def _sorted(self) -> tuple[Matches, np.ndarray]:
        if self.overlap:
            _, masks, records = self._by_record
        else:  # each record in one step: no record to merge
            records = Matches.of(self._steps)
            masks = np.concatenate([np.full(len(s.t), 1 << k, np.int64) for k, s in enumerate(self._steps)])
        order = order_by_unit_and_time(records.unit, records.t)
        return records.take(order), masks[order]

    @property
    def all(self) -> Matches:
        """Every record of a step, once, sorted by (unit, time)."""
        return self._sorted[0]

    @property
    def mask(self) -> np.ndarray:
        """The steps each of ``all`` matches (bit k: step k)."""
        return self._sorted[1]

    def masks_of(self, records: np.ndarray) -> np.ndarray:
        """The masks of these record keys (0 for a record no step matches)."""
        keys, masks, _ = self._by_record
        at = np.minimum(np.searchsorted(keys, records), max(len(keys) - 1, 0))
        if not len(keys):
            return np.zeros(len(records), np.int64)
        return np.where(keys[at] == records, masks[at], 0)

    def masks_at(self, unit: int, t: int) -> list[int]:
        """The masks of the records at one unit and instant."""
        records, masks = self.all, self.mask
        low, high = np.searchsorted(records.unit, unit, "left"), np.searchsorted(records.unit, unit, "right")
        start = low + np.searchsorted(records.t[low:high], t, "left")
        stop = low + np.searchsorted(records.t[low:high], t, "right")
        return masks[start:stop].tolist()

    def untaken(
        self, k: int, units: np.ndarray, e: np.ndarray, record: np.ndarray, t: np.ndarray, reached: np.ndarray
    ) -> np.ndarray:
        """Of candidate pairs (entry ``e``, record, time ``t``) for step ``k``,
        those that leave every step of the entry at that instant a record:
        false only where the record matches such a step and the instant's
        records cannot serve them all."""
        fine = np.ones(len(e), bool)
        if not self.overlap or not len(e):
            return fine
        mask = self.masks_of(record)
        conflict = np.zeros(len(e), bool)
        for j in range(k):
            conflict |= (reached[e, j] == t) & (mask >> j & 1).astype(bool)
        decided: dict[tuple[int, int], bool] = {}
        for i in np.flatnonzero(conflict):
            entry, at = int(e[i]), int(t[i])
            if (entry, at) not in decided:
                placed = [j for j in range(k) if reached[entry, j] == at] + [k]
                decided[(entry, at)] = can_take(placed, self.masks_at(int(units[entry]), at))
            fine[i] = decided[(entry, at)]
        return fine
