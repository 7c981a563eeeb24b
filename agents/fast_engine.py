"""The default engine: HTTP/1.1 keep-alive on raw ``asyncio.Protocol`` connections, parsed by httptools.

This is the hot path of the product (the goal is 100,000+ requests/s on one core with uvloop), so it allocates
as little as it can per request:

- the bytes of every request are built once, in the constructor; ``submit`` writes a prebuilt ``bytes``;
- a response is parsed by httptools' C parser with only ``on_message_complete`` defined (no body or header
  callbacks, so no per-response Python objects beyond the read buffer itself);
- there is no timer per request: a sweep every few tens of milliseconds fails what is older than the timeout;
- there is no task per request: a task exists only while a connection is being opened.

The pool, all on the event loop thread::

    idle        LIFO stack of open connections with nothing outstanding (the warmest is reused first)
    pending     FIFO of (req, intended, submitted) waiting for a connection
    connecting  connections being opened; one more is opened while there are fewer than pending requests,
                fewer than ``MAX_OPENING`` being opened (a burst after a stall must not open thousands of
                connections at once) and fewer than ``max_connections`` connections in all

One request is outstanding per connection (no pipelining). When its response completes, the connection takes
the oldest pending request or goes back to idle; if the server said it will not keep the connection alive, it
is closed and replaced when pending work needs it.

Limitations: a response that is delimited only by the server closing the connection (no Content-Length, not
chunked) is reported as ``reset``, because httptools cannot be told about the end of the stream; upgrades
(101) are reported as responses and the connection is then closed.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import cast

from httptools import HttpParserCallbackError, HttpParserError, HttpParserUpgrade, HttpResponseParser

from agents.engine import MAX_OPENING, Sink
from agents.http_request import build_request, host_header, split_target
from loadgen.profile import RequestSpec

SWEEP_INTERVAL = 0.05
"""Seconds between timeout sweeps (less for timeouts under 0.2 s): how late a timeout is reported at most."""

# --- one connection


class _Connection(asyncio.Protocol):
    """A keep-alive connection carrying at most one request at a time; ``req`` is -1 when it carries none."""

    transport: asyncio.Transport  # set by connection_made, before anything else uses it

    __slots__ = (
        "closed",
        "engine",
        "heads",
        "intended",
        "main_parser",
        "parser",
        "req",
        "sent",
        "submitted",
        "transport",
        "wire",
    )

    def __init__(self, engine: FastEngine) -> None:
        self.engine = engine
        self.wire = engine._wire
        self.heads = engine._heads
        self.main_parser = HttpResponseParser(self)
        self.parser = self.main_parser
        self.req = -1
        self.intended = 0.0
        self.submitted = 0.0
        self.sent = 0.0
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
            self.engine._broken(self, "protocol")
        except HttpParserUpgrade:
            self.engine._retire(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.engine._broken(self, "reset")  # nothing happens if we closed it ourselves

    # httptools callback

    def on_message_complete(self) -> None:
        engine = self.engine
        done = engine._clock()
        req = self.req
        parser = self.parser
        status = parser.get_status_code()
        if req < 0:
            engine._retire(self)  # an answer to nothing (e.g. 408 before closing): do not reuse it
            return
        if status < 200 and status != 101:
            return  # an interim response; the real one follows
        self.req = -1
        engine._in_flight -= 1
        intended = self.intended
        sent = self.sent
        # Reuse the connection before reporting, so the next request leaves now and a sink that submits from
        # its callback finds this connection idle instead of opening another.
        if parser.should_keep_alive() and status != 101:
            pending = engine._pending
            if pending:
                nreq, nintended, nsubmitted = pending.popleft()
                self.send(nreq, nintended, nsubmitted, engine._clock())
            else:
                engine._idle.append(self)
        else:
            engine._retire(self)
        engine._on_response(req, intended, sent, done, status)


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
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, not {max_connections}")
        scheme, self._host, self._port, prefix = split_target(target)
        host = host_header(scheme, self._host, self._port)
        self._target = target
        self._tls = scheme == "https"
        self._ssl_context = ssl_context
        self._wire = [build_request(spec, host, prefix) for spec in requests]
        self._heads = frozenset(i for i, spec in enumerate(requests) if spec.method.upper() == "HEAD")
        self._on_response = sink.response
        self._on_error = sink.error
        self._timeout = timeout
        self._sweep_interval = min(SWEEP_INTERVAL, timeout / 4)
        self._max_connections = max_connections
        self._clock = clock

        self._idle: list[_Connection] = []
        self._pending: deque[tuple[int, float, float]] = deque()
        self._connections: set[_Connection] = set()  # open (made and not lost or closed by us)
        self._connecting = 0
        self._in_flight = 0
        self._address: str | None = None  # resolved in start()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    # --- Engine interface

    async def start(self) -> None:
        """Resolve the target once, open a first connection and start the timeout sweep.

        The resolved addresses are tried in order; the first that accepts is used for every later connection.
        Raises ``ConnectionError`` if the name does not resolve or no address accepts a connection.
        """
        self._loop = asyncio.get_running_loop()
        if self._tls and self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        try:
            infos = await self._loop.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ConnectionError(f"cannot resolve {self._target}: {exc}") from exc
        failure: OSError | None = None
        for address in dict.fromkeys(str(info[4][0]) for info in infos):
            try:
                connection = await self._create(address)
            except OSError as exc:
                failure = exc
            else:
                break
        else:
            # Stay usable: the caller may go on and count every arrival as a connect error (or succeed
            # once the target comes up), so keep the first address and run the timeout sweep anyway.
            self._address = str(infos[0][4][0])
            self._sweeper = self._loop.call_later(self._sweep_interval, self._sweep)
            reason = str(failure) or type(failure).__name__
            raise ConnectionError(f"cannot connect to {self._target}: {reason}") from failure
        self._address = address
        self._connections.add(connection)
        self._release(connection)
        self._sweeper = self._loop.call_later(self._sweep_interval, self._sweep)
        self._top_up()

    def submit(self, req: int, intended: float) -> None:
        """Send request ``req`` (an index into the requests given to the constructor) now or when a
        connection frees up."""
        now = self._clock()
        self._in_flight += 1
        idle = self._idle
        while idle:
            connection = idle.pop()
            if not connection.closed:  # closed ones are left on the stack and skipped here
                connection.send(req, intended, now, now)
                return
        if not self._closed:
            self._pending.append((req, intended, now))
            self._top_up()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def drain(self, deadline: float) -> None:
        while self._in_flight:
            left = deadline - self._clock()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 0.005))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for connection in list(self._connections):
            self._drop(connection)
        self._idle.clear()
        self._pending.clear()  # still counted in in_flight, never reported
        await asyncio.sleep(0)  # let the transports deliver connection_lost

    # --- opening connections

    async def _create(self, address: str) -> _Connection:
        assert self._loop is not None
        async with asyncio.timeout(self._timeout):
            _, connection = await self._loop.create_connection(
                lambda: _Connection(self),
                address,
                self._port,
                ssl=self._ssl_context if self._tls else None,
                server_hostname=self._host if self._tls else None,
            )
        return connection

    def _top_up(self) -> None:
        """Open connections while pending requests outnumber those being opened, up to the limit."""
        while (
            self._connecting < len(self._pending)
            and self._connecting < MAX_OPENING
            and len(self._connections) + self._connecting < self._max_connections
            and self._address is not None
            and not self._closed
        ):
            self._connecting += 1
            task = self._loop.create_task(self._open(self._address))  # type: ignore[union-attr]
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _open(self, address: str) -> None:
        connection: _Connection | None = None
        try:
            connection = await self._create(address)
        except OSError:
            pass
        finally:
            self._connecting -= 1
        if connection is None:
            self._connect_failed()
        elif self._closed:
            connection.closed = True
            connection.transport.abort()
        elif connection.closed:  # lost between connection_made and here
            self._top_up()
        else:
            self._connections.add(connection)
            self._release(connection)
            self._top_up()

    def _connect_failed(self) -> None:
        """A connection could not be opened: the oldest pending request fails; the rest try again."""
        if self._pending:
            req, intended, _ = self._pending.popleft()
            self._in_flight -= 1
            self._on_error(req, intended, 0.0, self._clock(), "connect")
        self._top_up()

    # --- connection state changes (called by _Connection)

    def _release(self, connection: _Connection) -> None:
        if self._pending:
            req, intended, submitted = self._pending.popleft()
            connection.send(req, intended, submitted, self._clock())
        else:
            self._idle.append(connection)

    def _drop(self, connection: _Connection) -> None:
        """Forget a connection and abort it; whatever it carried is the caller's to report."""
        connection.closed = True
        connection.req = -1
        self._connections.discard(connection)
        connection.transport.abort()

    def _retire(self, connection: _Connection) -> None:
        """Close a connection with nothing outstanding (the server will not keep it alive)."""
        if connection.closed:
            return
        connection.closed = True  # if it is on the idle stack, submit skips it
        self._connections.discard(connection)
        connection.transport.close()
        self._top_up()

    def _fail(self, connection: _Connection, category: str) -> None:
        req = connection.req
        self._drop(connection)
        self._in_flight -= 1
        self._on_error(req, connection.intended, connection.sent, self._clock(), category)

    def _broken(self, connection: _Connection, category: str) -> None:
        """The connection cannot go on (lost, or an unparsable response): fail what it carried, drop it."""
        if connection.closed:
            return
        if connection.req >= 0:
            self._fail(connection, category)
        else:
            self._drop(connection)  # if it is on the idle stack, submit skips it
        self._top_up()

    # --- timeouts

    def _sweep(self) -> None:
        """Fail everything submitted ``timeout`` seconds ago or earlier; reschedule itself."""
        assert self._loop is not None
        # Rescheduled first, so that a sink raising from its callback cannot end the sweeps.
        self._sweeper = self._loop.call_later(self._sweep_interval, self._sweep)
        now = self._clock()
        cutoff = now - self._timeout
        pending = self._pending
        while pending and pending[0][2] <= cutoff:
            req, intended, _ = pending.popleft()
            self._in_flight -= 1
            self._on_error(req, intended, 0.0, now, "timeout")
        late = [c for c in self._connections if c.req >= 0 and c.submitted <= cutoff]
        for connection in late:
            self._fail(connection, "timeout")  # aborted, so its late response is never read
        if late:
            self._top_up()
        if len(self._idle) > len(self._connections):
            self._idle = [c for c in self._idle if not c.closed]
