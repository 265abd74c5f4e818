"""`make demo-bq`: gold of the demo lake into the local BigQuery emulator,
then the funnel read back with SQL (view ``gold.v_funnel_dropoff``).

Starts the emulator unless one runs (and then stops it at the end; run
``make bq-up`` first to keep it, with the tables, for your own queries).
"""
from __future__ import annotations

import argparse

from devtools import bigquery_emulator
from pipelines import gold_daily
from transforms import bigquery_io

FUNNEL_SQL = "SELECT * FROM `{project}.gold.v_funnel_dropoff` ORDER BY stage_number"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lake", default="lake", help="a lake with silver (make demo)")
    args = parser.parse_args(argv)
    project = bigquery_emulator.PROJECT
    with bigquery_emulator.running() as host:
        endpoint = bigquery_emulator.endpoint(host)
        gold_daily.main(["--lake", args.lake, "--sink", "bigquery", f"--project={project}",
                         "--bigquery-endpoint", endpoint])
        sql = FUNNEL_SQL.format(project=project)
        rows = list(bigquery_io.client(project, endpoint).query(sql).result())
        print(f"\nBigQuery emulator {endpoint}:\n  {sql}\n")
        print(f"  {'stage':<22}{'sessions':>10}{'from previous':>15}{'dropped':>10}")
        for r in rows:
            rate = "" if r.rate_from_previous_stage is None else f"{r.rate_from_previous_stage:.1%}"
            dropped = "" if r.dropped_since_previous_stage is None else f"{r.dropped_since_previous_stage:,}"
            print(f"  {r.stage_number} {r.stage_name:<20}{r.sessions:>10,}{rate:>15}{dropped:>10}")


if __name__ == "__main__":
    main()
