"""The agent process: joins a coordinator, answers clock probes, runs its share of the load, and reports
every second.

Lifecycle::

    connect ──Hello──▶ (Welcome) ◀─Ping/Pong─▶ Start ─▶ arrivals + 1 s intervals ─▶ drain ─▶ Finished ─▶ exit
                                          ▲ Reshare (fleet changed)   ▲ Ack (coordinator made it durable)

Intervals and the final Finished stay in a buffer until the coordinator acknowledges them; when a new
coordinator process (a new ``epoch``) takes over the run, everything unacknowledged is sent again.

Dead-man's switch: the agent stops sending load on its own when the coordinator falls silent for longer than
its ``coordinator_timeout`` (a fleet must never keep hammering a target that no one controls).

Operator limits: ``allow_targets`` (host or host:port patterns, ``*`` wildcards) and ``max_rate``; a run
outside them is refused and the refusal reported to the coordinator.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import gc
import logging
import math
import os
import random
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import zmq
import zmq.asyncio

from agents.arrivals import ArrivalLoop, RequestPicker
from agents.engine import Engine, Sink
from agents.recorder import Recorder
from agents.steal import StealMeter
from loadgen import __version__
from loadgen.curve import RateCurve
from loadgen.errors import RunError, VersionMismatch, WireError
from loadgen.limits import connection_limit
from loadgen.profile import Profile, RequestSpec
from loadgen.schedule import ArrivalSchedule
from loadgen.wire import (
    Ack,
    Finished,
    Heartbeat,
    Hello,
    Message,
    Ping,
    Pong,
    Refused,
    Reshare,
    Start,
    Started,
    Stop,
    Welcome,
    decode,
    encode,
)

log = logging.getLogger("loadgen.agent")

EngineFactory = Callable[[str, str, Sequence[RequestSpec], Sink, float, int], Engine]
ENGINES = ("fast", "httpx")
HELLO_EVERY = 1.0
HEARTBEAT_EVERY = 1.0
SEAL_WAIT = 1.0
"""Seconds the reporter waits, at most, for the arrival loop to seal a second before cutting its interval:
arrivals counted after the cut land in the next interval. 0.25 s was too short for a machine that stalls: a
loaded test machine once put an agent's last 100 arrivals of a 4 s run into a fifth second. The reporter
stops waiting as soon as the second is sealed, so this only delays the reports of a loop already that far
behind (well inside the coordinator's three seconds of grace)."""
MAX_BUFFERED = 3600  # unacknowledged intervals kept (an hour); older ones are dropped with a warning


def default_engine_factory(
    engine: str,
    target: str,
    requests: Sequence[RequestSpec],
    sink: Sink,
    timeout: float,
    max_connections: int,
) -> Engine:
    """``fast``: uvloop protocol client with httptools (the default). ``httpx``: the full-featured client.
    Either's pool is given the process's CPU clock, so it opens no connection while the agent is short of
    CPU (see "Growth" in :mod:`agents.pool`)."""
    cpu_clock = time.process_time
    if engine == "fast":
        from agents.fast_engine import FastEngine

        return FastEngine(
            target, requests, sink, timeout=timeout, max_connections=max_connections, cpu_clock=cpu_clock
        )
    if engine == "httpx":
        from agents.httpx_engine import HttpxEngine

        eng: Engine = HttpxEngine(
            target, requests, sink, timeout=timeout, max_connections=max_connections, cpu_clock=cpu_clock
        )
        return eng
    raise RunError(f"unknown engine {engine!r} (known: {', '.join(ENGINES)})")


def new_agent_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"


def target_allowed(target: str, patterns: Sequence[str]) -> bool:
    """Whether ``target`` (a base URL) matches one of ``patterns`` (``host`` or ``host:port``, with ``*``).
    No patterns: everything is allowed."""
    if not patterns:
        return True
    parts = urlsplit(target)
    host = (parts.hostname or "").lower()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    for pattern in patterns:
        p = pattern.lower().strip()
        if p.startswith("["):  # [v6] or [v6]:port
            phost, _, rest = p[1:].partition("]")
            pport = rest[1:] if rest.startswith(":") else "*"
        elif p.count(":") == 1:  # host:port
            phost, pport = p.split(":")
        else:  # a host name, a v4 address or a bare v6 address
            phost, pport = p, "*"
        if fnmatch.fnmatchcase(host, phost) and fnmatch.fnmatchcase(str(port), pport):
            return True
    return False


class _Stopped(Exception):
    def __init__(self, reason: str, lost: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.lost = lost


class Agent:
    def __init__(
        self,
        connect: str,
        *,
        agent_id: str | None = None,
        engine_factory: EngineFactory = default_engine_factory,
        clock: Callable[[], float] = time.monotonic,
        wait_timeout: float = math.inf,
        coordinator_timeout: float = 10.0,
        allow_targets: Sequence[str] = (),
        max_rate: float = 0.0,
        socket_setup: Callable[[zmq.Socket[Any]], None] | None = None,
        steal_meter: StealMeter | None = None,
    ) -> None:
        self.connect = connect
        self.agent_id = agent_id or new_agent_id()
        self._engine_factory = engine_factory
        self._clock = clock
        self._wait_timeout = wait_timeout
        self._coordinator_timeout = coordinator_timeout
        self._allow = tuple(allow_targets)
        self._max_rate = max_rate
        self._socket_setup = socket_setup
        self._steal = steal_meter if steal_meter is not None else StealMeter()
        self._last_heard = 0.0
        self._epoch: str | None = None
        self._buffer: deque[tuple[int, bytes]] = deque()  # unacknowledged intervals, oldest first
        self._finished: bytes | None = None
        self._finished_acked = asyncio.Event()
        self._stop_reporting = asyncio.Event()
        self._next_index = 0
        self._loop: ArrivalLoop | None = None
        self._curve: RateCurve | None = None
        self._kind = "poisson"

    async def run(self) -> None:
        """Serve one run to completion. Raises :class:`RunError` if it could not complete."""
        ctx = zmq.asyncio.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, self.agent_id.encode())
        sock.setsockopt(zmq.LINGER, 5000)
        if self._socket_setup is not None:
            self._socket_setup(sock)
        sock.connect(self.connect)
        self._sock = sock
        try:
            start = await self._join()
            await self._serve(start)
        finally:
            sock.close(linger=2000)
            ctx.term()

    async def _send(self, msg: Message) -> None:
        await self._sock.send(encode(msg))

    async def _recv(self, timeout: float) -> Message | None:
        if not await self._sock.poll(timeout=max(0, int(timeout * 1000))):
            return None
        data = await self._sock.recv()
        try:
            msg = decode(data, peer="coordinator")
        except VersionMismatch as exc:
            raise RunError(f"the coordinator speaks another protocol version: {exc.reason}") from exc
        except WireError as exc:
            log.warning("dropped a malformed message: %s", exc)
            return None
        self._last_heard = self._clock()
        return msg

    async def _join(self) -> Start:
        """Say hello until the coordinator answers, answer its clock probes, and wait for Start."""
        hello = Hello(
            self.agent_id, socket.gethostname(), os.getpid(), f"loadgen {__version__}", self._max_rate
        )
        deadline = self._clock() + self._wait_timeout
        welcomed = False
        next_hello = 0.0
        while self._clock() < deadline:
            now = self._clock()
            if not welcomed and now >= next_hello:
                # Bounded: with no coordinator to hand it to (or a handshake that fails), a send waits.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._send(hello), HELLO_EVERY)
                next_hello = now + HELLO_EVERY
            msg = await self._recv(0.2)
            if isinstance(msg, Welcome):
                if not welcomed:
                    log.info("joined run %s at %s as %s", msg.run_id, self.connect, self.agent_id)
                welcomed = True
            elif isinstance(msg, Ping):
                await self._send(Pong(msg.seq, msg.t_coord, self._clock()))
            elif isinstance(msg, Heartbeat) and self._epoch is None:
                self._epoch = msg.epoch
            elif isinstance(msg, Start):
                return msg
            elif isinstance(msg, Stop):
                raise RunError(f"coordinator stopped the run before it began: {msg.reason}")
        raise RunError(f"no coordinator answered at {self.connect}")

    def _refusal(self, profile: Profile, share: float) -> str | None:
        if not target_allowed(profile.target, self._allow):
            allowed = " ".join(self._allow)
            return f"target {profile.target} is not allowed on this agent (--allow-target {allowed})"
        peak = share * RateCurve(profile.load.start_rate, profile.load.stages).peak_rate
        if self._max_rate > 0 and peak > self._max_rate * (1 + 1e-9):
            return f"share of the peak rate {peak:g}/s exceeds this agent's --max-rate {self._max_rate:g}"
        return None

    async def _serve(self, start: Start) -> None:
        try:
            profile = Profile.from_wire(start.profile)
        except (KeyError, TypeError, ValueError) as exc:
            await self._send(Refused(f"unusable profile: {exc}"))
            raise RunError(f"coordinator sent an unusable profile: {exc}") from exc
        refusal = self._refusal(profile, start.share)
        if refusal is not None:
            await self._send(Refused(refusal))
            log.error("refused the run: %s", refusal)
            raise RunError(f"refused the run: {refusal}")
        load = profile.load
        self._kind = load.arrival
        self._curve = curve = RateCurve(load.start_rate, load.stages)
        schedule = ArrivalSchedule(
            curve, load.arrival, start.share, start.phase, random.Random(start.seed), start.begin
        )
        recorder = Recorder([r.name for r in profile.requests])
        connections = connection_limit(load.connection_limit)
        if connections < load.connection_limit:
            log.warning(
                "this agent can open at most %d connections (its open-file limit; raise it with ulimit -n): "
                "requests beyond them wait for a free one, and the wait counts in their latency",
                connections,
            )
        try:
            engine = self._engine_factory(
                start.engine, profile.target, profile.requests, recorder, load.timeout, connections
            )
        except ValueError as exc:
            await self._send(Refused(f"cannot drive {profile.target}: {exc}"))
            raise RunError(f"cannot drive {profile.target}: {exc}") from exc
        picker = RequestPicker([r.weight for r in profile.requests], random.Random(start.seed + 1))
        loop = ArrivalLoop(
            schedule,
            engine,
            recorder,
            picker,
            start=start.start_at,
            max_in_flight=load.max_in_flight,
            clock=self._clock,
        )
        self._loop = loop
        try:
            await engine.start()
        except ConnectionError as exc:
            # Not fatal: every arrival is still scheduled, tried and counted (as connect errors if the
            # target stays down). A load test must report a dead target, not hide it by not running.
            log.warning("target not reachable before the start: %s", exc)
        begin_at = start.start_at + start.begin
        log.info(
            "share %.3f of %s from t=%.1f s, starting in %.3f s (profile %s, %.0f s)",
            start.share,
            profile.target,
            start.begin,
            begin_at - self._clock(),
            profile.name,
            load.duration,
        )
        # Objects made so far (modules, the profile, the engine's requests) live for the whole run; moved out
        # of the collector's sight, a full collection during the run walks only what the run itself made
        # (measured with gc callbacks at 40,000 requests/s: a 62 ms pause before, which is 62 ms of send lag).
        if begin_at - self._clock() > 0.1:
            gc.collect()
        gc.freeze()
        timeout = min(self._coordinator_timeout, start.coordinator_timeout)
        first = max(0, math.floor(self._clock() - start.start_at))
        control = asyncio.ensure_future(self._control(timeout))
        self._steal.share()  # the first second's share counts from here
        reporter = asyncio.ensure_future(self._report(recorder, engine, loop, start.start_at, first))
        try:
            wait = begin_at - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
            await self._send(Started(self._clock() - begin_at))
            arrivals = asyncio.ensure_future(loop.run())
            done, _ = await asyncio.wait({arrivals, control}, return_when=asyncio.FIRST_COMPLETED)
            if control in done:
                loop.stop()
                await arrivals
                why = control.exception()
                if isinstance(why, _Stopped) and why.lost:
                    raise RunError(f"coordinator silent for more than {timeout:g} s; stopped sending load")
            else:
                arrivals.result()
            await engine.drain(self._clock() + load.timeout)
            self._stop_reporting.set()
            await reporter
            index = max(math.floor(self._clock() - start.start_at), self._next_index)
            await self._send_interval(recorder, engine, index, first, 0.0)
            self._finished = encode(
                Finished(
                    scheduled=recorder.total_scheduled,
                    ok=recorder.total_ok,
                    failed=recorder.total_failed,
                    dropped=recorder.total_dropped,
                    in_flight=engine.in_flight,
                    last_index=index,
                )
            )
            await self._sock.send(self._finished)
            log.info(
                "finished: scheduled %d, ok %d, failed %d, dropped %d, in flight %d",
                recorder.total_scheduled,
                recorder.total_ok,
                recorder.total_failed,
                recorder.total_dropped,
                engine.in_flight,
            )
            if not control.done():
                # Stay until the coordinator has made our last data durable (or falls silent).
                waiter = asyncio.ensure_future(self._finished_acked.wait())
                await asyncio.wait({waiter, control}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if not self._finished_acked.is_set():
                    log.warning(
                        "coordinator did not acknowledge the final data; %d intervals unconfirmed",
                        len(self._buffer),
                    )
        finally:
            gc.unfreeze()
            self._stop_reporting.set()
            reporter.cancel()
            control.cancel()
            if control.done() and not control.cancelled():
                control.exception()  # retrieved: it was handled above
            await engine.aclose()

    async def _send_interval(
        self, recorder: Recorder, engine: Engine, index: int, first: int, cpu: float
    ) -> None:
        stolen = self._steal.share()
        pending = recorder.cut(index, engine.in_flight, cpu, first, engine.connections, stolen)
        data = encode(await pending.build_async())
        self._buffer.append((index, data))
        if len(self._buffer) > MAX_BUFFERED:
            lost, _ = self._buffer.popleft()
            log.warning(
                "dropped unacknowledged interval %d: the coordinator has not confirmed data for an hour", lost
            )
        await self._sock.send(data)

    async def _report(
        self, recorder: Recorder, engine: Engine, loop: ArrivalLoop, start_at: float, first: int
    ) -> None:
        """Every second of the run: hand the finished interval to the coordinator.

        Waits a little (at most ``SEAL_WAIT``) for the arrival loop to seal the second, so a busy loop's
        arrivals are still counted in the second they were intended for."""
        k = first
        cpu_at, cpu_used = self._clock(), time.process_time()
        while True:
            due = start_at + k + 1
            try:
                await asyncio.wait_for(self._stop_reporting.wait(), max(0.0, due - self._clock()))
            except TimeoutError:
                pass
            else:
                return
            give_up = self._clock() + SEAL_WAIT
            while loop.sealed_until < k + 1 and self._clock() < give_up:
                await asyncio.sleep(0.002)
            now, used = self._clock(), time.process_time()
            cpu = (used - cpu_used) / (now - cpu_at) if now > cpu_at else 0.0
            cpu_at, cpu_used = now, used
            self._next_index = k + 1
            await self._send_interval(recorder, engine, k, first, cpu)
            k += 1

    async def _control(self, timeout: float) -> None:
        """Talk with the coordinator during the run. Raises :class:`_Stopped` when the run must stop."""
        next_beat = 0.0
        self._last_heard = self._clock()
        while True:
            now = self._clock()
            if now >= next_beat:
                await self._send(Heartbeat(now, ""))
                next_beat = now + HEARTBEAT_EVERY
            if now - self._last_heard > timeout:
                log.error("coordinator silent for %.1f s: stopping load", now - self._last_heard)
                raise _Stopped("coordinator lost", lost=True)
            msg = await self._recv(0.25)
            if msg is None:
                continue
            if isinstance(msg, Stop):
                log.warning("coordinator asked to stop: %s", msg.reason)
                raise _Stopped(msg.reason, lost=False)
            if isinstance(msg, Ping):
                await self._send(Pong(msg.seq, msg.t_coord, self._clock()))
            elif isinstance(msg, Ack):
                while self._buffer and self._buffer[0][0] <= msg.index:
                    self._buffer.popleft()
                if msg.finished and self._finished is not None:
                    self._finished_acked.set()
            elif isinstance(msg, Heartbeat):
                if self._epoch is not None and msg.epoch != self._epoch:
                    log.warning(
                        "a new coordinator took over; re-sending %d unconfirmed intervals", len(self._buffer)
                    )
                    for _, data in list(self._buffer):
                        await self._sock.send(data)
                    if self._finished is not None:
                        await self._sock.send(self._finished)
                self._epoch = msg.epoch
            elif isinstance(msg, Reshare):
                self._take_reshare(msg)

    def _take_reshare(self, msg: Reshare) -> None:
        if self._loop is None or self._curve is None:
            return
        schedule = ArrivalSchedule(
            self._curve, self._kind, msg.share, msg.phase, random.Random(msg.seed), msg.at
        )
        self._loop.switch(schedule, msg.at)
        log.info("new share %.3f from t=%.1f s", msg.share, msg.at)
