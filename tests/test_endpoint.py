"""How a profile reaches its target, without sockets: ``{{ env.NAME }}`` references, the ``[tls]``, ``resolve``
and ``auth`` fields (values, errors, documents, wire), what the agent makes of them (``Authorization``, where
to connect), the failure categories, and the per-second connection counts. The same against real servers:
``tests/test_tls_nginx.py``."""

from __future__ import annotations

import base64
import copy
import dataclasses
import socket
import ssl
import tomllib
from pathlib import Path
from typing import Any

import httpcore
import msgpack
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from agents.engine import ERROR_CATEGORIES, connect_category
from agents.http_request import build_request, host_header, request_head, split_target, with_auth
from agents.policy import refusal
from agents.pool import Pool
from agents.proxy import category
from agents.recorder import Recorder
from agents.tls import ResumingContext, client_context
from coordinator.aggregate import RunAggregate
from coordinator.results import connection_totals
from coordinator.state import aggregate_state, restore_aggregate
from loadgen.cli import cli
from loadgen.curve import RateCurve
from loadgen.endpoint import Auth, Tls, connect_address, split_address
from loadgen.env_refs import EnvRefError, env_names, expand_env, has_env_refs
from loadgen.errors import ProfileError, WireError
from loadgen.plan import render_plan
from loadgen.profile import Load, Profile, Request, Stage
from loadgen.profile_file import parse_profile
from loadgen.reports.markdown import render_summary_text
from loadgen.run_results import Results
from loadgen.wire import Interval, decode, encode
from tests.loopback import RecordingSink
from tests.results_fixtures import make_results
from tests.test_profile_file import doc

ENV = {"TOKEN": "abc.DEF-123", "USER": "alice", "PASS": "pa ss:w0rd"}


def parsed(**top: object) -> Profile:
    d = doc() | top
    return parse_profile(d, "p.toml", environ=ENV)


def refused(**top: object) -> ProfileError:
    with pytest.raises(ProfileError) as info:
        parsed(**top)
    err = info.value
    assert err.file == "p.toml" and "\n" not in str(err)
    return err


# --- {{ env.NAME }}


def test_env_references_are_found_and_filled() -> None:
    assert env_names("{{env.A}}-{{ env.B }}-{{  env.A  }}") == ("A", "B")
    assert expand_env("Bearer {{ env.TOKEN }}", ENV) == "Bearer abc.DEF-123"
    assert expand_env("no references", {}) == "no references"
    assert has_env_refs("{{ env.X }}") and not has_env_refs("{{ data.x }} {{ env. }} {{ env.1X }}")
    assert expand_env("{{ data.x }} {{ env.USER }}", ENV) == "{{ data.x }} alice"  # other braces stay
    assert expand_env("{{ env.EMPTY }}", {"EMPTY": ""}) == ""


def test_a_missing_variable_names_itself() -> None:
    with pytest.raises(EnvRefError) as info:
        expand_env("{{ env.USER }}:{{ env.NOPE }}", ENV)
    assert info.value.name == "NOPE"
    assert "environment variable NOPE is not set" in str(info.value)


@given(st.text(), st.text())
def test_values_are_never_expanded_again(a: str, b: str) -> None:
    environ = {"A": a + "{{ env.B }}", "B": b}
    assert expand_env("[{{ env.A }}]", environ) == f"[{a}{{{{ env.B }}}}]"


# --- auth


def test_bearer_and_basic_auth_resolve_from_the_environment_and_keep_the_template() -> None:
    p = parsed(auth={"bearer": "{{ env.TOKEN }}"})
    assert p.auth == Auth(bearer="{{ env.TOKEN }}")
    assert p.auth is not None and p.auth.header == "Bearer abc.DEF-123"
    assert p.to_doc()["auth"] == {"bearer": "{{ env.TOKEN }}"}
    assert "abc.DEF" not in repr(p) and "abc.DEF" not in p.to_toml()
    p = parsed(auth={"basic": ["{{ env.USER }}", "{{ env.PASS }}"]})
    assert p.auth is not None
    assert base64.b64decode(p.auth.header.removeprefix("Basic ")) == b"alice:pa ss:w0rd"
    assert tomllib.loads(p.to_toml())["auth"] == {"basic": ["{{ env.USER }}", "{{ env.PASS }}"]}


def test_the_auth_header_goes_on_every_request_that_has_none() -> None:
    own = Request("/own", headers={"authorization": "Bearer mine"})
    sent = with_auth([Request("/a"), own], "Bearer abc")
    assert [dict(r.headers) for r in sent] == [
        {"Authorization": "Bearer abc"},
        {"authorization": "Bearer mine"},
    ]
    assert ("Authorization", "Bearer abc") in request_head(sent[0], "h").headers
    assert with_auth([own], None) == (own,)


def test_the_wire_carries_the_value_and_a_checkpoint_does_not() -> None:
    p = parsed(auth={"bearer": "{{ env.TOKEN }}"})
    back = Profile.from_wire(decode_profile(p.to_wire()))
    assert back == p and back.auth is not None and back.auth.header == "Bearer abc.DEF-123"
    assert "abc.DEF" not in str(p.to_wire(secrets=False))


def decode_profile(wire: dict[str, Any]) -> dict[str, Any]:
    """The profile as an agent receives it (through msgpack)."""
    out: dict[str, Any] = msgpack.unpackb(msgpack.packb(wire, use_bin_type=True), raw=False)
    return out


# --- resolve


def test_resolve_maps_the_targets_host_and_port() -> None:
    p = parsed(resolve={"API.example.com:443": "127.0.0.1:8443", "[::1]:80": "[::1]:8080"})
    assert connect_address(p.resolve, "api.example.com", 443) == ("127.0.0.1", 8443)
    assert connect_address(p.resolve, "api.example.com", 444) is None
    assert connect_address(p.resolve, "::1", 80) == ("::1", 8080)
    assert split_address("[::1]:8443") == ("::1", 8443)
    assert Profile.from_wire(decode_profile(p.to_wire())).resolve == p.resolve
    assert tomllib.loads(p.to_toml())["resolve"] == dict(p.resolve)


# --- [tls]


def test_tls_defaults_and_values() -> None:
    assert parsed().tls is None
    p = parsed(tls={"verify": False, "server_name": "api.internal", "min_version": "1.3"})
    assert p.tls == Tls(verify=False, server_name="api.internal", min_version="1.3")
    back = Profile.from_wire(decode_profile(p.to_wire()))
    assert back.tls == p.tls
    assert tomllib.loads(p.to_toml())["tls"] == {
        "verify": False,
        "server_name": "api.internal",
        "min_version": "1.3",
    }


def test_the_tls_context_follows_the_options() -> None:
    ctx = client_context(Tls())
    assert isinstance(ctx, ResumingContext) and ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert not ctx.options & ssl.OP_NO_TICKET
    ctx = client_context(Tls(verify=False, min_version="1.3", session_resumption=False), trust=_no_trust)
    assert not isinstance(ctx, ResumingContext) and ctx.options & ssl.OP_NO_TICKET
    assert ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3


def _no_trust(ctx: ssl.SSLContext) -> None:
    raise AssertionError("verify = false loads no CAs")


def test_a_new_connection_is_offered_the_last_resumable_session() -> None:
    """Without a handshake there is no session to offer: nothing is offered (the resumption itself is shown
    against nginx)."""
    ctx = client_context(Tls())
    assert isinstance(ctx, ResumingContext)
    for _ in range(2):
        ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="localhost")
    assert ctx.resumed_offers == 0


CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("tls not a table", {"tls": "yes"}, "tls", "expected a table"),
    ("unknown tls key", {"tls": {"verfy": False}}, "tls.verfy", "unknown key (did you mean 'verify'?)"),
    (
        "verify not a boolean",
        {"tls": {"verify": "no"}},
        "tls.verify",
        "expected true or false, got string 'no'",
    ),
    ("resumption", {"tls": {"session_resumption": 1}}, "tls.session_resumption", "expected true or false"),
    ("min_version unknown", {"tls": {"min_version": "1.1"}}, "tls.min_version", 'expected "1.2" or "1.3"'),
    ("min_version a number", {"tls": {"min_version": 1.3}}, "tls.min_version", 'write it as a string: "1.3"'),
    ("server_name", {"tls": {"server_name": "a b"}}, "tls.server_name", "expected a host name"),
    (
        "ca_file missing",
        {"tls": {"ca_file": "/no/such/ca.pem"}},
        "tls.ca_file",
        "cannot read '/no/such/ca.pem'",
    ),
    ("ca_file empty", {"tls": {"ca_file": ""}}, "tls.ca_file", "expected the path of a PEM file"),
    ("ca_file unverified", {"tls": {"verify": False, "ca_file": "ca.pem"}}, "tls.ca_file", "has no effect"),
    ("cert without key", {"tls": {"cert": "c.pem"}}, "tls.key", "missing; tls.cert needs tls.key"),
    ("key without cert", {"tls": {"key": "k.pem"}}, "tls.cert", "missing; tls.key needs tls.cert"),
    (
        "cert unreadable",
        {"tls": {"cert": "/no/c.pem", "key": "/no/k.pem"}},
        "tls.cert",
        "cannot read '/no/c.pem'",
    ),
    ("resolve not a table", {"resolve": ["a:1"]}, "resolve", "expected a table like"),
    (
        "resolve key",
        {"resolve": {"api.example.com": "127.0.0.1:1"}},
        'resolve."api.example.com"',
        "host:port",
    ),
    ("resolve value", {"resolve": {"a:1": "127.0.0.1"}}, 'resolve."a:1"', "expected host:port"),
    ("resolve port", {"resolve": {"a:1": "127.0.0.1:0"}}, 'resolve."a:1"', "expected host:port"),
    ("resolve value type", {"resolve": {"a:1": 8080}}, 'resolve."a:1"', "expected host:port as the value"),
    (
        "auth both",
        {"auth": {"bearer": "x", "basic": ["u", "p"]}},
        "auth",
        "give either bearer or basic, not both",
    ),
    ("auth empty", {"auth": {}}, "auth", "empty; give bearer or basic"),
    ("auth unknown", {"auth": {"bearr": "x"}}, "auth.bearr", "unknown key (did you mean 'bearer'?)"),
    (
        "bearer env",
        {"auth": {"bearer": "{{ env.NOPE }}"}},
        "auth.bearer",
        "environment variable NOPE is not set",
    ),
    ("bearer spaces", {"auth": {"bearer": "a b"}}, "auth.bearer", "holds spaces, control or non-ASCII"),
    ("bearer other ref", {"auth": {"bearer": "{{ data.x }}"}}, "auth.bearer", "only {{ env.NAME }}"),
    ("basic shape", {"auth": {"basic": "u:p"}}, "auth.basic", 'expected ["user", "password"]'),
    ("basic user colon", {"auth": {"basic": ["a:b", "p"]}}, "auth.basic[0]", "must not contain ':'"),
    ("basic env", {"auth": {"basic": ["u", "{{ env.NOPE }}"]}}, "auth.basic[1]", "NOPE is not set"),
]


@pytest.mark.parametrize(("top", "field", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refuses(top: dict[str, Any], field: str, reason: str) -> None:
    err = refused(**copy.deepcopy(top))
    assert (err.field, str(err)) == (field, f"p.toml: {field}: {err.reason}")
    assert reason in err.reason


def test_a_refused_secret_is_not_in_the_message() -> None:
    err = refused(auth={"bearer": "{{ env.PASS }}"})  # its value holds a space
    assert "pa ss" not in str(err) and "(from PASS)" in err.reason


def test_an_unreadable_ca_file_and_a_missing_variable_exit_2_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    base = 'target = "https://127.0.0.1:8443"\n{top}\n[load]\nstages = [{{ duration = "1s", rate = 1 }}]\n'
    base += '[[requests]]\npath = "/"\n{tls}'
    path.write_text(base.format(top="", tls=f'[tls]\nca_file = "{tmp_path / "nope.pem"}"\n'))
    result = CliRunner().invoke(cli, ["plan", str(path)])
    assert result.exit_code == 2
    assert f"{path}: tls.ca_file: cannot read" in result.stderr
    path.write_text(base.format(top='auth = { bearer = "{{ env.LOADGEN_TEST_UNSET }}" }', tls=""))
    result = CliRunner().invoke(cli, ["plan", str(path)], env={"LOADGEN_TEST_UNSET": None})
    assert result.exit_code == 2
    assert "auth.bearer: environment variable LOADGEN_TEST_UNSET is not set" in result.stderr


def test_a_profile_built_in_code_takes_the_same_fields() -> None:
    load = Load(stages=[Stage(1, 1)])
    p = Profile(
        target="https://api.example.com",
        load=load,
        requests=[Request("/")],
        tls=Tls(verify=False),
        resolve={"api.example.com:443": "127.0.0.1:8443"},
        auth=Auth(bearer="literal-token"),
    )
    assert p.tls == Tls(verify=False) and p.auth is not None and p.auth.header == "Bearer literal-token"
    assert p.resolve == (("api.example.com:443", "127.0.0.1:8443"),)
    with pytest.raises(ProfileError, match=r"tls.min_version: expected"):
        Profile(target="https://x", load=load, requests=[Request("/")], tls=Tls(min_version="1.0"))


# --- failure categories and the counts of connections


def test_connect_failures_have_their_category() -> None:
    assert connect_category(ssl.SSLCertVerificationError(1, "certificate verify failed")) == "tls_verify"
    assert connect_category(ssl.SSLError(1, "tlsv1 alert protocol version")) == "tls_handshake"
    assert connect_category(socket.gaierror(-2, "Name or service not known")) == "dns"
    assert connect_category(ConnectionRefusedError()) == "connect"
    assert connect_category(TimeoutError()) == "connect"
    assert {"dns", "tls_verify", "tls_handshake"} <= set(ERROR_CATEGORIES)


def test_a_failed_open_fails_the_oldest_request_with_its_category_and_is_counted() -> None:
    sink = RecordingSink()
    pool: Pool[Any] = Pool(sink, timeout=1.0, max_connections=4, clock=lambda: 5.0)
    pool.start(lambda: None)
    pool.submit(0, 1.0)
    pool.submit(1, 2.0)
    pool.open_failed("tls_verify")
    pool.failed_to_open("tls_verify")  # the engine's first connection
    assert sink.categories == ["tls_verify"]
    assert pool.open_failures == {"tls_verify": 2} and pool.connections_opened == 0


def test_connection_counts_travel_merge_and_survive_a_checkpoint() -> None:
    rec = Recorder(["r"])
    iv = rec.cut(0, 0, opened=3, open_failed={"tls_handshake": 2}, protocol="h2", peak_streams=40).build()
    back = decode(encode(iv))
    assert isinstance(back, Interval) and (back.opened, back.open_failed) == (3, {"tls_handshake": 2})
    assert (back.protocol, back.peak_streams) == ("h2", 40)
    agg = RunAggregate(["r"], RateCurve(0.0, (Stage(1.0, 1.0),)))
    agg.add("a1", back)
    agg.add(
        "a2", Interval(0, 0, 0, 0, 0, {}, b"", 0.0, opened=2, open_failed={"dns": 1}, protocol="http/1.1")
    )
    agg.add("a2", Interval(1, 0, 0, 0, 0, {}, b"", 0.0, opened=1))  # an interval that does not say
    restored = restore_aggregate(aggregate_state(agg), ["r"], agg.curve)
    assert restored.agents["a2"].protocol == "http/1.1"
    totals = connection_totals(restored.agents.values())
    assert totals == {
        "opened": 6,
        "failed": {"dns": 1, "tls_handshake": 2},
        "protocols": {"h2": 3, "http/1.1": 3},
        "peak_streams": 40,
    }


@pytest.mark.parametrize("bad", [{"protocol": "spdy/3"}, {"protocol": "h2", "peak_streams": -1}])
def test_an_interval_with_an_unknown_protocol_is_refused(bad: dict[str, Any]) -> None:
    agg = RunAggregate(["r"], RateCurve(0.0, (Stage(1.0, 1.0),)))
    with pytest.raises(WireError):
        agg.add("a1", Interval(0, 0, 0, 0, 0, {}, b"", 0.0, **bad))
    assert agg.agents == {}


def test_the_summary_says_how_many_connections_were_opened() -> None:
    results: dict[str, Any] = {
        "name": "t",
        "totals": {"ok": 0, "failed": 4},
        "errors": {"tls_verify": 4},
        "requests": {"home": {"errors": {"tls_verify": 4}}},
        "connections": {"opened": 0, "failed": {"tls_verify": 5}},
        "warning_codes": [{"code": "tls_unverified"}],
    }
    text = render_summary_text(results, None)
    assert "Connections opened: 0; failed to open: tls_verify 5" in text
    assert "tls_verify" in text and "TLS CERTIFICATES NOT VERIFIED" in text


def test_the_summary_says_when_connections_spoke_http2() -> None:
    results: dict[str, Any] = {
        "name": "t",
        "totals": {"ok": 10, "failed": 0},
        "errors": {},
        "requests": {},
        "connections": {"opened": 2, "failed": {}, "protocols": {"h2": 2}, "peak_streams": 100},
    }
    text = render_summary_text(results, None)
    assert "Connections opened: 2 (HTTP/2, at most 100 streams at once on one)" in text


def test_an_empty_tls_table_is_the_defaults() -> None:
    assert parsed(tls={}).tls is None
    assert parsed(tls={"verify": True, "session_resumption": True}) == parsed()


def test_an_agent_limited_to_some_targets_checks_where_resolve_sends_it() -> None:
    p = parsed(target="https://api.example.com", resolve={"api.example.com:443": "10.1.2.3:8443"})
    assert refusal(p, 1.0, ["api.example.com", "127.0.0.1"], 0) == (
        "target https://api.example.com is resolved to 10.1.2.3:8443 (resolve), which is not allowed on this "
        "agent (--allow-target api.example.com 127.0.0.1)"
    )
    assert refusal(p, 1.0, ["api.example.com", "10.1.2.3:8443"], 0) is None
    assert refusal(p, 1.0, [], 0) is None
    v6 = parsed(target="https://api.example.com", resolve={"api.example.com:443": "[::1]:8443"})
    assert refusal(v6, 1.0, ["api.example.com", "[::1]:8443"], 0) is None


def test_an_ipv6_target_keeps_its_brackets_in_the_host_header() -> None:
    p = parsed(target="http://[::1]:8080/api")
    assert p.target == "http://[::1]:8080/api"
    scheme, host, port, prefix = split_target(p.target)
    assert (host, port, prefix) == ("::1", 8080, "/api")
    assert host_header(scheme, host, port) == "[::1]:8080"
    assert build_request(Request("/x"), host_header(scheme, host, port), prefix).startswith(
        b"GET /api/x HTTP/1.1\r\nHost: [::1]:8080\r\n"
    )


def test_a_profile_rebuilt_from_a_checkpoint_reads_its_secret_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the coordinator does on --resume: the checkpoint holds the reference, not the value."""
    p = parsed(auth={"bearer": "{{ env.TOKEN }}"})
    checkpoint = decode_profile(p.to_wire(secrets=False))
    monkeypatch.setenv("TOKEN", "fresh")
    again = dataclasses.replace(Profile.from_wire(checkpoint), source="p.toml")
    assert again.auth is not None and again.auth.header == "Bearer fresh"
    monkeypatch.delenv("TOKEN")
    with pytest.raises(ProfileError, match=r"p.toml: auth.bearer: environment variable TOKEN is not set"):
        dataclasses.replace(Profile.from_wire(checkpoint), source="p.toml")


def test_through_a_proxy_a_tls_failure_has_its_category_too() -> None:
    def raised(exc: Exception, cause: BaseException) -> Exception:
        exc.__cause__ = cause
        return exc

    verify = ssl.SSLCertVerificationError(1, "certificate verify failed")
    assert category(raised(httpcore.ConnectError("x"), verify), False) == "tls_verify"
    assert category(raised(httpcore.ConnectError("x"), ssl.SSLError(1, "alert")), False) == "tls_handshake"
    assert category(ssl.SSLError(1, "alert"), False) == "tls_handshake"
    assert category(raised(httpcore.ConnectError("x"), ConnectionRefusedError()), False) == "connect"


def test_the_plan_says_how_the_target_is_reached_without_the_secret() -> None:
    p = parsed(
        target="https://api.example.com",
        resolve={"api.example.com:443": "127.0.0.1:8443"},
        auth={"basic": ["alice", "{{ env.PASS }}"]},
        tls={"verify": False, "min_version": "1.3", "session_resumption": False},
    )
    head = render_plan(p).split("\n\n")[0].splitlines()
    assert head[1:] == [
        "connects to 127.0.0.1:8443 (resolve), Host and SNI api.example.com",
        "tls: certificates NOT verified; TLS 1.3 or later; no session resumption",
        "auth: basic, from the environment (PASS)",
    ]
    assert "pa ss" not in render_plan(p)
    assert render_plan(parsed()).split("\n\n")[0] == "t → http://127.0.0.1:8080"


def test_the_library_results_read_the_connection_counts() -> None:
    doc = make_results()
    assert Results(doc).connections_opened is None and Results(doc).connections_failed == {}  # written before
    doc["connections"] = {"opened": 40, "failed": {"tls_verify": 3}}
    assert (Results(doc).connections_opened, Results(doc).connections_failed) == (40, {"tls_verify": 3})
