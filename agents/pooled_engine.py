"""What both engines are around their wire protocol: a :class:`agents.pool.Pool` and the I/O it asks for.

:class:`PooledEngine` implements :class:`agents.engine.Engine` once: it makes the pool, binds ``submit`` to
:meth:`agents.pool.Pool.submit` (no wrapper: it is the hot path), starts the engine (the first connection,
the opener, the timeout sweep), sweeps, drains and closes. What differs is the engine's
:class:`Connections`, the I/O under the pool: for a direct path
:class:`agents.connections.ProtocolConnections` over the engine's own ``asyncio.Protocol`` connection
(httptools in :mod:`agents.fast_engine`, h11 in :mod:`agents.h11_connection`), through a proxy
:class:`agents.proxy.ProxyWorkers`.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Generic, Protocol, TypeVar, cast

from agents.connections import Carrier, ProtocolConnections
from agents.engine import Due, Reply, Sink, Unreachable
from agents.http_request import split_target
from agents.pool import IDLE_EXPIRY, Pool, Pooled
from agents.tls import client_context
from loadgen.endpoint import Tls
from loadgen.profile import RequestSpec

C = TypeVar("C", bound=Pooled)
P = TypeVar("P", bound=Carrier)


class Connections(Protocol[C]):
    """The I/O under an engine's pool: what the pool's answers call for. Made by the engine's ``start``, on
    the running loop."""

    async def first(self, target: str) -> C | None:
        """Open a first connection (None: nothing to open before the first request). Raises
        ``ConnectionError`` if the target cannot be reached, :class:`agents.engine.Unreachable` if the
        engine can still go on (its connections then fail as ``connect`` until the target comes up)."""

    def open(self) -> None:
        """The pool's opener: start opening one connection (see :meth:`agents.pool.Pool.start`)."""

    def abort(self, connection: C) -> None:
        """Cut a connection the pool discarded because its request timed out."""

    def close(self, connection: C) -> None:
        """Close a connection the pool discarded because it was idle too long."""

    async def aclose(self, connections: list[C]) -> None:
        """Stop opening connections and cut ``connections``, the pool's last (it is closed already)."""


class PooledEngine(ABC, Generic[C]):
    """An engine over :class:`agents.pool.Pool`; see the module docstring. A subclass builds its requests
    once in :meth:`_prepare` and gives its :class:`Connections` from :meth:`_connections`."""

    submit: Callable[[int, float], None]
    """Send request ``req`` (an index into the requests given to the constructor) now or when a connection
    frees up: :meth:`agents.pool.Pool.submit` itself."""

    due: Due
    """The arrival loop's next arrival; each response callback releases it once due (see
    :class:`agents.engine.Due`)."""

    def __init__(
        self,
        target: str,
        requests: Sequence[RequestSpec],
        sink: Sink,
        *,
        timeout: float,
        max_connections: int,
        clock: Callable[[], float] = time.monotonic,
        ssl_context: ssl.SSLContext | None = None,
        idle_expiry: float = IDLE_EXPIRY,
        cpu_clock: Callable[[], float] | None = None,
        tls: Tls | None = None,
        connect_to: tuple[str, int] | None = None,
    ) -> None:
        self._pool: Pool[C] = Pool(
            sink,
            timeout=timeout,
            max_connections=max_connections,
            clock=clock,
            idle_expiry=idle_expiry,
            cpu_clock=cpu_clock,
        )
        self.submit = self._pool.submit
        self.due = self._pool.due
        self._scheme, self._host, self._port, self._prefix = split_target(target)
        self._target = target
        self._tls = self._scheme == "https"
        self._ssl_context = ssl_context
        self._tls_options = tls  # the profile's [tls]: the context is built from it once, in start()
        # Where connections go (the profile's ``resolve``); Host and SNI stay the target's.
        self._connect_host, self._connect_port = connect_to or (self._host, self._port)
        self._on_response: Callable[[int, float, float, float, int], None] = sink.response
        self.reply = Reply()
        self._timeout = timeout
        self._clock: Callable[[], float] = clock
        self._io: Connections[C] | None = None  # made by start()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._prepare(requests)

    # --- what each engine says

    @abstractmethod
    def _prepare(self, requests: Sequence[RequestSpec]) -> None:
        """Build what each of ``requests`` sends, once (the constructor's last step)."""

    @abstractmethod
    def _connections(self) -> Connections[C]:
        """The I/O under the pool, made on the running loop once the TLS context is known."""

    def _default_ssl_context(self) -> ssl.SSLContext:
        """The TLS context of an https target when the constructor was given none: the profile's ``[tls]``
        over the system's CAs."""
        return client_context(self._tls_options)

    def _direct(self, make: Callable[[ProtocolConnections[P]], P]) -> ProtocolConnections[P]:
        """Connections made by ``make`` straight to the target (for :meth:`_connections`)."""
        return ProtocolConnections(
            cast("Pool[P]", self._pool),  # on a direct path, C is P
            make,
            self._clock,
            host=self._connect_host,
            port=self._connect_port,
            timeout=self._timeout,
            ssl_context=self._ssl_context if self._tls else None,
            server_name=self._server_name,
        )

    @property
    def prefix(self) -> str:
        """The target's path prefix, put before every request's path."""
        return self._prefix

    @property
    def _server_name(self) -> str:
        """The TLS server name (SNI) and the name the certificate must carry: ``[tls] server_name`` or the
        target's host, whatever ``resolve`` says."""
        options = self._tls_options
        return options.server_name if options is not None and options.server_name else self._host

    # --- Engine interface

    async def start(self) -> None:
        """Open a first connection (see :meth:`Connections.first`), then start the opener and the timeout
        sweep. Raises ``ConnectionError`` if the name does not resolve or no address accepts a connection;
        after :class:`agents.engine.Unreachable` the engine is usable (every arrival may fail as a
        ``connect``, ``dns`` or ``tls_*`` error, or succeed once the target comes up)."""
        self._loop = asyncio.get_running_loop()
        if self._tls and self._ssl_context is None:
            self._ssl_context = self._default_ssl_context()
        io = self._io = self._connections()
        try:
            connection = await io.first(self._target)
        except Unreachable as exc:
            self._pool.failed_to_open(exc.category)
            self._begin(io)
            raise
        self._begin(io)
        if connection is not None:
            self._pool.add(connection)

    def _begin(self, io: Connections[C]) -> None:
        assert self._loop is not None
        self._sweeper = self._loop.call_later(self._pool.sweep_interval, self._sweep)
        self._pool.start(io.open)

    @property
    def in_flight(self) -> int:
        return self._pool.in_flight

    @property
    def connections(self) -> int:
        return len(self._pool.connections)

    @property
    def opened(self) -> int:
        return self._pool.connections_opened

    @property
    def open_failures(self) -> Mapping[str, int]:
        return self._pool.open_failures

    @property
    def peak_streams(self) -> int:
        return 0  # HTTP/1.1: no streams

    async def drain(self, deadline: float) -> None:
        await self._pool.drain(deadline)

    async def aclose(self) -> None:
        if self._pool.closed:
            return
        connections = self._pool.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._io is not None:
            await self._io.aclose(connections)
        await asyncio.sleep(0)  # let the transports deliver connection_lost

    # --- timeouts

    def _sweep(self) -> None:
        """Fail everything submitted ``timeout`` seconds ago or earlier, close what was idle too long;
        reschedule itself."""
        assert self._loop is not None and self._io is not None
        # Rescheduled first, so that a sink raising from its callback cannot end the sweeps.
        self._sweeper = self._loop.call_later(self._pool.sweep_interval, self._sweep)
        pool, io = self._pool, self._io
        now = self._clock()
        for connection in pool.expire(now):
            pool.discard(connection)
            io.abort(connection)  # so its late response is never read
            pool.failed(connection, "timeout", now)
        for connection in pool.stale(now):
            io.close(connection)
