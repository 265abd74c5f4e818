"""A shard's silver rows as the funnels read them: the records each
condition selects, and each step's records per unit, computed once for
every definition that shares them."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.funnels import RECORDS, BreaksOn, Condition, Funnel
from schemas.tables import SILVER
from transforms.rules.arrow import micros
from transforms.rules.defined_funnels.codes import Codes, coded_tables, unit_column
from transforms.rules.defined_funnels.records import Matches, record_keys


class Shard:
    """A shard's silver rows, their ids as codes, the records each condition
    selects (before any unit) and each step's matches per unit (sorted
    once), so definitions with common steps pay once."""

    def __init__(self, funnels: tuple[Funnel, ...], g: dict[str, pa.Table]):
        self.g = g
        whole = any(f.strict_breaks_on == BreaksOn.ANY_RECORD for f in funnels)
        self.codes = Codes(g, coded_tables(funnels, tuple(k.table for k in RECORDS.values()) if whole else ()))
        self._selected: dict[Condition, tuple[np.ndarray, np.ndarray]] = {}
        self._steps: dict[tuple, Matches] = {}
        self._every: dict[str, Matches] = {}

    def selected(self, condition: Condition) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the condition's table with a time and its ``where``
        values (not its parent), and their times (epoch micros)."""
        if condition not in self._selected:
            kind = condition.kind
            rows = self.g[kind.table]
            mask = pc.is_valid(rows.column(kind.time)).to_numpy(zero_copy_only=False)
            for column, values in condition.where:
                mask &= pc.fill_null(pc.is_in(rows.column(column), pa.array(values)), False).to_numpy(
                    zero_copy_only=False
                )
            picked = np.flatnonzero(mask)
            self._selected[condition] = picked, micros(rows.column(kind.time).take(pa.array(picked))).to_numpy()
        return self._selected[condition]

    def matches(
        self, funnel: Funnel, conditions: tuple[Condition, ...], found: dict, with_ids: bool = False
    ) -> Matches:
        """Records matching any of ``conditions`` in ``funnel``'s unit, each
        once. ``found``: the matches of the earlier steps, by name (for
        ``parent``); ``with_ids``: keep the record ids (a later step's
        parent)."""
        if any(c.parent is not None for c in conditions):
            return self._matches(funnel, conditions, found, with_ids)
        key = (conditions, funnel.unit, with_ids)
        if key not in self._steps:
            self._steps[key] = self._matches(funnel, conditions, found, with_ids)
        return self._steps[key]

    def every_record(self, funnel: Funnel) -> Matches:
        """Every record of every kind in ``funnel``'s unit (what breaks ``strict_breaks_on: any_record``)."""
        column = unit_column(funnel)
        if column not in self._every:
            self._every[column] = self.matches(funnel, tuple(Condition(record) for record in RECORDS), {})
        return self._every[column]

    def _matches(self, funnel: Funnel, conditions: tuple[Condition, ...], found: dict, with_ids: bool) -> Matches:
        parts = []
        for condition in conditions:
            kind = condition.kind
            rows = self.g[kind.table]
            picked, t = self.selected(condition)
            unit = self.codes.of(kind.table, unit_column(funnel))[picked]
            keep = unit >= 0
            if condition.parent is not None:
                # the parent record matched that step, in the same unit
                parents = found[condition.parent]
                parent_keys = rows.column(kind.parent_key).take(pa.array(picked))
                at = pc.fill_null(pc.index_in(parent_keys, value_set=parents.id), -1).to_numpy(zero_copy_only=False)
                if len(parents.unit):
                    keep &= (at >= 0) & (parents.unit[np.maximum(at, 0)] == unit)
                else:  # no parent matched in the shard
                    keep &= False
            kept = picked[keep]
            parts.append(
                Matches(
                    unit[keep],
                    t[keep],
                    lambda table=kind.table, kept=kept: self.codes.of(table, "session_id")[kept],
                    lambda table=kind.table, kept=kept: record_keys(table, kept),
                    rows.column(SILVER[kind.table].key[0]).take(pa.array(kept)).combine_chunks() if with_ids else None,
                )
            )
        matches = Matches.of(parts)
        if len({c.record for c in conditions}) < len(conditions) and len(matches.record):
            # a record meeting two of the step's conditions is still one record
            _, once = np.unique(matches.record, return_index=True)
            if len(once) < len(matches.record):
                once.sort()
                ids = matches.id.take(pa.array(once)) if matches.id is not None else None
                matches = Matches(*(a[once] for a in (matches.unit, matches.t, matches.session, matches.record)), ids)
        return matches
