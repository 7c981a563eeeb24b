"""The default engine against real servers on loopback, on uvloop.

Most tests aim it at the built-in target (:class:`loadgen.target.TargetServer`) in the same event loop. What
the target cannot do on purpose (reset mid-response, send garbage, close after every response, show the raw
request it received) is done by :class:`ScriptedServer`, a tiny server whose answer to each request is a
function in the test. Every test runs under a time limit and fails if the loop logged an exception.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httptools
import pytest
import uvloop

from agents.engine import Engine
from agents.fast_engine import FastEngine, build_request
from loadgen import __version__
from loadgen.profile import RequestSpec
from loadgen.target import TargetServer

pytestmark = pytest.mark.integration

TIME_LIMIT = 5.0


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``test()`` on a fresh uvloop loop, bounded in time; exceptions the loop logs fail the test."""
    logged: list[dict[str, Any]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: logged.append(context))
        await asyncio.wait_for(test(), TIME_LIMIT)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
    assert logged == []


@dataclass
class Outcome:
    req: int
    intended: float
    sent: float
    done: float
    status: int = 0  # responses
    category: str = ""  # errors


@dataclass
class RecordingSink:
    outcomes: list[Outcome] = field(default_factory=list)

    def response(self, req: int, intended: float, sent: float, done: float, status: int) -> None:
        self.outcomes.append(Outcome(req, intended, sent, done, status=status))

    def error(self, req: int, intended: float, sent: float, done: float, category: str) -> None:
        self.outcomes.append(Outcome(req, intended, sent, done, category=category))

    @property
    def statuses(self) -> list[int]:
        return [o.status for o in self.outcomes]

    @property
    def categories(self) -> list[str]:
        return [o.category for o in self.outcomes]


def get(path: str, method: str = "GET") -> RequestSpec:
    return RequestSpec(name=path, method=method, path=path)


def engine_for(
    port: int,
    requests: list[RequestSpec],
    *,
    timeout: float = 2.0,
    max_connections: int = 100,
    prefix: str = "",
) -> tuple[FastEngine, RecordingSink]:
    sink = RecordingSink()
    target = f"http://127.0.0.1:{port}{prefix}"
    return FastEngine(target, requests, sink, timeout=timeout, max_connections=max_connections), sink


async def target_server() -> TargetServer:
    server = TargetServer("127.0.0.1", 0)
    await server.start()
    return server


async def wait_for(condition: Callable[[], bool], within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.002)


def reported(sink: RecordingSink, n: int) -> Callable[[], bool]:
    return lambda: len(sink.outcomes) == n


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- a server whose every answer is scripted by the test


@dataclass
class Received:
    method: bytes
    url: bytes
    headers: dict[bytes, bytes]
    body: bytes


Script = Callable[[asyncio.Transport, Received], None]


class _ScriptedProtocol(asyncio.Protocol):
    def __init__(self, server: ScriptedServer) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.body = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections += 1
        self.server.open.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.open.discard(self)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        received = Received(self.parser.get_method(), self.url, self.headers, self.body)
        self.url, self.headers, self.body = b"", {}, b""
        self.server.received.append(received)
        assert self.transport is not None
        if not self.transport.is_closing():
            self.server.script(self.transport, received)


class ScriptedServer:
    def __init__(self, script: Script, ssl_context: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.ssl_context = ssl_context
        self.received: list[Received] = []
        self.connections = 0
        self.open: set[_ScriptedProtocol] = set()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ScriptedServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _ScriptedProtocol(self), "127.0.0.1", 0, ssl=self.ssl_context
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for protocol in list(self.open):
            if protocol.transport is not None:
                protocol.transport.abort()
        await self._server.wait_closed()


def reply(status: int = 200, body: bytes = b"", extra: str = "") -> bytes:
    head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


def answer(data: bytes, close: bool = False) -> Script:
    def script(transport: asyncio.Transport, received: Received) -> None:
        transport.write(data)
        if close:
            transport.close()

    return script


async def with_engine(
    engine: FastEngine, body: Callable[[FastEngine], Awaitable[None]], *, start: bool = True
) -> None:
    if start:
        await engine.start()
    try:
        await body(engine)
    finally:
        await engine.aclose()


# --- the request bytes (pure)


def test_request_bytes_carry_host_agent_headers_length_and_body() -> None:
    spec = RequestSpec(name="p", method="POST", path="/items?x=1", headers=(("X-A", "b"),), body=b"hello")
    wire = build_request(spec, "example.com:8080", "/api")
    head, _, body = wire.partition(b"\r\n\r\n")
    assert head.split(b"\r\n") == [
        b"POST /api/items?x=1 HTTP/1.1",
        b"Host: example.com:8080",
        f"User-Agent: loadgen/{__version__}".encode(),
        b"X-A: b",
        b"Content-Length: 5",
    ]
    assert body == b"hello"


def test_request_bytes_defaults_and_overrides() -> None:
    assert (
        build_request(get("/"), "h")
        == f"GET / HTTP/1.1\r\nHost: h\r\nUser-Agent: loadgen/{__version__}\r\n\r\n".encode()
    )
    spec = RequestSpec(name="o", path="caf\u00e9 x", headers=(("host", "other"), ("User-Agent", "me")))
    assert build_request(spec, "h") == b"GET /caf%C3%A9%20x HTTP/1.1\r\nhost: other\r\nUser-Agent: me\r\n\r\n"
    assert b"Content-Length: 0\r\n" in build_request(RequestSpec(name="e", method="PUT"), "h")


@pytest.mark.parametrize(
    "spec",
    [
        RequestSpec(name="m", method="GE T"),
        RequestSpec(name="n", headers=(("X:Y", "v"),)),
        RequestSpec(name="v", headers=(("X", "a\r\nEvil: 1"),)),
    ],
)
def test_request_bytes_refuse_injection(spec: RequestSpec) -> None:
    with pytest.raises(ValueError):
        build_request(spec, "h")


@pytest.mark.parametrize("target", ["ftp://h/", "http://", "http://h/?q=1", "h:80"])
def test_bad_target_is_refused(target: str) -> None:
    with pytest.raises(ValueError):
        FastEngine(target, [get("/")], RecordingSink(), timeout=1, max_connections=1)


def test_https_target_defaults_to_port_443_in_host_header() -> None:
    sink = RecordingSink()
    engine: Engine = FastEngine("https://example.com/p/", [get("/x")], sink, timeout=1, max_connections=1)
    assert isinstance(engine, FastEngine)
    assert engine._wire[0].startswith(b"GET /p/x HTTP/1.1\r\nHost: example.com\r\n")


# --- against the built-in target


def test_statuses_are_reported_for_the_right_requests() -> None:
    async def test() -> None:
        server = await target_server()
        requests = [get("/"), get("/status/404"), get("/status/503"), get("/bytes?n=70000")]
        engine, sink = engine_for(server.port, requests)

        async def body(engine: FastEngine) -> None:
            for i in range(40):
                engine.submit(i % 4, time.monotonic())
            await engine.drain(time.monotonic() + 3)
            assert engine.in_flight == 0

        await with_engine(engine, body)
        await server.close()
        assert sorted((o.req, o.status) for o in sink.outcomes) == sorted(
            (i % 4, [200, 404, 503, 200][i % 4]) for i in range(40)
        )
        assert server.stats.requests == 40

    run(test)


def test_every_submitted_request_is_reported_exactly_once() -> None:
    async def test() -> None:
        server = await target_server()
        engine, sink = engine_for(
            server.port, [get("/"), get("/delay?ms=5"), get("/status/500")], max_connections=8
        )

        async def body(engine: FastEngine) -> None:
            for i in range(300):
                engine.submit(i % 3, time.monotonic())
                if i % 50 == 0:
                    await asyncio.sleep(0.001)
            await engine.drain(time.monotonic() + 3)

        await with_engine(engine, body)
        await server.close()
        assert Counter(o.req for o in sink.outcomes) == {0: 100, 1: 100, 2: 100}
        assert all(o.category == "" for o in sink.outcomes)
        assert server.stats.connections_total <= 8

    run(test)


def test_sequential_requests_reuse_one_keep_alive_connection() -> None:
    async def test() -> None:
        server = await target_server()
        engine, sink = engine_for(server.port, [get("/")])

        async def body(engine: FastEngine) -> None:
            for i in range(100):
                engine.submit(0, time.monotonic())
                await wait_for(reported(sink, i + 1))

        await with_engine(engine, body)
        await server.close()
        assert sink.statuses == [200] * 100
        assert server.stats.connections_total == 1

    run(test)


def test_a_sink_that_submits_from_its_callback_keeps_one_connection() -> None:
    """A closed loop driven from the sink: the connection is idle again before the sink hears of it."""

    class ClosedLoopSink(RecordingSink):
        engine: FastEngine | None = None

        def response(self, req: int, intended: float, sent: float, done: float, status: int) -> None:
            super().response(req, intended, sent, done, status)
            if len(self.outcomes) < 200 and self.engine is not None:
                self.engine.submit(0, done)

    async def test() -> None:
        server = await target_server()
        sink = ClosedLoopSink()
        engine = FastEngine(
            f"http://127.0.0.1:{server.port}", [get("/")], sink, timeout=2, max_connections=10
        )
        sink.engine = engine

        async def body(engine: FastEngine) -> None:
            engine.submit(0, time.monotonic())
            await wait_for(lambda: len(sink.outcomes) == 200)

        await with_engine(engine, body)
        await server.close()
        assert server.stats.connections_total == 1

    run(test)


def test_pool_grows_under_concurrency() -> None:
    async def test() -> None:
        server = await target_server()
        engine, sink = engine_for(server.port, [get("/delay?ms=100")])

        async def body(engine: FastEngine) -> None:
            began = time.monotonic()
            for _ in range(50):
                engine.submit(0, began)
            await engine.drain(began + 3)
            assert time.monotonic() - began < 0.6

        await with_engine(engine, body)
        await server.close()
        assert sink.statuses == [200] * 50
        assert 2 <= server.stats.connections_total <= 51

    run(test)


def test_pool_stops_at_max_connections() -> None:
    async def test() -> None:
        server = await target_server()
        engine, sink = engine_for(server.port, [get("/delay?ms=50")], max_connections=4)

        async def body(engine: FastEngine) -> None:
            began = time.monotonic()
            for _ in range(16):
                engine.submit(0, began)
            await engine.drain(began + 3)
            assert time.monotonic() - began >= 0.19  # four rounds of four

        await with_engine(engine, body)
        await server.close()
        assert sink.statuses == [200] * 16
        assert server.stats.connections_total == 4

    run(test)


def test_timeout_on_the_wire_closes_the_connection_and_drops_the_late_response() -> None:
    async def test() -> None:
        server = await target_server()
        engine, sink = engine_for(server.port, [get("/delay?ms=400"), get("/")], timeout=0.15)

        async def body(engine: FastEngine) -> None:
            began = time.monotonic()
            engine.submit(0, began)
            await wait_for(lambda: len(sink.outcomes) == 1)
            timed_out = sink.outcomes[0]
            assert (timed_out.req, timed_out.category) == (0, "timeout")
            assert began < timed_out.sent and 0.15 <= timed_out.done - began < 0.3
            engine.submit(1, time.monotonic())
            await wait_for(lambda: len(sink.outcomes) == 2)
            await asyncio.sleep(0.5 - (time.monotonic() - began))  # the late response would be in by now
            assert engine.in_flight == 0

        await with_engine(engine, body)
        await server.close()
        assert [(o.req, o.status, o.category) for o in sink.outcomes] == [(0, 0, "timeout"), (1, 200, "")]
        assert server.stats.connections_total == 2

    run(test)


def test_timeout_while_waiting_for_a_connection_was_never_sent() -> None:
    async def test() -> None:
        server = await target_server()
        engine, sink = engine_for(server.port, [get("/delay?ms=300")], timeout=0.1, max_connections=1)

        async def body(engine: FastEngine) -> None:
            engine.submit(0, time.monotonic())
            engine.submit(0, time.monotonic())
            await engine.drain(time.monotonic() + 1)

        await with_engine(engine, body)
        await server.close()
        assert sorted(o.category for o in sink.outcomes) == ["timeout", "timeout"]
        assert sorted(o.sent == 0.0 for o in sink.outcomes) == [False, True]

    run(test)


def test_head_response_ends_with_its_headers() -> None:
    async def test() -> None:
        server = await target_server()
        engine, sink = engine_for(server.port, [get("/bytes?n=100", "HEAD"), get("/status/201")])

        async def body(engine: FastEngine) -> None:
            for i in range(6):
                engine.submit(i % 2, time.monotonic())
                await wait_for(reported(sink, i + 1))

        await with_engine(engine, body)
        await server.close()
        assert sink.statuses == [200, 201] * 3
        assert server.stats.connections_total == 1

    run(test)


def test_target_path_prefix_is_prepended() -> None:
    async def test() -> None:
        server = await target_server()
        engine, sink = engine_for(server.port, [get("/418"), get("/503")], prefix="/status/")

        async def body(engine: FastEngine) -> None:
            engine.submit(0, time.monotonic())
            engine.submit(1, time.monotonic())
            await engine.drain(time.monotonic() + 2)

        await with_engine(engine, body)
        await server.close()
        assert sorted(sink.statuses) == [418, 503]

    run(test)


def test_in_flight_and_drain() -> None:
    async def test() -> None:
        server = await target_server()
        engine, sink = engine_for(server.port, [get("/delay?ms=200")])

        async def body(engine: FastEngine) -> None:
            for _ in range(3):
                engine.submit(0, time.monotonic())
            assert engine.in_flight == 3
            began = time.monotonic()
            await engine.drain(began + 0.05)
            assert engine.in_flight == 3
            assert 0.05 <= time.monotonic() - began < 0.19
            await engine.drain(began + 2)
            assert engine.in_flight == 0
            assert time.monotonic() - began < 0.4

        await with_engine(engine, body)
        await server.close()
        assert sink.statuses == [200] * 3

    run(test)


def test_requests_in_flight_at_close_are_not_reported() -> None:
    async def test() -> None:
        server = await target_server()
        engine, sink = engine_for(server.port, [get("/delay?ms=300")], max_connections=1)

        async def body(engine: FastEngine) -> None:
            engine.submit(0, time.monotonic())
            engine.submit(0, time.monotonic())  # waits for the only connection

        await with_engine(engine, body)
        assert engine.in_flight == 2
        await asyncio.sleep(0.4)
        await server.close()
        assert sink.outcomes == []

    run(test)


def test_timestamps_are_ordered() -> None:
    async def test() -> None:
        server = await target_server()
        engine, sink = engine_for(server.port, [get("/"), get("/delay?ms=20")], max_connections=3)

        async def body(engine: FastEngine) -> None:
            for i in range(30):
                engine.submit(i % 2, time.monotonic())
            await engine.drain(time.monotonic() + 2)

        await with_engine(engine, body)
        await server.close()
        assert len(sink.outcomes) == 30
        assert all(o.intended <= o.sent <= o.done for o in sink.outcomes)
        assert all(o.done - o.sent >= 0.018 for o in sink.outcomes if o.req == 1)  # libuv timers: ms ticks

    run(test)


# --- failures


def test_start_raises_connection_error_when_refused() -> None:
    async def test() -> None:
        engine, _ = engine_for(free_port(), [get("/")])
        with pytest.raises(ConnectionError, match=r"cannot connect to http://127\.0\.0\.1"):
            await engine.start()
        await engine.aclose()

    run(test)


def test_dead_target_fails_each_request_with_connect() -> None:
    async def test() -> None:
        server = await target_server()
        engine, sink = engine_for(server.port, [get("/")], max_connections=3)

        async def body(engine: FastEngine) -> None:
            await server.close()  # the idle connection is closed by the server, then nothing listens
            await asyncio.sleep(0.05)
            began = time.monotonic()
            for _ in range(10):
                engine.submit(0, time.monotonic())
            await engine.drain(began + 2)
            assert time.monotonic() - began < 0.5
            assert engine.in_flight == 0

        await with_engine(engine, body)
        assert sink.categories == ["connect"] * 10
        assert all(o.sent == 0.0 for o in sink.outcomes)

    run(test)


def test_connection_closed_without_a_response_is_reset() -> None:
    def hang_up(transport: asyncio.Transport, received: Received) -> None:
        transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        transport.abort()

    async def test() -> None:
        async with ScriptedServer(hang_up) as server:
            engine, sink = engine_for(server.port, [get("/")])

            async def body(engine: FastEngine) -> None:
                for _ in range(3):
                    engine.submit(0, time.monotonic())
                await engine.drain(time.monotonic() + 2)

            await with_engine(engine, body)
        assert sink.categories == ["reset"] * 3
        assert all(o.sent > 0 for o in sink.outcomes)

    run(test)


def test_garbage_response_is_a_protocol_error() -> None:
    async def test() -> None:
        async with ScriptedServer(answer(b"HELLO THERE\r\n\r\n")) as server:
            engine, sink = engine_for(server.port, [get("/")])

            async def body(engine: FastEngine) -> None:
                engine.submit(0, time.monotonic())
                engine.submit(0, time.monotonic())
                await engine.drain(time.monotonic() + 2)

            await with_engine(engine, body)
        assert sink.categories == ["protocol"] * 2

    run(test)


def test_server_closing_after_each_response() -> None:
    async def test() -> None:
        async with ScriptedServer(answer(reply(204, extra="Connection: close\r\n"), close=True)) as server:
            engine, sink = engine_for(server.port, [get("/")], max_connections=4)

            async def body(engine: FastEngine) -> None:
                for _ in range(20):
                    engine.submit(0, time.monotonic())
                await engine.drain(time.monotonic() + 2)
                for _ in range(5):
                    engine.submit(0, time.monotonic())
                    await engine.drain(time.monotonic() + 2)

            await with_engine(engine, body)
        assert sink.statuses == [204] * 25
        assert server.connections >= 25

    run(test)


def test_idle_connection_closed_by_the_server_is_replaced_quietly() -> None:
    def answer_then_hang_up_later(transport: asyncio.Transport, received: Received) -> None:
        transport.write(reply(200))
        asyncio.get_running_loop().call_later(0.02, transport.close)

    async def test() -> None:
        async with ScriptedServer(answer_then_hang_up_later) as server:
            engine, sink = engine_for(server.port, [get("/")])

            async def body(engine: FastEngine) -> None:
                for _ in range(3):
                    engine.submit(0, time.monotonic())
                    await engine.drain(time.monotonic() + 1)
                    await asyncio.sleep(0.06)

            await with_engine(engine, body)
        assert sink.statuses == [200] * 3
        assert server.connections == 3

    run(test)


def test_interim_response_is_skipped() -> None:
    async def test() -> None:
        async with ScriptedServer(answer(b"HTTP/1.1 100 Continue\r\n\r\n" + reply(202))) as server:
            engine, sink = engine_for(server.port, [get("/")])

            async def body(engine: FastEngine) -> None:
                engine.submit(0, time.monotonic())
                engine.submit(0, time.monotonic())
                await engine.drain(time.monotonic() + 2)

            await with_engine(engine, body)
        assert sink.statuses == [202, 202]

    run(test)


def test_post_body_and_custom_headers_arrive() -> None:
    spec = RequestSpec(
        name="post",
        method="POST",
        path="/submit?x=1",
        headers=(("Content-Type", "application/json"), ("X-Trace", "abc")),
        body=b'{"a": 1}',
    )

    async def test() -> None:
        async with ScriptedServer(answer(reply(201, b"made"))) as server:
            engine, sink = engine_for(server.port, [spec, get("/plain")])

            async def body(engine: FastEngine) -> None:
                engine.submit(0, time.monotonic())
                await engine.drain(time.monotonic() + 2)
                engine.submit(1, time.monotonic())
                await engine.drain(time.monotonic() + 2)

            await with_engine(engine, body)
        assert sink.statuses == [201, 201]
        post, plain = server.received
        assert (post.method, post.url, post.body) == (b"POST", b"/submit?x=1", b'{"a": 1}')
        assert post.headers[b"content-type"] == b"application/json"
        assert post.headers[b"x-trace"] == b"abc"
        assert post.headers[b"content-length"] == b"8"
        assert post.headers[b"host"] == f"127.0.0.1:{server.port}".encode()
        assert post.headers[b"user-agent"] == f"loadgen/{__version__}".encode()
        assert (plain.method, plain.url, plain.body) == (b"GET", b"/plain", b"")
        assert b"content-length" not in plain.headers
        assert server.connections == 1

    run(test)


def test_start_tries_each_resolved_address() -> None:
    """A host name is resolved once; where ``localhost`` gives ::1 first, 127.0.0.1 (which the target
    listens on) is tried next."""

    async def test() -> None:
        server = await target_server()
        sink = RecordingSink()
        engine = FastEngine(f"http://localhost:{server.port}", [get("/")], sink, timeout=2, max_connections=2)

        async def body(engine: FastEngine) -> None:
            engine.submit(0, time.monotonic())
            await engine.drain(time.monotonic() + 2)

        await with_engine(engine, body)
        await server.close()
        assert sink.statuses == [200]

    run(test)


# --- TLS


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for ``localhost`` (made with the openssl command)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *(
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
            ),
            *("-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost"),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


def test_https_verifies_the_host_name_and_keeps_connections_alive(certificate: tuple[Path, Path]) -> None:
    async def test() -> None:
        async with ScriptedServer(answer(reply(200, b"secret")), server_tls(certificate)) as server:
            sink = RecordingSink()
            client = ssl.create_default_context(cafile=str(certificate[0]))
            target = f"https://localhost:{server.port}/api"
            engine = FastEngine(target, [get("/x")], sink, timeout=2, max_connections=4, ssl_context=client)

            async def body(engine: FastEngine) -> None:
                for _ in range(10):
                    engine.submit(0, time.monotonic())
                    await engine.drain(time.monotonic() + 2)

            await with_engine(engine, body)
        assert sink.statuses == [200] * 10
        assert server.connections == 1
        assert server.received[0].url == b"/api/x"
        assert server.received[0].headers[b"host"] == f"localhost:{server.port}".encode()

    run(test)


def test_https_with_an_untrusted_certificate_cannot_start(certificate: tuple[Path, Path]) -> None:
    async def test() -> None:
        async with ScriptedServer(answer(reply(200)), server_tls(certificate)) as server:
            sink = RecordingSink()
            engine = FastEngine(
                f"https://localhost:{server.port}", [get("/")], sink, timeout=2, max_connections=1
            )
            with pytest.raises(ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
                await engine.start()
            await engine.aclose()

    run(test)
