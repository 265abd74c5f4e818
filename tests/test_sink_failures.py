"""Sink failures: a transient BigQuery error is retried and nothing is lost;
a permanent one sends its batch to the sink dead letter (lake and BigQuery)
and the next batches go on. Faults are injected into a client of the real
BigQuery emulator."""

from dataclasses import dataclass
from pathlib import Path

import apache_beam as beam
import orjson
import pytest
from google.api_core import exceptions

from pipelines.common import counters
from schemas.tables import BRONZE, SINK_DEAD_LETTER
from tests.bigquery_checks import bigquery_rows, endpoint, fresh_project
from tests.conftest import bronze, local_pipeline
from transforms.lake.tables import read_arrow
from transforms.sinks import bigquery as bigquery_io
from transforms.sinks.bigquery import BigQueryTarget, BigQueryWrite
from transforms.sinks.dead_letter import SinkDeadLetter
from transforms.sinks.retry import is_transient
from transforms.streaming.sinks import MergeBatchesFn, lake_values

VIEWS = BRONZE["bronze_views"]


def test_transient_and_permanent_errors_are_told_apart():
    assert is_transient(exceptions.ServiceUnavailable("503"))
    assert is_transient(exceptions.TooManyRequests("429"))
    assert is_transient(exceptions.Forbidden("quota", errors=[{"reason": "rateLimitExceeded"}]))
    assert is_transient(ConnectionResetError())
    assert not is_transient(exceptions.BadRequest("invalid value", errors=[{"reason": "invalid"}]))
    assert not is_transient(exceptions.Forbidden("denied", errors=[{"reason": "accessDenied"}]))
    assert not is_transient(exceptions.NotFound("no table"))


@dataclass(frozen=True)
class FaultyTarget(BigQueryTarget):
    """The emulator, whose first ``times`` MERGEs into ``table`` fail with
    ``fault`` (counted in the file ``tally``, shared by every client)."""

    table: str = ""
    fault: str = "transient"
    times: int = 1
    tally: str = ""

    def client(self):
        bq = super().client()
        query = bq.query

        def failing_query(sql, *args, **kwargs):
            if sql.startswith("MERGE") and f".{self.table}`" in sql.splitlines()[0]:
                tally = Path(self.tally)
                n = int(tally.read_text() or 0) if tally.exists() else 0
                if n < self.times:
                    tally.write_text(str(n + 1))
                    if self.fault == "transient":
                        raise exceptions.ServiceUnavailable("injected: backend unavailable")
                    raise exceptions.BadRequest("injected: row rejected")
            return query(sql, *args, **kwargs)

        bq.query = failing_query
        return bq


def _batch(lines):
    return VIEWS.name, [
        [
            lake_values(
                VIEWS, bronze(VIEWS.name, n, view_id=f"v{n}", session_id="s1", view_timestamp=1_700_000_000_000_000 + n)
            )
            for n in lines
        ]
    ]


def _run(target, lake, batches):
    dead_letter = SinkDeadLetter(str(lake), "stream_ingest", "run-1", target)
    p = local_pipeline()
    _ = (
        p
        | beam.Create(batches, reshuffle=False)
        | beam.ParDo(MergeBatchesFn(target, [BigQueryWrite(VIEWS, "append")], dead_letter, retry_deadline=60))
    )
    result = p.run()
    result.wait_until_finish()
    return counters(result)


@pytest.mark.emulator
def test_a_transient_failure_is_retried_and_nothing_is_lost(bigquery_emulator, tmp_path):
    bq = fresh_project()
    target = FaultyTarget(
        bq.project, endpoint(), table=VIEWS.name, fault="transient", times=2, tally=str(tmp_path / "tally")
    )
    seen = _run(target, tmp_path / "lake", [_batch([1, 2, 3]), _batch([4, 5])])
    assert seen["bigquery_retries"] == 2
    assert seen[f"bigquery_rows_{VIEWS.name}"] == 5
    assert sorted(r[VIEWS.column_names.index("view_id")] for r in bigquery_rows(bq, VIEWS)) == [
        "v1",
        "v2",
        "v3",
        "v4",
        "v5",
    ]
    assert read_arrow(str(tmp_path / "lake"), SINK_DEAD_LETTER).num_rows == 0
    assert not any(k.startswith("sink_dead_lettered") for k in seen)


@pytest.mark.emulator
def test_a_permanent_failure_goes_to_the_sink_dead_letter_and_the_next_batch_flows(bigquery_emulator, tmp_path):
    bq = fresh_project()
    target = FaultyTarget(
        bq.project, endpoint(), table=VIEWS.name, fault="permanent", times=1, tally=str(tmp_path / "tally")
    )
    lake = tmp_path / "lake"
    seen = _run(target, lake, [_batch([1, 2, 3]), _batch([4, 5])])
    merged = {r[VIEWS.column_names.index("view_id")] for r in bigquery_rows(bq, VIEWS)}
    dead = read_arrow(str(lake), SINK_DEAD_LETTER).to_pylist()
    dead_ids = {orjson.loads(r["row_json"])["view_id"] for r in dead}
    # Whichever batch ran first failed; the other was merged, and nothing is in both or lost.
    assert {frozenset(dead_ids), frozenset(merged)} == {frozenset({"v1", "v2", "v3"}), frozenset({"v4", "v5"})}
    assert {(r["target"], r["error_type"], r["pipeline"]) for r in dead} == {
        (bigquery_io.table_id(bq.project, VIEWS), "BadRequest", "stream_ingest")
    }
    assert all("injected: row rejected" in r["error_message"] for r in dead)
    assert seen[f"sink_dead_lettered_{VIEWS.name}"] == len(dead_ids)
    assert seen[f"bigquery_rows_{VIEWS.name}"] == len(merged)
    in_bigquery = bq.query(f"SELECT dead_letter_id FROM `{bigquery_io.table_id(bq.project, SINK_DEAD_LETTER)}`")
    assert sorted(r.dead_letter_id for r in in_bigquery.result()) == sorted(r["dead_letter_id"] for r in dead)
    # A retried bundle records its batch once (the commit is keyed by run, target and batch).
    dead_letter = SinkDeadLetter(str(lake), "stream_ingest", "run-1", target)
    rows = [dict(zip(VIEWS.column_names, v)) for v in _batch([1, 2, 3])[1][0]]
    assert (
        dead_letter.record(
            bigquery_io.table_id(bq.project, VIEWS), VIEWS.column_names, rows, exceptions.BadRequest("again"), 1
        )
        == 0
    )
    assert read_arrow(str(lake), SINK_DEAD_LETTER).num_rows == len(dead)
