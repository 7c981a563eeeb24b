"""Base URLs and request bytes for the HTTP engines: pure functions, run once per engine, not per request."""

from __future__ import annotations

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


def build_request(spec: RequestSpec, host: str, prefix: str = "") -> bytes:
    """The complete HTTP/1.1 request for ``spec``: request line, headers, then the body.

    ``Host`` and ``User-Agent`` are ours unless the spec sets them; ``Content-Length`` is added when there is
    a body (or the method expects one). Non-ASCII characters in the path are percent-encoded.
    """
    path = spec.path if spec.path.startswith("/") else "/" + spec.path
    target = quote(prefix + path, safe=PRINTABLE)  # spaces, controls and non-ASCII become %XX
    lines = [f"{token('method', spec.method)} {target} HTTP/1.1"]
    given = {name.lower() for name, _ in spec.headers}
    if "host" not in given:
        lines.append(f"Host: {host}")
    if "user-agent" not in given:
        lines.append(f"User-Agent: loadgen/{__version__}")
    lines.extend(f"{token('header', name)}: {field_value(name, value)}" for name, value in spec.headers)
    if (spec.body or spec.method.upper() in BODY_METHODS) and "content-length" not in given:
        lines.append(f"Content-Length: {len(spec.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + spec.body
