"""The pool policy (:class:`agents.pool.Pool`) without sockets: fake connections, a fake opener, a fake
clock. What the engines do with real sockets under the same policy is in :mod:`tests.test_engines`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from agents.pool import IDLE_EXPIRY, QUEUE_WAIT, SERVICE_WINDOW, SWEEP_INTERVAL, Pool
from tests.loopback import RecordingSink


@dataclass(eq=False)
class FakeConnection:
    """Records what the pool sends on it."""

    name: str = ""
    req: int = -1
    intended: float = 0.0
    submitted: float = 0.0
    sent: float = 0.0
    idle_since: float = 0.0
    closed: bool = False
    carried: list[int] = field(default_factory=list)

    def send(self, req: int, intended: float, submitted: float, now: float) -> None:
        self.req, self.intended, self.submitted, self.sent = req, intended, submitted, now
        self.carried.append(req)


@dataclass
class FakeClock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Opener:
    """The pool's opener: counts the attempts; the test decides how each ends."""

    calls: int = 0

    def __call__(self) -> None:
        self.calls += 1


def make_pool(
    *,
    timeout: float = 1.0,
    max_connections: int = 100,
    max_opening: int = 16,
    start: bool = True,
    cpu_clock: FakeClock | None = None,
) -> tuple[Pool[FakeConnection], RecordingSink, FakeClock, Opener]:
    sink, clock, opener = RecordingSink(), FakeClock(), Opener()
    pool: Pool[FakeConnection] = Pool(
        sink,
        timeout=timeout,
        max_connections=max_connections,
        clock=clock,
        max_opening=max_opening,
        cpu_clock=cpu_clock,
    )
    if start:
        pool.start(opener)
    return pool, sink, clock, opener


def finish(pool: Pool[FakeConnection], connection: FakeConnection) -> int:
    """What an engine does when a response completes: the connection is released, the request done."""
    req = connection.req
    connection.req = -1
    pool.came_back(connection.sent, pool.clock())
    pool.release(connection)
    return req


# --- requests and connections


def test_nothing_is_opened_before_start_and_pending_requests_wait() -> None:
    pool, sink, _, opener = make_pool(start=False)
    pool.submit(0, 99.0)
    assert (pool.in_flight, list(pool.pending), pool.connecting) == (1, [(0, 99.0, 100.0)], 0)
    pool.start(opener)
    assert (opener.calls, pool.connecting) == (1, 1)
    assert sink.outcomes == []


def test_a_new_connection_takes_the_oldest_pending_request() -> None:
    pool, _, clock, opener = make_pool()
    pool.submit(0, 99.0)
    clock.now = 100.5
    pool.submit(1, 100.4)
    assert opener.calls == 2
    clock.now = 101.0
    first = FakeConnection()
    assert pool.opened(first)
    assert (first.req, first.intended, first.submitted, first.sent) == (0, 99.0, 100.0, 101.0)
    assert (pool.connecting, len(pool.pending), pool.in_flight) == (1, 1, 2)
    assert finish(pool, first) == 0
    assert first.req == 1  # the pending one, before the connection still opening
    second = FakeConnection()
    pool.opened(second)
    assert pool.idle == [second]
    assert pool.connections == {first, second}


def test_idle_connections_are_reused_warmest_first_and_closed_ones_skipped() -> None:
    pool, _, _, opener = make_pool()
    a, b, c = FakeConnection("a"), FakeConnection("b"), FakeConnection("c")
    for connection in (a, b, c):
        pool.add(connection)
    assert pool.idle == [a, b, c]
    pool.discard(c)  # closed while idle: it stays on the stack, skipped
    assert c.closed and c not in pool.connections
    pool.submit(0, 1.0)
    assert (b.carried, c.carried) == ([0], [])
    pool.submit(1, 1.0)
    pool.submit(2, 1.0)
    assert (a.carried, len(pool.pending), opener.calls) == ([1], 1, 1)


def test_pending_requests_are_served_first_in_first_out() -> None:
    pool, _, _, _ = make_pool(max_connections=1)
    connection = FakeConnection()
    pool.add(connection)
    for req in range(5):
        pool.submit(req, 1.0)
    while connection.req >= 0:
        finish(pool, connection)
    assert connection.carried == [0, 1, 2, 3, 4]
    assert (pool.in_flight, pool.idle) == (0, [connection])


def test_connections_open_only_while_pending_requests_outnumber_those_opening() -> None:
    pool, _, _, opener = make_pool()
    for req in range(3):
        pool.submit(req, 1.0)
    assert (opener.calls, pool.connecting) == (3, 3)
    pool.opened(FakeConnection())
    pool.submit(3, 1.0)  # 3 pending, 2 opening
    assert opener.calls == 4


def test_at_most_max_opening_at_a_time_then_more_as_they_open() -> None:
    pool, _, _, opener = make_pool(max_opening=16, max_connections=1000)
    for req in range(1000):
        pool.submit(req, 1.0)
    assert (opener.calls, pool.connecting) == (16, 16)
    for _ in range(10):
        pool.opened(FakeConnection())
    assert (opener.calls, pool.connecting, len(pool.connections)) == (26, 16, 10)


def test_never_more_than_max_connections_in_all() -> None:
    pool, _, _, opener = make_pool(max_connections=5)
    for _ in range(3):
        pool.add(FakeConnection())
    for req in range(20):
        pool.submit(req, 1.0)
    assert (opener.calls, pool.connecting) == (2, 2)
    pool.opened(FakeConnection())
    pool.open_failed()
    assert opener.calls == 3  # a failed one is replaced, the open one is not
    busy = next(iter(pool.connections))
    pool.discard(busy)  # one fewer open: one more may be opened
    assert opener.calls == 4


def test_a_failed_connect_fails_the_oldest_pending_request_and_the_rest_try_again() -> None:
    pool, sink, clock, opener = make_pool()
    pool.submit(0, 98.0)
    pool.submit(1, 99.0)
    clock.now = 100.2
    pool.open_failed()
    assert [(o.req, o.intended, o.sent, o.done, o.category) for o in sink.outcomes] == [
        (0, 98.0, 0.0, 100.2, "connect")
    ]
    assert (pool.in_flight, len(pool.pending), pool.connecting, opener.calls) == (1, 1, 1, 2)


def test_a_connection_lost_before_it_is_taken_is_not_added() -> None:
    pool, _, _, opener = make_pool()
    pool.submit(0, 1.0)
    lost = FakeConnection(closed=True)
    assert pool.opened(lost)
    assert (lost.carried, pool.connections, opener.calls) == ([], set(), 2)


def test_failed_reports_what_the_connection_carried() -> None:
    pool, sink, _, _ = make_pool()
    connection = FakeConnection()
    pool.add(connection)
    pool.submit(7, 99.5)
    pool.discard(connection)
    pool.failed(connection, "reset", 100.3)
    assert [(o.req, o.intended, o.sent, o.done, o.category) for o in sink.outcomes] == [
        (7, 99.5, 100.0, 100.3, "reset")
    ]
    assert (connection.req, pool.in_flight) == (-1, 0)


# --- timeouts and the end


def test_sweep_interval_follows_short_timeouts() -> None:
    assert make_pool(timeout=10)[0].sweep_interval == SWEEP_INTERVAL
    assert make_pool(timeout=0.1)[0].sweep_interval == 0.025


def test_expire_fails_old_pending_requests_and_returns_old_connections() -> None:
    pool, sink, clock, _ = make_pool(timeout=1.0, max_connections=2)
    old, young = FakeConnection("old"), FakeConnection("young")
    pool.add(old)
    pool.submit(0, 100.0)  # on `old`, submitted at 100.0
    clock.now = 100.4
    pool.add(young)
    pool.submit(1, 100.4)  # on `young`
    pool.submit(2, 100.4)  # pending since 100.4
    clock.now = 100.9
    pool.submit(3, 100.9)  # pending since 100.9
    assert pool.expire(100.99) == []
    assert pool.expire(101.0) == [old]
    assert sink.outcomes == []  # the caller reports what is on the wire
    late = pool.expire(101.4)
    assert sorted(c.name for c in late) == ["old", "young"]
    assert [(o.req, o.sent, o.category) for o in sink.outcomes] == [(2, 0.0, "timeout")]
    assert (pool.in_flight, [job[0] for job in pool.pending]) == (3, [3])


def test_expire_compacts_closed_connections_off_the_idle_stack() -> None:
    pool, _, _, _ = make_pool()
    connections = [FakeConnection(str(i)) for i in range(4)]
    for connection in connections:
        pool.add(connection)
    idle = pool.idle
    for connection in connections[:3]:
        pool.discard(connection)
    pool.expire(100.0)
    assert pool.idle is idle  # the same list, which an engine may hold
    assert idle == [connections[3]]


def test_close_drops_pending_requests_unreported_and_returns_the_connections() -> None:
    pool, sink, _, opener = make_pool()
    connection = FakeConnection()
    pool.add(connection)
    pool.submit(0, 1.0)
    pool.submit(1, 1.0)
    assert opener.calls == 1
    assert pool.close() == [connection]
    assert connection.closed and pool.idle == [] and not pool.pending
    pool.submit(2, 1.0)
    assert (pool.in_flight, len(pool.pending), opener.calls) == (3, 0, 1)
    assert not pool.opened(FakeConnection())  # an attempt that ends after the close: the caller closes it
    pool.open_failed()
    assert sink.outcomes == []


# --- accounting under any sequence of events


EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["submit", "open", "fail_open", "finish", "break", "tick"]), st.integers(0, 50)
    ),
    max_size=300,
)


@settings(max_examples=200, deadline=None)
@given(EVENTS, st.integers(1, 8), st.integers(1, 4))
@example(  # a request waiting for a busy connection that frees up soon: "Growth" opens none for it
    [
        ("submit", 0),
        ("open", 0),
        ("tick", 0),
        ("finish", 0),
        ("tick", 13),
        ("submit", 0),
        ("submit", 0),
        ("tick", 0),
    ],
    2,
    1,
)
def test_every_request_is_reported_once_or_still_in_flight(
    events: list[tuple[str, int]], max_connections: int, max_opening: int
) -> None:
    """submitted = reported + in_flight, in_flight = pending + on the wire, and the opening limits hold,
    whatever happens in whatever order."""
    pool, sink, clock, opener = make_pool(
        timeout=1.0, max_connections=max_connections, max_opening=max_opening
    )
    submitted = 0
    completed = 0
    started = 0
    for event, n in events:
        busy = sorted((c for c in pool.connections if c.req >= 0), key=lambda c: c.name)
        if event == "submit":
            pool.submit(n, clock.now)
            submitted += 1
        elif event == "open" and started < opener.calls:
            started += 1
            pool.opened(FakeConnection(str(started)))
        elif event == "fail_open" and started < opener.calls:
            started += 1
            pool.open_failed()
        elif event == "finish" and busy:
            finish(pool, busy[n % len(busy)])
            completed += 1
        elif event == "break" and busy:
            connection = busy[n % len(busy)]
            pool.discard(connection)
            pool.failed(connection, "reset", clock.now)
        elif event == "tick":
            clock.now += n / 50
            for connection in pool.expire(clock.now):
                pool.discard(connection)
                pool.failed(connection, "timeout", clock.now)
        on_the_wire = sum(1 for c in pool.connections if c.req >= 0)
        assert submitted == completed + len(sink.outcomes) + pool.in_flight
        assert pool.in_flight == len(pool.pending) + on_the_wire
        assert pool.connecting == opener.calls - started
        assert pool.connecting <= max_opening
        assert len(pool.connections) + pool.connecting <= max_connections
        assert all(not c.closed and c.req < 0 for c in pool.idle if c in pool.connections)
        if pool.pending:  # work waits only when every connection is busy and opening is at a limit or held
            assert all(c.req >= 0 for c in pool.connections)
            assert (
                pool.connecting > 0
                or len(pool.connections) == max_connections
                or pool.opener is None
                or (pool.behind and pool.connections)
                or not pool.short_of_connections()  # the open ones free up soon enough (see "Growth")
            )


# --- a backlog: ready connections and the flush


def test_flush_hands_ready_connections_the_oldest_pending_requests() -> None:
    pool, _, clock, opener = make_pool(max_opening=4)
    busy = [FakeConnection(name=str(i)) for i in range(3)]
    for c in busy:
        pool.add(c)
    for req in range(5):
        pool.submit(req, 99.0)  # three go out, two wait
    assert [c.req for c in busy] == [2, 1, 0]  # LIFO idle stack
    assert [job[0] for job in pool.pending] == [3, 4]
    assert pool.connecting == opener.calls == 2  # one being opened per pending request
    # Two finish while requests are pending: the engine puts them on `ready` instead of sending from the
    # response callback; they count as about to take work, so no connection is opened for those requests.
    for c in busy[:2]:
        c.req = -1
        pool.in_flight -= 1
        pool.ready.append(c)
    pool.submit(5, 99.5)
    assert opener.calls == 2  # three pending, two being opened and two ready: nothing more is opened
    clock.now = 101.0
    pool.flush()
    assert (busy[0].req, busy[1].req) == (3, 4)  # the oldest pending requests, in order
    assert busy[0].sent == 101.0
    assert [job[0] for job in pool.pending] == [5]
    assert pool.ready == []


def test_flush_sends_idle_what_finds_nothing_pending_and_skips_closed() -> None:
    pool, _, _, _ = make_pool()
    a, b = FakeConnection(name="a"), FakeConnection(name="b")
    pool.add(a)
    pool.add(b)
    pool.idle.clear()
    pool.discard(b)  # lost while waiting on `ready`
    pool.ready.extend([a, b])
    pool.flush()
    assert pool.idle == [a]
    assert a.carried == [] and b.carried == []


def test_close_forgets_ready_connections() -> None:
    pool, _, _, _ = make_pool()
    a = FakeConnection()
    pool.add(a)
    pool.ready.append(a)
    pool.close()
    assert pool.ready == []
    pool.flush()
    assert a.carried == []


# --- a loop that cannot keep up opens no connections


def test_a_late_sweep_stops_opening_until_a_sweep_is_on_time() -> None:
    pool, _, clock, opener = make_pool(max_opening=4)
    a = FakeConnection()
    pool.add(a)
    pool.submit(0, 99.0)  # on `a`
    pool.expire(clock())  # the first sweep: nothing to compare with yet
    assert not pool.behind
    clock.now += pool.sweep_interval + 0.05  # the next sweep runs 50 ms late: the loop is behind
    pool.expire(clock())
    assert pool.behind
    before = opener.calls
    pool.submit(1, 99.0)
    pool.submit(2, 99.0)
    assert opener.calls == before and len(pool.pending) == 2  # they wait for `a`; nothing is opened
    clock.now += pool.sweep_interval  # on time again: the pending requests get connections opened
    pool.expire(clock())
    assert not pool.behind
    assert opener.calls == before + 2


def test_behind_never_leaves_a_pool_without_connections() -> None:
    pool, _, clock, opener = make_pool()
    pool.expire(clock())
    clock.now += 1.0
    pool.expire(clock())
    assert pool.behind
    pool.submit(0, 99.0)  # no connection at all: one is opened even so
    assert opener.calls == 1


# --- idle expiry


def test_connections_idle_past_the_expiry_are_closed_oldest_first_and_fresh_ones_stay() -> None:
    pool, _, clock, _ = make_pool()
    old, warm = FakeConnection(), FakeConnection()
    pool.add(old)
    pool.add(warm)
    assert pool.stale(clock()) == []  # just opened: counts as used now
    clock.now += 3.0
    pool.submit(0, clock())  # the warmest (top of the stack) carries it; the other stays idle
    assert warm.req == 0 and old.req == -1
    finish(pool, warm)
    clock.now += IDLE_EXPIRY - 2.0  # old: idle for IDLE_EXPIRY + 1 s; warm: last used IDLE_EXPIRY - 2 s ago
    assert pool.stale(clock()) == [old]
    assert old.closed and old not in pool.connections and pool.idle == [warm]
    assert pool.stale(clock()) == []
    clock.now += 2.0
    assert pool.stale(clock()) == [warm]
    assert pool.idle == [] and not pool.connections


def test_a_busy_connection_is_never_stale_and_the_pool_opens_again_when_needed() -> None:
    pool, _, clock, opener = make_pool()
    busy = FakeConnection()
    pool.add(busy)
    pool.submit(0, clock())
    clock.now += 10 * IDLE_EXPIRY
    assert pool.stale(clock()) == []  # carrying a request: the timeout is the sweep's business, not expiry
    finish(pool, busy)
    assert pool.stale(clock()) == []  # its request took long, but it has only just gone idle
    assert pool.idle == [busy]
    clock.now += IDLE_EXPIRY
    assert pool.stale(clock()) == [busy]
    pool.submit(1, clock())
    assert opener.calls == 1  # nothing idle: a new connection is opened for the request


# --- growth: a connection only when the open ones would keep pending requests waiting too long


def steady(pool: Pool[FakeConnection], clock: FakeClock, busy: int, service: float, seconds: float) -> None:
    """Serve a steady load for ``seconds``: ``busy`` of the pool's connections carry one request after another,
    each taking ``service`` seconds, and the sweep runs on time (the pool estimates from this)."""
    for _ in range(busy):
        pool.submit(0, clock())
    carrying = [c for c in pool.connections if c.req >= 0]
    assert len(carrying) == busy
    end = clock.now + seconds
    next_sweep = clock.now
    while clock.now < end:
        clock.now += service
        for connection in carrying:
            finish(pool, connection)
            pool.submit(0, clock())
        if clock.now >= next_sweep:
            pool.expire(clock())
            next_sweep = clock.now + pool.sweep_interval


def pool_of(connections: int, **kwargs: Any) -> tuple[Pool[FakeConnection], FakeClock, Opener]:
    pool, _, clock, opener = make_pool(max_opening=1000, max_connections=1000, **kwargs)
    for _ in range(connections):
        pool.add(FakeConnection())
    return pool, clock, opener


def test_the_service_time_and_the_load_are_measured() -> None:
    pool, clock, _ = pool_of(8)
    assert pool.service == float("inf")  # unknown until a window has closed
    steady(pool, clock, 3, 0.002, 2 * SERVICE_WINDOW + 0.2)
    assert abs(pool.service - 0.002) < 0.0002
    assert abs(pool.load - 3) < 0.2  # requests on connections, on average


def test_a_burst_waits_for_a_fast_targets_spare_connections_instead_of_opening_one_each() -> None:
    """After a pause of the agent a burst of arrivals is due at once. Against a target answering in 0.2 ms,
    2 of 8 connections carry the steady load and the 6 spare ones would carry 80 pending requests in 2.7 ms:
    the pool opens only what brings that under QUEUE_WAIT (80 x 0.2 ms / QUEUE_WAIT spare connections in
    all), not one for each of the 74 left waiting."""
    pool, clock, opener = pool_of(8)
    steady(pool, clock, 2, 0.0002, 2 * SERVICE_WINDOW)
    for _ in range(80):
        pool.submit(0, clock())
    spare_wanted = len(pool.pending) * pool.service / QUEUE_WAIT  # the 6 idle took 6 at once
    assert abs(opener.calls - (spare_wanted - (8 - pool.load))) <= 1
    assert opener.calls < 20


def test_pending_requests_get_connections_when_the_open_ones_have_no_spare() -> None:
    """All connections carry the steady load: a pending request would wait for ever (new arrivals take what
    frees up), so it gets a connection even against a fast target."""
    pool, clock, opener = pool_of(4)
    steady(pool, clock, 4, 0.0002, 2 * SERVICE_WINDOW)
    pool.submit(0, clock())
    assert opener.calls == 1


def test_a_burst_against_a_slow_target_gets_a_connection_each() -> None:
    """The open model: against a target answering in 50 ms, every pending request gets its connection."""
    pool, clock, opener = pool_of(8)
    steady(pool, clock, 2, 0.05, 2 * SERVICE_WINDOW)
    for _ in range(80):
        pool.submit(0, clock())
    assert opener.calls == 80 - 6


def test_a_target_that_stops_answering_makes_the_estimate_unknown_again() -> None:
    pool, clock, opener = pool_of(8)
    steady(pool, clock, 2, 0.0002, 2 * SERVICE_WINDOW)
    for _ in range(10):
        pool.submit(0, clock())
    assert len(pool.pending) == 4 and opener.calls == 0  # 6 spare took 6; 4 x 0.2 ms / 6: they wait
    for _ in range(int(2 * SERVICE_WINDOW / pool.sweep_interval) + 1):  # no answer for half a second
        clock.now += pool.sweep_interval
        pool.expire(clock())
    assert pool.service == float("inf")
    assert opener.calls == 4  # the sweep that found out opened one for each pending request


def test_a_busy_agent_opens_no_connections() -> None:
    cpu = FakeClock(0.0)
    pool, _, clock, opener = make_pool(cpu_clock=cpu)
    pool.add(FakeConnection())
    pool.submit(0, 99.0)
    pool.expire(clock())
    clock.now += pool.sweep_interval
    cpu.now += pool.sweep_interval * 0.95  # 95% of a core since the last sweep
    pool.expire(clock())
    assert pool.behind
    pool.submit(1, 99.0)
    assert opener.calls == 0 and len(pool.pending) == 1
    clock.now += pool.sweep_interval
    cpu.now += pool.sweep_interval * 0.5
    pool.expire(clock())
    assert not pool.behind and opener.calls == 1
