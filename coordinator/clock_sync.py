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


PROBES = 8  # clock probes per agent; the one with the shortest round trip is kept


class ClockProbes:
    """Whose clock is being probed and what the answers say: a policy with no I/O. The coordinator sends
    the probes; :meth:`answer` says what to do with each reply."""

    def __init__(self, probes: int = PROBES) -> None:
        self.probes = probes
        self._samples: dict[str, list[ClockSample]] = {}

    def begin(self, agent: str) -> None:
        self._samples[agent] = []

    def answer(self, agent: str, sample: ClockSample) -> int | ClockEstimate | None:
        """Take ``agent``'s reply: None when it is not being probed, else the sequence number of the next
        probe to send, or its estimate once it has answered them all."""
        samples = self._samples.get(agent)
        if samples is None:
            return None
        samples.append(sample)
        return len(samples) if len(samples) < self.probes else estimate(samples)

    def answered(self, seq: int) -> bool:
        """Whether every agent being probed has answered probe ``seq``."""
        return all(len(s) > seq for s in self._samples.values())

    def estimate(self, agent: str) -> ClockEstimate | None:
        """``agent``'s estimate from what it answered so far (None: not one answer)."""
        samples = self._samples.get(agent)
        return estimate(samples) if samples else None
