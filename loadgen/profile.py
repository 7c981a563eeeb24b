"""The profile as an immutable value: what to send, where, and at which rate over time.

Users build them in Python (``Profile(...)``, ``Request(...)``, the shapes of :mod:`loadgen.loads`) or read
them from TOML (:mod:`loadgen.profile_file`); both go through the same validation there. This module holds
the values, their TOML document (:meth:`Profile.to_doc`) and their wire form (plain msgpack-able dicts;
nothing executable ever travels: a profile's actions stay in the caller's process).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loadgen.durations import parse_duration
from loadgen.flows import DataSource, Flow, data_from_wire, data_to_wire, flows_from_wire, flows_to_wire

if TYPE_CHECKING:
    from loadgen.actions import Action, OnError
    from loadgen.endpoint import Auth, Tls

ARRIVAL_KINDS = ("poisson", "constant")
HTTP_VERSIONS = ("1.1", "2", "auto")
"""``[load] http_version``: HTTP/1.1, HTTP/2 (by ALPN over https, h2c with prior knowledge over http), or
what the server picks by ALPN (over http: 1.1)."""


@dataclass(frozen=True)
class Stage:
    """Ramp linearly from the previous stage's rate to ``rate`` (requests/s) over ``duration`` seconds.

    A zero-length stage is an instant jump.
    """

    duration: float
    rate: float


Duration = str | float
"""A length of time: ``"30s"``, ``"1m30s"``, ``"250ms"`` (:mod:`loadgen.durations`) or seconds."""

CODE = "<code>"
"""The ``source`` of a profile built in Python."""


@dataclass(frozen=True, init=False)
class Request:
    """One request of the mix: ``Request("/search?q=x", name="search", weight=3)``.

    ``headers`` is a mapping or ``(name, value)`` pairs, ``body`` text (sent as UTF-8) or bytes, ``name``
    defaults to ``"METHOD path"``. The values are checked when a :class:`Profile` is built from them, with
    the rules and messages of a TOML profile's ``[[requests]]``.
    """

    name: str
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    weight: float
    cost: float  # price of one request (e.g. a paid API's unit price), for cost totals and budgets

    def __init__(
        self,
        path: str = "/",
        *,
        name: str | None = None,
        method: str = "GET",
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        body: str | bytes = b"",
        weight: float = 1.0,
        cost: float = 0.0,
    ) -> None:
        if headers is None:
            pairs: tuple[tuple[str, str], ...] = ()
        elif type(headers) is tuple:
            pairs = headers
        else:
            items = headers.items() if isinstance(headers, Mapping) else headers
            pairs = tuple((k, v) for k, v in items)
        put = object.__setattr__
        put(self, "name", f"{method} {path}" if name is None else name)
        put(self, "method", method)
        put(self, "path", path)
        put(self, "headers", pairs)
        put(self, "body", _encoded(body))
        put(self, "weight", weight)
        put(self, "cost", cost)

    def to_doc(self) -> dict[str, Any]:
        """This request as a ``[[requests]]`` table (the body as text when it is UTF-8, else bytes)."""
        return {
            "name": self.name,
            "method": self.method,
            "path": self.path,
            "weight": self.weight,
            "cost": self.cost,
            "headers": dict(self.headers),
            "body": _decoded(self.body),
        }


RequestSpec = Request
"""The former name of :class:`Request`."""


@dataclass(frozen=True, init=False)
class Load:
    """How much to send and how: the rate over time (``stages``) and the limits of each agent.

    Built by the shape functions of :mod:`loadgen.loads` (``spike(...)``, ``ramp(...)``, ``stages(...)``),
    which check it at once, or directly; a :class:`Profile` checks it with the rules of a TOML ``[load]``.
    ``stages`` holds :class:`Stage` values or ``(duration, rate)`` pairs.
    """

    arrival: str
    start_rate: float
    timeout: float
    max_in_flight: int
    stages: tuple[Stage, ...]
    max_connections: int | None  # per agent; None: as many as the requests in flight need
    http_version: str  # "1.1", "2" or "auto" (see HTTP_VERSIONS)
    max_streams_per_connection: int | None  # HTTP/2; None: what the server's SETTINGS allow

    def __init__(
        self,
        *,
        arrival: str = "poisson",
        start_rate: float = 0.0,
        timeout: Duration = 10.0,
        max_in_flight: int = 10_000,
        stages: Iterable[Stage | tuple[Duration, float]] = (),
        max_connections: int | None = None,
        http_version: str = "1.1",
        max_streams_per_connection: int | None = None,
    ) -> None:
        put = object.__setattr__
        put(self, "arrival", arrival)
        put(self, "start_rate", start_rate)
        put(self, "timeout", _seconds(timeout))
        put(self, "max_in_flight", max_in_flight)
        put(self, "stages", tuple(_stage(s) for s in stages))
        put(self, "max_connections", max_connections)
        put(self, "http_version", http_version)
        put(self, "max_streams_per_connection", max_streams_per_connection)

    @property
    def duration(self) -> float:
        return sum(s.duration for s in self.stages)

    @property
    def connection_limit(self) -> int:
        """The most connections one agent opens: ``max_connections``, or one per request in flight."""
        return self.max_connections or self.max_in_flight

    def to_doc(self) -> dict[str, Any]:
        """This load as a ``[load]`` table with its stages."""
        doc: dict[str, Any] = {
            "arrival": self.arrival,
            "start_rate": self.start_rate,
            "timeout": self.timeout,
            "max_in_flight": self.max_in_flight,
        }
        if self.max_connections is not None:
            doc["max_connections"] = self.max_connections
        if self.http_version != "1.1":
            doc["http_version"] = self.http_version
        if self.max_streams_per_connection is not None:
            doc["max_streams_per_connection"] = self.max_streams_per_connection
        doc["stages"] = [
            {"duration": s.duration, "rate": s.rate} if isinstance(s, Stage) else s for s in self.stages
        ]
        return doc


LoadSpec = Load
"""The former name of :class:`Load`."""


def _encoded(body: object) -> Any:
    """Text as UTF-8; bytes, and text that is not Unicode (for the profile to refuse), as given."""
    if isinstance(body, str):
        try:
            return body.encode("utf-8")
        except UnicodeEncodeError:
            return body
    return body


def _decoded(body: object) -> object:
    """A body as TOML text when it is UTF-8; else as it is (bytes: TOML cannot hold them, to_toml says so)."""
    if isinstance(body, bytes):
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            return body
    return body


def _seconds(value: object) -> Any:
    """``value`` in seconds when it is a duration; anything else as it is, for the profile to refuse."""
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError:
            return value
    return value


def _stage(item: object) -> Any:
    if isinstance(item, Stage):
        return item
    if isinstance(item, tuple | list) and len(item) == 2:
        return Stage(_seconds(item[0]), item[1])
    return item  # refused by the profile: "expected a table like ..."


@dataclass(frozen=True, init=False)
class Profile:
    """A whole load test: ``Profile(name=..., target=..., load=spike(...), requests=[Request("/")])``.

    Building one checks every field with the rules, and the messages, of a TOML profile file (see
    :mod:`loadgen.profile_file`), and raises :class:`~loadgen.errors.ProfileError` naming the field:
    ``profile 'checkout' (built in code): requests[0].path: must start with '/', got 'api'``. Lists are
    stored as tuples; ``abort_grace`` is a :data:`Duration`.

    ``actions`` (see :meth:`at`) are functions to call during the run, in the caller's process: they never
    travel to agents, never go into :meth:`to_doc` or TOML, and do not take part in equality.
    """

    name: str
    target: str
    load: Load
    requests: tuple[Request, ...]
    thresholds: tuple[str, ...] = ()
    source: str = field(default=CODE, compare=False)
    abort_on_fail: bool = False  # stop the run early once a threshold is already lost
    abort_grace: float = 0.0  # seconds into the run before thresholds may abort it
    budget: float | None = None  # stop the run when the cost of completed requests exceeds this
    actions: tuple[Action, ...] = field(default=(), compare=False)
    flows: tuple[Flow, ...] = ()  # user journeys; their steps' requests are in ``requests`` too
    data: tuple[DataSource, ...] = ()  # test data the flows draw from
    env: tuple[tuple[str, str], ...] = field(default=(), compare=False, repr=False)
    """The ``env.NAME`` variables the templates read, with the values the coordinator's environment gave
    them when the profile was loaded; they travel to agents, never into results or reports."""
    tls: Tls | None = None  # the [tls] table (None: the defaults); see loadgen.endpoint
    resolve: tuple[tuple[str, str], ...] = ()  # host:port -> host:port, as curl's --resolve
    auth: Auth | None = None  # an Authorization header for every request

    def __init__(
        self,
        *,
        name: str = "profile",
        target: str,
        load: Load,
        requests: Iterable[Request],
        thresholds: Iterable[str] = (),
        abort_on_fail: bool = False,
        abort_grace: Duration = "0s",
        budget: float | None = None,
        source: str = CODE,
        actions: Iterable[Action] = (),
        flows: Iterable[Mapping[str, Any] | Flow] = (),
        data: Iterable[Mapping[str, Any] | DataSource] = (),
        env: Iterable[tuple[str, str]] = (),
        tls: Tls | None = None,
        resolve: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        auth: Auth | None = None,
    ) -> None:
        from loadgen.profile_file import parse_profile  # it imports this module

        doc: dict[str, Any] = {
            "name": name,
            "target": target,
            "thresholds": _listed(thresholds),
            "abort_on_fail": abort_on_fail,
            "abort_grace": abort_grace,
        }
        if budget is not None:
            doc["budget"] = budget
        doc["load"] = load.to_doc() if isinstance(load, Load) else load
        flow_items, data_items = _listed(flows), _listed(data)
        given = _listed(requests)
        if isinstance(flow_items, list) and isinstance(given, list):
            # Flows as values (a copy of a profile, dataclasses.replace): back to their documents, and
            # their steps' requests out of the plain requests.
            by_name = {r.name: r for r in given if isinstance(r, Request)}
            steps = {s for f in flow_items if isinstance(f, Flow) for s in f.step_results}
            flow_items = [f.to_doc(by_name) if isinstance(f, Flow) else f for f in flow_items]
            given = [r for r in given if not (isinstance(r, Request) and r.name in steps)]
        if given or not flow_items:
            doc["requests"] = _request_docs(given)
        if flow_items:
            doc["flows"] = flow_items
        if data_items:
            doc["data"] = data_items
        doc |= {k: v for k, v in (("tls", tls), ("auth", auth)) if v is not None}
        if resolve:  # a mapping, or its pairs (as dataclasses.replace passes them)
            doc["resolve"] = resolve if isinstance(resolve, Mapping) else dict(resolve)
        valid = parse_profile(doc, _label(name, source))
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, getattr(valid, f.name))
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "actions", tuple(actions))

    @classmethod
    def _valid(
        cls,
        name: str,
        target: str,
        load: Load,
        requests: tuple[Request, ...],
        thresholds: tuple[str, ...] = (),
        source: str = CODE,
        abort_on_fail: bool = False,
        abort_grace: float = 0.0,
        budget: float | None = None,
        actions: tuple[Action, ...] = (),
        flows: tuple[Flow, ...] = (),
        data: tuple[DataSource, ...] = (),
        env: tuple[tuple[str, str], ...] = (),
        tls: Tls | None = None,
        resolve: tuple[tuple[str, str], ...] = (),
        auth: Auth | None = None,
    ) -> Profile:
        """A profile from fields already validated (by the loader) or checked (by the wire): no checks."""
        self = object.__new__(cls)
        put = object.__setattr__
        put(self, "name", name)
        put(self, "target", target)
        put(self, "load", load)
        put(self, "requests", requests)
        put(self, "thresholds", thresholds)
        put(self, "source", source)
        put(self, "abort_on_fail", abort_on_fail)
        put(self, "abort_grace", abort_grace)
        put(self, "budget", budget)
        put(self, "actions", actions)
        put(self, "flows", flows)
        put(self, "data", data)
        put(self, "env", env)
        put(self, "tls", tls)
        put(self, "resolve", resolve)
        put(self, "auth", auth)
        return self

    def _with(self, **changes: Any) -> Profile:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return Profile._valid(**(values | changes))

    def with_target(self, target: str) -> Profile:
        """This profile aimed at ``target``, checked as a target override is. Raises ProfileError."""
        from loadgen.profile_file import check_target  # it imports this module

        return self._with(target=check_target(target, _label(self.name, self.source)))

    def at(
        self,
        t: Duration,
        fn: Callable[[], Any],
        *,
        name: str | None = None,
        on_error: OnError = "continue",
    ) -> Profile:
        """A new profile that also calls ``fn`` at ``t`` into the run (``"1m30s"`` or seconds).

        ``fn`` takes no arguments; a coroutine function is awaited. See :mod:`loadgen.actions` for how it
        runs and is recorded. Raises ValueError for a moment outside the load, TypeError if ``fn`` is not
        callable.
        """
        from loadgen.actions import Action, check_within  # the agents never need it

        action = Action.make(t, fn, name=name, on_error=on_error)
        check_within([action], self.load.duration)
        return self._with(actions=(*self.actions, action))

    def to_doc(self) -> dict[str, Any]:
        """The TOML document of this profile (as :func:`tomllib.loads` would give it) without its actions.

        A body that is not UTF-8 stays bytes: TOML cannot hold it.
        """
        doc: dict[str, Any] = {
            "name": self.name,
            "target": self.target,
            "thresholds": list(self.thresholds),
            "abort_on_fail": self.abort_on_fail,
            "abort_grace": self.abort_grace,
        }
        if self.budget is not None:
            doc["budget"] = self.budget
        doc["load"] = self.load.to_doc()
        steps = self.step_names
        plain = [r.to_doc() for r in self.requests if r.name not in steps]
        if plain or not self.flows:
            doc["requests"] = plain
        if self.flows:
            by_name = {r.name: r for r in self.requests}
            doc["flows"] = [f.to_doc(by_name) for f in self.flows]
        if self.data:
            doc["data"] = [d.to_doc() for d in self.data]
        doc |= self._endpoint_doc()
        return doc

    def _endpoint_doc(self) -> dict[str, Any]:
        """``tls``, ``resolve`` and ``auth`` as written (``auth`` with its references, not their values)."""
        doc: dict[str, Any] = {}
        if self.resolve:
            doc["resolve"] = dict(self.resolve)
        if self.auth is not None:
            doc["auth"] = self.auth.to_doc()
        if self.tls is not None and (tls := self.tls.to_doc()):
            doc["tls"] = tls
        return doc

    @property
    def step_names(self) -> frozenset[str]:
        """The names of the steps of flows (``<flow>.<step>``): requests of the profile, and the steps of
        flows written in Python."""
        return frozenset(n for f in self.flows for n in f.step_results)

    @property
    def code_steps(self) -> list[str]:
        """The step names of flows written in Python (which have no request of the profile)."""
        return [n for f in self.flows if f.function is not None for n in f.step_results]

    @property
    def code_refs(self) -> list[str]:
        """The functions of flows written in Python (``package.module:function``), each once."""
        return list(dict.fromkeys(f.function for f in self.flows if f.function is not None))

    @property
    def result_names(self) -> list[str]:
        """Every name the results count under: the requests (steps included), the steps of flows written in
        Python, then the flows."""
        return [r.name for r in self.requests] + self.code_steps + [f.name for f in self.flows]

    def to_toml(self) -> str:
        """This profile as a TOML file that :func:`~loadgen.profile_file.load_profile` reads back equal.

        Raises ValueError for what TOML cannot hold (a body that is not UTF-8 text).
        """
        from loadgen.profile_text import write_toml

        return write_toml(self.to_doc())

    def to_wire(self, secrets: bool = True) -> dict[str, Any]:
        """The wire form. Without ``secrets`` (a checkpoint on disk), the resolved ``auth`` header and the
        client key are left out: building the profile again (``dataclasses.replace``) reads them again."""
        return {
            "name": self.name,
            "target": self.target,
            "thresholds": list(self.thresholds),
            "load": {
                "arrival": self.load.arrival,
                "start_rate": self.load.start_rate,
                "timeout": self.load.timeout,
                "max_in_flight": self.load.max_in_flight,
                "max_connections": self.load.max_connections,
                "http_version": self.load.http_version,
                "max_streams_per_connection": self.load.max_streams_per_connection,
                "stages": [[s.duration, s.rate] for s in self.load.stages],
            },
            "requests": [
                {
                    "name": r.name,
                    "method": r.method,
                    "path": r.path,
                    "headers": [list(h) for h in r.headers],
                    "body": r.body,
                    "weight": r.weight,
                    "cost": r.cost,
                }
                for r in self.requests
            ],
            "abort_on_fail": self.abort_on_fail,
            "abort_grace": self.abort_grace,
            "budget": self.budget,
            "flows": flows_to_wire(self.flows),
            "data": data_to_wire(self.data),
            "env": [[k, v if secrets else ""] for k, v in self.env],
            "tls": None if self.tls is None else self.tls.to_wire(secrets),
            "resolve": [list(pair) for pair in self.resolve],
            "auth": None if self.auth is None else self.auth.to_wire(secrets),
        }

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> Profile:
        """Rebuild a profile from :meth:`to_wire`. Raises KeyError/TypeError/ValueError on bad input;
        the wire layer maps those to :class:`~loadgen.errors.WireError`."""
        load = d["load"]
        stages = tuple(Stage(float(dur), float(rate)) for dur, rate in load["stages"])
        if load["arrival"] not in ARRIVAL_KINDS:
            raise ValueError(f"unknown arrival kind {load['arrival']!r}")
        spec = Load(
            arrival=str(load["arrival"]),
            start_rate=float(load["start_rate"]),
            timeout=float(load["timeout"]),
            max_in_flight=int(load["max_in_flight"]),
            stages=stages,
            max_connections=None if load.get("max_connections") is None else int(load["max_connections"]),
            http_version=str(load["http_version"]),
            max_streams_per_connection=None
            if load["max_streams_per_connection"] is None
            else int(load["max_streams_per_connection"]),
        )
        if spec.http_version not in HTTP_VERSIONS:
            raise ValueError(f"unknown http_version {spec.http_version!r}")
        if spec.max_streams_per_connection is not None and spec.max_streams_per_connection < 1:
            raise ValueError(f"max_streams_per_connection {spec.max_streams_per_connection} below 1")
        if spec.max_connections is not None and not 1 <= spec.max_connections <= spec.max_in_flight:
            raise ValueError(f"max_connections {spec.max_connections} outside 1..max_in_flight")
        requests = tuple(
            Request(
                name=str(r["name"]),
                method=str(r["method"]),
                path=str(r["path"]),
                headers=tuple((str(k), str(v)) for k, v in r["headers"]),
                body=bytes(r["body"]),
                weight=float(r["weight"]),
                cost=float(r.get("cost", 0.0)),
            )
            for r in d["requests"]
        )
        flows = flows_from_wire(d.get("flows", []))
        if not requests and not flows:
            raise ValueError("no requests")
        from loadgen.endpoint import Auth, Tls, split_address  # it imports loadgen.shapes, which imports this

        resolve = tuple((str(k), str(v)) for k, v in d.get("resolve", ()))
        for address in (a for pair in resolve for a in pair):
            split_address(address)  # OptionError is a ValueError
        return cls._valid(
            name=str(d["name"]),
            target=str(d["target"]),
            load=spec,
            requests=requests,
            thresholds=tuple(str(t) for t in d["thresholds"]),
            source="<wire>",
            abort_on_fail=bool(d.get("abort_on_fail", False)),
            abort_grace=float(d.get("abort_grace", 0.0)),
            budget=None if d.get("budget") is None else float(d["budget"]),
            flows=flows,
            data=data_from_wire(d.get("data", [])),
            env=tuple((str(k), str(v)) for k, v in d.get("env", [])),
            tls=None if d.get("tls") is None else Tls.from_wire(d["tls"]),
            resolve=resolve,
            auth=None if d.get("auth") is None else Auth.from_wire(d["auth"]),
        )


def _label(name: object, source: str) -> str:
    """Who a profile's errors blame: its file, or the code that built it."""
    if source in (CODE, "<memory>", "<wire>"):
        return f"profile {name!r} (built in code)"
    return source


def _listed(values: object) -> object:
    """A list from any iterable but text or a mapping; anything else as it is, for the validator to refuse."""
    if isinstance(values, Iterable) and not isinstance(values, str | bytes | Mapping):
        return list(values)
    return values


def _request_docs(requests: object) -> object:
    items = _listed(requests)
    if not isinstance(items, list):
        return items
    docs: list[object] = []
    for r in items:
        if not isinstance(r, Request):
            docs.append(r)
            continue
        doc = r.to_doc()
        if len(doc["headers"]) < len(r.headers):  # a name given twice: let the validator say so
            doc["headers"] = r.headers
        docs.append(doc)
    return docs
