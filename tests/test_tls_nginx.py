"""TLS, addressing and auth against a real server: nginx from the system package, started by the test as the
current user on loopback, with certificates the test makes (:mod:`tests.tls_certs`).

Each engine is driven directly (``make``: fast and httpx, with the profile's ``[tls]`` and ``resolve`` as the
agent gives them), and a few whole runs go through the CLI (coordinator, agent, results.json). Every request
loop is bounded in count and in time (:func:`tests.loopback.run`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agents.fast_engine import FastEngine
from agents.httpx_engine import HttpxEngine
from agents.tls import ResumingContext, client_context
from bench.nginx import find_nginx, running_nginx
from loadgen.endpoint import Tls, connect_address, parse_resolve, parse_tls
from loadgen.profile import RequestSpec
from tests.conftest import read_results
from tests.loopback import RecordingSink, free_port, get, run, with_engine
from tests.tls_certs import Certs, make_certs

pytestmark = pytest.mark.integration

NGINX = find_nginx()
TOKEN = "s3cret-token-for-the-test"

AnyEngine = FastEngine | HttpxEngine
EngineClass = type[FastEngine] | type[HttpxEngine]


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


IPV6 = _has_ipv6_loopback()

HTTP = """\
  access_log off;
  log_format reuse '$ssl_session_reused';
  ssl_session_cache shared:tls:1m;
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_certificate {server_cert};
  ssl_certificate_key {server_key};

  # main: the CA's certificate; /vhost answers only on the api.loadgen.test vhost reached with that SNI,
  # /auth (on either) only with the test's bearer token
  server {{
    listen 127.0.0.1:{main} ssl default_server;
    server_name localhost;
    location / {{ return 200 "ok"; }}
    location /vhost {{ return 404; }}
    location /auth {{
      if ($http_authorization != "Bearer {token}") {{ return 401; }}
      return 200 "authorized";
    }}
  }}
  server {{
    listen 127.0.0.1:{main} ssl;
    server_name api.loadgen.test;
    location /vhost {{
      if ($ssl_server_name != "api.loadgen.test") {{ return 421; }}
      return 200 "api";
    }}
    location /auth {{
      if ($http_authorization != "Bearer {token}") {{ return 401; }}
      return 200 "authorized";
    }}
  }}
  # a self-signed certificate
  server {{
    listen 127.0.0.1:{self_signed} ssl;
    ssl_certificate {self_cert};
    ssl_certificate_key {self_key};
    location / {{ return 200 "ok"; }}
  }}
  # TLS 1.2 only
  server {{
    listen 127.0.0.1:{tls12} ssl;
    ssl_protocols TLSv1.2;
    location / {{ return 200 "ok"; }}
  }}
  # a client certificate signed by the CA required
  server {{
    listen 127.0.0.1:{client_cert} ssl;
    ssl_client_certificate {ca};
    ssl_verify_client on;
    location / {{ return 200 "ok"; }}
  }}
  # a new connection for every request, each logged with whether its session was resumed
  server {{
    listen 127.0.0.1:{one_shot} ssl;
    keepalive_timeout 0;
    access_log {dir}/reuse.log reuse;
    location / {{ return 200 "ok"; }}
  }}
  # plain HTTP: /vhost answers only on the vhost named by the Host header
  server {{
    listen 127.0.0.1:{plain} default_server;
    {listen_v6}
    location / {{ return 200 "ok"; }}
    location /vhost {{ return 404; }}
  }}
  server {{
    listen 127.0.0.1:{plain};
    server_name override.loadgen.test;
    location /vhost {{ return 200 "vhost"; }}
  }}
"""


@dataclass(frozen=True)
class Nginx:
    certs: Certs
    folder: Path
    ports: dict[str, int]

    def url(self, name: str, host: str = "127.0.0.1", scheme: str = "https") -> str:
        return f"{scheme}://{host}:{self.ports[name]}"

    def reused(self) -> list[str]:
        """What nginx logged for each request on the one-shot server: "r" (resumed) or "." (full)."""
        path = self.folder / "reuse.log"
        return path.read_text().split() if path.exists() else []


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    if NGINX is None:
        pytest.skip("needs nginx (the system package)")
    folder = tmp_path_factory.mktemp("nginx-tls")
    certs = make_certs(folder)
    names = ("main", "self_signed", "tls12", "client_cert", "one_shot", "plain")
    ports = {name: free_port() for name in names}
    http = HTTP.format(
        dir=folder,
        token=TOKEN,
        server_cert=certs.server[0],
        server_key=certs.server[1],
        self_cert=certs.self_signed[0],
        self_key=certs.self_signed[1],
        ca=certs.ca,
        listen_v6=f"listen [::1]:{ports['plain']};" if IPV6 else "",
        **ports,
    )
    with running_nginx(folder, http, ports.values()):
        yield Nginx(certs, folder, ports)


@pytest.fixture(params=[FastEngine, HttpxEngine], ids=["fast", "httpx"])
def make(request: pytest.FixtureRequest) -> EngineClass:
    cls: EngineClass = request.param
    return cls


def exchange(
    make: EngineClass,
    target: str,
    requests: list[RequestSpec],
    *,
    tls: Tls | None = None,
    resolve: dict[str, str] | None = None,
    count: int = 5,
    expect_start: bool = True,
) -> tuple[RecordingSink, AnyEngine]:
    """``count`` requests (one at a time, request 0 of ``requests``) through a fresh engine configured as the
    agent configures it; the sink and the closed engine. ``expect_start``: the first connection opens."""
    sink = RecordingSink()
    scheme_host_port = target.split("://", 1)[1].rsplit(":", 1)
    host, port = scheme_host_port[0].strip("[]"), int(scheme_host_port[1].split("/")[0])
    connect_to = connect_address(parse_resolve(resolve), host, port) if resolve else None
    extra = {"trust_env": False} if make is HttpxEngine else {}  # no proxy from the environment
    engine = make(
        target, requests, sink, timeout=5, max_connections=2, tls=tls, connect_to=connect_to, **extra
    )

    async def test() -> None:
        try:
            await engine.start()
        except ConnectionError:
            assert not expect_start, "the first connection did not open"
        else:
            assert expect_start, "the first connection opened"

        async def body(engine: AnyEngine) -> None:
            for _ in range(count):
                engine.submit(0, time.monotonic())
                await engine.drain(time.monotonic() + 5)
            assert engine.in_flight == 0

        await with_engine(engine, body, start=False)

    run(test)
    return sink, engine


def tls(**table: object) -> Tls:
    return parse_tls(table)


# --- verification


def test_a_certificate_from_the_profiles_ca_verifies(make: EngineClass, nginx: Nginx) -> None:
    sink, engine = exchange(
        make, nginx.url("main", "localhost"), [get("/")], tls=tls(ca_file=str(nginx.certs.ca))
    )
    assert sink.statuses == [200] * 5
    assert engine.opened == 1 and engine.open_failures == {}


def test_without_the_ca_the_certificate_fails_as_tls_verify(make: EngineClass, nginx: Nginx) -> None:
    """The system's CAs do not know the test CA, nor a self-signed certificate: every request fails as
    ``tls_verify``, the first connection's failure counted too."""
    for url in (nginx.url("main", "localhost"), nginx.url("self_signed", "localhost")):
        sink, engine = exchange(make, url, [get("/")], expect_start=False)
        assert sink.categories == ["tls_verify"] * 5
        assert engine.opened == 0
        assert engine.open_failures == {"tls_verify": 6}  # the first connection's, then one per request


def test_verify_false_accepts_a_self_signed_certificate(make: EngineClass, nginx: Nginx) -> None:
    sink, _ = exchange(make, nginx.url("self_signed", "localhost"), [get("/")], tls=tls(verify=False))
    assert sink.statuses == [200] * 5


def test_a_server_name_the_certificate_does_not_carry_fails_as_tls_verify(
    make: EngineClass, nginx: Nginx
) -> None:
    options = tls(ca_file=str(nginx.certs.ca), server_name="wrong.loadgen.test")
    sink, _ = exchange(make, nginx.url("main", "localhost"), [get("/")], tls=options, expect_start=False)
    assert sink.categories == ["tls_verify"] * 5


def test_min_version_above_the_servers_fails_as_tls_handshake(make: EngineClass, nginx: Nginx) -> None:
    ca = str(nginx.certs.ca)
    sink, _ = exchange(make, nginx.url("tls12", "localhost"), [get("/")], tls=tls(ca_file=ca))
    assert sink.statuses == [200] * 5  # TLS 1.2 is fine by default
    options = tls(ca_file=ca, min_version="1.3")
    sink, engine = exchange(
        make, nginx.url("tls12", "localhost"), [get("/")], tls=options, expect_start=False
    )
    assert sink.categories == ["tls_handshake"] * 5
    assert engine.open_failures == {"tls_handshake": 6}


# --- client certificates


def test_a_client_certificate_is_presented(make: EngineClass, nginx: Nginx) -> None:
    cert, key = nginx.certs.client
    options = tls(ca_file=str(nginx.certs.ca), cert=str(cert), key=str(key))
    sink, _ = exchange(make, nginx.url("client_cert", "localhost"), [get("/")], tls=options)
    assert sink.statuses == [200] * 5


def test_without_the_client_certificate_nginx_answers_400(make: EngineClass, nginx: Nginx) -> None:
    """nginx completes the handshake without a client certificate and answers 400 ("No required SSL
    certificate was sent") over HTTP: a response, counted as ``http_400`` by the recorder, not a TLS error."""
    sink, _ = exchange(
        make, nginx.url("client_cert", "localhost"), [get("/")], tls=tls(ca_file=str(nginx.certs.ca))
    )
    assert sink.statuses == [400] * 5


# --- addressing


def test_resolve_connects_elsewhere_and_keeps_the_urls_sni_and_host(make: EngineClass, nginx: Nginx) -> None:
    """api.loadgen.test does not resolve; ``resolve`` sends its connections to 127.0.0.1, and nginx's
    api.loadgen.test vhost (chosen by Host, checking the SNI) answers /vhost."""
    port = nginx.ports["main"]
    url = f"https://api.loadgen.test:{port}"
    options = tls(ca_file=str(nginx.certs.ca))
    sink, _ = exchange(
        make, url, [get("/vhost")], tls=options, resolve={f"api.loadgen.test:{port}": f"127.0.0.1:{port}"}
    )
    assert sink.statuses == [200] * 5
    sink, _ = exchange(make, url, [get("/vhost")], tls=options, expect_start=False)  # without: no such name
    assert sink.categories == ["dns"] * 5


def test_a_host_header_in_the_request_picks_the_vhost(make: EngineClass, nginx: Nginx) -> None:
    plain = nginx.url("plain", scheme="http")
    sink, _ = exchange(make, plain, [get("/vhost")])
    assert sink.statuses == [404] * 5
    override = RequestSpec("/vhost", headers={"Host": "override.loadgen.test"})
    sink, _ = exchange(make, plain, [override])
    assert sink.statuses == [200] * 5


@pytest.mark.skipif(not IPV6, reason="this machine has no IPv6 loopback (::1)")
def test_an_ipv6_target(make: EngineClass, nginx: Nginx) -> None:
    sink, _ = exchange(make, f"http://[::1]:{nginx.ports['plain']}", [get("/")])
    assert sink.statuses == [200] * 5


# --- session resumption


def test_sessions_are_resumed_unless_turned_off(make: EngineClass, nginx: Nginx) -> None:
    """nginx closes each connection after its response, so every request opens one; it logs whether the
    session was resumed. With resumption (the default) every connection after the first resumes one; with
    ``session_resumption = false`` none does."""
    ca = str(nginx.certs.ca)
    before = len(nginx.reused())
    exchange(make, nginx.url("one_shot", "localhost"), [get("/")], tls=tls(ca_file=ca), count=8)
    resumed = nginx.reused()[before:]
    assert len(resumed) == 8
    assert resumed.count("r") >= 6, resumed  # the first connection has nothing to resume
    before = len(nginx.reused())
    exchange(
        make,
        nginx.url("one_shot", "localhost"),
        [get("/")],
        tls=tls(ca_file=ca, session_resumption=False),
        count=8,
    )
    assert nginx.reused()[before:] == ["."] * 8


# --- whole runs: coordinator, agent, results.json


def _run(
    tmp_path: Path, profile: str, env: dict[str, str], engine: str
) -> tuple[subprocess.CompletedProcess[str], Path]:
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "p.toml"
    path.write_text(profile)
    out = tmp_path / "out"
    args = ("run", str(path), "--agents", "1", "--engine", engine, "--out", str(out), "--no-panel")
    result = subprocess.run(
        [sys.executable, "-m", "loadgen", *args],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        check=False,
    )
    return result, out


def _profile(target: str, extra: str, path: str = "/", tls: str = "") -> str:
    """Two seconds of 20 requests/s to ``path``; ``extra`` at the top level, ``tls`` in ``[tls]``."""
    return (
        f'name = "tls"\ntarget = "{target}"\n{extra}\n'
        '[load]\narrival = "constant"\ntimeout = "5s"\nstages = [{ duration = "0s", rate = 20 }, { duration = "2s", rate = 20 }]\n\n'
        f'[[requests]]\npath = "{path}"\n' + (f"\n[tls]\n{tls}\n" if tls else "")
    )


@pytest.mark.parametrize("engine", ["fast", "httpx"])
def test_a_run_with_tls_resolve_and_a_bearer_token_from_the_environment(
    engine: str, nginx: Nginx, tmp_path: Path
) -> None:
    """api.loadgen.test resolves only through ``resolve``; its vhost answers /auth only with the token, which
    comes from the coordinator's environment and is written nowhere."""
    port = nginx.ports["main"]
    extra = (
        f'resolve = {{ "api.loadgen.test:{port}" = "127.0.0.1:{port}" }}\n'
        'auth = { bearer = "{{ env.LOADGEN_TEST_TOKEN }}" }\n'
    )
    profile = _profile(
        f"https://api.loadgen.test:{port}", extra, "/auth", tls=f'ca_file = "{nginx.certs.ca}"'
    )
    result, out = _run(tmp_path, profile, {"LOADGEN_TEST_TOKEN": TOKEN}, engine)
    assert result.returncode == 0, result.stderr
    res = read_results(out)
    assert res["totals"]["ok"] == 40 and res["errors"] == {}
    assert res["connections"]["opened"] >= 1 and res["connections"]["failed"] == {}
    assert "Connections opened:" in result.stdout
    for file in [*out.rglob("*"), tmp_path / "p.toml"]:
        if file.is_file():
            assert TOKEN.encode() not in file.read_bytes(), file
    assert TOKEN not in result.stdout + result.stderr


def test_a_run_without_verification_warns_and_one_that_cannot_verify_counts_tls_verify(
    nginx: Nginx, tmp_path: Path
) -> None:
    url = nginx.url("self_signed", "localhost")
    result, out = _run(tmp_path / "a", _profile(url, "", tls="verify = false"), {}, "fast")
    assert result.returncode == 0, result.stderr
    res = read_results(out)
    assert res["totals"]["ok"] == 40
    assert [w["code"] for w in res["warning_codes"]] == ["tls_unverified"]
    assert "TLS CERTIFICATES NOT VERIFIED" in result.stdout
    result, out = _run(tmp_path / "b", _profile(url, ""), {}, "fast")
    res = read_results(out)
    assert res["errors"] == {"tls_verify": 40}, result.stderr
    assert res["connections"]["opened"] == 0 and res["connections"]["failed"]["tls_verify"] >= 40
    assert "Traceback" not in result.stderr and "tls_verify" in result.stdout


def test_a_missing_environment_variable_is_refused_before_any_traffic(nginx: Nginx, tmp_path: Path) -> None:
    profile = _profile(
        nginx.url("main", "localhost"), 'auth = { basic = ["me", "{{ env.LOADGEN_NO_SUCH_VAR }}"] }'
    )
    result, _ = _run(tmp_path, profile, {}, "fast")
    assert result.returncode == 2
    assert "auth.basic[1]: environment variable LOADGEN_NO_SUCH_VAR is not set" in result.stderr
    assert "Traceback" not in result.stderr


# --- the resuming context, in memory (no server process: a handshake between two SSLObjects)


def _handshake(client: ssl.SSLContext, server: ssl.SSLContext) -> ssl.SSLObject:
    """A client connection of ``client`` to ``server``, through memory buffers, its handshake done."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    ends = [
        client.wrap_bio(c_in, c_out, server_hostname="localhost"),
        server.wrap_bio(s_in, s_out, server_side=True),
    ]
    done = [False, False]
    for _ in range(20):
        for i, end in enumerate(ends):
            with contextlib.suppress(ssl.SSLWantReadError):
                end.do_handshake()
                done[i] = True
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done):
            return ends[0]
    raise AssertionError("no handshake after 20 rounds")


def test_the_context_offers_its_last_session_and_drops_one_it_cannot(nginx: Nginx) -> None:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(*nginx.certs.server)
    server.maximum_version = ssl.TLSVersion.TLSv1_2  # the session is known when the handshake ends
    options = tls(ca_file=str(nginx.certs.ca))
    one, other = client_context(options), client_context(options)
    assert isinstance(one, ResumingContext) and isinstance(other, ResumingContext)
    server.set_alpn_protocols(["h2", "http/1.1"])
    first = _handshake(one, server)
    assert not first.session_reused and one.resumed_offers == 0
    assert first.selected_alpn_protocol() == "http/1.1"
    second = _handshake(one, server)
    assert second.session_reused and one.resumed_offers == 1
    other._session = first.session  # another context's session: the ssl module refuses to offer it
    third = _handshake(other, server)
    assert not third.session_reused and other.resumed_offers == 0
    assert (
        client_context(tls(ca_file=str(nginx.certs.ca), session_resumption=False)).options & ssl.OP_NO_TICKET
    )
