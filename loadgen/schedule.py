"""Arrival schedules: the intended send time of every request, from the rate curve.

Both kinds work on the curve's integral Λ(t), the expected number of fleet-wide arrivals by time t:

- ``constant``: the fleet's k-th arrival is where Λ reaches k - 1/2, so arrivals are evenly spaced at any rate
  and centred in their slots (none lands exactly on a second's edge at round rates, and a curve with integral
  N yields round(N) arrivals). An agent with share ``s`` and phase ``φ`` (0 < φ <= 1) takes the fleet counts
  ``(j + φ) / s``; with equal shares and phases ``1/n, 2/n, ... 1`` the agents interleave into exactly the
  fleet's schedule.
- ``poisson``: arrivals where Λ reaches a running sum of exponential gaps with mean ``1 / s``. That is a
  non-homogeneous Poisson process with rate ``s · rate(t)``; independent agents sum to the fleet's process.

An :class:`ArrivalSchedule` yields intended times in seconds from the run's start, in order, and ``math.inf``
when the curve is exhausted. It walks the curve's segments forward, so each arrival costs O(1).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

from loadgen.curve import RateCurve, Segment


class ArrivalSchedule:
    def __init__(
        self,
        curve: RateCurve,
        kind: str,
        share: float = 1.0,
        phase: float = 1.0,
        rng: random.Random | None = None,
        start: float = 0.0,
    ) -> None:
        if kind not in ("poisson", "constant"):
            raise ValueError(f"unknown arrival kind {kind!r}")
        if not 0.0 < share <= 1.0:
            raise ValueError(f"share must be in (0, 1], got {share}")
        self._segments: tuple[Segment, ...] = curve.segments
        self._total = curve.total
        self._poisson = kind == "poisson"
        self._shift = 0.0 if self._poisson else 0.5
        # Float rounding of shares and phases must not lose the arrival that lands exactly on the end.
        self._slack = 1e-9 * max(1.0, curve.total)
        self._limit = curve.total + self._shift + self._slack
        self._step = 1.0 / share
        self._rng = rng if rng is not None else random.Random()
        self._i = 0
        if self._segments:
            self._load(self._segments[0])
        else:
            self._limit = -math.inf  # an empty curve has no arrivals
        base = curve.integral(start)
        if self._poisson:
            self._count = base + self._rng.expovariate(1.0) * self._step
        else:
            # The first fleet count (j + phase) / share strictly after `base`: an arrival exactly at `base`
            # belongs to whoever ran the curve before `start`.
            j = math.floor((base + self._shift) * share - phase) + 1
            self._count = (max(j, 0) + phase) * self._step

    def __iter__(self) -> Iterator[float]:
        return self

    def __next__(self) -> float:
        t = self.next()
        if t == math.inf:
            raise StopIteration
        return t

    def next(self) -> float:
        """The next intended time, or ``math.inf`` when no arrival is left."""
        c = self._count
        if c > self._limit:
            return math.inf
        if self._poisson:
            self._count = c + self._rng.expovariate(1.0) * self._step
        else:
            self._count = c + self._step
        c -= self._shift
        if c > self._total:  # noqa: PLR1730 - cheaper than min() on the hot path
            c = self._total
        if c > self._c1:
            self._advance(c)
        delta = c - self._c0
        if delta <= 0.0:
            return self._t0
        if self._flat:
            # A constant rate: the integral is linear. Equal to Segment.inverse (sqrt(r0 * r0) == r0
            # exactly in IEEE arithmetic), without its general quadratic.
            t = self._t0 + delta / self._r0
            return t if t < self._t1 else self._t1
        return self._segment.inverse(c)

    def _advance(self, c: float) -> None:
        """Move to the segment where the integral reaches ``c`` (segments only ever move forward)."""
        segs = self._segments
        i = self._i
        seg = segs[i]
        while c > seg.c1 + self._slack or seg.c1 <= seg.c0:
            i += 1
            seg = segs[i]
        self._i = i
        self._load(seg)

    def _load(self, seg: Segment) -> None:
        self._segment = seg
        self._c0 = seg.c0
        # A segment without arrivals is never current: the next arrival is beyond it. An arrival whose count
        # overshoots the segment's end by float rounding (a share's count against the fleet's) still belongs
        # to it: past the end may lie a pause of the rate, and the arrival would land after it.
        self._c1 = seg.c1 + self._slack if seg.c1 > seg.c0 else -math.inf
        self._t0 = seg.t0
        self._t1 = seg.t1
        self._r0 = seg.r0
        self._flat = seg.r0 == seg.r1 and seg.r0 > 0.0


def phases(n: int) -> list[float]:
    """Phases that interleave ``n`` equal-share constant schedules into the fleet's schedule."""
    return [(i + 1) / n for i in range(n)]
