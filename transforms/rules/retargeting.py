"""The retargeting audience (``mart_retargeting``) of one gold shard.

A user is in it when they are active, their latest add_to_cart event (in
any session; ties: the greatest session id) has no payment_successful event
of theirs at or within ``PAYMENT_WINDOW`` after it, and that window has
passed by the recompute's clock (a cart from an hour ago is not yet
abandoned). The cart is what that session carted: its distinct article ids
and, per article, the highest price carted, summed.

Every row of a user is in the user's shard (``transforms.rules.gold`` shuffles by
user), so the shard holds all of it.
"""

from __future__ import annotations

from datetime import timedelta

import pyarrow as pa
import pyarrow.compute as pc

from schemas.vocabulary import EventType
from transforms.rules.arrow import first_of_groups, micros
from transforms.rules.funnel import lookup

PAYMENT_WINDOW = timedelta(hours=24)
_WINDOW_MICROS = PAYMENT_WINDOW // timedelta(microseconds=1)


def audience(events: pa.Table, sessions: pa.Table, users: pa.Table, clock: int | None) -> dict:
    """-> the columns of ``mart_retargeting`` for this shard's users.
    ``clock``: the recompute's now, in epoch micros (None: no cut)."""
    by_user = pc.and_(pc.is_valid(events.column("user_id")), pc.is_valid(events.column("timestamp")))
    events = events.filter(by_user)
    kind = events.column("event_type")
    carts = events.filter(pc.equal(kind, EventType.ADD_TO_CART))
    carts = carts.append_column("t", micros(carts.column("timestamp")))
    payments = events.filter(pc.equal(kind, EventType.PAYMENT_SUCCESSFUL))
    payments = pa.table({"user_id": payments.column("user_id"), "paid": micros(payments.column("timestamp"))})

    latest = carts.sort_by([("user_id", "ascending"), ("t", "descending"), ("session_id", "descending")])
    latest = latest.filter(pa.array(first_of_groups(latest.column("user_id"))))
    latest = pa.table(
        {"user_id": latest.column("user_id"), "t": latest.column("t"), "session_id": latest.column("session_id")}
    )
    if clock is not None:
        latest = latest.filter(pc.less_equal(pc.add(latest.column("t"), _WINDOW_MICROS), clock))

    paid = latest.join(payments, "user_id", join_type="inner", use_threads=False)
    after = pc.and_(
        pc.greater_equal(paid.column("paid"), paid.column("t")),
        pc.less_equal(paid.column("paid"), pc.add(paid.column("t"), _WINDOW_MICROS)),
    )
    converted = pc.unique(paid.filter(after).column("user_id"))
    active = users.filter(pc.fill_null(users.column("is_active"), False)).column("user_id")
    keep = pc.and_(
        pc.invert(pc.is_in(latest.column("user_id"), value_set=converted)),
        pc.is_in(latest.column("user_id"), value_set=active),
    )
    latest = latest.filter(keep)

    # What the abandoned cart's session carted, per user: articles and their highest price.
    in_cart = carts.select(["user_id", "session_id", "article_id", "price"]).join(
        latest.select(["user_id", "session_id"]), ["user_id", "session_id"], join_type="inner", use_threads=False
    )
    in_cart = in_cart.filter(pc.is_valid(in_cart.column("article_id")))
    per_article = in_cart.group_by(["user_id", "article_id"], use_threads=False).aggregate([("price", "max")])
    value = per_article.group_by(["user_id"], use_threads=False).aggregate(
        [("price_max", "sum", pc.ScalarAggregateOptions(min_count=1)), ("article_id", "list")]
    )
    ids = latest.column("user_id")
    articles = lookup(ids, value.column("user_id"), value.column("article_id_list"))
    articles = pa.array([sorted(a) if a else [] for a in articles.to_pylist()], pa.list_(pa.string()))
    return {
        "user_id": ids,
        "email_hash": lookup(ids, users.column("user_id"), users.column("email_hash")),
        "email_sha256": lookup(ids, users.column("user_id"), users.column("email_sha256")),
        "last_cart_at": latest.column("t"),
        "carted_articles": articles,
        "cart_value": lookup(ids, value.column("user_id"), value.column("price_max_sum")),
        "platform": lookup(latest.column("session_id"), sessions.column("session_id"), sessions.column("platform")),
    }
