"""Streaming alerts with TestStream: the confirmation deadline's event-time
timer, email_failed raised once per response, and the routing of silver rows."""
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing import test_stream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from transforms.stream_alerts import CONFIRMED, FAILED, PAYMENT, AlertInputsFn, AlertStateFn
from tests.conftest import MIN, T0

KEEP_SECONDS = 2 * 24 * 3600


def streaming_pipeline():
    return beam.Pipeline(options=PipelineOptions(["--runner=BundleBasedDirectRunner", "--streaming"]))


def arrives(kind, event_id, micros, at):
    """One payment or confirmation for the deadline step, arriving at event time ``at``."""
    return TimestampedValue((0, [[(event_id, (kind, micros))]]), Timestamp(micros=at))


def alert_ids(pcoll):
    return pcoll | beam.FlatMap(lambda raised: [(a["alert_type"], a["event_id"], a["detected_at"]) for a in raised])


def test_the_deadline_timer_alerts_once_for_each_payment_not_confirmed_in_time():
    deadline = T0 + 30 * MIN
    stream = (test_stream.TestStream()
              .advance_watermark_to(Timestamp(micros=T0))
              # e-ok: confirmed before its deadline -> cancelled
              .add_elements([arrives(PAYMENT, "e-ok", T0, T0), arrives(CONFIRMED, "e-ok", T0 + 10 * MIN, T0)])
              # e-late-sent: its confirmation was sent after the deadline -> the alert stands
              .add_elements([arrives(PAYMENT, "e-late-sent", T0, T0),
                             arrives(CONFIRMED, "e-late-sent", T0 + 40 * MIN, T0 + MIN)])
              # e-missing: nothing arrives in time
              .add_elements([arrives(PAYMENT, "e-missing", T0, T0)])
              # a confirmation seen before its payment still counts
              .add_elements([arrives(CONFIRMED, "e-first", T0 + 5 * MIN, T0), arrives(PAYMENT, "e-first", T0, T0)])
              .advance_watermark_to(Timestamp(micros=deadline + MIN))
              # late, within the allowed lateness: a confirmation sent in time and a redelivered payment
              .add_elements([arrives(CONFIRMED, "e-missing", T0 + 5 * MIN, T0 + 5 * MIN),
                             arrives(PAYMENT, "e-missing", T0, T0)])
              .advance_watermark_to(Timestamp(micros=deadline + 10 * MIN))
              .advance_watermark_to_infinity())
    with streaming_pipeline() as p:
        raised = p | stream | beam.ParDo(AlertStateFn(KEEP_SECONDS))
        assert_that(alert_ids(raised), equal_to([("confirmation_missing", "e-late-sent", deadline),
                                                 ("confirmation_missing", "e-missing", deadline)]))


def test_a_payment_whose_confirmation_comes_before_the_watermark_reaches_the_deadline_is_never_alerted():
    stream = (test_stream.TestStream()
              .advance_watermark_to(Timestamp(micros=T0))
              .add_elements([arrives(PAYMENT, "e-1", T0, T0)])
              .advance_watermark_to(Timestamp(micros=T0 + 29 * MIN))
              .add_elements([arrives(CONFIRMED, "e-1", T0 + 29 * MIN, T0 + 29 * MIN)])
              .advance_watermark_to_infinity())
    with streaming_pipeline() as p:
        raised = p | stream | beam.ParDo(AlertStateFn(KEEP_SECONDS))
        assert_that(alert_ids(raised), equal_to([]))


def _response(response_id, status, sent_at, response_type="email_confirmation", event_id="e-1"):
    return {"response_id": response_id, "event_id": event_id, "response_type": response_type, "status": status,
            "sent_at": sent_at}


def test_email_failed_is_raised_once_per_response_whatever_its_later_versions():
    stream = (test_stream.TestStream()
              .advance_watermark_to(Timestamp(micros=T0))
              .add_elements([arrives(FAILED, "e-1", ("r-1", "failed", T0 + MIN), T0)])
              .add_elements([arrives(FAILED, "e-1", ("r-1", "bounced", T0 + 2 * MIN), T0),  # a newer version
                             arrives(FAILED, "e-1", ("r-2", "failed", T0 + 3 * MIN), T0)])    # a resend failing
              .advance_watermark_to_infinity())
    with streaming_pipeline() as p:
        raised = p | stream | beam.ParDo(AlertStateFn(KEEP_SECONDS))
        assert_that(raised | beam.FlatMap(lambda rows: [(a["alert_type"], a["response_id"], a["details"])
                                                         for a in rows]),
                    equal_to([("email_failed", "r-1", '{"status":"failed"}'),
                              ("email_failed", "r-2", '{"status":"failed"}')]))


def _response(response_id, status, sent_at, response_type="email_confirmation", event_id="e-1"):
    return {"response_id": response_id, "event_id": event_id, "response_type": response_type, "status": status,
            "sent_at": sent_at}


def test_alert_inputs_route_payments_confirmations_and_failures_by_payment():
    responses = ("silver_event_responses", [
        _response("r-1", "bounced", T0), _response("r-2", "delivered", T0 + MIN),
        _response("r-3", "queued", T0), _response("r-4", "failed", T0, response_type="sms_confirmation")])
    events = ("silver_events", [
        {"event_id": "e-1", "event_type": "payment_successful", "timestamp": T0},
        {"event_id": "e-2", "event_type": "add_to_cart", "timestamp": T0}])
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        routed = (p | beam.Create([responses, events, ("silver_views", [{"view_id": "v"}])])
                  | beam.ParDo(AlertInputsFn(shards=4)) | beam.FlatMap(lambda kv: kv[1]))
        assert_that(routed, equal_to([("e-1", (FAILED, ("r-1", "bounced", T0))), ("e-1", (CONFIRMED, T0 + MIN)),
                                      ("e-1", (PAYMENT, T0))]))
