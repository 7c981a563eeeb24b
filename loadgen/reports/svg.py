"""The report's charts as inline SVG: axes (linear, log10, and the percentile axis ``1/(1-p)``), grids,
series drawn as lines or stacked step areas, the run's events as numbered marks, the drain shaded, a legend.
Pure functions of values; :mod:`loadgen.reports.html` decides what goes on which chart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any, Literal

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


def line_chart(
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
    y = y_axis(values, log_y)
    parts = [shade, y_grid(y, unit, log_y), x_grid_time(x)]
    if not values and empty:
        parts.append(empty_note(empty))
    parts += [series_path(s, x, y) for s in series]
    parts.append(_events(events, x))
    parts.append(legend(series))
    return svg_chart(parts)


def stacked_chart(
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
    y = y_axis(bottoms, log=False)
    parts = [shade, y_grid(y, "errors/s", False), x_grid_time(x)]
    if not series:
        parts.append(empty_note("no errors"))
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
    parts.append(legend(series))
    return svg_chart(parts)


# -- SVG pieces --------------------------------------------------------------------------------------------


def svg_chart(parts: Sequence[str]) -> str:
    body = "\n".join(p for p in parts if p)
    w, h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    frame = f'<rect class="frame" x="{LEFT}" y="{TOP}" width="{w}" height="{h}"/>'
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img">\n'
        f"{body}\n{frame}\n</svg>"
    )


def y_axis(values: Sequence[float], log: bool) -> Axis:
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


def y_grid(y: Axis, unit: str, log: bool) -> str:
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


def x_grid_time(x: Axis) -> str:
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


def x_grid_percentile(x: Axis) -> str:
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


def series_path(s: Series, x: Axis, y: Axis, markers: bool = False) -> str:
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
            counts[_kind(e)] = counts.get(_kind(e), 0) + 1
        return ", ".join(k if n == 1 else f"{k} ×{n}" for k, n in counts.items())

    @property
    def detail(self) -> str:
        return "; ".join(f"t={float(e['t']):.3f}s {event_text(e)}" for e in self.events)


def event_text(e: Mapping[str, Any]) -> str:
    """One event in words, as the report's event marks name it: its type, then whom or what it was about."""
    return _kind(e) + _about(e)


def _kind(e: Mapping[str, Any]) -> str:
    """An event's type, with the action's name for the library's actions ("action_started failover")."""
    kind = str(e.get("type", "event"))
    return f"{kind} {e['name']}" if kind.startswith("action_") and e.get("name") else kind


def _about(e: Mapping[str, Any]) -> str:
    if e.get("agent"):
        return f" {e['agent']}"
    if e.get("outcome") and e.get("outcome") != "ok":
        return f" ({e['outcome']}{': ' + str(e['error']) if e.get('error') else ''})"
    return ""


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


def event_list(events: Sequence[Mapping[str, Any]], x: Axis) -> str:
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


def drain_shade(x: Axis, drain_from: float | None) -> str:
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


def legend(series: Sequence[Series]) -> str:
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


def empty_note(text: str) -> str:
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
