"""The gold rules on Arrow tables: one shard's silver rows -> its facts,
``dim_user`` and partial marts, and partial marts -> the marts of
TABLES_AND_METRICS.md. The shard's rows are every row of its users (and
anonymous sessions), so distinct counts add up across shards; the Beam
composite that makes the shards is ``transforms.batch.gold``.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from schemas.tables import CONVERSION_RATES, GOLD, SILVER, STAGE_SESSION_COLUMNS
from schemas.vocabulary import STAGES, ActivityType, EventType, ResponseType
from transforms.rules import experiments
from transforms.rules.arrow import coalesce_key, concat, first_of_groups, micros
from transforms.rules.funnel import CONFIRMED, country_code, lookup, reached_count, stage_times

GRAINS = ("day", "month", "year")
ALL_PLATFORMS = "all"
_TIMESTAMP = pa.timestamp("us", tz="UTC")

# What gold reads of each silver table.
GOLD_INPUTS = {
    "silver_users": ("user_id", "email_hash", "email_sha256", "country", "is_active", "signup_date"),
    "silver_sessions": (
        "session_id",
        "user_id",
        "session_date",
        "session_start_time",
        "platform",
        "device_type",
        "geo_location",
        "first_activity_at",
        "last_activity_at",
        "experiments_json",
    ),
    "silver_views": ("view_id", "session_id", "user_id", "view_timestamp"),
    "silver_clicks": ("click_id", "session_id", "user_id", "click_timestamp"),
    "silver_events": ("event_id", "session_id", "user_id", "event_type", "timestamp", "article_id", "price"),
    "silver_event_responses": (
        "response_id",
        "event_id",
        "session_id",
        "user_id",
        "response_type",
        "status",
        "sent_at",
    ),
    "silver_user_activity": (
        "activity_id",
        "response_id",
        "session_id",
        "user_id",
        "activity_type",
        "activity_time",
        "platform",
    ),
}
# A silver row's own time, for the as-of cut.
OWN_TIME = {
    "silver_sessions": "session_start_time",
    "silver_views": "view_timestamp",
    "silver_clicks": "click_timestamp",
    "silver_events": "timestamp",
    "silver_event_responses": "sent_at",
    "silver_user_activity": "activity_time",
}
# The shard key: the user, else the session, else the row's own identity.
SHARD_KEY = {
    name: coalesce_key(*(["user_id", "session_id"] if name != "silver_users" else ["user_id"]), SILVER[name].key[0])
    for name in GOLD_INPUTS
}


def end_of_day_micros(day: date) -> int:
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC)
    return (end - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


# --- one shard ---------------------------------------------------------------------------------
def gold_table(name: str, columns: dict) -> pa.Table:
    table = GOLD[name]
    schema = table.arrow_schema()
    return pa.Table.from_arrays([pc.cast(columns[c], schema.field(c).type) for c in table.column_names], schema=schema)


def _date_of(micros) -> pa.Array:
    return pc.cast(pc.cast(micros, _TIMESTAMP), pa.date32())


def _min_of(*arrays) -> pa.Array:
    return pc.min_element_wise(*arrays, skip_nulls=True)


def _group(table: pa.Table, keys: list[str], aggregations: list) -> pa.Table:
    return pa.TableGroupBy(table, keys, use_threads=False).aggregate(aggregations)


def session_summaries(g: dict[str, pa.Table]) -> pa.Table:
    """Per session of the shard: its columns, reach time of each stage
    (``reached_1`` ..), stage count, payment count and first/last seen."""
    sessions, events = g["silver_sessions"], g["silver_events"]
    responses = g["silver_event_responses"].filter(pc.is_valid(g["silver_event_responses"].column("session_id")))
    activities = g["silver_user_activity"].filter(pc.is_valid(g["silver_user_activity"].column("session_id")))
    ids = sessions.column("session_id")
    reached = stage_times(ids, g["silver_views"], events, responses, activities)

    seen = [
        (responses.column("session_id"), micros(responses.column("sent_at"))),
        (activities.column("session_id"), micros(activities.column("activity_time"))),
    ]
    seen_at = pa.table(
        {
            "s": pa.chunked_array([c for s, _ in seen for c in s.chunks], pa.string()),
            "t": pa.chunked_array([c for _, t in seen for c in t.chunks], pa.int64()),
        }
    )
    seen_at = _group(seen_at.filter(pc.is_valid(seen_at.column("t"))), ["s"], [("t", "min"), ("t", "max")])
    own = [micros(sessions.column(c)) for c in ("session_start_time", "first_activity_at", "last_activity_at")]
    payments = events.filter(pc.equal(events.column("event_type"), EventType.PAYMENT_SUCCESSFUL))
    payment_counts = _group(payments, ["session_id"], [("event_id", "count")])
    columns = {c: sessions.column(c) for c in sessions.column_names}
    columns.update({f"reached_{i}": t for i, t in enumerate(reached, start=1)})
    columns["stages"] = pa.array(reached_count(reached), pa.int64())
    columns["payments"] = pc.fill_null(
        lookup(ids, payment_counts.column("session_id"), payment_counts.column("event_id_count")), 0
    )
    columns["first_seen_at"] = _min_of(*own, lookup(ids, seen_at.column("s"), seen_at.column("t_min")))
    columns["last_seen_at"] = pc.max_element_wise(
        *own, lookup(ids, seen_at.column("s"), seen_at.column("t_max")), skip_nulls=True
    )
    return pa.table(columns)


def user_country(sessions: pa.Table, users: pa.Table) -> pa.Array:
    """The country of every session: the user's, else the session's
    geo_location when it is a country code (``funnel.country_code``)."""
    from_user = lookup(sessions.column("user_id"), users.column("user_id"), users.column("country"))
    has_country = pc.fill_null(pc.greater(pc.utf8_length(from_user), 0), False)
    distinct = pc.unique(sessions.column("geo_location"))
    codes = pa.array([country_code(v) for v in distinct.to_pylist()], pa.string())
    from_geo = codes.take(pc.index_in(sessions.column("geo_location"), value_set=distinct))
    return pc.if_else(has_country, from_user, from_geo)


def fact_funnel_stage(summary: pa.Table, users: pa.Table) -> pa.Table:
    country = user_country(summary, users)
    parts = []
    for number, stage in enumerate(STAGES, start=1):
        reached_at = summary.column(f"reached_{number}")
        mask = pc.is_valid(reached_at)
        previous = (
            pa.nulls(len(summary), pa.float64())
            if number == 1
            else pc.divide(pc.subtract(reached_at, summary.column(f"reached_{number - 1}")).cast(pa.float64()), 1e6)
        )
        part = {c: summary.column(c) for c in ("session_id", "user_id", "session_date", "platform", "device_type")}
        part.update(
            country=country,
            stage_number=pa.array(np.full(len(summary), number), pa.int64()),
            stage_name=pa.array([stage] * len(summary), pa.string()),
            reached_at=reached_at,
            seconds_from_previous_stage=previous,
        )
        parts.append(gold_table("fact_funnel_stage", part).filter(mask))
    return concat(parts, GOLD["fact_funnel_stage"].arrow_schema())


def dim_user(summary: pa.Table, users: pa.Table) -> pa.Table:
    with_user = summary.filter(pc.is_valid(summary.column("user_id")))
    ids = pc.unique(pa.chunked_array(users.column("user_id").chunks + with_user.column("user_id").chunks, pa.string()))
    per_user = _group(
        with_user,
        ["user_id"],
        [
            ("first_seen_at", "min"),
            ("last_seen_at", "max"),
            ("session_id", "count"),
            ("payments", "sum"),
            ("stages", "max"),
        ],
    )
    ordered = with_user.sort_by(
        [("user_id", "ascending"), ("session_start_time", "ascending"), ("session_id", "ascending")]
    )
    first = ordered.filter(pa.array(first_of_groups(ordered.column("user_id"))))

    def of_user(column):
        return lookup(ids, per_user.column("user_id"), per_user.column(column))

    columns = {
        "user_id": ids,
        **{
            c: lookup(ids, users.column("user_id"), users.column(c))
            for c in ("email_hash", "country", "is_active", "signup_date")
        },
        "first_seen_at": of_user("first_seen_at_min"),
        "last_seen_at": of_user("last_seen_at_max"),
        "first_platform": lookup(ids, first.column("user_id"), first.column("platform")),
        "lifetime_sessions": pc.fill_null(of_user("session_id_count"), 0),
        "lifetime_payments": pc.fill_null(of_user("payments_sum"), 0),
        "furthest_stage_number": pc.fill_null(of_user("stages_max"), 0),
    }
    return gold_table("dim_user", columns)


_ACTIVITY_MEASURES = (
    "sessions",
    "views",
    "clicks",
    "browse_events",
    "add_to_cart_events",
    "payments",
    "confirmations_sent",
    "barcode_scans",
)


def fact_user_activity(g: dict[str, pa.Table]) -> pa.Table:
    """Per (user, UTC date of each record's own time): counts of each measure."""
    events, responses, activities = g["silver_events"], g["silver_event_responses"], g["silver_user_activity"]
    confirmed = pc.and_(
        pc.equal(responses.column("response_type"), ResponseType.EMAIL_CONFIRMATION),
        pc.is_in(responses.column("status"), pa.array(sorted(CONFIRMED))),
    )
    sources = [
        ("sessions", g["silver_sessions"], g["silver_sessions"].column("session_date"), None),
        ("views", g["silver_views"], _date_of(g["silver_views"].column("view_timestamp")), None),
        ("clicks", g["silver_clicks"], _date_of(g["silver_clicks"].column("click_timestamp")), None),
        *(
            (measure, events, _date_of(events.column("timestamp")), pc.equal(events.column("event_type"), t))
            for measure, t in (
                ("browse_events", EventType.BROWSE),
                ("add_to_cart_events", EventType.ADD_TO_CART),
                ("payments", EventType.PAYMENT_SUCCESSFUL),
            )
        ),
        ("confirmations_sent", responses, _date_of(responses.column("sent_at")), confirmed),
        (
            "barcode_scans",
            activities,
            _date_of(activities.column("activity_time")),
            pc.equal(activities.column("activity_type"), ActivityType.BARCODE_SCANNED),
        ),
    ]
    long = []
    for measure, rows, day, mask in sources:
        part = pa.table(
            {
                "user_id": rows.column("user_id"),
                "activity_date": day,
                "m": pa.array(np.full(rows.num_rows, _ACTIVITY_MEASURES.index(measure)), pa.int8()),
            }
        )
        keep = pc.and_(pc.is_valid(part.column("user_id")), pc.is_valid(part.column("activity_date")))
        if mask is not None:
            keep = pc.and_(keep, pc.fill_null(mask, False))
        long.append(part.filter(keep))
    long = concat(long, pa.schema([("user_id", pa.string()), ("activity_date", pa.date32()), ("m", pa.int8())]))
    indicators = {name: pc.cast(pc.equal(long.column("m"), i), pa.int64()) for i, name in enumerate(_ACTIVITY_MEASURES)}
    for name, values in indicators.items():
        long = long.append_column(name, values)
    counted = _group(long, ["user_id", "activity_date"], [(name, "sum") for name in _ACTIVITY_MEASURES])
    return gold_table(
        "fact_user_activity",
        {
            "user_id": counted.column("user_id"),
            "activity_date": counted.column("activity_date"),
            **{name: counted.column(f"{name}_sum") for name in _ACTIVITY_MEASURES},
        },
    )


def _periods(day: pa.Array) -> list[tuple[str, pa.Array]]:
    return [
        ("day", day),
        ("month", pc.floor_temporal(day, unit="month")),
        ("year", pc.floor_temporal(day, unit="year")),
    ]


def _by_period(rows: pa.Table, day: pa.Array) -> pa.Table:
    """Every row once per (grain, period) and once more with platform 'all'."""
    parts = []
    for grain, start in _periods(day):
        for platform in (rows.column("platform"), pa.array([ALL_PLATFORMS] * rows.num_rows, pa.string())):
            parts.append(
                rows.set_column(rows.column_names.index("platform"), "platform", platform)
                .append_column("period_grain", pa.array([grain] * rows.num_rows, pa.string()))
                .append_column("period_start", start)
            )
    return pa.concat_tables(parts)


_PERIOD_KEYS = ["period_grain", "period_start", "platform"]


def conversion_partials(summary: pa.Table) -> pa.Table:
    """Per (grain, period, platform): sessions reaching each stage, distinct
    users reaching browse and payment (distinct within the shard)."""
    stages = summary.column("stages")
    rows = pa.table(
        {
            "platform": summary.column("platform"),
            **{f"s{k}": pc.cast(pc.greater_equal(stages, k), pa.int64()) for k in range(1, 6)},
            "u_browse": pc.if_else(
                pc.greater_equal(stages, 1), summary.column("user_id"), pa.scalar(None, pa.string())
            ),
            "u_payment": pc.if_else(
                pc.greater_equal(stages, 3), summary.column("user_id"), pa.scalar(None, pa.string())
            ),
        }
    )
    grouped = _group(
        _by_period(rows, summary.column("session_date")),
        _PERIOD_KEYS,
        [(f"s{k}", "sum") for k in range(1, 6)]
        + [
            ("u_browse", "count_distinct", pc.CountOptions(mode="only_valid")),
            ("u_payment", "count_distinct", pc.CountOptions(mode="only_valid")),
        ],
    )
    return grouped


def scans(summary: pa.Table, g: dict[str, pa.Table]) -> pa.Table:
    """Barcode scans with their user, platform and (when their confirmation
    answers a payment of the session) the payment and seconds to the scan."""
    activities = g["silver_user_activity"]
    activities = activities.filter(pc.equal(activities.column("activity_type"), ActivityType.BARCODE_SCANNED))
    resolved = activities.filter(pc.is_in(activities.column("session_id"), summary.column("session_id")))
    unresolved = activities.filter(pc.is_null(activities.column("session_id")))
    responses, events = g["silver_event_responses"], g["silver_events"]
    response = pc.index_in(resolved.column("response_id"), value_set=responses.column("response_id"))
    same_session = pc.equal(pc.take(responses.column("session_id"), response), resolved.column("session_id"))
    event_id = pc.if_else(same_session, pc.take(responses.column("event_id"), response), pa.scalar(None, pa.string()))
    event = pc.index_in(event_id, value_set=events.column("event_id"))
    is_payment = pc.fill_null(
        pc.and_(
            pc.equal(pc.take(events.column("event_type"), event), EventType.PAYMENT_SUCCESSFUL),
            pc.equal(pc.take(events.column("session_id"), event), resolved.column("session_id")),
        ),
        False,
    )
    paid_at = pc.if_else(is_payment, micros(pc.take(events.column("timestamp"), event)), pa.scalar(None, pa.int64()))
    session = pc.index_in(resolved.column("session_id"), value_set=summary.column("session_id"))
    linked = pa.table(
        {
            "activity_id": resolved.column("activity_id"),
            "activity_time": micros(resolved.column("activity_time")),
            "user_id": pc.take(summary.column("user_id"), session),
            "platform": pc.take(summary.column("platform"), session),
            "payment_event_id": pc.if_else(is_payment, event_id, pa.scalar(None, pa.string())),
            "seconds": pc.divide(
                pc.subtract(micros(resolved.column("activity_time")), paid_at).cast(pa.float64()), 1e6
            ),
        }
    )
    alone = pa.table(
        {
            "activity_id": unresolved.column("activity_id"),
            "activity_time": micros(unresolved.column("activity_time")),
            "user_id": pa.nulls(unresolved.num_rows, pa.string()),
            "platform": unresolved.column("platform"),
            "payment_event_id": pa.nulls(unresolved.num_rows, pa.string()),
            "seconds": pa.nulls(unresolved.num_rows, pa.float64()),
        }
    )
    return pa.concat_tables([linked, alone])


def barcode_partials(all_scans: pa.Table) -> tuple[pa.Table, pa.Table]:
    """-> (distinct scans, users and orders per (grain, period, platform);
    the seconds payment -> scan of each linked scan there, for the median)."""
    periods = _by_period(all_scans, _date_of(all_scans.column("activity_time")))
    counts = _group(
        periods,
        _PERIOD_KEYS,
        [
            ("activity_id", "count_distinct", pc.CountOptions(mode="only_valid")),
            ("user_id", "count_distinct", pc.CountOptions(mode="only_valid")),
            ("payment_event_id", "count_distinct", pc.CountOptions(mode="only_valid")),
        ],
    )
    seconds = periods.select(_PERIOD_KEYS + ["seconds"]).filter(pc.is_valid(periods.column("seconds")))
    return counts, seconds


def _ratio(numerator, denominator) -> pa.Array:
    return pc.if_else(
        pc.equal(denominator, 0),
        pa.scalar(None, pa.float64()),
        pc.divide(pc.cast(numerator, pa.float64()), pc.cast(denominator, pa.float64())),
    )


def mart_conversion_rate(partials: pa.Table) -> pa.Table:
    summed = _group(partials, _PERIOD_KEYS, [(c, "sum") for c in partials.column_names if c not in _PERIOD_KEYS])
    stages = {c: summed.column(f"s{k}_sum_sum") for k, c in enumerate(STAGE_SESSION_COLUMNS, start=1)}
    return gold_table(
        "mart_conversion_rate",
        {
            **{c: summed.column(c) for c in _PERIOD_KEYS},
            **stages,
            "users_browse": summed.column("u_browse_count_distinct_sum"),
            "users_payment": summed.column("u_payment_count_distinct_sum"),
            **{rate: _ratio(stages[num], stages[den]) for rate, (num, den) in CONVERSION_RATES.items()},
        },
    )


def mart_barcode_activity(partials: pa.Table, seconds: pa.Table) -> pa.Table:
    summed = _group(
        partials,
        _PERIOD_KEYS,
        [
            ("activity_id_count_distinct", "sum"),
            ("user_id_count_distinct", "sum"),
            ("payment_event_id_count_distinct", "sum"),
        ],
    )
    listed = _group(seconds, _PERIOD_KEYS, [("seconds", "list")])
    median_of = {
        tuple(key): statistics.median(values)
        for *key, values in zip(*(listed.column(c).to_pylist() for c in _PERIOD_KEYS + ["seconds_list"]))
    }
    medians = [median_of.get(key) for key in zip(*(summed.column(c).to_pylist() for c in _PERIOD_KEYS))]
    return gold_table(
        "mart_barcode_activity",
        {
            **{c: summed.column(c) for c in _PERIOD_KEYS},
            "barcode_scans": summed.column("activity_id_count_distinct_sum"),
            "scanning_users": summed.column("user_id_count_distinct_sum"),
            "scanned_orders": summed.column("payment_event_id_count_distinct_sum"),
            "median_seconds_payment_to_scan": pa.array(medians, pa.float64()),
        },
    )


def ab_partials(summary: pa.Table) -> pa.Table:
    """Per (experiment, variant) of the shard's sessions: sessions and
    sessions reaching each stage (partial: sum over shards)."""
    counts = defaultdict(lambda: [0] * 6)
    # few distinct (assignments, stages) pairs: each parsed once, weighted by its sessions
    pairs = (
        pa.table({"a": summary.column("experiments_json"), "s": summary.column("stages")})
        .group_by(["a", "s"], use_threads=False)
        .aggregate([([], "count_all")])
    )
    for assignments, stages, sessions in zip(*(pairs.column(c).to_pylist() for c in ("a", "s", "count_all"))):
        if not assignments:
            continue
        parsed = orjson.loads(assignments)
        if not isinstance(parsed, dict):
            continue
        for experiment, variant in parsed.items():
            if variant is None:
                continue
            row = counts[(experiment, str(variant))]
            row[0] += sessions
            for k in range(stages):
                row[k + 1] += sessions
    keys = list(counts)
    return pa.table(
        {
            "experiment": pa.array([k[0] for k in keys], pa.string()),
            "variant": pa.array([k[1] for k in keys], pa.string()),
            **{
                c: pa.array([counts[k][i] for k in keys], pa.int64())
                for i, c in enumerate(("sessions",) + experiments.STAGE_COLUMNS)
            },
        }
    )


def mart_ab_test(partials: pa.Table) -> pa.Table:
    columns = ("sessions",) + experiments.STAGE_COLUMNS
    summed = _group(partials, ["experiment", "variant"], [(c, "sum") for c in columns])
    counts = [
        dict(zip(["experiment", "variant", *columns], values))
        for values in zip(
            *(summed.column(c).to_pylist() for c in ["experiment", "variant", *(f"{c}_sum" for c in columns)])
        )
    ]
    return pa.Table.from_pylist(experiments.readout(counts), schema=GOLD["mart_ab_test"].arrow_schema())


def alert_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=GOLD["ops_alerts"].arrow_schema())


def empty_inputs(inputs: dict[str, tuple[str, ...]] = GOLD_INPUTS) -> dict[str, pa.Table]:
    return {
        name: pa.schema([SILVER[name].arrow_schema().field(c) for c in columns]).empty_table()
        for name, columns in inputs.items()
    }
