"""The agent process: joins a coordinator, answers clock probes, runs its share of the load, and reports
every second.

Lifecycle::

    connect ──Hello──▶ (Welcome) ◀─Ping/Pong─▶ Start ─▶ arrivals + 1 s intervals ─▶ drain ─▶ Finished ─▶ exit
                                          ▲ Reshare (fleet changed)   ▲ Ack (coordinator made it durable)

:meth:`Agent.run` is the whole life: :meth:`~Agent._join` (hellos until welcomed, clock probes, until Start),
then :meth:`~Agent._serve` in steps: prepare the run from Start (or refuse it), start the engine, run the
arrivals while a control task talks with the coordinator, drain, finish, and wait for the final Ack.
Messages are dispatched by type from one table per phase; an unexpected or malformed one is dropped and
logged, a message of another protocol version ends the agent with :class:`~loadgen.errors.RunError`.

Intervals and the final Finished stay in an :class:`~agents.outbox.Outbox` until the coordinator
acknowledges them; when a new coordinator process (a new ``epoch``) takes over the run, everything
unacknowledged is sent again.

Dead-man's switch: the agent stops sending load on its own when the coordinator falls silent for longer than
its ``coordinator_timeout`` (:func:`agents.policy.coordinator_lost`).

Operator limits: ``allow_targets`` (host or host:port patterns, ``*`` wildcards) and ``max_rate``; a run
outside them is refused and the refusal reported to the coordinator (:func:`agents.policy.refusal`).

Everything the agent touches is given to it: the control channel (a
:class:`~loadgen.transport.ClientTransport`; ZeroMQ's, :mod:`agents.zmq_transport`, unless one is passed), the
clocks, the engine factory, the steal meter, and ``say`` for the lines its operator reads. The constructor
does no I/O; tests run the real agent on a virtual clock over an in-memory network.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import zmq

from agents.arrivals import ArrivalLoop, RequestPicker
from agents.engine import Engine, Sink
from agents.outbox import Outbox
from agents.policy import WAITING_LINE_EVERY, coordinator_lost, no_answer, refusal, waiting_line
from agents.recorder import Recorder
from agents.steal import StealMeter
from agents.zmq_transport import ZmqClientTransport
from loadgen import __version__
from loadgen.curve import RateCurve
from loadgen.errors import RunError, VersionMismatch, WireError
from loadgen.limits import connection_limit
from loadgen.profile import Profile, RequestSpec
from loadgen.schedule import ArrivalSchedule
from loadgen.transport import ClientTransport
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
JOIN_POLL = 0.2  # seconds the join loop waits for a message before it looks at the clock again
CONTROL_POLL = 0.25  # the same, during the run
SEAL_WAIT = 1.0
"""Seconds the reporter waits, at most, for the arrival loop to seal a second before cutting its interval:
arrivals counted after the cut land in the next interval. 0.25 s was too short for a machine that stalls: a
loaded test machine once put an agent's last 100 arrivals of a 4 s run into a fifth second. The reporter
stops waiting as soon as the second is sealed, so this only delays the reports of a loop already that far
behind (well inside the coordinator's three seconds of grace)."""


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


@dataclass(frozen=True)
class _Ending:
    """Why the control channel ended the run early: the coordinator's Stop, or its silence (``lost``)."""

    reason: str
    lost: bool


@dataclass
class _Run:
    """One run, prepared from its Start."""

    start: Start
    profile: Profile
    curve: RateCurve
    recorder: Recorder
    engine: Engine
    arrivals: ArrivalLoop
    timeout: float  # the dead-man's switch: the coordinator counts as lost after this many silent seconds
    first: int = 0  # the index of this agent's first interval
    next_index: int = 0  # the interval the reporter cuts next
    stop_reporting: asyncio.Event = field(default_factory=asyncio.Event)
    final_ack: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def begin_at(self) -> float:
        """When this agent's arrivals begin, on its clock."""
        return self.start.start_at + self.start.begin


T = TypeVar("T")
Handlers = dict[type[Message], Callable[[Any], Awaitable[T]]]


class Agent:
    """One agent for one run: :meth:`run` joins, serves the run and returns (or raises :class:`RunError`)."""

    def __init__(
        self,
        connect: str,
        *,
        agent_id: str | None = None,
        engine_factory: EngineFactory = default_engine_factory,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.process_time,
        wait_timeout: float = math.inf,
        coordinator_timeout: float = 10.0,
        allow_targets: Sequence[str] = (),
        max_rate: float = 0.0,
        socket_setup: Callable[[zmq.Socket[Any]], None] | None = None,
        transport: ClientTransport | None = None,
        steal_meter: StealMeter | None = None,
        say: Callable[[str], None] = log.info,
    ) -> None:
        """``connect``: the coordinator's address. ``transport``: the control channel (None: a ZeroMQ DEALER
        to ``connect``, made by :meth:`run`, with ``socket_setup`` applied to its socket). ``clock``: the
        clock of the run (the arrival loop's and the engine's); ``cpu_clock``: the process's CPU time, for
        the reported CPU use. ``say``: one line at a time for the operator (what the agent is doing)."""
        self.connect = connect
        self.agent_id = agent_id or new_agent_id()
        self._engine_factory = engine_factory
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._wait_timeout = wait_timeout
        self._coordinator_timeout = coordinator_timeout
        self._allow = tuple(allow_targets)
        self._max_rate = max_rate
        self._socket_setup = socket_setup
        self._transport = transport
        self._steal = steal_meter if steal_meter is not None else StealMeter()
        self._say = say
        self._link: ClientTransport | None = None  # the transport in use, while run() runs
        self._outbox = Outbox()
        self._last_heard = 0.0
        self._epoch: str | None = None
        self._welcomed = False
        self._run: _Run | None = None
        self._join_handlers: Handlers[Start | None] = {
            Welcome: self._on_welcome,
            Ping: self._on_ping,
            Heartbeat: self._on_first_heartbeat,
            Start: self._on_start,
            Stop: self._on_stop_before_start,
        }
        self._run_handlers: Handlers[_Ending | None] = {
            Stop: self._on_stop,
            Ping: self._on_ping,
            Ack: self._on_ack,
            Heartbeat: self._on_heartbeat,
            Reshare: self._on_reshare,
        }

    async def run(self) -> None:
        """Serve one run to completion. Raises :class:`RunError` if it could not complete."""
        link = self._transport
        if link is None:
            link = ZmqClientTransport(self.connect, self.agent_id, self._socket_setup).open()
        self._link = link
        try:
            start = await self._join()
            await self._serve(start)
        finally:
            link.close()

    # --- messages ------------------------------------------------------------------------------------------

    async def _send_bytes(self, data: bytes) -> None:
        assert self._link is not None, "sent outside run()"
        await self._link.send(data)

    async def _send(self, msg: Message) -> None:
        await self._send_bytes(encode(msg))

    async def _recv(self, timeout: float) -> Message | None:
        """The next valid message, or None (nothing within ``timeout``, or a malformed one, dropped)."""
        assert self._link is not None, "received outside run()"
        data = await self._link.recv(timeout)
        if data is None:
            return None
        try:
            msg = decode(data, peer="coordinator")
        except VersionMismatch as exc:
            raise RunError(f"the coordinator speaks another protocol version: {exc.reason}") from exc
        except WireError as exc:
            log.warning("dropped a malformed message: %s", exc)
            return None
        self._last_heard = self._clock()
        return msg

    async def _dispatch(self, handlers: Handlers[T], msg: Message) -> T | None:
        handler = handlers.get(type(msg))
        if handler is None:
            log.warning("dropped an unexpected %s message from the coordinator", msg.TYPE)
            return None
        return await handler(msg)

    # --- joining -------------------------------------------------------------------------------------------

    async def _join(self) -> Start:
        """Say hello until the coordinator answers, answer its clock probes, and wait for Start."""
        hello = Hello(
            self.agent_id, socket.gethostname(), os.getpid(), f"loadgen {__version__}", self._max_rate
        )
        began = self._clock()
        deadline = began + self._wait_timeout
        next_hello = next_line = began
        hellos = 0
        while self._clock() < deadline:
            now = self._clock()
            if not self._welcomed and now >= next_line:
                self._say(waiting_line(self.connect, now - began, hellos))
                next_line = now + WAITING_LINE_EVERY
            if not self._welcomed and now >= next_hello:
                # Bounded: with no coordinator to hand it to (or a handshake that fails), a send waits.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._send(hello), HELLO_EVERY)
                    hellos += 1
                next_hello = now + HELLO_EVERY
            msg = await self._recv(JOIN_POLL)
            if msg is not None:
                start = await self._dispatch(self._join_handlers, msg)
                if start is not None:
                    return start
        if self._welcomed:
            raise RunError(f"joined at {self.connect}, but no run started within {self._wait_timeout:g} s")
        raise RunError(no_answer(self.connect, self._wait_timeout, secured=self._socket_setup is not None))

    async def _on_welcome(self, msg: Welcome) -> None:
        if not self._welcomed:
            self._say(f"joined run {msg.run_id} as {self.agent_id}")
        self._welcomed = True

    async def _on_ping(self, msg: Ping) -> None:
        await self._send(Pong(msg.seq, msg.t_coord, self._clock()))

    async def _on_first_heartbeat(self, msg: Heartbeat) -> None:
        if self._epoch is None:
            self._epoch = msg.epoch

    async def _on_start(self, msg: Start) -> Start:
        return msg

    async def _on_stop_before_start(self, msg: Stop) -> None:
        raise RunError(f"coordinator stopped the run before it began: {msg.reason}")

    # --- the run, step by step -----------------------------------------------------------------------------

    async def _serve(self, start: Start) -> None:
        run = await self._prepare(start)
        self._run = run
        await self._start_engine(run)
        self._freeze_heap(run)
        run.first = max(0, math.floor(self._clock() - start.start_at))
        control = asyncio.ensure_future(self._control(run.timeout))
        self._steal.begin()  # the first second's share counts from here
        reporter = asyncio.ensure_future(self._report(run))
        try:
            await self._run_arrivals(run, control)
            await run.engine.drain(self._clock() + run.profile.load.timeout)
            run.stop_reporting.set()
            await reporter
            await self._finish(run)
            await self._await_final_ack(run, control)
        finally:
            gc.unfreeze()
            run.stop_reporting.set()
            reporter.cancel()
            control.cancel()
            if control.done() and not control.cancelled():
                control.exception()  # retrieved: it was handled in _run_arrivals
            await run.engine.aclose()

    async def _prepare(self, start: Start) -> _Run:
        """Everything the run needs, from its Start; a run this agent must not or cannot serve is refused
        (Refused sent to the coordinator, then :class:`RunError`)."""
        try:
            profile = Profile.from_wire(start.profile)
        except (KeyError, TypeError, ValueError) as exc:
            await self._send(Refused(f"unusable profile: {exc}"))
            raise RunError(f"coordinator sent an unusable profile: {exc}") from exc
        why = refusal(profile, start.share, self._allow, self._max_rate)
        if why is not None:
            await self._send(Refused(why))
            log.error("refused the run: %s", why)
            raise RunError(f"refused the run: {why}")
        load = profile.load
        curve = RateCurve(load.start_rate, load.stages)
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
        arrivals = ArrivalLoop(
            schedule,
            engine,
            recorder,
            picker,
            start=start.start_at,
            max_in_flight=load.max_in_flight,
            clock=self._clock,
        )
        timeout = min(self._coordinator_timeout, start.coordinator_timeout)
        return _Run(start, profile, curve, recorder, engine, arrivals, timeout)

    async def _start_engine(self, run: _Run) -> None:
        try:
            await run.engine.start()
        except ConnectionError as exc:
            # Not fatal: every arrival is still scheduled, tried and counted (as connect errors if the
            # target stays down). A load test must report a dead target, not hide it by not running.
            log.warning("target not reachable before the start: %s", exc)
        log.info(
            "share %.3f of %s from t=%.1f s, starting in %.3f s (profile %s, %.0f s)",
            run.start.share,
            run.profile.target,
            run.start.begin,
            run.begin_at - self._clock(),
            run.profile.name,
            run.profile.load.duration,
        )

    def _freeze_heap(self, run: _Run) -> None:
        # Objects made so far (modules, the profile, the engine's requests) live for the whole run; moved out
        # of the collector's sight, a full collection during the run walks only what the run itself made
        # (measured with gc callbacks at 40,000 requests/s: a 62 ms pause before, which is 62 ms of send lag).
        if run.begin_at - self._clock() > 0.1:
            gc.collect()
        gc.freeze()

    async def _run_arrivals(self, run: _Run, control: asyncio.Future[_Ending]) -> None:
        """Wait for the start, then send the arrivals until the schedule ends or the control channel ends the
        run (the coordinator's Stop, or its silence: then :class:`RunError`)."""
        wait = run.begin_at - self._clock()
        if wait > 0:
            await asyncio.sleep(wait)
        await self._send(Started(self._clock() - run.begin_at))
        self._say(
            f"started: share {run.start.share:.3f} of {run.profile.target} from t={run.start.begin:.1f} s"
        )
        arrivals = asyncio.ensure_future(run.arrivals.run())
        either: set[asyncio.Future[Any]] = {arrivals, control}
        try:
            done, _ = await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # cancelled while waiting: no load goes on behind our back
            run.arrivals.stop()
            arrivals.cancel()
            raise
        if control not in done:
            arrivals.result()
            return
        run.arrivals.stop()
        await arrivals
        failed = None if control.cancelled() else control.exception()
        if failed is not None:  # e.g. a coordinator of another protocol version took over
            raise failed
        ending = None if control.cancelled() else control.result()
        if ending is not None and ending.lost:
            raise RunError(f"coordinator silent for more than {run.timeout:g} s; stopped sending load")

    async def _finish(self, run: _Run) -> None:
        """The last interval, then Finished with the run's totals."""
        rec, engine = run.recorder, run.engine
        index = max(math.floor(self._clock() - run.start.start_at), run.next_index)
        await self._send_interval(run, index, 0.0)
        data = encode(
            Finished(
                scheduled=rec.total_scheduled,
                ok=rec.total_ok,
                failed=rec.total_failed,
                dropped=rec.total_dropped,
                in_flight=engine.in_flight,
                last_index=index,
            )
        )
        self._outbox.finish(data)
        await self._send_bytes(data)
        self._say(
            f"finished: scheduled {rec.total_scheduled}, ok {rec.total_ok}, failed {rec.total_failed}, "
            f"dropped {rec.total_dropped}, in flight {engine.in_flight}"
        )

    async def _await_final_ack(self, run: _Run, control: asyncio.Future[_Ending]) -> None:
        """Stay until the coordinator has made our last data durable (or falls silent, or says stop)."""
        if control.done():
            return
        waiter = asyncio.ensure_future(run.final_ack.wait())
        either: set[asyncio.Future[Any]] = {waiter, control}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not self._outbox.finished_confirmed:
            log.warning(
                "coordinator did not acknowledge the final data; %d intervals unconfirmed", len(self._outbox)
            )

    # --- reporting -----------------------------------------------------------------------------------------

    async def _send_interval(self, run: _Run, index: int, cpu: float) -> None:
        stolen = self._steal.share()
        pending = run.recorder.cut(
            index, run.engine.in_flight, cpu, run.first, run.engine.connections, stolen
        )
        data = encode(await pending.build_async())
        for lost in self._outbox.add(index, data):
            log.warning(
                "dropped unacknowledged interval %d: the coordinator has not confirmed data for an hour", lost
            )
        await self._send_bytes(data)

    async def _report(self, run: _Run) -> None:
        """Every second of the run: hand the finished interval to the coordinator.

        Waits a little (at most ``SEAL_WAIT``) for the arrival loop to seal the second, so a busy loop's
        arrivals are still counted in the second they were intended for."""
        k = run.first
        cpu_at, cpu_used = self._clock(), self._cpu_clock()
        while True:
            due = run.start.start_at + k + 1
            try:
                await asyncio.wait_for(run.stop_reporting.wait(), max(0.0, due - self._clock()))
            except TimeoutError:
                pass
            else:
                return
            give_up = self._clock() + SEAL_WAIT
            while run.arrivals.sealed_until < k + 1 and self._clock() < give_up:
                await asyncio.sleep(0.002)
            now, used = self._clock(), self._cpu_clock()
            cpu = (used - cpu_used) / (now - cpu_at) if now > cpu_at else 0.0
            cpu_at, cpu_used = now, used
            run.next_index = k + 1
            await self._send_interval(run, k, cpu)
            k += 1

    # --- control during the run ----------------------------------------------------------------------------

    async def _control(self, timeout: float) -> _Ending:
        """Talk with the coordinator during the run: heartbeats out, messages in. Returns when the run must
        stop early."""
        next_beat = 0.0
        self._last_heard = self._clock()
        while True:
            now = self._clock()
            if now >= next_beat:
                await self._send(Heartbeat(now, ""))
                next_beat = now + HEARTBEAT_EVERY
            if coordinator_lost(now, self._last_heard, timeout):
                log.error("coordinator silent for %.1f s: stopping load", now - self._last_heard)
                return _Ending("coordinator lost", lost=True)
            msg = await self._recv(CONTROL_POLL)
            if msg is not None:
                ending = await self._dispatch(self._run_handlers, msg)
                if ending is not None:
                    return ending

    async def _on_stop(self, msg: Stop) -> _Ending:
        log.warning("coordinator asked to stop: %s", msg.reason)
        return _Ending(msg.reason, lost=False)

    async def _on_ack(self, msg: Ack) -> None:
        if self._outbox.ack(msg.index, msg.finished) and self._run is not None:
            self._run.final_ack.set()

    async def _on_heartbeat(self, msg: Heartbeat) -> None:
        if self._epoch is not None and msg.epoch != self._epoch:
            log.warning("a new coordinator took over; re-sending %d unconfirmed intervals", len(self._outbox))
            for data in self._outbox.unconfirmed():
                await self._send_bytes(data)
        self._epoch = msg.epoch

    async def _on_reshare(self, msg: Reshare) -> None:
        run = self._run
        if run is None:
            return
        try:
            schedule = ArrivalSchedule(
                run.curve, run.profile.load.arrival, msg.share, msg.phase, random.Random(msg.seed), msg.at
            )
        except ValueError as exc:  # well-formed on the wire, but not a share: dropped like a malformed one
            log.warning("dropped a reshare the agent cannot take: %s", exc)
            return
        run.arrivals.switch(schedule, msg.at)
        self._say(f"new share {msg.share:.3f} from t={msg.at:.1f} s")
