"""Streaming alerts: the books' decisions (payments' deadlines, failure
windows, the grace) as plain objects, and the Beam step with TestStream: the
event-time deadline timer, the processing-time grace timer, email_failed
raised once per response, and the routing of silver rows."""

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing import test_stream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp

from tests.conftest import MIN, T0
from transforms.rules import alerts
from transforms.streaming.alerts import (
    CONFIRMED,
    EXPIRY_STEP_MICROS,
    FAILED,
    FAILURE_WINDOWS,
    HOLD_STEP_SECONDS,
    OUTCOME,
    PAYMENT,
    PAYMENT_SHARDS,
    AlertInputsFn,
    AlertStateFn,
    PaymentBook,
    WindowBook,
)

KEEP_SECONDS = 2 * 24 * 3600
KEEP = KEEP_SECONDS * 1_000_000
DEADLINE = T0 + 30 * MIN
WALL = 1_800_000_000.0  # a wall-clock instant (seconds) for the books


def streaming_pipeline():
    return beam.Pipeline(options=PipelineOptions(["--runner=BundleBasedDirectRunner", "--streaming"]))


def arrives(kind, event_id, micros, at):
    """One payment or confirmation for the deadline step, arriving at event time ``at``."""
    return TimestampedValue(((PAYMENT_SHARDS, 0), [[(event_id, (kind, micros))]]), Timestamp(micros=at))


def outcomes(start, statuses, at, prefix="r"):
    """Email confirmations of one failure window (``statuses``: failed? per response)."""
    items = [(f"{prefix}-{i}", (OUTCOME, (start, failed))) for i, failed in enumerate(statuses)]
    return TimestampedValue(((FAILURE_WINDOWS, start), [items]), Timestamp(micros=at))


def alert_ids(pcoll):
    return pcoll | beam.FlatMap(lambda raised: [(a["alert_type"], a["event_id"], a["detected_at"]) for a in raised])


# --- the books, as plain objects ------------------------------------------------------------


def test_a_payment_is_decided_when_the_watermark_passes_its_deadline():
    book = PaymentBook(None, KEEP, grace_seconds=0)
    book.add([("e-ok", (PAYMENT, T0)), ("e-ok", (CONFIRMED, T0 + 10 * MIN)), ("e-no", (PAYMENT, T0))], WALL)
    assert book.event_timer() == DEADLINE
    book.advance(DEADLINE - 1)
    assert book.decide(WALL) == []
    book.advance(DEADLINE)
    assert [a["event_id"] for a in book.decide(WALL)] == ["e-no"]
    book.add([("e-no", (CONFIRMED, T0 + MIN))], WALL)  # late: the alert stands, and is not raised again
    book.advance(DEADLINE + 10 * MIN)
    assert book.decide(WALL) == []


def test_with_a_grace_a_payment_past_its_deadline_waits_for_its_confirmation():
    book = PaymentBook(None, KEEP, grace_seconds=120)
    book.advance(DEADLINE + 60 * MIN)  # the watermark ran ahead of the data
    book.add([("e-1", (PAYMENT, T0)), ("e-2", (PAYMENT, T0))], WALL)
    assert book.decide(WALL + 60) == []  # within the grace: held
    assert book.hold_timer() == WALL + 120  # on a HOLD_STEP_SECONDS tick
    book.add([("e-1", (CONFIRMED, T0 + 5 * MIN))], WALL + 90)  # its confirmation, published with it
    assert [a["event_id"] for a in book.decide(WALL + 120)] == ["e-2"]
    assert book.hold_timer() is None


def test_a_grace_never_holds_a_payment_the_watermark_has_not_reached():
    book = PaymentBook(None, KEEP, grace_seconds=120)
    book.add([("e-1", (PAYMENT, T0))], WALL)
    assert book.hold_timer() is None and book.event_timer() == DEADLINE
    book.advance(DEADLINE)
    assert [a["event_id"] for a in book.decide(WALL + 600)] == ["e-1"]  # the grace long over: no wait


def test_decided_payments_are_forgotten_after_the_keep():
    book = PaymentBook(None, KEEP, grace_seconds=0)
    book.add([("e-1", (PAYMENT, T0))], WALL)
    book.advance(DEADLINE)
    book.decide(WALL)
    forget_at = -(-(DEADLINE + KEEP) // EXPIRY_STEP_MICROS) * EXPIRY_STEP_MICROS  # on the next whole day
    assert book.event_timer() == forget_at
    book.advance(DEADLINE + KEEP - 1)
    book.decide(WALL)
    assert book.blob() is not None
    book.advance(forget_at)
    book.decide(WALL)
    assert book.blob() is None


def test_a_failure_window_counts_each_response_once_with_its_latest_outcome():
    book = WindowBook(None, KEEP, grace_seconds=0)
    book.add([(f"r-{i}", (OUTCOME, (T0, False))) for i in range(20)], WALL)
    book.add([("r-0", (OUTCOME, (T0, False)))], WALL)  # redelivered: still one
    book.add([("r-1", (OUTCOME, (T0, True)))], WALL)  # delivered, then bounced: 1 failed of 20 = 5%
    book.advance(T0 + 15 * MIN)
    assert book.decide(WALL) == []  # 5% is not over 5%
    book = WindowBook(None, KEEP, grace_seconds=0)
    book.add([(f"r-{i}", (OUTCOME, (T0, i < 2))) for i in range(20)], WALL)
    assert book.event_timer() == T0 + 15 * MIN
    book.advance(T0 + 15 * MIN)
    (alert,) = book.decide(WALL)
    assert alert == alerts.email_failure_rate(T0, 20, 2)
    book.add([("r-late", (OUTCOME, (T0, True)))], WALL)  # after the decision: ignored
    book.advance(T0 + 16 * MIN)
    assert book.decide(WALL) == []


# --- the Beam step, with TestStream ------------------------------------------------------------


def test_the_deadline_timer_alerts_once_for_each_payment_not_confirmed_in_time():
    stream = (
        test_stream.TestStream()
        .advance_watermark_to(Timestamp(micros=T0))
        # e-ok: confirmed before its deadline -> cancelled
        .add_elements([arrives(PAYMENT, "e-ok", T0, T0), arrives(CONFIRMED, "e-ok", T0 + 10 * MIN, T0)])
        # e-late-sent: its confirmation was sent after the deadline -> the alert stands
        .add_elements(
            [arrives(PAYMENT, "e-late-sent", T0, T0), arrives(CONFIRMED, "e-late-sent", T0 + 40 * MIN, T0 + MIN)]
        )
        # e-missing: nothing arrives in time
        .add_elements([arrives(PAYMENT, "e-missing", T0, T0)])
        # a confirmation seen before its payment still counts
        .add_elements([arrives(CONFIRMED, "e-first", T0 + 5 * MIN, T0), arrives(PAYMENT, "e-first", T0, T0)])
        .advance_watermark_to(Timestamp(micros=DEADLINE + MIN))
        # late, within the allowed lateness: a confirmation sent in time and a redelivered payment
        .add_elements(
            [arrives(CONFIRMED, "e-missing", T0 + 5 * MIN, T0 + 5 * MIN), arrives(PAYMENT, "e-missing", T0, T0)]
        )
        .advance_watermark_to(Timestamp(micros=DEADLINE + 10 * MIN))
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        raised = p | stream | beam.ParDo(AlertStateFn(KEEP_SECONDS))
        assert_that(
            alert_ids(raised),
            equal_to(
                [("confirmation_missing", "e-late-sent", DEADLINE), ("confirmation_missing", "e-missing", DEADLINE)]
            ),
        )


def test_a_payment_whose_confirmation_comes_before_the_watermark_reaches_the_deadline_is_never_alerted():
    stream = (
        test_stream.TestStream()
        .advance_watermark_to(Timestamp(micros=T0))
        .add_elements([arrives(PAYMENT, "e-1", T0, T0)])
        .advance_watermark_to(Timestamp(micros=T0 + 29 * MIN))
        .add_elements([arrives(CONFIRMED, "e-1", T0 + 29 * MIN, T0 + 29 * MIN)])
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        raised = p | stream | beam.ParDo(AlertStateFn(KEEP_SECONDS))
        assert_that(alert_ids(raised), equal_to([]))


def test_the_grace_timer_decides_a_payment_that_arrived_behind_the_watermark_after_its_confirmation():
    """The watermark is past both deadlines when the payments arrive (a
    backlog); e-1's confirmation arrives within the grace, e-2's never. The
    processing-time timer decides both once the grace is over."""
    stream = (
        test_stream.TestStream()
        .advance_watermark_to(Timestamp(micros=DEADLINE + 60 * MIN))
        .add_elements(
            [arrives(PAYMENT, "e-1", T0, DEADLINE + 60 * MIN), arrives(PAYMENT, "e-2", T0, DEADLINE + 60 * MIN)]
        )
        .advance_watermark_to(Timestamp(micros=DEADLINE + 61 * MIN))
        .add_elements([arrives(CONFIRMED, "e-1", T0 + 5 * MIN, DEADLINE + 61 * MIN)])
        # TestStream's processing-time clock starts at 0: past the wall clock + grace
        .advance_processing_time(Duration(seconds=WALL * 2))
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        raised = p | stream | beam.ParDo(AlertStateFn(KEEP_SECONDS, grace_seconds=HOLD_STEP_SECONDS))
        assert_that(alert_ids(raised), equal_to([("confirmation_missing", "e-2", DEADLINE)]))


def test_the_failure_rate_is_decided_once_per_window_at_its_end():
    second = T0 + 15 * MIN
    stream = (
        test_stream.TestStream()
        .advance_watermark_to(Timestamp(micros=T0))
        .add_elements([outcomes(T0, [i < 2 for i in range(20)], T0)])  # 2 of 20 failed: 10%
        .add_elements([outcomes(second, [i < 5 for i in range(19)], second)])  # 19: too few to judge
        .advance_watermark_to(Timestamp(micros=second + 15 * MIN))
        .add_elements([outcomes(T0, [True] * 3, second + 15 * MIN, prefix="late")])  # decided already
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        raised = p | stream | beam.ParDo(AlertStateFn(KEEP_SECONDS))
        assert_that(
            raised | beam.FlatMap(lambda rows: [(a["alert_type"], a["detected_at"], a["details"]) for a in rows]),
            equal_to([("email_failure_rate", second, alerts.email_failure_rate(T0, 20, 2)["details"])]),
        )


def test_email_failed_is_raised_once_per_response_whatever_its_later_versions():
    stream = (
        test_stream.TestStream()
        .advance_watermark_to(Timestamp(micros=T0))
        .add_elements([arrives(FAILED, "e-1", ("r-1", "failed", T0 + MIN), T0)])
        .add_elements(
            [
                arrives(FAILED, "e-1", ("r-1", "bounced", T0 + 2 * MIN), T0),  # a newer version
                arrives(FAILED, "e-1", ("r-2", "failed", T0 + 3 * MIN), T0),
            ]
        )  # a resend failing
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        raised = p | stream | beam.ParDo(AlertStateFn(KEEP_SECONDS))
        assert_that(
            raised | beam.FlatMap(lambda rows: [(a["alert_type"], a["response_id"], a["details"]) for a in rows]),
            equal_to([("email_failed", "r-1", '{"status":"failed"}'), ("email_failed", "r-2", '{"status":"failed"}')]),
        )


def _response(response_id, status, sent_at, response_type="email_confirmation", event_id="e-1"):
    return {
        "response_id": response_id,
        "event_id": event_id,
        "response_type": response_type,
        "status": status,
        "sent_at": sent_at,
    }


def test_alert_inputs_route_payments_and_confirmations_by_payment_and_outcomes_by_failure_window():
    responses = (
        "silver_event_responses",
        [
            _response("r-1", "bounced", T0),
            _response("r-2", "delivered", T0 + 16 * MIN),
            _response("r-3", "queued", T0),
            _response("r-4", "failed", T0, response_type="sms_confirmation"),
        ],
    )
    events = (
        "silver_events",
        [
            {"event_id": "e-1", "event_type": "payment_successful", "timestamp": T0},
            {"event_id": "e-2", "event_type": "add_to_cart", "timestamp": T0},
        ],
    )
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        routed = (
            p
            | beam.Create([responses, events, ("silver_views", [{"view_id": "v"}])])
            | beam.ParDo(AlertInputsFn(shards=4))
            | beam.FlatMap(lambda kv: [(kv[0][0], i) for i in kv[1]])
        )
        assert_that(
            routed,
            equal_to(
                [
                    (PAYMENT_SHARDS, ("e-1", (FAILED, ("r-1", "bounced", T0)))),
                    (PAYMENT_SHARDS, ("e-1", (CONFIRMED, T0 + 16 * MIN))),
                    (PAYMENT_SHARDS, ("e-1", (PAYMENT, T0))),
                    (FAILURE_WINDOWS, ("r-1", (OUTCOME, (T0, True)))),
                    (FAILURE_WINDOWS, ("r-2", (OUTCOME, (T0 + 15 * MIN, False)))),
                ]
            ),
        )


def test_a_failure_rate_on_a_tie_rounds_away_from_zero_as_sql_does():
    """9 failed of 128 is exactly 0.0703125: the alert says 0.070313, as
    ROUND(9 / 128, 6) does in BigQuery and in the DuckDB reference."""
    assert alerts.failure_rate(9, 128) == 0.070313
    assert alerts.failure_rate(2, 20) == 0.1 and alerts.failure_rate(1, 3) == 0.333333
