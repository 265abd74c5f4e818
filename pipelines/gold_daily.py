"""Gold daily: silver -> facts, dimension and marts, truncate and load.

    python -m pipelines.gold_daily --lake DIR [--as-of DATE] [--runner ...]
        [--sink bigquery --project P [--bigquery-endpoint URL]]

Recomputes every gold table from the whole of silver (late records restate
earlier days) and replaces each ``gold/<table>/`` in one commit at the end.
``--as-of`` (default: today, UTC) leaves out records whose own time is after
that day, to restate a past day as it was knowable then.

With ``--sink bigquery`` the gold tables are also replaced in BigQuery
dataset ``gold`` of ``--project`` (created from ``schemas/`` when missing),
before the lake commit: the rows are loaded into scratch tables, then one
transaction replaces every gold table, so readers see the old gold or the
new, never a mix; then the use-case views are recreated
(``transforms.bigquery_io``).
``--bigquery-endpoint`` points the same code at the local emulator.
"""
from __future__ import annotations

import argparse
from datetime import date, datetime, timezone

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipelines.common import add_sink_flags, bigquery_target, parse, run_pipeline, setup_logging
from schemas import contract
from schemas.tables import GOLD, SILVER
from schemas.views import VIEWS
from transforms.bigquery_io import BigQueryTarget, BigQueryWrite, PublishToBigQuery
from transforms.gold import GOLD_INPUTS, BuildGold, CutAtAsOfFn, end_of_day_micros
from transforms.lake_io import CommitLakeWrites, Replace, ReadLakeTable, WriteStaged, list_files, new_staging_dir, table_dir


# Bytes of silver Parquet per shard of the gold shuffle (about 100k rows).
BYTES_PER_SHARD = 8 << 20


def build(p: beam.Pipeline, lake: str, as_of: date, bigquery: BigQueryTarget | None = None,
          shards: int | None = None) -> None:
    """``bigquery``: also replace the tables there; ``shards``: of the gold
    shuffle (default: from the size of silver)."""
    staging = new_staging_dir(lake)
    files = {name: list_files(table_dir(lake, table)) for name, table in SILVER.items()}
    if shards is None:
        sizes = [m.size_in_bytes for result in FileSystems.match([f for fs in files.values() for f in fs])
                 for m in result.metadata_list] if any(files.values()) else []
        shards = max(1, min(512, -(-sum(sizes) // BYTES_PER_SHARD)))
    silver = tuple(p | f"Read_{name}" >> ReadLakeTable(SILVER[name], lake, files[name], GOLD_INPUTS[name])
                   | f"CutAtAsOf_{name}" >> beam.ParDo(CutAtAsOfFn(as_of)) for name in GOLD_INPUTS)
    # The clock of the rules that wait (an abandoned cart, an overdue confirmation):
    # the end of the as-of day, or now when that is later than now.
    clock = min(end_of_day_micros(as_of), contract.now_micros())
    gold = silver | "BuildGold" >> BuildGold(shards, clock)
    staged = gold | "StageGold" >> WriteStaged(list(GOLD.values()), staging)
    if bigquery is not None:
        staged = staged | "PublishToBigQuery" >> PublishToBigQuery(
            bigquery, [BigQueryWrite(t, "truncate") for t in GOLD.values()], VIEWS.values())
    _ = staged | "Commit" >> CommitLakeWrites(lake, staging, [Replace(t, "table") for t in GOLD.values()])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lake", required=True, help="lakehouse root (local folder or gs://...)")
    parser.add_argument("--as-of", "--as_of", dest="as_of", type=date.fromisoformat,
                        default=datetime.now(timezone.utc).date(),
                        help="last day of data to include (default: today, UTC)")
    add_sink_flags(parser, "the gold tables and the use-case views")
    args, options = parse(parser, argv)
    bigquery = bigquery_target(parser, args, options)
    setup_logging()
    print(f"gold_daily: {args.lake} as of {args.as_of} -> {args.lake}/gold"
          + (f" and BigQuery {bigquery.project}.gold" if bigquery else ""))
    return run_pipeline("gold_daily", options, lambda p: build(p, args.lake, args.as_of, bigquery))


if __name__ == "__main__":
    main()
