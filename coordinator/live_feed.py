"""What the live page (``/`` of the metrics port) shows, as the JSON document it polls each second. Pure:
no I/O, no clock (the shell passes the elapsed time).

A :class:`History` is fed on the coordinator's thread, one :class:`Point` per closed second (from
:func:`point_of`), and keeps the run's curve in at most :data:`MAX_POINTS` points: when it is full, pairs
of neighbours merge and every point covers twice the seconds (the span: 1 s for the first ~33 minutes, 16 s
for an eight-hour soak). Points start on a multiple of the span, so a page that holds the points up to
second ``t`` at span ``s`` asks for ``since=t&span=s`` and gets only what changed (:func:`feed`): the last
point again, as it may have grown, and any after it; everything, flagged ``reset``, when the span changed.
Events are kept the same way, the last :data:`MAX_EVENTS`, fetched from the count the page already has.

The figures beside the curve (now, the last closed second and the exact percentiles of the last closed
seconds, per request name) come from the metrics' :class:`~coordinator.live_metrics.Frame`, so the page
and ``/metrics`` never disagree.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coordinator.aggregate import ClosedInterval
from coordinator.live_metrics import OVERALL, QUANTILES, WINDOW_S, Frame, quantile_values, sparse
from coordinator.progress import stage_now
from loadgen.histogram import index_values
from loadgen.profile import Stage
from loadgen.reports.svg import event_text

MAX_POINTS = 2000
"""Points of the curve kept (and sent on a reset): 2,000 seconds at 1 s each, an 8-hour soak at 16 s each."""
MAX_EVENTS = 500
"""The run's latest events kept for the page; older ones are only in results.json."""
SHOWN = (0.5, 0.9, 0.99)
"""The percentiles the page shows, drawn over time and over the last closed seconds."""
_AT = tuple(QUANTILES.index(q) for q in SHOWN)


@dataclass(frozen=True)
class Point:
    """The run over ``seconds`` closed seconds from second ``t``: rates are per second (means over the
    seconds), percentiles the highest per-second value in ms (a spike never disappears), errors summed."""

    t: int
    seconds: int
    target: float | None  # req/s
    achieved: float  # requests completed (ok + failed) per second
    percentiles: tuple[float | None, float | None, float | None]  # ms, at SHOWN
    errors: Mapping[str, int] = field(default_factory=dict)  # category -> count over the seconds
    saturated: bool = False  # any of its seconds

    def merge(self, later: Point) -> Point:
        n = self.seconds + later.seconds
        targets = [(p.target, p.seconds) for p in (self, later) if p.target is not None]
        errors = dict(self.errors)
        for k, v in later.errors.items():
            errors[k] = errors.get(k, 0) + v
        return Point(
            self.t,
            n,
            sum(t * s for t, s in targets) / sum(s for _, s in targets) if targets else None,
            (self.achieved * self.seconds + later.achieved * later.seconds) / n,
            (
                _highest(self.percentiles[0], later.percentiles[0]),
                _highest(self.percentiles[1], later.percentiles[1]),
                _highest(self.percentiles[2], later.percentiles[2]),
            ),
            errors,
            self.saturated or later.saturated,
        )

    def as_json(self) -> dict[str, Any]:
        p50, p90, p99 = self.percentiles
        return {
            "t": self.t,
            "seconds": self.seconds,
            "target": self.target,
            "achieved": round(self.achieved, 3),
            "p50": p50,
            "p90": p90,
            "p99": p99,
            "errors": dict(self.errors),
            "saturated": self.saturated,
        }


def _highest(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


@functools.cache
def _highest_values() -> np.ndarray[Any, np.dtype[np.int64]]:
    return np.asarray(index_values()[1], dtype=np.int64)


def point_of(closed: ClosedInterval) -> Point:
    """One closed second as a point: its exact percentiles from its merged histogram (every request)."""
    s = closed.summary
    part = sparse(closed.latency)
    values = None if part is None else quantile_values(part[1], _highest_values()[part[0]])
    ms = (None, None, None) if values is None else tuple(round(values[i] * 1000.0, 3) for i in _AT)
    target = s.get("target_rate")
    return Point(
        closed.index,
        1,
        None if target is None else float(target),
        float(s.get("ok", 0) + s.get("failed", 0)),
        (ms[0], ms[1], ms[2]),
        {k: int(v) for k, v in (s.get("errors") or {}).items() if v},
        bool(s.get("saturated")),
    )


class History:
    """The run's curve in at most ``max_points`` points, each covering :attr:`span` seconds (a power of
    two) from a multiple of it; the last one may still be filling. Fed on one thread; :attr:`points` is
    an immutable snapshot that any thread may read."""

    def __init__(self, max_points: int = MAX_POINTS) -> None:
        if max_points < 2:
            raise ValueError("max_points must be at least 2")
        self._max = max_points
        self.span = 1
        self._done: list[Point] = []
        self._open: Point | None = None
        self.points: tuple[Point, ...] = ()
        self.published: tuple[int, tuple[Point, ...]] = (1, ())
        """(span, points) as one value, for readers on another thread."""

    def add(self, p: Point) -> None:
        """Fold in one closed second (seconds come in order; a gap leaves a gap)."""
        start = p.t - p.t % self.span
        if self._open is not None and self._open.t != start:
            self._done.append(self._open)
            self._open = None
        self._open = dataclasses.replace(p, t=start) if self._open is None else self._open.merge(p)
        if self._open.seconds >= self.span:
            self._done.append(self._open)
            self._open = None
        while len(self._done) + (self._open is not None) > self._max:
            self._coarsen()
        self.points = (*self._done, *(() if self._open is None else (self._open,)))
        self.published = (self.span, self.points)

    def _coarsen(self) -> None:
        """Twice the span: each pair of neighbours becomes one point; the last may still be filling."""
        self.span *= 2
        merged: list[Point] = []
        for p in (*self._done, *(() if self._open is None else (self._open,))):
            start = p.t - p.t % self.span
            if merged and merged[-1].t == start:
                merged[-1] = merged[-1].merge(p)
            else:
                merged.append(dataclasses.replace(p, t=start))
        self._open = merged.pop() if merged and merged[-1].seconds < self.span else None
        self._done = merged


@dataclass(frozen=True)
class Plan:
    """What the page knows of the run before it starts: who it is and the profile's stages."""

    name: str
    profile: str
    run_id: str
    duration_s: float
    start_rate: float
    stages: Sequence[Stage]


@dataclass(frozen=True)
class Query:
    """What the page already holds: the curve through the point at second ``since`` (None: nothing) at
    ``span``, and the first ``events`` events."""

    since: int | None = None
    span: int = 0
    events: int = 0

    @classmethod
    def parse(cls, params: Mapping[str, Sequence[str]]) -> Query:
        """From a query string's parameters (``parse_qs``); anything unreadable counts as absent."""

        def number(key: str) -> int | None:
            values = params.get(key)
            try:
                return max(0, int(values[-1])) if values else None
            except ValueError:
                return None

        return cls(number("since"), number("span") or 0, number("events") or 0)


Events = tuple[int, tuple[dict[str, Any], ...], dict[str, Any] | None]
"""What :class:`EventLog` publishes: how many events so far, the latest ones, the saturation warnings."""


class EventLog:
    """The run's latest events as the page shows them, numbered from 0 in the order they happened, and the
    generator's saturation warnings (how many, the last one), which outlive the kept events."""

    def __init__(self, keep: int = MAX_EVENTS) -> None:
        self._kept: deque[dict[str, Any]] = deque(maxlen=keep)
        self.total = 0
        self._saturation: dict[str, Any] | None = None
        self.published: Events = (0, (), None)

    def extend(self, events: Iterable[Mapping[str, Any]]) -> None:
        for e in events:
            t = e.get("t")
            kind = str(e.get("type", "event"))
            why = str(e.get("why") or "")
            shown = {
                "n": self.total,
                "t": float(t) if isinstance(t, int | float) else None,
                "type": kind,
                "text": event_text(e) + (f": {why}" if why else ""),
            }
            self._kept.append(shown)
            self.total += 1
            if kind == "generator_saturated":
                count = 1 + (self._saturation["warnings"] if self._saturation else 0)
                self._saturation = {"warnings": count, "t": shown["t"], "second": e.get("second"), "why": why}
        self.published = (self.total, tuple(self._kept), self._saturation)


def feed(
    plan: Plan,
    frame: Frame,
    curve: tuple[int, tuple[Point, ...]],
    events: Events,
    *,
    elapsed: float,
    query: Query,
    report: bool,
) -> dict[str, Any]:
    """The live page's document: the run now, and what it lacks of the curve and the events.
    ``curve`` and ``events`` are :attr:`History.published` and :attr:`EventLog.published`; ``report``:
    the final report is served at ``/``."""
    span, points = curve
    reset = query.since is None or query.span != span
    sent = points if reset else tuple(p for p in points if p.t >= (query.since or 0))
    total, kept, saturation = events
    first = max(query.events, total - len(kept))
    v = frame.view
    stage = stage_now(plan.start_rate, plan.stages, elapsed) if not v.finished else None
    errors: dict[str, int] = {}
    requests = []
    for name, outcomes in v.requests.items():
        for outcome, n in outcomes.items():
            if outcome != "ok" and n:
                errors[outcome] = errors.get(outcome, 0) + n
        requests.append(
            {
                "name": name,
                "ok": outcomes.get("ok", 0),
                "failed": sum(n for o, n in outcomes.items() if o != "ok"),
                **_shown(frame, name),
            }
        )
    return {
        "run": {
            "name": plan.name,
            "profile": plan.profile,
            "run_id": plan.run_id,
            "duration_s": plan.duration_s,
        },
        "finished": v.finished,
        "report": report,
        "elapsed_s": round(elapsed, 1),
        "stage": None
        if stage is None
        else {"index": stage.index, "count": stage.count, "from": stage.from_rate, "to": stage.to_rate},
        "closed_seconds": frame.closed_seconds,
        "target_rate": frame.target_rate,
        "achieved_rate": frame.achieved_rate,
        "window_s": min(WINDOW_S, frame.closed_seconds),
        **_shown(frame, OVERALL),
        "requests": requests,
        "scheduled": v.scheduled,
        "ok": sum(r["ok"] for r in requests),
        "failed": sum(r["failed"] for r in requests),
        "dropped": v.dropped,
        "in_flight": v.in_flight,
        "errors": [[k, n] for k, n in sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))],
        "agents": {state: v.agents.get(state, 0) for state in ("connected", "lost", "refused")},
        "saturated": frame.saturated,
        "saturation": saturation,
        "thresholds": [{"expr": expr, "passing": passing} for expr, passing in v.thresholds.items()],
        "cost": v.cost,
        "budget": v.budget,
        "span": span,
        "reset": reset,
        "points": [p.as_json() for p in sent],
        "events_total": total,
        "events": list(kept[len(kept) - (total - first) :]) if total > first else [],
    }


def _shown(frame: Frame, name: str) -> dict[str, float | None]:
    """p50, p90 and p99 in ms over the last closed seconds (None before any response)."""
    values = dict(frame.quantiles.get(("response", name), ()))
    return {f"p{round(q * 100)}": (None if q not in values else round(values[q] * 1000.0, 3)) for q in SHOWN}
