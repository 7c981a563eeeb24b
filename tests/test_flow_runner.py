"""The agent's flow runner on a fake engine and a fake clock: what each step sends, when it is intended, what
is recorded, and how a flow ends. No sockets, no event loop: the test answers each request itself."""

from __future__ import annotations

import asyncio
import random
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agents.arrivals import arrival_weights
from agents.engine import HEAD, READ, Due, Reply
from agents.flow_runner import FlowRunner, direct_flows
from agents.http_request import RequestHead, encode_head, request_head
from agents.recorder import Recorder
from loadgen.histogram import decode
from loadgen.profile import Profile, Request
from loadgen.profile_file import parse_profile

PROFILE = """\
target = "http://127.0.0.1:8080"

[load]
stages = [{ duration = "10s", rate = 5 }]
max_in_flight = 4

[[requests]]
name = "home"
path = "/"

[[flows]]
name = "buy"

[[flows.steps]]
name = "login"
method = "POST"
path = "/login"
body = '{"user": "{{ random_choice(\"ann\") }}"}'
capture = { token = "$.token", item = "$.items[0].id" }

[[flows.steps]]
pause = "2s"

[[flows.steps]]
name = "pay"
method = "POST"
path = "/buy/{{ item }}?n={{ counter }}"
headers = { authorization = "Bearer {{ token }}" }
check = { status = [200, 201], contains = "order" }
"""


class FakeEngine:
    """The engine interface and its slots, recording what is submitted; the test answers."""

    def __init__(self, requests: list[Request]) -> None:
        self.due = Due()
        self.reply = Reply()
        self.prefix = ""
        self.wire: list[object] = [encode_head(self.head_of(r)) for r in requests]
        self.flags = bytearray(len(requests))
        self.sent: list[tuple[int, float, bytes, int]] = []  # (req, intended, bytes, flags)
        self.in_flight = 0
        self.connections = 1

    def head_of(self, spec: Request) -> RequestHead:
        return request_head(spec, "t")

    def reserve(self, n: int) -> int:
        base = len(self.wire)
        self.wire += [b""] * n
        self.flags += bytearray(n)
        return base

    def prepare(self, head: RequestHead) -> bytes:
        return encode_head(head)

    def prepared(self, req: int) -> object:
        return self.wire[req]

    def put(self, req: int, prepared: object, flags: int) -> None:
        self.wire[req] = prepared
        self.flags[req] = flags

    def submit(self, req: int, intended: float) -> None:
        data = self.wire[req]
        assert isinstance(data, bytes)
        self.sent.append((req, intended, data, self.flags[req]))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[tuple[float, Callable[..., None], tuple[Any, ...]]] = []

    def __call__(self) -> float:
        return self.now

    def call_later(self, delay: float, fn: Callable[..., None], *args: Any) -> Any:
        handle = _Handle()
        self.timers.append((self.now + delay, fn, (handle, *args)))
        return handle

    def advance(self, to: float) -> None:
        self.now = to
        due = [t for t in self.timers if t[0] <= to]
        self.timers = [t for t in self.timers if t[0] > to]
        for _, fn, (handle, *args) in due:
            if not handle.cancelled:
                fn(*args)


class _Handle:
    cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def setup(text: str = PROFILE) -> tuple[Profile, FlowRunner, FakeEngine, Recorder, Clock]:
    profile = parse_profile(tomllib.loads(text), "p.toml")
    recorder = Recorder(profile.result_names, profile.step_names)
    clock = Clock()
    runner = FlowRunner(profile, recorder, clock=clock, rng=random.Random(1), call_later=clock.call_later)
    engine = FakeEngine(list(profile.requests))
    runner.bind(engine)  # type: ignore[arg-type]
    return profile, runner, engine, recorder, clock


def answer(
    runner: FlowRunner,
    engine: FakeEngine,
    clock: Clock,
    at: float,
    status: int = 200,
    body: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    req, intended, _, _ = engine.sent[-1]
    clock.now = at
    engine.reply.headers = headers or []
    engine.reply.body = body
    runner.response(req, intended, intended, at, status)


def totals(recorder: Recorder) -> dict[str, tuple[int, int, int, dict[str, int], list[int], list[int]]]:
    recorder.seal_arrivals()
    pending = recorder.cut(0, 0)
    return {name: (s, ok, f, e, lat, svc) for name, (s, ok, f, e, lat, svc) in pending.names.items()}


LOGIN_BODY = b'{"token": "tk", "items": [{"id": 7}]}'


def test_a_journey_carries_captured_values_and_keeps_its_times() -> None:
    profile, runner, engine, recorder, clock = setup()
    flow = profile.result_names.index("buy")
    runner.submit(flow, 0.0)
    recorder.scheduled(flow, 0.0)
    req, intended, data, flags = engine.sent[-1]
    assert intended == 0.0
    assert data.startswith(b"POST /login HTTP/1.1\r\n") and data.endswith(b'{"user": "{{ user }}"}') is False
    assert flags & READ  # captures (and the cookie jar) need the response
    answer(runner, engine, clock, 0.125, body=LOGIN_BODY, headers=[(b"Set-Cookie", b"sid=s1")])
    assert len(engine.sent) == 1  # the pause: nothing sent yet
    clock.advance(2.12)
    assert len(engine.sent) == 1
    clock.advance(2.125)
    req2, intended2, data2, _ = engine.sent[-1]
    assert req2 == req  # the instance keeps its request number
    assert intended2 == 2.125  # the previous step's end plus the pause
    assert data2.startswith(b"POST /buy/7?n=1 HTTP/1.1\r\n")
    assert b"authorization: Bearer tk\r\n" in data2
    assert b"Cookie: sid=s1\r\n" in data2
    answer(runner, engine, clock, 2.5, status=201, body=b'{"order": 1}')
    assert runner.in_flight == 0
    t = totals(recorder)
    assert t["buy.login"][:3] == (1, 1, 0) and t["buy.login"][4] == [125_000]
    assert t["buy.pay"][:3] == (1, 1, 0) and t["buy.pay"][4] == [375_000]
    flow_row = t["buy"]
    assert flow_row[:3] == (1, 1, 0)
    assert flow_row[4] == [2_500_000]  # arrival to the end of the last step, the pause included
    assert flow_row[5] == [500_000]  # active: the same without the pause
    assert recorder.so_far()[:3] == (1, 1, 0)  # the arrival is the flow's, counted once


def test_a_stalled_first_step_shows_in_the_next_steps_intended_time() -> None:
    _, runner, engine, recorder, clock = setup()
    runner.submit(1 + 2, 0.0)
    answer(runner, engine, clock, 5.0, body=LOGIN_BODY)  # the server stalled for 5 s
    clock.advance(7.0)
    assert engine.sent[-1][1] == pytest.approx(7.0)
    answer(runner, engine, clock, 7.01, body=b"order")
    t = totals(recorder)
    assert t["buy.login"][4] == [5_000_000]
    assert t["buy"][4] == [7_010_000]


def test_a_failed_check_ends_the_flow_with_its_category() -> None:
    _, runner, engine, recorder, clock = setup()
    runner.submit(3, 0.0)
    answer(runner, engine, clock, 0.1, body=LOGIN_BODY)
    clock.advance(2.1)
    answer(runner, engine, clock, 2.2, status=200, body=b"no such thing")
    t = totals(recorder)
    assert t["buy.pay"][1:4] == (0, 1, {"check:pay": 1})
    assert t["buy"][1:4] == (0, 1, {"check:pay": 1})
    assert runner.in_flight == 0


def test_an_error_status_fails_the_step_as_http_and_later_steps_never_run() -> None:
    _, runner, engine, recorder, clock = setup()
    runner.submit(3, 0.0)
    answer(runner, engine, clock, 0.1, status=500, body=b"")
    assert clock.timers == [] and len(engine.sent) == 1
    t = totals(recorder)
    assert t["buy.login"][1:4] == (0, 1, {"http_500": 1})
    assert "buy.pay" not in t
    assert t["buy"][1:4] == (0, 1, {"http_500": 1})


def test_a_capture_that_finds_nothing_fails_its_step() -> None:
    _, runner, engine, recorder, clock = setup()
    runner.submit(3, 0.0)
    answer(runner, engine, clock, 0.1, body=b'{"token": "tk"}')  # no items
    t = totals(recorder)
    assert t["buy.login"][1:4] == (0, 1, {"capture:login": 1})
    assert t["buy"][3] == {"capture:login": 1}


def test_an_engine_error_ends_the_flow() -> None:
    _, runner, engine, recorder, _ = setup()
    runner.submit(3, 0.0)
    req, intended, _, _ = engine.sent[-1]
    runner.error(req, intended, 0.0, 10.0, "timeout")
    t = totals(recorder)
    assert t["buy.login"][1:5] == (0, 1, {"timeout": 1}, [10_000_000])  # a timeout is a wait: in the tail
    assert t["buy"][3] == {"timeout": 1}


def test_a_rendered_header_with_a_line_break_fails_as_template() -> None:
    _, runner, engine, recorder, clock = setup()
    runner.submit(3, 0.0)
    answer(runner, engine, clock, 0.1, body=b'{"token": "a\\r\\nX-Evil: 1", "items": [{"id": 1}]}')
    clock.advance(2.1)
    assert len(engine.sent) == 1  # never sent
    t = totals(recorder)
    assert t["buy.pay"][:4] == (1, 0, 1, {"template:pay": 1})
    assert runner.in_flight == 0


def test_plain_requests_are_counted_as_before() -> None:
    _, runner, engine, recorder, _ = setup()
    runner.submit(0, 0.0)
    recorder.scheduled(0, 0.0)
    req, _, data, flags = engine.sent[-1]
    assert data.startswith(b"GET / HTTP/1.1") and flags == 0
    runner.response(req, 0.0, 0.0, 0.2, 200)
    t = totals(recorder)
    assert t["home"][:3] == (1, 1, 0)
    assert runner.in_flight == 0


def test_instances_in_flight_are_bounded_and_slots_are_reused() -> None:
    _, runner, engine, _, clock = setup()
    for _ in range(4):
        runner.submit(3, 0.0)
    assert runner.in_flight == 4
    reqs = {s[0] for s in engine.sent}
    assert len(reqs) == 4
    answer(runner, engine, clock, 0.1, status=500)
    runner.submit(3, 0.2)
    assert engine.sent[-1][0] == engine.sent[-2][0]  # the freed number again
    assert runner.in_flight == 4


def test_the_data_rows_fill_templates(tmp_path: Path) -> None:
    (tmp_path / "u.csv").write_text("user\nann\nbea\n", encoding="utf-8")
    text = PROFILE.replace("[[flows]]", '[[data]]\nfile = "u.csv"\n\n[[flows]]')
    text = text.replace('{{ random_choice("ann") }}', "{{ user }}")
    profile = parse_profile(tomllib.loads(text), str(tmp_path / "p.toml"))
    recorder = Recorder(profile.result_names, profile.step_names)
    clock = Clock()
    runner = FlowRunner(profile, recorder, clock=clock, rng=random.Random(1), call_later=clock.call_later)
    engine = FakeEngine(list(profile.requests))
    runner.bind(engine)  # type: ignore[arg-type]
    bodies = []
    for i in range(3):
        runner.submit(3, float(i))
        bodies.append(engine.sent[-1][2].split(b"\r\n\r\n", 1)[1])
    assert bodies == [b'{"user": "ann"}', b'{"user": "bea"}', b'{"user": "ann"}']  # sequential, wrapping
    assert all(b"Content-Length: 15\r\n" in s[2] for s in engine.sent)


def test_head_steps_and_static_steps_keep_their_prepared_bytes() -> None:
    text = PROFILE.replace('name = "home"\npath = "/"', 'name = "home"\nmethod = "HEAD"\npath = "/"')
    _, runner, engine, _, _ = setup(text)
    runner.submit(0, 0.0)
    assert engine.sent[-1][3] == HEAD
    assert engine.sent[-1][2] is engine.wire[0] or engine.sent[-1][2] == engine.prepared(0)


def test_histograms_of_a_cut_decode() -> None:
    _, runner, engine, recorder, clock = setup()
    runner.submit(3, 0.0)
    answer(runner, engine, clock, 0.1, status=500)
    recorder.seal_arrivals()
    iv = recorder.take_interval(0, runner.in_flight)
    h = decode(iv.names["buy"][4])
    assert h is not None and h.get_total_count() == 1


def test_the_last_step_is_read_only_when_it_captures_or_checks_the_body() -> None:
    _, runner, engine, _, clock = setup()
    runner.submit(3, 0.0)
    assert engine.sent[-1][3] & READ  # login: captures
    answer(runner, engine, clock, 0.125, body=LOGIN_BODY)
    clock.advance(2.125)
    assert engine.sent[-1][3] & READ  # pay: checks the body
    text = PROFILE.replace('check = { status = [200, 201], contains = "order" }', "")
    _, runner, engine, _, clock = setup(text)
    runner.submit(3, 0.0)
    answer(runner, engine, clock, 0.125, body=LOGIN_BODY)
    clock.advance(2.125)
    assert not engine.sent[-1][3] & READ  # nothing reads it, and no later step would send its cookies


def test_one_step_flows_without_templates_go_direct() -> None:
    text = """\
target = "http://127.0.0.1:8080"
[load]
stages = [{ duration = "10s", rate = 5 }]
[[requests]]
name = "home"
path = "/"
weight = 2
[[flows]]
name = "a"
weight = 3
[[flows.steps]]
name = "get"
path = "/x"
"""
    profile = parse_profile(tomllib.loads(text), "p.toml")
    alias = direct_flows(profile)
    assert profile.result_names == ["home", "a.get", "a"]
    assert alias == {2: 1}
    assert arrival_weights(profile, alias) == [2.0, 3.0, 0.0]
    recorder = Recorder(profile.result_names, profile.step_names, alias)
    recorder.scheduled(1, 0.0)
    recorder.response(1, 0.0, 0.1, 0.25, 200)
    recorder.dropped(1)
    recorder.scheduled(1, 0.0)
    recorder.error(1, 0.0, 0.0, 0.5, "connect")
    t = totals(recorder)
    assert t["a"] == (3, 1, 1, {"connect": 1}, [250_000], [250_000])
    assert t["a.get"][:4] == (3, 1, 1, {"connect": 1})
    assert recorder.so_far() == (3, 1, 1, 1)  # counted once, as arrivals
    for change in (
        'path = "/x/{{ uuid }}"',
        'path = "/x"\ncapture = { t = "$.t" }',
        'path = "/x"\ncheck = { status = [200] }',
        'path = "/x"\n[[flows.steps]]\npath = "/y"',
    ):
        assert (
            direct_flows(parse_profile(tomllib.loads(text.replace('path = "/x"', change)), "p.toml")) is None
        )


# --- flows written in Python

CODE = """\
target = "http://127.0.0.1:8080"
[load]
stages = [{ duration = "10s", rate = 5 }]
[[flows]]
name = "py"
function = "tests.flow_functions:FUNCTION"
steps = STEPS
"""


def code_setup(function: str, steps: str) -> tuple[FlowRunner, FakeEngine, Recorder, Clock]:
    text = CODE.replace("FUNCTION", function).replace("STEPS", steps)
    profile = parse_profile(tomllib.loads(text), "p.toml")
    recorder = Recorder(profile.result_names, profile.step_names)
    clock = Clock()
    runner = FlowRunner(profile, recorder, clock=clock, rng=random.Random(1), call_later=clock.call_later)
    engine = FakeEngine(list(profile.requests))
    runner.bind(engine)  # type: ignore[arg-type]
    return runner, engine, recorder, clock


def test_a_python_flow_runs_its_steps_with_their_times() -> None:
    runner, engine, recorder, clock = code_setup("shop", '["size", "wait"]')
    loop_answers = {b"/bytes": (200, b"x" * 12), b"/delay": (200, b"ok")}

    async def scenario() -> None:  # the flow is a task: it needs a running loop
        runner.submit(2, 0.0)  # result names: py.size, py.wait, py
        done = 0
        for _ in range(400):
            await asyncio.sleep(0.001)
            clock.now += 0.001  # the fake clock goes on with the loop (the flow's pause waits for it)
            while done < len(engine.sent):
                req, intended, data, flags = engine.sent[done]
                done += 1
                assert flags & READ
                target = data.split(b" ")[1]
                status, body = next(v for k, v in loop_answers.items() if target.startswith(k))
                clock.now = intended + 0.010
                engine.reply.headers = [(b"Set-Cookie", b"sid=1")]
                engine.reply.body = body
                runner.response(req, intended, intended, clock.now, status)
            if runner.in_flight == 0:
                return

    asyncio.run(scenario())
    assert runner.in_flight == 0
    targets = [s[2].split(b" ")[1] for s in engine.sent]
    assert targets == [b"/bytes?n=12", b"/delay?ms=12&n=-"]
    assert b"Cookie: sid=1" in engine.sent[1][2]  # the session's jar
    t = totals(recorder)
    assert t["py.size"][:3] == (1, 1, 0) and t["py.wait"][:3] == (1, 1, 0)
    assert engine.sent[1][1] >= 0.06  # the first step's end (10 ms) plus the 50 ms pause
    flow = t["py"]
    assert flow[1:4] == (1, 0, {})
    assert flow[5][0] == pytest.approx(20_000, abs=2)  # active: two 10 ms steps, not the pause


@pytest.mark.parametrize(
    ("function", "steps", "flow_errors", "step"),
    [
        ("tolerant", '["maybe", "gone"]', {}, ("py.maybe", {"http_503": 1})),
        ("broken", '["one"]', {"python:KeyError": 1}, ("py.one", {})),
        ("undeclared", '["one"]', {"python:ValueError": 1}, None),
    ],
)
def test_python_flow_outcomes(
    function: str, steps: str, flow_errors: dict[str, int], step: tuple[str, dict[str, int]] | None
) -> None:
    runner, engine, recorder, _ = code_setup(function, steps)
    answers = {b"/status/503": (503, b""), b"/status/404": (404, b""), b"/": (200, b"ok")}

    async def scenario() -> None:
        runner.submit(len(steps.split(",")), 0.0)
        done = 0
        for _ in range(400):
            await asyncio.sleep(0.001)
            while done < len(engine.sent):
                req, intended, data, _ = engine.sent[done]
                done += 1
                target = data.split(b" ")[1]
                status, body = next(v for k, v in answers.items() if target.startswith(k))
                engine.reply.headers, engine.reply.body = [], body
                runner.response(req, intended, intended, intended + 0.01, status)
            if runner.in_flight == 0:
                return

    asyncio.run(scenario())
    assert runner.in_flight == 0
    t = totals(recorder)
    assert t["py"][3] == flow_errors
    assert (t["py"][1], t["py"][2]) == ((0, 1) if flow_errors else (1, 0))
    if step is not None:
        assert t[step[0]][3] == step[1]


def test_a_function_that_cannot_be_used_is_refused_when_the_runner_binds() -> None:
    for function in ("not_async", "nowhere"):
        with pytest.raises(ValueError, match=r"async function|has no"):
            code_setup(function, '["a"]')


def test_the_profiles_auth_goes_with_every_step(monkeypatch: pytest.MonkeyPatch) -> None:
    from agents.http_request import with_auth

    monkeypatch.setenv("SHOP_TOKEN", "s3cret")
    text = PROFILE.replace("[load]", 'auth = { bearer = "{{ env.SHOP_TOKEN }}" }\n\n[load]')
    profile = parse_profile(tomllib.loads(text), "p.toml")
    assert profile.auth is not None
    recorder = Recorder(profile.result_names, profile.step_names)
    clock = Clock()
    runner = FlowRunner(profile, recorder, clock=clock, rng=random.Random(1), call_later=clock.call_later)
    requests = with_auth(profile.requests, profile.auth.header)
    engine = FakeEngine(list(requests))
    runner.bind(engine, requests, profile.auth.header)  # type: ignore[arg-type]
    runner.submit(3, 0.0)
    answer(runner, engine, clock, 0.125, body=LOGIN_BODY)
    clock.advance(2.125)
    login, pay = (s[2] for s in engine.sent)
    assert b"Authorization: Bearer s3cret\r\n" in login
    assert b"authorization: Bearer tk\r\n" in pay and b"s3cret" not in pay  # the step's own header wins


def test_steps_sent_after_the_last_arrival_are_still_counted_as_sent() -> None:
    """The arrival loop seals its last second when its schedule ends; flows in flight go on sending steps."""
    _, runner, engine, recorder, clock = setup()
    runner.submit(3, 0.0)
    recorder.scheduled(3, 0.0)
    recorder.seal_arrivals()  # the schedule's end: no arrival after this
    answer(runner, engine, clock, 0.125, body=LOGIN_BODY)
    clock.advance(2.125)
    answer(runner, engine, clock, 2.5, status=201, body=b'{"order": 1}')
    pending = recorder.cut(0, 0)
    assert pending.names["buy.pay"][:3] == (1, 1, 0)
    assert pending.names["buy.login"][:3] == (1, 1, 0)
    assert pending.names["buy"][:3] == (1, 1, 0)


@pytest.mark.parametrize("path", ["/x/{{id}}", "/a{{b", "/q?n={{counter}}"])
def test_a_plain_request_is_sent_as_written_beside_flows(path: str) -> None:
    """Plain [[requests]] are not templates (the loader never checks them as such, and without flows the
    engine sends them as written): beside flows they go the same, counted once."""
    text = PROFILE.replace('name = "home"\npath = "/"', f'name = "home"\npath = "{path}"')
    _, runner, engine, recorder, _ = setup(text)
    runner.submit(0, 0.0)
    recorder.scheduled(0, 0.0)
    req, _, data, _ = engine.sent[-1]
    assert data == engine.prepared(0)  # the profile's own bytes
    runner.response(req, 0.0, 0.0, 0.2, 200)
    t = totals(recorder)
    assert t["home"][:3] == (1, 1, 0)
    assert runner.in_flight == 0


def test_a_step_the_python_flow_gave_up_on_keeps_its_request_number_until_the_engine_answers() -> None:
    """A flow written in Python may stop waiting for a step (``asyncio.timeout``) while the engine still
    carries its request: the instance's request number is not used again until that outcome comes, which
    goes to the step it belongs to, never to a later one (or to a freed instance)."""
    runner, engine, recorder, _ = code_setup("impatient", '["slow", "fast"]')
    events: list[str] = []

    async def scenario() -> None:
        runner.submit(2, 0.0)  # result names: py.slow, py.fast, py
        done = 0
        slow: tuple[int, float] | None = None
        for i in range(400):
            await asyncio.sleep(0.001)
            while done < len(engine.sent):
                req, intended, data, _ = engine.sent[done]
                done += 1
                target = data.split(b" ")[1]
                events.append(f"sent {target.decode()}")
                if target == b"/slow":
                    slow = (req, intended)  # answered late, below
                    continue
                engine.reply.headers, engine.reply.body = [], b"fast"
                runner.response(req, intended, intended, intended + 0.01, 200)
            if slow is not None and i >= 100:  # long after the flow's own 20 ms timeout
                events.append("answered /slow")
                engine.reply.headers, engine.reply.body = [], b"slow"
                runner.response(*slow, slow[1], slow[1] + 0.1, 200)
                slow = None
            if runner.in_flight == 0 and slow is None and i >= 100:
                return

    asyncio.run(scenario())
    assert events == ["sent /slow", "answered /slow", "sent /fast"]  # one request per number at a time
    assert runner.in_flight == 0
    t = totals(recorder)
    assert t["py.slow"][:3] == (1, 1, 0)  # its outcome, when it came, counted for it
    assert t["py.fast"][:3] == (1, 1, 0)
    assert t["py"][1:4] == (1, 0, {})  # the flow ok, counted once


def test_a_python_flow_that_gives_up_on_its_last_step_ends_once_the_engine_has_answered() -> None:
    runner, engine, recorder, _ = code_setup("gives_up", '["slow"]')
    in_flight_before_answer: list[int] = []

    async def scenario() -> None:
        runner.submit(1, 0.0)  # result names: py.slow, py
        for _ in range(100):  # long after the flow's own 20 ms timeout
            await asyncio.sleep(0.001)
        in_flight_before_answer.append(runner.in_flight)
        ((req, intended, _, _),) = engine.sent
        engine.reply.headers, engine.reply.body = [], b""
        runner.response(req, intended, intended, intended + 0.5, 200)  # no instance may have it yet
        for _ in range(100):
            await asyncio.sleep(0.001)
            if runner.in_flight == 0:
                return

    asyncio.run(scenario())
    assert in_flight_before_answer == [1]  # its request number is still the engine's
    assert runner.in_flight == 0
    t = totals(recorder)
    assert t["py.slow"][:3] == (1, 1, 0)
    assert t["py"][1:4] == (1, 0, {})


def test_no_step_leaves_after_the_drain_has_given_up() -> None:
    """At the drain's deadline the agent sends its last report, which counts the instances still pausing as
    in flight: none of them may then start a step (load the results never see)."""
    _, runner, engine, _, clock = setup()
    runner.submit(3, 0.0)
    answer(runner, engine, clock, 0.125, body=LOGIN_BODY)  # then a 2 s pause
    clock.now = 1.0
    asyncio.run(runner.drain(0.5))  # the deadline has passed: the drain gives up at once
    assert runner.in_flight == 1  # as the last report says
    clock.advance(5.0)
    assert len(engine.sent) == 1  # the pay step never leaves


def test_an_arrival_without_a_row_of_one_unique_source_spends_no_row_of_another(tmp_path: Path) -> None:
    """Rows of a unique source are used once, ever: an arrival that is not sent (no row of the second
    source yet) must not take one of the first with it."""
    (tmp_path / "users.csv").write_text("user\n" + "".join(f"u{i}\n" for i in range(10)), encoding="utf-8")
    (tmp_path / "codes.csv").write_text("code\n" + "".join(f"c{i}\n" for i in range(10)), encoding="utf-8")
    data = '[[data]]\nfile = "users.csv"\nmode = "unique"\n\n[[data]]\nfile = "codes.csv"\nmode = "unique"\n'
    text = PROFILE.replace("[[flows]]", data + "\n[[flows]]").replace("/login", "/login/{{ code }}")
    text = text.replace('{{ random_choice("ann") }}', "{{ user }}")
    profile = parse_profile(tomllib.loads(text), str(tmp_path / "p.toml"))
    recorder = Recorder(profile.result_names, profile.step_names)
    clock = Clock()
    runner = FlowRunner(profile, recorder, clock=clock, rng=random.Random(1), call_later=clock.call_later)
    runner.ask = lambda source, count: None  # the test grants
    engine = FakeEngine(list(profile.requests))
    runner.bind(engine)  # type: ignore[arg-type]
    runner.granted(0, 0, 10)  # ten users; the codes' block is late
    for i in range(3):
        runner.submit(3, float(i))  # not sent: no code yet
    assert engine.sent == [] and runner.in_flight == 0
    runner.granted(1, 0, 10)
    runner.submit(3, 3.0)
    (_, _, sent, _) = engine.sent[0]
    assert sent.startswith(b"POST /login/c0 ")
    assert sent.endswith(b'{"user": "u0"}')  # the first user: none was spent by the arrivals not sent
