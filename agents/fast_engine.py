"""The default engine: HTTP/1.1 keep-alive on raw ``asyncio.Protocol`` connections, parsed by httptools.

This is the hot path of the product (the goal is 100,000+ requests/s on one core with uvloop), so it allocates
as little as it can per request:

- the bytes of every request are built once, in the constructor; ``submit`` writes a prebuilt ``bytes``;
- a response is parsed by httptools' C parser with only ``on_message_complete`` defined (no body or header
  callbacks, so no per-response Python objects beyond the read buffer itself);
- there is no timer per request: a sweep every few tens of milliseconds fails what is older than the timeout;
- there is no task per request: a task exists only while a connection is being opened.

The pool policy (LIFO idle stack, FIFO pending, at most ``MAX_OPENING`` connections opening, a timeout sweep)
is :class:`agents.pool.Pool`'s; this module is the I/O under it. ``submit`` *is* the pool's (bound in the
constructor, no wrapper), and the response callback inlines :meth:`~agents.pool.Pool.release` (under a
backlog it defers to :meth:`~agents.pool.Pool.flush`, once per loop iteration). One request
is outstanding per connection (no pipelining); if the server said it will not keep the connection alive, it
is closed and replaced when pending work needs it.

Limitations: a response that is delimited only by the server closing the connection (no Content-Length, not
chunked) is reported as ``reset``, because httptools cannot be told about the end of the stream; upgrades
(101) are reported as responses and the connection is then closed.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Sequence
from typing import cast

from httptools import HttpParserCallbackError, HttpParserError, HttpParserUpgrade, HttpResponseParser

from agents.connections import ProtocolConnections
from agents.engine import Due, Sink, Unreachable, connect_first
from agents.http_request import build_request, host_header, split_target
from agents.pool import IDLE_EXPIRY, Pool
from loadgen.profile import RequestSpec

__all__ = ["FastEngine", "build_request"]

# --- one connection


class _Connection(asyncio.Protocol):
    """A keep-alive connection carrying at most one request at a time; ``req`` is -1 when it carries none."""

    transport: asyncio.Transport  # set by connection_made, before anything else uses it

    __slots__ = (
        "clock",
        "closed",
        "due",
        "engine",
        "heads",
        "idle_since",
        "intended",
        "main_parser",
        "on_response",
        "parser",
        "pool",
        "req",
        "sent",
        "submitted",
        "transport",
        "wire",
    )

    def __init__(self, engine: FastEngine, connections: ProtocolConnections[_Connection]) -> None:
        self.engine = connections
        self.pool = engine._pool
        self.clock = engine._clock
        self.due = engine.due
        self.on_response = engine._on_response
        self.wire = engine._wire
        self.heads = engine._heads
        self.main_parser = HttpResponseParser(self)
        self.parser = self.main_parser
        self.req = -1
        self.intended = 0.0
        self.submitted = 0.0
        self.sent = 0.0
        self.idle_since = 0.0
        self.closed = False

    def send(self, req: int, intended: float, submitted: float, now: float) -> None:
        self.req = req
        self.intended = intended
        self.submitted = submitted
        self.sent = now
        if self.heads:
            # A response to HEAD announces a body it does not carry, which httptools cannot be told; a
            # throwaway parser that ends the exchange with the headers reads it instead.
            self.parser = HttpResponseParser(_HeadResponse(self)) if req in self.heads else self.main_parser
        self.transport.write(self.wire[req])

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except HttpParserCallbackError:
            raise  # a bug in our callback or the sink, not the server's fault
        except HttpParserError:
            self.engine.broken(self, "protocol")
        except HttpParserUpgrade:
            self.engine.retire(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.engine.broken(self, "reset")  # nothing happens if we closed it ourselves
        # The parser holds this connection's callbacks (bound methods): a cycle that only the collector's
        # full collections would free, and the hot path makes next to no objects the collector counts, so
        # those are rare. Measured before: through two 0.4 s stalls of nginx at 10,000/s the agent kept
        # all 1,100 connections it had opened while its pool was back to 300. Cut here, the connection is
        # freed when the transport lets go of it.
        self.parser = self.main_parser = _SPENT

    # httptools callback

    def on_message_complete(self) -> None:
        done = self.clock()
        req = self.req
        parser = self.parser
        status = parser.get_status_code()
        if req < 0:
            self.engine.retire(self)  # an answer to nothing (e.g. 408 before closing): do not reuse it
            return
        if status < 200 and status != 101:
            return  # an interim response; the real one follows
        self.req = -1
        pool = self.pool
        pool.in_flight -= 1
        intended = self.intended
        sent = self.sent
        pool.answered += 1  # with in_flight above: Pool.came_back, inlined
        pool.service_time += done - sent
        # Pool.release, inlined (this is the hot path): reused before reporting, so the next request leaves
        # now and a sink that submits from its callback finds this connection idle instead of opening another.
        if parser.should_keep_alive() and status != 101:
            if pool.pending:
                # A backlog: the oldest pending request goes out at the flush, once per loop iteration
                # (see "Backlog" in agents/pool.py), not from inside this read callback.
                self.engine.backlog(self)
            else:
                self.idle_since = done
                pool.idle.append(self)
        else:
            self.engine.retire(self)
        self.on_response(req, intended, sent, done, status)
        due = self.due
        if done >= due.at:
            due.release()  # arrivals due meanwhile go out now, not after the rest of this loop iteration


class _Spent:
    """The callbacks of a closed connection's parser: none (it is never fed again)."""


_SPENT = HttpResponseParser(_Spent())


class _HeadResponse:
    """The parser callbacks for a response to HEAD: the headers complete the exchange."""

    __slots__ = ("connection",)

    def __init__(self, connection: _Connection) -> None:
        self.connection = connection

    def on_headers_complete(self) -> None:
        self.connection.on_message_complete()


# --- the engine


class FastEngine:
    """HTTP/1.1 keep-alive engine; see the module docstring. Implements :class:`agents.engine.Engine`."""

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
    ) -> None:
        self._pool: Pool[_Connection] = Pool(
            sink,
            timeout=timeout,
            max_connections=max_connections,
            clock=clock,
            idle_expiry=idle_expiry,
            cpu_clock=cpu_clock,
        )
        self.submit = self._pool.submit
        self.due = self._pool.due
        scheme, self._host, self._port, prefix = split_target(target)
        host = host_header(scheme, self._host, self._port)
        self._target = target
        self._tls = scheme == "https"
        self._ssl_context = ssl_context
        self._wire: list[bytes] = [build_request(spec, host, prefix) for spec in requests]
        self._heads: frozenset[int] = frozenset(
            i for i, spec in enumerate(requests) if spec.method.upper() == "HEAD"
        )
        self._on_response: Callable[[int, float, float, float, int], None] = sink.response
        self._timeout = timeout
        self._clock: Callable[[], float] = clock
        self._connections: ProtocolConnections[_Connection] | None = None  # made by start()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    # --- Engine interface

    async def start(self) -> None:
        """Resolve the target once, open a first connection and start the timeout sweep.

        The resolved addresses are tried in order; the first that accepts is used for every later connection.
        Raises ``ConnectionError`` if the name does not resolve or no address accepts a connection.
        """
        self._loop = asyncio.get_running_loop()
        if self._tls and self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        connections = self._connections = ProtocolConnections(
            self._pool,
            lambda owner: _Connection(self, owner),
            self._clock,
            host=self._host,
            port=self._port,
            timeout=self._timeout,
            ssl_context=self._ssl_context if self._tls else None,
        )
        try:
            address, connection = await connect_first(
                self._target, self._host, self._port, connections.create
            )
        except Unreachable as exc:
            # Stay usable: the caller may go on and count every arrival as a connect error (or succeed
            # once the target comes up), so keep the first address and run the timeout sweep anyway.
            connections.address = exc.address
            self._begin(connections)
            raise
        connections.address = address
        self._begin(connections)
        self._pool.add(connection)

    def _begin(self, connections: ProtocolConnections[_Connection]) -> None:
        assert self._loop is not None
        self._sweeper = self._loop.call_later(self._pool.sweep_interval, self._sweep)
        self._pool.start(connections.open)

    @property
    def in_flight(self) -> int:
        return self._pool.in_flight

    @property
    def connections(self) -> int:
        return len(self._pool.connections)

    async def drain(self, deadline: float) -> None:
        await self._pool.drain(deadline)

    async def aclose(self) -> None:
        if self._pool.closed:
            return
        connections = self._pool.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._connections is not None:
            await self._connections.aclose()
        for connection in connections:
            connection.transport.abort()
        await asyncio.sleep(0)  # let the transports deliver connection_lost

    # --- timeouts

    def _sweep(self) -> None:
        """Fail everything submitted ``timeout`` seconds ago or earlier; reschedule itself."""
        assert self._loop is not None
        # Rescheduled first, so that a sink raising from its callback cannot end the sweeps.
        self._sweeper = self._loop.call_later(self._pool.sweep_interval, self._sweep)
        now = self._clock()
        for connection in self._pool.expire(now):
            self._pool.discard(connection)
            connection.transport.abort()  # so its late response is never read
            self._pool.failed(connection, "timeout", now)
        for connection in self._pool.stale(now):
            connection.transport.close()
