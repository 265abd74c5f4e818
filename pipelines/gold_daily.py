"""Gold daily: silver -> facts, dimension and marts, truncate and load.

    python -m pipelines.gold_daily --lake DIR [--as-of DATE] [--runner ...]

Recomputes every gold table from the whole of silver (late records restate
earlier days) and replaces each ``gold/<table>/`` in one commit at the end.
``--as-of`` (default: today, UTC) leaves out records whose own time is after
that day, to restate a past day as it was knowable then.
"""
from __future__ import annotations

import argparse
from datetime import date, datetime, timezone

import apache_beam as beam

from pipelines.common import parse, run_pipeline, setup_logging
from schemas.tables import GOLD, SILVER
from transforms.gold import BuildGold, CutAtAsOf
from transforms.lake_io import CommitLakeWrites, Replace, ReadLakeTable, WriteStaged, list_files, new_staging_dir, table_dir


def build(p: beam.Pipeline, lake: str, as_of: date) -> None:
    staging = new_staging_dir(lake)
    silver = {name: p | f"Read_{name}" >> ReadLakeTable(table, lake, list_files(table_dir(lake, table)))
              for name, table in SILVER.items()}
    gold = silver | "CutAtAsOf" >> CutAtAsOf(as_of) | "BuildGold" >> BuildGold()
    staged = [gold[name] | f"Stage_{name}" >> WriteStaged(table, staging) for name, table in GOLD.items()]
    _ = (staged | "AllStaged" >> beam.Flatten()
         | "Commit" >> CommitLakeWrites(lake, staging, [Replace(t, "table") for t in GOLD.values()]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lake", required=True, help="lakehouse root (local folder or gs://...)")
    parser.add_argument("--as-of", "--as_of", dest="as_of", type=date.fromisoformat,
                        default=datetime.now(timezone.utc).date(),
                        help="last day of data to include (default: today, UTC)")
    args, options = parse(parser, argv)
    setup_logging()
    print(f"gold_daily: {args.lake} as of {args.as_of}")
    return run_pipeline("gold_daily", options, lambda p: build(p, args.lake, args.as_of))


if __name__ == "__main__":
    main()
