"""The revision history of gold's headline metrics (``ops/metric_revisions``):
the latest gold release against the one before it, both read by Delta time
travel at the versions ``ops/releases`` names (``transforms.rules.revisions``)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pyarrow.compute as pc

from schemas.tables import BRONZE, GOLD, RELEASES
from transforms.lake.tables import open_table, read_arrow, snapshot
from transforms.rules import revisions as rules
from transforms.rules.revisions import HEADLINES

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def gold_releases(lake: str) -> list[tuple[datetime, str, dict[str, int]]]:
    """Every gold release, oldest first: ``(released_at, run_id, {table: version})``."""
    rows = read_arrow(lake, RELEASES, columns=["layer", "table_name", "version", "run_id", "released_at"])
    rows = rows.filter(pc.equal(rows.column("layer"), "gold"))
    releases: dict[tuple, dict[str, int]] = {}
    for name, version, run_id, at in zip(
        *(rows.column(c).to_pylist() for c in ("table_name", "version", "run_id", "released_at"))
    ):
        releases.setdefault((at, run_id), {})[name] = version
    return [(at, run_id, versions) for (at, run_id), versions in sorted(releases.items())]


def _headlines(lake: str, versions: dict[str, int]) -> dict[tuple[str, str], float | None]:
    out: dict[tuple[str, str], float | None] = {}
    for mart, columns in HEADLINES.items():
        rows = read_arrow(lake, GOLD[mart], versions[mart], ["period_grain", "period_start", "platform", *columns])
        out.update(rules.headline(mart, rows))
    return out


def _bronze_rows_per_day(lake: str, when: datetime) -> Counter:
    """Bronze rows per event day in the versions current at ``when``."""
    per_day: Counter = Counter()
    for table in BRONZE.values():
        version = version_at(lake, table, when)
        if version is None:
            continue
        for f in snapshot(lake, table, version).files:
            per_day[f.partition["event_date"]] += f.rows
    return per_day


def version_at(lake: str, table, when: datetime) -> int | None:
    """The table's newest version committed at or before ``when`` (None: none)."""
    dt = open_table(lake, table)
    if dt is None:
        return None
    limit = when.timestamp() * 1000
    versions = [h["version"] for h in dt.history() if h.get("timestamp", 0) <= limit]
    return max(versions) if versions else None


def latest_revisions(lake: str) -> list[dict]:
    """The rows of ``ops/metric_revisions`` for the latest gold release
    against the one before it (none when there is no earlier release)."""
    releases = gold_releases(lake)
    if len(releases) < 2:
        return []
    (before_at, before_run, before), (at, run_id, after) = releases[-2:]
    changed = rules.revisions(_headlines(lake, before), _headlines(lake, after))
    if not changed:
        return []
    then, now = _bronze_rows_per_day(lake, before_at), _bronze_rows_per_day(lake, at)
    return [
        {
            "released_date": at.date().isoformat(),
            "released_at": (at - EPOCH) // timedelta(microseconds=1),
            "release_run_id": run_id,
            "previous_run_id": before_run,
            "period_start": day,
            "metric": metric,
            "previous_value": previous,
            "value": value,
            "late_records": max(0, now[day] - then[day]),
        }
        for day, metric, previous, value in changed
    ]
