"""The default engine: HTTP/1.1 keep-alive on raw ``asyncio.Protocol`` connections, parsed by httptools.

This is the hot path of the product (the goal is 100,000+ requests/s on one core with uvloop), so it allocates
as little as it can per request:

- the bytes of every request are built once, in the constructor; ``submit`` writes a prebuilt ``bytes``;
- a response is parsed by httptools' C parser with only ``on_message_complete`` defined (no body or header
  callbacks, so no per-response Python objects beyond the read buffer itself);
- there is no timer per request: a sweep every few tens of milliseconds fails what is older than the timeout;
- there is no task per request: a task exists only while a connection is being opened.

The pool policy (LIFO idle stack, FIFO pending, at most ``MAX_OPENING`` connections opening, a timeout sweep)
is :class:`agents.pool.Pool`'s, and the engine around it (start, sweep, drain, close) is
:class:`agents.pooled_engine.PooledEngine`'s; this module is the wire protocol under them. ``submit`` *is* the
pool's (bound by the base, no wrapper), and the response callback inlines :meth:`~agents.pool.Pool.release`
(under a backlog it defers to :meth:`~agents.pool.Pool.flush`, once per loop iteration). One request
is outstanding per connection (no pipelining); if the server said it will not keep the connection alive, it
is closed and replaced when pending work needs it.

Limitations: a response that is delimited only by the server closing the connection (no Content-Length, not
chunked) is reported as ``reset``, because httptools cannot be told about the end of the stream; upgrades
(101) are reported as responses and the connection is then closed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from httptools import HttpParserCallbackError, HttpParserError, HttpParserUpgrade, HttpResponseParser

from agents.connections import ProtocolConnection, ProtocolConnections
from agents.engine import HEAD, READ_LIMIT
from agents.http_request import RequestHead, build_request, encode_head, host_header, request_head
from agents.pooled_engine import PooledEngine
from loadgen.profile import RequestSpec

__all__ = ["FastEngine", "build_request"]

# --- one connection


class _Connection(ProtocolConnection):
    """A keep-alive connection read by httptools; ``req`` is -1 when it carries none."""

    __slots__ = ("due", "flags", "main_parser", "on_response", "parser", "reply", "special", "wire")

    def __init__(self, engine: FastEngine, connections: ProtocolConnections[_Connection]) -> None:
        super().__init__(connections)
        self.due = engine.due
        self.on_response = engine._on_response
        self.wire = engine._wire
        self.flags = engine._flags
        self.special = engine._special
        self.reply = engine.reply
        self.main_parser = HttpResponseParser(self)
        self.parser = self.main_parser

    def send(self, req: int, intended: float, submitted: float, now: float) -> None:
        self.req = req
        self.intended = intended
        self.submitted = submitted
        self.sent = now
        if self.special:
            # A response to HEAD announces a body it does not carry, which httptools cannot be told; a
            # throwaway parser that ends the exchange with the headers reads it instead. A response whose
            # headers and body a flow step reads is parsed with callbacks that keep them.
            flag = self.flags[req]
            if not flag:
                self.parser = self.main_parser
            elif flag == HEAD:
                self.parser = HttpResponseParser(_HeadResponse(self))
            else:
                self.parser = HttpResponseParser(_FullResponse(self, flag & HEAD != 0))
        self.transport.write(self.wire[req])

    # asyncio callbacks

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
        super().connection_lost(exc)  # nothing happens if we closed it ourselves
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


class _FullResponse:
    """The parser callbacks for a response whose headers and body are handed over (in the engine's
    :class:`~agents.engine.Reply`, just before the sink hears of it)."""

    __slots__ = ("body", "connection", "done", "head", "headers", "room")

    def __init__(self, connection: _Connection, head: bool) -> None:
        self.connection = connection
        self.head = head
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.room = READ_LIMIT
        self.done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        if self.room > 0:
            kept = body[: self.room]
            self.body.append(kept)
            self.room -= len(kept)

    def on_headers_complete(self) -> None:
        if self.head:
            self.on_message_complete()

    def on_message_complete(self) -> None:
        if self.done:
            return
        connection = self.connection
        if connection.parser.get_status_code() < 200:
            self.headers, self.body = [], []  # an interim response; the real one follows
            connection.on_message_complete()
            return
        self.done = True
        reply = connection.reply
        reply.headers = self.headers
        reply.body = b"".join(self.body)
        connection.on_message_complete()


# --- the engine


class FastEngine(PooledEngine[_Connection]):
    """HTTP/1.1 keep-alive engine; see the module docstring. Implements :class:`agents.engine.Engine`."""

    def _prepare(self, requests: Sequence[RequestSpec]) -> None:
        self._host_header = host = host_header(self._scheme, self._host, self._port)
        self._wire: list[bytes] = [build_request(spec, host, self._prefix) for spec in requests]
        self._flags = bytearray(HEAD if spec.method.upper() == "HEAD" else 0 for spec in requests)
        self._special = any(self._flags)

    # --- requests made while the run goes on (flow steps); see agents.engine.Slots

    def reserve(self, n: int) -> int:
        assert self._io is None, "slots are reserved before the engine starts"
        base = len(self._wire)
        self._wire.extend([b""] * n)
        self._flags.extend(bytes(n))
        self._special = True
        return base

    def prepare(self, head: RequestHead) -> bytes:
        return encode_head(head)

    def prepared(self, req: int) -> bytes:
        return self._wire[req]

    def head_of(self, spec: RequestSpec) -> RequestHead:
        return request_head(spec, self._host_header, self._prefix)

    def put(self, req: int, prepared: object, flags: int) -> None:
        self._wire[req] = cast(bytes, prepared)
        self._flags[req] = flags

    def _connections(self) -> ProtocolConnections[_Connection]:
        return self._direct(lambda owner: _Connection(self, owner))
