"""One HTTP/1.1 keep-alive connection of the httpx engine, driven through ``h11`` from protocol callbacks.

The direct (no proxy) path of :mod:`agents.httpx_engine`. It is a plain ``asyncio.Protocol``
(:class:`agents.connections.ProtocolConnection`, like the fast engine's connection), with h11's state machine
instead of httptools: :meth:`H11Connection.send` frames the
request with h11 and writes it, and ``data_received`` feeds h11 and reads events until it needs more data or
the response has ended. So a request allocates nothing that outlives it: no task, coroutine or future per
request. (The earlier build parked a coroutine per connection on a future; with a thousand requests in
flight those objects were always young, the collector's youngest generation held thousands of them, and its
collections took 5-12 ms each: send lag.)

What h11 does per exchange stays: it frames the request, parses and checks the response, knows a HEAD response
has no body, reads a body delimited by the connection closing, skips 1xx responses, and says whether the
connection can be reused (``Connection: close``, HTTP/1.0); if not, it is closed after the response and the
pool opens another when pending work needs one. A 101 (switching protocols) is reported as the response and
the connection is closed. Errors are the engine's categories: ``protocol`` (h11 refused the response, or its
head is longer than ``max_head_bytes``) and ``reset`` (the connection closed before the response ended).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import h11

from agents.connections import ProtocolConnection, ProtocolConnections
from agents.engine import READ, READ_LIMIT, Reply

__all__ = ["H11Connection"]

END_OF_MESSAGE = h11.EndOfMessage()


class H11Connection(ProtocolConnection):
    """A keep-alive connection read by h11; ``req`` is -1 when it carries none. Pooled by
    :class:`agents.pool.Pool`."""

    __slots__ = (
        "body",
        "flags",
        "h11",
        "headers",
        "kept",
        "on_response",
        "reading",
        "reply",
        "requests",
        "status",
    )

    def __init__(
        self,
        engine: ProtocolConnections[H11Connection],
        requests: Sequence[tuple[h11.Request, bytes]],
        on_response: Callable[[int, float, float, float, int], None],
        max_head_bytes: int,
        flags: bytearray | None = None,
        reply: Reply | None = None,
    ) -> None:
        super().__init__(engine)
        self.requests = requests
        self.on_response = on_response
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=max_head_bytes)
        self.status = 0
        # A flow step's response is read in full (flag READ) into ``reply``; others are read and dropped.
        self.flags = flags
        self.reply = reply
        self.reading = False
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.kept = 0  # bytes of the body kept so far (at most READ_LIMIT)

    def send(self, req: int, intended: float, submitted: float, now: float) -> None:
        self.req = req
        self.intended = intended
        self.submitted = submitted
        self.sent = now
        self.status = 0
        if self.flags is not None:
            self.reading = self.flags[req] & READ != 0
            self.body = []
            self.kept = 0
        request, body = self.requests[req]
        h = self.h11
        data = h.send(request)
        if body:
            data += h.send(h11.Data(data=body))
        data += h.send(END_OF_MESSAGE)  # b"" for a body with a Content-Length
        self.transport.write(data)  # headers and body in one write

    # asyncio callbacks

    def data_received(self, data: bytes) -> None:
        if self.req < 0:
            self.engine.retire(self)  # an answer to nothing (e.g. 408 before closing): do not reuse it
            return
        self._receive(data)

    def eof_received(self) -> bool:
        if self.req >= 0:
            self._receive(b"")  # the end of a body delimited by closing, or a response cut short
        return False  # close the transport

    # the response

    def _receive(self, data: bytes) -> None:
        h = self.h11
        try:
            h.receive_data(data)
            while True:
                event = h.next_event()
                if event is h11.NEED_DATA:
                    return
                kind = type(event)
                if kind is h11.Response or kind is h11.InformationalResponse:
                    self.status = event.status_code  # type: ignore[union-attr]
                    if self.reading:
                        self.headers = list(event.headers)  # type: ignore[union-attr]
                elif kind is h11.Data and self.reading and (room := READ_LIMIT - self.kept) > 0:
                    kept = bytes(event.data[:room])  # type: ignore[union-attr]
                    self.body.append(kept)
                    self.kept += len(kept)
                elif kind is h11.EndOfMessage or event is h11.PAUSED:
                    # PAUSED: the server switched protocols (101); the connection is not reused
                    self._complete()
                    return
                elif kind is h11.ConnectionClosed:
                    self.engine.broken(self, "reset")
                    return
                # Data is read and dropped; an InformationalResponse (1xx) is followed by the real one.
        except h11.RemoteProtocolError as exc:
            # h11 calls an early close a protocol error; it is the connection breaking, as in the fast engine.
            text = str(exc)
            self.engine.broken(self, "reset" if not data or "peer closed" in text else "protocol")

    def _complete(self) -> None:
        done = self.clock()
        req = self.req
        self.req = -1
        pool = self.pool
        pool.came_back(self.sent, done)
        h = self.h11
        # Released before reporting (see agents.pool), so a sink that submits from its callback reuses it.
        if h.our_state is h11.DONE and h.their_state is h11.DONE:
            h.start_next_cycle()
            if pool.pending:
                self.engine.backlog(self)  # the oldest pending request goes out at the flush
            else:
                self.idle_since = done
                pool.idle.append(self)
        else:
            self.engine.retire(self)  # Connection: close, HTTP/1.0, or a switch of protocols
        if self.reading:
            reply = self.reply
            assert reply is not None
            reply.headers = self.headers
            reply.body = b"".join(self.body)
        self.on_response(req, self.intended, self.sent, done, self.status)
        due = pool.due
        if done >= due.at:
            due.release()  # arrivals due meanwhile go out now, not after the rest of this loop iteration
