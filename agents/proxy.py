"""The httpx engine's proxy path: each pooled connection is a *worker*, a coroutine that drives httpcore's
``AsyncHTTPProxy`` of one connection (h11 underneath): forwarding for http targets, a CONNECT tunnel for
https. An idle worker parks on a future until the pool gives it a request.

The proxy comes from the engine's ``proxy=`` or, unless ``trust_env=False``, from
``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY`` and ``NO_PROXY`` in the environment, read as the standard
library reads them (:func:`environment_proxy`). This path is slower than the direct one (httpcore's pool
logic runs for every request) and measures ``sent`` before the connection is opened.

:class:`ProxyWorkers` is the :class:`agents.pooled_engine.Connections` of this path; under each worker's
httpcore pool, :class:`_Stream` is httpcore's network stream over an asyncio transport. httpcore's errors
become the engine's categories in :func:`category`.
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.request
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol, cast

import h11
import httpcore

from agents.connections import Exchange
from agents.engine import connect_category
from agents.http_request import split_target
from agents.pool import Pool

READ_HIGH_WATER = 256 * 1024
"""Bytes buffered from the server before the stream stops reading the socket until the worker catches up."""


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
    cause = exc if isinstance(exc, ssl.SSLError) else exc.__cause__
    if isinstance(exc, httpcore.ConnectError | ssl.SSLError) and isinstance(cause, ssl.SSLError):
        return connect_category(cause)  # tls_verify, tls_handshake
    if isinstance(exc, httpcore.ConnectError | httpcore.ProxyError | ConnectionRefusedError):
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


# --- one worker per connection


class _Worker(Exchange):
    """A one-connection httpcore proxy pool and the coroutine that serves it; ``req`` is -1 when it carries
    no request. Pooled by :class:`agents.pool.Pool`: ``send`` gives it a request (and wakes it if parked)."""

    __slots__ = ("connection", "task", "wake")

    def __init__(self, connection: httpcore.AsyncHTTPProxy) -> None:
        super().__init__()
        self.connection: httpcore.AsyncHTTPProxy | None = connection
        self.task: asyncio.Task[None] | None = None
        self.wake: asyncio.Future[None] | None = None  # set while parked

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


class ProxyWorkers:
    """The workers of an engine's pool through the proxy at ``proxy``: the pool's opener spawns one, the
    sweep cancels one (and with it the request in its proxy pool). Made on the running loop."""

    def __init__(
        self,
        pool: Pool[Any],
        proxy: str,
        requests: Sequence[httpcore.Request],
        on_response: Callable[[int, float, float, float, int], None],
        clock: Callable[[], float],
        *,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self._pool = pool
        self._proxy = proxy
        self._requests = requests
        self._on_response = on_response
        self._clock = clock
        self._ssl_context = ssl_context
        self._loop = asyncio.get_running_loop()
        self._workers: set[_Worker] = set()  # every worker whose task has not ended

    async def first(self, target: str) -> None:
        """Nothing is opened before the first request: the proxy path connects then."""
        return

    def open(self) -> None:
        """The pool's opener on the proxy path: a worker with a one-connection httpcore proxy pool."""
        worker = _Worker(
            httpcore.AsyncHTTPProxy(
                self._proxy,
                ssl_context=self._ssl_context,
                max_connections=1,
                network_backend=_Backend(),
            )
        )
        self._workers.add(worker)
        worker.task = self._loop.create_task(self._work(worker))
        worker.task.add_done_callback(lambda _: self._ended(worker))

    def abort(self, connection: _Worker) -> None:
        if connection.task is not None:
            connection.task.cancel()  # and with it the request in its proxy pool

    def close(self, connection: _Worker) -> None:
        if connection.task is not None:
            connection.task.cancel()  # its proxy pool goes with it

    async def aclose(self, connections: list[_Worker]) -> None:
        """Cancel every worker (``connections``, the pool's, are among them)."""
        tasks = [w.task for w in self._workers if w.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _work(self, worker: _Worker) -> None:
        """Serve requests through the worker's proxy pool until the task is cancelled."""
        if not self._pool.opened(worker) or worker.closed:  # not taken by the pool: end, do not park
            return
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
