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

With a proxy (``proxy=`` or, unless ``trust_env=False``, the environment's), each pooled connection is a
worker driving httpcore's proxy pool of one connection instead: see :mod:`agents.proxy`. The pool, its
timeout sweep and the rest of :class:`agents.engine.Engine` are :class:`agents.pooled_engine.PooledEngine`'s.
Redirects are never followed: a 3xx is a response like any other.
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, cast

import certifi
import h11
import httpcore

from agents.connections import ProtocolConnections
from agents.engine import Sink
from agents.h11_connection import H11Connection
from agents.http_request import RequestHead, host_header, request_head
from agents.pool import IDLE_EXPIRY
from agents.pooled_engine import Connections, PooledEngine
from agents.proxy import ProxyWorkers, category, environment_proxy
from agents.tls import client_context
from loadgen.endpoint import Tls
from loadgen.profile import RequestSpec

__all__ = ["HttpxEngine", "build_request", "category", "direct_request", "environment_proxy"]

MAX_HEAD_BYTES = 100 * 1024
"""The longest response head (status line and headers) accepted, as httpx accepts: longer is ``protocol``."""

# --- the requests: built once, in the constructor


def build_request(spec: RequestSpec, scheme: str, host: str, port: int, prefix: str = "") -> httpcore.Request:
    """The httpcore request for ``spec``: :func:`agents.http_request.request_head`, the same request the fast
    engine sends."""
    head = request_head(spec, host_header(scheme, host, port), prefix)
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in head.headers]
    url = httpcore.URL(scheme=scheme, host=host, port=port, target=head.target)
    return httpcore.Request(head.method, url, headers=headers, content=head.body or NO_BODY)


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


# --- the engine


class HttpxEngine(PooledEngine[Any]):  # pooled: H11Connection on the direct path, a proxy worker through one
    """HTTP/1.1 engine on httpx's protocol machinery; see the module docstring. Implements
    :class:`agents.engine.Engine` with the same constructor and error categories as the fast engine."""

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
        tls: Tls | None = None,
        connect_to: tuple[str, int] | None = None,
    ) -> None:
        self._proxy = proxy if proxy is not None else environment_proxy(target) if trust_env else None
        self._trust_env = trust_env
        super().__init__(
            target,
            requests,
            sink,
            timeout=timeout,
            max_connections=max_connections,
            clock=clock,
            ssl_context=ssl_context,
            idle_expiry=idle_expiry,
            cpu_clock=cpu_clock,
            tls=tls,
            connect_to=connect_to,
        )

    def _prepare(self, requests: Sequence[RequestSpec]) -> None:
        self._requests = [
            build_request(spec, self._scheme, self._host, self._port, self._prefix) for spec in requests
        ]
        pairs = zip(self._requests, requests, strict=True)
        self._direct_requests = [(direct_request(request), spec.body) for request, spec in pairs]
        self._flags: bytearray | None = None  # made by reserve(): only flows read responses

    # --- requests made while the run goes on (flow steps); see agents.engine.Slots

    def reserve(self, n: int) -> int:
        assert self._io is None, "slots are reserved before the engine starts"
        if self._proxy is not None:
            raise ValueError("user journeys ([[flows]]) are not supported through a proxy yet")
        base = len(self._direct_requests)
        self._flags = bytearray(base + n)
        self._direct_requests.extend([self._direct_requests[0]] * n)
        return base

    def head_of(self, spec: RequestSpec) -> RequestHead:
        return request_head(spec, host_header(self._scheme, self._host, self._port), self._prefix)

    def prepare(self, head: RequestHead) -> tuple[h11.Request, bytes]:
        headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in head.headers]
        try:
            return h11.Request(method=head.method, target=head.target, headers=headers), head.body
        except h11.LocalProtocolError as exc:
            raise ValueError(str(exc)) from None

    def prepared(self, req: int) -> tuple[h11.Request, bytes]:
        return self._direct_requests[req]

    def put(self, req: int, prepared: object, flags: int) -> None:
        assert self._flags is not None
        self._direct_requests[req] = cast(tuple[h11.Request, bytes], prepared)
        self._flags[req] = flags

    def _default_ssl_context(self) -> ssl.SSLContext:
        """The profile's ``[tls]`` over httpx's CAs: ``SSL_CERT_FILE`` or ``SSL_CERT_DIR`` from the
        environment (unless ``trust_env=False``), else certifi's."""
        return client_context(self._tls_options, self._trust)

    def _trust(self, ctx: ssl.SSLContext) -> None:
        if self._trust_env and os.environ.get("SSL_CERT_FILE"):
            ctx.load_verify_locations(cafile=os.environ["SSL_CERT_FILE"])
        elif self._trust_env and os.environ.get("SSL_CERT_DIR"):
            ctx.load_verify_locations(capath=os.environ["SSL_CERT_DIR"])
        else:
            ctx.load_verify_locations(cafile=certifi.where())

    def _connections(self) -> Connections[Any]:
        """Through the proxy if there is one (nothing is opened before the first request), else straight
        to the target."""
        if self._proxy is not None:
            return ProxyWorkers(
                self._pool,
                self._proxy,
                self._requests,
                self._on_response,
                self._clock,
                ssl_context=self._ssl_context,
            )
        requests, on_response, flags, reply = (
            self._direct_requests,
            self._on_response,
            self._flags,
            self.reply,
        )

        def make(owner: ProtocolConnections[H11Connection]) -> H11Connection:
            return H11Connection(owner, requests, on_response, MAX_HEAD_BYTES, flags, reply)

        return self._direct(make)
