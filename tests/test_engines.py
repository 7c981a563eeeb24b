"""The conformance suite: what every engine promises (:class:`agents.engine.Engine`), checked against real
servers on loopback, on uvloop, once per engine.

Each test takes ``make`` (an engine class: :class:`FastEngine` or :class:`HttpxEngine`, same constructor) and
runs under :func:`tests.loopback.run`'s time limit. Engine-specific behaviour (the fast engine's request
bytes; the httpx engine's proxies and error mapping) is tested in ``test_fast_engine.py`` and
``test_httpx_engine.py``; the pool policy on its own, without sockets, in ``test_pool.py``.
"""

from __future__ import annotations

import asyncio
import gc
import math
import random
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from agents.arrivals import ArrivalLoop, RequestPicker
from agents.engine import MAX_OPENING, Engine, Sink
from agents.fast_engine import FastEngine
from agents.httpx_engine import HttpxEngine
from agents.recorder import Recorder
from loadgen import __version__
from loadgen.curve import RateCurve
from loadgen.profile import RequestSpec, Stage
from loadgen.schedule import ArrivalSchedule
from target.server import TargetServer
from tests.loopback import (
    Received,
    RecordingSink,
    Script,
    ScriptedServer,
    answer,
    certificate,
    free_port,
    get,
    reply,
    reported,
    run,
    server_tls,
    target_server,
    wait_for,
    with_engine,
)

pytestmark = pytest.mark.integration

__all__ = ["certificate"]  # the fixture, imported so that pytest finds it here

AnyEngine = FastEngine | HttpxEngine
EngineClass = type[FastEngine] | type[HttpxEngine]


@pytest.fixture(params=[FastEngine, HttpxEngine], ids=["fast", "httpx"])
def make(request: pytest.FixtureRequest) -> EngineClass:
    cls: EngineClass = request.param
    return cls


async def on_target(
    make: EngineClass,
    body: Callable[[AnyEngine], Awaitable[None]],
    requests: list[RequestSpec],
    *,
    timeout: float = 2.0,
    max_connections: int = 100,
    prefix: str = "",
    sink: RecordingSink | None = None,
    idle_expiry: float = 60.0,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[RecordingSink, TargetServer]:
    """Run ``body`` with an engine started against a fresh built-in target; return the sink and the
    server, closed (its ``stats`` stay readable)."""
    server = await target_server()
    engine, sink = engine_for(
        make,
        server.port,
        requests,
        timeout=timeout,
        max_connections=max_connections,
        prefix=prefix,
        sink=sink,
        idle_expiry=idle_expiry,
        clock=clock,
    )
    await with_engine(engine, body)
    await server.close()
    return sink, server


async def on_scripted(
    make: EngineClass,
    body: Callable[[AnyEngine], Awaitable[None]],
    script: Script,
    requests: list[RequestSpec],
    *,
    max_connections: int = 100,
    sink: RecordingSink | None = None,
) -> tuple[RecordingSink, ScriptedServer]:
    """Run ``body`` with an engine started against a :class:`ScriptedServer` answering with ``script``;
    return the sink and the server, closed."""
    async with ScriptedServer(script) as server:
        engine, sink = engine_for(make, server.port, requests, max_connections=max_connections, sink=sink)
        await with_engine(engine, body)
    return sink, server


def engine_for(
    make: EngineClass,
    port: int,
    requests: list[RequestSpec],
    *,
    timeout: float = 2.0,
    max_connections: int = 100,
    prefix: str = "",
    sink: RecordingSink | None = None,
    idle_expiry: float = 60.0,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[AnyEngine, RecordingSink]:
    sink = sink if sink is not None else RecordingSink()
    target = f"http://127.0.0.1:{port}{prefix}"
    engine = make(
        target,
        requests,
        sink,
        timeout=timeout,
        max_connections=max_connections,
        idle_expiry=idle_expiry,
        clock=clock,
    )
    return engine, sink


# --- construction


@pytest.mark.parametrize("target", ["ftp://h/", "http://", "http://h/?q=1", "h:80"])
def test_bad_target_is_refused(make: EngineClass, target: str) -> None:
    with pytest.raises(ValueError):
        make(target, [get("/")], RecordingSink(), timeout=1, max_connections=1)


@pytest.mark.parametrize(("timeout", "connections"), [(0, 1), (-1, 1), (1, 0)])
def test_bad_limits_are_refused(make: EngineClass, timeout: float, connections: int) -> None:
    with pytest.raises(ValueError):
        make("http://h", [get("/")], RecordingSink(), timeout=timeout, max_connections=connections)


def test_it_is_an_engine_and_does_nothing_before_start(make: EngineClass) -> None:
    sink: Sink = RecordingSink()
    engine: Engine = make("http://h", [get("/")], sink, timeout=1, max_connections=1)
    assert engine.in_flight == 0


# --- against the built-in target


def test_statuses_are_reported_for_the_right_requests(make: EngineClass) -> None:
    async def test() -> None:
        requests = [get("/"), get("/status/404"), get("/status/503"), get("/bytes?n=700000")]

        async def body(engine: AnyEngine) -> None:
            for i in range(40):
                engine.submit(i % 4, time.monotonic())
            await engine.drain(time.monotonic() + 3)
            assert engine.in_flight == 0

        sink, server = await on_target(make, body, requests)
        assert sorted((o.req, o.status) for o in sink.outcomes) == sorted(
            (i % 4, [200, 404, 503, 200][i % 4]) for i in range(40)
        )
        assert server.stats.requests == 40

    run(test)


def test_every_submitted_request_is_reported_exactly_once(make: EngineClass) -> None:
    async def test() -> None:
        async def body(engine: AnyEngine) -> None:
            for i in range(300):
                engine.submit(i % 3, time.monotonic())
                if i % 50 == 0:
                    await asyncio.sleep(0.001)
            await engine.drain(time.monotonic() + 3)
            assert engine.in_flight == 0

        sink, server = await on_target(
            make, body, [get("/"), get("/delay?ms=5"), get("/status/500")], max_connections=8
        )
        assert Counter(o.req for o in sink.outcomes) == {0: 100, 1: 100, 2: 100}
        assert all(o.category == "" for o in sink.outcomes)
        assert server.stats.connections_total <= 8

    run(test)


def test_sequential_requests_reuse_one_keep_alive_connection(make: EngineClass) -> None:
    async def test() -> None:
        sink = RecordingSink()

        async def body(engine: AnyEngine) -> None:
            for i in range(100):
                engine.submit(0, time.monotonic())
                await wait_for(reported(sink, i + 1))

        sink, server = await on_target(make, body, [get("/")], sink=sink)
        assert sink.statuses == [200] * 100
        assert server.stats.connections_total == 1

    run(test)


def test_connections_left_idle_are_closed_and_reopened_when_needed(make: EngineClass) -> None:
    """After a burst the pool shrinks back: connections idle longer than the expiry are closed by the
    engine, and a later request opens a fresh one."""

    async def test() -> None:
        sink = RecordingSink()

        async def body(engine: AnyEngine) -> None:
            for _ in range(8):
                engine.submit(1, time.monotonic())  # 8 at once, 50 ms each: 8 connections
            await wait_for(reported(sink, 8))
            assert engine._pool.connections and len(engine._pool.connections) == 8
            await wait_for(lambda: not engine._pool.connections, within=2.0)
            engine.submit(0, time.monotonic())
            await wait_for(reported(sink, 9))

        sink, server = await on_target(
            make, body, [get("/"), get("/delay?ms=50")], sink=sink, idle_expiry=0.2
        )
        assert sink.statuses == [200] * 9
        assert server.stats.connections_total == 9

    run(test)


def _live(kind: type) -> int:
    """Objects of exactly this class still in memory (the cycle collector tracks them)."""
    return sum(1 for o in gc.get_objects() if type(o) is kind)


@pytest.mark.parametrize("head", [False, True], ids=["get", "head"])
def test_closed_connections_are_freed_without_the_cycle_collector(make: EngineClass, head: bool) -> None:
    """A connection the pool closed (idle too long, or timed out) is freed as soon as its transport lets go
    of it, not at the next full collection: the hot path makes next to no objects the collector counts, so
    those collections are rare. The fast engine's parser holds its connection's callbacks, and an agent
    whose pool grew at every stall of the target kept every connection it had ever opened (over a long
    soak, memory without bound)."""

    async def test() -> None:
        sink = RecordingSink()
        slow, fast, late = (3, 2, 4) if head else (1, 0, 4)
        live: list[int] = []  # after the burst; at the end; the pool's connections at the end

        async def body(engine: AnyEngine) -> None:
            engine.submit(fast, time.monotonic())
            await wait_for(reported(sink, 1))
            kind = type(next(iter(engine._pool.connections)))
            base = _live(kind)
            for _ in range(12):
                engine.submit(slow, time.monotonic())  # 12 at once, 50 ms each: 12 connections
            await wait_for(reported(sink, 13))
            live.append(_live(kind) - base)
            await wait_for(lambda: len(engine._pool.connections) <= 1, within=2.0)  # idle expiry
            engine.submit(late, time.monotonic())  # times out: its connection is aborted
            await wait_for(reported(sink, 14), within=2.0)
            engine.submit(fast, time.monotonic())
            await wait_for(reported(sink, 15))
            await asyncio.sleep(0.05)  # the transports deliver connection_lost
            live.extend([_live(kind), len(engine._pool.connections)])

        enabled = gc.isenabled()
        gc.disable()
        try:
            sink, _ = await on_target(
                make,
                body,
                [
                    get("/"),
                    get("/delay?ms=50"),
                    get("/", "HEAD"),
                    get("/delay?ms=50", "HEAD"),
                    get("/delay?ms=2000"),
                ],
                sink=sink,
                idle_expiry=0.2,
                timeout=0.3,
            )
        finally:
            if enabled:
                gc.enable()
        assert sink.statuses.count(200) == 14
        assert sink.categories.count("timeout") == 1
        burst, left, in_pool = live
        assert burst >= 11
        assert left == in_pool

    run(test)


def test_a_sink_that_submits_from_its_callback_keeps_one_connection(make: EngineClass) -> None:
    """A closed loop driven from the sink: the connection is idle again before the sink hears of it."""

    class ClosedLoopSink(RecordingSink):
        engine: AnyEngine | None = None

        def response(self, req: int, intended: float, sent: float, done: float, status: int) -> None:
            super().response(req, intended, sent, done, status)
            if len(self.outcomes) < 200 and self.engine is not None:
                self.engine.submit(0, done)

    async def test() -> None:
        server = await target_server()
        sink = ClosedLoopSink()
        engine, _ = engine_for(make, server.port, [get("/")], max_connections=10, sink=sink)
        sink.engine = engine

        async def body(engine: AnyEngine) -> None:
            engine.submit(0, time.monotonic())
            await wait_for(lambda: len(sink.outcomes) == 200)

        await with_engine(engine, body)
        await server.close()
        assert sink.statuses == [200] * 200
        assert server.stats.connections_total == 1

    run(test)


def test_a_response_after_the_next_arrival_is_due_releases_it(make: EngineClass) -> None:
    """The engine calls ``due.release()`` from the response callback once ``due.at`` has passed (so the
    arrival loop need not wait for its timer), and not before."""

    async def test() -> None:
        calls: list[float] = []

        def release() -> float:
            calls.append(time.monotonic())
            return math.inf

        async def body(engine: AnyEngine) -> None:
            engine.due.release = release
            engine.due.at = time.monotonic() + 3600  # not due yet
            engine.submit(0, time.monotonic())
            await engine.drain(time.monotonic() + 2)
            assert calls == []
            engine.due.at = time.monotonic()  # due now: the next response releases it
            engine.submit(0, time.monotonic())
            engine.submit(0, time.monotonic())
            await engine.drain(time.monotonic() + 2)
            assert len(calls) == 2  # each response finds it due (this release does not move ``at``)

        sink, _ = await on_target(make, body, [get("/")])
        assert sink.statuses == [200] * 3

    run(test)


TICK = 0.05  # the arrival loop's timer, held back to fire only this often


def test_arrivals_go_out_between_timer_ticks_while_responses_come_in(make: EngineClass) -> None:
    """An arrival loop whose timer fires only every 50 ms (an event loop busy elsewhere) still sends each
    arrival within a few milliseconds of its time while responses keep coming (1,000/s, 20 ms each): the
    engine releases them from its response callbacks once they are ``RELEASE_LATE`` late."""

    async def test() -> None:
        server = await target_server()
        engine, sink = engine_for(make, server.port, [get("/delay?ms=20")])

        async def body(engine: AnyEngine) -> None:
            start = time.monotonic()
            loop = ArrivalLoop(
                ArrivalSchedule(RateCurve(1000, [Stage(0.5, 1000)]), "constant"),
                engine,
                Recorder(["slow"]),
                RequestPicker([1], random.Random(1)),
                start=start,
                max_in_flight=10_000,
                clock=time.monotonic,
                sleep=lambda seconds: asyncio.sleep(max(seconds, TICK)),
            )
            await loop.run()
            await engine.drain(time.monotonic() + 2)

        await with_engine(engine, body)
        await server.close()
        assert sink.statuses == [200] * 500
        late = sorted(o.sent - o.intended for o in sink.outcomes[100:])  # once the pool has its connections
        # By the timer alone an arrival would leave half a tick late in the median (25 ms); released from the
        # response callbacks (one every millisecond), about RELEASE_LATE plus a callback's spacing. The line
        # between the two is a quarter of a tick: a busy machine moves the second figure by milliseconds
        # (5.1 ms once for the httpx engine beside a busy core), never by ten.
        assert late[len(late) // 2] < TICK / 4

    run(test)


def test_pool_grows_under_concurrency(make: EngineClass) -> None:
    async def test() -> None:
        async def body(engine: AnyEngine) -> None:
            began = time.monotonic()
            for _ in range(50):
                engine.submit(0, began)
            await engine.drain(began + 3)
            assert time.monotonic() - began < 0.6

        sink, server = await on_target(make, body, [get("/delay?ms=100")])
        assert sink.statuses == [200] * 50
        assert 2 <= server.stats.connections_total <= 51

    run(test)


def test_pool_stops_at_max_connections(make: EngineClass) -> None:
    async def test() -> None:
        async def body(engine: AnyEngine) -> None:
            began = time.monotonic()
            for _ in range(16):
                engine.submit(0, began)
            await engine.drain(began + 3)
            assert time.monotonic() - began >= 0.19  # four rounds of four

        sink, server = await on_target(make, body, [get("/delay?ms=50")], max_connections=4)
        assert sink.statuses == [200] * 16
        assert server.stats.connections_total == 4

    run(test)


def test_a_burst_opens_a_bounded_number_of_connections_at_a_time(make: EngineClass) -> None:
    async def test() -> None:
        most = 0

        async def body(engine: AnyEngine) -> None:
            nonlocal most
            began = time.monotonic()
            for _ in range(300):
                engine.submit(0, began)
            while engine.in_flight and time.monotonic() < began + 3:
                most = max(most, engine._pool.connecting)
                await asyncio.sleep(0)
            assert engine.in_flight == 0

        sink, server = await on_target(make, body, [get("/delay?ms=20")], max_connections=200)
        assert 1 <= most <= MAX_OPENING
        assert sink.statuses == [200] * 300
        assert server.stats.connections_total <= 200

    run(test)


def test_timeout_on_the_wire_closes_the_connection_and_drops_the_late_response(make: EngineClass) -> None:
    async def test() -> None:
        sink = RecordingSink()

        async def body(engine: AnyEngine) -> None:
            began = time.monotonic()
            engine.submit(0, began)
            await wait_for(lambda: len(sink.outcomes) == 1)
            timed_out = sink.outcomes[0]
            assert (timed_out.req, timed_out.category) == (0, "timeout")
            assert began < timed_out.sent and 0.15 <= timed_out.done - began < 0.3
            engine.submit(1, time.monotonic())
            await wait_for(lambda: len(sink.outcomes) == 2)
            await asyncio.sleep(0.5 - (time.monotonic() - began))  # the late response would be in by now
            assert engine.in_flight == 0

        sink, server = await on_target(make, body, [get("/delay?ms=400"), get("/")], timeout=0.15, sink=sink)
        assert [(o.req, o.status, o.category) for o in sink.outcomes] == [(0, 0, "timeout"), (1, 200, "")]
        assert server.stats.connections_total == 2

    run(test)


def test_timeout_while_waiting_for_a_connection_was_never_sent(make: EngineClass) -> None:
    # Both submissions must carry the same time: were the second a few microseconds later, a sweep could fall
    # between the two deadlines, time out the first alone and hand its freed connection to the second.
    held: list[float] = []

    def clock() -> float:
        return held[0] if held else time.monotonic()

    async def test() -> None:
        async def body(engine: AnyEngine) -> None:
            held.append(time.monotonic())
            engine.submit(0, held[0])
            engine.submit(0, held[0])
            held.clear()
            await engine.drain(time.monotonic() + 1)
            assert engine.in_flight == 0

        sink, _ = await on_target(
            make, body, [get("/delay?ms=300")], timeout=0.1, max_connections=1, clock=clock
        )
        assert sorted(o.category for o in sink.outcomes) == ["timeout", "timeout"]
        assert sorted(o.sent == 0.0 for o in sink.outcomes) == [False, True]

    run(test)


def test_head_response_ends_with_its_headers(make: EngineClass) -> None:
    async def test() -> None:
        sink = RecordingSink()

        async def body(engine: AnyEngine) -> None:
            for i in range(6):
                engine.submit(i % 2, time.monotonic())
                await wait_for(reported(sink, i + 1))

        sink, server = await on_target(
            make, body, [get("/bytes?n=100", "HEAD"), get("/status/201")], sink=sink
        )
        assert sink.statuses == [200, 201] * 3
        assert server.stats.connections_total == 1

    run(test)


def test_target_path_prefix_is_prepended(make: EngineClass) -> None:
    async def test() -> None:
        async def body(engine: AnyEngine) -> None:
            engine.submit(0, time.monotonic())
            engine.submit(1, time.monotonic())
            await engine.drain(time.monotonic() + 2)

        sink, _ = await on_target(make, body, [get("/418"), get("/503")], prefix="/status/")
        assert sorted(sink.statuses) == [418, 503]

    run(test)


def test_in_flight_and_drain(make: EngineClass) -> None:
    async def test() -> None:
        async def body(engine: AnyEngine) -> None:
            for _ in range(3):
                engine.submit(0, time.monotonic())
            assert engine.in_flight == 3
            began = time.monotonic()
            await engine.drain(began + 0.05)
            assert engine.in_flight == 3  # it gave up at its deadline, before the 200 ms answers came
            assert time.monotonic() - began >= 0.05
            await engine.drain(began + 2)
            assert engine.in_flight == 0
            assert time.monotonic() - began < 0.4

        sink, _ = await on_target(make, body, [get("/delay?ms=200")])
        assert sink.statuses == [200] * 3

    run(test)


@pytest.mark.parametrize("settle", [0.0, 0.01], ids=["at-once", "after-sending"])
def test_requests_in_flight_at_close_are_not_reported(make: EngineClass, settle: float) -> None:
    async def test() -> None:
        server = await target_server()
        engine, sink = engine_for(make, server.port, [get("/delay?ms=300")], max_connections=1)

        async def body(engine: AnyEngine) -> None:
            engine.submit(0, time.monotonic())
            engine.submit(0, time.monotonic())  # waits for the only connection
            await asyncio.sleep(settle)

        await with_engine(engine, body)
        assert engine.in_flight == 2
        engine.submit(0, time.monotonic())  # after aclose: counted, never sent nor reported
        assert engine.in_flight == 3
        await engine.aclose()  # a second aclose does nothing
        await asyncio.sleep(0.4)
        await server.close()
        assert sink.outcomes == []
        assert server.stats.requests <= 1

    run(test)


def test_timestamps_are_ordered(make: EngineClass) -> None:
    async def test() -> None:
        async def body(engine: AnyEngine) -> None:
            for i in range(30):
                engine.submit(i % 2, time.monotonic())
            await engine.drain(time.monotonic() + 2)

        sink, _ = await on_target(make, body, [get("/"), get("/delay?ms=20")], max_connections=3)
        assert len(sink.outcomes) == 30
        assert all(o.intended <= o.sent <= o.done for o in sink.outcomes)
        assert all(o.done - o.sent >= 0.018 for o in sink.outcomes if o.req == 1)  # libuv timers: ms ticks

    run(test)


def test_start_tries_each_resolved_address(make: EngineClass) -> None:
    """A host name is resolved once; where ``localhost`` gives ::1 first, 127.0.0.1 (which the target
    listens on) is tried next."""

    async def test() -> None:
        server = await target_server()
        sink = RecordingSink()
        engine = make(f"http://localhost:{server.port}", [get("/")], sink, timeout=2, max_connections=2)

        async def body(engine: AnyEngine) -> None:
            engine.submit(0, time.monotonic())
            await engine.drain(time.monotonic() + 2)

        await with_engine(engine, body)
        await server.close()
        assert sink.statuses == [200]

    run(test)


# --- failures


def test_start_raises_connection_error_when_refused(make: EngineClass) -> None:
    async def test() -> None:
        engine, _ = engine_for(make, free_port(), [get("/")])
        with pytest.raises(ConnectionError, match=r"cannot connect to http://127\.0\.0\.1"):
            await engine.start()
        await engine.aclose()

    run(test)


def test_a_target_down_at_start_fails_requests_with_connect(make: EngineClass) -> None:
    """start() raised, but the engine stays usable: every arrival is a connect error, never a hang."""

    async def test() -> None:
        engine, sink = engine_for(make, free_port(), [get("/")], max_connections=2)
        with pytest.raises(ConnectionError):
            await engine.start()

        async def body(engine: AnyEngine) -> None:
            for _ in range(5):
                engine.submit(0, time.monotonic())
            await engine.drain(time.monotonic() + 1)
            assert engine.in_flight == 0

        await with_engine(engine, body, start=False)
        assert sink.categories == ["connect"] * 5

    run(test)


def test_dead_target_fails_each_request_with_connect(make: EngineClass) -> None:
    async def test() -> None:
        server = await target_server()
        engine, sink = engine_for(make, server.port, [get("/")], max_connections=3)

        async def body(engine: AnyEngine) -> None:
            await server.close()  # the idle connection is closed by the server, then nothing listens
            await asyncio.sleep(0.05)
            began = time.monotonic()
            for _ in range(10):
                engine.submit(0, time.monotonic())
            await engine.drain(began + 2)
            assert time.monotonic() - began < 0.5
            assert engine.in_flight == 0

        await with_engine(engine, body)
        assert sink.categories == ["connect"] * 10
        assert all(o.sent == 0.0 for o in sink.outcomes)

    run(test)


def test_connection_closed_without_a_response_is_reset(make: EngineClass) -> None:
    def hang_up(transport: asyncio.Transport, received: Received) -> None:
        transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        transport.abort()

    async def test() -> None:
        async def body(engine: AnyEngine) -> None:
            for _ in range(3):
                engine.submit(0, time.monotonic())
            await engine.drain(time.monotonic() + 2)
            assert engine.in_flight == 0

        sink, _ = await on_scripted(make, body, hang_up, [get("/")])
        assert sink.categories == ["reset"] * 3
        assert all(o.sent > 0 for o in sink.outcomes)

    run(test)


def test_garbage_response_is_a_protocol_error(make: EngineClass) -> None:
    async def test() -> None:
        async def body(engine: AnyEngine) -> None:
            engine.submit(0, time.monotonic())
            engine.submit(0, time.monotonic())
            await engine.drain(time.monotonic() + 2)
            assert engine.in_flight == 0

        sink, _ = await on_scripted(make, body, answer(b"HELLO THERE\r\n\r\n"), [get("/")])
        assert sink.categories == ["protocol"] * 2

    run(test)


def test_server_closing_after_each_response(make: EngineClass) -> None:
    """Keep-alive off: every response says ``Connection: close`` and the server closes; each request gets
    a fresh connection, none fails."""

    async def test() -> None:
        async def body(engine: AnyEngine) -> None:
            for _ in range(20):
                engine.submit(0, time.monotonic())
            await engine.drain(time.monotonic() + 2)
            for _ in range(5):
                engine.submit(0, time.monotonic())
                await engine.drain(time.monotonic() + 2)

        sink, server = await on_scripted(
            make,
            body,
            answer(reply(204, extra="Connection: close\r\n"), close=True),
            [get("/")],
            max_connections=4,
        )
        assert sink.statuses == [204] * 25
        assert server.connections >= 25

    run(test)


def test_idle_connection_closed_by_the_server_is_replaced_quietly(make: EngineClass) -> None:
    def answer_then_hang_up_later(transport: asyncio.Transport, received: Received) -> None:
        transport.write(reply(200))
        asyncio.get_running_loop().call_later(0.02, transport.close)

    async def test() -> None:
        async def body(engine: AnyEngine) -> None:
            for _ in range(3):
                engine.submit(0, time.monotonic())
                await engine.drain(time.monotonic() + 1)
                await asyncio.sleep(0.06)

        sink, server = await on_scripted(make, body, answer_then_hang_up_later, [get("/")])
        assert sink.statuses == [200] * 3
        assert server.connections == 3

    run(test)


def test_interim_response_is_skipped(make: EngineClass) -> None:
    async def test() -> None:
        async def body(engine: AnyEngine) -> None:
            engine.submit(0, time.monotonic())
            engine.submit(0, time.monotonic())
            await engine.drain(time.monotonic() + 2)

        sink, _ = await on_scripted(
            make, body, answer(b"HTTP/1.1 100 Continue\r\n\r\n" + reply(202)), [get("/")]
        )
        assert sink.statuses == [202, 202]

    run(test)


def test_chunked_response_in_pieces_keeps_the_connection(make: EngineClass) -> None:
    """A chunked body written in several pieces (split inside the chunk framing) ends at its last chunk,
    and the connection carries the next request."""

    def chunked(transport: asyncio.Transport, received: Received) -> None:
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        body = b"5\r\nhello\r\n1a\r\n" + b"x" * 26 + b"\r\n0\r\n\r\n"
        loop = asyncio.get_running_loop()
        transport.write(head + body[:3])
        loop.call_later(0.005, transport.write, body[3:20])
        loop.call_later(0.01, transport.write, body[20:])

    async def test() -> None:
        sink = RecordingSink()

        async def body(engine: AnyEngine) -> None:
            for i in range(3):
                engine.submit(0, time.monotonic())
                await wait_for(reported(sink, i + 1))

        sink, server = await on_scripted(make, body, chunked, [get("/")], sink=sink)
        assert sink.statuses == [200] * 3
        assert server.connections == 1

    run(test)


def test_redirects_are_not_followed(make: EngineClass) -> None:
    async def test() -> None:
        async def body(engine: AnyEngine) -> None:
            engine.submit(0, time.monotonic())
            await engine.drain(time.monotonic() + 2)

        sink, server = await on_scripted(
            make, body, answer(reply(302, extra="Location: /elsewhere\r\n")), [get("/")]
        )
        assert sink.statuses == [302]
        assert [r.url for r in server.received] == [b"/"]

    run(test)


def test_post_body_and_custom_headers_arrive(make: EngineClass) -> None:
    spec = RequestSpec(
        name="post",
        method="POST",
        path="/submit?x=1",
        headers=(("Content-Type", "application/json"), ("X-Trace", "abc")),
        body=b'{"a": 1}',
    )

    async def test() -> None:
        async def body(engine: AnyEngine) -> None:
            for req in (0, 1, 0):  # the body of a request is sent again each time
                engine.submit(req, time.monotonic())
                await engine.drain(time.monotonic() + 2)

        sink, server = await on_scripted(make, body, answer(reply(201, b"made")), [spec, get("/plain")])
        assert sink.statuses == [201, 201, 201]
        post, plain, again = server.received
        assert (post.method, post.url, post.body) == (b"POST", b"/submit?x=1", b'{"a": 1}')
        assert again.body == b'{"a": 1}'
        assert post.headers[b"content-type"] == b"application/json"
        assert post.headers[b"x-trace"] == b"abc"
        assert post.headers[b"content-length"] == b"8"
        assert post.headers[b"host"] == f"127.0.0.1:{server.port}".encode()
        assert post.headers[b"user-agent"] == f"loadgen/{__version__}".encode()
        assert (plain.method, plain.url, plain.body) == (b"GET", b"/plain", b"")
        assert b"content-length" not in plain.headers
        assert server.connections == 1

    run(test)


# --- TLS


def test_https_verifies_the_host_name_and_keeps_connections_alive(
    make: EngineClass, certificate: tuple[Path, Path]
) -> None:
    async def test() -> None:
        async with ScriptedServer(answer(reply(200, b"secret")), server_tls(certificate)) as server:
            sink = RecordingSink()
            client = ssl.create_default_context(cafile=str(certificate[0]))
            target = f"https://localhost:{server.port}/api"
            engine = make(target, [get("/x")], sink, timeout=2, max_connections=4, ssl_context=client)

            async def body(engine: AnyEngine) -> None:
                for _ in range(10):
                    engine.submit(0, time.monotonic())
                    await engine.drain(time.monotonic() + 2)

            await with_engine(engine, body)
        assert sink.statuses == [200] * 10
        assert server.connections == 1
        assert server.received[0].url == b"/api/x"
        assert server.received[0].headers[b"host"] == f"localhost:{server.port}".encode()

    run(test)


def test_https_with_an_untrusted_certificate_cannot_start(
    make: EngineClass, certificate: tuple[Path, Path]
) -> None:
    async def test() -> None:
        async with ScriptedServer(answer(reply(200)), server_tls(certificate)) as server:
            sink = RecordingSink()
            engine = make(f"https://localhost:{server.port}", [get("/")], sink, timeout=2, max_connections=1)
            with pytest.raises(ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
                await engine.start()
            await engine.aclose()

    run(test)
