"""Saved SQL for the use cases, created as views in BigQuery dataset ``gold``.

Each view reads the gold tables only, so it is as current as the last
``gold_daily`` run. ``{project}`` is replaced by the project id.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class View:
    name: str
    description: str
    sql: str


FUNNEL_DROPOFF = View(
    "v_funnel_dropoff",
    "Sessions reaching each funnel stage (all time), the rate from the previous stage and how many dropped there.",
    """
WITH per_stage AS (
  SELECT stage_number, stage_name, COUNT(*) AS sessions
  FROM `{project}.gold.fact_funnel_stage`
  GROUP BY stage_number, stage_name
)
SELECT s.stage_number, s.stage_name, s.sessions,
       SAFE_DIVIDE(s.sessions, p.sessions) AS rate_from_previous_stage,
       p.sessions - s.sessions AS dropped_since_previous_stage
FROM per_stage AS s
LEFT JOIN per_stage AS p ON p.stage_number = s.stage_number - 1
""",
)

CONVERSION_TREND = View(
    "v_conversion_trend",
    "Daily conversion (payment / browse sessions) per platform, with the trailing 7-day rate.",
    """
SELECT period_start AS day, platform, sessions_browse, sessions_payment, conversion_rate,
       SAFE_DIVIDE(
         SUM(sessions_payment) OVER (PARTITION BY platform ORDER BY period_start
                                     ROWS BETWEEN 6 PRECEDING AND CURRENT ROW),
         SUM(sessions_browse) OVER (PARTITION BY platform ORDER BY period_start
                                    ROWS BETWEEN 6 PRECEDING AND CURRENT ROW)) AS conversion_rate_7d
FROM `{project}.gold.mart_conversion_rate`
WHERE period_grain = 'day'
""",
)

VIEWS = {v.name: v for v in (FUNNEL_DROPOFF, CONVERSION_TREND)}
