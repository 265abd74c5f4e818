"""The streaming job's transforms: Pub/Sub messages -> raw, bronze, dead
letter, silver (merged, the batch's own silver), alerts, and (optionally)
BigQuery.

``StreamingLakehouse`` is the whole job minus the source, so a pipeline only
wires Pub/Sub into it, and a test or benchmark can feed it any bounded
collection of messages. It is kept to a few steps, because a runner pays a
fixed cost per step and bundle (the local runner pulls 10 messages per
bundle):

1. ``Parse`` (one DoFn): message -> raw row, bronze row or dead letter (the
   batch's per-record definition, ``transforms.rules.bronze.parse_record``, or its
   columnar parse for larger bundles), each keyed for its lake file;
2. ``AppendToLake``: every table's rows of a processing-time batch appended
   to its Delta table in one commit per table;
3. ``MergeSilver``: silver brought up to bronze after each batch
   (``transforms.lake.silver.catch_up``: the backfill's merge, so stream and
   batch keep one silver with one rule); it emits the rows it changed;
4. ``Alerts`` over those rows, appended to ``ops_alerts``; with BigQuery,
   bronze, dead letter and the changed silver rows merged there.

The only per-key state is the alerts' (``transforms.streaming.alerts``): silver
needs none, since every merge reads the rows it touches from the lake.

Processing-time triggers (the batches) are options: ``None`` gives one
batch when the input ends, which FnApiRunner can run over bounded input
(``make bench-stream-cpu``).
"""

from __future__ import annotations

import uuid
from collections import defaultdict

import apache_beam as beam
import orjson
from apache_beam.typehints import typehints
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from schemas import contract
from schemas.quality import StreamFreshness, StreamVolume
from schemas.tables import BRONZE, DEAD_LETTER, DQ_RESULTS, OPS_ALERTS_STREAM, RAW, SILVER, SINK_DEAD_LETTER
from transforms import metrics
from transforms.metrics import ParseCounters
from transforms.rules.bronze import parse_record
from transforms.rules.bronze_arrow import parse_chunk
from transforms.rules.pii import PiiKeySource
from transforms.sinks.bigquery import BigQueryTarget, BigQueryWrite, EnsureTables, WriteMode, silver_merger
from transforms.sinks.dead_letter import SinkDeadLetter
from transforms.streaming.alerts import (
    ALLOWED_LATENESS_SECONDS,
    SHARDS,
    HealthOptions,
    PublishAlertsFn,
    StreamingAlerts,
)
from transforms.streaming.sinks import (
    PIPELINE,
    BatchEvery,
    MergeBatchesFn,
    MergeSilverFn,
    Rows,
    WriteBatchFilesFn,
    lake_values,
)

LAKE_TABLES = {t.name: t for t in (RAW, *BRONZE.values(), DEAD_LETTER)}
# (table name, rows): declared, as the inferred type would include the tagged outputs
LAKE_ROWS = typehints.KV[str, typehints.Any]


def raw_row(message, ingested_micros: int) -> dict:
    """A Pub/Sub message as a raw-layer row (``schemas.tables.RAW``)."""
    publish = message.publish_time
    return {
        "ingest_date": contract.micros_to_date(ingested_micros),
        "message_id": message.message_id,
        "publish_time": None if publish is None else int(publish.timestamp() * 1_000_000),
        "attributes_json": orjson.dumps(dict(message.attributes), option=orjson.OPT_SORT_KEYS).decode()
        if message.attributes
        else None,
        "ingested_at": ingested_micros,
        "source_file": None,
        "source_line": None,
        "data": message.data,
    }


class ParseMessageFn(beam.DoFn):
    """PubsubMessages -> ``(table, rows)`` for the lake: raw rows, and bronze
    rows or dead letters, grouped per bundle and table (Beam's cost is per
    element).

    Messages are parsed when the bundle ends (or every ``BUFFERED``). A
    bundle of at least ``COLUMNAR_FROM`` goes through the batch path's
    columnar parse (``transforms.rules.bronze_arrow.parse_chunk``,
    property-tested equal to the per-record definition), a smaller one
    record by record (the local runner's bundles are 10 messages, where the
    columnar parse's fixed cost would dominate). The clock the columnar parse
    checks timestamps against is the latest arrival of its bundle."""

    COLUMNAR_FROM = 32
    BUFFERED = 65536

    def __init__(self, pii_key_source: PiiKeySource):
        self._pii_key_source = pii_key_source
        self._messages = metrics.counter("messages_read")
        self._counters = ParseCounters()

    def setup(self):
        self._pii_key = self._pii_key_source.resolve_once()  # on the worker, see transforms.rules.pii

    def start_bundle(self):
        self._buffer = []

    def process(self, message, window=beam.DoFn.WindowParam):
        self._buffer.append((message, contract.now_micros(), window))
        if len(self._buffer) >= self.BUFFERED:
            yield from self._flush()

    def finish_bundle(self):
        yield from self._flush()

    def _flush(self):
        buffered, self._buffer = self._buffer, []
        self._messages.inc(len(buffered))
        metrics.add(self._counters.read, len(buffered))
        by_window = defaultdict(list)
        for message, ingested, window in buffered:
            by_window[window].append((message, ingested))
        for window, messages in by_window.items():
            lake, earliest = defaultdict(list), min(ingested for _, ingested in messages)
            if len(messages) >= self.COLUMNAR_FROM:
                self._columnar(messages, lake)
            else:
                for message, ingested in messages:
                    raw = raw_row(message, ingested)
                    table, row = parse_record(raw, self._pii_key, "stream_ingest", ingested)
                    self._counters.count(table, row)
                    lake[RAW.name].append(lake_values(RAW, raw))
                    lake[table].append(lake_values(LAKE_TABLES[table], row))
            at = Timestamp(micros=earliest)
            for table, rows in lake.items():
                yield WindowedValue((table, Rows(rows)), at, [window])

    def _columnar(self, messages, lake) -> None:
        raws = [raw_row(message, ingested) for message, ingested in messages]
        parsed = parse_chunk(
            RAW.to_arrow(raws, with_partition_columns=True),
            self._pii_key,
            "stream_ingest",
            max(ingested for _, ingested in messages),
        )
        for name, n in parsed.valid.items():
            metrics.add(self._counters.valid[name], n)
        for reason, n in parsed.rejected.items():
            metrics.add(self._counters.rejected[reason], n)
        lake[RAW.name].extend(lake_values(RAW, raw) for raw in raws)
        for name, rows in [*parsed.bronze.items(), (DEAD_LETTER.name, parsed.dead_letter)]:
            names = LAKE_TABLES[name].column_names
            columns = LAKE_TABLES[name].pipeline_columns(rows)
            lake[name].extend(zip(*(columns[c] for c in names)))


def _alert_lake_rows(rows):
    return OPS_ALERTS_STREAM.name, Rows([lake_values(OPS_ALERTS_STREAM, alert) for alert in rows])


def _quality_lake_rows(rows):
    return DQ_RESULTS.name, Rows([lake_values(DQ_RESULTS, row) for row in rows])


class StreamingLakehouse(beam.PTransform):
    """PubsubMessages -> the lake (raw, bronze, dead letter and alert files;
    silver merged), with ``bigquery`` BigQuery, with ``alerts_topic`` the
    alerts on that Pub/Sub topic (``alert_grace_seconds``: see
    ``transforms.streaming.alerts``; ``allowed_lateness_seconds``: how long a
    decided alert is remembered; ``health``: the stream health checks'
    settings, default the declared ones, ``schemas.tables.RAW``). Returns
    the written file names."""

    def __init__(
        self,
        lake: str,
        pii_key_source: PiiKeySource,
        window_seconds: int = 60,
        allowed_lateness_seconds: int = ALLOWED_LATENESS_SECONDS,
        sink_every_seconds: int | None = None,
        bigquery: BigQueryTarget | None = None,
        shards: int = SHARDS,
        alerts_topic: str | None = None,
        alert_grace_seconds: float = 0,
        run_id: str | None = None,
        health: tuple | None = None,
    ):
        super().__init__()
        # Names this launch in every commit it makes (transforms.streaming.sinks).
        self._run_id = run_id or f"stream_ingest-{uuid.uuid4().hex}"
        self._lake, self._pii_key_source, self._window = lake, pii_key_source, window_seconds
        self._lateness, self._sink_every, self._bigquery = allowed_lateness_seconds, sink_every_seconds, bigquery
        self._shards, self._alerts_topic, self._alert_grace = shards, alerts_topic, alert_grace_seconds
        self._health = None
        if sink_every_seconds is not None:  # timers on processing time: a streaming run
            freshness, volume = health or (
                next(c for c in RAW.checks if isinstance(c, StreamFreshness)),
                next(c for c in RAW.checks if isinstance(c, StreamVolume)),
            )
            # parallel bundles and batches reorder receipts by a batch or two: a window waits three past its end
            self._health = HealthOptions(freshness, volume, 3 * sink_every_seconds, self._run_id)

    def expand(self, messages):
        parsed = messages | "Parse" >> beam.ParDo(ParseMessageFn(self._pii_key_source)).with_output_types(LAKE_ROWS)
        batches = parsed | "Batches" >> BatchEvery(self._sink_every)
        files = batches | "AppendToLake" >> beam.ParDo(
            WriteBatchFilesFn(list(LAKE_TABLES.values()), self._lake, self._run_id)
        )
        # After each batch's appends: silver brought up to bronze (whatever the other paths added too).
        merged = (
            files
            | "EveryBatch" >> beam.Map(lambda path: ("silver", 1)).with_output_types(LAKE_ROWS)
            | "MergeBatches" >> BatchEvery(self._sink_every)
            | "MergeSilver"
            >> beam.ParDo(MergeSilverFn(self._lake, silver_merger(self._bigquery))).with_output_types(LAKE_ROWS)
        )
        alerts = StreamingAlerts(self._shards, self._sink_every, self._lateness, self._alert_grace, self._health)
        if self._health is not None:
            raised, quality = (merged, batches) | "Alerts" >> alerts
        else:
            raised, quality = merged | "Alerts" >> alerts, None
        dead_letter = SinkDeadLetter(self._lake, PIPELINE, self._run_id, self._bigquery)
        if self._alerts_topic is not None:
            _ = raised | "PublishAlerts" >> beam.ParDo(PublishAlertsFn(self._alerts_topic, dead_letter))
        alert_rows = [raised | "AlertRows" >> beam.Map(_alert_lake_rows).with_output_types(LAKE_ROWS)]
        if quality is not None:
            alert_rows.append(quality | "QualityRows" >> beam.Map(_quality_lake_rows).with_output_types(LAKE_ROWS))
        alert_batches = tuple(alert_rows) | "AlertBatches" >> BatchEvery(self._sink_every)
        alert_files = alert_batches | "AppendAlerts" >> beam.ParDo(
            WriteBatchFilesFn([OPS_ALERTS_STREAM, DQ_RESULTS], self._lake, self._run_id)
        )
        if self._bigquery is not None:
            # Silver is merged into BigQuery by MergeSilver, inside its claim (in the lake's order).
            appended = (*BRONZE.values(), DEAD_LETTER, OPS_ALERTS_STREAM, DQ_RESULTS)
            writes = [BigQueryWrite(t, WriteMode.APPEND) for t in appended]
            _ = messages.pipeline | "EnsureBigQueryTables" >> EnsureTables(
                self._bigquery, [w.table for w in writes] + [*SILVER.values(), SINK_DEAD_LETTER]
            )
            for name, tables in (("Lake", batches), ("Alerts", alert_batches)):
                _ = tables | f"Merge{name}IntoBigQuery" >> beam.ParDo(
                    MergeBatchesFn(self._bigquery, writes, dead_letter)
                )
        return (files, alert_files) | "AllFiles" >> beam.Flatten()
