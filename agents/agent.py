"""The agent process: joins a coordinator, answers clock probes, runs its share of the load, and reports
every second.

Lifecycle::

    connect ──Hello──▶ (Welcome) ◀─Ping/Pong─▶ Start ─▶ arrivals + 1 s intervals ─▶ drain ─▶ Finished ─▶ exit

The agent stops sending load on its own when the coordinator falls silent for longer than the
``coordinator_timeout`` it was given (a fleet must never keep hammering a target that no one controls).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import zmq
import zmq.asyncio

from agents.arrivals import ArrivalLoop, RequestPicker
from agents.engine import Engine, Sink
from agents.recorder import Recorder
from loadgen import __version__
from loadgen.curve import RateCurve
from loadgen.errors import RunError, WireError
from loadgen.profile import Profile, RequestSpec
from loadgen.schedule import ArrivalSchedule
from loadgen.wire import (
    Finished,
    Heartbeat,
    Hello,
    Interval,
    Message,
    Ping,
    Pong,
    Start,
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
SEAL_WAIT = 0.25


def default_engine_factory(
    engine: str,
    target: str,
    requests: Sequence[RequestSpec],
    sink: Sink,
    timeout: float,
    max_connections: int,
) -> Engine:
    """``fast``: uvloop protocol client with httptools (the default). ``httpx``: the full-featured client."""
    if engine == "fast":
        from agents.fast_engine import FastEngine

        return FastEngine(target, requests, sink, timeout=timeout, max_connections=max_connections)
    if engine == "httpx":
        from agents.httpx_engine import HttpxEngine

        return HttpxEngine(target, requests, sink, timeout=timeout, max_connections=max_connections)
    raise RunError(f"unknown engine {engine!r} (known: {', '.join(ENGINES)})")


def new_agent_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"


@dataclass
class _Run:
    start: Start
    profile: Profile
    loop: ArrivalLoop | None = None


class Agent:
    def __init__(
        self,
        connect: str,
        *,
        agent_id: str | None = None,
        engine_factory: EngineFactory = default_engine_factory,
        clock: Callable[[], float] = time.monotonic,
        wait_timeout: float = math.inf,
    ) -> None:
        self.connect = connect
        self.agent_id = agent_id or new_agent_id()
        self._engine_factory = engine_factory
        self._clock = clock
        self._wait_timeout = wait_timeout
        self._last_heard = 0.0
        self._run: _Run | None = None
        self._next_index = 0
        self._stop_reporting = asyncio.Event()

    async def run(self) -> None:
        """Serve one run to completion. Raises :class:`RunError` if it could not complete."""
        ctx = zmq.asyncio.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, self.agent_id.encode())
        sock.setsockopt(zmq.LINGER, 5000)
        sock.connect(self.connect)
        self._sock = sock
        try:
            start = await self._join()
            await self._serve(start)
        finally:
            sock.close(linger=5000)
            ctx.term()

    async def _send(self, msg: Message) -> None:
        await self._sock.send(encode(msg))

    async def _recv(self, timeout: float) -> Message | None:
        if not await self._sock.poll(timeout=max(0, int(timeout * 1000))):
            return None
        data = await self._sock.recv()
        try:
            msg = decode(data, peer="coordinator")
        except WireError as exc:
            log.warning("dropped a malformed message: %s", exc)
            return None
        self._last_heard = self._clock()
        return msg

    async def _join(self) -> Start:
        """Say hello until the coordinator answers, answer its clock probes, and wait for Start."""
        hello = Hello(self.agent_id, socket.gethostname(), os.getpid(), f"loadgen {__version__}")
        deadline = self._clock() + self._wait_timeout
        welcomed = False
        next_hello = 0.0
        while self._clock() < deadline:
            now = self._clock()
            if not welcomed and now >= next_hello:
                await self._send(hello)
                next_hello = now + HELLO_EVERY
            msg = await self._recv(0.2)
            if isinstance(msg, Welcome):
                if not welcomed:
                    log.info("joined run %s at %s as %s", msg.run_id, self.connect, self.agent_id)
                welcomed = True
            elif isinstance(msg, Ping):
                await self._send(Pong(msg.seq, msg.t_coord, self._clock()))
            elif isinstance(msg, Start):
                return msg
            elif isinstance(msg, Stop):
                raise RunError(f"coordinator stopped the run before it began: {msg.reason}")
        raise RunError(f"no coordinator answered at {self.connect}")

    async def _serve(self, start: Start) -> None:
        try:
            profile = Profile.from_wire(start.profile)
        except (KeyError, TypeError, ValueError) as exc:
            raise RunError(f"coordinator sent an unusable profile: {exc}") from exc
        load = profile.load
        rng = random.Random(start.seed)
        curve = RateCurve(load.start_rate, load.stages)
        schedule = ArrivalSchedule(curve, load.arrival, start.share, start.phase, rng)
        recorder = Recorder([r.name for r in profile.requests])
        try:
            engine = self._engine_factory(
                start.engine, profile.target, profile.requests, recorder, load.timeout, load.max_in_flight
            )
        except ValueError as exc:
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
        self._run = _Run(start, profile, loop)
        try:
            await engine.start()
        except ConnectionError as exc:
            # Not fatal: every arrival is still scheduled, tried and counted (as connect errors if the
            # target stays down). A load test must report a dead target, not hide it by not running.
            log.warning("target not reachable before the start: %s", exc)
        wait = start.start_at - self._clock()
        log.info(
            "share %.3f of %s, starting in %.3f s (profile %s, %.0f s)",
            start.share,
            profile.target,
            wait,
            profile.name,
            load.duration,
        )
        control = asyncio.ensure_future(self._control(start))
        reporter = asyncio.ensure_future(self._report(recorder, engine, loop, start.start_at))
        try:
            if wait > 0:
                await asyncio.sleep(wait)
            arrivals = asyncio.ensure_future(loop.run())
            done, _ = await asyncio.wait({arrivals, control}, return_when=asyncio.FIRST_COMPLETED)
            if control in done:
                loop.stop()
                await arrivals
                if control.result() == "lost":
                    raise RunError(
                        f"coordinator silent for more than {start.coordinator_timeout:g} s; "
                        "stopped sending load"
                    )
            else:
                arrivals.result()
            await engine.drain(self._clock() + load.timeout)
            self._stop_reporting.set()
            await reporter
            index = max(0, math.floor(self._clock() - start.start_at))
            index = max(index, self._next_index)
            await self._send(recorder.take_interval(index, engine.in_flight))
            await self._send(
                Finished(
                    scheduled=recorder.total_scheduled,
                    ok=recorder.total_ok,
                    failed=recorder.total_failed,
                    dropped=recorder.total_dropped,
                    in_flight=engine.in_flight,
                    last_index=index,
                )
            )
            log.info(
                "finished: scheduled %d, ok %d, failed %d, dropped %d, in flight %d",
                recorder.total_scheduled,
                recorder.total_ok,
                recorder.total_failed,
                recorder.total_dropped,
                engine.in_flight,
            )
        finally:
            reporter.cancel()
            control.cancel()
            await engine.aclose()

    async def _report(self, recorder: Recorder, engine: Engine, loop: ArrivalLoop, start_at: float) -> None:
        """Every second of the run: hand the finished interval to the coordinator.

        Waits a little (at most ``SEAL_WAIT``) for the arrival loop to seal the second, so a busy loop's
        arrivals are still counted in the second they were intended for."""
        k = 0
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
            iv: Interval = recorder.take_interval(k, engine.in_flight, cpu)
            self._next_index = k + 1
            await self._send(iv)
            k += 1

    async def _control(self, start: Start) -> str:
        """Answer the coordinator during the run; return why the run must stop ("stop" or "lost")."""
        next_beat = 0.0
        self._last_heard = self._clock()
        while True:
            now = self._clock()
            if now >= next_beat:
                await self._send(Heartbeat(now))
                next_beat = now + HEARTBEAT_EVERY
            if now - self._last_heard > start.coordinator_timeout:
                log.error("coordinator silent for %.1f s: stopping load", now - self._last_heard)
                return "lost"
            msg = await self._recv(0.25)
            if isinstance(msg, Stop):
                log.warning("coordinator asked to stop: %s", msg.reason)
                return "stop"
            if isinstance(msg, Ping):
                await self._send(Pong(msg.seq, msg.t_coord, self._clock()))
