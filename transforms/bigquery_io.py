"""BigQuery as a sink: datasets and tables created from ``schemas/``.

The same code talks to BigQuery and to the local emulator; only the endpoint
and the credentials differ (``client``). Every table comes from its one
definition in ``schemas.tables``: columns, types, modes and descriptions;
the first ``partition_by`` column (else ``bigquery_partition``) becomes the
daily time partition and the other partition columns plus ``cluster_by`` the
clustering columns: bronze is partitioned by ``event_date`` and clustered by
``platform``, the gold facts by their date and clustered by ``platform`` /
``user_id``.

Datasets follow the layers: ``bronze``, ``silver``, ``gold`` and ``ops``
(the dead letter).
"""
from __future__ import annotations

import io
import logging
from collections import defaultdict

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from google.cloud import bigquery

from schemas.table import DATE, TIMESTAMP, Table
from schemas.views import VIEWS


def client(project: str, endpoint: str | None = None) -> bigquery.Client:
    """A client for ``project``; with ``endpoint`` (the local emulator) it
    uses anonymous credentials, else the environment's."""
    if endpoint is None:
        return bigquery.Client(project=project)
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials

    return bigquery.Client(project=project, credentials=AnonymousCredentials(),
                           client_options=ClientOptions(api_endpoint=endpoint))


def table_id(project: str, table: Table) -> str:
    return f"{project}.{table.layer}.{table.name}"


def bigquery_table(project: str, table: Table) -> bigquery.Table:
    """The BigQuery definition of a table: schema, description, partitioning, clustering."""
    bq = bigquery.Table(table_id(project, table), schema=table.bigquery_schema())
    bq.description = table.description
    columns = {c.name: c for c in table.columns}
    partition = table.partition_by[0] if table.partition_by else table.bigquery_partition
    if partition is not None:
        if columns[partition].type not in (DATE, TIMESTAMP):
            raise ValueError(f"{table.name}: BigQuery time partitioning needs a DATE or TIMESTAMP, not {partition}")
        bq.time_partitioning = bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.DAY, field=partition)
    clustering = [c for c in table.partition_by[1:] + table.cluster_by if c != partition]
    if clustering:
        bq.clustering_fields = list(dict.fromkeys(clustering))[:4]  # BigQuery allows four
    return bq


def create_views(bq: bigquery.Client, views) -> list[str]:
    """(Re)creates the saved-SQL views of ``schemas.views`` in dataset ``gold``."""
    ids = []
    bq.create_dataset(f"{bq.project}.gold", exists_ok=True)
    for view in views:
        view_id = f"{bq.project}.gold.{view.name}"
        definition = bigquery.Table(view_id)
        definition.view_query = view.sql.format(project=bq.project)
        definition.description = view.description
        # Dropped and created: a view holds no data, so a reader in between
        # gets a not-found error at worst, never wrong rows.
        bq.delete_table(view_id, not_found_ok=True)
        bq.create_table(definition)
        ids.append(view_id)
    return ids


def ensure_tables(bq: bigquery.Client, tables) -> list[str]:
    """Creates the datasets and tables that do not exist yet; returns the table ids."""
    ids = []
    for table in tables:
        bq.create_dataset(f"{bq.project}.{table.layer}", exists_ok=True)
        bq.create_table(bigquery_table(bq.project, table), exists_ok=True)
        ids.append(table_id(bq.project, table))
    return ids


# --- truncate and load ---------------------------------------------------------------------
class LoadStagedFn(beam.DoFn):
    """All staged files of a run -> one load job per table with WRITE_TRUNCATE.

    A load job replaces its table atomically: readers see the old or the new
    rows, never a mix, and a job that fails leaves the old rows. The loads run
    only after every file is staged, so a run that fails earlier changes
    nothing. Each table is replaced on its own (there is no cross-table
    transaction): a failure between two loads leaves the tables loaded so far
    new and the others as they were, each whole. The staged files of a table
    are combined into one Parquet upload, so the same call serves a local
    lake and ``gs://`` alike."""

    def __init__(self, project: str, endpoint: str | None, tables: dict, staging: str):
        self._project, self._endpoint, self._tables, self._staging = project, endpoint, tables, staging
        self._loaded = {name: Metrics.counter("funnel", f"rows_loaded_{name}") for name in tables}

    def process(self, staged_files: list):
        bq = client(self._project, self._endpoint)
        ensure_tables(bq, self._tables.values())
        by_table = defaultdict(list)
        for name, _, path in staged_files:
            by_table[name].append(path)
        for name, table in self._tables.items():
            parts = []
            for path in sorted(by_table[name]):
                with FileSystems.open(path) as f:
                    parts.append(pq.read_table(io.BytesIO(f.read())))
            arrow = pa.concat_tables(parts) if parts else table.arrow_schema().empty_table()
            upload = io.BytesIO()
            pq.write_table(arrow, upload)
            upload.seek(0)
            job = bq.load_table_from_file(upload, table_id(self._project, table), job_config=bigquery.LoadJobConfig(
                source_format=bigquery.SourceFormat.PARQUET,
                write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE))
            job.result()
            self._loaded[name].inc(arrow.num_rows)
            logging.info("loaded %s rows into %s", arrow.num_rows, table_id(self._project, table))
            yield name, arrow.num_rows
        create_views(bq, VIEWS.values())
        FileSystems.delete([self._staging])


class LoadIntoBigQuery(beam.PTransform):
    """Staged files ``(table name, relative path, staged path)`` -> the tables
    replaced in BigQuery, in one final step."""

    def __init__(self, project: str, endpoint: str | None, tables: dict, staging: str):
        super().__init__()
        self._fn = LoadStagedFn(project, endpoint, tables, staging)

    def expand(self, staged):
        return (staged
                | "AllStagedFiles" >> beam.combiners.ToList()
                | "TruncateAndLoad" >> beam.ParDo(self._fn))
