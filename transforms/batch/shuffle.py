"""The shuffle of Arrow tables between batch steps (Beam).

``ShardedShuffle`` splits every table by a hash of a key column into
``shards`` parts, sends each part as LZ4-compressed Arrow IPC bytes (only
the columns the next step reads), and hands the consumer one shard at a time
with every tag's rows of that shard. Rows with the same key always meet in
the same shard, so a shard is the unit of dedup, join and aggregation; the
shard count bounds the memory a consumer needs.
"""

from __future__ import annotations

from collections import defaultdict

import apache_beam as beam
import pyarrow as pa

from transforms.rules.arrow import KeyOf, from_ipc, shard_of, split_by_shard, to_ipc


class SplitIntoShardsFn(beam.DoFn):
    """(tag, table) -> (shard, (tag, compressed IPC of the shard's rows))."""

    def __init__(self, keys: dict[str, KeyOf], shards: int, columns: dict[str, tuple[str, ...]]):
        self._keys, self._shards, self._columns = keys, shards, columns

    def process(self, tagged):
        tag, table = tagged
        if tag not in self._keys:
            raise ValueError(f"no shard key for {tag!r}")
        if tag in self._columns:
            table = table.select(list(self._columns[tag]))
        shard = shard_of(self._keys[tag](table), self._shards)
        for s, part in split_by_shard(table, shard, self._shards):
            yield s, (tag, to_ipc(part))


def _reassemble(keyed) -> tuple[int, dict[str, pa.Table]]:
    shard, parts = keyed
    by_tag = defaultdict(list)
    for tag, data in parts:
        by_tag[tag].append(from_ipc(data))
    return shard, {tag: (pa.concat_tables(ts) if len(ts) > 1 else ts[0]) for tag, ts in by_tag.items()}


class ShardedShuffle(beam.PTransform):
    """``(tag, Arrow table)`` -> ``(shard, {tag: Arrow table})``: every row goes
    to the shard of its key (``keys[tag]`` of the table), so rows of any tag
    with equal keys meet. ``columns[tag]`` keeps only those columns. A tag
    with no rows in a shard is absent from that shard's dict.

    Takes one PCollection or several: each is split where it is produced and
    only the compressed shards are flattened, because a runner materializes
    what it flattens (FnApiRunner pickles every element of a Flatten's
    inputs: whole Arrow tables, measured at ~3 s per million records)."""

    def __init__(self, keys: dict[str, KeyOf], shards: int, columns: dict[str, tuple[str, ...]] | None = None):
        super().__init__()
        self._fn = SplitIntoShardsFn(keys, shards, columns or {})

    def expand(self, tagged):
        inputs = list(tagged) if isinstance(tagged, (list, tuple)) else [tagged]
        split = [pcoll | f"SplitIntoShards{i or ''}" >> beam.ParDo(self._fn) for i, pcoll in enumerate(inputs)]
        if len(split) > 1:
            split = tuple(split) | "AllShards" >> beam.Flatten()
        else:
            split = split[0]
        return split | "GroupShards" >> beam.GroupByKey() | "Reassemble" >> beam.Map(_reassemble)
