"""Gold daily: silver -> facts, dimension and marts, truncate and load.

    python -m pipelines.gold_daily --lake DIR [--as-of DATE] [--funnels PATH]
        [--as-of-version N | --as-of-timestamp T] [--runner ...]
        [--sink bigquery --project P [--bigquery-endpoint URL]]

Recomputes every gold table from the whole of silver (late records restate
earlier days): each ``gold/<table>`` is overwritten in one commit at the
end, then the gold release names the new versions, so readers of gold see
all of this run or all of the previous one (``transforms.lake.tables``).
``--as-of`` (default: today, UTC) leaves out records whose own time is after
that day, to restate a past day as it was knowable then. ``--funnels``
names the funnel definitions (``schemas.funnels``, a local or ``gs://``
path), each computed into ``fact_funnel`` and ``mart_funnel``; they are
kept with the lake and stay in force for every later gold run given none
(the schedule, ``erase-user``), which otherwise computes the packaged
``schemas/funnels.yaml`` (``transforms.lake.funnel_definitions``). Silver is read at
its latest release, or as of ``--as-of-version`` (a ``releases`` version)
or ``--as-of-timestamp`` (time travel: silver as it was then).

With ``--sink bigquery`` the gold tables are also replaced in BigQuery
dataset ``gold`` of ``--project`` (created from ``schemas/`` when missing),
before the lake commit: the rows are loaded into scratch tables, then one
transaction replaces every gold table, so readers see the old gold or the
new, never a mix; then the use-case views are recreated
(``transforms.sinks.bigquery``).
``--bigquery-endpoint`` points the same code at the local emulator.
"""

from __future__ import annotations

import argparse
import uuid
from datetime import UTC, date, datetime

import apache_beam as beam

from pipelines.arguments import check_lake
from pipelines.common import (
    add_sink_flags,
    bigquery_target,
    counters,
    parse,
    pipeline_parser,
    run_pipeline,
    setup_logging,
)
from schemas import contract, funnels
from schemas.tables import BRONZE, FUNNEL_DEFINITIONS, GOLD, SILVER
from schemas.views import VIEWS
from transforms.batch.gold import BuildGold, CutAtAsOfFn
from transforms.batch.quality import GoldGate
from transforms.lake.commit import CommitLakeWrites, CommitPlan, Replace, ReplaceScope, read_plan
from transforms.lake.files import WriteDataFiles
from transforms.lake.funnel_definitions import Definitions, definitions_row, in_force, packaged, write_definitions
from transforms.lake.revisions import latest_revisions
from transforms.lake.silver import catch_up
from transforms.lake.tables import ReadLakeTable, layer_versions, open_table, snapshot
from transforms.rules.defined_funnels import gold_inputs
from transforms.rules.gold import end_of_day_micros
from transforms.rules.revisions import describe
from transforms.sinks.bigquery import BigQueryTarget, BigQueryWrite, PublishToBigQuery, WriteMode, silver_merger
from transforms.sinks.quality import DataQualityError, record_revisions, run_failures
from transforms.sinks.run_log import write_run_log
from transforms.sinks.silver_sync import follow_lake_silver

# Bytes of silver Parquet per shard of the gold shuffle (about 100k rows).
BYTES_PER_SHARD = 8 << 20


def build(
    p: beam.Pipeline,
    lake: str,
    as_of: date,
    bigquery: BigQueryTarget | None = None,
    shards: int | None = None,
    silver_as_of: dict | None = None,
    run_id: str | None = None,
    definitions: Definitions | tuple[funnels.Funnel, ...] | None = None,
) -> None:
    """``bigquery``: also replace the tables there; ``shards``: of the gold
    shuffle (default: from the size of silver); ``silver_as_of``:
    ``as_of_version`` or ``as_of_timestamp`` of ``layer_versions``;
    ``run_id``: names the run's commits; ``definitions``: the funnels
    (default: those in force in the lake, else the packaged ones), committed
    with the gold tables (``transforms.lake.funnel_definitions``)."""
    recorded = None  # parsed funnels given (tests, benchmarks) are computed, not recorded
    if definitions is None or isinstance(definitions, Definitions):
        recorded = definitions or in_force(lake) or packaged()
        definitions = recorded.funnels
        print(f"gold_daily: funnels {', '.join(f.name for f in definitions)} (from {recorded.source})")
    inputs = gold_inputs(definitions)
    run_id = run_id or f"gold_daily-{uuid.uuid4().hex}"
    follow_lake_silver(bigquery, lake, "gold_daily", run_id)  # BigQuery's silver holds the lake's
    versions = layer_versions(lake, SILVER, **(silver_as_of or {}))
    files = {name: snapshot(lake, table, versions[name]).files for name, table in SILVER.items()}
    if shards is None:
        size = sum(f.size for fs in files.values() for f in fs)
        shards = max(1, min(512, -(-size // BYTES_PER_SHARD)))
    silver = tuple(
        p
        | f"Read_{name}" >> ReadLakeTable(SILVER[name], files[name], inputs[name])
        | f"CutAtAsOf_{name}" >> beam.ParDo(CutAtAsOfFn(as_of))
        for name in inputs
    )
    # The clock of the rules that wait (an abandoned cart, an overdue confirmation):
    # the end of the as-of day, or now when that is later than now.
    clock = min(end_of_day_micros(as_of), contract.now_micros())
    gold = silver | "BuildGold" >> BuildGold(shards, clock, definitions)
    written = gold | "WriteGold" >> WriteDataFiles(list(GOLD.values()), lake)
    extra_rules = []
    if recorded is not None:  # the definitions, committed (or not) with gold: in force once released
        record = p | "FunnelDefinitions" >> beam.Create([definitions_row(run_id, recorded)])
        written = (written, record | "WriteDefinitions" >> beam.Map(write_definitions, lake)) | beam.Flatten()
        extra_rules.append(Replace(FUNNEL_DEFINITIONS, ReplaceScope.FILES, frozenset()))
    # Gold's checks over the new files before anything is published or released (schemas.quality).
    gate = written | "QualityGate" >> GoldGate(lake, run_id, bigquery)
    if bigquery is not None:
        written = written | "PublishToBigQuery" >> PublishToBigQuery(
            bigquery, [BigQueryWrite(t, WriteMode.TRUNCATE) for t in GOLD.values()], VIEWS.values(), gate
        )
    plan = read_plan(lake, [Replace(t, ReplaceScope.TABLE) for t in GOLD.values()] + extra_rules)
    commit = CommitPlan(run_id, "gold_daily", plan, releases=("gold",))
    _ = written | "Commit" >> CommitLakeWrites(lake, commit, gate=gate)


def arg_parser() -> argparse.ArgumentParser:
    parser = pipeline_parser(__doc__)
    parser.add_argument("--lake", required=True, help="lakehouse root (local folder or gs://...)")
    parser.add_argument(
        "--as-of",
        dest="as_of",
        type=date.fromisoformat,
        default=datetime.now(UTC).date(),
        help="last day of data to include (default: today, UTC)",
    )
    travel = parser.add_mutually_exclusive_group()
    travel.add_argument(
        "--as-of-version", type=int, help="read silver as of this version of LAKE/releases (time travel)"
    )
    travel.add_argument(
        "--as-of-timestamp",
        type=datetime.fromisoformat,
        help="read silver as it was at this time (ISO 8601, e.g. 2026-11-02T10:00:00+00:00)",
    )
    parser.add_argument(
        "--funnels",
        help="funnel definitions (YAML, schemas/funnels.py; local or gs://), kept in the lake for later runs; "
        "default: the lake's definitions in force, else the packaged schemas/funnels.yaml",
    )
    add_sink_flags(parser, "the gold tables and the use-case views")
    return parser


def read_definitions(path: str) -> Definitions:
    """The funnel definitions at ``path`` (local or any Beam filesystem), checked."""
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(path) as f:
            text = f.read().decode("utf-8")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise funnels.FunnelDefinitionError(f"{path}: cannot be read ({e})") from None
    definitions = Definitions(text, path)
    _ = definitions.funnels  # parsed now: a mistake ends the command before the lake is read
    return definitions


def main(argv=None):
    parser = arg_parser()
    args, options = parse(parser, argv)
    try:  # first: the file a user edits is the likeliest mistake, and costs nothing to check
        definitions = read_definitions(args.funnels) if args.funnels is not None else None
    except funnels.FunnelDefinitionError as e:
        parser.error(str(e))
    bigquery = bigquery_target(parser, args, options)
    check_lake(parser, args.lake, must_exist=True)
    if not any(open_table(args.lake, table) is not None for table in (*SILVER.values(), *BRONZE.values())):
        parser.error(
            f"--lake {args.lake} holds no silver and no bronze to build gold from: run `funnel backfill` "
            "or `funnel stream` into it first"
        )
    setup_logging()
    return recompute(
        args.lake, args.as_of, options, bigquery, args.as_of_version, args.as_of_timestamp, args.wait, definitions
    )


def recompute(
    lake: str,
    as_of: date,
    options,
    bigquery: BigQueryTarget | None = None,
    as_of_version: int | None = None,
    as_of_timestamp: datetime | None = None,
    wait: bool = False,
    definitions: Definitions | None = None,
):
    """The gold run: silver brought up to bronze (unless reading an older
    silver), gold recomputed and released, the run logged. ``options``:
    Beam's, from ``parse``; ``definitions``: the funnels (default: those in
    force in the lake, else the packaged ones; ``transforms.lake.funnel_definitions``)."""

    print(
        f"gold_daily: {lake} as of {as_of} -> {lake}/gold"
        + (f" and BigQuery {bigquery.project}.gold" if bigquery else "")
    )
    silver_as_of = {"as_of_version": as_of_version, "as_of_timestamp": as_of_timestamp}
    if as_of_version is None and as_of_timestamp is None:
        # Silver up to bronze first (a no-op when the stream and the backfills merged all they added),
        # so gold never misses what bronze holds.
        catch_up(lake, "gold_daily", before_commit=silver_merger(bigquery))
    run_id = f"gold_daily-{uuid.uuid4().hex}"
    result, finished = run_pipeline(
        "gold_daily",
        options,
        lambda p: build(p, lake, as_of, bigquery, silver_as_of=silver_as_of, run_id=run_id, definitions=definitions),
        wait=wait,
    )
    if finished:  # a submitted job's counters are Dataflow's until it ends
        write_run_log(lake, "gold_daily", run_id, counters(result), bigquery=bigquery)
        blocking, warnings = run_failures(lake, run_id)
        if warnings:
            print(f"gold_daily: data-quality warnings: {'; '.join(warnings)}")
        if not blocking:
            revised = latest_revisions(lake)
            record_revisions(lake, revised, "gold_daily", bigquery)
            for r in revised:
                line = describe(r["period_start"], r["metric"], r["previous_value"], r["value"], r["late_records"])
                print(f"gold_daily: revised {line}")
        if blocking:
            raise DataQualityError(
                f"gold_daily {run_id}: gold not released (the previous release stays): blocking data-quality "
                f"checks failed: {'; '.join(blocking)}; see LAKE/dq_results or `funnel status`"
            )
    return result


if __name__ == "__main__":
    main()
