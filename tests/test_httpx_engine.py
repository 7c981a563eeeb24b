"""What only the httpx engine does: httpcore requests, its error mapping, proxies, and h11's reading of
responses the fast engine cannot read. Everything the engines share is in the conformance suite,
:mod:`tests.test_engines`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable

import h11
import httpcore
import pytest

from agents.httpx_engine import (
    HttpxEngine,
    build_request,
    category,
    direct_request,
    environment_proxy,
)
from loadgen import __version__
from loadgen.profile import RequestSpec
from tests.loopback import (
    Received,
    RecordingSink,
    ScriptedServer,
    answer,
    free_port,
    get,
    reply,
    run,
    with_engine,
)


def engine_for(port: int, requests: list[RequestSpec]) -> tuple[HttpxEngine, RecordingSink]:
    sink = RecordingSink()
    return HttpxEngine(f"http://127.0.0.1:{port}", requests, sink, timeout=2, max_connections=100), sink


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


def test_a_request_without_a_body_has_no_chunks_and_one_with_a_body_has_it() -> None:
    async def chunks(spec: RequestSpec) -> list[bytes]:
        stream = build_request(spec, "http", "h", 80).stream
        assert isinstance(stream, AsyncIterable)
        return [chunk async for chunk in stream]

    async def test() -> None:
        assert await chunks(get("/")) == []
        assert await chunks(get("/")) == []  # every time, not only the first
        assert await chunks(RequestSpec(name="e", method="PUT")) == []
        assert await chunks(RequestSpec(name="p", method="POST", body=b"abc")) == [b"abc"]

    run(test)


def test_the_direct_request_is_the_same_request_for_h11() -> None:
    """What goes on the wire without a proxy: the same method, target and headers, in the same order and
    case, as h11 writes them."""
    spec = RequestSpec(name="p", method="POST", path="/items?x=1", headers=(("X-A", "b"),), body=b"hello")
    event = direct_request(build_request(spec, "http", "example.com", 8080, "/api"))
    connection = h11.Connection(h11.CLIENT)
    assert connection.send(event) == (
        b"POST /api/items?x=1 HTTP/1.1\r\nHost: example.com:8080\r\n"
        + f"User-Agent: loadgen/{__version__}\r\n".encode()
        + b"X-A: b\r\nContent-Length: 5\r\n\r\n"
    )


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


@pytest.mark.parametrize(
    ("exc", "lost", "expected"),
    [
        (httpcore.ReadTimeout("t"), False, "timeout"),
        (httpcore.ConnectError("refused"), False, "connect"),
        (httpcore.ProxyError("407"), False, "connect"),
        (httpcore.RemoteProtocolError("illegal status line"), False, "protocol"),
        (httpcore.RemoteProtocolError("illegal status line"), True, "reset"),
        (httpcore.RemoteProtocolError("Server disconnected without sending a response."), False, "reset"),
        (h11.RemoteProtocolError("malformed data"), False, "protocol"),
        (h11.RemoteProtocolError("peer unexpectedly closed connection"), True, "reset"),
        (h11.LocalProtocolError("Too much data for declared Content-Length"), False, "protocol"),
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


# --- against real servers


@pytest.mark.integration
def test_a_switch_of_protocols_is_a_response_and_the_connection_is_not_reused() -> None:
    """A request that proposes an upgrade and gets 101: reported as a response, and the next request goes
    on a new connection (h11 pauses the old one) instead of waiting on it for ever."""
    upgrade = RequestSpec(name="ws", headers=(("Connection", "Upgrade"), ("Upgrade", "websocket")))

    async def test() -> None:
        script = answer(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        )
        async with ScriptedServer(script) as server:
            engine, sink = engine_for(server.port, [upgrade])

            async def body(engine: HttpxEngine) -> None:
                for _ in range(2):
                    engine.submit(0, time.monotonic())
                    await engine.drain(time.monotonic() + 2)
                assert engine.in_flight == 0

            await with_engine(engine, body)
        assert sink.statuses == [101, 101]
        assert server.connections == 2

    run(test)


@pytest.mark.integration
def test_long_response_heads_are_read_up_to_httpx_s_limit() -> None:
    """A head of 50 KiB that arrives in two parts is a response (h11's own default gives up once 16 KiB
    are buffered without the head's end); one of 300 KiB, which httpx refuses too (at 100 KiB), is a
    protocol error."""
    pad = "X-Pad: " + "a" * 1000 + "\r\n"

    def long_head(transport: asyncio.Transport, received: Received) -> None:
        lines = 50 if received.url == b"/long" else 300
        data = reply(200, b"ok", extra=pad * lines)
        transport.write(data[: len(data) // 2])

        def rest() -> None:
            if not transport.is_closing():  # the client may have given up on the first part
                transport.write(data[len(data) // 2 :])

        asyncio.get_running_loop().call_later(0.01, rest)

    async def test() -> None:
        async with ScriptedServer(long_head) as server:
            engine, sink = engine_for(server.port, [get("/long"), get("/too-long")])

            async def body(engine: HttpxEngine) -> None:
                for req in (0, 1, 0):
                    engine.submit(req, time.monotonic())
                    await engine.drain(time.monotonic() + 2)

            await with_engine(engine, body)
        assert [(o.req, o.status, o.category) for o in sink.outcomes] == [
            (0, 200, ""),
            (1, 0, "protocol"),
            (0, 200, ""),
        ]

    run(test)


@pytest.mark.integration
def test_a_response_delimited_by_closing_is_read_to_the_end() -> None:
    """h11 knows a body without a length ends when the server closes (the fast engine cannot)."""

    def close_delimited(transport: asyncio.Transport, received: Received) -> None:
        transport.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
        transport.close()

    async def test() -> None:
        async with ScriptedServer(close_delimited) as server:
            engine, sink = engine_for(server.port, [get("/")])

            async def body(engine: HttpxEngine) -> None:
                engine.submit(0, time.monotonic())
                engine.submit(0, time.monotonic())
                await engine.drain(time.monotonic() + 2)

            await with_engine(engine, body)
        assert sink.statuses == [200, 200]

    run(test)


@pytest.mark.integration
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


@pytest.mark.integration
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


def test_http2_with_a_proxy_in_the_environment_is_refused_not_bypassed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--engine httpx honours the environment's proxy; the HTTP/2 engine cannot, so it refuses rather than
    reach the target around the proxy."""
    from agents.engines import Route, default_engine_factory

    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("http_proxy", "http://user:secret@proxy.internal:3128")
    h2 = Route(http_version="2")
    with pytest.raises(ValueError, match=r"proxy\.internal:3128") as refused:
        default_engine_factory("httpx", "http://example.com", [get("/")], RecordingSink(), 1.0, 1, h2)
    assert "secret" not in str(refused.value)
    default_engine_factory("fast", "http://example.com", [get("/")], RecordingSink(), 1.0, 1, h2)  # no proxy
