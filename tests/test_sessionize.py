"""SessionizeEvents with TestStream: dedup, session windows, late updates, too-late records."""
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing import test_stream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from transforms.sessionize import TOO_LATE, SessionizeEvents
from tests.conftest import DAY, MIN, T0, bronze


def streaming_pipeline():
    # TestStream runs on the BundleBasedDirectRunner (FnApiRunner lacks it).
    return beam.Pipeline(options=PipelineOptions(["--runner=BundleBasedDirectRunner", "--streaming"]))


def arriving(kind, ingest_micros, **values):
    """A bronze record of ``kind`` that reaches the pipeline at ``ingest_micros``."""
    table = {"session": "bronze_sessions", "view": "bronze_views", "click": "bronze_clicks",
             "event": "bronze_events"}[kind]
    row = bronze(table, values.pop("line", 0), ingested_at=ingest_micros, **values)
    return TimestampedValue((kind, row), Timestamp(micros=ingest_micros))


def watermark(micros):
    return Timestamp(micros=micros)


def select(label, pcoll, *columns):
    return pcoll | f"Select_{label}" >> beam.Map(lambda r: tuple(r[c] for c in columns))


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
              .advance_watermark_to(watermark(T0 + 120 * MIN))
              .advance_watermark_to_infinity())
    with streaming_pipeline() as p:
        silver = p | stream | SessionizeEvents()
        assert_that(select("sessions", silver["silver_sessions"], "session_id", "_version", "user_id", "platform",
                           "has_session_record", "views", "clicks", "events", "session_start_time"),
                    equal_to([("s-1", 1, "u-1", "ios", True, 1, 1, 1, T0),
                              ("s-2", 1, None, "android", False, 1, 0, 0, T0 + 4 * MIN)]), label="sessions")
        assert_that(select("views", silver["silver_views"], "view_id", "copies", "source_line", "user_id", "platform"),
                    equal_to([("v-1", 2, 1, "u-1", "ios"), ("v-9", 1, 0, None, "android")]), label="views")
        assert_that(silver[TOO_LATE], equal_to([]), label="none too late")


def test_a_late_record_updates_its_session():
    stream = (test_stream.TestStream()
              .add_elements([arriving("view", T0 + MIN, view_id="v-1", session_id="s-1", view_timestamp=T0)])
              .advance_watermark_to(watermark(T0 + 120 * MIN))              # the session fires on time
              .add_elements([arriving("view", T0 + 180 * MIN, view_id="v-2", session_id="s-1",
                                      view_timestamp=T0 + 10 * MIN)])      # late, within allowed lateness
              .advance_watermark_to(watermark(T0 + 240 * MIN))
              .advance_watermark_to_infinity())
    with streaming_pipeline() as p:
        silver = p | stream | SessionizeEvents()
        assert_that(select("versions", silver["silver_sessions"], "session_id", "_version", "views",
                           "last_activity_at"),
                    equal_to([("s-1", 1, 1, T0), ("s-1", 2, 2, T0 + 10 * MIN)]))


def test_a_session_record_arriving_after_its_views_resolves_them():
    stream = (test_stream.TestStream()
              .add_elements([arriving("view", T0 + MIN, view_id="v-1", session_id="s-1", view_timestamp=T0 + MIN,
                                      platform="web")])
              .advance_watermark_to(watermark(T0 + 120 * MIN))
              .add_elements([arriving("session", T0 + 300 * MIN, session_id="s-1", user_id="u-7",
                                      platform="android", session_start_time=T0, emitted_at=T0)])
              .advance_watermark_to_infinity())
    with streaming_pipeline() as p:
        silver = p | stream | SessionizeEvents()
        assert_that(select("views", silver["silver_views"], "view_id", "_version", "user_id", "platform"),
                    equal_to([("v-1", 1, None, "web"), ("v-1", 2, "u-7", "android")]))


def test_a_record_beyond_allowed_lateness_is_counted_not_sessionized():
    too_late = arriving("view", T0 + 3 * DAY, view_id="v-old", session_id="s-old", view_timestamp=T0)
    stream = (test_stream.TestStream()
              .add_elements([arriving("view", T0 + 3 * DAY, view_id="v-new", session_id="s-new",
                                      view_timestamp=T0 + 3 * DAY - MIN), too_late])
              .advance_watermark_to_infinity())
    with streaming_pipeline() as p:
        silver = p | stream | SessionizeEvents()
        assert_that(select("sessions", silver["silver_sessions"], "session_id"), equal_to([("s-new",)]),
                    label="sessions")
        assert_that(silver[TOO_LATE] | beam.Map(lambda kr: kr[1]["view_id"]), equal_to(["v-old"]), label="late")


def test_early_firings_put_a_live_session_in_silver_before_it_closes():
    """With early firings the session is upserted while still open; the
    on-time firing then completes it (same rows as without early firings)."""
    stream = (test_stream.TestStream()
              .advance_processing_time(Timestamp(micros=T0).micros / 1e6)
              .add_elements([arriving("session", T0, session_id="s-1", user_id="u-1", platform="web",
                                      session_start_time=T0, emitted_at=T0),
                             arriving("view", T0, view_id="v-1", session_id="s-1", view_timestamp=T0)])
              .advance_watermark_to(watermark(T0 + MIN))
              .advance_processing_time(11)                                  # > early_firing_seconds
              .add_elements([arriving("view", T0 + 5 * MIN, view_id="v-2", session_id="s-1",
                                      view_timestamp=T0 + 5 * MIN)])
              .advance_watermark_to(watermark(T0 + 6 * MIN))
              .advance_processing_time(11)
              .advance_watermark_to_infinity())
    with streaming_pipeline() as p:
        silver = p | stream | SessionizeEvents(early_firing_seconds=10)
        assert_that(select("versions", silver["silver_sessions"], "session_id", "_version", "views", "user_id"),
                    equal_to([("s-1", 1, 1, "u-1"), ("s-1", 2, 2, "u-1")]))
