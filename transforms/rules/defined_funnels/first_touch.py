"""Each session's first-touch values, what a breakdown reads: its user,
platform, device type, country, the earliest view's landing page and
referral, and its A/B assignments; computed once per shard for every funnel."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.rules.arrow import micros
from transforms.rules.defined_funnels.codes import Codes
from transforms.rules.defined_funnels.records import order_by_unit_and_time
from transforms.rules.gold import user_country


def first_touch(g: dict[str, pa.Table], codes: Codes) -> pa.Table:
    """Per session code of the shard: its user and what a breakdown reads
    (platform, device_type, country, the earliest view's landing_page and
    referral, experiments_json); computed once for every funnel."""
    sessions = g["silver_sessions"]
    views = g["silver_views"]
    # each session's earliest view (ties: the least view_id): sorted by session code and time as
    # numbers, then the few rows tied on both by view_id (sorting every id as text costs more)
    session = codes.of("silver_views", "session_id")
    has_time = pc.is_valid(views.column("view_timestamp")).to_numpy(zero_copy_only=False)
    at = pc.fill_null(micros(views.column("view_timestamp")), 0).to_numpy(zero_copy_only=False)
    if not has_time.all():  # a view without a time sorts last in its session
        at = np.where(has_time, at, at[has_time].max(initial=0) + 1)
    order = order_by_unit_and_time(session, at)
    session_of, at_of = session[order], at[order]
    tied = np.zeros(len(order), bool)
    tied[1:] = (session_of[1:] == session_of[:-1]) & (at_of[1:] == at_of[:-1])
    if tied.any():
        tied[:-1] |= tied[1:]  # each run of ties, its first row too
        rows = np.flatnonzero(tied)
        ids = views.column("view_id").take(pa.array(order[rows]))
        by_id = pc.sort_indices(
            pa.table({"s": session_of[rows], "t": at_of[rows], "id": ids}),
            sort_keys=[("s", "ascending"), ("t", "ascending"), ("id", "ascending")],
        ).to_numpy()
        order[rows] = order[rows][by_id]
    first = np.ones(len(order), bool)
    first[1:] = session_of[1:] != session_of[:-1]
    first &= has_time[order] & (session_of >= 0)
    # row i: session code i (null properties for a session the shard has no row of)
    n = len(codes.ids["session_id"])
    session_codes = codes.of("silver_sessions", "session_id")
    has = session_codes >= 0
    session_row = np.full(n, -1, np.int64)
    session_row[session_codes[has]] = np.flatnonzero(has)
    view_row = np.full(n, -1, np.int64)
    view_row[session_of[first]] = order[first]
    no_session = session_row < 0
    session_rows = pa.array(session_row, mask=no_session)
    per_session = sessions.select(["user_id", "platform", "device_type", "experiments_json"]).take(session_rows)
    country = user_country(sessions, g["silver_users"]).take(session_rows)
    first_views = views.select(["landing_page", "is_referral"]).take(
        pa.array(view_row, mask=no_session | (view_row < 0))
    )
    referral = first_views.column("is_referral")
    return pa.table(
        {
            "user_id": per_session.column("user_id"),
            **{c: per_session.column(c) for c in ("platform", "device_type")},
            "country": country,
            "landing_page": first_views.column("landing_page"),
            "referral": pc.if_else(referral, pa.scalar("referral"), pa.scalar("direct")),
            "experiments_json": per_session.column("experiments_json"),
        }
    )
