"""The rate curve: requests/second over time, piecewise linear, and its integral.

``integral(t)`` is the expected number of arrivals in ``[0, t]``; arrival schedules place the k-th arrival
where the integral reaches a fixed step (constant) or a sum of unit exponentials (Poisson), so the number
of arrivals follows the curve exactly whatever the rate does.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass

from loadgen.profile import Stage


@dataclass(frozen=True)
class Segment:
    t0: float
    t1: float
    r0: float
    r1: float
    c0: float  # integral at t0

    @property
    def c1(self) -> float:
        return self.c0 + (self.r0 + self.r1) * (self.t1 - self.t0) / 2.0

    def at(self, t: float) -> float:
        """Integral at ``t`` (``t0 <= t <= t1``)."""
        tau = t - self.t0
        d = self.t1 - self.t0
        slope = (self.r1 - self.r0) / d if d > 0 else 0.0
        return self.c0 + self.r0 * tau + 0.5 * slope * tau * tau

    def rate(self, t: float) -> float:
        d = self.t1 - self.t0
        if d <= 0:
            return self.r1
        return self.r0 + (self.r1 - self.r0) * (t - self.t0) / d

    def inverse(self, c: float) -> float:
        """The time in this segment at which the integral reaches ``c`` (``c0 <= c <= c1``)."""
        delta = c - self.c0
        if delta <= 0:
            return self.t0
        d = self.t1 - self.t0
        slope = (self.r1 - self.r0) / d
        # Solve slope/2 * tau^2 + r0 * tau - delta = 0 in the form that stays stable for any slope sign.
        disc = self.r0 * self.r0 + 2.0 * slope * delta
        root = math.sqrt(disc) if disc > 0 else 0.0
        denom = self.r0 + root
        tau = 2.0 * delta / denom if denom > 0 else d
        return min(self.t0 + tau, self.t1)


class RateCurve:
    """Rate over time from a start rate and stages (each ramps linearly to its rate over its duration)."""

    def __init__(self, start_rate: float, stages: Iterable[Stage]) -> None:
        segments: list[Segment] = []
        t = 0.0
        r = float(start_rate)
        c = 0.0
        for st in stages:
            if st.duration > 0:
                seg = Segment(t, t + st.duration, r, float(st.rate), c)
                segments.append(seg)
                c = seg.c1
                t = seg.t1
            r = float(st.rate)
        self.segments: tuple[Segment, ...] = tuple(segments)
        self.duration = t
        self.total = c
        self.final_rate = r
        self._starts = [s.t0 for s in self.segments]

    def _segment(self, t: float) -> Segment | None:
        if not self.segments:
            return None
        i = bisect_right(self._starts, t) - 1
        return self.segments[max(i, 0)]

    def rate(self, t: float) -> float:
        """The rate at ``t``; right-continuous at jumps, 0 outside ``[0, duration)``."""
        if t < 0 or t >= self.duration:
            return 0.0
        seg = self._segment(t)
        return 0.0 if seg is None else seg.rate(t)

    def integral(self, t: float) -> float:
        if t <= 0:
            return 0.0
        if t >= self.duration:
            return self.total
        seg = self._segment(t)
        return 0.0 if seg is None else seg.at(t)

    def between(self, t0: float, t1: float) -> float:
        return self.integral(t1) - self.integral(t0)

    def inverse(self, c: float) -> float:
        """The earliest time at which the integral reaches ``c``; ``math.inf`` beyond the total."""
        if c > self.total:
            return math.inf
        for seg in self.segments:
            if c <= seg.c1 and seg.c1 > seg.c0:
                return seg.inverse(c)
        return self.duration

    @property
    def peak_rate(self) -> float:
        return max([0.0] + [max(s.r0, s.r1) for s in self.segments])
