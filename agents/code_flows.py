"""Flows written in Python, on the agent: the :class:`loadgen.session.Session` a flow function is given, over
the flow runner's engine slot for its instance (see :mod:`agents.flow_runner` for the timing rules, which
are the same as for a TOML flow's steps).

Each instance of such a flow is a task running the user's coroutine (the one task per flow instance that
TOML flows do without); each step is a future the runner's response callback resolves. A step's request is
built per call (:func:`agents.http_request.request_head`, the checks every engine makes).
"""

from __future__ import annotations

import asyncio
import json as jsonlib
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from agents.engine import HEAD, READ
from loadgen.captures import CookieJar
from loadgen.profile import Request
from loadgen.session import Response, StepFailed

if TYPE_CHECKING:
    from agents.flow_runner import FlowRunner

Outcome = tuple[int, list[tuple[bytes, bytes]], bytes, float, float, str | None]
"""What the runner hands a waiting step: (status, headers, body, sent, done, error category or None)."""


class CodeSession:
    """One flow instance's session (implements :class:`loadgen.session.Session`)."""

    def __init__(
        self,
        runner: FlowRunner,
        slot: int,
        flow: str,
        steps: Mapping[str, int],
        data: Mapping[str, str],
        jar: CookieJar | None,
        arrival: float,
        clock: Callable[[], float],
    ) -> None:
        self.data = data
        self._runner = runner
        self._slot = slot
        self._flow = flow
        self._steps = steps
        self._jar = jar
        self._clock = clock
        self.next_intended = arrival  # when the next step is intended: the last one's end, plus pauses
        self.active = 0.0  # the steps' times, from their intended times to their ends
        self.waiter: asyncio.Future[Outcome] | None = None

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
        rec = self._steps.get(name)
        if rec is None:
            known = ", ".join(self._steps)
            raise ValueError(
                f"flow {self._flow!r} has no step {name!r} (its steps: {known}); list it in steps"
            )
        given = dict(headers or {})
        data = body.encode("utf-8") if isinstance(body, str) else body
        if json is not None:
            data = jsonlib.dumps(json, separators=(",", ":")).encode("utf-8")
            if not any(k.lower() == "content-type" for k in given):
                given["Content-Type"] = "application/json"
        if self._jar is not None and (cookie := self._jar.header()) is not None:
            given["Cookie"] = cookie
        runner = self._runner
        if runner.auth is not None and not any(k.lower() == "authorization" for k in given):
            given["Authorization"] = runner.auth  # the profile's auth, as for every request
        if self.waiter is not None:  # a step given up on (the flow's own timeout) still holds the number
            await asyncio.shield(self.waiter)
        intended = self.next_intended
        recorder = runner.recorder
        recorder.step_scheduled(rec)
        try:
            engine = runner.engine
            head = engine.head_of(Request(path, name=name, method=method, headers=given, body=data))
            prepared = engine.prepare(head)
        except ValueError as exc:
            done = self._clock()
            recorder.step_done(rec, intended, 0.0, done, f"request:{name}", False)
            raise StepFailed(name, f"request:{name}", None) from exc
        waiter = self.waiter = asyncio.get_running_loop().create_future()
        flags = READ | (HEAD if method.upper() == "HEAD" else 0)
        runner.send_code_step(self._slot, prepared, flags, intended)
        allowed = None if expect is None else tuple(expect)
        try:
            # Shielded: a flow that stops waiting (asyncio.timeout) leaves the request with the engine, and
            # its outcome must still find this waiter, not a later step's (see FlowRunner.response).
            outcome = await asyncio.shield(waiter)
        except asyncio.CancelledError:
            waiter.add_done_callback(lambda w: self._late(rec, intended, allowed, w))
            raise
        status, raw_headers, reply, sent, done, error = outcome
        self.next_intended = done
        self.active += done - intended
        if error is not None:
            recorder.step_done(rec, intended, sent, done, error, False)
            raise StepFailed(name, error, None)
        if self._jar is not None:
            self._jar.update(raw_headers)
        response = Response(
            status, tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in raw_headers), reply
        )
        failed = status not in allowed if allowed is not None else status >= 400
        category = f"http_{status}" if failed else None
        recorder.step_done(rec, intended, sent, done, category, True)
        if category is not None:
            raise StepFailed(name, category, response)
        return response

    def _late(
        self, rec: int, intended: float, allowed: tuple[int, ...] | None, waiter: asyncio.Future[Outcome]
    ) -> None:
        """The outcome of a step the flow stopped waiting for: counted for that step when it comes."""
        if waiter.cancelled():
            return
        status, _, _, sent, done, error = waiter.result()
        if error is not None:
            self._runner.recorder.step_done(rec, intended, sent, done, error, False)
            return
        failed = status not in allowed if allowed is not None else status >= 400
        self._runner.recorder.step_done(rec, intended, sent, done, f"http_{status}" if failed else None, True)

    async def outstanding(self) -> None:
        """Wait until the engine has reported the last request this session sent."""
        if self.waiter is not None:
            await asyncio.shield(self.waiter)

    async def get(
        self,
        path: str,
        *,
        name: str,
        headers: Mapping[str, str] | None = None,
        expect: Iterable[int] | None = None,
    ) -> Response:
        return await self.request("GET", path, name=name, headers=headers, expect=expect)

    async def post(
        self,
        path: str,
        *,
        name: str,
        headers: Mapping[str, str] | None = None,
        body: str | bytes = b"",
        json: Any = None,
        expect: Iterable[int] | None = None,
    ) -> Response:
        return await self.request(
            "POST", path, name=name, headers=headers, body=body, json=json, expect=expect
        )

    async def pause(self, seconds: float) -> None:
        self.next_intended = max(self.next_intended, self._clock()) + max(0.0, seconds)
        while (left := self.next_intended - self._clock()) > 0:  # a sleep may end up to a tick early
            await asyncio.sleep(left)
