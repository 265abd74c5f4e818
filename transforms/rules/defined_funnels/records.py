"""Records as numpy arrays: which unit, when, in which session, and which
record (a key per silver row of the shard); sorted by unit and time, and
paired with the entries whose window holds them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from schemas.funnels import RECORDS

NO_TIME = np.iinfo(np.int64).max  # not reached; an open upper bound
# A record's key: its table's number in the high bits, its row in the shard's table below.
_ROW_BITS = 40
TABLE_NUMBER = {kind.table: number for number, kind in enumerate(RECORDS.values())}


def record_keys(table: str, rows: np.ndarray) -> np.ndarray:
    """The keys of ``rows`` of silver table ``table``: one record, one key, whatever steps it matches."""
    return (TABLE_NUMBER[table] << _ROW_BITS) | rows.astype(np.int64)


class Matches:
    """Records matching a condition: unit and session codes, time (epoch
    micros), record keys and, when a later step names it as ``parent``,
    record ids. Sessions and record keys are built when first read (a
    function in their place until then): most steps never read them."""

    def __init__(self, unit: np.ndarray, t: np.ndarray, session, record, id: pa.Array | None = None):
        self.unit, self.t, self.id = unit, t, id
        self._session, self._record = session, record
        self._sorted: Matches | None = None

    @property
    def session(self) -> np.ndarray:
        if callable(self._session):
            self._session = self._session()
        return self._session

    @property
    def record(self) -> np.ndarray:
        if callable(self._record):
            self._record = self._record()
        return self._record

    @staticmethod
    def of(parts: list[Matches]) -> Matches:
        def joined(name: str) -> np.ndarray:
            return np.concatenate([getattr(p, name) for p in parts]) if parts else np.zeros(0, np.int64)

        return Matches(
            joined("unit"),
            joined("t"),
            lambda: joined("session"),
            lambda: joined("record"),
            pa.concat_arrays([p.id for p in parts]) if parts and parts[0].id is not None else None,
        )

    def take(self, rows: np.ndarray) -> Matches:
        return Matches(self.unit[rows], self.t[rows], lambda: self.session[rows], lambda: self.record[rows])

    def by_unit_and_time(self) -> Matches:
        """The same records sorted by (unit, time), as ``pairs`` reads them (sorted once)."""
        if self._sorted is None:
            self._sorted = self.take(order_by_unit_and_time(self.unit, self.t))
            self._sorted._sorted = self._sorted
        return self._sorted


@dataclass(frozen=True)
class Entries:
    """A funnel's entries (``entries.entries``): unit code, number per unit, time, session code."""

    unit: np.ndarray
    number: np.ndarray
    at: np.ndarray
    session: np.ndarray

    def take(self, rows: np.ndarray) -> Entries:
        return Entries(self.unit[rows], self.number[rows], self.at[rows], self.session[rows])


@dataclass(frozen=True)
class UnitTimeKey:
    """(unit code, time) as one int64 that sorts as the pair: ``unit * span +
    (t - low)`` for times in ``[low, low + span)``; ``of`` only when it fits
    in 63 bits (else the callers sort or search the pair)."""

    low: int
    span: int

    @staticmethod
    def of(units: np.ndarray, times: np.ndarray, slack: int = 0) -> UnitTimeKey | None:
        """The key for these units and times, room for ``slack`` past the last time; None if it does not fit."""
        low, high = int(times.min()), int(times.max())
        key = UnitTimeKey(low, high - low + 1)
        return key if (int(units.max()) + 1) * key.span + slack < 2**62 else None

    def __call__(self, units: np.ndarray, times: np.ndarray) -> np.ndarray:
        return units * self.span + (times - self.low)


def order_by_unit_and_time(unit: np.ndarray, t: np.ndarray) -> np.ndarray:
    """argsort by (unit, t): one sort of a combined key when it fits, else two."""
    if not len(t):
        return np.zeros(0, np.int64)
    key = UnitTimeKey.of(unit, t)
    return np.argsort(key(unit, t), kind="stable") if key else np.lexsort((t, unit))


def pairs(entries: Entries, matches: Matches, window_end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (entry, match) of the same unit from the entry to its window's
    end (every order looks no further): entry indexes ascending, and per
    entry its matches in time order (indexes into ``matches``, which is
    sorted by unit and time). A unit's other entries' records are not
    paired, so a user with many entries costs their records once each."""
    if not len(matches.t) or not len(entries.at):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    key = UnitTimeKey.of(np.concatenate([matches.unit, entries.unit]), matches.t)
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


def first(n: int, e: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per entry the first ``t`` of its pairs (in time order: the least), ``NO_TIME`` where none."""
    out = np.full(n, NO_TIME, np.int64)
    if len(e):
        is_first = np.ones(len(e), bool)
        is_first[1:] = e[1:] != e[:-1]
        out[e[is_first]] = t[is_first]
    return out
