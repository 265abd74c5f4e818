"""Streaming silver: stateful upserts per session, user, event and response.

The rules are the batch's own (``transforms.silver.JOINS``, the dedup
``CombineFn``s, ``resolve_session``), applied to one key's rows:

* sessions (keyed by ``session_id``, event-time session windows with a
  30-minute gap, optional early firings, late firings within the allowed
  lateness): every firing upserts the session, its views, clicks and events
  and emits their current silver rows, and the events' context for the
  responses;
* users (keyed by ``user_id``): the newest version;
* responses (keyed by ``event_id``) and activities (keyed by
  ``response_id``): joined to their parent's context whichever arrives
  first; a child is emitted when it arrives (with its own platform while the
  parent is unknown) and all children again when the parent's context
  arrives or changes.

State is small and append-only, because the SDK harness (the same on
Dataflow) sizes every state value it caches by walking its objects: each
key holds a bag of bytes blobs (the compact rows that arrived, one blob per
firing or element), an int version and an int expiry, and a watermark timer
clears the key when nothing can update it any more. Rows travel as tuples of
the columns silver needs (``CARRIED``), not dicts.

Every emitted row carries ``_version`` (increasing per state key) so a sink
keeps the newest row per key.
"""
from __future__ import annotations

import pickle
import typing

import apache_beam as beam
from apache_beam.coders import BytesCoder, VarIntCoder
from apache_beam.transforms import trigger, window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.typehints import typehints
from apache_beam.utils.timestamp import Duration, Timestamp

from schemas.contract import RECORD_TYPES
from schemas.tables import BRONZE
from transforms import metrics
from transforms.dedup import combine_fn_for, extra_copies_counter
from transforms.silver import (ACTIVITY_JOIN, JOINS, RESPONSE_JOIN, SESSION_CHILDREN, ParentJoin,
                               parent_context, resolve_session, shuffled_columns, unknown_parent_context)

SESSION_GAP_SECONDS = 30 * 60
ALLOWED_LATENESS_SECONDS = 2 * 24 * 3600
SESSION_KINDS = ("session",) + tuple(j.child for j in SESSION_CHILDREN)
PARENT, CHILD = "parent", "child"
SILVER_ROWS, CONTEXT = "silver", "context"
# What streaming silver keeps of a bronze row, as a tuple in this order.
CARRIED = {kind: shuffled_columns(kind) for kind in RECORD_TYPES}
# The silver input a bronze table's rows go to: (output tag, key column).
INPUT_OF_TABLE = {
    **{RECORD_TYPES[kind].bronze_table: ("sessions", "session_id") for kind in SESSION_KINDS},
    RECORD_TYPES["user"].bronze_table: ("users", "user_id"),
    **{RECORD_TYPES[j.child].bronze_table: (j.child, j.key) for j in (RESPONSE_JOIN, ACTIVITY_JOIN)},
}
KIND_OF_TABLE = {rt.bronze_table: rt.name for rt in RECORD_TYPES.values()}
STRING_KEYED = typehints.KV[str, typing.Any]
# A DoFn's main output type is otherwise inferred from its yields, tagged
# outputs included, which a GroupByKey downstream rejects.
SILVER_ROW = typehints.KV[str, typing.Any]


def compact(kind: str, row: dict) -> tuple:
    return tuple(row[c] for c in CARRIED[kind])


def expand(kind: str, values: tuple) -> dict:
    return dict(zip(CARRIED[kind], values))


def event_time(kind: str, row: dict, ingested_micros: int) -> int:
    """A record's event time: its own time, bounded by when it arrived (a
    time ahead of ingest counts as ingest time)."""
    return min(row[RECORD_TYPES[kind].event_time[0]], ingested_micros)


def silver_input(bronze_table: str, row: dict, ingested_micros: int, lateness_micros: int):
    """Where a bronze row goes in streaming silver: ``(tag, (key, value),
    timestamp micros)``, or None when it is more than the allowed lateness
    behind ingest (it reaches silver through the daily batch)."""
    tag, key_column = INPUT_OF_TABLE[bronze_table]
    kind = KIND_OF_TABLE[bronze_table]
    values = compact(kind, row)
    if tag == "sessions":
        at = event_time(kind, row, ingested_micros)
        if ingested_micros - at > lateness_micros:
            return None
        return tag, (row[key_column], (kind, values)), at
    if tag == "users":
        return tag, (row[key_column], values), ingested_micros
    return tag, (row[key_column], (CHILD, values)), ingested_micros


def keyed_by_string(pcoll):
    """Declares ``(str key, value)`` elements, so runners use a deterministic
    key coder for the state (a tagged output carries no type hint of its own)."""
    pcoll.element_type = STRING_KEYED
    return pcoll


def _pack(values: list) -> bytes:
    return pickle.dumps(values, protocol=pickle.HIGHEST_PROTOCOL)


def _unpacked(blobs) -> list:
    return [v for blob in blobs for v in pickle.loads(blob)]


class _ExpiringFn(beam.DoFn):
    """Keeps a key's state ``expiry_seconds`` past the latest time that can
    still update it, then clears it (each subclass has its own ``EXPIRY``
    timer: a timer has one callback)."""

    EXPIRES = ReadModifyWriteStateSpec("expires", VarIntCoder())

    def __init__(self, expiry_seconds: int):
        self._expiry = expiry_seconds

    def _keep_until(self, expires, timer, timestamp: Timestamp) -> None:
        until = max(expires.read() or 0, (timestamp + Duration(seconds=self._expiry)).micros)
        expires.write(until)
        timer.set(Timestamp(micros=until))


class UpsertSessionFn(_ExpiringFn):
    """(session_id, the pane's new (kind, values)) -> current silver rows of
    the session and its children (main), and the events' context (tag
    ``context``) keyed by event_id."""

    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)

    ROWS = BagStateSpec("rows", BytesCoder())

    def __init__(self, expiry_seconds: int):
        super().__init__(expiry_seconds)
        self._fns = {kind: combine_fn_for(kind, BRONZE[RECORD_TYPES[kind].bronze_table]) for kind in SESSION_KINDS}
        self._duplicates = {k: extra_copies_counter(k) for k in SESSION_KINDS}
        self._updates = metrics.counter("stream_session_updates")

    def process(self, keyed, rows=beam.DoFn.StateParam(ROWS), expires=beam.DoFn.StateParam(_ExpiringFn.EXPIRES),
                expiry=beam.DoFn.TimerParam(EXPIRY), pane_end=beam.DoFn.TimestampParam):
        session_id, pane = keyed
        pane = list(pane)
        if pane:  # empty: an on-time pane after early ones that brought everything
            yield from self._upsert(session_id, pane, rows, expires, expiry, pane_end)

    def _upsert(self, session_id, pane, rows, expires, expiry, pane_end):
        blobs = list(rows.read())
        rows.add(_pack(pane))
        version = len(blobs) + 1
        # The pane's timestamp is the end of its session window: state lives
        # until no window of the session can fire again.
        self._keep_until(expires, expiry, pane_end)
        self._updates.inc()
        accumulators = {}
        for arrived, rows_ in ((False, _unpacked(blobs)), (True, pane)):
            for kind, values in rows_:
                row = expand(kind, values)
                identity = (kind, row[RECORD_TYPES[kind].key])
                fn = self._fns[kind]
                if arrived and identity in accumulators:
                    self._duplicates[kind].inc()
                accumulators[identity] = fn.add_input(accumulators.get(identity) or fn.create_accumulator(), row)
        yield from self._rows(session_id, accumulators, version)

    def _rows(self, session_id, accumulators, version):
        winners = {kind: [] for kind in SESSION_KINDS}
        for (kind, _), acc in accumulators.items():
            row, copies, _ = self._fns[kind].extract_output(acc)
            winners[kind].append({**row, "copies": copies})
        session = resolve_session(session_id, winners["session"][0] if winners["session"] else None,
                                  {j.child: winners[j.child] for j in SESSION_CHILDREN})
        yield "silver_sessions", {**session, "_version": version}
        for join in SESSION_CHILDREN:
            context = {"session_id": session_id, **parent_context(join, session), "_version": version}
            for child in winners[join.child]:
                silver_row = {**child, **context}
                yield join.table, silver_row
                if join.child == RESPONSE_JOIN.parent:
                    yield beam.pvalue.TaggedOutput(CONTEXT, (silver_row[RESPONSE_JOIN.key], (PARENT, {
                        **parent_context(RESPONSE_JOIN, silver_row), "_version": version})))

    @on_timer(EXPIRY)
    def expire(self, rows=beam.DoFn.StateParam(ROWS), expires=beam.DoFn.StateParam(_ExpiringFn.EXPIRES)):
        rows.clear()
        expires.clear()


class UpsertUserFn(_ExpiringFn):
    """(user_id, values) -> the user's current silver row."""

    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)

    ROWS = BagStateSpec("rows", BytesCoder())

    def __init__(self, expiry_seconds: int):
        super().__init__(expiry_seconds)
        self._combine = combine_fn_for("user", BRONZE[RECORD_TYPES["user"].bronze_table])
        self._extra_copies = extra_copies_counter("user")

    def process(self, keyed, rows=beam.DoFn.StateParam(ROWS), expires=beam.DoFn.StateParam(_ExpiringFn.EXPIRES),
                expiry=beam.DoFn.TimerParam(EXPIRY), timestamp=beam.DoFn.TimestampParam):
        _, values = keyed
        earlier = list(rows.read())
        rows.add(_pack([values]))
        self._keep_until(expires, expiry, timestamp)
        if earlier:
            self._extra_copies.inc()
        acc = self._combine.create_accumulator()
        for v in _unpacked(earlier) + [values]:
            acc = self._combine.add_input(acc, expand("user", v))
        winner, copies, _ = self._combine.extract_output(acc)
        yield "silver_users", {**winner, "copies": copies, "_version": len(earlier) + 1}

    @on_timer(EXPIRY)
    def expire(self, rows=beam.DoFn.StateParam(ROWS), expires=beam.DoFn.StateParam(_ExpiringFn.EXPIRES)):
        rows.clear()
        expires.clear()


class JoinToParentFn(_ExpiringFn):
    """(parent id, (PARENT, context) | (CHILD, values)) -> the children's
    current silver rows (main), and with ``pass_on`` their own context for
    the next join (tag ``context``)."""

    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)

    CHILDREN = BagStateSpec("children", BytesCoder())
    PARENT_CONTEXT = ReadModifyWriteStateSpec("context", BytesCoder())
    VERSION = ReadModifyWriteStateSpec("version", VarIntCoder())

    def __init__(self, join: ParentJoin, expiry_seconds: int, pass_on: ParentJoin | None = None):
        super().__init__(expiry_seconds)
        self._join, self._pass_on = join, pass_on
        self._combine = combine_fn_for(join.child, BRONZE[RECORD_TYPES[join.child].bronze_table])
        self._extra_copies = extra_copies_counter(join.child)
        self._key = RECORD_TYPES[join.child].key

    def process(self, keyed, children=beam.DoFn.StateParam(CHILDREN),
                stored=beam.DoFn.StateParam(PARENT_CONTEXT), version=beam.DoFn.StateParam(VERSION),
                expires=beam.DoFn.StateParam(_ExpiringFn.EXPIRES), expiry=beam.DoFn.TimerParam(EXPIRY),
                timestamp=beam.DoFn.TimestampParam):
        _, (side, value) = keyed
        blob = stored.read()
        context = pickle.loads(blob) if blob is not None else None
        arrived = _unpacked(children.read())
        if side == PARENT:
            changed = self._parent(value, context, arrived, stored)
            if changed is None:  # stale, replayed, or the same context again: the children's rows stand
                changed = set()
            else:
                context = value
        else:
            changed = self._child(value, arrived, children)
        if changed:
            current = (version.read() or 0) + 1
            version.write(current)
            yield from self._rows(arrived, changed, context, current)
        self._keep_until(expires, expiry, timestamp)

    def _parent(self, context: dict, stored_context: dict | None, arrived: list, stored) -> set | None:
        """A parent's context arrived: -> the children to emit again, or None."""
        if stored_context is not None and context["_version"] <= stored_context["_version"]:
            return None
        stored.write(_pack(context))
        if stored_context is not None and \
                parent_context(self._join, context) == parent_context(self._join, stored_context):
            return None
        return {expand(self._join.child, v)[self._key] for v in arrived}

    def _child(self, values: tuple, arrived: list, children) -> set:
        """A child arrived: kept, and emitted."""
        child_id = expand(self._join.child, values)[self._key]
        if any(expand(self._join.child, v)[self._key] == child_id for v in arrived):
            self._extra_copies.inc()
        children.add(_pack([values]))
        arrived.append(values)
        return {child_id}

    def _rows(self, arrived: list, changed: set, context: dict | None, version: int):
        resolved = (parent_context(self._join, context) if context is not None
                    else unknown_parent_context(self._join.context))
        accumulators = {}
        for v in arrived:
            row = expand(self._join.child, v)
            if row[self._key] in changed:
                accumulators[row[self._key]] = self._combine.add_input(
                    accumulators.get(row[self._key]) or self._combine.create_accumulator(), row)
        for acc in accumulators.values():
            winner, copies, _ = self._combine.extract_output(acc)
            silver_row = {**winner, **resolved, "copies": copies, "_version": version}
            yield self._join.table, silver_row
            if self._pass_on is not None:
                yield beam.pvalue.TaggedOutput(CONTEXT, (silver_row[self._pass_on.key], (PARENT, {
                    **parent_context(self._pass_on, silver_row), "_version": version})))

    @on_timer(EXPIRY)
    def expire(self, children=beam.DoFn.StateParam(CHILDREN), stored=beam.DoFn.StateParam(PARENT_CONTEXT),
               version=beam.DoFn.StateParam(VERSION), expires=beam.DoFn.StateParam(_ExpiringFn.EXPIRES)):
        for state in (children, stored, version, expires):
            state.clear()


class UpsertSessions(beam.PTransform):
    """``(session_id, (kind, values))`` at event time -> ``(silver table, row)``
    (main) and the events' context (``context``)."""

    def __init__(self, gap_seconds: int = SESSION_GAP_SECONDS,
                 allowed_lateness_seconds: int = ALLOWED_LATENESS_SECONDS,
                 early_firing_seconds: int | None = None):
        super().__init__()
        self._gap, self._lateness = gap_seconds, allowed_lateness_seconds
        # Early and late panes are safe: the upsert state, not the pane, holds the session.
        self._trigger = (trigger.AfterWatermark(early=trigger.AfterProcessingTime(early_firing_seconds),
                                                late=trigger.AfterCount(1))
                         if early_firing_seconds else trigger.DefaultTrigger())

    def expand(self, records):
        return (keyed_by_string(records)
                | "SessionWindows" >> beam.WindowInto(
                    window.Sessions(self._gap), trigger=self._trigger,
                    allowed_lateness=Duration(seconds=self._lateness),
                    # Discarding: each firing brings only what arrived since the
                    # last one; the upsert state holds the whole session.
                    accumulation_mode=trigger.AccumulationMode.DISCARDING)
                | "GroupSessionPane" >> beam.GroupByKey()
                | "ToGlobalWindow" >> beam.WindowInto(window.GlobalWindows())
                | "Upsert" >> beam.ParDo(UpsertSessionFn(self._gap + self._lateness)).with_output_types(SILVER_ROW)
                .with_outputs(CONTEXT, main=SILVER_ROWS))


class JoinToParent(beam.PTransform):
    """``(children keyed by parent id, parents' context keyed likewise)`` ->
    ``(silver table, row)`` (main) and, with ``pass_on``, the children's
    context for the next join (``context``)."""

    def __init__(self, join: ParentJoin, expiry_seconds: int, pass_on: ParentJoin | None = None):
        super().__init__()
        self._fn = JoinToParentFn(join, expiry_seconds, pass_on)

    def expand(self, pcolls):
        return (pcolls
                | "BothSides" >> beam.Flatten().with_output_types(STRING_KEYED)
                | "Join" >> beam.ParDo(self._fn).with_output_types(SILVER_ROW).with_outputs(CONTEXT, main=SILVER_ROWS))


class StreamingSilver(beam.PTransform):
    """The tagged silver inputs of the streaming parse (``silver_input``) ->
    ``(silver table, row)`` of all seven tables."""

    def __init__(self, allowed_lateness_seconds: int = ALLOWED_LATENESS_SECONDS, join_state_days: int = 30,
                 early_firing_seconds: int | None = None):
        super().__init__()
        self._lateness, self._early = allowed_lateness_seconds, early_firing_seconds
        self._join_expiry = join_state_days * 24 * 3600

    def expand(self, inputs):
        sessions = inputs["sessions"] | "Sessions" >> UpsertSessions(
            allowed_lateness_seconds=self._lateness, early_firing_seconds=self._early)
        users = keyed_by_string(inputs["users"]) | "Users" >> beam.ParDo(
            UpsertUserFn(self._join_expiry)).with_output_types(SILVER_ROW)
        responses = ((inputs[RESPONSE_JOIN.child], sessions[CONTEXT])
                     | "ResponsesToEvents" >> JoinToParent(RESPONSE_JOIN, self._join_expiry, pass_on=ACTIVITY_JOIN))
        activities = ((inputs[ACTIVITY_JOIN.child], responses[CONTEXT])
                      | "ActivitiesToResponses" >> JoinToParent(ACTIVITY_JOIN, self._join_expiry))
        return ((sessions[SILVER_ROWS], users, responses[SILVER_ROWS], activities[SILVER_ROWS])
                | "AllSilver" >> beam.Flatten())


SILVER_INPUTS = ("sessions", "users") + tuple(j.child for j in JOINS if j.parent != "session")
