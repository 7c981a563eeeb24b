"""The arrival loop on a virtual clock with a fake engine: open model, drops, send lag, weights."""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter

import pytest

from agents.arrivals import RELEASE_LATE, ArrivalLoop, RequestPicker
from agents.engine import Due
from agents.recorder import Recorder
from loadgen import histogram
from loadgen.curve import RateCurve
from loadgen.profile import Stage
from loadgen.schedule import ArrivalSchedule


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.001)  # a timer never fires sooner than about a millisecond


class FakeEngine:
    """Never answers: every submitted request stays in flight (a frozen server)."""

    def __init__(self) -> None:
        self.submitted: list[tuple[int, float]] = []
        self.due = Due()

    @property
    def in_flight(self) -> int:
        return len(self.submitted)

    def submit(self, req: int, intended: float) -> None:
        self.submitted.append((req, intended))

    async def start(self) -> None:
        pass

    async def drain(self, deadline: float) -> None:
        pass

    async def aclose(self) -> None:
        pass


def _loop(
    schedule: ArrivalSchedule,
    engine: FakeEngine,
    rec: Recorder,
    clock: FakeClock,
    *,
    weights: list[int] | None = None,
    max_in_flight: int = 1_000_000,
) -> ArrivalLoop:
    """An arrival loop on ``clock`` (its time and its sleep), started at the clock's time."""
    return ArrivalLoop(
        schedule,
        engine,
        rec,
        RequestPicker(weights or [1], random.Random(1)),
        start=clock.now,
        max_in_flight=max_in_flight,
        clock=clock,
        sleep=clock.sleep,
    )


def _run(curve: RateCurve, max_in_flight: int = 1_000_000) -> tuple[FakeEngine, Recorder, FakeClock]:
    clock = FakeClock()
    engine = FakeEngine()
    rec = Recorder(["a", "b"])
    loop = _loop(
        ArrivalSchedule(curve, "constant"), engine, rec, clock, weights=[1, 1], max_in_flight=max_in_flight
    )
    asyncio.run(loop.run())
    return engine, rec, clock


def test_open_model_keeps_sending_when_nothing_answers() -> None:
    # 8 h at 2/s in no real time at all: the schedule does not wait for responses.
    curve = RateCurve(2, [Stage(8 * 3600, 2)])
    engine, _rec, clock = _run(curve)
    assert len(engine.submitted) == 57_600
    assert clock.now - 1000.0 == pytest.approx(8 * 3600 - 0.25, abs=0.01)  # the last slot's centre
    intended = [t for _, t in engine.submitted]
    assert intended == sorted(intended)
    assert intended[1] - intended[0] == pytest.approx(0.5)


def test_arrivals_beyond_max_in_flight_are_dropped_and_counted() -> None:
    curve = RateCurve(100, [Stage(2, 100)])
    engine, rec, _ = _run(curve, max_in_flight=50)
    rec.seal_arrivals()
    iv = rec.take_interval(0, engine.in_flight)
    assert len(engine.submitted) == 50
    assert iv.scheduled == 200
    assert iv.dropped == 150


def test_send_lag_is_recorded_from_intended_time() -> None:
    # 5000/s with a 1 ms timer: arrivals are submitted in batches up to ~1 ms late, never early.
    curve = RateCurve(5000, [Stage(1, 5000)])
    _engine, rec, _ = _run(curve)
    rec.seal_arrivals()
    iv = rec.take_interval(0, 0)
    lag = histogram.decode(iv.lag)
    assert lag is not None
    assert lag.get_total_count() == 5000
    assert lag.get_max_value() <= 1100  # µs


class BusyLoop(FakeClock):
    """A coarse timer (10 ms, a loop busy with other callbacks) during which the engine reads a response
    every 50 µs and, as the real engines do, releases the arrivals due (``every_response``: it calls
    ``release`` at every response, due or not)."""

    def __init__(self, due: Due, *, every_response: bool = False) -> None:
        super().__init__()
        self.due = due
        self.every_response = every_response

    async def sleep(self, seconds: float) -> None:
        end = self.now + max(seconds, 0.010)
        while self.now < end:
            self.now += 0.000_05
            if self.every_response or self.now >= self.due.at:
                self.due.release()


class TimedEngine(FakeEngine):
    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self.lateness: list[float] = []

    def submit(self, req: int, intended: float) -> None:
        super().submit(req, intended)
        self.lateness.append(self.clock.now - intended)


@pytest.mark.parametrize("every_response", [False, True], ids=["when-due", "every-response"])
def test_an_engine_releases_arrivals_between_timer_ticks(every_response: bool) -> None:
    # 2,000/s for 1 s with a 10 ms timer: without the engine's help arrivals would go out up to 10 ms late;
    # released at the responses once RELEASE_LATE late (or at any response, when the engine calls release
    # at every one), never early, each exactly once and in order, the seconds sealed as before.
    engine = TimedEngine(FakeClock())
    clock = BusyLoop(engine.due, every_response=every_response)
    engine.clock = clock
    rec = Recorder(["a"])
    start = clock.now
    # Ramps down to nothing and up again: 2,000 + 1,000 + 500 arrivals.
    curve = RateCurve(2000, [Stage(1, 2000), Stage(1, 0), Stage(0.5, 2000)])
    loop = _loop(ArrivalSchedule(curve, "constant"), engine, rec, clock)
    asyncio.run(loop.run())
    intended = [t - start for _, t in engine.submitted]
    assert intended == sorted(intended)
    assert len(intended) == 3500
    assert min(engine.lateness) >= 0.0
    assert max(engine.lateness) <= (0.0 if every_response else RELEASE_LATE) + 0.000_051
    assert loop.sealed_until == math.inf
    assert engine.due.at == math.inf  # nothing due once the loop is over
    rec.seal_arrivals()
    assert rec.take_interval(0, 0).scheduled == len(intended)


def test_release_before_the_loop_runs_or_after_it_stops_sends_nothing() -> None:
    clock = FakeClock()
    engine = FakeEngine()
    loop = _loop(ArrivalSchedule(RateCurve(100, [Stage(1, 100)]), "constant"), engine, Recorder(["a"]), clock)
    assert engine.due.release() == math.inf
    loop.stop()
    clock.now += 5
    assert loop.release() == math.inf
    asyncio.run(loop.run())
    assert engine.submitted == []


def test_weights_hold() -> None:
    pick = RequestPicker([6, 3, 1], random.Random(5))
    counts = Counter(pick() for _ in range(100_000))
    for i, w in enumerate([0.6, 0.3, 0.1]):
        assert counts[i] / 100_000 == pytest.approx(w, abs=0.01)


def test_recorder_measures_from_intended_and_from_sent() -> None:
    rec = Recorder(["a"])
    rec.scheduled(0, 0.0)
    rec.response(0, intended=10.0, sent=10.9, done=11.0, status=200)  # 1 s late to send, 100 ms service
    rec.scheduled(0, 0.0)
    rec.error(0, 10.0, 0.0, 12.0, "timeout")
    rec.scheduled(0, 0.0)
    rec.error(0, 10.0, 0.0, 10.001, "connect")
    rec.seal_arrivals()
    iv = rec.take_interval(0, 0)
    scheduled, ok, failed, errors, lat, svc = iv.names["a"]
    assert (scheduled, ok, failed, errors) == (3, 1, 2, {"timeout": 1, "connect": 1})
    lat_h, svc_h = histogram.decode(lat), histogram.decode(svc)
    assert lat_h is not None and svc_h is not None
    assert lat_h.get_total_count() == 2  # the response and the timeout; a refused connect is no latency
    assert lat_h.get_min_value() == pytest.approx(1_000_000, rel=0.001)
    assert svc_h.get_max_value() == pytest.approx(100_000, rel=0.001)
    assert rec.total_failed == 2


def test_switch_hands_over_to_a_new_share_at_the_given_time() -> None:
    # Two agents at 100/s each (shares of a 200/s fleet); at t=2 s one takes the whole fleet.
    clock = FakeClock()
    engine = FakeEngine()
    rec = Recorder(["a"])
    curve = RateCurve(200, [Stage(4, 200)])
    loop = _loop(ArrivalSchedule(curve, "constant", share=0.5, phase=0.5), engine, rec, clock)
    loop.switch(ArrivalSchedule(curve, "constant", share=1.0, phase=1.0, start=2.0), at=2.0)
    asyncio.run(loop.run())
    times = [t - 1000.0 for _, t in engine.submitted]
    before = [t for t in times if t < 2.0]
    after = [t for t in times if t >= 2.0]
    assert len(before) == 200  # 100/s for 2 s
    assert len(after) == 400  # 200/s for 2 s
    assert times == sorted(times)


def test_a_late_joiner_begins_at_its_start() -> None:
    clock = FakeClock()
    engine = FakeEngine()
    curve = RateCurve(100, [Stage(10, 100)])
    loop = _loop(ArrivalSchedule(curve, "constant", start=7.0), engine, Recorder(["a"]), clock)
    asyncio.run(loop.run())
    assert len(engine.submitted) == 300
    assert min(t for _, t in engine.submitted) - 1000.0 >= 7.0


def test_async_build_equals_sync_build() -> None:
    rnd = random.Random(4)
    recs = [Recorder(["a"]), Recorder(["a"])]
    for _ in range(20_000):
        lat = rnd.expovariate(100.0)
        for rec in recs:
            rec.scheduled(0, lat / 100)
            rec.response(0, 0.0, lat / 2, lat, 200)
    for rec in recs:
        rec.seal_arrivals()
    sync = recs[0].take_interval(3, 0, 0.5, 1)
    built = asyncio.run(recs[1].cut(3, 0, 0.5, 1).build_async())
    assert built == sync
