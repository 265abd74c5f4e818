"""How complete a recent event day is (``schemas.quality.Completeness``).

The lateness profile is when the records of complete days arrived, counted
from the start of their day (``ingested_at - start of event_date``). A day
that is ``age`` old now is expected to hold the share of a complete day's
records that had arrived by the same age: for yesterday at 08:00 that is
how much of a complete day had arrived by 08:00 the day after it. One
profile for every record type and platform; the stream's receipt times and
a landing file's landing time (``transforms.lake.landing``) feed it alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np

from schemas import contract
from schemas.quality import Completeness

DAY_MICROS = 86_400_000_000
_EPOCH_DAY = date(1970, 1, 1)


def day_start(day: str) -> int:
    """Micros of the day's first instant (UTC)."""
    return (date.fromisoformat(day) - _EPOCH_DAY).days * DAY_MICROS


@dataclass(frozen=True)
class LatenessProfile:
    """Arrival offsets (micros after the start of their event day) of the
    records of complete days, sorted, only those within the horizon."""

    offsets: np.ndarray
    days: int

    @classmethod
    def of(cls, event_days: np.ndarray, ingested: np.ndarray, rule: Completeness) -> LatenessProfile:
        """``event_days``: each record's event day (days since 1970);
        ``ingested``: its ingested_at (micros); complete days' records only."""
        offsets = ingested - event_days.astype(np.int64) * DAY_MICROS
        within = offsets[offsets <= (rule.horizon_days + 1) * DAY_MICROS]
        return cls(np.sort(within), int(np.unique(event_days).size))

    def share_by(self, age: int) -> float | None:
        """Share of a complete day's records that had arrived ``age`` micros after its start."""
        if not self.offsets.size:
            return None
        return float(np.searchsorted(self.offsets, age, side="right")) / self.offsets.size


def profile_days(as_of: int, held_days: set[str], rule: Completeness) -> list[str]:
    """The complete days the profile is drawn from: the ``profile_days``
    newest whose horizon has passed by ``as_of``."""
    last = contract.micros_to_datetime(as_of).date() - timedelta(days=rule.horizon_days + 1)
    return sorted(d for d in held_days if d <= last.isoformat())[-rule.profile_days :]


def recent_days(as_of: int, rule: Completeness) -> list[str]:
    """The days still filling at ``as_of``: from the horizon to as_of's own day."""
    today = contract.micros_to_datetime(as_of).date()
    return [(today - timedelta(days=back)).isoformat() for back in range(rule.horizon_days, -1, -1)]


def estimates(
    received: Mapping[str, int], as_of: int, profile: LatenessProfile | None, rule: Completeness
) -> list[dict]:
    """Per recent day (``recent_days``) that received anything: what it holds,
    the share it is expected to hold, and the total that implies (rows in
    the pipeline's form: days as ISO text)."""
    usable = profile is not None and profile.days >= rule.min_profile_days
    out = []
    for day in recent_days(as_of, rule):
        n = received.get(day, 0)
        if not n:
            continue
        share = profile.share_by(as_of - day_start(day)) if usable else None
        out.append(
            {
                "event_date": day,
                "received": n,
                "expected_share": None if share is None else round(share, 4),
                "estimated_total": round(n / share, 1) if share else None,
                "profile_days": profile.days if profile is not None else 0,
                "profile_records": int(profile.offsets.size) if profile is not None else 0,
            }
        )
    return out
