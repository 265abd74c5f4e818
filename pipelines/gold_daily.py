"""Gold daily: silver -> facts, dimension and marts, truncate and load.

    python -m pipelines.gold_daily --lake DIR [--as-of DATE] [--runner ...]
        [--sink bigquery --project P [--bigquery-endpoint URL]]

Recomputes every gold table from the whole of silver (late records restate
earlier days) and replaces each ``gold/<table>/`` in one commit at the end.
``--as-of`` (default: today, UTC) leaves out records whose own time is after
that day, to restate a past day as it was knowable then.

With ``--sink bigquery`` the gold tables are replaced in BigQuery dataset
``gold`` of ``--project`` instead (created from ``schemas/`` when missing):
the files are staged in the lake, then each table is replaced by one load job
with WRITE_TRUNCATE (``transforms.bigquery_io``). ``--bigquery-endpoint``
points the same code at the local emulator.
"""
from __future__ import annotations

import argparse
from datetime import date, datetime, timezone

import apache_beam as beam
from apache_beam.options.pipeline_options import GoogleCloudOptions

from pipelines.common import parse, run_pipeline, setup_logging
from schemas.tables import GOLD, SILVER
from transforms.bigquery_io import LoadIntoBigQuery
from transforms.gold import BuildGold, CutAtAsOf
from transforms.lake_io import CommitLakeWrites, Replace, ReadLakeTable, WriteStaged, list_files, new_staging_dir, table_dir


def build(p: beam.Pipeline, lake: str, as_of: date, bigquery: tuple[str, str | None] | None = None) -> None:
    """``bigquery``: (project, endpoint or None) to replace the tables there instead of in the lake."""
    staging = new_staging_dir(lake)
    silver = {name: p | f"Read_{name}" >> ReadLakeTable(table, lake, list_files(table_dir(lake, table)))
              for name, table in SILVER.items()}
    gold = silver | "CutAtAsOf" >> CutAtAsOf(as_of) | "BuildGold" >> BuildGold()
    staged = [gold[name] | f"Stage_{name}" >> WriteStaged(table, staging) for name, table in GOLD.items()]
    staged = staged | "AllStaged" >> beam.Flatten()
    if bigquery is None:
        _ = staged | "Commit" >> CommitLakeWrites(lake, staging, [Replace(t, "table") for t in GOLD.values()])
    else:
        project, endpoint = bigquery
        _ = staged | "LoadIntoBigQuery" >> LoadIntoBigQuery(project, endpoint, GOLD, staging)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lake", required=True, help="lakehouse root (local folder or gs://...)")
    parser.add_argument("--as-of", "--as_of", dest="as_of", type=date.fromisoformat,
                        default=datetime.now(timezone.utc).date(),
                        help="last day of data to include (default: today, UTC)")
    parser.add_argument("--sink", choices=("lake", "bigquery"), default="lake",
                        help="where gold goes: LAKE/gold/ (default) or BigQuery dataset gold")
    parser.add_argument("--bigquery-endpoint", help="with --sink bigquery: another endpoint, e.g. the local "
                                                    "emulator http://127.0.0.1:9050")
    args, options = parse(parser, argv)
    project = options.view_as(GoogleCloudOptions).project  # Beam's --project serves both
    if args.sink == "bigquery" and not project:
        parser.error("--sink bigquery needs --project")
    setup_logging()
    target = f"BigQuery {project}.gold" if args.sink == "bigquery" else f"{args.lake}/gold"
    print(f"gold_daily: {args.lake} as of {args.as_of} -> {target}")
    bigquery = (project, args.bigquery_endpoint) if args.sink == "bigquery" else None
    return run_pipeline("gold_daily", options, lambda p: build(p, args.lake, args.as_of, bigquery))


if __name__ == "__main__":
    main()
