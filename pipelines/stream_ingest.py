"""Streaming ingest: Pub/Sub -> raw, bronze, dead letter, silver and alerts.

    python -m pipelines.stream_ingest --subscription projects/P/subscriptions/S --lake DIR \\
        [--window-seconds 60] [--allowed-lateness-hours 48] [--alerts-topic projects/P/topics/T]
        [--alert-grace-seconds 120] [--health-window-seconds 300] [--stall-seconds 600]
        [--run-for SECONDS] [--runner ...]
        [--sink bigquery --project P [--bigquery-endpoint URL]]

The job is ``transforms.streaming.job.StreamingLakehouse`` fed by Pub/Sub:

* raw: every message byte for byte, with message id, attributes, publish
  time and ingest time, appended to the Delta table in one commit per
  processing-time batch (never rewritten);
* bronze: the batch path's parse, appended per record type in
  ``event_date``/``platform`` partitions; dead letter likewise;
* silver (``silver/<table>``, the backfill's too): after every batch, what
  bronze gained is merged into it by the backfill's own rule
  (``transforms.lake.silver``), so a late record, a redelivery or a scan
  weeks after its payment lands where one backfill of everything would put
  it;
* operational alerts (``transforms.streaming.alerts``) over the silver rows each
  merge changes, in ``ops_alerts/``, and with ``--alerts-topic`` on that topic;
* the stream's own health (``schemas.tables.RAW``'s checks): a stall (no
  record for ``--stall-seconds``) or an app platform silent for a window
  while others send is a ``data_quality`` alert there too, and a failed row
  of ``ops/dq_results``.

With ``--sink bigquery`` the same rows also go to BigQuery every window
length (``transforms.sinks.bigquery``): bronze and the dead letter by a MERGE
that inserts only records not received before (a redelivered message adds
nothing), the changed silver rows by a MERGE on identity into dataset
``silver``.

Files are batched by processing time (when this pipeline received a
message), so a backlog published before the job started is written, not
dropped as late.

Locally the runner is ``BundleBasedDirectRunner`` and ``--run-for`` bounds
the run (a streaming job never ends on its own); on Dataflow pass
``--runner=DataflowRunner`` and leave ``--run-for`` out.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import replace

import apache_beam as beam
from apache_beam.options.pipeline_options import StandardOptions

from pipelines import local_runner
from pipelines.arguments import check_lake, positive_int
from pipelines.common import (
    add_pii_key_flags,
    add_sink_flags,
    bigquery_target,
    parse,
    pii_key_source,
    pipeline_parser,
    run_pipeline,
    setup_logging,
)
from schemas.quality import StreamFreshness, StreamVolume
from schemas.tables import BRONZE, DEAD_LETTER, RAW, SILVER
from transforms.lake.tables import snapshot
from transforms.rules.pii import PiiKeySource
from transforms.sinks.bigquery import BigQueryTarget
from transforms.sinks.silver_sync import follow_lake_silver
from transforms.streaming.alerts import ALERT_GRACE_SECONDS, ALLOWED_LATENESS_SECONDS
from transforms.streaming.job import StreamingLakehouse

STREAMING_RUNNER = "BundleBasedDirectRunner"
_DECLARED_FRESHNESS = next(c for c in RAW.checks if isinstance(c, StreamFreshness))
_DECLARED_VOLUME = next(c for c in RAW.checks if isinstance(c, StreamVolume))


def build(
    p: beam.Pipeline,
    subscription: str,
    lake: str,
    window_seconds: int,
    pii_key_source: PiiKeySource,
    allowed_lateness: int = ALLOWED_LATENESS_SECONDS,
    bigquery: BigQueryTarget | None = None,
    alerts_topic: str | None = None,
    alert_grace_seconds: float = ALERT_GRACE_SECONDS,
    health: tuple | None = None,
) -> None:
    """``bigquery``: also merge bronze, dead letter and silver there;
    ``alerts_topic``: publish the operational alerts there;
    ``alert_grace_seconds``: see ``transforms.streaming.alerts``;
    ``health``: (StreamFreshness, StreamVolume), default the declared ones."""
    # Merges send BigQuery what they change: its silver must start from the lake's.
    follow_lake_silver(bigquery, lake, "stream_ingest", "stream_ingest-follow")
    _ = (
        p
        | "ReadPubSub" >> beam.io.ReadFromPubSub(subscription=subscription, with_attributes=True)
        | "Lakehouse"
        >> StreamingLakehouse(
            lake,
            pii_key_source,
            window_seconds,
            allowed_lateness,
            sink_every_seconds=window_seconds,
            bigquery=bigquery,
            alerts_topic=alerts_topic,
            alert_grace_seconds=alert_grace_seconds,
            health=health,
        )
    )


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
                print(
                    f"  {time.time() - started:5.0f} s: "
                    + ", ".join(f"{layer} {n:,}" for layer, n in landed_rows(lake).items())
                    + " rows",
                    flush=True,
                )
    finally:
        result.cancel()
    print(
        f"\nstream_ingest ran {time.time() - started:.0f} s; in the lake: "
        + ", ".join(f"{layer} {n:,}" for layer, n in landed_rows(lake).items())
        + " rows"
    )
    return result


def landed_rows(lake: str) -> dict[str, int]:
    """Rows per layer committed so far, and silver's sessions (from the
    Delta logs' record counts, without reading data)."""
    counts = {}
    for layer, tables in (("raw", [RAW]), ("bronze", list(BRONZE.values())), ("dead letter", [DEAD_LETTER])):
        counts[layer] = sum(snapshot(lake, table).rows for table in tables)
    counts["silver sessions"] = snapshot(lake, SILVER["silver_sessions"]).rows
    return counts


def arg_parser() -> argparse.ArgumentParser:
    parser = pipeline_parser(__doc__)
    parser.add_argument("--subscription", required=True, help="projects/P/subscriptions/S")
    parser.add_argument("--lake", required=True, help="lakehouse root (local folder or gs://...)")
    parser.add_argument(
        "--window-seconds", type=positive_int, default=60, help="length of the file windows (default 60)"
    )
    parser.add_argument(
        "--allowed-lateness-hours",
        type=float,
        default=ALLOWED_LATENESS_SECONDS / 3600,
        help="how long past its due time a decided alert is remembered, so a late record "
        "neither raises nor retracts it again (default 48)",
    )
    parser.add_argument(
        "--alerts-topic",
        help="projects/P/topics/T: publish every operational alert there (they are always written to LAKE/ops_alerts)",
    )
    parser.add_argument(
        "--alert-grace-seconds",
        type=float,
        default=ALERT_GRACE_SECONDS,
        help="processing time an alert waits, once the watermark has passed its due time, for "
        "records published with its trigger (a payment's confirmation; default "
        f"{ALERT_GRACE_SECONDS})",
    )
    parser.add_argument(
        "--health-window-seconds",
        type=positive_int,
        default=_DECLARED_VOLUME.window_seconds,
        help="receipt-time window the stream's volume per platform is judged in "
        f"(default {_DECLARED_VOLUME.window_seconds}, schemas.tables.RAW)",
    )
    parser.add_argument(
        "--stall-seconds",
        type=positive_int,
        default=_DECLARED_FRESHNESS.max_silence_seconds,
        help="seconds without a record before the stream raises a stall alert "
        f"(default {_DECLARED_FRESHNESS.max_silence_seconds}, schemas.tables.RAW)",
    )
    parser.add_argument("--run-for", type=float, help="local runs: cancel after this many seconds")
    add_sink_flags(parser, "bronze, the dead letter and silver")
    add_pii_key_flags(parser)
    return parser


def main(argv=None, stop_when=None):
    parser = arg_parser()
    args, options = parse(parser, argv, local_runner=STREAMING_RUNNER, streaming=True)
    bigquery = bigquery_target(parser, args, options)
    key_source = pii_key_source(parser, args, options)
    check_lake(parser, args.lake)
    setup_logging()
    print(
        f"stream_ingest: {args.subscription} -> {args.lake}"
        + (f" and BigQuery {bigquery.project}" if bigquery else "")
        + f" ({args.window_seconds} s windows)"
    )
    if options.view_as(StandardOptions).runner == STREAMING_RUNNER:
        local_runner.tune()

    def wiring(p):
        build(
            p,
            args.subscription,
            args.lake,
            args.window_seconds,
            key_source,
            int(args.allowed_lateness_hours * 3600),
            bigquery,
            args.alerts_topic,
            args.alert_grace_seconds,
            (
                replace(_DECLARED_FRESHNESS, max_silence_seconds=args.stall_seconds),
                replace(_DECLARED_VOLUME, window_seconds=args.health_window_seconds),
            ),
        )

    if args.run_for is None:  # a local streaming run lasts until it is stopped
        return run_pipeline("stream_ingest", options, wiring, wait=args.wait)[0]
    logging.info("running for at most %.0f s", args.run_for)
    p = beam.Pipeline(options=options)
    wiring(p)
    return run_for(p, args.lake, args.run_for, stop_when)


if __name__ == "__main__":
    main()
