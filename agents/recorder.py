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

from collections.abc import Sequence

from hdrh.histogram import HdrHistogram

from loadgen import histogram
from loadgen.wire import Interval

HIGHEST_US = histogram.HIGHEST_US


class _NameStats:
    __slots__ = ("errors", "failed", "latency", "ok", "scheduled", "service")

    def __init__(self) -> None:
        self.scheduled = 0
        self.ok = 0
        self.failed = 0
        self.errors: dict[str, int] = {}
        self.latency: HdrHistogram = histogram.new_histogram()
        self.service: HdrHistogram = histogram.new_histogram()

    def reset(self) -> None:
        self.scheduled = 0
        self.ok = 0
        self.failed = 0
        self.errors = {}
        self.latency.reset()
        self.service.reset()


class Recorder:
    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self._stats = [_NameStats() for _ in self.names]
        self._lag = histogram.new_histogram()
        self._scheduled = 0
        self._dropped = 0
        self._by_name = [0] * len(self.names)
        # Arrival counts of whole seconds, sealed by the arrival loop and waiting for the next interval.
        self._sealed_scheduled = 0
        self._sealed_dropped = 0
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
        us = int(lag * 1_000_000.0)
        self._lag.record_value(1 if us < 1 else (us if us < HIGHEST_US else HIGHEST_US))

    def dropped(self, req: int) -> None:
        """An arrival was not sent because ``max_in_flight`` requests were already outstanding."""
        self._by_name[req] += 1
        self._scheduled += 1
        self._dropped += 1

    # --- engine side (Sink) ------------------------------------------------------------------------------

    def response(self, req: int, intended: float, sent: float, done: float, status: int) -> None:
        st = self._stats[req]
        us = int((done - intended) * 1_000_000.0)
        st.latency.record_value(1 if us < 1 else (us if us < HIGHEST_US else HIGHEST_US))
        us = int((done - sent) * 1_000_000.0)
        st.service.record_value(1 if us < 1 else (us if us < HIGHEST_US else HIGHEST_US))
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
            us = int((done - intended) * 1_000_000.0)
            st.latency.record_value(1 if us < 1 else (us if us < HIGHEST_US else HIGHEST_US))
        st.failed += 1
        st.errors[category] = st.errors.get(category, 0) + 1

    def seal_arrivals(self) -> None:
        """Every arrival of the seconds before the schedule's current one has been counted."""
        self._sealed_scheduled += self._scheduled
        self._sealed_dropped += self._dropped
        for i, n in enumerate(self._by_name):
            self._sealed_by_name[i] += n
            self._by_name[i] = 0
        self._scheduled = 0
        self._dropped = 0

    # --- interval hand-over ------------------------------------------------------------------------------

    def take_interval(self, index: int, in_flight: int, cpu: float = 0.0, first: int = 0) -> Interval:
        """Hand over this interval's completions and the arrivals sealed so far; start afresh."""
        names: dict[str, list[object]] = {}
        for i, (name, st) in enumerate(zip(self.names, self._stats, strict=True)):
            st.scheduled = self._sealed_by_name[i]
            self._sealed_by_name[i] = 0
            if st.scheduled or st.ok or st.failed:
                names[name] = [
                    st.scheduled,
                    st.ok,
                    st.failed,
                    st.errors,
                    histogram.encode(st.latency),
                    histogram.encode(st.service),
                ]
                self.total_ok += st.ok
                self.total_failed += st.failed
                st.reset()
        msg = Interval(
            index=index,
            first=first,
            scheduled=self._sealed_scheduled,
            dropped=self._sealed_dropped,
            in_flight=in_flight,
            names=names,
            lag=histogram.encode(self._lag),
            cpu=cpu,
        )
        self.total_scheduled += self._sealed_scheduled
        self.total_dropped += self._sealed_dropped
        self._sealed_scheduled = 0
        self._sealed_dropped = 0
        self._lag.reset()
        return msg
