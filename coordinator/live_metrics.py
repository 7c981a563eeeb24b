"""The fleet's live figures for Prometheus, built from the coordinator's merged seconds. Pure: no I/O.

A :class:`Board` is fed on the coordinator's thread, once per closed second: the second itself (its merged
histograms per request name, :class:`~coordinator.aggregate.ClosedInterval`) and a :class:`FleetView` (the
run totals, the agents, thresholds, cost, read off the coordinator at the same moment). From them it keeps

- a sliding window of the last :data:`WINDOW_S` closed seconds' response and service time histograms, per
  request name and overall, as sums of counters (HDR addition is exact, and so is subtracting the second that
  leaves the window), and reads the exact percentiles off it;
- the run's response times as cumulative counts under fixed bucket bounds (:data:`BUCKETS_S`), for a
  Prometheus histogram;

and publishes everything as one immutable :class:`Frame`, which a scrape (another thread) turns into metric
families with :func:`families`. Nothing is done per request, and a scrape computes nothing but text.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.registry import Collector

from coordinator.aggregate import ClosedInterval
from coordinator.saturation import saturation_cause
from loadgen.histogram import index_values

QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.95, 0.99, 0.999)
WINDOW_S = 10
"""Closed seconds the percentile gauges cover."""
BUCKETS_S: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
_PERCENTS = np.array([round(q * 100.0, 6) for q in QUANTILES])  # 99.9, not 99.89999999999999
EVENT_TYPES = (
    "run_started", "run_finished", "agent_joined", "agent_finished", "agent_lost", "agent_refused",
    "agent_rejected", "reshare", "capacity_short", "generator_saturated", "coordinator_resumed",
    "aborted", "stopped", "interrupted", "budget_exceeded", "action_started", "action_finished",
)  # fmt: skip
"""Event types shown from the start (at 0), so that the first of each is an increase Prometheus can see."""
OVERALL = ""
"""The ``request`` label of the figures over every request name (a request name is never empty)."""
SATURATION_CAUSES = ("generator", "in_flight_limit")

Sparse = tuple["np.ndarray[Any, np.dtype[np.intp]]", "np.ndarray[Any, np.dtype[np.int64]]"]


@dataclass(frozen=True)
class Identity:
    """Who the run is: ``loadgen_run_info``'s labels, and the profile's planned length."""

    name: str
    profile: str  # the profile's file name, without its folder
    run_id: str
    duration_s: float


@dataclass(frozen=True)
class FleetView:
    """What the coordinator knows besides the closed seconds, read on its own thread."""

    requests: Mapping[str, Mapping[str, int]]  # request name -> outcome ("ok" or an error category) -> count
    scheduled: int = 0
    dropped: int = 0
    in_flight: int = 0
    agents: Mapping[str, int] = field(default_factory=dict)  # "connected", "lost", "refused" -> count
    cost: float | None = None  # None: the profile prices nothing
    budget: float | None = None
    thresholds: Mapping[str, bool] = field(default_factory=dict)  # expression -> passing so far
    events: Mapping[str, int] = field(default_factory=dict)  # event type -> how many so far
    finished: bool = False
    flows: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # user journeys, as ``requests``


@dataclass(frozen=True)
class Frame:
    """Everything a scrape shows, as it was after the last closed second."""

    identity: Identity
    view: FleetView
    closed_seconds: int = (
        0  # seconds closed so far: the window is [closed_seconds - WINDOW_S, closed_seconds)
    )
    target_rate: float | None = None  # of the last closed second
    achieved_rate: float | None = None  # requests completed (ok + failed) in the last closed second
    send_lag_p99_s: float | None = None
    saturated: str | None = None  # the last closed second's saturation cause, None when it was not
    # (kind, request) -> ((quantile, seconds), ...); kind "response" or "service"; request OVERALL for all
    quantiles: Mapping[tuple[str, str], tuple[tuple[float, float], ...]] = field(default_factory=dict)
    # request -> (cumulative counts per bound of BUCKETS_S then +Inf, sum in seconds)
    buckets: Mapping[str, tuple[tuple[int, ...], float]] = field(default_factory=dict)


class _Tables:
    """Per counter index of loadgen's histograms: the highest value it counts and its median (µs), as
    numpy arrays, and which counters fall under each bucket bound."""

    def __init__(self, bounds_s: Sequence[float]) -> None:
        lowest, highest = index_values()
        self.highest = np.asarray(highest, dtype=np.int64)
        low = np.asarray(lowest, dtype=np.int64)
        self.median = low + ((self.highest - low + 1) >> 1)
        # A sample counts under bound b when its counter starts at or below b (the counters' ranges are
        # increasing with the index): the same as the exact count for every bound on a counter's edge, and
        # within the histograms' precision (0.1 %) for any other.
        self.cutoffs = np.searchsorted(low, [round(b * 1e6) for b in bounds_s], side="right")
        self.size = len(lowest)


def counter_index(h: HdrHistogram, value: int) -> int:
    """The index of the counter of ``h`` that counts ``value`` (µs), as hdrhistogram computes it."""
    shift = h.sub_bucket_half_count_magnitude
    mask = h.sub_bucket_mask
    if value <= mask:
        return value  # the first bucket: the index is the value itself (loadgen's histograms start at 1 µs)
    bucket = (value | mask).bit_length() - shift - 1
    return int(((bucket + 1) << shift) + (value >> bucket) - (1 << shift))


def sparse(h: HdrHistogram) -> Sparse | None:
    """The counters of ``h`` in use: their indices and counts (None for an empty histogram). Only the
    counters between its min and max are read: a second's samples span a few thousand of the 23,552."""
    if not h.get_total_count():
        return None
    lo, hi = counter_index(h, h.get_min_value()), counter_index(h, h.get_max_value())
    counts = np.ctypeslib.as_array(h.counts)[lo : hi + 1]
    index = np.flatnonzero(counts)
    return index + lo, counts[index].astype(np.int64)


class SlidingHistogram:
    """The sum of the last ``seconds`` seconds' histograms, as one array of counters: a second comes in and
    the oldest goes out, exactly."""

    def __init__(self, size: int, seconds: int) -> None:
        self.counts = np.zeros(size, dtype=np.int64)
        self._seconds: deque[list[Sparse]] = deque(maxlen=seconds)

    def push(self, parts: list[Sparse]) -> None:
        if len(self._seconds) == self._seconds.maxlen:
            for index, counts in self._seconds[0]:
                self.counts[index] -= counts
        for index, counts in parts:
            self.counts[index] += counts
        self._seconds.append(parts)

    def span(self) -> tuple[int, int] | None:
        """The first and last counter in use in the window (None when it is empty)."""
        parts = [p for second in self._seconds for p in second]
        if not parts:
            return None
        return min(int(p[0][0]) for p in parts), max(int(p[0][-1]) for p in parts)


def quantile_values(counts: np.ndarray[Any, np.dtype[np.int64]], highest: Any) -> tuple[float, ...] | None:
    """The values at :data:`QUANTILES` in seconds, as hdrhistogram's ``get_value_at_percentile`` gives them
    (the highest value of the counter that reaches the rank), or None when there is no sample. ``counts``
    and ``highest`` may be the same slice of the counters, as long as it holds every sample."""
    cumulative = np.cumsum(counts)
    total = int(cumulative[-1])
    if not total:
        return None
    ranks = np.maximum((_PERCENTS * total / 100 + 0.5).astype(np.int64), 1)  # hdrhistogram's arithmetic
    return tuple(int(v) / 1e6 for v in highest[np.searchsorted(cumulative, ranks, side="left")])


class Board:
    """The live figures of one run; fed once per closed second on the coordinator's thread, read as
    :attr:`frame` from any thread."""

    def __init__(
        self,
        identity: Identity,
        names: Sequence[str],
        *,
        window_s: int = WINDOW_S,
        buckets_s: Sequence[float] = BUCKETS_S,
    ) -> None:
        self._t = _Tables(buckets_s)
        self._names = list(names)
        self.buckets_s = tuple(buckets_s)
        self._windows = {
            (kind, name): SlidingHistogram(self._t.size, window_s)
            for kind in ("response", "service")
            for name in (*self._names, OVERALL)
        }
        self._bucket_counts = {name: np.zeros(len(buckets_s) + 1, dtype=np.int64) for name in self._names}
        self._sums = dict.fromkeys(self._names, 0.0)
        self.frame = Frame(identity, FleetView({}))

    def view(self, view: FleetView) -> None:
        """A new view of the fleet without a new second (the start, the end)."""
        self.frame = dataclasses.replace(self.frame, view=view)

    def second(self, closed: ClosedInterval, view: FleetView) -> None:
        """Fold one closed second in and publish the new frame."""
        t = self._t
        windows = self._windows
        for kind, hists in (("response", closed.by_name), ("service", closed.service_by_name)):
            every: list[Sparse] = []
            for name in self._names:
                h = hists.get(name)
                part = sparse(h) if h is not None else None
                parts = [] if part is None else [part]
                windows[kind, name].push(parts)
                every += parts
                if part is not None and kind == "response":
                    index, counts = part
                    under = np.searchsorted(index, t.cutoffs, side="left")  # counters below each cutoff
                    cumulative = np.concatenate(([0], np.cumsum(counts)))
                    self._bucket_counts[name][:-1] += cumulative[under]
                    self._bucket_counts[name][-1] += cumulative[-1]
                    self._sums[name] += float(np.dot(counts, t.median[index])) / 1e6
            windows[kind, OVERALL].push(every)
        quantiles = {}
        for key, w in windows.items():
            span = w.span()
            if span is None:
                continue
            lo, hi = span
            values = quantile_values(w.counts[lo : hi + 1], t.highest[lo : hi + 1])
            if values is not None:
                quantiles[key] = tuple(zip(QUANTILES, values, strict=True))
        s = closed.summary
        lag = s.get("send_lag_p99")
        self.frame = Frame(
            self.frame.identity,
            view,
            closed_seconds=closed.index + 1,
            target_rate=s.get("target_rate"),
            achieved_rate=float(s["ok"] + s["failed"]),
            send_lag_p99_s=None if lag is None else lag / 1000.0,
            saturated=saturation_cause(
                bool(s.get("saturated")), int(s.get("dropped", 0)), lag, float(s.get("cpu_max", 0.0))
            ),
            quantiles=quantiles,
            buckets={
                name: (tuple(int(v) for v in self._bucket_counts[name]), self._sums[name])
                for name in self._names
            },
        )


def families(frame: Frame, buckets_s: Sequence[float] = BUCKETS_S) -> Iterator[Any]:
    """The Prometheus metric families of ``frame``."""
    ident, v = frame.identity, frame.view
    info = InfoMetricFamily("loadgen_run", "The run being watched.", labels=["name", "profile", "run_id"])
    info.add_metric([ident.name, ident.profile, ident.run_id], {})
    yield info
    yield GaugeMetricFamily(
        "loadgen_run_finished", "1 once the run has ended and these are its final figures.", value=v.finished
    )
    yield GaugeMetricFamily(
        "loadgen_run_duration_seconds", "The profile's planned duration.", value=ident.duration_s
    )
    yield GaugeMetricFamily(
        "loadgen_closed_seconds",
        "Seconds of the run merged from every agent so far; the percentile gauges cover the last "
        f"{WINDOW_S} of them.",
        value=frame.closed_seconds,
    )
    requests = CounterMetricFamily(
        "loadgen_requests",
        "Completed requests by request name and outcome (ok, or the error category).",
        labels=["request", "outcome"],
    )
    for name, outcomes in v.requests.items():
        for outcome, count in outcomes.items():
            requests.add_metric([name, outcome], count)
    yield requests
    if v.flows:
        flows = CounterMetricFamily(
            "loadgen_flows",
            "Completed user journeys (flow instances) by flow and outcome (ok, or the failed step's "
            "category); their steps are requests named <flow>.<step>.",
            labels=["flow", "outcome"],
        )
        for name, outcomes in v.flows.items():
            for outcome, count in outcomes.items():
                flows.add_metric([name, outcome], count)
        yield flows
    yield CounterMetricFamily("loadgen_scheduled", "Arrivals the agents scheduled.", value=v.scheduled)
    yield CounterMetricFamily(
        "loadgen_dropped",
        "Arrivals dropped because max_in_flight requests were outstanding.",
        value=v.dropped,
    )
    yield GaugeMetricFamily("loadgen_in_flight", "Requests outstanding across the agents.", value=v.in_flight)
    for metric, text, value in (
        ("loadgen_target_rate", "The profile's rate in the last closed second (req/s).", frame.target_rate),
        (
            "loadgen_achieved_rate",
            "Requests completed in the last closed second (req/s).",
            frame.achieved_rate,
        ),
        (
            "loadgen_send_lag_p99_seconds",
            "p99 of the send lag in the last closed second.",
            frame.send_lag_p99_s,
        ),
    ):
        if value is not None:
            yield GaugeMetricFamily(metric, text, value=value)
    saturated = GaugeMetricFamily(
        "loadgen_generator_saturated",
        "1 when the last closed second was saturated, under its cause: generator (it fell behind) or "
        "in_flight_limit (arrivals dropped behind a slower target).",
        labels=["cause"],
    )
    for cause in SATURATION_CAUSES:
        saturated.add_metric([cause], float(frame.saturated == cause))
    yield saturated
    agents = GaugeMetricFamily("loadgen_agents", "Agents by state.", labels=["state"])
    for state in ("connected", "lost", "refused"):
        agents.add_metric([state], v.agents.get(state, 0))
    yield agents
    thresholds = GaugeMetricFamily(
        "loadgen_threshold_passing",
        "1 while a threshold holds on the run so far (the final verdict once the run has ended).",
        labels=["threshold"],
    )
    for expr, passing in v.thresholds.items():
        thresholds.add_metric([expr], float(passing))
    yield thresholds
    if v.cost is not None:
        yield GaugeMetricFamily("loadgen_cost", "The cost of the requests completed so far.", value=v.cost)
    if v.budget is not None:
        yield GaugeMetricFamily("loadgen_budget", "The profile's budget.", value=v.budget)
    events = CounterMetricFamily("loadgen_events", "The run's events by type.", labels=["type"])
    for kind in (*EVENT_TYPES, *(k for k in v.events if k not in EVENT_TYPES)):
        events.add_metric([kind], v.events.get(kind, 0))
    yield events
    for kind, metric, text in (
        ("response", "loadgen_response_time_seconds", "response time (from the intended send)"),
        ("service", "loadgen_service_time_seconds", "service time (from the actual send)"),
    ):
        gauge = GaugeMetricFamily(
            metric,
            f"Exact fleet-wide {text} percentiles over the last {WINDOW_S} closed seconds, from the merged "
            'histograms; request="" is every request.',
            labels=["request", "quantile"],
        )
        for (k, name), values in frame.quantiles.items():
            if k == kind:
                for q, value in values:
                    gauge.add_metric([name, _number(q)], value)
        yield gauge
    hist = HistogramMetricFamily(
        "loadgen_request_duration_seconds",
        "Response time of the run's requests, bucketed from the merged histograms.",
        labels=["request"],
    )
    bounds = [*(_number(b) for b in buckets_s), "+Inf"]
    for name, (cumulative, total) in frame.buckets.items():
        hist.add_metric([name], list(zip(bounds, cumulative, strict=True)), total)
    yield hist


def _number(x: float) -> str:
    """A label value for a number: ``0.5``, ``1``, ``0.999``, as Prometheus writes them."""
    return repr(int(x)) if math.isclose(x, round(x)) and x >= 1 else repr(x)


class FrameCollector(Collector):
    """A prometheus_client collector that shows the latest frame of a :class:`Board`; ``on_collect`` is told
    which frame each collection showed."""

    def __init__(self, board: Board, on_collect: Callable[[Frame], None] | None = None) -> None:
        self._board = board
        self._on_collect = on_collect

    def collect(self) -> Iterator[Any]:
        frame = self._board.frame
        if self._on_collect is not None:
            self._on_collect(frame)
        yield from families(frame, self._board.buckets_s)
