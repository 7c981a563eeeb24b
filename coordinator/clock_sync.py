"""Clock offset estimation over the control channel (NTP's idea, without trusting wall clocks).

The coordinator sends a probe at ``t_send`` (its clock); the agent answers with its own clock reading
``t_agent``; the answer arrives at ``t_recv``. Assuming the reading was taken halfway, the agent's clock is
ahead by ``t_agent - (t_send + t_recv) / 2``, give or take half the round trip. The sample with the smallest
round trip bounds the error best.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ClockSample:
    t_send: float
    t_agent: float
    t_recv: float

    @property
    def rtt(self) -> float:
        return self.t_recv - self.t_send

    @property
    def offset(self) -> float:
        return self.t_agent - (self.t_send + self.t_recv) / 2.0


@dataclass(frozen=True)
class ClockEstimate:
    offset: float  # agent clock minus coordinator clock, seconds
    error: float  # bound on the estimate's error: half the best round trip
    samples: int


def estimate(samples: Sequence[ClockSample]) -> ClockEstimate:
    if not samples:
        raise ValueError("no clock samples")
    best = min(samples, key=lambda s: s.rtt)
    return ClockEstimate(best.offset, best.rtt / 2.0, len(samples))
