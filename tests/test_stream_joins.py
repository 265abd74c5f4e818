"""Streaming joins and upserts with TestStream: either side first, updates, versions."""
import apache_beam as beam
from apache_beam.testing import test_stream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import FixedWindows, TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from transforms.stream_joins import JoinToParent, UpsertUsers
from tests.conftest import DAY, MIN, T0, bronze
from tests.test_sessionize import select, streaming_pipeline


def at(micros, row):
    return TimestampedValue(row, Timestamp(micros=micros))


def response(line, **values):
    return bronze("bronze_event_responses", line, response_type="email_confirmation", platform="email", **values)


def event_context(event_id, session_id, user_id, platform, version):
    return {"event_id": event_id, "session_id": session_id, "user_id": user_id, "platform": platform,
            "_version": version}


def test_responses_join_their_event_whichever_arrives_first():
    responses = (test_stream.TestStream()
                 .add_elements([at(T0, response(1, response_id="r-1", event_id="e-1", status="sent",
                                                emitted_at=T0)),
                                at(T0 + MIN, response(2, response_id="r-1", event_id="e-1", status="delivered",
                                                      emitted_at=T0 + MIN))])
                 .advance_watermark_to(Timestamp(micros=T0 + 10 * MIN))
                 .add_elements([at(T0 + 11 * MIN, response(3, response_id="r-2", event_id="e-2", status="sent",
                                                           emitted_at=T0))])
                 .advance_watermark_to_infinity())
    with streaming_pipeline() as p:
        events = (p | "Events" >> beam.Create([event_context("e-1", "s-1", "u-1", "ios", 1),
                                              event_context("e-2", "s-2", None, "web", 1),
                                              event_context("e-1", "s-1", "u-1", "ios", 1)])  # replayed: stale
                  | "AtT0" >> beam.Map(lambda r: at(T0, r)))
        joined = ((p | "Responses" >> responses, events)
                  | JoinToParent("event_response", "event_id", ("session_id", "user_id", "platform"), 30 * DAY))
        # The final row per response (arrival order between the two inputs varies).
        latest = (joined
                  | beam.WindowInto(FixedWindows(365 * 24 * 3600))
                  | beam.Map(lambda r: (r["response_id"], r))
                  | beam.CombinePerKey(lambda rows: max(rows, key=lambda r: r["_version"], default=None)))
        assert_that(latest | beam.Map(lambda kv: (kv[0], kv[1]["status"], kv[1]["copies"], kv[1]["session_id"],
                                                  kv[1]["user_id"], kv[1]["platform"])),
                    equal_to([("r-1", "delivered", 2, "s-1", "u-1", "ios"), ("r-2", "sent", 1, "s-2", None, "web")]))


def test_a_child_without_its_parent_keeps_its_own_platform_until_the_parent_arrives():
    children = (test_stream.TestStream()
                .add_elements([at(T0, response(1, response_id="r-1", event_id="e-1", status="sent",
                                               emitted_at=T0))])
                .advance_watermark_to_infinity())
    with streaming_pipeline() as p:
        joined = ((p | "Responses" >> children, p | "NoEvents" >> beam.Create([]))
                  | JoinToParent("event_response", "event_id", ("session_id", "user_id", "platform"), 30 * DAY))
        assert_that(select("orphan", joined, "response_id", "session_id", "user_id", "platform"),
                    equal_to([("r-1", None, None, "email")]))


def test_users_newest_version_wins_even_arriving_first():
    users = (test_stream.TestStream()
             .add_elements([at(T0, bronze("bronze_users", 1, user_id="u-1", country="DE", updated_at=T0 + DAY))])
             .add_elements([at(T0 + MIN, bronze("bronze_users", 2, user_id="u-1", country="ES", updated_at=T0))])
             .advance_watermark_to_infinity())
    with streaming_pipeline() as p:
        upserts = p | users | UpsertUsers(30 * DAY)
        assert_that(select("users", upserts, "user_id", "_version", "country", "copies"),
                    equal_to([("u-1", 1, "DE", 1), ("u-1", 2, "DE", 2)]))
