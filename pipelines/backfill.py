"""Batch backfill: landing files (or the raw layer) -> raw, bronze, dead letter, silver.

    python -m pipelines.backfill --input 'DIR/*.jsonl' --lake DIR [--from DATE --to DATE] [--rebuild-silver]
        [--runner ...]

* raw: each landing content copied once (recorded by its SHA-256, with when
  it was first received; never rewritten);
* bronze: typed rows per record type, partitioned by ``event_date``/``platform``;
* dead letter: every rejected record with a typed reason;
* silver: what bronze gained merged into the rows it touches
  (``transforms.lake.silver``); with ``--rebuild-silver``, or into a lake
  whose silver was never merged, recomputed from all of bronze.

Re-running the same input replaces that input's own bronze and dead-letter
files, so bronze holds each received record once and silver comes out the
same (the merge takes only rows bronze did not hold). With ``--from/--to``
exactly the bronze ``event_date`` partitions of that range are replaced by
what the input holds for it (replay the raw layer with
``--input 'LAKE/raw/**/*.parquet'`` to rebuild a range); records of other
dates are counted (``outside_date_range``) and left alone.

Workers write data files; one final step commits them to the lake's Delta
tables (``transforms.lake.commit``): raw's new copies, then each bronze
table and the dead letter (the input's own rows, or the date range,
replaced in one commit each, against the versions this run read), then
the silver merge (or the rebuilt tables) and silver's release. A run that
fails before the commit leaves every table, raw included, at its version; a
rerun of a committer that died halfway skips what it committed already, and
bronze it committed is merged by the next merge of any path.

With ``--sink bigquery --project P`` the same rows also go to BigQuery
before the lake commit (``transforms.sinks.bigquery``): bronze and the dead
letter by a MERGE on where each record was received, silver by a MERGE on
identity of the rows the merge changed (a rebuild: all of silver). Each
MERGE restates what this run's lake rule restates (the input's own rows, or
the date range), so a rerun or a replay never duplicates a row and BigQuery
holds what the lake holds.
"""

from __future__ import annotations

import argparse
import logging
import os
import uuid
from datetime import UTC, date, datetime, timedelta

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipelines.arguments import check_lake
from pipelines.common import (
    add_pii_key_flags,
    add_sink_flags,
    bigquery_target,
    counters,
    parse,
    pii_key_source,
    pipeline_parser,
    run_pipeline,
    setup_logging,
)
from schemas import contract
from schemas.contract import RECORD_TYPES
from schemas.tables import BRONZE, DEAD_LETTER, RAW, SILVER
from transforms.batch.parse import ParseChunkFn
from transforms.batch.quality import CheckBackfill
from transforms.batch.silver import BuildSilver
from transforms.lake.commit import CommitLakeWrites, CommitPlan, Replace, ReplaceScope, read_plan
from transforms.lake.files import WriteDataFiles
from transforms.lake.landing import (
    LANDING_SUFFIXES,
    RAW_FILES,
    ReadLandingFiles,
    distinct_contents,
    expand_inputs,
    unsupported_inputs,
)
from transforms.lake.silver import CommitAndMergeFn, head
from transforms.lake.tables import LakeFile, ReadLakeTable, read_file, snapshot
from transforms.rules.pii import PiiKeySource
from transforms.rules.silver import shuffled_columns
from transforms.sinks.bigquery import BigQueryTarget, BigQueryWrite, PublishToBigQuery, WriteMode, silver_merger
from transforms.sinks.quality import DataQualityError, run_failures
from transforms.sinks.run_log import AccountingError, backfill_problems, write_run_log
from transforms.sinks.silver_sync import follow_lake_silver


def dated_pattern(pattern: str, today: date) -> str:
    """``{yesterday}``/``{today}`` in an input glob -> the UTC dates: a
    scheduled launch (Cloud Scheduler's body is fixed) reads the day before."""
    return pattern.replace("{yesterday}", (today - timedelta(days=1)).isoformat()).replace("{today}", today.isoformat())


def _date_range(first: date, last: date) -> list[str]:
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def _stream_raw_files_left_out(paths: list, lake: str) -> list[LakeFile]:
    """Raw-layer files of the streaming job that ``paths`` leave out. Rows from
    Pub/Sub carry no landing file, so replaying any of them restates all of
    them (``Replace`` scope ``SOURCES``, value ``None``): a replay without
    ``--from/--to`` must hold every one, or the records of the others would
    leave bronze."""
    given = {p.relpath for p in paths if isinstance(p, LakeFile)}
    return [f for f in snapshot(lake, RAW).files if f.from_pubsub and f.relpath not in given]


def _source_files(paths: list) -> frozenset:
    """The landing files whose records the inputs hold (``None``: Pub/Sub). A
    raw-layer file replays records of the landing files it was copied from."""
    files = set()
    for path in paths:
        if isinstance(path, LakeFile):
            files.update(read_file(path, RAW, ("source_file",)).column(0).unique().to_pylist())
        else:
            files.add(path)
    return frozenset(files)


# Bytes of input per shard of the silver shuffles: a shard is what one step
# holds in memory at once (about 100k records).
BYTES_PER_SHARD = 32 << 20


def shard_count(paths: list, kept_bronze: list[LakeFile]) -> int:
    """Shards for the silver shuffles, from the size of what the run reads."""
    landing = [p for p in paths if not isinstance(p, LakeFile)]
    sizes = [m.size_in_bytes for result in FileSystems.match(landing) for m in result.metadata_list] if landing else []
    sizes += [f.size for f in [*kept_bronze, *(p for p in paths if isinstance(p, LakeFile))]]
    return max(1, min(512, -(-sum(sizes) // BYTES_PER_SHARD)))


def rebuilds_silver(lake: str, rebuild_silver: bool) -> bool:
    """Whether a run recomputes silver from all of bronze: when asked
    (``--rebuild-silver``, after a rule changed) or when silver was never
    merged (a new lake: the sharded recompute is the fast way in). Otherwise
    it merges what bronze gains (``transforms.lake.silver``)."""
    return rebuild_silver or head(lake)[0] is None


def build(
    p: beam.Pipeline,
    paths: list,
    sources: frozenset,
    lake: str,
    date_range: tuple[date, date] | None,
    pii_key_source: PiiKeySource,
    now: int,
    bigquery: BigQueryTarget | None = None,
    shards: int | None = None,
    run_id: str | None = None,
    rebuild_silver: bool = False,
) -> tuple[int, bool]:
    """``paths``: from ``expand_inputs``; ``sources``: the landing files the
    inputs hold (``_source_files``); ``bigquery``: also merge bronze, dead
    letter and silver there; ``shards``: of the silver shuffles (default:
    from the input size); ``run_id``: names the run's commits;
    ``rebuild_silver``: see ``rebuilds_silver``. Returns, for the accounting
    check, the bronze rows of other landing files that silver is rebuilt
    with (0 when the run merges) and whether it rebuilds."""
    run_id = run_id or f"backfill-{uuid.uuid4().hex}"
    days = frozenset(_date_range(*date_range)) if date_range else None
    if date_range is not None:
        rules = [Replace(t, ReplaceScope.PARTITIONS, days) for t in BRONZE.values()]
    else:
        rules = [Replace(t, ReplaceScope.SOURCES, sources) for t in BRONZE.values()]
    rules.append(Replace(DEAD_LETTER, ReplaceScope.SOURCES, sources))
    rebuild = rebuilds_silver(lake, rebuild_silver)
    if not rebuild:  # merges send BigQuery their changes: its silver must hold the lake's first
        follow_lake_silver(bigquery, lake, "backfill", run_id)
    if rebuild:
        rules += [Replace(table, ReplaceScope.TABLE) for table in SILVER.values()]
    plan = read_plan(lake, rules)  # the versions this run reads and replaces
    kept = (
        {rule.table.name: rule.surviving(read) for rule, read in plan if rule.table.name in BRONZE} if rebuild else {}
    )
    shards = shards or shard_count(paths, [f for files in kept.values() for f in files])

    read = p | "ReadLandingFiles" >> ReadLandingFiles(paths, lake, ingested_at=now)
    parsed = read.chunks | "ParseToBronze" >> beam.ParDo(
        ParseChunkFn(pii_key_source, "backfill", now, days)
    ).with_outputs(DEAD_LETTER.name, main="bronze")
    written = [
        (parsed.bronze, parsed[DEAD_LETTER.name])
        | "WriteBronze" >> WriteDataFiles([*BRONZE.values(), DEAD_LETTER], lake, by_source=(*BRONZE, DEAD_LETTER.name))
    ]

    if rebuild:
        existing = tuple(
            p
            | f"ReadKept_{rt.bronze_table}"
            >> ReadLakeTable(BRONZE[rt.bronze_table], tuple(kept[rt.bronze_table]), columns=shuffled_columns(rt.name))
            for rt in RECORD_TYPES.values()
        )
        silver = (parsed.bronze, *existing) | "BuildSilver" >> BuildSilver(shards)
        written.append(silver | "WriteSilver" >> WriteDataFiles(list(SILVER.values()), lake))

    written = tuple(written) | "AllWritten" >> beam.Flatten()
    if bigquery is not None:
        written = written | "PublishToBigQuery" >> PublishToBigQuery(
            bigquery, [BigQueryWrite(rule.table, WriteMode.UPSERT, rule) for rule in rules]
        )
    commit_plan = CommitPlan(run_id, "backfill", plan)
    committed = (
        (written, read[RAW_FILES])
        | "WithRawCopies" >> beam.Flatten()
        | "Commit"
        >> CommitLakeWrites(lake, commit_plan, CommitAndMergeFn(lake, commit_plan, rebuild, silver_merger(bigquery)))
    )
    # The checks of the days the run wrote, once they are in (schemas.quality).
    _ = written | "CheckQuality" >> CheckBackfill(lake, run_id, committed, bigquery)
    return sum(f.rows for files in kept.values() for f in files), rebuild


def _check_literal_inputs(parser: argparse.ArgumentParser, patterns: list[str]) -> None:
    """A path without wildcards names one file: missing, or a folder, is a
    mistake (a pattern matching nothing is a day without files, a success)."""
    for pattern in patterns:
        if any(c in pattern for c in "*?["):
            continue
        if not FileSystems.exists(pattern):
            parser.error(f"--input {pattern} does not exist (a pattern with * that matches nothing is no error)")
        if "://" not in pattern and os.path.isdir(pattern):
            parser.error(f"--input {pattern} is a folder; name its files, e.g. --input '{pattern}/*.jsonl'")


def _true_or_false(text: str) -> bool:
    """A flag's value as a template launch passes it (``--rebuild_silver=true``)."""
    if text.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() == "true"


def arg_parser() -> argparse.ArgumentParser:
    parser = pipeline_parser(__doc__)
    parser.add_argument(
        "--input",
        required=True,
        action="append",
        help="glob of landing files (.jsonl, .jsonl.gz, .parquet) or raw-layer files; repeatable; "
        "{yesterday} and {today} become UTC dates (YYYY-MM-DD) at launch, for schedules",
    )
    parser.add_argument("--lake", required=True, help="lakehouse root (local folder or gs://...)")
    parser.add_argument("--from", dest="date_from", type=date.fromisoformat, help="first event_date to replace")
    parser.add_argument("--to", dest="date_to", type=date.fromisoformat, help="last event_date to replace")
    parser.add_argument(
        "--rebuild-silver",
        nargs="?",
        const=True,
        default=False,
        type=_true_or_false,
        help="recompute silver from all of bronze instead of merging this run's rows into it (after a rule changed)",
    )
    add_sink_flags(parser, "bronze, the dead letter and silver")
    add_pii_key_flags(parser)
    return parser


def main(argv=None):
    parser = arg_parser()
    args, options = parse(parser, argv)
    bigquery = bigquery_target(parser, args, options)
    key_source = pii_key_source(parser, args, options)
    if (args.date_from is None) != (args.date_to is None):
        parser.error("--from and --to go together")
    check_lake(parser, args.lake)
    setup_logging()
    args.input = [dated_pattern(pattern, datetime.now(UTC).date()) for pattern in args.input]
    for pattern in unsupported_inputs(args.input, args.lake):
        parser.error(
            f"--input {pattern} matches no file a backfill reads: landing files end in "
            f"{', '.join(LANDING_SUFFIXES)}; raw-layer files are named under LAKE/raw/"
        )
    _check_literal_inputs(parser, args.input)
    paths, repeated = distinct_contents(expand_inputs(args.input, args.lake))
    for path, same in repeated:
        print(f"backfill: {path} has the same content as {same}: read once")
    if not paths:
        # A day without landing files (producers that only publish to Pub/Sub): nothing to read is a
        # success, logged with zero counts, not a failed scheduled launch.
        print(f"backfill: no input files match {args.input}: nothing to read")
        run_id = f"backfill-{uuid.uuid4().hex}"
        write_run_log(args.lake, "backfill", run_id, {"files_read": 0, "records_read": 0}, True, bigquery)
        return None
    now = contract.now_micros()
    date_range = (args.date_from, args.date_to) if args.date_from else None
    sources = _source_files(paths)
    left_out = _stream_raw_files_left_out(paths, args.lake) if date_range is None and None in sources else []
    if left_out:
        parser.error(
            f"the input replays records from Pub/Sub but leaves out {len(left_out)} of the raw layer's "
            f"stream files (e.g. {left_out[0].path}); replay them all (--input 'LAKE/raw/**/*.parquet') "
            "or replace a date range (--from/--to)"
        )
    print(
        f"backfill: {len(paths)} input files -> {args.lake}"
        + (f" and BigQuery {bigquery.project}" if bigquery else "")
        + (f" (event_date {args.date_from} .. {args.date_to})" if date_range else "")
    )
    run_id, planned = f"backfill-{uuid.uuid4().hex}", {}

    def wiring(p):
        planned["silver"] = build(
            p,
            paths,
            sources,
            args.lake,
            date_range,
            key_source,
            now,
            bigquery,
            run_id=run_id,
            rebuild_silver=args.rebuild_silver,
        )

    result, finished = run_pipeline("backfill", options, wiring, wait=args.wait)
    if not finished:  # submitted, not waited for: the job commits the lake itself; nothing to account for here
        logging.info("backfill %s: submitted; run log and accounting check need --wait", run_id)
        return result
    values = counters(result)
    problems = backfill_problems(values, *planned["silver"])
    write_run_log(args.lake, "backfill", run_id, values, not problems, bigquery)
    if problems:
        raise AccountingError(f"backfill {run_id}: the accounting does not balance: " + "; ".join(problems))
    blocking, warnings = run_failures(args.lake, run_id)
    if warnings:
        print(f"backfill: data-quality warnings: {'; '.join(warnings[:20])}" + (" ..." if len(warnings) > 20 else ""))
    if blocking:
        raise DataQualityError(f"backfill {run_id}: blocking data-quality checks failed: {'; '.join(blocking)}")
    return result


if __name__ == "__main__":
    main()
