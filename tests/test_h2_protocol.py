"""The HTTP/2 engine on the protocol's less common paths, against a real HTTP/2 server built on ``h2``
(:mod:`tests.h2_server`) and scripted per test: what nginx never does (CONTINUATION, padding, interim
responses, trailers, PING, SETTINGS changed mid-connection, a low stream limit, resets, GOAWAY with streams
beyond it, frames a client must refuse, a body past our window, a late answer to a stream we reset).

Every request is reported exactly once; every load is bounded in count and in time (:func:`tests.loopback.run`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    PingAckReceived,
    RequestReceived,
    SettingsAcknowledged,
    StreamReset,
)
from h2.settings import SettingCodes
from hyperframe.frame import DataFrame, Frame, GoAwayFrame, HeadersFrame, PushPromiseFrame

from agents.engine import READ, READ_LIMIT
from agents.h2_engine import H2Engine
from agents.http_request import RequestHead
from loadgen.profile import RequestSpec
from tests.h2_server import Connection, H2Server, Request, ok
from tests.loopback import RecordingSink, get, reported, run, wait_for, with_engine

pytestmark = pytest.mark.integration


class ReadingSink(RecordingSink):
    """Records, with each response, the headers and body the engine's reply held (READ streams)."""

    def __init__(self) -> None:
        super().__init__()
        self.engine: H2Engine | None = None
        self.replies: list[tuple[list[tuple[bytes, bytes]], bytes]] = []

    def response(self, req: int, intended: float, sent: float, done: float, status: int) -> None:
        super().response(req, intended, sent, done, status)
        assert self.engine is not None
        self.replies.append((self.engine.reply.headers, self.engine.reply.body))


def engine(
    server: H2Server, sink: RecordingSink, requests: list[RequestSpec] | None = None, **options: object
) -> H2Engine:
    kwargs: dict[str, object] = {"timeout": 3.0, "max_connections": 4, **options}
    eng = H2Engine(server.url, requests or [get("/")], sink, **kwargs)  # type: ignore[arg-type]
    if isinstance(sink, ReadingSink):
        sink.engine = eng
    return eng


def reading(eng: H2Engine, path: str) -> int:
    """A request number whose response is read in full (READ)."""
    req = eng.reserve(1)
    eng.put(req, eng.prepare(RequestHead("GET", path, (("Host", "127.0.0.1"),), b"")), READ)
    return req


async def submit_all(eng: H2Engine, sink: RecordingSink, reqs: list[int], within: float = 3.0) -> None:
    before = len(sink.outcomes)
    now = eng._clock()
    for req in reqs:
        eng.submit(req, now)
    await wait_for(reported(sink, before + len(reqs)), within=within)
    assert eng.in_flight == 0


def acks(server: H2Server, n: int) -> Callable[[], bool]:
    """Whether the server has read ``n`` SETTINGS ACKs from the engine."""
    return lambda: len(server.events(SettingsAcknowledged)) == n


def flag(frame: Frame, *names: str) -> None:
    for name in names:
        frame.flags.add(name)


def encoded(connection: Connection, fields: list[tuple[bytes, bytes]]) -> bytes:
    """A header block from the connection's own HPACK encoder (its dynamic table kept in step)."""
    block: bytes = connection.h2.encoder.encode(fields)
    return block


# --- frames nginx does not send


def test_a_header_block_in_continuation_frames_and_padded_frames_are_read() -> None:
    big = [(f"x-big-{i}".encode(), bytes([97 + i % 26]) * 1000) for i in range(40)]  # ~40 KB: 3+ frames

    def answer(connection: Connection, request: Request) -> None:
        if request.path in (b"/big", b"/"):
            connection.respond(request.stream, 200, b"body", big, pad=30)
        elif request.path == b"/bighead":  # END_STREAM on the HEADERS frame, END_HEADERS on the last part
            connection.respond(request.stream, 204, b"", big)
        else:  # HEADERS padded and with priority fields, DATA padded: written by hand (h2 pads only DATA)
            head = HeadersFrame(request.stream, encoded(connection, [(b":status", b"201"), (b"x-a", b"1")]))
            flag(head, "END_HEADERS", "PADDED", "PRIORITY")
            head.pad_length, head.depends_on, head.stream_weight = 17, 0, 15
            data = DataFrame(request.stream, b"padded")
            flag(data, "END_STREAM", "PADDED")
            data.pad_length = 200
            connection.raw(head.serialize() + data.serialize())

    sink = ReadingSink()

    async def body() -> None:
        async with H2Server(answer) as server:
            eng = engine(server, sink)
            paths = ["/big", "/hand", "/big", "/hand", "/bighead"]
            reqs = [reading(eng, path) for path in paths]

            async def go(eng: H2Engine) -> None:
                for req in reqs:  # one after the other: later blocks refer to the table the first filled
                    await submit_all(eng, sink, [req])
                await submit_all(eng, sink, [0, 0, 0])  # and not READ (the status scanned)
                assert eng.opened == 1

            await with_engine(eng, go)

    run(body)
    assert sink.statuses == [200, 201, 200, 201, 204, 200, 200, 200]
    assert sink.replies[4] == (big, b"")
    for headers, data in sink.replies[0:3:2]:
        assert headers[: len(big)] == big
        assert data == b"body"
    for headers, data in sink.replies[1:4:2]:
        assert headers == [(b"x-a", b"1")]
        assert data == b"padded"


def test_interim_responses_and_trailers() -> None:
    def answer(connection: Connection, request: Request) -> None:
        sid = request.stream
        connection.h2.send_headers(sid, [(b":status", b"100")])
        connection.h2.send_headers(sid, [(b":status", b"103"), (b"link", b"</a.css>; rel=preload")])
        connection.respond(sid, 202, b"accepted", trailers=[(b"x-checksum", b"abc"), (b"x-status", b"500")])

    sink = ReadingSink()

    async def body() -> None:
        async with H2Server(answer) as server:
            eng = engine(server, sink)
            req = reading(eng, "/")
            await with_engine(eng, lambda eng: submit_all(eng, sink, [req, 0, 0, req]))

    run(body)
    assert sink.statuses == [202] * 4  # once each: not the interim 1xx, not at the trailers
    assert sink.replies[0] == ([], b"accepted")  # the final response's headers (it had none but :status)
    assert sink.replies[3] == ([], b"accepted")


def test_a_ping_is_answered_and_the_run_goes_on() -> None:
    def answer(connection: Connection, request: Request) -> None:
        connection.h2.ping(request.stream.to_bytes(8, "big"))
        connection.respond(request.stream, 200, b"ok")

    sink = RecordingSink()

    async def body() -> None:
        async with H2Server(answer) as server:

            async def go(eng: H2Engine) -> None:
                for _ in range(5):
                    await submit_all(eng, sink, [0])
                await wait_for(lambda: len(server.events(PingAckReceived)) == 5)

            await with_engine(engine(server, sink), go)
            acks = server.events(PingAckReceived)
            assert [e.ping_data for e in acks] == [i.to_bytes(8, "big") for i in (1, 3, 5, 7, 9)]  # type: ignore[attr-defined]

    run(body)
    assert sink.statuses == [200] * 5


def test_settings_changed_mid_connection_and_a_body_past_the_window_arrives_whole() -> None:
    """The server shrinks the stream window (below the body) and raises the frame size, then grows the window
    while a body is blocked on it: the body goes out in frames no larger than allowed, WINDOW_UPDATEs opening
    the windows both ways, and arrives whole. (The frame size is raised apart, and the next request waits for
    our ACK to be read: ``h2`` applies a larger frame size only from its next read after the ACK, although
    frames sent after the ACK may use it.)"""

    def on_event(connection: Connection, event: object) -> None:
        if isinstance(event, RequestReceived):
            path = dict(event.headers)[b":path"]  # type: ignore[arg-type]
            if path == b"/shrink":
                connection.h2.update_settings(
                    {SettingCodes.INITIAL_WINDOW_SIZE: 5_000, SettingCodes.MAX_FRAME_SIZE: 40_000}
                )
            elif path == b"/grow":
                connection.h2.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 1_000_000})

    sink = RecordingSink()
    body_size = 200_000
    requests = [
        get("/shrink"),
        RequestSpec("/post", method="POST", body=b"p" * body_size),
        RequestSpec("/grow", method="POST", body=b"g" * body_size),
        RequestSpec("/post", method="POST", body=b"q" * body_size),
    ]

    async def body() -> None:
        async with H2Server(ok, on_event) as server:

            async def go(eng: H2Engine) -> None:
                for req in range(4):
                    await submit_all(eng, sink, [req])
                    await wait_for(acks(server, 2 + (req >= 2)))  # the settings it changed, acknowledged
                assert eng.opened == 1

            await with_engine(engine(server, sink, requests), go)
            [connection] = server.connections
            sizes = {r.path: len(r.body) for r in connection.requests.values()}
            assert sizes == {b"/shrink": 0, b"/post": body_size, b"/grow": body_size}
            assert [r.body[:1] for r in connection.requests.values()] == [b"", b"p", b"g", b"q"]
            frames = [len(e.data) for e in connection.events if type(e).__name__ == "DataReceived"]
            assert max(frames) > 16_384  # the larger frame size was used...
            assert max(frames) <= 40_000  # ...and respected

    run(body)
    assert sink.statuses == [200] * 4


def test_the_servers_stream_limit_is_kept() -> None:
    def answer(connection: Connection, request: Request) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, lambda: connection.respond(request.stream, 200, b"ok"))

    sink = RecordingSink()

    async def body() -> None:
        async with H2Server(answer, settings={SettingCodes.MAX_CONCURRENT_STREAMS: 2}) as server:

            async def go(eng: H2Engine) -> None:
                await wait_for(lambda: bool(server.events(SettingsAcknowledged)))  # it read the limit
                await submit_all(eng, sink, [0] * 20)
                assert eng.opened == 1

            await with_engine(engine(server, sink, max_connections=1), go)
            [connection] = server.connections
            assert connection.peak_streams == 2
            assert len(connection.requests) == 20

    run(body)
    assert sink.statuses == [200] * 20


# --- streams reset, connections told to go away


def test_a_refused_stream_goes_again_and_is_reported_once() -> None:
    refused: list[int] = []

    def answer(connection: Connection, request: Request) -> None:
        if len(refused) < 3:
            refused.append(request.stream)
            connection.h2.reset_stream(request.stream, ErrorCodes.REFUSED_STREAM)
        else:
            connection.respond(request.stream, 200, b"ok")

    sink = RecordingSink()

    async def body() -> None:
        async with H2Server(answer) as server:
            await with_engine(engine(server, sink), lambda eng: submit_all(eng, sink, [0]))
            assert [r.stream for r in server.requests] == [1, 3, 5, 7]

    run(body)
    assert sink.statuses == [200]


def test_a_stream_reset_otherwise_is_a_reset() -> None:
    def answer(connection: Connection, request: Request) -> None:
        if request.stream == 1:
            connection.h2.reset_stream(request.stream, ErrorCodes.INTERNAL_ERROR)
        else:
            connection.respond(request.stream, 200, b"ok")

    sink = RecordingSink()

    async def body() -> None:
        async with H2Server(answer) as server:

            async def go(eng: H2Engine) -> None:
                await submit_all(eng, sink, [0])
                await submit_all(eng, sink, [0])
                await asyncio.sleep(0.05)  # nothing more is reported
                assert eng.opened == 1

            await with_engine(engine(server, sink), go)
            assert len(server.requests) == 2

    run(body)
    assert sink.categories == ["reset", ""]
    assert sink.statuses == [0, 200]


def test_streams_beyond_a_goaway_go_again_on_a_new_connection() -> None:
    """The first connection takes 6 streams (1..11), then says GOAWAY with last stream 5, answers 1, 3 and 5
    and closes: 7, 9 and 11 were not processed and go again on a second connection."""

    def answer(connection: Connection, request: Request) -> None:
        first = connection is connection.server.connections[0]
        if not first:
            connection.respond(request.stream, 200, b"second")
        elif len(connection.requests) == 6:
            connection.raw(GoAwayFrame(0, last_stream_id=5, error_code=0).serialize())
            for sid in (1, 3, 5):
                connection.respond(sid, 200, b"first")
            connection.transport.close()

    sink = RecordingSink()

    async def body() -> None:
        async with H2Server(answer) as server:

            async def go(eng: H2Engine) -> None:
                await submit_all(eng, sink, list(range(6)))
                await submit_all(eng, sink, [0])
                assert eng.opened == 2

            requests = [get(f"/{i}") for i in range(6)]
            await with_engine(engine(server, sink, requests), go)
            assert len(server.connections) == 2
            second = server.connections[1]
            assert sorted(r.path for r in second.requests.values()) == [b"/0", b"/3", b"/4", b"/5"]

    run(body)
    assert sorted(o.req for o in sink.outcomes) == [0, 0, 1, 2, 3, 4, 5]
    assert sink.statuses == [200] * 7


@pytest.mark.parametrize("bad", ["push_promise", "garbage"])
def test_frames_a_client_must_refuse_fail_the_connection_as_protocol(bad: str) -> None:
    def answer(connection: Connection, request: Request) -> None:
        if connection is not connection.server.connections[0]:
            connection.respond(request.stream, 200, b"ok")
        elif len(connection.requests) == 3:
            if bad == "push_promise":  # the server pushes although we said SETTINGS_ENABLE_PUSH 0
                block = encoded(connection, [(b":method", b"GET"), (b":path", b"/pushed")])
                promise = PushPromiseFrame(request.stream, promised_stream_id=2, data=block)
                promise.flags.add("END_HEADERS")
                connection.raw(promise.serialize())
            else:
                connection.raw(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    sink = RecordingSink()

    async def body() -> None:
        async with H2Server(answer) as server:

            async def go(eng: H2Engine) -> None:
                await submit_all(eng, sink, [0, 0, 0])
                await submit_all(eng, sink, [0, 0])
                assert eng.opened == 2

            await with_engine(engine(server, sink), go)
            first = server.connections[0]
            await wait_for(lambda: first.lost)
            goaway = [e for e in first.events if isinstance(e, ConnectionTerminated)]
            assert [e.error_code for e in goaway] == [ErrorCodes.PROTOCOL_ERROR]

    run(body)
    assert sink.categories == ["protocol"] * 3 + [""] * 2
    assert sink.statuses[3:] == [200, 200]


def test_a_response_without_status_is_protocol() -> None:
    def answer(connection: Connection, request: Request) -> None:
        if request.stream == 1:
            head = HeadersFrame(1, encoded(connection, [(b"content-length", b"0")]))
            flag(head, "END_HEADERS", "END_STREAM")
            connection.raw(head.serialize())
        else:
            connection.respond(request.stream, 204)

    sink = RecordingSink()

    async def body() -> None:
        async with H2Server(answer) as server:

            async def go(eng: H2Engine) -> None:
                await submit_all(eng, sink, [0])
                await submit_all(eng, sink, [0])

            await with_engine(engine(server, sink), go)

    run(body)
    assert sink.categories == ["protocol", ""]
    assert sink.statuses == [0, 204]


# --- flow control and timeouts


def test_a_body_past_our_window_is_read_whole() -> None:
    size = 20 * 1024 * 1024  # beyond the engine's 16 MiB windows: needs its WINDOW_UPDATEs
    payload = bytes(range(256)) * (size // 256)

    def answer(connection: Connection, request: Request) -> None:
        connection.respond(request.stream, 200, payload)

    sink = ReadingSink()

    async def body() -> None:
        async with H2Server(answer) as server:
            eng = engine(server, sink, timeout=4.0)
            req = reading(eng, "/")
            await with_engine(eng, lambda eng: submit_all(eng, sink, [req, 0], within=4.0))

    run(body)
    assert sink.statuses == [200, 200]
    assert sink.replies[0][1] == payload[:READ_LIMIT]  # kept in order; the rest read (END_STREAM came last)


def test_a_stream_that_times_out_is_cancelled_and_its_late_answer_keeps_the_table_in_step() -> None:
    """The server holds the first request until the engine's reset (CANCEL) arrives, then answers it anyway:
    a head that adds ``:status 299`` to the dynamic table. The next answer refers to that entry, so it is read
    right only if the late block was decoded."""

    def on_event(connection: Connection, event: object) -> None:
        if isinstance(event, StreamReset):
            late = HeadersFrame(
                event.stream_id, encoded(connection, [(b":status", b"299"), (b"x-late", b"1")])
            )
            late.flags.add("END_HEADERS")
            data = DataFrame(event.stream_id, b"late")
            data.flags.add("END_STREAM")
            connection.raw(late.serialize() + data.serialize())

    def answer(connection: Connection, request: Request) -> None:
        if request.stream != 1:
            connection.respond(request.stream, 299, b"ok", [(b"x-late", b"1")])  # indexed: dynamic entries

    sink = RecordingSink()

    async def body() -> None:
        async with H2Server(answer, on_event) as server:

            async def go(eng: H2Engine) -> None:
                eng.submit(0, eng._clock())
                await wait_for(reported(sink, 1))
                await wait_for(lambda: bool(server.events(StreamReset)))
                await asyncio.sleep(0.05)  # the late answer is read
                await submit_all(eng, sink, [0, 0])
                assert eng.opened == 1

            await with_engine(engine(server, sink, timeout=0.3), go)
            [reset] = server.events(StreamReset)
            assert (reset.stream_id, reset.error_code) == (1, ErrorCodes.CANCEL)  # type: ignore[attr-defined]
            assert not server.connections[0].lost or len(server.connections) == 1

    run(body)
    assert sink.categories == ["timeout", "", ""]
    assert sink.statuses == [0, 299, 299]


def test_a_connection_told_to_go_away_is_closed_once_its_last_stream_timed_out() -> None:
    """GOAWAY keeps stream 1, which is never answered: when it times out the connection carries nothing and
    takes nothing new, so the engine closes it (it does once its streams are answered)."""

    def answer(connection: Connection, request: Request) -> None:
        if connection is connection.server.connections[0]:
            connection.raw(GoAwayFrame(0, last_stream_id=request.stream, error_code=0).serialize())
        else:
            connection.respond(request.stream, 200, b"ok")

    sink = RecordingSink()

    async def body() -> None:
        async with H2Server(answer) as server:

            async def go(eng: H2Engine) -> None:
                eng.submit(0, eng._clock())
                await wait_for(reported(sink, 1))
                await wait_for(lambda: server.connections[0].lost, within=1.0)
                await submit_all(eng, sink, [0])  # on a new connection

            await with_engine(engine(server, sink, timeout=0.3), go)

    run(body)
    assert sink.categories == ["timeout", ""]


def test_a_refused_stream_sent_again_times_out_from_its_first_submit() -> None:
    """A is refused once B is on the wire, and goes again after B on the same connection; neither is answered.
    A times out ``timeout`` after it was first submitted, not once B (submitted later) does."""
    timeout = 0.5

    def answer(connection: Connection, request: Request) -> None:
        if request.path == b"/b":
            connection.h2.reset_stream(1, ErrorCodes.REFUSED_STREAM)

    sink = RecordingSink()

    async def body() -> None:
        async with H2Server(answer) as server:

            async def go(eng: H2Engine) -> None:
                eng.submit(0, eng._clock())
                await asyncio.sleep(0.25)
                eng.submit(1, eng._clock())
                await wait_for(reported(sink, 2), within=2.0)
                assert [r.stream for r in server.requests] == [1, 3, 5]

            await with_engine(engine(server, sink, [get("/a"), get("/b")], timeout=timeout), go)

    run(body)
    assert sink.categories == ["timeout", "timeout"]
    a, b = sink.outcomes
    assert (a.req, b.req) == (0, 1)
    assert a.done - a.intended < timeout + 0.15
