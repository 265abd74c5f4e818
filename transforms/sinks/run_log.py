"""Every run's counters in ``ops/run_log``, and the backfill's accounting
check: every record read is in bronze or the dead letter, and every bronze
row that entered silver is a silver identity or an extra copy of one.

    records_read == sum(valid_<bronze table>) + sum(dead_letter_<reason>)
    bronze rows into silver == sum(unique_<type>) + sum(duplicates_<type>) + sum(superseded_<type>)

A run that merges (``transforms.lake.silver``) puts into silver the bronze
rows bronze gained since the last merge (``bronze_rows_merged``: its own,
and any another path added and did not merge yet; none of a rerun of the
same file); it counts as identities the new ones, and as duplicates or
superseded the other rows. A rebuild (``--rebuild-silver``, or the first
run into a lake) puts in its valid rows inside its date range, the bronze
rows of other landing files it recomputes silver with ("kept", counted
from the Delta log of the version it read), and what it merges after. A run that does not
balance is logged with ``balanced = false`` and fails with
``AccountingError`` (exit status 1) after its commit: nothing is hidden,
and the run log says which numbers disagree.
"""

from __future__ import annotations

import hashlib

from schemas import contract
from schemas.contract import RECORD_TYPES
from schemas.tables import BRONZE, RUN_LOG
from transforms.lake.commit import commit_append
from transforms.lake.files import write_data_file
from transforms.sinks.bigquery import insert_new_rows


class AccountingError(SystemExit):
    """A run whose counters do not add up (exit status 1, with the message)."""


def backfill_problems(values: dict[str, int], kept_bronze_rows: int, rebuilt: bool = True) -> list[str]:
    """The accounting equations that do not hold, as sentences (empty: balanced)."""
    read = values.get("records_read", 0)
    valid = sum(values.get(f"valid_{t}", 0) for t in BRONZE)
    dead = sum(v for k, v in values.items() if k.startswith("dead_letter_"))
    problems = []
    if read != valid + dead:
        problems.append(f"records_read {read:,} != bronze {valid:,} + dead-lettered {dead:,}")
    merged = values.get("bronze_rows_merged", 0)
    into_silver = valid - values.get("outside_date_range", 0) + kept_bronze_rows + merged if rebuilt else merged
    identities = sum(values.get(f"unique_{t}", 0) for t in RECORD_TYPES)
    extra = sum(values.get(f"{kind}_{t}", 0) for t in RECORD_TYPES for kind in ("duplicates", "superseded"))
    if into_silver != identities + extra:
        problems.append(
            f"bronze rows into silver {into_silver:,} != silver identities {identities:,} "
            f"+ duplicates and superseded {extra:,}"
        )
    return problems


def run_log_rows(pipeline: str, run_id: str, values: dict[str, int], balanced: bool) -> list[dict]:
    now = contract.now_micros()
    return [
        {
            "run_date": contract.micros_to_date(now),
            "run_log_id": hashlib.sha256(f"{run_id}\0{name}".encode()).hexdigest(),
            "run_id": run_id,
            "pipeline": pipeline,
            "finished_at": now,
            "counter": name,
            "value": int(value),
            "balanced": balanced,
        }
        for name, value in sorted(values.items())
    ]


def write_run_log(
    lake: str, pipeline: str, run_id: str, values: dict[str, int], balanced: bool = True, bigquery=None
) -> None:
    """The run's counters -> ``ops/run_log`` (one commit, once per run) and,
    with ``bigquery``, ``ops.run_log``."""

    rows = run_log_rows(pipeline, run_id, values, balanced)
    if not rows:
        return
    file = write_data_file(lake, RUN_LOG, rows, (("run_date", rows[0]["run_date"]),))
    commit_append(lake, RUN_LOG, [file], f"run_log:{run_id}", pipeline=pipeline)
    if bigquery is not None:
        insert_new_rows(bigquery, RUN_LOG, rows)
