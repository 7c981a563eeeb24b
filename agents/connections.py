"""The connections of an engine whose connections are ``asyncio.Protocol`` objects (both engines' direct
paths): how one is opened, and what a connection asks of its owner when it breaks, will not be reused, or is
free while requests are pending. The pool *policy* is :class:`agents.pool.Pool`'s; this is the I/O it asks
for. Made by the engine's ``start``, on the running loop.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar, cast

from agents.pool import Pool, Pooled


class Carrier(Pooled, Protocol):
    """A pooled connection that is an ``asyncio.Protocol`` with its transport."""

    transport: asyncio.Transport


P = TypeVar("P", bound=Carrier)


class ProtocolConnections(Generic[P]):
    """Opens connections made by ``make`` (given this object, so a connection can call back) to one
    resolved ``address``, and closes, breaks and flushes them for the pool."""

    def __init__(
        self,
        pool: Pool[P],
        make: Callable[[ProtocolConnections[P]], P],
        clock: Callable[[], float],
        *,
        host: str,
        port: int,
        timeout: float,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self.pool = pool
        self.clock = clock
        self.address: str | None = None  # the resolved address new connections go to (set by the engine)
        self._make = make
        self._host = host
        self._port = port
        self._timeout = timeout
        self._ssl_context = ssl_context
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._flush_scheduled = False

    async def create(self, address: str) -> P:
        """A new connection to ``address``. Raises ``OSError`` (``TimeoutError`` after ``timeout``)."""
        factory = cast(Callable[[], asyncio.Protocol], lambda: self._make(self))  # P is an asyncio.Protocol
        async with asyncio.timeout(self._timeout):
            _, connection = await self._loop.create_connection(
                factory,
                address,
                self._port,
                ssl=self._ssl_context,
                server_hostname=self._host if self._ssl_context is not None else None,
            )
        return cast(P, connection)

    def open(self) -> None:
        """The pool's opener: one connection, opened by a task."""
        assert self.address is not None
        task = self._loop.create_task(self._opening(self.address))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _opening(self, address: str) -> None:
        try:
            connection = await self.create(address)
        except OSError:
            self.pool.open_failed()
            return
        if not self.pool.opened(connection):
            connection.closed = True
            connection.transport.abort()

    def retire(self, connection: P) -> None:
        """Close a connection that carries nothing and will not be reused."""
        if connection.closed:
            return
        self.pool.discard(connection)  # if it is on the idle stack, submit skips it
        connection.transport.close()

    def broken(self, connection: P, category: str) -> None:
        """The connection cannot go on: fail what it carried (``category``), drop it."""
        if connection.closed:
            return
        self.pool.discard(connection)
        connection.transport.abort()
        if connection.req >= 0:
            self.pool.failed(connection, category, self.clock())

    def backlog(self, connection: P) -> None:
        """Free while requests are pending: it takes the oldest at the flush, once per loop iteration (see
        "Backlog" in agents.pool), not from inside this read callback."""
        self.pool.ready.append(connection)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self.pool.flush()

    async def aclose(self) -> None:
        """Stop opening connections (the pool is closed already)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
