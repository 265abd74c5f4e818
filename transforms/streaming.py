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

import orjson
import apache_beam as beam
from apache_beam.transforms.window import TimestampedValue
from apache_beam.typehints import typehints
from apache_beam.utils.timestamp import Timestamp

from schemas import contract
from schemas.tables import BRONZE, DEAD_LETTER, RAW, SILVER, SILVER_STREAM
from transforms import metrics
from transforms.bigquery_io import BigQueryTarget, BigQueryWrite, EnsureTables, MergeBatchesFn
from transforms.bronze import DEAD_LETTER as DEAD_LETTER_TAG
from transforms.bronze import ParseCounters, parse_record
from transforms.lake_io import BatchEvery, MergeSnapshotsFn, WriteBatchFilesFn, lake_element
from transforms.stream_silver import (ALLOWED_LATENESS_SECONDS, SHARDS, SILVER_INPUTS, SILVER_ROW,
                                      StreamingSilver, silver_input)

LAKE_TABLES = {t.name: t for t in (RAW, *BRONZE.values(), DEAD_LETTER)}
# (table name, row values): declared, as the inferred type would include the
# tagged outputs
LAKE_ELEMENT = typehints.KV[str, typehints.Any]


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


class ParseMessageFn(beam.DoFn):
    """PubsubMessage -> ``lake_element`` rows of raw and of bronze or the dead
    letter (main, at ingest time), and the bronze row's streaming silver input
    (tags ``SILVER_INPUTS``, see ``silver_input``). A record more than
    ``allowed_lateness_seconds`` behind ingest is counted
    (``late_beyond_allowed_lateness``) and reaches silver through the batch."""

    def __init__(self, pii_key: bytes, allowed_lateness_seconds: int):
        self._pii_key = pii_key
        self._lateness = allowed_lateness_seconds * 1_000_000
        self._messages = metrics.counter("messages_read")
        self._counters = ParseCounters()
        self._late = metrics.counter("late_beyond_allowed_lateness")

    def process(self, message):
        self._messages.inc()
        self._counters.read.inc()
        ingested = contract.now_micros()
        at_ingest = Timestamp(micros=ingested)
        raw = raw_row(message, ingested)
        yield TimestampedValue(lake_element(RAW, raw), at_ingest)
        table, row = parse_record(raw, self._pii_key, "stream_ingest", ingested)
        self._counters.count(table, row)
        yield TimestampedValue(lake_element(LAKE_TABLES[table], row), at_ingest)  # bronze or dead_letter
        routed = None if table == DEAD_LETTER_TAG else silver_input(table, row, ingested, self._lateness)
        if routed is not None:
            tag, element, at = routed
            yield beam.pvalue.TaggedOutput(tag, TimestampedValue(element, Timestamp(micros=at)))
        elif table != DEAD_LETTER_TAG:
            self._late.inc()


class StreamingLakehouse(beam.PTransform):
    """PubsubMessages -> the lake (raw, bronze, dead letter files; silver
    snapshots) and, with ``bigquery``, BigQuery. Returns the written file
    names."""

    def __init__(self, lake: str, pii_key: bytes, window_seconds: int = 60,
                 allowed_lateness_seconds: int = ALLOWED_LATENESS_SECONDS, join_state_days: int = 30,
                 early_firing_seconds: int | None = None, sink_every_seconds: int | None = None,
                 bigquery: BigQueryTarget | None = None, shards: int = SHARDS):
        super().__init__()
        self._lake, self._pii_key, self._window = lake, pii_key, window_seconds
        self._lateness, self._join_days = allowed_lateness_seconds, join_state_days
        self._early, self._sink_every, self._bigquery = early_firing_seconds, sink_every_seconds, bigquery
        self._shards = shards

    def expand(self, messages):
        parsed = messages | "Parse" >> beam.ParDo(ParseMessageFn(self._pii_key, self._lateness)).with_output_types(
            LAKE_ELEMENT).with_outputs(*SILVER_INPUTS, main="lake")
        # The silver upserts batch as often as the sinks do: state work per shard and batch.
        silver = {tag: parsed[tag] for tag in SILVER_INPUTS} | "Silver" >> StreamingSilver(
            self._lateness, self._join_days, self._early, self._shards, self._sink_every)
        batches = (parsed.lake, silver) | "Batches" >> BatchEvery(self._sink_every)
        files = batches | "AppendToLake" >> beam.ParDo(WriteBatchFilesFn(list(LAKE_TABLES.values()), self._lake))
        _ = batches | "MergeSnapshots" >> beam.ParDo(MergeSnapshotsFn(list(SILVER.values()), self._lake))
        if self._bigquery is not None:
            writes = ([BigQueryWrite(t, "append") for t in (*BRONZE.values(), DEAD_LETTER)]
                      + [BigQueryWrite(t, "upsert") for t in SILVER_STREAM.values()])
            _ = messages.pipeline | "EnsureBigQueryTables" >> EnsureTables(self._bigquery, [w.table for w in writes])
            _ = batches | "MergeIntoBigQuery" >> beam.ParDo(MergeBatchesFn(self._bigquery, writes))
        return files
