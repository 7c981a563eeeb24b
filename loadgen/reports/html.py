"""The run as one self-contained HTML page: it opens offline, references nothing outside itself (inline
CSS, charts drawn here as inline SVG, no script), and is a pure function of ``results.json``
(docs/results-schema.md) and, when present, the run's interval log (:mod:`loadgen.reports.hlog`).

Contents, top to bottom: the overview with PASS/FAIL and a red banner for warnings; charts over time
(target vs achieved rate, latency p50/p99/max, errors stacked by category), each marked with the run's
events; the percentile distribution (latency against ``1/(1-p)``, the plot HdrHistogram users expect);
then the tables of the text summary (built once by :func:`loadgen.reports.markdown.build_sections`).

Long runs are downsampled to at most :data:`MAX_POINTS` points per series: the max of each bucket for
latency (a spike never disappears), the mean for rates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from html import escape
from typing import Any

from hdrh.histogram import HdrHistogram

from loadgen.reports.hlog import HlogContents, sanitize_tag
from loadgen.reports.markdown import Section, build_sections
from loadgen.reports.svg import (
    LEFT,
    PERCENTILE_DECADES,
    RIGHT,
    WIDTH,
    Aggregate,
    Axis,
    Point,
    Series,
    downsample,
    drain_shade,
    empty_note,
    event_list,
    legend,
    line_chart,
    series_path,
    stacked_chart,
    svg_chart,
    x_grid_percentile,
    y_axis,
    y_grid,
)
from loadgen.thresholds import Verdict

MAX_POINTS = 1500
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
ERROR_PALETTE = ("#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#7f7f7f", "#17becf")


# -- the page ----------------------------------------------------------------------------------------------


def render_html(results: Mapping[str, Any], hlog: HlogContents | None) -> str:
    """The whole report as one HTML document."""
    verdicts = [
        Verdict(t["expr"], bool(t["passed"]), t.get("observed"), str(t.get("detail", "")))
        for t in results.get("thresholds") or []
    ]
    title, sections = build_sections(results, verdicts, markdown=False)
    by_title = {s.title: s for s in sections}
    body = [_header(results, title, by_title.get("")), _banner(by_title.get("Warnings"))]
    body.append("<h2>Over time</h2>")
    body += _time_charts(results)
    body.append("<h2>Latency distribution</h2>")
    body.append(_percentile_chart(results, hlog))
    for name in ("Flows", "Requests", "Thresholds", "Errors", "Per hour"):
        if name in by_title:
            body.append(_section(by_title[name]))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(part for part in body if part)
        + "\n</body>\n</html>\n"
    )


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;margin:24px auto;
  max-width:1200px;padding:0 16px}
h1{font-size:24px;margin:0 0 6px}
h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.badge{display:inline-block;padding:2px 10px;border-radius:4px;color:#fff;font-weight:700;margin-left:8px;
  vertical-align:middle;font-size:15px}
.pass-badge{background:#2a9d3f}
.fail-badge{background:#c62828}
.neutral-badge{background:#6b7280}
.meta{margin:2px 0;color:#444}
.banner{background:#c62828;color:#fff;padding:12px 16px;border-radius:6px;margin:14px 0;font-weight:600}
.banner p{margin:4px 0}
figure{margin:12px 0 20px}
figcaption{font-weight:600;margin-bottom:2px}
svg.chart{width:100%;height:auto;display:block;background:#fff;border:1px solid #e4e4e4;border-radius:4px}
svg text{font:12px system-ui,sans-serif;fill:#333}
svg .tick{fill:#666}
svg .event{fill:#6a1b9a;font-weight:700}
.events{margin:-8px 0 20px;color:#444}
.events ol{margin:4px 0;padding-left:0;list-style-position:inside;columns:3 18em}
svg .grid{stroke:#eee}
svg .frame{stroke:#999;fill:none}
svg .empty{font-size:15px;fill:#999}
table{border-collapse:collapse;margin:8px 0;font-variant-numeric:tabular-nums}
th,td{padding:4px 10px;border-bottom:1px solid #e4e4e4}
th{background:#f5f5f5;text-align:left}
td.r,th.r{text-align:right}
td.c,th.c{text-align:center}
td.fail{color:#c62828;font-weight:700}
td.pass{color:#2a9d3f;font-weight:700}
.note{color:#666;font-style:italic}
"""


def _header(results: Mapping[str, Any], title: str, overview: Section | None) -> str:
    badge = (
        f'<span class="badge {_badge(results)[0]}-badge">{_badge(results)[1]}</span>'
        if "passed" in results
        else ""
    )
    lines = overview.lines if overview is not None else ()
    meta = "".join(f'<p class="meta">{escape(line)}</p>' for line in lines)
    return f"<h1>{escape(title)}{badge}</h1>\n{meta}"


def _badge(results: Mapping[str, Any]) -> tuple[str, str]:
    """The overview's badge: (its style, its word). Never PASS for a run that sent nothing, had no success, or
    could not carry its load; neutral when there was nothing to judge."""
    totals = results.get("totals") or {}
    if results.get("incomplete"):
        return "fail", "INCOMPLETE"
    if not totals.get("ok"):
        return "fail", "NO SUCCESSFUL REQUEST"
    if not results.get("passed"):
        return "fail", "FAIL"
    if not results.get("thresholds"):
        return "neutral", "NO THRESHOLDS"
    return "pass", "PASS"


def _banner(warnings: Section | None) -> str:
    if warnings is None or not warnings.lines:
        return ""
    items = "".join(f"<p>{escape(line.removeprefix('!! '))}</p>" for line in warnings.lines)
    return f'<div class="banner" role="alert">{items}</div>'


def _section(s: Section) -> str:
    out = [f"<h2>{escape(s.title)}</h2>"] if s.title else []
    out += [f"<p>{escape(line)}</p>" for line in s.lines]
    if s.table is not None:
        aligns = s.table.align
        head = "".join(
            f'<th class="{a}">{escape(h)}</th>' for h, a in zip(s.table.headers, aligns, strict=True)
        )
        rows = []
        for row in s.table.rows:
            cells = "".join(
                f'<td class="{a}{_cell_class(c)}">{escape(c)}</td>' for c, a in zip(row, aligns, strict=True)
            )
            rows.append(f"<tr>{cells}</tr>")
        out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
    out += [f'<p class="note">{escape(n)}</p>' for n in s.notes]
    return "\n".join(out)


def _cell_class(cell: str) -> str:
    return {"FAIL": " fail", "pass": " pass"}.get(cell, "")


# -- charts over time --------------------------------------------------------------------------------------


def _time_charts(results: Mapping[str, Any]) -> list[str]:
    intervals = sorted(results.get("intervals") or [], key=lambda iv: float(iv.get("t", 0)))
    events = [e for e in results.get("events") or [] if isinstance(e.get("t"), int | float)]
    last_t = max([float(iv.get("t", 0)) + 1 for iv in intervals] + [float(e["t"]) for e in events] + [0.0])
    duration = float(results.get("duration_s") or 0.0)
    x_hi = max(duration, last_t) or 1.0
    xs = [float(iv.get("t", 0)) + 0.5 for iv in intervals]  # a second's figures drawn at its middle
    # A second not wholly inside the profile's duration is drain: few requests, a partial second, so its
    # rate and percentiles would spike the lines. The lines leave it out; the charts shade it.
    drain_from = duration if duration > 0 else None
    in_profile = [drain_from is None or float(iv.get("t", 0)) + 1 <= drain_from + 1e-9 for iv in intervals]

    def series(
        value: Callable[[Mapping[str, Any]], float | None], how: Aggregate, drain: bool = False
    ) -> list[Point]:
        ys = [value(iv) if keep or drain else None for iv, keep in zip(intervals, in_profile, strict=True)]
        while ys and ys[-1] is None and not drain:  # a trailing gap would only stretch the downsampling
            ys.pop()
        return downsample(list(zip(xs, ys, strict=False)), MAX_POINTS, how)

    def num(key: str) -> Callable[[Mapping[str, Any]], float | None]:
        return lambda iv: None if iv.get(key) is None else float(iv[key])

    rate = [
        Series("target", "#777", series(num("target_rate"), "mean"), dashed=True),
        Series(
            "achieved (ok + failed)",
            PALETTE[0],
            series(lambda iv: float(iv.get("ok", 0)) + float(iv.get("failed", 0)), "mean"),
            width=2.0,
        ),
    ]
    latency = [
        Series("p50", PALETTE[0], series(num("p50"), "max")),
        Series("p99", PALETTE[1], series(num("p99"), "max")),
        Series("max", "#d62728", series(num("max"), "max"), width=1.2),
    ]
    totals: dict[str, float] = {}
    for iv in intervals:
        for category, n in (iv.get("errors") or {}).items():
            totals[str(category)] = totals.get(str(category), 0.0) + float(n)
    categories = sorted((c for c, n in totals.items() if n > 0), key=lambda c: (-totals[c], c))
    errors = [
        Series(c, ERROR_PALETTE[i % len(ERROR_PALETTE)], series(_error_count(c), "mean", drain=True))
        for i, c in enumerate(categories)
    ]
    x = Axis(0.0, x_hi, LEFT, WIDTH - RIGHT)
    span = math.ceil(len(intervals) / MAX_POINTS)
    note = f" (every point covers {span} s)" if span > 1 else ""
    drain = drain_shade(x, drain_from)
    drained = "; the drain after the profile ends is shaded, not drawn" if drain else ""
    return [
        _figure(
            "chart-rate",
            f"Request rate, req/s{note}{drained}",
            line_chart(rate, x, events, log_y=False, unit="req/s", shade=drain),
        ),
        _figure(
            "chart-latency",
            f"Latency, ms: per-second p50, p99 and max{' (max of each span)' if note else ''}{drained}",
            line_chart(latency, x, events, log_y=None, unit="ms", empty="no request completed", shade=drain),
        ),
        _figure(
            "chart-errors",
            f"Errors per second, by category{note}",
            stacked_chart(errors, x, events, x_hi, shade=drain),
        ),
        event_list(events, x),
    ]


def _error_count(category: str) -> Callable[[Mapping[str, Any]], float | None]:
    return lambda iv: float((iv.get("errors") or {}).get(category, 0))


def _figure(chart_id: str, caption: str, svg: str) -> str:
    return f'<figure id="{chart_id}"><figcaption>{escape(caption)}</figcaption>\n{svg}\n</figure>'


# -- the percentile distribution ---------------------------------------------------------------------------


def _percentile_chart(results: Mapping[str, Any], hlog: HlogContents | None) -> str:
    series: list[Series] = []
    source = "from the merged per-second histograms of latency.hlog"
    merged = hlog.merged() if hlog is not None else None
    if merged is not None and merged.get_total_count():
        series.append(Series("All", "#111", histogram_percentiles(merged), width=2.4))
    else:
        source = "from the percentiles in results.json (no interval log)"
        series.append(Series("All", "#111", summary_percentiles(results.get("latency_ms") or {}), width=2.4))
    requests: Mapping[str, Any] = results.get("requests") or {}
    names = {sanitize_tag(name): name for name in requests}
    if hlog is not None and hlog.tags():
        for i, tag in enumerate(hlog.tags()):
            h = hlog.merged(tag)
            if h is not None and h.get_total_count():
                label = names.get(tag, tag)
                series.append(Series(label, PALETTE[i % len(PALETTE)], histogram_percentiles(h)))
    else:
        for i, (name, req) in enumerate(requests.items()):
            points = summary_percentiles(req.get("latency_ms") or {})
            series.append(Series(str(name), PALETTE[i % len(PALETTE)], points))
    x = Axis(0.0, float(PERCENTILE_DECADES), LEFT, WIDTH - RIGHT)
    values = [v for s in series for _, v in s.points if v is not None and v > 0]
    y = y_axis(values, log=True)
    parts = [y_grid(y, "ms", True), x_grid_percentile(x)]
    if not values:
        parts.append(empty_note("no request completed"))
    # All on top
    parts += [series_path(s, x, y, markers=len(s.points) < 30) for s in [*series[1:], series[0]]]
    parts.append(legend(series))
    caption = f"Latency by percentile, ms (log scale), {source}"
    return _figure("chart-percentiles", caption, svg_chart(parts))


def histogram_percentiles(h: HdrHistogram, steps_per_decade: int = 40) -> list[Point]:
    """(decades, ms) points: x = log10(1/(1-p)) from 0 (p = 0%) to 99.999%, values in ms (µs / 1000)."""
    xs = [k / steps_per_decade for k in range(PERCENTILE_DECADES * steps_per_decade + 1)]
    pcts = [100.0 * (1.0 - 10.0**-k) for k in xs]
    values = h.get_percentile_to_value_dict(pcts)
    return [(k, values[p] / 1000.0) for k, p in zip(xs, pcts, strict=True) if p in values]


def summary_percentiles(latency: Mapping[str, Any]) -> list[Point]:
    """(decades, ms) points from a results ``latency_ms`` dict: ``min`` at 0%, then every ``pNN`` key."""
    points: list[Point] = []
    for key, v in latency.items():
        if v is None:
            continue
        if key == "min":
            points.append((0.0, float(v)))
        elif key.startswith("p"):
            try:
                p = float(key[1:])
            except ValueError:
                continue
            if 0 <= p < 100:
                points.append((min(float(PERCENTILE_DECADES), -math.log10(1 - p / 100)), float(v)))
    return sorted(points)
