"""Gold's headline metrics per day, and what a release changed of them.

A headline is a day's value of the whole funnel (``period_grain`` day,
``platform`` all) in a mart. A revision is a (day, metric) whose value in a
release differs from the release before it: late records arrived, or a
merge restated silver. Reading both releases (Delta time travel) gives the
same differences.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pyarrow as pa
import pyarrow.compute as pc

# mart -> the headline columns it holds
HEADLINES = {
    "mart_conversion_rate": ("conversion_rate", "sessions_browse", "sessions_payment"),
    "mart_barcode_activity": ("barcode_scans",),
}


def headline(mart: str, rows: pa.Table) -> dict[tuple[str, str], float | None]:
    """``(day, metric) -> value`` of one mart's rows."""
    day_rows = rows.filter(
        pc.and_(pc.equal(rows.column("period_grain"), "day"), pc.equal(rows.column("platform"), "all"))
    )
    days = [d.isoformat() for d in day_rows.column("period_start").to_pylist()]
    out: dict[tuple[str, str], float | None] = {}
    for metric in HEADLINES[mart]:
        for day, value in zip(days, day_rows.column(metric).to_pylist()):
            out[(day, metric)] = None if value is None else float(value)
    return out


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)


def revisions(
    before: Mapping[tuple[str, str], float | None], after: Mapping[tuple[str, str], float | None]
) -> list[tuple[str, str, float | None, float | None]]:
    """``(day, metric, previous, value)`` of every headline the earlier
    release held that changed or went away (value None), by day and metric.
    A day first published is not a revision."""
    out = []
    for key in sorted(before):
        old, new = before[key], after.get(key)
        if not _same(old, new):
            out.append((*key, old, new))
    return out


def describe(day: str, metric: str, previous: float | None, value: float | None, late_records: int) -> str:
    """One line a person reads: ``2026-11-03 conversion_rate 19.1% -> 19.6% after 2,134 late records``."""

    def shown(v: float | None) -> str:
        if v is None:
            return "-"
        return f"{v:.1%}" if metric.endswith("_rate") else f"{v:,.0f}"

    return f"{day} {metric} {shown(previous)} -> {shown(value)} after {late_records:,} late records"
