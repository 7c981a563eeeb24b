"""User journeys on the agent: each arrival starts a flow instance, whose steps go to the engine one after
another, carrying captured values, cookies and test data from one response to the next.

:class:`FlowRunner` sits between the arrival loop and the engine. To the arrival loop it is the engine
(``submit``, ``in_flight``, ``due``, drain and close), and ``max_in_flight`` counts flow instances; to the
engine it is the sink. An arrival's number is a name's index in the recorder: a flow, or a plain request of
the profile (a one-step flow of its own, counted under its one name).

Timing, so that a stalled server still shows in every step's tail (see docs/profiles.md, "User journeys"):

- a step's intended time is the flow's arrival for the first step, and the previous step's completion plus
  the pause between them after that; its response time runs from there, its service time from the write;
- the flow's duration runs from its arrival to the end of its last step, and its active time is the same
  without its pauses; a flow that fails ends at its failed step.

Each instance in flight holds one request number of the engine (:class:`agents.engine.Slots`), reserved
once for ``max_in_flight`` instances, so a response finds its instance by its number; nothing is allocated
per step beyond what its templates render. A failed step (an error, an error status that no check allows, a
failed check ``check:<step>``, a capture that finds nothing ``capture:<step>``, a template that renders into
something unsendable ``template:<step>``) ends its instance, counted failed with the step's category.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from agents.code_flows import CodeSession
from agents.engine import HEAD, READ, Due, Engine, Reply, Slots, wait_drained
from agents.http_request import PRINTABLE, RequestHead
from agents.recorder import Recorder
from loadgen.captures import CookieJar, Extractor, check_failure, compile_capture
from loadgen.code_refs import CodeError, resolve
from loadgen.flows import Check, DataSource, Flow, Pause
from loadgen.profile import Profile, Request
from loadgen.session import StepFailed
from loadgen.templates import RenderContext, Template, compile_template

log = logging.getLogger("loadgen.agent")


class _Step:
    """A request step, compiled: what the runner does per instance, prepared once."""

    __slots__ = (
        "captures",
        "check",
        "flags",
        "head",
        "name",
        "pause",
        "prepared",
        "rec",
        "templates",
    )

    def __init__(self, name: str, rec: int, pause: Pause | None) -> None:
        self.name = name
        self.rec = rec  # the recorder's index of the step's name
        self.pause = pause  # the pause before this step
        self.prepared: object = None  # the engine's wire form when nothing in it varies
        self.head: RequestHead | None = None
        self.templates: tuple[Template, tuple[Template, ...], Template] | None = None
        self.captures: tuple[tuple[str, Extractor], ...] = ()
        self.check: Any = None
        self.flags = 0


class _Flow:
    __slots__ = ("code", "cookies", "data", "name", "names", "rec", "steps", "whole")

    def __init__(self, rec: int, steps: list[_Step], cookies: bool, data: list[_Data], whole: bool) -> None:
        self.rec = rec
        self.steps = steps
        self.cookies = cookies
        self.data = data
        self.whole = whole  # a flow of its own (not a plain request): recorded as a flow at its end
        self.name = ""
        self.code: Callable[[Any], Awaitable[None]] | None = None  # a flow written in Python
        self.names: dict[str, int] = {}  # its step names -> the recorder's indexes


INITIAL_LEASE = 256
"""Rows of a unique test data source an agent asks for before its first arrival."""
MIN_LEASE = 64


class _Data:
    """One ``[[data]]`` source on this agent: rows in order from the first, at random, or (``unique``) the
    blocks the coordinator leased to this agent alone. ``draw`` returns None when a unique source has no row
    left here: the coordinator granted nothing more (the rows ran out) or its next block is not here yet."""

    __slots__ = (
        "asked",
        "blocks",
        "columns",
        "exhausted",
        "index",
        "left",
        "mode",
        "next",
        "rng",
        "rows",
        "used",
    )

    def __init__(self, source: DataSource, index: int, rng: random.Random) -> None:
        self.columns = source.columns
        self.rows = source.rows
        self.mode = source.mode
        self.index = index  # the source's number in the profile (for leases)
        self.rng = rng
        self.next = 0
        self.blocks: deque[tuple[int, int]] = deque()  # leased (start, count), oldest first
        self.left = 0  # rows leased and not yet used
        self.asked = 0  # rows asked for and not yet granted
        self.used = 0  # rows used since the last request
        self.exhausted = False

    def ready(self, ask: Callable[[int, int], None]) -> bool:
        """Whether :meth:`draw` has a row to give (asking for more when a unique source has none here)."""
        if self.mode != "unique" or self.blocks:
            return True
        self.request(ask)
        return False

    def draw(self, ask: Callable[[int, int], None]) -> tuple[str, ...] | None:
        if self.mode == "random":
            return self.rows[self.rng.randrange(len(self.rows))]
        if self.mode == "sequential":
            row = self.rows[self.next]
            self.next = (self.next + 1) % len(self.rows)
            return row
        if not self.blocks:
            self.request(ask)
            return None
        start, count = self.blocks[0]
        row = self.rows[start % len(self.rows)]
        if count > 1:
            self.blocks[0] = (start + 1, count - 1)
        else:
            self.blocks.popleft()
        self.left -= 1
        self.used += 1
        if self.left * 2 < max(self.used, MIN_LEASE):
            self.request(ask)  # ask for the next block while half of what this one lasted is left
        return row

    def request(self, ask: Callable[[int, int], None], count: int = 0) -> None:
        if self.asked or self.exhausted:
            return
        self.asked = count or max(MIN_LEASE, 2 * self.used)
        self.used = 0
        ask(self.index, self.asked)

    def ask_again(self, ask: Callable[[int, int], None]) -> None:
        """Ask once more for the rows asked for and not granted (the question or its answer was lost)."""
        if self.asked and not self.exhausted:
            ask(self.index, self.asked)

    def granted(self, start: int, count: int) -> None:
        self.asked = 0
        if count == 0:
            self.exhausted = True
            return
        self.blocks.append((start, count))
        self.left += count


class _Instance:
    __slots__ = ("active", "arrival", "flow", "jar", "session", "step", "timer", "values")

    def __init__(self) -> None:
        self.flow: _Flow | None = None
        self.step = 0
        self.arrival = 0.0
        self.active = 0.0
        self.values: dict[str, str] = {}
        self.jar: CookieJar | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.session: CodeSession | None = None  # a flow written in Python, while it runs


class FlowRunner:
    """See the module docstring. Made before its engine (which needs it as its sink), then :meth:`bind`."""

    def __init__(
        self,
        profile: Profile,
        recorder: Recorder,
        *,
        clock: Callable[[], float],
        rng: random.Random,
        call_later: Callable[..., asyncio.TimerHandle] | None = None,
    ) -> None:
        self._profile = profile
        self._recorder = recorder
        self._clock = clock
        self._rng = rng
        self._ctx = RenderContext(rng)
        self._call_later = call_later
        self._env = dict(profile.env)
        self._units: list[_Flow | None] = []
        self._engine: Any = None
        self._instances: list[_Instance] = []
        self._free: list[int] = []
        self._base = 0
        self._reply = Reply()
        self._data: list[_Data] = []
        self._tasks: set[asyncio.Task[None]] = set()  # flows written in Python, running
        self._logged: set[tuple[str, str]] = set()  # (flow, category) of user code errors logged once
        self.due = Due()
        self.live = 0
        self._halted = False  # the drain gave up: instances still in flight start no step any more
        self.auth: str | None = None  # the profile's Authorization header, for flows written in Python
        self.ask: Callable[[int, int], None] = _no_coordinator
        """How the runner asks the coordinator for ``count`` rows of unique source number ``source``; the
        answer comes back through :meth:`granted`. Set by the agent before :meth:`bind`."""

    def bind(
        self, engine: Engine, requests: Sequence[Request] | None = None, auth: str | None = None
    ) -> None:
        """Compile the flows for ``engine`` (which must offer :class:`agents.engine.Slots`) and reserve its
        request numbers; ``requests`` are the profile's as the engine was given them (the profile's ``auth``
        added), and ``auth`` that header's value for the steps of flows written in Python. Raises ValueError
        if a step cannot be sent by it."""
        self.auth = auth
        if not all(hasattr(engine, a) for a in ("reserve", "prepare", "put", "reply")):
            raise ValueError("this engine cannot run user journeys ([[flows]])")
        slots: Slots = engine  # type: ignore[assignment]
        self._engine = engine
        self.due = engine.due
        self._reply = slots.reply
        profile = self._profile
        index = {name: i for i, name in enumerate(profile.result_names)}
        given = profile.requests if requests is None else requests
        by_name = {r.name: (i, r) for i, r in enumerate(given)}
        data = self._data = [_Data(d, i, self._rng) for i, d in enumerate(profile.data)]
        units: list[_Flow | None] = []
        for i, r in enumerate(given):
            if r.name in profile.step_names:
                units.append(None)  # a step: never an arrival of its own
                continue
            step = _Step(r.name, i, None)
            # Sent as written, as without flows: the loader never read a plain request as a template.
            self._compile(step, r, i, slots, reads=False, templated=False)
            units.append(_Flow(i, [step], cookies=False, data=[], whole=False))
        units += [None] * len(profile.code_steps)  # steps of flows written in Python: never arrivals
        for flow in profile.flows:
            if flow.function is not None:
                units.append(self._code_flow(flow, index, data))
                continue
            units.append(self._flow(flow, index, by_name, data, slots))
        self._units = units
        for source in data:
            if source.mode == "unique":
                source.request(self.ask, INITIAL_LEASE)
        n = profile.load.max_in_flight
        self._base = slots.reserve(n)
        self._instances = [_Instance() for _ in range(n)]
        self._free = list(range(n - 1, -1, -1))

    def _code_flow(self, flow: Flow, index: dict[str, int], data: list[_Data]) -> _Flow:
        """A flow written in Python: its function, imported here (a ValueError if it cannot be), and every
        test data source (its code may read any column)."""
        assert flow.function is not None
        try:
            code = resolve(flow.function)
        except CodeError as exc:
            raise ValueError(str(exc)) from None
        unit = _Flow(index[flow.name], [], flow.cookies, data, whole=True)
        unit.name = flow.name
        unit.code = code
        unit.names = {s.name: index[f"{flow.name}.{s.name}"] for s in flow.steps}
        return unit

    def _flow(
        self,
        flow: Flow,
        index: dict[str, int],
        requests: dict[str, tuple[int, Request]],
        data: list[_Data],
        slots: Slots,
    ) -> _Flow:
        steps: list[_Step] = []
        pause: Pause | None = None
        last = flow.request_steps[-1]
        for s in flow.steps:
            if s.request is None:
                pause = s.pause
                continue
            i, request = requests[s.request]
            step = _Step(s.name, index[s.request], pause)
            pause = None
            step.captures = tuple((c.var, compile_capture(c)) for c in s.capture)
            step.check = s.check
            # The cookie jar reads every response but the last one's, whose cookies nothing would send.
            reads = s.reads_response or (flow.cookies and s is not last)
            self._compile(step, request, i, slots, reads=reads)
            steps.append(step)
        used = {v for step in steps if step.templates for t in _all(step.templates) for v in t.variables()}
        mine = [d for d in data if used & set(d.columns)]
        return _Flow(index[flow.name], steps, flow.cookies, mine, whole=True)

    def _compile(
        self, step: _Step, request: Request, i: int, slots: Slots, *, reads: bool, templated: bool = True
    ) -> None:
        head = step.head = slots.head_of(request)
        step.flags = (HEAD if head.method.upper() == "HEAD" else 0) | (READ if reads else 0)
        step.prepared = slots.prepared(i)
        if not templated:
            return
        path = compile_template(request.path)
        headers = tuple(compile_template(v) for _, v in head.headers)
        body = compile_template(head.body.decode("utf-8", "surrogateescape"))
        if not (path.static and all(h.static for h in headers) and body.static):
            step.templates = (path, headers, body)

    # --- the arrival loop's side (the Engine interface)

    @property
    def in_flight(self) -> int:
        return self.live

    @property
    def connections(self) -> int:
        return int(self._engine.connections)

    @property
    def opened(self) -> int:
        return int(self._engine.opened)

    @property
    def open_failures(self) -> Mapping[str, int]:
        failures: Mapping[str, int] = self._engine.open_failures
        return failures

    @property
    def peak_streams(self) -> int:
        return int(self._engine.peak_streams)

    def submit(self, req: int, intended: float) -> None:
        flow = self._units[req]
        assert flow is not None
        slot = self._free.pop()
        inst = self._instances[slot]
        inst.flow = flow
        inst.step = 0
        inst.arrival = intended
        inst.active = 0.0
        self.live += 1
        if flow.whole:
            values = self._env.copy() if self._env else {}
            # Every source first: an arrival that is not sent must not spend a unique row of another.
            ready = True
            for source in flow.data:
                ready = source.ready(self.ask) and ready  # each one asks for what it lacks
            if not ready:
                self._recorder.no_data()  # no row of a unique source here: not sent, counted as dropped
                self._free_slot(slot, inst)
                return
            for source in flow.data:
                row = source.draw(self.ask)
                assert row is not None
                values.update(zip(source.columns, row, strict=True))
            inst.values = values
            # A jar only where a later step could send its cookies back (a flow in Python: any call).
            inst.jar = CookieJar() if flow.cookies and (len(flow.steps) > 1 or flow.code) else None
        if flow.code is not None:
            self._start_code(slot, inst, flow, intended)
            return
        self._send(slot, inst, flow.steps[0], intended)

    # --- flows written in Python (agents.code_flows)

    @property
    def engine(self) -> Any:
        return self._engine

    @property
    def recorder(self) -> Recorder:
        return self._recorder

    def _start_code(self, slot: int, inst: _Instance, flow: _Flow, intended: float) -> None:
        session = inst.session = CodeSession(
            self, slot, flow.name, flow.names, inst.values, inst.jar, intended, self._clock
        )
        task = asyncio.get_running_loop().create_task(self._run_code(slot, inst, flow, session))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_code(self, slot: int, inst: _Instance, flow: _Flow, session: CodeSession) -> None:
        assert flow.code is not None
        category: str | None = None
        try:
            await flow.code(session)
        except StepFailed as exc:
            category = exc.category
        except Exception as exc:  # the user's code: counted, logged once per kind, never the agent's end
            category = f"python:{type(exc).__name__}"
            if (flow.name, category) not in self._logged:
                self._logged.add((flow.name, category))
                log.warning(
                    "flow %s raised %s: %s (counted as %s; logged once)",
                    flow.name,
                    type(exc).__name__,
                    exc,
                    category,
                )
        end = self._clock()
        # A step it gave up on is still the engine's: the request number is not free before its outcome.
        await session.outstanding()
        inst.active = session.active
        inst.session = None
        self._end(slot, inst, end, category)

    def send_code_step(self, slot: int, prepared: object, flags: int, intended: float) -> None:
        """A step of a flow written in Python goes out on its instance's request number."""
        if self._halted:
            return  # never answered: the instance stays in flight until the runner closes
        engine = self._engine
        engine.put(self._base + slot, prepared, flags)
        engine.submit(self._base + slot, intended)

    def _send(self, slot: int, inst: _Instance, step: _Step, intended: float) -> None:
        if self._halted:
            return  # the instance stays in flight, as the agent's last report counted it
        prepared = step.prepared
        jar = inst.jar
        cookie = None if jar is None else jar.header()
        if step.templates is not None or cookie is not None:
            try:
                prepared = self._render(step, inst, cookie)
            except (KeyError, ValueError):
                now = self._clock()
                self._recorder.step_scheduled(step.rec)
                self._recorder.step_done(step.rec, intended, 0.0, now, f"template:{step.name}", False)
                self._end(slot, inst, now, f"template:{step.name}")
                return
        engine = self._engine
        engine.put(self._base + slot, prepared, step.flags)
        if inst.flow is not None and inst.flow.whole:
            self._recorder.step_scheduled(step.rec)
        engine.submit(self._base + slot, intended)

    def _render(self, step: _Step, inst: _Instance, cookie: str | None) -> object:
        """The step's request for this instance: templates filled, its cookies added."""
        head = step.head
        assert head is not None
        if step.templates is None:  # nothing to fill: only cookies to send
            headers = list(head.headers)
            target, body = head.target, head.body
        else:
            path, header_templates, body_template = step.templates
            values, ctx = inst.values, self._ctx
            target = _path(self._engine.prefix + _slash(path.render(values, ctx)))
            headers = [
                (name, _field(t.render(values, ctx)))
                for (name, _), t in zip(head.headers, header_templates, strict=True)
            ]
            body = body_template.render(values, ctx).encode("utf-8", "surrogateescape")
            if body != head.body:
                headers = [(n, str(len(body)) if n == "Content-Length" else v) for n, v in headers]
        if cookie is not None:
            headers = [h for h in headers if h[0].lower() != "cookie"] + [("Cookie", cookie)]
        return self._engine.prepare(RequestHead(head.method, target, tuple(headers), body))

    def granted(self, source: int, start: int, count: int) -> None:
        """The coordinator's answer to :attr:`ask` (``count`` 0: no rows left)."""
        if 0 <= source < len(self._data) and self._data[source].mode == "unique":
            self._data[source].granted(start, count)

    def ask_again(self) -> None:
        """A new coordinator took over the run: what was asked of the one before and not granted is asked
        again (a question it never read, or an answer it never sent, would leave that source dry for the rest
        of the run). A grant that does come twice only leaves rows unused: every grant is a new block."""
        for source in self._data:
            if source.mode == "unique":
                source.ask_again(self.ask)

    # --- the engine's side (the Sink)

    def response(self, req: int, intended: float, sent: float, done: float, status: int) -> None:
        slot = req - self._base
        inst = self._instances[slot]
        session = inst.session
        if session is not None and session.waiter is not None:  # a step of a flow written in Python
            waiter, session.waiter = session.waiter, None
            reply = self._reply
            waiter.set_result((status, reply.headers, reply.body, sent, done, None))
            return
        flow = inst.flow
        assert flow is not None
        step = flow.steps[inst.step]
        recorder = self._recorder
        if not flow.whole:  # a plain request: as the recorder counts it without flows
            recorder.response(step.rec, intended, sent, done, status)
            self._free_slot(slot, inst)
            return
        reply = self._reply
        headers, body = (reply.headers, reply.body) if step.flags & READ else ((), b"")
        if inst.jar is not None:
            inst.jar.update(headers)
        category: str | None = None
        why = check_failure(step.check, status, body)
        if why is not None:
            category = (
                f"http_{status}"
                if why.startswith("status") and not step.check.status
                else f"check:{step.name}"
            )
        else:
            for var, extract in step.captures:
                value = extract(headers, body)
                if value is None:
                    category = f"capture:{step.name}"
                    break
                inst.values[var] = value
        recorder.step_done(step.rec, intended, sent, done, category, True)
        inst.active += done - intended
        if category is not None:
            self._end(slot, inst, done, category)
            return
        inst.step += 1
        if inst.step == len(flow.steps):
            self._end(slot, inst, done, None)
            return
        nxt = flow.steps[inst.step]
        if nxt.pause is None:
            self._send(slot, inst, nxt, done)
            return
        wait = nxt.pause.draw(self._rng)
        if self._call_later is None:
            self._call_later = asyncio.get_running_loop().call_later
        inst.timer = self._call_later(
            max(0.0, done + wait - self._clock()), self._resume, slot, inst, done + wait
        )

    def _resume(self, slot: int, inst: _Instance, intended: float) -> None:
        early = intended - self._clock()
        if early > 0:  # a timer may fire up to a tick early: a step never leaves before its time
            assert self._call_later is not None
            inst.timer = self._call_later(early, self._resume, slot, inst, intended)
            return
        inst.timer = None
        flow = inst.flow
        assert flow is not None
        self._send(slot, inst, flow.steps[inst.step], intended)

    def error(self, req: int, intended: float, sent: float, done: float, category: str) -> None:
        slot = req - self._base
        inst = self._instances[slot]
        session = inst.session
        if session is not None and session.waiter is not None:
            waiter, session.waiter = session.waiter, None
            waiter.set_result((0, [], b"", sent, done, category))
            return
        flow = inst.flow
        assert flow is not None
        step = flow.steps[inst.step]
        if not flow.whole:
            self._recorder.error(step.rec, intended, sent, done, category)
            self._free_slot(slot, inst)
            return
        self._recorder.step_done(step.rec, intended, sent, done, category, False)
        inst.active += done - intended
        self._end(slot, inst, done, category)

    def _end(self, slot: int, inst: _Instance, done: float, category: str | None) -> None:
        flow = inst.flow
        assert flow is not None
        self._recorder.flow_done(flow.rec, inst.arrival, done, inst.active, category)
        self._free_slot(slot, inst)

    def _free_slot(self, slot: int, inst: _Instance) -> None:
        inst.flow = None
        inst.values = {}
        inst.jar = None
        self.live -= 1
        self._free.append(slot)

    # --- the rest of the Engine interface

    async def start(self) -> None:
        await self._engine.start()

    async def drain(self, deadline: float) -> None:
        """Wait until no instance is in flight (steps and pauses), or the clock reaches ``deadline``: then the
        agent's last report counts those left as in flight, and none of them starts another step (load that
        no result would show)."""
        await wait_drained(lambda: self.live, self._clock, deadline)
        if self.live:
            self._halted = True
            self._cancel_pauses()

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()  # flows written in Python still running: in flight at the end
        await asyncio.gather(*tasks, return_exceptions=True)
        self._cancel_pauses()
        await self._engine.aclose()

    def _cancel_pauses(self) -> None:
        for inst in self._instances:
            if inst.timer is not None:
                inst.timer.cancel()
                inst.timer = None


def _no_coordinator(source: int, count: int) -> None:
    raise RuntimeError("a unique test data source needs the coordinator: set FlowRunner.ask")


def direct_flows(profile: Profile) -> dict[int, int] | None:
    """When every flow of ``profile`` is one request step with nothing to fill, capture, check or carry
    over, its arrivals can go to the engine as plain requests, without a runner: the flow's recorder index
    mapped to its step's (see :class:`agents.recorder.Recorder`'s ``alias``). None when one is not."""
    index = {name: i for i, name in enumerate(profile.result_names)}
    requests = {r.name: r for r in profile.requests}
    alias = {}
    for flow in profile.flows:
        if len(flow.steps) != 1:
            return None
        (step,) = flow.steps
        if step.request is None or step.capture or step.check != Check():
            return None
        request = requests[step.request]
        texts = [request.path, *(v for _, v in request.headers), request.body.decode("utf-8", "replace")]
        if not all(compile_template(t).static for t in texts):
            return None
        alias[index[flow.name]] = index[step.request]
    return alias


def _all(templates: tuple[Template, tuple[Template, ...], Template]) -> Sequence[Template]:
    path, headers, body = templates
    return (path, *headers, body)


def _field(value: str) -> str:
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValueError("a header value rendered with a line break or NUL")
    return value


def _path(target: str) -> str:
    """A rendered request target, escaped as :func:`agents.http_request.request_head` escapes a path: a
    value put in it cannot break the request line."""
    return quote(target, safe=PRINTABLE)


def _slash(path: str) -> str:
    return path if path.startswith("/") else "/" + path
