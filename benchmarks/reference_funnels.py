"""The reference's funnels: ``fact_funnel`` and ``mart_funnel`` from the
definitions (``schemas.funnels``), over the reference's own gold inputs (the
``g_*`` tables of ``reference.sql``).

Written from docs/funnels.md, not from ``transforms.rules.defined_funnels``,
and sharing none of its logic: DuckDB selects each step's and exclusion's
records (``where`` and ``parent``, in SQL), then a plain walk reads each
unit's records instant by instant, as the doc words it: entries, the step
each order reaches, which record serves which step (tried by brute force
over the instant's records), exclusions. The mart is one GROUP BY with
``quantile_cont`` and filtered counts for the histogram. What the two share:
the definitions, the gold column names and the histogram's bucket edges.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from itertools import combinations, permutations

import duckdb
import pyarrow as pa

from schemas.funnels import ALL, EXPERIMENT_PREFIX, NONE, OTHER, BreaksOn, Condition, Count, Funnel, Order, Unit
from schemas.tables import GOLD, TIME_TO_CONVERT_EDGES_SECONDS

# The reference's gold input per record kind (reference.sql), its id column and time column.
SOURCES = {
    "session": ("g_sessions", "session_id", "session_start_time"),
    "view": ("g_views", "view_id", "view_timestamp"),
    "click": ("g_clicks", "click_id", "click_timestamp"),
    "event": ("g_events", "event_id", '"timestamp"'),
    "event_response": ("g_responses", "response_id", "sent_at"),
    "user_activity": ("g_activities", "activity_id", "activity_time"),
}
PARENT_KEY = {"event_response": "event_id", "user_activity": "response_id"}


def _literal(value) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def _table(funnel: Funnel, what: str) -> str:
    return f"fn_{funnel.name}__{what}"


def _condition_sql(con, funnel: Funnel, condition: Condition, step_tables: dict[str, str]) -> str:
    source, id_column, time_column = SOURCES[condition.record]
    have = {row[0] for row in con.execute(f"DESCRIBE {source}").fetchall()}
    unit = "user_id" if funnel.unit == Unit.USER else "session_id"
    where = [f"{unit} IS NOT NULL", f"{time_column} IS NOT NULL"]
    for column, values in condition.where:
        if column not in have:
            raise SystemExit(f"the reference keeps no {condition.record} column '{column}' (funnel {funnel.name})")
        where.append(f'"{column}" IN ({", ".join(_literal(v) for v in values)})')
    if condition.parent is not None:
        parent = step_tables[condition.parent]
        where.append(
            f"EXISTS (SELECT 1 FROM {parent} p WHERE p.unit = r.{unit} AND p.id = r.{PARENT_KEY[condition.record]})"
        )
    return (
        f"SELECT r.{unit} AS unit, r.{time_column} AS t, r.session_id AS session, "
        f"{_literal(condition.record)} AS kind, r.{id_column} AS id "
        f"FROM {source} r WHERE {' AND '.join(where)}"
    )


def _matches(con, funnel: Funnel) -> dict[str, str]:
    """One table of matching records per step and exclusion: (unit, t, session, kind, id)."""
    tables: dict[str, str] = {}
    for number, step in enumerate(funnel.steps, start=1):
        tables[step.name] = _table(funnel, f"m{number}")
        union = " UNION ALL ".join(_condition_sql(con, funnel, c, tables) for c in step.any_of)
        con.execute(f"CREATE TABLE {tables[step.name]} AS {union}")
    for number, exclusion in enumerate(funnel.exclusions, start=1):
        tables[exclusion.name] = _table(funnel, f"x{number}")
        union = " UNION ALL ".join(_condition_sql(con, funnel, c, tables) for c in exclusion.any_of)
        con.execute(f"CREATE TABLE {tables[exclusion.name]} AS {union}")
    return tables


# --- the walk -------------------------------------------------------------------------------------
@dataclass
class Record:
    """One silver record of a unit: its session, the steps (numbered from 0)
    and exclusions it matches."""

    session: str
    steps: set[int] = field(default_factory=set)
    exclusions: set[str] = field(default_factory=set)


Instant = tuple[int, list[Record]]  # a time (epoch micros) and the unit's records then


def _timelines(con, funnel: Funnel, tables: dict[str, str]) -> dict[str, list[Instant]]:
    """Per unit, its instants in time order, each with its records (a record is its kind and id)."""
    parts = [
        f"SELECT unit, t, session, kind, id, {k} AS step, NULL AS exclusion FROM {tables[step.name]}"
        for k, step in enumerate(funnel.steps)
    ]
    parts += [
        f"SELECT unit, t, session, kind, id, NULL, {_literal(x.name)} FROM {tables[x.name]}" for x in funnel.exclusions
    ]
    if funnel.strict_breaks_on == BreaksOn.ANY_RECORD:
        unit = "user_id" if funnel.unit == Unit.USER else "session_id"
        for record, (source, id_column, time_column) in SOURCES.items():
            parts.append(
                f"SELECT {unit}, {time_column}, session_id, {_literal(record)}, {id_column}, NULL, NULL "
                f"FROM {source} WHERE {unit} IS NOT NULL AND {time_column} IS NOT NULL"
            )
    units: dict[str, dict[int, dict[tuple, Record]]] = defaultdict(lambda: defaultdict(dict))
    for unit_id, t, session, kind, record_id, step, exclusion in con.execute(" UNION ALL ".join(parts)).fetchall():
        record = units[unit_id][t].setdefault((kind, record_id), Record(session))
        if step is not None:
            record.steps.add(step)
        if exclusion is not None:
            record.exclusions.add(exclusion)
    return {unit_id: [(t, list(instants[t].values())) for t in sorted(instants)] for unit_id, instants in units.items()}


def _fits(steps: list[int], records: list[Record]) -> bool:
    """Whether each of ``steps`` can have a record of its own among ``records``: every way to give them
    records is tried (records matching the same steps are alike, so a few of each kind are enough)."""
    alike: dict[frozenset, int] = defaultdict(int)
    pool = []
    for record in records:
        kind = frozenset(record.steps & set(steps))
        if kind and alike[kind] < len(steps):
            alike[kind] += 1
            pool.append(kind)
    return any(
        all(step in chosen for step, chosen in zip(steps, assignment)) for assignment in permutations(pool, len(steps))
    )


def _most_steps(records: list[Record], n: int) -> int:
    """The most distinct steps whose records can each be their own."""
    for size in range(n, 0, -1):
        if any(_fits(list(chosen), records) for chosen in combinations(range(n), size)):
            return size
    return 0


def _ordered(funnel: Funnel, inside: list[Instant], entry_at: int) -> list[int]:
    """Sequential or strict: each step at the earliest instant, at or after the previous step's, where
    every step of the entry at that instant can have a record of its own."""
    strict = funnel.order == Order.STRICT
    gap = None if funnel.step_gap_seconds is None else int(funnel.step_gap_seconds * 1_000_000)
    times = [entry_at]
    at_instant: dict[int, list[int]] = defaultdict(list)
    at_instant[entry_at].append(0)
    for k in range(1, len(funnel.steps)):
        since = times[-1] if funnel.steps[k].after_previous else entry_at
        found = None
        for t, records in inside:
            if t < since or (gap is not None and t > times[-1] + gap):
                continue
            if _fits(at_instant[t] + [k], records):
                found = t
                break
            if strict and t > times[-1] and _breaks(funnel, records, k - 1):
                break
        if found is None:
            break
        times.append(found)
        at_instant[found].append(k)
    return times


def _breaks(funnel: Funnel, records: list[Record], previous: int) -> bool:
    """Whether one of these records, coming between step ``previous`` and the next, breaks a strict order."""
    if funnel.strict_breaks_on == BreaksOn.ANY_RECORD:
        return any(previous not in r.steps for r in records)
    return any(r.steps and previous not in r.steps for r in records)


def _any_order(funnel: Funnel, inside: list[Instant]) -> list[int]:
    times: list[int] = []
    seen: list[Record] = []
    for t, records in inside:
        seen += records
        while len(times) < _most_steps(seen, len(funnel.steps)):
            times.append(t)
    return times


def _excluded(funnel: Funnel, inside: list[Instant], times: list[int]) -> bool:
    """Whether a record of an exclusion (and of no step) comes strictly between its steps; while its
    to_step is not reached, up to the window's end (``inside`` ends there)."""
    for exclusion in funnel.exclusions:
        if exclusion.from_step >= len(times):
            continue
        start = times[exclusion.from_step]
        for t, records in inside:
            before_end = t < times[exclusion.to_step] if exclusion.to_step < len(times) else True
            if start < t and before_end and any(exclusion.name in r.exclusions and not r.steps for r in records):
                return True
    return False


def _walk(funnel: Funnel, timeline: list[Instant]):
    """A unit's rows: (number, entry_at, window_end, session, reached times), excluded ones left out.
    count: entries: an entry at the first opener and at the first after each window's end;
    count: units: a try at every opener, and per UTC day the try reaching the most steps (the earliest)."""
    window = None if funnel.window_seconds is None else int(funnel.window_seconds * 1_000_000)
    any_step = funnel.order == Order.ANY

    def opens(record: Record) -> bool:
        return bool(record.steps) if any_step else 0 in record.steps

    rows, opened, last_end = [], 0, None
    for entry_at, records in timeline:
        if not any(opens(r) for r in records):
            continue
        if funnel.count == Count.ENTRIES and opened and (last_end is None or entry_at <= last_end):
            continue  # inside the previous entry's window (it holds its end), or no window: one entry
        opened += 1  # an entry left out by an exclusion keeps its number and its window
        last_end = None if window is None else entry_at + window
        session = min(r.session for r in records if opens(r))
        inside = [(t, rs) for t, rs in timeline if entry_at <= t and (last_end is None or t <= last_end)]
        times = _any_order(funnel, inside) if any_step else _ordered(funnel, inside, entry_at)
        if not _excluded(funnel, inside, times):
            rows.append((opened, entry_at, last_end, session, times))
    if funnel.count == Count.UNITS:
        best: dict[int, tuple] = {}
        for row in rows:  # in time order: a later try replaces only by reaching more
            day = row[1] // 86_400_000_000
            if day not in best or len(row[4]) > len(best[day][4]):
                best[day] = row
        rows = [(number, *best[day][1:]) for number, day in enumerate(sorted(best), start=1)]
    yield from rows


def _properties_sql() -> str:
    """First touch per session: platform, device type, country, the earliest
    view's landing page and referral, experiments as sorted compact JSON."""
    return """
        SELECT s.session_id, s.user_id AS session_user, s.platform, s.device_type,
               CASE WHEN u.country IS NOT NULL AND u.country <> '' THEN u.country
                    WHEN regexp_full_match(upper(strip_ws(s.geo_location)), '[A-Z]{2}')
                    THEN upper(strip_ws(s.geo_location)) END AS country,
               v.landing_page, CASE WHEN v.is_referral THEN 'referral' WHEN NOT v.is_referral THEN 'direct' END
                   AS referral,
               CASE WHEN s.experiments IS NOT NULL THEN '{' || coalesce((
                   SELECT string_agg(to_json(j.key) || ':' || j.value, ',' ORDER BY j.key)
                   FROM json_each(s.experiments) j), '') || '}' END AS experiments_json
        FROM g_sessions s LEFT JOIN cur_user u USING (user_id)
        LEFT JOIN (SELECT session_id, arg_min(landing_page, (view_timestamp, view_id)) AS landing_page,
                          arg_min(is_referral, (view_timestamp, view_id)) AS is_referral
                   FROM g_views GROUP BY session_id) v USING (session_id)"""


def fact_funnel(con: duckdb.DuckDBPyConnection, funnel: Funnel) -> None:
    """Appends ``funnel``'s rows to ``fact_funnel``."""
    tables = _matches(con, funnel)
    rows = [
        {
            "unit": unit_id,
            "n": n,
            "entry_at": at,
            "window_end": end,
            "session": session,
            "times": times,
            "gaps": [0] + [b - a for a, b in zip(times, times[1:])],  # micros from the step before
        }
        for unit_id, timeline in _timelines(con, funnel, tables).items()
        for n, at, end, session, times in _walk(funnel, timeline)
    ]
    walked = pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [
                ("unit", pa.string()),
                ("n", pa.int64()),
                ("entry_at", pa.int64()),
                ("window_end", pa.int64()),
                ("session", pa.string()),
                ("times", pa.list_(pa.int64())),
                ("gaps", pa.list_(pa.int64())),
            ]
        ),
    )
    con.register("walked", walked)
    n = len(funnel.steps)
    user = "p.unit" if funnel.unit == Unit.USER else "f.session_user"
    con.execute(f"""
        INSERT INTO fact_funnel BY NAME
        SELECT {_literal(funnel.name)} AS funnel, {_literal(str(funnel.unit))} AS unit, p.unit AS unit_id,
               p.n AS entry_number, {user} AS user_id, p.session AS session_id,
               make_timestamp(p.entry_at)::TIMESTAMPTZ AS entry_at, utc_date(p.entry_at) AS entry_date,
               make_timestamp(p.window_end)::TIMESTAMPTZ AS window_ends_at,
               len(p.times) AS steps_reached, len(p.times) = {n} AS completed,
               list_transform(p.times, lambda x: make_timestamp(x)::TIMESTAMPTZ) AS reached_at,
               list_transform(p.times, lambda x: (x - p.entry_at) / 1e6) AS seconds_to_step,
               list_transform(p.gaps, lambda x: x / 1e6) AS seconds_from_previous,
               f.platform, f.device_type, f.country, f.landing_page, f.referral, f.experiments_json
        FROM walked p LEFT JOIN first_touch f ON f.session_id = p.session""")
    con.unregister("walked")
    for name in [r[0] for r in con.execute("SHOW TABLES").fetchall()]:
        if name.startswith(f"fn_{funnel.name}__"):
            con.execute(f"DROP TABLE {name}")


def _breakdown_sql(funnel: Funnel, breakdown: str) -> str:
    if breakdown == ALL:
        return _literal(ALL)
    if breakdown.startswith(EXPERIMENT_PREFIX):
        name = breakdown[len(EXPERIMENT_PREFIX) :].replace('"', '\\"')
        return f"coalesce(json_extract_string(experiments_json, '$.\"{name}\"'), {_literal(NONE)})"
    return f"coalesce({breakdown}, {_literal(NONE)})"


def mart_funnel(con: duckdb.DuckDBPyConnection, funnels: tuple[Funnel, ...], clock: int) -> None:
    """``mart_funnel`` from the reference's ``fact_funnel``."""
    values = []
    for funnel in funnels:
        for breakdown in (ALL, *funnel.breakdowns):
            values.append(f"""
                SELECT funnel, unit_id, entry_number, {_literal(breakdown)} AS breakdown,
                       {_breakdown_sql(funnel, breakdown)} AS raw_value, {funnel.breakdown_limit} AS keep,
                       {_literal(breakdown)} = {_literal(ALL)} AS is_all
                FROM fact_funnel WHERE funnel = {_literal(funnel.name)}""")
    steps = " UNION ALL ".join(
        f"SELECT {_literal(f.name)} AS funnel, {k} AS step_number, {_literal(f.step_label(k))} AS step_name"
        for f in funnels
        for k in range(1, len(f.steps) + 1)
    )
    edges = TIME_TO_CONVERT_EDGES_SECONDS
    by_unit = [_literal(f.name) for f in funnels if f.count == Count.UNITS]
    units_counted = f"funnel IN ({', '.join(by_unit)})" if by_unit else "FALSE"

    def histogram(of: str) -> str:
        buckets = [f"{of} < {edges[1]}"] + [
            f"{of} >= {low} AND {of} < {high}" for low, high in zip(edges[1:-1], edges[2:])
        ]
        buckets.append(f"{of} >= {edges[-1]}")
        return ", ".join(f"count(*) FILTER (WHERE {b})" for b in buckets)

    con.execute(f"""
        CREATE TABLE mart_funnel AS
        WITH raw AS ({" UNION ALL ".join(values)}),
        counted AS (
            SELECT funnel, breakdown, raw_value, count(*) AS entries, any_value(keep) AS keep
            FROM raw WHERE NOT is_all GROUP BY funnel, breakdown, raw_value),
        ranked AS (
            SELECT *, row_number() OVER (PARTITION BY funnel, breakdown ORDER BY entries DESC, raw_value) AS place
            FROM counted),
        valued AS (
            SELECT r.funnel, r.unit_id, r.entry_number, r.breakdown,
                   CASE WHEN r.is_all OR k.place <= k.keep THEN r.raw_value ELSE {_literal(OTHER)} END AS value
            FROM raw r LEFT JOIN ranked k USING (funnel, breakdown, raw_value)),
        entries AS (
            SELECT v.*, e.entry_date, e.entry_at, e.steps_reached, e.seconds_to_step, e.seconds_from_previous,
                   e.window_ends_at IS NOT NULL AND {clock} <= epoch_us(e.window_ends_at) AS open
            FROM valued v JOIN fact_funnel e USING (funnel, unit_id, entry_number)),
        cells AS (
            SELECT e.*, g.grain,
                   CASE g.grain WHEN 'day' THEN e.entry_date ELSE date_trunc(g.grain, e.entry_date)::DATE END
                       AS cohort_start,
                   s.step_number, s.step_name, e.seconds_to_step[s.step_number] AS seconds,
                   e.seconds_from_previous[s.step_number] AS previous
            FROM entries e CROSS JOIN (VALUES ('day'), ('week'), ('month')) g(grain)
            JOIN ({steps}) s USING (funnel)),
        kept AS (
            -- count: units: a week or month counts each unit once, on its row reaching the most steps
            SELECT * FROM cells
            QUALIFY grain = 'day' OR NOT {units_counted}
                OR row_number() OVER (PARTITION BY funnel, breakdown, step_number, unit_id, grain, cohort_start
                                      ORDER BY steps_reached DESC, entry_at) = 1)
        SELECT funnel, grain AS cohort_grain, cohort_start, breakdown, value AS breakdown_value, step_number,
               step_name, count(*) AS entered, count(seconds) AS converted,
               count(seconds) / count(*) AS conversion_rate,
               count(*) FILTER (WHERE seconds IS NULL AND open) AS pending,
               count(*) FILTER (WHERE seconds IS NULL AND NOT open) AS dropped,
               quantile_cont(seconds, 0.5) AS median_seconds_to_convert,
               quantile_cont(seconds, 0.9) AS p90_seconds_to_convert,
               [{histogram("seconds")}] AS time_to_convert_histogram,
               quantile_cont(previous, 0.5) AS median_seconds_from_previous,
               quantile_cont(previous, 0.9) AS p90_seconds_from_previous,
               [{histogram("previous")}] AS time_from_previous_histogram
        FROM kept GROUP BY ALL""")


def build(con: duckdb.DuckDBPyConnection, funnels: tuple[Funnel, ...], clock: int) -> None:
    """``fact_funnel`` and ``mart_funnel`` of every definition (after reference.sql)."""
    create_fact_table(con)
    con.execute(f"CREATE TABLE first_touch AS {_properties_sql()}")
    for funnel in funnels:
        fact_funnel(con, funnel)
    mart_funnel(con, funnels, clock)


def create_fact_table(con: duckdb.DuckDBPyConnection) -> None:
    """An empty ``fact_funnel`` that ``fact_funnel`` appends to."""
    columns = ", ".join(f"{c.name} {_duck_type(c)}" for c in GOLD["fact_funnel"].columns)
    con.execute(f"CREATE TABLE fact_funnel ({columns})")


def _duck_type(column) -> str:
    base = {
        "STRING": "VARCHAR",
        "INT64": "BIGINT",
        "FLOAT64": "DOUBLE",
        "TIMESTAMP": "TIMESTAMPTZ",
        "DATE": "DATE",
        "BOOL": "BOOLEAN",
    }[str(column.type)]
    return base + "[]" if column.repeated else base
