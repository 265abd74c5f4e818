"""A shard's session and user ids as int codes whose order is the ids' (so
the least code is the least id): matching, joining and ordering then work
on integers."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.funnels import Funnel, Unit
from transforms.rules.defined_funnels.inputs import all_conditions


def unit_column(funnel: Funnel) -> str:
    return "user_id" if funnel.unit == Unit.USER else "session_id"


class Codes:
    """Each coded table's id columns as codes, coded once per shard."""

    def __init__(self, g: dict[str, pa.Table], tables: dict[str, tuple[str, ...]]):
        """``tables``: per column, the tables whose ids are coded (hashing ids
        is most of the cost: only the tables something reads by code)."""
        self.ids: dict[str, pa.Array] = {}
        self._coded: dict[tuple[str, str], np.ndarray] = {}
        for column in ("session_id", "user_id"):
            # one hash pass over the column of those tables, then the distinct ids ranked
            tables_of = tables.get(column, ())
            chunks = [c for name in tables_of for c in g[name].column(column).chunks]
            encoded = pc.dictionary_encode(pa.concat_arrays(chunks) if chunks else pa.array([], pa.string()))
            order = pc.array_sort_indices(encoded.dictionary).to_numpy()
            rank = np.empty(len(order), np.int64)
            rank[order] = np.arange(len(order))
            self.ids[column] = encoded.dictionary.take(pa.array(order))
            indices = encoded.indices
            codes = np.where(
                pc.is_valid(indices).to_numpy(zero_copy_only=False),
                rank[pc.fill_null(indices, 0).to_numpy(zero_copy_only=False)] if len(rank) else -1,
                -1,
            )
            start = 0
            for name in tables_of:
                end = start + g[name].num_rows
                self._coded[(name, column)] = codes[start:end]
                start = end

    def of(self, table: str, column: str) -> np.ndarray:
        """``column`` (session_id or user_id) of ``g[table]`` as codes; -1 where null."""
        return self._coded[(table, column)]


def coded_tables(funnels: tuple[Funnel, ...], every_kind: tuple[str, ...] = ()) -> dict[str, tuple[str, ...]]:
    """Per id column, the tables read by code: every table a condition tests
    (its unit and session), the views and sessions (each session's first
    touch), and ``every_kind`` (the tables a strict order reads whole)."""
    tables: dict[str, set[str]] = {"session_id": {"silver_views", "silver_sessions"}, "user_id": set()}
    for funnel in funnels:
        for condition in all_conditions(funnel):
            tables["session_id"].add(condition.kind.table)
            tables[unit_column(funnel)].add(condition.kind.table)
    for table in every_kind:
        tables["session_id"].add(table)
        tables["user_id"].add(table)
    return {column: tuple(sorted(names)) for column, names in tables.items()}
