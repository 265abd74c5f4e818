"""BigQuery's silver follows the lake's, also on a lake that had silver
before BigQuery was a sink.

Merges reach BigQuery as the rows they change (``silver_merger``), which
keeps a BigQuery silver equal to the lake's only if it started equal. So a
run with ``--sink bigquery`` that writes silver first compares, per silver
table, BigQuery's row count with the lake's released silver (counted from
the Delta log) and loads whole every table that differs, under the lake's
commit lock (no merge runs meanwhile), when the run is planned (its
``build``); whether before or after a merge sent BigQuery its changes, a
table whose count differs is loaded whole. The first such run on an existing
lake loads all of silver; later runs find the counts equal and load
nothing. The rows go through the process that runs this (the launcher):
a one-time cost on a lake that existed before BigQuery did.
"""

from __future__ import annotations

import logging

from schemas.tables import SILVER
from transforms.lake.lock import commit_lock
from transforms.lake.tables import layer_versions, read_files, read_groups, snapshot
from transforms.sinks.bigquery import BigQueryTarget, ensure_tables, replace_tables, table_id


def _lake_counts(lake: str, versions: dict[str, int | None]) -> dict[str, int]:
    return {name: snapshot(lake, SILVER[name], v).rows if v is not None else 0 for name, v in versions.items()}


def follow_lake_silver(target: BigQueryTarget | None, lake: str, pipeline: str, run_id: str) -> dict[str, int]:
    """Loads each silver table whose BigQuery row count differs from the
    lake's released silver; returns ``{table: rows loaded}`` (and says so).
    Without a target, nothing."""
    if target is None:
        return {}
    with commit_lock(lake, pipeline, run_id):
        versions = layer_versions(lake, SILVER)
        if all(v is None for v in versions.values()):
            return {}
        lake_rows = _lake_counts(lake, versions)
        bq = target.client()
        ensure_tables(bq, list(SILVER.values()))
        behind = {}
        for name, table in SILVER.items():
            count = next(iter(bq.query(f"SELECT COUNT(*) AS n FROM `{table_id(bq.project, table)}`").result())).n
            if count != lake_rows[name]:
                behind[name] = count
        if not behind:
            return {}
        logging.info("BigQuery silver differs from the lake's (%s): loading those tables whole", sorted(behind))

        def chunks(name):
            table = SILVER[name]
            files = snapshot(lake, table, versions[name]).files if versions[name] is not None else ()
            for group in read_groups(list(files)):
                yield read_files(group, table)

        loaded = replace_tables(bq, {SILVER[name]: chunks(name) for name in behind})
    print(f"BigQuery silver loaded whole from the lake (it differed): {loaded}")
    return loaded
