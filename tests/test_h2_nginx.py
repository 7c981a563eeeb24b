"""The HTTP/2 engine against real servers: nginx from the system package (over TLS with ALPN, and h2c with
prior knowledge), started by the test on loopback with certificates it makes; and tiny scripted servers for
what nginx will not do on purpose (never answer, close under a request).

The checks are the engine conformance suite's (:mod:`tests.test_engines`): the right status for each request,
every request reported exactly once, timeouts, drain, close, a dead target, a reset. Every load is bounded in
count and in time (:func:`tests.loopback.run`).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agents.engine import Unreachable
from agents.engines import Route, negotiate
from agents.h2_engine import H2Engine
from bench.nginx import find_nginx, running_nginx
from loadgen.endpoint import Tls
from loadgen.profile import RequestSpec
from tests.conftest import read_results
from tests.loopback import RecordingSink, free_port, get, reported, run, wait_for, with_engine
from tests.tls_certs import Certs, make_certs

pytestmark = pytest.mark.integration

NGINX = find_nginx()

HTTP = """\
  log_format conn '$connection $connection_requests $server_protocol $request_uri';
  access_log {dir}/access.log conn;
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_certificate {server_cert};
  ssl_certificate_key {server_key};
  http2_max_concurrent_streams 128;
  server {{
    listen 127.0.0.1:{tls} ssl http2;
    location / {{ return 200 "ok"; }}
    location /missing {{ return 404; }}
    location /created {{ return 201 "made"; }}
    location /big {{ alias {dir}/big.bin; }}
  }}
  server {{
    listen 127.0.0.1:{h2c} http2;
    location / {{ return 200 "ok"; }}
    location /missing {{ return 404; }}
    location /created {{ return 201 "made"; }}
  }}
  server {{
    listen 127.0.0.1:{goaway} http2;
    keepalive_requests 50;
    location / {{ return 200 "ok"; }}
  }}
  server {{
    listen 127.0.0.1:{http11} ssl;
    location / {{ return 200 "ok"; }}
  }}
"""


@dataclass(frozen=True)
class Nginx:
    certs: Certs
    folder: Path
    ports: dict[str, int]

    def url(self, name: str) -> str:
        return f"{'http' if name in ('h2c', 'goaway') else 'https'}://127.0.0.1:{self.ports[name]}"

    def log(self) -> list[list[str]]:
        """The access log so far: connection serial, its request count, protocol, URI per request."""
        path = self.folder / "access.log"
        return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    if NGINX is None:
        pytest.skip("needs nginx (the system package)")
    folder = tmp_path_factory.mktemp("nginx-h2")
    certs = make_certs(folder)
    (folder / "big.bin").write_bytes(b"x" * 300_000)  # beyond the default 64 KiB window
    ports = {name: free_port() for name in ("tls", "h2c", "goaway", "http11")}
    http = HTTP.format(dir=folder, server_cert=certs.server[0], server_key=certs.server[1], **ports)
    with running_nginx(folder, http, ports.values()):  # as root, with `user root;`: the worker reads big.bin
        yield Nginx(certs, folder, ports)


def trusting(nginx: Nginx) -> Tls:
    return Tls(ca_file=str(nginx.certs.ca), ca_data=nginx.certs.ca.read_bytes())


def engine(
    nginx: Nginx, name: str, requests: list[RequestSpec], sink: RecordingSink, **kwargs: object
) -> H2Engine:
    tls = trusting(nginx) if name in ("tls", "http11") else None
    options: dict[str, object] = {"timeout": 2.0, "max_connections": 4, "tls": tls, **kwargs}
    return H2Engine(nginx.url(name), requests, sink, **options)  # type: ignore[arg-type]


REQUESTS = [
    get("/"),
    get("/missing"),
    get("/created"),
    RequestSpec("/created", method="POST", body=b"x" * 10),
]


@pytest.mark.parametrize("name", ["tls", "h2c"])
def test_each_request_gets_its_own_status_once(nginx: Nginx, name: str) -> None:
    sink = RecordingSink()
    n = 200

    async def body(eng: H2Engine) -> None:
        t0 = eng._clock()
        for i in range(n):
            eng.submit(i % len(REQUESTS), t0)
        await wait_for(reported(sink, n), within=4.0)
        assert eng.in_flight == 0
        assert eng.protocol == "h2"

    run(lambda: with_engine(engine(nginx, name, REQUESTS, sink), body))
    assert sorted(o.req for o in sink.outcomes) == sorted(i % len(REQUESTS) for i in range(n))
    expected = {0: 200, 1: 404, 2: 201, 3: 201}
    assert all(o.status == expected[o.req] for o in sink.outcomes), sink.outcomes[:5]


def test_streams_are_multiplexed_on_one_connection(nginx: Nginx) -> None:
    sink = RecordingSink()
    before = len(nginx.log())

    async def body(eng: H2Engine) -> None:
        t0 = eng._clock()
        for _ in range(100):
            eng.submit(0, t0)
        assert eng.in_flight == 100
        await wait_for(reported(sink, 100), within=4.0)
        assert eng.connections == 1 and eng.opened == 1
        assert eng.peak_streams == 100

    run(lambda: with_engine(engine(nginx, "h2c", [get("/")], sink, max_connections=1), body))
    assert sink.statuses == [200] * 100
    lines = nginx.log()[before:]
    assert len(lines) == 100
    assert {line[0] for line in lines} == {lines[0][0]}  # one connection serial carried all of them
    assert {line[2] for line in lines} == {"HTTP/2.0"}
    assert max(int(line[1]) for line in lines) >= 100


def test_streams_per_connection_are_capped(nginx: Nginx) -> None:
    sink = RecordingSink()

    async def body(eng: H2Engine) -> None:
        t0 = eng._clock()
        for _ in range(40):
            eng.submit(0, t0)
        await wait_for(reported(sink, 40), within=4.0)

    run(lambda: with_engine(engine(nginx, "h2c", [get("/")], sink, max_connections=4, max_streams=10), body))
    assert sink.statuses == [200] * 40


def test_an_idle_connection_is_closed_after_the_expiry_and_replaced_when_needed(nginx: Nginx) -> None:
    sink = RecordingSink()

    async def body(eng: H2Engine) -> None:
        eng.submit(0, eng._clock())
        await wait_for(reported(sink, 1), within=4.0)
        assert eng.connections == 1
        await wait_for(lambda: eng.connections == 0, within=2.0)  # idle 0.2 s: closed
        eng.submit(0, eng._clock())
        await wait_for(reported(sink, 2), within=4.0)
        assert eng.opened == 2

    run(lambda: with_engine(engine(nginx, "h2c", [get("/")], sink, idle_expiry=0.2), body))
    assert sink.statuses == [200, 200]


@pytest.mark.parametrize("short_of_cpu", [False, True])
def test_no_connection_is_opened_while_the_agent_is_short_of_cpu(nginx: Nginx, short_of_cpu: bool) -> None:
    sink = RecordingSink()
    cpu = (lambda: 2 * time.monotonic()) if short_of_cpu else (lambda: 0.0)  # two cores' worth, or none

    async def body(eng: H2Engine) -> None:
        await asyncio.sleep(0.2)  # sweeps measure the CPU
        t0 = eng._clock()
        for _ in range(8):
            eng.submit(0, t0)  # one stream per connection: 7 wait
        await wait_for(reported(sink, 8), within=4.0)
        await asyncio.sleep(0.1)  # any connection on its way arrives
        assert (eng.opened == 1) is short_of_cpu, eng.opened

    options = {"max_connections": 8, "max_streams": 1, "cpu_clock": cpu}
    run(lambda: with_engine(engine(nginx, "h2c", [get("/")], sink, **options), body))
    assert sink.statuses == [200] * 8


def test_a_body_beyond_the_default_window_is_read(nginx: Nginx) -> None:
    sink = RecordingSink()

    async def body(eng: H2Engine) -> None:
        t0 = eng._clock()
        for _ in range(5):
            eng.submit(0, t0)
        await wait_for(reported(sink, 5), within=4.0)

    run(lambda: with_engine(engine(nginx, "tls", [get("/big")], sink), body))
    assert sink.statuses == [200] * 5


def test_a_goaway_moves_the_next_streams_to_a_new_connection(nginx: Nginx) -> None:
    """nginx ends a connection after 50 requests with GOAWAY: the streams it took are answered (also those
    answered after the GOAWAY frame), those it left out are ``reset``, each reported once, and later requests
    go on new connections."""
    sink = RecordingSink()
    before = len(nginx.log())

    async def body(eng: H2Engine) -> None:
        t0 = eng._clock()
        for i in range(200):
            eng.submit(0, t0)
            if i % 20 == 19:
                await wait_for(reported(sink, i + 1), within=2.0)
        assert eng.in_flight == 0
        assert eng.opened >= 4

    run(lambda: with_engine(engine(nginx, "goaway", [get("/")], sink, max_connections=2), body))
    assert len(sink.outcomes) == 200
    assert set(sink.statuses) <= {200, 0}
    assert set(sink.categories) <= {"", "reset"}
    answered = sink.statuses.count(200)
    assert answered == len(nginx.log()[before:])  # the streams nginx took, and only those, were answered
    assert answered >= 150  # batches of 20 on connections of 50: at most 10 left out of each GOAWAY


def test_a_server_without_h2_is_refused_by_alpn(nginx: Nginx) -> None:
    sink = RecordingSink()

    async def body() -> None:
        eng = engine(nginx, "http11", [get("/")], sink)
        with pytest.raises(Unreachable, match="did not agree to HTTP/2"):
            await eng.start()
        assert eng.open_failures == {"protocol": 1}
        eng.submit(0, eng._clock())  # each later connection is refused the same way
        await wait_for(reported(sink, 1))
        await eng.aclose()

    run(body)
    assert sink.categories == ["protocol"]


def test_an_untrusted_certificate_fails_verification(nginx: Nginx) -> None:
    sink = RecordingSink()

    async def body() -> None:
        eng = H2Engine(nginx.url("tls"), [get("/")], sink, timeout=2.0, max_connections=2)
        with pytest.raises(Unreachable) as caught:
            await eng.start()
        assert caught.value.category == "tls_verify"
        await eng.aclose()

    run(body)


def test_a_dead_target_fails_as_connect(nginx: Nginx) -> None:
    sink = RecordingSink()
    port = free_port()

    async def body() -> None:
        eng = H2Engine(f"http://127.0.0.1:{port}", [get("/")], sink, timeout=2.0, max_connections=2)
        with pytest.raises(Unreachable):
            await eng.start()
        for _ in range(3):
            eng.submit(0, eng._clock())
        await wait_for(reported(sink, 3))
        assert eng.in_flight == 0
        await eng.aclose()

    run(body)
    assert sink.categories == ["connect"] * 3


async def _silent_server(close: bool) -> asyncio.Server:
    """h2c on loopback that reads and never answers (``close``: closes the connection once it has read a
    request's HEADERS frame)."""

    class Silent(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.buffer = b""

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            at = 24  # the client's connection preface
            while close and len(self.buffer) >= at + 9:
                if self.buffer[at + 3] == 0x1:  # HEADERS
                    self.transport.close()
                    return
                at += 9 + int.from_bytes(self.buffer[at : at + 3], "big")

    return await asyncio.get_running_loop().create_server(Silent, "127.0.0.1", 0)


def test_no_answer_is_a_timeout_counted_from_submit() -> None:
    sink = RecordingSink()

    async def body() -> None:
        server = await _silent_server(close=False)
        port = server.sockets[0].getsockname()[1]
        eng = H2Engine(f"http://127.0.0.1:{port}", [get("/")], sink, timeout=0.3, max_connections=1)
        try:
            await eng.start()
            t0 = eng._clock()
            for _ in range(5):
                eng.submit(0, t0)
            await wait_for(reported(sink, 5), within=2.0)
            assert all(0.3 <= o.done - t0 < 0.6 for o in sink.outcomes)
            assert eng.in_flight == 0
        finally:
            await eng.aclose()
            server.close()

    run(body)
    assert sink.categories == ["timeout"] * 5


def test_a_connection_closed_under_streams_is_a_reset() -> None:
    sink = RecordingSink()

    async def body() -> None:
        server = await _silent_server(close=True)
        port = server.sockets[0].getsockname()[1]
        eng = H2Engine(f"http://127.0.0.1:{port}", [get("/")], sink, timeout=2.0, max_connections=1)
        try:
            await eng.start()
            t0 = eng._clock()
            for _ in range(3):
                eng.submit(0, t0)
            await wait_for(reported(sink, 3), within=2.0)
        finally:
            await eng.aclose()
            server.close()

    run(body)
    assert set(sink.categories) == {"reset"}
    assert len(sink.outcomes) == 3


def test_drain_waits_for_answers_and_close_stops(nginx: Nginx) -> None:
    sink = RecordingSink()

    async def body(eng: H2Engine) -> None:
        t0 = eng._clock()
        for _ in range(50):
            eng.submit(0, t0)
        await eng.drain(eng._clock() + 3.0)
        assert eng.in_flight == 0
        assert len(sink.outcomes) == 50
        await eng.aclose()
        assert eng.connections == 0
        await eng.aclose()  # twice is fine

    run(lambda: with_engine(engine(nginx, "tls", [get("/")], sink), body))
    assert sink.statuses == [200] * 50


def test_streams_beyond_every_connection_wait_and_time_out() -> None:
    """Against a server that never answers: 4 connections of 10 streams each carry 40, the other 10 wait
    (FIFO) for a stream that never frees, and every one of the 50 times out once."""
    sink = RecordingSink()

    async def body() -> None:
        server = await _silent_server(close=False)
        port = server.sockets[0].getsockname()[1]
        eng = H2Engine(
            f"http://127.0.0.1:{port}", [get("/")], sink, timeout=0.5, max_connections=4, max_streams=10
        )
        try:
            await eng.start()
            t0 = eng._clock()
            for _ in range(50):
                eng.submit(0, t0)
            await wait_for(lambda: eng.connections == 4, within=1.0)
            assert eng.opened == 4 and eng.in_flight == 50
            await wait_for(reported(sink, 50), within=2.0)
            assert eng.in_flight == 0
        finally:
            await eng.aclose()
            server.close()

    run(body)
    assert sink.categories == ["timeout"] * 50


# --- whole runs through the CLI


def _run(folder: Path, profile: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    folder.mkdir(exist_ok=True)
    path = folder / "p.toml"
    path.write_text(profile)
    out = folder / "out"
    args = ("run", str(path), "--agents", "1", "--out", str(out), "--no-panel")
    result = subprocess.run(
        [sys.executable, "-m", "loadgen", *args],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        check=False,
    )
    return result, out


def _profile(target: str, load: str, tls: str = "") -> str:
    """Two seconds of 50 requests/s to / and /missing; ``load`` added to ``[load]``."""
    return (
        f'name = "h2"\ntarget = "{target}"\n\n[load]\narrival = "constant"\ntimeout = "5s"\n{load}\n'
        'stages = [{ duration = "0s", rate = 50 }, { duration = "2s", rate = 50 }]\n\n'
        '[[requests]]\npath = "/"\n\n[[requests]]\npath = "/missing"\n' + (f"\n[tls]\n{tls}\n" if tls else "")
    )


def test_a_run_with_http_version_2_speaks_h2_to_nginx(nginx: Nginx, tmp_path: Path) -> None:
    before = len(nginx.log())
    load = 'http_version = "2"\nmax_connections = 2'
    result, out = _run(tmp_path, _profile(nginx.url("tls"), load, tls=f'ca_file = "{nginx.certs.ca}"'))
    assert result.returncode in (0, 1), result.stderr  # 1: no thresholds failed; /missing is a 404
    res = read_results(out)
    assert res["totals"]["ok"] + res["totals"]["failed"] == 100, res["totals"]
    assert set(res["errors"]) == {"http_404"}  # /missing; no transport error
    assert 1 <= res["connections"]["opened"] <= 2
    assert res["connections"]["protocols"] == {"h2": res["connections"]["opened"]}
    assert res["connections"]["peak_streams"] >= 1
    assert [a["protocol"] for a in res["agents"]] == ["h2"]
    lines = nginx.log()[before:]
    assert len(lines) == 100
    assert {line[2] for line in lines} == {"HTTP/2.0"}
    assert {line[3] for line in lines} == {"/", "/missing"}


def test_a_run_with_http_version_2_on_a_server_without_h2_counts_protocol(
    nginx: Nginx, tmp_path: Path
) -> None:
    result, out = _run(
        tmp_path, _profile(nginx.url("http11"), 'http_version = "2"', f'ca_file = "{nginx.certs.ca}"')
    )
    assert "Traceback" not in result.stderr
    assert "did not agree to HTTP/2" in result.stdout + result.stderr
    if (out / "results.json").exists():
        res = read_results(out)
        assert set(res["errors"]) == {"protocol"} and res["connections"]["opened"] == 0


@pytest.mark.parametrize(
    ("name", "protocol", "logged"), [("tls", "h2", "HTTP/2.0"), ("http11", "http/1.1", "HTTP/1.1")]
)
def test_auto_speaks_what_the_server_agrees_by_alpn(
    nginx: Nginx, tmp_path: Path, name: str, protocol: str, logged: str
) -> None:
    before = len(nginx.log())
    tls = f'ca_file = "{nginx.certs.ca}"'
    result, out = _run(tmp_path, _profile(nginx.url(name), 'http_version = "auto"', tls))
    assert result.returncode in (0, 1), result.stderr
    res = read_results(out)
    assert res["totals"]["ok"] + res["totals"]["failed"] == 100, res["totals"]
    assert res["connections"]["protocols"] == {protocol: res["connections"]["opened"]}
    assert [a["protocol"] for a in res["agents"]] == [protocol]
    lines = nginx.log()[before:]
    assert len(lines) == 100 and {line[2] for line in lines} == {logged}


def test_negotiate_asks_by_alpn_and_falls_back_to_http_1_1(nginx: Nginx) -> None:
    route = Route(trusting(nginx))

    async def body() -> None:
        assert await negotiate(nginx.url("tls"), route, 2.0) == "2"
        assert await negotiate(nginx.url("http11"), route, 2.0) == "1.1"
        assert await negotiate(nginx.url("h2c"), route, 2.0) == "1.1"  # h2c only when asked for
        dead = f"https://127.0.0.1:{free_port()}"
        assert await negotiate(dead, route, 2.0) == "1.1"  # unreachable: HTTP/1.1, its failures counted
        untrusted = Route(None)  # the system's trust: the test CA is unknown
        assert await negotiate(nginx.url("tls"), untrusted, 2.0) == "1.1"

    run(body)


@pytest.mark.parametrize(
    ("load", "field"),
    [
        ('http_version = "3"', "load.http_version"),
        ("max_streams_per_connection = 10", "load.max_streams_per_connection"),  # on HTTP/1.1
        ('http_version = "2"\nmax_streams_per_connection = 0', "load.max_streams_per_connection"),
    ],
)
def test_what_http2_does_not_take_is_refused_naming_the_field(tmp_path: Path, load: str, field: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(_profile("http://127.0.0.1:9", load))
    result = subprocess.run(
        [sys.executable, "-m", "loadgen", "plan", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert field in result.stderr + result.stdout
