"""What a flow written in Python is given: a :class:`Session` to make its requests through, each one a named
step, timed and counted like a step of a TOML flow.

    # shop/journeys.py, installed on every agent
    async def checkout(s: loadgen.Session) -> None:
        r = await s.post("/login", name="login", json={"user": s.data.get("user", "guest")})
        token = r.json()["token"]
        items = await s.get("/items", name="items", headers={"authorization": f"Bearer {token}"})
        await s.pause(1.5)  # think time: in the flow's duration, not in its active time
        await s.post(f"/buy/{items.json()['items'][0]['id']}", name="buy", expect=(200, 201))

    # the profile
    [[flows]]
    name = "checkout"
    function = "shop.journeys:checkout"
    steps = ["login", "items", "buy"]       # the names its calls give; results under checkout.<name>

A step whose status is 400 or more (or, with ``expect``, not among those), or that fails on the way (timeout,
connect, reset, protocol), raises :class:`StepFailed` after it is counted; left uncaught it ends the flow,
counted failed with the step's category. A flow that returns ends ok. Any other exception ends it failed, as
``python:<ExceptionName>``. Each call's intended time is when the previous one ended (or the flow's arrival)
plus the pauses since: time the function spends on its own work shows in the next step's latency, as it
would for a user. A flow that stops waiting for a step (``asyncio.timeout``) does not take it back: the step
is counted when its outcome comes, and the instance's next step, or its end, waits for that outcome (an
instance has one request out at a time).

The session keeps its flow instance's cookies (unless the flow says ``cookies = false``) and sends them back.
``s.data`` holds the row of test data drawn for this instance (``[[data]]`` columns) and ``env.NAME`` values.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from loadgen.errors import LoadgenError


@dataclass(frozen=True)
class Response:
    """A step's response: status, headers (names as sent, in order) and the whole body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body parsed as JSON. Raises ValueError when it is not JSON."""
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (any case), or None."""
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)


class StepFailed(LoadgenError):
    """A step failed (it is counted already): ``category`` as in the results (``http_503``, ``timeout``...),
    ``response`` when one came."""

    def __init__(self, step: str, category: str, response: Response | None) -> None:
        super().__init__(f"step {step!r} failed: {category}")
        self.step = step
        self.category = category
        self.response = response


class Session(Protocol):
    """The requests of one flow instance (see the module docstring)."""

    data: Mapping[str, str]

    async def request(
        self,
        method: str,
        path: str,
        *,
        name: str,
        headers: Mapping[str, str] | None = None,
        body: str | bytes = b"",
        json: Any = None,
        expect: Iterable[int] | None = None,
    ) -> Response:
        """One step: ``method`` ``path`` (under the target), counted as ``<flow>.<name>``."""

    async def get(
        self,
        path: str,
        *,
        name: str,
        headers: Mapping[str, str] | None = None,
        expect: Iterable[int] | None = None,
    ) -> Response: ...

    async def post(
        self,
        path: str,
        *,
        name: str,
        headers: Mapping[str, str] | None = None,
        body: str | bytes = b"",
        json: Any = None,
        expect: Iterable[int] | None = None,
    ) -> Response: ...

    async def pause(self, seconds: float) -> None:
        """Think time: waits, and counts in the flow's duration but not in its active time."""
