"""User journeys as values: a :class:`Flow` is ordered steps (requests and pauses) that carry values from
one response to the next; a :class:`DataSource` is rows of test data the flows draw from.

Each arrival of the open model starts one flow instance (chosen by weight, with the profile's plain
``[[requests]]``, which are one-step flows of their own). A request step's request is an ordinary
:class:`~loadgen.profile.Request` of the profile, named ``"<flow>.<step>"``, whose path, header values and
body may hold ``{{ ... }}`` templates (:mod:`loadgen.templates`); the step adds what to capture from the
response into the instance's variables and what to check. The TOML form and its validation are in
:mod:`loadgen.flow_file`; the agent's side is :mod:`agents.flow_runner`.

Every value here travels to agents as plain data (:func:`flows_to_wire`): nothing executable.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CAPTURE_SOURCES = ("json", "header", "regex", "cookie")
PAUSE_KINDS = ("fixed", "uniform", "exponential")
DATA_MODES = ("sequential", "random", "unique")
ON_EXHAUSTED = ("wrap", "stop", "drop")
MAX_DATA_BYTES = 8 * 1024 * 1024
"""The most test data (all cells of all sources, as UTF-8) a profile may carry: it travels to every agent in
the start message, whose limit is 16 MiB."""


@dataclass(frozen=True)
class Capture:
    """Put what ``expr`` finds in the response into the variable ``var``: a JSON path (``$.items[0].id``), a
    response header's value, a regex's first group (or whole match) on the body, or a cookie's value."""

    var: str
    source: str  # one of CAPTURE_SOURCES
    expr: str

    def to_doc(self) -> str:
        return self.expr if self.source == "json" else f"{self.source}:{self.expr}"


@dataclass(frozen=True)
class Check:
    """What a response must be for its step to pass. ``status`` empty: any status below 400."""

    status: tuple[int, ...] = ()
    contains: str | None = None
    json: tuple[tuple[str, Any], ...] = ()  # (path, expected value)

    @property
    def reads_body(self) -> bool:
        return self.contains is not None or bool(self.json)

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        if self.status:
            doc["status"] = list(self.status)
        if self.contains is not None:
            doc["contains"] = self.contains
        if self.json:
            doc["json"] = dict(self.json)
        return doc


@dataclass(frozen=True)
class Pause:
    """Think time: ``low`` seconds (fixed), uniform between ``low`` and ``high``, or exponential with mean
    ``low`` (capped at ten times the mean, so one draw cannot stall a flow for the rest of a run)."""

    kind: str  # one of PAUSE_KINDS
    low: float
    high: float

    def draw(self, rng: random.Random) -> float:
        if self.kind == "fixed":
            return self.low
        if self.kind == "uniform":
            return rng.uniform(self.low, self.high)
        return min(-self.low * math.log(1.0 - rng.random()), 10.0 * self.low)

    def to_doc(self) -> str:
        if self.kind == "fixed":
            return f"{self.low:g}s"
        if self.kind == "uniform":
            return f"{self.low:g}s..{self.high:g}s"
        return f"exp({self.low:g}s)"


@dataclass(frozen=True)
class Step:
    """A request step (``request`` names the profile's request ``"<flow>.<step>"``) or a pause step."""

    name: str
    request: str | None = None
    pause: Pause | None = None
    capture: tuple[Capture, ...] = ()
    check: Check = Check()

    @property
    def reads_response(self) -> bool:
        """Whether the engine must hand over the response's headers and body (a capture or a check needs
        them; a cookie jar does too, see :attr:`Flow.reads`)."""
        return bool(self.capture) or self.check.reads_body


@dataclass(frozen=True)
class Flow:
    """A journey; ``cookies``: each instance keeps its own cookie jar (Set-Cookie honoured, sent back)."""

    name: str
    weight: float
    steps: tuple[Step, ...]
    cookies: bool = True
    function: str | None = None  # "package.module:function": a flow written in Python (steps: its names)

    @property
    def request_steps(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.request is not None)

    @property
    def step_results(self) -> tuple[str, ...]:
        """The names its steps count under: ``<flow>.<step>``."""
        return tuple(f"{self.name}.{s.name}" for s in self.steps if s.request is not None or self.function)

    def to_doc(self, requests: Mapping[str, Any]) -> dict[str, Any]:
        """This flow as a ``[[flows]]`` table; ``requests`` are the profile's requests by name."""
        if self.function is not None:
            doc = {"name": self.name, "weight": self.weight, "cookies": self.cookies}
            return doc | {"function": self.function, "steps": [s.name for s in self.steps]}
        steps: list[dict[str, Any]] = []
        for s in self.steps:
            if s.request is None:
                assert s.pause is not None
                steps.append({"name": s.name, "pause": s.pause.to_doc()})
                continue
            doc = dict(requests[s.request].to_doc())
            del doc["weight"]
            doc["name"] = s.name
            if s.capture:
                doc["capture"] = {c.var: c.to_doc() for c in s.capture}
            if check := s.check.to_doc():
                doc["check"] = check
            steps.append(doc)
        return {"name": self.name, "weight": self.weight, "cookies": self.cookies, "steps": steps}


@dataclass(frozen=True)
class DataSource:
    """Rows of test data (a CSV file read on the coordinator); a flow instance that uses any of the
    ``columns`` draws one row. ``mode``: each agent walks the rows in order (``sequential``), draws at random
    (``random``), or uses each row once across the whole fleet (``unique``: the coordinator leases rows to
    agents, see :mod:`coordinator.data_leases`). ``on_exhausted``, for ``unique``: after the last row, start
    again (``wrap``), stop the run (``stop``) or count each arrival that finds no row as dropped, never sent
    (``drop``)."""

    file: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    mode: str = "sequential"  # one of DATA_MODES
    on_exhausted: str = "wrap"  # one of ON_EXHAUSTED

    def to_doc(self) -> dict[str, Any]:
        return {"file": self.file, "mode": self.mode, "on_exhausted": self.on_exhausted}


def flows_to_wire(flows: tuple[Flow, ...]) -> list[dict[str, Any]]:
    return [
        {
            "name": f.name,
            "weight": f.weight,
            "cookies": f.cookies,
            "function": f.function,
            "steps": [
                {
                    "name": s.name,
                    "request": s.request,
                    "pause": None if s.pause is None else [s.pause.kind, s.pause.low, s.pause.high],
                    "capture": [[c.var, c.source, c.expr] for c in s.capture],
                    "check": [list(s.check.status), s.check.contains, [list(j) for j in s.check.json]],
                }
                for s in f.steps
            ],
        }
        for f in flows
    ]


def flows_from_wire(items: list[dict[str, Any]]) -> tuple[Flow, ...]:
    """Raises KeyError/TypeError/ValueError on bad input (the wire layer maps them)."""
    flows = []
    for f in items:
        steps = []
        for s in f["steps"]:
            pause = None
            if s["pause"] is not None:
                kind, low, high = s["pause"]
                if kind not in PAUSE_KINDS:
                    raise ValueError(f"unknown pause kind {kind!r}")
                pause = Pause(str(kind), float(low), float(high))
            captures = []
            for var, source, expr in s["capture"]:
                if source not in CAPTURE_SOURCES:
                    raise ValueError(f"unknown capture source {source!r}")
                captures.append(Capture(str(var), str(source), str(expr)))
            status, contains, json_checks = s["check"]
            check = Check(
                tuple(int(x) for x in status),
                None if contains is None else str(contains),
                tuple((str(p), v) for p, v in json_checks),
            )
            request = None if s["request"] is None else str(s["request"])
            steps.append(Step(str(s["name"]), request, pause, tuple(captures), check))
        function = None if f.get("function") is None else str(f["function"])
        flows.append(Flow(str(f["name"]), float(f["weight"]), tuple(steps), bool(f["cookies"]), function))
    return tuple(flows)


def data_to_wire(data: tuple[DataSource, ...]) -> list[dict[str, Any]]:
    return [
        {
            "file": d.file,
            "columns": list(d.columns),
            "rows": [list(r) for r in d.rows],
            "mode": d.mode,
            "on_exhausted": d.on_exhausted,
        }
        for d in data
    ]


def data_from_wire(items: list[dict[str, Any]]) -> tuple[DataSource, ...]:
    out = []
    for d in items:
        if d["mode"] not in DATA_MODES or d["on_exhausted"] not in ON_EXHAUSTED:
            raise ValueError("unknown data mode")
        columns = tuple(str(c) for c in d["columns"])
        rows = tuple(tuple(str(v) for v in r) for r in d["rows"])
        if any(len(r) != len(columns) for r in rows):
            raise ValueError("a data row does not match its columns")
        out.append(DataSource(str(d["file"]), columns, rows, str(d["mode"]), str(d["on_exhausted"])))
    return tuple(out)
