"""The agent process in one test process: the real :class:`Agent` on a virtual clock, over an in-memory
network, with a fake engine, a fake CPU clock and steal reading, and a coordinator scripted here.

Seconds of a run pass in milliseconds: the loop's clock jumps to its next timer instead of sleeping. Every
wait of the scripted coordinator is bounded in virtual time, and so is every test as a whole.
"""

from __future__ import annotations

import asyncio
import logging
import tomllib
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgpack
import pytest

from agents.agent import Agent
from agents.engine import Due, Reply, Sink
from agents.http_request import RequestHead, encode_head, request_head
from agents.steal import StealMeter
from loadgen.errors import RunError
from loadgen.profile import Load, Profile, Request, Stage
from loadgen.profile_file import parse_profile
from loadgen.transport import MemoryNetwork
from loadgen.virtual_time import VirtualTimeLoop
from loadgen.wire import (
    PROTOCOL_VERSION,
    Ack,
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

AGENT = "agent-1"
ADDRESS = "memory://coordinator"
TARGET = "http://127.0.0.1:8080"
LATENCY = 0.02  # every fake response takes this long
TEST_BOUND = 300.0  # virtual seconds any one test may take, at most
M = TypeVar("M", bound=Message)


def _profile(seconds: float = 3, rate: float = 50, target: str = TARGET) -> Profile:
    load = Load(arrival="constant", start_rate=rate, max_in_flight=1000, stages=[Stage(seconds, rate)])
    return Profile(name="p", target=target, load=load, requests=[Request(name="r")])


class FakeEngine:
    """Answers every request with a 200 after ``LATENCY`` seconds of the loop's clock."""

    def __init__(self, sink: Sink, clock: Callable[[], float]) -> None:
        self.due = Due()
        self._sink = sink
        self._clock = clock
        self._in_flight = 0
        self.submitted: list[float] = []  # the clock at each submit
        self.closed = False

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def connections(self) -> int:
        return 1

    @property
    def opened(self) -> int:
        return 1

    @property
    def open_failures(self) -> dict[str, int]:
        return {}

    @property
    def peak_streams(self) -> int:
        return 0

    def submit(self, req: int, intended: float) -> None:
        sent = self._clock()
        self.submitted.append(sent)
        self._in_flight += 1
        asyncio.get_running_loop().call_later(LATENCY, self._answer, req, intended, sent)

    def _answer(self, req: int, intended: float, sent: float) -> None:
        self._in_flight -= 1
        self._sink.response(req, intended, sent, self._clock(), 200)

    async def start(self) -> None:
        pass

    async def drain(self, deadline: float) -> None:
        while self._in_flight and self._clock() < deadline:
            await asyncio.sleep(0.005)

    async def aclose(self) -> None:
        self.closed = True


def _stat(jiffies: int) -> str:
    """A /proc/stat whose host lost a tenth of its time to other guests: ``jiffies`` in all."""
    return f"cpu  {jiffies * 9 // 10} 0 0 0 0 0 0 {jiffies // 10} 0 0\n"


@dataclass
class Rig:
    """One agent on a virtual clock with everything it touches faked, and what it did."""

    loop: VirtualTimeLoop = field(default_factory=VirtualTimeLoop)
    net: MemoryNetwork = field(default_factory=MemoryNetwork)
    said: list[str] = field(default_factory=list)
    engines: list[FakeEngine] = field(default_factory=list)
    engine_class: type[FakeEngine] = FakeEngine

    def agent(self, **options: Any) -> Agent:
        reads = iter(range(0, 10**9, 1000))
        return Agent(
            ADDRESS,
            agent_id=AGENT,
            transport=self.net.client(AGENT),
            engine_factory=self._engine,
            clock=self.loop.clock,
            cpu_clock=lambda: self.loop.clock() / 4,  # a quarter of a core, always
            steal_meter=StealMeter(lambda: _stat(next(reads))),
            say=self.said.append,
            **options,
        )

    def _engine(
        self,
        engine: str,
        target: str,
        requests: Sequence[Request],
        sink: Sink,
        timeout: float,
        conns: int,
        route: object = None,
    ) -> FakeEngine:
        made = self.engine_class(sink, self.loop.clock)
        self.engines.append(made)
        return made

    def play(
        self, agent: Agent, script: Callable[[Coordinator], Awaitable[None]]
    ) -> tuple[BaseException | None, Coordinator]:
        """Run the agent and the scripted coordinator side by side; what ``agent.run()`` raised (None when it
        returned), and the coordinator with everything it received."""
        coord = Coordinator(self.net, self.loop)

        async def both() -> list[BaseException | None]:
            return await asyncio.gather(agent.run(), script(coord), return_exceptions=True)

        outcome, scripted = self.loop.run_until_complete(asyncio.wait_for(both(), TEST_BOUND))
        if scripted is not None:
            raise scripted
        return outcome, coord


@pytest.fixture
def rig() -> Iterator[Rig]:
    made = Rig()
    try:
        yield made
    finally:
        made.loop.close()


class Coordinator:
    """The coordinator's side, scripted by each test: reads the agent's messages from the network, answers
    with wire messages."""

    def __init__(self, net: MemoryNetwork, loop: VirtualTimeLoop) -> None:
        self.net = net
        self.loop = loop
        self.received: list[Message] = []
        self.received_at: list[float] = []
        self.last_sent = 0.0
        self._pending: deque[Message] = deque()

    def send(self, msg: Message) -> None:
        self.send_raw(encode(msg))

    def send_raw(self, data: bytes) -> None:
        self.net.server.send(AGENT, data)
        self.last_sent = self.loop.clock()

    async def recv(self, timeout: float = 30.0) -> Message | None:
        """The agent's next message, or None after ``timeout`` virtual seconds."""
        deadline = self.loop.clock() + timeout
        while not self._pending and self.loop.clock() < deadline:
            for identity, data in self.net.server.recv(0):
                assert identity == AGENT.encode()
                msg = decode(data)
                self.received.append(msg)
                self.received_at.append(self.loop.clock())
                self._pending.append(msg)
            if not self._pending:
                await asyncio.sleep(0.005)
        return self._pending.popleft() if self._pending else None

    async def expect(self, kind: type[M], timeout: float = 30.0) -> M:
        """The agent's next message of type ``kind``, passing over heartbeats (and answering nothing)."""
        deadline = self.loop.clock() + timeout
        while True:
            msg = await self.recv(max(0.0, deadline - self.loop.clock()))
            if isinstance(msg, kind):
                return msg
            assert msg is None or isinstance(msg, Heartbeat), f"expected {kind.__name__}, got {msg}"
            assert msg is not None, f"no {kind.__name__} within {timeout} s"

    async def join(self, profile: Profile, share: float = 1.0, coordinator_timeout: float = 10.0) -> Start:
        """Welcome the agent, probe its clock once and start it half a second from now."""
        await self.expect(Hello)
        self.send(Welcome("run-1"))
        self.send(Heartbeat(self.loop.clock(), "epoch-1"))
        self.send(Ping(1, 5.0))
        pong = await self.expect(Pong)
        assert (pong.seq, pong.t_coord) == (1, 5.0)
        start = Start(
            "run-1",
            profile.to_wire(),
            share,
            0.0,
            7,
            self.loop.clock() + 0.5,
            coordinator_timeout,
            "fast",
            0.0,
        )
        self.send(start)
        return start

    async def serve(
        self,
        *,
        ack: Callable[[int], bool] = lambda index: True,
        ack_finished: bool = True,
        during: Callable[[Message], None] = lambda msg: None,
        until: type[Message] = Finished,
    ) -> None:
        """Keep the run going: a heartbeat for each of the agent's, Ack for the intervals ``ack`` accepts,
        Ack for the Finished; ``during`` sees every message. Returns once a message of type ``until`` came."""
        while True:
            msg = await self.recv()
            assert msg is not None, "the agent fell silent"
            during(msg)
            if isinstance(msg, Heartbeat):
                self.send(Heartbeat(self.loop.clock(), "epoch-1"))
            elif isinstance(msg, Interval) and ack(msg.index):
                self.send(Ack(msg.index, False))
            elif isinstance(msg, Finished) and ack_finished:
                self.send(Ack(msg.last_index, True))
            if isinstance(msg, until):
                return

    def of(self, kind: type[M]) -> list[M]:
        return [m for m in self.received if isinstance(m, kind)]


async def _serve_run(coord: Coordinator) -> None:
    await coord.join(_profile())
    await coord.serve()


# --- a run from Hello to the last Ack ------------------------------------------------------------------------


def test_a_short_run_reports_every_second_and_finishes(rig: Rig) -> None:
    agent = rig.agent()
    outcome, coord = rig.play(agent, _serve_run)
    assert outcome is None
    intervals = coord.of(Interval)
    assert [iv.index for iv in intervals] == [0, 1, 2, 3]
    assert [iv.scheduled for iv in intervals] == [50, 50, 50, 0]  # 3 s at 50/s, the last one empty
    assert all(iv.first == 0 for iv in intervals)
    assert sum(iv.names["r"][1] for iv in intervals) == 150  # every request answered, and counted once
    assert [iv.cpu for iv in intervals[:3]] == pytest.approx([0.25] * 3)  # from the injected CPU clock
    assert [iv.stolen for iv in intervals[:3]] == pytest.approx([0.1] * 3)  # from the injected steal reading
    (started,) = coord.of(Started)
    assert started.late == pytest.approx(0.0, abs=0.01)
    (finished,) = coord.of(Finished)
    assert (finished.scheduled, finished.ok, finished.failed, finished.dropped) == (150, 150, 0, 0)
    assert (finished.in_flight, finished.last_index) == (0, 3)
    assert len(rig.engines) == 1 and rig.engines[0].closed
    assert rig.net.server.recv(0) == []  # nothing after the Finished was acknowledged
    # the arrivals began at the instant given, half a second after the Start
    assert rig.engines[0].submitted[0] - coord.received_at[coord.received.index(started)] < 0.01


class StallingEngine(FakeEngine):
    """Its drain holds the event loop for a moment without letting a timer run: a machine busy elsewhere,
    so the last second's boundary passes while nothing else on the loop gets a turn."""

    async def drain(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualTimeLoop)
        loop.now += 0.3  # the stall: the clock passes the second's boundary, the reporter's timer has not run
        # and the run ends at once, before the loop takes another turn (what is still in flight answers later)


def test_the_last_second_is_reported_as_itself_even_when_the_machine_stalls_at_its_boundary(rig: Rig) -> None:
    """A loaded machine once put the last second of an agent's run into the drain interval after it (one of
    two survivors' second 9 showed half the rate): the reporter, woken by the end of the run after the
    second's boundary, returned without cutting it."""
    rig.engine_class = StallingEngine
    outcome, coord = rig.play(rig.agent(), _serve_run)
    assert outcome is None
    intervals = coord.of(Interval)
    assert [iv.scheduled for iv in intervals] == [50, 50, 50, 0]
    assert [iv.index for iv in intervals] == [0, 1, 2, 3]


def test_the_agent_says_what_it_does(rig: Rig) -> None:

    async def script(coord: Coordinator) -> None:
        await coord.join(_profile(seconds=4))
        await coord.serve(until=Started)
        coord.send(Reshare(0.5, 0.0, 3, 2.0))
        await coord.serve()

    outcome, coord = rig.play(rig.agent(), script)
    assert outcome is None
    assert rig.said == [
        f"waiting for the coordinator at {ADDRESS}",
        f"joined run run-1 as {AGENT}",
        f"started: share 1.000 of {TARGET} from t=0.0 s",
        "new share 0.500 from t=2.0 s",
        "finished: scheduled 150, ok 150, failed 0, dropped 0, in flight 0",
    ]
    assert [iv.scheduled for iv in coord.of(Interval)] == [50, 50, 25, 25, 0]  # the reshare, from t=2 s


def test_a_waiting_agent_says_so_every_ten_seconds_and_gives_up(rig: Rig) -> None:

    async def nobody(coord: Coordinator) -> None:
        pass

    outcome, _ = rig.play(rig.agent(wait_timeout=25.0), nobody)
    assert isinstance(outcome, RunError)
    assert str(outcome) == f"no coordinator answered at {ADDRESS} within 25 s"
    assert rig.said == [
        f"waiting for the coordinator at {ADDRESS}",
        f"waiting for the coordinator at {ADDRESS} (10 s, 10 hellos sent)",
        f"waiting for the coordinator at {ADDRESS} (20 s, 20 hellos sent)",
    ]
    assert len(rig.net.server.recv(0)) == 25  # a hello a second


def test_an_agent_with_keys_names_the_likely_causes_when_nobody_answers(rig: Rig) -> None:

    async def nobody(coord: Coordinator) -> None:
        pass

    outcome, _ = rig.play(rig.agent(wait_timeout=3.0, socket_setup=lambda sock: None), nobody)
    assert isinstance(outcome, RunError)
    assert "wrong coordinator key, or this agent's key is not authorized there?" in str(outcome)
    assert ADDRESS in str(outcome)


# --- the coordinator in trouble -------------------------------------------------------------------------


def test_a_silent_coordinator_stops_the_load_within_its_timeout(rig: Rig) -> None:

    async def script(coord: Coordinator) -> None:
        await coord.join(_profile(seconds=60), coordinator_timeout=3.0)
        while await coord.recv(10.0) is not None:  # listens, never answers
            pass

    outcome, coord = rig.play(rig.agent(coordinator_timeout=10.0), script)
    assert isinstance(outcome, RunError)
    assert "coordinator silent for more than 3 s; stopped sending load" in str(outcome)
    submitted = rig.engines[0].submitted
    assert submitted, "the run began"
    # The Start's timeout (3 s, below the agent's own 10 s) counts from the coordinator's last word.
    assert coord.last_sent + 3.0 - 0.5 < submitted[-1] <= coord.last_sent + 3.0 + 0.3
    assert coord.of(Finished) == []
    assert rig.engines[0].closed


def test_a_new_coordinator_epoch_gets_everything_unacknowledged_again(rig: Rig) -> None:
    resent: list[Message] = []

    async def script(coord: Coordinator) -> None:
        await coord.join(_profile())
        await coord.serve(ack=lambda index: index == 0, ack_finished=False)  # acknowledges interval 0 only
        coord.send(Heartbeat(coord.loop.clock(), "epoch-2"))  # a resumed coordinator
        await coord.serve(during=resent.append)

    outcome, coord = rig.play(rig.agent(), script)
    assert outcome is None
    again = [m for m in resent if not isinstance(m, Heartbeat)]
    assert [type(m).__name__ for m in again] == ["Interval", "Interval", "Interval", "Finished"]
    assert [m.index for m in again if isinstance(m, Interval)] == [1, 2, 3]
    first_time = {iv.index: iv for iv in coord.of(Interval)[:4]}
    assert all(m == first_time[m.index] for m in again if isinstance(m, Interval))  # the same bytes


def test_a_stop_ends_the_run_early_but_still_reports_it(rig: Rig) -> None:

    async def script(coord: Coordinator) -> None:
        await coord.join(_profile(seconds=60))
        await coord.serve(until=Started)

        def stop_after_two_seconds(msg: Message) -> None:
            if isinstance(msg, Interval) and msg.index == 1:
                coord.send(Stop("the operator asked"))

        await coord.serve(during=stop_after_two_seconds)

    outcome, coord = rig.play(rig.agent(), script)
    assert outcome is None
    (finished,) = coord.of(Finished)
    assert 100 <= finished.scheduled <= 110  # two seconds and a little, not sixty
    assert finished.ok == finished.scheduled


def test_a_stop_before_the_start_ends_the_agent(rig: Rig) -> None:

    async def script(coord: Coordinator) -> None:
        await coord.expect(Hello)
        coord.send(Welcome("run-1"))
        coord.send(Stop("the operator changed their mind"))

    outcome, _ = rig.play(rig.agent(), script)
    assert isinstance(outcome, RunError)
    assert str(outcome) == "coordinator stopped the run before it began: the operator changed their mind"
    assert rig.engines == []


# --- what the agent refuses --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"allow_targets": ("staging.example:443",)}, f"target {TARGET} is not allowed on this agent"),
        ({"max_rate": 10.0}, "share of the peak rate 50/s exceeds this agent's --max-rate 10"),
    ],
)
def test_a_run_outside_the_operators_limits_is_refused(
    rig: Rig, options: dict[str, Any], reason: str
) -> None:
    refused: list[Refused] = []

    async def script(coord: Coordinator) -> None:
        await coord.join(_profile())
        refused.append(await coord.expect(Refused))

    outcome, _ = rig.play(rig.agent(**options), script)
    assert isinstance(outcome, RunError)
    assert str(outcome).startswith("refused the run: " + reason)
    assert refused[0].reason.startswith(reason)
    assert rig.engines == []  # no engine made, no request sent


def test_a_coordinator_of_another_protocol_version_ends_the_agent(rig: Rig) -> None:

    async def script(coord: Coordinator) -> None:
        await coord.expect(Hello)
        coord.send_raw(msgpack.packb({"v": PROTOCOL_VERSION - 1, "type": "welcome", "run_id": "old"}))

    outcome, _ = rig.play(rig.agent(), script)
    assert isinstance(outcome, RunError)
    assert "the coordinator speaks another protocol version" in str(outcome)
    assert "run the same loadgen version" in str(outcome)


def test_a_coordinator_of_another_protocol_version_taking_over_mid_run_ends_the_agent(rig: Rig) -> None:

    async def script(coord: Coordinator) -> None:
        await coord.expect(Hello)
        coord.send(Welcome("run-1"))
        start = Start("run-1", _profile().to_wire(), 1.0, 0.0, 7, coord.loop.clock() + 0.5, 10.0, "fast", 0.0)
        coord.send(start)
        await coord.serve(until=Started)
        coord.send_raw(
            msgpack.packb({"v": PROTOCOL_VERSION + 1, "type": "heartbeat", "t": 1.0, "epoch": "x"})
        )

    outcome, _ = rig.play(rig.agent(), script)
    assert isinstance(outcome, RunError)
    assert "the coordinator speaks another protocol version" in str(outcome)
    assert rig.engines[0].closed


def test_malformed_and_unexpected_messages_are_dropped_and_the_run_goes_on(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:

    async def script(coord: Coordinator) -> None:
        await coord.expect(Hello)
        coord.send(Ack(3, True))  # well-formed, but nothing to acknowledge before a run
        coord.send_raw(b"\xc1 not msgpack")
        coord.send(Welcome("run-1"))
        start = Start("run-1", _profile().to_wire(), 1.0, 0.0, 7, coord.loop.clock() + 0.5, 10.0, "fast", 0.0)
        coord.send(start)
        await coord.serve(until=Started)
        coord.send_raw(msgpack.packb({"v": PROTOCOL_VERSION, "type": "ack", "index": "one"}))
        coord.send_raw(msgpack.packb([1, 2, 3]))
        coord.send(start)  # a second Start in the run: unexpected
        coord.send(Reshare(2.0, 0.0, 1, 1.0))  # twice the fleet's rate: no share at all
        await coord.serve()

    with caplog.at_level(logging.WARNING, logger="loadgen.agent"):
        outcome, coord = rig.play(rig.agent(), script)
    assert outcome is None
    (finished,) = coord.of(Finished)
    assert (finished.scheduled, finished.ok) == (150, 150)
    assert sum(iv.scheduled for iv in coord.of(Interval)) == 150
    dropped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dropped")]
    assert [line.split(":")[0] for line in dropped] == [
        "dropped an unexpected ack message from the coordinator",
        "dropped a malformed message",
        "dropped a malformed message",
        "dropped a malformed message",
        "dropped an unexpected start message from the coordinator",
        "dropped a reshare the agent cannot take",
    ]
    assert "not a msgpack message" in dropped[1] and "missing fields ['finished']" in dropped[2]


# --- user journeys with unique test data ---------------------------------------------------------------------


class SlotsEngine(FakeEngine):
    """The fake engine with the slots a flow runner needs (agents.engine.Slots)."""

    def __init__(self, sink: Sink, clock: Callable[[], float]) -> None:
        super().__init__(sink, clock)
        self.reply = Reply()
        self.prefix = ""
        self._wire: list[object] = [b""]

    def reserve(self, n: int) -> int:
        base = len(self._wire)
        self._wire += [b""] * n
        return base

    def head_of(self, spec: Request) -> RequestHead:
        return request_head(spec, "t")

    def prepare(self, head: RequestHead) -> object:
        return encode_head(head)

    def prepared(self, req: int) -> object:
        return self._wire[req] if req < len(self._wire) else b""

    def put(self, req: int, prepared: object, flags: int) -> None:
        self._wire[req] = prepared


def _unique_data_profile(tmp: Any) -> Profile:
    (tmp / "u.csv").write_text("user\n" + "".join(f"u{i}\n" for i in range(1000)), encoding="utf-8")
    text = f"""\
target = "{TARGET}"
[load]
stages = [{{ duration = "30s", rate = 10 }}]
[[data]]
file = "u.csv"
mode = "unique"
[[flows]]
name = "f"
[[flows.steps]]
path = "/u/{{{{ user }}}}"
"""
    return parse_profile(tomllib.loads(text), str(tmp / "p.toml"))


def test_a_lease_asked_of_a_coordinator_that_died_is_asked_again_of_the_next(rig: Rig, tmp_path: Any) -> None:
    """A DataLease (or its DataGrant) lost with the coordinator that crashed must not leave the agent waiting
    for rows forever: a resumed coordinator (a new epoch) is asked again."""
    rig.engine_class = SlotsEngine
    profile = _unique_data_profile(tmp_path)
    asked: list[float] = []

    async def lease(coord: Coordinator, within: float) -> DataLease | None:
        deadline = coord.loop.clock() + within
        while (left := deadline - coord.loop.clock()) > 0:
            msg = await coord.recv(left)
            if isinstance(msg, DataLease):
                return msg
        return None

    async def script(coord: Coordinator) -> None:
        await coord.join(profile)
        assert await lease(coord, 5.0) is not None  # the first coordinator dies before it answers
        asked.append(coord.loop.clock())
        coord.send(Heartbeat(coord.loop.clock(), "epoch-2"))  # a resumed coordinator takes over
        again = await lease(coord, 5.0)
        if again is not None:
            asked.append(coord.loop.clock())
            coord.send(DataGrant(again.source, 0, again.count))
        until = coord.loop.clock() + 3.0  # three seconds of arrivals with the rows granted
        while coord.loop.clock() < until:
            msg = await coord.recv(until - coord.loop.clock())
            if isinstance(msg, Heartbeat):
                coord.send(Heartbeat(coord.loop.clock(), "epoch-2"))
        coord.send(Stop("enough"))
        while not isinstance(msg := await coord.recv(), Finished):
            assert msg is not None, "the agent fell silent"
        coord.send(Ack(msg.last_index, True))

    outcome, coord = rig.play(rig.agent(), script)
    assert outcome is None
    assert len(asked) == 2, "the agent never asked the new coordinator: it would find no row all run"
    (finished,) = coord.of(Finished)
    assert finished.ok > 0  # the rows granted by the new coordinator were used
