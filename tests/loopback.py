"""Loopback servers, sinks and helpers for the engine tests (:mod:`tests.test_engines` and the engine-specific
modules).

Most tests aim an engine at the built-in target (:class:`target.server.TargetServer`) in the same event
loop. What the target cannot do on purpose (reset mid-response, send garbage, close after every response,
answer in chunks, show the raw request it received) is done by :class:`ScriptedServer`, a tiny server whose
answer to each request is a function in the test. :func:`run` runs a test on uvloop under a time limit and
fails it if the loop logged an exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httptools
import pytest
import uvloop

from agents.engine import Engine
from loadgen.profile import RequestSpec
from target.server import TargetServer

E = TypeVar("E", bound=Engine)

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
        # A request to switch protocols is answered by the script; what follows it is not HTTP/1.1.
        with contextlib.suppress(httptools.HttpParserUpgrade):
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


async def with_engine(engine: E, body: Callable[[E], Awaitable[None]], *, start: bool = True) -> None:
    """Start ``engine``, run ``body`` with it, and close it whatever happens."""
    if start:
        await engine.start()
    try:
        await body(engine)
    finally:
        await engine.aclose()


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
