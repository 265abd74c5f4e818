"""Streaming silver: upserts of sessions, users and joined children, in state
kept per shard.

The rules are the batch's own (``transforms.silver.JOINS``, the dedup
``CombineFn``s, ``resolve_session``), applied to one identity's rows:

* sessions (event-time session windows per ``session_id``, 30-minute gap,
  optional early firings, late firings within the allowed lateness): each
  firing upserts the session, its views, clicks and events and emits their
  current silver rows, and the events' context for the responses;
* users: the newest version;
* responses (by ``event_id``) and activities (by ``response_id``): joined to
  their parent's context whichever arrives first; a child is emitted with
  its own platform while the parent is unknown, and again when the parent's
  context arrives or changes.

**Why shards.** The SDK harness (the same on Dataflow) weighs every state
value it caches with ``objsize``, and every such call first walks the
globals of all loaded modules: about 0.7 ms here whatever the value's size
(BENCHMARKS.md). State per identity, touched per record, therefore cost
milliseconds per record. Instead every upsert step groups its input by shard
(a hash of the identity, ``shards`` of them) once per ``batch_seconds`` of
processing time (``None``: when the input ends, for bounded runs), and keeps
one bag per shard: pickled ``{identity: entry}`` blobs, the newest blob
with an identity winning, appended once per batch and compacted into one
blob every ``COMPACT_AFTER`` blobs; a watermark timer drops the entries no
later record can update (``expires``). State work is then per shard and
batch, not per record.

Every emitted row carries ``_version`` (increasing per identity) so a sink
keeps the newest row per key.
"""
from __future__ import annotations

import pickle
import typing
from collections import defaultdict

import apache_beam as beam
import mmh3
from apache_beam.coders import BytesCoder
from apache_beam.transforms import trigger, window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, TimerSpec, on_timer
from apache_beam.typehints import typehints
from apache_beam.utils.timestamp import Duration, Timestamp

from schemas import contract
from schemas.contract import RECORD_TYPES
from schemas.tables import BRONZE
from transforms import metrics
from transforms.dedup import combine_fn_for, extra_copies_counter
from transforms.stream_sinks import batched
from transforms.silver import (ACTIVITY_JOIN, JOINS, RESPONSE_JOIN, SESSION_CHILDREN, ParentJoin,
                               parent_context, resolve_session, shuffled_columns, unknown_parent_context)

SESSION_GAP_SECONDS = 30 * 60
ALLOWED_LATENESS_SECONDS = 2 * 24 * 3600
SHARDS = 64
COMPACT_AFTER = 8
# Expiry times are rounded up to whole days: a shard's timer then fires once
# a day, not once per identity (and at the end of a bounded input, where the
# watermark jumps to the end, once per distinct expiry time). State lives at
# most a day longer than its rule says.
EXPIRY_GRANULARITY_MICROS = 24 * 3600 * 1_000_000
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
SILVER_INPUTS = ("sessions", "users") + tuple(j.child for j in JOINS if j.parent != "session")
STRING_KEYED = typehints.KV[str, typing.Any]
# A DoFn's main output type is otherwise inferred from its yields, tagged
# outputs included, which a GroupByKey downstream rejects.
SILVER_ROWS_OF_TABLE = typehints.KV[str, typing.Any]
SHARD_GROUP = typehints.KV[int, typing.Any]


class Rows(list):
    """A batch of rows travelling as one element. Being a list subclass, it is
    pickled whole (in C) by Beam's default coder instead of value by value
    (measured: 0.6 against 1.1 us a row, a third fewer bytes)."""

    __slots__ = ()


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
    behind ingest (it reaches silver through the daily batch). Sessions'
    records are timestamped at their event time, the others at ingest."""
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


def session_elements(records: list[tuple[int, tuple]], gap_micros: int) -> list[tuple[int, list]]:
    """One bundle's records of a session, ``(event time, (kind, values))`` ->
    ``(timestamp, records)`` elements for standard session windows.

    Beam gives an element at time t the window [t, t + gap) and merges
    overlapping windows. Records less than a gap apart form a run whose
    merged window is [first, last + gap); the run travels as one element at
    its first record's time, plus empty elements at later records' times,
    chosen so that consecutive ones are less than a gap apart and the last
    is the run's last record: Beam then merges exactly the window one
    element per record would give, at a fraction of the elements."""
    records = sorted(records, key=lambda r: r[0])
    elements, i = [], 0
    while i < len(records):
        j = i + 1
        while j < len(records) and records[j][0] - records[j - 1][0] < gap_micros:
            j += 1
        times = [at for at, _ in records[i:j]]
        elements.append((times[0], [record for _, record in records[i:j]]))
        chained = times[0]
        for k in range(1, len(times)):
            if times[k] - chained >= gap_micros:
                chained = times[k - 1]
                elements.append((chained, []))
        if chained != times[-1]:
            elements.append((times[-1], []))
        i = j
    return elements


def keyed_by_string(pcoll):
    """Declares ``(str key, value)`` elements, so runners use a deterministic
    key coder (a tagged output carries no type hint of its own)."""
    pcoll.element_type = STRING_KEYED
    return pcoll


def shard_of(key: str, shards: int) -> int:
    return mmh3.hash(key, signed=False) % shards


def _rounded_up(micros: int) -> int:
    return -(-micros // EXPIRY_GRANULARITY_MICROS) * EXPIRY_GRANULARITY_MICROS


def _pack(value) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def _entries(blobs: list[bytes]) -> dict:
    entries = {}
    for blob in blobs:
        entries.update(pickle.loads(blob))
    return entries


class _ShardStateFn(beam.DoFn):
    """(shard, [(identity, value), ...] of one batch) -> upserts. State: a bag
    of pickled ``{identity: entry}`` blobs (see the module docstring); an
    entry is a dict with at least ``expires`` (micros) and ``version``.
    Subclasses implement ``upsert(identity, entry, values) -> (entry, rows)``
    and define ``EXPIRY`` (a timer has one callback)."""

    ENTRIES = BagStateSpec("entries", BytesCoder())

    shards = SHARDS  # of the join a context goes to; ShardedUpsert sets it

    def _apply(self, keyed, state, timer):
        _, lists = keyed
        by_identity = defaultdict(list)
        for items in lists:
            for identity, value in items:
                by_identity[identity].append(value)
        blobs = list(state.read())
        entries = _entries(blobs)
        changed, rows, contexts = {}, defaultdict(list), defaultdict(list)
        for identity, values in by_identity.items():
            entry, outputs = self.upsert(identity, entries.get(identity), values)
            changed[identity] = entry
            for table, row in outputs:
                if table == CONTEXT:
                    contexts[shard_of(row[0], self.shards)].append(row)
                else:
                    rows[table].append(row)
        if len(blobs) + 1 >= COMPACT_AFTER:
            entries.update(changed)
            state.clear()
            state.add(_pack(entries))
        else:
            state.add(_pack(changed))
            entries.update(changed)
        timer.set(Timestamp(micros=min(e["expires"] for e in entries.values())))
        for table, table_rows in rows.items():
            yield table, Rows(table_rows)
        for shard, items in contexts.items():
            yield beam.pvalue.TaggedOutput(CONTEXT, (shard, Rows(items)))

    def _expire(self, state, timer, now: Timestamp):
        entries = _entries(list(state.read()))
        live = {k: e for k, e in entries.items() if e["expires"] > now.micros}
        state.clear()
        if live:
            state.add(_pack(live))
            timer.set(Timestamp(micros=min(e["expires"] for e in live.values())))

    def upsert(self, identity, entry: dict | None, values: list) -> tuple[dict, list]:
        raise NotImplementedError


class UpsertSessionsFn(_ShardStateFn):
    """Per session of the batch, its panes' new records ``(window end micros,
    [(kind, values)])`` -> the session's and its children's silver rows
    (main), and its events' context keyed by event_id (``context``).
    Entries: the session's records, kept until no window of it can fire."""

    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)

    def __init__(self, keep_seconds: int):
        self._keep = keep_seconds * 1_000_000
        self._fns = {kind: combine_fn_for(kind, BRONZE[RECORD_TYPES[kind].bronze_table]) for kind in SESSION_KINDS}
        self._duplicates = {k: extra_copies_counter(k) for k in SESSION_KINDS}
        self._updates = metrics.counter("stream_session_updates")

    def process(self, keyed, state=beam.DoFn.StateParam(_ShardStateFn.ENTRIES),
                timer=beam.DoFn.TimerParam(EXPIRY)):
        yield from self._apply(keyed, state, timer)

    @on_timer(EXPIRY)
    def expire(self, state=beam.DoFn.StateParam(_ShardStateFn.ENTRIES), timer=beam.DoFn.TimerParam(EXPIRY),
               now=beam.DoFn.TimestampParam):
        self._expire(state, timer, now)

    def upsert(self, session_id, entry, panes):
        entry = entry or {"records": [], "version": 0, "expires": 0}
        accumulators = {}
        for arrived, records in ((False, entry["records"]), (True, [r for _, rows in panes for r in rows])):
            for kind, values in records:
                row = expand(kind, values)
                identity = (kind, row[RECORD_TYPES[kind].key])
                if arrived and identity in accumulators:
                    self._duplicates[kind].inc()
                fn = self._fns[kind]
                accumulators[identity] = fn.add_input(accumulators.get(identity) or fn.create_accumulator(), row)
        records = entry["records"] + [r for _, rows in panes for r in rows]
        version = entry["version"] + 1
        # A session's state lives until no window of it can fire again.
        expires = max([entry["expires"]] + [_rounded_up(end + self._keep) for end, _ in panes])
        self._updates.inc()
        return ({"records": records, "version": version, "expires": expires},
                list(self._rows(session_id, accumulators, version)))

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
                    yield CONTEXT, (silver_row[RESPONSE_JOIN.key], (PARENT, {
                        **parent_context(RESPONSE_JOIN, silver_row), "_version": version}))


class UpsertUsersFn(_ShardStateFn):
    """Per user of the batch, its new versions -> the user's current silver row.
    Entries: every version received, kept ``keep_seconds`` (of processing
    time, as ingest time is) past the newest arrival."""

    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)

    def __init__(self, keep_seconds: int):
        self._keep = keep_seconds * 1_000_000
        self._combine = combine_fn_for("user", BRONZE[RECORD_TYPES["user"].bronze_table])
        self._extra_copies = extra_copies_counter("user")

    def process(self, keyed, state=beam.DoFn.StateParam(_ShardStateFn.ENTRIES),
                timer=beam.DoFn.TimerParam(EXPIRY)):
        yield from self._apply(keyed, state, timer)

    @on_timer(EXPIRY)
    def expire(self, state=beam.DoFn.StateParam(_ShardStateFn.ENTRIES), timer=beam.DoFn.TimerParam(EXPIRY),
               now=beam.DoFn.TimestampParam):
        self._expire(state, timer, now)

    def upsert(self, user_id, entry, versions):
        entry = entry or {"versions": [], "version": 0, "expires": 0}
        self._extra_copies.inc(len(versions) - (0 if entry["versions"] else 1))
        every = entry["versions"] + versions
        acc = self._combine.create_accumulator()
        for values in every:
            acc = self._combine.add_input(acc, expand("user", values))
        winner, copies, _ = self._combine.extract_output(acc)
        version = entry["version"] + 1
        expires = max(entry["expires"], _rounded_up(contract.now_micros() + self._keep))
        return ({"versions": every, "version": version, "expires": expires},
                [("silver_users", {**winner, "copies": copies, "_version": version})])


class JoinToParentFn(_ShardStateFn):
    """Per parent of the batch, its children's new copies ``(CHILD, values)``
    and its context ``(PARENT, context)`` -> the children's current silver
    rows (main), and with ``pass_on`` their own context for the next join
    (``context``). Entries: the parent's context and every child copy, kept
    ``keep_seconds`` past the newest arrival."""

    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)

    def __init__(self, join: ParentJoin, keep_seconds: int, pass_on: ParentJoin | None = None):
        self._join, self._pass_on, self._keep = join, pass_on, keep_seconds * 1_000_000
        self._combine = combine_fn_for(join.child, BRONZE[RECORD_TYPES[join.child].bronze_table])
        self._extra_copies = extra_copies_counter(join.child)
        self._key = CARRIED[join.child].index(RECORD_TYPES[join.child].key)

    def process(self, keyed, state=beam.DoFn.StateParam(_ShardStateFn.ENTRIES),
                timer=beam.DoFn.TimerParam(EXPIRY)):
        yield from self._apply(keyed, state, timer)

    @on_timer(EXPIRY)
    def expire(self, state=beam.DoFn.StateParam(_ShardStateFn.ENTRIES), timer=beam.DoFn.TimerParam(EXPIRY),
               now=beam.DoFn.TimestampParam):
        self._expire(state, timer, now)

    def upsert(self, parent_id, entry, arrivals):
        entry = entry or {"context": None, "children": [], "version": 0, "expires": 0}
        context, children, changed = entry["context"], list(entry["children"]), set()
        seen = {c[self._key] for c in children}
        for side, value in arrivals:
            if side == PARENT:
                if context is not None and value["_version"] <= context["_version"]:
                    continue  # a stale or replayed context
                if context is None or parent_context(self._join, value) != parent_context(self._join, context):
                    changed.update(seen)  # a new or changed context: every child again
                context = value
            else:
                child_id = value[self._key]
                if child_id in seen:
                    self._extra_copies.inc()
                seen.add(child_id)
                children.append(value)
                changed.add(child_id)
        version = entry["version"] + (1 if changed else 0)
        updated = {"context": context, "children": children, "version": version,
                   "expires": max(entry["expires"], _rounded_up(contract.now_micros() + self._keep))}
        return updated, list(self._rows(children, changed, context, version))

    def _rows(self, children, changed, context, version):
        resolved = (parent_context(self._join, context) if context is not None
                    else unknown_parent_context(self._join.context))
        accumulators = {}
        for values in children:
            if values[self._key] in changed:
                row = expand(self._join.child, values)
                accumulators[values[self._key]] = self._combine.add_input(
                    accumulators.get(values[self._key]) or self._combine.create_accumulator(), row)
        for acc in accumulators.values():
            winner, copies, _ = self._combine.extract_output(acc)
            silver_row = {**winner, **resolved, "copies": copies, "_version": version}
            yield self._join.table, silver_row
            if self._pass_on is not None:
                yield CONTEXT, (silver_row[self._pass_on.key], (PARENT, {
                    **parent_context(self._pass_on, silver_row), "_version": version}))


class ShardedUpsert(beam.PTransform):
    """``(shard, [(identity, value), ...])`` (one PCollection or several; the
    producer groups its output by ``shard_of``) -> the upsert ``fn``'s
    outputs: the lists grouped by shard once per ``batch_seconds`` of
    processing time (``None``: when the input ends) and applied to the
    shard's state in one call."""

    def __init__(self, fn: _ShardStateFn, shards: int = SHARDS, batch_seconds: int | None = None,
                 outputs: tuple[str, ...] = ()):
        super().__init__()
        fn.shards = shards
        self._fn, self._outputs, self._batch = fn, outputs, batch_seconds

    def expand(self, grouped):
        upsert = beam.ParDo(self._fn).with_output_types(SILVER_ROWS_OF_TABLE)
        if self._outputs:
            upsert = upsert.with_outputs(*self._outputs, main=SILVER_ROWS)
        return (batched(grouped, self._batch, SHARD_GROUP)
                | "GroupShard" >> beam.GroupByKey()
                | "Upsert" >> upsert)


def _with_window_end(keyed, shards: int, end=beam.DoFn.TimestampParam):
    """A session's pane -> ``(shard, [(session_id, (window end, records))])``;
    a pane of empty elements only (see ``session_elements``), or an on-time
    pane after early ones that brought everything, carries nothing."""
    session_id, elements = keyed
    records = [record for span in elements for record in span]
    if records:
        yield shard_of(session_id, shards), Rows([(session_id, (end.micros, Rows(records)))])


class UpsertSessions(beam.PTransform):
    """``(session_id, [(kind, values)])`` (see ``session_elements``) at event
    time -> ``(silver table, rows)`` (main) and the events' context
    (``context``)."""

    def __init__(self, gap_seconds: int = SESSION_GAP_SECONDS,
                 allowed_lateness_seconds: int = ALLOWED_LATENESS_SECONDS,
                 early_firing_seconds: int | None = None, shards: int = SHARDS, batch_seconds: int | None = None):
        super().__init__()
        self._gap, self._lateness, self._shards, self._batch = gap_seconds, allowed_lateness_seconds, shards, batch_seconds
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
                | "WithWindowEnd" >> beam.FlatMap(_with_window_end, self._shards).with_output_types(SHARD_GROUP)
                | "Upsert" >> ShardedUpsert(UpsertSessionsFn(self._gap + self._lateness), self._shards,
                                            self._batch, outputs=(CONTEXT,)))


class JoinToParent(beam.PTransform):
    """``(children keyed by parent id, parents' context keyed likewise)`` ->
    ``(silver table, row)`` (main) and, with ``pass_on``, the children's
    context for the next join (``context``)."""

    def __init__(self, join: ParentJoin, keep_seconds: int, pass_on: ParentJoin | None = None,
                 shards: int = SHARDS, batch_seconds: int | None = None):
        super().__init__()
        self._upsert = ShardedUpsert(JoinToParentFn(join, keep_seconds, pass_on), shards, batch_seconds,
                                     outputs=(CONTEXT,))

    def expand(self, pcolls):
        return pcolls | "Join" >> self._upsert


class StreamingSilver(beam.PTransform):
    """The tagged silver inputs of the streaming parse (``silver_input``,
    grouped: sessions by ``session_elements``, the others by shard) ->
    ``(silver table, rows)`` of all seven tables."""

    def __init__(self, allowed_lateness_seconds: int = ALLOWED_LATENESS_SECONDS, join_state_days: int = 30,
                 early_firing_seconds: int | None = None, shards: int = SHARDS, batch_seconds: int | None = None):
        super().__init__()
        self._lateness, self._early, self._shards, self._batch = (allowed_lateness_seconds, early_firing_seconds,
                                                                  shards, batch_seconds)
        self._keep = join_state_days * 24 * 3600

    def expand(self, inputs):
        shards, batch = self._shards, self._batch
        sessions = inputs["sessions"] | "Sessions" >> UpsertSessions(
            allowed_lateness_seconds=self._lateness, early_firing_seconds=self._early, shards=shards,
            batch_seconds=batch)
        users = inputs["users"] | "Users" >> ShardedUpsert(UpsertUsersFn(self._keep), shards, batch)
        responses = ((inputs[RESPONSE_JOIN.child], sessions[CONTEXT])
                     | "ResponsesToEvents" >> JoinToParent(RESPONSE_JOIN, self._keep, ACTIVITY_JOIN, shards, batch))
        activities = ((inputs[ACTIVITY_JOIN.child], responses[CONTEXT])
                      | "ActivitiesToResponses" >> JoinToParent(ACTIVITY_JOIN, self._keep, None, shards, batch))
        return ((sessions[SILVER_ROWS], users, responses[SILVER_ROWS], activities[SILVER_ROWS])
                | "AllSilver" >> beam.Flatten())
