"""The open-model arrival loop: hand each request to the engine at its intended time, whatever happened to
earlier ones.

Arrivals go out from two places. The loop sleeps until the next arrival is due (at least a millisecond:
uvloop's timer resolution, so one wake-up may fire a batch) and submits every arrival whose time has come.
And the engine, which reads the clock for every response anyway, calls :meth:`ArrivalLoop.release` from its
response callback once the next arrival is :data:`RELEASE_LATE` late (``engine.due``, see
:class:`agents.engine.Due`): a timer fires only between event-loop iterations, and under load one iteration
serves hundreds of responses, so by the timer alone every arrival due meanwhile waited for the end of the
iteration. Measured against nginx on loopback (one agent on one core, interleaved 10 s trials, 2026-12-02):
at 60,000 arrivals/s the timer alone had a send lag p99 of 7.4-8.1 ms (over the 5 ms saturation rule in 2
of 2 trials), released once 1 ms late 4.1-5.0 ms (1 of 2 held), released at once 1.1-2.1 ms (2 of 2); at
28,000/s the agent used 34-38% of its core with the timer alone, 35-38% released once 1 ms late and 46-52%
released at once (see :data:`RELEASE_LATE`).

It creates no task or object per request. An arrival that finds ``max_in_flight`` requests outstanding is
counted as dropped, never queued without bound. Each submitted arrival's send lag (now minus intended time) is
recorded: a generator that cannot keep up shows it there instead of quietly sending less.
"""

from __future__ import annotations

import asyncio
import math
import random
from bisect import bisect_right
from collections.abc import Awaitable, Callable, Mapping, Sequence
from itertools import accumulate

from agents.engine import Engine, no_arrivals
from agents.recorder import Recorder
from loadgen.profile import Profile
from loadgen.schedule import ArrivalSchedule

MIN_SLEEP = 0.001  # uvloop's timer resolution

RELEASE_LATE = MIN_SLEEP
"""How late the next arrival must be before the engine releases it from a response callback: as late as the
timer may leave it while the event loop keeps up. Released at once instead, every response released the
next arrival, which spread requests and responses evenly over time: the process then slept and woke for
nearly every request instead of once per timer tick (at 28,000/s against nginx: 46-52% of the agent's core
against 34-38%). Released only when the timer is late, the arrivals due during a long event-loop iteration
still go out between its callbacks, at the cost of part of the precision at once would give near
saturation (see the module docstring)."""


class RequestPicker:
    """Weighted choice of a request index; a value with its own seeded random source."""

    def __init__(self, weights: Sequence[float], rng: random.Random) -> None:
        self._cum = list(accumulate(weights))
        self._total = self._cum[-1]
        self._single = len(self._cum) == 1
        self._random = rng.random
        self._last = len(self._cum) - 1

    def __call__(self) -> int:
        if self._single:
            return 0
        i = bisect_right(self._cum, self._random() * self._total)
        return i if i <= self._last else self._last


def arrival_weights(profile: Profile, alias: Mapping[int, int] | None = None) -> list[float]:
    """The weight of each name the recorder counts under, as the arrivals pick them: a plain request's or a
    flow's, and 0 for a flow's steps (which are never arrivals of their own); with ``alias`` (one-step
    flows sent as plain requests), a flow's weight is its step's."""
    own = {r.name: r.weight for r in profile.requests} | {f.name: f.weight for f in profile.flows}
    steps = profile.step_names
    weights = [0.0 if name in steps else own[name] for name in profile.result_names]
    for flow, step in (alias or {}).items():
        weights[step], weights[flow] = weights[flow], 0.0
    return weights


class ArrivalLoop:
    def __init__(
        self,
        schedule: ArrivalSchedule,
        engine: Engine,
        recorder: Recorder,
        pick: Callable[[], int],
        *,
        start: float,
        max_in_flight: int,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._engine = engine
        self._recorder = recorder
        self._pick = pick
        self._start = start
        self._max_in_flight = max_in_flight
        self._clock = clock
        self._sleep = sleep
        self._stopped = False
        self._next_schedule: ArrivalSchedule | None = None
        self._switch_at = math.inf
        # Bound once: release() runs for nearly every arrival at high rates.
        self._schedule_next = schedule.next
        self._submit = engine.submit
        self._scheduled = recorder.scheduled
        self._dropped = recorder.dropped
        self._due = engine.due
        self._t = math.inf  # when the next arrival is due, in seconds from the start (once run() began)
        self._boundary = 1.0  # the end of the second whose arrivals are being counted
        # Every arrival intended before this many seconds from the start has been counted and sealed.
        self.sealed_until = 0.0

    def stop(self) -> None:
        """Stop scheduling; arrivals not yet due are not counted."""
        self._stopped = True
        self._due.at = math.inf

    def switch(self, schedule: ArrivalSchedule, at: float) -> None:
        """From ``at`` seconds into the run, take arrivals from ``schedule`` instead (a new share after the
        fleet changed). ``schedule`` must begin at ``at``; arrivals of the old one before ``at`` still go."""
        self._next_schedule = schedule
        self._switch_at = at
        self._due.at = min(self._due.at, self._start + at)

    async def run(self) -> None:
        """Send every arrival of the schedule, then seal the last second's count."""
        due = self._due
        clock = self._clock
        start = self._start
        self._t = self._schedule_next()
        due.release = self.release
        try:
            while True:
                wake = self.release()
                if wake == math.inf:
                    break
                # Never less than a timer tick: shorter sleeps round to zero under uvloop and turn the
                # loop into a spin that starves the engine. Arrivals due within the tick go out together
                # at its end, unless an engine callback finds them due first; their lateness is recorded
                # as send lag.
                await self._sleep(max(wake - (clock() - start), MIN_SLEEP))
        finally:
            due.at = math.inf
            due.release = no_arrivals
        self._seal()

    def release(self) -> float:
        """Submit every arrival due by now. Returns when the next one is due (seconds from the start; infinite
        when there is none left, or the loop was stopped) and tells the engine (``due.at``).

        Called by :meth:`run` when its timer fires and by the engine (through ``due.release``) from its
        response callbacks once ``due.at`` has passed, which may be sooner: in a long event-loop iteration
        (a burst of responses) arrivals then go out between the callbacks instead of after all of them."""
        due = self._due
        due.at = math.inf  # not released again from the engine while in here
        if self._stopped:
            return math.inf
        start = self._start
        t = self._t
        boundary = self._boundary
        while True:
            switch_at = self._switch_at
            if switch_at != math.inf and t >= switch_at:
                t = self._take_switch()
                continue
            if t == math.inf:
                break
            now = self._clock() - start
            if t > now:
                break
            # The arrivals due now, up to the switch if there is one.
            schedule_next = self._schedule_next
            submit = self._submit
            scheduled = self._scheduled
            engine = self._engine
            limit = self._max_in_flight
            pick = self._pick
            while t <= now and t < switch_at:
                if t >= boundary:
                    self._seal(t)
                    boundary = self._boundary
                req = pick()
                if engine.in_flight >= limit:
                    self._dropped(req)
                else:
                    scheduled(req, now - t)
                    submit(req, start + t)
                t = schedule_next()
        self._t = t
        if t != math.inf and t >= boundary:
            # Everything due before the next arrival's second is counted: seal it before sleeping, so the
            # interval report for that second finds it.
            self._seal(t)
        wake = min(t, self._switch_at)
        due.at = start + wake + RELEASE_LATE
        return wake

    def _seal(self, t: float = math.inf) -> None:
        """Count every arrival intended before the second of ``t`` (all of them, by default)."""
        self._recorder.seal_arrivals()
        self._boundary = math.floor(t) + 1.0 if t != math.inf else t
        self.sealed_until = self._boundary - 1.0

    def _take_switch(self) -> float:
        """Take the schedule :meth:`switch` was given; return its first arrival."""
        schedule = self._next_schedule
        assert schedule is not None
        self._schedule_next = schedule.next
        self._next_schedule = None
        self._switch_at = math.inf
        return schedule.next()
