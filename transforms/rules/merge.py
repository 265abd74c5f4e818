"""Silver, merged: a batch of new bronze rows folded into the silver rows it
touches, by the same rules that build silver from all of bronze.

A silver row is an accumulator of every copy merged into it: the winning
copy's values, where it was received (its arrival, which decides "first
copy" and version ties), ``copies``, and for sessions the version each field
came from (``merge_versions``). ``bronze_shaped`` turns a current row back
into dedup input carrying its ``copies``; the dedup rules
(``transforms.rules.dedup``) are associative over such rows, so

    merge(merge(silver, day 1), day 2) == build(all copies)

whatever the split into batches, their order, or their path (the stream's
batches, landing files, a replay). Joins and session summaries are not
accumulated: they are recomputed for every identity the batch touches from
the current rows of its join partners (``merge_batch``): the sessions of new
views, clicks and events with all their children, the responses of events
whose context changes, the activities of those responses, and, for context
only, the parents of new responses and activities.

The merge reads silver through a ``Lookup`` (rows of a table whose column
holds one of some values), so the rule is pure and the lake side
(``transforms.lake.silver``) decides how to find them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.contract import RECORD_TYPES
from schemas.tables import SILVER
from transforms.rules.arrow import concat, count_true
from transforms.rules.dedup import (
    MERGE_VERSIONS,
    SESSION_VERSION,
    DedupCounts,
    dedup_table,
    parse_merge_versions,
    same_or_both_null,
)
from transforms.rules.silver import (
    ACTIVITY_JOIN,
    RESPONSE_JOIN,
    SESSION_CHILDREN,
    attach_parent,
    resolve_sessions,
    shuffled_columns,
    silver_table,
    winner_schema,
)

SESSIONS = RECORD_TYPES["session"].silver_table
_KINDS_BY_SESSION = ("session", *(j.child for j in SESSION_CHILDREN))


class Lookup(Protocol):
    def rows(self, table: str, column: str, values: pa.Array) -> pa.Table:
        """The current rows of silver table ``table`` whose ``column`` is one of ``values``."""


@dataclass
class MergeResult:
    """What a batch changes in silver: per table the rows to upsert (new or
    changed, whole rows) and the keys to delete (an inferred session that
    lost its last child to an earlier copy naming another session); and per
    record type the batch's counts (``unique``: new identities, extra
    copies: the batch's other rows)."""

    upserts: dict[str, pa.Table] = field(default_factory=dict)
    deletes: dict[str, pa.Array] = field(default_factory=dict)
    counts: dict[str, DedupCounts] = field(default_factory=dict)
    inferred_sessions: int = 0

    def changed_keys(self, table: str) -> pa.Array:
        key = SILVER[table].key[0]
        parts = [self.upserts[table].column(key).combine_chunks()] if table in self.upserts else []
        if table in self.deletes:
            parts.append(self.deletes[table])
        return pa.concat_arrays(parts) if parts else pa.array([], pa.string())


def bronze_shaped(record_type: str, rows: pa.Table) -> pa.Table:
    """Current silver rows of a type as dedup input: the bronze columns the
    dedup carries (``shuffled_columns``) and ``copies``; a child's platform is
    its own (``record_platform``), as in bronze. Sessions: only those with a
    record, plus one row per field that came from an older version (with that
    version and only that field, ``copies`` 0), so the per-field rule sees
    every version that matters."""
    schema = winner_schema(record_type)
    if rows.num_rows == 0:
        return schema.empty_table()
    if record_type == "session":
        rows = rows.filter(rows.column("has_session_record"))
        entries = [parse_merge_versions(t) for t in rows.column(MERGE_VERSIONS).to_pylist()]
        older = _older_versions(rows, entries, schema)
        main = _null_fields_from_older(rows, entries)
        return concat([_conform(main, schema), older], schema)
    if "record_platform" in rows.column_names:
        rows = rows.set_column(rows.column_names.index("platform"), "platform", rows.column("record_platform"))
    return _conform(rows, schema)


def _conform(rows: pa.Table, schema: pa.Schema) -> pa.Table:
    n = rows.num_rows
    return pa.Table.from_arrays(
        [rows.column(f.name).cast(f.type) if f.name in rows.column_names else pa.nulls(n, f.type) for f in schema],
        schema=schema,
    )


def _null_fields_from_older(rows: pa.Table, entries: list) -> pa.Table:
    """The winning version's row of each session: fields that came from an older version nulled."""
    older_fields = [{f for _, fields in versions for f in fields} for versions in entries]
    for name in set().union(*older_fields):
        mask = pa.array([name in fields for fields in older_fields])
        column = rows.column(name)
        rows = rows.set_column(
            rows.column_names.index(name), name, pc.if_else(mask, pa.scalar(None, column.type), column)
        )
    return rows


def _older_versions(rows: pa.Table, entries: list, schema: pa.Schema) -> pa.Table:
    """One bronze-shaped row per (session, older version that gave it
    fields): that version, only those fields, ``copies`` 0."""
    records = [(i, version, fields) for i, versions in enumerate(entries) for version, fields in versions]
    if not records:
        return schema.empty_table()
    at = pa.array([i for i, _, _ in records])
    columns = {f.name: pa.nulls(len(records), f.type) for f in schema}
    columns["session_id"] = rows.column("session_id").take(at)
    columns["copies"] = pa.array(np.zeros(len(records), np.int64))
    for name in {f for _, _, fields in records for f in fields}:
        mask = pa.array([name in fields for _, _, fields in records])
        columns[name] = pc.if_else(
            mask, rows.column(name).take(at).cast(schema.field(name).type), pa.scalar(None, schema.field(name).type)
        )
    for v in SESSION_VERSION:
        values = [version[v] for _, version, _ in records]
        t = schema.field(v).type
        columns[v] = pa.array(values, pa.int64()).cast(t) if pa.types.is_timestamp(t) else pa.array(values, t)
    return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)


# --- one batch into silver ----------------------------------------------------------------------
def _keys(table: pa.Table | None, column: str) -> pa.Array:
    if table is None or table.num_rows == 0:
        return pa.array([], pa.string())
    return pc.unique(pc.drop_null(table.column(column).combine_chunks()))


def _union(*arrays: pa.Array) -> pa.Array:
    parts = [a for a in arrays if len(a)]
    return pc.unique(pa.concat_arrays(parts)) if parts else pa.array([], pa.string())


def _minus(values: pa.Array, taken: pa.Array) -> pa.Array:
    return values.filter(pc.invert(pc.is_in(values, value_set=taken))) if len(taken) else values


def _distinct_rows(table: pa.Table, key: str) -> pa.Table:
    """One row per key of rows read twice (found by two lookups)."""
    if table.num_rows == 0:
        return table
    _, first = np.unique(np.asarray(table.column(key).to_pylist(), dtype=object), return_index=True)
    return table.take(pa.array(np.sort(first)))


def _bronze_input(record_type: str, batch: dict[str, pa.Table]) -> pa.Table:
    schema = winner_schema(record_type)
    rows = batch.get(record_type)
    if rows is None or rows.num_rows == 0:
        return schema.empty_table()
    columns = [c for c in shuffled_columns(record_type)]
    return _conform(rows.select(columns), schema)


def _merge_type(
    record_type: str, batch: dict[str, pa.Table], current: pa.Table, result: MergeResult, restate: dict
) -> pa.Table:
    """The batch's rows of a type merged with the current silver rows given:
    one winner per key, and the batch's counts. Keys in ``restate`` are
    taken from their bronze copies alone (their silver rows are dropped, and
    deleted if no copy is left)."""
    key = RECORD_TYPES[record_type].key
    new = _bronze_input(record_type, batch)
    restated, restated_rows = restate.get(record_type, (pa.array([], pa.string()), None))
    if len(restated):
        current = current.filter(pc.invert(pc.is_in(current.column(key), value_set=restated)))
        new = concat(
            [
                new.filter(pc.invert(pc.is_in(new.column(key), value_set=restated))),
                _bronze_input(record_type, {record_type: restated_rows}),
            ],
            new.schema,
        )
    schema = winner_schema(record_type)
    winners, dedup = dedup_table(record_type, concat([bronze_shaped(record_type, current), new], schema))
    if len(restated) and record_type != "session":  # sessions: deleted below, when nothing is left of them
        gone = _minus(restated, _keys(winners, key))
        if len(gone):
            name = RECORD_TYPES[record_type].silver_table
            result.deletes[name] = _union(result.deletes.get(name, pa.array([], pa.string())), gone)
    existing = _keys(current.filter(current.column("has_session_record")) if record_type == "session" else current, key)
    fresh = count_true(pc.invert(pc.is_in(_keys(new, key), value_set=existing))) if new.num_rows else 0
    result.counts[record_type] = DedupCounts(fresh, new.num_rows - fresh, dedup.conflicts)
    return winners


def merge_batch(batch: dict[str, pa.Table], lookup: Lookup, restate: dict | None = None) -> MergeResult:
    """New bronze rows (``{record type: rows}``, any of the bronze columns
    the dedup carries) -> the silver changes they make, reading the current
    rows the merge needs through ``lookup``. ``restate``: ``{record type:
    (keys, rows)}``, identities some of whose bronze rows left bronze (a
    replace that did not give them back): their rows are recomputed from
    ``rows``, all their copies bronze still holds."""
    result = MergeResult()
    recomputed: dict[str, pa.Table] = {}
    restate = restate or {}

    def keys_of(rt: str) -> pa.Array:
        return _union(_keys(batch.get(rt), RECORD_TYPES[rt].key), restate.get(rt, (pa.array([], pa.string()),))[0])

    def current(rt: str, column: str, values: pa.Array) -> pa.Table:
        table = RECORD_TYPES[rt].silver_table
        if not len(values):
            return SILVER[table].arrow_schema().empty_table()
        return lookup.rows(table, column, values)

    # users: their versions only
    users = _merge_type("user", batch, current("user", "user_id", keys_of("user")), result, restate)
    recomputed["silver_users"] = silver_table("silver_users", {c: users.column(c) for c in users.column_names})

    # sessions with every child: the batch's, and those of the batch's children (either copy's session)
    children_by_key = {j.child: current(j.child, RECORD_TYPES[j.child].key, keys_of(j.child)) for j in SESSION_CHILDREN}
    sessions = _union(
        keys_of("session"),
        *(_keys(batch.get(j.child), "session_id") for j in SESSION_CHILDREN),
        *(_keys(rows, "session_id") for rows in children_by_key.values()),
    )
    current_sessions = current("session", "session_id", sessions)
    session_winners = _merge_type("session", batch, current_sessions, result, restate)
    children = {}
    for j in SESSION_CHILDREN:
        key = RECORD_TYPES[j.child].key
        rows = concat(
            [children_by_key[j.child], current(j.child, "session_id", sessions)], SILVER[j.table].arrow_schema()
        )
        children[j.child] = _merge_type(j.child, batch, _distinct_rows(rows, key), result, restate)
    silver_sessions = resolve_sessions(session_winners, children)
    result.inferred_sessions = silver_sessions.num_rows - count_true(silver_sessions.column("has_session_record"))
    recomputed[SESSIONS] = silver_sessions
    gone = _minus(_keys(current_sessions, "session_id"), _keys(silver_sessions, "session_id"))
    if len(gone):
        result.deletes[SESSIONS] = gone
    for j in SESSION_CHILDREN:
        recomputed[j.table], _ = attach_parent(children[j.child], silver_sessions, j)

    # responses: the batch's, and those of every recomputed event (their context may change)
    events = recomputed[RECORD_TYPES[RESPONSE_JOIN.parent].silver_table]
    recomputed_parents = _keys(events, RESPONSE_JOIN.key)
    responses = _merge_joined(RESPONSE_JOIN, batch, events, recomputed_parents, current, result, restate)
    recomputed[RESPONSE_JOIN.table] = responses

    # activities: the batch's, and those of every recomputed response
    recomputed[ACTIVITY_JOIN.table] = _merge_joined(
        ACTIVITY_JOIN, batch, responses, _keys(responses, ACTIVITY_JOIN.key), current, result, restate
    )

    for name, rows in recomputed.items():
        changed = _changed(name, rows, lookup_rows=lambda keys, n=name: lookup.rows(n, SILVER[n].key[0], keys))
        if changed.num_rows:
            result.upserts[name] = changed
    return result


def _merge_joined(
    join, batch, parents_recomputed: pa.Table, parent_keys: pa.Array, current, result: MergeResult, restate: dict
) -> pa.Table:
    """A child type whose parent is joined by ``join.key``: the batch's rows
    and the current children of recomputed parents, merged and attached to
    their parent's context (recomputed, else current)."""
    child_key = RECORD_TYPES[join.child].key
    restated = restate.get(join.child, (pa.array([], pa.string()),))[0]
    rows = concat(
        [
            current(join.child, child_key, _union(_keys(batch.get(join.child), child_key), restated)),
            current(join.child, join.key, parent_keys),
        ],
        SILVER[join.table].arrow_schema(),
    )
    winners = _merge_type(join.child, batch, _distinct_rows(rows, child_key), result, restate)
    others = current(join.parent, RECORD_TYPES[join.parent].key, _minus(_keys(winners, join.key), parent_keys))
    context = concat(
        [parents_recomputed.select([join.key, *join.context]), others.select([join.key, *join.context])],
        parents_recomputed.select([join.key, *join.context]).schema,
    )
    attached, _ = attach_parent(winners, context, join)
    return attached


def _changed(name: str, rows: pa.Table, lookup_rows) -> pa.Table:
    """The recomputed rows that are new or differ from the current row (only
    those are written)."""
    if rows.num_rows == 0:
        return rows
    key = SILVER[name].key[0]
    before = lookup_rows(rows.column(key).combine_chunks())
    if before.num_rows == 0:
        return rows
    at = pc.index_in(rows.column(key), value_set=before.column(key))
    found = np.asarray(pc.is_valid(at).to_numpy(zero_copy_only=False), bool)
    differs = ~found
    taken = before.take(pc.fill_null(at, 0))
    for c in rows.column_names:
        differs |= found & ~same_or_both_null(rows.column(c), taken.column(c).cast(rows.schema.field(c).type))
    return rows.filter(pa.array(differs))


def build_silver(bronze: dict[str, pa.Table]) -> MergeResult:
    """Silver from bronze rows alone (an empty silver, merged with them):
    the definition the property tests compare every split of the input with."""
    return merge_batch(bronze, _EMPTY)


class _Empty:
    def rows(self, table, column, values):
        return SILVER[table].arrow_schema().empty_table()


_EMPTY = _Empty()
