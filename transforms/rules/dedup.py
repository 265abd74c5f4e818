"""One row per identity (record_type, key) from bronze rows.

The contract's rules:

* immutable types (view, click, event, user_activity): the first copy wins
  (earliest ingest); a later copy with different content is still a
  duplicate and is counted as a data-quality conflict;
* user and event_response: the newest version wins (user: ``updated_at``,
  else ``emitted_at``; response: ``emitted_at``); ties go to the later ingest;
* session: newest ``emitted_at`` wins field by field, and a non-null field is
  never replaced by null.

``dedup_table`` applies them to Arrow tables: the batch rebuild and every
merge into silver, batch and streaming, run it. They are associative, so a
current silver row (with its ``copies``) merges like any copy
(``transforms.rules.merge``). The per-row form below (accumulators with the
``CombineFn`` interface, no Beam) is the readable definition a property
test holds ``dedup_table`` to (``tests/test_rules_agree.py``); no pipeline
runs it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.contract import RECORD_TYPES
from schemas.table import Table
from schemas.tables import BRONZE, BRONZE_ENVELOPE
from transforms.rules.arrow import first_of_groups, group_ids

_ENVELOPE = frozenset(c.name for c in BRONZE_ENVELOPE) | {"event_date"}
_NEVER = -(1 << 62)


def ingest_order(row: dict) -> tuple:
    """Total order of arrival: ingest time, then file and line (batch) or message id."""
    return (row["ingested_at"], row.get("source_file") or "", row.get("source_line") or 0, row.get("message_id") or "")


def content(row: dict, table: Table) -> tuple:
    """What a producer said about the entity (envelope and ingest metadata excluded)."""
    return tuple(row.get(c) for c in content_columns(table))


class _KeepOneFn:
    """Accumulator: [winner row or None, copies, conflict]."""

    def __init__(self, table: Table):
        self._table = table

    def create_accumulator(self):
        return [None, 0, False]

    def _better(self, a: dict, b: dict) -> bool:  # is a preferred over b?
        raise NotImplementedError

    def add_input(self, acc, row):
        return self.merge_accumulators([acc, [row, 1, False]])

    def merge_accumulators(self, accs):
        winner, copies, conflict = None, 0, False
        for row, n, c in accs:
            if row is None:
                continue
            copies += n
            conflict = conflict or c
            if winner is not None:
                conflict = conflict or content(row, self._table) != content(winner, self._table)
            if winner is None or self._better(row, winner):
                winner = row
        return [winner, copies, conflict]

    def extract_output(self, acc):
        return acc


class FirstCopyFn(_KeepOneFn):
    def _better(self, a, b):
        return ingest_order(a) < ingest_order(b)


class NewestVersionFn(_KeepOneFn):
    def __init__(self, table: Table, version_fields: tuple[str, ...]):
        super().__init__(table)
        self._fields = version_fields

    def _version(self, row):
        v = next((row[f] for f in self._fields if row.get(f) is not None), _NEVER)
        return v, ingest_order(row)

    def _better(self, a, b):
        return self._version(a) > self._version(b)

    def merge_accumulators(self, accs):
        # A newer version with other content is an update, not a conflict.
        winner, copies, _ = super().merge_accumulators(accs)
        return [winner, copies, False]


class MergeNonNullFn:
    """Sessions: each of ``SESSION_MERGED_FIELDS`` takes the value of the
    newest version that has it non-null; every other column is the newest
    version's (its arrival as a whole). Accumulator: [{field: (version,
    value)}, (version, newest row), copies]. A platform that normalized to
    'unknown' (not sent) counts as null here."""

    def create_accumulator(self):
        return [{}, None, 0]

    def add_input(self, acc, row):
        version = (row.get("emitted_at") if row.get("emitted_at") is not None else _NEVER, ingest_order(row))
        fields = {
            k: (version, row[k])
            for k in SESSION_MERGED_FIELDS
            if row.get(k) is not None and not (k == "platform" and row[k] == "unknown")
        }
        return self.merge_accumulators([acc, [fields, (version, row), 1]])

    def merge_accumulators(self, accs):
        merged, newest, copies = {}, None, 0
        for fields, winner, n in accs:
            copies += n
            if winner is not None and (newest is None or winner[0] > newest[0]):
                newest = winner
            for k, vv in fields.items():
                if k not in merged or vv[0] > merged[k][0]:
                    merged[k] = vv
        return [merged, newest, copies]

    def extract_output(self, acc):
        fields, (_, newest), copies = acc
        row = {**newest, **{k: fields[k][1] if k in fields else None for k in SESSION_MERGED_FIELDS}}
        if row["platform"] is None:
            row["platform"] = "unknown"
        return [row, copies, False]


def combine_fn_for(record_type: str, table: Table) -> _KeepOneFn | MergeNonNullFn:
    if record_type == "session":
        return MergeNonNullFn()
    if record_type == "user":
        return NewestVersionFn(table, ("updated_at", "emitted_at"))
    if record_type == "event_response":
        return NewestVersionFn(table, ("emitted_at",))
    return FirstCopyFn(table)


# --- the same rules on Arrow tables ----------------------------------------------------
INGEST_ORDER = ("ingested_at", "source_file", "source_line", "message_id")


@dataclass(frozen=True)
class DedupCounts:
    unique: int
    extra_copies: int
    conflicts: int


def _ingest_order_keys(table: pa.Table, order: str) -> tuple[pa.Table, list]:
    """Sort keys for ``ingest_order`` (nulls as '' and 0, as there)."""
    filled = {
        "_ingested_at": table.column("ingested_at"),
        "_source_file": pc.fill_null(table.column("source_file"), ""),
        "_source_line": pc.fill_null(table.column("source_line"), 0),
        "_message_id": pc.fill_null(table.column("message_id"), ""),
    }
    for name, values in filled.items():
        table = table.append_column(name, values)
    return table, [(name, order) for name in filled]


def _version(table: pa.Table, fields: tuple[str, ...]) -> pa.Array:
    return pc.coalesce(*(table.column(f).cast(pa.int64()) for f in fields), pa.scalar(_NEVER, pa.int64()))


def same_or_both_null(a, b) -> np.ndarray:
    """Row-wise equality where null equals null."""
    equal = pc.equal(a, b)
    both_null = pc.and_(pc.is_null(a), pc.is_null(b))
    return np.asarray(
        pc.fill_null(pc.or_(pc.fill_null(equal, False), both_null), False).to_numpy(zero_copy_only=False), bool
    )


def _copies(ordered: pa.Table, first_rows: np.ndarray) -> np.ndarray:
    """Copies per group: rows counted once each, except that a row with a
    ``copies`` column (a current silver row, standing for the copies merged
    into it before) counts as that many."""
    if "copies" not in ordered.column_names:
        return np.diff(np.append(first_rows, ordered.num_rows))
    weights = np.asarray(pc.fill_null(ordered.column("copies"), 1).to_numpy(zero_copy_only=False), np.int64)
    return np.add.reduceat(weights, first_rows) if len(first_rows) else np.zeros(0, np.int64)


def dedup_table(record_type: str, table: pa.Table) -> tuple[pa.Table, DedupCounts]:
    """Bronze rows of one record type (Arrow) -> one row per key with
    ``copies``, by the rules of the module docstring (the per-row accumulators above
    are their per-element form; a property test checks both agree).

    The input may also hold current silver rows as bronze-shaped rows with a
    ``copies`` column (``transforms.rules.merge``): the rules are
    associative, so merging new copies into such a row gives the row that
    all copies at once give."""
    rt = RECORD_TYPES[record_type]
    key = rt.key
    columns = [c for c in table.column_names if c != "copies"]
    if table.num_rows == 0:
        empty = table.select(columns).append_column("copies", pa.array([], pa.int64()))
        if record_type == "session":
            empty = empty.append_column(MERGE_VERSIONS, pa.array([], pa.string()))
        return empty, DedupCounts(0, 0, 0)
    if record_type == "session":
        return _merge_non_null(table, key)
    newest = record_type in _NEWEST_VERSION
    if newest:
        table = table.append_column("_version", _version(table, _NEWEST_VERSION[record_type]))
    table, ingest_keys = _ingest_order_keys(table, "descending" if newest else "ascending")
    sort_keys = [(key, "ascending")] + ([("_version", "descending")] if newest else []) + ingest_keys
    ordered = table.sort_by(sort_keys)
    starts = first_of_groups(ordered.column(key))
    groups = group_ids(starts)
    first_rows = np.flatnonzero(starts)
    copies = _copies(ordered, first_rows)
    conflicts = 0
    if not newest:
        winner_of_row = pa.array(first_rows[groups])
        differs = np.zeros(ordered.num_rows, bool)
        for c in content_columns(BRONZE[rt.bronze_table]):
            if c in columns:
                column = ordered.column(c)
                differs |= ~same_or_both_null(column, column.take(winner_of_row))
        conflicts = int(np.count_nonzero(np.bincount(groups, weights=differs)))
    winners = ordered.take(pa.array(first_rows)).select(columns)
    winners = winners.append_column("copies", pa.array(copies, pa.int64()))
    return winners, DedupCounts(len(first_rows), int(copies.sum() - len(first_rows)), conflicts)


_NEWEST_VERSION = {"user": ("updated_at", "emitted_at"), "event_response": ("emitted_at",)}
# A session's version: what decides which version's value of a field wins.
SESSION_VERSION = ("emitted_at", *INGEST_ORDER)
# The fields of a session whose value can come from an older version than the
# winning one (a newer version left them null); the others are required, or
# taken with the winning version as a whole (its arrival, source, emitted_at).
SESSION_MERGED_FIELDS = ("user_id", "platform", "session_end_time", "device_type", "geo_location", "experiments_json")
MERGE_VERSIONS = "merge_versions"


def _merge_non_null(table: pa.Table, key: str) -> tuple[pa.Table, DedupCounts]:
    """Sessions: per column, the value of the newest version that has it
    (a platform of 'unknown' counts as null). ``merge_versions`` records,
    per field whose value came from an older version, that version
    (``SESSION_VERSION``), so that merging more versions later is exact."""
    table = table.set_column(
        table.column_names.index("platform"),
        "platform",
        pc.if_else(
            pc.equal(table.column("platform"), "unknown"), pa.scalar(None, pa.string()), table.column("platform")
        ),
    )
    table = table.append_column("_version", _version(table, ("emitted_at",)))
    table, ingest_keys = _ingest_order_keys(table, "descending")
    ordered = table.sort_by([(key, "ascending"), ("_version", "descending")] + ingest_keys)
    starts = first_of_groups(ordered.column(key))
    groups = group_ids(starts)
    first_rows = np.flatnonzero(starts)
    copies = _copies(ordered, first_rows)
    values = [c for c in table.column_names if c not in (key, "copies", MERGE_VERSIONS) and not c.startswith("_")]
    merged = {key: ordered.column(key).take(pa.array(first_rows))}
    from_older = {}
    for c in values:
        if c in SESSION_MERGED_FIELDS:
            chosen = _first_valid_per_group(ordered.column(c), groups, len(first_rows))
            merged[c] = ordered.column(c).take(pa.array(chosen, mask=chosen < 0))
            from_older[c] = np.where((chosen >= 0) & (chosen != first_rows), chosen, -1)
        else:  # the winning version's own value (its arrival as a whole; source and schema are required)
            merged[c] = ordered.column(c).take(pa.array(first_rows))
    merged["platform"] = pc.fill_null(merged["platform"], "unknown")
    merged["copies"] = pa.array(copies, pa.int64())
    merged[MERGE_VERSIONS] = _merge_versions(ordered, from_older, len(first_rows))
    result = pa.table({c: merged[c] for c in [key, *values, "copies", MERGE_VERSIONS]})
    return result, DedupCounts(result.num_rows, int(copies.sum() - result.num_rows), 0)


def _first_valid_per_group(column, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Row index of the first non-null value of each group (-1: none)."""
    valid = np.flatnonzero(np.asarray(pc.is_valid(column).to_numpy(zero_copy_only=False), bool))
    chosen = np.full(n_groups, -1, np.int64)
    found, at = np.unique(groups[valid], return_index=True)
    chosen[found] = valid[at]
    return chosen


def _merge_versions(ordered: pa.Table, from_older: dict[str, np.ndarray], n_groups: int) -> pa.Array:
    """``MERGE_VERSIONS`` of every group: null when every field is the
    winning version's (``parse_merge_versions`` reads it back)."""
    older = np.zeros(n_groups, bool)
    for rows in from_older.values():
        older |= rows >= 0
    texts = np.full(n_groups, None, object)
    groups = np.flatnonzero(older)
    if not len(groups):
        return pa.array(texts.tolist(), pa.string())
    fields = sorted(from_older)
    chosen = np.stack([from_older[c][groups] for c in fields])  # (field, group): a row of ``ordered``, or -1
    needed = np.unique(chosen[chosen >= 0])
    # Python lists only of the rows named (timestamps as micros): per-value Arrow indexing costs microseconds.
    taken = ordered.take(pa.array(needed))
    values = [
        (
            taken.column(v).cast(pa.int64()) if pa.types.is_timestamp(taken.schema.field(v).type) else taken.column(v)
        ).to_pylist()
        for v in SESSION_VERSION
    ]
    version_text = dict(zip(needed.tolist(), (json.dumps(list(v), separators=(",", ":")) for v in zip(*values))))
    # The usual case, one older version giving every such field, by lookups alone.
    newest_older = chosen.max(axis=0)
    single = ((chosen == newest_older) | (chosen < 0)).all(axis=0)
    pattern = ((chosen >= 0) * (1 << np.arange(len(fields)))[:, None]).sum(axis=0)
    names_text = {p: json.dumps([f for i, f in enumerate(fields) if p >> i & 1]) for p in np.unique(pattern).tolist()}
    for g, row, p in zip(groups[single].tolist(), newest_older[single].tolist(), pattern[single].tolist()):
        texts[g] = f'[{{"version":{version_text[row]},"fields":{names_text[p]}}}]'
    for j in np.flatnonzero(~single).tolist():
        by_version: dict[str, list[str]] = {}
        for row in sorted(set(chosen[:, j][chosen[:, j] >= 0].tolist())):  # newest version first
            by_version.setdefault(version_text[row], [])
        for f, row in zip(fields, chosen[:, j].tolist()):
            if row >= 0:
                by_version[version_text[row]].append(f)
        texts[groups[j]] = (
            "[" + ",".join(f'{{"version":{v},"fields":{json.dumps(names)}}}' for v, names in by_version.items()) + "]"
        )
    return pa.array(texts.tolist(), pa.string())


def parse_merge_versions(text: str | None) -> list[tuple[dict, list[str]]]:
    """A ``merge_versions`` value -> ``[(version, fields)]``, newest version
    first: each older version (``SESSION_VERSION`` -> value, timestamps as
    micros) that gave the session some fields, and those fields."""
    if not text:
        return []
    return [(dict(zip(SESSION_VERSION, entry["version"])), entry["fields"]) for entry in json.loads(text)]


def content_columns(table: Table) -> list[str]:
    """The columns ``content`` compares."""
    return [c for c in table.column_names if c not in _ENVELOPE]
