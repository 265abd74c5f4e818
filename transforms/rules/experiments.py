"""A/B test readout (``mart_ab_test``): per (experiment, variant) session and
stage counts -> conversion, lift, confidence interval, p-value and
sample-ratio mismatch, as experiment platforms (Statsig, Optimizely) report
them.

The unit is a session with an assignment (the session record's
``experiments``); the metric is reaching ``payment_successful`` in it.
Statistics (distributions from ``scipy.stats``):

* ``p_value``: two-sided two-proportion z-test against the control, pooled
  variance (``statsmodels.stats.proportion.proportions_ztest``);
* ``ci_low``/``ci_high``: 95% Wald interval of the difference, unpooled
  (``confint_proportions_2indep(method="wald")``);
* ``srm_p_value``: chi-square goodness of fit of the variants' session
  counts against an even split (``scipy.stats.chisquare``); ``srm_flag``
  when below ``SRM_THRESHOLD``.

Undefined statistics (no control, a zero variance) are null, not NaN.
"""

from __future__ import annotations

import math

from scipy import stats

from schemas.tables import STAGE_SESSION_COLUMNS

CONTROL_NAMES = ("control", "A")  # the control: the variant named 'control', else 'A'
CONFIDENCE = 0.95
SRM_THRESHOLD = 0.001
STAGE_COLUMNS = STAGE_SESSION_COLUMNS


def control_of(variants) -> str | None:
    for name in CONTROL_NAMES:
        if name in variants:
            return name
    return None


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def z_test(x1: int, n1: int, x2: int, n2: int) -> float | None:
    """Two-sided p-value of p1 == p2, pooled variance."""
    if not n1 or not n2:
        return None
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return None
    return _finite(2 * stats.norm.sf(abs((x1 / n1 - x2 / n2) / se)))


def diff_interval(x1: int, n1: int, x2: int, n2: int, confidence: float = CONFIDENCE) -> tuple:
    """Wald interval of p1 - p2, unpooled."""
    if not n1 or not n2:
        return None, None
    p1, p2 = x1 / n1, x2 / n2
    half = stats.norm.ppf(0.5 + confidence / 2) * math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    return _finite(p1 - p2 - half), _finite(p1 - p2 + half)


def srm_p_value(sessions: list[int]) -> float | None:
    """Chi-square p-value of the split against an even one (None for fewer than two variants)."""
    if len(sessions) < 2 or not sum(sessions):
        return None
    return _finite(stats.chisquare(sessions).pvalue)


def readout(counts: list[dict]) -> list[dict]:
    """Rows of ``mart_ab_test`` from ``{experiment, variant, sessions,
    sessions_<stage>...}`` per (experiment, variant)."""
    by_experiment: dict[str, dict[str, dict]] = {}
    for row in counts:
        by_experiment.setdefault(row["experiment"], {})[row["variant"]] = row
    out = []
    for _experiment, variants in sorted(by_experiment.items()):
        control = control_of(variants)
        srm = srm_p_value([v["sessions"] for v in variants.values()])
        c = variants.get(control)
        for name, v in sorted(variants.items()):
            n, x = v["sessions"], v["sessions_payment"]
            rate = x / n if n else None
            row = {
                **{k: v[k] for k in ("experiment", "variant", "sessions", *STAGE_COLUMNS)},
                "is_control": name == control,
                "conversion_rate": rate,
                "lift_vs_control": None,
                "diff_vs_control": None,
                "ci_low": None,
                "ci_high": None,
                "p_value": None,
                "srm_p_value": srm,
                "srm_flag": None if srm is None else srm < SRM_THRESHOLD,
            }
            if c is not None and name != control and n and c["sessions"]:
                xc, nc = c["sessions_payment"], c["sessions"]
                row["diff_vs_control"] = rate - xc / nc
                row["lift_vs_control"] = rate / (xc / nc) - 1 if xc else None
                row["ci_low"], row["ci_high"] = diff_interval(x, n, xc, nc)
                row["p_value"] = z_test(x, n, xc, nc)
            out.append(row)
    return out
