"""How much of its host's CPU time a virtual machine's hypervisor gave to other guests: Linux's ``steal``.

On a shared cloud host the hypervisor may run another guest on the physical CPU while this one has work. The
guest's scheduler does not see it (the agent looks as if it were running), so the time shows up nowhere but
as lateness: arrivals leave late (send lag) and responses are read late (latency). An agent reports the share
of its host's CPU time stolen in each second, so a saturated run can say that the generator's own delays
came from other guests on the same machine, not from the load it was given.

The figure is the whole host's (every core of this guest), from the first line of ``/proc/stat``, read once
a second by the agent's reporter (on a two-core machine a read with its parsing takes about 50 µs). Where
``/proc/stat`` is missing or has no steal column (not Linux, or a kernel without it) the share is 0.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

PROC_STAT = Path("/proc/stat")

STEAL_COLUMN = 8  # cpu user nice system idle iowait irq softirq steal guest guest_nice


def parse_stolen(text: str) -> tuple[int, int] | None:
    """(stolen, total) jiffies from the text of ``/proc/stat``; None if it has no steal figure."""
    line = text.split("\n", 1)[0].split()
    if len(line) <= STEAL_COLUMN or line[0] != "cpu":
        return None
    try:
        values = [int(v) for v in line[1:]]
    except ValueError:
        return None
    # guest and guest_nice are already counted in user and nice: the total is the first eight columns.
    return values[STEAL_COLUMN - 1], sum(values[:STEAL_COLUMN])


def read_proc_stat() -> str:
    try:
        return PROC_STAT.read_text()
    except OSError:
        return ""


class StealMeter:
    """The share of the host's CPU time stolen since the previous :meth:`share` (or :meth:`begin`). ``read``
    returns the text of ``/proc/stat`` (injectable for tests).

    Made without reading anything: the first reading is taken by :meth:`begin`, or by the first
    :meth:`share` if nothing began it (that share then covers the instant between two readings)."""

    def __init__(self, read: Callable[[], str] = read_proc_stat) -> None:
        self._read = read
        self._begun = False
        self._last: tuple[int, int] | None = None

    def begin(self) -> None:
        """Take the reading that the next :meth:`share` counts from."""
        self._last = parse_stolen(self._read())
        self._begun = True

    def share(self) -> float:
        if not self._begun:
            self.begin()
        now = parse_stolen(self._read())
        last, self._last = self._last, now
        if now is None or last is None:
            return 0.0
        total = now[1] - last[1]
        stolen = now[0] - last[0]
        if total <= 0 or stolen <= 0:
            return 0.0
        return min(1.0, stolen / total)
