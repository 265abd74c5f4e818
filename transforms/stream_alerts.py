"""Operational alerts as records arrive: the rules of ``transforms.alerts``
applied to streaming silver's rows.

* ``email_failed``: raised from a response's current row when its status is
  failed or bounced (no state: ``alert_id`` is stable, so a sink keeps one
  row per alert however often the row is re-emitted).
* ``confirmation_missing``: ``ConfirmationDeadlineFn`` keeps, per shard of
  payment event ids, each payment's time and its earliest sent/delivered
  email confirmation, and an **event-time timer** at the earliest undecided
  deadline (payment + 30 minutes). When the watermark passes a deadline the
  payment is decided: an alert if no confirmation was sent by then,
  nothing otherwise. A decided payment is never decided again, so a late
  confirmation (or a redelivered payment) within the allowed lateness does
  not raise or retract anything; the entry is dropped ``keep_seconds``
  after its deadline.

Not built yet (issue 12): ``email_failure_rate`` windows, and wiring into
``stream_ingest`` (alerts topic, lake and BigQuery sinks).
"""
from __future__ import annotations

import apache_beam as beam
from apache_beam.coders import BytesCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from transforms import alerts, metrics
from transforms.stream_silver import Rows, _entries, _pack, shard_of

PAYMENT, CONFIRMED = "payment", "confirmed"
DEADLINES = "deadlines"


class AlertInputsFn(beam.DoFn):
    """``(silver table, rows)`` -> ``email_failed`` alerts (main, as
    ``Rows``) and, tagged ``DEADLINES``, ``(shard, Rows([(event_id, (kind,
    micros))]))`` for ``ConfirmationDeadlineFn``: payments at their time,
    sent/delivered email confirmations at their ``sent_at``."""

    def __init__(self, shards: int):
        self._shards = shards
        self._failed = metrics.counter("alerts_email_failed")

    def process(self, tagged):
        table, rows = tagged
        by_shard, raised = {}, Rows()
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
                    raised.append(alerts.email_failed(row["response_id"], row["event_id"], row["status"],
                                                      row["sent_at"]))
                elif row["status"] in alerts.DELIVERED and row["event_id"] is not None:
                    by_shard.setdefault(shard_of(row["event_id"], self._shards), Rows()).append(
                        (row["event_id"], (CONFIRMED, row["sent_at"])))
        if raised:
            metrics.add(self._failed, len(raised))
            yield raised
        for shard, items in by_shard.items():
            yield beam.pvalue.TaggedOutput(DEADLINES, (shard, items))


def _deadline(entry: dict) -> int | None:
    return None if entry["paid_at"] is None else entry["paid_at"] + alerts.DEADLINE_MICROS


def _expires(entry: dict, keep_micros: int) -> int:
    times = [t for t in (_deadline(entry), entry["confirmed_at"]) if t is not None]
    return max(times) + keep_micros


class ConfirmationDeadlineFn(beam.DoFn):
    """``(shard, [Rows of (event_id, (kind, micros))])`` -> ``Rows`` of
    ``confirmation_missing`` alerts, when the watermark passes each
    payment's deadline (see the module docstring). State per shard: one
    pickled ``{event_id: entry}`` blob; one timer, at the earliest undecided
    deadline or expiry."""

    ENTRIES = BagStateSpec("entries", BytesCoder())
    TIMER = TimerSpec("deadline", TimeDomain.WATERMARK)

    def __init__(self, keep_seconds: int):
        self._keep = keep_seconds * 1_000_000
        self._raised = metrics.counter("alerts_confirmation_missing")

    def process(self, keyed, state=beam.DoFn.StateParam(ENTRIES), timer=beam.DoFn.TimerParam(TIMER)):
        _, lists = keyed
        entries = _entries(list(state.read()))
        for items in lists:
            for event_id, (kind, at) in items:
                entry = entries.setdefault(event_id, {"paid_at": None, "confirmed_at": None, "decided": False})
                field = "paid_at" if kind == PAYMENT else "confirmed_at"
                entry[field] = at if entry[field] is None else min(entry[field], at)
        self._store(entries, state, timer)
        return []

    @on_timer(TIMER)
    def decide(self, state=beam.DoFn.StateParam(ENTRIES), timer=beam.DoFn.TimerParam(TIMER),
               now=beam.DoFn.TimestampParam):
        entries = _entries(list(state.read()))
        raised = Rows()
        for event_id, entry in entries.items():
            deadline = _deadline(entry)
            if entry["decided"] or deadline is None or deadline > now.micros:
                continue
            entry["decided"] = True
            if entry["confirmed_at"] is None or entry["confirmed_at"] > deadline:
                raised.append(alerts.confirmation_missing(event_id, entry["paid_at"]))
        live = {k: e for k, e in entries.items() if _expires(e, self._keep) > now.micros}
        self._store(live, state, timer)
        if raised:
            metrics.add(self._raised, len(raised))
            yield raised

    def _store(self, entries: dict, state, timer) -> None:
        state.clear()
        if not entries:
            return
        state.add(_pack(entries))
        due = [_deadline(e) for e in entries.values() if not e["decided"] and _deadline(e) is not None]
        due += [_expires(e, self._keep) for e in entries.values()]
        timer.set(Timestamp(micros=min(due)))
