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
""")

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
""")

CART_ABANDONERS = View(
    "v_cart_abandoners",
    "Active users with sessions that reached add_to_cart but not payment_successful, newest first "
    "(per session; the contract's mart_retargeting adds a 24-hour rule across sessions).",
    """
SELECT cart.user_id, u.email_hash, u.country,
       COUNT(*) AS abandoned_sessions, MAX(cart.reached_at) AS last_cart_at
FROM `{project}.gold.fact_funnel_stage` AS cart
JOIN `{project}.gold.dim_user` AS u ON u.user_id = cart.user_id
LEFT JOIN `{project}.gold.fact_funnel_stage` AS paid
  ON paid.session_id = cart.session_id AND paid.stage_number = 3
WHERE cart.stage_number = 2 AND paid.session_id IS NULL AND u.is_active
GROUP BY cart.user_id, u.email_hash, u.country
""")

VIEWS = {v.name: v for v in (FUNNEL_DROPOFF, CONVERSION_TREND, CART_ABANDONERS)}
