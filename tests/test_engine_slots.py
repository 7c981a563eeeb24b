"""Both engines' slots (:class:`agents.engine.Slots`): requests made while the run goes on, and responses read
in full for the flow steps that need them, against real servers on loopback."""

from __future__ import annotations

import asyncio
import time

import pytest

from agents.engine import HEAD, READ
from agents.http_request import RequestHead
from loadgen.profile import RequestSpec
from tests.loopback import Received, RecordingSink, ScriptedServer, get, reply, run, with_engine
from tests.test_engines import AnyEngine, EngineClass, engine_for, make

pytestmark = pytest.mark.integration

__all__ = ["make"]


class ReadingSink(RecordingSink):
    """Records, with each response, what the engine's reply held when the sink heard of it."""

    def __init__(self) -> None:
        super().__init__()
        self.engine: AnyEngine | None = None
        self.replies: list[tuple[int, list[tuple[bytes, bytes]], bytes]] = []

    def response(self, req: int, intended: float, sent: float, done: float, status: int) -> None:
        super().response(req, intended, sent, done, status)
        assert self.engine is not None
        reply = self.engine.reply
        self.replies.append((req, list(reply.headers), reply.body))


def script(transport: asyncio.Transport, received: Received) -> None:
    if received.url == b"/chunked":
        transport.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nSet-Cookie: a=1\r\n\r\n")
        transport.write(b"3\r\nabc\r\n")
        asyncio.get_running_loop().call_later(0.005, transport.write, b"2\r\nde\r\n0\r\n\r\n")
    elif received.method == b"HEAD":
        transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nX-Head: 1\r\n\r\n")
    else:
        echo = received.method + b" " + received.url + b" " + received.headers.get(b"cookie", b"-")
        transport.write(b"HTTP/1.1 100 Continue\r\n\r\n" + reply(201, echo, extra="X-Seen: yes\r\n"))


def test_slots_send_what_they_are_given_and_read_what_is_flagged(make: EngineClass) -> None:
    async def test() -> None:
        sink = ReadingSink()
        async with ScriptedServer(script) as server:
            engine, _ = engine_for(make, server.port, [get("/static")], sink=sink)
            sink.engine = engine
            base = engine.reserve(3)
            assert base == 1

            async def body(engine: AnyEngine) -> None:
                head = RequestHead("POST", "/made?x=1", (("Host", "h"), ("Cookie", "s=2")), b"")
                engine.put(base, engine.prepare(head), READ)
                engine.put(
                    base + 1, engine.prepare(RequestHead("GET", "/chunked", (("Host", "h"),), b"")), READ
                )
                engine.put(
                    base + 2, engine.prepare(RequestHead("HEAD", "/h", (("Host", "h"),), b"")), HEAD | READ
                )
                for req in (base, 0, base + 1, base + 2):
                    engine.submit(req, time.monotonic())
                    await engine.drain(time.monotonic() + 2)
                # A number is given a new request between two uses, as a flow's next step.
                engine.put(base, engine.prepare(RequestHead("GET", "/again", (("Host", "h"),), b"")), 0)
                engine.submit(base, time.monotonic())
                await engine.drain(time.monotonic() + 2)

            await with_engine(engine, body)
        assert [r.url for r in server.received] == [b"/made?x=1", b"/static", b"/chunked", b"/h", b"/again"]
        assert sink.statuses == [201, 201, 200, 200, 201]
        made_headers, made_body = sink.replies[0][1], sink.replies[0][2]
        assert made_body == b"POST /made?x=1 s=2"
        assert (b"x-seen", b"yes") in [(k.lower(), v) for k, v in made_headers]
        assert sink.replies[2][2] == b"abcde"  # a chunked body, whole
        assert (b"set-cookie", b"a=1") in [(k.lower(), v) for k, v in sink.replies[2][1]]
        assert sink.replies[3][2] == b""  # a HEAD response ends with its headers
        assert (b"x-head", b"1") in [(k.lower(), v) for k, v in sink.replies[3][1]]

    run(test)


def test_a_request_the_engine_cannot_send_is_refused_when_prepared(make: EngineClass) -> None:
    engine, _ = engine_for(make, 9, [RequestSpec("/")])
    with pytest.raises(ValueError):
        engine.prepare(RequestHead("GET", "/", (("X-Bad", "caf\u00e9\u2603"),), b""))


def test_a_read_body_is_kept_up_to_the_limit_and_the_rest_is_read_and_dropped(make: EngineClass) -> None:
    from agents.engine import READ_LIMIT

    big = b"x" * (READ_LIMIT + 300_000)

    def script(transport: asyncio.Transport, received: Received) -> None:
        transport.write(reply(200, big))

    async def test() -> None:
        sink = ReadingSink()
        async with ScriptedServer(script) as server:
            engine, _ = engine_for(make, server.port, [get("/")], sink=sink)
            sink.engine = engine
            base = engine.reserve(1)

            async def body(engine: AnyEngine) -> None:
                engine.put(base, engine.prepare(RequestHead("GET", "/big", (("Host", "h"),), b"")), READ)
                for _ in range(2):  # the connection is still good for the next one
                    engine.submit(base, time.monotonic())
                    await engine.drain(time.monotonic() + 5)

            await with_engine(engine, body)
        assert sink.statuses == [200, 200]
        assert [len(r[2]) for r in sink.replies] == [READ_LIMIT, READ_LIMIT]
        assert server.connections == 1

    run(test)
