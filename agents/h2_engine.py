"""The HTTP/2 engine: streams multiplexed over a few ``asyncio.Protocol`` connections, framed by ``h2``.

``h2`` (hyper-h2) is a pure-Python state machine: it turns our requests into frames and the server's bytes
into events, and does no I/O. Each connection is an ``asyncio.Protocol`` that feeds it what it reads and
writes what it has to send, once per read; there is no task per request (a task exists only while a
connection is being opened) and no timer per request (a sweep every few tens of milliseconds fails what is
older than the timeout and resets its stream).

Which connection takes the next stream and when to open another is :mod:`agents.h2_pool`'s (pure). Requests
beyond what the connections carry wait FIFO; their wait counts in their latency from the intended time.

Over ``https`` the protocol is agreed by ALPN: the engine offers ``h2`` only, and a server that does not pick
it fails the connection as ``protocol`` (:func:`start` raises, naming it). Over ``http`` it speaks h2c with
prior knowledge (the connection preface at once, no upgrade).

Error categories as :mod:`agents.engine` lists them; a stream the server resets (RST_STREAM) or leaves out of
a GOAWAY, or a connection that breaks under a stream, is ``reset``; frames ``h2`` refuses are ``protocol``.

A request body larger than the server's flow-control window is sent as WINDOW_UPDATE frames open it. After
a GOAWAY the connection takes no new stream and reads the answers to the streams the GOAWAY kept.

As on HTTP/1.1, no connection is opened while the agent is short of CPU, and one idle for
:data:`agents.pool.IDLE_EXPIRY` is closed with a GOAWAY (:mod:`agents.h2_pool`'s ``busy`` and ``stale``,
checked by the sweep). ``peak_streams`` counts the most streams one connection carried at once.

User journeys run on it (:class:`agents.engine.Slots`): request numbers past the profile's own take the
header block and body :meth:`H2Engine.put` gives them. A stream flagged :data:`agents.engine.READ` keeps its
response headers (names in lower case, as HTTP/2 sends them; no pseudo-headers) and its body's first
:data:`agents.engine.READ_LIMIT` bytes, handed over in :attr:`H2Engine.reply` just before the sink hears of
it; the rest of the body is read and dropped. Other streams keep nothing (no per-stream list). A response to
HEAD needs nothing special (its HEADERS frame ends the stream).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import cast

from hpack.exceptions import HPACKError

from agents.engine import (
    MAX_OPENING,
    READ,
    READ_LIMIT,
    Due,
    Reply,
    Sink,
    Unreachable,
    connect_category,
    connect_first,
    wait_drained,
)
from agents.h2_frames import (
    ACK,
    CANCEL,
    CONTINUATION,
    DATA,
    DEFAULT_MAX_FRAME,
    DEFAULT_WINDOW,
    ENABLE_PUSH,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    MAX_CONCURRENT_STREAMS,
    MAX_FRAME_SIZE,
    MAX_STREAM_ID,
    MAX_WINDOW,
    NO_ERROR,
    PADDED,
    PING,
    PREFACE,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    REFUSED_STREAM,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    BlockDecoder,
    FrameError,
    FrameReader,
    encode_block,
    frame,
    goaway,
    parse_settings,
    rst_stream,
    settings,
    status_of,
    strip_padding,
    u32,
    window_update,
)
from agents.h2_pool import busy, stale, stream_limit, take, to_open
from agents.http_request import RequestHead, host_header, request_head, split_target
from agents.pool import IDLE_EXPIRY
from agents.tls import client_context
from loadgen.endpoint import Tls
from loadgen.profile import RequestSpec

SWEEP_INTERVAL = 0.05
WINDOW = 1 << 24
"""Our receive window, per stream and for the connection: large, so that bodies do not wait on our
WINDOW_UPDATEs, which go out once half of it was read (:data:`REFILL`)."""
REFILL = WINDOW // 2
SETTINGS_ACK = frame(SETTINGS, ACK, 0)
DROPPED = frozenset({"host", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"})
"""Headers HTTP/2 does not carry (``Host`` becomes ``:authority``)."""

Headers = list[tuple[bytes, bytes]]


log = logging.getLogger(__name__)


class NotHttp2(ConnectionError):
    """The server did not agree to HTTP/2 by ALPN."""


class _Stream:
    __slots__ = ("body", "intended", "received", "req", "sent", "status", "submitted", "window")

    def __init__(
        self, req: int, intended: float, submitted: float, sent: float, body: bytes, window: int
    ) -> None:
        self.req = req
        self.intended = intended
        self.submitted = submitted
        self.sent = sent
        self.status = 0
        self.body = body  # what is left to send (flow control)
        self.window = window  # what the server lets us send on it now
        self.received = 0  # body bytes read since our last WINDOW_UPDATE for it


class _ReadStream(_Stream):
    """A stream whose response is handed over (a :data:`agents.engine.READ` request): its headers, and its
    body up to :data:`agents.engine.READ_LIMIT` bytes."""

    __slots__ = ("chunks", "headers", "room")

    def __init__(
        self, req: int, intended: float, submitted: float, sent: float, body: bytes, window: int
    ) -> None:
        super().__init__(req, intended, submitted, sent, body, window)
        self.headers: Headers = []
        self.chunks: list[bytes] = []
        self.room = READ_LIMIT

    def keep(self, data: bytes) -> None:
        if self.room > 0:
            kept = data[: self.room]
            self.chunks.append(kept)
            self.room -= len(kept)


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection and its streams: frames in and out (:mod:`agents.h2_frames`), the flow-control
    windows both ways, SETTINGS, PING, RST_STREAM and GOAWAY."""

    transport: asyncio.Transport

    def __init__(self, engine: H2Engine) -> None:
        self.engine = engine
        self.streams: dict[int, _Stream] = {}
        self.peer_max: int | None = None
        self.limit = stream_limit(engine._max_streams, None)
        self.closed = False
        self.going_away = False
        self.seen_stream = 0  # for agents.h2_pool.stale
        self.idle_since = engine._clock()
        self.next_stream = 1  # client streams are odd
        self.reader = FrameReader(DEFAULT_MAX_FRAME)  # we never raise SETTINGS_MAX_FRAME_SIZE
        self.decoder = BlockDecoder()
        self.send_window = DEFAULT_WINDOW  # the connection's, for request bodies
        self.peer_window = DEFAULT_WINDOW  # the server's SETTINGS_INITIAL_WINDOW_SIZE: each new stream's
        self.peer_frame = DEFAULT_MAX_FRAME
        self.unacked = 0  # body bytes read since our last WINDOW_UPDATE for the connection
        self.blocked: set[int] = set()  # streams with body left to send, waiting for a window
        self.continued: tuple[int, int, list[bytes]] | None = None  # a header block in CONTINUATION frames
        self.outgoing: list[bytes] = []  # frames to write at the end of this turn of the event loop
        self.flushing = False
        self.reads = engine._reads
        """Some request may be READ (numbers were reserved): its streams are looked at. Without, a stream
        costs only this flag's checks."""

    @property
    def last_stream(self) -> int:
        return self.next_stream

    @property
    def active(self) -> int:
        return len(self.streams)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.engine._made.add(self)
        self.transport.write(
            PREFACE
            + settings([(ENABLE_PUSH, 0), (INITIAL_WINDOW_SIZE, WINDOW)])
            + window_update(0, WINDOW - DEFAULT_WINDOW)
        )

    def send(self, req: int, intended: float, submitted: float, now: float) -> None:
        sid = self.next_stream
        self.next_stream = sid + 2
        engine = self.engine
        block, body = engine._wire[req]
        if self.reads and engine._flags[req] & READ:
            stream: _Stream = _ReadStream(req, intended, submitted, now, body, self.peer_window)
        else:
            stream = _Stream(req, intended, submitted, now, body, self.peer_window)
        streams = self.streams
        streams[sid] = stream
        engine.peak_streams = max(engine.peak_streams, len(streams))
        if len(block) <= self.peer_frame:
            data = frame(HEADERS, END_HEADERS if body else END_HEADERS | END_STREAM, sid, block)
        else:
            data = self._split_headers(sid, block, end_stream=not body)
        if body:
            data += self._send_body(sid, stream)
        self.outgoing.append(data)
        if not self.flushing:
            self.flushing = True
            engine._loop.call_soon(self.flush)  # type: ignore[union-attr]
        if self.next_stream > MAX_STREAM_ID:  # no stream number left: the next go to another connection
            self.going_away = True
            engine._retire(self)

    def flush(self) -> None:
        """Write the frames gathered in this turn of the event loop in one go: a write per turn rather than
        per request (over TLS also a record per turn), whatever the streams sent meanwhile."""
        self.flushing = False
        if self.outgoing:
            data = b"".join(self.outgoing)
            self.outgoing = []
            if not self.closed:
                self.transport.write(data)

    def _split_headers(self, sid: int, block: bytes, *, end_stream: bool) -> bytes:
        size = self.peer_frame
        parts = [block[i : i + size] for i in range(0, len(block), size)]
        out = [frame(HEADERS, END_STREAM if end_stream else 0, sid, parts[0])]
        out += [frame(CONTINUATION, 0, sid, part) for part in parts[1:-1]]
        out.append(frame(CONTINUATION, END_HEADERS, sid, parts[-1]))
        return b"".join(out)

    def _send_body(self, sid: int, stream: _Stream) -> bytes:
        """DATA frames for as much of the stream's body as the windows allow."""
        out = []
        while stream.body:
            n = min(stream.window, self.send_window, self.peer_frame, len(stream.body))
            if n <= 0:
                self.blocked.add(sid)  # the rest goes when the server opens its window
                break
            chunk, stream.body = stream.body[:n], stream.body[n:]
            stream.window -= n
            self.send_window -= n
            out.append(frame(DATA, 0 if stream.body else END_STREAM, sid, chunk))
        else:
            self.blocked.discard(sid)
        return b"".join(out)

    def _unblock(self) -> list[bytes]:
        out = []
        for sid in list(self.blocked):
            stream = self.streams.get(sid)
            if stream is None:
                self.blocked.discard(sid)
            else:
                out.append(self._send_body(sid, stream))
        return out

    def data_received(self, data: bytes) -> None:
        engine = self.engine
        try:
            answered, out = self._frames(self.reader.frames(data), engine._clock())
        except (FrameError, HPACKError) as exc:
            log.debug("HTTP/2 connection to %s broken: %s", engine._target, exc)
            if not self.closed:
                self.transport.write(goaway(0, PROTOCOL_ERROR))
            engine._broken(self, "protocol")
            return
        if out and not self.closed:
            self.flush()  # what was gathered first: our frames keep the order they were made in
            self.transport.write(b"".join(out))
        if self.going_away:
            engine._retire(self)
        if answered or self.limit > 0:
            engine._dispatch()
        due = engine.due
        if answered and engine._clock() >= due.at:
            due.release()

    def _frames(self, frames: list[tuple[int, int, int, bytes]], done: float) -> tuple[bool, list[bytes]]:
        """Act on the frames read; returns whether a stream ended, and the frames to send back."""
        answered = False
        out: list[bytes] = []
        streams = self.streams
        for kind, flags, sid, payload in frames:
            if self.continued is not None and kind != CONTINUATION:
                raise FrameError("a frame inside a header block")
            if kind == DATA:
                self.unacked += len(payload)
                stream = streams.get(sid)
                if stream is not None:
                    stream.received += len(payload)
                    if stream.received >= REFILL:
                        out.append(window_update(sid, stream.received))
                        stream.received = 0
                    if self.reads and isinstance(stream, _ReadStream):
                        stream.keep(strip_padding(flags, payload) if flags & PADDED else payload)
                    if flags & END_STREAM:
                        answered |= self._ended(sid, done)
                elif sid == 0:
                    raise FrameError("DATA on stream 0")
            elif kind == HEADERS:
                block = strip_padding(flags, payload, priority=True)
                if flags & END_HEADERS:
                    answered |= self._headers(sid, flags, block, done)
                else:
                    self.continued = (sid, flags, [block])
            elif kind == CONTINUATION:
                if self.continued is None or self.continued[0] != sid:
                    raise FrameError("CONTINUATION without its HEADERS")
                self.continued[2].append(payload)
                if flags & END_HEADERS:
                    first, first_flags, parts = self.continued
                    self.continued = None
                    answered |= self._headers(first, first_flags, b"".join(parts), done)
            elif kind == SETTINGS:
                if not flags & ACK:
                    self._settings(parse_settings(payload))
                    out.append(SETTINGS_ACK)
                    out += self._unblock()
            elif kind == WINDOW_UPDATE:
                increment = u32(payload) & 0x7FFFFFFF
                if sid == 0:
                    self.send_window += increment
                elif sid in streams:
                    streams[sid].window += increment
                if self.blocked:
                    out += self._unblock()
            elif kind == RST_STREAM:
                stream = streams.pop(sid, None)
                if stream is not None:
                    self.blocked.discard(sid)
                    if u32(payload) == REFUSED_STREAM:  # not processed: safe to send again (RFC 9113 8.7)
                        self.engine._retry([stream])
                    else:
                        self.engine._failed(stream, "reset", done)
                    answered = True
            elif kind == PING:
                if not flags & ACK:
                    out.append(frame(PING, ACK, 0, payload))
            elif kind == GOAWAY:
                # Streams up to its last one are still answered (read on). Those after it were not processed
                # (RFC 9113 6.8): they go again on another connection, first in line, timed from their
                # intended time as ever (a server that closes after N requests races the ones on their way).
                self.going_away = True
                last = u32(payload) & 0x7FFFFFFF
                unprocessed = [streams.pop(s) for s in [s for s in streams if s > last]]
                self.blocked.intersection_update(streams)
                if unprocessed:
                    self.engine._retry(unprocessed)
                    answered = True
                self.engine._retire(self)  # now: an answer read after it must not send on this connection
            elif kind == PUSH_PROMISE:
                raise FrameError("PUSH_PROMISE although SETTINGS_ENABLE_PUSH is 0")
            # PRIORITY and frame types this engine does not know are ignored, as RFC 9113 asks
        if self.unacked >= REFILL:
            out.append(window_update(0, self.unacked))
            self.unacked = 0
        return answered, out

    def _headers(self, sid: int, flags: int, block: bytes, done: float) -> bool:
        """A whole header block for stream ``sid``: a response's head, an interim (1xx) head or trailers.
        Decoded (when it must be, see :func:`agents.h2_frames.scan_status`) even for a stream that is gone,
        so the dynamic table stays in step with the server's."""
        stream = self.streams.get(sid)
        if self.reads and isinstance(stream, _ReadStream):
            fields = self.decoder.fields(block)
            status = status_of(fields)
            if status >= 200 and not stream.status:
                stream.headers = [(k, v) for k, v in fields if k[:1] != b":"]
        else:
            status = self.decoder.status(block)
        if stream is None:
            return False
        if status >= 200 and not stream.status:
            stream.status = status
        if flags & END_STREAM:
            return self._ended(sid, done)
        return False

    def _settings(self, values: list[tuple[int, int]]) -> None:
        for key, value in values:
            if key == MAX_CONCURRENT_STREAMS:
                self.peer_max = value
                self.limit = stream_limit(self.engine._max_streams, value)
            elif key == INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise FrameError(f"SETTINGS_INITIAL_WINDOW_SIZE {value} over 2^31-1")
                delta, self.peer_window = value - self.peer_window, value
                for stream in self.streams.values():
                    stream.window += delta
            elif key == MAX_FRAME_SIZE:
                if not DEFAULT_MAX_FRAME <= value <= 16_777_215:
                    raise FrameError(f"SETTINGS_MAX_FRAME_SIZE {value} out of range")
                self.peer_frame = value

    def _ended(self, sid: int, done: float) -> bool:
        stream = self.streams.pop(sid, None)
        if stream is None:
            return False
        self.blocked.discard(sid)
        engine = self.engine
        engine.in_flight -= 1
        if stream.status:
            if self.reads and isinstance(stream, _ReadStream):
                reply = engine.reply
                reply.headers = stream.headers
                reply.body = b"".join(stream.chunks)
            engine._on_response(stream.req, stream.intended, stream.sent, done, stream.status)
        else:
            engine._on_error(stream.req, stream.intended, stream.sent, done, "protocol")
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.engine._made.discard(self)
        self.engine._broken(self, "reset")


def _category(exc: OSError) -> str:
    """The error category of a connection that could not be opened: ``protocol`` if the server would not
    speak HTTP/2, else :func:`agents.engine.connect_category`'s."""
    cause = exc.__cause__ if isinstance(exc, Unreachable) else exc
    if isinstance(cause, NotHttp2):
        return "protocol"
    if isinstance(exc, Unreachable):
        return exc.category
    return connect_category(exc)


def _status(headers: Headers) -> int:
    for name, value in headers:
        if name == b":status":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def h2_headers(head: RequestHead, scheme: str, authority: str) -> tuple[Headers, bytes]:
    """The HTTP/2 header fields and body of ``head`` (see :func:`agents.http_request.request_head`): the
    pseudo-headers first (``:authority`` from its ``Host`` header, else ``authority``), names in lower
    case, without the headers HTTP/2 does not carry. Raises ValueError (UnicodeEncodeError) for a value
    that is not Latin-1."""
    given = {name.lower(): value for name, value in head.headers}
    headers: Headers = [
        (b":method", head.method.encode("ascii")),
        (b":scheme", scheme.encode("ascii")),
        (b":authority", given.get("host", authority).encode("latin-1")),
        (b":path", head.target.encode("latin-1")),
    ]
    headers.extend(
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in head.headers
        if name.lower() not in DROPPED
    )
    return headers, head.body


class H2Engine:
    """HTTP/2 engine; see the module docstring. Implements :class:`agents.engine.Engine`."""

    due: Due

    def __init__(
        self,
        target: str,
        requests: Sequence[RequestSpec],
        sink: Sink,
        *,
        timeout: float,
        max_connections: int,
        max_streams: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] | None = None,
        idle_expiry: float = IDLE_EXPIRY,
        ssl_context: ssl.SSLContext | None = None,
        tls: Tls | None = None,
        connect_to: tuple[str, int] | None = None,
    ) -> None:
        self._scheme, self._host, self._port, self._prefix = split_target(target)
        self._target = target
        self._tls = self._scheme == "https"
        self._tls_options = tls
        self._ssl_context = ssl_context
        self._connect_host, self._connect_port = connect_to or (self._host, self._port)
        self._authority = host_header(self._scheme, self._host, self._port)
        self._wire = [self.prepare(self.head_of(spec)) for spec in requests]
        self._flags = bytearray(len(self._wire))  # per request number: agents.engine.READ (and HEAD)
        self._reads = False  # numbers were reserved: a request may be READ
        self.reply = Reply()
        self._on_response = sink.response
        self._on_error = sink.error
        self._timeout = timeout
        self._max_connections = max_connections
        self._max_streams = max_streams
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._cpu = (0.0, 0.0)  # (clock, CPU seconds) at the last sweep
        self._idle_expiry = idle_expiry
        self._busy = False
        self._next_sweep = 0.0
        self.due = Due()
        self.in_flight = 0
        self.opened = 0
        self.peak_streams = 0
        self._failures: dict[str, int] = {}
        self._open: list[_Connection] = []
        self._retiring: set[_Connection] = set()  # after a GOAWAY, until their streams are answered
        self._opening: set[asyncio.Task[None]] = set()
        self._made: set[_Connection] = set()
        """Every connection with a transport, until it is lost: also one whose opener was cancelled after
        the handshake (create_connection then closes the socket, not the TLS transport); aclose cuts them."""
        self._waiting: deque[tuple[int, float, float]] = deque()
        self._address: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False
        self._dispatching = False
        self.protocol = ""
        """What the first connection agreed ("h2"; "" before one opened)."""

    # --- Engine interface

    @property
    def connections(self) -> int:
        return len(self._open)

    @property
    def open_failures(self) -> Mapping[str, int]:
        return self._failures

    async def start(self) -> None:
        """Open a first connection. Raises :class:`agents.engine.Unreachable` if the target cannot be reached
        (the engine stays usable), ``ConnectionError`` if it does not speak HTTP/2."""
        self._loop = asyncio.get_running_loop()
        if self._tls and self._ssl_context is None:
            self._ssl_context = client_context(self._tls_options)
        if self._ssl_context is not None:
            self._ssl_context.set_alpn_protocols(["h2"])
        self._sweeper = self._loop.call_later(self._sweep_interval, self._sweep)
        try:
            self._address, connection = await connect_first(
                self._target, self._connect_host, self._connect_port, self._connect
            )
        except Unreachable as exc:
            self._address = exc.address
            exc.category = _category(exc)
            self._count_failure(exc.category)
            raise
        self._add(connection)

    def submit(self, req: int, intended: float) -> None:
        self.in_flight += 1
        now = self._clock()
        connection = take(self._open)
        if connection is not None and not self._waiting:
            connection.send(req, intended, now, now)
            return
        self._waiting.append((req, intended, now))
        self._dispatch()

    # --- requests made while the run goes on (flow steps); see agents.engine.Slots

    @property
    def prefix(self) -> str:
        """The target's path prefix, put before every request's path."""
        return self._prefix

    def reserve(self, n: int) -> int:
        assert self._loop is None, "slots are reserved before the engine starts"
        base = len(self._wire)
        self._wire.extend([(b"", b"")] * n)
        self._flags.extend(bytes(n))
        self._reads = True
        return base

    def head_of(self, spec: RequestSpec) -> RequestHead:
        return request_head(spec, self._authority, self._prefix)

    def prepare(self, head: RequestHead) -> tuple[bytes, bytes]:
        """The header block (:func:`agents.h2_frames.encode_block`) and body of ``head``."""
        headers, body = h2_headers(head, self._scheme, self._authority)
        return encode_block(headers), body

    def prepared(self, req: int) -> tuple[bytes, bytes]:
        return self._wire[req]

    def put(self, req: int, prepared: object, flags: int) -> None:
        self._wire[req] = cast(tuple[bytes, bytes], prepared)
        self._flags[req] = flags

    async def drain(self, deadline: float) -> None:
        await wait_drained(lambda: self.in_flight, self._clock, deadline)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        tasks = list(self._opening)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for connection in [*self._open, *self._retiring, *self._made]:
            connection.closed = True
            connection.transport.abort()
        self._made.clear()
        self._open.clear()
        self._retiring.clear()
        await asyncio.sleep(0)

    # --- connections

    @property
    def _sweep_interval(self) -> float:
        return min(SWEEP_INTERVAL, self._timeout / 4)

    async def _connect(self, address: str) -> _Connection:
        loop = asyncio.get_running_loop()
        ctx = self._ssl_context if self._tls else None
        server_name = None
        if ctx is not None:
            options = self._tls_options
            server_name = options.server_name if options is not None and options.server_name else self._host
        try:
            async with asyncio.timeout(self._timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(self),
                    address,
                    self._connect_port,
                    ssl=ctx,
                    server_hostname=server_name,
                )
        except ssl.SSLError as exc:
            if "no application protocol" not in f"{exc.reason} {exc}".lower().replace("_", " "):
                raise
            raise NotHttp2(self._refused("nothing it accepts")) from exc
        if ctx is not None:
            ssl_object = connection.transport.get_extra_info("ssl_object")
            agreed = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
            if agreed != "h2":
                connection.closed = True
                connection.transport.abort()
                raise NotHttp2(self._refused(agreed or "nothing"))
        self.protocol = "h2"
        return connection

    def _refused(self, chose: str) -> str:
        return (
            f"{self._target} did not agree to HTTP/2 by ALPN (it chose {chose}); "
            'use http_version = "1.1" or "auto"'
        )

    def _add(self, connection: _Connection) -> None:
        if connection.closed:  # lost before it was added: it carries nothing, the waiting go elsewhere
            self.opened += 1
            self._dispatch()
            return
        if self._closed:
            connection.closed = True
            connection.transport.abort()
            return
        self.opened += 1
        self._open.append(connection)
        self._dispatch()

    def _count_failure(self, category: str) -> None:
        self._failures[category] = self._failures.get(category, 0) + 1

    def _open_one(self) -> None:
        assert self._loop is not None
        task = self._loop.create_task(self._opener())
        self._opening.add(task)
        task.add_done_callback(self._opening.discard)

    async def _opener(self) -> None:
        try:
            if self._address is None:  # the name did not resolve at the start: try again
                self._address, connection = await connect_first(
                    self._target, self._connect_host, self._connect_port, self._connect
                )
            else:
                connection = await self._connect(self._address)
        except OSError as exc:  # Unreachable and NotHttp2 included
            self._opening.discard(cast("asyncio.Task[None]", asyncio.current_task()))  # not opening now
            self._open_failed(_category(exc))
        else:
            self._opening.discard(cast("asyncio.Task[None]", asyncio.current_task()))
            self._add(connection)

    def _open_failed(self, category: str) -> None:
        """A connection could not be opened: the oldest waiting request fails with its category."""
        self._count_failure(category)
        if self._closed:
            return
        if self._waiting:
            req, intended, _ = self._waiting.popleft()
            self.in_flight -= 1
            self._on_error(req, intended, 0.0, self._clock(), category)
        self._dispatch()

    def _dispatch(self) -> None:
        """Send waiting requests on free streams; open connections for the rest (:mod:`agents.h2_pool`)."""
        if self._closed or self._dispatching:
            return
        self._dispatching = True
        try:
            waiting = self._waiting
            now = self._clock()
            while waiting:
                connection = take(self._open)
                if connection is None:
                    break
                req, intended, submitted = waiting.popleft()
                connection.send(req, intended, submitted, now)
            if self._busy and (self._open or self._opening):
                return  # short of CPU: the waiting wait (agents.h2_pool.busy)
            per = stream_limit(self._max_streams, None)
            for _ in range(
                to_open(len(waiting), self._open, len(self._opening), self._max_connections, MAX_OPENING, per)
            ):
                self._open_one()
        finally:
            self._dispatching = False

    def _retire(self, connection: _Connection) -> None:
        """Take no new streams on ``connection`` (a GOAWAY); close it once its streams are answered."""
        if connection in self._open:
            self._open.remove(connection)
        if not connection.streams:
            self._retiring.discard(connection)
            if not connection.closed:
                connection.closed = True
                connection.transport.abort()  # nothing outstanding; the server said GOAWAY
        else:
            self._retiring.add(connection)

    def _broken(self, connection: _Connection, category: str) -> None:
        """``connection`` broke (or could not be read): its streams fail with ``category``."""
        if connection in self._open:
            self._open.remove(connection)
        self._retiring.discard(connection)
        was_closed, connection.closed = connection.closed, True
        if not was_closed:
            connection.transport.abort()
        if self._closed:
            return
        now = self._clock()
        streams = list(connection.streams.values())
        connection.streams.clear()
        for stream in streams:
            self._failed(stream, category, now)
        self._dispatch()

    def _check_busy(self, now: float) -> None:
        """Whether the agent is short of CPU since the last sweep (agents.h2_pool.busy); when it no longer
        is, the waiting get the connections they were refused."""
        was = self._busy
        late = now - self._next_sweep if self._next_sweep else 0.0
        used = wall = 0.0
        if self._cpu_clock is not None:
            cpu, (then, cpu_then) = self._cpu_clock(), self._cpu
            self._cpu = (now, cpu)
            if then > 0.0:
                used, wall = cpu - cpu_then, now - then
        self._busy = busy(late, used, wall)
        if was and not self._busy:
            self._dispatch()

    def _close_idle(self, connection: _Connection) -> None:
        """Close ``connection``, idle for the idle expiry: GOAWAY (no error), then the socket."""
        connection.flush()
        connection.closed = True
        connection.transport.write(goaway(0, NO_ERROR))
        connection.transport.close()

    def _retry(self, streams: list[_Stream]) -> None:
        """``streams`` were not processed by the server: they wait again, ahead of the others, in their order
        (still in flight; the timeout counts from their first submit)."""
        self._waiting.extendleft((s.req, s.intended, s.submitted) for s in reversed(streams))

    def _failed(self, stream: _Stream, category: str, now: float) -> None:
        self.in_flight -= 1
        self._on_error(stream.req, stream.intended, stream.sent, now, category)

    # --- timeouts

    def _sweep(self) -> None:
        """Fail what was submitted ``timeout`` seconds ago or earlier (waiting or on a stream, which is then
        reset); reschedule itself."""
        assert self._loop is not None
        self._sweeper = self._loop.call_later(self._sweep_interval, self._sweep)
        now = self._clock()
        self._check_busy(now)
        self._next_sweep = now + self._sweep_interval
        for connection in stale(self._open, now, self._idle_expiry):
            self._open.remove(connection)
            self._close_idle(connection)
        cutoff = now - self._timeout
        waiting = self._waiting
        while waiting and waiting[0][2] <= cutoff:
            req, intended, _ = waiting.popleft()
            self.in_flight -= 1
            self._on_error(req, intended, 0.0, now, "timeout")
        for connection in [*self._open, *self._retiring]:
            # Every stream is looked at: they are in the order they were sent, not always the order they were
            # submitted in (a refused one, REFUSED_STREAM, goes again behind streams submitted after it).
            late = [sid for sid, stream in connection.streams.items() if stream.submitted <= cutoff]
            if not late:
                continue
            reset = []
            for sid in late:
                stream = connection.streams.pop(sid)
                connection.blocked.discard(sid)
                reset.append(rst_stream(sid, CANCEL))
                self._failed(stream, "timeout", now)
            if not connection.closed:
                connection.flush()  # a stream's HEADERS before its RST_STREAM
                connection.transport.write(b"".join(reset))
            if connection.going_away:
                self._retire(connection)  # closed if that was its last stream
