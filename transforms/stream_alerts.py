"""Operational alerts as records arrive: the rules of ``transforms.alerts``
applied to streaming silver's rows.

Both kept in ``AlertStateFn``, per shard of payment event ids:

* ``email_failed``: raised the first time a response's current row has a
  failed or bounced status (silver re-emits a row when it changes, e.g.
  failed -> bounced: the state remembers which responses were alerted);
* ``confirmation_missing``: each payment's time and its earliest
  sent/delivered email confirmation, and an **event-time timer** at the
  earliest undecided deadline (payment + 30 minutes; rounded up to the
  minute, so one firing decides nearby deadlines together). When the watermark passes a deadline the
  payment is decided: an alert if no confirmation was sent by then,
  nothing otherwise. A decided payment is never decided again, so a late
  confirmation (or a redelivered payment) within the allowed lateness does
  not raise or retract anything; the entry is dropped ``keep_seconds``
  after its deadline.

``StreamingAlerts`` is the composite (routing, a processing-time batch per
shard, the state); ``PublishAlertsFn`` sends each alert to a Pub/Sub topic.
Not built yet (issue 12): ``email_failure_rate`` windows.
"""
from __future__ import annotations

import pickle

import apache_beam as beam
import orjson
from apache_beam.coders import BytesCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from transforms import alerts, metrics
from transforms.lake_io import batched
from transforms.stream_silver import SHARD_GROUP, Rows, _pack, shard_of

PAYMENT, CONFIRMED, FAILED = "payment", "confirmed", "failed"
TIMER_STEP_MICROS = 60 * 1_000_000  # deadlines are decided at most a minute (event time) after they pass


def _read(state) -> dict:
    blob = state.read()
    return pickle.loads(blob) if blob else {}


class AlertInputsFn(beam.DoFn):
    """``(silver table, rows)`` -> ``(shard, Rows([(event_id, (kind,
    value))]))`` for ``AlertStateFn``: payments at their time, sent/delivered
    email confirmations at their ``sent_at``, failed ones as ``(response_id,
    status, time)``."""

    def __init__(self, shards: int):
        self._shards = shards

    def process(self, tagged):
        table, rows = tagged
        by_shard = {}
        if table == "silver_events":
            for row in rows:
                if row["event_type"] == "payment_successful" and row["timestamp"] is not None:
                    by_shard.setdefault(shard_of(row["event_id"], self._shards), Rows()).append(
                        (row["event_id"], (PAYMENT, row["timestamp"])))
        elif table == "silver_event_responses":
            for row in rows:
                if row["response_type"] != alerts.EMAIL_CONFIRMATION or row["sent_at"] is None:
                    continue
                if row["status"] in alerts.FAILED:
                    value = (FAILED, (row["response_id"], row["status"], row["sent_at"]))
                elif row["status"] in alerts.DELIVERED:
                    value = (CONFIRMED, row["sent_at"])
                else:
                    continue
                by_shard.setdefault(shard_of(row["event_id"], self._shards), Rows()).append((row["event_id"], value))
        yield from by_shard.items()


def _deadline(entry: dict) -> int | None:
    return None if entry["paid_at"] is None else entry["paid_at"] + alerts.DEADLINE_MICROS


def _expires(entry: dict, keep_micros: int) -> int:
    times = [t for t in (_deadline(entry), entry["confirmed_at"], entry["failed_at"]) if t is not None]
    return max(times) + keep_micros


class AlertStateFn(beam.DoFn):
    """``(shard, [Rows of (event_id, (kind, value))])`` -> ``Rows`` of alerts:
    ``email_failed`` as a failed response is first seen,
    ``confirmation_missing`` when the watermark passes a payment's deadline
    (see the module docstring). State per shard: one pickled ``{event_id:
    entry}`` value; one timer, at the earliest undecided deadline or expiry
    rounded up to ``TIMER_STEP_MICROS``."""

    # One value, not a bag: a write is one state operation (the SDK harness
    # weighs each at ~0.7 ms, BENCHMARKS.md), and a timer firing writes once.
    ENTRIES = ReadModifyWriteStateSpec("entries", BytesCoder())
    TIMER = TimerSpec("deadline", TimeDomain.WATERMARK)

    def __init__(self, keep_seconds: int):
        self._keep = keep_seconds * 1_000_000
        self._missing = metrics.counter("alerts_confirmation_missing")
        self._failed = metrics.counter("alerts_email_failed")

    def process(self, keyed, state=beam.DoFn.StateParam(ENTRIES), timer=beam.DoFn.TimerParam(TIMER)):
        _, lists = keyed
        entries = _read(state)
        raised = Rows()
        for items in lists:
            for event_id, (kind, value) in items:
                entry = entries.setdefault(event_id, {"paid_at": None, "confirmed_at": None, "decided": False,
                                                      "failed": frozenset(), "failed_at": None})
                if kind == FAILED:
                    response_id, status, at = value
                    if response_id not in entry["failed"]:
                        entry["failed"] = entry["failed"] | {response_id}
                        entry["failed_at"] = at if entry["failed_at"] is None else max(entry["failed_at"], at)
                        raised.append(alerts.email_failed(response_id, event_id, status, at))
                    continue
                field = "paid_at" if kind == PAYMENT else "confirmed_at"
                entry[field] = value if entry[field] is None else min(entry[field], value)
        self._store(entries, state, timer)
        if raised:
            metrics.add(self._failed, len(raised))
            yield raised

    @on_timer(TIMER)
    def decide(self, state=beam.DoFn.StateParam(ENTRIES), timer=beam.DoFn.TimerParam(TIMER),
               now=beam.DoFn.TimestampParam):
        entries = _read(state)
        raised = Rows()
        for event_id, entry in entries.items():
            deadline = _deadline(entry)
            if entry["decided"] or deadline is None or deadline > now.micros:
                continue
            entry["decided"] = True
            if entry["confirmed_at"] is None or entry["confirmed_at"] > deadline:
                raised.append(alerts.confirmation_missing(event_id, entry["paid_at"]))
                metrics.add(self._missing, 1)
        live = {k: e for k, e in entries.items() if _expires(e, self._keep) > now.micros}
        self._store(live, state, timer)
        if raised:
            yield raised

    def _store(self, entries: dict, state, timer) -> None:
        if not entries:
            state.clear()
            return
        state.write(_pack(entries))
        due = [_deadline(e) for e in entries.values() if not e["decided"] and _deadline(e) is not None]
        due += [_expires(e, self._keep) for e in entries.values()]
        # Deadlines within a TIMER_STEP are decided by one firing (a firing reads and writes the shard's state).
        timer.set(Timestamp(micros=-(-min(due) // TIMER_STEP_MICROS) * TIMER_STEP_MICROS))


class StreamingAlerts(beam.PTransform):
    """Streaming silver's ``(table, rows)`` -> ``Rows`` of alerts (dicts of
    ``ops_alerts`` columns), each raised once. The state step runs once per
    ``batch_seconds`` of processing time per shard (``None``: at the end of
    bounded input); a decided payment is kept ``keep_seconds`` past its
    deadline."""

    def __init__(self, shards: int, batch_seconds: int | None, keep_seconds: int):
        super().__init__()
        self._shards, self._batch, self._keep = shards, batch_seconds, keep_seconds

    def expand(self, silver):
        routed = silver | "Route" >> beam.ParDo(AlertInputsFn(self._shards)).with_output_types(SHARD_GROUP)
        return (batched(routed, self._batch, SHARD_GROUP)
                | "GroupShard" >> beam.GroupByKey()
                | "Raise" >> beam.ParDo(AlertStateFn(self._keep)))


def alert_message(alert: dict) -> bytes:
    """An alert as the alerts topic carries it: JSON, times in ISO 8601 UTC."""
    return orjson.dumps({**alert, "detected_at": alerts.iso(alert["detected_at"])}, option=orjson.OPT_SORT_KEYS)


class PublishAlertsFn(beam.DoFn):
    """``Rows`` of alerts -> messages on ``topic`` (attributes ``alert_id``,
    ``alert_type``: a subscriber can filter, and drop a redelivery)."""

    def __init__(self, topic: str):
        self._topic = topic
        self._published = metrics.counter("alerts_published")

    def setup(self):
        from google.cloud import pubsub_v1
        self._publisher = pubsub_v1.PublisherClient()

    def start_bundle(self):
        self._pending = []

    def process(self, rows):
        for alert in rows:
            self._pending.append(self._publisher.publish(self._topic, alert_message(alert), alert_id=alert["alert_id"],
                                                         alert_type=alert["alert_type"]))

    def finish_bundle(self):
        for future in self._pending:
            future.result(timeout=120)  # a failed publish fails the bundle: Beam retries it
        metrics.add(self._published, len(self._pending))
        self._pending = []
