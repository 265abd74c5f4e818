"""One definition per table; BigQuery, Avro and Arrow schemas are derived from it.

Inside the pipelines a row is a plain dict. Two logical types have a compact
in-pipeline form because they are compared and shuffled a lot:

* ``TIMESTAMP`` -- integer microseconds since the Unix epoch, UTC.
* ``DATE``      -- ISO string ``YYYY-MM-DD`` (sorts and groups as text).

``to_arrow`` / ``from_arrow`` convert between that form and Arrow, so Parquet
files carry real ``timestamp[us, UTC]`` and ``date32`` columns that DuckDB,
BigQuery and pandas read natively.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import pyarrow as pa

from schemas.quality import Check, Freshness, Unique
from schemas.vocabulary import Layer

STRING, INT64, FLOAT64, BOOL = "STRING", "INT64", "FLOAT64", "BOOL"
DATE, TIMESTAMP, BYTES = "DATE", "TIMESTAMP", "BYTES"

_ARROW = {
    STRING: pa.string(),
    INT64: pa.int64(),
    FLOAT64: pa.float64(),
    BOOL: pa.bool_(),
    DATE: pa.date32(),
    TIMESTAMP: pa.timestamp("us", tz="UTC"),
    BYTES: pa.binary(),
}
# The Arrow type the in-pipeline value is built as before the cast to _ARROW.
_ARROW_PIPELINE = {DATE: pa.string(), TIMESTAMP: pa.int64()}

_AVRO = {
    STRING: "string",
    INT64: "long",
    FLOAT64: "double",
    BOOL: "boolean",
    DATE: {"type": "int", "logicalType": "date"},
    TIMESTAMP: {"type": "long", "logicalType": "timestamp-micros"},
    BYTES: "bytes",
}
_BIGQUERY = {BOOL: "BOOLEAN", INT64: "INTEGER", FLOAT64: "FLOAT"}


def _pipeline_type(c: Column) -> pa.DataType:
    """The Arrow type of the in-pipeline value of a column."""
    base = _ARROW_PIPELINE.get(c.type, _ARROW[c.type])
    return pa.list_(base) if c.repeated else base


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    description: str
    required: bool = False
    repeated: bool = False

    @property
    def bigquery_type(self) -> str:
        return _BIGQUERY.get(self.type, self.type)

    def arrow_type(self) -> pa.DataType:
        base = _ARROW[self.type]
        return pa.list_(base) if self.repeated else base


@dataclass(frozen=True)
class Table:
    """A table of one layer. ``partition_by`` columns become hive folders in
    the lake (``event_date=2026-11-02/platform=web/``) and are not stored
    inside the Parquet files; in BigQuery the first one is the time partition
    and the rest are clustering columns (with ``cluster_by``)."""

    name: str
    layer: Layer
    description: str
    columns: tuple[Column, ...]
    partition_by: tuple[str, ...] = ()
    cluster_by: tuple[str, ...] = ()
    key: tuple[str, ...] = field(default=())
    # BigQuery-only daily partition column, for tables that are not folders in the lake
    bigquery_partition: str | None = None
    # Its data-quality checks (schemas.quality), evaluated where the table is written.
    checks: tuple[Check, ...] = ()

    def __post_init__(self):
        names = [c.name for c in self.columns]
        if len(names) != len(set(names)):
            raise ValueError(f"{self.name}: duplicate column names")
        missing = set(
            self.partition_by
            + self.cluster_by
            + self.key
            + ((self.bigquery_partition,) if self.bigquery_partition else ())
        ) - set(names)
        if missing:
            raise ValueError(f"{self.name}: unknown columns {sorted(missing)}")
        checked = {c for check in self.checks for c in check.columns} - set(names)
        if checked:
            raise ValueError(f"{self.name}: checks read unknown columns {sorted(checked)}")
        ids = [check.check_id(self.name) for check in self.checks]
        if len(ids) != len(set(ids)):
            raise ValueError(f"{self.name}: two checks with one id")

    @property
    def event_time_column(self) -> str | None:
        """The column whose newest value says how fresh the table is (its
        freshness check's ``time_column``); None where none is declared."""
        return next((c.time_column for c in self.checks if isinstance(c, Freshness)), None)

    @property
    def row_key(self) -> tuple[str, ...]:
        """The columns identifying a row: its first ``Unique`` check's, else ``key``."""
        return next((c.of for c in self.checks if isinstance(c, Unique)), self.key)

    @property
    def column_names(self) -> list[str]:
        return list(self._names)

    @cached_property
    def _names(self) -> tuple[str, ...]:
        # computed once: streaming code asks for the names per row
        return tuple(c.name for c in self.columns)

    @property
    def file_columns(self) -> tuple[Column, ...]:
        """Columns stored inside the Parquet files (partition columns live in the path)."""
        return tuple(c for c in self.columns if c.name not in self.partition_by)

    # --- derived schemas -------------------------------------------------
    def arrow_schema(self, with_partition_columns: bool = True) -> pa.Schema:
        cols = self.columns if with_partition_columns else self.file_columns
        return pa.schema(
            [
                pa.field(c.name, c.arrow_type(), nullable=not c.required, metadata={"description": c.description})
                for c in cols
            ],
            metadata={"description": self.description, "table": self.name},
        )

    def avro_schema(self) -> dict:
        def avro_type(c: Column):
            t = _AVRO[c.type]
            if c.repeated:
                t = {"type": "array", "items": t}
            return t if c.required else ["null", t]

        return {
            "type": "record",
            "name": self.name,
            "namespace": f"funnel.{self.layer}",
            "doc": self.description,
            "fields": [
                {
                    "name": c.name,
                    "type": avro_type(c),
                    "doc": c.description,
                    **({} if c.required else {"default": None}),
                }
                for c in self.columns
            ],
        }

    def bigquery_schema(self) -> list:
        from google.cloud.bigquery import SchemaField

        return [SchemaField.from_api_repr(field) for field in self.bigquery_fields()]

    @property
    def bigquery_time_partition(self) -> str | None:
        """The column BigQuery partitions the table by day on, if any."""
        partition = self.partition_by[0] if self.partition_by else self.bigquery_partition
        if partition is not None and {c.name: c for c in self.columns}[partition].type not in (DATE, TIMESTAMP):
            raise ValueError(f"{self.name}: BigQuery time partitioning needs a DATE or TIMESTAMP, not {partition}")
        return partition

    @property
    def bigquery_clustering(self) -> list[str]:
        """BigQuery clustering columns: the other partition columns, then ``cluster_by`` (at most four)."""
        partition = self.bigquery_time_partition
        clustering = [c for c in self.partition_by[1:] + self.cluster_by if c != partition]
        return list(dict.fromkeys(clustering))[:4]

    def bigquery_fields(self) -> list[dict]:
        """The BigQuery schema as the API (and Terraform's ``schema``) spells it."""
        return [
            {
                "name": c.name,
                "type": c.bigquery_type,
                "mode": "REPEATED" if c.repeated else ("REQUIRED" if c.required else "NULLABLE"),
                "description": c.description,
            }
            for c in self.columns
        ]

    # --- conversions ------------------------------------------------------
    def to_arrow(self, rows: list[dict], with_partition_columns: bool = False) -> pa.Table:
        """In-pipeline dict rows -> Arrow table with the logical types. Arrow
        builds the columns (keys not in the table are ignored), then one cast
        turns micros into timestamps and ISO strings into dates."""
        cols = self.columns if with_partition_columns else self.file_columns
        as_built = pa.schema([pa.field(c.name, _pipeline_type(c)) for c in cols])
        return pa.Table.from_pylist(rows, schema=as_built).cast(self.arrow_schema(with_partition_columns))

    def from_arrow(self, table: pa.Table) -> list[dict]:
        """Arrow table (as written by ``to_arrow``) -> in-pipeline dict rows."""
        by_name = {c.name: c for c in self.columns}
        arrays, names = [], []
        for name in table.column_names:
            col = table.column(name)
            c = by_name.get(name)
            if c is not None and c.type in _ARROW_PIPELINE and not c.repeated:
                col = col.cast(_ARROW_PIPELINE[c.type])
            arrays.append(col)
            names.append(name)
        return pa.Table.from_arrays(arrays, names=names).to_pylist()

    def pipeline_columns(self, table: pa.Table) -> dict[str, list]:
        """Arrow table -> {column: Python values in their in-pipeline form}
        (``from_arrow`` by columns: tuples of rows are then one ``zip`` away)."""
        by_name = {c.name: c for c in self.columns}
        out = {}
        for name in table.column_names:
            col = table.column(name)
            c = by_name.get(name)
            if c is not None and c.type in _ARROW_PIPELINE and not c.repeated:
                col = col.cast(_ARROW_PIPELINE[c.type])
            out[name] = col.to_pylist()
        return out


def col(name: str, type_: str, description: str, required: bool = False, repeated: bool = False) -> Column:
    return Column(name, type_, description, required, repeated)
