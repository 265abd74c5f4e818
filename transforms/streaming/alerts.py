"""Operational alerts as records arrive: the rules of ``transforms.rules.alerts``
applied to the silver rows each of the stream's merges changes, each alert
raised once.

The state is keyed two ways (the first part of the key):

* ``(PAYMENT_SHARDS, shard)``, a shard of payment event ids (``PaymentBook``):
  ``email_failed`` the first time a response's current row is failed or
  bounced (silver re-emits a row when it changes, e.g. failed -> bounced: the
  book remembers which responses were alerted), and per payment its time
  and its earliest sent/delivered email confirmation, decided at its
  deadline (payment + 30 minutes): ``confirmation_missing`` unless a
  confirmation was sent by then;
* ``(FAILURE_WINDOWS, window start)``, one 15-minute window of email
  confirmations (``WindowBook``): each response's latest outcome, decided
  at the window's end: ``email_failure_rate`` when the rule holds. A key
  per window keeps each state value to one window's responses.

**When an item is decided.** An event-time timer fires at the earliest
undecided due time (rounded up to the minute, so one firing decides nearby
deadlines together). The watermark can run ahead of the data, though: a
backlog replayed after an outage, a publisher sending late; and always on
the local runner, whose Pub/Sub watermark is the wall clock. So an item is
decided once the watermark has passed its due time **and** it has waited
``grace_seconds`` of processing time since it arrived (a processing-time
timer), long enough for what was published with it (its confirmation, its
window's other responses) to arrive. With in-order data the grace costs
nothing: it has long passed when the watermark gets there.

A decided item is never decided again, so a late confirmation or response
(or a redelivery) within the allowed lateness neither raises nor retracts
an alert; the item is dropped ``keep_seconds`` after its due time, by a
timer on the next whole day (one firing forgets a day's items: a firing
costs a state read and write).

* ``(STREAM_HEALTH, 0)``, the stream's own health (``HealthBook``): records
  received per platform and receipt-time window, judged on a
  processing-time timer (``transforms.rules.stream_health``): a stalled
  stream or a platform gone silent is a ``data_quality`` alert, and a
  failed row of ``ops/dq_results`` (output ``QUALITY_ROWS``).

``StreamingAlerts`` is the composite (routing, a processing-time batch per
key, the state); ``PublishAlertsFn`` sends each alert to a Pub/Sub topic.
"""

from __future__ import annotations

import hashlib
import math
import pickle
import time
from dataclasses import dataclass

import apache_beam as beam
import orjson
from apache_beam.coders import BytesCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.typehints import typehints
from apache_beam.utils.timestamp import Timestamp

from schemas import contract
from schemas.quality import StreamFreshness, StreamVolume
from schemas.tables import BRONZE, OPS_ALERTS_STREAM, RAW
from schemas.vocabulary import EventType
from transforms import metrics
from transforms.rules import alerts
from transforms.rules.arrow import shard_of_key
from transforms.rules.stream_health import StreamHealth
from transforms.sinks.dead_letter import SinkDeadLetter
from transforms.sinks.retry import RETRY_DEADLINE_SECONDS, sink_retry
from transforms.streaming.sinks import Rows, batched, pack

SHARDS = 64  # of the payments' state
ALLOWED_LATENESS_SECONDS = 2 * 24 * 3600  # a decided item is remembered this long past its due time
# The first part of an alert state key: what the second part numbers.
PAYMENT_SHARDS, FAILURE_WINDOWS, STREAM_HEALTH = 0, 1, 2
QUALITY_ROWS = "dq_results"  # StreamingAlerts' second output: the health checks' failed results
ALERT_GROUP = typehints.KV[typehints.Tuple[int, int], typehints.Any]
# What an item routed to the state says: (id, (kind, value)).
PAYMENT, CONFIRMED, FAILED, OUTCOME = "payment", "confirmed", "failed", "outcome"
TIMER_STEP_MICROS = 60 * 1_000_000  # items are decided at most a minute (event time) after they are due
ALERT_GRACE_SECONDS = 120  # stream_ingest's default grace (see the module docstring)
EXPIRY_STEP_MICROS = 24 * 3600 * 1_000_000  # forgetting waits for the day: one firing drops a day of items
HOLD_STEP_SECONDS = 10  # the grace ends on a 10-second tick: one firing for nearby arrivals


class AlertInputsFn(beam.DoFn):
    """``(silver table, rows)`` -> ``(key, Rows([(id, (kind, value))]))``
    for ``AlertStateFn``. To the payment's shard: payments at their time,
    sent/delivered email confirmations at their ``sent_at``, failed ones as
    ``(response_id, status, time)``. To the confirmation's failure window:
    each email confirmation with an outcome as ``(response_id, (OUTCOME,
    (window start, failed?)))``."""

    def __init__(self, shards: int):
        self._shards = shards

    def process(self, tagged):
        table, rows = tagged
        by_key = {}

        def route(key, item):
            by_key.setdefault(key, Rows()).append(item)

        if table == "silver_events":
            for row in rows:
                if row["event_type"] == EventType.PAYMENT_SUCCESSFUL and row["timestamp"] is not None:
                    route(
                        (PAYMENT_SHARDS, shard_of_key(row["event_id"], self._shards)),
                        (row["event_id"], (PAYMENT, row["timestamp"])),
                    )
        elif table == "silver_event_responses":
            for row in rows:
                if row["response_type"] != alerts.EMAIL_CONFIRMATION or row["sent_at"] is None:
                    continue
                failed = row["status"] in alerts.FAILED
                if failed:
                    value = (FAILED, (row["response_id"], row["status"], row["sent_at"]))
                elif row["status"] in alerts.DELIVERED:
                    value = (CONFIRMED, row["sent_at"])
                else:
                    continue  # queued: no outcome yet
                route((PAYMENT_SHARDS, shard_of_key(row["event_id"], self._shards)), (row["event_id"], value))
                start = alerts.window_start(row["sent_at"])
                route((FAILURE_WINDOWS, start), (row["response_id"], (OUTCOME, (start, failed))))
        yield from by_key.items()


class HealthInputsFn(beam.DoFn):
    """A batch of lake rows ``(table name, lists of value tuples)`` -> for
    bronze tables, ``((STREAM_HEALTH, 0), Rows([(platform, (newest
    ingested_at, records))]))`` per platform and receipt window."""

    def __init__(self, window_seconds: int):
        self._window = window_seconds * 1_000_000

    def process(self, batch):
        name, lists = batch
        if name not in BRONZE:
            return
        names = BRONZE[name].column_names
        at_platform, at_ingest = names.index("platform"), names.index("ingested_at")
        received: dict = {}
        for rows in lists:
            for values in rows:
                platform, ingested = values[at_platform], values[at_ingest]
                key = (platform, ingested // self._window)
                newest, n = received.get(key, (ingested, 0))
                received[key] = (max(newest, ingested), n + 1)
        if received:
            yield (STREAM_HEALTH, 0), Rows((p, value) for (p, _), value in received.items())


def _round_up(micros: int, step: int) -> int:
    return -(-micros // step) * step


class _Book:
    """Items decided once each (see the module docstring), as one state
    value: ``{"items": {id: item}, "watermark": latest event-time firing}``.
    An item is a dict with ``arrived`` (wall-clock seconds) and ``decided``;
    subclasses say when it is due, when it can be forgotten and what it
    raises."""

    def __init__(self, blob: bytes | None, keep_micros: int, grace_seconds: float):
        saved = pickle.loads(blob) if blob else {}
        self.items: dict = saved.get("items", {})
        self.watermark: int | None = saved.get("watermark")
        self._keep, self._grace = keep_micros, grace_seconds

    def advance(self, watermark: int) -> None:
        self.watermark = watermark if self.watermark is None else max(self.watermark, watermark)

    def _reached(self, item) -> bool:
        due = self._due(item)
        return not item["decided"] and due is not None and self.watermark is not None and due <= self.watermark

    def decide(self, wall: float) -> list[dict]:
        """Alerts of the items the watermark has reached and the grace has
        passed for; forgets settled items past their keep."""
        raised = []
        for key, item in self.items.items():
            if self._reached(item) and (not self._grace or item["arrived"] + self._grace <= wall):
                item["decided"] = True
                alert = self._judge(key, item)
                if alert is not None:
                    raised.append(alert)
        if self.watermark is not None:
            self.items = {
                k: i
                for k, i in self.items.items()
                if not ((i["decided"] or self._due(i) is None) and self._expires(i) <= self.watermark)
            }
        return raised

    def event_timer(self) -> int | None:
        """Event time the watermark next matters at: the earliest due time
        not reached yet, or an expiry; on the minute."""
        times = [_round_up(self._expires(i), EXPIRY_STEP_MICROS) for i in self.items.values()]
        times += [
            _round_up(due, TIMER_STEP_MICROS)
            for i in self.items.values()
            if not i["decided"]
            and (due := self._due(i)) is not None
            and (self.watermark is None or due > self.watermark)
        ]
        return min(times) if times else None

    def hold_timer(self) -> float | None:
        """Wall-clock time the earliest reached item waits its grace out to."""
        held = [i["arrived"] + self._grace for i in self.items.values() if self._reached(i)]
        return math.ceil(min(held) / HOLD_STEP_SECONDS) * HOLD_STEP_SECONDS if held else None

    def blob(self) -> bytes | None:
        return pack({"items": self.items, "watermark": self.watermark}) if self.items else None

    def _due(self, item) -> int | None:
        raise NotImplementedError

    def _expires(self, item) -> int:
        raise NotImplementedError

    def _judge(self, key, item) -> dict | None:
        raise NotImplementedError


class PaymentBook(_Book):
    """A shard's payments by event id: ``paid_at``, ``confirmed_at`` (earliest
    sent/delivered ``sent_at``), the failed responses already alerted."""

    def add(self, items, wall: float) -> list[dict]:
        """Records one batch of routed items; returns the ``email_failed`` alerts they raise."""
        raised = []
        for event_id, (kind, value) in items:
            entry = self.items.get(event_id)
            if entry is None:
                entry = self.items[event_id] = {
                    "paid_at": None,
                    "confirmed_at": None,
                    "failed": frozenset(),
                    "failed_at": None,
                    "arrived": wall,
                    "decided": False,
                }
            if kind == FAILED:
                response_id, status, at = value
                if response_id not in entry["failed"]:
                    entry["failed"] = entry["failed"] | {response_id}
                    entry["failed_at"] = at if entry["failed_at"] is None else max(entry["failed_at"], at)
                    raised.append(alerts.email_failed(response_id, event_id, status, at))
            elif kind == PAYMENT:
                if entry["paid_at"] is None:
                    entry["arrived"] = wall  # the grace counts from the payment's arrival
                entry["paid_at"] = value if entry["paid_at"] is None else min(entry["paid_at"], value)
            else:
                entry["confirmed_at"] = value if entry["confirmed_at"] is None else min(entry["confirmed_at"], value)
        return raised

    def _due(self, entry) -> int | None:
        return None if entry["paid_at"] is None else entry["paid_at"] + alerts.DEADLINE_MICROS

    def _expires(self, entry) -> int:
        return (
            max(t for t in (self._due(entry), entry["confirmed_at"], entry["failed_at"]) if t is not None) + self._keep
        )

    def _judge(self, event_id, entry) -> dict | None:
        if entry["confirmed_at"] is None or entry["confirmed_at"] > self._due(entry):
            return alerts.confirmation_missing(event_id, entry["paid_at"])
        return None


class WindowBook(_Book):
    """A failure window's email confirmations: ``{response_id: failed?}``,
    the latest outcome of each (dropped once the window is decided)."""

    def add(self, items, wall: float) -> list[dict]:
        for response_id, (_, (start, failed)) in items:
            window = self.items.get(start)
            if window is None:
                window = self.items[start] = {"start": start, "outcomes": {}, "arrived": wall, "decided": False}
            if not window["decided"]:
                window["outcomes"][response_id] = failed
                window["arrived"] = wall  # the grace counts from the window's latest response
        return []

    def _due(self, window) -> int:
        return window["start"] + alerts.WINDOW_MICROS

    def _expires(self, window) -> int:
        return self._due(window) + self._keep

    def _judge(self, start, window) -> dict | None:
        outcomes, window["outcomes"] = window["outcomes"], {}
        confirmations, failed = len(outcomes), sum(outcomes.values())
        if alerts.failure_rate_breached(confirmations, failed):
            return alerts.email_failure_rate(start, confirmations, failed)
        return None


@dataclass(frozen=True)
class HealthOptions:
    """The stream health checks as the job runs them: the declared checks
    (``schemas.tables.RAW``), a window judged once a record received
    ``settle_seconds`` after its end has reached the judge (records may
    arrive that far out of receipt order), results named by ``run_id``."""

    freshness: StreamFreshness
    volume: StreamVolume
    settle_seconds: float
    run_id: str

    @property
    def tick_seconds(self) -> float:
        """How often the judge looks, with nothing arriving."""
        return max(1.0, min(self.volume.window_seconds, self.freshness.max_silence_seconds) / 4)


class HealthBook:
    """The ``(STREAM_HEALTH, 0)`` key's state: one ``StreamHealth``, judged at
    every batch and every tick of a processing-time timer."""

    def __init__(self, blob: bytes | None, options: HealthOptions):
        self.options = options
        self.health: StreamHealth = (
            pickle.loads(blob)
            if blob
            else StreamHealth(RAW.name, options.freshness, options.volume, int(options.settle_seconds * 1e6))
        )
        self.quality_rows: list[dict] = []

    def add(self, items, wall: float) -> list[dict]:
        arrived = int(wall * 1_000_000)
        for platform, (newest, records) in items:
            self.health.received(platform, newest, records, arrived)
        return []

    def advance(self, watermark: int) -> None:
        pass  # receipt time, not event time

    def decide(self, wall: float) -> list[dict]:
        now = int(wall * 1_000_000)
        failed = self.health.judge(now)
        run_date = contract.micros_to_date(now)
        self.quality_rows += [r.row(self.options.run_id, "stream_ingest", now, run_date) for r in failed]
        return [r.alert(now) for r in failed]

    def event_timer(self) -> int | None:
        return None

    def hold_timer(self) -> float | None:
        tick = self.options.tick_seconds
        return math.ceil(time.time() / tick) * tick + tick

    def blob(self) -> bytes:
        return pickle.dumps(self.health)


BOOKS = {PAYMENT_SHARDS: PaymentBook, FAILURE_WINDOWS: WindowBook}


class AlertStateFn(beam.DoFn):
    """``((PAYMENT_SHARDS | FAILURE_WINDOWS, n), [Rows of routed items])`` -> ``Rows``
    of alerts, each raised once (see the module docstring). State per key:
    one pickled book; a watermark timer at its ``event_timer``, a
    processing-time timer at its ``hold_timer``."""

    # One value, not a bag: a write is one state operation (the SDK harness
    # weighs each at ~0.7 ms, BENCHMARKS.md), and a timer firing writes once.
    BOOK = ReadModifyWriteStateSpec("book", BytesCoder())
    DUE = TimerSpec("due", TimeDomain.WATERMARK)
    HOLD = TimerSpec("hold", TimeDomain.REAL_TIME)

    def __init__(self, keep_seconds: int, grace_seconds: float = 0, health: HealthOptions | None = None):
        self._keep, self._grace, self._health = keep_seconds * 1_000_000, grace_seconds, health
        self._raised = {t: metrics.counter(f"alerts_{t.value}") for t in alerts.AlertType}

    def _book(self, kind: int, blob: bytes | None):
        if kind == STREAM_HEALTH:
            return HealthBook(blob, self._health)
        return BOOKS[kind](blob, self._keep, self._grace)

    def process(
        self, keyed, state=beam.DoFn.StateParam(BOOK), due=beam.DoFn.TimerParam(DUE), hold=beam.DoFn.TimerParam(HOLD)
    ):
        (kind, _), lists = keyed
        book = self._book(kind, state.read())
        wall = time.time()
        raised = Rows()
        for items in lists:
            raised += book.add(items, wall)
        raised += book.decide(wall)  # what has waited its grace out (none without a watermark seen yet)
        yield from self._store(book, raised, state, due, hold)

    @on_timer(DUE)
    def on_due(
        self,
        key=beam.DoFn.KeyParam,
        state=beam.DoFn.StateParam(BOOK),
        due=beam.DoFn.TimerParam(DUE),
        hold=beam.DoFn.TimerParam(HOLD),
        now=beam.DoFn.TimestampParam,
    ):
        book = self._book(key[0], state.read())
        book.advance(now.micros)
        yield from self._store(book, Rows(book.decide(time.time())), state, due, hold)

    @on_timer(HOLD)
    def on_hold(
        self,
        key=beam.DoFn.KeyParam,
        state=beam.DoFn.StateParam(BOOK),
        due=beam.DoFn.TimerParam(DUE),
        hold=beam.DoFn.TimerParam(HOLD),
        fired=beam.DoFn.TimestampParam,
    ):
        book = self._book(key[0], state.read())
        # The firing time counts as now even when the runner's clock is not
        # the wall clock (TestStream's): the timer was set from arrival times.
        wall = max(time.time(), fired.micros / 1e6)
        yield from self._store(book, Rows(book.decide(wall)), state, due, hold)

    def _store(self, book: _Book | HealthBook, raised: Rows, state, due, hold):
        if isinstance(book, HealthBook) and book.quality_rows:
            yield beam.pvalue.TaggedOutput(QUALITY_ROWS, Rows(book.quality_rows))
        blob = book.blob()
        if blob is None:
            state.clear()
        else:
            state.write(blob)
            at = book.event_timer()
            if at is not None:
                due.set(Timestamp(micros=at))
            wait = book.hold_timer()
            if wait is not None:
                hold.set(Timestamp.of(wait))
        if raised:
            for alert in raised:
                self._raised[alerts.AlertType(alert["alert_type"])].inc()
            yield raised


class StreamingAlerts(beam.PTransform):
    """The merged silver rows ``(table, rows)`` -> ``Rows`` of alerts (dicts of
    ``ops_alerts`` columns), each raised once. The state step runs once per
    ``batch_seconds`` of processing time per key, and then holds due items
    ``grace_seconds``; with ``batch_seconds=None`` (bounded input: every
    record is in before a timer fires) it runs when the input ends, without
    grace. A decided item is kept ``keep_seconds`` past its due time.

    With ``health``, the input is ``(silver, lake batches)`` (the
    ``BatchEvery`` batches the lake is written from) and the output
    ``(alerts, dq_results rows)``: the stream's health is judged too
    (needs processing-time timers: a streaming runner)."""

    def __init__(
        self,
        shards: int,
        batch_seconds: int | None,
        keep_seconds: int,
        grace_seconds: float = 0,
        health: HealthOptions | None = None,
    ):
        super().__init__()
        self._shards, self._batch, self._keep = shards, batch_seconds, keep_seconds
        self._grace = grace_seconds if batch_seconds else 0
        self._health = health

    def expand(self, inputs):
        silver, lake_batches = inputs if self._health is not None else (inputs, None)
        routed = [silver | "Route" >> beam.ParDo(AlertInputsFn(self._shards)).with_output_types(ALERT_GROUP)]
        if lake_batches is not None:
            routed.append(
                lake_batches
                | "RouteHealth"
                >> beam.ParDo(HealthInputsFn(self._health.volume.window_seconds)).with_output_types(ALERT_GROUP)
            )
        raised = (
            batched(routed if len(routed) > 1 else routed[0], self._batch, ALERT_GROUP)
            | "GroupKey" >> beam.GroupByKey()
            | "Raise"
            >> beam.ParDo(AlertStateFn(self._keep, self._grace, self._health)).with_outputs(QUALITY_ROWS, main="alerts")
        )
        if self._health is None:
            return raised.alerts
        return raised.alerts, raised[QUALITY_ROWS]


def alert_message(alert: dict) -> bytes:
    """An alert as the alerts topic carries it: JSON, times in ISO 8601 UTC."""
    return orjson.dumps({**alert, "detected_at": alerts.iso(alert["detected_at"])}, option=orjson.OPT_SORT_KEYS)


class PublishAlertsFn(beam.DoFn):
    """``Rows`` of alerts -> messages on ``topic`` (attributes ``alert_id``,
    ``alert_type``: a subscriber can filter, and drop a redelivery).

    Transient errors (Pub/Sub unavailable, ...) are retried by the
    publisher's ``Retry`` (``transforms.sinks.dead_letter``); alerts whose publish
    still fails go to ``dead_letter`` (they are in the lake's ops_alerts
    either way), so the topic never stalls the job."""

    def __init__(
        self, topic: str, dead_letter: SinkDeadLetter | None = None, retry_deadline: float = RETRY_DEADLINE_SECONDS
    ):
        self._topic, self._dead_letter, self._deadline = topic, dead_letter, retry_deadline
        self._published = metrics.counter("alerts_published")
        self._retries = metrics.counter("pubsub_retries")
        self._dead = metrics.counter("sink_dead_lettered_alerts")

    def setup(self):
        from google.cloud import pubsub_v1

        self._publisher = pubsub_v1.PublisherClient()
        self._retry = sink_retry(self._retries, self._deadline)

    def start_bundle(self):
        self._pending = []

    def process(self, rows):
        for alert in rows:
            self._pending.append(
                (
                    alert,
                    self._publisher.publish(
                        self._topic,
                        alert_message(alert),
                        retry=self._retry,
                        alert_id=alert["alert_id"],
                        alert_type=alert["alert_type"],
                    ),
                )
            )

    def finish_bundle(self):
        pending, self._pending = self._pending, []
        failed, error = [], None
        for alert, future in pending:
            try:
                future.result(timeout=self._deadline + 60)
            except Exception as e:
                if self._dead_letter is None:
                    raise  # no dead letter: fail the bundle, the runner retries it
                failed.append(alert)
                error = e
        metrics.add(self._published, len(pending) - len(failed))
        if failed:
            batch = hashlib.sha256("\0".join(sorted(a["alert_id"] for a in failed)).encode()).hexdigest()[:16]
            metrics.add(
                self._dead,
                self._dead_letter.record(
                    f"pubsub:{self._topic}", OPS_ALERTS_STREAM.column_names, failed, error, 1, batch
                ),
            )
