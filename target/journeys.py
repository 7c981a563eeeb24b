"""The built-in target's user-journey routes (log in, list items, a cart, orders) for multi-step flow tests.

Every route is a pure function of a :class:`Request`, the server's key and, for orders, a counter, and returns
an :data:`Answer`; the server parses, counts and writes (see :mod:`target.server`). Sessions are stateless:
a token or a session cookie is ``<the user, UTF-8 as hex>.<HMAC-SHA256 of it under the key, 32 hex digits>``,
with a different label for each of the two, so any number of users work without server memory. The key is
random per server, so tokens do not outlive the process.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

MAX_ITEMS = 100
DEFAULT_ITEMS = 5
MAX_BODY = 64 * 1024  # a JSON request body beyond this is refused with 413

Answer = tuple[int, bytes, bytes]
"""What a journey route returns: status, JSON body, and extra header lines (``b""`` or CRLF-terminated)."""

_MAC_HEX = 32
_TOKEN = b"token"
_SESSION = b"session"


@dataclass(frozen=True, slots=True)
class Request:
    """One request as a journey route sees it; ``headers`` and ``body`` are empty for routes that read
    neither (:func:`reads_head`)."""

    method: bytes
    path: bytes
    query: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""


class Orders(Protocol):
    def next_order(self) -> int:
        """The number of a new order: 1, 2, ... (until the server's counters are reset)."""


Route = Callable[[Request, bytes, Orders], Answer]

# --- paths


def reads_head(path: bytes) -> bool:
    """Whether the route at ``path`` reads request headers or a body (the server parses them only then)."""
    return path in (b"/login", b"/cart") or path.startswith(b"/buy/")


def reads_body(path: bytes) -> bool:
    return path in (b"/login", b"/cart")


def count_key(path: bytes) -> bytes:
    """The ``/__stats`` key for a journey path: ``/items/<id>`` and ``/buy/<id>`` are counted as
    ``/items/*`` and ``/buy/*``, so the keys stay bounded."""
    for prefix in (b"/items/", b"/buy/"):
        if path.startswith(prefix):
            return prefix + b"*"
    return path


PREFIXES = (b"/login", b"/items", b"/cart", b"/buy/")
"""Every journey path starts with one of these (not every path that does is one)."""


def route(path: bytes) -> Route | None:
    if path.startswith(b"/items/"):
        return _item
    if path.startswith(b"/buy/"):
        return _buy
    return _ROUTES.get(path)


# --- answers


def _json(status: int, document: object, extra: bytes = b"") -> Answer:
    return (status, json.dumps(document).encode(), extra)


def _error(status: int, reason: str) -> Answer:
    return _json(status, {"error": reason})


def _allow(methods: bytes) -> Answer:
    return _json(
        405, {"error": f"method not allowed; use {methods.decode()}"}, b"Allow: " + methods + b"\r\n"
    )


def _item_document(n: int) -> dict[str, object]:
    return {"id": n, "name": f"item-{n}", "price": 10 * n}


def _item_id(raw: bytes) -> int | None:
    """An item id: 1..999999999, in decimal."""
    if not raw.isdigit() or len(raw) > 9 or int(raw) == 0:
        return None
    return int(raw)


_READ = (b"GET", b"HEAD")

# --- sessions


def sign(key: bytes, kind: bytes, user: str) -> str:
    """The token (``kind`` ``b"token"``) or session cookie value (``b"session"``) for ``user``."""
    raw = user.encode()
    mac = hmac.new(key, kind + b"\0" + raw, hashlib.sha256).hexdigest()[:_MAC_HEX]
    return f"{raw.hex()}.{mac}"


def _verify(key: bytes, kind: bytes, value: bytes) -> str | None:
    """The user a token or session value was signed for, or None if it is not one of ours."""
    user_hex, _, _ = value.partition(b".")
    try:
        user = bytes.fromhex(user_hex.decode("ascii")).decode()
    except (UnicodeDecodeError, ValueError):
        return None
    return user if user and hmac.compare_digest(sign(key, kind, user).encode(), value) else None


def _user(request: Request, key: bytes) -> str | None:
    """The user an ``Authorization: Bearer`` token or a ``session`` cookie proves, or None."""
    for name, value in request.headers:
        lowered = name.lower()
        if lowered == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            user = _verify(key, _TOKEN, token.strip()) if scheme.lower() == b"bearer" else None
        elif lowered == b"cookie":
            sessions = (
                v for n, _, v in (c.strip().partition(b"=") for c in value.split(b";")) if n == b"session"
            )
            user = next((u for v in sessions if (u := _verify(key, _SESSION, v.strip())) is not None), None)
        else:
            continue
        if user is not None:
            return user
    return None


def _json_object(body: bytes) -> dict[str, object] | None:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return None
    return document if isinstance(document, dict) else None


# --- routes


def _login(request: Request, key: bytes, orders: Orders) -> Answer:
    if request.method != b"POST":
        return _allow(b"POST")
    if len(request.body) > MAX_BODY:
        return _error(413, f"body over {MAX_BODY} bytes")
    document = _json_object(request.body)
    if document is None:
        return _error(400, 'body must be a JSON object {"user": ..., "password": ...}')
    user, password = document.get("user"), document.get("password")
    if not isinstance(user, str) or not user or not isinstance(password, str) or not password:
        return _error(401, "user and password must be non-empty strings")
    if password == "wrong":
        return _error(401, "bad credentials")
    cookie = f"Set-Cookie: session={sign(key, _SESSION, user)}; Path=/; HttpOnly\r\n".encode()
    items = [_item_document(n) for n in range(1, DEFAULT_ITEMS + 1)]
    return _json(200, {"token": sign(key, _TOKEN, user), "user": user, "items": items}, cookie)


def _items(request: Request, key: bytes, orders: Orders) -> Answer:
    if request.method not in _READ:
        return _allow(b"GET, HEAD")
    raw = next((v for k, _, v in (p.partition(b"=") for p in request.query.split(b"&")) if k == b"n"), None)
    if raw is None:
        n = DEFAULT_ITEMS
    elif raw.isdigit() and len(raw) <= 3 and int(raw) <= MAX_ITEMS:
        n = int(raw)
    else:
        return _error(400, f"n must be an integer 0..{MAX_ITEMS}")
    return _json(200, {"items": [_item_document(i) for i in range(1, n + 1)]})


def _item(request: Request, key: bytes, orders: Orders) -> Answer:
    item = _item_id(request.path[len(b"/items/") :])
    if item is None:
        return _error(404, "no such item")
    if request.method not in _READ:
        return _allow(b"GET, HEAD")
    return _json(200, _item_document(item))


def _cart(request: Request, key: bytes, orders: Orders) -> Answer:
    if request.method not in (*_READ, b"POST"):
        return _allow(b"GET, HEAD, POST")
    user = _user(request, key)
    if user is None:
        return _error(401, "log in first: send Authorization: Bearer <token> or the session cookie")
    document: dict[str, object] = {"user": user, "ok": True}
    if request.method == b"POST" and request.body.strip():
        if len(request.body) > MAX_BODY:
            return _error(413, f"body over {MAX_BODY} bytes")
        added = _json_object(request.body)
        item = added.get("item") if added is not None else None
        if added is None or (item is not None and (type(item) is not int or not 0 < item < 10**9)):
            return _error(400, 'body must be a JSON object {"item": <id>}')
        if item is not None:
            document["item"] = item
    return _json(200, document)


def _buy(request: Request, key: bytes, orders: Orders) -> Answer:
    item = _item_id(request.path[len(b"/buy/") :])
    if item is None:
        return _error(404, "no such item")
    if request.method != b"POST":
        return _allow(b"POST")
    user = _user(request, key)
    if user is None:
        return _error(401, "log in first: send Authorization: Bearer <token> or the session cookie")
    return _json(200, {"order": orders.next_order(), "item": item, "user": user})


_ROUTES: dict[bytes, Route] = {b"/login": _login, b"/items": _items, b"/cart": _cart}
