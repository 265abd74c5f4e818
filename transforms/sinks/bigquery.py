"""BigQuery as a sink: tables created from ``schemas/``, rows loaded into
scratch tables by load jobs, then applied by a MERGE or a transaction.

The same code talks to BigQuery and to the local emulator; only the endpoint
and the credentials differ (``client``). Every table comes from its one
definition in ``schemas.tables``: columns, types, modes and descriptions;
the first ``partition_by`` column (else ``bigquery_partition``) becomes the
daily time partition and the other partition columns plus ``cluster_by`` the
clustering columns: bronze is partitioned by ``event_date`` and clustered by
``platform``, the gold facts by their date and clustered by ``platform`` /
``user_id``.

Datasets follow the layers: ``bronze``, ``silver`` (merged by the stream and
the backfill alike), ``gold`` and ``ops`` (the dead letter, and the
short-lived scratch tables the writes read from).

How a run's rows go in (``BigQueryWrite``):

* ``truncate`` (gold): every table's rows are loaded into a scratch table,
  then one transaction deletes and inserts all of them, so readers see
  yesterday's gold or today's, never a mix, and a failure at any point
  leaves every table as it was.
* ``upsert`` (silver, and bronze from the batch): the rows are loaded into a
  scratch table, then one MERGE on the row's key updates the rows it has,
  inserts the new ones and, given the run's lake ``Replace`` rule, deletes
  the rows that rule covers which the run no longer produced. So a rerun or a
  replay restates rows instead of adding them, and BigQuery ends up holding
  what the lake holds. One MERGE is one atomic statement.
* ``append`` (bronze and dead letter from the stream): the same MERGE, but it
  only inserts rows whose key is new, so a redelivered message adds nothing.

Keys: silver rows by their identity (``Table.key``). Bronze keeps every copy
a producer sent, so a bronze (or dead-letter) row is identified by where it
was received: the Pub/Sub message id, else the landing file and line.
"""

from __future__ import annotations

import functools
import io
import logging
import uuid
from collections import defaultdict
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from google.cloud import bigquery

from schemas.table import DATE, Table
from schemas.vocabulary import Layer
from transforms import metrics
from transforms.lake.commit import Replace, ReplaceScope
from transforms.lake.files import DataFile, read_data_file
from transforms.sinks.retry import RETRY_DEADLINE_SECONDS, sink_retry

SCRATCH_DATASET = "ops"
# Rows per load job into a scratch table: bounds a worker's memory.
ROWS_PER_LOAD = 500_000
# Where a bronze row was received: a Pub/Sub message, else a landing file line.
PROVENANCE = "COALESCE({t}.message_id, CONCAT({t}.source_file, '#', CAST({t}.source_line AS STRING)))"


def client(project: str, endpoint: str | None = None) -> bigquery.Client:
    """A client for ``project``; with ``endpoint`` (the local emulator) it
    uses anonymous credentials, else the environment's."""
    if endpoint is None:
        return bigquery.Client(project=project)
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials

    return bigquery.Client(
        project=project, credentials=AnonymousCredentials(), client_options=ClientOptions(api_endpoint=endpoint)
    )


def table_id(project: str, table: Table) -> str:
    return f"{project}.{table.layer}.{table.name}"


def bigquery_table(project: str, table: Table) -> bigquery.Table:
    """The BigQuery definition of a table: schema, description, partitioning, clustering."""
    bq = bigquery.Table(table_id(project, table), schema=table.bigquery_schema())
    bq.description = table.description
    if table.bigquery_time_partition is not None:
        bq.time_partitioning = bigquery.TimePartitioning(
            type_=bigquery.TimePartitioningType.DAY, field=table.bigquery_time_partition
        )
    if table.bigquery_clustering:
        bq.clustering_fields = table.bigquery_clustering
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
    """Creates the datasets and tables that do not exist yet (and the scratch
    dataset); returns the table ids."""
    ids = []
    bq.create_dataset(f"{bq.project}.{SCRATCH_DATASET}", exists_ok=True)
    for table in tables:
        bq.create_dataset(f"{bq.project}.{table.layer}", exists_ok=True)
        bq.create_table(bigquery_table(bq.project, table), exists_ok=True)
        ids.append(table_id(bq.project, table))
    return ids


@dataclass(frozen=True)
class BigQueryTarget:
    """Where the tables go: a project, and another endpoint for the local emulator."""

    project: str
    endpoint: str | None = None

    def client(self) -> bigquery.Client:
        return client(self.project, self.endpoint)


class WriteMode(StrEnum):
    """How a run's rows of a table go in (see the module docstring)."""

    TRUNCATE = "truncate"
    UPSERT = "upsert"
    APPEND = "append"


@dataclass(frozen=True)
class BigQueryWrite:
    """How one run's rows of ``table`` go in; ``replace`` (upsert only) is
    the run's lake rule, whose rows the run restates."""

    table: Table
    mode: WriteMode
    replace: Replace | None = None

    def __post_init__(self):
        object.__setattr__(self, "mode", WriteMode(self.mode))  # ValueError for another word
        if self.replace is not None and self.mode is not WriteMode.UPSERT:
            raise ValueError("only an upsert restates the rows of a Replace rule")


def merge_key(table: Table) -> tuple[str, str | None]:
    """The SQL expression identifying a row (``{t}`` stands for the table
    alias) and the partition column a MERGE can prune on: ``event_date``,
    which a record keeps however often it is received (unlike ``ingest_date``)."""
    if table.layer == Layer.SILVER or (table.layer == Layer.OPS and table.key):
        return "{t}." + table.key[0], None  # one row per key (silver; ops tables with a key: alerts)
    if table.layer in (Layer.BRONZE, Layer.OPS):
        return PROVENANCE, ("event_date" if "event_date" in table.partition_by else None)
    raise ValueError(f"{table.name}: {table.layer} tables are replaced, not merged")


def _parameter(name: str, table: Table, column: str, values) -> bigquery.ArrayQueryParameter:
    """An array parameter of values of ``table.column``, typed as that column."""
    column_type = next(c.type for c in table.columns if c.name == column)
    values = sorted(values, key=str)
    if column_type == DATE:
        values = [v if isinstance(v, date) else date.fromisoformat(v) for v in values]
    return bigquery.ArrayQueryParameter(name, column_type, values)


def _deletes(rule: Replace) -> tuple[str, list]:
    """The lake rule as a condition on the target rows (alias ``T``)."""
    if rule.scope is ReplaceScope.TABLE:
        return "TRUE", []
    if rule.scope is ReplaceScope.SOURCES:
        files = [f for f in rule.values if f is not None]
        condition = "T.source_file IN UNNEST(@replaced_sources)"
        if None in rule.values:
            condition += " OR T.source_file IS NULL"
        return condition, [bigquery.ArrayQueryParameter("replaced_sources", "STRING", sorted(files))]
    name = rule.partition_column
    return (
        f"T.{name} IN UNNEST(@replaced_partitions)",
        [_parameter("replaced_partitions", rule.table, name, rule.values)],
    )


def merge_statement(project: str, write: BigQueryWrite, scratch: str, prune_values) -> tuple[str, list]:
    """The MERGE of ``scratch`` into the table, and its query parameters.

    The source is deduplicated on the key first (the first received copy
    wins), since a MERGE may match each target row at most once."""
    table = write.table
    key, prune = merge_key(table)
    columns = table.column_names  # quoted in the SQL: bronze_events has a column named `timestamp`
    order = " ORDER BY R.ingested_at" if "ingested_at" in columns else ""
    on = f"{key.format(t='T')} = {key.format(t='S')}"
    params = []
    if prune is not None:
        on += f" AND T.{prune} IN UNNEST(@prune_values)"
        params.append(_parameter("prune_values", table, prune, prune_values))
    sql = [
        f"MERGE `{table_id(project, table)}` T",
        f"USING (SELECT * FROM `{scratch}` R WHERE TRUE "
        f"QUALIFY ROW_NUMBER() OVER (PARTITION BY {key.format(t='R')}{order}) = 1) S",
        f"ON {on}",
    ]
    if write.mode is WriteMode.UPSERT:
        sql.append("WHEN MATCHED THEN UPDATE SET " + ", ".join(f"`{c}` = S.`{c}`" for c in columns))
    sql.append(
        f"WHEN NOT MATCHED BY TARGET THEN INSERT ({', '.join(f'`{c}`' for c in columns)}) "
        f"VALUES ({', '.join(f'S.`{c}`' for c in columns)})"
    )
    if write.replace is not None:
        condition, replace_params = _deletes(write.replace)
        sql.append(f"WHEN NOT MATCHED BY SOURCE AND ({condition}) THEN DELETE")
        params += replace_params
    return "\n".join(sql), params


def _load(bq: bigquery.Client, arrow: pa.Table, destination: str, table: Table) -> None:
    upload = io.BytesIO()
    pq.write_table(arrow, upload)
    upload.seek(0)
    bq.load_table_from_file(
        upload,
        destination,
        job_config=bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            schema=table.bigquery_schema(),
            write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
        ),
    ).result()


@contextmanager
def scratch_table(bq: bigquery.Client, table: Table, chunks, prune: str | None = None):
    """Arrow ``chunks`` (every column of ``table``) loaded into a new scratch
    table in ``ops``; yields its id, its row count and the distinct values of
    column ``prune`` among the rows, and drops it afterwards."""
    scratch = f"{bq.project}.{SCRATCH_DATASET}._scratch_{table.name}_{uuid.uuid4().hex[:12]}"
    definition = bigquery.Table(scratch, schema=table.bigquery_schema())
    definition.expires = datetime.now(UTC) + timedelta(days=1)  # a crashed run leaves no litter
    bq.create_table(definition)
    try:
        rows, prune_values = 0, set()
        for chunk in chunks:
            if chunk.num_rows:
                _load(bq, chunk, scratch, table)
                rows += chunk.num_rows
                if prune is not None:
                    prune_values.update(pc.unique(chunk.column(prune)).to_pylist())
        yield scratch, rows, prune_values
    finally:
        bq.delete_table(scratch, not_found_ok=True)


def merge_rows(bq: bigquery.Client, write: BigQueryWrite, chunks) -> int:
    """Arrow ``chunks`` -> one MERGE into the table (``upsert``/``append``);
    returns the rows it inserted, updated or deleted."""
    with scratch_table(bq, write.table, chunks, prune=merge_key(write.table)[1]) as (scratch, _, prune_values):
        sql, params = merge_statement(bq.project, write, scratch, prune_values)
        job = bq.query(sql, job_config=bigquery.QueryJobConfig(query_parameters=params))
        job.result()
        return job.num_dml_affected_rows or 0


def merge_silver_changes(
    target: BigQueryTarget,
    upserts: dict[str, pa.Table],
    deletes: dict[str, pa.Array],
    deadline: float = RETRY_DEADLINE_SECONDS,
) -> None:
    """A merge's silver changes (``transforms.rules.merge.MergeResult``) ->
    one MERGE per table of the changed rows, and a DELETE of the keys it
    removed; transient errors retried. Each statement is idempotent, so a
    retried merge applies cleanly."""
    from schemas.tables import SILVER

    bq = target.client()
    ensure_tables(bq, list(SILVER.values()))
    retry = sink_retry(deadline=deadline)
    for name, rows in upserts.items():
        retry(merge_rows)(bq, BigQueryWrite(SILVER[name], WriteMode.UPSERT), [rows])
    for name, keys in deletes.items():
        table = SILVER[name]
        key = table.key[0]
        job_config = bigquery.QueryJobConfig(query_parameters=[_parameter("keys", table, key, keys.to_pylist())])
        statement = f"DELETE FROM `{table_id(bq.project, table)}` WHERE `{key}` IN UNNEST(@keys)"
        retry(lambda statement=statement, job_config=job_config: bq.query(statement, job_config=job_config).result())()


def silver_merger(target: BigQueryTarget | None):
    """The ``before_commit`` of a silver merge (``transforms.lake.silver.catch_up``)
    that applies its changes to BigQuery's silver, or None without BigQuery.
    Every path merges BigQuery this way, inside its claim of the lake's
    silver: claims are taken one at a time, so BigQuery receives the merges
    in the lake's order and a slower writer never puts an older row back."""
    return None if target is None else functools.partial(_merge_result, target)


def _merge_result(target: BigQueryTarget, result) -> None:
    merge_silver_changes(target, result.upserts, result.deletes)


def insert_new_rows(
    target: BigQueryTarget, table: Table, rows: list[dict], deadline: float = RETRY_DEADLINE_SECONDS
) -> int:
    """In-pipeline rows of an ``ops`` table with a key (logs, audits) -> the
    ones whose key is new inserted (the table created when missing), with
    transient errors retried; returns how many."""
    bq = target.client()
    ensure_tables(bq, [table])
    return sink_retry(deadline=deadline)(merge_rows)(
        bq, BigQueryWrite(table, WriteMode.APPEND), [table.to_arrow(rows, with_partition_columns=True)]
    )


def replace_tables(bq: bigquery.Client, chunks_by_table: dict) -> dict:
    """{Table: Arrow chunks} -> every table's rows replaced in one transaction:
    readers see all the old tables or all the new ones, and a failure at any
    point (a load, a statement) leaves every table as it was. Returns the
    rows per table name."""
    if not chunks_by_table:
        return {}
    with ExitStack() as stack:
        statements, rows = ["BEGIN TRANSACTION;"], {}
        for table, chunks in chunks_by_table.items():
            scratch, rows[table.name], _ = stack.enter_context(scratch_table(bq, table, chunks))
            columns = ", ".join(f"`{c}`" for c in table.column_names)
            statements += [
                f"DELETE FROM `{table_id(bq.project, table)}` WHERE TRUE;",
                f"INSERT INTO `{table_id(bq.project, table)}` ({columns}) SELECT {columns} FROM `{scratch}`;",
            ]
        statements.append("COMMIT TRANSACTION;")
        bq.query("\n".join(statements)).result()
        return rows


# --- batch: the written data files of a run ------------------------------------------------
def _file_chunks(table: Table, files: list[DataFile]):
    """Data files -> Arrow chunks of at most about ``ROWS_PER_LOAD`` rows."""
    parts, rows = [], 0
    for file in sorted(files, key=lambda f: f.relpath):
        part = read_data_file(file, table)
        parts.append(part)
        rows += part.num_rows
        if rows >= ROWS_PER_LOAD:
            yield pa.concat_tables(parts)
            parts, rows = [], 0
    if parts:
        yield pa.concat_tables(parts)


class PublishFilesFn(beam.DoFn):
    """All written data files of a run (``DataFile``) -> every table written
    to BigQuery by its ``BigQueryWrite``, then the views (re)created; the
    files are passed on unchanged, for the lake commit that follows.

    It runs only after every file is written, so a run that fails earlier
    changes nothing. The ``truncate`` tables are replaced together in one
    transaction (``replace_tables``). Each MERGE is atomic on its own table;
    a failure between two MERGEs leaves some tables merged and the others as
    they were, each whole, and since a MERGE is idempotent, rerunning the job
    completes it. Transient errors are retried (``transforms.sinks.dead_letter``);
    a permanent one fails the run before its lake commit."""

    def __init__(self, target: BigQueryTarget, writes: list[BigQueryWrite], views=()):
        self._target, self._writes, self._views = target, writes, tuple(views)
        self._rows = {w.table.name: metrics.counter(f"bigquery_rows_{w.table.name}") for w in writes}
        self._retries = metrics.counter("bigquery_retries")

    def process(self, files: list[DataFile], gate=None):
        if gate is not None and not gate.release:  # a blocking data-quality failure: BigQuery keeps what it has
            yield from files
            return
        bq = self._target.client()
        ensure_tables(bq, [w.table for w in self._writes])
        by_table = defaultdict(list)
        for file in files:
            by_table[file.table].append(file)

        def chunks(table):
            return _file_chunks(table, by_table[table.name])

        # Each unit is idempotent (a MERGE by key; a transaction), so a retry after a write that landed adds nothing.
        retry = sink_retry(self._retries)
        changed = {}
        for write in self._writes:
            if write.mode is not WriteMode.TRUNCATE:
                changed[write.table.name] = retry(lambda w=write: merge_rows(bq, w, chunks(w.table)))()
        changed.update(
            retry(
                lambda: replace_tables(
                    bq, {w.table: chunks(w.table) for w in self._writes if w.mode is WriteMode.TRUNCATE}
                )
            )()
        )
        for name, n in changed.items():
            self._rows[name].inc(n)
            logging.info("BigQuery %s.%s: %d rows written", bq.project, name, n)
        if self._views:
            create_views(bq, self._views)
        yield from files


class PublishToBigQuery(beam.PTransform):
    """A run's ``DataFile``s -> written to BigQuery in one final step; emits
    the same files. ``gate``: a PCollection of one ``Gate``
    (``transforms.rules.quality``); nothing is written unless it releases."""

    def __init__(self, target: BigQueryTarget, writes: list[BigQueryWrite], views=(), gate=None):
        super().__init__()
        self._fn, self._gate = PublishFilesFn(target, writes, views), gate

    def expand(self, files):
        gated = {} if self._gate is None else {"gate": beam.pvalue.AsSingleton(self._gate)}
        return files | "AllDataFiles" >> beam.combiners.ToList() | "WriteTables" >> beam.ParDo(self._fn, **gated)


# --- streaming: batches of rows ------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def client_with_tables(target: BigQueryTarget, tables: tuple) -> bigquery.Client:
    """A client of ``target`` whose ``tables`` exist (``EnsureTables`` may not
    have run yet), made once per process and target."""
    bq = target.client()
    ensure_tables(bq, tables)
    return bq


class EnsureTables(beam.PTransform):
    """Creates the tables once when the job starts, so a table the stream has
    no rows for yet exists (empty) for its readers."""

    def __init__(self, target: BigQueryTarget, tables):
        super().__init__()
        self._target, self._tables = target, list(tables)

    def expand(self, pbegin):
        target, tables = self._target, self._tables
        return (
            pbegin
            | "Once" >> beam.Create([None])
            | "CreateTables" >> beam.FlatMap(lambda _: ensure_tables(target.client(), tables))
        )
