"""The agent process: joins a coordinator, answers clock probes, runs its share of the load, and reports
every second.

Lifecycle::

    connect ──Hello──▶ (Welcome) ◀─Ping/Pong─▶ Start ─▶ arrivals + 1 s intervals ─▶ drain ─▶ Finished ─▶ exit
                                          ▲ Reshare (fleet changed)   ▲ Ack (coordinator made it durable)

:meth:`Agent.run` is the whole life: the join (:class:`agents.join.Joining`: hellos until welcomed, clock
probes, until Start), then :meth:`~Agent._serve` in steps: prepare the run from Start (or refuse it), start
the engine, run the arrivals while a control task talks with the coordinator and the reporter
(:class:`agents.reporter.Reporter`) sends every second, drain, finish, and wait for the final Ack.
Messages are dispatched by type from one table per phase (:func:`agents.session.dispatch`); an unexpected or
malformed one is dropped and logged, a message of another protocol version ends the agent with
:class:`~loadgen.errors.RunError`. The engine comes from :mod:`agents.engines`.

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
import gc
import logging
import math
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import zmq

from agents.arrivals import ArrivalLoop, RequestPicker, arrival_weights
from agents.engine import Engine
from agents.engines import EngineFactory, Route, default_engine_factory, negotiate
from agents.flow_runner import FlowRunner, direct_flows
from agents.http_request import split_target, with_auth
from agents.join import Joining
from agents.outbox import Outbox
from agents.policy import coordinator_lost, refusal
from agents.recorder import Recorder
from agents.reporter import Reporter
from agents.session import Ending, Handlers, Run, dispatch
from agents.steal import StealMeter
from agents.zmq_transport import ZmqClientTransport
from loadgen import __version__
from loadgen.curve import RateCurve
from loadgen.endpoint import connect_address
from loadgen.errors import RunError, VersionMismatch, WireError
from loadgen.limits import connection_limit
from loadgen.profile import Profile
from loadgen.schedule import ArrivalSchedule
from loadgen.transport import ClientTransport
from loadgen.wire import (
    Ack,
    DataGrant,
    DataLease,
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
    decode,
    encode,
)

log = logging.getLogger("loadgen.agent")

HEARTBEAT_EVERY = 1.0
CONTROL_POLL = 0.25  # seconds the control loop waits for a message before it looks at the clock again
NEGOTIATE_WITHIN = 1.0  # seconds to agree an HTTP version by ALPN (http_version = "auto" over https)


def new_agent_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"


@dataclass(frozen=True)
class AgentCounts:
    scheduled: int
    ok: int
    failed: int
    dropped: int
    in_flight: int


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
        self._reporter = Reporter(self._outbox, self._steal, self._send_bytes, clock, cpu_clock, say)
        self._last_heard = 0.0
        self._epoch: str | None = None
        self._run: Run | None = None
        self._asking: set[asyncio.Future[None]] = set()  # requests for test data rows on their way
        self._run_handlers: Handlers[Ending | None] = {
            Stop: self._on_stop,
            Ping: self._on_ping,
            Ack: self._on_ack,
            Heartbeat: self._on_heartbeat,
            Reshare: self._on_reshare,
            DataGrant: self._on_data_grant,
        }

    def counts(self) -> AgentCounts | None:
        """What this agent has done in its run so far (None before it started one): for operators and
        tests that need the agent's own view, e.g. what a killed agent really had in flight."""
        run = self._run
        if run is None:
            return None
        return AgentCounts(*run.recorder.so_far(), run.engine.in_flight)

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

    async def _join(self) -> Start:
        hello = Hello(
            self.agent_id, socket.gethostname(), os.getpid(), f"loadgen {__version__}", self._max_rate
        )
        joining = Joining(
            hello,
            self.connect,
            send=self._send,
            recv=self._recv,
            clock=self._clock,
            say=self._say,
            wait_timeout=self._wait_timeout,
            secured=self._socket_setup is not None,
        )
        start = await joining.run()
        self._epoch = joining.epoch
        return start

    def _ask_for_rows(self, source: int, count: int) -> None:
        """The flow runner needs rows of a unique test data source: ask the coordinator (the grant comes
        back in the control loop, :meth:`_on_data_grant`)."""
        task = asyncio.ensure_future(self._send(DataLease(source, count)))
        self._asking.add(task)
        task.add_done_callback(self._asking.discard)

    async def _on_data_grant(self, msg: DataGrant) -> None:
        run = self._run
        if run is not None and isinstance(run.engine, FlowRunner):
            run.engine.granted(msg.source, msg.start, msg.count)

    async def _on_ping(self, msg: Ping) -> None:
        await self._send(Pong(msg.seq, msg.t_coord, self._clock()))

    # --- the run, step by step -----------------------------------------------------------------------------

    async def _serve(self, start: Start) -> None:
        run = await self._prepare(start)
        self._run = run
        await self._start_engine(run)
        self._freeze_heap(run)
        run.first = max(0, math.floor(self._clock() - start.start_at))
        control = asyncio.ensure_future(self._control(run.timeout))
        self._steal.begin()  # the first second's share counts from here
        reporter = asyncio.ensure_future(self._reporter.report(run))
        try:
            await self._run_arrivals(run, control)
            await run.engine.drain(self._clock() + run.profile.load.timeout)
            run.stop_reporting.set()
            await reporter
            await self._reporter.finish(run)
            await self._await_final_ack(run, control)
        finally:
            gc.unfreeze()
            run.stop_reporting.set()
            reporter.cancel()
            control.cancel()
            if control.done() and not control.cancelled():
                control.exception()  # retrieved: it was handled in _run_arrivals
            await run.engine.aclose()

    async def _prepare(self, start: Start) -> Run:
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
        alias = direct_flows(profile) if profile.flows else None
        recorder = Recorder(profile.result_names, profile.step_names, alias)
        connections = connection_limit(load.connection_limit)
        if connections < load.connection_limit:
            log.warning(
                "this agent can open at most %d connections (its open-file limit; raise it with ulimit -n): "
                "requests beyond them wait for a free one, and the wait counts in their latency",
                connections,
            )
        runner = None
        if profile.flows and alias is None:  # user journeys: the runner between arrivals and the engine
            runner = FlowRunner(profile, recorder, clock=self._clock, rng=random.Random(start.seed + 2))
            runner.ask = self._ask_for_rows
        try:
            _, host, port, _ = split_target(profile.target)
            route = Route(
                profile.tls,
                connect_address(profile.resolve, host, port),
                load.http_version,
                load.max_streams_per_connection,
            )
            if route.http_version == "auto":
                version = await negotiate(profile.target, route, min(load.timeout, NEGOTIATE_WITHIN))
                route = route._replace(http_version=version)
            auth = None if profile.auth is None else profile.auth.header
            requests = with_auth(profile.requests, auth)
            engine: Engine = self._engine_factory(
                start.engine, profile.target, requests, runner or recorder, load.timeout, connections, route
            )
            if runner is not None:
                runner.bind(engine, requests, auth)  # steps go with the profile's auth too
                engine = runner
        except ValueError as exc:
            await self._send(Refused(f"cannot drive {profile.target}: {exc}"))
            raise RunError(f"cannot drive {profile.target}: {exc}") from exc
        picker = RequestPicker(arrival_weights(profile, alias), random.Random(start.seed + 1))
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
        protocol = "h2" if route.http_version == "2" else "http/1.1"
        return Run(start, profile, curve, recorder, engine, arrivals, timeout, protocol=protocol)

    async def _start_engine(self, run: Run) -> None:
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

    def _freeze_heap(self, run: Run) -> None:
        # Objects made so far (modules, the profile, the engine's requests) live for the whole run; moved out
        # of the collector's sight, a full collection during the run walks only what the run itself made
        # (measured with gc callbacks at 40,000 requests/s: a 62 ms pause before, which is 62 ms of send lag).
        if run.begin_at - self._clock() > 0.1:
            gc.collect()
        gc.freeze()

    async def _run_arrivals(self, run: Run, control: asyncio.Future[Ending]) -> None:
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

    async def _await_final_ack(self, run: Run, control: asyncio.Future[Ending]) -> None:
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

    # --- control during the run ----------------------------------------------------------------------------

    async def _control(self, timeout: float) -> Ending:
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
                return Ending("coordinator lost", lost=True)
            msg = await self._recv(CONTROL_POLL)
            if msg is not None:
                ending = await dispatch(self._run_handlers, msg)
                if ending is not None:
                    return ending

    async def _on_stop(self, msg: Stop) -> Ending:
        log.warning("coordinator asked to stop: %s", msg.reason)
        return Ending(msg.reason, lost=False)

    async def _on_ack(self, msg: Ack) -> None:
        if self._outbox.ack(msg.index, msg.finished) and self._run is not None:
            self._run.final_ack.set()

    async def _on_heartbeat(self, msg: Heartbeat) -> None:
        if self._epoch is not None and msg.epoch != self._epoch:
            log.warning("a new coordinator took over; re-sending %d unconfirmed intervals", len(self._outbox))
            for data in self._outbox.unconfirmed():
                await self._send_bytes(data)
            run = self._run
            if run is not None and isinstance(run.engine, FlowRunner):
                run.engine.ask_again()  # test data rows asked of the coordinator before, never granted
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
