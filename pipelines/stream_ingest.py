"""Streaming ingest: Pub/Sub -> raw, bronze, dead letter and streaming silver.

    python -m pipelines.stream_ingest --subscription projects/P/subscriptions/S --lake DIR \\
        [--window-seconds 60] [--allowed-lateness-hours 48] [--join-state-days 30] \\
        [--early-firing-seconds N] [--run-for SECONDS] [--runner ...]
        [--sink bigquery --project P [--bigquery-endpoint URL]]

* raw: every message byte for byte, with message id, attributes, publish
  time and ingest time, one Parquet file per window pane (never rewritten);
* bronze: the batch path's ``ParseToBronze``, appended per record type in
  ``event_date``/``platform`` partitions; dead letter likewise;
* silver (``silver_stream/<table>/current.parquet``, one current row per
  key): sessions from event-time session windows with early (every window
  length, while the session is open) and late updates
  (``transforms.sessionize``), users, responses and scans from stateful
  upserts and joins (``transforms.stream_joins``); dedup by identity with the
  batch's own rules, so the result equals the batch's for the same input.

With ``--sink bigquery`` the same rows also go to BigQuery, merged at most
every window length (``transforms.bigquery_io``): bronze and the dead letter
appended by a MERGE that inserts only records not received before (a
redelivered message adds nothing), silver upserted by a MERGE on identity
into dataset ``silver_stream`` (the daily backfill owns ``silver``, as in
the lake).

Files are windowed by ingest time (when this pipeline received a message), so
a backlog published before the job started is written, not dropped as late.
Records later than the allowed lateness are counted
(``late_beyond_allowed_lateness``), kept in raw and bronze, and reach silver
through the daily batch (``--input 'LAKE/raw/**/*.parquet'``).

Locally the runner is ``BundleBasedDirectRunner`` and ``--run-for`` bounds
the run (a streaming job never ends on its own); on Dataflow pass
``--runner=DataflowRunner`` and leave ``--run-for`` out.
"""
from __future__ import annotations

import argparse
import logging
import time

import apache_beam as beam
import orjson
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.utils.timestamp import Timestamp

from pipelines.common import add_sink_flags, bigquery_target, parse, setup_logging
from schemas import contract
from schemas.contract import RECORD_TYPES
from schemas.tables import BRONZE, DEAD_LETTER, RAW, SILVER, SILVER_STREAM
from transforms.bigquery_io import BigQueryTarget, BigQueryWrite, EnsureTables, MergeIntoBigQuery
from transforms.bronze import DEAD_LETTER as DEAD_LETTER_TAG
from transforms.bronze import ParseToBronze, pii_key_from_env
from transforms.lake_io import WriteCurrentSnapshot, WriteWindowedFiles, list_files, stream_snapshot_path, table_dir
from transforms.sessionize import ALLOWED_LATENESS_SECONDS, KINDS as SESSION_KINDS, SessionizeEvents
from transforms.stream_joins import JoinToParent, UpsertUsers

STREAMING_RUNNER = "BundleBasedDirectRunner"


class PubsubToRawFn(beam.DoFn):
    """PubsubMessage -> raw-layer row, timestamped with its ingest time."""

    def __init__(self):
        self._messages = Metrics.counter("funnel", "messages_read")

    def process(self, message):
        self._messages.inc()
        ingested = contract.now_micros()
        publish = message.publish_time
        row = {
            "ingest_date": contract.micros_to_date(ingested),
            "message_id": message.message_id,
            "publish_time": None if publish is None else int(publish.timestamp() * 1_000_000),
            "attributes_json": orjson.dumps(dict(message.attributes), option=orjson.OPT_SORT_KEYS).decode()
            if message.attributes else None,
            "ingested_at": ingested,
            "source_file": None,
            "source_line": None,
            "data": message.data,
        }
        yield beam.window.TimestampedValue(row, Timestamp(micros=ingested))


def build(p: beam.Pipeline, subscription: str, lake: str, window_seconds: int, pii_key: bytes,
          allowed_lateness: int = ALLOWED_LATENESS_SECONDS, join_state_days: int = 30,
          early_firing_seconds: int | None = None, bigquery: BigQueryTarget | None = None) -> None:
    """``bigquery``: also merge bronze, dead letter and silver there."""
    raw = (p
           | "ReadPubSub" >> beam.io.ReadFromPubSub(subscription=subscription, with_attributes=True)
           | "ToRawRows" >> beam.ParDo(PubsubToRawFn()))
    _ = raw | "AppendRaw" >> WriteWindowedFiles(RAW, lake, window_seconds)
    parsed = raw | "ParseToBronze" >> ParseToBronze(pii_key, "stream_ingest")
    for name, table in BRONZE.items():
        _ = parsed[name] | f"Append_{name}" >> WriteWindowedFiles(table, lake, window_seconds)
    _ = parsed[DEAD_LETTER_TAG] | "AppendDeadLetter" >> WriteWindowedFiles(DEAD_LETTER, lake, window_seconds)

    session_records = (
        [parsed[RECORD_TYPES[kind].bronze_table] | f"Tag_{kind}" >> beam.Map(lambda r, k=kind: (k, r))
         for kind in SESSION_KINDS]
        | "SessionRecords" >> beam.Flatten())
    silver = session_records | "SessionizeEvents" >> SessionizeEvents(
        allowed_lateness_seconds=allowed_lateness,
        early_firing_seconds=window_seconds if early_firing_seconds is None else early_firing_seconds)
    join_expiry = join_state_days * 24 * 3600
    silver["silver_users"] = parsed["bronze_users"] | "UpsertUsers" >> UpsertUsers(join_expiry)
    silver["silver_event_responses"] = (
        (parsed["bronze_event_responses"], silver["silver_events"])
        | "ResponsesToEvents" >> JoinToParent("event_response", "event_id", ("session_id", "user_id", "platform"),
                                              join_expiry))
    silver["silver_user_activity"] = (
        (parsed["bronze_user_activity"], silver["silver_event_responses"])
        | "ActivitiesToResponses" >> JoinToParent("user_activity", "response_id",
                                                  ("event_id", "session_id", "user_id", "platform"), join_expiry))
    for name, table in SILVER.items():
        _ = silver[name] | f"Upsert_{name}" >> WriteCurrentSnapshot(table, lake, window_seconds)

    if bigquery is not None:
        merges = [(parsed[name], BigQueryWrite(table, "append")) for name, table in BRONZE.items()]
        merges.append((parsed[DEAD_LETTER_TAG], BigQueryWrite(DEAD_LETTER, "append")))
        merges += [(silver[name], BigQueryWrite(table, "upsert")) for name, table in SILVER_STREAM.items()]
        _ = p | "EnsureBigQueryTables" >> EnsureTables(bigquery, [write.table for _, write in merges])
        for rows, write in merges:
            _ = rows | f"MergeIntoBigQuery_{write.table.layer}_{write.table.name}" >> MergeIntoBigQuery(
                bigquery, write, window_seconds)


def run_for(p: beam.Pipeline, lake: str, seconds: float, stop_when=None, report_every: float = 10.0):
    """Runs a streaming pipeline until ``seconds`` pass (or ``stop_when()`` is
    true), printing what has landed in the lake, then cancels it.

    Progress is read from the lake, not from Beam counters: the local
    BundleBasedDirectRunner under-reports counters in streaming mode."""
    started = time.time()
    result = p.run()
    last_report = started
    try:
        while time.time() - started < seconds:
            if stop_when is not None and stop_when():
                break
            time.sleep(0.5)
            if time.time() - last_report >= report_every:
                last_report = time.time()
                print(f"  {time.time() - started:5.0f} s: " + ", ".join(
                    f"{layer} {n:,}" for layer, n in landed_rows(lake).items()) + " rows", flush=True)
    finally:
        result.cancel()
    print(f"\nstream_ingest ran {time.time() - started:.0f} s; in the lake: " + ", ".join(
        f"{layer} {n:,}" for layer, n in landed_rows(lake).items()) + " rows")
    return result


def landed_rows(lake: str) -> dict[str, int]:
    """Rows per layer written so far, and current streaming silver sessions
    (from Parquet footers, without reading data)."""
    def rows(path):
        with FileSystems.open(path) as f:
            return pq.ParquetFile(f).metadata.num_rows

    counts = {}
    for layer, tables in (("raw", [RAW]), ("bronze", list(BRONZE.values())), ("dead letter", [DEAD_LETTER])):
        counts[layer] = sum(rows(path) for table in tables for path in list_files(table_dir(lake, table)))
    sessions = stream_snapshot_path(lake, SILVER["silver_sessions"])
    counts["silver sessions"] = rows(sessions) if FileSystems.exists(sessions) else 0
    return counts


def main(argv=None, stop_when=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscription", required=True, help="projects/P/subscriptions/S")
    parser.add_argument("--lake", required=True, help="lakehouse root (local folder or gs://...)")
    parser.add_argument("--window-seconds", type=int, default=60, help="length of the file windows (default 60)")
    parser.add_argument("--allowed-lateness-hours", type=float, default=ALLOWED_LATENESS_SECONDS / 3600,
                        help="event-time lateness still applied to streaming silver (default 48)")
    parser.add_argument("--join-state-days", type=int, default=30,
                        help="how long a response or scan can trail its parent and still join (default 30)")
    parser.add_argument("--early-firing-seconds", type=int,
                        help="update open sessions in silver this often (default: the window length; 0: only "
                             "when a session closes, 30 minutes after its last record)")
    parser.add_argument("--run-for", type=float, help="local runs: cancel after this many seconds")
    add_sink_flags(parser, "bronze, the dead letter and silver")
    args, options = parse(parser, argv, local_runner=STREAMING_RUNNER, streaming=True)
    bigquery = bigquery_target(parser, args, options)
    setup_logging()
    print(f"stream_ingest: {args.subscription} -> {args.lake}"
          + (f" and BigQuery {bigquery.project}" if bigquery else "") + f" ({args.window_seconds} s windows)")
    p = beam.Pipeline(options=options)
    build(p, args.subscription, args.lake, args.window_seconds, pii_key_from_env(),
          int(args.allowed_lateness_hours * 3600), args.join_state_days, args.early_firing_seconds, bigquery)
    if args.run_for is None:
        result = p.run()
        result.wait_until_finish()
        return result
    logging.info("running for at most %.0f s", args.run_for)
    return run_for(p, args.lake, args.run_for, stop_when)


if __name__ == "__main__":
    main()
