"""A coordinator and a fleet in one process, on a virtual clock: no sockets, no sleeps, no private fields.

:class:`VirtualFleet` joins a real :class:`~coordinator.coordinator.Coordinator` (its in-memory transport,
its clock the loop's) with agents on a :class:`~loadgen.virtual_time.VirtualTimeLoop`. The agents here are
*scripted* (:class:`ScriptedAgent`): they speak the protocol as the real agent does (hello, clock probes,
Start, a 1 s Interval of given counts, heartbeats, acknowledgements, resend on a new epoch, Finished) with
counts a test chooses, so what the coordinator merges is known exactly; or the *real* agent
(:meth:`VirtualFleet.real_agent`) with a fake engine, so both processes' code runs as in production.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from agents.agent import Agent
from agents.steal import StealMeter
from coordinator.coordinator import Coordinator, CoordinatorConfig
from loadgen import histogram, wire
from loadgen.profile import Profile
from loadgen.transport import MemoryClientTransport, MemoryNetwork
from loadgen.virtual_time import VirtualTimeLoop

WALL0 = 1.8e9


class Crashed(Exception):
    """The coordinator process "died" (raised from its wait at a chosen virtual time)."""


def counts_interval(
    index: int, first: int, per_name: dict[str, int], *, failed: int = 0, lag_us: int = 50
) -> wire.Interval:
    """An interval where each name had ``n`` arrivals, all completed in 1-2 ms (``failed`` of the first)."""
    names: dict[str, list[Any]] = {}
    for j, (name, n) in enumerate(per_name.items()):
        lat, svc = histogram.new_histogram(), histogram.new_histogram()
        for k in range(n):
            lat.record_value(1000 + 37 * (index % 7) + 11 * k)
            svc.record_value(900 + 29 * (index % 5) + 7 * k)
        f = failed if j == 0 else 0
        names[name] = [
            n,
            n - f,
            f,
            {"http_500": f} if f else {},
            histogram.encode_wire(lat),
            histogram.encode_wire(svc),
        ]
    lag = histogram.new_histogram()
    lag.record_value(lag_us)
    scheduled = sum(per_name.values())
    return wire.Interval(index, first, scheduled, 0, 0, names, histogram.encode_wire(lag), 0.1)


@dataclass
class ScriptedAgent:
    """One agent, scripted. ``interval(index, carried)`` makes its report of second ``index``, where
    ``carried`` is the share of the fleet's rate it carried over that second (its share, changing at a
    reshare's instant, 0 before it began)."""

    ident: str
    transport: MemoryClientTransport
    loop: VirtualTimeLoop
    interval: Callable[[int, float], wire.Interval]
    max_rate: float = 0.0
    refuse: str | None = None  # answer Start with Refused(reason)
    code_hashes: dict[str, str] | None = None  # its answer to a CodeCheck (the hashes of flows in Python)
    clock_offset: float = 0.0  # its clock runs this far ahead of the coordinator's
    silent_coordinator_timeout: float = 10.0
    received: list[wire.Message] = field(default_factory=list)
    sent_intervals: list[int] = field(default_factory=list)
    share: float = 0.0
    stopped: str | None = None
    finished: bool = False
    _buffer: dict[int, bytes] = field(default_factory=dict)  # unacknowledged
    _log: dict[int, bytes] = field(default_factory=dict)  # everything sent
    _finished_msg: bytes | None = None
    _epoch: str | None = None
    _start: wire.Start | None = None
    _shares: list[tuple[float, float]] = field(default_factory=list)  # (from run time, share)

    def carried(self, index: int) -> float:
        total = 0.0
        for i, (at, share) in enumerate(self._shares):
            end = self._shares[i + 1][0] if i + 1 < len(self._shares) else math.inf
            total += share * max(0.0, min(end, index + 1) - max(at, index))
        return total

    def clock(self) -> float:
        return self.loop.now + self.clock_offset

    async def _send(self, msg: wire.Message) -> None:
        await self.transport.send(wire.encode(msg))

    async def run(self) -> None:
        start = await self._join()
        if start is None:
            return
        if self.refuse is not None:
            await self._send(wire.Refused(self.refuse))
            self.stopped = self.refuse
            return
        await self._serve(start)

    async def _join(self) -> wire.Start | None:
        next_hello = 0.0
        welcomed = False
        while True:
            if not welcomed and self.loop.now >= next_hello:
                await self._send(wire.Hello(self.ident, "sim", 1, "loadgen sim", self.max_rate))
                next_hello = self.loop.now + 1.0
            msg = await self._recv(0.2)
            if isinstance(msg, wire.Welcome):
                welcomed = True
            elif isinstance(msg, wire.CodeCheck):
                await self._send(wire.CodeHashes(dict(self.code_hashes or {}), ""))
            elif isinstance(msg, wire.Ping):
                await self._send(wire.Pong(msg.seq, msg.t_coord, self.clock()))
            elif isinstance(msg, wire.Heartbeat) and self._epoch is None:
                self._epoch = msg.epoch
            elif isinstance(msg, wire.Start):
                return msg
            elif isinstance(msg, wire.Stop):
                self.stopped = msg.reason
                return None

    async def _recv(self, timeout: float) -> wire.Message | None:
        data = await self.transport.recv(timeout)
        if data is None:
            return None
        msg = wire.decode(data, peer="coordinator")
        self.received.append(msg)
        return msg

    async def _serve(self, start: wire.Start) -> None:
        self._start = start
        self.share = start.share
        self._shares = [(start.begin, start.share)]
        duration = Profile.from_wire(start.profile).load.duration
        k = max(0, math.floor(start.begin))
        first = k
        await self._send(wire.Started(0.0))
        last_heard = self.clock()
        next_beat = self.clock()
        while self.stopped is None:
            due = start.start_at + k + 1
            if k >= duration:
                break
            now = self.clock()
            if now >= due:
                data = wire.encode(_with_first(self.interval(k, self.carried(k)), first))
                self._buffer[k] = self._log[k] = data
                self.sent_intervals.append(k)
                await self.transport.send(data)
                k += 1
                continue
            if now >= next_beat:
                await self._send(wire.Heartbeat(now, ""))
                next_beat = now + 1.0
            if now - last_heard > min(self.silent_coordinator_timeout, start.coordinator_timeout):
                self.stopped = "coordinator lost"
                return
            msg = await self._recv(min(0.25, max(0.001, due - now)))
            if msg is not None:
                last_heard = self.clock()
                await self._handle(msg)
        self._finished_msg = wire.encode(wire.Finished(*self._totals(), in_flight=0, last_index=k - 1))
        await self.transport.send(self._finished_msg)
        self.finished = True
        deadline = self.clock() + 5.0
        while self._finished_msg is not None and self.clock() < deadline:
            msg = await self._recv(0.25)
            if msg is not None:
                await self._handle(msg)

    def _totals(self) -> tuple[int, int, int, int]:
        sched = ok = failed = dropped = 0
        for data in self._log.values():
            iv = wire.decode(data, peer="self")
            assert isinstance(iv, wire.Interval)
            sched += iv.scheduled
            dropped += iv.dropped
            for entry in iv.names.values():
                ok += entry[1]
                failed += entry[2]
        return sched, ok, failed, dropped

    async def _handle(self, msg: wire.Message) -> None:
        if isinstance(msg, wire.Stop):
            self.stopped = msg.reason
        elif isinstance(msg, wire.Ping):
            await self._send(wire.Pong(msg.seq, msg.t_coord, self.clock()))
        elif isinstance(msg, wire.Reshare):
            self.share = msg.share
            self._shares.append((msg.at, msg.share))
        elif isinstance(msg, wire.Ack):
            for i in [i for i in self._buffer if i <= msg.index]:
                del self._buffer[i]
            if msg.finished:
                self._finished_msg = None
        elif isinstance(msg, wire.Heartbeat):
            if self._epoch is not None and msg.epoch != self._epoch:
                for i in sorted(self._buffer):
                    await self.transport.send(self._buffer[i])
                if self._finished_msg is not None:
                    await self.transport.send(self._finished_msg)
            self._epoch = msg.epoch


def _with_first(msg: wire.Message, first: int) -> wire.Interval:
    assert isinstance(msg, wire.Interval)
    return wire.Interval(
        msg.index,
        first,
        msg.scheduled,
        msg.dropped,
        msg.in_flight,
        msg.names,
        msg.lag,
        msg.cpu,
        msg.connections,
    )


async def _outcome(run: Coroutine[Any, Any, None]) -> BaseException | None:
    try:
        await run
    except Exception as exc:
        return exc
    return None


class VirtualFleet:
    def __init__(self) -> None:
        self.loop = VirtualTimeLoop()
        self.net = MemoryNetwork(idle=self._idle)
        self.lines: list[str] = []
        self.crash_at: float | None = None
        self.agents: dict[str, ScriptedAgent] = {}
        self.tasks: dict[str, asyncio.Task[Any]] = {}
        self.outcomes: dict[str, asyncio.Task[BaseException | None]] = {}  # real agents: what run() raised

    def _idle(self, timeout: float, mail: asyncio.Event) -> None:
        if self.crash_at is not None and self.loop.now >= self.crash_at:
            self.crash_at = None
            raise Crashed
        self.loop.advance(timeout, mail)

    def wall(self) -> float:
        return WALL0 + self.loop.now

    def coordinator(self, profile: Profile, **config: Any) -> Coordinator:
        cfg = CoordinatorConfig(
            **{"expect_agents": len(self.agents) or 1, "join_timeout": 30.0, "seed": 7, **config}
        )
        return Coordinator(
            profile,
            cfg,
            transport=self.net.server,
            clock=self.loop.clock,
            wall=self.wall,
            progress=self.lines.append,
        )

    def resume(self, out: Any) -> Coordinator:
        return Coordinator.resume(
            out,
            transport=self.net.new_server(),
            clock=self.loop.clock,
            wall=self.wall,
            progress=self.lines.append,
        )

    def agent(self, ident: str, interval: Callable[[int, float], wire.Interval], **kw: Any) -> ScriptedAgent:
        a = ScriptedAgent(ident, self.net.client(ident), self.loop, interval, **kw)
        self.agents[ident] = a
        self.tasks[ident] = self.loop.create_task(a.run())
        return a

    def real_agent(self, ident: str, **options: Any) -> Agent:
        """The real :class:`~agents.agent.Agent`, with a fake engine answering every request in 20 ms of the
        loop's clock (tests/test_agent_core.py's), a quarter of a core of CPU, and nothing stolen."""
        from tests.test_agent_core import FakeEngine

        def engine(
            name: str, target: str, requests: Any, sink: Any, timeout: float, conns: int, route: Any = None
        ) -> FakeEngine:
            return FakeEngine(sink, self.loop.clock)

        agent = Agent(
            "memory://coordinator",
            agent_id=ident,
            transport=self.net.client(ident),
            engine_factory=engine,
            clock=self.loop.clock,
            cpu_clock=lambda: self.loop.clock() / 4,
            steal_meter=StealMeter(lambda: "cpu  100 0 0 0 0 0 0 0 0 0\n"),
            say=lambda line: self.lines.append(f"{ident}: {line}"),
            **options,
        )
        self.outcomes[ident] = self.loop.create_task(_outcome(agent.run()))
        return agent

    def kill(self, ident: str) -> None:
        """The agent's process dies: its task ends and nothing more crosses its end of the network."""
        (self.tasks.get(ident) or self.outcomes[ident]).cancel()
        self.net.cut(ident)

    def settle(self, seconds: float = 6.0) -> None:
        """Let the agents finish their last exchanges after the coordinator returned."""
        self.loop.advance(seconds)

    def close(self) -> None:
        tasks = asyncio.all_tasks(self.loop)
        for t in tasks:
            t.cancel()

        async def gone() -> None:
            await asyncio.gather(*tasks, return_exceptions=True)

        self.loop.run_until_complete(gone())
        self.loop.close()
