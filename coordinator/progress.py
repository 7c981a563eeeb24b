"""What the coordinator shows while a run goes on: a :class:`RunStatus` value built by a pure function from
what it already knows, and the plain progress line drawn from it (the terminal panel,
:mod:`loadgen.panel`, draws the same value).

The percentiles are exact: :class:`RecentSeconds` keeps the merged histograms of the last closed seconds
and merges them when asked (HDR addition loses nothing), as the coordinator's results do.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from coordinator.aggregate import ClosedInterval, Counts
from loadgen.histogram import new_histogram
from loadgen.percentiles import percentiles_ms
from loadgen.profile import Stage

WINDOW_S = 10  # the seconds the live percentiles cover


@dataclass(frozen=True)
class StageNow:
    """The stage the profile is in: ``index`` counts from 1; it ramps ``from_rate`` → ``to_rate``."""

    index: int
    count: int
    from_rate: float
    to_rate: float


@dataclass(frozen=True)
class SaturationNote:
    """The last live warning that the generator could not keep up: at which second, and why."""

    second: int
    why: str


@dataclass(frozen=True)
class RunStatus:
    """The run as the coordinator knows it at one moment: the state the panel and the plain line draw."""

    name: str
    elapsed: float  # seconds since the aligned start
    duration: float  # the profile's
    stage: StageNow | None  # None before the first stage and after the last
    second: int | None  # the last second every agent has reported (closed), and its figures
    target_rate: float | None
    achieved_rate: int | None  # requests completed in that second (ok + failed)
    window_s: int  # closed seconds the percentiles cover (up to WINDOW_S)
    p50_ms: float | None
    p99_ms: float | None
    ok: int
    failed: int
    dropped: int
    errors: tuple[tuple[str, int], ...]  # by category, the most frequent first
    agents_connected: int
    agents_lost: int
    agents_expected: int
    saturated_now: bool  # the last closed second was saturated
    saturation: SaturationNote | None  # the last warning
    thresholds: int  # how many the profile has
    failing: tuple[str, ...] | None  # thresholds failing on the results so far; None: not judged yet
    stopping: str | None = None  # why the run is ending early, once it is

    @property
    def fraction(self) -> float:
        """How far through the profile, 0 to 1."""
        return min(1.0, max(0.0, self.elapsed / self.duration)) if self.duration > 0 else 1.0


def stage_now(start_rate: float, stages: Sequence[Stage], t: float) -> StageNow | None:
    """The stage running at ``t`` seconds into the profile; a zero-length stage (a jump) is never current."""
    begin, rate = 0.0, float(start_rate)
    for i, st in enumerate(stages):
        if st.duration > 0 and begin <= t < begin + st.duration:
            return StageNow(i + 1, len(stages), rate, float(st.rate))
        begin += st.duration
        rate = float(st.rate)
    return None


class RecentSeconds:
    """The last ``size`` closed seconds, for the live percentiles and the last second's figures."""

    def __init__(self, size: int = WINDOW_S) -> None:
        self._closed: collections.deque[ClosedInterval] = collections.deque(maxlen=size)

    def add(self, closed: ClosedInterval) -> None:
        self._closed.append(closed)

    @property
    def last(self) -> Mapping[str, Any] | None:
        """The summary of the last closed second (an entry of ``intervals``)."""
        return self._closed[-1].summary if self._closed else None

    def percentiles(self) -> tuple[int, float | None, float | None]:
        """(seconds covered, p50 ms, p99 ms) of every response in the window, from the merged histograms."""
        h = new_histogram()
        for c in self._closed:
            h.add(c.latency)
        p50, p99 = percentiles_ms(h, 50.0, 99.0)
        return len(self._closed), p50, p99


def last_saturation(events: Sequence[Mapping[str, Any]]) -> SaturationNote | None:
    for e in reversed(events):
        if e.get("type") == "generator_saturated":
            return SaturationNote(int(e.get("second", 0)), str(e.get("why", "")))
    return None


def run_status(
    *,
    name: str,
    elapsed: float,
    duration: float,
    start_rate: float,
    stages: Sequence[Stage],
    window: RecentSeconds,
    totals: Counts,
    agent_states: Iterable[str],
    connected: int,
    expected: int,
    events: Sequence[Mapping[str, Any]],
    thresholds: int,
    failing: tuple[str, ...] | None,
    stopping: str | None,
) -> RunStatus:
    """The status from the coordinator's parts (``agent_states``: each agent's membership state)."""
    last = window.last
    covered, p50, p99 = window.percentiles()
    return RunStatus(
        name=name,
        elapsed=elapsed,
        duration=duration,
        stage=stage_now(start_rate, stages, elapsed),
        second=None if last is None else int(last["t"]),
        target_rate=None if last is None else float(last["target_rate"]),
        achieved_rate=None if last is None else int(last["ok"]) + int(last["failed"]),
        window_s=covered,
        p50_ms=p50,
        p99_ms=p99,
        ok=totals.ok,
        failed=totals.failed,
        dropped=totals.dropped,
        errors=tuple(sorted(((k, v) for k, v in totals.errors.items() if v), key=lambda kv: (-kv[1], kv[0]))),
        agents_connected=connected,
        agents_lost=sum(state == "lost" for state in agent_states),
        agents_expected=expected,
        saturated_now=bool(last is not None and last.get("saturated")),
        saturation=last_saturation(events),
        thresholds=thresholds,
        failing=failing,
        stopping=stopping,
    )


# -- the plain line ----------------------------------------------------------------------------------------


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def rate(value: float) -> str:
    return f"{value:g}" if value == int(value) else f"{value:.1f}"


def progress_line(s: RunStatus) -> str:
    """One line per period for logs and pipes: every figure of the panel, none of its drawing."""
    parts = [f"[{min(s.elapsed, s.duration):6.0f}/{s.duration:.0f} s {100 * s.fraction:3.0f}%]"]
    if s.stage is not None:
        st = s.stage
        parts.append(f"stage {st.index}/{st.count} {rate(st.from_rate)}->{rate(st.to_rate)}/s")
    if s.second is None or s.target_rate is None:
        parts.append("target - achieved -")
    else:
        parts.append(f"target {s.target_rate:.1f}/s achieved {s.achieved_rate}/s @{s.second}s")
    parts.append(f"p50 {ms(s.p50_ms)} p99 {ms(s.p99_ms)} ({s.window_s}s)")
    errors = f" ({', '.join(f'{k} {v}' for k, v in s.errors)})" if s.errors else ""
    parts.append(f"ok {s.ok} failed {s.failed}{errors} dropped {s.dropped}")
    lost = f" lost {s.agents_lost}" if s.agents_lost else ""
    parts.append(f"agents {s.agents_connected}/{s.agents_expected}{lost}")
    if s.saturated_now:
        parts.append("SATURATED")
    if s.failing:
        parts.append(f"FAILING {'; '.join(s.failing)}")
    if s.stopping:
        parts.append(f"stopping: {s.stopping}")
    return "  ".join(parts)
