"""The coordinator process: gathers agents, aligns their start, hands out shares, merges what they send.

Phases: ``join`` (wait for ``expect_agents`` Hellos) → ``sync`` (clock probes per agent) → ``run`` (Start,
then merge 1 s intervals, heartbeats both ways, progress, membership changes, checkpoints) → ``finish`` (all
agents Finished or lost) → results. A crashed coordinator is restarted with :meth:`Coordinator.resume`, which
reloads the last checkpoint and goes straight back to ``run`` on the profile's clock.

This module is the shell. It decides nothing itself: who gets which share from when, who is lost, when the
run is over come from :mod:`coordinator.membership` (a policy that returns actions); what is durable, from
:mod:`coordinator.durability`; the results document, from :mod:`coordinator.results`. It reads messages
from a :class:`~loadgen.transport.ServerTransport` (ZeroMQ by default; in memory for tests and library
callers), on an injected clock, and carries out what the policies return.

Messages are dispatched from a table by type; a malformed message is dropped and logged.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import random
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from coordinator import membership as mb
from coordinator.aggregate import ClosedInterval, RunAggregate, roles
from coordinator.clock_sync import ClockEstimate, ClockProbes, ClockSample
from coordinator.config import CoordinatorConfig
from coordinator.data_leases import DataLeases
from coordinator.durability import HLOG_FILE, Durability
from coordinator.early_stop import over_budget, threshold_lost
from coordinator.hours import HourTable
from coordinator.membership import AgentInfo, Membership
from coordinator.progress import RecentSeconds, RunStatus, progress_line, run_status
from coordinator.results import build_results, judge
from coordinator.saturation import LiveWarnings, generator_behind, live_reasons
from coordinator.spool import IntervalSpool
from coordinator.state import aggregate_state, restore_aggregate, write_data
from coordinator.zmq_transport import SocketGuard, SocketSetup, ZmqServerTransport
from loadgen.curve import RateCurve
from loadgen.errors import JoinTimeout, RunError, VersionMismatch, WireError
from loadgen.limits import connection_budget, raise_open_files
from loadgen.profile import Profile
from loadgen.results_model import ResultsDoc
from loadgen.transport import Frames, ServerTransport
from loadgen.wire import (
    Ack,
    CodeCheck,
    CodeHashes,
    DataGrant,
    DataLease,
    Finished,
    Heartbeat,
    Hello,
    Interval,
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

__all__ = [
    "HLOG_FILE",
    "Coordinator",
    "CoordinatorConfig",
    "Observers",
    "RunObserver",
    "SocketGuard",
    "SocketSetup",
]

log = logging.getLogger("loadgen.coordinator")

HEARTBEAT_EVERY = mb.HEARTBEAT_EVERY
CHECKPOINT_EVERY = 2.0
RESULTS_EVERY = 10.0
JUDGE_EVERY = 5.0  # how often the live status judges the thresholds on the results so far


class RunObserver(Protocol):
    """Watches a run from the coordinator's own thread (the library's live handle is one): told when the
    aligned start is (on the coordinator's clock) and given every second as it closes. Must be quick."""

    def started(self, start_at: float) -> None: ...

    def second(self, closed: ClosedInterval) -> None: ...

    def finishing(self) -> None: ...


class Observers:
    """Several :class:`RunObserver` as one (the library's live handle and the metrics both watch a run):
    each is told in turn, in the order they were added."""

    def __init__(self, observers: Iterable[RunObserver] = ()) -> None:
        self._all = list(observers)

    def add(self, observer: RunObserver) -> None:
        self._all.append(observer)

    def started(self, start_at: float) -> None:
        for o in self._all:
            o.started(start_at)

    def second(self, closed: ClosedInterval) -> None:
        for o in self._all:
            o.second(closed)

    def finishing(self) -> None:
        for o in self._all:
            o.finishing()


class Coordinator:
    def __init__(
        self,
        profile: Profile,
        config: CoordinatorConfig,
        *,
        transport: ServerTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        status: Callable[[RunStatus], None] | None = None,
        progress: Callable[[str], None] | None = None,
        socket_setup: SocketSetup | None = None,
        observer: RunObserver | Sequence[RunObserver] | None = None,
    ) -> None:
        """``progress`` is told what happens, a line at a time, and every ``config.progress_every`` seconds
        the run's figures as a line; given ``status``, the figures go there instead, as a value (the
        command line's terminal panel draws it)."""
        self.profile = profile
        self._observers = Observers(
            () if observer is None else observer if isinstance(observer, Sequence) else (observer,)
        )
        self.config = config
        self._transport = transport
        self._clock = clock
        self._wall = wall
        self._progress = progress or (lambda line: None)
        self._socket_setup = socket_setup
        self._refusals_seen = 0
        self.run_id = uuid.uuid4().hex[:12]
        self.epoch = uuid.uuid4().hex[:12]  # this process; agents re-send unacknowledged data on a new one
        self.seed = config.seed if config.seed is not None else random.randrange(2**31)
        self.curve = RateCurve(profile.load.start_rate, profile.load.stages)
        self.fleet = Membership(config.expect_agents, self.seed, self.curve, profile.load.duration)
        self._last_heard: dict[str, float] = {}
        self._probes = ClockProbes()
        self.events: list[dict[str, Any]] = []
        self.durable = Durability(config.out_dir)
        self.durable.flows = frozenset(f.name for f in profile.flows)
        self.hours = HourTable()
        self._window = RecentSeconds()
        self._status = status
        self._failing: tuple[str, ...] | None = None  # thresholds failing so far, judged every JUDGE_EVERY s
        self._next_judgement = 0.0
        self.agg = RunAggregate(profile.result_names, self.curve, **roles(profile))
        self._start_at = 0.0
        self._hold_intervals_until = 0.0  # after a resume: wait for agents' buffered data before closing
        self.dropped_messages = 0
        self._mismatched: set[str] = set()
        self._saturation_warnings = LiveWarnings()
        self._aborted: str | None = None
        self._aborted_at = 0.0
        self._interrupted = False
        self._interrupt_requested = False  # set by interrupt(), from a signal handler; read by the run loop
        self._in_run_loop = False
        self._stop_request: str | None = None  # set by stop(), from any thread; read between two turns
        self._posted: collections.deque[dict[str, Any]] = collections.deque()  # post_event, any thread
        self._deadline = 0.0  # run-relative end: the profile's duration, or sooner when interrupted
        self._next_beat = self._next_progress = self._next_checkpoint = self._next_results = 0.0
        self._dispatch: dict[type[Message], Callable[[str, Any], None]] = {
            Hello: self._on_hello,
            Pong: self._on_pong,
            Started: self._on_started,
            Interval: self._on_interval,
            Finished: self._on_finished,
            Heartbeat: self._on_heartbeat,
            Refused: self._on_refused,
            DataLease: self._on_data_lease,
            CodeHashes: self._on_code_hashes,
        }
        self._pending_code: dict[str, Hello] = {}  # hellos waiting for the agents' code hashes
        self._code_reference: tuple[str, dict[str, str]] | None = None  # the first admitted agent's
        self._leases = DataLeases(profile.data)
        self._data_written = False  # the test data rows are beside the checkpoint (coordinator.state)
        self._stop_when_no_data: str | None = None  # a unique source that stops the run ran out of rows
        self._planned_stop = False  # the run was stopped as the profile asked (its test data ran out)

    def watch(self, observer: RunObserver) -> None:
        """Have ``observer`` watch the run too (before :meth:`run`), after those given to the constructor."""
        self._observers.add(observer)

    @property
    def start_at(self) -> float | None:
        """The run's aligned start on the coordinator's clock; None until it is set (a resumed run has one
        from the start, and its observers are not told ``started`` again)."""
        return self._start_at or None

    def results_so_far(self) -> ResultsDoc:
        """The results document of the run so far (not final: no verdicts). On the coordinator's thread only
        (an observer's methods are), and not cheap: a few milliseconds per request name."""
        return self._results(final=False)

    @property
    def agents(self) -> dict[str, AgentInfo]:
        return self.fleet.agents

    @property
    def endpoint(self) -> str:
        return self._transport.endpoint if self._transport is not None else ""

    @property
    def spool(self) -> IntervalSpool:
        return self.durable.spool

    # --- transport ---------------------------------------------------------------------------------------

    def bind(self, endpoint: str | None = None) -> str:
        """Open the control socket (unless a transport was given); returns the endpoint agents reach. Raises
        :class:`~loadgen.errors.BindError` (nothing is left open then)."""
        if self._transport is None:
            expected = self.config.expect_agents
            soft = raise_open_files(max(1024, 2 * expected))  # a descriptor per agent, and room for late ones
            if connection_budget(soft) < expected:
                room = connection_budget(soft)
                self._progress(
                    f"WARNING: the open-file limit ({soft}) leaves room for {room} agents, not {expected}; "
                    "raise it with ulimit -n"
                )
            self._transport = ZmqServerTransport.open(endpoint or self.config.bind, self._socket_setup)
        return self._transport.endpoint

    def close(self) -> None:
        """Release the spool and the socket; bounded in time. Safe to call more than once."""
        self.durable.close()
        if self._transport is not None:
            self._transport.close()

    def _send(self, agent: str, msg: Message, data: bytes | None = None) -> None:
        """Send ``msg`` to ``agent``; ``data`` is its encoding when the caller already has it (the same
        heartbeat or acknowledgement goes to many agents)."""
        assert self._transport is not None
        if not self._transport.send(agent, data or encode(msg)):
            log.warning("send to %s would block; dropped %s", agent, msg.TYPE)

    def _pump(self, timeout: float) -> None:
        """Receive and dispatch messages for up to ``timeout`` seconds (at least one wait)."""
        assert self._transport is not None
        self._take_posted()
        deadline = self._clock() + timeout
        while True:
            for frames in self._transport.recv(max(0.0, deadline - self._clock())):
                self._handle(frames)
            if self._clock() >= deadline:
                return

    def _handle(self, frames: Frames) -> None:
        if len(frames) != 2:
            self.dropped_messages += 1
            log.warning("dropped a message with %d frames", len(frames))
            return
        ident, data = frames
        peer = ident.decode("utf-8", "replace")
        try:
            msg = decode(data, peer=peer)
        except VersionMismatch as exc:
            self.dropped_messages += 1
            if peer not in self._mismatched:
                self._mismatched.add(peer)
                self._progress(f"refused {peer}: {exc.reason}")
                self._send(peer, Stop(f"protocol version mismatch: {exc.reason}"))
            return
        except WireError as exc:
            self.dropped_messages += 1
            log.warning("dropped a malformed message: %s", exc)
            return
        handler = self._dispatch.get(type(msg))
        if handler is None:
            self.dropped_messages += 1
            log.warning("dropped an unexpected %s message from %s", msg.TYPE, peer)
            return
        info = self.agents.get(peer)
        if info is not None:
            self._last_heard[peer] = self._clock()
            if info.state == "lost" and not isinstance(msg, Interval | Finished):
                # It came back after its share was given away: it must not go on adding load.
                self._send(peer, Stop("declared lost; its share went to other agents"))
        try:
            handler(peer, msg)
        except WireError as exc:
            self.dropped_messages += 1
            log.warning("dropped a malformed message: %s", exc)

    # --- carrying out what the policy decided ------------------------------------------------------------

    def _do(self, actions: Sequence[mb.Action]) -> None:
        for a in actions:
            if isinstance(a, mb.Welcome):
                self._last_heard[a.agent] = self._clock()
                self._send(a.agent, Welcome(self.run_id))
            elif isinstance(a, mb.Probe):
                self._probes.begin(a.agent)
                self._send(a.agent, Ping(0, self._clock()))
            elif isinstance(a, mb.StartShare):
                self._send(a.agent, self._start_message(a))
            elif isinstance(a, mb.ShareChange):
                self._send(a.agent, Reshare(a.share, a.phase, a.seed, a.at))
            elif isinstance(a, mb.StopAgent):
                self._send(a.agent, Stop(a.reason))
            elif isinstance(a, mb.Event):
                self._event(a.kind, **a.fields)
            else:
                self._progress(a.line)

    def _start_message(self, a: mb.StartShare) -> Start:
        info = self.agents[a.agent]
        return Start(
            self.run_id,
            self.profile.to_wire(),
            a.share,
            a.phase,
            a.seed,
            self._start_at + info.clock_offset_ms / 1000.0,
            self.config.coordinator_timeout,
            self.config.engine,
            a.begin,
        )

    # --- handlers ----------------------------------------------------------------------------------------

    def _on_hello(self, peer: str, msg: Hello) -> None:
        refs = self.profile.code_refs
        if refs and peer not in self.agents:  # flows in Python: admitted once its code is the same
            self._pending_code[peer] = msg
            self._send(peer, CodeCheck(refs))
            return
        self._admit_hello(peer, msg)

    def _on_code_hashes(self, peer: str, msg: CodeHashes) -> None:
        hello = self._pending_code.pop(peer, None)
        if hello is None:
            return  # an answer repeated, or to a check it was never sent
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in msg.hashes.items()):
            raise WireError("code_hashes: expected text hashes", peer)
        refs = self.profile.code_refs
        problem = msg.problem or (
            "" if set(msg.hashes) == set(refs) else f"it hashed {sorted(msg.hashes)}, not {refs}"
        )
        if not problem and self._code_reference is not None:
            first, expected = self._code_reference
            differ = [r for r in refs if msg.hashes[r] != expected[r]]
            if differ:
                problem = (
                    f"its code for {', '.join(differ)} differs from agent {first}'s (sha256 "
                    f"{', '.join(msg.hashes[r][:12] for r in differ)} against "
                    f"{', '.join(expected[r][:12] for r in differ)}); install the same version on every agent"
                )
        if problem:
            self._refuse_code(peer, hello, problem)
            return
        if self._code_reference is None:
            self._code_reference = (peer, dict(msg.hashes))
        self._admit_hello(peer, hello)

    def _refuse_code(self, peer: str, hello: Hello, problem: str) -> None:
        """An agent that cannot run the profile's Python flows, or runs other code than the fleet: before the
        start, the run cannot start (every agent is told); afterwards the agent is not admitted."""
        reason = f"agent {peer} ({hello.host}) cannot run this profile's Python flows: {problem}"
        self._event("agent_code_refused", agent=peer, reason=problem)
        if self.fleet.phase == "join":
            for agent in [*self.agents, *self._pending_code, peer]:
                self._send(agent, Stop(f"the run cannot start: {reason}"))
            raise RunError(reason)
        self._progress(f"refused {reason}")
        self._send(peer, Stop(reason))

    def _admit_hello(self, peer: str, msg: Hello) -> None:
        actions = self.fleet.hello(peer, msg.host, msg.pid, msg.max_rate, self._now())
        if any(isinstance(a, mb.StopAgent) for a in actions):
            log.warning(
                "refused agent %s (%s): not accepting agents in phase %s", peer, msg.host, self.fleet.phase
            )
        self._do(actions)

    def _on_pong(self, peer: str, msg: Pong) -> None:
        next_step = self._probes.answer(peer, ClockSample(msg.t_coord, msg.t_agent, self._clock()))
        info = self.agents.get(peer)
        if next_step is None or info is None or self.fleet.phase != "run" or info.state != "joining":
            return  # the start's probes are sent in rounds by _sync_clocks
        if isinstance(next_step, int):
            self._send(peer, Ping(next_step, self._clock()))
        else:
            self._set_clock(info, next_step)
            self._do(self.fleet.clock_known(peer, self._now()))

    def _on_started(self, peer: str, msg: Started) -> None:
        info = self.agents.get(peer)
        if info is None or info.start_late_ms is not None:
            return
        info.start_late_ms = msg.late * 1000.0
        first = [a for a in self.agents.values() if a.joined_t == 0.0 and a.state != "refused"]
        lates = [a.start_late_ms for a in first if a.start_late_ms is not None]
        if info.joined_t == 0.0 and len(lates) == len(first):
            error = max(a.clock_error_ms for a in first)
            self._progress(
                f"all {len(first)} agents started; start skew {max(lates) - min(lates):.3f} ms "
                f"(± {2 * error:.3f} ms clock-offset uncertainty)"
            )

    def _on_interval(self, peer: str, msg: Interval) -> None:
        if peer not in self.agents:
            raise WireError("interval from an agent that is not part of this run", peer)
        self.agg.add(peer, msg)
        self._check_budget()
        if msg.no_data and self._stop_when_no_data is not None and self._aborted is None:
            self._planned_stop = True
            self._abort(f"the test data ran out ({self._stop_when_no_data})", "stopped_no_data")

    def _on_finished(self, peer: str, msg: Finished) -> None:
        info = self.agents.get(peer)
        if info is None or info.finished_received:
            return
        c = self.agg.agent(peer).counts
        merged = (c.scheduled, c.ok, c.failed, c.dropped)
        said = (msg.scheduled, msg.ok, msg.failed, msg.dropped)
        if merged != said:  # its intervals and its own totals disagree: something was lost on the way
            self._event(
                "agent_totals_mismatch",
                agent=peer,
                reported=dict(zip(("scheduled", "ok", "failed", "dropped"), said, strict=True)),
                merged=dict(zip(("scheduled", "ok", "failed", "dropped"), merged, strict=True)),
            )
        self._do(self.fleet.finished(peer))

    def _on_heartbeat(self, peer: str, msg: Heartbeat) -> None:
        pass  # _handle already noted that the agent is alive

    def _on_data_lease(self, peer: str, msg: DataLease) -> None:
        if peer not in self.agents:
            raise WireError("data lease from an agent that is not part of this run", peer)
        grant = self._leases.grant(msg.source, msg.count, max(1, len(self.fleet.busy())))
        if grant is None:
            raise WireError(f"data lease for source {msg.source}: not a unique [[data]] source", peer)
        if grant.checkpoint:
            self._checkpoint(results=False)  # the new mark is durable before any row beyond it is used
        self._send(peer, DataGrant(grant.source, grant.start, grant.count))
        if grant.exhausted:
            source = self.profile.data[grant.source]
            self._event("data_exhausted", file=source.file, on_exhausted=source.on_exhausted)
            if source.on_exhausted == "stop":  # once an agent finds no row left (rows leased are used)
                self._stop_when_no_data = source.file

    def _on_refused(self, peer: str, msg: Refused) -> None:
        self._do(self.fleet.refused(peer, msg.reason, self._now()))

    def _event(self, kind: str, **fields: Any) -> None:
        self.events.append({"t": round(self._now(), 3), "type": kind, **fields})

    def post_event(self, t: float, kind: str, **fields: Any) -> None:
        """Record an event that happened elsewhere (an action the caller ran) at run time ``t``. Safe from
        any thread: it joins the run's events at the coordinator's next turn."""
        self._posted.append({"t": round(t, 3), "type": kind, **fields})

    def _take_posted(self) -> None:
        while self._posted:
            self.events.append(self._posted.popleft())

    def _now(self) -> float:
        """Seconds since the aligned start (0 before it)."""
        return max(0.0, self._clock() - self._start_at) if self._start_at else 0.0

    # --- phases ------------------------------------------------------------------------------------------

    def run(self) -> ResultsDoc:
        """Run the whole profile; return the results document (also written to ``out_dir``, with the
        thresholds judged). Raises :class:`RunError`, or :class:`~loadgen.errors.BindError` when it has no
        transport yet and cannot bind one."""
        self.bind()
        self._join()
        self._sync_clocks()
        self._start()
        self._run_loop()
        return self._finish()

    def _join(self) -> None:
        n = self.config.expect_agents
        self._progress(f"coordinator listening on {self.endpoint}; waiting for {n} agent(s)")
        deadline = self._clock() + self.config.join_timeout
        while len(self.agents) < n:
            if self._clock() >= deadline:
                for agent in self.agents:
                    self._send(agent, Stop("not enough agents joined"))
                raise JoinTimeout(len(self.agents), n, self.config.join_timeout)
            self._stop_if_asked_before_start()
            self._pump(0.1)

    def _set_clock(self, info: AgentInfo, est: ClockEstimate) -> None:
        info.clock_offset_ms = est.offset * 1000.0
        info.clock_error_ms = est.error * 1000.0

    def _sync_clocks(self) -> None:
        self.fleet.phase = "sync"
        for agent in self.agents:
            self._probes.begin(agent)
        for seq in range(self._probes.probes):
            for agent in self.agents:
                self._send(agent, Ping(seq, self._clock()))
            deadline = self._clock() + 1.0
            while self._clock() < deadline and not self._probes.answered(seq):
                self._stop_if_asked_before_start()
                self._pump(0.01)
        for agent, info in self.agents.items():
            est = self._probes.estimate(agent)
            if est is None:
                raise RunError(f"agent {agent} did not answer clock probes")
            self._set_clock(info, est)

    def _stop_if_asked_before_start(self) -> None:
        reason = self._stop_request or ("interrupted by the operator" if self._interrupt_requested else None)
        if reason is not None:
            for agent in self.agents:
                self._send(agent, Stop(reason))
            raise RunError(f"the run was stopped before it started: {reason}")

    def _start(self) -> None:
        max_err = max(a.clock_error_ms for a in self.agents.values()) / 1000.0
        try:
            actions = self.fleet.start()
        except mb.CapacityShort as exc:
            for agent in self.agents:  # tell them why, or they only see a coordinator that went away
                self._send(agent, Stop(f"the run cannot start: {exc}"))
            raise RunError(str(exc)) from exc
        self._start_at = self._clock() + self.config.lead + 2 * max_err
        self.durable.started_wall = self._wall() + (self._start_at - self._clock())
        self._observers.started(self._start_at)
        self._do(actions)
        offsets = ", ".join(f"{a.id} {a.clock_offset_ms:+.3f} ms" for a in self.agents.values())
        self._progress(
            f"starting {self.profile.name!r} on {len(self.agents)} agent(s); clock offsets: {offsets}"
        )

    def _run_loop(self) -> None:
        """Run until every agent finished or was lost. Ctrl-C (or SIGTERM) stops the agents cleanly and
        still ends with results; a second one leaves at once."""
        self._deadline = self.profile.load.duration
        self._next_beat = 0.0
        self._next_progress = self._start_at + self.config.progress_every
        self._next_checkpoint = self._clock() + CHECKPOINT_EVERY
        self._next_results = self._clock() + RESULTS_EVERY
        self._in_run_loop = True
        try:
            while True:
                try:
                    if self._interrupt_requested and not self._interrupted:
                        self._stop_for_operator()
                    if self._stop_request is not None and self._aborted is None:
                        self._abort(self._stop_request, "stopped")
                        self._deadline = min(self._deadline, self._now())
                    if self._tick():
                        return
                except KeyboardInterrupt:
                    if self._interrupted:
                        raise
                    self._stop_for_operator()
        finally:
            self._in_run_loop = False

    def interrupt(self) -> bool:
        """Stop the run as the operator asked (Ctrl-C, SIGTERM): the agents are told to stop and the results
        are still written. Returns False, changing nothing, outside the run loop or when the operator already
        asked (the caller then leaves at once). Only sets a flag, which the run loop reads between two turns,
        so it is safe from a signal handler; an exception raised by the handler instead would land wherever
        the loop happened to be (inside a checkpoint's write, a finalizer that swallows it)."""
        if not self._in_run_loop or self._interrupt_requested or self._interrupted:
            return False
        self._interrupt_requested = True
        return True

    def stop(self, reason: str = "stopped by the caller") -> None:
        """End the run early, from any thread: the agents are told to stop, the run finishes with what was
        sent (``aborted`` says why) and the results are written as usual. Before the start, the run fails
        with :class:`~loadgen.errors.RunError` instead (there is nothing to report)."""
        if self._stop_request is None:
            self._stop_request = reason

    def _stop_for_operator(self) -> None:
        self._interrupted = True
        self._abort("interrupted by the operator", "interrupted")
        self._deadline = min(self._deadline, self._now())

    def _tick(self) -> bool:
        """One turn of the run loop; True when the run is over."""
        self._pump(0.05)
        now = self._clock()
        if now >= self._next_beat:
            beat = Heartbeat(now, self.epoch)
            data = encode(beat)
            for agent in self.fleet.reachable():
                self._send(agent, beat, data)
            self._next_beat = now + HEARTBEAT_EVERY
        for agent in mb.silent_agents(self.fleet.busy(), self._last_heard, now, self.config.agent_timeout):
            self._declare_lost(agent, f"silent for {self.config.agent_timeout:g} s")
        self._close_intervals(math.floor(now - self._start_at) - 1)
        if now >= self._next_progress:
            self._report_progress(now)
            self._next_progress += self.config.progress_every
        if now >= self._next_checkpoint:
            self._checkpoint(results=now >= self._next_results)
            if now >= self._next_results:
                self._next_results = now + RESULTS_EVERY
            self._next_checkpoint = now + CHECKPOINT_EVERY
        elapsed = now - self._start_at
        busy = self.fleet.busy()
        if mb.run_over(
            busy=bool(busy),
            any_agents=bool(self.agents),
            elapsed=elapsed,
            deadline=self._deadline,
            aborted=self._aborted is not None,
        ):
            return True
        if mb.finish_overdue(elapsed, self._deadline, self.profile.load.timeout, self.config.agent_timeout):
            for agent in busy:
                self._declare_lost(agent, "did not finish in time")
            return True
        return False

    def _declare_lost(self, agent: str, reason: str) -> None:
        heard = self._last_heard.get(agent, self._clock()) - self._start_at
        self._do(self.fleet.lost(agent, reason, self._now(), self.agg.agent(agent).last_index, heard))

    def _close_intervals(self, now_index: int) -> None:
        grace = 3 if self._clock() >= self._hold_intervals_until else 1 << 30
        for c in self.agg.close(self.fleet.busy(), now_index, grace=grace):
            self._closed(c)

    def _closed(self, c: ClosedInterval) -> None:
        self.durable.closed(c)
        self._observers.second(c)
        self.hours.add(c.index, c.summary, c.latency)
        self._window.add(c)
        self._check_limits_live(c.index)
        s = c.summary
        if s["saturated"] and self._saturation_warnings.due(
            generator_behind(s["send_lag_p99"], s["cpu_max"]), self._clock()
        ):
            why, advice = live_reasons(
                s["dropped"], s["send_lag_p99"], s["cpu_max"], s["service_p99"], s.get("stolen", 0.0)
            )
            self._event("generator_saturated", second=s["t"], why="; ".join(why))
            self._progress(f"WARNING: GENERATOR SATURATED at t={s['t']} s: {'; '.join(why)}. {advice}")

    def _check_limits_live(self, second: int) -> None:
        """Budget and abort_on_fail, judged on every closed second."""
        if self._aborted is None:
            stop = over_budget(self.profile, self.agg) or threshold_lost(
                self.profile, second, lambda: self._results(final=False)
            )
            if stop is not None:
                self._abort(stop.reason, stop.kind)

    def _check_budget(self) -> None:
        stop = over_budget(self.profile, self.agg) if self._aborted is None else None
        if stop is not None:
            self._abort(stop.reason, stop.kind)

    def _abort(self, reason: str, kind: str) -> None:
        self._aborted = reason
        self._aborted_at = self._now()
        self._event(kind, reason=reason)
        self._progress(f"ABORTING the run: {reason}")
        for agent in self.fleet.busy():
            self._send(agent, Stop(reason))

    def _report_progress(self, now: float) -> None:
        status = self._run_status(now)
        if self._status is not None:
            self._status(status)
        else:
            self._progress(progress_line(status))

    def _run_status(self, now: float) -> RunStatus:
        thresholds = self.profile.thresholds
        if thresholds and now >= self._next_judgement and self._window.last is not None:
            from loadgen.thresholds import evaluate_all

            verdicts = evaluate_all(thresholds, self._results(final=False))
            self._failing = tuple(v.expr for v in verdicts if not v.passed)
            self._next_judgement = now + JUDGE_EVERY
        load = self.profile.load
        return run_status(
            name=self.profile.name,
            elapsed=now - self._start_at,
            duration=load.duration,
            start_rate=load.start_rate,
            stages=load.stages,
            window=self._window,
            totals=self.agg.totals,
            agent_states=[a.state for a in self.agents.values()],
            connected=len(self.fleet.reachable()),
            expected=self.config.expect_agents,
            events=self.events,
            thresholds=len(thresholds),
            failing=self._failing,
            stopping=self._aborted,
        )

    def _finish(self) -> ResultsDoc:
        """Merge the last stragglers, judge the thresholds, write the results once; the document returned
        holds the whole per-second series (read back from the spool) for the reports."""
        self._pump(0.2)  # late stragglers
        for c in self.agg.close_all():
            self._closed(c)
        self._observers.finishing()
        self._take_posted()
        self.fleet.end(self._end_time())
        self.events.append({"t": round(self._now(), 3), "type": "run_finished"})
        self._note_refusals()
        doc = self._results(final=True)
        self._checkpoint(results=False)
        judge(doc, self.profile.thresholds)
        self.durable.write_results(doc)
        doc["intervals"] = self.spool.read()
        return doc

    def _end_time(self) -> float:
        """Run time at which the profile's arrivals ended: its duration, or when the run was stopped."""
        end = self._deadline if self._deadline else self.profile.load.duration
        if self._aborted is not None and self._aborted_at > 0:
            end = min(end, self._aborted_at)
        return end

    # --- durability --------------------------------------------------------------------------------------

    def _checkpoint(self, *, results: bool) -> None:
        """Make what has been merged durable (the results document too when ``results``), then acknowledge
        it to the agents (they may then forget it)."""
        self._note_refusals()
        self.durable.checkpoint(self._state(), self._results(final=False) if results else None)
        acks: dict[tuple[int, bool], tuple[Ack, bytes]] = {}  # most agents are at the same point
        for agent, info in self.agents.items():
            if info.state != "refused":
                key = (self.agg.agent(agent).contiguous, info.finished_received)
                ack = acks.get(key)
                if ack is None:
                    msg = Ack(*key)
                    ack = acks[key] = (msg, encode(msg))
                self._send(agent, *ack)

    def _note_refusals(self) -> None:
        """Agents turned away by the transport's guard (an unknown key) become events, once each."""
        if self._transport is None:
            return
        refused = self._transport.refused()
        for r in refused[self._refusals_seen :]:
            self._event("agent_rejected", address=r.address, public_key=r.public_key)
            self._progress(f"refused an agent from {r.address}: its key is not authorized ({r.public_key})")
        self._refusals_seen = len(refused)

    def _results(self, *, final: bool) -> ResultsDoc:
        elapsed = self._clock() - self._start_at
        return build_results(
            self.profile,
            self.agg,
            self.spool.mark,
            list(self.agents.values()),
            self.events,
            started_at=self.durable.started_wall,
            elapsed_s=elapsed,
            agents_expected=self.config.expect_agents,
            final=final,
            tally=self.spool.tally,
            planned=self.curve.between(0.0, min(max(0.0, elapsed), self._end_time())),
            unsent=self.fleet.unsent,
            incomplete=self._incomplete(),
            aborted=self._aborted,
            aborted_at=self._aborted_at,
            planned_stop=self._planned_stop,
            interrupted=self._interrupted,
            hours=self.hours.rows(),
        )

    def _incomplete(self) -> str | None:
        """Why the fleet could not carry the profile's load, if it could not."""
        if self.fleet.share_refused:
            return "an agent refused its share of the run"
        if self.fleet.went_empty:
            return "no agent was left to carry the load"
        return None

    def _state(self) -> dict[str, Any]:
        profile = self.profile.to_wire(secrets=False)
        data, profile["data"] = profile["data"], []
        if data and not self._data_written and self.durable.out is not None:
            write_data(self.durable.out, data)  # once: the rows never change during the run
            self._data_written = True
        return {
            "profile": profile,  # no auth value, client key or env.NAME value on disk
            "data_file": bool(data),
            "source": self.profile.source,
            "config": self.config.state(self.endpoint),
            "run_id": self.run_id,
            "seed": self.seed,
            "started_wall": self.durable.started_wall,
            **self.fleet.state(),
            "events": self.events,
            "hours": self.hours.state(),
            "aggregate": aggregate_state(self.agg),
            "data_leases": self._leases.to_state(),
            "code_reference": list(self._code_reference) if self._code_reference else None,
        }

    @classmethod
    def resume(
        cls,
        out: Path,
        *,
        transport: ServerTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        status: Callable[[RunStatus], None] | None = None,
        progress: Callable[[str], None] | None = None,
        socket_setup: SocketSetup | None = None,
        bind: str | None = None,
    ) -> Coordinator:
        """A coordinator that continues the run checkpointed in ``out`` (call :meth:`run_resumed`)."""
        durable, st = Durability.reopen(out)
        try:
            # Built again, so auth's {{ env.NAME }} and the [tls] files are read again (the checkpoint
            # holds neither the value nor the client key); a ProfileError if they are gone.
            profile = dataclasses.replace(Profile.from_wire(st["profile"]), source=st["source"])
            config = CoordinatorConfig.restore(st["config"], seed=st["seed"], out=out, bind=bind)
            self = cls(
                profile,
                config,
                transport=transport,
                clock=clock,
                wall=wall,
                status=status,
                progress=progress,
                socket_setup=socket_setup,
            )
        except BaseException:
            durable.close()
            raise
        self.durable = durable
        durable.flows = frozenset(f.name for f in profile.flows)
        self.run_id = st["run_id"]
        self._start_at = clock() - (wall() - durable.started_wall)  # the profile's clock goes on
        self.fleet.restore(st)
        self.events = st["events"]
        self.hours = HourTable.restore(st["hours"])
        self.agg = restore_aggregate(st["aggregate"], profile.result_names, self.curve, **roles(profile))
        self._leases.restore(st.get("data_leases", {}))
        reference = st.get("code_reference")  # the agent whose flow code every later one must match
        if reference:
            self._code_reference = (str(reference[0]), {str(k): str(v) for k, v in reference[1].items()})
        # Give every agent the rest of its own timeout to notice the new coordinator and re-attach.
        now = clock() + max(0.0, config.coordinator_timeout - config.agent_timeout)
        self._last_heard = dict.fromkeys(self.agents, now)
        self._hold_intervals_until = now + config.agent_timeout
        self._event("coordinator_resumed", epoch=self.epoch)
        return self

    def run_resumed(self) -> ResultsDoc:
        self.bind()
        self._progress(
            f"resumed run {self.run_id} at t={self._now():.1f} s on {self.endpoint}; "
            f"waiting for {len(self.fleet.busy())} agent(s) to re-attach"
        )
        self._run_loop()
        return self._finish()
