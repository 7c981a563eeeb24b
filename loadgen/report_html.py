"""The run as one self-contained HTML page: it opens offline, references nothing outside itself (inline
CSS, charts drawn here as inline SVG, no script), and is a pure function of ``results.json``
(docs/results-schema.md) and, when present, the run's interval log (:mod:`loadgen.hlog`).

Contents, top to bottom: the overview with PASS/FAIL and a red banner for warnings; charts over time
(target vs achieved rate, latency p50/p99/max, errors stacked by category), each marked with the run's
events; the percentile distribution (latency against ``1/(1-p)``, the plot HdrHistogram users expect);
then the tables of the text summary (built once by :func:`loadgen.report_md.build_sections`).

Long runs are downsampled to at most :data:`MAX_POINTS` points per series: the max of each bucket for
latency (a spike never disappears), the mean for rates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any, Literal

from hdrh.histogram import HdrHistogram

from loadgen.hlog import HlogContents, sanitize_tag
from loadgen.report_md import Section, build_sections
from loadgen.thresholds import Verdict

MAX_POINTS = 1500
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
ERROR_PALETTE = ("#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#7f7f7f", "#17becf")
PERCENTILE_DECADES = 5  # the distribution's x axis runs to 99.999%

# chart geometry (SVG user units; the SVG scales to the page width)
WIDTH, HEIGHT = 1100, 280
LEFT, RIGHT, TOP, BOTTOM = 70, 34, 44, 40

Point = tuple[float, float | None]
Aggregate = Literal["max", "mean"]


@dataclass(frozen=True)
class Series:
    label: str
    color: str
    points: Sequence[Point]  # (x, y); None for y is a gap
    dashed: bool = False
    width: float = 1.6


@dataclass(frozen=True)
class Axis:
    """A value range mapped onto pixels ``[pixel_lo, pixel_hi]``, linear or log10."""

    lo: float
    hi: float
    pixel_lo: float
    pixel_hi: float
    log: bool = False

    def __call__(self, v: float) -> float:
        if self.log:
            v, lo, hi = math.log10(max(v, self.lo)), math.log10(self.lo), math.log10(self.hi)
        else:
            lo, hi = self.lo, self.hi
        frac = (v - lo) / (hi - lo) if hi > lo else 0.0
        return self.pixel_lo + (self.pixel_hi - self.pixel_lo) * min(1.0, max(0.0, frac))


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
    for name in ("Requests", "Thresholds", "Errors", "Per hour"):
        if name in by_title:
            body.append(_section(by_title[name]))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(part for part in body if part)
        + "\n</body>\n</html>\n"
    )


_CSS = """
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
    drain = _drain(x, drain_from)
    drained = "; the drain after the profile ends is shaded, not drawn" if drain else ""
    return [
        _figure(
            "chart-rate",
            f"Request rate, req/s{note}{drained}",
            _line_chart(rate, x, events, log_y=False, unit="req/s", shade=drain),
        ),
        _figure(
            "chart-latency",
            f"Latency, ms: per-second p50, p99 and max{' (max of each span)' if note else ''}{drained}",
            _line_chart(latency, x, events, log_y=None, unit="ms", empty="no request completed", shade=drain),
        ),
        _figure(
            "chart-errors",
            f"Errors per second, by category{note}",
            _stacked_chart(errors, x, events, x_hi, shade=drain),
        ),
        _event_list(events, x),
    ]


def _error_count(category: str) -> Callable[[Mapping[str, Any]], float | None]:
    return lambda iv: float((iv.get("errors") or {}).get(category, 0))


def downsample(points: Sequence[Point], max_points: int, how: Aggregate) -> list[Point]:
    """At most ``max_points`` points: consecutive runs of equal length (the last may be shorter), each
    drawn at its mean x with the ``"max"`` or the ``"mean"`` of its y values (None values are ignored;
    a run of only None stays a gap)."""
    size = max(1, math.ceil(len(points) / max_points))
    if size == 1:
        return list(points)
    agg = _max if how == "max" else _mean_present
    out: list[Point] = []
    for i in range(0, len(points), size):
        run = points[i : i + size]
        out.append((sum(x for x, _ in run) / len(run), agg([y for _, y in run])))
    return out


def _figure(chart_id: str, caption: str, svg: str) -> str:
    return f'<figure id="{chart_id}"><figcaption>{escape(caption)}</figcaption>\n{svg}\n</figure>'


def _line_chart(
    series: Sequence[Series],
    x: Axis,
    events: Sequence[Mapping[str, Any]],
    *,
    log_y: bool | None,
    unit: str,
    empty: str = "",
    shade: str = "",
) -> str:
    """Lines over time; ``log_y=None`` picks log when the values span more than ~1.5 decades."""
    values = [v for s in series for _, v in s.points if v is not None and math.isfinite(v)]
    positive = [v for v in values if v > 0]
    if log_y is None:
        log_y = bool(positive) and max(positive) / min(positive) > 30
    y = _y_axis(values, log_y)
    parts = [shade, _y_grid(y, unit, log_y), _x_grid_time(x)]
    if not values and empty:
        parts.append(_empty(empty))
    parts += [_path(s, x, y) for s in series]
    parts.append(_events(events, x))
    parts.append(_legend(series))
    return _svg(parts)


def _stacked_chart(
    series: Sequence[Series], x: Axis, events: Sequence[Mapping[str, Any]], x_hi: float, shade: str = ""
) -> str:
    """Step areas stacked bottom to top in the order given; each point covers the span up to the next."""
    n = len(series[0].points) if series else 0
    xs = [p[0] for p in series[0].points] if series else []
    half = (xs[1] - xs[0]) / 2 if n > 1 else 0.5
    bottoms = [0.0] * n
    stacks: list[tuple[Series, list[float], list[float]]] = []
    for s in series:
        tops = [b + (v or 0.0) for b, (_, v) in zip(bottoms, s.points, strict=True)]
        stacks.append((s, bottoms, tops))
        bottoms = tops
    y = _y_axis(bottoms, log=False)
    parts = [shade, _y_grid(y, "errors/s", False), _x_grid_time(x)]
    if not series:
        parts.append(_empty("no errors"))
    for s, lows, highs in stacks:
        edges = [(max(0.0, px - half), min(x_hi, px + half)) for px in xs]
        top = [f"{x(a):.1f},{y(h):.1f} {x(b):.1f},{y(h):.1f}" for (a, b), h in zip(edges, highs, strict=True)]
        bottom = [
            f"{x(b):.1f},{y(lo):.1f} {x(a):.1f},{y(lo):.1f}"
            for (a, b), lo in reversed(list(zip(edges, lows, strict=True)))
        ]
        parts.append(
            f'<polygon class="series" fill="{s.color}" fill-opacity="0.75" stroke="{s.color}" '
            f'stroke-width="0.5" points="{" ".join(top + bottom)}"><title>{escape(s.label)}</title></polygon>'
        )
    parts.append(_events(events, x))
    parts.append(_legend(series))
    return _svg(parts)


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
    y = _y_axis(values, log=True)
    parts = [_y_grid(y, "ms", True), _x_grid_percentile(x)]
    if not values:
        parts.append(_empty("no request completed"))
    parts += [_path(s, x, y, markers=len(s.points) < 30) for s in [*series[1:], series[0]]]  # All on top
    parts.append(_legend(series))
    caption = f"Latency by percentile, ms (log scale), {source}"
    return _figure("chart-percentiles", caption, _svg(parts))


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


# -- SVG pieces --------------------------------------------------------------------------------------------


def _svg(parts: Sequence[str]) -> str:
    body = "\n".join(p for p in parts if p)
    w, h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    frame = f'<rect class="frame" x="{LEFT}" y="{TOP}" width="{w}" height="{h}"/>'
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img">\n'
        f"{body}\n{frame}\n</svg>"
    )


def _y_axis(values: Sequence[float], log: bool) -> Axis:
    pixel_lo, pixel_hi = HEIGHT - BOTTOM, TOP
    if log:
        positive = [v for v in values if v > 0 and math.isfinite(v)] or [1.0]
        lo = 10.0 ** math.floor(math.log10(min(positive)))
        hi = 10.0 ** math.ceil(math.log10(max(positive)))
        return Axis(lo, hi if hi > lo else lo * 10, pixel_lo, pixel_hi, log=True)
    top = max([v for v in values if math.isfinite(v)] + [0.0])
    return Axis(0.0, _nice_ceiling(top) if top > 0 else 1.0, pixel_lo, pixel_hi)


def _nice_step(span: float, target_ticks: int = 5) -> float:
    raw = span / target_ticks
    magnitude = 10.0 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)


def _nice_ceiling(v: float) -> float:
    step = _nice_step(v)
    return math.ceil(v / step - 1e-9) * step


def _y_grid(y: Axis, unit: str, log: bool) -> str:
    if log:
        ticks = [10.0**e for e in range(round(math.log10(y.lo)), round(math.log10(y.hi)) + 1)]
    else:
        step = _nice_step(y.hi)
        ticks = [i * step for i in range(round(y.hi / step) + 1)]
    out = []
    for v in ticks:
        py = y(v)
        label = _format_decade(v) if log else _format_linear(v, ticks)
        out.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{py:.1f}" y2="{py:.1f}"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{py + 4:.1f}" text-anchor="end">{label}</text>'
        )
    mid = (TOP + HEIGHT - BOTTOM) / 2
    out.append(
        f'<text class="tick" x="14" y="{mid:.0f}" text-anchor="middle" transform="rotate(-90 14 {mid:.0f})">'
        f"{escape(unit)}{' (log)' if log else ''}</text>"
    )
    return "".join(out)


def _format_decade(v: float) -> str:
    return f"{v:,.0f}" if v >= 1 else f"{v:.{-math.floor(math.log10(v) + 1e-9)}f}"


def _format_linear(v: float, ticks: Sequence[float]) -> str:
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else (1 if step % 1 else 0)
    return f"{v:,.{decimals}f}"


def _x_grid_time(x: Axis) -> str:
    span = x.hi - x.lo
    steps = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
    step = next((s for s in steps if span / s <= 12), 86400 * math.ceil(span / 86400 / 12))
    unit = "s" if span <= 120 else "m:ss" if span <= 3600 else "h:mm" if step >= 60 else "h:mm:ss"
    out = []
    for i in range(int(span // step) + 1):
        t = x.lo + i * step
        px = x(t)
        out.append(
            f'<line class="grid" x1="{px:.1f}" x2="{px:.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}"/>'
            f'<text class="tick" x="{px:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">'
            f"{clock(t, unit)}</text>"
        )
    out.append(
        f'<text class="tick" x="{WIDTH - RIGHT}" y="{HEIGHT - 6}" text-anchor="end">'
        f"time since start ({unit})</text>"
    )
    return "".join(out)


def clock(seconds: float, unit: str) -> str:
    """A time axis label in one of the axis units ``s``, ``m:ss``, ``h:mm`` and ``h:mm:ss``."""
    s = round(seconds)
    if unit == "s":
        return f"{s}"
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    if unit == "m:ss":
        return f"{s // 60}:{sec:02d}"
    return f"{h}:{m:02d}" if unit == "h:mm" else f"{h}:{m:02d}:{sec:02d}"


def _x_grid_percentile(x: Axis) -> str:
    out = []
    for k in range(PERCENTILE_DECADES + 1):
        px = x(k)
        label = "0%" if k == 0 else f"{100 - 100 / 10**k:.{max(0, k - 2)}f}%"
        anchor = "end" if k == PERCENTILE_DECADES else "middle"
        out.append(
            f'<line class="grid" x1="{px:.1f}" x2="{px:.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}"/>'
            f'<text class="tick" x="{px:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="{anchor}">'
            f"{label}</text>"
        )
    out.append(
        f'<text class="tick" x="{WIDTH - RIGHT}" y="{HEIGHT - 6}" text-anchor="end">'
        "percentile (log scale of 1/(1-p))</text>"
    )
    return "".join(out)


def _path(s: Series, x: Axis, y: Axis, markers: bool = False) -> str:
    """The series as one path, broken at gaps; a point with no neighbour gets a dot so it shows."""
    runs: list[list[tuple[float, float]]] = [[]]
    for px, v in s.points:
        if v is None or not math.isfinite(v) or (y.log and v <= 0):
            if runs[-1]:
                runs.append([])
            continue
        runs[-1].append((x(px), y(v)))
    d, dots = [], []
    for run in runs:
        if len(run) == 1 or (markers and run):
            dots += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2.5" fill="{s.color}"/>' for a, b in run]
        if len(run) > 1:
            d.append("M" + " L".join(f"{a:.1f},{b:.1f}" for a, b in run))
    dash = ' stroke-dasharray="6 4"' if s.dashed else ""
    path = (
        f'<path class="series" d="{" ".join(d)}" fill="none" stroke="{s.color}" stroke-width="{s.width}"'
        f'{dash} stroke-linejoin="round"><title>{escape(s.label)}</title></path>'
        if d
        else ""
    )
    return path + "".join(dots)


@dataclass(frozen=True)
class EventMark:
    """Events close together on the time axis, drawn as one numbered line."""

    number: int
    px: float
    events: tuple[Mapping[str, Any], ...]

    @property
    def label(self) -> str:
        counts: dict[str, int] = {}
        for e in self.events:
            counts[str(e.get("type", "event"))] = counts.get(str(e.get("type", "event")), 0) + 1
        return ", ".join(k if n == 1 else f"{k} ×{n}" for k, n in counts.items())

    @property
    def detail(self) -> str:
        return "; ".join(
            f"t={float(e['t']):.3f}s {e.get('type', 'event')}" + (f" {e['agent']}" if e.get("agent") else "")
            for e in self.events
        )


def _number_width(n: int) -> float:
    return 7.0 * len(str(n)) + 2


def event_marks(events: Sequence[Mapping[str, Any]], x: Axis) -> list[EventMark]:
    """The events as numbered marks, an event joining the previous mark when its number would not fit
    beside that mark's (so the numbers, drawn in one row above the plot, never overlap)."""
    groups: list[tuple[float, list[Mapping[str, Any]]]] = []
    for e in sorted(events, key=lambda e: float(e["t"])):
        px = x(float(e["t"]))
        n = len(groups) + 1
        if groups and px - groups[-1][0] < (_number_width(n - 1) + _number_width(n)) / 2 + 4:
            groups[-1][1].append(e)
        else:
            groups.append((px, [e]))
    return [EventMark(i, px, tuple(group)) for i, (px, group) in enumerate(groups, start=1)]


def _events(events: Sequence[Mapping[str, Any]], x: Axis) -> str:
    """A vertical line per mark, its number above the plot area (the labels are listed under the charts)."""
    return "".join(
        f'<g class="event-mark"><title>{escape(m.detail)}</title>'
        f'<line x1="{m.px:.1f}" x2="{m.px:.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" stroke="#6a1b9a" '
        f'stroke-width="1" stroke-dasharray="3 3"/>'
        f'<text class="event" x="{m.px:.1f}" y="{TOP - 5}" text-anchor="middle">{m.number}</text></g>'
        for m in event_marks(events, x)
    )


def _event_list(events: Sequence[Mapping[str, Any]], x: Axis) -> str:
    """The numbered legend of the time charts' event marks."""
    marks = event_marks(events, x)
    if not marks:
        return ""
    items = "".join(
        f'<li value="{m.number}"><span class="tick">{float(m.events[0]["t"]):.1f} s</span> '
        f"{escape(m.label)}</li>"
        for m in marks
    )
    return (
        f'<div class="events" id="events"><b>Events</b> (numbered on the charts above)<ol>{items}</ol></div>'
    )


def _drain(x: Axis, drain_from: float | None) -> str:
    """The seconds after the profile's end shaded: their partial figures are not drawn as lines."""
    if drain_from is None or drain_from >= x.hi:
        return ""
    a, b = x(drain_from), x(x.hi)
    return (
        f'<g class="drain"><title>drain: after the profile ends, the requests in flight complete</title>'
        f'<rect x="{a:.1f}" y="{TOP}" width="{b - a:.1f}" height="{HEIGHT - TOP - BOTTOM}" fill="#000" '
        f'fill-opacity="0.06"/><text class="tick" x="{(a + b) / 2:.1f}" y="{HEIGHT - BOTTOM - 6}" '
        f'text-anchor="middle">drain</text></g>'
    )


def _legend(series: Sequence[Series]) -> str:
    out, px = [], float(LEFT)
    for s in series:
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        out.append(
            f'<line x1="{px:.0f}" x2="{px + 22:.0f}" y1="18" y2="18" stroke="{s.color}" '
            f'stroke-width="3"{dash}/>'
            f'<text x="{px + 28:.0f}" y="22">{escape(s.label)}</text>'
        )
        px += 28 + 7.5 * len(s.label) + 22
    return "".join(out)


def _empty(text: str) -> str:
    return (
        f'<text class="empty" x="{(LEFT + WIDTH - RIGHT) / 2}" y="{(TOP + HEIGHT - BOTTOM) / 2}" '
        f'text-anchor="middle">{escape(text)}</text>'
    )


def _mean_present(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _max(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None
