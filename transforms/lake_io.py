"""The Parquet lakehouse folder: reading landing files, the raw layer, and
staged writes committed with an explicit replacement rule.

Paths go through Beam's ``FileSystems`` so the same code writes a local
folder or ``gs://bucket/lake``.

Layout::

    raw/ingest_date=D/<sha256 of content>.parquet        never rewritten
    raw/ingest_date=D/stream-<window>-p<pane>-<id>.parquet  (streaming)
    bronze/<table>/event_date=D/platform=P/<source>-<uuid>.parquet
    silver/<table>/<uuid>.parquet
    gold/<table>/<uuid>.parquet
    dead_letter/ingest_date=D/<source>-<uuid>.parquet
    silver_stream/<table>/current.parquet                 streaming silver, one current row per key

Streaming appends one file per window pane (``WriteWindowedFiles``). Batch
writers stage files under ``_staging/<run>/`` and emit their names; one
``CommitLakeWrites`` step at the end of the pipeline moves them in and
deletes exactly the files its ``Replace`` rules name. A failed run therefore
leaves the previous lake state untouched (only its staging folder remains).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import logging
import posixpath
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property

import apache_beam as beam
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger
from apache_beam.transforms.window import FixedWindows, GlobalWindow, GlobalWindows
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from schemas import contract
from schemas.table import Table
from schemas.tables import RAW

NAMESPACE = "funnel"
ROWS_PER_FILE = 200_000
# A writer holds at most this many rows across all its partitions, then
# writes the largest partition out: memory stays bounded however large the
# bundle (on FnApiRunner a batch bundle is the whole input).
ROWS_BUFFERED = 50_000
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


def write_parquet(path: str, table: Table, rows: list[dict]) -> None:
    _makedirs(posixpath.dirname(path))
    with FileSystems.create(path) as f:
        pq.write_table(table.to_arrow(rows), f, compression="zstd")


def read_parquet_rows(path: str, table: Table, root: str) -> list[dict]:
    """Rows of one lake file, partition columns restored from its path."""
    return table.from_arrow(read_parquet_arrow(path, table, path[len(root):].lstrip("/")))


def read_parquet_arrow(path: str, table: Table, relpath: str) -> pa.Table:
    """One lake or staged file as Arrow with every column of ``table``, the
    partition columns restored from ``relpath`` (its path below the table)."""
    with FileSystems.open(path) as f:
        arrow = pq.read_table(io.BytesIO(f.read()))
    for name, value in partition_values(relpath).items():
        arrow = arrow.append_column(name, pa.array([value] * arrow.num_rows, pa.string()))
    return arrow.select(table.column_names).cast(table.arrow_schema())


# --- reading landing files ---------------------------------------------------------------
def _iter_lines(f):
    pending = b""
    while True:
        chunk = f.read(_READ_CHUNK)
        if not chunk:
            break
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        yield from lines
    if pending:
        yield pending


def _default(value):
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError


class ReadLandingFileFn(beam.DoFn):
    """One landing file (JSONL, JSONL.gz, Parquet, or a raw-layer Parquet
    file) -> raw rows. Landing files are also copied into the raw layer,
    named by the SHA-256 of their content, so ingesting the same file again
    never duplicates or rewrites raw."""

    def __init__(self, lake: str, ingested_at: int, total_files: int = 0):
        self._raw_root = table_dir(lake, RAW)
        self._ingested_at = ingested_at
        self._total = total_files
        self._files = Metrics.counter(NAMESPACE, "files_read")
        self._blank = Metrics.counter(NAMESPACE, "blank_lines_skipped")

    def start_bundle(self):
        self._done = 0

    def process(self, path: str):
        self._done += 1
        if path.startswith(self._raw_root.rstrip("/") + "/"):
            # Already in the raw layer: replay it as it was ingested.
            yield from read_parquet_rows(path, RAW, self._raw_root)
            self._files.inc()
            return
        digest = hashlib.sha256()
        ingest_date = contract.micros_to_date(self._ingested_at)
        staged = posixpath.join(self._raw_root, "_incoming", f"{uuid.uuid4().hex}.parquet")
        _makedirs(posixpath.dirname(staged))
        n = 0
        with FileSystems.create(staged) as out:
            writer = pq.ParquetWriter(out, RAW.arrow_schema(with_partition_columns=False), compression="zstd")
            batch = []
            for data in self._records(path, digest):
                n += 1
                if not data.strip():
                    self._blank.inc()
                    continue
                row = {"ingest_date": ingest_date, "message_id": None, "publish_time": None,
                       "attributes_json": None, "ingested_at": self._ingested_at,
                       "source_file": path, "source_line": n, "data": data}
                batch.append(row)
                yield row
                if len(batch) >= ROWS_PER_FILE:
                    writer.write_table(RAW.to_arrow(batch))
                    batch = []
            if batch:
                writer.write_table(RAW.to_arrow(batch))
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
        if path.endswith(".parquet"):
            with FileSystems.open(path) as f:
                parquet = pq.ParquetFile(io.BytesIO(f.read()))
            for batch in parquet.iter_batches(batch_size=50_000):
                for row in batch.to_pylist():
                    data = orjson.dumps({k: v for k, v in row.items() if v is not None}, default=_default)
                    digest.update(data)
                    yield data
            return
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            stream = gzip.GzipFile(fileobj=f) if path.endswith(".gz") else f
            for line in _iter_lines(stream):
                digest.update(line + b"\n")
                yield line[:-1] if line.endswith(b"\r") else line


class ReadLandingFiles(beam.PTransform):
    """File paths (resolved when the pipeline is built) -> raw rows."""

    def __init__(self, paths: list[str], lake: str, ingested_at: int):
        super().__init__()
        self._paths, self._lake, self._ingested_at = paths, lake, ingested_at

    def expand(self, pbegin):
        return (pbegin
                | "ListFiles" >> beam.Create(self._paths)
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
    """Given lake files of one table -> its rows (partition columns restored)."""

    def __init__(self, table: Table, lake: str, files: list[str]):
        super().__init__()
        self._table, self._root, self._files = table, table_dir(lake, table), files

    def expand(self, pbegin):
        table, root = self._table, self._root
        return (pbegin
                | "ListFiles" >> beam.Create(self._files)
                | "ReadParquet" >> beam.FlatMap(lambda path: read_parquet_rows(path, table, root)))


# --- staged writes and the commit ------------------------------------------------------------
class WriteStagedFn(beam.DoFn):
    """Buffers rows per (partition, file group), writes Parquet files to
    staging, emits ``(table name, relative path, staged path)``."""

    def __init__(self, table: Table, staging: str, group_by_source: bool):
        self._table, self._staging, self._by_source = table, staging, group_by_source
        self._rows = Metrics.counter(NAMESPACE, f"rows_written_{table.name}")

    def start_bundle(self):
        self._buffers = defaultdict(list)
        self._buffered = 0
        self._sources = {}

    def process(self, row: dict):
        group = ""
        if self._by_source:
            src = row.get("source_file")
            group = self._sources.get(src) or self._sources.setdefault(src, source_id(src))
        key = tuple(row[c] for c in self._table.partition_by) + (group,)
        buffer = self._buffers[key]
        buffer.append(row)
        self._buffered += 1
        if len(buffer) >= ROWS_PER_FILE:
            yield self._flush(key)
        elif self._buffered >= ROWS_BUFFERED:
            yield self._flush(max(self._buffers, key=lambda k: len(self._buffers[k])))

    def finish_bundle(self):
        for key in list(self._buffers):
            if self._buffers[key]:
                yield WindowedValue(self._flush(key), MIN_TIMESTAMP, [GlobalWindow()])

    def _flush(self, key):
        rows = self._buffers.pop(key)
        self._buffered -= len(rows)
        *parts, group = key
        folders = [f"{c}={v}" for c, v in zip(self._table.partition_by, parts)]
        name = f"{group + '-' if group else ''}{uuid.uuid4().hex}.parquet"
        relpath = "/".join(folders + [name])
        staged = posixpath.join(self._staging, self._table.name, relpath)
        write_parquet(staged, self._table, rows)
        self._rows.inc(len(rows))
        return self._table.name, relpath, staged


class WriteStaged(beam.PTransform):
    def __init__(self, table: Table, staging: str, group_by_source: bool = False):
        super().__init__()
        self._fn = WriteStagedFn(table, staging, group_by_source)

    def expand(self, rows):
        return rows | "WriteParquet" >> beam.ParDo(self._fn)


class WriteWindowFileFn(beam.DoFn):
    """(partition values, rows of one window pane) -> one Parquet file,
    written aside and renamed into place so readers never see half a file.
    Named by window and pane: a late pane adds a file, never replaces one."""

    def __init__(self, table: Table, lake: str):
        self._table, self._root = table, table_dir(lake, table)
        self._rows = Metrics.counter(NAMESPACE, f"rows_written_{table.name}")

    def process(self, keyed, window=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        parts, rows = keyed
        rows = list(rows)
        folders = [f"{c}={v}" for c, v in zip(self._table.partition_by, parts)]
        start = window.start.to_utc_datetime().strftime("%Y%m%dT%H%M%S")
        name = f"{STREAM_SOURCE}-{start}-p{pane.index}-{uuid.uuid4().hex[:12]}.parquet"
        incoming = posixpath.join(self._root, "_incoming", name)
        write_parquet(incoming, self._table, rows)
        final = posixpath.join(self._root, *folders, name)
        _makedirs(posixpath.dirname(final))
        FileSystems.rename([incoming], [final])
        self._rows.inc(len(rows))
        yield final


class WriteWindowedFiles(beam.PTransform):
    """Streaming append: rows -> one file per (fixed window, pane, partition).
    Rows must be timestamped by ingest time, so a window closes once its
    minute of arrivals is over."""

    def __init__(self, table: Table, lake: str, window_seconds: int):
        super().__init__()
        self._table, self._lake, self._seconds = table, lake, window_seconds

    def expand(self, rows):
        columns = self._table.partition_by
        return (rows
                | "Window" >> beam.WindowInto(FixedWindows(self._seconds),
                                              allowed_lateness=self._seconds)
                | "KeyByPartition" >> beam.Map(lambda r: (tuple(r[c] for c in columns), r))
                | "GroupWindowPane" >> beam.GroupByKey()
                | "WriteFile" >> beam.ParDo(WriteWindowFileFn(self._table, self._lake)))


def stream_snapshot_path(lake: str, table: Table) -> str:
    """The streaming job's current rows of a silver table (the batch owns ``silver/``)."""
    return posixpath.join(lake, "silver_stream", table.name, "current.parquet")


class MergeIntoSnapshotFn(beam.DoFn):
    """(None, upserted rows of one window) -> the table's snapshot rewritten with
    them: the newest ``_version`` per key wins, other keys stay. The new file
    replaces the old one by rename, so a reader sees one or the other."""

    def __init__(self, table: Table, lake: str):
        self._table, self._path = table, stream_snapshot_path(lake, table)
        self._root = posixpath.dirname(self._path)
        self._key = table.key[0]
        self._rows = Metrics.counter(NAMESPACE, f"rows_upserted_{table.name}")

    def process(self, keyed):
        key = self._key
        newest = newest_per_key(keyed[1], key)
        current = ({r[key]: r for r in read_parquet_rows(self._path, self._table, self._root)}
                   if FileSystems.exists(self._path) else {})
        current.update(newest)
        incoming = posixpath.join(self._root, "_incoming", f"{uuid.uuid4().hex}.parquet")
        write_parquet(incoming, self._table, list(current.values()))
        FileSystems.rename([incoming], [self._path])
        self._rows.inc(len(newest))
        yield len(current)


def newest_per_key(rows, key: str) -> dict:
    """Streaming upserts -> the one with the highest ``_version`` per key."""
    newest = {}
    for row in rows:
        if row[key] not in newest or row["_version"] > newest[row[key]]["_version"]:
            newest[row[key]] = row
    return newest


class BatchEvery(beam.PTransform):
    """Streaming rows -> ``(None, rows)`` batches, one at most every
    ``seconds`` of processing time, for sinks that rewrite or merge a table.

    A processing-time trigger, not event-time windows: the sink follows the
    clock, so a watermark held back (by a backlog, or by a local runner that
    advances it only between pulls) never delays it. One key: a table's
    batches are applied one after the other, never concurrently."""

    def __init__(self, seconds: int):
        super().__init__()
        self._seconds = seconds

    def expand(self, rows):
        return (rows
                | "EverySeconds" >> beam.WindowInto(
                    GlobalWindows(), trigger=trigger.Repeatedly(trigger.AfterProcessingTime(self._seconds)),
                    accumulation_mode=trigger.AccumulationMode.DISCARDING)
                | "OneKey" >> beam.Map(lambda r: (None, r))
                | "GroupBatch" >> beam.GroupByKey())


class WriteCurrentSnapshot(beam.PTransform):
    """Streaming upserts -> ``silver_stream/<table>/current.parquet``, merged
    at most every ``window_seconds`` of processing time (``BatchEvery``)."""

    def __init__(self, table: Table, lake: str, window_seconds: int):
        super().__init__()
        self._table, self._lake, self._seconds = table, lake, window_seconds

    def expand(self, rows):
        return (rows
                | "BatchEvery" >> BatchEvery(self._seconds)
                | "MergeIntoSnapshot" >> beam.ParDo(MergeIntoSnapshotFn(self._table, self._lake)))


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

