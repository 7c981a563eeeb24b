"""Whose fault a saturated run is: pure decisions on the figures, no I/O (the words are
:mod:`loadgen.reports.warnings`'s).

An arrival is dropped when ``max_in_flight`` requests are already outstanding in its agent. That happens
for two different reasons, and the advice is opposite:

- the generator fell behind (its send lag over the limit, or an agent at a full core): requests leave late
  and pile up in the agent, and more agents or cores are the cure;
- the generator kept its schedule but the target answered slower than requests arrived, so requests in
  flight grew to the limit: the target is saturated, and more agents would only add to the pile (raise
  ``max_in_flight`` to keep sending, or lower the rate to find what the target sustains).
"""

from __future__ import annotations

import math

from coordinator.aggregate import CPU_SATURATED, SATURATION_LAG_P99_MS


def generator_behind(lag_p99_ms: float | None, cpu_max: float) -> bool:
    """The generator could not keep its schedule: send lag p99 over the limit, or an agent at a full core."""
    return (lag_p99_ms or 0.0) > SATURATION_LAG_P99_MS or cpu_max >= CPU_SATURATED


def saturation_cause(saturated: bool, dropped: int, lag_p99_ms: float | None, cpu_max: float) -> str | None:
    """``results.json``'s ``saturation_cause``: None (not saturated), ``"generator"`` (it fell behind) or
    ``"in_flight_limit"`` (it kept its schedule; arrivals were dropped because requests in flight behind a
    slower target reached ``max_in_flight``)."""
    if not saturated:
        return None
    return "in_flight_limit" if dropped and not generator_behind(lag_p99_ms, cpu_max) else "generator"


STOLEN_NOTABLE = 0.05
"""The share of an agent host's CPU time stolen by its hypervisor (``agents.steal``) from which a generator
that fell behind is told so: beyond scheduling noise, and a twentieth of the host's time is a twentieth of
the agent's schedule spent not running."""


def stolen_note(stolen: float) -> str:
    """One clause naming the CPU time an agent's host lost to its hypervisor in a second that fell behind."""
    return f"an agent's host lost {stolen:.0%} of its CPU time to other guests of its hypervisor (steal)"


def live_reasons(
    dropped: int,
    lag_p99_ms: float | None,
    cpu_max: float,
    service_p99_ms: float | None,
    stolen: float = 0.0,
) -> tuple[list[str], str]:
    """What made one second saturated (its reasons) and the advice for it. ``stolen`` is the most any agent's
    host lost to its hypervisor in that second: named when the generator fell behind and it is notable."""
    why = []
    if dropped:
        why.append(f"{dropped} arrivals dropped at max_in_flight")
    if (lag_p99_ms or 0.0) > SATURATION_LAG_P99_MS:
        why.append(f"send lag p99 {lag_p99_ms:.1f} ms")
    if cpu_max >= CPU_SATURATED:
        why.append(f"an agent at {cpu_max:.0%} CPU")
    if dropped and not generator_behind(lag_p99_ms, cpu_max):
        service = "" if service_p99_ms is None else f" (service time p99 {service_p99_ms:,.1f} ms)"
        advice = (
            f"The agents kept their schedule; the target answered slower than requests arrived{service}: "
            "it is the limit, more agents will not help."
        )
    else:
        advice = "These numbers include the generator's own delays: add agents or cores."
        if stolen >= STOLEN_NOTABLE and generator_behind(lag_p99_ms, cpu_max):
            why.append(stolen_note(stolen))
            advice = (
                "These numbers include the generator's own delays: add agents or cores, on hosts whose CPUs "
                "are not shared with other guests."
            )
    return why, advice


WARN_EVERY = 10.0
"""Seconds between two live saturation warnings of the same cause."""


class LiveWarnings:
    """When a saturated second gets a live warning: at most one every :data:`WARN_EVERY` seconds for each
    cause (``"generator"``: it fell behind; ``"target"``: it kept its schedule and the target was the
    limit), so a long saturated stretch does not flood the terminal, while a change of cause (a machine
    hiccup, then the target giving way) shows at once. Times are the caller's clock."""

    def __init__(self, every: float = WARN_EVERY) -> None:
        self._every = every
        self._next = {True: -math.inf, False: -math.inf}  # by cause: the generator behind, or not

    def due(self, behind: bool, now: float) -> bool:
        """Whether a saturated second whose generator was (``behind``) or was not behind is warned of now;
        if so, the next of its cause waits :data:`WARN_EVERY` seconds."""
        if now < self._next[behind]:
            return False
        self._next[behind] = now + self._every
        return True


MANY_CONNECTIONS = 256
"""Connections per agent beyond which a generator short of CPU is told to try fewer: against nginx on one
core at 85,000 arrivals/s, an agent capped at 64 connections kept up at 90% of its core, at 400 it reached
70,600/s at a full core, and uncapped its pool grew to 2,080 connections while it managed 45,800/s."""


def connections_notable(behind: bool, connections_max: int, capped: bool) -> bool:
    """Whether a run whose generator fell behind held so many connections per agent that it should be told
    to cap them (it had not already)."""
    return behind and not capped and connections_max > MANY_CONNECTIONS
