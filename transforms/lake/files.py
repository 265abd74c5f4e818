"""Writing the lake's data files: Parquet files of a table's file columns,
under its partition folders, named uniquely. Writing one adds nothing to
the table: a ``DataFile`` says what was written, and a commit
(``transforms.lake.commit``) adds it. So workers write in parallel, and a
run that fails leaves only files no table version names (vacuumed by
``pipelines.maintain``).
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue
from deltalake._internal import RemoveAction
from deltalake.transaction import AddAction

from schemas.table import Table
from transforms import metrics
from transforms.lake.tables import LakeFile, read_file, table_dir
from transforms.rules.arrow import split_by_shard

ROWS_PER_FILE = 200_000
# A writer holds at most this many rows across all its partitions, then
# writes the largest partition out: memory stays bounded however large the
# bundle (on FnApiRunner a batch bundle is the whole input).
ROWS_BUFFERED = 200_000


@dataclass(frozen=True)
class DataFile:
    """A written data file, not yet in its table."""

    table: str
    relpath: str  # below the table's folder
    path: str  # absolute
    partitions: tuple  # ((column, value as text), ...)
    size: int
    rows: int
    stats: str  # Delta statistics (JSON): record count; source_file's range and nulls
    content_sha256: str | None = None  # raw copies of landing files: the landing file's content
    received_at: int | None = None  # raw copies: when that content was first received (micros)
    landing_path: str | None = None  # raw copies: the path the run read it from (its records may name another)

    def add_action(self, data_change: bool = True) -> AddAction:
        """``data_change=False``: the file holds rows the table has already (a compaction)."""
        return AddAction(
            self.relpath, self.size, dict(self.partitions), int(time.time() * 1000), data_change, self.stats
        )

    def as_lake_file(self) -> LakeFile:
        return LakeFile(self.path, self.relpath, self.partitions, self.size, self.rows)


def remove_action(relpath: str, size: int, partition: dict, data_change: bool = True) -> RemoveAction:
    """A Delta remove action of a table's file, timed now. The one place the lake
    builds one: delta-rs exposes the class only from its private module
    (``deltalake._internal``; ``tests/test_lake.py`` notices a change)."""
    return RemoveAction(relpath, data_change, int(time.time() * 1000), size, partition)


def makedirs(path: str) -> None:
    with contextlib.suppress(OSError):  # exists already (local); object stores need none
        FileSystems.mkdirs(path)


def write_bytes(path: str, data: bytes) -> str:
    """Writes a whole file, on a local disk or an object store (reports beside the lake)."""
    makedirs(posixpath.dirname(path))
    with FileSystems.create(path) as f:
        f.write(data)
    return path


def _iso_millis(value) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _stats(arrow: pa.Table, event_time: str | None = None) -> str:
    """Delta statistics of a file: its record count, and for ``source_file``
    (which landing file its rows came from) min, max and null count, which
    is how a commit later finds the files of given landing files; the
    newest ``ingested_at`` and ``event_time`` (to the millisecond, as Delta keeps timestamps)."""
    stats = {"numRecords": arrow.num_rows}
    if "source_file" in arrow.column_names:
        column = arrow.column("source_file")
        low_high = pc.min_max(column).as_py()
        stats["nullCount"] = {"source_file": column.null_count}
        if low_high["min"] is not None:
            stats["minValues"] = {"source_file": low_high["min"]}
            stats["maxValues"] = {"source_file": low_high["max"]}
    # The newest receipt and event: the lake's clock (completeness, freshness) without opening a file.
    for column in ("ingested_at", event_time):
        if column in arrow.column_names and arrow.num_rows:
            newest = pc.max(arrow.column(column)).cast(pa.timestamp("us", "UTC")).as_py()
            if newest is not None:
                stats.setdefault("maxValues", {})[column] = _iso_millis(newest)
    return json.dumps(stats)


def write_data_file(
    lake: str,
    table: Table,
    rows: pa.Table | list[dict],
    partitions: tuple = (),
    prefix: str = "",
    content_sha256: str | None = None,
) -> DataFile:
    """Rows (Arrow with every file column, or in-pipeline dicts) of one
    partition -> a new data file of ``table``."""
    arrow = (
        rows.select([c.name for c in table.file_columns]).cast(table.arrow_schema(False))
        if isinstance(rows, pa.Table)
        else table.to_arrow(rows)
    )
    folders = [f"{c}={v}" for c, v in partitions]
    relpath = "/".join(folders + [f"{prefix}{uuid.uuid4().hex}.parquet"])
    path = posixpath.join(table_dir(lake, table), relpath)
    # Encoded in memory first: the size the Delta log needs is then known without asking the
    # store (a listing per file is most of the write's time on an object store).
    encoded = pa.BufferOutputStream()
    pq.write_table(arrow, encoded, compression="zstd")
    data = encoded.getvalue()
    write_bytes(path, memoryview(data))
    return DataFile(
        table.name,
        relpath,
        path,
        tuple(partitions),
        data.size,
        arrow.num_rows,
        _stats(arrow, table.event_time_column),
        content_sha256,
    )


def read_data_file(file: DataFile, table: Table) -> pa.Table:
    """A written data file as Arrow with every column, partition columns restored."""
    return read_file(file.as_lake_file(), table)


def _partitioned(table: Table, rows: pa.Table, by_source: bool):
    """-> ((partition value..., source group), rows) for every partition (and
    landing file, with ``by_source``) the rows fall in."""
    parts = [rows.column(c) for c in table.partition_by]
    if by_source:
        parts.append(pc.fill_null(rows.column("source_file"), ""))
    if not parts:
        yield ("",), rows
        return
    # Each column encoded apart and the codes combined as numbers: no per-row text.
    codes, texts = np.zeros(rows.num_rows, np.int64), []
    for column in parts:
        encoded = (column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column).dictionary_encode()
        texts.append(encoded.dictionary.cast(pa.string()).to_pylist())
        indices = np.asarray(pc.fill_null(encoded.indices, len(texts[-1])).to_numpy(zero_copy_only=False), np.int64)
        texts[-1].append(None)
        codes = codes * len(texts[-1]) + indices
    combined, group_of_row = np.unique(codes, return_inverse=True)
    for group, part in split_by_shard(rows, group_of_row.astype(np.int64), len(combined)):
        values, code = [], int(combined[group])
        for names in reversed(texts):
            code, index = divmod(code, len(names))
            values.append(names[index])
        values.reverse()
        source = values.pop() if by_source else ""
        yield tuple(values) + (source,), part


def write_table_files(lake: str, table: Table, rows: pa.Table, by_source: bool = False) -> list[DataFile]:
    """Arrow rows of ``table`` -> one data file per partition (and landing
    file, with ``by_source``), outside a pipeline (small writes: a replay)."""
    return [
        write_data_file(lake, table, part, tuple(zip(table.partition_by, values[:-1])))
        for values, part in _partitioned(table, rows, by_source)
        if part.num_rows
    ]


class WriteDataFilesFn(beam.DoFn):
    """``(table name, Arrow rows)`` -> data files, one per partition (and
    landing file, for tables in ``by_source``: a replace of a landing file's
    rows then removes whole files) of at most ``ROWS_PER_FILE`` rows; emits
    a ``DataFile`` each. Buffers at most ``ROWS_BUFFERED`` rows across
    partitions, writing the largest out first."""

    def __init__(self, tables: list[Table], lake: str, by_source: tuple[str, ...] = ()):
        self._tables = {t.name: t for t in tables}
        self._lake, self._by_source = lake, frozenset(by_source)
        self._rows = {t.name: metrics.counter(f"rows_written_{t.name}") for t in tables}

    def start_bundle(self):
        self._buffers = defaultdict(list)
        self._sizes = defaultdict(int)
        self._buffered = 0

    def process(self, tagged):
        name, rows = tagged
        table = self._tables[name]
        for key, part in _partitioned(table, rows, name in self._by_source):
            key = (name,) + key
            self._buffers[key].append(part)
            self._sizes[key] += part.num_rows
            self._buffered += part.num_rows
            if self._sizes[key] >= ROWS_PER_FILE:
                yield self._flush(key)
        while self._buffered >= ROWS_BUFFERED:
            yield self._flush(max(self._sizes, key=self._sizes.get))

    def finish_bundle(self):
        for key in list(self._buffers):
            yield WindowedValue(self._flush(key), MIN_TIMESTAMP, [GlobalWindow()])

    def _flush(self, key) -> DataFile:
        rows = pa.concat_tables(self._buffers.pop(key))
        self._buffered -= self._sizes.pop(key)
        name, *values, _ = key
        table = self._tables[name]
        written = write_data_file(self._lake, table, rows, tuple(zip(table.partition_by, values)))
        metrics.add(self._rows[name], rows.num_rows)
        return written


class WriteDataFiles(beam.PTransform):
    """``(table name, Arrow rows)`` of ``tables`` -> ``DataFile``s (see
    ``WriteDataFilesFn``). Takes one PCollection or several: each is written
    where it is produced and only the file descriptions are flattened (a
    runner materializes what it flattens)."""

    def __init__(self, tables: list[Table], lake: str, by_source: tuple[str, ...] = ()):
        super().__init__()
        self._fn = WriteDataFilesFn(tables, lake, by_source)

    def expand(self, rows):
        inputs = list(rows) if isinstance(rows, (list, tuple)) else [rows]
        written = [pcoll | f"WriteParquet{i or ''}" >> beam.ParDo(self._fn) for i, pcoll in enumerate(inputs)]
        return written[0] if len(written) == 1 else tuple(written) | "AllFiles" >> beam.Flatten()
