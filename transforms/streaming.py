"""The streaming job's transforms: Pub/Sub messages -> raw, bronze, dead
letter, streaming silver, and (optionally) BigQuery.

``StreamingLakehouse`` is the whole job minus the source, so a pipeline only
wires Pub/Sub into it, and a test or benchmark can feed it any bounded
collection of messages. It is kept to a few steps, because a runner pays a
fixed cost per step and bundle (the local runner pulls 10 messages per
bundle):

1. ``Parse`` (one DoFn): message -> raw row, bronze row or dead letter (the
   batch's per-record definition, ``transforms.bronze.parse_record``), each
   keyed for its lake file; and the bronze row again, keyed and timestamped
   for streaming silver (``transforms.stream_silver.silver_input``);
2. ``AppendToLake``: every table's rows into one file per (table,
   partition, fixed window of ingest time, pane);
3. ``Silver``: the stateful upserts of ``transforms.stream_silver``;
4. ``Sinks``: silver rows (and with BigQuery, bronze and dead-letter rows)
   batched per table at most every ``sink_every_seconds`` of processing
   time, merged into the lake's ``silver_stream/`` snapshots and BigQuery.

Processing-time triggers (early session firings, sink batches) are options:
``None`` gives watermark-only triggers, which FnApiRunner can run over
bounded input (``make bench-stream-cpu``).
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
from schemas.tables import BRONZE, DEAD_LETTER, OPS_ALERTS_STREAM, RAW, SILVER, SILVER_STREAM, SINK_DEAD_LETTER
from transforms import metrics
from transforms.bigquery_io import BigQueryTarget, BigQueryWrite, EnsureTables, MergeBatchesFn
from transforms.bronze import DEAD_LETTER as DEAD_LETTER_TAG
from transforms.bronze import ParseCounters, parse_record
from transforms.bronze_columnar import parse_chunk
from transforms.pii import PiiKeySource
from transforms.sink_failures import SinkDeadLetter
from transforms.stream_sinks import PIPELINE, BatchEvery, MergeSnapshotsFn, WriteBatchFilesFn, lake_values
from transforms.stream_alerts import PublishAlertsFn, StreamingAlerts
from transforms.stream_silver import (ALLOWED_LATENESS_SECONDS, SESSION_GAP_SECONDS, SHARDS, SILVER_INPUTS,
                                      Rows, StreamingSilver, session_elements, shard_of, silver_input)

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
        if message.attributes else None,
        "ingested_at": ingested_micros,
        "source_file": None,
        "source_line": None,
        "data": message.data,
    }


class _Outputs:
    """What one bundle's messages produce, grouped as the steps after the parse
    take it: lake rows per table, silver inputs per session (for session
    windows) or per shard (for the upserts)."""

    def __init__(self):
        self.lake = defaultdict(list)                        # table -> row values
        self.sessions = defaultdict(list)                    # session_id -> [(event time, (kind, values))]
        self.sharded = defaultdict(lambda: defaultdict(list))  # tag -> shard -> [(key, value)]
        self.earliest = None                                  # earliest ingest time

    def add(self, table: str, row: dict, ingested: int, routed, shards: int, values: tuple | None = None) -> None:
        """A row of ``table`` (``values``: already as ``lake_values``) and where it goes in silver."""
        self.lake[table].append(values if values is not None else lake_values(LAKE_TABLES[table], row))
        self.earliest = ingested if self.earliest is None else min(self.earliest, ingested)
        if routed is not None:
            tag, (key, value), at = routed
            if tag == "sessions":
                self.sessions[key].append((at, value))
            else:
                self.sharded[tag][shard_of(key, shards)].append((key, value))

    def elements(self, window, gap_micros: int):
        at_ingest = Timestamp(micros=self.earliest)
        for table, rows in self.lake.items():
            yield WindowedValue((table, Rows(rows)), at_ingest, [window])
        for session_id, records in self.sessions.items():
            for at, travelling in session_elements(records, gap_micros):
                yield beam.pvalue.TaggedOutput(
                    "sessions", WindowedValue((session_id, Rows(travelling)), Timestamp(micros=at), [window]))
        for tag, by_shard in self.sharded.items():
            for shard, items in by_shard.items():
                yield beam.pvalue.TaggedOutput(tag, WindowedValue((shard, Rows(items)), at_ingest, [window]))


class ParseMessageFn(beam.DoFn):
    """PubsubMessages -> ``(table, rows)`` for the lake: raw rows and bronze
    rows or dead letters (main), and the bronze rows' streaming silver inputs
    (tags ``SILVER_INPUTS``, see ``silver_input``), grouped per bundle:
    sessions' records by ``session_elements``, the others by shard. A record
    more than ``allowed_lateness_seconds`` behind ingest is counted
    (``late_beyond_allowed_lateness``) and reaches silver through the batch.

    Messages are parsed when the bundle ends (or every ``BUFFERED``), so a
    bundle's rows travel as a few elements (Beam's cost is per element). A
    bundle of at least ``COLUMNAR_FROM`` goes through the batch path's
    columnar parse (``transforms.bronze_columnar.parse_chunk``,
    property-tested equal to the per-record definition), a smaller one
    record by record (the local runner's bundles are 10 messages, where the
    columnar parse's fixed cost would dominate). The clock the columnar parse
    checks timestamps against is the latest arrival of its bundle."""

    COLUMNAR_FROM = 32
    BUFFERED = 65536

    def __init__(self, pii_key_source: PiiKeySource, allowed_lateness_seconds: int, shards: int = SHARDS,
                 gap_seconds: int = SESSION_GAP_SECONDS):
        self._pii_key_source, self._shards = pii_key_source, shards
        self._lateness, self._gap = allowed_lateness_seconds * 1_000_000, gap_seconds * 1_000_000
        self._messages = metrics.counter("messages_read")
        self._counters = ParseCounters()
        self._late = metrics.counter("late_beyond_allowed_lateness")

    def setup(self):
        self._pii_key = self._pii_key_source.resolve_once()  # on the worker, see transforms.pii

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
            outputs = _Outputs()
            if len(messages) >= self.COLUMNAR_FROM:
                self._columnar(messages, outputs)
            else:
                for message, ingested in messages:
                    raw = raw_row(message, ingested)
                    table, row = parse_record(raw, self._pii_key, "stream_ingest", ingested)
                    self._counters.count(table, row)
                    self._route(raw, table, row, ingested, outputs)
            yield from outputs.elements(window, self._gap)

    def _columnar(self, messages, outputs: _Outputs) -> None:
        raws = [raw_row(message, ingested) for message, ingested in messages]
        parsed = parse_chunk(RAW.to_arrow(raws, with_partition_columns=True), self._pii_key, "stream_ingest",
                             max(ingested for _, ingested in messages))
        for name, n in parsed.valid.items():
            metrics.add(self._counters.valid[name], n)
        for reason, n in parsed.rejected.items():
            metrics.add(self._counters.rejected[reason], n)
        for raw in raws:
            outputs.add(RAW.name, raw, raw["ingested_at"], None, self._shards)
        for name, rows in [*parsed.bronze.items(), (DEAD_LETTER.name, parsed.dead_letter)]:
            names = LAKE_TABLES[name].column_names
            columns = LAKE_TABLES[name].pipeline_columns(rows)
            for values in zip(*(columns[c] for c in names)):
                row = dict(zip(names, values))
                self._route(None, name, row, row["ingested_at"], outputs, values)

    def _route(self, raw, table: str, row: dict, ingested: int, outputs: _Outputs, values=None) -> None:
        """One message's rows: its raw row (unless given as None), its bronze
        row or dead letter (``values``: already as ``lake_values``), and its silver input."""
        if raw is not None:
            outputs.add(RAW.name, raw, ingested, None, self._shards)
        routed = None if table == DEAD_LETTER_TAG else silver_input(table, row, ingested, self._lateness)
        if routed is None and table != DEAD_LETTER_TAG:
            self._late.inc()
        outputs.add(table, row, ingested, routed, self._shards, values)


def _alert_lake_rows(rows):
    return OPS_ALERTS_STREAM.name, Rows([lake_values(OPS_ALERTS_STREAM, alert) for alert in rows])


class StreamingLakehouse(beam.PTransform):
    """PubsubMessages -> the lake (raw, bronze, dead letter and alert files;
    silver snapshots), with ``bigquery`` BigQuery, with ``alerts_topic`` the
    alerts on that Pub/Sub topic (``alert_grace_seconds``: see
    ``transforms.stream_alerts``). Returns the written file names."""

    def __init__(self, lake: str, pii_key_source: PiiKeySource, window_seconds: int = 60,
                 allowed_lateness_seconds: int = ALLOWED_LATENESS_SECONDS, join_state_days: int = 30,
                 early_firing_seconds: int | None = None, sink_every_seconds: int | None = None,
                 bigquery: BigQueryTarget | None = None, shards: int = SHARDS, alerts_topic: str | None = None,
                 alert_grace_seconds: float = 0, run_id: str | None = None):
        super().__init__()
        # Names this launch in every commit it makes (transforms.stream_sinks).
        self._run_id = run_id or f"stream_ingest-{uuid.uuid4().hex}"
        self._lake, self._pii_key_source, self._window = lake, pii_key_source, window_seconds
        self._lateness, self._join_days = allowed_lateness_seconds, join_state_days
        self._early, self._sink_every, self._bigquery = early_firing_seconds, sink_every_seconds, bigquery
        self._shards, self._alerts_topic, self._alert_grace = shards, alerts_topic, alert_grace_seconds

    def expand(self, messages):
        parsed = messages | "Parse" >> beam.ParDo(ParseMessageFn(self._pii_key_source, self._lateness, self._shards)) \
            .with_output_types(LAKE_ROWS).with_outputs(*SILVER_INPUTS, main="lake")
        # The silver upserts batch as often as the sinks do: state work per shard and batch.
        silver = {tag: parsed[tag] for tag in SILVER_INPUTS} | "Silver" >> StreamingSilver(
            self._lateness, self._join_days, self._early, self._shards, self._sink_every)
        raised = silver | "Alerts" >> StreamingAlerts(self._shards, self._sink_every, self._lateness,
                                                      self._alert_grace)
        dead_letter = SinkDeadLetter(self._lake, PIPELINE, self._run_id, self._bigquery)
        if self._alerts_topic is not None:
            _ = raised | "PublishAlerts" >> beam.ParDo(PublishAlertsFn(self._alerts_topic, dead_letter))
        alert_rows = raised | "AlertRows" >> beam.Map(_alert_lake_rows).with_output_types(LAKE_ROWS)
        batches = (parsed.lake, silver, alert_rows) | "Batches" >> BatchEvery(self._sink_every)
        files = batches | "AppendToLake" >> beam.ParDo(
            WriteBatchFilesFn([*LAKE_TABLES.values(), OPS_ALERTS_STREAM], self._lake, self._run_id))
        _ = batches | "MergeSnapshots" >> beam.ParDo(MergeSnapshotsFn(list(SILVER_STREAM.values()), self._lake,
                                                                      self._run_id))
        if self._bigquery is not None:
            writes = ([BigQueryWrite(t, "append") for t in (*BRONZE.values(), DEAD_LETTER, OPS_ALERTS_STREAM)]
                      + [BigQueryWrite(t, "upsert") for t in SILVER_STREAM.values()])
            _ = messages.pipeline | "EnsureBigQueryTables" >> EnsureTables(self._bigquery,
                                                                             [w.table for w in writes] + [SINK_DEAD_LETTER])
            _ = batches | "MergeIntoBigQuery" >> beam.ParDo(MergeBatchesFn(self._bigquery, writes, dead_letter))
        return files
