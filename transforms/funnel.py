"""The funnel rules of TABLES_AND_METRICS.md for one session (pure Python).

A journey is one session; stages are sequential (a stage counts only if every
earlier stage counts):

1. browse: earliest view or ``browse`` event;
2. add_to_cart: earliest ``add_to_cart`` event at or after browse;
3. payment_successful: earliest ``payment_successful`` event at or after add_to_cart;
4. email_confirmation: earliest ``sent_at`` of an email confirmation whose
   current status is sent/delivered and whose event is any payment event of
   the session;
5. barcode_scanned: earliest ``barcode_scanned`` activity on a response
   counted in step 4.
"""
from __future__ import annotations

import re

STAGES = ("browse", "add_to_cart", "payment_successful", "email_confirmation", "barcode_scanned")
CONFIRMED = frozenset(("sent", "delivered"))
_COUNTRY_CODE = re.compile(r"^[A-Z]{2}$")


def _earliest(times, not_before=None):
    candidates = [t for t in times if t is not None and (not_before is None or t >= not_before)]
    return min(candidates) if candidates else None


def is_confirmation(response: dict) -> bool:
    return response["response_type"] == "email_confirmation" and response["status"] in CONFIRMED


def reached_stages(views: list[dict], events: list[dict], responses: list[dict],
                   activities: list[dict]) -> list[int]:
    """-> reach time (epoch micros) of each reached stage, in order."""
    def of_type(event_type):
        return [e["timestamp"] for e in events if e["event_type"] == event_type]

    payment_ids = {e["event_id"] for e in events if e["event_type"] == "payment_successful"}
    confirmations = [r for r in responses if r["event_id"] in payment_ids and is_confirmation(r)]
    confirmed_ids = {r["response_id"] for r in confirmations}
    scans = [a["activity_time"] for a in activities
             if a["activity_type"] == "barcode_scanned" and a["response_id"] in confirmed_ids]

    reached = []
    browse = _earliest([v["view_timestamp"] for v in views] + of_type("browse"))
    for stage_time in (
        lambda: browse,
        lambda: _earliest(of_type("add_to_cart"), not_before=reached[-1]),
        lambda: _earliest(of_type("payment_successful"), not_before=reached[-1]),
        lambda: _earliest([r["sent_at"] for r in confirmations]),
        lambda: _earliest(scans),
    ):
        t = stage_time()
        if t is None:
            break
        reached.append(t)
    return reached


def country_of(user: dict | None, session: dict) -> str | None:
    """The user's country; for sessions without a known user, the session's
    geo_location when it is an alpha-2 country code (not 'lat,lon')."""
    if user and user.get("country"):
        return user["country"]
    geo = (session.get("geo_location") or "").strip().upper()
    return geo if _COUNTRY_CODE.match(geo) else None


def funnel_stage_rows(summary: dict, country: str | None) -> list[dict]:
    """fact_funnel_stage rows of one session summary."""
    rows, previous = [], None
    for number, reached_at in enumerate(summary["reached"], start=1):
        rows.append({
            "session_id": summary["session_id"],
            "user_id": summary["user_id"],
            "session_date": summary["session_date"],
            "platform": summary["platform"],
            "device_type": summary["device_type"],
            "country": country,
            "stage_number": number,
            "stage_name": STAGES[number - 1],
            "reached_at": reached_at,
            "seconds_from_previous_stage": None if previous is None else (reached_at - previous) / 1e6,
        })
        previous = reached_at
    return rows
