"""The HTTP/2 engine's slots (:class:`agents.engine.Slots`): requests made while the run goes on, and responses
read in full for the flow steps that need them, against real nginx over h2c and over TLS (ALPN); and a user
journey run through the CLI over HTTP/2, its captured values checked in nginx's access log.

The HTTP/1.1 equivalents are in :mod:`tests.test_engine_slots`. This module starts its own nginx (locations
that set headers and cookies, echo what they were sent, and a body past ``READ_LIMIT``), with the helpers of
:mod:`tests.test_h2_nginx`. Every load is bounded in count and in time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hpack import Decoder

from agents.engine import HEAD, READ, READ_LIMIT
from agents.h2_engine import H2Engine
from agents.http_request import RequestHead
from bench.nginx import running_nginx
from loadgen.profile import RequestSpec
from tests.loopback import RecordingSink, free_port, get, reported, run, wait_for, with_engine
from tests.test_h2_nginx import NGINX, Nginx, _run, trusting
from tests.tls_certs import make_certs

pytestmark = pytest.mark.integration

LOCATIONS = """\
    location / {{ return 200 "ok"; }}
    location /token {{
      default_type application/json;
      add_header X-Token abc123;
      add_header Set-Cookie "session=s1; Path=/";
      return 200 '{{"token":"tok-42"}}';
    }}
    location /item/ {{ return 200 "item"; }}
    location /echo {{ return 201 "$request_method $request_uri $http_cookie"; }}
    location /huge {{ alias {dir}/huge.bin; }}
"""

HTTP = """\
  log_format slots '$server_protocol|$request_method|$request_uri|$http_x_token|$http_cookie';
  access_log {dir}/access.log slots;
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_certificate {server_cert};
  ssl_certificate_key {server_key};
  server {{
    listen 127.0.0.1:{tls} ssl http2;
{locations}  }}
  server {{
    listen 127.0.0.1:{h2c} http2;
{locations}  }}
"""

HUGE = bytes(range(256)) * ((READ_LIMIT + 300_000) // 256)
"""A body past READ_LIMIT, patterned, so that what is kept can be told to be its beginning."""


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    if NGINX is None:
        pytest.skip("needs nginx (the system package)")
    folder = tmp_path_factory.mktemp("nginx-h2-slots")
    certs = make_certs(folder)
    (folder / "huge.bin").write_bytes(HUGE)
    ports = {name: free_port() for name in ("tls", "h2c")}
    http = HTTP.format(
        dir=folder,
        server_cert=certs.server[0],
        server_key=certs.server[1],
        locations=LOCATIONS.format(dir=folder),
        **ports,
    )
    with running_nginx(folder, http, ports.values()):  # as root, with `user root;`: the worker reads huge.bin
        yield Nginx(certs, folder, ports)


def access_log(nginx: Nginx) -> list[list[str]]:
    """Protocol, method, URI, X-Token header and Cookie header of each request so far ("-" when absent)."""
    path = nginx.folder / "access.log"
    return [line.split("|") for line in path.read_text().splitlines()] if path.exists() else []


class ReadingSink(RecordingSink):
    """Records, with each response, what the engine's reply held when the sink heard of it."""

    def __init__(self) -> None:
        super().__init__()
        self.engine: H2Engine | None = None
        self.replies: list[tuple[int, list[tuple[bytes, bytes]], bytes]] = []

    def response(self, req: int, intended: float, sent: float, done: float, status: int) -> None:
        super().response(req, intended, sent, done, status)
        assert self.engine is not None
        reply = self.engine.reply
        self.replies.append((req, reply.headers, reply.body))


def engine(nginx: Nginx, name: str, requests: list[RequestSpec], sink: ReadingSink) -> H2Engine:
    tls = trusting(nginx) if name == "tls" else None
    eng = H2Engine(nginx.url(name), requests, sink, timeout=3.0, max_connections=2, tls=tls)
    sink.engine = eng
    return eng


def head(method: str, target: str, *headers: tuple[str, str]) -> RequestHead:
    return RequestHead(method, target, (("Host", "127.0.0.1"), *headers), b"")


@pytest.mark.parametrize("name", ["h2c", "tls"])
def test_slots_send_what_they_are_given_and_read_what_is_flagged(nginx: Nginx, name: str) -> None:
    sink = ReadingSink()
    before = len(access_log(nginx))
    eng = engine(nginx, name, [get("/")], sink)
    base = eng.reserve(3)
    assert base == 1

    async def body(eng: H2Engine) -> None:
        eng.put(base, eng.prepare(head("GET", "/echo?x=1", ("Cookie", "s=2"))), READ)
        eng.put(base + 1, eng.prepare(head("GET", "/token")), READ)
        eng.put(base + 2, eng.prepare(head("HEAD", "/token")), HEAD | READ)
        for req in (base, 0, base + 1, base + 2):
            eng.submit(req, eng._clock())
            await eng.drain(eng._clock() + 2)
        # A number is given a new request between two uses, as a flow's next step; not READ this time.
        eng.put(base, eng.prepare(head("GET", "/item/again", ("X-Token", "t1"))), 0)
        eng.submit(base, eng._clock())
        await eng.drain(eng._clock() + 2)
        assert eng.in_flight == 0

    run(lambda: with_engine(eng, body))
    lines = access_log(nginx)[before:]
    assert [(m, uri) for _, m, uri, _, _ in lines] == [
        ("GET", "/echo?x=1"),
        ("GET", "/"),
        ("GET", "/token"),
        ("HEAD", "/token"),
        ("GET", "/item/again"),
    ]
    assert {line[0] for line in lines} == {"HTTP/2.0"}
    assert lines[0][4] == "s=2" and lines[4][3] == "t1"
    assert [o.req for o in sink.outcomes] == [base, 0, base + 1, base + 2, base]
    assert sink.statuses == [201, 200, 200, 200, 200]
    echo, plain, token, peek, again = sink.replies
    assert echo[2] == b"GET /echo?x=1 s=2"
    assert (b"content-length", b"17") in echo[1]
    assert not any(k.startswith(b":") for k, _ in echo[1])  # no pseudo-header
    assert token[2] == b'{"token":"tok-42"}'
    assert (b"x-token", b"abc123") in token[1] and (b"set-cookie", b"session=s1; Path=/") in token[1]
    assert peek[2] == b""  # a HEAD response ends with its headers
    assert (b"x-token", b"abc123") in peek[1]
    # A request not flagged READ leaves the reply as it was: nothing was kept for it.
    assert plain[1] is echo[1] and plain[2] is echo[2]
    assert again[1] is peek[1] and again[2] is peek[2]


@pytest.mark.parametrize("name", ["h2c", "tls"])
def test_a_read_body_is_kept_up_to_the_limit_and_the_rest_is_read_and_dropped(
    nginx: Nginx, name: str
) -> None:
    sink = ReadingSink()
    eng = engine(nginx, name, [get("/huge")], sink)
    base = eng.reserve(1)

    async def body(eng: H2Engine) -> None:
        eng.put(base, eng.prepare(head("GET", "/huge")), READ)
        for req in (base, 0, base):  # READ, not READ, READ again: the connection stays good
            eng.submit(req, eng._clock())
            await wait_for(reported(sink, len(sink.outcomes) + 1), within=4.0)
        assert eng.in_flight == 0
        assert eng.opened == 1

    run(lambda: with_engine(eng, body))
    assert sink.statuses == [200, 200, 200]  # each response counted once
    first, plain, second = sink.replies
    assert len(first[2]) == READ_LIMIT and first[2] == HUGE[:READ_LIMIT]
    assert (b"content-length", str(len(HUGE)).encode()) in first[1]
    assert plain[2] is first[2]  # nothing kept for the request that is not READ
    assert second[2] == HUGE[:READ_LIMIT]


def test_many_read_and_plain_streams_at_once_each_get_their_own(nginx: Nginx) -> None:
    """Streams multiplexed on one connection: each READ one is handed its own response."""
    sink = ReadingSink()
    eng = engine(nginx, "h2c", [get("/")], sink)
    n = 60
    base = eng.reserve(n)

    async def body(eng: H2Engine) -> None:
        for i in range(n):
            flags = READ if i % 2 == 0 else 0
            eng.put(base + i, eng.prepare(head("GET", f"/echo?i={i}")), flags)
        t0 = eng._clock()
        for i in range(n):
            eng.submit(base + i, t0)
            eng.submit(0, t0)
        await wait_for(reported(sink, 2 * n), within=4.0)
        assert eng.in_flight == 0

    run(lambda: with_engine(eng, body))
    read = {req - base: b for req, _, b in sink.replies if req >= base and (req - base) % 2 == 0}
    assert read == {i: f"GET /echo?i={i} ".encode() for i in range(0, n, 2)}
    assert sorted(o.status for o in sink.outcomes) == [200] * n + [201] * n


def test_the_profiles_requests_and_prepared_heads_are_one_form() -> None:
    """The constructor builds the profile's requests as ``prepare(head_of(spec))`` does; the target's path
    prefix and port are in the head; a value that HTTP/2 cannot carry is refused when prepared."""
    spec = RequestSpec("/x", method="POST", headers=(("X-A", "1"), ("Connection", "close")), body=b"hi")
    eng = H2Engine("http://127.0.0.1:8080/base", [spec], RecordingSink(), timeout=1.0, max_connections=1)
    made = eng.head_of(spec)
    assert made.target == "/base/x" and ("Host", "127.0.0.1:8080") in made.headers
    assert eng.prepared(0) == eng.prepare(made)
    block, body = eng.prepared(0)
    headers = [tuple(field) for field in Decoder().decode(block, raw=True)]  # as the server reads it
    assert headers[:4] == [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":authority", b"127.0.0.1:8080"),
        (b":path", b"/base/x"),
    ]
    assert (b"x-a", b"1") in headers and b"connection" not in {k for k, _ in headers}
    assert body == b"hi"
    assert eng.prefix == "/base"
    with pytest.raises(ValueError):
        eng.prepare(RequestHead("GET", "/", (("X-Bad", "caf\u00e9\u2603"),), b""))


# --- a user journey through the CLI


JOURNEY = """\
name = "h2-journey"
target = "{url}"

[load]
arrival = "constant"
timeout = "5s"
http_version = "2"
max_connections = 2
stages = [{{ duration = "0s", rate = 20 }}, {{ duration = "2s", rate = 20 }}]

[[flows]]
name = "login"

[[flows.steps]]
name = "token"
path = "/token"
capture = {{ token = "$.token", sid = "header:X-Token" }}
check = {{ status = [200] }}

[[flows.steps]]
name = "item"
path = "/item/{{{{ token }}}}"
headers = {{ "X-Token" = "{{{{ sid }}}}" }}

[[flows.steps]]
name = "peek"
method = "HEAD"
path = "/token"
capture = {{ again = "header:x-token" }}
{tls}"""


def conserved(entry: dict[str, Any]) -> None:
    assert entry["scheduled"] == entry["ok"] + entry["failed"] + entry.get("dropped", 0) + entry.get(
        "in_flight_at_end", 0
    )


@pytest.mark.parametrize("name", ["h2c", "tls"])
def test_a_journey_runs_over_http2_and_carries_its_captures(nginx: Nginx, tmp_path: Path, name: str) -> None:
    """Three steps over HTTP/2: a JSON body and a header captured in the first are sent by the second (in its
    path and a header, with the cookie the first set), and a HEAD step reads its headers."""
    before = len(access_log(nginx))
    tls = f'\n[tls]\nca_file = "{nginx.certs.ca}"\n' if name == "tls" else ""
    result, out = _run(tmp_path, JOURNEY.format(url=nginx.url(name), tls=tls))
    assert result.returncode == 0, result.stdout + result.stderr
    res = json.loads((out / "results.json").read_text())
    totals = res["totals"]
    conserved(totals)
    assert totals["failed"] == 0 and totals["dropped"] == 0 and totals["in_flight_at_end"] == 0
    flow = res["flows"]["login"]
    conserved(flow)
    assert flow["steps"] == ["login.token", "login.item", "login.peek"]
    assert flow["ok"] == flow["scheduled"] == totals["scheduled"] == 40
    for step in flow["steps"]:
        assert res["requests"][step]["ok"] == res["requests"][step]["scheduled"] == flow["ok"]
    assert not res.get("errors")
    lines = access_log(nginx)[before:]
    assert {line[0] for line in lines} == {"HTTP/2.0"}
    by_kind: dict[tuple[str, str], list[list[str]]] = {}
    for line in lines:
        by_kind.setdefault((line[1], line[2]), []).append(line)
    assert {k: len(v) for k, v in by_kind.items()} == {
        ("GET", "/token"): 40,
        ("GET", "/item/tok-42"): 40,  # the body's token, in the path
        ("HEAD", "/token"): 40,
    }
    # The header's value went back as a header, and the cookie the first step set came back too.
    assert {(line[3], line[4]) for line in by_kind["GET", "/item/tok-42"]} == {("abc123", "session=s1")}
    assert {line[4] for line in by_kind["HEAD", "/token"]} == {"session=s1"}


CODE_JOURNEY = """\
name = "h2-code"
target = "{url}"

[load]
arrival = "constant"
timeout = "5s"
http_version = "2"
stages = [{{ duration = "0s", rate = 20 }}, {{ duration = "1s", rate = 20 }}]

[[flows]]
name = "py"
function = "h2flows:go"
steps = ["token", "peek", "echo"]
"""

CODE = """\
from loadgen.session import Session


async def go(s: Session) -> None:
    r = await s.get("/token", name="token")
    assert r.header("X-Token") == "abc123", r.headers
    assert ("x-token", "abc123") in r.headers  # as received: lower case over HTTP/2
    peek = await s.request("HEAD", "/token", name="peek")
    assert peek.body == b"" and peek.header("x-token") == "abc123"
    echo = await s.get("/echo/" + r.json()["token"], name="echo", headers={"X-Token": r.header("x-token")})
    assert echo.status == 201 and echo.text == "GET /echo/tok-42 session=s1", echo.text
"""


def test_a_flow_written_in_python_runs_over_http2(
    nginx: Nginx, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session's responses carry headers and bodies over HTTP/2 too; a failed assertion in the flow
    would count it failed (python:AssertionError)."""
    (tmp_path / "h2flows.py").write_text(CODE)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    )
    before = len(access_log(nginx))
    result, out = _run(tmp_path / "run", CODE_JOURNEY.format(url=nginx.url("h2c")))
    assert result.returncode == 0, result.stdout + result.stderr
    res = json.loads((out / "results.json").read_text())
    flow = res["flows"]["py"]
    assert flow["ok"] == flow["scheduled"] == res["totals"]["scheduled"] == 20, (flow, res.get("errors"))
    for step in flow["steps"]:
        assert res["requests"][step]["ok"] == 20
    lines = access_log(nginx)[before:]
    assert sorted((line[1], line[2], line[3]) for line in lines) == sorted(
        [("GET", "/token", "-"), ("HEAD", "/token", "-"), ("GET", "/echo/tok-42", "abc123")] * 20
    )
