"""Dedup and BuildSilver on handcrafted bronze rows."""

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to

from schemas.tables import BRONZE
from tests.conftest import MIN, T0, bronze, local_pipeline, rows_of_table, tagged_arrow
from transforms.batch.silver import BuildSilver
from transforms.rules.dedup import dedup_table


def project(*columns):
    return f"Project_{'_'.join(columns)}" >> beam.Map(lambda r: tuple(r[c] for c in columns))


def dedup(record_type, table, rows, *columns):
    """``dedup_table`` on dict rows -> the chosen columns of each current row."""
    winners, _ = dedup_table(record_type, BRONZE[table].to_arrow(rows, with_partition_columns=True))
    return sorted(tuple(r[c] for c in columns) for r in BRONZE[table].from_arrow(winners))


def test_immutable_first_copy_wins_and_conflicts_are_still_duplicates():
    rows = [
        bronze("bronze_views", 5, view_id="v-1", session_id="s-1", view_timestamp=T0, page_type="landing"),
        bronze("bronze_views", 2, view_id="v-1", session_id="s-1", view_timestamp=T0, page_type="checkout"),
        bronze("bronze_views", 9, view_id="v-1", session_id="s-1", view_timestamp=T0, page_type="landing"),
        bronze("bronze_views", 1, view_id="v-2", session_id="s-1", view_timestamp=T0),
    ]
    assert dedup("view", "bronze_views", rows, "view_id", "page_type", "source_line", "copies") == [
        ("v-1", "checkout", 2, 3),
        ("v-2", None, 1, 1),
    ]


def test_user_newest_updated_at_wins_even_when_it_arrives_first():
    rows = [
        bronze("bronze_users", 1, user_id="u-1", country="DE", updated_at=T0 + 60 * MIN),
        bronze("bronze_users", 2, user_id="u-1", country="ES", updated_at=T0),
        # no updated_at: emitted_at decides
        bronze("bronze_users", 3, user_id="u-2", country="FR", emitted_at=T0 + MIN),
        bronze("bronze_users", 4, user_id="u-2", country="IT", emitted_at=T0),
    ]
    assert dedup("user", "bronze_users", rows, "user_id", "country", "copies") == [("u-1", "DE", 2), ("u-2", "FR", 2)]


def test_session_versions_merge_and_null_never_replaces_a_value():
    rows = [
        bronze(
            "bronze_sessions",
            2,
            session_id="s-1",
            session_start_time=T0,
            platform="unknown",
            session_end_time=T0 + 20 * MIN,
            emitted_at=T0 + 20 * MIN,
        ),
        bronze(
            "bronze_sessions",
            1,
            session_id="s-1",
            session_start_time=T0,
            user_id="u-1",
            platform="ios",
            device_type="mobile",
            experiments_json='{"checkout_button":"B"}',
            emitted_at=T0,
        ),
    ]
    assert dedup(
        "session",
        "bronze_sessions",
        rows,
        "session_id",
        "user_id",
        "platform",
        "device_type",
        "experiments_json",
        "session_end_time",
        "copies",
    ) == [("s-1", "u-1", "ios", "mobile", '{"checkout_button":"B"}', T0 + 20 * MIN, 2)]


def test_response_status_newest_emitted_at_wins():
    rows = [
        bronze(
            "bronze_event_responses",
            1,
            response_id="r-1",
            event_id="e-1",
            status="delivered",
            response_type="email_confirmation",
            emitted_at=T0 + 2 * MIN,
        ),
        bronze(
            "bronze_event_responses",
            2,
            response_id="r-1",
            event_id="e-1",
            status="sent",
            response_type="email_confirmation",
            emitted_at=T0 + MIN,
        ),
    ]
    assert dedup("event_response", "bronze_event_responses", rows, "response_id", "status") == [("r-1", "delivered")]


def _silver(rows_by_table):
    p = local_pipeline()
    silver = p | beam.Create(tagged_arrow(BRONZE, rows_by_table)) | BuildSilver(shards=3)
    return p, rows_of_table(silver)


def test_joins_resolve_session_user_and_platform_through_every_hop():
    p, silver = _silver(
        {
            "bronze_sessions": [
                bronze("bronze_sessions", 1, session_id="s-1", user_id="u-1", platform="ios", session_start_time=T0)
            ],
            "bronze_events": [
                bronze(
                    "bronze_events",
                    2,
                    event_id="e-1",
                    session_id="s-1",
                    event_type="payment_successful",
                    timestamp=T0 + MIN,
                )
            ],
            # arrives before its event and with its own platform 'email'
            "bronze_event_responses": [
                bronze(
                    "bronze_event_responses",
                    0,
                    response_id="r-1",
                    event_id="e-1",
                    response_type="email_confirmation",
                    status="sent",
                    platform="email",
                )
            ],
            "bronze_user_activity": [
                bronze(
                    "bronze_user_activity",
                    3,
                    activity_id="a-1",
                    response_id="r-1",
                    activity_type="barcode_scanned",
                    activity_time=T0 + 3 * 24 * 60 * MIN,
                    platform="pos",
                ),
                bronze(
                    "bronze_user_activity",
                    4,
                    activity_id="a-2",
                    response_id="r-unknown",
                    activity_type="barcode_scanned",
                    activity_time=T0,
                    platform="pos",
                ),
            ],
        }
    )
    with p:
        assert_that(
            silver["silver_event_responses"] | (project("response_id", "session_id", "user_id", "platform")),
            equal_to([("r-1", "s-1", "u-1", "ios")]),
            label="responses",
        )
        assert_that(
            silver["silver_user_activity"] | (project("activity_id", "event_id", "session_id", "user_id", "platform")),
            equal_to([("a-1", "e-1", "s-1", "u-1", "ios"), ("a-2", None, None, None, "pos")]),
            label="activities",
        )
        assert_that(
            silver["silver_events"] | (project("event_id", "user_id", "platform")),
            equal_to([("e-1", "u-1", "ios")]),
            label="events",
        )


def test_session_summary_columns():
    p, silver = _silver(
        {
            "bronze_sessions": [
                bronze("bronze_sessions", 1, session_id="s-1", session_start_time=T0, session_end_time=T0 + 20 * MIN)
            ],
            "bronze_views": [bronze("bronze_views", 2, view_id="v-1", session_id="s-1", view_timestamp=T0 + MIN)],
            "bronze_events": [
                bronze("bronze_events", 3, event_id=f"e-{n}", session_id="s-1", event_type=t, timestamp=T0 + n * MIN)
                for n, t in enumerate(("browse", "add_to_cart", "add_to_cart", "search"), start=2)
            ],
            "bronze_clicks": [bronze("bronze_clicks", 4, click_id="c-1", session_id="s-2", click_timestamp=T0)],
        }
    )
    with p:
        assert_that(
            silver["silver_sessions"]
            | (
                project(
                    "session_id",
                    "duration_seconds",
                    "events",
                    "browse_events",
                    "add_to_cart_events",
                    "payment_events",
                    "furthest_stage_in_session",
                )
            ),
            equal_to([("s-1", 1200.0, 4, 1, 2, 0, 2), ("s-2", 0.0, 0, 0, 0, 0, 0)]),
        )


def test_session_record_never_arriving_is_inferred_from_its_earliest_child():
    p, silver = _silver(
        {
            "bronze_views": [
                bronze("bronze_views", 1, view_id="v-1", session_id="s-9", view_timestamp=T0 + 5 * MIN, platform="web")
            ],
            "bronze_clicks": [
                bronze(
                    "bronze_clicks",
                    2,
                    click_id="c-1",
                    session_id="s-9",
                    platform="android",
                    click_timestamp=T0 - 24 * 60 * MIN,
                )
            ],
        }
    )
    with p:
        assert_that(
            silver["silver_sessions"]
            | (
                project(
                    "session_id",
                    "has_session_record",
                    "user_id",
                    "platform",
                    "session_date",
                    "session_start_time",
                    "views",
                    "clicks",
                    "events",
                )
            ),
            equal_to([("s-9", False, None, "android", "2026-11-01", T0 - 24 * 60 * MIN, 1, 1, 0)]),
        )
        assert_that(
            silver["silver_views"] | (project("view_id", "platform", "user_id")),
            equal_to([("v-1", "android", None)]),
            label="views",
        )
