"""The agent's recorder: the engine's :class:`~agents.engine.Sink`, counting and timing every outcome.

Per request name it keeps the current interval's counters and two HDR histograms (response time from the
intended send time, service time from the actual send), plus a send-lag histogram for the whole agent. Every
second the agent calls :meth:`Recorder.take_interval`, which hands the interval over as a wire message and
starts a fresh one. Running totals are kept separately so the agent can report them at the end.

Arrival counts (scheduled, dropped) are counted in the second of their *intended* time: the arrival loop
calls :meth:`Recorder.seal_arrivals` when its schedule crosses a second, and an interval carries the arrival
counts sealed so far. Completions are counted in the second they complete.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import islice

from hdrh.histogram import HdrHistogram

from loadgen import histogram
from loadgen.wire import Interval


class _NameStats:
    __slots__ = ("errors", "failed", "latency", "ok", "scheduled", "service")

    def __init__(self) -> None:
        self.scheduled = 0
        self.ok = 0
        self.failed = 0
        self.errors: dict[str, int] = {}
        # Raw microsecond values of this interval; folded into HDR histograms once per interval.
        self.latency: list[int] = []
        self.service: list[int] = []

    def reset(self) -> None:
        self.scheduled = 0
        self.ok = 0
        self.failed = 0
        self.errors = {}
        self.latency = []
        self.service = []


def _histogram_of(values: list[int]) -> HdrHistogram:
    """An HDR histogram of ``values`` (µs), recording each distinct value once with its count: the same
    histogram as recording them one by one, at a fraction of the cost."""
    return histogram.histogram_of_counts(Counter(values))


class Recorder:
    """Counts and times every outcome. The per-request methods only count and append an integer: the HDR
    recording happens once per interval, over the distinct values (see :func:`_histogram_of`)."""

    def __init__(
        self, names: Sequence[str], steps: Iterable[str] = (), alias: Mapping[int, int] | None = None
    ) -> None:
        self.names = tuple(names)
        # A flow's steps count under their names only: the run's totals count arrivals (see
        # coordinator.aggregate.RunAggregate).
        skip = set(steps)
        self._arrival = [name not in skip for name in self.names]
        # One-step flows sent as plain requests (agents.flow_runner.direct_flows): the arrivals are counted
        # under the step, and each interval gives the flow the step's figures (its time from arrival to
        # the end is the step's response time, with no pause in it).
        self._alias = dict(alias or {})
        for flow, step in self._alias.items():
            self._arrival[flow], self._arrival[step] = False, True
        self._stats = [_NameStats() for _ in self.names]
        self._lag: list[int] = []
        self._scheduled = 0
        self._dropped = 0
        self._by_name = [0] * len(self.names)
        # Arrival counts of whole seconds, sealed by the arrival loop and waiting for the next interval.
        self._sealed_scheduled = 0
        self._sealed_dropped = 0
        self._no_data = 0  # of the dropped: arrivals that found no row of a unique [[data]] source
        self._sealed_no_data = 0
        self._sealed_by_name = [0] * len(self.names)
        # Running totals over the whole run.
        self.total_scheduled = 0
        self.total_ok = 0
        self.total_failed = 0
        self.total_dropped = 0

    # --- arrival loop side -------------------------------------------------------------------------------

    def scheduled(self, req: int, lag: float) -> None:
        """An arrival was handed to the engine ``lag`` seconds after its intended time."""
        self._by_name[req] += 1
        self._scheduled += 1
        self._lag.append(int(lag * 1_000_000.0))

    def dropped(self, req: int) -> None:
        """An arrival was not sent because ``max_in_flight`` requests were already outstanding."""
        self._by_name[req] += 1
        self._scheduled += 1
        self._dropped += 1

    # --- engine side (Sink) ------------------------------------------------------------------------------

    def response(self, req: int, intended: float, sent: float, done: float, status: int) -> None:
        st = self._stats[req]
        st.latency.append(int((done - intended) * 1_000_000.0))
        st.service.append(int((done - sent) * 1_000_000.0))
        if status < 400:
            st.ok += 1
        else:
            st.failed += 1
            key = f"http_{status}"
            st.errors[key] = st.errors.get(key, 0) + 1

    def error(self, req: int, intended: float, sent: float, done: float, category: str) -> None:
        st = self._stats[req]
        if category == "timeout":
            # A timeout is a wait the user really had: it belongs in the tail. Fast failures (refused,
            # reset) are not latencies and would flatter the distribution, so they are only counted.
            st.latency.append(int((done - intended) * 1_000_000.0))
        st.failed += 1
        st.errors[category] = st.errors.get(category, 0) + 1

    def no_data(self) -> None:
        """The arrival just scheduled was not sent after all: it found no row of a unique test data source
        (see agents.flow_runner). It counts as dropped, with that cause."""
        self._dropped += 1
        self._no_data += 1

    # --- flows (agents.flow_runner) ------------------------------------------------------------------------

    def step_scheduled(self, req: int) -> None:
        """A flow's step ``req`` (a name's index) went to the engine: counted for that name only, since the
        arrival was the flow's, and with the next interval (a step is not an arrival of the schedule, whose
        seconds the arrival loop seals: steps go on after its last one)."""
        self._sealed_by_name[req] += 1

    def step_done(
        self, req: int, intended: float, sent: float, done: float, category: str | None, answered: bool
    ) -> None:
        """A step's outcome: ok (``category`` None) or failed; ``answered``: a response came (a failed
        check or capture, an error status), so its time counts as the step's latency."""
        st = self._stats[req]
        if answered:
            st.latency.append(int((done - intended) * 1_000_000.0))
            st.service.append(int((done - sent) * 1_000_000.0))
        elif category == "timeout":
            st.latency.append(int((done - intended) * 1_000_000.0))
        if category is None:
            st.ok += 1
        else:
            st.failed += 1
            st.errors[category] = st.errors.get(category, 0) + 1

    def flow_done(self, req: int, arrival: float, done: float, active: float, category: str | None) -> None:
        """A flow instance ended: its duration (arrival to the end of its last step, pauses included) goes
        in the name's latency, its ``active`` time (the same without its pauses) in the service slot."""
        st = self._stats[req]
        st.latency.append(int((done - arrival) * 1_000_000.0))
        st.service.append(int(active * 1_000_000.0))
        if category is None:
            st.ok += 1
        else:
            st.failed += 1
            st.errors[category] = st.errors.get(category, 0) + 1

    def seal_arrivals(self) -> None:
        """Every arrival of the seconds before the schedule's current one has been counted."""
        self._sealed_scheduled += self._scheduled
        self._sealed_dropped += self._dropped
        self._sealed_no_data += self._no_data
        self._no_data = 0
        for i, n in enumerate(self._by_name):
            self._sealed_by_name[i] += n
            self._by_name[i] = 0
        self._scheduled = 0
        self._dropped = 0

    def so_far(self) -> tuple[int, int, int, int]:
        """Arrivals scheduled, ok, failed and dropped over the whole run so far, the seconds not yet handed
        over included."""
        return (
            self.total_scheduled + self._sealed_scheduled + self._scheduled,
            self.total_ok + sum(st.ok for st, a in zip(self._stats, self._arrival, strict=True) if a),
            self.total_failed + sum(st.failed for st, a in zip(self._stats, self._arrival, strict=True) if a),
            self.total_dropped + self._sealed_dropped + self._dropped,
        )

    # --- interval hand-over ------------------------------------------------------------------------------

    def cut(
        self,
        index: int,
        in_flight: int,
        cpu: float = 0.0,
        first: int = 0,
        connections: int = 0,
        stolen: float = 0.0,
        opened: int = 0,
        open_failed: dict[str, int] | None = None,
        *,
        protocol: str = "",
        peak_streams: int = 0,
    ) -> PendingInterval:
        """Take this interval's completions and the arrivals sealed so far, and start afresh. Cheap: the
        histograms are built by :class:`PendingInterval`, which can yield to the event loop meanwhile."""
        names: dict[str, tuple[int, int, int, dict[str, int], list[int], list[int]]] = {}
        for i, (name, st) in enumerate(zip(self.names, self._stats, strict=True)):
            scheduled = self._sealed_by_name[i]
            self._sealed_by_name[i] = 0
            if scheduled or st.ok or st.failed:
                names[name] = (scheduled, st.ok, st.failed, st.errors, st.latency, st.service)
                if self._arrival[i]:
                    self.total_ok += st.ok
                    self.total_failed += st.failed
                st.reset()
        for flow, step in self._alias.items():
            entry = names.get(self.names[step])
            if entry is not None:
                scheduled, ok, failed, errors, latency, _ = entry
                names[self.names[flow]] = (scheduled, ok, failed, dict(errors), latency, latency)
        pending = PendingInterval(
            index,
            first,
            self._sealed_scheduled,
            self._sealed_dropped,
            in_flight,
            names,
            self._lag,
            cpu,
            connections,
            stolen,
            opened,
            open_failed or {},
            self._sealed_no_data,
            protocol=protocol,
            peak_streams=peak_streams,
        )
        self._sealed_no_data = 0
        self.total_scheduled += self._sealed_scheduled
        self.total_dropped += self._sealed_dropped
        self._sealed_scheduled = 0
        self._sealed_dropped = 0
        self._lag = []
        return pending

    def take_interval(self, index: int, in_flight: int, cpu: float = 0.0, first: int = 0) -> Interval:
        """:meth:`cut` and build the message at once."""
        return self.cut(index, in_flight, cpu, first).build()


CHUNK = 512  # values folded at a time (about 0.03 ms to count, 0.15 ms to fold into a histogram)
SLICE = 0.00025  # seconds of folding between two yields to the event loop, at the least
SLICE_SHARE = 0.25  # ... or this share of the last wait for the loop, if more (see _Pauser)


class PendingInterval:
    """An interval's raw values, turned into the wire message by :meth:`build` or :meth:`build_async`."""

    def __init__(
        self,
        index: int,
        first: int,
        scheduled: int,
        dropped: int,
        in_flight: int,
        names: dict[str, tuple[int, int, int, dict[str, int], list[int], list[int]]],
        lag: list[int],
        cpu: float,
        connections: int = 0,
        stolen: float = 0.0,
        opened: int = 0,
        open_failed: dict[str, int] | None = None,
        no_data: int = 0,
        *,
        protocol: str = "",
        peak_streams: int = 0,
    ) -> None:
        self.index = index
        self.first = first
        self.scheduled = scheduled
        self.dropped = dropped
        self.in_flight = in_flight
        self.names = names
        self.lag = lag
        self.cpu = cpu
        self.connections = connections
        self.stolen = stolen
        self.opened = opened
        self.open_failed = open_failed or {}
        self.no_data = no_data
        self.protocol = protocol
        self.peak_streams = peak_streams

    def _message(self, hists: dict[str, tuple[bytes, bytes]], lag: bytes) -> Interval:
        return Interval(
            index=self.index,
            first=self.first,
            scheduled=self.scheduled,
            dropped=self.dropped,
            in_flight=self.in_flight,
            names={
                name: [sched, ok, failed, errors, *hists[name]]
                for name, (sched, ok, failed, errors, _, _) in self.names.items()
            },
            lag=lag,
            cpu=self.cpu,
            connections=self.connections,
            stolen=self.stolen,
            opened=self.opened,
            open_failed=dict(self.open_failed),
            no_data=self.no_data,
            protocol=self.protocol,
            peak_streams=self.peak_streams,
        )

    def build(self) -> Interval:
        hists = {
            name: (histogram.encode_wire(_histogram_of(lat)), histogram.encode_wire(_histogram_of(svc)))
            for name, (_, _, _, _, lat, svc) in self.names.items()
        }
        return self._message(hists, histogram.encode_wire(_histogram_of(self.lag)))

    async def build_async(self) -> Interval:
        """Like :meth:`build`, yielding to the event loop every few thousand values, so that folding a
        busy second into histograms never holds up the arrival loop for long."""
        hists = {}
        for name, (_, _, _, _, lat, svc) in self.names.items():
            hists[name] = (
                histogram.encode_wire(await _histogram_of_async(lat)),
                histogram.encode_wire(await _histogram_of_async(svc)),
            )
        return self._message(hists, histogram.encode_wire(await _histogram_of_async(self.lag)))


async def _histogram_of_async(values: list[int]) -> HdrHistogram:
    pause = _Pauser()
    counts: Counter[int] = Counter()
    for i in range(0, len(values), CHUNK):
        counts.update(values[i : i + CHUNK])
        await pause()
    h = histogram.new_histogram()
    items = iter(counts.items())  # not a list: a tuple per distinct value would feed the cycle collector
    for _ in range(0, len(counts), CHUNK):
        histogram.add_counts(h, islice(items, CHUNK))
        await pause()
    return h


class _Pauser:
    """Yields to the event loop once a slice of work has passed since the last yield: ``SLICE`` seconds, or
    ``SLICE_SHARE`` of how long the last yield waited, whichever is more.

    Each slice delays every arrival due meanwhile, so slices are short while the loop is quick (a fold in
    one-millisecond slices put the p99 send lag above 5 ms at 38,000 arrivals/s on a core that was 60%
    busy). Yielding after every chunk whatever the loop does would cost a whole loop iteration per chunk,
    and when the loop is busy (thousands of connections answering) an iteration takes milliseconds: a busy
    second's fold then took longer than a second and the agent's reports fell behind its run. So the slice
    grows with the wait: the fold takes at most about a fifth of the loop's time, however long its
    iterations are."""

    __slots__ = ("_clock", "_since", "_slice")

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._since = clock()
        self._slice = SLICE

    async def __call__(self) -> None:
        now = self._clock()
        if now - self._since >= self._slice:
            await asyncio.sleep(0)
            self._since = self._clock()
            self._slice = max(SLICE, SLICE_SHARE * (self._since - now))
