"""The funnel explorer: one self-contained HTML page from the gold tables.

Everything the page needs is inside it (plotly.js inlined once, the data as
the figures' JSON), so it opens from disk, offline, without a server. The
charts are plotly's: hovering shows values, a range slider under the time
series picks the dates, clicking a legend entry hides a platform, and the
funnel has a platform selector. Sections: the funnel with drop-off per
stage, conversion by day / month / year, platforms, the experiment readout,
barcode scans and payment-to-scan time, the retargeting audience, the
defined funnels (``reporting.defined_funnels``), the latest alerts, and the
data's health: how complete the recent days are, the failing checks and
what the latest gold release revised (``reporting.status`` reads them).
"""

from __future__ import annotations

import html
import os
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

import plotly.graph_objects as go

from reporting import defined_funnels
from reporting.status import Health, health
from schemas.tables import GOLD, METRIC_REVISIONS
from schemas.tables import STAGE_SESSION_COLUMNS as MART_STAGES
from schemas.vocabulary import STAGES
from transforms.lake.files import write_bytes
from transforms.lake.tables import layer_versions, read_arrow
from transforms.rules.revisions import describe

GRAINS = ("day", "month", "year")
ALL = "all"
LATEST_ALERTS = 25
_COLORS = ("#1f4e79", "#2e75b6", "#c55a11", "#70ad47", "#7f6000", "#7030a0", "#a5a5a5")


@dataclass(frozen=True)
class Gold:
    """A lake's gold tables as one release: the latest, or as of a
    ``releases`` version or a time (``transforms.lake.tables``)."""

    lake: str
    versions: dict

    @classmethod
    def of(cls, lake: str, as_of_version: int | None = None, as_of_timestamp: datetime | None = None) -> Gold:
        return cls(lake, layer_versions(lake, GOLD, as_of_version, as_of_timestamp))

    def rows(self, table: str) -> list[dict]:
        return read_arrow(self.lake, GOLD[table], self.versions[table]).to_pylist()


# --- figures ------------------------------------------------------------------------------------
def _layout(fig: go.Figure, title: str, height: int = 420) -> go.Figure:
    fig.update_layout(
        title=title,
        height=height,
        margin=dict(l=60, r=30, t=60, b=40),
        template="plotly_white",
        legend=dict(orientation="h", y=-0.2),
    )
    return fig


def stage_totals(conversion: list[dict]) -> dict[str, list[int]]:
    """Sessions reaching each stage per platform (``all`` included), all
    time: the year rows of mart_conversion_rate summed."""
    per_platform = defaultdict(lambda: [0] * len(STAGES))
    for row in conversion:
        if row["period_grain"] == "year":
            for i, column in enumerate(MART_STAGES):
                per_platform[row["platform"]][i] += row[column]
    return per_platform


def funnel_figure(conversion: list[dict]) -> go.Figure:
    """Sessions per stage (all time), one trace per platform, a selector to switch."""
    per_platform = stage_totals(conversion)
    platforms = [ALL] + sorted(p for p in per_platform if p != ALL)
    fig = go.Figure()
    for i, platform in enumerate(platforms):
        fig.add_trace(
            go.Funnel(
                y=[f"{n}. {s}" for n, s in enumerate(STAGES, 1)],
                x=per_platform[platform],
                name=platform,
                visible=i == 0,
                textposition="inside",
                texttemplate="<b>%{y}</b><br>%{value:,} sessions, %{percentPrevious:.0%} of "
                "previous, %{percentInitial:.0%} of browse",
                marker=dict(color=_COLORS[: len(STAGES)]),
            )
        )
    buttons = [
        dict(
            label=p,
            method="update",
            args=[{"visible": [q == p for q in platforms]}, {"title.text": f"Funnel: sessions per stage ({p})"}],
        )
        for p in platforms
    ]
    fig.update_layout(updatemenus=[dict(buttons=buttons, direction="down", x=1.0, xanchor="right", y=1.15)])
    fig.update_layout(yaxis=dict(showticklabels=False))  # the stage names are in the bars
    return _layout(fig, f"Funnel: sessions per stage ({ALL})")


def trend_figure(conversion: list[dict]) -> go.Figure:
    """Conversion rate over time per platform; buttons pick the grain."""
    series = defaultdict(list)
    for row in sorted(conversion, key=lambda r: r["period_start"]):
        series[(row["period_grain"], row["platform"])].append(row)
    fig = go.Figure()
    keys = sorted(series, key=lambda k: (GRAINS.index(k[0]), k[1] != ALL, k[1]))
    platforms = sorted({k[1] for k in keys}, key=lambda p: (p != ALL, p))
    for grain, platform in keys:
        rows = series[(grain, platform)]
        fig.add_trace(
            go.Scatter(
                x=[r["period_start"] for r in rows],
                y=[r["conversion_rate"] for r in rows],
                mode="lines+markers",
                name=platform,
                legendgroup=platform,
                visible=grain == "day",
                line=dict(color=_COLORS[platforms.index(platform) % len(_COLORS)], width=3 if platform == ALL else 1.5),
                customdata=[[r["sessions_browse"], r["sessions_payment"]] for r in rows],
                hovertemplate="%{x}: %{y:.1%} (%{customdata[1]:,} of %{customdata[0]:,} sessions)",
            )
        )
    buttons = [dict(label=g, method="update", args=[{"visible": [k[0] == g for k in keys]}]) for g in GRAINS]
    fig.update_layout(
        updatemenus=[dict(type="buttons", direction="right", buttons=buttons, x=1.0, xanchor="right", y=1.12)],
        yaxis=dict(tickformat=".0%", rangemode="tozero", title="payment / browse sessions"),
        xaxis=dict(rangeslider=dict(visible=True), type="date"),
    )
    return _layout(fig, "Conversion over time (pick the grain; drag the slider for dates; click a platform)", 480)


def platform_figure(conversion: list[dict]) -> go.Figure:
    totals = stage_totals(conversion)
    names = sorted(p for p in totals if p != ALL)
    fig = go.Figure()
    for label, (num, den) in (("cart rate", (1, 0)), ("checkout rate", (2, 1)), ("conversion", (2, 0))):
        rates = [totals[p][num] / totals[p][den] if totals[p][den] else None for p in names]
        fig.add_trace(
            go.Bar(
                x=names,
                y=rates,
                name=label,
                text=[f"n={totals[p][den]:,}" for p in names],
                hovertemplate="%{x}: %{y:.1%} (%{text})",
            )
        )
    fig.update_layout(barmode="group", yaxis=dict(tickformat=".0%"))
    return _layout(fig, "Rates by platform (all time; n = the rate's denominator)")


def experiment_figure(readout: list[dict]) -> go.Figure:
    """Each variant's difference from its control, with its 95% interval."""
    rows = [r for r in readout if not r["is_control"] and r["diff_vs_control"] is not None]
    fig = go.Figure(
        go.Scatter(
            x=[r["diff_vs_control"] for r in rows],
            y=[f"{r['experiment']}: {r['variant']}" for r in rows],
            mode="markers",
            marker=dict(size=12, color=["#c00000" if r["srm_flag"] else "#1f4e79" for r in rows]),
            error_x=dict(
                type="data",
                symmetric=False,
                array=[(r["ci_high"] or 0) - r["diff_vs_control"] for r in rows],
                arrayminus=[r["diff_vs_control"] - (r["ci_low"] or 0) for r in rows],
            ),
        )
    )
    fig.add_vline(x=0, line_dash="dash", line_color="grey")
    fig.update_layout(xaxis=dict(tickformat="+.1%", title="conversion minus control's (95% CI)"))
    return _layout(fig, "Experiments: difference from control", 120 + 60 * max(len(rows), 1))


def barcode_figure(barcodes: list[dict]) -> go.Figure:
    rows = sorted(
        (r for r in barcodes if r["period_grain"] == "day" and r["platform"] == ALL), key=lambda r: r["period_start"]
    )
    fig = go.Figure()
    fig.add_trace(go.Bar(x=[r["period_start"] for r in rows], y=[r["barcode_scans"] for r in rows], name="scans"))
    fig.add_trace(
        go.Scatter(
            x=[r["period_start"] for r in rows],
            yaxis="y2",
            mode="lines+markers",
            name="median hours payment -> scan",
            y=[
                None if r["median_seconds_payment_to_scan"] is None else r["median_seconds_payment_to_scan"] / 3600
                for r in rows
            ],
        )
    )
    fig.update_layout(
        yaxis=dict(title="scans"),
        yaxis2=dict(title="hours", overlaying="y", side="right"),
        xaxis=dict(rangeslider=dict(visible=True), type="date"),
    )
    return _layout(fig, "Barcode scans per day and payment-to-scan time", 460)


def audience_figure(audience: list[dict]) -> go.Figure:
    per_platform = defaultdict(int)
    for row in audience:
        per_platform[row["platform"] or "unknown"] += 1
    names = sorted(per_platform)
    fig = go.Figure(go.Bar(x=names, y=[per_platform[p] for p in names], marker_color="#c55a11"))
    return _layout(fig, "Retargeting audience by platform of the abandoned cart", 340)


# --- the page -----------------------------------------------------------------------------------
def completeness_figure(rows: list[dict]) -> go.Figure:
    """The latest estimate's days: records received, and the share of the day they are."""
    days = [r["event_date"].isoformat() for r in rows]
    shares = [r["expected_share"] for r in rows]
    fig = go.Figure(
        go.Bar(
            x=days,
            y=[r["received"] for r in rows],
            marker_color=[_COLORS[0] if s is None or s >= 0.99 else _COLORS[2] for s in shares],
            text=["?" if s is None else f"{s:.0%}" for s in shares],
            textposition="outside",
            hovertemplate="%{x}: %{y:,} records received, %{text} of the day<extra></extra>",
        )
    )
    fig.update_xaxes(type="category")
    return _layout(fig, "Completeness of the recent days (share of each day's records received so far)", 360)


def _pct(x) -> str:
    return "" if x is None else f"{100 * x:.1f}%"


def p_value_text(x, missing: str = "") -> str:
    return missing if x is None else ("<0.0001" if x < 1e-4 else f"{x:.4f}")


def experiment_table(readout: list[dict]) -> str:
    head = (
        "<tr><th>experiment</th><th>variant</th><th>sessions</th><th>paid</th><th>conversion</th>"
        "<th>lift vs control</th><th>95% CI of the difference</th><th>p-value</th><th>SRM</th></tr>"
    )
    body = []
    for r in sorted(readout, key=lambda r: (r["experiment"], not r["is_control"], r["variant"])):
        ci = (
            "control"
            if r["is_control"]
            else ("" if r["ci_low"] is None else f"[{100 * r['ci_low']:+.1f}, {100 * r['ci_high']:+.1f}] pt")
        )
        lift = "" if r["lift_vs_control"] is None else f"{100 * r['lift_vs_control']:+.1f}%"
        srm = (
            f'<span class="bad">mismatch (p={r["srm_p_value"]:.2g})</span>'
            if r["srm_flag"]
            else "ok"
            if r["srm_flag"] is not None
            else ""
        )
        p_class = ' class="sig"' if r["p_value"] is not None and r["p_value"] < 0.05 else ""
        body.append(
            f"<tr><td>{html.escape(r['experiment'])}</td><td>{html.escape(r['variant'])}</td>"
            f"<td>{r['sessions']:,}</td><td>{r['sessions_payment']:,}</td><td>{_pct(r['conversion_rate'])}</td>"
            f"<td>{lift}</td><td>{ci}</td><td{p_class}>{html.escape(p_value_text(r['p_value']))}</td><td>{srm}</td></tr>"
        )
    return f'<table id="experiments">{head}{"".join(body)}</table>'


def alerts_table(alerts: list[dict]) -> str:
    latest = sorted(alerts, key=lambda a: (a["detected_at"], a["alert_id"]), reverse=True)[:LATEST_ALERTS]
    rows = "".join(
        f"<tr><td>{a['detected_at']:%Y-%m-%d %H:%M:%S}</td><td>{html.escape(a['alert_type'])}</td>"
        f"<td>{html.escape(a['event_id'] or '')}</td><td>{html.escape(a['response_id'] or '')}</td>"
        f"<td><code>{html.escape(a['details'] or '')}</code></td></tr>"
        for a in latest
    )
    return (
        '<table id="alerts"><tr><th>detected at (UTC)</th><th>type</th><th>payment event</th>'
        f"<th>response</th><th>details</th></tr>{rows}</table>"
    )


def failing_table(h: Health) -> str:
    if not h.failing:
        return '<p id="failing">No check failed in the latest runs.</p>'

    def band(r: dict) -> str:
        low, high = r["expected_low"], r["expected_high"]
        return f"{'' if low is None else low}..{'' if high is None else high}"

    rows = "".join(
        f'<tr><td class="{"bad" if r["severity"] == "block" else ""}">{html.escape(r["severity"])}</td>'
        f"<td>{html.escape(r['check_id'])}</td><td>{html.escape(r['subject'])}</td>"
        f"<td>{r['observed']}</td><td>{band(r)}</td><td>{html.escape(r['pipeline'])}</td></tr>"
        for r in h.failing
    )
    return (
        '<table id="failing"><tr><th>severity</th><th>check</th><th>subject</th><th>observed</th>'
        f"<th>expected</th><th>run</th></tr>{rows}</table>"
    )


def revisions_list(lake: str) -> str:
    rows = read_arrow(lake, METRIC_REVISIONS).to_pylist()
    if not rows:
        return '<p id="revisions">No gold release has revised an earlier one.</p>'
    latest = max(r["released_at"] for r in rows)
    items = "".join(
        "<li>"
        + html.escape(
            describe(r["period_start"].isoformat(), r["metric"], r["previous_value"], r["value"], r["late_records"])
        )
        + "</li>"
        for r in sorted(rows, key=lambda r: (r["period_start"], r["metric"]))
        if r["released_at"] == latest
    )
    return f'<p>The latest release ({latest:%Y-%m-%d %H:%M} UTC) revised:</p><ul id="revisions">{items}</ul>'


_STYLE = """
body{font-family:system-ui,-apple-system,sans-serif;margin:0;color:#222;background:#fafbfc}
header{background:#1f4e79;color:#fff;padding:1rem 2rem} header h1{margin:0;font-size:1.5rem}
nav a{color:#fff;margin-right:1rem;font-size:.9rem} main{max-width:1200px;margin:auto;padding:1rem 2rem}
section{background:#fff;border:1px solid #e3e6ea;border-radius:6px;margin:1rem 0;padding:1rem}
.cards{display:flex;gap:1rem;flex-wrap:wrap}
.card{flex:1;min-width:150px;background:#f0f4f8;border-radius:6px;padding:.8rem}
.card b{display:block;font-size:1.6rem;color:#1f4e79} table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{border-bottom:1px solid #e3e6ea;padding:.35rem .5rem;text-align:left} .bad{color:#c00000;font-weight:600}
.sig{font-weight:700} code{font-size:.8rem}
"""


def page(gold: Gold) -> str:
    conversion, barcodes = gold.rows("mart_conversion_rate"), gold.rows("mart_barcode_activity")
    readout, audience = gold.rows("mart_ab_test"), gold.rows("mart_retargeting")
    alerts = gold.rows("ops_alerts")
    funnels = gold.rows("mart_funnel")
    funnel_facts = read_arrow(
        gold.lake,
        GOLD["fact_funnel"],
        gold.versions["fact_funnel"],
        ["funnel", "seconds_to_step", "seconds_from_previous"],
    )
    lake_health = health(gold.lake)
    days = sorted({r["period_start"] for r in conversion if r["period_grain"] == "day"})
    totals = stage_totals(conversion)[ALL]
    by_type = defaultdict(int)
    for a in alerts:
        by_type[a["alert_type"]] += 1
    figures = [
        funnel_figure(conversion),
        trend_figure(conversion),
        platform_figure(conversion),
        experiment_figure(readout),
        barcode_figure(barcodes),
        audience_figure(audience),
        completeness_figure(lake_health.completeness),
        defined_funnels.steps_figure(funnels, _layout),
        defined_funnels.time_figure(funnels, _layout),
        defined_funnels.cohort_figure(funnels, _layout),
    ]
    # plotly.js once, inline, with the first figure; the others reuse it
    divs = [
        fig.to_html(full_html=False, include_plotlyjs=i == 0, config={"displaylogo": False})
        for i, fig in enumerate(figures)
    ]
    cards = "".join(
        f'<div class="card">{label}<b>{value}</b></div>'
        for label, value in (
            ("sessions (browse)", f"{totals[0]:,}"),
            ("paid", f"{totals[2]:,}"),
            ("conversion", _pct(totals[2] / totals[0]) if totals[0] else "n/a"),
            ("retargeting audience", f"{len(audience):,} users"),
            ("alerts", f"{len(alerts):,}"),
        )
    )
    alert_counts = ", ".join(f"{kind}: {n:,}" for kind, n in sorted(by_type.items())) or "none"
    period = f"{days[0]} .. {days[-1]}" if days else "no sessions"
    lake = gold.lake if "://" in gold.lake else os.path.abspath(gold.lake)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Funnel explorer</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_STYLE}</style></head>
<body><header><h1>Funnel explorer</h1>
<p>Sessions {html.escape(period)} &middot; from <code>{html.escape(lake)}/gold</code>
&middot; generated {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}</p>
<nav><a href="#funnel">Funnel</a><a href="#trend">Conversion</a><a href="#platforms">Platforms</a>
<a href="#experiments-section">Experiments</a><a href="#barcodes">Barcodes</a><a href="#audience">Retargeting</a>
<a href="#defined-funnels">Defined funnels</a><a href="#alerts-section">Alerts</a><a href="#health">Data health</a>
</nav></header><main>
<div class="cards">{cards}</div>
<section id="funnel">{divs[0]}</section>
<section id="trend">{divs[1]}</section>
<section id="platforms">{divs[2]}</section>
<section id="experiments-section"><h2>Experiments</h2>
<p>Unit: a session with the assignment; metric: reaching payment. p-value: two-sided two-proportion z-test
against the control; SRM: chi-square of the split against an even one (flagged below 0.001).</p>
{experiment_table(readout)}{divs[3]}</section>
<section id="barcodes">{divs[4]}</section>
<section id="audience"><h2>Retargeting audience: {len(audience):,} users</h2>
<p>Active users whose latest cart went unpaid for 24 hours; export with
<code>python -m pipelines.export_audience</code>.</p>{divs[5]}</section>
<section id="defined-funnels"><h2>Defined funnels</h2>
<p>The funnels of <code>schemas/funnels.yaml</code> (or <code>funnel gold --funnels</code>), all time. Pick a funnel
and a breakdown (first touch) in the menus. An entry that has not reached a step is pending while its window is
still open, dropped once it has closed. Who dropped at a step: <code>funnel export-audience --funnel F --step S</code>.
</p>{divs[7]}{defined_funnels.steps_table(funnels, funnel_facts)}{divs[8]}{divs[9]}</section>
<section id="alerts-section"><h2>Alerts</h2><p>{html.escape(alert_counts)}; the latest {LATEST_ALERTS}:</p>
{alerts_table(alerts)}</section>
<section id="health"><h2>Data health</h2>
<p>{len(lake_health.blocking):,} blocking and {len(lake_health.failing) - len(lake_health.blocking):,} warning checks
failing in each pipeline's latest run; <code>funnel status --lake LAKE</code> shows the same.</p>
{divs[6]}{failing_table(lake_health)}{revisions_list(gold.lake)}</section>
</main></body></html>
"""


def write(gold: Gold, path: str) -> str:
    """The page at ``path`` (a local file or an object-store URL)."""
    return write_bytes(path, page(gold).encode("utf-8"))
