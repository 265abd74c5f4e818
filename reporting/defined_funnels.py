"""The explorer's section on the funnels people define (``schemas/funnels.yaml``):
each funnel's steps by breakdown value, time to convert (from the entry
and from the step before), and its entry
cohorts with the entries still inside their window apart from those that
dropped. Read from ``mart_funnel``; the all-time medians from ``fact_funnel``.
"""

from __future__ import annotations

import html
from collections import defaultdict

import numpy as np
import plotly.graph_objects as go
import pyarrow.compute as pc

from schemas.funnels import ALL
from schemas.tables import TIME_TO_CONVERT_EDGES_SECONDS

BUCKETS = ("<1m", "1-5m", "5-15m", "15m-1h", "1-6h", "6-24h", "1-3d", "3-7d", "7d+")
COHORT_GRAIN = "week"
_COLORS = ("#1f4e79", "#2e75b6", "#c55a11", "#70ad47", "#7f6000", "#7030a0", "#a5a5a5", "#ffc000", "#5b9bd5")
assert len(BUCKETS) == len(TIME_TO_CONVERT_EDGES_SECONDS)
# mart_funnel's histograms: (column, what the time is from)
_HISTOGRAMS = {"time_to_convert_histogram": "entry", "time_from_previous_histogram": "the step before"}


def _all_time(mart: list[dict]) -> dict:
    """(funnel, breakdown, value, step) -> summed entered, converted, pending,
    dropped and both histograms: the month cohorts partition every entry."""
    out: dict = defaultdict(lambda: {"entered": 0, "converted": 0, "pending": 0, "dropped": 0})
    for r in mart:
        if r["cohort_grain"] != "month":
            continue
        cell = out[(r["funnel"], r["breakdown"], r["breakdown_value"], r["step_number"])]
        for column in ("entered", "converted", "pending", "dropped"):
            cell[column] += r[column]
        for histogram in _HISTOGRAMS:
            counts = np.array(r[histogram])
            cell[histogram] = counts if histogram not in cell else cell[histogram] + counts
        cell["step_name"] = r["step_name"]
    return out


def _steps(mart: list[dict]) -> dict[str, list[str]]:
    steps: dict[str, dict[int, str]] = defaultdict(dict)
    for r in mart:
        steps[r["funnel"]][r["step_number"]] = r["step_name"]
    return {f: [s[n] for n in sorted(s)] for f, s in steps.items()}


def _switch(fig: go.Figure, options: list[tuple[str, list[int], str]], y: float = 1.18) -> go.Figure:
    """A dropdown showing one group of traces: (label, trace indexes, title)."""
    n = len(fig.data)
    buttons = [
        dict(label=label, method="update", args=[{"visible": [i in shown for i in range(n)]}, {"title.text": title}])
        for label, shown, title in options
    ]
    for i, trace in enumerate(fig.data):
        trace.visible = i in options[0][1]
    fig.update_layout(
        updatemenus=[dict(buttons=buttons, direction="down", x=1.0, xanchor="right", y=y)],
        title=options[0][2],
    )
    return fig


def steps_figure(mart: list[dict], layout) -> go.Figure:
    """Conversion to each step (all time) per breakdown value; a picker of funnel and breakdown."""
    cells, steps = _all_time(mart), _steps(mart)
    values: dict[tuple[str, str], list[str]] = defaultdict(list)
    for funnel, breakdown, value, number in sorted(cells):
        if number == 1:
            values[(funnel, breakdown)].append(value)
    fig, options = go.Figure(), []
    for (funnel, breakdown), shown_values in sorted(
        values.items(), key=lambda kv: (kv[0][0], kv[0][1] != ALL, kv[0][1])
    ):
        # the most entries first
        shown_values = sorted(shown_values, key=lambda v: -cells[(funnel, breakdown, v, 1)]["entered"])
        first = len(fig.data)
        for i, value in enumerate(shown_values):
            per_step = [cells[(funnel, breakdown, value, n)] for n in range(1, len(steps[funnel]) + 1)]
            entered = per_step[0]["entered"]
            fig.add_trace(
                go.Bar(
                    x=steps[funnel],
                    y=[c["converted"] / entered if entered else None for c in per_step],
                    name=value,
                    marker_color=_COLORS[i % len(_COLORS)],
                    customdata=[[c["converted"], entered, c["pending"]] for c in per_step],
                    hovertemplate="%{x}: %{y:.1%} (%{customdata[0]:,} of %{customdata[1]:,}; "
                    "%{customdata[2]:,} pending)<extra>" + html.escape(value) + "</extra>",
                )
            )
        label = funnel if breakdown == ALL else f"{funnel} by {breakdown}"
        options.append((label, list(range(first, len(fig.data))), f"Defined funnel: {label} (conversion from entry)"))
    if not options:
        return layout(fig, "Defined funnels: no entries")
    fig.update_layout(barmode="group", yaxis=dict(tickformat=".0%", title="of entries"))
    return layout(_switch(fig, options), options[0][2], 460)


def time_figure(mart: list[dict], layout) -> go.Figure:
    """Entries converting per bucket of time, one trace per step: from the
    entry, or from the step before; a picker of funnel and which."""
    cells, steps = _all_time(mart), _steps(mart)
    fig, options = go.Figure(), []
    for funnel in sorted(steps):
        for histogram, since in _HISTOGRAMS.items():
            first = len(fig.data)
            for n, step in enumerate(steps[funnel][1:], start=2):
                counts = cells[(funnel, ALL, ALL, n)].get(histogram)
                fig.add_trace(
                    go.Bar(
                        x=list(BUCKETS),
                        y=[int(v) for v in counts] if counts is not None else [0] * len(BUCKETS),
                        name=f"{n}. {step}",
                        marker_color=_COLORS[(n - 2) % len(_COLORS)],
                    )
                )
            title = f"Time to convert: {funnel}, from {since} (entries per bucket)"
            options.append((f"{funnel}, from {since}", list(range(first, len(fig.data))), title))
    if not options:
        return layout(fig, "Time to convert: no entries")
    fig.update_layout(barmode="group", xaxis=dict(title="time"), yaxis=dict(title="entries"))
    return layout(_switch(fig, options), options[0][2], 400)


def cohort_figure(mart: list[dict], layout) -> go.Figure:
    """Per weekly entry cohort, the last step: converted, pending (window
    still open) and dropped, stacked; a funnel picker."""
    steps = _steps(mart)
    fig, options = go.Figure(), []
    for funnel in sorted(steps):
        last = len(steps[funnel])
        rows = sorted(
            (
                r
                for r in mart
                if r["funnel"] == funnel
                and r["cohort_grain"] == COHORT_GRAIN
                and r["breakdown"] == ALL
                and r["step_number"] == last
            ),
            key=lambda r: r["cohort_start"],
        )
        first = len(fig.data)
        for column, color in (("converted", _COLORS[3]), ("pending", _COLORS[7]), ("dropped", _COLORS[2])):
            fig.add_trace(
                go.Bar(
                    x=[r["cohort_start"].isoformat() for r in rows],
                    y=[r[column] for r in rows],
                    name=column,
                    marker_color=color,
                )
            )
        title = f"Entry cohorts: {funnel}, week of entry, reaching {steps[funnel][-1]}"
        options.append((funnel, list(range(first, len(fig.data))), title))
    if not options:
        return layout(fig, "Entry cohorts: no entries")
    fig.update_layout(barmode="stack", xaxis=dict(type="category", title="week from"), yaxis=dict(title="entries"))
    return layout(_switch(fig, options), options[0][2], 400)


def _quantile(values: np.ndarray, q: float) -> float | None:
    return None if len(values) == 0 else float(np.quantile(values, q))


def _per_step(facts, column: str) -> dict[tuple[str, int], np.ndarray]:
    """(funnel, step number) -> the fact rows' values of list ``column`` for that step."""
    out: dict[tuple[str, int], np.ndarray] = {}
    if facts is None or not facts.num_rows:
        return out
    # one element per reached step: its funnel and step number
    lengths = pc.list_value_length(facts.column(column)).to_numpy(zero_copy_only=False)
    value = pc.list_flatten(facts.column(column)).to_numpy(zero_copy_only=False)
    funnel = np.repeat(np.asarray(facts.column("funnel").to_pylist(), dtype=object), lengths)
    number = np.arange(len(value)) - np.repeat(np.cumsum(lengths) - lengths, lengths) + 1
    for key in {(f, int(n)) for f, n in zip(funnel, number)}:
        out[key] = value[(funnel == key[0]) & (number == key[1])]
    return out


def steps_table(mart: list[dict], facts) -> str:
    """Per funnel and step, all time: entries reaching it, conversion, pending,
    dropped, median and p90 time from the entry and from the step before (from the fact rows)."""
    cells, steps = _all_time(mart), _steps(mart)
    to_step, from_previous = _per_step(facts, "seconds_to_step"), _per_step(facts, "seconds_from_previous")
    rows = []
    for name in sorted(steps):
        entered = cells[(name, ALL, ALL, 1)]["entered"]
        for n, step in enumerate(steps[name], start=1):
            c = cells[(name, ALL, ALL, n)]
            times = [
                _duration(_quantile(seconds.get((name, n), np.array([])), q))
                for seconds in (to_step, from_previous)
                for q in (0.5, 0.9)
            ]
            rows.append(
                f"<tr><td>{html.escape(name)}</td><td>{n}. {html.escape(step)}</td><td>{c['converted']:,}</td>"
                f"<td>{c['converted'] / entered:.1%}</td><td>{c['pending']:,}</td><td>{c['dropped']:,}</td>"
                + "".join(f"<td>{t}</td>" for t in times)
                + "</tr>"
            )
    return (
        '<table id="defined-funnel-steps"><tr><th>funnel</th><th>step</th><th>reached</th><th>of entries</th>'
        "<th>pending</th><th>dropped</th><th>median from entry</th><th>p90 from entry</th>"
        "<th>median from the step before</th><th>p90 from the step before</th></tr>" + "".join(rows) + "</table>"
    )


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"
