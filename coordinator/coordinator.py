"""The coordinator process: gathers agents, aligns their start, hands out shares, merges what they send.

Phases: ``join`` (wait for ``expect_agents`` Hellos) → ``sync`` (clock probes per agent) → ``run`` (Start,
then merge 1 s intervals, heartbeats both ways, progress) → ``finish`` (all agents Finished or given up on)
→ results. Messages are dispatched from a table by type; a malformed message is dropped and logged.
"""

from __future__ import annotations

import logging
import math
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from coordinator.aggregate import ClosedInterval, RunAggregate, recent_p99
from coordinator.clock_sync import ClockSample, estimate
from coordinator.results import AgentInfo, build_results, write_json_atomic
from loadgen.curve import RateCurve
from loadgen.errors import RunError, WireError
from loadgen.profile import Profile
from loadgen.split import split
from loadgen.wire import (
    MAX_MESSAGE_BYTES,
    Finished,
    Heartbeat,
    Hello,
    Interval,
    Message,
    Ping,
    Pong,
    Refused,
    Start,
    Stop,
    Welcome,
    decode,
    encode,
)

log = logging.getLogger("loadgen.coordinator")

CLOCK_PROBES = 8
HEARTBEAT_EVERY = 1.0
CHECKPOINT_EVERY = 5.0


@dataclass(frozen=True)
class CoordinatorConfig:
    bind: str = "tcp://127.0.0.1:5555"
    expect_agents: int = 1
    out_dir: Path | None = None
    join_timeout: float = 60.0
    coordinator_timeout: float = 10.0  # agents stop if the coordinator is silent this long
    agent_timeout: float = 10.0  # an agent silent this long is declared lost
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
    ) -> None:
        self.profile = profile
        self.config = config
        self._clock = clock
        self._wall = wall
        self._progress = progress or (lambda line: None)
        self.run_id = uuid.uuid4().hex[:12]
        self.curve = RateCurve(profile.load.start_rate, profile.load.stages)
        self.agents: dict[str, AgentInfo] = {}
        self._last_heard: dict[str, float] = {}
        self._finished: dict[str, Finished] = {}
        self._samples: dict[str, list[ClockSample]] = {}
        self.events: list[dict[str, Any]] = []
        self.intervals: list[dict[str, Any]] = []
        self._recent: list[ClosedInterval] = []
        self.agg = RunAggregate([r.name for r in profile.requests], self.curve)
        self._start_at = 0.0
        self._started_wall = 0.0
        self._phase = "join"
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._sock: zmq.Socket[bytes] | None = None
        self.endpoint = ""
        self.dropped_messages = 0
        self._dispatch: dict[type[Message], Callable[[str, Any], None]] = {
            Hello: self._on_hello,
            Pong: self._on_pong,
            Interval: self._on_interval,
            Finished: self._on_finished,
            Heartbeat: self._on_heartbeat,
            Refused: self._on_refused,
        }

    # --- socket ------------------------------------------------------------------------------------------

    def bind(self) -> str:
        """Bind the control socket; returns the endpoint actually bound (a port of 0 picks a free one)."""
        self._ctx = zmq.Context()
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        bind = self.config.bind
        if bind.endswith(":0"):
            bind = bind[:-2] + ":*"
        sock.bind(bind)
        self._sock = sock
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        return self.endpoint

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    def _send(self, agent: str, msg: Message) -> None:
        assert self._sock is not None
        try:
            self._sock.send_multipart([agent.encode(), encode(msg)], flags=zmq.NOBLOCK)
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
        except WireError as exc:
            self.dropped_messages += 1
            log.warning("dropped a malformed message: %s", exc)
            return
        handler = self._dispatch.get(type(msg))
        if handler is None:
            self.dropped_messages += 1
            log.warning("dropped an unexpected %s message from %s", msg.TYPE, peer)
            return
        if peer in self.agents:
            self._last_heard[peer] = self._clock()
        try:
            handler(peer, msg)
        except WireError as exc:
            self.dropped_messages += 1
            log.warning("dropped a malformed message: %s", exc)

    # --- handlers ----------------------------------------------------------------------------------------

    def _on_hello(self, peer: str, msg: Hello) -> None:
        if peer in self.agents:
            self._send(peer, Welcome(self.run_id))  # a repeated hello: the first welcome was lost or late
            return
        if self._phase != "join" or len(self.agents) >= self.config.expect_agents:
            self._send(peer, Stop("a run is already in progress on this coordinator"))
            log.warning("refused late agent %s (%s)", peer, msg.host)
            return
        self.agents[peer] = AgentInfo(peer, msg.host, msg.pid)
        self._last_heard[peer] = self._clock()
        self._send(peer, Welcome(self.run_id))
        self._progress(
            f"agent {peer} joined from {msg.host} ({len(self.agents)}/{self.config.expect_agents})"
        )

    def _on_pong(self, peer: str, msg: Pong) -> None:
        if peer in self._samples:
            self._samples[peer].append(ClockSample(msg.t_coord, msg.t_agent, self._clock()))

    def _on_interval(self, peer: str, msg: Interval) -> None:
        if peer not in self.agents:
            raise WireError("interval from an agent that is not part of this run", peer)
        self.agg.add(peer, msg)

    def _on_finished(self, peer: str, msg: Finished) -> None:
        if peer in self.agents:
            self._finished[peer] = msg
            self.agents[peer].finished = True
            self._event("agent_finished", agent=peer)

    def _on_heartbeat(self, peer: str, msg: Heartbeat) -> None:
        pass  # _handle already noted that the agent is alive

    def _on_refused(self, peer: str, msg: Refused) -> None:
        self._event("agent_refused", agent=peer, reason=msg.reason)
        self._progress(f"agent {peer} refused the run: {msg.reason}")

    def _event(self, kind: str, **fields: Any) -> None:
        t = self._clock() - self._start_at if self._start_at else 0.0
        self.events.append({"t": round(t, 3), "type": kind, **fields})

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
                raise RunError(
                    f"only {len(self.agents)} of {n} agents joined within {self.config.join_timeout:g} s"
                )
            self._pump(0.1)

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
            est = estimate(samples)
            info.clock_offset_ms = est.offset * 1000.0
            info.clock_error_ms = est.error * 1000.0

    def _start(self) -> None:
        self._phase = "run"
        ids = list(self.agents)
        shares = split(ids)
        seed = self.config.seed if self.config.seed is not None else random.randrange(2**31)
        max_err = max(a.clock_error_ms for a in self.agents.values()) / 1000.0
        self._start_at = self._clock() + self.config.lead + 2 * max_err
        self._started_wall = self._wall() + (self._start_at - self._clock())
        wire_profile = self.profile.to_wire()
        for i, sh in enumerate(shares):
            info = self.agents[sh.agent]
            info.share = sh.share
            start_at = self._start_at + info.clock_offset_ms / 1000.0
            self._send(
                sh.agent,
                Start(
                    self.run_id,
                    wire_profile,
                    sh.share,
                    sh.phase,
                    seed + 7919 * i,
                    start_at,
                    self.config.coordinator_timeout,
                    self.config.engine,
                ),
            )
        self.events.append({"t": 0.0, "type": "run_started", "agents": len(ids)})
        offsets = ", ".join(f"{a.id} {a.clock_offset_ms:+.3f} ms" for a in self.agents.values())
        self._progress(f"starting {self.profile.name!r} on {len(ids)} agent(s); clock offsets: {offsets}")

    def _active(self) -> list[str]:
        return [a for a, info in self.agents.items() if not info.finished and not info.lost]

    def _run_loop(self) -> None:
        duration = self.profile.load.duration
        hard_end = self._start_at + duration + self.profile.load.timeout + self.config.agent_timeout + 5.0
        next_beat = 0.0
        next_progress = self._start_at + self.config.progress_every
        next_checkpoint = self._start_at + CHECKPOINT_EVERY
        while self._active():
            self._pump(0.05)
            now = self._clock()
            if now >= next_beat:
                for agent in self._active():
                    self._send(agent, Heartbeat(now))
                next_beat = now + HEARTBEAT_EVERY
            for agent in self._active():
                if now - self._last_heard.get(agent, now) > self.config.agent_timeout:
                    self.agents[agent].lost = True
                    self._event("agent_lost", agent=agent)
                    self._progress(f"agent {agent} lost (silent for {self.config.agent_timeout:g} s)")
            self._close_intervals(math.floor(now - self._start_at) - 1)
            if now >= next_progress:
                self._progress(self._progress_line(now))
                next_progress += self.config.progress_every
            if now >= next_checkpoint:
                self._checkpoint(final=False)
                next_checkpoint = now + CHECKPOINT_EVERY
            if now > hard_end:
                for agent in self._active():
                    self.agents[agent].lost = True
                    self._event("agent_lost", agent=agent, reason="did not finish in time")
                break

    def _close_intervals(self, now_index: int) -> None:
        for c in self.agg.close(self._active(), now_index):
            self.intervals.append(c.summary)
            self._recent = [*self._recent[-4:], c]

    def _progress_line(self, now: float) -> str:
        elapsed = now - self._start_at
        duration = self.profile.load.duration
        last = self.intervals[-1] if self.intervals else None
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
            f"dropped {t.dropped}  p99(5s) {p99s}"
        )

    def _finish(self) -> dict[str, Any]:
        self._pump(0.2)  # late stragglers
        for c in self.agg.close_all():
            self.intervals.append(c.summary)
        self.events.append({"t": round(self._clock() - self._start_at, 3), "type": "run_finished"})
        return self._checkpoint(final=True)

    def _checkpoint(self, *, final: bool) -> dict[str, Any]:
        results = build_results(
            self.profile,
            self.agg,
            self.intervals,
            list(self.agents.values()),
            self.events,
            started_at=self._started_wall,
            elapsed_s=self._clock() - self._start_at,
            agents_expected=self.config.expect_agents,
            final=final,
        )
        if self.config.out_dir is not None:
            write_json_atomic(self.config.out_dir / "results.json", results)
        return results
