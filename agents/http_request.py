"""Base URLs and requests for the HTTP engines: pure functions, run once per engine, not per request.

:func:`request_head` turns a profile's :class:`~loadgen.profile.RequestSpec` into what every engine sends
(method, target, headers in order, body), checked for injection once; :func:`build_request` encodes it as
the fast engine's wire bytes, and the httpx engine makes its h11 and httpcore requests from the same head.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple
from urllib.parse import quote, urlsplit

from loadgen import __version__
from loadgen.profile import RequestSpec

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
DEFAULT_PORTS = {"http": 80, "https": 443}
PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7F))


def split_target(target: str) -> tuple[str, str, int, str]:
    """``(scheme, host, port, path prefix)`` of a base URL; raises ValueError if it is not one."""
    parts = urlsplit(target)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"target {target!r}: scheme must be http or https")
    if not parts.hostname:
        raise ValueError(f"target {target!r}: no host")
    if parts.query or parts.fragment:
        raise ValueError(f"target {target!r}: a base URL takes no query or fragment")
    port = parts.port if parts.port is not None else DEFAULT_PORTS[scheme]
    return scheme, parts.hostname, port, parts.path.rstrip("/")


def host_header(scheme: str, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port == DEFAULT_PORTS[scheme] else f"{shown}:{port}"


def token(what: str, value: str) -> str:
    """A method or header name: non-empty, no spaces, control characters or colons."""
    if not value or any(c <= " " or c in ":\x7f" for c in value):
        raise ValueError(f"{what} {value!r} is not a valid HTTP token")
    return value


def field_value(name: str, value: str) -> str:
    if any(c in "\r\n\0" for c in value):
        raise ValueError(f"header {name}: value {value!r} contains a line break or NUL")
    return value


class RequestHead(NamedTuple):
    """A request as every engine sends it, checked: the request line's method and target, the headers in
    the order they go out, and the body."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


def request_head(spec: RequestSpec, host: str, prefix: str = "") -> RequestHead:
    """The request for ``spec`` to a target whose ``Host`` header is ``host``, under the path ``prefix``.

    ``Host`` and ``User-Agent`` are ours unless the spec sets them; ``Content-Length`` is added when there is
    a body (or the method expects one). Non-ASCII characters in the path are percent-encoded. Raises
    ValueError for a method or header that would inject into the request.
    """
    method = token("method", spec.method)
    path = spec.path if spec.path.startswith("/") else "/" + spec.path
    target = quote(prefix + path, safe=PRINTABLE)  # spaces, controls and non-ASCII become %XX
    given = {name.lower() for name, _ in spec.headers}
    headers: list[tuple[str, str]] = []
    if "host" not in given:
        headers.append(("Host", host))
    if "user-agent" not in given:
        headers.append(("User-Agent", f"loadgen/{__version__}"))
    headers.extend((token("header", name), field_value(name, value)) for name, value in spec.headers)
    if (spec.body or method.upper() in BODY_METHODS) and "content-length" not in given:
        headers.append(("Content-Length", str(len(spec.body))))
    return RequestHead(method, target, tuple(headers), spec.body)


def build_request(spec: RequestSpec, host: str, prefix: str = "") -> bytes:
    """The complete HTTP/1.1 request for ``spec`` (see :func:`request_head`): request line, headers, then
    the body."""
    return encode_head(request_head(spec, host, prefix))


def encode_head(head: RequestHead) -> bytes:
    """``head`` as HTTP/1.1 bytes: request line, headers, then the body."""
    lines = [f"{head.method} {head.target} HTTP/1.1", *(f"{name}: {value}" for name, value in head.headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + head.body


def with_auth(requests: Sequence[RequestSpec], header: str | None) -> tuple[RequestSpec, ...]:
    """``requests`` with ``Authorization: header`` (the profile's ``auth``; None: none). A request that sets
    its own ``Authorization`` keeps it. Run once per engine, before the requests are built."""
    if header is None:
        return tuple(requests)
    out = []
    for r in requests:
        if any(name.lower() == "authorization" for name, _ in r.headers):
            out.append(r)
            continue
        headers = (*r.headers, ("Authorization", header))
        out.append(
            RequestSpec(
                r.path,
                name=r.name,
                method=r.method,
                headers=headers,
                body=r.body,
                weight=r.weight,
                cost=r.cost,
            )
        )
    return tuple(out)
