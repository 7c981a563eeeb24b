"""The live panel and the plain progress line: pure rendering from fixed states, and the writer on a string
stream (no terminal). The real terminal is tests/test_panel_terminal.py."""

from __future__ import annotations

import dataclasses
import io
import random
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator.aggregate import ClosedInterval, Counts
from coordinator.panel import PanelWriter, PlainWriter, render_panel, wants_color, wants_panel
from coordinator.progress import (
    RecentSeconds,
    RunStatus,
    SaturationNote,
    StageNow,
    progress_line,
    run_status,
    stage_now,
)
from loadgen.histogram import new_histogram
from loadgen.percentiles import percentiles_ms
from loadgen.profile import Stage

ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

MID_RUN = RunStatus(
    name="checkout-spike",
    elapsed=42.3,
    duration=120.0,
    stage=StageNow(2, 4, 50.0, 400.0),
    second=41,
    target_rate=187.5,
    achieved_rate=186,
    window_s=10,
    p50_ms=12.4,
    p99_ms=48.1,
    ok=7812,
    failed=12,
    dropped=3,
    errors=(("timeout", 9), ("http_503", 3)),
    agents_connected=2,
    agents_lost=1,
    agents_expected=3,
    saturated_now=True,
    saturation=SaturationNote(40, "send lag p99 12.0 ms"),
    thresholds=2,
    failing=("p99 < 40ms",),
)
BEFORE_ANY_SECOND = dataclasses.replace(
    MID_RUN,
    elapsed=0.4,
    stage=StageNow(1, 4, 0.0, 50.0),
    second=None,
    target_rate=None,
    achieved_rate=None,
    window_s=0,
    p50_ms=None,
    p99_ms=None,
    ok=0,
    failed=0,
    dropped=0,
    errors=(),
    agents_lost=0,
    saturated_now=False,
    saturation=None,
    failing=None,
)
AFTER_THE_END = dataclasses.replace(MID_RUN, elapsed=121.5, stage=None, stopping=None, failing=())
STATES = {"mid run": MID_RUN, "before any second": BEFORE_ANY_SECOND, "after the end": AFTER_THE_END}


def visible(line: str) -> str:
    return ESCAPE.sub("", line)


def test_the_panel_at_80_columns_shows_every_figure() -> None:
    lines = render_panel(MID_RUN, 80)
    text = "\n".join(lines)
    assert lines[0].startswith("loadgen  checkout-spike") and lines[0].endswith("running")
    assert "0:42 / 2:00" in lines[1] and "35%" in lines[1] and "█" in lines[1]
    assert "2/4  ramp 50 → 400 req/s" in text
    assert "target 187.5/s  achieved 186/s  (second 41)" in text
    assert "p50 12.4 ms  p99 48.1 ms  (last 10 s)" in text
    assert "ok 7,812  failed 12  dropped 3" in text
    assert "timeout 9  http_503 3" in text
    assert "2 connected  1 lost  (3 expected)" in text
    assert "SATURATED (t=40 s: send lag p99 12.0 ms)" in text
    assert "FAILING so far: p99 < 40ms" in text
    assert all(len(line) <= 79 for line in lines)
    assert not any(ESCAPE.search(line) for line in lines)  # no colour unless asked


@pytest.mark.parametrize("width", [80, 60, 40, 24])
@pytest.mark.parametrize("name", list(STATES))
def test_every_state_fits_the_width_in_the_same_number_of_lines(width: int, name: str) -> None:
    lines = render_panel(STATES[name], width)
    assert len(lines) == len(render_panel(MID_RUN, 80)) == 10  # a redraw always covers the last panel
    assert all(len(line) <= width - 1 for line in lines), lines


def test_narrow_panels_cut_lines_visibly_and_keep_the_labels() -> None:
    lines = render_panel(MID_RUN, 40)
    assert [line.split()[0] for line in lines[1:]] == [
        "elapsed",
        "stage",
        "rate",
        "latency",
        "requests",
        "errors",
        "agents",
        "saturation",
        "thresholds",
    ]
    assert any(line.endswith("…") for line in lines)
    assert "0:42 / 2:00" in lines[1]


def test_states_before_the_first_second_and_after_the_end() -> None:
    early = "\n".join(render_panel(BEFORE_ANY_SECOND, 80))
    assert "target -  achieved -" in early
    assert "p50 -  p99 -  (last 0 s)" in early
    assert "errors      none" in early
    assert "saturation  none" in early
    assert "thresholds  2, not judged yet" in early
    late = render_panel(AFTER_THE_END, 80)
    assert late[0].endswith("finishing")
    assert "2:00 / 2:00" in late[1] and "100%" in late[1]
    assert "done; waiting for the last responses" in late[2]
    assert "2, all passing so far" in late[-1]
    stopping = render_panel(dataclasses.replace(MID_RUN, stopping="interrupted by the operator"), 80)
    assert stopping[0].endswith("stopping: interrupted by the operator")
    hours = render_panel(dataclasses.replace(MID_RUN, elapsed=3725.0, duration=8 * 3600.0), 80)
    assert "1:02:05 / 8:00:00" in hours[1]


def test_colour_and_ascii() -> None:
    coloured = render_panel(MID_RUN, 80, color=True)
    assert ESCAPE.search(coloured[0])  # the title in bold
    assert "\x1b[1;31m" in coloured[-1]  # a failing threshold in red
    assert [visible(line) for line in coloured] == render_panel(MID_RUN, 80)
    ascii_only = render_panel(MID_RUN, 40, unicode=False)
    assert all(line.isascii() for line in ascii_only)
    assert "#" in ascii_only[1] and "50 -> 400" in "\n".join(render_panel(MID_RUN, 80, unicode=False))


@given(st.integers(min_value=1, max_value=300), st.sampled_from(list(STATES)), st.booleans())
def test_any_width_fits(width: int, name: str, color: bool) -> None:
    lines = render_panel(STATES[name], width, color=color)
    assert len(lines) == 10
    assert all(len(visible(line)) <= max(20, width - 1) for line in lines)


def test_the_plain_line_has_the_figures_and_no_escapes() -> None:
    line = progress_line(MID_RUN)
    assert "\n" not in line and not ESCAPE.search(line)
    for part in (
        "[    42/120 s  35%]",
        "stage 2/4 50->400/s",
        "target 187.5/s achieved 186/s @41s",
        "p50 12.4 ms p99 48.1 ms (10s)",
        "ok 7812 failed 12 (timeout 9, http_503 3) dropped 3",
        "agents 2/3 lost 1",
        "SATURATED",
        "FAILING p99 < 40ms",
    ):
        assert part in line
    early = progress_line(BEFORE_ANY_SECOND)
    assert "target - achieved -" in early and "p50 - p99 - (0s)" in early
    assert "lost" not in early and "SATURATED" not in early and "FAILING" not in early


# -- the status from the coordinator's parts ---------------------------------------------------------------


def test_stage_now_counts_jumps_but_never_stands_in_one() -> None:
    stages = [Stage(10.0, 100.0), Stage(0.0, 300.0), Stage(20.0, 300.0), Stage(5.0, 0.0)]
    assert stage_now(0.0, stages, 0.0) == StageNow(1, 4, 0.0, 100.0)
    assert stage_now(0.0, stages, 9.99) == StageNow(1, 4, 0.0, 100.0)
    assert stage_now(0.0, stages, 10.0) == StageNow(3, 4, 300.0, 300.0)  # the jump took no time
    assert stage_now(0.0, stages, 31.0) == StageNow(4, 4, 300.0, 0.0)
    assert stage_now(0.0, stages, 35.0) is None
    assert stage_now(0.0, stages, -1.0) is None
    assert stage_now(5.0, [], 1.0) is None


def closed(index: int, values: list[int], **summary: object) -> ClosedInterval:
    h = new_histogram()
    for v in values:
        h.record_value(v)
    base = {"t": index, "target_rate": 100.0, "ok": len(values), "failed": 0, "saturated": False}
    return ClosedInterval(index, {**base, **summary}, h, {}, {})


def test_recent_seconds_are_exact_over_the_last_ten() -> None:
    rng = random.Random(7)
    seconds = [[rng.randint(100, 200_000) for _ in range(50)] for _ in range(14)]
    window = RecentSeconds()
    assert window.last is None
    assert window.percentiles() == (0, None, None)
    for i, values in enumerate(seconds):
        window.add(closed(i, values))
    everything = new_histogram()
    for values in seconds[-10:]:  # the four oldest left the window
        for v in values:
            everything.record_value(v)
    assert window.percentiles() == (10, *percentiles_ms(everything, 50.0, 99.0))
    assert window.last is not None and window.last["t"] == 13


def test_run_status_from_the_coordinators_parts() -> None:
    window = RecentSeconds()
    window.add(closed(0, [1000] * 10))
    window.add(closed(1, [2000] * 8, failed=2, target_rate=12.5, saturated=True))
    totals = Counts(
        scheduled=30, ok=18, failed=4, dropped=1, errors={"timeout": 1, "http_503": 3, "reset": 0}
    )
    events = [
        {"t": 0.0, "type": "run_started"},
        {"t": 0.9, "type": "generator_saturated", "second": 0, "why": "first"},
        {"t": 1.9, "type": "generator_saturated", "second": 1, "why": "dropped 1"},
        {"t": 2.0, "type": "agent_lost", "agent": "a"},
    ]
    s = run_status(
        name="p",
        elapsed=2.2,
        duration=10.0,
        start_rate=0.0,
        stages=[Stage(10.0, 20.0)],
        window=window,
        totals=totals,
        agent_states=["active", "lost", "finished"],
        connected=2,
        expected=3,
        events=events,
        thresholds=1,
        failing=None,
        stopping=None,
    )
    assert (s.second, s.target_rate, s.achieved_rate) == (1, 12.5, 10)
    assert (s.window_s, s.p50_ms, s.p99_ms) == (2, 1.0, 2.0)
    assert s.errors == (("http_503", 3), ("timeout", 1))  # the most frequent first, none of zero
    assert (s.agents_connected, s.agents_lost, s.agents_expected) == (2, 1, 3)
    assert s.saturated_now and s.saturation == SaturationNote(1, "dropped 1")
    assert s.stage == StageNow(1, 1, 0.0, 20.0)
    assert s.fraction == pytest.approx(0.22)


# -- where it is drawn -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stdout_tty", "stderr_tty", "term", "plain", "panel"),
    [
        (True, True, "xterm-256color", False, True),
        (True, True, "xterm-256color", True, False),  # --no-panel
        (True, True, "dumb", False, False),
        (True, True, None, False, False),  # no TERM: nothing known about the terminal
        (False, True, "xterm", False, False),  # the summary goes to a pipe or a file
        (True, False, "xterm", False, False),  # the panel would be drawn into a log
    ],
)
def test_when_the_panel_is_drawn(
    stdout_tty: bool, stderr_tty: bool, term: str | None, plain: bool, panel: bool
) -> None:
    env = {} if term is None else {"TERM": term}
    assert wants_panel(stdout_tty=stdout_tty, stderr_tty=stderr_tty, env=env, plain=plain) is panel


def test_no_color() -> None:
    assert wants_color({})
    assert wants_color({"NO_COLOR": ""})  # set but empty: the convention says colour
    assert not wants_color({"NO_COLOR": "1"})


def test_the_writer_redraws_in_place_prints_messages_above_and_restores_the_cursor() -> None:
    out = io.StringIO()
    writer = PanelWriter(out, color=False, unicode=True, columns=lambda: 80)
    writer.message("coordinator listening")  # before any status: a plain line
    assert out.getvalue() == "coordinator listening\n"
    writer.status(BEFORE_ANY_SECOND)
    first = out.getvalue().removeprefix("coordinator listening\n")
    assert first.startswith("\x1b[?25l")  # the cursor hidden while the panel is up
    assert first.count("\n") == 10
    out.seek(0)
    out.truncate()
    writer.status(MID_RUN)
    second = out.getvalue()
    assert second.startswith("\r\x1b[10A\x1b[J")  # back to the panel's first line, the old one cleared
    assert second.count("\n") == 10
    out.seek(0)
    out.truncate()
    writer.message("agent a lost")
    third = out.getvalue()
    assert third.startswith("\r\x1b[10A\x1b[Jagent a lost\n")  # above the panel, which moves down
    assert third.count("\n") == 11
    out.seek(0)
    out.truncate()
    writer.close()
    writer.close()
    writer.status(MID_RUN)  # after the end nothing is drawn again
    assert out.getvalue() == "\x1b[?25h\n"
    writer.message("after")
    assert out.getvalue().endswith("\x1b[?25h\nafter\n")


def test_a_writer_that_never_drew_leaves_the_terminal_alone() -> None:
    out = io.StringIO()
    writer = PanelWriter(out, color=True, unicode=True, columns=lambda: 80)
    writer.message("refused")
    writer.close()
    assert out.getvalue() == "refused\n"


def test_the_plain_writer_writes_one_line_per_status() -> None:
    out = io.StringIO()
    writer = PlainWriter(out)
    writer.message("starting")
    writer.status(MID_RUN)
    writer.status(AFTER_THE_END)
    writer.close()
    lines = out.getvalue().splitlines()
    assert lines == ["starting", progress_line(MID_RUN), progress_line(AFTER_THE_END)]
    assert not ESCAPE.search(out.getvalue())
