"""The open-model arrival loop: hand each request to the engine at its intended time, whatever happened to
earlier ones.

The loop wakes when the next arrival is due (at least a millisecond later: uvloop's timer resolution, so
at high rates one wake-up fires a batch), submits every arrival whose time has come, and sleeps again. It
creates no task or object per request. An arrival that finds ``max_in_flight`` requests outstanding is
counted as dropped, never queued without bound. Each submitted arrival's send lag (now minus intended time) is
recorded: a generator that cannot keep up shows it there instead of quietly sending less.
"""

from __future__ import annotations

import asyncio
import math
import random
from bisect import bisect_right
from collections.abc import Awaitable, Callable, Sequence
from itertools import accumulate

from agents.engine import Engine
from agents.recorder import Recorder
from loadgen.schedule import ArrivalSchedule

MIN_SLEEP = 0.001  # uvloop's timer resolution


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
        self._schedule = schedule
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
        # Every arrival intended before this many seconds from the start has been counted and sealed.
        self.sealed_until = 0.0

    def stop(self) -> None:
        """Stop scheduling; arrivals not yet due are not counted."""
        self._stopped = True

    def switch(self, schedule: ArrivalSchedule, at: float) -> None:
        """From ``at`` seconds into the run, take arrivals from ``schedule`` instead (a new share after the
        fleet changed). ``schedule`` must begin at ``at``; arrivals of the old one before ``at`` still go."""
        self._next_schedule = schedule
        self._switch_at = at

    async def run(self) -> None:
        schedule_next = self._schedule.next
        submit = self._engine.submit
        engine = self._engine
        scheduled = self._recorder.scheduled
        dropped = self._recorder.dropped
        pick = self._pick
        clock = self._clock
        sleep = self._sleep
        start = self._start
        limit = self._max_in_flight
        seal = self._recorder.seal_arrivals
        boundary = 1.0  # the end of the second whose arrivals are being counted
        t = schedule_next()
        while not self._stopped:
            switch_at = self._switch_at
            if switch_at != math.inf and t >= switch_at:
                t, schedule_next = self._take_switch()
                continue
            if t == math.inf:
                break
            now = clock() - start
            while t <= now:
                if t >= switch_at:
                    break
                if t >= boundary:
                    seal()
                    boundary = math.floor(t) + 1.0
                    self.sealed_until = boundary - 1.0
                req = pick()
                if engine.in_flight >= limit:
                    dropped(req)
                else:
                    scheduled(req, now - t)
                    submit(req, start + t)
                t = schedule_next()
            if t > now:
                if t != math.inf and t >= boundary:
                    # Everything due before the next arrival's second is counted: seal it before sleeping, so
                    # the interval report for that second finds it.
                    seal()
                    boundary = math.floor(t) + 1.0
                    self.sealed_until = boundary - 1.0
                wake = min(t, self._switch_at)
                if wake != math.inf:
                    # Never less than a timer tick: shorter sleeps round to zero under uvloop and turn the
                    # loop into a spin that starves the engine. Arrivals due within the tick go out together
                    # at its end; their lateness is recorded as send lag.
                    await sleep(max(wake - now, MIN_SLEEP))
        seal()
        self.sealed_until = math.inf

    def _take_switch(self) -> tuple[float, Callable[[], float]]:
        schedule = self._next_schedule
        assert schedule is not None
        self._schedule = schedule
        self._next_schedule = None
        self._switch_at = math.inf
        return schedule.next(), schedule.next
