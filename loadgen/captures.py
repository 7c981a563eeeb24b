"""Reading values out of a response, and judging it: pure functions over (status, headers, body), compiled
once per step.

- JSON paths: ``$`` then ``.name``, ``["name"]`` or ``[index]`` (negative counts from the end), e.g.
  ``$.items[0].id``. A string is captured as it is; a number, boolean or null as its JSON text; an object or
  array as compact JSON.
- ``header:NAME``: the first response header of that name (any case).
- ``regex:PATTERN``: the first match's first group, or the whole match when the pattern has no group; the
  body is searched as UTF-8 text.
- ``cookie:NAME``: the value the response's ``Set-Cookie`` gives that cookie.

:class:`CookieJar` is a flow instance's cookies: every ``Set-Cookie`` of its responses (name and value; a
``Max-Age`` of 0 or less, or an ``Expires`` in the past given as ``Max-Age=0``, deletes), sent back as one
``Cookie`` header. One instance talks to one target, so domains and paths are not told apart.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from loadgen.flows import Capture, Check

Headers = Sequence[tuple[bytes, bytes]]
"""Response headers as the engines hand them over: (name, value) bytes, names in any case."""

Extractor = Callable[[Headers, bytes], str | None]

_SEGMENT = re.compile(r'\.([A-Za-z_][A-Za-z0-9_-]*)|\[(-?\d+)\]|\["((?:[^"\\]|\\.)*)"\]')
_MISSING = object()
_AGE = re.compile(r"-?[0-9]+")  # RFC 6265's max-age-av (str.isdigit takes other digits int() refuses)


def parse_json_path(text: str) -> tuple[str | int, ...]:
    """The keys and indexes of a JSON path. Raises ValueError with the reason."""
    if not text.startswith("$"):
        raise ValueError(f"a JSON path starts with '$', like '$.token' or '$.items[0].id'; got {text!r}")
    keys: list[str | int] = []
    pos = 1
    while pos < len(text):
        m = _SEGMENT.match(text, pos)
        if m is None:
            raise ValueError(
                f"JSON path {text!r}: cannot read {text[pos:]!r}; use .name, [\"name\"] or [index] after '$'"
            )
        if m.group(1) is not None:
            keys.append(m.group(1))
        elif m.group(2) is not None:
            keys.append(int(m.group(2)))
        else:
            keys.append(re.sub(r"\\(.)", r"\1", m.group(3)))
        pos = m.end()
    return tuple(keys)


def find_json(doc: Any, keys: tuple[str | int, ...]) -> Any:
    """What ``keys`` lead to in ``doc``, or ``_MISSING``."""
    for key in keys:
        if isinstance(key, int):
            if not isinstance(doc, list) or not -len(doc) <= key < len(doc):
                return _MISSING
            doc = doc[key]
        else:
            if not isinstance(doc, dict) or key not in doc:
                return _MISSING
            doc = doc[key]
    return doc


def as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _parsed(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past the parser's limit
        return _MISSING


def header_value(headers: Headers, name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def set_cookies(headers: Headers) -> list[tuple[str, str, bool]]:
    """(name, value, deleted) of every ``Set-Cookie`` header."""
    out = []
    for key, value in headers:
        if key.lower() != b"set-cookie":
            continue
        first, *attrs = value.decode("latin-1").split(";")
        name, eq, val = first.partition("=")
        if not eq or not name.strip():
            continue
        deleted = False
        for attr in attrs:
            k, _, v = attr.strip().partition("=")
            age = v.strip()
            if k.lower() == "max-age" and _AGE.fullmatch(age) and int(age) <= 0:
                deleted = True
        out.append((name.strip(), val.strip().strip('"'), deleted))
    return out


def compile_capture(capture: Capture) -> Extractor:
    """A function of (headers, body) giving the captured text, or None when it finds nothing. Raises
    ValueError for an expression that cannot work (a bad JSON path or regex)."""
    source, expr = capture.source, capture.expr
    if source == "json":
        keys = parse_json_path(expr)

        def from_json(headers: Headers, body: bytes) -> str | None:
            found = find_json(_parsed(body), keys)
            return None if found is _MISSING else as_text(found)

        return from_json
    if source == "header":
        name = expr.lower().encode("latin-1")
        return lambda headers, body: header_value(headers, name)
    if source == "cookie":

        def from_cookie(headers: Headers, body: bytes) -> str | None:
            for name, value, deleted in set_cookies(headers):
                if name == expr and not deleted:
                    return value
            return None

        return from_cookie
    try:
        pattern = re.compile(expr)
    except re.error as exc:
        raise ValueError(f"regex {expr!r}: {exc}") from None

    def from_regex(headers: Headers, body: bytes) -> str | None:
        # Searched as text, so that \w, . and (?i) mean characters (bytes not UTF-8 read as U+FFFD).
        m = pattern.search(body.decode("utf-8", "replace"))
        if m is None:
            return None
        found: str | None = m.group(1) if pattern.groups else m.group(0)
        return found

    return from_regex


def capture_of(text: str) -> tuple[str, str]:
    """``(source, expr)`` of a capture as written in a profile: ``$...``, ``header:``, ``regex:``,
    ``cookie:``. Raises ValueError."""
    if text.startswith("$"):
        return "json", text
    source, sep, expr = text.partition(":")
    if not sep or source not in ("header", "regex", "cookie") or not expr:
        raise ValueError(
            f"expected a JSON path ('$.token'), 'header:NAME', 'regex:PATTERN' or 'cookie:NAME'; got {text!r}"
        )
    return source, expr


def check_failure(check: Check, status: int, body: bytes) -> str | None:
    """Why the response fails ``check`` (a short reason), or None when it passes. Without a status list, a
    status of 400 or more fails."""
    if check.status:
        if status not in check.status:
            return f"status {status}"
    elif status >= 400:
        return f"status {status}"
    if check.contains is not None and check.contains.encode("utf-8") not in body:
        return "body lacks the text"
    if check.json:
        doc = _parsed(body)
        for path, expected in check.json:
            found = find_json(doc, parse_json_path(path))
            if found is _MISSING or found != expected or _kind(found) is not _kind(expected):
                return f"{path} is not {expected!r}"
    return None


def _kind(value: Any) -> type:
    """A JSON value's kind: its type, but one kind of number (7 is 7.0, as JSON has it; true is not 1)."""
    return float if type(value) is int else type(value)


class CookieJar:
    """One flow instance's cookies (see the module docstring)."""

    __slots__ = ("cookies",)

    def __init__(self) -> None:
        self.cookies: dict[str, str] = {}

    def update(self, headers: Headers) -> None:
        for name, value, deleted in set_cookies(headers):
            if deleted:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value

    def header(self) -> str | None:
        """The ``Cookie`` header to send, or None when there is no cookie."""
        if not self.cookies:
            return None
        return "; ".join(f"{k}={v}" for k, v in self.cookies.items())
