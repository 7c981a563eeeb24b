"""The built-in test target, exercised over real loopback sockets.

Most tests share one target process (started exactly as other code starts it) and talk to it with httpx or,
where the byte-level behaviour matters (pipelining, Connection: close, stalls), with raw sockets. The
process's stderr is checked to be empty at the end, so an exception logged inside a callback fails the run.
"""

from __future__ import annotations

import asyncio
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from target.server import MAX_BYTES, TargetServer

ROOT = Path(__file__).resolve().parent.parent
START = "from target.server import run_target; run_target('127.0.0.1', 0)"
LINE = re.compile(r"loadgen target listening on http://127\.0\.0\.1:(\d+)\n")


@contextmanager
def running_target(tmp: Path, stop: signal.Signals = signal.SIGTERM) -> Iterator[int]:
    """Start the target as a subprocess, yield its port, stop it with ``stop`` and check it exited cleanly."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with (tmp / "stderr.txt").open("w+") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-c", START], stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=ROOT, env=env
        )
        assert proc.stdout is not None
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 10)
            assert ready, "target printed nothing within 10 s"
            match = LINE.fullmatch(proc.stdout.readline())
            assert match is not None
            yield int(match.group(1))
            proc.send_signal(stop)
            assert proc.wait(timeout=5) == 0
            assert proc.stdout.read() == "", "exactly one line on stdout"
            stderr.seek(0)
            assert stderr.read() == ""
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with running_target(tmp_path_factory.mktemp("target")) as bound:
        yield bound


@pytest.fixture
def client(port: int) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
        http.get("/__reset").raise_for_status()
        yield http


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Reader:
    """Reads whole HTTP/1.1 responses (Content-Length framed) off a raw socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            assert self._fill(), "connection closed before a response"
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            assert self._fill(), "connection closed inside a body"
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(status_line.split()[1]), headers, body

    def at_eof(self) -> bool:
        return not self.buffer and not self._fill()


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


# --- endpoints


@pytest.mark.integration
def test_root(client: httpx.Client) -> None:
    response = client.get("/")
    assert (response.status_code, response.text) == (200, "ok")
    assert response.headers["content-length"] == "2"


@pytest.mark.integration
@pytest.mark.parametrize("code", [200, 201, 301, 404, 418, 500, 503, 599])
def test_status(client: httpx.Client, code: int) -> None:
    response = client.post(f"/status/{code}", content=b"ignored")
    assert response.status_code == code
    assert response.text == str(code)


@pytest.mark.integration
def test_status_204_has_no_body(client: httpx.Client) -> None:
    response = client.get("/status/204")
    assert (response.status_code, response.content) == (204, b"")


@pytest.mark.integration
@pytest.mark.parametrize("code", ["100", "199", "600", "20", "abc", "+200", ""])
def test_status_invalid(client: httpx.Client, code: str) -> None:
    assert client.get(f"/status/{code}").status_code == 400


@pytest.mark.integration
def test_flaky(client: httpx.Client) -> None:
    assert {client.get("/flaky?p=0").status_code for _ in range(20)} == {200}
    assert {client.get("/flaky?p=1").status_code for _ in range(20)} == {500}
    assert {client.get("/flaky?p=0.5").status_code for _ in range(200)} == {200, 500}
    assert client.get("/flaky?p=2").status_code == 400
    assert client.get("/flaky?p=x").status_code == 400


@pytest.mark.integration
@pytest.mark.parametrize("n", [0, 1, 1000, 200_000, MAX_BYTES])
def test_bytes(client: httpx.Client, n: int) -> None:
    response = client.get("/bytes", params={"n": n})
    assert response.status_code == 200
    assert len(response.content) == n
    assert response.headers["content-length"] == str(n)


@pytest.mark.integration
@pytest.mark.parametrize("query", [f"n={MAX_BYTES + 1}", "n=-1", "n=x", ""])
def test_bytes_invalid(client: httpx.Client, query: str) -> None:
    assert client.get(f"/bytes?{query}").status_code == 400


@pytest.mark.integration
def test_unknown_path_and_head(client: httpx.Client) -> None:
    assert client.get("/nope").status_code == 404
    head = client.head("/bytes?n=1000")
    assert (head.status_code, head.headers["content-length"], head.content) == (200, "1000", b"")
    assert client.get("/").text == "ok"  # the connection is still in step after HEAD


# --- connection handling


@pytest.mark.integration
def test_keep_alive_reuses_one_connection(client: httpx.Client) -> None:
    for _ in range(300):
        assert client.get("/").status_code == 200
    stats = client.get("/__stats").json()
    assert stats["requests"] == 300
    assert stats["connections_total"] == 0  # reset came after the client had connected: no new connection


@pytest.mark.integration
def test_pipelined_requests_answered_in_order(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(get("/delay?ms=150") + get("/status/201") + get("/bytes?n=3"))
        reader = Reader(sock)
        assert [reader.response()[0] for _ in range(3)] == [200, 201, 200]


@pytest.mark.integration
def test_request_bodies_are_read_and_discarded(port: int) -> None:
    sized = b"POST /status/202 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
    chunked = b"PUT /status/203 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked += b"5\r\nhello\r\n0\r\n\r\n"
    with connect(port) as sock:
        sock.sendall(sized + chunked + get("/"))
        reader = Reader(sock)
        assert [reader.response()[0] for _ in range(3)] == [202, 203, 200]


@pytest.mark.integration
@pytest.mark.parametrize(
    "request_bytes",
    [get("/", "Connection: close\r\n"), b"GET / HTTP/1.0\r\n\r\n"],
    ids=["connection-close", "http-1.0"],
)
def test_close_is_honoured_and_later_requests_ignored(port: int, request_bytes: bytes) -> None:
    with connect(port) as sock:
        sock.sendall(request_bytes + get("/status/201"))
        reader = Reader(sock)
        status, headers, body = reader.response()
        assert (status, headers["connection"], body) == (200, "close", b"ok")
        assert reader.at_eof()


@pytest.mark.integration
def test_close_waits_for_delayed_response(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(get("/delay?ms=100") + get("/status/201", "Connection: close\r\n"))
        reader = Reader(sock)
        assert [reader.response()[0] for _ in range(2)] == [200, 201]
        assert reader.at_eof()


@pytest.mark.integration
def test_malformed_request_gets_400_and_close(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(get("/") + b"NOT HTTP AT ALL\r\n\r\n")
        reader = Reader(sock)
        assert reader.response()[0] == 200
        assert reader.response()[0] == 400
        assert reader.at_eof()


# --- time


@pytest.mark.integration
def test_delay_delays_without_blocking_others(port: int) -> None:
    with connect(port) as slow, connect(port) as fast:
        started = time.monotonic()
        slow.sendall(get("/delay?ms=400"))
        fast.sendall(get("/"))
        assert Reader(fast).response()[0] == 200
        assert time.monotonic() - started < 0.3
        assert Reader(slow).response()[0] == 200
        assert time.monotonic() - started >= 0.4


@pytest.mark.integration
def test_delay_invalid(client: httpx.Client) -> None:
    assert client.get("/delay?ms=-5").status_code == 400
    assert client.get("/delay?ms=600001").status_code == 400
    assert client.get("/delay").status_code == 400


@pytest.mark.integration
def test_freeze_stalls_the_whole_server(port: int) -> None:
    with connect(port) as freezer, connect(port) as victim:
        freezer.sendall(get("/__freeze?ms=500"))
        time.sleep(0.1)  # the server is now inside time.sleep
        started = time.monotonic()
        victim.sendall(get("/"))
        assert Reader(victim).response()[0] == 200
        assert time.monotonic() - started >= 0.3
        assert Reader(freezer).response()[0] == 200


# --- stats


@pytest.mark.integration
def test_stats_count_requests_by_path_but_not_admin(client: httpx.Client, port: int) -> None:
    client.get("/")
    client.get("/?a=1")
    client.get("/delay?ms=0")
    client.get("/status/503")
    client.get("/nope")
    client.get("/__stats")
    stats = client.get("/__stats").json()
    assert stats["requests"] == 5
    assert stats["by_path"] == {"/": 2, "/delay": 1, "/status/503": 1, "/nope": 1}
    assert stats["connections"] >= 1
    with connect(port) as sock:
        sock.sendall(get("/"))
        Reader(sock).response()
    assert client.get("/__stats").json()["connections_total"] == 1

    assert client.get("/__reset").status_code == 200
    stats = client.get("/__stats").json()
    assert (stats["requests"], stats["by_path"], stats["connections_total"]) == (0, {}, 0)
    assert stats["connections"] >= 1


@pytest.mark.integration
def test_delayed_request_is_counted_before_it_is_answered(client: httpx.Client, port: int) -> None:
    with connect(port) as sock:
        sock.sendall(get("/delay?ms=500"))
        deadline = time.monotonic() + 0.4
        while client.get("/__stats").json()["requests"] == 0:
            assert time.monotonic() < deadline, "not counted while the delay was pending"
        assert Reader(sock).response()[0] == 200


# --- process and API


@pytest.mark.integration
def test_sigint_exits_cleanly(tmp_path: Path) -> None:
    with running_target(tmp_path, stop=signal.SIGINT) as bound:
        assert httpx.get(f"http://127.0.0.1:{bound}/", timeout=5).text == "ok"


@pytest.mark.integration
def test_server_api_in_process() -> None:
    async def scenario() -> None:
        server = TargetServer()
        assert server.port == 0  # the constructor binds nothing
        await server.start()
        assert server.port != 0
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=5) as http:
            assert (await http.get("/status/418")).status_code == 418
            assert (await http.get("/__stats")).status_code == 200
            stats = server.stats
            assert (stats.requests, stats.by_path, stats.connections) == (1, {"/status/418": 1}, 1)
            await server.close()
        await server.close()  # closing twice is harmless

    asyncio.run(scenario())
