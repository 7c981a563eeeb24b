"""The ``plan`` view: what a profile will do, shown before it runs.

:func:`render_plan` draws the rate curve as a text chart (Unicode block elements, which every terminal font
has), then a table of the stages with the requests each is expected to send, then a summary: duration,
expected requests, peak rate, arrival process and the request mix. It is a pure function of the profile.

:func:`implausible` lists what a profile asks for beyond any plausible fleet (over
:data:`MAX_PLAUSIBLE_RATE` requests/s, or longer than :data:`MAX_PLAUSIBLE_DURATION`): such a profile is
allowed, but more likely a typo (``1e12``, ``100000h``) than a plan, so the CLI warns before it runs.

Each chart column shows the highest rate reached during its slice of time, so a spike shorter than a column
still reaches its full height; the expected counts come from the curve's integral, not from the chart.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right

from loadgen.curve import RateCurve
from loadgen.durations import format_duration
from loadgen.endpoint import reach_lines
from loadgen.profile import Profile
from loadgen.reports.tables import render_table

_BLOCKS = " ▁▂▃▄▅▆▇█"
_NICE_TOPS = (1.0, 1.2, 1.6, 2.0, 2.4, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0)  # their quarters are round too
_TIME_STEPS = (
    *(0.001 * k for k in (1, 2, 5, 10, 20, 50, 100, 200, 500)),
    *(1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800),
    *(3600 * k for k in (1, 2, 3, 6, 12, 24, 48, 168)),
)
_HEAD_ROWS, _TAIL_ROWS = 30, 5  # a longer stage table shows its first and last stages only
MAX_PLAUSIBLE_RATE = 1_000_000.0
"""Requests/s beyond what a plausible fleet sends (a fast agent process sends some tens of thousands)."""
MAX_PLAUSIBLE_DURATION = 7 * 24 * 3600.0
"""Seconds: a profile longer than a week is more likely a typo than a soak test."""


def render_plan(profile: Profile, width: int = 72, height: int = 12) -> str:
    """The plan of ``profile``: chart ``width`` columns wide (labels included) and ``height`` rows tall."""
    if width < 24 or height < 2:
        raise ValueError(f"the chart needs width >= 24 and height >= 2, got {width}x{height}")
    curve = RateCurve(profile.load.start_rate, profile.load.stages)
    reach = reach_lines(profile.target, profile.tls, profile.resolve, profile.auth)
    sections = [
        "\n".join([f"{profile.name} → {profile.target}", *reach]),
        _chart(curve, width, height),
        _stage_table(profile, curve),
        _summary(profile, curve),
        _mix_table(profile),
    ]
    return "\n\n".join(sections) + "\n"


def implausible(profile: Profile) -> list[str]:
    """Warnings, one line each, for a rate or a duration no plausible fleet would be asked for."""
    curve = RateCurve(profile.load.start_rate, profile.load.stages)
    out = []
    if curve.peak_rate > MAX_PLAUSIBLE_RATE:
        out.append(
            f"the profile peaks at {format_rate(curve.peak_rate)} requests/s, more than a plausible fleet "
            f"could send (over {format_rate(MAX_PLAUSIBLE_RATE)}/s); check the rates"
        )
    if curve.duration > MAX_PLAUSIBLE_DURATION:
        out.append(
            f"the profile runs for {format_duration(curve.duration)}, longer than a week; check the durations"
        )
    return out


def format_rate(rate: float) -> str:
    """``2,000``, ``12.5``, ``0.33``: whole rates with thousands separators, others to 2 decimals."""
    if rate == int(rate):
        return f"{int(rate):,}"
    return f"{rate:,.2f}".rstrip("0").rstrip(".")


def format_count(expected: float) -> str:
    """An expected number of requests: whole above 10 (``12,345``), one decimal below (``0.4``)."""
    return f"{expected:,.0f}" if expected >= 10 or expected == int(expected) else f"{expected:.1f}"


def _chart(curve: RateCurve, width: int, height: int) -> str:
    if curve.duration <= 0:
        return "(no load: the profile has no stage longer than 0s)"
    top = _nice_top(curve.peak_rate)
    labels: dict[int, str] = {}
    for k in (4, 3, 2, 1):
        labels.setdefault(round(height * (1 - k / 4)), format_rate(k * top / 4))
    label_width = max(len(text) for text in [*labels.values(), "0"])
    cols = width - label_width - 2
    peaks = _column_peaks(curve, cols)
    lines = ["req/s".rjust(label_width + 1)]
    for row in range(height):
        below = height - 1 - row  # rows under this one
        cells = "".join(_cell(peak / top * height - below, sliver=below == 0 and peak > 0) for peak in peaks)
        axis = "┤" if row in labels else "│"
        lines.append(f"{labels.get(row, ''):>{label_width}} {axis}{cells}".rstrip())
    ticks = _time_ticks(curve.duration, cols)
    axis_line = "".join("┬" if c in ticks else "─" for c in range(cols))
    lines.append(f"{'0':>{label_width}} └{axis_line}")
    lines.append(" " * (label_width + 2) + _tick_labels(ticks, cols).rstrip())
    return "\n".join(lines)


def _nice_top(peak: float) -> float:
    """The top of the y axis: the smallest round number >= ``peak`` whose quarters are round too."""
    if peak <= 0:
        return 1.0
    scale = 10.0 ** math.floor(math.log10(peak))
    return next(n * scale for n in _NICE_TOPS if n * scale >= peak * (1 - 1e-12))


def _column_peaks(curve: RateCurve, cols: int) -> list[float]:
    """The highest rate in each of ``cols`` equal slices of the run (rates are linear within a segment)."""
    dt = curve.duration / cols
    starts = [s.t0 for s in curve.segments]
    peaks = []
    for c in range(cols):
        a, b = c * dt, (c + 1) * dt
        inside = curve.segments[max(bisect_right(starts, a) - 1, 0) : bisect_left(starts, b)]
        ends = [r for s in inside if s.t1 > a for r in (s.rate(max(a, s.t0)), s.rate(min(b, s.t1)))]
        peaks.append(max(ends, default=0.0))
    return peaks


def _cell(fill: float, sliver: bool) -> str:
    """The block for a cell filled ``fill`` (clamped to 0..1); with ``sliver``, at least ▁."""
    index = round(min(max(fill, 0.0), 1.0) * 8)
    return _BLOCKS[max(index, 1) if sliver else index]


def _time_ticks(duration: float, cols: int) -> dict[int, str]:
    """Columns of evenly spaced time ticks and their labels, spaced so that the labels do not touch."""
    interval, count = duration, 1
    for step in _TIME_STEPS:
        spacing = step / duration * cols
        if spacing < 4:  # no label is narrower than "0s" plus a gap; skip before formatting labels
            continue
        n = math.floor(duration / step + 1e-9)
        if spacing >= 2 + max(len(format_duration(k * step)) for k in range(n + 1)):
            interval, count = step, n
            break
    dt = duration / cols
    return {
        min(math.floor(k * interval / dt + 1e-9), cols - 1): format_duration(k * interval)
        for k in range(count + 1)
    }


def _tick_labels(ticks: dict[int, str], cols: int) -> str:
    """The labels under the ticks; one that would run past the end moves left, or goes if it collides."""
    line = [" "] * cols
    free = 0
    for col, text in sorted(ticks.items()):
        start = min(col, cols - len(text))
        if start < free:
            continue
        line[start : start + len(text)] = text
        free = start + len(text) + 1
    return "".join(line)


def _stage_table(profile: Profile, curve: RateCurve) -> str:
    rows: list[list[object]] = []
    start, rate = 0.0, profile.load.start_rate
    for i, stage in enumerate(profile.load.stages):
        expected = curve.between(start, start + stage.duration)
        rows.append(
            [
                i,
                format_rate(rate),
                format_rate(stage.rate),
                format_duration(stage.duration),
                format_duration(start),
                format_count(expected),
            ]
        )
        start, rate = start + stage.duration, stage.rate
    note = ""
    if len(rows) > _HEAD_ROWS + _TAIL_ROWS + 1:
        note = f"\n({len(rows) - _HEAD_ROWS - _TAIL_ROWS:,} stages not shown)"
        rows = [*rows[:_HEAD_ROWS], ["…"] * 6, *rows[-_TAIL_ROWS:]]
    return render_table(["#", "from/s", "to/s", "duration", "starts at", "requests"], rows, "rrrrrr") + note


def _summary(profile: Profile, curve: RateCurve) -> str:
    load = profile.load
    lines = [
        ("duration", format_duration(curve.duration)),
        ("arrivals", f"{format_count(curve.total)} expected (each starts a request or a flow)")
        if profile.flows
        else ("requests", f"{format_count(curve.total)} expected"),
        ("peak rate", f"{format_rate(curve.peak_rate)}/s"),
        ("arrival", f"{load.arrival}, timeout {format_duration(load.timeout)}"),
        ("in flight", f"at most {load.max_in_flight:,}"),
        (
            "connections",
            f"at most {load.max_connections:,} per agent (more requests wait for one)"
            if load.max_connections
            else "as many as the requests in flight need",
        ),
    ]
    if load.http_version != "1.1":
        streams = load.max_streams_per_connection
        lines.append(
            (
                "protocol",
                "HTTP/2 or HTTP/1.1, as the server agrees by ALPN (https; http: HTTP/1.1)"
                if load.http_version == "auto"
                else "HTTP/2",
            )
        )
        if load.http_version == "2" or streams is not None:
            limit = f"at most {streams:,}" if streams else "as many as the server allows"
            lines.append(("streams", f"{limit} per HTTP/2 connection"))
    if profile.thresholds:
        lines.append(("thresholds", ", ".join(profile.thresholds)))
    return "\n".join(f"{key:<12}{value}" for key, value in lines)


def _mix_table(profile: Profile) -> str:
    """The arrivals' mix: each plain request and each flow with its share, a flow's steps under it."""
    steps = profile.step_names
    plain = [r for r in profile.requests if r.name not in steps]
    total = sum(r.weight for r in plain) + sum(f.weight for f in profile.flows)
    by_name = {r.name: r for r in profile.requests}
    rows = [[r.name, r.method, r.path, f"{r.weight:g}", f"{100 * r.weight / total:.1f}%"] for r in plain]
    for flow in profile.flows:
        kind = f"flow: {flow.function}" if flow.function else "flow"
        rows.append([flow.name, "", kind, f"{flow.weight:g}", f"{100 * flow.weight / total:.1f}%"])
        for s in flow.steps:
            if s.request is not None:
                r = by_name[s.request]
                rows.append([f"  {s.name}", r.method, r.path, "", ""])
            elif s.pause is not None:
                rows.append([f"  {s.name}", "", f"pause {s.pause.to_doc()}", "", ""])
            else:
                rows.append([f"  {s.name}", "", "(in Python)", "", ""])
    return render_table(["arrival", "method", "path", "weight", "share"], rows, "lllrr")
