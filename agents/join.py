"""The agent's join phase: say hello until the coordinator answers, answer its clock probes, and wait for
Start. The messages go through the ``send`` and ``recv`` it is given; it keeps only what the join learns
(whether the agent was welcomed, the coordinator's epoch)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from agents.policy import WAITING_LINE_EVERY, no_answer, waiting_line
from agents.session import Handlers, dispatch
from loadgen import code_refs
from loadgen.errors import RunError
from loadgen.wire import CodeCheck, CodeHashes, Heartbeat, Hello, Message, Ping, Pong, Start, Stop, Welcome

HELLO_EVERY = 1.0
JOIN_POLL = 0.2  # seconds the join loop waits for a message before it looks at the clock again


class Joining:
    """One agent's join, from its first Hello to the coordinator's Start."""

    def __init__(
        self,
        hello: Hello,
        connect: str,
        *,
        send: Callable[[Message], Awaitable[None]],
        recv: Callable[[float], Awaitable[Message | None]],
        clock: Callable[[], float],
        say: Callable[[str], None],
        wait_timeout: float,
        secured: bool,
    ) -> None:
        self.hello = hello
        self.connect = connect
        self._send = send
        self._recv = recv
        self._clock = clock
        self._say = say
        self._wait_timeout = wait_timeout
        self._secured = secured
        self.welcomed = False
        self.epoch: str | None = None  # the coordinator's, from its first heartbeat
        self._handlers: Handlers[Start | None] = {
            Welcome: self._on_welcome,
            Ping: self._on_ping,
            Heartbeat: self._on_first_heartbeat,
            Start: self._on_start,
            Stop: self._on_stop_before_start,
            CodeCheck: self._on_code_check,
        }

    async def run(self) -> Start:
        """Say hello until the coordinator answers, answer its clock probes, and wait for Start."""
        hello = self.hello
        began = self._clock()
        deadline = began + self._wait_timeout
        next_hello = next_line = began
        hellos = 0
        while self._clock() < deadline:
            now = self._clock()
            if not self.welcomed and now >= next_line:
                self._say(waiting_line(self.connect, now - began, hellos))
                next_line = now + WAITING_LINE_EVERY
            if not self.welcomed and now >= next_hello:
                # Bounded: with no coordinator to hand it to (or a handshake that fails), a send waits.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._send(hello), HELLO_EVERY)
                    hellos += 1
                next_hello = now + HELLO_EVERY
            msg = await self._recv(JOIN_POLL)
            if msg is not None:
                start = await dispatch(self._handlers, msg)
                if start is not None:
                    return start
        if self.welcomed:
            raise RunError(f"joined at {self.connect}, but no run started within {self._wait_timeout:g} s")
        raise RunError(no_answer(self.connect, self._wait_timeout, secured=self._secured))

    async def _on_welcome(self, msg: Welcome) -> None:
        if not self.welcomed:
            self._say(f"joined run {msg.run_id} as {self.hello.agent_id}")
        self.welcomed = True

    async def _on_code_check(self, msg: CodeCheck) -> None:
        """The run has flows written in Python: hash their modules' sources (importing them) for the
        coordinator, which admits this agent if they are the same as the fleet's."""
        refs = [str(r) for r in msg.refs]
        found, problem = code_refs.hashes(refs)
        if problem:
            self._say(f"cannot run this run's Python flows: {problem}")
        await self._send(CodeHashes(found, problem))

    async def _on_ping(self, msg: Ping) -> None:
        await self._send(Pong(msg.seq, msg.t_coord, self._clock()))

    async def _on_first_heartbeat(self, msg: Heartbeat) -> None:
        if self.epoch is None:
            self.epoch = msg.epoch

    async def _on_start(self, msg: Start) -> Start:
        return msg

    async def _on_stop_before_start(self, msg: Stop) -> None:
        raise RunError(f"coordinator stopped the run before it began: {msg.reason}")
