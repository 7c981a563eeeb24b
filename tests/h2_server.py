"""A real HTTP/2 server for the engine's protocol tests (:mod:`tests.test_h2_protocol`), built on ``h2``'s
state machine (an implementation independent of the engine's own codec) over asyncio on 127.0.0.1.

Each test scripts it: ``answer(connection, request)`` is called when a request has arrived whole, and
``on_event(connection, event)`` (optional) sees every ``h2`` event first, for what a test does mid-stream
(change SETTINGS, reset, send GOAWAY). :meth:`Connection.respond` sends a response under flow control (a body
larger than the window waits for the client's WINDOW_UPDATEs); :meth:`Connection.raw` writes frames ``h2``
would refuse to send (padded HEADERS, a PUSH_PROMISE, a late answer to a reset stream), its header blocks
encoded by the connection's own HPACK encoder so that the dynamic table stays in step. What each connection
saw (every event, the most streams open at once) is kept for the test to check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    DataReceived,
    Event,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import StreamClosedError
from h2.settings import SettingCodes, Settings

Fields = Sequence[tuple[bytes, bytes]]


@dataclass
class Request:
    stream: int
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""

    @property
    def path(self) -> bytes:
        return dict(self.headers)[b":path"]


@dataclass
class _Outgoing:
    body: memoryview
    trailers: Fields | None
    pad: int | None


Answer = Callable[["Connection", Request], None]
OnEvent = Callable[["Connection", Event], None]


class Connection(asyncio.Protocol):
    """One server-side HTTP/2 connection."""

    transport: asyncio.Transport

    def __init__(self, server: H2Server) -> None:
        self.server = server
        self.h2 = H2Connection(H2Configuration(client_side=False, header_encoding=None))
        if server.settings:
            self.h2.local_settings = Settings(client=False, initial_values=dict(server.settings))
        self.events: list[Event] = []
        self.requests: dict[int, Request] = {}
        self._outgoing: dict[int, _Outgoing] = {}
        self.peak_streams = 0
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.append(self)
        self.h2.initiate_connection()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True

    def data_received(self, data: bytes) -> None:
        for event in self.h2.receive_data(data):
            self.events.append(event)
            if self.server.on_event is not None:
                self.server.on_event(self, event)
            if isinstance(event, RequestReceived):
                self.requests[event.stream_id] = Request(event.stream_id, list(event.headers))  # type: ignore[arg-type]
                self.peak_streams = max(self.peak_streams, self.h2.open_inbound_streams)
            elif isinstance(event, DataReceived):
                request = self.requests[event.stream_id]
                request.body += event.data
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, StreamEnded):
                self.server.answer(self, self.requests[event.stream_id])
            elif isinstance(event, StreamReset):
                self._outgoing.pop(event.stream_id, None)
            elif isinstance(event, WindowUpdated | RemoteSettingsChanged):
                self._pump()
            self.flush()
        self.flush()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.transport.is_closing():
            self.transport.write(data)

    def respond(
        self,
        stream: int,
        status: int | bytes = 200,
        body: bytes = b"",
        headers: Fields = (),
        *,
        trailers: Fields | None = None,
        pad: int | None = None,
    ) -> None:
        """Send a response: its head, then its body (DATA frames padded with ``pad`` bytes, as the windows
        allow), then ``trailers`` if given."""
        code = status if isinstance(status, bytes) else str(status).encode()
        end = not body and trailers is None
        self.h2.send_headers(stream, [(b":status", code), *headers], end_stream=end)
        if not end:
            self._outgoing[stream] = _Outgoing(memoryview(body), trailers, pad)
            self._pump()
        self.flush()

    def _pump(self) -> None:
        for stream, out in list(self._outgoing.items()):
            try:
                while out.body:
                    room = self.h2.local_flow_control_window(stream)
                    size = self.h2.max_outbound_frame_size - (out.pad + 1 if out.pad is not None else 0)
                    n = min(room - (out.pad + 1 if out.pad is not None else 0), size, len(out.body))
                    if n <= 0:
                        break
                    chunk, out.body = out.body[:n], out.body[n:]  # memoryviews: no copy of the rest
                    last = not out.body and out.trailers is None
                    self.h2.send_data(stream, chunk, end_stream=last, pad_length=out.pad)
                if out.body:
                    continue
                if out.trailers is not None:
                    self.h2.send_headers(stream, out.trailers, end_stream=True)
            except StreamClosedError:
                pass
            del self._outgoing[stream]

    def raw(self, data: bytes) -> None:
        """Write ``data`` (serialized frames) after what ``h2`` has to send."""
        self.flush()
        self.transport.write(data)


@dataclass
class H2Server:
    answer: Answer
    on_event: OnEvent | None = None
    settings: Mapping[SettingCodes, int] = field(default_factory=dict)
    connections: list[Connection] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[Request]:
        return [r for c in self.connections for r in c.requests.values()]

    def events(self, kind: type[Event]) -> list[Event]:
        return [e for c in self.connections for e in c.events if isinstance(e, kind)]

    async def __aenter__(self) -> H2Server:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: Connection(self), "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for connection in self.connections:
            connection.transport.abort()
        await self._server.wait_closed()


def ok(connection: Connection, request: Request) -> None:
    """Answer 200 with the request's body length as the body."""
    connection.respond(request.stream, 200, str(len(request.body)).encode())
