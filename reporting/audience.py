"""The retargeting audience from gold, as a Customer Match file of hashed emails.

The command: ``export_audience`` (``pipelines/export_audience.py``)."""

from __future__ import annotations

import csv
import os
from datetime import UTC, date, datetime, time

import pyarrow.compute as pc

from schemas.tables import GOLD
from transforms.lake.tables import layer_versions, read_arrow

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


def write_csv(path: str, hashes: list[str]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([HEADER])
        writer.writerows([h] for h in hashes)
