"""The Parquet lakehouse folder: reading landing files, the raw layer, and
staged writes committed with an explicit replacement rule.

Paths go through Beam's ``FileSystems`` so the same code writes a local
folder or ``gs://bucket/lake``.

Layout::

    raw/ingest_date=D/<sha256 of content>.parquet        never rewritten
    raw/ingest_date=D/stream-<batch time>-<id>.parquet    (streaming)
    bronze/<table>/event_date=D/platform=P/<source>-<uuid>.parquet
    silver/<table>/<uuid>.parquet
    gold/<table>/<uuid>.parquet
    dead_letter/ingest_date=D/<source>-<uuid>.parquet
    silver_stream/<table>/current.parquet                 streaming silver, one current row per key

Batch elements are Arrow tables (``transforms.columnar``): landing files
are read in chunks of ``RAW_CHUNK_ROWS`` lines, writers take ``(table name,
Arrow rows)``. Batch writers stage files under ``_staging/<run>/`` and emit
their names; one ``CommitLakeWrites`` step at the end of the pipeline moves
them in and deletes exactly the files its ``Replace`` rules name. A failed
run therefore leaves the previous lake state untouched (only its staging
folder remains).

Streaming appends one file per table, partition and processing-time batch
(``WriteBatchFilesFn``), and rewrites the silver snapshots per batch
(``MergeSnapshotsFn``); ``BatchEvery`` makes the batches.
"""
from __future__ import annotations

import gzip
from datetime import datetime, timezone
import hashlib
import io
import logging
import posixpath
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
import functools
from functools import cached_property

import apache_beam as beam
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms import trigger
from apache_beam.transforms.window import GlobalWindow, GlobalWindows
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from schemas import contract
from schemas.table import Table
from schemas.tables import RAW
from transforms.columnar import split_by_shard
from transforms import metrics

ROWS_PER_FILE = 200_000
# A writer holds at most this many rows across all its partitions, then
# writes the largest partition out: memory stays bounded however large the
# bundle (on FnApiRunner a batch bundle is the whole input).
ROWS_BUFFERED = 200_000
_READ_CHUNK = 8 << 20
STREAM_SOURCE = "stream"  # file group of rows that came from Pub/Sub


# --- paths --------------------------------------------------------------------------
def table_dir(lake: str, table: Table) -> str:
    if table.layer == "raw":
        return posixpath.join(lake, "raw")
    if table.layer == "ops":
        return posixpath.join(lake, table.name)
    return posixpath.join(lake, table.layer, table.name)


def list_files(directory: str) -> list[str]:
    """Parquet files below ``directory`` (recursive), sorted; [] if absent."""
    result = FileSystems.match([directory.rstrip("/") + "/**"])[0]
    return sorted(m.path for m in result.metadata_list
                  if m.path.endswith(".parquet") and "/_" not in m.path[len(directory):])


def source_id(source_file: str | None) -> str:
    """Short stable id of a landing file; names the files its rows land in."""
    if not source_file:
        return STREAM_SOURCE
    return hashlib.sha1(source_file.encode()).hexdigest()[:16]


def _makedirs(path: str) -> None:
    try:
        FileSystems.mkdirs(path)
    except IOError:
        pass  # exists already (local); object stores need none


def partition_values(relpath: str) -> dict:
    """'event_date=2026-11-02/platform=web/x.parquet' -> {'event_date': ..., 'platform': ...}."""
    return dict(part.split("=", 1) for part in relpath.split("/")[:-1] if "=" in part)


def write_parquet(path: str, table: Table, rows: list[dict] | pa.Table) -> None:
    """Rows (in-pipeline dicts, or Arrow with every column) -> one Parquet
    file of the table's file columns (partition columns live in the path)."""
    _makedirs(posixpath.dirname(path))
    if isinstance(rows, pa.Table):
        arrow = rows.select([c.name for c in table.file_columns]).cast(table.arrow_schema(False))
    else:
        arrow = table.to_arrow(rows)
    with FileSystems.create(path) as f:
        pq.write_table(arrow, f, compression="zstd")


def read_parquet_rows(path: str, table: Table, root: str) -> list[dict]:
    """Rows of one lake file, partition columns restored from its path."""
    return table.from_arrow(read_parquet_arrow(path, table, path[len(root):].lstrip("/")))


def read_parquet_arrow(path: str, table: Table, relpath: str, columns: tuple[str, ...] | None = None) -> pa.Table:
    """One lake or staged file as Arrow with every column of ``table`` (or
    ``columns``), the partition columns restored from ``relpath`` (its path
    below the table)."""
    wanted = list(columns) if columns is not None else table.column_names
    partitions = partition_values(relpath)
    with FileSystems.open(path) as f:
        arrow = pq.read_table(io.BytesIO(f.read()), columns=[c for c in wanted if c not in partitions])
    for name, value in partitions.items():
        if name in wanted:
            arrow = arrow.append_column(name, pa.array([value] * arrow.num_rows, pa.string()))
    schema = table.arrow_schema()
    return arrow.select(wanted).cast(pa.schema([schema.field(c) for c in wanted]))


# --- reading landing files ---------------------------------------------------------------
# Lines per raw chunk, the element the batch path passes on: big enough that
# Beam's per-element cost vanishes, small enough to bound a step's memory.
RAW_CHUNK_ROWS = 200_000


def _landing_lines(stream, digest):
    """A landing file's lines (split on \\n, a trailing \\r removed), in
    lists; ``digest`` gets the content, with a final newline if it lacks one."""
    pending, last = b"", b"\n"
    while True:
        block = stream.read(_READ_CHUNK)
        if not block:
            break
        digest.update(block)
        last = block[-1:]
        lines = (pending + block).split(b"\n")
        pending = lines.pop()
        yield [line[:-1] if line[-1:] == b"\r" else line for line in lines]
    if pending:
        yield [pending[:-1] if pending[-1:] == b"\r" else pending]
    if last != b"\n":
        digest.update(b"\n")


def _default(value):
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError


def raw_chunk(data: list[bytes], lines: list[int], source_file: str | None, ingested_at: int) -> pa.Table:
    """Raw-layer rows (``RAW``, Arrow) of landing-file records."""
    n = len(data)
    when = pa.repeat(pa.scalar(ingested_at, pa.timestamp("us", tz="UTC")), n)
    return pa.Table.from_arrays([
        when.cast(pa.date32()), pa.nulls(n, pa.string()), pa.nulls(n, pa.timestamp("us", tz="UTC")),
        pa.nulls(n, pa.string()), when, pa.repeat(pa.scalar(source_file, pa.string()), n),
        pa.array(lines, pa.int64()), pa.array(data, pa.binary())], schema=RAW.arrow_schema())


class ReadLandingFileFn(beam.DoFn):
    """One landing file (JSONL, JSONL.gz, Parquet, or a raw-layer Parquet
    file) -> raw chunks (Arrow, at most ``RAW_CHUNK_ROWS`` rows). Landing
    files are also copied into the raw layer, named by the SHA-256 of their
    content, so ingesting the same file again never duplicates or rewrites
    raw."""

    def __init__(self, lake: str, ingested_at: int, total_files: int = 0):
        self._raw_root = table_dir(lake, RAW)
        self._ingested_at = ingested_at
        self._total = total_files
        self._files = metrics.counter("files_read")
        self._blank = metrics.counter("blank_lines_skipped")

    def start_bundle(self):
        self._done = 0

    def process(self, path: str):
        self._done += 1
        if path.startswith(self._raw_root.rstrip("/") + "/"):
            # Already in the raw layer: replay it as it was ingested.
            arrow = read_parquet_arrow(path, RAW, path[len(self._raw_root):].lstrip("/"))
            for start in range(0, arrow.num_rows, RAW_CHUNK_ROWS):
                yield arrow.slice(start, RAW_CHUNK_ROWS)
            self._files.inc()
            return
        digest = hashlib.sha256()
        ingest_date = contract.micros_to_date(self._ingested_at)
        staged = posixpath.join(self._raw_root, "_incoming", f"{uuid.uuid4().hex}.parquet")
        _makedirs(posixpath.dirname(staged))
        n = 0
        with FileSystems.create(staged) as out:
            # no dictionary for the record bytes: they are all distinct
            writer = pq.ParquetWriter(out, RAW.arrow_schema(with_partition_columns=False), compression="zstd",
                                      use_dictionary=["source_file", "attributes_json"])
            data, lines = [], []
            for block in self._records(path, digest):
                for record in block:
                    n += 1
                    if record.strip():
                        data.append(record)
                        lines.append(n)
                    else:
                        self._blank.inc()
                while len(data) >= RAW_CHUNK_ROWS:
                    chunk = raw_chunk(data[:RAW_CHUNK_ROWS], lines[:RAW_CHUNK_ROWS], path, self._ingested_at)
                    del data[:RAW_CHUNK_ROWS], lines[:RAW_CHUNK_ROWS]
                    writer.write_table(chunk.drop_columns(["ingest_date"]))
                    yield chunk
            if data:
                chunk = raw_chunk(data, lines, path, self._ingested_at)
                writer.write_table(chunk.drop_columns(["ingest_date"]))
                yield chunk
            writer.close()
        name = f"{digest.hexdigest()}.parquet"
        if list(m for m in FileSystems.match([f"{self._raw_root}/ingest_date=*/{name}"])[0].metadata_list):
            FileSystems.delete([staged])  # same content ingested before: raw stays as it was
        else:
            final = posixpath.join(self._raw_root, f"ingest_date={ingest_date}", name)
            _makedirs(posixpath.dirname(final))
            FileSystems.rename([staged], [final])
        self._files.inc()
        # Exact locally (one bundle); on a distributed runner the first number counts this worker's files.
        logging.info("read %s: %d lines (%d of %d files)", path, n, self._done, self._total)

    @staticmethod
    def _records(path: str, digest):
        """Lists of records: JSONL lines, or Parquet rows as canonical JSON."""
        if path.endswith(".parquet"):
            with FileSystems.open(path) as f:
                parquet = pq.ParquetFile(io.BytesIO(f.read()))
            for batch in parquet.iter_batches(batch_size=50_000):
                block = [orjson.dumps({k: v for k, v in row.items() if v is not None}, default=_default)
                         for row in batch.to_pylist()]
                for data in block:
                    digest.update(data)
                yield block
            return
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            stream = gzip.GzipFile(fileobj=f) if path.endswith(".gz") else f
            yield from _landing_lines(stream, digest)


class ReadLandingFiles(beam.PTransform):
    """File paths (resolved when the pipeline is built) -> raw chunks."""

    def __init__(self, paths: list[str], lake: str, ingested_at: int):
        super().__init__()
        self._paths, self._lake, self._ingested_at = paths, lake, ingested_at

    def expand(self, pbegin):
        return (pbegin
                | "ListFiles" >> beam.Create(self._paths)
                # one file per worker on a distributed runner (Create alone would fuse them into one)
                | "SpreadFiles" >> beam.Reshuffle()
                | "ReadEachFile" >> beam.ParDo(ReadLandingFileFn(self._lake, self._ingested_at, len(self._paths))))


def expand_inputs(patterns: list[str]) -> list[str]:
    """Glob patterns -> sorted file list. Sorting makes 'earliest ingest'
    (first copy wins) deterministic across files of one backfill."""
    paths = set()
    for result in FileSystems.match(patterns):
        paths.update(m.path for m in result.metadata_list
                     if m.path.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet")))
    return sorted(paths)


class ReadLakeTable(beam.PTransform):
    """Given lake files of one table -> ``(table name, Arrow rows)`` per file,
    partition columns restored; ``columns``: only those."""

    def __init__(self, table: Table, lake: str, files: list[str], columns: tuple[str, ...] | None = None):
        super().__init__()
        self._table, self._root, self._files, self._columns = table, table_dir(lake, table), files, columns

    def expand(self, pbegin):
        table, root, columns = self._table, self._root, self._columns
        return (pbegin
                | "ListFiles" >> beam.Create(self._files)
                | "ReadParquet" >> beam.Map(lambda path: (table.name, read_parquet_arrow(
                    path, table, path[len(root):].lstrip("/"), columns))))


# --- staged writes and the commit ------------------------------------------------------------
def _partitioned(table: Table, rows: pa.Table, by_source: bool):
    """-> ((partition values..., file group), rows) for every partition (and
    source file, with ``by_source``) the rows fall in."""
    parts = [rows.column(c).cast(pa.string()) for c in table.partition_by]
    if by_source:
        parts.append(pc.fill_null(rows.column("source_file"), ""))
    if not parts:
        yield ("",), rows
        return
    combined = pc.binary_join_element_wise(*parts, "\x1f") if len(parts) > 1 else parts[0]
    encoded = combined.combine_chunks().dictionary_encode() if isinstance(combined, pa.ChunkedArray) \
        else combined.dictionary_encode()
    for index, part in split_by_shard(rows, encoded.indices.to_numpy(zero_copy_only=False), len(encoded.dictionary)):
        values = encoded.dictionary[index].as_py().split("\x1f")
        if by_source:
            *values, source = values
            group = source_id(source or None)
        else:
            group = ""
        yield tuple(values) + (group,), part


class WriteStagedFn(beam.DoFn):
    """``(table name, Arrow rows)`` -> Parquet files in staging, one per
    partition (and source file, for tables in ``by_source``) of at most
    ``ROWS_PER_FILE`` rows; emits ``(table name, relative path, staged path)``.
    Buffers at most ``ROWS_BUFFERED`` rows across partitions, writing the
    largest out first."""

    def __init__(self, tables: list[Table], staging: str, by_source: tuple[str, ...] = ()):
        self._tables = {t.name: t for t in tables}
        self._staging, self._by_source = staging, frozenset(by_source)
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

    def _flush(self, key):
        rows = pa.concat_tables(self._buffers.pop(key))
        self._buffered -= self._sizes.pop(key)
        name, *parts, group = key
        table = self._tables[name]
        folders = [f"{c}={v}" for c, v in zip(table.partition_by, parts)]
        relpath = "/".join(folders + [f"{group + '-' if group else ''}{uuid.uuid4().hex}.parquet"])
        staged = posixpath.join(self._staging, name, relpath)
        write_parquet(staged, table, rows)
        metrics.add(self._rows[name], rows.num_rows)
        return name, relpath, staged


class WriteStaged(beam.PTransform):
    """``(table name, Arrow rows)`` of ``tables`` -> staged files (see
    ``WriteStagedFn``). Takes one PCollection or several: each is written
    where it is produced and only the file names are flattened (a runner
    materializes what it flattens)."""

    def __init__(self, tables: list[Table], staging: str, by_source: tuple[str, ...] = ()):
        super().__init__()
        self._fn = WriteStagedFn(tables, staging, by_source)

    def expand(self, rows):
        inputs = list(rows) if isinstance(rows, (list, tuple)) else [rows]
        staged = [pcoll | f"WriteParquet{i or ''}" >> beam.ParDo(self._fn) for i, pcoll in enumerate(inputs)]
        return staged[0] if len(staged) == 1 else tuple(staged) | "AllFiles" >> beam.Flatten()


class WriteBatchFilesFn(beam.DoFn):
    """(table name, lists of rows of one batch) -> one Parquet file per
    partition the rows fall in, written aside and renamed into place so
    readers never see half a file; named by the batch's time and a unique id,
    so a file is never replaced. Rows are value tuples in the table's column
    order (``lake_values``). Batches of other tables pass by."""

    def __init__(self, tables: list[Table], lake: str):
        self._tables, self._lake = {t.name: t for t in tables}, lake
        self._rows = {t.name: metrics.counter(f"rows_written_{t.name}") for t in tables}

    def process(self, batch):
        name, lists = batch
        table = self._tables.get(name)
        if table is None:
            return
        names = table.column_names
        at = [names.index(c) for c in table.partition_by]
        by_partition = defaultdict(list)
        for rows in lists:
            for values in rows:
                by_partition[tuple(values[i] for i in at)].append(dict(zip(names, values)))
        root = table_dir(self._lake, table)
        started = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        for parts, partition_rows in by_partition.items():
            folders = [f"{c}={v}" for c, v in zip(table.partition_by, parts)]
            file_name = f"{STREAM_SOURCE}-{started}-{uuid.uuid4().hex[:12]}.parquet"
            incoming = posixpath.join(root, "_incoming", file_name)
            write_parquet(incoming, table, partition_rows)
            final = posixpath.join(root, *folders, file_name)
            _makedirs(posixpath.dirname(final))
            FileSystems.rename([incoming], [final])
            self._rows[name].inc(len(partition_rows))
            yield final


def lake_values(table: Table, row: dict) -> tuple:
    """A row as the streaming lake sink takes it: values of every column in
    the table's order."""
    return tuple(map(row.get, table._names))


def stream_snapshot_path(lake: str, table: Table) -> str:
    """The streaming job's current rows of a silver table (the batch owns ``silver/``)."""
    return posixpath.join(lake, "silver_stream", table.name, "current.parquet")


class MergeSnapshotsFn(beam.DoFn):
    """(silver table name, lists of upserted rows of one batch) -> the
    table's snapshot rewritten with them: the newest ``_version`` per key
    wins, other keys stay. The new file replaces the old one by rename, so a
    reader sees one or the other. Batches of other tables pass by."""

    def __init__(self, tables: list[Table], lake: str):
        self._tables, self._lake = {t.name: t for t in tables}, lake
        self._rows = {t.name: metrics.counter(f"rows_upserted_{t.name}") for t in tables}

    def process(self, batch):
        name, lists = batch
        table = self._tables.get(name)
        if table is None:
            return
        rows = (row for part in lists for row in part)
        path = stream_snapshot_path(self._lake, table)
        root = posixpath.dirname(path)
        key = table.key[0]
        newest = newest_per_key(rows, key)
        current = ({r[key]: r for r in read_parquet_rows(path, table, root)} if FileSystems.exists(path) else {})
        current.update(newest)
        incoming = posixpath.join(root, "_incoming", f"{uuid.uuid4().hex}.parquet")
        write_parquet(incoming, table, list(current.values()))
        FileSystems.rename([incoming], [path])
        self._rows[name].inc(len(newest))
        yield name, len(current)


def batch_window(seconds: int | None) -> beam.WindowInto:
    """The global window, fired every ``seconds`` of processing time, or
    (``None``) only when the input ends -- then with Beam's default
    windowing, which runners group on their fast path."""
    if not seconds:
        return beam.WindowInto(GlobalWindows())
    return beam.WindowInto(GlobalWindows(), trigger=_every(seconds),
                           accumulation_mode=trigger.AccumulationMode.DISCARDING)


@functools.lru_cache(maxsize=None)
def _every(seconds: int):
    # One trigger object per period: triggers compare by identity, and the
    # inputs of a Flatten must share their windowing.
    return trigger.Repeatedly(trigger.AfterProcessingTime(seconds))


def newest_per_key(rows, key: str) -> dict:
    """Streaming upserts -> the one with the highest ``_version`` per key."""
    newest = {}
    for row in rows:
        if row[key] not in newest or row["_version"] > newest[row[key]]["_version"]:
            newest[row[key]] = row
    return newest


class BatchEvery(beam.PTransform):
    """Streaming ``(table name, rows)`` (one PCollection or several) ->
    ``(table name, lists of rows)`` batches, one per table at most every
    ``seconds`` of processing time, for the sinks (files appended,
    snapshots rewritten, tables merged).

    A processing-time trigger, not event-time windows: the sink follows the
    clock, so a watermark held back (by a backlog, or by a local runner that
    advances it only between pulls) never delays it. One key per table: a
    table's batches are applied one after the other, never concurrently.
    ``seconds=None``: one batch when the input ends (bounded runs, and
    runners without processing-time triggers such as FnApiRunner)."""

    def __init__(self, seconds: int | None):
        super().__init__()
        self._seconds = seconds

    def expand(self, rows):
        return batched(rows, self._seconds) | "GroupBatch" >> beam.GroupByKey()


def batched(pcolls, seconds: int | None, element_type=None):
    """One PCollection or several, each put in ``batch_window`` before they are
    flattened (inputs of a Flatten must share their windowing);
    ``element_type``: declared for what comes out (a GroupByKey checks it)."""
    inputs = list(pcolls) if isinstance(pcolls, (list, tuple)) else [pcolls]
    windowed = [pcoll | f"EverySeconds{i or ''}" >> batch_window(seconds) for i, pcoll in enumerate(inputs)]
    if len(windowed) == 1:
        if element_type is not None:
            windowed[0].element_type = element_type
        return windowed[0]
    flatten = beam.Flatten()
    return tuple(windowed) | "AllBatched" >> (flatten.with_output_types(element_type) if element_type else flatten)


@dataclass(frozen=True)
class Replace:
    """Which existing rows of ``table`` a run restates, and so which files a
    commit removes: ``scope='table'`` all of them (truncate and load);
    ``'sources'`` those read from the given landing files (``None``: from
    Pub/Sub); ``'partitions'`` those under the given first-level partition
    folders (e.g. ``event_date=2026-11-02``). ``transforms.bigquery_io`` reads
    the same rule as the rows a MERGE deletes."""

    table: Table
    scope: str
    values: frozenset = field(default_factory=frozenset)

    def __post_init__(self):
        if self.scope not in ("table", "sources", "partitions"):
            raise ValueError(self.scope)

    @cached_property
    def _source_ids(self) -> frozenset:
        """The file-name prefixes of the sources' files (hashed once, not per file)."""
        return frozenset(source_id(s) for s in self.values)

    def replaces(self, relpath: str) -> bool:
        if self.scope == "table":
            return True
        if self.scope == "sources":
            return posixpath.basename(relpath).split("-", 1)[0] in self._source_ids
        return relpath.split("/", 1)[0] in self.values

    def surviving_files(self, lake: str) -> list[str]:
        root = table_dir(lake, self.table)
        return [p for p in list_files(root) if not self.replaces(p[len(root):].lstrip("/"))]


class CommitFn(beam.DoFn):
    def __init__(self, lake: str, staging: str, rules: list[Replace]):
        self._lake, self._staging, self._rules = lake, staging, rules

    def process(self, staged_files: list):
        by_table = defaultdict(list)
        for name, relpath, staged in staged_files:
            by_table[name].append((relpath, staged))
        for rule in self._rules:
            root = table_dir(self._lake, rule.table)
            old = [p for p in list_files(root) if rule.replaces(p[len(root):].lstrip("/"))]
            new = by_table.pop(rule.table.name, [])
            destinations = [posixpath.join(root, relpath) for relpath, _ in new]
            for d in {posixpath.dirname(d) for d in destinations}:
                _makedirs(d)
            if new:
                FileSystems.rename([s for _, s in new], destinations)
            if old:
                FileSystems.delete(old)
            if rule.scope == "table" and not new:
                # An empty result still leaves a readable table with its schema.
                write_parquet(posixpath.join(root, f"{uuid.uuid4().hex}.parquet"), rule.table, [])
            logging.info("commit %s: %d files in, %d replaced", rule.table.name, len(new), len(old))
            yield rule.table.name, len(new), len(old)
        if by_table:
            raise ValueError(f"staged files without a Replace rule: {sorted(by_table)}")
        if FileSystems.exists(self._staging):
            FileSystems.delete([self._staging])


class CommitLakeWrites(beam.PTransform):
    """All staged files of a run -> moved into the lake in one final step."""

    def __init__(self, lake: str, staging: str, rules: list[Replace]):
        super().__init__()
        self._fn = CommitFn(lake, staging, rules)

    def expand(self, staged):
        return (staged
                | "AllStagedFiles" >> beam.combiners.ToList()
                | "MoveIntoLake" >> beam.ParDo(self._fn))


def new_staging_dir(lake: str) -> str:
    return posixpath.join(lake, "_staging", uuid.uuid4().hex)

