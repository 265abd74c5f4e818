"""The lake's tables: Delta Lake tables (delta-rs), one folder each, created
from ``schemas/``; what a version of one holds; reading it; and releases,
which make the tables of a layer one consistent set.

Layout (every folder a Delta table: data files under its partition folders,
its log under ``_delta_log/``)::

    raw/                       ingest_date=D/
    bronze/<table>/            event_date=D/platform=P/
    dead_letter/               ingest_date=D/
    silver/<table>/            gold/<table>/               silver_head/
    ops_alerts/                releases/

A data file is in a table only once a commit added it (``transforms.lake.commit``):
readers go through the Delta log (``snapshot``, ``read_arrow``,
``dataset``), never through a folder listing, which also holds files of
failed runs and files a commit removed (until ``pipelines.maintain``
vacuums them).

**Releases.** Delta commits one table at a time. A run that rewrites a whole
layer (silver by the backfill, gold by ``gold_daily``) commits its tables,
then appends one row per table to ``releases`` naming the versions it
committed, in one commit. Readers of silver and gold (``layer_versions``)
take every table at its version in the layer's latest release, so they see
all of one run or all of the next, never a mix, even when a run dies halfway
through its commits. A release's number is the ``releases`` table's version
after it, which is what ``--as-of-version`` means for a layer.
"""

from __future__ import annotations

import io
import posixpath
from dataclasses import dataclass
from datetime import datetime

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from schemas.table import Table
from schemas.tables import (
    BRONZE,
    COMMIT_LOCK,
    DEAD_LETTER,
    DQ_COMPLETENESS,
    DQ_RESULTS,
    ERASURE_LOG,
    FUNNEL_DEFINITIONS,
    GOLD,
    METRIC_REVISIONS,
    OPS_ALERTS_STREAM,
    RAW,
    RELEASES,
    RUN_LOG,
    SILVER,
    SILVER_HEAD,
    SINK_DEAD_LETTER,
)
from schemas.vocabulary import Layer

RELEASED_LAYERS = (Layer.SILVER, Layer.GOLD)  # layers read through their releases
# Every table the lake holds.
ALL_LAKE_TABLES = (
    RAW,
    *BRONZE.values(),
    DEAD_LETTER,
    *SILVER.values(),
    *GOLD.values(),
    OPS_ALERTS_STREAM,
    RELEASES,
    SILVER_HEAD,
    COMMIT_LOCK,
    FUNNEL_DEFINITIONS,
    SINK_DEAD_LETTER,
    RUN_LOG,
    ERASURE_LOG,
    DQ_RESULTS,
    DQ_COMPLETENESS,
    METRIC_REVISIONS,
)


# --- paths and tables --------------------------------------------------------------------
def table_dir(lake: str, table: Table) -> str:
    if table.layer == Layer.RAW:
        return posixpath.join(lake, "raw")
    if table.layer == Layer.OPS:
        return posixpath.join(lake, table.name)
    return posixpath.join(lake, table.layer, table.name)


def _uri(lake: str, table: Table) -> str:
    return table_dir(lake, table).rstrip("/")


def ensure_table(lake: str, table: Table) -> DeltaTable:
    """The table, created empty from its schema when it does not exist yet
    (two runs creating it at once: one creates, the other finds it)."""
    try:
        return DeltaTable(_uri(lake, table))
    except TableNotFoundError:
        return DeltaTable.create(
            _uri(lake, table),
            table.arrow_schema(),
            mode="ignore",
            partition_by=list(table.partition_by) or None,
            name=table.name,
            description=table.description,
        )


def open_table(lake: str, table: Table, version: int | None = None) -> DeltaTable | None:
    """The table at ``version`` (default: the latest); None if it does not exist."""
    try:
        return DeltaTable(_uri(lake, table), version=version)
    except TableNotFoundError:
        return None


# --- what a version holds ------------------------------------------------------------------
@dataclass(frozen=True)
class LakeFile:
    """A data file of a table version, as the Delta log describes it."""

    path: str  # absolute
    relpath: str  # below the table's folder
    partitions: tuple  # ((column, value as text), ...)
    size: int
    rows: int
    source: str | None = None  # the landing file all its rows came from (tables with source_file)
    from_pubsub: bool = False  # every row has no source_file: received from Pub/Sub
    newest_ingest: int | None = None  # micros: the newest ingested_at of its rows (tables with ingested_at)
    newest_event: int | None = None  # micros: the newest of its table's event_time_column (files written since)

    @property
    def partition(self) -> dict:
        return dict(self.partitions)


@dataclass(frozen=True)
class Snapshot:
    """One version of a table: its number (None: the table does not exist) and files."""

    table: Table
    version: int | None
    files: tuple[LakeFile, ...]

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)


def _newest(actions: pa.Table, column: str | None) -> list | None:
    """Each file's max of ``column`` (micros) from the log's statistics; None when no file has it."""
    name = f"max.{column}"
    if column is None or name not in actions.column_names:
        return None
    return actions.column(name).cast(pa.timestamp("us", "UTC")).cast(pa.int64()).to_pylist()


def snapshot(lake: str, table: Table, version: int | None = None) -> Snapshot:
    dt = open_table(lake, table, version)
    if dt is None:
        return Snapshot(table, None, ())
    actions = pa.table(dt.get_add_actions(flatten=True))
    root = _uri(lake, table)
    n = actions.num_rows
    columns = {c: actions.column(c).to_pylist() for c in actions.column_names}
    partition_values = (
        list(zip(*([(name, value) for value in columns[f"partition.{name}"]] for name in table.partition_by)))
        if table.partition_by
        else [()] * n
    )
    has_source = "source_file" in table.column_names and "min.source_file" in columns
    ingests = _newest(actions, "ingested_at")
    events = _newest(actions, table.event_time_column)
    files = []
    for i in range(n):
        relpath = columns["path"][i]
        rows = columns["num_records"][i]
        source = columns["min.source_file"][i] if has_source else None
        from_pubsub = has_source and rows is not None and columns["null_count.source_file"][i] == rows
        files.append(
            LakeFile(
                posixpath.join(root, relpath),
                relpath,
                tuple((k, None if v is None else str(v)) for k, v in partition_values[i]),
                columns["size_bytes"][i],
                rows or 0,
                source,
                from_pubsub,
                ingests[i] if ingests else None,
                events[i] if events else None,
            )
        )
    return Snapshot(table, dt.version(), tuple(sorted(files, key=lambda f: f.relpath)))


# --- reading -------------------------------------------------------------------------------
def dataset(lake: str, table: Table, version: int | None = None) -> ds.Dataset | None:
    """A pyarrow dataset of the table's version (what DuckDB and Polars can
    scan too); None if the table does not exist."""
    dt = open_table(lake, table, version)
    if dt is None:
        return None
    if "://" in lake:
        return dt.to_pyarrow_dataset()
    # A local lake: Arrow's own dataset over the version's files. delta-rs's (to_pyarrow_dataset) leaves
    # threads that abort the process at exit now and then (exit status 134 in place of its own).
    return files_dataset(lake, table, snapshot(lake, table, version).files)


def files_dataset(lake: str, table: Table, files) -> ds.Dataset:
    """An Arrow dataset over some data files of a local lake's table (partition
    columns from their folders), read by Arrow's threads."""
    schema = table.arrow_schema()
    partitioning = ds.partitioning(pa.schema([schema.field(c) for c in table.partition_by]), flavor="hive")
    paths = [f.path for f in files]
    return ds.dataset(
        paths, schema=schema, format="parquet", partitioning=partitioning, partition_base_dir=_uri(lake, table)
    )


def read_arrow(lake: str, table: Table, version: int | None = None, columns: list[str] | None = None) -> pa.Table:
    """Every row of the table's version, typed by its schema (empty if the table does not exist)."""
    wanted = columns or table.column_names
    data = dataset(lake, table, version)
    if data is None:
        return table.arrow_schema().empty_table().select(wanted)
    schema = table.arrow_schema()
    return data.to_table(columns=wanted).cast(pa.schema([schema.field(c) for c in wanted]))


def read_file(file: LakeFile, table: Table, columns: tuple[str, ...] | None = None) -> pa.Table:
    """One data file as Arrow with every column of ``table`` (or ``columns``),
    its partition columns restored from the log's values."""
    wanted = list(columns) if columns is not None else table.column_names
    partitions = file.partition
    with FileSystems.open(file.path) as f:
        arrow = pq.read_table(io.BytesIO(f.read()), columns=[c for c in wanted if c not in partitions])
    for name, value in partitions.items():
        if name in wanted:
            arrow = arrow.append_column(name, pa.array([value] * arrow.num_rows, pa.string()))
    schema = table.arrow_schema()
    return arrow.select(wanted).cast(pa.schema([schema.field(c) for c in wanted]))


# --- releases ------------------------------------------------------------------------------
def released_versions(
    lake: str, layer: str, as_of_version: int | None = None, as_of_timestamp: datetime | None = None
) -> dict[str, int] | None:
    """``{table name: version}`` of the layer's latest release (as of a
    ``releases`` version or a time); None when the layer has none yet."""
    rows = _latest_release(lake, layer, as_of_version, as_of_timestamp)
    if rows is None:
        return None
    return dict(zip(rows.column("table_name").to_pylist(), rows.column("version").to_pylist()))


def released_run(lake: str, layer: str) -> str | None:
    """The run whose commits the layer's latest release names (None: no release yet)."""
    rows = _latest_release(lake, layer)
    return None if rows is None else rows.column("run_id")[0].as_py()


def _latest_release(
    lake: str, layer: str, as_of_version: int | None = None, as_of_timestamp: datetime | None = None
) -> pa.Table | None:
    """The ``releases`` rows of the layer's latest release, read like every table (``read_arrow``)."""
    dt = open_table(lake, RELEASES)
    if dt is None:
        return None
    if as_of_version is not None or as_of_timestamp is not None:
        dt.load_as_version(as_of_version if as_of_version is not None else as_of_timestamp)
    rows = read_arrow(lake, RELEASES, dt.version(), ["layer", "table_name", "version", "run_id", "released_at"])
    rows = rows.filter(pc.equal(rows.column("layer"), layer))
    if not rows.num_rows:
        return None
    return rows.filter(pc.equal(rows.column("released_at"), pc.max(rows.column("released_at"))))


def layer_versions(
    lake: str, tables: dict[str, Table], as_of_version: int | None = None, as_of_timestamp: datetime | None = None
) -> dict[str, int | None]:
    """The versions to read a layer's tables at: its latest release's (see
    the module docstring); a table no release names is read at its latest
    version. A time-travel request the releases cannot answer is an error."""
    layer = next(iter(tables.values())).layer
    released = released_versions(lake, layer, as_of_version, as_of_timestamp) or {}
    if (as_of_version is not None or as_of_timestamp is not None) and not released:
        raise ValueError(f"no {layer} release as of {as_of_version if as_of_version is not None else as_of_timestamp}")
    return {name: released.get(name) for name in tables}


# Rows one read element gathers from consecutive files. A partitioned table
# has many small files (silver: a few per day and table), and every element
# a shuffle splits costs a compressed part per shard: gathering small files
# keeps the parts few and large, and bounds an element's memory.
ROWS_PER_READ = 400_000


def read_groups(files: list[LakeFile], rows_per_read: int = ROWS_PER_READ) -> list[tuple[LakeFile, ...]]:
    """Consecutive files gathered until a group holds ``rows_per_read`` rows
    (a larger file is a group of its own)."""
    groups, group, rows = [], [], 0
    for file in files:
        if group and rows + file.rows > rows_per_read:
            groups.append(tuple(group))
            group, rows = [], 0
        group.append(file)
        rows += file.rows
    return groups + [tuple(group)] if group else groups


def read_files(files: tuple[LakeFile, ...], table: Table, columns: tuple[str, ...] | None = None) -> pa.Table:
    """Several data files of ``table`` as one Arrow table (see ``read_file``)."""
    parts = [read_file(f, table, columns) for f in files]
    return pa.concat_tables(parts).combine_chunks() if len(parts) > 1 else parts[0]


class ReadLakeTable(beam.PTransform):
    """The files of a table version (``Snapshot.files``) -> ``(table name,
    Arrow rows)`` per group of files (``read_groups``), partition columns
    restored; ``columns``: only those."""

    def __init__(self, table: Table, files: tuple[LakeFile, ...], columns: tuple[str, ...] | None = None):
        super().__init__()
        self._table, self._groups, self._columns = table, read_groups(list(files)), columns

    def expand(self, pbegin):
        table, columns = self._table, self._columns
        return (
            pbegin
            | "ListFiles" >> beam.Create(self._groups)
            | "ReadParquet" >> beam.Map(lambda files: (table.name, read_files(files, table, columns)))
        )
