"""Shared test helpers: a local TestPipeline, handcrafted rows, lake readers."""

from __future__ import annotations

import os
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from deltalake import DeltaTable

from pipelines.common import LOCAL_RUNNER
from schemas.contract import parse_timestamp
from schemas.tables import BRONZE

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLE = FIXTURES / "contract_sample_raw.jsonl"


def local_pipeline() -> TestPipeline:
    # Name the runner: DirectRunner would first try to download Prism.
    return TestPipeline(runner=LOCAL_RUNNER)


def ts(text: str) -> int:
    """ISO timestamp -> in-pipeline epoch micros."""
    return parse_timestamp(text, "test")


T0 = parse_timestamp("2026-11-02T10:00:00Z", "T0")
MIN = 60_000_000
DAY = 24 * 60 * MIN


def bronze(table: str, line: int, **values) -> dict:
    """A bronze row with every column; ``line`` gives its ingest order."""
    row = {c: None for c in BRONZE[table].column_names}
    row.update(
        event_date="2026-11-02",
        platform="web",
        source="test",
        schema_version=1,
        ingested_at=T0 + 10 * MIN,
        source_file="a.jsonl",
        source_line=line,
    )
    row.update(values)
    return row


def tagged_arrow(tables: dict, rows_by_table: dict) -> list:
    """{table name: dict rows} -> ``(table name, Arrow rows)`` elements, as
    the batch transforms pass them."""
    return [
        (name, tables[name].to_arrow(rows, with_partition_columns=True)) for name, rows in rows_by_table.items() if rows
    ]


class rows_of_table(dict):
    """``(table name, Arrow rows)`` PCollections -> {table name: PCollection
    of dict rows}, made on first use."""

    def __init__(self, tagged):
        super().__init__()
        self._tagged = list(tagged) if isinstance(tagged, (list, tuple)) else [tagged]

    def __missing__(self, name):
        from schemas.tables import ALL_TABLES

        table = ALL_TABLES[name]
        rows = [
            pcoll | f"RowsOf_{name}_{i}" >> beam.FlatMap(lambda kv: table.from_arrow(kv[1]) if kv[0] == name else [])
            for i, pcoll in enumerate(self._tagged)
        ]
        self[name] = tuple(rows) | f"AllRowsOf_{name}" >> beam.Flatten()
        return self[name]


def read_table(path) -> list[dict]:
    """All rows of a lake table (its latest Delta version; [] if there is none)."""
    if not os.path.isdir(os.path.join(path, "_delta_log")):
        return []
    return DeltaTable(str(path)).to_pyarrow_table().to_pylist()


def content_checksums(lake, tables: dict, folder: str) -> dict[str, str]:
    """SHA-256 per table of its rows (sorted, canonical JSON, one per line):
    equal checksums mean byte-identical contents, whatever files hold them."""
    import hashlib

    import orjson

    sums = {}
    for name in tables:
        lines = sorted(
            orjson.dumps(row, option=orjson.OPT_SORT_KEYS, default=str)
            for row in read_table(os.path.join(lake, folder, name))
        )
        sums[name] = hashlib.sha256(b"\n".join(lines)).hexdigest()
    return sums


@pytest.fixture
def lake(tmp_path) -> Path:
    return tmp_path / "lake"


@pytest.fixture(scope="session")
def pubsub_emulator():
    """The real Pub/Sub emulator: reused when one answers, else started here
    and stopped at the end of the session."""
    from devtools import pubsub_emulator

    host = os.environ.get("PUBSUB_EMULATOR_HOST", pubsub_emulator.DEFAULT_HOST)
    with pubsub_emulator.running(host):
        os.environ["PUBSUB_EMULATOR_HOST"] = host
        yield pubsub_emulator.PROJECT


@pytest.fixture(scope="session")
def s3_emulator():
    """A local S3 server (moto, from its own virtualenv): reused when one
    answers, else started here and stopped at the end. Yields its host."""
    from devtools import s3_emulator

    with s3_emulator.running() as host:
        yield host


@pytest.fixture
def s3_lake(s3_emulator, monkeypatch) -> str:
    """``s3://<a fresh bucket>/lake`` on the local S3 server, with delta-rs
    and Beam's S3 filesystem pointed at it for the test."""
    import uuid

    from devtools import s3_emulator as service

    for name, value in service.environment(s3_emulator).items():
        monkeypatch.setenv(name, value)
    return service.create_bucket(s3_emulator, f"lake-{uuid.uuid4().hex[:12]}") + "/lake"


@pytest.fixture(scope="session")
def bigquery_emulator():
    """The real local BigQuery emulator (bqemulator, from its own virtualenv):
    reused when one answers, else started here and stopped at the end.
    Yields a ``google-cloud-bigquery`` client pointed at it."""
    from devtools import bigquery_emulator
    from transforms.sinks import bigquery as bigquery_io

    with bigquery_emulator.running() as host:
        yield bigquery_io.client(bigquery_emulator.PROJECT, bigquery_emulator.endpoint(host))
