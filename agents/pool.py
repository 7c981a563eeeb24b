"""The connection-pool policy both engines share: which request goes on which connection, when to open one
more, what times out. It does no I/O: the engine injects how a connection is opened (``opener``), how a
request is put on one (the connection's ``send``), the clock and the sink, and does the I/O that the pool's
answers call for (``expire`` returns the connections to abort, ``close`` those to close).

The state, all on the event loop thread::

    idle        LIFO stack of open connections with nothing outstanding (the warmest is reused first; those
                idle for ``idle_expiry`` are closed by the sweep, see :data:`IDLE_EXPIRY`); a
                connection closed while on it stays there and is skipped
    pending     FIFO of (req, intended, submitted) waiting for a connection
    connections open connections (opened and not yet discarded)
    ready       connections that finished a request while requests were pending, waiting for :meth:`flush`
                to hand them the oldest (see "Backlog" below)
    connecting  connections being opened; one more is opened while there are fewer than pending requests
                (less the ready connections), the pending requests would wait longer than ``QUEUE_WAIT``
                for the open connections (see "Growth" below), fewer than ``max_opening`` are being opened
                (a burst after a stall must not open thousands of connections at once) and fewer than
                ``max_connections`` connections in all, and none while the event loop is behind or the
                agent busy (see :meth:`Pool.expire`) unless there is no connection

One request is outstanding per connection (no pipelining). A connection that finishes a request is
``release``\\d *before* the outcome is reported, so the next pending request leaves at once and a sink that
submits from its callback finds the connection idle instead of opening another.

Backlog: while requests are pending, the fast engine does not send the next one from inside the response
callback; it puts the connection on ``ready`` and flushes once per event-loop iteration. Sent from the
callback, the next request is often answered before libuv's read loop for that socket returns (it reads a
socket up to 32 times per readiness event), so under a backlog a single iteration served every connection
many times over and took hundreds of milliseconds, during which no arrival was sent and no report went out
(measured on an agent given half a core for 40,000 arrivals/s: send lag p50 112 ms, p99 389 ms, reports
more than 3 s late; with the flush 26 ms and 65 ms, reports on time).

Growth: a connection is opened for pending requests only when the open ones would not carry them soon. The
sweep estimates the mean service time S of the requests that came back from connections over the last
quarter of a second or so (each one the engines report through :meth:`Pool.came_back`; a window in which
requests were out and none came back makes it unknown again), and from the same sums the load L, the
requests on connections on average (Little's law: service time per second). Of ``c`` connections open and
opening, L carry the arrivals that keep coming and the spare ``c - L`` free up for the pending ones, one
every ``S / (c - L)`` seconds: ``n`` pending requests wait about ``n * S / (c - L)``, and while that is under
:data:`QUEUE_WAIT` the pool waits for a connection to free up instead of opening another. Against a slow
target (S of tens of milliseconds) that is never, and every pending request gets its connection as an open
model wants; against a fast one it keeps the pool near what the rate needs.
Without it, every pause of the agent's event loop (a busy moment of the machine, a full garbage collection)
handed the engine a burst of the arrivals due meanwhile and the pool opened a connection for each: at 25,000
arrivals/s against nginx on loopback, about 8 requests in flight on average, the pool held 400-1,300
connections, opened and closed hundreds every half minute, and the agent's memory rose with each new peak.

Nor is one opened while the agent is busy (:data:`BUSY` of a core since the last sweep, from ``cpu_clock``)
or its loop behind (:data:`BEHIND`): short of CPU, more connections only make every request dearer (each
touches more memory, in the agent and in the kernel), and near its limit that turned a hiccup into a
collapse (the pool at 2,000 connections and the agent serving two thirds of the rate). The pending requests
wait instead; the wait counts in their response time (from the intended time), not in their service time or
send lag (which is the arrival loop's); an agent that short of CPU is near the level (95% of a core) at which
the run marks the generator saturated.

Hot path: :meth:`Pool.submit` is the engines' ``submit`` itself (the fast engine binds it, no wrapper), and
the fast engine inlines :meth:`Pool.release` in its response callback (``pool.pending``/``pool.idle`` are
plain containers for that reason). Everything else runs once per connection or per sweep.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from agents.engine import MAX_OPENING, Due, Sink, wait_drained

SWEEP_INTERVAL = 0.05
"""Seconds between timeout sweeps (less for timeouts under 0.2 s): how late a timeout is reported at most."""

IDLE_EXPIRY = 30.0
"""Seconds an idle connection is kept: one that has been idle this long is closed by the sweep.

So the pool shrinks back to what the load needs after a burst or a stall made it open more (each open
connection costs memory in the agent and in the target, and a server slows down with its connection count),
and closes before common servers' keep-alive timeouts would (60-75 s for nginx and the usual proxies and load
balancers): a request sent just as the server closes its end fails as a reset that is nobody's fault. Not
shorter: 4 s was tried, and near an agent's maximum every hiccup then had to open its extra connections
anew (against nginx on one core, 4 of 4 interleaved trials at 72,000-90,000/s dropped more arrivals with
4 s than with 30 s or with no expiry). A server whose own timeout is shorter (Node.js: 5 s) closes idle
connections first; the pool replaces them quietly when it sees them close."""

QUEUE_WAIT = 0.001
"""Seconds the last of the pending requests may be expected to wait for the spare connections before the pool
opens another (see "Growth" in the module docstring): the arrival loop's own timer tick. A connection costs a
connect round trip, the agent's CPU and the target's. Against the built-in target answering after 10 and
100 ms at 10,000/s (about 100 and 1,000 requests in flight), 1 ms kept the p99 of intended time to write at
2.7-2.8 ms and 2 ms let it reach 2.9-3.9 ms; against nginx at 25,000/s both kept the pool under a few hundred
connections."""

SERVICE_WINDOW = 0.25
"""Seconds over which the mean service time is estimated (at least: until the first sweep after)."""

BUSY = 0.9
"""Share of a core the agent may have used since the last sweep before the pool counts it as busy and stops
opening connections (only with a ``cpu_clock``). Against nginx on loopback at 86,000 and 95,000 arrivals/s,
two 10 s runs each, with the first version of the growth rule: without it 2 of the 4 collapsed (1,500-1,900
connections, send lag p99 26-43 ms), with it none did (46-154 connections, send lag p99 1.9-3.2 ms, every
arrival answered)."""

BEHIND = 0.02
"""Seconds a sweep may run late before the pool counts the event loop as behind and stops opening connections:
a loop that cannot keep up is short of CPU, not of connections, and every connect costs it more."""

Job = tuple[int, float, float]
"""A request waiting for a connection: (request index, intended time, submit time)."""


class Pooled(Protocol):
    """What the pool needs of a connection: its one outstanding request (``req`` is -1 when it carries none)
    and a way to start one."""

    req: int
    intended: float
    submitted: float
    sent: float  # 0.0 until the request is written
    closed: bool  # set by the pool when it forgets the connection (``discard``)
    idle_since: float  # when it last went on the idle stack (or joined the pool), for idle expiry

    def send(self, req: int, intended: float, submitted: float, now: float) -> None:
        """Carry request ``req`` from now on (write it now, or as soon as the connection can)."""


C = TypeVar("C", bound=Pooled)


class Pool(Generic[C]):
    """The pool policy over connections of type ``C``; see the module docstring.

    ``sink.error`` is told of the requests that fail while pending (``timeout``, ``connect``) and of those
    the engine hands to :meth:`failed`. Nothing is opened before :meth:`start` gives the pool an opener.
    """

    __slots__ = (
        "_cpu",
        "_window",
        "answered",
        "behind",
        "clock",
        "closed",
        "connecting",
        "connections",
        "connections_opened",
        "cpu_clock",
        "due",
        "idle",
        "idle_expiry",
        "in_flight",
        "load",
        "max_connections",
        "max_opening",
        "next_sweep",
        "on_error",
        "open_failures",
        "opener",
        "pending",
        "ready",
        "service",
        "service_time",
        "sweep_interval",
        "timeout",
    )

    def __init__(
        self,
        sink: Sink,
        *,
        timeout: float,
        max_connections: int,
        clock: Callable[[], float],
        max_opening: int = MAX_OPENING,
        idle_expiry: float = IDLE_EXPIRY,
        cpu_clock: Callable[[], float] | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, not {max_connections}")
        self.on_error = sink.error
        self.due = Due()  # the engine's: the arrival loop's next arrival (see agents.engine.Due)
        self.timeout = timeout
        self.sweep_interval = min(SWEEP_INTERVAL, timeout / 4)
        self.max_connections = max_connections
        self.max_opening = max_opening
        self.idle_expiry = idle_expiry
        self.clock = clock
        self.cpu_clock = cpu_clock  # the process's CPU seconds (time.process_time), or None: never busy
        self._cpu = (0.0, 0.0)  # (clock, cpu_clock) at the last sweep
        self.idle: list[C] = []
        self.pending: deque[Job] = deque()
        self.ready: list[C] = []
        self.connections: set[C] = set()
        self.connecting = 0
        self.in_flight = 0
        self.opener: Callable[[], None] | None = None
        self.closed = False
        self.behind = False  # the last sweep ran more than BEHIND late: open no connection meanwhile
        self.next_sweep = 0.0  # when the next sweep is due (0.0: not known yet)
        # Requests that came back from a connection (answered, failed or timed out there) and the sum of
        # their service times (from writing to the outcome): the engines add to both as each comes back.
        self.answered = 0
        self.service_time = 0.0
        # Mean service time (seconds), estimated by the sweeps; infinite while unknown (so the pool opens a
        # connection for every pending request, as it would for a slow target).
        self.service = math.inf
        self.load = 0.0  # requests on connections, on average over the same window (service time per second)
        self._window = _ServiceWindow()
        self.connections_opened = 0  # connections that joined the pool since it was made (``add``)
        self.open_failures: dict[str, int] = {}  # attempts to open one that failed, by error category

    def start(self, opener: Callable[[], None]) -> None:
        """From now on, ``opener()`` is called to start opening one connection. It must not block; the
        engine calls :meth:`opened` or :meth:`open_failed` once per call, when the attempt ends."""
        self.opener = opener
        self.top_up()

    # --- requests

    def submit(self, req: int, intended: float) -> None:
        """Request ``req`` goes out now on the warmest idle connection, or waits for one. Never raises
        (unless the connection's ``send`` does); after :meth:`close`, it is counted in flight and dropped."""
        now = self.clock()
        self.in_flight += 1
        idle = self.idle
        while idle:
            connection = idle.pop()
            if not connection.closed:
                connection.send(req, intended, now, now)
                return
        if not self.closed:
            self.pending.append((req, intended, now))
            self.top_up()

    def release(self, connection: C) -> None:
        """``connection`` carries nothing any more: it takes the oldest pending request or goes idle."""
        if self.pending:
            req, intended, submitted = self.pending.popleft()
            connection.send(req, intended, submitted, self.clock())
        else:
            connection.idle_since = self.clock()
            self.idle.append(connection)

    def flush(self) -> None:
        """Each ``ready`` connection takes the oldest pending request, or goes idle if none is left."""
        ready = self.ready
        if not ready:
            return
        self.ready = []
        pending = self.pending
        clock = self.clock
        for connection in ready:
            if connection.closed:
                continue
            if pending:
                req, intended, submitted = pending.popleft()
                connection.send(req, intended, submitted, clock())
            else:
                connection.idle_since = clock()
                self.idle.append(connection)

    def came_back(self, sent: float, done: float) -> None:
        """A request written at ``sent`` is over at ``done`` (answered, or failed on its connection): it is no
        longer in flight and its service time feeds the estimate (see "Growth"). The fast engine inlines
        this in its response callback."""
        self.in_flight -= 1
        self.answered += 1
        self.service_time += done - sent

    def failed(self, connection: C, category: str, done: float) -> None:
        """The request ``connection`` carried failed: report it (the connection now carries none)."""
        req = connection.req
        connection.req = -1
        if connection.sent:
            self.came_back(connection.sent, done)
        else:
            self.in_flight -= 1
        self.on_error(req, connection.intended, connection.sent, done, category)

    # --- connections

    def top_up(self) -> None:
        """Open connections while pending requests outnumber those being opened and those about to take one
        (``ready``) and would wait too long for the open ones (see "Growth"), within the limits."""
        opener = self.opener
        if opener is None:
            return
        while (
            self.connecting + len(self.ready) < len(self.pending)
            and self.short_of_connections()
            and self.connecting < self.max_opening
            and len(self.connections) + self.connecting < self.max_connections
            and not self.closed
            and not (self.behind and self.connections)
        ):
            self.connecting += 1
            opener()

    def short_of_connections(self) -> bool:
        """Would the pending requests wait longer than ``QUEUE_WAIT`` for the connections open and opening?
        Of those, ``load`` carry the arrivals that keep coming; the spare ones free up for the pending
        requests one every ``service / spare`` seconds (see "Growth")."""
        spare = len(self.connections) + self.connecting - self.load
        return not self.connections or spare <= 0 or len(self.pending) * self.service > QUEUE_WAIT * spare

    def add(self, connection: C) -> None:
        """An open connection joins the pool (the engine opened it itself, e.g. the first one)."""
        self.connections_opened += 1
        self.connections.add(connection)
        self.release(connection)
        self.top_up()

    def opened(self, connection: C) -> bool:
        """An attempt started by the opener succeeded. False if the pool is closed: the caller closes it.
        A connection already closed (lost right after it opened) is not added."""
        self.connecting -= 1
        if self.closed:
            return False
        if connection.closed:
            self.top_up()
        else:
            self.add(connection)
        return True

    def open_failed(self, category: str = "connect") -> None:
        """An attempt started by the opener failed (``category``: see :func:`agents.engine.connect_category`):
        the oldest pending request fails with it (so a dead target fails requests one by one instead of
        keeping them until they time out); the rest try again."""
        self.connecting -= 1
        self.failed_to_open(category)
        if self.pending and not self.closed:
            req, intended, _ = self.pending.popleft()
            self.in_flight -= 1
            self.on_error(req, intended, 0.0, self.clock(), category)
        self.top_up()

    def failed_to_open(self, category: str) -> None:
        """Count an attempt to open a connection that failed (the engine's first, or the opener's)."""
        self.open_failures[category] = self.open_failures.get(category, 0) + 1

    def discard(self, connection: C) -> None:
        """Forget a connection (closed, lost or broken); if it is on the idle stack, it is skipped there.
        What it carried, if anything, is the caller's to report (:meth:`failed`)."""
        if connection.closed:
            return
        connection.closed = True
        self.connections.discard(connection)
        self.top_up()

    # --- timeouts, the end

    def expire(self, now: float) -> list[C]:
        """Fail the pending requests submitted ``timeout`` seconds ago or earlier, and return the
        connections whose request is that old: the caller aborts each (its late response must never be read)
        and reports it with :meth:`failed`.

        Called every ``sweep_interval`` seconds: how late it is called tells whether the event loop keeps up.
        While it does not (more than ``BEHIND`` late), no connection is opened: under a backlog each connect
        adds work to a loop that is already short of time, and the pool grew to thousands of connections
        while the agent's throughput halved (measured at 80,000 arrivals/s on one core). Nor while the
        process used more than ``BUSY`` of a core since the last sweep. Each sweep also feeds the service
        time estimate (see "Growth" in the module docstring)."""
        was_behind, was_service = self.behind, self.service
        self.behind = self.next_sweep > 0.0 and now - self.next_sweep > BEHIND
        if self.cpu_clock is not None:
            cpu, (then, cpu_then) = self.cpu_clock(), self._cpu
            self._cpu = (now, cpu)
            if then > 0.0 and now > then and (cpu - cpu_then) / (now - then) > BUSY:
                self.behind = True
        self.next_sweep = now + self.sweep_interval
        window = self._window
        window.update(now, self.answered, self.service_time, self.in_flight - len(self.pending))
        self.service, self.load = window.service, window.load
        if (was_behind and not self.behind) or self.service > was_service:
            self.top_up()
        cutoff = now - self.timeout
        pending = self.pending
        while pending and pending[0][2] <= cutoff:
            req, intended, _ = pending.popleft()
            self.in_flight -= 1
            self.on_error(req, intended, 0.0, now, "timeout")
        if len(self.idle) > len(self.connections):  # closed connections left on the idle stack
            self.idle[:] = [c for c in self.idle if not c.closed]
        return [c for c in self.connections if c.req >= 0 and c.submitted <= cutoff]

    def stale(self, now: float) -> list[C]:
        """Take off the idle stack and forget the connections idle for ``idle_expiry`` or more; the caller
        closes each. Called by the sweep: the stack is LIFO, so the longest idle are at its bottom and the
        check stops at the first one still fresh."""
        idle = self.idle
        cutoff = now - self.idle_expiry
        n = 0
        while n < len(idle) and (idle[n].closed or idle[n].idle_since <= cutoff):
            n += 1
        if n == 0:
            return []
        old = idle[:n]
        del idle[:n]
        stale = [c for c in old if not c.closed]
        for connection in stale:
            self.discard(connection)
        return stale

    def close(self) -> list[C]:
        """Stop: nothing is sent or opened any more; pending requests are dropped without a report (they
        stay counted in ``in_flight``). Returns the open connections, now discarded, for the caller to
        close."""
        self.closed = True
        connections = list(self.connections)
        for connection in connections:
            connection.closed = True
        self.connections.clear()
        self.idle.clear()
        self.ready.clear()
        self.pending.clear()
        return connections

    async def drain(self, deadline: float) -> None:
        """Wait until nothing is in flight or the clock reaches ``deadline``."""
        await wait_drained(lambda: self.in_flight, self.clock, deadline)


class _ServiceWindow:
    """The mean service time and load over windows of at least :data:`SERVICE_WINDOW` seconds, from the
    pool's running count and sum of service times. Fed by the sweeps, so the hot path only adds to the two."""

    __slots__ = ("answered", "busy", "load", "service", "service_time", "start")

    def __init__(self) -> None:
        self.service = math.inf  # mean service time; unknown until a window closes
        self.load = 0.0  # requests on connections, on average (service time per second)
        self.start = -1.0  # no reading yet
        self.answered = 0
        self.service_time = 0.0
        self.busy = False  # requests were on connections at every reading of this window

    def update(self, now: float, answered: int, service_time: float, on_connections: int) -> None:
        """A reading at ``now``; the estimates change when it closes a window."""
        if self.start >= 0:
            self.busy = self.busy and on_connections > 0
            if now - self.start < SERVICE_WINDOW:
                return
            count = answered - self.answered
            if count > 0:
                self.service = (service_time - self.service_time) / count
                self.load = (service_time - self.service_time) / (now - self.start)  # Little's law
            elif self.busy:
                self.service = math.inf  # requests were out the whole window and none came back: slow target
        self.start, self.answered, self.service_time, self.busy = now, answered, service_time, True
