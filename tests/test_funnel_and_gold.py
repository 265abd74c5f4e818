"""Funnel rules on handcrafted sessions, and every gold table from them."""

from datetime import date

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from schemas.tables import BRONZE
from tests.conftest import DAY, MIN, T0, bronze, local_pipeline, rows_of_table, tagged_arrow
from transforms.batch.gold import BuildGold, CutAtAsOfFn
from transforms.batch.silver import BuildSilver
from transforms.rules.funnel import reached_stages


def view(t):
    return {"view_timestamp": t}


def event(event_id, event_type, t):
    return {"event_id": event_id, "event_type": event_type, "timestamp": t}


def response(response_id, event_id, status, sent_at, response_type="email_confirmation"):
    return {
        "response_id": response_id,
        "event_id": event_id,
        "status": status,
        "sent_at": sent_at,
        "response_type": response_type,
    }


def scan(response_id, t, activity_type="barcode_scanned"):
    return {
        "activity_id": f"a-{response_id}",
        "response_id": response_id,
        "activity_type": activity_type,
        "activity_time": t,
    }


@pytest.mark.parametrize(
    "case, views, events, responses, activities, expected",
    [
        (
            "full journey",
            [view(T0)],
            [event("c", "add_to_cart", T0 + MIN), event("p", "payment_successful", T0 + 2 * MIN)],
            [response("r", "p", "delivered", T0 + 3 * MIN)],
            [scan("r", T0 + 5 * DAY)],
            [T0, T0 + MIN, T0 + 2 * MIN, T0 + 3 * MIN, T0 + 5 * DAY],
        ),
        ("browse event counts as browse", [], [event("b", "browse", T0)], [], [], [T0]),
        (
            "cart before browse does not count",
            [view(T0)],
            [event("c", "add_to_cart", T0 - MIN), event("p", "payment_successful", T0 + MIN)],
            [],
            [],
            [T0],
        ),
        (
            "a later cart does",
            [view(T0)],
            [event("c1", "add_to_cart", T0 - MIN), event("c2", "add_to_cart", T0 + MIN)],
            [],
            [],
            [T0, T0 + MIN],
        ),
        (
            "payment without cart stops at browse",
            [view(T0)],
            [event("p", "payment_successful", T0 + MIN)],
            [response("r", "p", "sent", T0 + 2 * MIN)],
            [scan("r", T0 + DAY)],
            [T0],
        ),
        (
            "payment before cart does not count",
            [view(T0)],
            [event("p", "payment_successful", T0 + MIN), event("c", "add_to_cart", T0 + 2 * MIN)],
            [],
            [],
            [T0, T0 + 2 * MIN],
        ),
        (
            "confirmation failed then resent",
            [view(T0)],
            [event("c", "add_to_cart", T0 + MIN), event("p", "payment_successful", T0 + 2 * MIN)],
            [response("r1", "p", "failed", T0 + 3 * MIN), response("r2", "p", "sent", T0 + 13 * MIN)],
            [scan("r2", T0 + 2 * DAY)],
            [T0, T0 + MIN, T0 + 2 * MIN, T0 + 13 * MIN, T0 + 2 * DAY],
        ),
        (
            "failed confirmation only; its scan does not count",
            [view(T0)],
            [event("c", "add_to_cart", T0 + MIN), event("p", "payment_successful", T0 + 2 * MIN)],
            [response("r1", "p", "bounced", T0 + 3 * MIN)],
            [scan("r1", T0 + DAY)],
            [T0, T0 + MIN, T0 + 2 * MIN],
        ),
        (
            "confirmation of the second payment counts",
            [view(T0)],
            [
                event("c", "add_to_cart", T0 + MIN),
                event("p1", "payment_successful", T0 + 2 * MIN),
                event("p2", "payment_successful", T0 + 4 * MIN),
            ],
            [response("r", "p2", "delivered", T0 + 5 * MIN)],
            [],
            [T0, T0 + MIN, T0 + 2 * MIN, T0 + 5 * MIN],
        ),
        (
            "sms and queued do not confirm",
            [view(T0)],
            [event("c", "add_to_cart", T0 + MIN), event("p", "payment_successful", T0 + 2 * MIN)],
            [
                response("r1", "p", "sent", T0 + 3 * MIN, "sms_confirmation"),
                response("r2", "p", "queued", T0 + 3 * MIN),
            ],
            [],
            [T0, T0 + MIN, T0 + 2 * MIN],
        ),
        (
            "other activity types are not scans",
            [view(T0)],
            [event("c", "add_to_cart", T0 + MIN), event("p", "payment_successful", T0 + 2 * MIN)],
            [response("r", "p", "sent", T0 + 3 * MIN)],
            [scan("r", T0 + DAY, "ticket_transferred")],
            [T0, T0 + MIN, T0 + 2 * MIN, T0 + 3 * MIN],
        ),
        ("clicks only: no stage", [], [], [], [], []),
    ],
)
def test_reached_stages(case, views, events, responses, activities, expected):
    assert reached_stages(views, events, responses, activities) == expected


# --- one scenario through silver and gold ---------------------------------------------------------
def _scenario():
    """Seven sessions covering the contract's cases (see the expectations below)."""
    s = lambda sid, user, platform, start, line, **kw: bronze(  # noqa: E731
        "bronze_sessions",
        line,
        session_id=sid,
        user_id=user,
        platform=platform,
        session_start_time=start,
        device_type="desktop",
        **kw,
    )
    v = lambda vid, sid, t, platform="web": bronze(  # noqa: E731
        "bronze_views",
        0,
        view_id=vid,
        session_id=sid,
        view_timestamp=t,
        platform=platform,
    )
    e = lambda eid, sid, etype, t: bronze(  # noqa: E731
        "bronze_events",
        0,
        event_id=eid,
        session_id=sid,
        event_type=etype,
        timestamp=t,
    )
    r = lambda rid, eid, status, sent_at, line: bronze(  # noqa: E731
        "bronze_event_responses",
        line,
        response_id=rid,
        event_id=eid,
        response_type="email_confirmation",
        status=status,
        sent_at=sent_at,
        emitted_at=T0 + line * MIN,
        platform="email",
    )
    return {
        "bronze_users": [
            bronze("bronze_users", 0, user_id=u, country=c, email_hash=f"h-{u}", is_active=True)
            for u, c in (("u-1", "ES"), ("u-2", "DE"), ("u-3", "FR"), ("u-4", "IT"))
        ],
        "bronze_sessions": [
            s("s-1", "u-1", "web", T0, 1),
            s("s-2", "u-1", "ios", T0 + 60 * MIN, 2),
            s("s-3", "u-2", "android", T0, 3),
            s("s-4", "u-2", "web", T0, 4),
            s("s-5", None, "web", T0, 5, geo_location="PT"),
            # s-6 never arrives
            s("s-7", "u-3", "web", T0 + 29 * DAY, 7),
        ],
        "bronze_views": [
            v("v-1", "s-1", T0),
            v("v-2", "s-2", T0 + 63 * MIN),
            v("v-4", "s-4", T0),
            v("v-5", "s-5", T0),
            v("v-6", "s-6", T0 + DAY, "android"),
        ],
        "bronze_clicks": [bronze("bronze_clicks", 0, click_id="c-7", session_id="s-7", click_timestamp=T0 + 29 * DAY)],
        "bronze_events": [
            e("e-c1", "s-1", "add_to_cart", T0 + 2 * MIN),
            e("e-p1", "s-1", "payment_successful", T0 + 5 * MIN),
            e("e-c2", "s-2", "add_to_cart", T0 + 61 * MIN),
            e("e-p2", "s-2", "payment_successful", T0 + 64 * MIN),
            e("e-b3", "s-3", "browse", T0),
            e("e-c3a", "s-3", "add_to_cart", T0 - 5 * MIN),
            e("e-c3b", "s-3", "add_to_cart", T0 + 5 * MIN),
            e("e-p3", "s-3", "payment_successful", T0 + 3 * MIN),
            e("e-p4", "s-4", "payment_successful", T0 + MIN),
            e("e-c5", "s-5", "add_to_cart", T0 + MIN),
            e("e-p5", "s-5", "payment_successful", T0 + 2 * MIN),
        ],
        "bronze_event_responses": [
            r("r-1", "e-p1", "failed", T0 + 6 * MIN, 6),
            r("r-2", "e-p1", "sent", T0 + 20 * MIN, 20),
            r("r-2", "e-p1", "delivered", T0 + 20 * MIN, 21),
            r("r-5", "e-p5", "delivered", T0 + 3 * MIN, 7),
        ],
        "bronze_user_activity": [
            bronze(
                "bronze_user_activity",
                0,
                activity_id="a-1",
                response_id="r-2",
                activity_type="barcode_scanned",
                activity_time=T0 + 3 * DAY,
                platform="pos",
            )
        ],
    }


def _gold(as_of=None):
    p = local_pipeline()
    silver = p | beam.Create(tagged_arrow(BRONZE, _scenario())) | BuildSilver(shards=3)
    if as_of:
        silver = tuple(part | f"CutAtAsOf{i}" >> beam.ParDo(CutAtAsOfFn(as_of)) for i, part in enumerate(silver))
    return p, rows_of_table(silver | BuildGold(shards=3))


def _select(label, pcoll, *columns):
    return pcoll | f"Select_{label}" >> beam.Map(lambda r: tuple(r[c] for c in columns))


def test_fact_funnel_stage():
    p, gold = _gold()
    with p:
        assert_that(
            _select(
                "stages",
                gold["fact_funnel_stage"],
                "session_id",
                "stage_number",
                "user_id",
                "session_date",
                "platform",
                "country",
                "seconds_from_previous_stage",
            ),
            equal_to(
                [
                    ("s-1", 1, "u-1", "2026-11-02", "web", "ES", None),
                    ("s-1", 2, "u-1", "2026-11-02", "web", "ES", 120.0),
                    ("s-1", 3, "u-1", "2026-11-02", "web", "ES", 180.0),
                    ("s-1", 4, "u-1", "2026-11-02", "web", "ES", 900.0),
                    ("s-1", 5, "u-1", "2026-11-02", "web", "ES", 3 * 86400 - 1200.0),
                    ("s-2", 1, "u-1", "2026-11-02", "ios", "ES", None),
                    ("s-3", 1, "u-2", "2026-11-02", "android", "DE", None),
                    ("s-3", 2, "u-2", "2026-11-02", "android", "DE", 300.0),
                    ("s-4", 1, "u-2", "2026-11-02", "web", "DE", None),
                    ("s-5", 1, None, "2026-11-02", "web", "PT", None),
                    ("s-5", 2, None, "2026-11-02", "web", "PT", 60.0),
                    ("s-5", 3, None, "2026-11-02", "web", "PT", 60.0),
                    ("s-5", 4, None, "2026-11-02", "web", "PT", 60.0),
                    ("s-6", 1, None, "2026-11-03", "android", None, None),
                ]
            ),
        )


def test_mart_conversion_rate_including_null_rates():
    p, gold = _gold()
    measures = (
        "sessions_browse",
        "sessions_add_to_cart",
        "sessions_payment",
        "sessions_email_confirmation",
        "sessions_barcode_scanned",
        "users_browse",
        "users_payment",
        "conversion_rate",
        "cart_rate",
        "checkout_rate",
        "confirmation_rate",
        "scan_rate",
    )
    with p:
        rows = gold["mart_conversion_rate"] | beam.Filter(
            lambda r: (
                (r["period_grain"], r["period_start"], r["platform"])
                in {
                    ("day", "2026-11-02", "all"),
                    ("day", "2026-12-01", "web"),
                    ("month", "2026-11-01", "all"),
                    ("year", "2026-01-01", "all"),
                    ("day", "2026-11-03", "android"),
                }
            )
        )
        assert_that(
            _select("mart", rows, "period_grain", "period_start", "platform", *measures),
            equal_to(
                [
                    ("day", "2026-11-02", "all", 5, 3, 2, 2, 1, 2, 1, 0.4, 0.6, 2 / 3, 1.0, 0.5),
                    ("day", "2026-11-03", "android", 1, 0, 0, 0, 0, 0, 0, 0.0, 0.0, None, None, None),
                    ("day", "2026-12-01", "web", 0, 0, 0, 0, 0, 0, 0, None, None, None, None, None),
                    ("month", "2026-11-01", "all", 6, 3, 2, 2, 1, 2, 1, 2 / 6, 3 / 6, 2 / 3, 1.0, 0.5),
                    ("year", "2026-01-01", "all", 6, 3, 2, 2, 1, 2, 1, 2 / 6, 3 / 6, 2 / 3, 1.0, 0.5),
                ]
            ),
        )
        assert_that(
            gold["mart_conversion_rate"] | "CountMart" >> beam.combiners.Count.Globally(),
            # days: 11-02 x 4 platforms, 11-03 x 2, 12-01 x 2; months: 4 + 2; year: 4
            equal_to([8 + 6 + 4]),
            label="mart rows",
        )


def test_dim_user_and_fact_user_activity():
    p, gold = _gold()
    with p:
        assert_that(
            _select(
                "dim",
                gold["dim_user"],
                "user_id",
                "country",
                "first_platform",
                "lifetime_sessions",
                "lifetime_payments",
                "furthest_stage_number",
                "first_seen_at",
                "last_seen_at",
            ),
            equal_to(
                [
                    ("u-1", "ES", "web", 2, 2, 5, T0, T0 + 3 * DAY),
                    ("u-2", "DE", "android", 2, 2, 2, T0 - 5 * MIN, T0 + 5 * MIN),
                    ("u-3", "FR", "web", 1, 0, 0, T0 + 29 * DAY, T0 + 29 * DAY),
                    ("u-4", "IT", None, 0, 0, 0, None, None),
                ]
            ),
            label="dim_user",
        )
        assert_that(
            _select(
                "activity",
                gold["fact_user_activity"],
                "user_id",
                "activity_date",
                "sessions",
                "views",
                "clicks",
                "browse_events",
                "add_to_cart_events",
                "payments",
                "confirmations_sent",
                "barcode_scans",
            ),
            equal_to(
                [
                    ("u-1", "2026-11-02", 2, 2, 0, 0, 2, 2, 1, 0),
                    ("u-1", "2026-11-05", 0, 0, 0, 0, 0, 0, 0, 1),
                    ("u-2", "2026-11-02", 2, 1, 0, 1, 2, 2, 0, 0),
                    ("u-3", "2026-12-01", 1, 0, 1, 0, 0, 0, 0, 0),
                ]
            ),
            label="activity",
        )


def test_mart_barcode_activity():
    p, gold = _gold()
    with p:
        day = gold["mart_barcode_activity"] | beam.Filter(lambda r: r["period_grain"] == "day")
        assert_that(
            _select(
                "scans",
                day,
                "period_start",
                "platform",
                "barcode_scans",
                "scanning_users",
                "scanned_orders",
                "median_seconds_payment_to_scan",
            ),
            equal_to(
                [("2026-11-05", "web", 1, 1, 1, 3 * 86400 - 300.0), ("2026-11-05", "all", 1, 1, 1, 3 * 86400 - 300.0)]
            ),
        )


def test_as_of_leaves_out_later_records():
    p, gold = _gold(as_of=date(2026, 11, 3))
    with p:
        assert_that(
            _select(
                "stages", gold["fact_funnel_stage"] | beam.Filter(lambda r: r["session_id"] == "s-1"), "stage_number"
            ),
            equal_to([(1,), (2,), (3,), (4,)]),
        )
        assert_that(gold["mart_barcode_activity"], equal_to([]), label="no scans yet")
