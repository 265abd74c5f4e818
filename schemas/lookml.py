"""A LookML project over the gold tables and the lake's health, derived from ``schemas.tables``: ``looker/``.

* a view per gold table and per health table (``ops.dq_results``,
  ``ops.dq_completeness``, ``ops.metric_revisions``): a dimension (or, for dates and times, a dimension
  group) per column with the schema's description; measures for unique
  users and sessions (the contract's "Unique counts": distinct non-null
  ``user_id``, distinct ``session_id``), for the funnel's stage sessions and
  conversion (``sessions reaching payment_successful / sessions reaching
  browse``, as ``mart_conversion_rate.conversion_rate``), and sums of the
  marts' counts;
* a model with an explore per use case.

Every dimension and measure is SQL over the view's own columns
(``${TABLE}.column``), never over another field, so what it counts is
readable in one place. The views read ``gold.TABLE`` (``ops.TABLE``): the dataset of the
Looker connection's project (its name: ``CONNECTION``). Marts hold rows per
``period_grain`` and per ``platform`` including ``all``, so their explores
filter one grain and one platform by default: summing over grains or over
``all`` and the platforms would count sessions twice.

``python -m schemas.generate`` writes the files; the tests fail when they
drift from the schemas. ``lkml`` is a development dependency
(requirements-dev.txt): the pipelines never import this module.
"""

from __future__ import annotations

import lkml

from schemas.table import BOOL, DATE, FLOAT64, INT64, TIMESTAMP, Column, Table
from schemas.tables import (
    CONVERSION_RATES,
    DIM_USER,
    DQ_COMPLETENESS,
    DQ_RESULTS,
    FACT_FUNNEL,
    FACT_FUNNEL_STAGE,
    FACT_USER_ACTIVITY,
    GOLD,
    GOLD_ROW_KEYS,
    MART_AB_TEST,
    MART_BARCODE_ACTIVITY,
    MART_CONVERSION_RATE,
    MART_FUNNEL,
    MART_RETARGETING,
    METRIC_REVISIONS,
    OPS_ALERTS,
    STAGE_SESSION_COLUMNS,
)
from schemas.vocabulary import STAGES, Stage

ROOT = "looker"
CONNECTION = "funnel_lakehouse"
PROJECT_NAME = "funnel_lakehouse"
MODEL = "funnel_lakehouse"

# sessions_<stage> column of the marts -> the funnel stage it counts
_STAGE_OF_COLUMN = {stage.sessions_column: stage.value for stage in Stage}

_DATE_TIMEFRAMES = ["date", "week", "month", "quarter", "year"]
_TIME_TIMEFRAMES = ["raw", "time", "date", "week", "month", "quarter", "year"]
_PERCENT = "percent_2"

# A view per gold table, and per table of the lake's health (ops): checks, completeness, revisions.
LOOKML_TABLES = (*GOLD.values(), DQ_RESULTS, DQ_COMPLETENESS, METRIC_REVISIONS)


def _column_sql(c: Column) -> str:
    return f"${{TABLE}}.{c.name}"


def _field(c: Column) -> tuple[str, dict]:
    """("dimensions" | "dimension_groups", the field) of one column."""
    base = {"name": c.name, "description": c.description}
    if c.repeated:
        return "dimensions", {**base, "type": "string", "sql": f"ARRAY_TO_STRING({_column_sql(c)}, ', ')"}
    if c.type in (DATE, TIMESTAMP):
        timeframes = _DATE_TIMEFRAMES if c.type == DATE else _TIME_TIMEFRAMES
        group = {**base, "type": "time", "timeframes": timeframes, "sql": _column_sql(c)}
        if c.type == DATE:
            group.update(datatype="date", convert_tz="no")
        return "dimension_groups", group
    kind = {INT64: "number", FLOAT64: "number", BOOL: "yesno"}.get(c.type, "string")
    return "dimensions", {**base, "type": kind, "sql": _column_sql(c)}


def _primary_key(table: Table) -> dict:
    columns = GOLD_ROW_KEYS.get(table.name) or table.key
    if len(columns) == 1:
        return {
            "name": "pk",
            "hidden": "yes",
            "primary_key": "yes",
            "type": "string",
            "description": f"Row key: {columns[0]}.",
            "sql": f"${{TABLE}}.{columns[0]}",
        }
    parts = ", '|', ".join(f"CAST(${{TABLE}}.{c} AS STRING)" for c in columns)
    return {
        "name": "pk",
        "hidden": "yes",
        "primary_key": "yes",
        "type": "string",
        "description": "Row key: " + ", ".join(columns) + ".",
        "sql": f"CONCAT({parts})",
    }


def _ratio(numerator: str, denominator: str) -> str:
    return f"SAFE_DIVIDE({numerator}, {denominator})"


def _stage_sessions(stage: str) -> str:
    return f"COUNT(DISTINCT IF(${{TABLE}}.stage_name = '{stage}', ${{TABLE}}.session_id, NULL))"


def measures(table: Table) -> list[dict]:
    names = set(table.column_names)
    out = []
    if "user_id" in names:
        out.append(
            {
                "name": "unique_users",
                "type": "count_distinct",
                "sql": "${TABLE}.user_id",
                "description": "Distinct non-null user_id: anonymous sessions count as sessions, not users.",
            }
        )
    if "session_id" in names:
        out.append(
            {
                "name": "unique_sessions",
                "type": "count_distinct",
                "sql": "${TABLE}.session_id",
                "description": "Distinct session_id.",
            }
        )
    if table is FACT_FUNNEL_STAGE:
        for stage in STAGES:
            out.append(
                {
                    "name": f"sessions_{stage}",
                    "type": "number",
                    "sql": _stage_sessions(stage),
                    "description": f"Sessions reaching {stage} (the funnel is sequential).",
                }
            )
        for rate, columns in CONVERSION_RATES.items():
            num, den = (_STAGE_OF_COLUMN[c] for c in columns)
            out.append(
                {
                    "name": rate,
                    "type": "number",
                    "value_format_name": _PERCENT,
                    "sql": _ratio(_stage_sessions(num), _stage_sessions(den)),
                    "description": f"Sessions reaching {num} / sessions reaching {den}; null when none reach {den}.",
                }
            )
    elif table in (MART_CONVERSION_RATE, MART_AB_TEST):
        counted = ("sessions",) + STAGE_SESSION_COLUMNS if table is MART_AB_TEST else STAGE_SESSION_COLUMNS
        for c in table.columns:
            if c.name in counted:
                out.append(
                    {"name": f"total_{c.name}", "type": "sum", "sql": _column_sql(c), "description": c.description}
                )
        # mart_ab_test's conversion_rate: sessions_payment / sessions (schemas.tables)
        rates = (
            CONVERSION_RATES if table is MART_CONVERSION_RATE else {"conversion_rate": ("sessions_payment", "sessions")}
        )
        for rate, (num, den) in rates.items():
            out.append(
                {
                    "name": f"overall_{rate}",
                    "type": "number",
                    "value_format_name": _PERCENT,
                    "sql": _ratio(f"SUM(${{TABLE}}.{num})", f"SUM(${{TABLE}}.{den})"),
                    "description": f"{rate} over the selected rows: sums of the counts divided, not rates averaged.",
                }
            )
    elif table is DQ_RESULTS:
        out += [
            {
                "name": "results",
                "type": "count_distinct",
                "sql": "${TABLE}.result_id",
                "description": "Check results (one per check, subject and run).",
            },
            {
                "name": "failures",
                "type": "number",
                "sql": "COUNTIF(${TABLE}.verdict = 'fail')",
                "description": "Results that failed.",
            },
            {
                "name": "blocking_failures",
                "type": "number",
                "sql": "COUNTIF(${TABLE}.verdict = 'fail' AND ${TABLE}.severity = 'block')",
                "description": "Failed results of blocking checks: gold was not released.",
            },
        ]
    elif table is DQ_COMPLETENESS:
        out += [
            {
                "name": "total_received",
                "type": "sum",
                "sql": "${TABLE}.received",
                "description": "Records received by the estimate's time.",
            },
            {
                "name": "share_received",
                "type": "number",
                "value_format_name": _PERCENT,
                "sql": _ratio("SUM(${TABLE}.received)", "SUM(${TABLE}.estimated_total)"),
                "description": "Received over the estimated totals of the selected days (pick one as_of).",
            },
        ]
    elif table is METRIC_REVISIONS:
        out += [
            {
                "name": "revisions",
                "type": "count",
                "sql": "${TABLE}.metric",
                "description": "Headline values a release changed.",
            },
            {
                "name": "largest_change",
                "type": "max",
                "sql": "ABS(${TABLE}.value - ${TABLE}.previous_value)",
                "description": "The largest absolute change of the selected revisions.",
            },
        ]
    elif table is OPS_ALERTS:
        out.append(
            {"name": "alerts", "type": "count_distinct", "sql": "${TABLE}.alert_id", "description": "Distinct alerts."}
        )
    else:
        # the other tables' counts add up across rows (per-user days, periods, carts)
        for c in table.columns:
            if (
                c.type in (INT64, FLOAT64)
                and not c.repeated
                and c.name not in ("stage_number", "furthest_stage_number", "median_seconds_payment_to_scan")
            ):
                out.append(
                    {"name": f"total_{c.name}", "type": "sum", "sql": _column_sql(c), "description": c.description}
                )
    return out


def view(table: Table) -> dict:
    fields = {"dimensions": [_primary_key(table)], "dimension_groups": []}
    for c in table.columns:
        kind, field = _field(c)
        fields[kind].append(field)
    return {
        "name": table.name,
        "sql_table_name": f"{table.layer}.{table.name}",
        **{k: v for k, v in fields.items() if v},
        "measures": measures(table),
    }


def _join(table: Table, on: str) -> dict:
    return {
        "name": table.name,
        "type": "left_outer",
        "relationship": "many_to_one",
        "sql_on": f"${{{{base}}.{on}}} = ${{{table.name}.{on}}}",
    }


_PERIOD_FILTERS = [{"period_grain": "day"}, {"platform": "all"}]


def explores() -> list[dict]:
    """One per use case."""

    def explore(name, label, base: Table, description, joins=(), always=None):
        out = {
            "name": name,
            "label": label,
            "view_name": base.name,
            "description": f"{description}. {base.name}: {base.description}",
        }
        if always:
            out["always_filter"] = {"filters": [{f"{base.name}.{k}": v} for f in always for k, v in f.items()]}
        if joins:
            out["joins"] = [{**j, "sql_on": j["sql_on"].replace("{base}", base.name)} for j in joins]
        return out

    return [
        explore(
            "funnel_conversion",
            "Funnel conversion",
            MART_CONVERSION_RATE,
            "Conversion per day, month or year and platform ('all' for every platform)",
            always=_PERIOD_FILTERS,
        ),
        explore(
            "funnel_sessions",
            "Funnel sessions",
            FACT_FUNNEL_STAGE,
            "Sessions by the stages they reached, with their users",
            joins=[_join(DIM_USER, "user_id")],
        ),
        explore(
            "barcode_activity",
            "Barcode activity",
            MART_BARCODE_ACTIVITY,
            "Scans at the venue per period and platform",
            always=_PERIOD_FILTERS,
        ),
        explore(
            "user_activity",
            "User activity",
            FACT_USER_ACTIVITY,
            "What each user did per day",
            joins=[_join(DIM_USER, "user_id")],
        ),
        explore("users", "Users", DIM_USER, "Every user and how far they got"),
        explore(
            "retargeting",
            "Retargeting audience",
            MART_RETARGETING,
            "Carts without a payment within 24 hours",
            joins=[_join(DIM_USER, "user_id")],
        ),
        explore("ab_tests", "A/B tests", MART_AB_TEST, "Experiment readouts: conversion, lift, significance, SRM"),
        explore(
            "defined_funnels",
            "Defined funnels",
            MART_FUNNEL,
            "Your funnels (schemas/funnels.yaml) per entry cohort, breakdown value and step: conversion, "
            "pending apart from dropped, time to convert",
            always=[{"cohort_grain": "week"}, {"breakdown": "all"}],
        ),
        explore(
            "defined_funnel_journeys",
            "Defined funnel journeys",
            FACT_FUNNEL,
            "Every entry into your funnels and the steps it reached, with its user",
            joins=[_join(DIM_USER, "user_id")],
        ),
        explore(
            "data_quality",
            "Data quality",
            DQ_RESULTS,
            "Every check's result per run: observed value, band and verdict (filter verdict = fail)",
        ),
        explore(
            "data_completeness",
            "Data completeness",
            DQ_COMPLETENESS,
            "How complete each recent event day was, estimate by estimate",
        ),
        explore(
            "metric_revisions",
            "Metric revisions",
            METRIC_REVISIONS,
            "Headline values per day that a gold release changed, with the late records behind them",
        ),
        explore(
            "operational_alerts",
            "Operational alerts",
            OPS_ALERTS,
            "Failed confirmation emails, failure-rate spikes, payments without a confirmation",
        ),
    ]


HEADER = "# Generated by `make generate` (python -m schemas.generate) from schemas/tables.py; do not edit.\n"


def files() -> dict[str, str]:
    """Path (from the repository root) -> LookML text."""
    out = {
        f"{ROOT}/manifest.lkml": HEADER + lkml.dump({"project_name": PROJECT_NAME}) + "\n",
        f"{ROOT}/{MODEL}.model.lkml": HEADER
        + lkml.dump({"connection": CONNECTION, "includes": ["/views/*.view.lkml"], "explores": explores()})
        + "\n",
    }
    for table in LOOKML_TABLES:
        out[f"{ROOT}/views/{table.name}.view.lkml"] = HEADER + lkml.dump({"views": [view(table)]}) + "\n"
    return out
