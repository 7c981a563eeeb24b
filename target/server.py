"""The built-in test target: a small, fast HTTP/1.1 server to aim loadgen at.

It runs on uvloop with one ``asyncio.Protocol`` per connection and httptools' C parser, no framework, so that
one core answers tens of thousands of requests per second and the target is not what a benchmark measures.

Endpoints (any method; HEAD gets the headers without the body):

    /                  200 ``ok``
    /delay?ms=N        200 after N ms (0..600000), scheduled with ``loop.call_later``; never blocks the loop
    /status/CODE       that status (200..599) with a short body; anything else is 400
    /flaky?p=P         500 with probability P (0..1), else 200
    /bytes?n=N         200 with a body of N bytes (0..10 MiB; larger is 400)
    anything else      404

Journey endpoints, for multi-step flow tests (:mod:`target.journeys`); they answer JSON
(``Content-Type: application/json``, errors as ``{"error": "..."}``) and check the method (405 with
``Allow``; HEAD wherever GET is allowed):

    POST /login        body ``{"user": U, "password": P}``: 200 ``{"token": T, "user": U, "items": [...]}``
                       (the first five items) and ``Set-Cookie: session=S; Path=/; HttpOnly``; 401 for an
                       empty or missing user or password or the password ``wrong``; 400 for a body that is
                       not a JSON object. T and S are signed, not stored: any number of users, no memory
    GET /items?n=N     200 ``{"items": [{"id": 1, "name": "item-1", "price": 10}, ...]}``, N items (0..100,
                       default 5)
    GET /items/ID      200 ``{"id": ID, "name": "item-ID", "price": 10*ID}``; 404 unless ID is 1..999999999
    GET /cart          200 ``{"user": U, "ok": true}`` with ``Authorization: Bearer T`` or a ``session=S``
                       cookie (among others or alone), else 401
    POST /cart         the same; an optional body ``{"item": ID}`` adds ``"item": ID`` to the answer (any
                       other body is 400)
    POST /buy/ID       200 ``{"order": n, "item": ID, "user": U}`` with the token or the cookie, else 401; n
                       counts orders from 1 (``/__reset`` starts it again); 404 for an ID as for /items/ID

Admin endpoints, which are not counted in the stats:

    /__stats           JSON ``{"requests": n, "by_path": {"/delay": n, ...}, "connections": open,
                       "connections_total": n}``; ``by_path`` keys are paths without the query string,
                       except ``/items/ID`` and ``/buy/ID``, counted as ``/items/*`` and ``/buy/*``
    /__reset           zero the counters (``connections``, the number open now, is a gauge and stays)
    /__freeze?ms=N     stall the whole event loop with ``time.sleep`` for N ms (0..60000), then 200; a total
                       server stall on purpose, for coordinated-omission tests

Connections are kept alive (HTTP/1.1 default) unless the request says ``Connection: close`` or is HTTP/1.0
without keep-alive. Request bodies, sized or chunked, are read and discarded, but for ``/login`` and
``/cart``, which read up to 64 KiB of JSON (more is 413). Pipelined requests are answered in order, even
when an earlier one is delayed. Every response carries Content-Length (except 204,
which must not). A request is counted as soon as its headers are complete, before any delay, so a test can
compare what the server saw with what a client sent. Expect: 100-continue is not answered; clients send the
body after their own short wait. A connection reads request headers only from its first request to
``/login``, ``/cart`` or ``/buy/ID`` on (see :class:`_Connection`), so the other routes pay nothing for them.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from http import HTTPStatus
from typing import NamedTuple, cast

import httptools
import uvloop

from target import journeys

MAX_BYTES = 10 * 1024 * 1024
MAX_DELAY_MS = 600_000
MAX_FREEZE_MS = 60_000

Body = bytes | memoryview
Reply = tuple[int, Body, float]
"""What a route returns: status, body, and how many seconds to wait before sending it."""

_OK: Reply = (200, b"ok", 0.0)
_NOT_FOUND: Reply = (404, b"not found", 0.0)
_FAILED: Reply = (500, b"failed", 0.0)
_LARGE_BODY = 64 * 1024  # bodies at least this big are written separately instead of copied behind the head
_HOLD = 16 * 1024  # bytes a connection that reads no heads keeps of earlier reads for a re-read (see _reread)
_LOST = b"lost"  # _Connection._earlier when a re-read could not begin between requests (tested by identity)
_MAX_HEADERS = 100  # headers read per request; more are ignored


@dataclass
class TargetStats:
    """A snapshot of what the target has seen since it started or was last reset."""

    requests: int
    by_path: dict[str, int]
    connections: int
    connections_total: int


@dataclass
class _Counters:
    requests: int = 0
    by_path: dict[bytes, int] = field(default_factory=dict)
    connections: int = 0
    connections_total: int = 0
    orders: int = 0

    def next_order(self) -> int:
        self.orders += 1
        return self.orders

    def snapshot(self) -> TargetStats:
        by_path = {path.decode("latin-1"): n for path, n in self.by_path.items()}
        return TargetStats(self.requests, by_path, self.connections, self.connections_total)

    def reset(self) -> None:
        self.requests = 0
        self.by_path.clear()
        self.connections_total = 0
        self.orders = 0


# --- routes: pure functions of the query string (and the counters, for admin)


def _param(query: bytes, name: bytes) -> bytes | None:
    for pair in query.split(b"&"):
        key, _, value = pair.partition(b"=")
        if key == name:
            return value
    return None


def _int_param(query: bytes, name: bytes, high: int) -> int | None:
    """The parameter as an int in 0..high, or None if it is missing, malformed or out of range."""
    raw = _param(query, name)
    if raw is None or not raw.isdigit():
        return None
    value = int(raw)
    return value if value <= high else None


def _bad(reason: str) -> Reply:
    return (400, reason.encode(), 0.0)


def _root(query: bytes, counters: _Counters) -> Reply:
    return _OK


def _delay(query: bytes, counters: _Counters) -> Reply:
    ms = _int_param(query, b"ms", MAX_DELAY_MS)
    if ms is None:
        return _bad(f"ms must be an integer 0..{MAX_DELAY_MS}")
    return (200, b"ok", ms / 1000)


def _flaky(query: bytes, counters: _Counters) -> Reply:
    raw = _param(query, b"p")
    try:
        p = float(raw) if raw is not None else -1.0
    except ValueError:
        p = -1.0
    if not 0.0 <= p <= 1.0:
        return _bad("p must be a number 0..1")
    return _FAILED if random.random() < p else _OK


def _bytes(query: bytes, counters: _Counters) -> Reply:
    n = _int_param(query, b"n", MAX_BYTES)
    if n is None:
        return _bad(f"n must be an integer 0..{MAX_BYTES}")
    return (200, _payload()[:n], 0.0)


@lru_cache(maxsize=1)
def _payload() -> memoryview:
    """One shared MAX_BYTES buffer; every /bytes body is a zero-copy slice of it."""
    return memoryview(b"x" * MAX_BYTES)


def _status(code: bytes) -> Reply:
    if len(code) != 3 or not code.isdigit() or not 200 <= int(code) <= 599:
        return _bad("status must be 200..599")
    return (int(code), code, 0.0)


def _stats(query: bytes, counters: _Counters) -> Reply:
    stats = counters.snapshot()
    document = {
        "requests": stats.requests,
        "by_path": stats.by_path,
        "connections": stats.connections,
        "connections_total": stats.connections_total,
    }
    return (200, json.dumps(document).encode(), 0.0)


def _reset(query: bytes, counters: _Counters) -> Reply:
    counters.reset()
    return _OK


def _freeze(query: bytes, counters: _Counters) -> Reply:
    ms = _int_param(query, b"ms", MAX_FREEZE_MS)
    if ms is None:
        return _bad(f"ms must be an integer 0..{MAX_FREEZE_MS}")
    time.sleep(ms / 1000)  # deliberately blocks the whole event loop
    return _OK


_ROUTES: dict[bytes, Callable[[bytes, _Counters], Reply]] = {
    b"/": _root,
    b"/delay": _delay,
    b"/flaky": _flaky,
    b"/bytes": _bytes,
    b"/__stats": _stats,
    b"/__reset": _reset,
    b"/__freeze": _freeze,
}
_ADMIN_PREFIX = b"/__"
# on_headers_complete hands admin and journey paths to _unusual, picked out by the two bytes after the slash:
# a set lookup costs plain routes no more than the one prefix test did
_UNUSUAL = frozenset(prefix[1:3] for prefix in (_ADMIN_PREFIX, *journeys.PREFIXES))


@lru_cache(maxsize=1024)
def _head(status: int, length: int, close: bool, content_type: str = "text/plain") -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {content_type}"]
    if status != 204:
        lines.append(f"Content-Length: {length}")
    lines.append("Connection: close" if close else "Connection: keep-alive")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _render(status: int, body: Body, close: bool, head_only: bool) -> tuple[Body, ...]:
    if status in (204, 304) or head_only:
        return (_head(status, 0 if status in (204, 304) else len(body), close),)
    if len(body) >= _LARGE_BODY:
        return (_head(status, len(body), close), body)
    return (_head(status, len(body), close) + body,)


def _render_json(answer: journeys.Answer, close: bool, head_only: bool) -> tuple[Body, ...]:
    status, body, extra = answer
    head = _head(status, len(body), close, "application/json")
    if extra:
        head = head[:-2] + extra + b"\r\n"
    return (head,) if head_only else (head + body,)


# --- the protocol


class _Callbacks(NamedTuple):
    """The parser callbacks of a connection that reads heads: httptools looks them up once, by name."""

    on_url: Callable[[bytes], None]
    on_header: Callable[[bytes, bytes], None]
    on_headers_complete: Callable[[], None]
    on_body: Callable[[bytes], None]
    on_message_complete: Callable[[], None]


class _Slot:
    """One response's place in a connection's order; ``data`` is None until it is ready to go."""

    __slots__ = ("close", "data", "timer")

    def __init__(self, data: tuple[Body, ...] | None, close: bool) -> None:
        self.data = data
        self.close = close
        self.timer: asyncio.TimerHandle | None = None


class _Reread(Exception):
    """Raised inside the parser by a connection that does not read heads, at the first request that needs
    one; carries that request's method (see :meth:`_Connection._reread`)."""

    def __init__(self, method: bytes) -> None:
        super().__init__()
        self.method = method


class _Connection(asyncio.Protocol):
    """One client connection: feeds bytes to httptools, answers each complete request in order.

    Reading headers costs every request: once the parser's protocol has ``on_header``, httptools makes a
    bytes object for every header name and value and calls back for each, whether the route wants them or
    not (for ``GET /`` with two headers, about 13% more interpreter work per request). So a connection starts
    with a parser that reads no headers and no bodies, and keeps it until its first request to a journey
    route that needs them (:func:`journeys.reads_head`). That request is then re-read, with a parser that
    reads heads, from its read (and the earlier ones if its head spanned reads: :meth:`_reread`), and the
    connection reads heads from then on.
    """

    def __init__(self, counters: _Counters, connections: set[_Connection], key: bytes) -> None:
        self._counters = counters
        self._connections = connections
        self._key = key
        self._parser = httptools.HttpRequestParser(self)  # no on_header, no on_body: reads neither
        self._transport: asyncio.Transport | None = None
        self._url = b""  # from the request's first URL piece until its head is complete
        self._path = b""
        self._query = b""
        self._earlier = b""  # the reads since the last that began between requests, unless this one did
        self._heads = False  # the parser reads headers and bodies (into the two fields below)
        self._skipping = False  # re-reading requests that were answered already
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: bytearray | None = None
        self._queue: deque[_Slot] = deque()  # responses waiting behind a delayed one
        self._closing = False  # a request asked to close: answer what came before it, ignore what follows

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        self._connections.add(self)
        self._counters.connections += 1
        self._counters.connections_total += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._connections.discard(self)
        self._counters.connections -= 1
        for slot in self._queue:
            if slot.timer is not None:
                slot.timer.cancel()
        self._queue.clear()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserUpgrade, httptools.HttpParserError) as exc:
            self._parse_failed(exc, data)
            return
        if self._url:  # the read ended inside a request's head: keep it for a re-read, within a bound
            if self._earlier is not _LOST:
                earlier = self._earlier + data
                self._earlier = earlier if len(earlier) <= _HOLD else _LOST
        elif self._earlier:  # it ended between requests, inside a method name or inside a body
            self._earlier = b""

    def pause_writing(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # httptools callbacks (on_header and on_body only once the connection reads heads: see _reread)

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_headers_complete(self) -> None:
        path, _, self._query = self._url.partition(b"?")
        self._url = b""
        self._path = path
        if self._closing or path[1:3] in _UNUSUAL:
            self._unusual(path)
            return
        counters = self._counters
        counters.requests += 1
        counters.by_path[path] = counters.by_path.get(path, 0) + 1

    def on_message_complete(self) -> None:
        if self._closing:
            return
        parser = self._parser
        close = not parser.should_keep_alive()
        self._closing = close
        path = self._path
        route = _ROUTES.get(path)
        if route is not None:
            status, body, delay = route(self._query, self._counters)
        elif path.startswith(b"/status/"):
            status, body, delay = _status(path[8:])
        elif (journey := journeys.route(path)) is not None:
            self._send(self._answer(journey, parser.get_method()), close)
            return
        else:
            status, body, delay = _NOT_FOUND
        data = _render(status, body, close, parser.get_method() == b"HEAD")
        if delay > 0:
            slot = _Slot(None, close)
            self._queue.append(slot)
            slot.timer = asyncio.get_running_loop().call_later(
                delay, self._due, slot, data, time.monotonic() + delay
            )
        else:
            self._send(data, close)

    def _unusual(self, path: bytes) -> None:
        """Counting for the paths that are not counted by path as they are: admin (not at all) and journeys
        (``/items/<id>`` as ``/items/*``); or the first request that needs a head."""
        if self._closing or path.startswith(_ADMIN_PREFIX):
            return
        if not self._heads and journeys.reads_head(path):
            raise _Reread(self._parser.get_method())  # counted when re-read
        key = journeys.count_key(path)
        counters = self._counters
        counters.requests += 1
        counters.by_path[key] = counters.by_path.get(key, 0) + 1

    def _answer(self, route: journeys.Route, method: bytes) -> tuple[Body, ...]:
        body = bytes(self._body) if self._body is not None else b""
        request = journeys.Request(method, self._path, self._query, tuple(self._headers), body)
        return _render_json(route(request, self._key, self._counters), self._closing, method == b"HEAD")

    # ... and the callbacks of a connection that reads heads

    def _on_header(self, name: bytes, value: bytes) -> None:
        if len(self._headers) < _MAX_HEADERS:
            self._headers.append((name, value))

    def _on_headers_complete_reading(self) -> None:
        if self._skipping:  # answered already, unless it is the request that needs a head
            url, self._url = self._url, b""
            if not journeys.reads_head(url.partition(b"?")[0]):
                return
            self._skipping = False
            self._url = url
        self.on_headers_complete()
        self._body = bytearray() if journeys.reads_body(self._path) else None

    def _on_body(self, chunk: bytes) -> None:
        if self._body is not None and len(self._body) <= journeys.MAX_BODY:
            self._body += chunk

    def _on_message_complete_reading(self) -> None:
        if not self._skipping:
            self.on_message_complete()
        self._headers = []
        self._body = None

    def _reread(self, method: bytes, data: bytes) -> None:
        """Switch to a parser that reads heads and give it again the bytes from the last read that began
        between requests to the end of this one (``data``): the requests before the one that needs a head
        were answered already and are skipped; that one and any after it are answered.

        Those bytes begin at a request, or inside its method name or just after it when a read ended there;
        the method of the request that needs a head is put in place of whatever came before the first space
        (the method of a skipped request only has to parse). Two cases are not re-read as sent: a head that
        spanned reads with more than 16 KiB in those before its last (answered 500, the connection closed),
        and a request pipelined behind one whose body began in an earlier read. The bytes then begin inside
        that body (keeping track of bodies would cost every read): the request is found when the body's end
        holds no space, else the re-read fails to parse (400) or does not reach it (500), and the connection
        is closed. Our engines do not pipeline, and clients that do rarely send bodies."""
        earlier = self._earlier
        self._heads = True
        self._skipping = True
        self._url = b""
        callbacks = _Callbacks(
            on_url=self.on_url,
            on_header=self._on_header,
            on_headers_complete=self._on_headers_complete_reading,
            on_body=self._on_body,
            on_message_complete=self._on_message_complete_reading,
        )
        self._parser = httptools.HttpRequestParser(callbacks)
        if earlier is _LOST:
            self._lost()
            return
        held = earlier + data
        rest = held if held.startswith(b"/") else held.partition(b" ")[2]  # "/": the method came earlier
        try:
            self._parser.feed_data(method + b" " + rest)
        except (httptools.HttpParserUpgrade, httptools.HttpParserError) as exc:
            self._parse_failed(exc, b"")
        if self._skipping and not self._closing:  # never reached it: later requests must not wait behind it
            self._lost()

    def _lost(self) -> None:
        self._closing = True
        self._send(_render(500, b"request lost: resend it on a new connection", True, False), True)

    def _parse_failed(self, exc: Exception, data: bytes) -> None:
        if isinstance(exc.__context__, _Reread):
            self._reread(exc.__context__.method, data)
            return
        self._closing = True
        if not isinstance(exc, httptools.HttpParserUpgrade):  # the request before it is answered; no switch
            self._send(_render(400, b"bad request", True, False), True)

    # writing in order

    def _send(self, data: tuple[Body, ...], close: bool) -> None:
        if self._queue:
            self._queue.append(_Slot(data, close))
        else:
            self._write(data, close)

    def _due(self, slot: _Slot, data: tuple[Body, ...], at: float) -> None:
        """The delay's timer fired: answer, unless it fired early. The loop's timers run on a clock read
        once per iteration, so a timer set late in a busy iteration can fire a fraction of a millisecond
        before the delay has really passed; the target promises *at least* the delay."""
        left = at - time.monotonic()
        if left > 0:
            slot.timer = asyncio.get_running_loop().call_later(left, self._due, slot, data, at)
        else:
            self._ready(slot, data)

    def _ready(self, slot: _Slot, data: tuple[Body, ...]) -> None:
        slot.data = data
        slot.timer = None
        queue = self._queue
        while queue and queue[0].data is not None:
            head = queue.popleft()
            assert head.data is not None
            self._write(head.data, head.close)

    def _write(self, data: tuple[Body, ...], close: bool) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        for chunk in data:
            transport.write(chunk)
        if close:
            transport.close()


# --- the server


class TargetServer:
    """The target server on the running event loop. ``start()`` binds; ``close()`` drops every connection."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._counters = _Counters()
        self._key = secrets.token_bytes(32)  # signs the journey routes' tokens and session cookies
        self._connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Bind and listen. Port 0 picks a free port; read it from ``port`` afterwards."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self._counters, self._connections, self._key),
            self._host,
            self._port,
            backlog=1024,
        )
        self._port = self._server.sockets[0].getsockname()[1]

    @property
    def port(self) -> int:
        """The bound port after ``start()``; before it, the port asked for."""
        return self._port

    @property
    def stats(self) -> TargetStats:
        return self._counters.snapshot()

    async def close(self) -> None:
        """Stop listening and close every open connection."""
        if self._server is None:
            return
        self._server.close()
        for connection in list(self._connections):
            connection.close()
        await self._server.wait_closed()
        self._server = None


async def _serve(host: str, port: int) -> None:
    server = TargetServer(host, port)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    shown = f"[{host}]" if ":" in host else host
    print(f"loadgen target listening on http://{shown}:{server.port}", flush=True)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await server.close()


def run_target(host: str, port: int) -> None:
    """Blocking: install uvloop, start the server, print exactly one line
    ``loadgen target listening on http://HOST:PORT`` to stdout (flush), serve until SIGINT/SIGTERM, exit
    cleanly."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(host, port))
