"""Streaming silver for users, event responses and user activity.

Stateful upserts in the global window, each tolerant of either side arriving
first and of any delay between them:

* ``UpsertUsers``: one current row per user, with the batch's
  ``NewestVersionFn`` in state;
* ``JoinToParent``: children keyed by their parent's id (responses by
  ``event_id``, activities by ``response_id``). State holds the parent's
  context and every child's dedup accumulator; a child is emitted when it
  arrives (with its own platform while the parent is unknown) and all
  children again when the parent's context arrives or changes.

Rows carry ``_version`` (increasing per state key) for the snapshot sink.
"""
from __future__ import annotations

import typing

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Duration, Timestamp

from schemas.contract import RECORD_TYPES
from schemas.tables import BRONZE
from transforms.dedup import combine_fn_for, extra_copies_counter
from transforms.silver import unknown_parent_context

PARENT, CHILD = "parent", "child"
STRING_KEYED = typing.Tuple[str, typing.Any]  # a deterministic key coder for the state


def _fn(kind: str):
    return combine_fn_for(kind, BRONZE[RECORD_TYPES[kind].bronze_table])


class _ExpiringStateFn(beam.DoFn):
    """State kept ``expiry_seconds`` past the newest element of its key."""

    STATE = ReadModifyWriteStateSpec("state", PickleCoder())
    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)

    def __init__(self, expiry_seconds: int):
        self._expiry = expiry_seconds

    def _keep_until(self, state: dict, timer, timestamp: Timestamp):
        state["expires"] = max(state.get("expires", Timestamp(0)), timestamp + Duration(seconds=self._expiry))
        timer.set(state["expires"])

    @on_timer(EXPIRY)
    def expire(self, state=beam.DoFn.StateParam(STATE)):
        state.clear()


class UpsertIdentityFn(_ExpiringStateFn):
    """(key, bronze row) -> the identity's current row, with ``copies``."""

    def __init__(self, kind: str, expiry_seconds: int):
        super().__init__(expiry_seconds)
        self._combine = _fn(kind)
        self._extra_copies = extra_copies_counter(kind)

    def process(self, keyed, state=beam.DoFn.StateParam(_ExpiringStateFn.STATE),
                expiry=beam.DoFn.TimerParam(_ExpiringStateFn.EXPIRY), timestamp=beam.DoFn.TimestampParam):
        _, row = keyed
        current = state.read()
        if current is None:
            current = {"acc": self._combine.create_accumulator(), "version": 0}
        else:
            self._extra_copies.inc()
        current["acc"] = self._combine.add_input(current["acc"], row)
        current["version"] += 1
        self._keep_until(current, expiry, timestamp)
        state.write(current)
        winner, copies, _ = self._combine.extract_output(current["acc"])
        yield {**winner, "copies": copies, "_version": current["version"]}


class JoinToParentFn(_ExpiringStateFn):
    """(parent id, (PARENT, context) | (CHILD, bronze row)) -> resolved children."""

    def __init__(self, child_kind: str, context_columns: tuple[str, ...], expiry_seconds: int):
        super().__init__(expiry_seconds)
        self._combine = _fn(child_kind)
        self._extra_copies = extra_copies_counter(child_kind)
        self._key = RECORD_TYPES[child_kind].key
        self._columns = context_columns

    def process(self, keyed, state=beam.DoFn.StateParam(_ExpiringStateFn.STATE),
                expiry=beam.DoFn.TimerParam(_ExpiringStateFn.EXPIRY), timestamp=beam.DoFn.TimestampParam):
        _, (side, value) = keyed
        current = state.read() or {"context": None, "children": {}, "version": 0}
        if side == PARENT:
            stale = current["context"] is not None and value["_version"] <= current["context"]["_version"]
            if not stale:
                current["context"] = value
            changed = [] if stale else list(current["children"])
        else:
            child_id = value[self._key]
            if child_id in current["children"]:
                self._extra_copies.inc()
            acc = current["children"].get(child_id) or self._combine.create_accumulator()
            current["children"][child_id] = self._combine.add_input(acc, value)
            changed = [child_id]
        current["version"] += 1
        self._keep_until(current, expiry, timestamp)
        state.write(current)
        context = current["context"]
        resolved = ({c: context[c] for c in self._columns} if context is not None
                    else unknown_parent_context(self._columns))
        for child_id in changed:
            winner, copies, _ = self._combine.extract_output(current["children"][child_id])
            yield {**winner, **resolved, "copies": copies, "_version": current["version"]}


class JoinToParent(beam.PTransform):
    """(children bronze rows, parent silver rows) -> children joined to their parent."""

    def __init__(self, child_kind: str, parent_key: str, context_columns: tuple[str, ...], expiry_seconds: int):
        super().__init__()
        self._kind, self._parent_key, self._columns, self._expiry = child_kind, parent_key, context_columns, expiry_seconds

    def expand(self, pcolls):
        children, parents = pcolls
        pk, cols = self._parent_key, self._columns
        keyed_children = children | "KeyChildByParent" >> beam.Map(
            lambda r: (r[pk], (CHILD, r))).with_output_types(STRING_KEYED)
        keyed_parents = parents | "KeyParent" >> beam.Map(
            lambda r: (r[pk], (PARENT, {**{c: r[c] for c in cols}, "_version": r["_version"]}))
        ).with_output_types(STRING_KEYED)
        return ((keyed_children, keyed_parents)
                | "BothSides" >> beam.Flatten()
                | "Join" >> beam.ParDo(JoinToParentFn(self._kind, cols, self._expiry)))


class UpsertUsers(beam.PTransform):
    def __init__(self, expiry_seconds: int):
        super().__init__()
        self._expiry = expiry_seconds

    def expand(self, users):
        return (users
                | "KeyByUser" >> beam.Map(lambda r: (r["user_id"], r)).with_output_types(STRING_KEYED)
                | "Upsert" >> beam.ParDo(UpsertIdentityFn("user", self._expiry)))
