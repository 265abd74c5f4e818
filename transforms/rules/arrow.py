"""Arrow tables as pipeline elements: IPC bytes, shards by key hash, groups.

The batch pipelines pass ``pyarrow.Table`` chunks between steps instead of
one dict per record: Beam's per-element cost (decode, dispatch, encode) is
then paid per chunk, and the work on the rows is vectorized.
The shuffle that carries them is ``transforms.batch.shuffle``.
"""

from __future__ import annotations

from collections.abc import Callable

import mmh3
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")


def to_ipc(table: pa.Table) -> bytes:
    """A table as compressed Arrow IPC stream bytes (what a shuffle carries),
    without the schema's descriptions (every message would repeat them)."""
    table = pa.Table.from_arrays(table.columns, names=table.column_names)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=_IPC_OPTIONS) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def string_hash(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """MurmurHash3 (32-bit) of every string, the same in every process and
    run (Python's ``hash`` is salted per process); null hashes like ''."""
    texts = pc.fill_null(values, "").to_pylist()
    return np.fromiter(map(mmh3.hash, texts), np.int64, len(texts)).astype(np.uint64)


def shard_of(values, shards: int) -> np.ndarray:
    """Shard number (0 .. shards-1) of every key."""
    return (string_hash(values) % np.uint64(shards)).astype(np.int64)


def micros(column):
    """A timestamp column as int64 microseconds since the epoch (what the
    rules compare and subtract); an int64 column passes unchanged."""
    return column if pa.types.is_int64(column.type) else column.cast(pa.int64())


def shard_of_key(key: str | None, shards: int) -> int:
    """``shard_of`` of one key, the per-row form (the streaming alerts' state
    shards): the same shard the array form gives."""
    return (mmh3.hash(key or "") % (1 << 64)) % shards


def split_by_shard(table: pa.Table, shard: np.ndarray, shards: int):
    """-> (shard, rows of the table in that shard) for every non-empty shard.

    Each part owns its buffers (a take per part, not slices of one sorted
    copy): a consumer that keeps a small part (a writer buffering a
    partition) must not keep the whole table alive with it."""
    if table.num_rows == 0:
        return
    order = np.argsort(shard, kind="stable")
    counts = np.bincount(shard, minlength=shards)
    start = 0
    for s, count in enumerate(counts):
        if count:
            yield s, table.take(pa.array(order[start : start + count]))
        start += count


def concat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    """Tables of one schema (possibly none) -> one table."""
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return schema.empty_table()
    return pa.concat_tables(tables).combine_chunks() if len(tables) > 1 else tables[0]


def first_of_groups(keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """For keys sorted so equal keys are adjacent: a mask of each group's first row."""
    n = len(keys)
    starts = np.ones(n, bool)
    if n > 1:
        same = pc.equal(keys.slice(1), keys.slice(0, n - 1))
        starts[1:] = ~np.asarray(same.fill_null(False).to_numpy(zero_copy_only=False), bool)
    return starts


def count_true(mask) -> int:
    """How many values of a boolean array are true (0 for an empty one)."""
    return pc.sum(mask).as_py() or 0


def group_ids(starts: np.ndarray) -> np.ndarray:
    """Group number of every row, from ``first_of_groups``."""
    return np.cumsum(starts) - 1


KeyOf = Callable[[pa.Table], pa.Array]


def key_column(name: str) -> KeyOf:
    return lambda table: table.column(name)


def coalesce_key(*names: str) -> KeyOf:
    """The first non-null of several string columns (e.g. user, else session)."""
    return lambda table: pc.coalesce(*(table.column(n) for n in names if n in table.column_names))
