"""Raw chunks -> bronze and dead letters in the batch (Beam): ``ParseChunkFn``
runs ``transforms.rules.bronze_arrow.parse_chunk`` on each chunk and counts
every outcome."""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc

from schemas.tables import DEAD_LETTER as DEAD_LETTER_TABLE
from transforms import metrics
from transforms.metrics import ParseCounters
from transforms.rules.arrow import count_true
from transforms.rules.bronze import (
    DEAD_LETTER,
)
from transforms.rules.bronze_arrow import parse_chunk
from transforms.rules.pii import PiiKeySource


class ParseChunkFn(beam.DoFn):
    """Raw chunk -> ``(bronze table name, Arrow rows)`` per bronze table, and
    ``(dead_letter, Arrow rows)`` on output ``dead_letter``. With ``days``
    only bronze rows of those event dates pass (the others are counted as
    ``outside_date_range``)."""

    def __init__(self, pii_key_source: PiiKeySource, pipeline: str, now_micros: int, days: frozenset | None = None):
        self._pii_key_source, self._pipeline, self._now = pii_key_source, pipeline, now_micros
        self._days = None if days is None else sorted(days)
        self._counters = ParseCounters()
        self._outside = metrics.counter("outside_date_range")

    def setup(self):
        # On the worker: the graph carries where the key is, never the key (transforms.rules.pii).
        self._pii_key = self._pii_key_source.resolve_once()

    def process(self, raw: pa.Table):
        parsed = parse_chunk(raw, self._pii_key, self._pipeline, self._now)
        metrics.add(self._counters.read, raw.num_rows)
        for name, n in parsed.valid.items():
            metrics.add(self._counters.valid[name], n)
        for reason, n in parsed.rejected.items():
            metrics.add(self._counters.rejected[reason], n)
        for name, table in parsed.bronze.items():
            if self._days is not None:
                inside = pc.is_in(table.column("event_date"), pa.array(self._days).cast(pa.date32()))
                metrics.add(self._outside, table.num_rows - count_true(inside))
                table = table.filter(inside)
            if table.num_rows:
                yield name, table
        if parsed.dead_letter.num_rows:
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, (DEAD_LETTER_TABLE.name, parsed.dead_letter))
