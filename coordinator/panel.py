"""The live terminal panel of ``loadgen run`` and ``loadgen coordinator``, and the plain lines used instead.

:func:`render_panel` is pure: a :class:`~coordinator.progress.RunStatus` and a width in, the lines to draw
out (every line fits the width; always the same number of lines, so a redraw covers the last one).
:class:`PanelWriter` owns the terminal: it hides the cursor, redraws the panel in place with ANSI cursor
movement (no curses), prints what happens (warnings, agents lost) above the panel so it stays in the
scrollback, and shows the cursor again on :meth:`~PanelWriter.close`, leaving the last panel on screen.
:class:`PlainWriter` writes one line per period instead (logs, pipes, ``--no-panel``, ``TERM=dumb``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Protocol, TextIO

from coordinator.progress import RunStatus, ms, progress_line, rate

LABEL = 12  # the width of the labels' column (11 below 60 columns)
HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"
CLEAR_TO_END_OF_LINE, CLEAR_TO_END_OF_SCREEN = "\x1b[K", "\x1b[J"
STYLES = {"title": "\x1b[1m", "warn": "\x1b[33m", "bad": "\x1b[1;31m", "good": "\x1b[32m"}
RESET = "\x1b[0m"


# -- what to draw ------------------------------------------------------------------------------------------


def clock(seconds: float, hours: bool) -> str:
    s = max(0, int(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if hours else f"{s // 60}:{s % 60:02d}"


def count(n: int) -> str:
    return f"{n:,}"


def bar(fraction: float, width: int, unicode: bool) -> str:
    full, empty = ("█", "░") if unicode else ("#", "-")
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return full * filled + empty * (width - filled)


def fit(text: str, width: int, unicode: bool) -> str:
    """``text`` cut to ``width`` characters, the cut marked."""
    if len(text) <= width:
        return text
    return text[: max(0, width - 1)] + ("…" if unicode else "~")


def panel_rows(s: RunStatus, width: int, unicode: bool) -> list[tuple[str, str]]:
    """(style, text) per line; the style is a key of STYLES or "" (plain)."""
    arrow = "→" if unicode else "->"
    hours = s.duration >= 3600
    head = f"loadgen  {s.name}"
    state = f"stopping: {s.stopping}" if s.stopping else "running" if s.elapsed < s.duration else "finishing"
    title = head + " " * max(2, width - len(head) - len(state)) + state

    times = f"{clock(min(s.elapsed, s.duration), hours)} / {clock(s.duration, hours)}"
    percent = f"{100 * s.fraction:3.0f}%"
    room = width - LABEL - len(times) - len(percent) - 6
    progress = f"{times}  [{bar(s.fraction, min(40, room), unicode)}] {percent}" if room >= 5 else times

    if s.stage is None:
        stage = "-" if s.elapsed < s.duration else "done; waiting for the last responses"
    else:
        st = s.stage
        shape = "hold" if st.from_rate == st.to_rate else "ramp"
        stage = f"{st.index}/{st.count}  {shape} {rate(st.from_rate)} {arrow} {rate(st.to_rate)} req/s"

    if s.second is None or s.target_rate is None:
        rates = "target -  achieved -"
    else:
        rates = (
            f"target {s.target_rate:,.1f}/s  achieved {count(s.achieved_rate or 0)}/s  (second {s.second})"
        )
    latency = f"p50 {ms(s.p50_ms)}  p99 {ms(s.p99_ms)}  (last {s.window_s} s)"
    requests = f"ok {count(s.ok)}  failed {count(s.failed)}  dropped {count(s.dropped)}"
    errors = "  ".join(f"{k} {count(v)}" for k, v in s.errors) or "none"
    agents = f"{s.agents_connected} connected  {s.agents_lost} lost  ({s.agents_expected} expected)"

    if s.saturated_now and s.saturation is not None:
        saturation, sat_style = f"SATURATED (t={s.saturation.second} s: {s.saturation.why})", "bad"
    elif s.saturated_now:
        saturation, sat_style = "SATURATED now", "bad"
    elif s.saturation is not None:
        saturation, sat_style = f"was saturated at t={s.saturation.second} s: {s.saturation.why}", "warn"
    else:
        saturation, sat_style = "none", ""

    if not s.thresholds:
        thresholds, th_style = "none set", ""
    elif s.failing is None:
        thresholds, th_style = f"{s.thresholds}, not judged yet", ""
    elif s.failing:
        thresholds, th_style = f"FAILING so far: {'; '.join(s.failing)}", "bad"
    else:
        thresholds, th_style = f"{s.thresholds}, all passing so far", "good"

    def row(label: str, text: str) -> str:
        return f"{label:<{LABEL if width >= 60 else 11}}{text}"

    return [
        ("title", title),
        ("", row("elapsed", progress)),
        ("", row("stage", stage)),
        ("", row("rate", rates)),
        ("", row("latency", latency)),
        ("", row("requests", requests)),
        ("warn" if s.errors else "", row("errors", errors)),
        ("warn" if s.agents_lost else "", row("agents", agents)),
        (sat_style, row("saturation", saturation)),
        (th_style, row("thresholds", thresholds)),
    ]


def render_panel(s: RunStatus, width: int, *, color: bool = False, unicode: bool = True) -> list[str]:
    """The panel's lines for a terminal ``width`` columns wide: each at most ``width - 1`` characters
    (a line that fills the last column makes some terminals wrap), styled with ANSI colour when ``color``."""
    width = max(20, width - 1)
    lines = []
    for style, text in panel_rows(s, width, unicode):
        line = fit(text, width, unicode)
        lines.append(f"{STYLES[style]}{line}{RESET}" if color and style else line)
    return lines


# -- where to draw it --------------------------------------------------------------------------------------


class Display(Protocol):
    in_place: bool  # it redraws: nothing else may write to its terminal (local agents write through it)

    def status(self, status: RunStatus) -> None: ...

    def message(self, line: str) -> None: ...

    def close(self) -> None: ...


def wants_panel(*, stdout_tty: bool, stderr_tty: bool, env: Mapping[str, str], plain: bool) -> bool:
    """The panel is drawn on a terminal that can take it: both streams on it (the summary prints below the
    panel), a ``TERM`` other than ``dumb``, and no ``--no-panel``."""
    return stdout_tty and stderr_tty and not plain and env.get("TERM", "") not in ("", "dumb")


def wants_color(env: Mapping[str, str]) -> bool:
    """No colour when ``NO_COLOR`` is set to anything (https://no-color.org)."""
    return not env.get("NO_COLOR")


class PlainWriter:
    """One line per period, and what happens as it happens."""

    in_place = False

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def status(self, status: RunStatus) -> None:
        self.message(progress_line(status))

    def message(self, line: str) -> None:
        self._stream.write(line + "\n")
        self._stream.flush()

    def close(self) -> None:
        self._stream.flush()


class PanelWriter:
    """Draws the panel on ``stream`` (a terminal) in place; ``columns`` says how wide it is now. Its methods
    may be called from any thread (the local agents' output comes from threads of its own)."""

    in_place = True

    def __init__(self, stream: TextIO, *, color: bool, unicode: bool, columns: Callable[[], int]) -> None:
        self._stream = stream
        self._color = color
        self._unicode = unicode
        self._columns = columns
        self._last: RunStatus | None = None
        self._drawn = 0  # lines of the panel on screen, just above the cursor
        self._closed = False
        self._lock = threading.Lock()

    def status(self, status: RunStatus) -> None:
        with self._lock:
            self._last = status
            self._draw("")

    def message(self, line: str) -> None:
        """``line`` above the panel (the panel moves down a line)."""
        with self._lock:
            if self._closed or self._last is None:
                self._write(line + "\n")
            else:
                self._draw(line + "\n")

    def close(self) -> None:
        """Leave the last panel on screen, the cursor below it and shown. Safe to call more than once."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._write(SHOW_CURSOR + "\n" if self._drawn else "")  # a blank line before what follows

    def _draw(self, above: str) -> None:
        if self._closed or self._last is None:
            return
        lines = render_panel(self._last, self._columns(), color=self._color, unicode=self._unicode)
        erase = f"\r\x1b[{self._drawn}A{CLEAR_TO_END_OF_SCREEN}" if self._drawn else HIDE_CURSOR
        body = "".join(line + CLEAR_TO_END_OF_LINE + "\n" for line in lines)
        self._write(erase + above + body)
        self._drawn = len(lines)

    def _write(self, text: str) -> None:
        if text:
            self._stream.write(text)
            self._stream.flush()
