"""Streaming ingest: Pub/Sub -> raw, bronze and dead letter, appended as windowed files.

    python -m pipelines.stream_ingest --subscription projects/P/subscriptions/S --lake DIR \\
        [--window-seconds 60] [--run-for SECONDS] [--runner ...]

* raw: every message byte for byte, with message id, attributes, publish
  time and ingest time, one Parquet file per window pane (never rewritten);
* bronze: the batch path's ``ParseToBronze``, appended per record type in
  ``event_date``/``platform`` partitions;
* dead letter: every rejected message with its typed reason.

Messages are windowed by ingest time (when this pipeline received them), so a
backlog published before the job started is written, not dropped as late.
Redeliveries and retried publishes are kept in raw and bronze as received;
identity dedup happens downstream (silver). The daily batch backfill reads
these raw files too (``--input 'LAKE/raw/**/*.parquet'``).

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

from pipelines.common import parse, setup_logging
from schemas import contract
from schemas.contract import RECORD_TYPES
from schemas.tables import BRONZE, DEAD_LETTER, RAW, SILVER
from transforms.bronze import DEAD_LETTER as DEAD_LETTER_TAG
from transforms.bronze import ParseToBronze, pii_key_from_env
from transforms.lake_io import WriteCurrentSnapshot, WriteWindowedFiles, list_files, table_dir
from transforms.sessionize import ALLOWED_LATENESS_SECONDS, KINDS as SESSION_KINDS, SessionizeEvents

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
          allowed_lateness: int = ALLOWED_LATENESS_SECONDS) -> None:
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
    silver = session_records | "SessionizeEvents" >> SessionizeEvents(allowed_lateness_seconds=allowed_lateness)
    for name in ("silver_sessions", "silver_views", "silver_clicks", "silver_events"):
        _ = silver[name] | f"Upsert_{name}" >> WriteCurrentSnapshot(SILVER[name], lake, window_seconds)


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
    """Rows per layer written so far (from Parquet footers, without reading data)."""
    counts = {}
    for layer, tables in (("raw", [RAW]), ("bronze", list(BRONZE.values())), ("dead letter", [DEAD_LETTER])):
        counts[layer] = 0
        for table in tables:
            for path in list_files(table_dir(lake, table)):
                with FileSystems.open(path) as f:
                    counts[layer] += pq.ParquetFile(f).metadata.num_rows
    return counts


def main(argv=None, stop_when=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscription", required=True, help="projects/P/subscriptions/S")
    parser.add_argument("--lake", required=True, help="lakehouse root (local folder or gs://...)")
    parser.add_argument("--window-seconds", type=int, default=60, help="length of the file windows (default 60)")
    parser.add_argument("--allowed-lateness-hours", type=float, default=ALLOWED_LATENESS_SECONDS / 3600,
                        help="event-time lateness still applied to streaming silver (default 48)")
    parser.add_argument("--run-for", type=float, help="local runs: cancel after this many seconds")
    args, options = parse(parser, argv, local_runner=STREAMING_RUNNER, streaming=True)
    setup_logging()
    print(f"stream_ingest: {args.subscription} -> {args.lake} ({args.window_seconds} s windows)")
    p = beam.Pipeline(options=options)
    build(p, args.subscription, args.lake, args.window_seconds, pii_key_from_env(),
          int(args.allowed_lateness_hours * 3600))
    if args.run_for is None:
        result = p.run()
        result.wait_until_finish()
        return result
    logging.info("running for at most %.0f s", args.run_for)
    return run_for(p, args.lake, args.run_for, stop_when)


if __name__ == "__main__":
    main()
