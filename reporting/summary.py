"""The funnel report from gold: stage counts, the use-case readouts as text, the funnel chart.

The command: ``report`` (``pipelines/report.py``)."""

from __future__ import annotations

import io
from collections import defaultdict

from reporting import explorer
from reporting.explorer import Gold
from schemas.vocabulary import STAGES
from transforms.lake.files import write_bytes


def funnel_summary(gold: Gold) -> dict:
    """Stage counts overall and per platform, from mart_conversion_rate
    (year rows: every session once per year it started in)."""
    conversion = gold.rows("mart_conversion_rate")
    per_platform = explorer.stage_totals(conversion)
    overall = per_platform.pop(explorer.ALL, [0] * len(STAGES))
    days = sorted({r["period_start"] for r in conversion if r["period_grain"] == "day"})
    return {
        "stages": overall,
        "platforms": dict(sorted(per_platform.items())),
        "first_day": days[0] if days else None,
        "last_day": days[-1] if days else None,
    }


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "n/a"


def text_report(summary: dict) -> str:
    stages = summary["stages"]
    lines = [
        f"Funnel, sessions {summary['first_day']} .. {summary['last_day']}",
        "",
        f"{'stage':<22}{'sessions':>10}{'of browse':>11}{'drop-off':>10}",
    ]
    for i, (name, count) in enumerate(zip(STAGES, stages)):
        drop = "" if i == 0 else _pct(stages[i - 1] - count, stages[i - 1])
        lines.append(f"{i + 1} {name:<20}{count:>10,}{_pct(count, stages[0]):>11}{drop:>10}")
    lines += ["", f"{'platform':<10}{'browse':>9}{'cart':>8}{'paid':>8}{'conversion':>12}"]
    for platform, counts in summary["platforms"].items():
        lines.append(f"{platform:<10}{counts[0]:>9,}{counts[1]:>8,}{counts[2]:>8,}{_pct(counts[2], counts[0]):>12}")
    return "\n".join(lines)


def use_case_report(gold: Gold) -> str:
    """The A/B readout, the retargeting audience size and the alert counts."""
    lines = [
        "A/B tests (unit: session; metric: reached payment)",
        f"{'experiment':<17}{'variant':<9}{'sessions':>9}{'paid':>7}{'conv.':>8}{'lift':>8}"
        f"{'95% CI of diff':>19}{'p':>9}{'SRM':>5}",
    ]
    for r in sorted(gold.rows("mart_ab_test"), key=lambda r: (r["experiment"], not r["is_control"], r["variant"])):
        ci = (
            "control"
            if r["is_control"]
            else ("n/a" if r["ci_low"] is None else f"[{100 * r['ci_low']:+.1f}, {100 * r['ci_high']:+.1f}] pt")
        )
        lift = "" if r["lift_vs_control"] is None else f"{100 * r['lift_vs_control']:+.1f}%"
        p_value = "" if r["is_control"] else explorer.p_value_text(r["p_value"], "n/a")
        lines.append(
            f"{r['experiment']:<17}{r['variant']:<9}{r['sessions']:>9,}{r['sessions_payment']:>7,}"
            f"{_pct(r['sessions_payment'], r['sessions']):>8}{lift:>8}{ci:>19}"
            f"{p_value:>9}{'yes' if r['srm_flag'] else 'no':>5}"
        )
    audience = gold.rows("mart_retargeting")
    alerts = defaultdict(int)
    for a in gold.rows("ops_alerts"):
        alerts[a["alert_type"]] += 1
    lines += [
        "",
        f"retargeting audience: {len(audience):,} users (carted, did not pay within 24 h, active)",
        "alerts: " + (", ".join(f"{kind} {n:,}" for kind, n in sorted(alerts.items())) or "none"),
    ]
    return "\n".join(lines)


def funnel_chart(summary: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages, platforms = summary["stages"], summary["platforms"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [3, 2]})
    top = max(stages[0], 1)
    colors = ["#1f4e79", "#2e75b6", "#4a9bd6", "#7fb8e6", "#b4d5f0"]
    for i, count in enumerate(stages):
        y = len(STAGES) - 1 - i
        left.barh(y, count, left=(top - count) / 2, color=colors[i], height=0.8)
        left.text((top + count) / 2 + top * 0.02, y, f"{count:,}  ({_pct(count, stages[0])})", va="center", fontsize=10)
    left.set_xlim(0, top * 1.4)
    left.set_yticks(range(len(STAGES)), [f"{n}. {name}" for n, name in zip(range(5, 0, -1), STAGES[::-1])])
    left.tick_params(axis="y", length=0)
    left.set_xticks([])
    left.spines[["top", "right", "bottom", "left"]].set_visible(False)
    left.set_title(f"Funnel: sessions per stage ({summary['first_day']} .. {summary['last_day']})")
    names = list(platforms)
    rates = [100 * c[2] / c[0] if c[0] else 0 for c in platforms.values()]
    bars = right.bar(names, rates, color="#2e75b6")
    # Sample size on every bar: a small platform's rate is noisy.
    right.bar_label(bars, labels=[f"{r:.1f}%\nn={c[0]:,}" for r, c in zip(rates, platforms.values())])
    right.margins(y=0.15)
    right.set_ylabel("payment / browse sessions (%)")
    right.set_title("Conversion by platform")
    right.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    write_bytes(path, png.getvalue())
    plt.close(fig)
