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

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.vocabulary import DELIVERED_STATUSES, ActivityType, EventType, ResponseType
from transforms.rules.arrow import micros

CONFIRMED = DELIVERED_STATUSES  # a confirmation email counts once it was sent or delivered
_COUNTRY_CODE = re.compile(r"^[A-Z]{2}$")


def _earliest(times, not_before=None):
    candidates = [t for t in times if t is not None and (not_before is None or t >= not_before)]
    return min(candidates) if candidates else None


def is_confirmation(response: dict) -> bool:
    return response["response_type"] == ResponseType.EMAIL_CONFIRMATION and response["status"] in CONFIRMED


def reached_stages(views: list[dict], events: list[dict], responses: list[dict], activities: list[dict]) -> list[int]:
    """-> reach time (epoch micros) of each reached stage, in order."""

    def of_type(event_type):
        return [e["timestamp"] for e in events if e["event_type"] == event_type]

    payment_ids = {e["event_id"] for e in events if e["event_type"] == EventType.PAYMENT_SUCCESSFUL}
    confirmations = [r for r in responses if r["event_id"] in payment_ids and is_confirmation(r)]
    confirmed_ids = {r["response_id"] for r in confirmations}
    scans = [
        a["activity_time"]
        for a in activities
        if a["activity_type"] == ActivityType.BARCODE_SCANNED and a["response_id"] in confirmed_ids
    ]

    reached = []
    browse = _earliest([v["view_timestamp"] for v in views] + of_type(EventType.BROWSE))
    for stage_time in (
        lambda: browse,
        lambda: _earliest(of_type(EventType.ADD_TO_CART), not_before=reached[-1]),
        lambda: _earliest(of_type(EventType.PAYMENT_SUCCESSFUL), not_before=reached[-1]),
        lambda: _earliest([r["sent_at"] for r in confirmations]),
        lambda: _earliest(scans),
    ):
        t = stage_time()
        if t is None:
            break
        reached.append(t)
    return reached


def country_code(geo_location: str | None) -> str | None:
    """A session's geo_location when it is an alpha-2 country code (not 'lat,lon')."""
    geo = (geo_location or "").strip().upper()
    return geo if _COUNTRY_CODE.match(geo) else None


# --- the same rules on Arrow tables (batch) ----------------------------------------------------
def min_per_key(keys, values) -> tuple[pa.Array, pa.Array]:
    """Distinct non-null-valued keys and the least value of each."""
    table = pa.table({"k": keys, "v": values}).filter(pc.is_valid(values))
    grouped = table.group_by("k", use_threads=False).aggregate([("v", "min")])
    return grouped.column("k"), grouped.column("v_min")


def lookup(keys, table_keys, table_values) -> pa.Array:
    """``table_values`` at the row whose ``table_keys`` equals each key (null when absent)."""
    return pc.take(table_values, pc.index_in(keys, value_set=table_keys))


def stage_times(
    session_ids,
    views: pa.Table,
    events: pa.Table,
    responses: pa.Table | None = None,
    activities: pa.Table | None = None,
) -> list[pa.Array]:
    """The five stages' reach times (int micros, null from the first stage
    not reached) of every session in ``session_ids``; ``reached_stages`` is
    the per-session form (a property test checks both agree).

    Columns: views (session_id, view_timestamp); events (session_id,
    event_id, event_type, timestamp); responses (session_id, response_id,
    event_id, response_type, status, sent_at); activities (session_id,
    response_id, activity_type, activity_time). A response or activity
    counts for the session it is resolved to."""
    session_ids = session_ids.combine_chunks() if isinstance(session_ids, pa.ChunkedArray) else session_ids
    e_session, e_time, e_type = (
        events.column("session_id"),
        micros(events.column("timestamp")),
        events.column("event_type"),
    )

    def of_type(event_type):
        mask = pc.equal(e_type, event_type)
        return e_session.filter(mask), e_time.filter(mask)

    browse_events = of_type(EventType.BROWSE)
    k, first = min_per_key(
        pa.concat_arrays([_chunk(views.column("session_id")), _chunk(browse_events[0])]),
        pa.concat_arrays([_chunk(micros(views.column("view_timestamp"))), _chunk(browse_events[1])]),
    )
    reached = [lookup(session_ids, k, first)]
    for event_type in (EventType.ADD_TO_CART, EventType.PAYMENT_SUCCESSFUL):
        sessions_, times = of_type(event_type)
        after = pc.greater_equal(times, lookup(sessions_, session_ids, reached[-1]))
        k, first = min_per_key(sessions_.filter(after), times.filter(after))
        reached.append(lookup(session_ids, k, first))
    nothing = pa.nulls(len(session_ids), pa.int64())
    if responses is None or responses.num_rows == 0:
        return reached + [nothing, nothing]

    # confirmations: current status sent/delivered, email, answering a payment event of the same session
    payment = EventType.PAYMENT_SUCCESSFUL
    r_session = responses.column("session_id")
    event_row = pc.index_in(responses.column("event_id"), value_set=events.column("event_id"))
    of_payment = pc.and_(
        pc.equal(pc.take(e_type, event_row), payment),
        pc.equal(pc.take(e_session, event_row), r_session),
    )
    confirmed = pc.fill_null(
        pc.and_(
            of_payment,
            pc.and_(
                pc.equal(responses.column("response_type"), ResponseType.EMAIL_CONFIRMATION),
                pc.is_in(responses.column("status"), pa.array(sorted(CONFIRMED))),
            ),
        ),
        False,
    )
    confirmations = responses.filter(confirmed)
    k, first = min_per_key(confirmations.column("session_id"), micros(confirmations.column("sent_at")))
    reached.append(pc.if_else(pc.is_valid(reached[-1]), lookup(session_ids, k, first), nothing))
    if activities is None or activities.num_rows == 0:
        return reached + [nothing]

    # scans of a confirmation of the same session
    confirmation_row = pc.index_in(activities.column("response_id"), value_set=confirmations.column("response_id"))
    scanned = pc.fill_null(
        pc.and_(
            pc.equal(activities.column("activity_type"), ActivityType.BARCODE_SCANNED),
            pc.equal(pc.take(confirmations.column("session_id"), confirmation_row), activities.column("session_id")),
        ),
        False,
    )
    scans = activities.filter(scanned)
    k, first = min_per_key(scans.column("session_id"), micros(scans.column("activity_time")))
    reached.append(pc.if_else(pc.is_valid(reached[-1]), lookup(session_ids, k, first), nothing))
    return reached


def _chunk(values) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks() if values.num_chunks else pa.array([], values.type)
    return values


def reached_count(reached: list[pa.Array]) -> np.ndarray:
    """How many stages each session reached (stages are sequential, so the
    reached ones are the non-null ones)."""
    return sum(np.asarray(pc.is_valid(t).to_numpy(zero_copy_only=False), np.int64) for t in reached)
