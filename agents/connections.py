"""The connections of an engine whose connections are ``asyncio.Protocol`` objects (both engines' direct
paths): how one is opened, and what a connection asks of its owner when it breaks, will not be reused, or is
free while requests are pending. The pool *policy* is :class:`agents.pool.Pool`'s; this is the I/O it asks
for, the :class:`agents.pooled_engine.Connections` of a direct path. Made by the engine's ``start``, on the
running loop.

:class:`Exchange` holds what the pool keeps on every connection (its one request); :class:`ProtocolConnection`
is the ``asyncio.Protocol`` half both engines' connections share. Each engine's own connection adds the wire
protocol: ``send`` and the reading of responses.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar, cast

from agents.engine import Unreachable, connect_category, connect_first, resolve
from agents.pool import Pool, Pooled


class Exchange:
    """The fields :class:`agents.pool.Pooled` asks of a connection, for one that carries nothing yet."""

    __slots__ = ("closed", "idle_since", "intended", "req", "sent", "submitted")

    def __init__(self) -> None:
        self.req = -1
        self.intended = 0.0
        self.submitted = 0.0
        self.sent = 0.0
        self.idle_since = 0.0
        self.closed = False


class ProtocolConnection(Exchange, asyncio.Protocol):
    """A keep-alive connection carrying at most one request at a time; ``req`` is -1 when it carries none.
    Its owner (``engine``) opens, retires and breaks it; a subclass writes requests (``send``) and reads
    responses."""

    transport: asyncio.Transport  # set by connection_made, before anything else uses it

    __slots__ = ("clock", "engine", "pool", "transport")

    def __init__(self, engine: ProtocolConnections[Any]) -> None:
        super().__init__()
        self.engine = engine
        self.pool = engine.pool
        self.clock = engine.clock

    def send(self, req: int, intended: float, submitted: float, now: float) -> None:
        raise NotImplementedError

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def connection_lost(self, exc: Exception | None) -> None:
        self.engine.broken(self, "reset")  # nothing happens if it was closed on purpose or already broken


class Carrier(Pooled, Protocol):
    """A pooled connection that is an ``asyncio.Protocol`` with its transport."""

    transport: asyncio.Transport


P = TypeVar("P", bound=Carrier)


class ProtocolConnections(Generic[P]):
    """Opens connections made by ``make`` (given this object, so a connection can call back) to one
    resolved ``address`` of ``host``, and closes, breaks and flushes them for the pool. Over TLS,
    ``server_name`` is the SNI and the name the certificate is checked against (default ``host``)."""

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
        server_name: str | None = None,
    ) -> None:
        self.pool = pool
        self.clock = clock
        self.address: str | None = None  # the resolved address new connections go to (set by ``first``)
        self._make = make
        self._host = host
        self._port = port
        self._timeout = timeout
        self._ssl_context = ssl_context
        self._server_name = server_name or host
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._flush_scheduled = False

    async def first(self, target: str) -> P:
        """Resolve the target once and open a first connection: the resolved addresses are tried in order,
        and the first that accepts is used for every later connection.

        Raises :class:`agents.engine.Unreachable` if the name does not resolve (each later connection
        resolves it again until it does) or no address accepts (later connections then go to the first
        address resolved)."""
        try:
            self.address, connection = await connect_first(target, self._host, self._port, self.create)
        except Unreachable as exc:
            self.address = exc.address
            raise
        return connection

    async def create(self, address: str) -> P:
        """A new connection to ``address``. Raises ``OSError`` (``TimeoutError`` after ``timeout``)."""
        factory = cast(Callable[[], asyncio.Protocol], lambda: self._make(self))  # P is an asyncio.Protocol
        async with asyncio.timeout(self._timeout):
            _, connection = await self._loop.create_connection(
                factory,
                address,
                self._port,
                ssl=self._ssl_context,
                server_hostname=self._server_name if self._ssl_context is not None else None,
            )
        return cast(P, connection)

    def open(self) -> None:
        """The pool's opener: one connection, opened by a task."""
        task = self._loop.create_task(self._opening())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _opening(self) -> None:
        try:
            if self.address is None:  # the name did not resolve at the start: try again
                infos = await resolve(self._host, self._port)
                self.address = str(infos[0][4][0])
            connection = await self.create(self.address)
        except OSError as exc:
            self.pool.open_failed(connect_category(exc))
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

    def abort(self, connection: P) -> None:
        """Cut a connection the pool has discarded (timed out): its late response is never read."""
        connection.transport.abort()

    def close(self, connection: P) -> None:
        """Close a connection the pool has discarded (idle too long)."""
        connection.transport.close()

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

    async def aclose(self, connections: list[P]) -> None:
        """Stop opening connections and cut ``connections`` (the pool is closed already)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for connection in connections:
            connection.transport.abort()
