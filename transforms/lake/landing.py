"""Reading landing files (JSONL, JSONL.gz, Parquet) and replays of the raw
layer into raw chunks: the batch path's first step. Each landing file is
also copied into the raw layer as a data file (``transforms.lake.files``),
added by the run's commit once per content (``transforms.lake.commit``).
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import io
import json
import logging
import posixpath
import uuid

import apache_beam as beam
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from schemas import contract
from schemas.tables import RAW
from transforms import metrics
from transforms.lake.commit import first_received
from transforms.lake.files import DataFile, makedirs
from transforms.lake.tables import LakeFile, read_file, snapshot, table_dir
from transforms.rules.bronze import not_utf8

# Lines per raw chunk, the element the batch path passes on: big enough that
# Beam's per-element cost vanishes, small enough to bound a step's memory.
RAW_CHUNK_ROWS = 200_000
_READ_CHUNK = 8 << 20
RAW_FILES = "raw_files"  # the tagged output of the raw copies' DataFiles
LANDING_SUFFIXES = contract.LANDING_SUFFIXES


def _landing_lines(stream, digest=None):
    """A landing file's lines (split on \\n, a trailing \\r removed), in
    lists; ``digest`` (if any) gets the content, with a final newline if it lacks one."""
    pending, last = b"", b"\n"
    while True:
        block = stream.read(_READ_CHUNK)
        if not block:
            break
        if digest is not None:
            digest.update(block)
        last = block[-1:]
        lines = (pending + block).split(b"\n")
        pending = lines.pop()
        yield [line[:-1] if line[-1:] == b"\r" else line for line in lines]
    if pending:
        yield [pending[:-1] if pending[-1:] == b"\r" else pending]
    if last != b"\n" and digest is not None:
        digest.update(b"\n")


def _default(value):
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError


def raw_chunk(data: list[bytes], lines: list[int], source_file: str | None, ingested_at: int) -> pa.Table:
    """Raw-layer rows (``RAW``, Arrow) of landing-file records."""
    n = len(data)
    when = pa.repeat(pa.scalar(ingested_at, pa.timestamp("us", tz="UTC")), n)
    return pa.Table.from_arrays(
        [
            when.cast(pa.date32()),
            pa.nulls(n, pa.string()),
            pa.nulls(n, pa.timestamp("us", tz="UTC")),
            pa.nulls(n, pa.string()),
            when,
            pa.repeat(pa.scalar(source_file, pa.string()), n),
            pa.array(lines, pa.int64()),
            pa.array(data, pa.binary()),
        ],
        schema=RAW.arrow_schema(),
    )


def landed_at(path: str, run_time: int) -> int:
    """When a landing file was received: when it landed in the landing store
    (its last modification, as the file system reports it), or the run's
    time when the store reports none or a later one. A file backfilled days
    after it landed keeps its own arrival, so the lake's lateness profile
    (``transforms.rules.completeness``) and freshness see when data came."""
    try:
        seconds = FileSystems.match([path])[0].metadata_list[0].last_updated_in_seconds
    except (OSError, IndexError, AttributeError):
        seconds = None
    if not seconds:
        return run_time
    return min(run_time, int(seconds * 1_000_000))


class ReadLandingFileFn(beam.DoFn):
    """A landing file's path (JSONL, JSONL.gz, Parquet), or a raw-layer file
    (``LakeFile``) -> raw chunks (Arrow, at most ``RAW_CHUNK_ROWS`` rows).
    A landing file is also copied into the raw layer: its ``DataFile``
    (with the SHA-256 of the file's content) goes to ``RAW_FILES``.

    A landing file's records are received when the file landed
    (``landed_at``). A landing content received before keeps the time it was first received
    as its records' ``ingested_at`` (``transforms.lake.commit.first_received``):
    received again, a record is the same record (its first copy, its
    versions' order and silver's arrival columns stay as they were), and
    keeps the path it was first received under as their ``source_file``.
    A file is therefore read twice: once for its hash (its identity, known
    before its records are), once for its records."""

    def __init__(self, lake: str, ingested_at: int, total_files: int = 0, raw_exists: bool = False):
        self._lake, self._raw_root = lake, table_dir(lake, RAW)
        self._ingested_at = ingested_at
        self._total = total_files
        self._raw_exists = raw_exists
        self._files = metrics.counter("files_read")
        self._blank = metrics.counter("blank_lines_skipped")

    def setup(self):
        self._raw_sources: dict[str, str] | None = None  # read once per worker, when first needed

    def start_bundle(self):
        self._done = 0

    def _first_source(self, sha: str) -> str | None:
        """The path a content was first received under: its raw copy is named by its SHA-256 (copies
        from before that was so are named otherwise, and their contents keep the path given)."""
        if self._raw_sources is None:
            self._raw_sources = {
                posixpath.basename(f.relpath)[:64]: f.source for f in snapshot(self._lake, RAW).files if f.source
            }
        return self._raw_sources.get(sha)

    def process(self, path: str | LakeFile):
        self._done += 1
        if isinstance(path, LakeFile):
            # Already in the raw layer: replay it as it was ingested.
            arrow = read_file(path, RAW)
            for start in range(0, arrow.num_rows, RAW_CHUNK_ROWS):
                yield arrow.slice(start, RAW_CHUNK_ROWS)
            self._files.inc()
            return
        # The content is its identity (hashed first): received before under any path, its records keep
        # that first path and time, so a rerun under another name restates them instead of adding copies.
        sha, utf8 = content_sha256(path)
        if not utf8:
            logging.warning(
                "%s is not UTF-8 (UTF-16 or another encoding): its records go to the dead letter as %s; "
                "landing files are UTF-8 JSON lines",
                path,
                contract.INVALID_ENCODING,
            )
        ingested_at = landed_at(path, self._ingested_at)
        source = path
        if self._raw_exists:
            ingested_at = first_received(self._lake, sha) or ingested_at
            source = self._first_source(sha) or path
        partitions = (("ingest_date", contract.micros_to_date(ingested_at)),)
        relpath = f"ingest_date={partitions[0][1]}/{sha}-{uuid.uuid4().hex[:8]}.parquet"
        copy = posixpath.join(self._raw_root, relpath)
        makedirs(posixpath.dirname(copy))
        n = rows = 0
        # The writer is closed before its file, also when the run is stopped mid-file (Ctrl-C): left to
        # the garbage collector, it would write its footer to a closed file and print a traceback.
        with (
            FileSystems.create(copy) as out,
            pq.ParquetWriter(
                out,
                RAW.arrow_schema(with_partition_columns=False),
                compression="zstd",
                use_dictionary=["source_file", "attributes_json"],  # not the record bytes: all distinct
            ) as writer,
        ):
            data, lines = [], []
            for block in self._records(path):  # hashed already, above
                for record in block:
                    n += 1
                    if record.strip():
                        data.append(record)
                        lines.append(n)
                    else:
                        self._blank.inc()
                while len(data) >= RAW_CHUNK_ROWS:
                    chunk = raw_chunk(data[:RAW_CHUNK_ROWS], lines[:RAW_CHUNK_ROWS], source, ingested_at)
                    del data[:RAW_CHUNK_ROWS], lines[:RAW_CHUNK_ROWS]
                    writer.write_table(chunk.drop_columns(["ingest_date"]))
                    rows += chunk.num_rows
                    yield chunk
            if data:
                chunk = raw_chunk(data, lines, source, ingested_at)
                writer.write_table(chunk.drop_columns(["ingest_date"]))
                rows += chunk.num_rows
                yield chunk
        size = FileSystems.match([copy])[0].metadata_list[0].size_in_bytes
        stats = {"numRecords": rows, "nullCount": {"source_file": 0}}
        if rows:
            stats.update(minValues={"source_file": source}, maxValues={"source_file": source})
        yield beam.pvalue.TaggedOutput(
            RAW_FILES,
            DataFile(
                RAW.name,
                relpath,
                copy,
                partitions,
                size,
                rows,
                json.dumps(stats),
                sha,
                ingested_at,
                landing_path=path,
            ),
        )
        self._files.inc()
        # Exact locally (one bundle); on a distributed runner the first number counts this worker's files.
        logging.info("read %s: %d lines (%d of %d files)", path, n, self._done, self._total)

    @staticmethod
    def _records(path: str, digest=None):
        """Lists of records: JSONL lines, or Parquet rows as canonical JSON; ``digest`` (if any) gets them."""
        if path.endswith(".parquet"):
            with FileSystems.open(path) as f:
                parquet = pq.ParquetFile(io.BytesIO(f.read()))
            for batch in parquet.iter_batches(batch_size=50_000):
                block = [
                    orjson.dumps({k: v for k, v in row.items() if v is not None}, default=_default)
                    for row in batch.to_pylist()
                ]
                if digest is not None:
                    for data in block:
                        digest.update(data)
                yield block
            return
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            stream = gzip.GzipFile(fileobj=f) if path.endswith(".gz") else f
            yield from _landing_lines(stream, digest)


class ReadLandingFiles(beam.PTransform):
    """Landing file paths and raw-layer files (resolved when the pipeline is
    built, ``expand_inputs``) -> raw chunks (main output) and the raw
    copies' ``DataFile``s (``RAW_FILES``)."""

    def __init__(self, paths: list[str | LakeFile], lake: str, ingested_at: int):
        super().__init__()
        self._paths, self._lake, self._ingested_at = paths, lake, ingested_at

    def expand(self, pbegin):
        return (
            pbegin
            | "ListFiles" >> beam.Create(self._paths)
            # one file per worker on a distributed runner (Create alone would fuse them into one)
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadEachFile"
            >> beam.ParDo(
                ReadLandingFileFn(
                    self._lake, self._ingested_at, len(self._paths), snapshot(self._lake, RAW).version is not None
                )
            ).with_outputs(RAW_FILES, main="chunks")
        )


def _spelled_once(path: str) -> str:
    """A local path in one spelling (``./s.jsonl`` and ``s.jsonl`` are one file)."""
    return path if "://" in path else posixpath.normpath(path)


def expand_inputs(patterns: list[str], lake: str) -> list[str | LakeFile]:
    """Glob patterns -> landing file paths, and for patterns inside the raw
    layer the raw table's current files they match (a folder listing there
    would also hold files no version names). Sorted: 'earliest ingest' (the
    first copy wins) is then the same in every run."""
    raw_root = table_dir(lake, RAW).rstrip("/") + "/"
    in_raw = [p for p in patterns if p.startswith(raw_root)]
    paths: set = set()
    for result in FileSystems.match([p for p in patterns if not p.startswith(raw_root)]):
        paths.update(_spelled_once(m.path) for m in result.metadata_list if m.path.endswith(LANDING_SUFFIXES))
    raw = [f for f in snapshot(lake, RAW).files if any(fnmatch.fnmatch(f.path, p) for p in in_raw)] if in_raw else []
    return sorted(paths) + raw


def content_sha256(path: str) -> tuple[str, bool]:
    """A landing file's identity (the SHA-256 of its records) and whether its
    first records read as UTF-8 (``transforms.rules.bronze.not_utf8``)."""
    digest, utf8 = hashlib.sha256(), None
    for block in ReadLandingFileFn._records(path, digest):
        if utf8 is None and block:
            utf8 = not not_utf8(b"\n".join(block[:100]))
    return digest.hexdigest(), utf8 is not False


def distinct_contents(paths: list[str | LakeFile]) -> tuple[list[str | LakeFile], list[tuple[str, str]]]:
    """``paths`` with each landing content once (the first path of each), and
    the (left out, same content as) pairs. Only files of equal size are
    hashed here: different sizes are different contents."""
    landing = [p for p in paths if not isinstance(p, LakeFile)]
    sizes: dict[int, list[str]] = {}
    for path, result in zip(landing, FileSystems.match(landing)) if len(landing) > 1 else ():
        sizes.setdefault(result.metadata_list[0].size_in_bytes if result.metadata_list else -1, []).append(path)
    left_out, first = [], {}
    for group in (g for g in sizes.values() if len(g) > 1):
        for path in group:
            sha, _ = content_sha256(path)
            if sha in first:
                left_out.append((path, first[sha]))
            else:
                first[sha] = path
    dropped = {path for path, _ in left_out}
    return [p for p in paths if isinstance(p, LakeFile) or p not in dropped], left_out


def unsupported_inputs(patterns: list[str], lake: str) -> list[str]:
    """The patterns (outside the raw layer) that match files but not one of a
    type a backfill reads: a mistake, unlike a pattern matching nothing (a
    day without landing files)."""
    raw_root = table_dir(lake, RAW).rstrip("/") + "/"
    # A pattern ending in a landing suffix matches nothing else: no listing (on GCS, a round trip) needed.
    outside = [p for p in patterns if not p.startswith(raw_root) and not p.endswith(LANDING_SUFFIXES)]
    return [
        pattern
        for pattern, result in zip(outside, FileSystems.match(outside))
        if result.metadata_list and not any(m.path.endswith(LANDING_SUFFIXES) for m in result.metadata_list)
    ]
