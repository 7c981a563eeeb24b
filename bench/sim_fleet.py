"""A fleet of agents simulated synchronously, inside the in-memory network's wait: no event loop, no sockets.

A real :class:`~coordinator.coordinator.Coordinator` built with ``transport=fleet.transport``,
``clock=fleet.clock`` and ``wall=fleet.clock.wall`` waits for messages by calling the network's ``idle`` hook
(:class:`loadgen.transport.MemoryNetwork`). Here that hook *is* the fleet: it reads what the coordinator sent
each agent (:meth:`~loadgen.transport.MemoryNetwork.take`), answers it, and moves the fake clock on by the
time the coordinator would have waited, stopping at the next second boundary of an agent's run, where that
agent reports the second just over. So hours of a run cost only the coordinator's own work.

Each agent speaks the protocol of :mod:`loadgen.wire` as the real agent does, in its simplest form: Hello
(once; the network loses nothing), a Pong for every Ping, Started when it gets its Start, then at every
second boundary from its ``start_at`` an Interval for the second just over (made by the caller's
``interval(agent_number, second)``) and a Heartbeat, and after the profile's last second a Finished with the
totals of everything it reported. It stops sending on a Stop. It keeps no per-second record (its memory does
not grow with the run), so it cannot re-send on a new coordinator epoch: it is not for crash tests (those
are in tests/fleet_harness.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from loadgen import wire
from loadgen.profile import Profile
from loadgen.transport import MemoryNetwork, ServerTransport

WALL0 = 1.8e9  # the wall clock's reading when the fake clock reads 0

IntervalMaker = Callable[[int, int], wire.Interval]
"""``interval(agent_number, second)``: that agent's report of that second of the run (``first`` is set
by the fleet)."""


class FakeClock:
    """The coordinator's monotonic clock, moved only by the fleet."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def wall(self) -> float:
        return WALL0 + self.t


@dataclass
class SimAgent:
    number: int
    ident: str
    start_at: float | None = None  # on the coordinator's clock (the fleet's clocks agree)
    duration: int = 0  # seconds of run it reports, from the profile in its Start
    first: int = 0  # the first second it reports (a late joiner's begin)
    next_index: int = 0  # the next second it reports
    stopped: str | None = None
    finished: bool = False
    acked: int = -1  # the last second the coordinator acknowledged
    scheduled: int = 0
    ok: int = 0
    failed: int = 0
    dropped: int = 0

    @property
    def sending(self) -> bool:
        return self.start_at is not None and not self.finished and self.stopped is None

    def due(self) -> float:
        """When its next report is due (only while :attr:`sending`)."""
        assert self.start_at is not None
        return self.start_at + self.next_index + 1

    def count(self, iv: wire.Interval) -> None:
        self.scheduled += iv.scheduled
        self.dropped += iv.dropped
        for entry in iv.names.values():
            self.ok += entry[1]
            self.failed += entry[2]


class SimFleet:
    """``agents`` simulated agents named ``sim-0``, ``sim-1``, …; ``on_second(k)`` is called once every agent
    still sending has reported second ``k``."""

    def __init__(
        self,
        agents: int,
        interval: IntervalMaker,
        *,
        clock: FakeClock | None = None,
        on_second: Callable[[int], None] | None = None,
    ) -> None:
        self.clock = clock or FakeClock()
        self.network = MemoryNetwork(idle=self._idle)
        self.agents = [SimAgent(i, f"sim-{i}") for i in range(agents)]
        for a in self.agents:
            self.network.client(a.ident)
        self._interval = interval
        self._on_second = on_second or (lambda k: None)
        self._said_hello = False
        self._seconds_over = 0  # seconds every sending agent has reported
        self.received = 0  # messages the coordinator sent to the fleet
        self.sent = 0  # messages the fleet sent to the coordinator

    @property
    def transport(self) -> ServerTransport:
        """The coordinator's end of the network."""
        return self.network.server

    # --- the coordinator waits: the fleet runs ------------------------------------------------------------

    def _idle(self, timeout: float, mail: asyncio.Event) -> None:
        if not self._said_hello:
            self._said_hello = True
            for a in self.agents:
                self._send(a, wire.Hello(a.ident, "sim", 1, "loadgen sim", 0.0))
            return
        self.read()
        if mail.is_set():
            return
        until = self.clock.t + timeout
        due = min((a.due() for a in self.agents if a.sending), default=None)
        if due is not None and due <= until:
            self.clock.t = max(self.clock.t, due)
            self._report()
        else:
            self.clock.t = until

    def read(self) -> None:
        """Every agent reads and answers what the coordinator sent it, the clock standing still (done in
        every wait of the coordinator; call it after ``run()`` returned for the last acknowledgements)."""
        for a in self.agents:
            for data in self.network.take(a.ident):
                self.received += 1
                self._answer(a, wire.decode(data, peer="coordinator"))

    def _answer(self, a: SimAgent, msg: wire.Message) -> None:
        if isinstance(msg, wire.Ping):
            self._send(a, wire.Pong(msg.seq, msg.t_coord, self.clock.t))
        elif isinstance(msg, wire.Start):
            if a.start_at is None:
                a.start_at = msg.start_at
                a.duration = int(Profile.from_wire(msg.profile).load.duration)
                a.first = a.next_index = max(0, int(msg.begin))
                self._send(a, wire.Started(0.0))
        elif isinstance(msg, wire.Ack):
            a.acked = max(a.acked, msg.index)
        elif isinstance(msg, wire.Stop):
            a.stopped = msg.reason
        # Welcome, Heartbeat, Reshare: nothing to answer

    def _report(self) -> None:
        """Every agent whose second is over reports it, with a heartbeat; one past its last sends Finished."""
        now = self.clock.t
        for a in self.agents:
            while a.sending and a.due() <= now:
                k = a.next_index
                iv = self._interval(a.number, k)
                a.count(iv)
                self._send(a, dataclasses.replace(iv, first=a.first))
                self._send(a, wire.Heartbeat(now, ""))
                a.next_index += 1
                if a.next_index >= a.duration:
                    self._send(a, wire.Finished(a.scheduled, a.ok, a.failed, a.dropped, 0, k))
                    a.finished = True
        reported = [a.next_index for a in self.agents if a.start_at is not None and a.stopped is None]
        over = min(reported, default=self._seconds_over)
        while self._seconds_over < over:
            self._on_second(self._seconds_over)
            self._seconds_over += 1

    def _send(self, a: SimAgent, msg: wire.Message) -> None:
        self.sent += 1
        self.network.inject([a.ident.encode(), wire.encode(msg)])  # bytes, as they come off a socket
