"""The coordinator process: gathers agents, aligns their start, hands out shares, merges what they send.

Phases: ``join`` (wait for ``expect_agents`` Hellos) → ``sync`` (clock probes per agent) → ``run`` (Start,
then merge 1 s intervals, heartbeats both ways, progress, membership changes, checkpoints) → ``finish`` (all
agents Finished or lost) → results. A crashed coordinator is restarted with :meth:`Coordinator.resume`, which
reloads the last checkpoint and goes straight back to ``run`` on the profile's clock.

Membership during the run: an agent silent for ``agent_timeout`` is declared lost and its share moves to the
survivors; an agent that says hello mid-run is clock-probed and then given a share at the current point of the
curve. Every change is an event. The decisions (who gets which share from when) come from the pure
:func:`loadgen.split.split`; this module only does the talking.

Messages are dispatched from a table by type; a malformed message is dropped and logged.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import zmq

from coordinator.aggregate import (
    ClosedInterval,
    RunAggregate,
    recent_p99,
)
from coordinator.clock_sync import ClockSample, estimate
from coordinator.hours import HourTable
from coordinator.results import AgentInfo, build_results, write_json_atomic
from coordinator.saturation import LiveWarnings, generator_behind, live_reasons
from coordinator.spool import IntervalSpool, SpoolMark
from coordinator.state import aggregate_state, read_state, restore_aggregate, write_state
from loadgen.costs import cost_of, cost_summary, judgeable_during_run
from loadgen.curve import RateCurve
from loadgen.errors import RunError, VersionMismatch, WireError
from loadgen.limits import connection_budget, raise_open_files
from loadgen.profile import Profile
from loadgen.split import split
from loadgen.wire import (
    MAX_MESSAGE_BYTES,
    Ack,
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

log = logging.getLogger("loadgen.coordinator")

CLOCK_PROBES = 8
HEARTBEAT_EVERY = 1.0
CHECKPOINT_EVERY = 2.0
RESULTS_EVERY = 10.0
JOIN_LEAD = 1.0  # a late joiner starts this long after its clock probes
LOST_LEAD = 0.25  # survivors take over a lost agent's share this long after it is declared lost
HLOG_FILE = "latency.hlog"


class SocketGuard(Protocol):
    """What securing the control socket leaves behind (e.g. the CURVE authenticator)."""

    def stop(self) -> None:
        """Called after the socket closes, before the context ends."""

    def refused(self) -> list[Any]:
        """Peers refused at the door so far (each with ``address`` and ``public_key``)."""


# Configures the control socket before it binds (e.g. CURVE).
SocketSetup = Callable[[zmq.Context[Any], zmq.Socket[Any]], SocketGuard | None]


@dataclass(frozen=True)
class CoordinatorConfig:
    bind: str = "tcp://127.0.0.1:5555"
    expect_agents: int = 1
    out_dir: Path | None = None
    join_timeout: float = 60.0
    coordinator_timeout: float = 10.0  # agents stop if the coordinator is silent this long
    agent_timeout: float = 3.0  # an agent silent this long is declared lost
    lead: float = 0.5  # seconds between the Start message and the aligned start
    seed: int | None = None
    progress_every: float = 1.0
    engine: str = "fast"


class Coordinator:
    def __init__(
        self,
        profile: Profile,
        config: CoordinatorConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        progress: Callable[[str], None] | None = None,
        socket_setup: SocketSetup | None = None,
    ) -> None:
        self.profile = profile
        self.config = config
        self._clock = clock
        self._wall = wall
        self._progress = progress or (lambda line: None)
        self._socket_setup = socket_setup
        self._guard: SocketGuard | None = None
        self._refusals_seen = 0
        self.run_id = uuid.uuid4().hex[:12]
        self.epoch = uuid.uuid4().hex[:12]  # this process; agents re-send unacknowledged data on a new one
        self.seed = config.seed if config.seed is not None else random.randrange(2**31)
        self.curve = RateCurve(profile.load.start_rate, profile.load.stages)
        self.agents: dict[str, AgentInfo] = {}
        self._last_heard: dict[str, float] = {}
        self._samples: dict[str, list[ClockSample]] = {}
        self.events: list[dict[str, Any]] = []
        self._spool: IntervalSpool | None = None  # the closed seconds, on disk (opened when the first closes)
        self.hours = HourTable()
        self._recent: list[ClosedInterval] = []
        self._unlogged: list[ClosedInterval] = []  # closed but not yet in the interval log
        self.agg = RunAggregate([r.name for r in profile.requests], self.curve)
        self._start_at = 0.0
        self._started_wall = 0.0
        self._reshares = 0
        self._hlog_size = 0
        self._hold_intervals_until = 0.0  # after a resume: wait for agents' buffered data before closing
        self._phase = "join"
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._sock: zmq.Socket[bytes] | None = None
        self.endpoint = ""
        self.dropped_messages = 0
        self._mismatched: set[str] = set()
        self._saturation_warnings = LiveWarnings()
        self._aborted: str | None = None
        self._aborted_at = 0.0
        self._interrupted = False
        self._interrupt_requested = False  # set by interrupt(), from a signal handler; read by the run loop
        self._in_run_loop = False
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
        }

    # --- socket ------------------------------------------------------------------------------------------

    def bind(self, endpoint: str | None = None) -> str:
        """Bind the control socket; returns the endpoint actually bound (a port of 0 picks a free one)."""
        expected = self.config.expect_agents
        soft = raise_open_files(max(1024, 2 * expected))  # a descriptor per agent, and room for late ones
        if connection_budget(soft) < expected:
            room = connection_budget(soft)
            self._progress(
                f"WARNING: the open-file limit ({soft}) leaves room for {room} agents, not {expected}; "
                "raise it with ulimit -n"
            )
        self._ctx = zmq.Context()
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        if self._socket_setup is not None:
            self._guard = self._socket_setup(self._ctx, sock)
        bind = endpoint or self.config.bind
        if bind.endswith(":0"):
            bind = bind[:-2] + ":*"
        sock.bind(bind)
        self._sock = sock
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        return self.endpoint

    @property
    def spool(self) -> IntervalSpool:
        """The closed seconds so far: in ``out_dir`` (a temporary file for a run without one)."""
        if self._spool is None:
            self._spool = IntervalSpool.create(self.config.out_dir)
        return self._spool

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._guard is not None:
            self._guard.stop()
            self._guard = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    def _send(self, agent: str, msg: Message, data: bytes | None = None) -> None:
        """Send ``msg`` to ``agent``; ``data`` is its encoding when the caller already has it (the same
        heartbeat or acknowledgement goes to many agents)."""
        assert self._sock is not None
        try:
            self._sock.send_multipart([agent.encode(), data or encode(msg)], flags=zmq.NOBLOCK)
        except zmq.Again:
            log.warning("send to %s would block; dropped %s", agent, msg.TYPE)

    def _pump(self, timeout: float) -> None:
        """Receive and dispatch messages for up to ``timeout`` seconds (at least one poll)."""
        assert self._sock is not None
        deadline = self._clock() + timeout
        while True:
            remaining = deadline - self._clock()
            if not self._sock.poll(max(0, int(remaining * 1000)), zmq.POLLIN):
                return
            while True:
                try:
                    frames = self._sock.recv_multipart(flags=zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._handle(frames)
            if self._clock() >= deadline:
                return

    def _handle(self, frames: list[bytes]) -> None:
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

    # --- handlers ----------------------------------------------------------------------------------------

    def _on_hello(self, peer: str, msg: Hello) -> None:
        info = self.agents.get(peer)
        if info is not None:
            self._send(peer, Welcome(self.run_id))  # a repeated hello: the first welcome was lost or late
            return
        if self._phase == "join" and len(self.agents) < self.config.expect_agents:
            self.agents[peer] = AgentInfo(peer, msg.host, msg.pid, max_rate=msg.max_rate)
            self._last_heard[peer] = self._clock()
            self._send(peer, Welcome(self.run_id))
            self._progress(
                f"agent {peer} joined from {msg.host} ({len(self.agents)}/{self.config.expect_agents})"
            )
            return
        if self._phase == "run" and self._now() < self.profile.load.duration - JOIN_LEAD - 1.0:
            info = self.agents[peer] = AgentInfo(peer, msg.host, msg.pid, max_rate=msg.max_rate)
            self._last_heard[peer] = self._clock()
            self._samples[peer] = []
            self._send(peer, Welcome(self.run_id))
            self._send(peer, Ping(0, self._clock()))
            self._progress(f"agent {peer} from {msg.host} asks to join mid-run; probing its clock")
            return
        self._send(peer, Stop("this coordinator's run is not accepting agents now"))
        log.warning("refused agent %s (%s): not accepting agents in phase %s", peer, msg.host, self._phase)

    def _on_pong(self, peer: str, msg: Pong) -> None:
        samples = self._samples.get(peer)
        if samples is None:
            return
        samples.append(ClockSample(msg.t_coord, msg.t_agent, self._clock()))
        info = self.agents[peer]
        if self._phase == "run" and info.state == "joining":
            if len(samples) < CLOCK_PROBES:
                self._send(peer, Ping(len(samples), self._clock()))
            else:
                self._set_clock(info, samples)
                self._admit(peer)

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

    def _on_finished(self, peer: str, msg: Finished) -> None:
        info = self.agents.get(peer)
        if info is None:
            return
        if not info.finished_received:
            info.finished_received = True
            if info.state in ("active", "joining"):
                info.state = "finished"
            self._event("agent_finished", agent=peer)

    def _on_heartbeat(self, peer: str, msg: Heartbeat) -> None:
        pass  # _handle already noted that the agent is alive

    def _on_refused(self, peer: str, msg: Refused) -> None:
        info = self.agents.get(peer)
        if info is None or info.state in ("refused", "lost"):
            return
        was_active = info.state == "active"
        info.state = "refused"
        self._event("agent_refused", agent=peer, reason=msg.reason)
        self._progress(f"agent {peer} refused the run: {msg.reason}")
        if was_active and self._phase == "run":
            self._reshare(self._now() + LOST_LEAD)

    def _event(self, kind: str, **fields: Any) -> None:
        self.events.append({"t": round(self._now(), 3), "type": kind, **fields})

    def _now(self) -> float:
        """Seconds since the aligned start (0 before it)."""
        return max(0.0, self._clock() - self._start_at) if self._start_at else 0.0

    # --- phases ------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Run the whole profile; return the results document. Raises :class:`RunError`."""
        if self._sock is None:
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
                raise RunError(
                    f"only {len(self.agents)} of {n} agents joined within {self.config.join_timeout:g} s"
                )
            self._pump(0.1)

    def _set_clock(self, info: AgentInfo, samples: list[ClockSample]) -> None:
        est = estimate(samples)
        info.clock_offset_ms = est.offset * 1000.0
        info.clock_error_ms = est.error * 1000.0

    def _sync_clocks(self) -> None:
        self._phase = "sync"
        self._samples = {a: [] for a in self.agents}
        for seq in range(CLOCK_PROBES):
            for agent in self.agents:
                self._send(agent, Ping(seq, self._clock()))
            deadline = self._clock() + 1.0
            while self._clock() < deadline and any(len(s) <= seq for s in self._samples.values()):
                self._pump(0.01)
        for agent, info in self.agents.items():
            samples = self._samples[agent]
            if not samples:
                raise RunError(f"agent {agent} did not answer clock probes")
            self._set_clock(info, samples)

    def _check_limits(self, shares: dict[str, float]) -> None:
        peak = self.curve.peak_rate
        for agent, share in shares.items():
            limit = self.agents[agent].max_rate
            if limit > 0 and share * peak > limit * (1 + 1e-9):
                raise RunError(
                    f"agent {agent} allows at most {limit:g} requests/s, but its share of the peak rate is "
                    f"{share * peak:g}/s; add agents or raise its --max-rate"
                )

    def _start(self) -> None:
        self._phase = "run"
        ids = list(self.agents)
        shares = split(ids)
        self._check_limits({s.agent: s.share for s in shares})
        max_err = max(a.clock_error_ms for a in self.agents.values()) / 1000.0
        self._start_at = self._clock() + self.config.lead + 2 * max_err
        self._started_wall = self._wall() + (self._start_at - self._clock())
        wire_profile = self.profile.to_wire()
        for i, sh in enumerate(shares):
            info = self.agents[sh.agent]
            info.share = sh.share
            info.state = "active"
            start_at = self._start_at + info.clock_offset_ms / 1000.0
            self._send(
                sh.agent,
                Start(
                    self.run_id,
                    wire_profile,
                    sh.share,
                    sh.phase,
                    self.seed + 7919 * i,
                    start_at,
                    self.config.coordinator_timeout,
                    self.config.engine,
                    0.0,
                ),
            )
        self.events.append({"t": 0.0, "type": "run_started", "agents": len(ids)})
        offsets = ", ".join(f"{a.id} {a.clock_offset_ms:+.3f} ms" for a in self.agents.values())
        self._progress(f"starting {self.profile.name!r} on {len(ids)} agent(s); clock offsets: {offsets}")

    def _active(self) -> list[str]:
        return [a for a, info in self.agents.items() if info.state == "active"]

    def _busy(self) -> list[str]:
        """Agents whose data may still come: active or joining."""
        return [a for a, info in self.agents.items() if info.state in ("active", "joining")]

    def _admit(self, agent: str) -> None:
        """Give a late joiner a share from shortly from now; the others' shares shrink at the same instant."""
        at = self._now() + JOIN_LEAD
        if at >= self.profile.load.duration:
            self._send(agent, Stop("too late to join this run"))
            self.agents[agent].state = "refused"
            return
        self._reshare(at, joining=agent)
        self._event("agent_joined", agent=agent, share=round(self.agents[agent].share, 6), at=round(at, 3))
        self._progress(
            f"agent {agent} joined mid-run; share {self.agents[agent].share:.3f} from t={at:.1f} s"
        )

    def _reshare(self, at: float, joining: str | None = None) -> None:
        members = self._active() + ([joining] if joining else [])
        if not members:
            self._progress("no agent left to carry the load; waiting for agents to join")
            return
        self._reshares += 1
        shares = split(members)
        try:
            self._check_limits({s.agent: s.share for s in shares})
        except RunError as exc:
            self._event("capacity_short", reason=str(exc))
            self._progress(f"warning: {exc}")
        for i, sh in enumerate(shares):
            info = self.agents[sh.agent]
            info.share = sh.share
            seed = self.seed + 7919 * i + 104729 * self._reshares
            if sh.agent == joining:
                info.state = "active"
                info.joined_t = at
                self._send(
                    sh.agent,
                    Start(
                        self.run_id,
                        self.profile.to_wire(),
                        sh.share,
                        sh.phase,
                        seed,
                        self._start_at + info.clock_offset_ms / 1000.0,
                        self.config.coordinator_timeout,
                        self.config.engine,
                        at,
                    ),
                )
            else:
                self._send(sh.agent, Reshare(sh.share, sh.phase, seed, at))
        self._event("reshare", at=round(at, 3), shares={s.agent: round(s.share, 6) for s in shares})

    def _declare_lost(self, agent: str, reason: str) -> None:
        info = self.agents[agent]
        info.state = "lost"
        now = self._now()
        info.lost_t = now
        last = self.agg.agent(agent).last_index
        # It died somewhere between the last word from it and the next heartbeat it did not send: take the
        # middle of that gap as the end of the arrivals it scheduled but never reported.
        heard = self._last_heard.get(agent, self._clock()) - self._start_at
        died = max(0.0, heard + HEARTBEAT_EVERY / 2)
        info.unreported_estimate = info.share * self.curve.between(last + 1, max(last + 1, died))
        self._event("agent_lost", agent=agent, reason=reason)
        self._progress(f"agent {agent} lost ({reason}); moving its share to the others")
        if now < self.profile.load.duration:
            self._reshare(now + LOST_LEAD)

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
            for agent, info in self.agents.items():
                if info.state not in {"lost", "refused"}:
                    self._send(agent, beat, data)
            self._next_beat = now + HEARTBEAT_EVERY
        for agent in self._busy():
            if now - self._last_heard.get(agent, now) > self.config.agent_timeout:
                self._declare_lost(agent, f"silent for {self.config.agent_timeout:g} s")
        self._close_intervals(math.floor(now - self._start_at) - 1)
        if now >= self._next_progress:
            self._progress(self._progress_line(now))
            self._next_progress += self.config.progress_every
        if now >= self._next_checkpoint:
            self._checkpoint(results=now >= self._next_results)
            if now >= self._next_results:
                self._next_results = now + RESULTS_EVERY
            self._next_checkpoint = now + CHECKPOINT_EVERY
        elapsed = now - self._start_at
        if not self._busy() and (elapsed >= self._deadline or not self.agents or self._aborted is not None):
            return True
        grace = self.profile.load.timeout + self.config.agent_timeout + 5.0
        if elapsed > self._deadline + grace:
            for agent in self._busy():
                self._declare_lost(agent, "did not finish in time")
            return True
        return False

    def _close_intervals(self, now_index: int) -> None:
        grace = 3 if self._clock() >= self._hold_intervals_until else 1 << 30
        for c in self.agg.close(self._busy(), now_index, grace=grace):
            self._closed(c)

    def _closed(self, c: ClosedInterval) -> None:
        self.spool.append(c.summary)
        self._recent = [*self._recent[-4:], c]
        if self.config.out_dir is not None:  # kept only until the next checkpoint writes the interval log
            self._unlogged.append(c)
        self.hours.add(c.index, c.summary, c.latency)
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
        if self._aborted is not None:
            return
        self._check_budget()
        p = self.profile
        if (
            self._aborted is None
            and p.abort_on_fail
            and p.thresholds
            and second + 1 >= p.abort_grace
            and second % 2 == 0
        ):
            from loadgen.thresholds import evaluate_all

            judged = [t for t in p.thresholds if judgeable_during_run(t)]
            lost = [v for v in evaluate_all(judged, self._results(final=False)) if not v.passed]
            if lost:
                self._abort(f"threshold already lost: {lost[0].expr} ({lost[0].detail})", "aborted")

    def _check_budget(self) -> None:
        p = self.profile
        if p.budget is not None and self._aborted is None:
            spent = cost_of(p, self.agg)
            if spent > p.budget:
                self._abort(f"budget exceeded: cost {spent:.4g} > budget {p.budget:.4g}", "budget_exceeded")

    def _abort(self, reason: str, kind: str) -> None:
        self._aborted = reason
        self._aborted_at = self._now()
        self._event(kind, reason=reason)
        self._progress(f"ABORTING the run: {reason}")
        for agent in self._busy():
            self._send(agent, Stop(reason))

    def _progress_line(self, now: float) -> str:
        elapsed = now - self._start_at
        duration = self.profile.load.duration
        last = self.spool.tally.last
        t = self.agg.totals
        p99 = recent_p99(self._recent)
        p99s = f"{p99:.1f} ms" if p99 is not None else "-"
        if last is None:
            rates = "target        -   achieved        -"
        else:  # both figures for the last second every agent has reported
            done = last["ok"] + last["failed"]
            rates = f"target {last['target_rate']:8.1f}/s  achieved {done:8d}/s @{last['t']}s"
        return (
            f"[{min(elapsed, duration):6.0f}/{duration:.0f} s] {rates}  ok {t.ok}  failed {t.failed}  "
            f"dropped {t.dropped}  p99(5s) {p99s}  agents {len(self._active())}"
        )

    def _finish(self) -> dict[str, Any]:
        self._pump(0.2)  # late stragglers
        for c in self.agg.close_all():
            self._closed(c)
        self.events.append({"t": round(self._now(), 3), "type": "run_finished"})
        doc = self._checkpoint(results=True, final=True)
        doc["intervals"] = self.spool.read()  # the reports draw the whole series: read back once, at the end
        return doc

    # --- durability --------------------------------------------------------------------------------------

    def _checkpoint(self, *, results: bool, final: bool = False) -> dict[str, Any]:
        """Make what has been merged durable, then acknowledge it to the agents (they may then forget it)."""
        self._note_refusals()
        out = self.config.out_dir
        doc = self._results(final=final) if results or out is None else {}
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            self._write_hlog(out)
            write_state(out, self._state(self.spool.sync()))
            if results:
                write_json_atomic(out / "results.json", doc, self.spool)
        acks: dict[tuple[int, bool], tuple[Ack, bytes]] = {}  # most agents are at the same point
        for agent, info in self.agents.items():
            if info.state != "refused":
                key = (self.agg.agent(agent).contiguous, info.finished_received)
                ack = acks.get(key)
                if ack is None:
                    msg = Ack(*key)
                    ack = acks[key] = (msg, encode(msg))
                self._send(agent, *ack)
        return doc

    def _note_refusals(self) -> None:
        """Agents turned away by the authenticator (unknown key) become events, once each."""
        if self._guard is None:
            return
        refused = self._guard.refused()
        for r in refused[self._refusals_seen :]:
            self._event("agent_rejected", address=r.address, public_key=r.public_key)
            self._progress(f"refused an agent from {r.address}: its key is not authorized ({r.public_key})")
        self._refusals_seen = len(refused)

    def _results(self, *, final: bool) -> dict[str, Any]:
        doc = build_results(
            self.profile,
            self.agg,
            self.spool.mark,
            list(self.agents.values()),
            self.events,
            started_at=self._started_wall,
            elapsed_s=self._clock() - self._start_at,
            agents_expected=self.config.expect_agents,
            final=final,
            tally=self.spool.tally,
        )
        doc["aborted"] = self._aborted
        doc["hours"] = self.hours.rows()
        doc["interrupted"] = self._interrupted
        if self._aborted is not None and self._aborted_at > 0:
            t = doc["totals"]
            doc["rps"] = round((t["ok"] + t["failed"]) / self._aborted_at, 3)
        doc["cost"] = cost_summary(self.profile, doc)
        return doc

    def _write_hlog(self, out: Path) -> None:
        from loadgen.hlog import HlogWriter

        path = out / HLOG_FILE
        new = self._hlog_size == 0 or not path.exists()
        with path.open("w" if new else "r+") as f:
            if not new:
                f.seek(self._hlog_size)
                f.truncate()
            writer = HlogWriter(f, self._started_wall)
            if new:
                writer.write_header()
            for c in self._unlogged:
                writer.write_interval(float(c.index), 1.0, c.latency)
                for name, h in sorted(c.by_name.items()):
                    writer.write_interval(float(c.index), 1.0, h, tag=name)
            f.flush()
            self._hlog_size = f.tell()
        self._unlogged = []

    def _state(self, spooled: SpoolMark) -> dict[str, Any]:
        return {
            "profile": self.profile.to_wire(),
            "source": self.profile.source,
            "config": {
                "bind": self.endpoint,
                "expect_agents": self.config.expect_agents,
                "coordinator_timeout": self.config.coordinator_timeout,
                "agent_timeout": self.config.agent_timeout,
                "engine": self.config.engine,
            },
            "run_id": self.run_id,
            "seed": self.seed,
            "started_wall": self._started_wall,
            "reshares": self._reshares,
            "hlog_size": self._hlog_size,
            # A shallow copy: AgentInfo holds plain values (dataclasses.asdict deep-copies, 1,000 agents
            # every 2 s).
            "agents": [dict(vars(a)) for a in self.agents.values()],
            "events": self.events,
            "spool": {"count": spooled.count, "size": spooled.size},
            "hours": self.hours.state(),
            "aggregate": aggregate_state(self.agg),
        }

    @classmethod
    def resume(
        cls,
        out: Path,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        progress: Callable[[str], None] | None = None,
        socket_setup: SocketSetup | None = None,
        bind: str | None = None,
    ) -> Coordinator:
        """A coordinator that continues the run checkpointed in ``out`` (call :meth:`run_resumed`)."""
        st = read_state(out)
        profile = dataclasses.replace(Profile.from_wire(st["profile"]), source=st["source"])
        cfg = st["config"]
        config = CoordinatorConfig(
            bind=bind or cfg["bind"],
            expect_agents=cfg["expect_agents"],
            out_dir=out,
            coordinator_timeout=cfg["coordinator_timeout"],
            agent_timeout=cfg["agent_timeout"],
            seed=st["seed"],
            engine=cfg["engine"],
        )
        self = cls(profile, config, clock=clock, wall=wall, progress=progress, socket_setup=socket_setup)
        self.run_id = st["run_id"]
        self._started_wall = st["started_wall"]
        self._start_at = clock() - (wall() - self._started_wall)  # the profile's clock goes on
        self._reshares = st["reshares"]
        self._hlog_size = st["hlog_size"]
        self.agents = {a["id"]: AgentInfo(**a) for a in st["agents"]}
        self.events = st["events"]
        self._spool = _reopen_spool(out, st)
        self.hours = HourTable.restore(st["hours"])
        self.agg = restore_aggregate(st["aggregate"], [r.name for r in profile.requests], self.curve)
        # Give every agent the rest of its own timeout to notice the new coordinator and re-attach.
        now = clock() + max(0.0, config.coordinator_timeout - config.agent_timeout)
        self._last_heard = dict.fromkeys(self.agents, now)
        self._hold_intervals_until = now + config.agent_timeout
        self._phase = "run"
        self._event("coordinator_resumed", epoch=self.epoch)
        return self

    def run_resumed(self) -> dict[str, Any]:
        if self._sock is None:
            self.bind()
        self._progress(
            f"resumed run {self.run_id} at t={self._now():.1f} s on {self.endpoint}; "
            f"waiting for {len(self._busy())} agent(s) to re-attach"
        )
        self._run_loop()
        return self._finish()


def _reopen_spool(out: Path, st: dict[str, Any]) -> IntervalSpool:
    """The checkpoint's spool, cut back to what it covers; a version 1 checkpoint's list becomes a spool."""
    if "spool" in st:
        return IntervalSpool.reopen(out, SpoolMark(int(st["spool"]["count"]), int(st["spool"]["size"])))
    spool = IntervalSpool.create(out)
    for iv in st["intervals"]:
        spool.append(iv)
    spool.sync()
    return spool
