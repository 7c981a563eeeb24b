"""The httpx engine: httpx's HTTP/1.1 protocol machinery (h11, and httpcore for proxies), for targets that
need what the fast engine leaves out: a proxy from the environment, httpx's TLS defaults (certifi), h11's
strict protocol checks, bodies delimited by the server closing the connection.

It is built below ``httpx.AsyncClient``, because the layers above h11 cost more than the HTTP does. Measured
on one core against nginx, closed loop, CPU per request (``bench/closed_loop.py``; the bench's figures are
in ``docs/benchmarks.md``)::

    httpx.AsyncClient.get              ~1,200 requests/s at 1 connection, ~200/s at 50
    httpcore.AsyncConnectionPool       ~1,800/s at 1 connection,          ~230/s at 50
    httpcore.AsyncHTTP11Connection     about 185 µs of CPU per request at 50 and 1,000 connections
    h11.Connection, driven here        about 95 µs (the same machine, the same minute)

httpcore's pool is what collapses (it scans every connection for every queued request, quadratic in the
concurrency), and its connection spends as much again around h11 (locks, trace contexts, events per body
chunk). So this engine drives ``h11.Connection`` itself, one per connection, and replaces what is around it:

- the pool *policy* is the fast engine's, :class:`agents.pool.Pool`: a LIFO stack of idle connections, a FIFO
  of pending requests, and one more connection opened while pending requests outnumber those being opened,
  up to ``max_connections`` and at most ``MAX_OPENING`` at a time, and a timeout sweep;
- each connection is a plain ``asyncio.Protocol`` driven from its callbacks
  (:class:`agents.h11_connection.H11Connection`): no task, coroutine or future per request, so nothing a
  request allocates outlives it and the garbage collector's young generation stays small however many
  requests are in flight (with a coroutine parked per connection, a thousand requests in flight made its
  collections take 5-12 ms each; closed loop at 1,000 connections the callbacks cost 43 µs of CPU per request
  against 62 µs, at 100 connections 50 against 58);
- each request's h11 event is built and validated once, in the constructor, and a request goes out in one
  write (headers and body together).

Everything h11 does per exchange stays: it frames the request, parses and checks the response, knows a HEAD
response has no body, reads a body delimited by the connection closing, skips 1xx responses, and says
whether the connection can be reused (``Connection: close``, HTTP/1.0) -- if not, it is closed after the
response and another opened when pending work needs one. What remains per request is mostly h11's parsing.

With a proxy (``proxy=`` or, unless ``trust_env=False``, ``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY`` and
``NO_PROXY`` from the environment, read as the standard library reads them), each pooled connection is a
*worker* instead: a coroutine that drives httpcore's ``AsyncHTTPProxy`` of one connection (h11 underneath),
forwarding for http targets, a CONNECT tunnel for https, and parks on a future when idle. That path is
slower (httpcore's pool logic runs for every request) and measures ``sent`` before the connection is opened.
Redirects are never followed: a 3xx is a response like any other.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import urllib.request
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol, cast
from urllib.parse import quote

import h11
import httpcore
import httpx

from agents.connections import ProtocolConnections
from agents.engine import Sink, Unreachable, connect_first
from agents.h11_connection import H11Connection
from agents.http_request import BODY_METHODS, PRINTABLE, field_value, host_header, split_target, token
from agents.pool import IDLE_EXPIRY, Pool
from loadgen import __version__
from loadgen.profile import RequestSpec

MAX_HEAD_BYTES = 100 * 1024
"""The longest response head (status line and headers) accepted, as httpx accepts: longer is ``protocol``."""

READ_HIGH_WATER = 256 * 1024
"""Bytes buffered from the server before the stream stops reading the socket until the worker catches up."""

# --- the requests: built once, in the constructor


def build_request(spec: RequestSpec, scheme: str, host: str, port: int, prefix: str = "") -> httpcore.Request:
    """The httpcore request for ``spec``, with the same headers the fast engine sends.

    ``Host`` and ``User-Agent`` are ours unless the spec sets them; ``Content-Length`` is added when there is
    a body (or the method expects one). Non-ASCII characters in the path are percent-encoded.
    """
    path = spec.path if spec.path.startswith("/") else "/" + spec.path
    target = quote(prefix + path, safe=PRINTABLE)
    given = {name.lower() for name, _ in spec.headers}
    headers: list[tuple[bytes, bytes]] = []
    if "host" not in given:
        headers.append((b"Host", host_header(scheme, host, port).encode("latin-1")))
    if "user-agent" not in given:
        headers.append((b"User-Agent", f"loadgen/{__version__}".encode()))
    headers.extend(
        (token("header", name).encode("latin-1"), field_value(name, value).encode("latin-1"))
        for name, value in spec.headers
    )
    if (spec.body or spec.method.upper() in BODY_METHODS) and "content-length" not in given:
        headers.append((b"Content-Length", str(len(spec.body)).encode()))
    url = httpcore.URL(scheme=scheme, host=host, port=port, target=target)
    content = spec.body or NO_BODY
    return httpcore.Request(token("method", spec.method), url, headers=headers, content=content)


def direct_request(request: httpcore.Request) -> h11.Request:
    """The h11 request event for ``request``: built and checked once, sent as it is every time."""
    return h11.Request(method=request.method, target=request.url.target, headers=request.headers)


class _NoBody:
    """The body of a request without one: no chunks at all. (httpcore turns ``b""`` into one empty chunk,
    which costs an h11 ``Data`` event and a call down to the stream per request, for nothing.)"""

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        raise StopAsyncIteration


NO_BODY = _NoBody()


def environment_proxy(target: str) -> str | None:
    """The proxy URL the environment sets for ``target`` (``*_proxy`` and ``no_proxy``), or None."""
    scheme, host, _, _ = split_target(target)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(host):
        return None
    return proxy if "://" in proxy else "http://" + proxy


def category(exc: BaseException, lost: bool) -> str:
    """The error category of a failed exchange; ``lost`` says the connection was closed under it."""
    if isinstance(exc, httpcore.TimeoutException | TimeoutError):
        return "timeout"
    if isinstance(exc, httpcore.ConnectError | httpcore.ProxyError | ConnectionRefusedError | ssl.SSLError):
        return "connect"
    if isinstance(exc, httpcore.ProtocolError | h11.ProtocolError):
        # h11 calls an early close a protocol error; it is the connection breaking, as in the fast engine.
        text = str(exc)
        return "reset" if lost or "disconnected" in text or "peer closed" in text else "protocol"
    if isinstance(exc, httpcore.NetworkError | OSError):
        return "reset"
    return "protocol"


# --- the byte stream under each connection


class _StreamProtocol(asyncio.Protocol):
    """Buffers what the server sends until the stream's reader takes it."""

    __slots__ = ("buffered", "chunks", "error", "lost", "paused", "transport", "waiter")

    transport: asyncio.Transport

    def __init__(self) -> None:
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.waiter: asyncio.Future[None] | None = None
        self.lost = False  # the connection is closed (by either side) or the server sent EOF
        self.error: Exception | None = None
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > READ_HIGH_WATER and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.lost = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)


class _Stream(httpcore.AsyncNetworkStream):
    """httpcore's network stream interface over an asyncio transport.

    Timeouts passed by httpcore are ignored: the engine enforces its own on the whole exchange.

    (Holding writes until httpcore reads, to send a request's headers and body in one system call, was
    measured and left out: 19% more POSTs/s at 100 connections, but 30% fewer at one connection against
    nginx, which answers as soon as it has the headers.)"""

    __slots__ = ("protocol", "transport")

    def __init__(self, transport: asyncio.Transport, protocol: _StreamProtocol) -> None:
        self.transport = transport
        self.protocol = protocol

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        protocol = self.protocol
        chunks = protocol.chunks
        if not chunks:
            if protocol.lost:
                return b""
            waiter = protocol.waiter = asyncio.get_running_loop().create_future()
            await waiter
            if not chunks:
                if protocol.error is not None:
                    raise httpcore.ReadError(str(protocol.error) or type(protocol.error).__name__)
                return b""
        data = chunks.popleft()
        if len(data) > max_bytes:
            chunks.appendleft(data[max_bytes:])
            data = data[:max_bytes]
        protocol.buffered -= len(data)
        if protocol.paused and protocol.buffered <= READ_HIGH_WATER // 2:
            protocol.paused = False
            self.transport.resume_reading()
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if self.protocol.lost or self.transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        self.transport.write(buffer)

    async def aclose(self) -> None:
        self.transport.close()

    def abort(self) -> None:
        self.transport.abort()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport = await loop.start_tls(
                    self.transport, self.protocol, ssl_context, server_hostname=server_hostname
                )
        except (OSError, TimeoutError) as exc:
            self.transport.abort()
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        if transport is None:
            raise httpcore.ConnectError("the connection closed during the TLS handshake")
        return _Stream(transport, self.protocol)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # httpcore's pool asks this of an idle connection: did the server close?
            return self.protocol.lost or bool(self.protocol.chunks)
        if info == "ssl_object":
            return self.transport.get_extra_info("ssl_object")
        if info in ("client_addr", "server_addr"):
            return self.transport.get_extra_info("sockname" if info == "client_addr" else "peername")
        if info == "socket":
            return self.transport.get_extra_info("socket")
        return None


async def open_stream(
    host: str,
    port: int,
    *,
    timeout: float | None,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
) -> _Stream:
    """Open a TCP (or TLS) connection. Raises ``OSError`` or ``TimeoutError``."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        transport, protocol = await loop.create_connection(
            _StreamProtocol, host, port, ssl=ssl_context, server_hostname=server_hostname
        )
    return _Stream(transport, protocol)


class _Backend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend on :class:`_Stream`, for the proxy path."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            return await open_stream(host, port, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


# --- the proxy path: one worker per connection


class _Worker:
    """A one-connection httpcore proxy pool and the coroutine that serves it; ``req`` is -1 when it carries
    no request. Pooled by :class:`agents.pool.Pool`: ``send`` gives it a request (and wakes it if parked)."""

    __slots__ = ("closed", "connection", "idle_since", "intended", "req", "sent", "submitted", "task", "wake")

    def __init__(self) -> None:
        self.connection: httpcore.AsyncHTTPProxy | None = None
        self.task: asyncio.Task[None] | None = None
        self.wake: asyncio.Future[None] | None = None  # set while parked
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
        self.sent = 0.0  # set when the request is handed to httpcore
        wake = self.wake
        if wake is not None:
            self.wake = None
            wake.set_result(None)


class _Body(Protocol):
    """A response's byte stream as httpcore's connections and pools return it."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


# --- the engine


class HttpxEngine:
    """HTTP/1.1 engine on httpx's protocol machinery; see the module docstring. Implements
    :class:`agents.engine.Engine` with the same constructor and error categories as the fast engine."""

    submit: Callable[[int, float], None]
    """Send request ``req`` (an index into the requests given to the constructor) now or when a connection
    frees up: :meth:`agents.pool.Pool.submit` itself."""

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
        proxy: str | None = None,
        trust_env: bool = True,
        idle_expiry: float = IDLE_EXPIRY,
        cpu_clock: Callable[[], float] | None = None,
    ) -> None:
        # Pooled: H11Connection on the direct path, _Worker through a proxy.
        self._pool: Pool[Any] = Pool(
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
        self._target = target
        self._scheme = scheme
        self._tls = scheme == "https"
        self._ssl_context = ssl_context
        self._proxy = proxy if proxy is not None else environment_proxy(target) if trust_env else None
        self._trust_env = trust_env
        self._requests = [build_request(spec, scheme, self._host, self._port, prefix) for spec in requests]
        pairs = zip(self._requests, requests, strict=True)
        self._direct = [(direct_request(request), spec.body) for request, spec in pairs]
        self._on_response = sink.response
        self._timeout = timeout
        self._clock = clock
        self._connections: ProtocolConnections[H11Connection] | None = None  # direct path, made by start()
        self._workers: set[_Worker] = set()  # the proxy path: every worker whose task has not ended
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    # --- Engine interface

    async def start(self) -> None:
        """Resolve the target once, open a first connection and start the timeout sweep.

        The resolved addresses are tried in order; the first that accepts is used for every later connection.
        Raises ``ConnectionError`` if the name does not resolve or no address accepts a connection. With a
        proxy, nothing is opened here (the proxy path connects on the first request).
        """
        self._loop = asyncio.get_running_loop()
        if self._tls and self._ssl_context is None:
            self._ssl_context = httpx.create_ssl_context(trust_env=self._trust_env)
        self._sweeper = self._loop.call_later(self._pool.sweep_interval, self._sweep)
        if self._proxy is not None:
            self._pool.start(self._spawn)
            return
        requests, on_response = self._direct, self._on_response
        direct = self._connections = ProtocolConnections(
            self._pool,
            lambda owner: H11Connection(owner, requests, on_response, MAX_HEAD_BYTES),
            self._clock,
            host=self._host,
            port=self._port,
            timeout=self._timeout,
            ssl_context=self._ssl_context if self._tls else None,
        )
        try:
            address, connection = await connect_first(self._target, self._host, self._port, direct.create)
        except Unreachable as exc:
            # Stay usable: the caller may go on and count every arrival as a connect error (or succeed once
            # the target comes up), so keep the first address and the timeout sweep.
            direct.address = exc.address
            self._pool.start(direct.open)
            raise
        direct.address = address
        self._pool.start(direct.open)
        self._pool.add(connection)

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
        tasks = [w.task for w in self._workers if w.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)  # let the transports deliver connection_lost

    # --- the proxy path

    def _spawn(self) -> None:
        """The pool's opener on the proxy path: a worker with a one-connection httpcore proxy pool."""
        assert self._loop is not None
        worker = _Worker()
        worker.connection = httpcore.AsyncHTTPProxy(
            self._proxy or "",
            ssl_context=self._ssl_context,
            max_connections=1,
            network_backend=_Backend(),
        )
        self._workers.add(worker)
        worker.task = self._loop.create_task(self._work(worker))
        worker.task.add_done_callback(lambda _: self._ended(worker))

    async def _work(self, worker: _Worker) -> None:
        """Serve requests through the worker's proxy pool until the task is cancelled."""
        pool = self._pool
        if not pool.opened(worker) or worker.closed:  # not taken by the pool: end, do not park
            return
        assert self._loop is not None
        new_future = self._loop.create_future
        while True:
            if worker.req < 0:  # idle (the pool put it on the idle stack): park until send() wakes it
                wake = worker.wake = new_future()
                await wake
            await self._exchange(worker)

    async def _exchange(self, worker: _Worker) -> None:
        """The worker's request through its proxy pool, reported to the sink after the worker is released."""
        pool = self._pool
        req = worker.req
        intended = worker.intended
        sent = worker.sent = self._clock()
        try:
            status = await self._proxied_exchange(worker, req)
        except Exception as exc:
            done = self._clock()
            worker.req = -1
            pool.came_back(sent, done)
            pool.release(worker)
            pool.on_error(req, intended, sent, done, category(exc, False))
            return
        done = self._clock()
        worker.req = -1
        pool.came_back(sent, done)
        pool.release(worker)  # before reporting: see agents.pool
        self._on_response(req, intended, sent, done, status)

    async def _proxied_exchange(self, worker: _Worker, req: int) -> int:
        """Request ``req`` through the worker's one-connection httpcore proxy pool."""
        connection = worker.connection
        assert connection is not None
        response = await connection.handle_async_request(self._requests[req])
        body = cast(_Body, response.stream)  # what Response.aclose() closes, without its type checks
        async for _ in body:
            pass
        await body.aclose()
        return response.status

    def _ended(self, worker: _Worker) -> None:
        """A worker's coroutine returned or was cancelled: its proxy pool goes with it."""
        self._workers.discard(worker)
        worker.connection = None
        if worker.wake is not None:
            worker.wake.cancel()
            worker.wake = None
        self._pool.discard(worker)  # if it is on the idle stack, submit skips it

    # --- timeouts

    def _sweep(self) -> None:
        """Fail everything submitted ``timeout`` seconds ago or earlier; reschedule itself."""
        assert self._loop is not None
        # Rescheduled first, so that a sink raising from its callback cannot end the sweeps.
        self._sweeper = self._loop.call_later(self._pool.sweep_interval, self._sweep)
        now = self._clock()
        for connection in self._pool.expire(now):
            self._pool.discard(connection)
            if isinstance(connection, _Worker):
                if connection.task is not None:
                    connection.task.cancel()  # and with it the request in its proxy pool
            else:
                connection.transport.abort()  # its late response is never read
            self._pool.failed(connection, "timeout", now)
        for connection in self._pool.stale(now):
            if isinstance(connection, _Worker):
                if connection.task is not None:
                    connection.task.cancel()  # its proxy pool goes with it
            else:
                connection.transport.close()
