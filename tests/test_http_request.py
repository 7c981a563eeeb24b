"""The one request builder both engines send from (:mod:`agents.http_request`): the fast engine's bytes and
the httpx engine's h11 request are the same request on the wire."""

from __future__ import annotations

import h11
import pytest

from agents import fast_engine, httpx_engine
from agents.http_request import RequestHead, request_head
from loadgen import __version__
from loadgen.profile import RequestSpec

AGENT = ("User-Agent", f"loadgen/{__version__}")

SPECS = [
    RequestSpec(name="get"),
    RequestSpec(name="head", method="HEAD", path="/x"),
    RequestSpec(name="post", method="POST", path="items?x=1", headers=(("X-A", "b"),), body=b"hello"),
    RequestSpec(name="put", method="PUT"),
    RequestSpec(name="odd", method="DELETE", path="/caf\u00e9 x", body=b"z"),
    RequestSpec(name="own", headers=(("host", "other"), ("User-Agent", "me"), ("Content-Length", "0"))),
]


def test_the_head_puts_ours_first_then_the_spec_s_then_the_length() -> None:
    spec = RequestSpec(name="p", method="POST", path="items", headers=(("X-A", "b"),), body=b"hello")
    assert request_head(spec, "h:81", "/api") == RequestHead(
        "POST", "/api/items", (("Host", "h:81"), AGENT, ("X-A", "b"), ("Content-Length", "5")), b"hello"
    )
    assert request_head(RequestSpec(name="g", path="/a b"), "h").headers == (("Host", "h"), AGENT)
    assert request_head(RequestSpec(name="g", path="/a b"), "h").target == "/a%20b"


@pytest.mark.parametrize("spec", SPECS, ids=[spec.name for spec in SPECS])
def test_both_engines_send_the_same_bytes(spec: RequestSpec) -> None:
    wire = fast_engine.build_request(spec, "example.com:8080", "/api")
    request = httpx_engine.build_request(spec, "http", "example.com", 8080, "/api")
    connection = h11.Connection(h11.CLIENT)
    sent = connection.send(httpx_engine.direct_request(request))
    assert sent is not None
    assert sent + spec.body == wire
