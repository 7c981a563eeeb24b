"""What only the fast engine does: the request bytes it prebuilds, and httptools' limits. Everything the
engines share is in the conformance suite, :mod:`tests.test_engines`."""

from __future__ import annotations

import asyncio
import time

import pytest

from agents.engine import Engine
from agents.fast_engine import FastEngine, build_request
from loadgen import __version__
from loadgen.profile import RequestSpec
from tests.loopback import Received, RecordingSink, ScriptedServer, get, run, with_engine

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


def test_https_target_defaults_to_port_443_in_host_header() -> None:
    sink = RecordingSink()
    engine: Engine = FastEngine("https://example.com/p/", [get("/x")], sink, timeout=1, max_connections=1)
    assert isinstance(engine, FastEngine)
    assert engine._wire[0].startswith(b"GET /p/x HTTP/1.1\r\nHost: example.com\r\n")


# --- httptools' limits (documented in the module)


@pytest.mark.integration
def test_a_response_delimited_by_closing_is_a_reset() -> None:
    """httptools cannot be told the stream ended, so a body without a length never completes."""

    def close_delimited(transport: asyncio.Transport, received: Received) -> None:
        transport.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
        transport.close()

    async def test() -> None:
        async with ScriptedServer(close_delimited) as server:
            sink = RecordingSink()
            engine = FastEngine(
                f"http://127.0.0.1:{server.port}", [get("/")], sink, timeout=2, max_connections=2
            )

            async def body(engine: FastEngine) -> None:
                engine.submit(0, time.monotonic())
                await engine.drain(time.monotonic() + 2)

            await with_engine(engine, body)
        assert sink.categories == ["reset"]

    run(test)
