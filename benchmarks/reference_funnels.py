"""The reference's funnels: ``fact_funnel`` and ``mart_funnel`` as DuckDB SQL
generated from the definitions (``schemas.funnels``), over the reference's
own gold inputs (the ``g_*`` tables of ``reference.sql``).

Written from the definitions' documented meaning, set-based, not from
``transforms.rules.defined_funnels``: entries are a recursive CTE (each one
opens at the first opener at or after the previous window's end), a strict
funnel is read from the runs of its step records in time order (the runs
after the entry must be steps 1, 2, 3, ..), an any-order funnel sorts each
step's first time, and the mart is one GROUP BY with ``quantile_cont`` and
filtered counts for the histogram. What the two share: the definitions, the
gold column names and the histogram's bucket edges.
"""

from __future__ import annotations

import duckdb

from schemas.funnels import ALL, EXPERIMENT_PREFIX, NONE, OTHER, Condition, Funnel, Order, Unit
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
FAR = 1 << 62  # an open window's end


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
        f"SELECT r.{unit} AS unit, r.{time_column} AS t, r.session_id AS session, r.{id_column} AS id "
        f"FROM {source} r WHERE {' AND '.join(where)}"
    )


def _matches(con, funnel: Funnel) -> dict[str, str]:
    """One table of matching records per step and exclusion: (unit, t, session, id)."""
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


def _entries(con, funnel: Funnel, openers: str) -> str:
    """(unit, n, entry_at, window_end, session): the first opener of a unit,
    then the first at or after each window's end."""
    entries = _table(funnel, "entries")
    window = None if funnel.window_seconds is None else int(funnel.window_seconds * 1_000_000)
    again = (
        ""
        if window is None
        else f"""UNION ALL
            SELECT e.unit, e.n + 1, min(o.t) FROM e JOIN {openers} o ON o.unit = e.unit AND o.t >= e.t + {window}
            GROUP BY e.unit, e.n"""
    )
    con.execute(f"""
        CREATE TABLE {entries} AS
        WITH RECURSIVE e(unit, n, t) AS (
            SELECT unit, 1, min(t) FROM {openers} GROUP BY unit
            {again})
        SELECT e.unit, e.n, e.t AS entry_at, {"NULL::BIGINT" if window is None else f"e.t + {window}"} AS window_end,
               min(o.session) AS session
        FROM e JOIN {openers} o ON o.unit = e.unit AND o.t = e.t
        GROUP BY ALL""")
    return entries


def _sequential(con, funnel: Funnel, entries: str, tables: dict[str, str]) -> str:
    gap = None if funnel.step_gap_seconds is None else int(funnel.step_gap_seconds * 1_000_000)
    previous = entries
    con.execute(f"CREATE TABLE {_table(funnel, 's1')} AS SELECT *, entry_at AS t1 FROM {entries}")
    previous = _table(funnel, "s1")
    for k, step in enumerate(funnel.steps[1:], start=2):
        cond = ["m.unit = p.unit", f"p.t{k - 1} IS NOT NULL", f"m.t <= coalesce(p.window_end, {FAR})"]
        cond.append(f"m.t >= p.t{k - 1}" if step.after_previous else "m.t >= p.entry_at")
        if gap is not None:
            cond.append(f"m.t <= p.t{k - 1} + {gap}")
        table = _table(funnel, f"s{k}")
        con.execute(f"""
            CREATE TABLE {table} AS
            SELECT p.*, (SELECT min(m.t) FROM {tables[step.name]} m WHERE {" AND ".join(cond)}) AS t{k}
            FROM {previous} p""")
        previous = table
    return previous


def _strict(con, funnel: Funnel, entries: str, tables: dict[str, str]) -> str:
    """The entry's step records from the entry on, in (time, step) order; a
    run is a stretch of one step. The runs must read steps 2, 3, ..: run j
    reaches step j + 1 when every run up to it did, in its gap."""
    gap = None if funnel.step_gap_seconds is None else int(funnel.step_gap_seconds * 1_000_000)
    labelled = " UNION ALL ".join(
        f"SELECT unit, t, {k} AS k FROM {tables[step.name]}" for k, step in enumerate(funnel.steps)
    )
    runs = _table(funnel, "runs")
    con.execute(f"""
        CREATE TABLE {runs} AS
        WITH walk AS (
            SELECT e.unit, e.n, s.t, s.k,
                   s.k <> coalesce(lag(s.k) OVER (PARTITION BY e.unit, e.n ORDER BY s.t, s.k), 0) AS new_run
            FROM {entries} e JOIN ({labelled}) s ON s.unit = e.unit
            WHERE (s.t > e.entry_at OR (s.t = e.entry_at AND s.k > 0)) AND s.t <= coalesce(e.window_end, {FAR})),
        starts AS (
            SELECT unit, n, t, k, row_number() OVER (PARTITION BY unit, n ORDER BY t, k) AS run
            FROM walk WHERE new_run),
        chained AS (
            SELECT s.*, lag(s.t) OVER (PARTITION BY s.unit, s.n ORDER BY s.run) AS previous_t FROM starts s)
        SELECT c.unit, c.n, c.run, c.t,
               bool_and(c.k = c.run {"" if gap is None else f"AND c.t <= coalesce(c.previous_t, e.entry_at) + {gap}"})
                   OVER (PARTITION BY c.unit, c.n ORDER BY c.run ROWS UNBOUNDED PRECEDING) AS valid
        FROM chained c JOIN {entries} e USING (unit, n)""")
    reached = ", ".join(
        f"(SELECT r.t FROM {runs} r WHERE r.unit = e.unit AND r.n = e.n AND r.run = {k - 1} AND r.valid) AS t{k}"
        for k in range(2, len(funnel.steps) + 1)
    )
    table = _table(funnel, "reached")
    con.execute(f"CREATE TABLE {table} AS SELECT e.*, e.entry_at AS t1, {reached} FROM {entries} e")
    return table


def _any_order(con, funnel: Funnel, entries: str, tables: dict[str, str]) -> str:
    firsts = ", ".join(
        f"(SELECT min(m.t) FROM {tables[step.name]} m WHERE m.unit = e.unit AND m.t >= e.entry_at "
        f"AND m.t <= coalesce(e.window_end, {FAR}))"
        for step in funnel.steps
    )
    table = _table(funnel, "reached")
    done = ", ".join(f"times[{k}] AS t{k}" for k in range(1, len(funnel.steps) + 1))
    con.execute(f"""
        CREATE TABLE {table} AS
        SELECT * EXCLUDE (times), {done}
        FROM (SELECT e.*, list_sort(list_filter([{firsts}], lambda x: x IS NOT NULL)) AS times FROM {entries} e)""")
    return table


def _excluded_sql(funnel: Funnel, tables: dict[str, str]) -> str:
    """A predicate on a reached row (alias p): no exclusion record between its steps."""
    parts = []
    for exclusion in funnel.exclusions:
        start, end = f"p.t{exclusion.from_step + 1}", f"p.t{exclusion.to_step + 1}"
        parts.append(
            f"NOT EXISTS (SELECT 1 FROM {tables[exclusion.name]} x WHERE x.unit = p.unit AND {start} IS NOT NULL "
            f"AND x.t >= {start} AND x.t <= coalesce({end}, p.window_end, {FAR}))"
        )
    return " AND ".join(parts) or "TRUE"


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
    openers = tables[funnel.steps[0].name]
    if funnel.order == Order.ANY:
        openers = _table(funnel, "openers")
        union = " UNION ALL ".join(f"SELECT * FROM {tables[s.name]}" for s in funnel.steps)
        con.execute(f"CREATE TABLE {openers} AS {union}")
    entries = _entries(con, funnel, openers)
    compute = {Order.SEQUENTIAL: _sequential, Order.STRICT: _strict, Order.ANY: _any_order}[funnel.order]
    reached = compute(con, funnel, entries, tables)
    n = len(funnel.steps)
    user = "p.unit" if funnel.unit == Unit.USER else "f.session_user"
    con.execute(f"""
        INSERT INTO fact_funnel BY NAME
        WITH kept AS (SELECT * FROM {reached} p WHERE {_excluded_sql(funnel, tables)}),
        listed AS (
            SELECT p.*, list_filter([{", ".join(f"t{k}" for k in range(1, n + 1))}], lambda x: x IS NOT NULL) AS times
            FROM kept p)
        SELECT {_literal(funnel.name)} AS funnel, {_literal(str(funnel.unit))} AS unit, p.unit AS unit_id,
               p.n AS entry_number, {user} AS user_id, p.session AS session_id,
               make_timestamp(p.entry_at)::TIMESTAMPTZ AS entry_at, utc_date(p.entry_at) AS entry_date,
               make_timestamp(p.window_end)::TIMESTAMPTZ AS window_ends_at,
               len(p.times) AS steps_reached, len(p.times) = {n} AS completed,
               list_transform(p.times, lambda x: make_timestamp(x)::TIMESTAMPTZ) AS reached_at,
               list_transform(p.times, lambda x: (x - p.entry_at) / 1e6) AS seconds_to_step,
               f.platform, f.device_type, f.country, f.landing_page, f.referral, f.experiments_json
        FROM listed p LEFT JOIN first_touch f ON f.session_id = p.session""")
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
    buckets = [f"seconds < {edges[1]}"] + [
        f"seconds >= {low} AND seconds < {high}" for low, high in zip(edges[1:-1], edges[2:])
    ]
    buckets.append(f"seconds >= {edges[-1]}")
    histogram = ", ".join(f"count(*) FILTER (WHERE {b})" for b in buckets)
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
            SELECT v.*, e.entry_date, e.seconds_to_step,
                   e.window_ends_at IS NOT NULL AND {clock} < epoch_us(e.window_ends_at) AS open
            FROM valued v JOIN fact_funnel e USING (funnel, unit_id, entry_number)),
        cells AS (
            SELECT e.*, g.grain,
                   CASE g.grain WHEN 'day' THEN e.entry_date ELSE date_trunc(g.grain, e.entry_date)::DATE END
                       AS cohort_start,
                   s.step_number, s.step_name, e.seconds_to_step[s.step_number] AS seconds
            FROM entries e CROSS JOIN (VALUES ('day'), ('week'), ('month')) g(grain)
            JOIN ({steps}) s USING (funnel))
        SELECT funnel, grain AS cohort_grain, cohort_start, breakdown, value AS breakdown_value, step_number,
               step_name, count(*) AS entered, count(seconds) AS converted,
               count(seconds) / count(*) AS conversion_rate,
               count(*) FILTER (WHERE seconds IS NULL AND open) AS pending,
               count(*) FILTER (WHERE seconds IS NULL AND NOT open) AS dropped,
               quantile_cont(seconds, 0.5) AS median_seconds_to_convert,
               quantile_cont(seconds, 0.9) AS p90_seconds_to_convert,
               [{histogram}] AS time_to_convert_histogram
        FROM cells GROUP BY ALL""")


def build(con: duckdb.DuckDBPyConnection, funnels: tuple[Funnel, ...], clock: int) -> None:
    """``fact_funnel`` and ``mart_funnel`` of every definition (after reference.sql)."""
    columns = ", ".join(f"{c.name} {_duck_type(c)}" for c in GOLD["fact_funnel"].columns)
    con.execute(f"CREATE TABLE fact_funnel ({columns})")
    con.execute(f"CREATE TABLE first_touch AS {_properties_sql()}")
    for funnel in funnels:
        fact_funnel(con, funnel)
    mart_funnel(con, funnels, clock)


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
