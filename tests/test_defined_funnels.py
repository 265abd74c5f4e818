"""Funnels people define: the definitions file's validation, and each
order, window, gap, exclusion, unit and breakdown on handcrafted silver rows.
(The DuckDB reference computes the same from generated data in
tests/test_benchmark.py; the contract's definition against fact_funnel_stage
in tests/test_end_to_end.py.)"""

import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from schemas import funnels
from schemas.funnels import FunnelDefinitionError, parse
from tests.conftest import DAY, MIN, T0
from transforms.rules.defined_funnels import fact_rows, funnel_rows, gold_inputs, mart_rows
from transforms.rules.gold import empty_inputs

HOUR = 60 * MIN
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US = 1  # one microsecond


def definitions(text: str):
    return parse(textwrap.dedent(text))


def one(text: str):
    (funnel,) = definitions("funnels:\n" + textwrap.indent(textwrap.dedent(text), "  "))
    return funnel


def silver(funnel_defs, **tables) -> dict[str, pa.Table]:
    """Gold's inputs with these rows (every other column null)."""
    g = empty_inputs(gold_inputs(funnel_defs))
    for name, rows in tables.items():
        g[name] = pa.Table.from_pylist(rows, schema=g[name].schema)
    return g


def session(session_id, user_id="u1", t=T0, **properties):
    return {"session_id": session_id, "user_id": user_id, "session_start_time": t, "platform": "web", **properties}


def view(view_id, session_id, t, page_type="landing", user_id="u1", **more):
    return {
        "view_id": view_id,
        "session_id": session_id,
        "user_id": user_id,
        "view_timestamp": t,
        "page_type": page_type,
        **more,
    }


def event(event_id, session_id, event_type, t, user_id="u1"):
    return {
        "event_id": event_id,
        "session_id": session_id,
        "user_id": user_id,
        "event_type": event_type,
        "timestamp": t,
    }


def click(click_id, session_id, element, t, user_id="u1"):
    return {
        "click_id": click_id,
        "session_id": session_id,
        "user_id": user_id,
        "element_clicked": element,
        "click_timestamp": t,
    }


def mart_of(funnel_defs, g, clock) -> pa.Table:
    """mart_funnel of one shard's rows (as the gold run counts every shard's)."""
    _, entries = funnel_rows(funnel_defs, g, clock)
    return mart_rows(funnel_defs, {name: [table] for name, table in entries.items()})


def reached(facts: pa.Table) -> dict[tuple, list[int]]:
    """{(unit_id, entry_number): [micros of each reached step, in order]}."""
    out = {}
    for row in facts.to_pylist():
        assert row["steps_reached"] == len(row["reached_at"]) == len(row["seconds_to_step"])
        micros = [(t - EPOCH) // timedelta(microseconds=1) for t in row["reached_at"]]
        assert row["seconds_to_step"] == [(m - micros[0]) / 1e6 for m in micros]
        out[(row["unit_id"], row["entry_number"])] = micros
    return out


VIEW_THEN_CART = """
    - name: f
      window: 1h
      steps:
        - {name: landing, record: view}
        - {name: cart, record: event, where: {event_type: add_to_cart}}
"""


# --- the definitions file ---------------------------------------------------------------------------
def test_the_packaged_definitions_load_with_the_contract_first():
    loaded = funnels.load()
    assert [f.name for f in loaded][0] == "contract"
    assert len({f.name for f in loaded}) == len(loaded) >= 4
    assert {f.order for f in loaded} == set(funnels.Order)
    assert {f.unit for f in loaded} == set(funnels.Unit)


STEPS = "steps: [{name: a, record: view}, {name: b, record: event}]"


@pytest.mark.parametrize(
    "text, named",
    [
        ("funnels:\n  - {name: f, " + STEPS + ", colour: red}", "unknown field 'colour'"),
        ("funnels:\n  - {name: f}", "no steps"),
        ("funnels:\n  - {name: f, steps: []}", "no steps"),
        ("funnels:\n  - {name: f, steps: [{name: a, record: view}]}", "one step is no funnel"),
        ("funnels:\n  - {name: f, window: 0, " + STEPS + "}", "window: 0 must be longer than zero"),
        ("funnels:\n  - {name: f, window: 0h, " + STEPS + "}", "window: '0h' must be longer than zero"),
        ("funnels:\n  - {name: f, window: soon, " + STEPS + "}", "window: 'soon' is not a duration"),
        ("funnels:\n  - {name: f, " + STEPS + "}\n  - {name: f, " + STEPS + "}", "funnel 'f': the name is used twice"),
        (
            "funnels:\n  - {name: f, steps: [{name: a, record: view}, {name: a, record: event}]}",
            "step 'a': the name is used twice",
        ),
        ("funnels:\n  - {name: f, steps: [{name: a, record: page}, {name: b, record: view}]}", "record 'page'"),
        (
            "funnels:\n  - {name: f, steps: [{name: a, record: view, where: {colour: red}}, {name: b, record: view}]}",
            "view has no column 'colour'",
        ),
        ("funnels:\n  - {name: f, unit: device, " + STEPS + "}", "unit 'device' is not session or user"),
        ("funnels:\n  - {name: f, order: random, " + STEPS + "}", "order 'random'"),
        ("funnels:\n  - {name: f, order: any, step_gap: 1h, " + STEPS + "}", "step_gap needs order sequential"),
        ("funnels:\n  - {name: f, strict_breaks_on: any_record, " + STEPS + "}", "strict_breaks_on needs order strict"),
        (
            "funnels:\n  - {name: f, order: strict, strict_breaks_on: all, " + STEPS + "}",
            "strict_breaks_on 'all' is not steps or any_record",
        ),
        (
            "funnels:\n  - {name: f, steps: [{name: a, record: event_response, parent: b}, {name: b, record: event}]}",
            "parent 'b' is not an earlier step",
        ),
        ("funnels:\n  - {name: f, breakdowns: [colour], " + STEPS + "}", "breakdown 'colour'"),
        ("funnels:\n  - {name: F-1, " + STEPS + "}", "name 'F-1'"),
        (
            "funnels:\n  - {name: f, " + STEPS + ", exclusions: [{name: x, record: view, to_step: z}]}",
            "to_step 'z' is not a step",
        ),
        ("funnels:\n  - {name: f, " + STEPS + "\n", "not YAML"),
        ("funnels: []", "'funnels' must list one definition or more"),
        ("funnel:\n  - {name: f, " + STEPS + "}", "unknown field 'funnel'"),
    ],
)
def test_each_kind_of_mistake_fails_at_load_with_one_line_naming_it(text, named):
    with pytest.raises(FunnelDefinitionError) as raised:
        parse(text, "my.yaml")
    message = str(raised.value)
    assert named in message and message.startswith("my.yaml")
    assert "\n" not in message


def test_the_gold_command_refuses_a_bad_definitions_file_with_its_line_and_exit_status_2(tmp_path):
    bad = tmp_path / "funnels.yaml"
    bad.write_text("funnels:\n  - {name: f, window: 0, " + STEPS + "}\n")
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.gold_daily", "--lake", str(tmp_path / "lake"), "--funnels", str(bad)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert f"{bad}: funnel 'f': window: 0 must be longer than zero" in done.stderr
    assert not (tmp_path / "lake").exists()


# --- the window's edge -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cart_at, converts", [(T0 + HOUR - US, True), (T0 + HOUR, True), (T0 + HOUR + US, False)], ids=str
)
def test_a_step_counts_up_to_exactly_the_window_end(cart_at, converts):
    funnel = one(VIEW_THEN_CART)
    g = silver((funnel,), silver_sessions=[session("s1")], silver_views=[view("v1", "s1", T0)])
    g["silver_events"] = pa.Table.from_pylist(
        [event("e1", "s1", "add_to_cart", cart_at)], schema=g["silver_events"].schema
    )
    got = reached(fact_rows((funnel,), g))
    assert got == {("s1", 1): [T0, cart_at] if converts else [T0]}


@pytest.mark.parametrize("window", ["", "window: 1h"])
def test_a_funnel_nobody_enters_has_no_rows(window):
    funnel = one(VIEW_THEN_CART.replace("window: 1h", window))
    g = silver((funnel,), silver_sessions=[session("s1")], silver_events=[event("e1", "s1", "add_to_cart", T0)])
    assert fact_rows((funnel,), g).num_rows == 0
    assert mart_of((funnel,), g, T0).num_rows == 0


@pytest.mark.parametrize(
    "clock, pending, dropped",
    [(T0 + HOUR - US, 1, 0), (T0 + HOUR, 1, 0), (T0 + HOUR + US, 0, 1), (None, 0, 1)],
    ids=["a microsecond before the end", "at the end (a record then still counts)", "a microsecond after", "no clock"],
)
def test_an_entry_is_pending_until_its_window_ends_and_dropped_after(clock, pending, dropped):
    funnel = one(VIEW_THEN_CART)
    g = silver((funnel,), silver_sessions=[session("s1"), session("s2")])
    g["silver_views"] = pa.Table.from_pylist(
        [view("v1", "s1", T0), view("v2", "s2", T0)], schema=g["silver_views"].schema
    )
    g["silver_events"] = pa.Table.from_pylist(
        [event("e2", "s2", "add_to_cart", T0 + MIN)], schema=g["silver_events"].schema
    )
    mart = mart_of((funnel,), g, clock)
    cart = [r for r in mart.to_pylist() if r["step_number"] == 2 and r["cohort_grain"] == "day"]
    assert cart == [
        {
            **cart[0],
            "entered": 2,
            "converted": 1,
            "conversion_rate": 0.5,
            "pending": pending,
            "dropped": dropped,
            "median_seconds_to_convert": 60.0,
            "p90_seconds_to_convert": 60.0,
            "time_to_convert_histogram": [0, 1, 0, 0, 0, 0, 0, 0, 0],
        }
    ]


# --- orders ---------------------------------------------------------------------------------------------
THREE_STEPS = """
    - name: f
      order: {order}
      steps:
        - {{name: landing, record: view, where: {{page_type: landing}}}}
        - {{name: checkout, record: view, where: {{page_type: checkout}}}}
        - {{name: cart, record: event, where: {{event_type: add_to_cart}}}}
"""


def journey(*steps):
    """Session s1's records: ('landing'|'checkout'|'cart', minute) each."""
    views, events = [], []
    for i, (kind, minute) in enumerate(steps):
        if kind == "cart":
            events.append(event(f"e{i}", "s1", "add_to_cart", T0 + minute * MIN))
        else:
            views.append(view(f"v{i}", "s1", T0 + minute * MIN, page_type=kind))
    return views, events


@pytest.mark.parametrize(
    "order, steps, minutes",
    [
        ("sequential", [("landing", 0), ("cart", 1), ("checkout", 2), ("cart", 3)], [0, 2, 3]),
        ("strict", [("landing", 0), ("cart", 1), ("checkout", 2), ("cart", 3)], [0]),
        ("strict", [("landing", 0), ("landing", 1), ("checkout", 2), ("checkout", 3), ("cart", 4)], [0, 2, 4]),
        ("strict", [("landing", 0), ("checkout", 1), ("landing", 2), ("cart", 3)], [0, 1]),
        ("any", [("cart", 0), ("checkout", 5), ("landing", 9)], [0, 5, 9]),
        ("any", [("cart", 0), ("cart", 1), ("checkout", 7)], [0, 7]),
    ],
    ids=[
        "sequential skips a step out of order",
        "strict stops at a step out of order",
        "strict allows repeats of the last step",
        "strict stops at an earlier step in between",
        "any order counts distinct steps",
        "any order counts a repeated step once",
    ],
)
def test_each_order_reaches_its_steps(order, steps, minutes):
    funnel = one(THREE_STEPS.format(order=order))
    views, events = journey(*steps)
    g = silver((funnel,), silver_sessions=[session("s1")], silver_views=views, silver_events=events)
    assert reached(fact_rows((funnel,), g)) == {("s1", 1): [T0 + m * MIN for m in minutes]}


def test_a_step_gap_bounds_each_step_from_the_previous_one():
    funnel = one("""
        - name: f
          step_gap: 10m
          steps:
            - {name: landing, record: view}
            - {name: cart, record: event, where: {event_type: add_to_cart}}
            - {name: paid, record: event, where: {event_type: payment_successful}}
    """)
    g = silver(
        (funnel,),
        silver_sessions=[session("s1")],
        silver_views=[view("v1", "s1", T0)],
        silver_events=[
            event("c", "s1", "add_to_cart", T0 + 10 * MIN),
            event("p", "s1", "payment_successful", T0 + 20 * MIN + US),
        ],
    )
    assert reached(fact_rows((funnel,), g)) == {("s1", 1): [T0, T0 + 10 * MIN]}


# --- units, entries, exclusions, parents ----------------------------------------------------------------
def test_a_user_goes_through_across_sessions_and_enters_again_after_the_window():
    funnel = one("""
        - name: f
          unit: user
          window: 7d
          steps:
            - {name: landing, record: view}
            - {name: paid, record: event, where: {event_type: payment_successful}}
    """)
    g = silver(
        (funnel,),
        silver_sessions=[session("monday"), session("wednesday", t=T0 + 2 * DAY), session("later", t=T0 + 8 * DAY)],
        silver_views=[
            view("v1", "monday", T0),
            view("v2", "wednesday", T0 + 2 * DAY),
            view("v3", "later", T0 + 8 * DAY),
        ],
        silver_events=[event("p", "wednesday", "payment_successful", T0 + 2 * DAY + MIN)],
    )
    facts = fact_rows((funnel,), g)
    assert reached(facts) == {("u1", 1): [T0, T0 + 2 * DAY + MIN], ("u1", 2): [T0 + 8 * DAY]}
    assert {(r["entry_number"], r["session_id"]) for r in facts.to_pylist()} == {(1, "monday"), (2, "later")}


def landing_then_paid_unless(exclusion: str) -> funnels.Funnel:
    """View -> payment, left out on an ``exclusion`` record (its condition, as YAML)."""
    return one(f"""
        - name: f
          steps:
            - {{name: landing, record: view}}
            - {{name: paid, record: event, where: {{event_type: payment_successful}}}}
          exclusions:
            - {{name: away, {exclusion}}}
    """)


def test_an_entry_with_an_exclusion_between_its_steps_is_left_out():
    funnel = landing_then_paid_unless("record: click, where: {element_clicked: nav}")
    g = silver(
        (funnel,),
        silver_sessions=[session("s1"), session("s2"), session("s3")],
        silver_views=[view("v1", "s1", T0), view("v2", "s2", T0), view("v3", "s3", T0)],
        silver_events=[event("p1", "s1", "payment_successful", T0 + 2 * MIN)],
        silver_clicks=[
            click("k1", "s1", "nav", T0 + MIN),  # between the steps: out
            click("k2", "s2", "nav", T0 + MIN),  # not paid: until the window's end (none): out
            click("k3", "s3", "nav", T0 - MIN),  # before the entry: counts
        ],
    )
    assert reached(fact_rows((funnel,), g)) == {("s3", 1): [T0]}


def test_a_parent_step_ties_a_response_to_its_own_payment():
    funnel = one("""
        - name: f
          steps:
            - {name: paid, record: event, where: {event_type: payment_successful}}
            - {name: confirmed, record: event_response, where: {response_type: email_confirmation}, parent: paid}
    """)
    response = {
        "response_id": "r",
        "session_id": "s1",
        "user_id": "u1",
        "response_type": "email_confirmation",
        "sent_at": T0 + MIN,
    }
    g = silver(
        (funnel,),
        silver_sessions=[session("s1")],
        silver_events=[event("p", "s1", "payment_successful", T0), event("b", "s1", "browse", T0)],
        silver_event_responses=[{**response, "event_id": "b"}],
    )
    assert reached(fact_rows((funnel,), g)) == {("s1", 1): [T0]}
    # a response whose parent step matched nothing in the shard (no payment at all)
    unpaid = silver((funnel,), silver_sessions=[session("s1")], silver_event_responses=[{**response, "event_id": "b"}])
    assert fact_rows((funnel,), unpaid).num_rows == 0
    g["silver_event_responses"] = pa.Table.from_pylist(
        [{**response, "event_id": "p"}], schema=g["silver_event_responses"].schema
    )
    assert reached(fact_rows((funnel,), g)) == {("s1", 1): [T0, T0 + MIN]}


# --- one record reaches one step; ties; the edges, to the microsecond --------------------------------------
ORDERS = ["sequential", "strict", "any"]


def two_steps(order: str, first: str, second: str, **more) -> funnels.Funnel:
    extra = "".join(f"\n          {k}: {v}" for k, v in more.items())
    return one(f"""
        - name: f
          order: {order}{extra}
          steps:
            - {{name: a, {first}}}
            - {{name: b, {second}}}
    """)


def views_of(funnel, *views_and_more, **tables):
    g = silver((funnel,), silver_sessions=[session("s1")], silver_views=list(views_and_more), **tables)
    return reached(fact_rows((funnel,), g))


@pytest.mark.parametrize("order", ORDERS)
def test_one_view_does_not_reach_two_identical_steps(order):
    funnel = two_steps(order, "record: view", "record: view", window="1h")
    assert views_of(funnel, view("v1", "s1", T0)) == {("s1", 1): [T0]}
    assert views_of(funnel, view("v1", "s1", T0), view("v2", "s1", T0 + MIN)) == {("s1", 1): [T0, T0 + MIN]}


def test_only_definitions_whose_steps_can_meet_one_record_pay_for_the_check():
    """The packaged four cannot (their costs in BENCHMARKS.md); a repeated step and a filtered view after
    any view can."""
    from transforms.rules.defined_funnels.steps import steps_overlap

    assert not any(steps_overlap(f) for f in funnels.load())
    assert steps_overlap(two_steps("sequential", "record: view", "record: view"))
    assert steps_overlap(two_steps("any", "record: view", "record: view, where: {page_type: [home, cart]}"))
    assert not steps_overlap(
        two_steps("any", "record: view, where: {page_type: checkout}", "record: view, where: {page_type: home}")
    )


@pytest.mark.parametrize("order", ORDERS)
def test_a_pageview_funnel_of_five_steps_counts_each_view_once(order):
    funnel = one(
        f"""
        - name: f
          unit: user
          order: {order}
          steps: [{", ".join(f"{{name: p{k}, record: view}}" for k in range(5))}]
    """
    )
    sessions, views = [], []
    for user, count in enumerate([5, 4, 3, 2, 1]):
        sessions.append(session(f"s{user}", user_id=f"u{user}"))
        views += [view(f"v{user}.{k}", f"s{user}", T0 + k * MIN, user_id=f"u{user}") for k in range(count)]
    mart = mart_of((funnel,), silver((funnel,), silver_sessions=sessions, silver_views=views), None)
    assert [r["converted"] for r in mart.to_pylist() if r["cohort_grain"] == "day"] == [5, 4, 3, 2, 1]


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize(
    "first, second",
    [
        ("record: view", "record: view, where: {page_type: home}"),
        ("record: view, where: {page_type: home}", "record: view"),
    ],
    ids=["unfiltered then filtered", "filtered then unfiltered"],
)
def test_overlapping_conditions_need_a_record_each(order, first, second):
    funnel = two_steps(order, first, second)
    assert views_of(funnel, view("v1", "s1", T0, page_type="home")) == {("s1", 1): [T0]}
    later = views_of(funnel, view("v1", "s1", T0, page_type="home"), view("v2", "s1", T0 + MIN, page_type="home"))
    assert later == {("s1", 1): [T0, T0 + MIN]}


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize(
    "first, second",
    [
        ("record: view", "record: view"),
        ("record: view", "record: view, where: {page_type: home}"),
        ("record: view, where: {page_type: home}", "record: view"),
        ("record: view", "record: event, where: {event_type: add_to_cart}"),
    ],
    ids=["repeated", "unfiltered then filtered", "filtered then unfiltered", "different kinds"],
)
def test_two_records_at_one_instant_reach_two_steps_whichever_sorts_first(order, first, second):
    """A tie converts: the instant's records are not ordered among themselves (v0 sorts before v1 by id)."""
    funnel = two_steps(order, first, second)
    both = [view("v0", "s1", T0, page_type="product"), view("v1", "s1", T0, page_type="home")]
    cart = [event("e0", "s1", "add_to_cart", T0)]
    got = views_of(funnel, *both, silver_events=cart)
    assert got == {("s1", 1): [T0, T0]}


@pytest.mark.parametrize(
    "at, entries",
    [(T0 + HOUR, [[T0, T0 + HOUR]]), (T0 + HOUR + US, [[T0], [T0 + HOUR + US]])],
    ids=["at the window's end: entry 1's", "a microsecond later: entry 2"],
)
def test_a_record_at_the_windows_end_counts_in_its_entry_and_opens_no_other(at, entries):
    funnel = two_steps("sequential", "record: view", "record: view", unit="user", window="1h")
    got = views_of(funnel, view("v1", "s1", T0), view("v2", "s1", at))
    assert got == {("u1", n): times for n, times in enumerate(entries, start=1)}


@pytest.mark.parametrize(
    "away_at, kept",
    [(T0, True), (T0 + US, False), (T0 + HOUR - US, False), (T0 + HOUR, True)],
    ids=["with the from step", "a microsecond after it", "a microsecond before the to step", "with the to step"],
)
def test_an_exclusion_counts_strictly_between_its_steps(away_at, kept):
    funnel = landing_then_paid_unless("record: click")
    got = views_of(
        funnel,
        view("v1", "s1", T0),
        silver_events=[event("p", "s1", "payment_successful", T0 + HOUR)],
        silver_clicks=[click("k", "s1", "nav", away_at)],
    )
    assert got == ({("s1", 1): [T0, T0 + HOUR]} if kept else {})


def test_an_exclusion_record_that_is_a_step_of_the_entry_excludes_nothing():
    funnel = one("""
        - name: f
          steps:
            - {name: landing, record: view, where: {page_type: landing}}
            - {name: checkout, record: view, where: {page_type: checkout}}
            - {name: paid, record: event, where: {event_type: payment_successful}}
          exclusions:
            - {name: any_view, record: view}
    """)
    steps = [view("v1", "s1", T0), view("v2", "s1", T0 + MIN, page_type="checkout")]
    paid = [event("p", "s1", "payment_successful", T0 + 2 * MIN)]
    assert views_of(funnel, *steps, silver_events=paid) == {("s1", 1): [T0, T0 + MIN, T0 + 2 * MIN]}
    other = view("v3", "s1", T0 + MIN + US, page_type="product")  # a view of no step, between two steps
    assert views_of(funnel, *steps, other, silver_events=paid) == {}


@pytest.mark.parametrize(
    "breaks_on, between, minutes",
    [
        ("steps", ("click", 1), [0, 2]),  # a record of no step does not break
        ("steps", ("cart", 1), [0]),  # a record of another step does
        ("steps", ("landing", 1), [0, 2]),  # a repeat of the step before does not
        ("any_record", ("click", 1), [0]),  # any record of the unit does
        ("any_record", ("landing", 1), [0, 2]),  # but a repeat
        ("any_record", ("click", 0), [0, 2]),  # at the step's own instant it is not between
        ("any_record", ("click", 2), [0, 2]),  # nor at the next step's
    ],
)
def test_strict_order_breaks_on_what_is_strictly_between_two_steps(breaks_on, between, minutes):
    funnel = one(f"""
        - name: f
          order: strict
          strict_breaks_on: {breaks_on}
          steps:
            - {{name: landing, record: view, where: {{page_type: landing}}}}
            - {{name: checkout, record: view, where: {{page_type: checkout}}}}
            - {{name: cart, record: event, where: {{event_type: add_to_cart}}}}
    """)
    kind, minute = between
    records = {
        "click": {"silver_clicks": [click("k", "s1", "nav", T0 + minute * MIN)]},
        "cart": {"silver_events": [event("e", "s1", "add_to_cart", T0 + minute * MIN)]},
        "landing": {"silver_views": [view("v9", "s1", T0 + minute * MIN)]},
    }[kind]
    views = [view("v1", "s1", T0), view("v2", "s1", T0 + 2 * MIN, page_type="checkout")]
    views += records.pop("silver_views", [])
    assert views_of(funnel, *views, **records) == {("s1", 1): [T0 + m * MIN for m in minutes]}


def test_the_time_between_steps_is_from_the_step_before_as_well_as_from_the_entry():
    funnel = one("""
        - name: f
          steps:
            - {name: landing, record: view}
            - {name: cart, record: event, where: {event_type: add_to_cart}}
            - {name: paid, record: event, where: {event_type: payment_successful}}
            - name: refunded
              record: event
              where: {event_type: refund}
              after_previous: false
    """)
    g = silver(
        (funnel,),
        silver_sessions=[session("s1")],
        silver_views=[view("v1", "s1", T0)],
        silver_events=[
            event("c", "s1", "add_to_cart", T0 + 10 * MIN),
            event("r", "s1", "refund", T0 + 20 * MIN),  # before the payment: allowed, a negative gap
            event("p", "s1", "payment_successful", T0 + 30 * MIN),
        ],
    )
    (row,) = fact_rows((funnel,), g).to_pylist()
    assert row["seconds_to_step"] == [0.0, 600.0, 1800.0, 1200.0]
    assert row["seconds_from_previous"] == [0.0, 600.0, 1200.0, -600.0]
    mart = [r for r in mart_of((funnel,), g, None).to_pylist() if r["cohort_grain"] == "day"]
    assert [r["median_seconds_to_convert"] for r in mart] == [0.0, 600.0, 1800.0, 1200.0]
    assert [r["median_seconds_from_previous"] for r in mart] == [0.0, 600.0, 1200.0, -600.0]
    assert [r["p90_seconds_from_previous"] for r in mart] == [0.0, 600.0, 1200.0, -600.0]
    assert [r["time_from_previous_histogram"] for r in mart] == [
        [1, 0, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 1, 0, 0, 0, 0, 0, 0],  # 10 min: 5-15 min
        [0, 0, 0, 1, 0, 0, 0, 0, 0],  # 20 min: 15 min-1 h
        [1, 0, 0, 0, 0, 0, 0, 0, 0],  # negative: the first bucket
    ]
    assert [r["time_to_convert_histogram"][3] for r in mart] == [0, 0, 1, 1]  # 30 and 20 min


def test_counting_units_takes_each_user_once_per_cohort_on_the_best_try():
    """Three tries on Monday, only the third converting: one user entered and converted that day (as
    entries, three entries and one conversion). A try on Tuesday reaching less: the week counts Monday's."""
    text = """
        - name: f
          unit: user
          count: {count}
          window: 1h
          steps:
            - {{name: landing, record: view}}
            - {{name: cart, record: event, where: {{event_type: add_to_cart}}}}
    """
    monday = [view(f"v{i}", "s1", T0 + i * 2 * HOUR) for i in range(3)]
    tuesday = [view("v9", "s2", T0 + DAY)]
    cart = [event("c", "s1", "add_to_cart", T0 + 4 * HOUR + MIN)]

    def counts(count):
        funnel = one(text.format(count=count))
        g = silver((funnel,), silver_sessions=[session("s1"), session("s2", t=T0 + DAY)], silver_views=monday + tuesday)
        g["silver_events"] = pa.Table.from_pylist(cart, schema=g["silver_events"].schema)
        mart = mart_of((funnel,), g, None).to_pylist()
        cart_rows = {(r["cohort_grain"], r["cohort_start"].isoformat()): r for r in mart if r["step_number"] == 2}
        return reached(fact_rows((funnel,), g)), {k: (r["entered"], r["converted"]) for k, r in cart_rows.items()}

    facts, mart = counts("units")
    assert facts == {("u1", 1): [T0 + 4 * HOUR, T0 + 4 * HOUR + MIN], ("u1", 2): [T0 + DAY]}
    assert mart == {
        ("day", "2026-11-02"): (1, 1),
        ("day", "2026-11-03"): (1, 0),
        ("week", "2026-11-02"): (1, 1),
        ("month", "2026-11-01"): (1, 1),
    }
    _, entries = counts("entries")
    assert entries[("day", "2026-11-02")] == (3, 1) and entries[("week", "2026-11-02")] == (4, 1)


def test_counting_units_shows_no_value_whose_units_best_tries_are_elsewhere():
    funnel = one("""
        - name: f
          unit: user
          count: units
          window: 1h
          steps:
            - {name: landing, record: view}
            - {name: cart, record: event, where: {event_type: add_to_cart}}
          breakdowns: [device_type]
    """)
    sessions = [session("s1", device_type="mobile"), session("s2", t=T0 + DAY, device_type="desktop")]
    views = [view("v1", "s1", T0), view("v2", "s2", T0 + DAY)]
    g = silver((funnel,), silver_sessions=sessions, silver_views=views)
    g["silver_events"] = pa.Table.from_pylist(
        [event("c", "s2", "add_to_cart", T0 + DAY + MIN)], schema=g["silver_events"].schema
    )
    week = {
        r["breakdown_value"]: (r["entered"], r["converted"])
        for r in mart_of((funnel,), g, None).to_pylist()
        if r["cohort_grain"] == "week" and r["breakdown"] == "device_type" and r["step_number"] == 2
    }
    assert week == {"desktop": (1, 1)}  # Tuesday's try is the week's best: no mobile row with 0 entered


# --- breakdowns -------------------------------------------------------------------------------------------
def test_breakdowns_take_the_entry_sessions_values_keep_the_most_frequent_and_pool_the_rest():
    funnel = one("""
        - name: f
          steps:
            - {name: landing, record: view}
            - {name: cart, record: event, where: {event_type: add_to_cart}}
          breakdowns: [device_type, landing_page, experiment:checkout_button]
          breakdown_limit: 1
    """)
    sessions = [
        session("s1", device_type="mobile", experiments_json='{"checkout_button":"B"}'),
        session("s2", device_type="mobile"),
        session("s3", device_type="desktop", experiments_json='{"checkout_button":"control"}'),
        session("s4"),
    ]
    views = [
        view("v1", "s1", T0, landing_page="/a"),
        view("v1b", "s1", T0 - MIN, page_type="event", landing_page="/first"),  # the earliest view: first touch
        view("v2", "s2", T0, landing_page="/a"),
        view("v3", "s3", T0, landing_page="/b"),
        view("v4", "s4", T0, landing_page="/c"),
    ]
    g = silver((funnel,), silver_sessions=sessions, silver_views=views)
    mart = mart_of((funnel,), g, None)
    entered = {
        (r["breakdown"], r["breakdown_value"]): r["entered"]
        for r in mart.to_pylist()
        if r["cohort_grain"] == "month" and r["step_number"] == 1
    }
    assert entered == {
        ("all", "all"): 4,
        ("device_type", "mobile"): 2,
        ("device_type", "other"): 2,  # desktop and (none)
        ("landing_page", "/a"): 1,  # four pages once each: the first by value stays (s1's is /first)
        ("landing_page", "other"): 3,
        ("experiment:checkout_button", "(none)"): 2,
        ("experiment:checkout_button", "other"): 2,
    }


def test_entries_open_at_each_units_first_record_and_again_after_each_windows_end():
    """The vectorized entries against a walk of each unit's records (random units, times, windows)."""
    from transforms.rules.defined_funnels.entries import entries
    from transforms.rules.defined_funnels.records import Matches

    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(1, 60))
        unit, t, session = (rng.integers(0, high, n).astype(np.int64) for high in (5, 1000, 9))
        window = int(rng.integers(1, 400))
        got = entries(Matches(unit, t, session, np.arange(n)), window)
        expected = []
        for u in sorted(set(unit.tolist())):
            records = sorted(zip(t[unit == u].tolist(), session[unit == u].tolist()))
            opened, number = None, 0
            for at, _ in records:
                if opened is None or at > opened + window:  # the window holds its end
                    number, opened = number + 1, at
                    expected.append((u, number, at, min(s for a, s in records if a == at)))
        assert list(zip(*(x.tolist() for x in (got.unit, got.number, got.at, got.session)))) == expected
