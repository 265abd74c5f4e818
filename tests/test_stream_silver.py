"""Streaming silver with TestStream: session windows, dedup, late updates,
records beyond the allowed lateness, joins in either order, user versions."""
import json
from datetime import datetime, timezone

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing import test_stream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.trigger import AccumulationMode, AfterWatermark
from apache_beam.transforms.window import GlobalWindows, TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from schemas import contract
from transforms.silver import RESPONSE_JOIN
from transforms.stream_silver import (ALLOWED_LATENESS_SECONDS, PARENT, SILVER_ROWS, JoinToParent, ShardedUpsert,
                                      UpsertSessions, UpsertUsersFn, shard_of, silver_input)
from transforms.pii import PiiKeySource
from transforms.streaming import ParseMessageFn
from pipelines.common import counters
from tests.conftest import DAY, MIN, T0, bronze, local_pipeline

LATENESS = ALLOWED_LATENESS_SECONDS * 1_000_000
_TABLE = {"session": "bronze_sessions", "view": "bronze_views", "click": "bronze_clicks", "event": "bronze_events",
          "user": "bronze_users", "event_response": "bronze_event_responses"}


def streaming_pipeline():
    # TestStream runs on the BundleBasedDirectRunner (FnApiRunner lacks it).
    return beam.Pipeline(options=PipelineOptions(["--runner=BundleBasedDirectRunner", "--streaming"]))


SHARDS = 4


def arriving(kind, ingest_micros, **values):
    """A bronze record of ``kind`` reaching the pipeline at ``ingest_micros``,
    as the streaming parse routes it to silver: a session's record keyed by
    session at its event time, the others keyed by shard at ingest time."""
    row = bronze(_TABLE[kind], values.pop("line", 0), ingested_at=ingest_micros, **values)
    routed = silver_input(_TABLE[kind], row, ingest_micros, LATENESS)
    assert routed is not None, "within the allowed lateness"
    tag, (key, value), at = routed
    element = (key, [value]) if tag == "sessions" else (shard_of(key, SHARDS), [(key, value)])
    return TimestampedValue(element, Timestamp(micros=at))


def watermark(micros):
    return Timestamp(micros=micros)


def select(label, pcoll, table, *columns):
    """The chosen columns of ``table``'s rows from ``(table, rows)`` elements."""
    return (pcoll
            | f"Only_{label}" >> beam.FlatMap(lambda tr: tr[1] if tr[0] == table else [])
            | f"Select_{label}" >> beam.Map(lambda row: tuple(row[c] for c in columns)))


BATCH = 10  # seconds of processing time between the upserts' batches


def sessions_of(p, stream, **options):
    return (p | stream | UpsertSessions(batch_seconds=BATCH, shards=SHARDS, **options))[SILVER_ROWS]


def fired(stream):
    """Processing time passes: the pending batch of upserts is applied."""
    return stream.advance_processing_time(BATCH + 1)


def test_session_windows_dedup_and_join():
    stream = (test_stream.TestStream()
              .add_elements([
                  arriving("session", T0 + MIN, session_id="s-1", user_id="u-1", platform="ios",
                           session_start_time=T0, emitted_at=T0),
                  arriving("view", T0 + MIN, view_id="v-1", session_id="s-1", view_timestamp=T0 + MIN, line=1),
                  arriving("view", T0 + 2 * MIN, view_id="v-1", session_id="s-1", view_timestamp=T0 + MIN, line=2),
                  arriving("click", T0 + 2 * MIN, click_id="c-1", session_id="s-1", click_timestamp=T0 + 2 * MIN),
                  arriving("event", T0 + 3 * MIN, event_id="e-1", session_id="s-1", event_type="add_to_cart",
                           timestamp=T0 + 3 * MIN),
                  # s-2: its session record never arrives
                  arriving("view", T0 + 5 * MIN, view_id="v-9", session_id="s-2", view_timestamp=T0 + 4 * MIN,
                           platform="android"),
              ])
              .advance_watermark_to(watermark(T0 + 120 * MIN)))
    stream = fired(stream).advance_watermark_to_infinity()
    with streaming_pipeline() as p:
        silver = sessions_of(p, stream)
        assert_that(select("sessions", silver, "silver_sessions", "session_id", "_version", "user_id", "platform",
                           "has_session_record", "views", "clicks", "events", "session_start_time"),
                    equal_to([("s-1", 1, "u-1", "ios", True, 1, 1, 1, T0),
                              ("s-2", 1, None, "android", False, 1, 0, 0, T0 + 4 * MIN)]), label="sessions")
        assert_that(select("views", silver, "silver_views", "view_id", "copies", "source_line", "user_id", "platform"),
                    equal_to([("v-1", 2, 1, "u-1", "ios"), ("v-9", 1, 0, None, "android")]), label="views")


def test_a_late_record_updates_its_session():
    stream = fired(test_stream.TestStream()
                   .add_elements([arriving("view", T0 + MIN, view_id="v-1", session_id="s-1", view_timestamp=T0)])
                   .advance_watermark_to(watermark(T0 + 120 * MIN)))        # the session fires on time
    stream = fired(stream
                   .add_elements([arriving("view", T0 + 180 * MIN, view_id="v-2", session_id="s-1",
                                           view_timestamp=T0 + 10 * MIN)])  # late, within allowed lateness
                   .advance_watermark_to(watermark(T0 + 240 * MIN))).advance_watermark_to_infinity()
    with streaming_pipeline() as p:
        silver = sessions_of(p, stream)
        assert_that(select("versions", silver, "silver_sessions", "session_id", "_version", "views",
                           "last_activity_at"),
                    equal_to([("s-1", 1, 1, T0), ("s-1", 2, 2, T0 + 10 * MIN)]))


def test_a_session_record_arriving_after_its_views_resolves_them():
    stream = fired(test_stream.TestStream()
                   .add_elements([arriving("view", T0 + MIN, view_id="v-1", session_id="s-1",
                                           view_timestamp=T0 + MIN, platform="web")])
                   .advance_watermark_to(watermark(T0 + 120 * MIN)))
    stream = fired(stream.add_elements([arriving("session", T0 + 300 * MIN, session_id="s-1", user_id="u-7",
                                                 platform="android", session_start_time=T0, emitted_at=T0)])
                   ).advance_watermark_to_infinity()
    with streaming_pipeline() as p:
        silver = sessions_of(p, stream)
        assert_that(select("views", silver, "silver_views", "view_id", "_version", "user_id", "platform"),
                    equal_to([("v-1", 1, None, "web"), ("v-1", 2, "u-7", "android")]))


def _message(view_id, session_id, view_timestamp: str) -> PubsubMessage:
    data = json.dumps({"record_type": "view", "schema_version": 1, "source": "web-app", "platform": "web",
                       "payload": {"view_id": view_id, "session_id": session_id,
                                   "view_timestamp": view_timestamp}}).encode()
    return PubsubMessage(data, {}, message_id=view_id, publish_time=datetime.now(timezone.utc))


def test_a_record_beyond_allowed_lateness_is_counted_not_sessionized():
    """The streaming parse keeps it in raw and bronze, routes it nowhere in
    silver and counts it; the daily batch puts it in silver."""
    now = contract.micros_to_datetime(contract.now_micros())
    recent, old = now.isoformat(), (now.replace(year=now.year - 1)).isoformat()
    p = local_pipeline()  # a bounded input: FnApiRunner, whose counters are exact
    parsed = (p | beam.Create([_message("v-new", "s-new", recent), _message("v-old", "s-old", old)])
              | beam.ParDo(ParseMessageFn(PiiKeySource(), ALLOWED_LATENESS_SECONDS)).with_outputs("sessions", main="lake"))
    assert_that(parsed.sessions | beam.Map(lambda kv: kv[0]), equal_to(["s-new"]), label="sessionized")
    assert_that(parsed.lake | beam.FlatMap(lambda table_rows: [table_rows[0]] * len(table_rows[1])),
                equal_to(["raw_messages", "raw_messages", "bronze_views", "bronze_views"]), label="in the lake")
    result = p.run()
    result.wait_until_finish()
    assert counters(result)["late_beyond_allowed_lateness"] == 1


def test_early_firings_put_a_live_session_in_silver_before_it_closes():
    """With early firings the session is upserted while still open; the
    on-time firing then completes it (same rows as without early firings)."""
    stream = (test_stream.TestStream()
              .advance_processing_time(Timestamp(micros=T0).micros / 1e6)
              .add_elements([arriving("session", T0, session_id="s-1", user_id="u-1", platform="web",
                                      session_start_time=T0, emitted_at=T0),
                             arriving("view", T0, view_id="v-1", session_id="s-1", view_timestamp=T0)])
              .advance_watermark_to(watermark(T0 + MIN))
              .advance_processing_time(11))                                 # > early_firing_seconds
    stream = (fired(stream)
              .add_elements([arriving("view", T0 + 5 * MIN, view_id="v-2", session_id="s-1",
                                      view_timestamp=T0 + 5 * MIN)])
              .advance_watermark_to(watermark(T0 + 6 * MIN))
              .advance_processing_time(11))
    stream = fired(stream).advance_watermark_to_infinity()
    with streaming_pipeline() as p:
        silver = sessions_of(p, stream, early_firing_seconds=10)
        assert_that(select("versions", silver, "silver_sessions", "session_id", "_version", "views", "user_id"),
                    equal_to([("s-1", 1, 1, "u-1"), ("s-1", 2, 2, "u-1")]))


# --- joins and users -----------------------------------------------------------------------------
def at(micros, element):
    return TimestampedValue(element, Timestamp(micros=micros))


def response(line, **values):
    """A response as the streaming parse routes it: keyed by its event, grouped by shard."""
    row = bronze("bronze_event_responses", line, response_type="email_confirmation", platform="email", **values)
    _, (event_id, value), _ = silver_input("bronze_event_responses", row, T0, LATENESS)
    return shard_of(event_id, SHARDS), [(event_id, value)]


def event_context(event_id, session_id, user_id, platform, version):
    """An event's context as the session upsert sends it, grouped by shard."""
    return shard_of(event_id, SHARDS), [(event_id, (PARENT, {"session_id": session_id, "user_id": user_id,
                                                              "platform": platform, "_version": version}))]


def test_responses_join_their_event_whichever_arrives_first():
    responses = fired(test_stream.TestStream()
                      .add_elements([at(T0, response(1, response_id="r-1", event_id="e-1", status="sent",
                                                     emitted_at=T0)),
                                     at(T0 + MIN, response(2, response_id="r-1", event_id="e-1",
                                                           status="delivered", emitted_at=T0 + MIN))])
                      .advance_watermark_to(Timestamp(micros=T0 + 10 * MIN)))
    responses = fired(responses.add_elements([at(T0 + 11 * MIN, response(3, response_id="r-2", event_id="e-2",
                                                                         status="sent", emitted_at=T0))])
                      ).advance_watermark_to_infinity()
    with streaming_pipeline() as p:
        events = (p | "Events" >> beam.Create([event_context("e-1", "s-1", "u-1", "ios", 1),
                                              event_context("e-2", "s-2", None, "web", 1),
                                              event_context("e-1", "s-1", "u-1", "ios", 1)])  # replayed: stale
                  | "AtT0" >> beam.Map(lambda r: at(T0, r)))
        joined = ((p | "Responses" >> responses, events)
                  | JoinToParent(RESPONSE_JOIN, 30 * DAY, shards=SHARDS, batch_seconds=BATCH))[SILVER_ROWS]
        # The final row per response (arrival order between the two inputs varies).
        latest = (joined
                  | beam.WindowInto(GlobalWindows(), trigger=AfterWatermark(), accumulation_mode=AccumulationMode.DISCARDING)
                  | beam.FlatMap(lambda table_rows: [(row["response_id"], row) for row in table_rows[1]])
                  | beam.CombinePerKey(lambda rows: max(rows, key=lambda r: r["_version"], default=None)))
        assert_that(latest | beam.Map(lambda kv: (kv[0], kv[1]["status"], kv[1]["copies"], kv[1]["session_id"],
                                                  kv[1]["user_id"], kv[1]["platform"])),
                    equal_to([("r-1", "delivered", 2, "s-1", "u-1", "ios"), ("r-2", "sent", 1, "s-2", None, "web")]))


def test_a_child_without_its_parent_keeps_its_own_platform_until_the_parent_arrives():
    children = fired(test_stream.TestStream()
                     .add_elements([at(T0, response(1, response_id="r-1", event_id="e-1", status="sent",
                                                    emitted_at=T0))])).advance_watermark_to_infinity()
    with streaming_pipeline() as p:
        joined = ((p | "Responses" >> children, p | "NoEvents" >> beam.Create([]))
                  | JoinToParent(RESPONSE_JOIN, 30 * DAY, shards=SHARDS, batch_seconds=BATCH))[SILVER_ROWS]
        assert_that(select("orphan", joined, "silver_event_responses", "response_id", "session_id", "user_id",
                           "platform"),
                    equal_to([("r-1", None, None, "email")]))


def user(line, ingest, **values):
    row = bronze("bronze_users", line, **values)
    _, (user_id, value), _ = silver_input("bronze_users", row, ingest, LATENESS)
    return at(ingest, (shard_of(user_id, SHARDS), [(user_id, value)]))


def test_users_newest_version_wins_even_arriving_first():
    users = fired(fired(test_stream.TestStream()
                        .add_elements([user(1, T0, user_id="u-1", country="DE", updated_at=T0 + DAY)]))
                  .add_elements([user(2, T0 + MIN, user_id="u-1", country="ES", updated_at=T0)])
                  ).advance_watermark_to_infinity()
    with streaming_pipeline() as p:
        upserts = p | users | ShardedUpsert(UpsertUsersFn(30 * DAY), shards=SHARDS, batch_seconds=BATCH)
        assert_that(select("users", upserts, "silver_users", "user_id", "_version", "country", "copies"),
                    equal_to([("u-1", 1, "DE", 1), ("u-1", 2, "DE", 2)]))
