"""Defined funnels against the independent reference (benchmarks/reference_funnels.py,
a plain walk of each unit's records written from docs/funnels.md) on generated
definitions and records chosen to collide: steps whose conditions overlap or
repeat, records at one instant, windows ending on a record, exclusions beside
steps (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import duckdb
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks import reference_funnels
from schemas.funnels import parse
from tests.conftest import MIN, T0
from transforms.rules.defined_funnels import funnel_rows, gold_inputs, mart_rows
from transforms.rules.gold import empty_inputs

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CLOCK = T0 + 3 * MIN  # some windows still open: pending apart from dropped
_QUANTILES = (
    "median_seconds_to_convert",
    "p90_seconds_to_convert",
    "median_seconds_from_previous",
    "p90_seconds_from_previous",
)
CONDITIONS = (
    "{record: view}",
    "{record: view, where: {page_type: home}}",
    "{record: view, where: {page_type: [home, product]}}",
    "{record: view, where: {page_type: product}}",
    "{record: event}",
    "{record: event, where: {event_type: add_to_cart}}",
    "{record: click}",
)
EXCLUSIONS = ("{record: view, where: {page_type: refund}}", "{record: event}", "{record: view}")


SOMETIMES = st.booleans()


@st.composite
def definitions(draw, exclusion=SOMETIMES):
    order = draw(st.sampled_from(["sequential", "strict", "any"]))
    lines = [
        "funnels:",
        "  - name: f",
        f"    order: {order}",
        f"    unit: {draw(st.sampled_from(['session', 'user']))}",
        f"    count: {draw(st.sampled_from(['entries', 'units']))}",
    ]
    window = draw(st.sampled_from([None, "2m", "5m"]))
    if window:
        lines.append(f"    window: {window}")
    if order != "any" and draw(st.booleans()):
        lines.append(f"    step_gap: {draw(st.sampled_from(['1m', '3m']))}")
    if order == "strict":
        lines.append(f"    strict_breaks_on: {draw(st.sampled_from(['steps', 'any_record']))}")
    n = draw(st.integers(2, 4))
    lines.append("    steps:")
    for k in range(n):
        condition = draw(st.sampled_from(CONDITIONS))
        lines.append(f"      - {{name: s{k}, any_of: [{condition}]}}")
    if order != "any" and draw(exclusion):
        lines.append("    exclusions:")
        lines.append(f"      - {{name: x, any_of: [{draw(st.sampled_from(EXCLUSIONS))}]}}")
    return parse("\n".join(lines))


DAY_MINUTES = 24 * 60
# ties; the next day; Sunday (the week before) and Saturday the 31st (the month before); the week after
SPREAD = st.one_of(
    st.integers(0, 3), st.sampled_from([5, DAY_MINUTES, DAY_MINUTES + 1, -DAY_MINUTES, -2 * DAY_MINUTES])
)


@st.composite
def records(draw, minute=SPREAD):
    """Views, events and clicks of three users' four sessions on a few whole minutes (ties are common)."""
    sessions = {f"s{i}": f"u{i % 3}" for i in range(4)}
    session = st.sampled_from(sorted(sessions))
    views = draw(st.lists(st.tuples(session, minute, st.sampled_from(["home", "product", "refund"])), max_size=12))
    events = draw(st.lists(st.tuples(session, minute, st.sampled_from(["add_to_cart", "browse"])), max_size=6))
    clicks = draw(st.lists(st.tuples(session, minute), max_size=3))
    return sessions, views, events, clicks


def _silver(funnel_defs, sessions, views, events, clicks) -> dict[str, pa.Table]:
    g = empty_inputs(gold_inputs(funnel_defs))
    rows = {
        "silver_sessions": [
            {"session_id": s, "user_id": u, "session_start_time": T0 - 60 * MIN} for s, u in sessions.items()
        ],
        "silver_views": [
            {
                "view_id": f"v{i}",
                "session_id": s,
                "user_id": sessions[s],
                "view_timestamp": T0 + m * MIN,
                "page_type": p,
            }
            for i, (s, m, p) in enumerate(views)
        ],
        "silver_events": [
            {"event_id": f"e{i}", "session_id": s, "user_id": sessions[s], "timestamp": T0 + m * MIN, "event_type": t}
            for i, (s, m, t) in enumerate(events)
        ],
        "silver_clicks": [
            {"click_id": f"c{i}", "session_id": s, "user_id": sessions[s], "click_timestamp": T0 + m * MIN}
            for i, (s, m) in enumerate(clicks)
        ],
    }
    for name, table_rows in rows.items():
        g[name] = pa.Table.from_pylist(table_rows, schema=g[name].schema)
    return g


def _create(con, name: str, columns: str, rows: list[tuple]) -> None:
    con.execute(f"CREATE TABLE {name} ({columns})")
    if rows:
        con.executemany(f"INSERT INTO {name} VALUES ({', '.join('?' * len(rows[0]))})", rows)


def _reference(funnel, sessions, views, events, clicks) -> tuple[set[tuple], set[tuple]]:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE MACRO utc_date(us) AS CAST(make_timestamp(us) AS DATE)")
    ids = "session_id VARCHAR, user_id VARCHAR"
    _create(
        con, "g_sessions", f"{ids}, session_start_time BIGINT", [(s, u, T0 - 60 * MIN) for s, u in sessions.items()]
    )
    _create(
        con,
        "g_views",
        f"view_id VARCHAR, {ids}, view_timestamp BIGINT, page_type VARCHAR",
        [(f"v{i}", s, sessions[s], T0 + m * MIN, p) for i, (s, m, p) in enumerate(views)],
    )
    _create(
        con,
        "g_events",
        f'event_id VARCHAR, {ids}, "timestamp" BIGINT, event_type VARCHAR',
        [(f"e{i}", s, sessions[s], T0 + m * MIN, t) for i, (s, m, t) in enumerate(events)],
    )
    _create(
        con,
        "g_clicks",
        f"click_id VARCHAR, {ids}, click_timestamp BIGINT",
        [(f"c{i}", s, sessions[s], T0 + m * MIN) for i, (s, m) in enumerate(clicks)],
    )
    _create(con, "g_responses", f"response_id VARCHAR, {ids}, sent_at BIGINT", [])
    _create(con, "g_activities", f"activity_id VARCHAR, {ids}, activity_time BIGINT", [])
    con.execute(
        "CREATE TABLE first_touch AS SELECT session_id, user_id AS session_user, NULL::VARCHAR AS platform, "
        "NULL::VARCHAR AS device_type, NULL::VARCHAR AS country, NULL::VARCHAR AS landing_page, "
        "NULL::VARCHAR AS referral, NULL::VARCHAR AS experiments_json FROM g_sessions"
    )
    reference_funnels.create_fact_table(con)
    reference_funnels.fact_funnel(con, funnel)
    reference_funnels.mart_funnel(con, (funnel,), CLOCK)
    rows = con.execute(
        "SELECT unit_id, entry_number, session_id, epoch_us(entry_at), "
        "list_transform(reached_at, lambda x: epoch_us(x)), seconds_from_previous FROM fact_funnel"
    ).fetchall()
    mart = con.execute("SELECT * FROM mart_funnel")
    names = [d[0] for d in mart.description]
    facts = {(u, n, s, at, tuple(times), tuple(gaps)) for u, n, s, at, times, gaps in rows}
    return facts, _rows([dict(zip(names, values)) for values in mart.fetchall()])


def _rows(mart: list[dict]) -> set[tuple]:
    """Mart rows comparable across the two: quantiles to 9 significant digits."""
    out = set()
    for row in mart:
        for column in _QUANTILES:
            row[column] = None if row[column] is None else float(f"{row[column]:.9g}")
        out.add(tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(row.items())))
    return out


def _pipeline(funnel_defs, g) -> tuple[set[tuple], set[tuple]]:
    def us(t):
        return (t - EPOCH) // timedelta(microseconds=1)

    facts, entries = funnel_rows(funnel_defs, g, CLOCK)
    mart = mart_rows(funnel_defs, {name: [table] for name, table in entries.items()})
    return {
        (
            r["unit_id"],
            r["entry_number"],
            r["session_id"],
            us(r["entry_at"]),
            tuple(us(t) for t in r["reached_at"]),
            tuple(r["seconds_from_previous"]),
        )
        for r in facts.to_pylist()
    }, _rows(mart.to_pylist())


def _agree(funnel_defs, data) -> None:
    (funnel,) = funnel_defs
    sessions, views, events, clicks = data
    facts, mart = _pipeline(funnel_defs, _silver(funnel_defs, sessions, views, events, clicks))
    expected_facts, expected_mart = _reference(funnel, sessions, views, events, clicks)
    assert facts == expected_facts
    assert mart == expected_mart


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(definitions(), records())
def test_defined_funnels_equal_the_walk_on_overlapping_steps_ties_and_window_ends(funnel_defs, data):
    _agree(funnel_defs, data)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(definitions(exclusion=st.just(True)), records(minute=st.integers(0, 1)))
def test_defined_funnels_equal_the_walk_when_everything_happens_in_two_minutes(funnel_defs, data):
    """Records crowded on two instants: exclusions and strict orders meet their steps' own instants."""
    _agree(funnel_defs, data)
