"""`make demo-bq`: the demo's backfill and gold again with ``--sink bigquery``
into the local BigQuery emulator, then rows per table and the funnel read
back with SQL (view ``gold.v_funnel_dropoff``).

The backfill reruns on the demo's landing files: the lake comes out the same
(a rerun restates its own rows), and bronze, dead letter and silver are
merged into BigQuery.

Starts the emulator unless one runs (and then stops it at the end; run
``make bq-up`` first to keep it, with the tables, for your own queries).
"""

from __future__ import annotations

import argparse

from devtools import bigquery_emulator
from pipelines import backfill, gold_daily
from schemas.tables import BRONZE, DEAD_LETTER, GOLD, SILVER
from transforms.sinks import bigquery as bigquery_io

FUNNEL_SQL = "SELECT * FROM `{project}.gold.v_funnel_dropoff` ORDER BY stage_number"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", default="demo-data/landing/*.jsonl", help="the demo's landing files")
    parser.add_argument("--lake", default="lake", help="the demo's lake")
    args = parser.parse_args(argv)
    project = bigquery_emulator.PROJECT
    with bigquery_emulator.running() as host:
        endpoint = bigquery_emulator.endpoint(host)
        sink = ["--sink", "bigquery", f"--project={project}", "--bigquery-endpoint", endpoint]
        backfill.main(["--input", args.input, "--lake", args.lake, *sink])
        gold_daily.main(["--lake", args.lake, *sink])
        bq = bigquery_io.client(project, endpoint)
        print(f"\nBigQuery emulator {endpoint}, project {project}:")
        for table in [*BRONZE.values(), DEAD_LETTER, *SILVER.values(), *GOLD.values()]:
            table_id = bigquery_io.table_id(project, table)
            n = next(iter(bq.query(f"SELECT COUNT(*) AS n FROM `{table_id}`").result())).n
            print(f"  {table.layer + '.' + table.name:<36}{n:>10,} rows")
        sql = FUNNEL_SQL.format(project=project)
        rows = list(bq.query(sql).result())
        print(f"\n  {sql}\n")
        print(f"  {'stage':<22}{'sessions':>10}{'from previous':>15}{'dropped':>10}")
        for r in rows:
            rate = "" if r.rate_from_previous_stage is None else f"{r.rate_from_previous_stage:.1%}"
            dropped = "" if r.dropped_since_previous_stage is None else f"{r.dropped_since_previous_stage:,}"
            print(f"  {r.stage_number} {r.stage_name:<20}{r.sessions:>10,}{rate:>15}{dropped:>10}")


if __name__ == "__main__":
    main()
