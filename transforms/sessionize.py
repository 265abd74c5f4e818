"""Streaming silver for sessions and their views, clicks and events.

``SessionizeEvents`` takes bronze rows (timestamped by ingest time) and:

1. gives each its event time, the record's own time (bounded skew: a time
   ahead of ingest counts as ingest time; a record more than the allowed
   lateness behind ingest goes to ``too_late`` and is counted -- it is in raw
   and bronze, and the daily batch picks it up);
2. groups them in event-time session windows per ``session_id`` (30-minute
   gap), firing on time and again for every late record within the allowed
   lateness (default 2 days); with ``early_firing_seconds`` also early, that
   often in processing time, so a live session reaches silver within seconds
   instead of 30 minutes after its last record;
3. upserts each session in state, deduplicating every identity with the very
   ``CombineFn`` the batch dedup uses, and emits the current silver rows of
   the session (``silver_sessions`` and its views, clicks and events joined to
   it) through the same ``resolve_session`` as the batch. A late record, a
   late-merged window or a session record arriving after its views therefore
   *updates* the rows, and the result equals the batch's for the same input.

Every emitted row carries ``_version`` (per session, increasing) so a sink can
keep the newest row per key.
"""
from __future__ import annotations

import typing

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger, window
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.utils.timestamp import Duration, Timestamp

from schemas.contract import RECORD_TYPES
from schemas.tables import BRONZE
from transforms.dedup import combine_fn_for, extra_copies_counter
from transforms.silver import resolve_session

SESSION_GAP_SECONDS = 30 * 60
ALLOWED_LATENESS_SECONDS = 2 * 24 * 3600
KINDS = ("session", "view", "click", "event")
_CHILD_TABLE = {"view": "silver_views", "click": "silver_clicks", "event": "silver_events"}
TOO_LATE = "too_late"


def _own_time(kind: str, row: dict) -> int:
    return row[RECORD_TYPES[kind].event_time[0]]


class AssignEventTimeFn(beam.DoFn):
    """(kind, bronze row) at ingest time -> the same at the record's own time."""

    def __init__(self, allowed_lateness_seconds: int):
        self._lateness = allowed_lateness_seconds * 1_000_000
        self._late = Metrics.counter("funnel", "late_beyond_allowed_lateness")

    def process(self, element, ingest=beam.DoFn.TimestampParam):
        kind, row = element
        ingest_micros = ingest.micros
        event = min(_own_time(kind, row), ingest_micros)
        if ingest_micros - event > self._lateness:
            self._late.inc()
            yield beam.pvalue.TaggedOutput(TOO_LATE, element)
        else:
            yield window.TimestampedValue(element, Timestamp(micros=event))


class UpsertSessionFn(beam.DoFn):
    """Per session: every identity's dedup accumulator, and the last output."""

    RECORDS = ReadModifyWriteStateSpec("records", PickleCoder())
    VERSION = ReadModifyWriteStateSpec("version", PickleCoder())
    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)

    def __init__(self, expiry_seconds: int):
        self._expiry = expiry_seconds
        self._fns = {kind: combine_fn_for(kind, BRONZE[RECORD_TYPES[kind].bronze_table]) for kind in KINDS}
        self._duplicates = {k: extra_copies_counter(k) for k in KINDS}
        self._updates = Metrics.counter("funnel", "stream_session_updates")

    def process(self, keyed, records=beam.DoFn.StateParam(RECORDS), version=beam.DoFn.StateParam(VERSION),
                expiry=beam.DoFn.TimerParam(EXPIRY), pane_end=beam.DoFn.TimestampParam):
        session_id, elements = keyed
        elements = list(elements)
        if not elements:  # an on-time pane after early ones that brought everything
            return
        accumulators = records.read() or {}
        for kind, row in elements:
            identity = (kind, row[RECORD_TYPES[kind].key])
            fn = self._fns[kind]
            if identity in accumulators:
                self._duplicates[kind].inc()
            accumulators[identity] = fn.add_input(accumulators.get(identity) or fn.create_accumulator(), row)
        records.write(accumulators)
        current, expires = version.read() or (0, Timestamp(0))
        # State lives until no window of the session can fire again: the
        # pane's timestamp is the end of its session window.
        expires = max(expires, pane_end + Duration(seconds=self._expiry))
        version.write((current + 1, expires))
        expiry.set(expires)
        self._updates.inc()
        yield from self._rows(session_id, accumulators, current + 1)

    def _rows(self, session_id, accumulators, current):
        winners = {kind: [] for kind in KINDS}
        for (kind, _), acc in accumulators.items():
            row, copies, _ = self._fns[kind].extract_output(acc)
            winners[kind].append({**row, "copies": copies})
        session = resolve_session(session_id, winners["session"][0] if winners["session"] else None,
                                  {kind: winners[kind] for kind in _CHILD_TABLE})
        yield beam.pvalue.TaggedOutput("silver_sessions", {**session, "_version": current})
        context = {"session_id": session_id, "user_id": session["user_id"], "platform": session["platform"],
                   "_version": current}
        for kind, table in _CHILD_TABLE.items():
            for child in winners[kind]:
                yield beam.pvalue.TaggedOutput(table, {**child, **context})

    @on_timer(EXPIRY)
    def expire(self, records=beam.DoFn.StateParam(RECORDS), version=beam.DoFn.StateParam(VERSION)):
        records.clear()
        version.clear()


class SessionizeEvents(beam.PTransform):
    """``(kind, bronze row)`` for kinds session/view/click/event, timestamped by
    ingest time -> ``{silver_sessions, silver_views, silver_clicks,
    silver_events, too_late}``."""

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
        timed = records | "AssignEventTime" >> beam.ParDo(AssignEventTimeFn(self._lateness)).with_outputs(
            TOO_LATE, main="on_time")
        upserts = (
            timed.on_time
            # String keys: a deterministic key coder for the state downstream.
            | "KeyBySession" >> beam.Map(lambda kr: (kr[1]["session_id"], kr)).with_output_types(
                typing.Tuple[str, typing.Any])
            | "SessionWindows" >> beam.WindowInto(
                window.Sessions(self._gap), trigger=self._trigger, allowed_lateness=Duration(seconds=self._lateness),
                # Discarding: each firing brings only what arrived since the
                # last one; the upsert state holds the whole session.
                accumulation_mode=trigger.AccumulationMode.DISCARDING)
            | "GroupSessionPane" >> beam.GroupByKey()
            | "ToGlobalWindow" >> beam.WindowInto(window.GlobalWindows())
            | "UpsertSession" >> beam.ParDo(UpsertSessionFn(self._gap + self._lateness)).with_outputs(
                "silver_sessions", *_CHILD_TABLE.values()))
        return {"silver_sessions": upserts.silver_sessions,
                **{table: upserts[table] for table in _CHILD_TABLE.values()},
                TOO_LATE: timed[TOO_LATE]}
