"""Sink failures: transient errors retried with backoff, the rest sent to
the sink dead letter, so one bad batch never stalls a table.

Transient: HTTP 429/500/502/503/504 and BigQuery's ``rateLimitExceeded`` /
``backendError`` reasons, connection errors. They are retried by the client
library's ``Retry`` (exponential backoff with jitter, up to a deadline); a
retried write is a whole idempotent unit (a MERGE by key, a publish with a
stable id), so a retry after a write that did land adds nothing.

Anything else (a rejected row, a schema mismatch, a denied permission), or
transient errors past the deadline, is permanent for that batch: its rows
go to ``ops/sink_dead_letter`` in the lake (one Delta commit recorded as
``(run_id/target, batch)``, so a retried bundle records them once) and, best
effort, to BigQuery ``ops.sink_dead_letter``, with the error; the next batch
is written as usual. The lake keeps its own copy of every streamed row
(``raw/``, ``bronze/``, ``silver/``), so nothing is lost: a backfill of
the raw files restates bronze in BigQuery, one with ``--rebuild-silver``
silver, and ``row_json`` holds the rows for a look.

Batch runs differ on purpose: a backfill or gold run retries transient
errors the same way, but a permanent error fails the run before its lake
commit, so the lake and BigQuery never disagree and a rerun completes it.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import date, datetime

import orjson

from schemas import contract
from schemas.tables import SINK_DEAD_LETTER
from transforms.lake.commit import commit_append
from transforms.lake.files import write_data_file
from transforms.sinks.bigquery import BigQueryTarget, insert_new_rows


def _json_default(value):
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return str(value)


@dataclass(frozen=True)
class SinkDeadLetter:
    """Where a streaming job's rejected sink writes go: the lake's
    ``sink_dead_letter`` and, with ``bigquery``, ``ops.sink_dead_letter``."""

    lake: str
    pipeline: str
    run_id: str
    bigquery: BigQueryTarget | None = None

    def record(
        self,
        target: str,
        columns: tuple[str, ...],
        rows: list[dict],
        error: BaseException,
        sequence: int,
        batch: str | None = None,
    ) -> int:
        """The rows of batch ``sequence`` for ``target`` -> dead-lettered with
        ``error``; returns how many (0: recorded by an earlier attempt).
        ``batch`` names batches that have no sequence (sequence 1 each)."""
        app_id = f"{self.run_id}/{target}" + (f"/{batch}" if batch else "")

        now = contract.now_micros()
        error_type = type(error).__name__
        message = str(error)[:4000]
        dead = []
        for i, row in enumerate(rows):
            ident = f"{app_id}\0{sequence}\0{i}"
            dead.append(
                {
                    "failed_date": contract.micros_to_date(now),
                    "dead_letter_id": hashlib.sha256(ident.encode()).hexdigest(),
                    "failed_at": now,
                    "pipeline": self.pipeline,
                    "run_id": self.run_id,
                    "target": target,
                    "error_type": error_type,
                    "error_message": message,
                    "row_json": orjson.dumps(
                        {c: row.get(c) for c in columns}, default=_json_default, option=orjson.OPT_SORT_KEYS
                    ).decode(),
                }
            )
        logging.error(
            "sink %s: batch %d of %d rows dead-lettered (%s: %s)",
            target,
            sequence,
            len(rows),
            error_type,
            message[:300],
        )
        file = write_data_file(self.lake, SINK_DEAD_LETTER, dead, (("failed_date", dead[0]["failed_date"]),))
        if not commit_append(self.lake, SINK_DEAD_LETTER, [file], app_id, sequence, self.pipeline):
            return 0
        if self.bigquery is not None:
            self._to_bigquery(dead)
        return len(dead)

    def _to_bigquery(self, dead: list[dict]) -> None:

        try:
            insert_new_rows(self.bigquery, SINK_DEAD_LETTER, dead, deadline=120.0)
        except Exception as error:
            logging.error("sink dead letter: %d rows in the lake, not in BigQuery (%s)", len(dead), error)
