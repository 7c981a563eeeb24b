"""Splitting the fleet's rate across agents: a pure policy over agent ids and their limits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Share:
    agent: str
    share: float  # fraction of the fleet's rate, all shares sum to 1
    phase: float  # constant-arrival phase in (0, 1]


def split(agents: Sequence[str], weights: Mapping[str, float] | None = None) -> tuple[Share, ...]:
    """Shares for ``agents`` in proportion to ``weights`` (default equal). The shares sum to exactly 1
    (the last agent takes the rounding remainder), and phases spread the agents' constant schedules."""
    if not agents:
        return ()
    w = [float(weights.get(a, 1.0)) if weights else 1.0 for a in agents]
    if any(x <= 0 for x in w):
        raise ValueError("agent weights must be positive")
    total = sum(w)
    fractions = [x / total for x in w]
    fractions[-1] = 1.0 - sum(fractions[:-1])
    out = []
    acc = 0.0
    for agent, f in zip(agents, fractions, strict=True):
        acc += f
        out.append(Share(agent, f, min(max(acc, 1e-12), 1.0)))
    return tuple(out)
