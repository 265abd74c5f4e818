"""Audiences from gold as Customer Match files of hashed emails: the
retargeting audience (``mart_retargeting``), and the people who dropped at
a step of a defined funnel (``fact_funnel``, ``dropped_audience``).

The command: ``export_audience`` (``pipelines/export_audience.py``)."""

from __future__ import annotations

import csv
import os
from datetime import UTC, date, datetime, time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.funnels import ALL, OTHER
from schemas.tables import GOLD, SILVER
from transforms.lake.tables import layer_versions, read_arrow
from transforms.rules.defined_funnels import BREAKDOWN_COLUMNS, breakdown_values

HEADER = "Email"  # Customer Match: hashed values go in the same column as plaintext ones


def audience(lake: str, since: date | None = None) -> tuple[list[str], int]:
    """-> (sorted distinct email SHA-256 values, users without an email)."""
    table = GOLD["mart_retargeting"]
    rows = read_arrow(lake, table, layer_versions(lake, GOLD)[table.name], columns=["email_sha256", "last_cart_at"])
    if since is not None:
        start = datetime.combine(since, time(), tzinfo=UTC)
        rows = rows.filter(pc.greater_equal(rows.column("last_cart_at"), start))
    emails = rows.column("email_sha256")
    missing = emails.null_count
    return sorted(set(emails.drop_null().to_pylist())), missing


class AudienceError(ValueError):
    """The cell asked for is not in gold (unknown funnel, step, breakdown or value)."""


def funnel_cells(lake: str) -> dict[str, dict]:
    """What gold's mart_funnel offers: funnel -> {steps: [names], breakdowns: {name: [values]}}."""
    table = GOLD["mart_funnel"]
    version = layer_versions(lake, GOLD)[table.name]
    rows = read_arrow(
        lake, table, version, columns=["funnel", "step_number", "step_name", "breakdown", "breakdown_value"]
    )
    cells: dict[str, dict] = {}
    for funnel, number, step, breakdown, value in zip(*(c.to_pylist() for c in rows.columns)):
        cell = cells.setdefault(funnel, {"steps": {}, "breakdowns": {}})
        cell["steps"][number] = step
        cell["breakdowns"].setdefault(breakdown, set()).add(value)
    return {
        f: {"steps": [c["steps"][n] for n in sorted(c["steps"])], "breakdowns": c["breakdowns"]}
        for f, c in cells.items()
    }


def dropped_audience(
    lake: str,
    funnel: str,
    step: str,
    breakdown: str = ALL,
    value: str = ALL,
    since: date | None = None,
    now: datetime | None = None,
) -> tuple[list[str], int]:
    """The users of the entries that reached the step before ``step`` and not
    ``step``, their window closed by ``now`` (default: now; entries still
    inside it may yet convert), whose first-touch ``breakdown`` value is
    ``value`` (as the mart buckets it: ``other`` is every value the mart does
    not show) and whose entry is on or after ``since``.
    -> (sorted distinct email SHA-256 values, entries without a user or an email)."""
    cells = funnel_cells(lake)
    if funnel not in cells:
        raise AudienceError(f"no funnel '{funnel}' in gold (there: {', '.join(sorted(cells))})")
    steps = cells[funnel]["steps"]
    if step not in steps:
        raise AudienceError(f"funnel '{funnel}' has no step '{step}' (steps: {', '.join(steps)})")
    number = steps.index(step) + 1
    if number == 1:
        raise AudienceError(f"'{step}' is the first step of '{funnel}': nobody drops before entering")
    shown = cells[funnel]["breakdowns"]
    if breakdown not in shown:
        raise AudienceError(f"funnel '{funnel}' is not broken down by '{breakdown}' (by: {', '.join(sorted(shown))})")
    if value not in shown[breakdown]:
        raise AudienceError(f"no '{breakdown}' value '{value}' in gold (there: {', '.join(sorted(shown[breakdown]))})")
    table = GOLD["fact_funnel"]
    columns = ["funnel", "user_id", "entry_date", "window_ends_at", "steps_reached", *BREAKDOWN_COLUMNS]
    facts = read_arrow(lake, table, layer_versions(lake, GOLD)[table.name], columns=columns)
    # reached the step before and stopped there
    rows = facts.filter(
        pc.and_(pc.equal(facts.column("funnel"), funnel), pc.equal(facts.column("steps_reached"), number - 1))
    )
    moment = now or datetime.now(UTC)
    closed = pc.fill_null(
        pc.less_equal(rows.column("window_ends_at"), pa.scalar(moment, pa.timestamp("us", "UTC"))), True
    )
    rows = rows.filter(closed)
    if since is not None:
        rows = rows.filter(pc.greater_equal(rows.column("entry_date"), pa.scalar(since, pa.date32())))
    if breakdown != ALL:
        values = breakdown_values(rows, breakdown)
        if value == OTHER:
            keep = pc.invert(pc.is_in(values, value_set=pa.array(sorted(shown[breakdown] - {OTHER}), pa.string())))
        else:
            keep = pc.equal(values, value)
        rows = rows.filter(keep)
    user_ids = rows.column("user_id")
    # the email's plain SHA-256 (Customer Match's hash) is kept in silver only, beside the keyed hash
    users = read_arrow(
        lake, SILVER["silver_users"], layer_versions(lake, SILVER)["silver_users"], columns=["user_id", "email_sha256"]
    )
    emails = pc.take(users.column("email_sha256"), pc.index_in(user_ids, value_set=users.column("user_id")))
    missing = int(np.count_nonzero(pc.is_null(emails).to_numpy(zero_copy_only=False)))
    return sorted(set(emails.drop_null().to_pylist())), missing


def write_csv(path: str, hashes: list[str]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([HEADER])
        writer.writerows([h] for h in hashes)
