"""Bronze -> silver (Beam), the rebuild from all of bronze: ``BuildSilver``.

Four shuffles of Arrow shards -- by identity (dedup), by session (resolve
sessions, attach their children), by event (attach responses), by response
(attach activities) -- each applying the rules of ``transforms.rules.dedup``
and ``transforms.rules.silver`` to one shard at a time.
"""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa

from schemas.contract import RECORD_TYPES
from transforms import metrics
from transforms.batch.shuffle import ShardedShuffle
from transforms.metrics import DedupCounters
from transforms.rules.arrow import count_true, key_column
from transforms.rules.dedup import dedup_table
from transforms.rules.silver import (
    ACTIVITY_JOIN,
    RESPONSE_JOIN,
    SESSION_CHILDREN,
    ParentJoin,
    attach_parent,
    merged_session_schema,
    resolve_sessions,
    shuffled_columns,
    silver_table,
    winner_schema,
)

_CONTEXT = "context"  # tag of a parent's context rows in the response and activity shuffles


class DedupShardFn(beam.DoFn):
    """A shard of bronze rows by identity -> ``silver_users`` (done), and the
    current rows of every other type, tagged for the shuffle that joins them."""

    def __init__(self):
        self._counters = DedupCounters()

    def process(self, keyed):
        _, by_table = keyed
        for rt in RECORD_TYPES.values():
            rows = by_table.get(rt.bronze_table)
            if rows is None:
                continue
            winners, counts = dedup_table(rt.name, rows)
            self._counters.count(rt.name, counts)
            if rt.name == "user":
                yield (
                    rt.silver_table,
                    silver_table(rt.silver_table, {c: winners.column(c) for c in winners.column_names}),
                )
            else:
                yield beam.pvalue.TaggedOutput(_next_shuffle(rt.name), (rt.name, winners))


def _next_shuffle(record_type: str) -> str:
    if record_type == "session" or any(j.child == record_type for j in SESSION_CHILDREN):
        return "by_session"
    return "by_event" if record_type == RESPONSE_JOIN.child else "by_response"


class SessionJoinFn(beam.DoFn):
    """A shard of sessions and their children -> silver_sessions and the
    children's silver rows; the events' context goes on to the responses."""

    def __init__(self):
        self._inferred = metrics.counter("sessions_inferred_without_record")

    def process(self, keyed):
        _, by_kind = keyed
        sessions = by_kind.get("session")
        if sessions is None:
            sessions = merged_session_schema().empty_table()
        children = {j.child: by_kind.get(j.child, winner_schema(j.child).empty_table()) for j in SESSION_CHILDREN}
        silver_sessions = resolve_sessions(sessions, children)
        metrics.add(self._inferred, silver_sessions.num_rows - count_true(silver_sessions.column("has_session_record")))
        yield "silver_sessions", silver_sessions
        for join in SESSION_CHILDREN:
            silver_rows, _ = attach_parent(children[join.child], silver_sessions, join)
            yield join.table, silver_rows
            if join.child == RESPONSE_JOIN.parent:
                yield beam.pvalue.TaggedOutput(
                    "by_event", (_CONTEXT, silver_rows.select([RESPONSE_JOIN.key, *RESPONSE_JOIN.context]))
                )


class AttachParentShardFn(beam.DoFn):
    """A shard of children and their parents' context -> the children's silver
    rows (and, for responses, their context for the activities)."""

    def __init__(self, join: ParentJoin, pass_on: ParentJoin | None = None):
        self._join, self._pass_on = join, pass_on
        self._orphans = metrics.counter(join.orphan_counter)

    def process(self, keyed):
        _, by_tag = keyed
        join = self._join
        children = by_tag.get(join.child)
        if children is None:
            return
        parents = by_tag.get(_CONTEXT)
        if parents is None:
            parents = pa.table({c: pa.array([], pa.string()) for c in (join.key, *join.context)})
        silver_rows, orphans = attach_parent(children, parents, join)
        metrics.add(self._orphans, orphans)
        yield join.table, silver_rows
        if self._pass_on is not None:
            yield beam.pvalue.TaggedOutput(
                "context", (_CONTEXT, silver_rows.select([self._pass_on.key, *self._pass_on.context]))
            )


class BuildSilver(beam.PTransform):
    """``(bronze table name, Arrow rows)`` -> ``(silver table name, Arrow rows)``,
    as a tuple of PCollections (one per step that produces silver rows: so
    each can be written where it is produced, see ``ShardedShuffle``).
    Takes one PCollection of bronze or several. ``shards``: how many parts
    each shuffle splits the rows into (a shard is what one call of a step
    holds in memory)."""

    def __init__(self, shards: int):
        super().__init__()
        self._shards = shards

    def expand(self, bronze):
        shards = self._shards
        deduped = (
            bronze
            | "ByIdentity"
            >> ShardedShuffle(
                {rt.bronze_table: key_column(rt.key) for rt in RECORD_TYPES.values()},
                shards,
                {rt.bronze_table: shuffled_columns(rt.name) for rt in RECORD_TYPES.values()},
            )
            | "Dedup" >> beam.ParDo(DedupShardFn()).with_outputs("by_session", "by_event", "by_response", main="silver")
        )
        by_session = (
            deduped.by_session
            | "BySession"
            >> ShardedShuffle(
                {"session": key_column("session_id"), **{j.child: key_column("session_id") for j in SESSION_CHILDREN}},
                shards,
            )
            | "ResolveSessions" >> beam.ParDo(SessionJoinFn()).with_outputs("by_event", main="silver")
        )
        by_event = (
            (deduped.by_event, by_session.by_event)
            | "ByEvent"
            >> ShardedShuffle(
                {RESPONSE_JOIN.child: key_column(RESPONSE_JOIN.key), _CONTEXT: key_column(RESPONSE_JOIN.key)}, shards
            )
            | "AttachResponses"
            >> beam.ParDo(AttachParentShardFn(RESPONSE_JOIN, ACTIVITY_JOIN)).with_outputs("context", main="silver")
        )
        by_response = (
            (deduped.by_response, by_event.context)
            | "ByResponse"
            >> ShardedShuffle(
                {ACTIVITY_JOIN.child: key_column(ACTIVITY_JOIN.key), _CONTEXT: key_column(ACTIVITY_JOIN.key)}, shards
            )
            | "AttachActivities" >> beam.ParDo(AttachParentShardFn(ACTIVITY_JOIN))
        )
        return deduped.silver, by_session.silver, by_event.silver, by_response
