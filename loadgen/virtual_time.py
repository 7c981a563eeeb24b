"""An asyncio event loop on a virtual clock, for running agents (and a coordinator beside them) through
minutes of a run in milliseconds, deterministically.

The loop's ``time()`` is a number that moves only when the loop would otherwise wait: instead of sleeping
until its next timer, it jumps there. Nothing real may be awaited on it (no sockets, no threads): it is for
in-memory transports (:class:`loadgen.transport.MemoryNetwork`) and fake engines.

``clock()`` is the same virtual time, for code that takes a clock callable; :meth:`advance` runs the loop
for a stretch of virtual time or until a condition holds, from synchronous code (the coordinator's wait).
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable
from typing import Any


class IdleForever(RuntimeError):
    """The virtual loop has nothing scheduled and nothing to wake it: it would wait forever."""


class _VirtualSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type,unused-ignore]
    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualTimeLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        assert self.loop is not None
        if timeout is None:
            raise IdleForever("the virtual-time loop has nothing scheduled")
        if timeout > 0:
            self.loop.now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self, start: float = 1000.0) -> None:
        selector = _VirtualSelector()
        super().__init__(selector)
        selector.loop = self
        self.now = start

    def time(self) -> float:
        return self.now

    def clock(self) -> float:
        return self.now

    def advance(self, timeout: float, until: Callable[[], bool] = lambda: False) -> None:
        """Run the loop for up to ``timeout`` seconds of virtual time, returning as soon as ``until()``
        holds (checked after every turn of the loop)."""
        deadline = self.now + timeout
        if until():
            return

        async def wait() -> None:
            while not until() and self.now < deadline:
                await asyncio.sleep(min(0.001, max(0.0, deadline - self.now)))

        self.run_until_complete(wait())

    def run_task(self, coro: Any) -> asyncio.Task[Any]:
        """Start ``coro`` as a task; it runs whenever the loop does."""
        return self.create_task(coro)
