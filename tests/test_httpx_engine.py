"""The httpx engine against real servers on loopback, on uvloop: the fast engine's behaviour, on httpcore.

The servers and helpers are the fast engine tests' (:mod:`tests.test_fast_engine`): the built-in target in the
same event loop, and :class:`ScriptedServer` for what the target cannot do on purpose. Every test runs under
a time limit and fails if the loop logged an exception.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpcore
import pytest

from agents.engine import Engine
from agents.httpx_engine import MAX_OPENING, HttpxEngine, build_request, category, environment_proxy
from loadgen import __version__
from loadgen.profile import RequestSpec
from tests.test_fast_engine import (
    Received,
    RecordingSink,
    ScriptedServer,
    answer,
    certificate,
    free_port,
    get,
    reply,
    reported,
    run,
    server_tls,
    target_server,
    wait_for,
)

pytestmark = pytest.mark.integration

__all__ = ["certificate"]  # the fixture, imported so that pytest finds it here


def engine_for(
    port: int,
    requests: list[RequestSpec],
    *,
    timeout: float = 2.0,
    max_connections: int = 100,
    prefix: str = "",
) -> tuple[HttpxEngine, RecordingSink]:
    sink = RecordingSink()
    target = f"http://127.0.0.1:{port}{prefix}"
    engine = HttpxEngine(target, requests, sink, timeout=timeout, max_connections=max_connections)
    return engine, sink


async def with_engine(
    engine: HttpxEngine, body: Callable[[HttpxEngine], Awaitable[None]], *, start: bool = True
) -> None:
    if start:
        await engine.start()
    try:
        await body(engine)
    finally:
        await engine.aclose()


# --- pure parts


def test_request_carries_host_agent_headers_length_and_body() -> None:
    spec = RequestSpec(name="p", method="POST", path="/items?x=1", headers=(("X-A", "b"),), body=b"hello")
    request = build_request(spec, "http", "example.com", 8080, "/api")
    assert request.method == b"POST"
    assert request.url.target == b"/api/items?x=1"
    assert request.headers == [
        (b"Host", b"example.com:8080"),
        (b"User-Agent", f"loadgen/{__version__}".encode()),
        (b"X-A", b"b"),
        (b"Content-Length", b"5"),
    ]
    assert (b"Host", b"example.com") in build_request(get("/"), "https", "example.com", 443).headers


@pytest.mark.parametrize(
    "spec",
    [
        RequestSpec(name="m", method="GE T"),
        RequestSpec(name="n", headers=(("X:Y", "v"),)),
        RequestSpec(name="v", headers=(("X", "a\r\nEvil: 1"),)),
    ],
)
def test_request_refuses_injection(spec: RequestSpec) -> None:
    with pytest.raises(ValueError):
        build_request(spec, "http", "h", 80)


@pytest.mark.parametrize("target", ["ftp://h/", "http://", "http://h/?q=1", "h:80"])
def test_bad_target_is_refused(target: str) -> None:
    with pytest.raises(ValueError):
        HttpxEngine(target, [get("/")], RecordingSink(), timeout=1, max_connections=1)


def test_it_is_an_engine() -> None:
    engine: Engine = HttpxEngine("http://h", [get("/")], RecordingSink(), timeout=1, max_connections=1)
    assert engine.in_flight == 0


@pytest.mark.parametrize(
    ("exc", "lost", "expected"),
    [
        (httpcore.ReadTimeout("t"), False, "timeout"),
        (httpcore.ConnectError("refused"), False, "connect"),
        (httpcore.ProxyError("407"), False, "connect"),
        (httpcore.RemoteProtocolError("illegal status line"), False, "protocol"),
        (httpcore.RemoteProtocolError("illegal status line"), True, "reset"),
        (httpcore.RemoteProtocolError("Server disconnected without sending a response."), False, "reset"),
        (httpcore.ReadError("connection reset"), False, "reset"),
        (ConnectionResetError(), False, "reset"),
        (RuntimeError("?"), False, "protocol"),
    ],
)
def test_error_categories(exc: Exception, lost: bool, expected: str) -> None:
    assert category(exc, lost) == expected


def test_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    assert environment_proxy("http://example.com") is None
    monkeypatch.setenv("http_proxy", "proxy.internal:3128")
    monkeypatch.setenv("no_proxy", "localhost,.local")
    assert environment_proxy("http://example.com/api") == "http://proxy.internal:3128"
    assert environment_proxy("https://example.com") is None
    assert environment_proxy("http://db.local:8080") is None
    monkeypatch.setenv("all_proxy", "http://all.internal:8080")
    assert environment_proxy("https://example.com") == "http://all.internal:8080"
    sink = RecordingSink()
    assert HttpxEngine("http://a.b", [get("/")], sink, timeout=1, max_connections=1)._proxy is not None
    plain = HttpxEngine("http://a.b", [get("/")], sink, timeout=1, max_connections=1, trust_env=False)
    assert plain._proxy is None


# --- against the built-in target


def test_statuses_are_reported_for_the_right_requests() -> None:
    async def test() -> None:
        server = await target_server()
        requests = [get("/"), get("/status/404"), get("/status/503"), get("/bytes?n=700000")]
        engine, sink = engine_for(server.port, requests)

        async def body(engine: HttpxEngine) -> None:
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

        async def body(engine: HttpxEngine) -> None:
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

        async def body(engine: HttpxEngine) -> None:
            for i in range(100):
                engine.submit(0, time.monotonic())
                await wait_for(reported(sink, i + 1))

        await with_engine(engine, body)
        await server.close()
        assert sink.statuses == [200] * 100
        assert server.stats.connections_total == 1

    run(test)


def test_a_sink_that_submits_from_its_callback_keeps_one_connection() -> None:
    class ClosedLoopSink(RecordingSink):
        engine: HttpxEngine | None = None

        def response(self, req: int, intended: float, sent: float, done: float, status: int) -> None:
            super().response(req, intended, sent, done, status)
            if len(self.outcomes) < 200 and self.engine is not None:
                self.engine.submit(0, done)

    async def test() -> None:
        server = await target_server()
        sink = ClosedLoopSink()
        engine = HttpxEngine(
            f"http://127.0.0.1:{server.port}", [get("/")], sink, timeout=2, max_connections=10
        )
        sink.engine = engine

        async def body(engine: HttpxEngine) -> None:
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

        async def body(engine: HttpxEngine) -> None:
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

        async def body(engine: HttpxEngine) -> None:
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


def test_a_burst_opens_a_bounded_number_of_connections_at_a_time() -> None:
    async def test() -> None:
        server = await target_server()
        engine, sink = engine_for(server.port, [get("/delay?ms=20")], max_connections=200)

        async def body(engine: HttpxEngine) -> None:
            began = time.monotonic()
            for _ in range(300):
                engine.submit(0, began)
            assert len(engine._workers) <= 1 + MAX_OPENING  # the one from start() and those opening
            await engine.drain(began + 3)

        await with_engine(engine, body)
        await server.close()
        assert sink.statuses == [200] * 300
        assert server.stats.connections_total <= 200

    run(test)


def test_timeout_on_the_wire_closes_the_connection_and_drops_the_late_response() -> None:
    async def test() -> None:
        server = await target_server()
        engine, sink = engine_for(server.port, [get("/delay?ms=400"), get("/")], timeout=0.15)

        async def body(engine: HttpxEngine) -> None:
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

        async def body(engine: HttpxEngine) -> None:
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

        async def body(engine: HttpxEngine) -> None:
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

        async def body(engine: HttpxEngine) -> None:
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

        async def body(engine: HttpxEngine) -> None:
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

        async def body(engine: HttpxEngine) -> None:
            engine.submit(0, time.monotonic())
            engine.submit(0, time.monotonic())  # waits for the only connection
            await asyncio.sleep(0.01)

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

        async def body(engine: HttpxEngine) -> None:
            for i in range(30):
                engine.submit(i % 2, time.monotonic())
            await engine.drain(time.monotonic() + 2)

        await with_engine(engine, body)
        await server.close()
        assert len(sink.outcomes) == 30
        assert all(o.intended <= o.sent <= o.done for o in sink.outcomes)
        assert all(o.done - o.sent >= 0.018 for o in sink.outcomes if o.req == 1)

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

        async def body(engine: HttpxEngine) -> None:
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

            async def body(engine: HttpxEngine) -> None:
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

            async def body(engine: HttpxEngine) -> None:
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

            async def body(engine: HttpxEngine) -> None:
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

            async def body(engine: HttpxEngine) -> None:
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

            async def body(engine: HttpxEngine) -> None:
                engine.submit(0, time.monotonic())
                engine.submit(0, time.monotonic())
                await engine.drain(time.monotonic() + 2)

            await with_engine(engine, body)
        assert sink.statuses == [202, 202]

    run(test)


def test_redirects_are_not_followed() -> None:
    async def test() -> None:
        async with ScriptedServer(answer(reply(302, extra="Location: /elsewhere\r\n"))) as server:
            engine, sink = engine_for(server.port, [get("/")])

            async def body(engine: HttpxEngine) -> None:
                engine.submit(0, time.monotonic())
                await engine.drain(time.monotonic() + 2)

            await with_engine(engine, body)
        assert sink.statuses == [302]
        assert [r.url for r in server.received] == [b"/"]

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

            async def body(engine: HttpxEngine) -> None:
                for req in (0, 1, 0):  # the body of a request is sent again each time
                    engine.submit(req, time.monotonic())
                    await engine.drain(time.monotonic() + 2)

            await with_engine(engine, body)
        assert sink.statuses == [201, 201, 201]
        post, plain, again = server.received
        assert (post.method, post.url, post.body) == (b"POST", b"/submit?x=1", b'{"a": 1}')
        assert again.body == b'{"a": 1}'
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
    async def test() -> None:
        server = await target_server()
        sink = RecordingSink()
        engine = HttpxEngine(
            f"http://localhost:{server.port}", [get("/")], sink, timeout=2, max_connections=2
        )

        async def body(engine: HttpxEngine) -> None:
            engine.submit(0, time.monotonic())
            await engine.drain(time.monotonic() + 2)

        await with_engine(engine, body)
        await server.close()
        assert sink.statuses == [200]

    run(test)


def test_requests_go_through_a_proxy_in_absolute_form() -> None:
    """A forwarding proxy (here a scripted server answering for the origin) sees absolute URLs."""

    async def test() -> None:
        async with ScriptedServer(answer(reply(200, b"via proxy"))) as proxy:
            sink = RecordingSink()
            engine = HttpxEngine(
                "http://origin.invalid:8080/api",
                [get("/x"), get("/status/503")],
                sink,
                timeout=2,
                max_connections=2,
                proxy=f"http://127.0.0.1:{proxy.port}",
            )

            async def body(engine: HttpxEngine) -> None:
                for i in range(6):
                    engine.submit(i % 2, time.monotonic())
                await engine.drain(time.monotonic() + 2)

            await with_engine(engine, body)
        assert sink.statuses == [200] * 6
        assert sorted({r.url for r in proxy.received}) == [
            b"http://origin.invalid:8080/api/status/503",
            b"http://origin.invalid:8080/api/x",
        ]
        assert proxy.received[0].headers[b"host"] == b"origin.invalid:8080"
        assert proxy.connections <= 2

    run(test)


def test_a_dead_proxy_is_a_connect_error() -> None:
    async def test() -> None:
        sink = RecordingSink()
        engine = HttpxEngine(
            "http://origin.invalid",
            [get("/")],
            sink,
            timeout=2,
            max_connections=2,
            proxy=f"http://127.0.0.1:{free_port()}",
        )

        async def body(engine: HttpxEngine) -> None:
            for _ in range(3):
                engine.submit(0, time.monotonic())
            await engine.drain(time.monotonic() + 2)

        await with_engine(engine, body)
        assert sink.categories == ["connect"] * 3

    run(test)


# --- TLS


def test_https_verifies_the_host_name_and_keeps_connections_alive(certificate: tuple[Path, Path]) -> None:
    async def test() -> None:
        async with ScriptedServer(answer(reply(200, b"secret")), server_tls(certificate)) as server:
            sink = RecordingSink()
            client = ssl.create_default_context(cafile=str(certificate[0]))
            target = f"https://localhost:{server.port}/api"
            engine = HttpxEngine(target, [get("/x")], sink, timeout=2, max_connections=4, ssl_context=client)

            async def body(engine: HttpxEngine) -> None:
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
            engine = HttpxEngine(
                f"https://localhost:{server.port}", [get("/")], sink, timeout=2, max_connections=1
            )
            with pytest.raises(ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
                await engine.start()
            await engine.aclose()

    run(test)
