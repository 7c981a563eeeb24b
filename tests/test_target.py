"""The built-in test target, exercised over real loopback sockets.

Most tests share one target process (started exactly as other code starts it) and talk to it with httpx or,
where the byte-level behaviour matters (pipelining, Connection: close, stalls), with raw sockets. The
process's stderr is checked to be empty at the end, so an exception logged inside a callback fails the run.
"""

from __future__ import annotations

import asyncio
import json
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

from target import journeys
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


def post(path: str, body: str = "", extra: str = "") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n{extra}\r\n{body}".encode()


LOGIN = '{"user": "ann", "password": "secret"}'


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


# --- journeys: login, items, a cart and orders (the routes themselves, without sockets)

KEY = b"k" * 32


def answer(
    method: str, path: str, *, headers: dict[str, str] | None = None, body: str = ""
) -> tuple[int, dict[str, object], bytes]:
    target, _, query = path.partition("?")
    route = journeys.route(target.encode())
    assert route is not None, path
    fields = tuple((k.encode(), v.encode()) for k, v in (headers or {}).items())
    request = journeys.Request(method.encode(), target.encode(), query.encode(), fields, body.encode())
    status, document, extra = route(request, KEY, Orders())
    return status, json.loads(document), extra


class Orders:
    def __init__(self) -> None:
        self.n = 0

    def next_order(self) -> int:
        self.n += 1
        return self.n


def test_login_signs_the_user_statelessly() -> None:
    status, document, extra = answer("POST", "/login", body=LOGIN)
    assert status == 200
    token = journeys.sign(KEY, b"token", "ann")
    session = journeys.sign(KEY, b"session", "ann")
    assert document == {"token": token, "user": "ann", "items": answer("GET", "/items")[1]["items"]}
    assert extra == f"Set-Cookie: session={session}; Path=/; HttpOnly\r\n".encode()
    assert token != session  # one cannot stand in for the other
    assert journeys.sign(b"another key" * 3, b"token", "ann") != token


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ('{"user": "ann", "password": "wrong"}', 401),
        ('{"user": "", "password": "x"}', 401),
        ('{"user": "ann"}', 401),
        ('{"user": 5, "password": "x"}', 401),
        ("", 400),
        ("user=ann&password=x", 400),
        ('["ann", "x"]', 400),
    ],
)
def test_login_refused(body: str, status: int) -> None:
    code, document, extra = answer("POST", "/login", body=body)
    assert (code, extra) == (status, b"")
    assert isinstance(document["error"], str)


def test_items() -> None:
    assert answer("GET", "/items")[1] == {
        "items": [{"id": n, "name": f"item-{n}", "price": 10 * n} for n in range(1, 6)]
    }
    assert answer("GET", "/items?n=0")[1] == {"items": []}
    assert len(answer("GET", "/items?a=1&n=100")[1]["items"]) == 100  # type: ignore[arg-type]
    assert [answer("GET", f"/items?n={n}")[0] for n in ("101", "-1", "x", "")] == [400] * 4
    assert answer("GET", "/items/7")[:2] == (200, {"id": 7, "name": "item-7", "price": 70})
    assert [answer("GET", f"/items/{i}")[0] for i in ("x", "0", "-1", "7a", "1234567890", "")] == [404] * 6
    status, _, extra = answer("POST", "/items")
    assert (status, extra) == (405, b"Allow: GET, HEAD\r\n")


TOKEN = journeys.sign(KEY, b"token", "ann")
SESSION = journeys.sign(KEY, b"session", "ann")


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {TOKEN}"},
        {"authorization": f"bearer  {TOKEN} "},
        {"Cookie": f"session={SESSION}"},
        {"Cookie": f"a=1; session={SESSION}; b=2"},
        {"Cookie": "a=1", "cookie": f"session={SESSION}"},
        {"Authorization": "Bearer forged", "Cookie": f"session={SESSION}"},
    ],
)
def test_cart_and_buy_take_the_token_or_the_cookie(headers: dict[str, str]) -> None:
    assert answer("GET", "/cart", headers=headers)[:2] == (200, {"user": "ann", "ok": True})
    assert answer("POST", "/cart", headers=headers, body='{"item": 3}')[:2] == (
        200,
        {"user": "ann", "ok": True, "item": 3},
    )
    assert answer("POST", "/buy/7", headers=headers)[:2] == (200, {"order": 1, "item": 7, "user": "ann"})


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {SESSION}"},  # the cookie's value is not a token
        {"Cookie": f"session={TOKEN}"},
        {"Cookie": f"xsession={SESSION}"},
        {"Authorization": f"Bearer {journeys.sign(b'x' * 32, b'token', 'ann')}"},  # another server's
        {"Authorization": f"Bearer {b'bob'.hex()}.{TOKEN.partition('.')[2]}"},  # bob's name, ann's MAC
        {"Authorization": "Bearer zz.00"},
        {"Authorization": "Bearer ."},
    ],
)
def test_cart_and_buy_refuse_without_a_valid_token_or_cookie(headers: dict[str, str]) -> None:
    assert answer("GET", "/cart", headers=headers)[0] == 401
    assert answer("POST", "/buy/7", headers=headers)[0] == 401


def test_cart_and_buy_refusals() -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert [
        answer("POST", "/cart", headers=auth, body=b)[0] for b in ("[1]", "x", '{"item": "3"}', '{"item": 0}')
    ] == [400] * 4
    assert answer("POST", "/cart", headers=auth, body='{"other": 1}')[:2] == (
        200,
        {"user": "ann", "ok": True},
    )
    assert answer("DELETE", "/cart", headers=auth)[2] == b"Allow: GET, HEAD, POST\r\n"
    assert answer("GET", "/buy/7", headers=auth)[:1] == (405,)
    assert answer("POST", "/buy/x", headers=auth)[0] == 404
    assert answer("POST", "/login", body=" " * (journeys.MAX_BODY + 1))[0] == 413


def test_journey_count_keys_stay_bounded() -> None:
    keys = {journeys.count_key(p) for p in (b"/items/1", b"/items/2", b"/items/x", b"/buy/1", b"/buy/9")}
    assert keys == {b"/items/*", b"/buy/*"}
    assert journeys.count_key(b"/items") == b"/items"
    assert [
        journeys.reads_head(p) for p in (b"/login", b"/cart", b"/buy/1", b"/items", b"/items/1", b"/")
    ] == [True, True, True, False, False, False]


# --- journeys over sockets


def login(client: httpx.Client) -> tuple[str, str]:
    """Log ann in; the token and the session cookie's value."""
    response = client.post("/login", json={"user": "ann", "password": "secret"})
    assert response.status_code == 200
    cookie = response.headers["set-cookie"]
    match = re.fullmatch(r"session=([0-9a-f]+\.[0-9a-f]{32}); Path=/; HttpOnly", cookie)
    assert match is not None, cookie
    client.cookies.clear()  # each test says what it sends
    return response.json()["token"], match.group(1)


@pytest.mark.integration
def test_login_over_http(client: httpx.Client) -> None:
    response = client.post("/login", json={"user": "ann", "password": "secret"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    assert document["user"] == "ann"
    assert document["items"][0] == {"id": 1, "name": "item-1", "price": 10}
    assert re.fullmatch(r"[0-9a-f]+\.[0-9a-f]{32}", document["token"])
    assert "session=" in response.headers["set-cookie"]
    refused = client.post("/login", json={"user": "ann", "password": "wrong"})
    assert (refused.status_code, refused.headers["content-type"]) == (401, "application/json")
    assert "set-cookie" not in refused.headers
    assert client.post("/login", content=b"not json").status_code == 400
    assert client.get("/").text == "ok"  # the connection is still in step


@pytest.mark.integration
def test_items_over_http(client: httpx.Client) -> None:
    listed = client.get("/items", params={"n": 3})
    assert (listed.status_code, listed.headers["content-type"]) == (200, "application/json")
    assert [item["id"] for item in listed.json()["items"]] == [1, 2, 3]
    assert client.get("/items/7").json() == {"id": 7, "name": "item-7", "price": 70}
    assert client.get("/items/seven").status_code == 404


@pytest.mark.integration
def test_cart_and_buy_over_http(client: httpx.Client) -> None:
    token, session = login(client)
    bearer = {"Authorization": f"Bearer {token}"}
    assert client.get("/cart", headers=bearer).json() == {"user": "ann", "ok": True}
    assert client.post("/cart", headers=bearer, json={"item": 2}).json() == {
        "user": "ann",
        "ok": True,
        "item": 2,
    }
    assert client.get("/cart", headers={"Cookie": f"session={session}"}).status_code == 200
    assert (
        client.get("/cart", headers={"Cookie": f"theme=dark; session={session}; lang=en"}).status_code == 200
    )
    orders = [client.post(f"/buy/{n}", headers=bearer).json() for n in (4, 5)]
    assert orders == [{"order": 1, "item": 4, "user": "ann"}, {"order": 2, "item": 5, "user": "ann"}]
    forged = token[:-1] + ("0" if token[-1] != "0" else "1")
    for headers in ({}, {"Authorization": f"Bearer {forged}"}, {"Cookie": f"session={session}x"}):
        refused = client.get("/cart", headers=headers)
        assert (refused.status_code, refused.headers["content-type"]) == (401, "application/json")
        assert client.post("/buy/4", headers=headers).status_code == 401
    stats = client.get("/__stats").json()
    assert stats["by_path"] == {"/login": 1, "/cart": 7, "/buy/*": 5}


@pytest.mark.integration
def test_head_on_journey_routes(client: httpx.Client) -> None:
    token, _ = login(client)
    bearer = {"Authorization": f"Bearer {token}"}
    for path, headers in (("/items", {}), ("/items/3", {}), ("/cart", bearer)):
        full, head = client.get(path, headers=headers), client.head(path, headers=headers)
        assert (head.status_code, head.content) == (200, b"")
        assert head.headers["content-length"] == full.headers["content-length"] != "0"
        assert head.headers["content-type"] == "application/json"
    assert client.head("/cart").status_code == 401
    assert client.head("/login").status_code == 405
    assert client.get("/").text == "ok"


@pytest.mark.integration
def test_one_connection_carries_a_whole_journey(client: httpx.Client, port: int) -> None:
    """Plain requests, then the first that needs a head (the connection switches to reading heads and reads
    it again), then more of both, all kept alive on one connection."""
    _, session = login(client)
    with connect(port) as sock:
        reader = Reader(sock)
        sock.sendall(get("/") + get("/items/2"))
        assert [reader.response()[0] for _ in range(2)] == [200, 200]
        sock.sendall(post("/login", LOGIN))
        status, headers, body = reader.response()
        assert (status, headers["set-cookie"]) == (200, f"session={session}; Path=/; HttpOnly")
        token = json.loads(body)["token"]
        sock.sendall(get("/cart", f"Cookie: session={session}\r\n"))
        assert reader.response()[0] == 200
        sock.sendall(post("/buy/3", extra=f"Authorization: Bearer {token}\r\n"))
        assert json.loads(reader.response()[2]) == {"order": 1, "item": 3, "user": "ann"}
        sock.sendall(get("/cart"))  # the headers of the request before are not this one's
        assert reader.response()[0] == 401
        sock.sendall(get("/") + get("/status/201"))
        assert [reader.response()[:1] for _ in range(2)] == [(200,), (201,)]
    stats = client.get("/__stats").json()
    assert stats["connections_total"] == 1
    assert stats["by_path"] == {"/login": 2, "/": 2, "/items/*": 1, "/cart": 2, "/buy/*": 1, "/status/201": 1}


@pytest.mark.integration
def test_journey_request_pipelined_behind_plain_ones(client: httpx.Client, port: int) -> None:
    _, session = login(client)
    cookie = f"Cookie: session={session}\r\n"
    burst = get("/delay?ms=100") + post("/status/202", "hello") + get("/cart", cookie) + get("/cart")
    with connect(port) as sock:
        sock.sendall(burst + get("/bytes?n=3"))
        reader = Reader(sock)
        assert [reader.response()[0] for _ in range(5)] == [200, 202, 200, 401, 200]
    assert client.get("/__stats").json()["requests"] == 6


@pytest.mark.integration
@pytest.mark.parametrize("cut", [2, 4, 5, 8, 20, 60])
def test_journey_request_split_across_reads(client: httpx.Client, port: int, cut: int) -> None:
    """A request that needs a head, sent in pieces behind a plain one: the read boundary falls inside its
    method name, after it, inside the path, inside the headers or in the body."""
    _, session = login(client)
    request = post("/cart", '{"item": 9}', f"Cookie: session={session}\r\n")
    with connect(port) as sock:
        reader = Reader(sock)
        sock.sendall(get("/") + request[:cut])
        assert reader.response()[0] == 200
        time.sleep(0.05)  # the first piece is read on its own
        sock.sendall(request[cut:])
        status, _, body = reader.response()
        assert (status, json.loads(body)) == (200, {"user": "ann", "ok": True, "item": 9})


@pytest.mark.integration
def test_journey_request_byte_by_byte(port: int) -> None:
    with connect(port) as sock:
        for byte in post("/login", LOGIN):
            sock.sendall(bytes([byte]))
            time.sleep(0.001)
        assert Reader(sock).response()[0] == 200


@pytest.mark.integration
@pytest.mark.parametrize(
    ("body", "answered"), [("x" * 1000, True), ("x y " * 250, False)], ids=["no-space", "spaces"]
)
def test_journey_request_pipelined_behind_a_body_from_an_earlier_read(
    client: httpx.Client, port: int, body: str, answered: bool
) -> None:
    """What a connection may not re-read: its first request that needs a head, pipelined behind a request
    whose body began in an earlier read. The re-read begins inside that body: it finds the request when
    the body's end has no space in it, else the request is refused and the connection closed; the next
    connection is fine."""
    _, session = login(client)
    large = post("/status/201", body)
    with connect(port) as sock:
        sock.sendall(large[:500])
        time.sleep(0.05)
        sock.sendall(large[500:] + get("/cart", f"Cookie: session={session}\r\n"))
        reader = Reader(sock)
        assert reader.response()[0] == 201
        status, headers, _ = reader.response()
        if answered:
            assert (status, headers["connection"]) == (200, "keep-alive")
        else:
            assert (status in (400, 500), headers["connection"]) == (True, "close")
            assert reader.at_eof()
    assert client.get("/cart", headers={"Cookie": f"session={session}"}).status_code == 200


@pytest.mark.integration
def test_journey_head_spanning_reads_beyond_the_bound(client: httpx.Client, port: int) -> None:
    """The other: a head spanning reads, on a connection that reads no heads yet, with more than 16 KiB in
    the reads before its last."""
    _, session = login(client)
    request = get("/cart", f"Cookie: session={session}\r\nX-Pad: {'p' * 30_000}\r\n")
    with connect(port) as sock:
        for start in range(0, len(request), 10_000):
            sock.sendall(request[start : start + 10_000])
            time.sleep(0.05)
        reader = Reader(sock)
        status, headers, _ = reader.response()
        assert (status, headers["connection"]) == (500, "close")
        assert reader.at_eof()
    with connect(port) as sock:  # in one read it is fine
        sock.sendall(request)
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
