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

User journeys run on it (:class:`agents.engine.Slots`): request numbers past the profile's own take the
header block and body :meth:`H2Engine.put` gives them. A stream flagged :data:`agents.engine.READ` keeps its
response headers (names in lower case, as HTTP/2 sends them; no pseudo-headers) and its body's first
:data:`agents.engine.READ_LIMIT` bytes, handed over in :attr:`H2Engine.reply` just before the sink hears of
it; the rest of the body is read and dropped. Other streams keep nothing (no per-stream list). A response to
HEAD needs nothing special (its HEADERS frame ends the stream).

Not supported yet: idle connections are not closed by the engine (the server's GOAWAY ends them), and
connections are opened whatever the agent's CPU (the HTTP/1.1 pool's "Growth" check is not applied).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import cast

from h2.config import H2Configuration
from h2.connection import ConnectionInputs, ConnectionState, H2Connection, H2ConnectionStateMachine
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import H2Error
from h2.settings import SettingCodes

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
)
from agents.h2_pool import stream_limit, take, to_open
from agents.http_request import RequestHead, host_header, request_head, split_target
from agents.tls import client_context
from loadgen.endpoint import Tls
from loadgen.profile import RequestSpec

SWEEP_INTERVAL = 0.05
WINDOW = 1 << 24
"""Our receive window, per stream and for the connection: large, so that bodies do not wait on our
WINDOW_UPDATEs (``h2`` sends them as the data is acknowledged)."""
DROPPED = frozenset({"host", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"})
"""Headers HTTP/2 does not carry (``Host`` becomes ``:authority``)."""

Headers = list[tuple[bytes, bytes]]


_KEEP_OPEN_AFTER_GOAWAY = {
    **H2ConnectionStateMachine._transitions,
    (ConnectionState.CLIENT_OPEN, ConnectionInputs.RECV_GOAWAY): (None, ConnectionState.CLIENT_OPEN),
}
"""h2's connection states, but for one change: a GOAWAY received leaves the connection open for the
frames that follow it (h2 would close it and refuse those, the answers to the streams the GOAWAY kept); the
engine opens no new stream on it and closes it once they are answered."""


class NotHttp2(ConnectionError):
    """The server did not agree to HTTP/2 by ALPN."""


class _Stream:
    __slots__ = ("body", "intended", "req", "sent", "status", "submitted")

    def __init__(self, req: int, intended: float, submitted: float, sent: float, body: bytes) -> None:
        self.req = req
        self.intended = intended
        self.submitted = submitted
        self.sent = sent
        self.status = 0
        self.body = body  # what is left to send (flow control)


class _ReadStream(_Stream):
    """A stream whose response is handed over (a :data:`agents.engine.READ` request): its headers, and its
    body up to :data:`agents.engine.READ_LIMIT` bytes."""

    __slots__ = ("chunks", "headers", "room")

    def __init__(self, req: int, intended: float, submitted: float, sent: float, body: bytes) -> None:
        super().__init__(req, intended, submitted, sent, body)
        self.headers: Headers = []
        self.chunks: list[bytes] = []
        self.room = READ_LIMIT

    def keep(self, data: bytes) -> None:
        if self.room > 0:
            kept = data[: self.room]
            self.chunks.append(kept)
            self.room -= len(kept)


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection and its streams."""

    transport: asyncio.Transport

    def __init__(self, engine: H2Engine) -> None:
        self.engine = engine
        self.h2 = H2Connection(engine._config)
        self.h2.state_machine._transitions = _KEEP_OPEN_AFTER_GOAWAY
        self.streams: dict[int, _Stream] = {}
        self.peer_max: int | None = None
        self.limit = stream_limit(engine._max_streams, None)
        self.closed = False
        self.going_away = False
        self.reads = engine._reads
        """Some request may be READ (numbers were reserved): its streams are looked at. Without, a stream
        costs only this flag's checks."""

    @property
    def active(self) -> int:
        return len(self.streams)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.engine._made.add(self)
        h2 = self.h2
        h2.initiate_connection()
        h2.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: WINDOW, SettingCodes.ENABLE_PUSH: 0})
        h2.increment_flow_control_window(WINDOW - 65535)
        self.transport.write(h2.data_to_send())

    def send(self, req: int, intended: float, submitted: float, now: float) -> None:
        h2 = self.h2
        engine = self.engine
        sid = h2.get_next_available_stream_id()
        headers, body = engine._wire[req]
        h2.send_headers(sid, headers, end_stream=not body)
        if self.reads and engine._flags[req] & READ:
            stream: _Stream = _ReadStream(req, intended, submitted, now, body)
        else:
            stream = _Stream(req, intended, submitted, now, body)
        self.streams[sid] = stream
        if body:
            self._send_body(sid, stream)
        self.transport.write(h2.data_to_send())

    def _send_body(self, sid: int, stream: _Stream) -> None:
        h2 = self.h2
        while stream.body:
            n = min(h2.local_flow_control_window(sid), h2.max_outbound_frame_size, len(stream.body))
            if n <= 0:
                return  # the rest goes when the server opens its window
            chunk, stream.body = stream.body[:n], stream.body[n:]
            h2.send_data(sid, chunk, end_stream=not stream.body)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except H2Error as exc:
            # h2 takes no frame after a GOAWAY (its connection is closed then), not even the answers to the
            # streams the GOAWAY kept: those streams, and any answer in the same read, fail as reset.
            after_goaway = self.going_away or "ConnectionState.CLOSED" in str(exc)
            self.engine._broken(self, "reset" if after_goaway else "protocol")
            return
        engine = self.engine
        done = engine._clock()
        answered = False
        for event in events:
            if isinstance(event, ResponseReceived):
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    status = _status(event.headers)
                    if status >= 200 or status == 0:
                        stream.status = status
                        if self.reads and isinstance(stream, _ReadStream):
                            stream.headers = [(k, v) for k, v in event.headers if k[:1] != b":"]
                if event.stream_ended is not None:
                    answered |= self._ended(event.stream_id, done)
            elif isinstance(event, DataReceived):
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                if self.reads:
                    stream = self.streams.get(event.stream_id)
                    if isinstance(stream, _ReadStream) and event.data:
                        stream.keep(event.data)
                if event.stream_ended is not None:
                    answered |= self._ended(event.stream_id, done)
            elif isinstance(event, StreamEnded):
                answered |= self._ended(event.stream_id, done)
            elif isinstance(event, StreamReset):
                stream = self.streams.pop(event.stream_id, None)
                if stream is not None:
                    engine._failed(stream, "reset", done)
                    answered = True
            elif isinstance(event, RemoteSettingsChanged):
                self.peer_max = self.h2.remote_settings.max_concurrent_streams
                self.limit = stream_limit(engine._max_streams, self.peer_max)
            elif isinstance(event, WindowUpdated):
                for sid, stream in list(self.streams.items()):
                    if stream.body:
                        self._send_body(sid, stream)
            elif isinstance(event, ConnectionTerminated):
                self.going_away = True
                last = event.last_stream_id if event.last_stream_id is not None else 0
                for sid in [sid for sid in self.streams if sid > last]:
                    engine._failed(self.streams.pop(sid), "reset", done)
                    answered = True
        out = self.h2.data_to_send()
        if out and not self.closed:
            self.transport.write(out)
        if self.going_away:
            engine._retire(self)
        if answered or self.limit > 0:
            engine._dispatch()
        due = engine.due
        if answered and done >= due.at:
            due.release()

    def _ended(self, sid: int, done: float) -> bool:
        stream = self.streams.pop(sid, None)
        if stream is None:
            return False
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
    """The HTTP/2 header block and body of ``head`` (see :func:`agents.http_request.request_head`): the
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
    """HTTP/2 engine; see the module docstring. Implements :class:`agents.engine.Engine` and
    :class:`agents.engine.Slots`."""

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
        self._config = H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            validate_inbound_headers=False,
        )
        self._on_response = sink.response
        self._on_error = sink.error
        self._timeout = timeout
        self._max_connections = max_connections
        self._max_streams = max_streams
        self._clock = clock
        self.due = Due()
        self.in_flight = 0
        self.opened = 0
        self._failures: dict[str, int] = {}
        self._open: list[_Connection] = []
        self._retiring: set[_Connection] = set()  # after a GOAWAY, until their streams are answered
        self._opening: set[asyncio.Task[None]] = set()
        self._made: set[_Connection] = set()
        """Every connection with a transport, until it is lost: also one whose opener was cancelled after the
        handshake (create_connection then closes the socket, not the TLS transport), so aclose cuts them
        all."""
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
        self._wire.extend([([], b"")] * n)
        self._flags.extend(bytes(n))
        self._reads = True
        return base

    def head_of(self, spec: RequestSpec) -> RequestHead:
        return request_head(spec, self._authority, self._prefix)

    def prepare(self, head: RequestHead) -> tuple[Headers, bytes]:
        return h2_headers(head, self._scheme, self._authority)

    def prepared(self, req: int) -> tuple[Headers, bytes]:
        return self._wire[req]

    def put(self, req: int, prepared: object, flags: int) -> None:
        self._wire[req] = cast(tuple[Headers, bytes], prepared)
        self._flags[req] = flags

    async def drain(self, deadline: float) -> None:
        while self.in_flight:
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
        cutoff = now - self._timeout
        waiting = self._waiting
        while waiting and waiting[0][2] <= cutoff:
            req, intended, _ = waiting.popleft()
            self.in_flight -= 1
            self._on_error(req, intended, 0.0, now, "timeout")
        for connection in [*self._open, *self._retiring]:
            late = [sid for sid, s in connection.streams.items() if s.submitted <= cutoff]
            if not late:
                continue
            for sid in late:
                stream = connection.streams.pop(sid)
                with contextlib.suppress(H2Error):  # a stream h2 already closed
                    connection.h2.reset_stream(sid, ErrorCodes.CANCEL)
                self._failed(stream, "timeout", now)
            if not connection.closed:
                connection.transport.write(connection.h2.data_to_send())
