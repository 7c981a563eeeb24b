"""The profile as an immutable value: what to send, where, and at which rate over time.

Reading and validating a TOML file lives in :mod:`loadgen.profile_file`; this module holds only the values
and their wire form (plain msgpack-able dicts; nothing executable ever travels).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

ARRIVAL_KINDS = ("poisson", "constant")


@dataclass(frozen=True)
class Stage:
    """Ramp linearly from the previous stage's rate to ``rate`` (requests/s) over ``duration`` seconds.

    A zero-length stage is an instant jump.
    """

    duration: float
    rate: float


@dataclass(frozen=True)
class RequestSpec:
    name: str
    method: str = "GET"
    path: str = "/"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    weight: float = 1.0
    cost: float = 0.0  # price of one request (e.g. a paid API's unit price), for cost totals and budgets


@dataclass(frozen=True)
class LoadSpec:
    arrival: str = "poisson"
    start_rate: float = 0.0
    timeout: float = 10.0
    max_in_flight: int = 10_000
    stages: tuple[Stage, ...] = ()
    max_connections: int | None = None  # per agent; None: as many as the requests in flight need

    @property
    def duration(self) -> float:
        return sum(s.duration for s in self.stages)

    @property
    def connection_limit(self) -> int:
        """The most connections one agent opens: ``max_connections``, or one per request in flight."""
        return self.max_connections or self.max_in_flight


@dataclass(frozen=True)
class Profile:
    name: str
    target: str
    load: LoadSpec
    requests: tuple[RequestSpec, ...]
    thresholds: tuple[str, ...] = ()
    source: str = field(default="<memory>", compare=False)
    abort_on_fail: bool = False  # stop the run early once a threshold is already lost
    abort_grace: float = 0.0  # seconds into the run before thresholds may abort it
    budget: float | None = None  # stop the run when the cost of completed requests exceeds this

    def with_target(self, target: str) -> Profile:
        return dataclasses.replace(self, target=target)

    def to_wire(self) -> dict[str, Any]:
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
        }

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> Profile:
        """Rebuild a profile from :meth:`to_wire`. Raises KeyError/TypeError/ValueError on bad input;
        the wire layer maps those to :class:`~loadgen.errors.WireError`."""
        load = d["load"]
        stages = tuple(Stage(float(dur), float(rate)) for dur, rate in load["stages"])
        if load["arrival"] not in ARRIVAL_KINDS:
            raise ValueError(f"unknown arrival kind {load['arrival']!r}")
        spec = LoadSpec(
            arrival=str(load["arrival"]),
            start_rate=float(load["start_rate"]),
            timeout=float(load["timeout"]),
            max_in_flight=int(load["max_in_flight"]),
            stages=stages,
            max_connections=None if load.get("max_connections") is None else int(load["max_connections"]),
        )
        if spec.max_connections is not None and not 1 <= spec.max_connections <= spec.max_in_flight:
            raise ValueError(f"max_connections {spec.max_connections} outside 1..max_in_flight")
        requests = tuple(
            RequestSpec(
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
        if not requests:
            raise ValueError("no requests")
        return cls(
            name=str(d["name"]),
            target=str(d["target"]),
            load=spec,
            requests=requests,
            thresholds=tuple(str(t) for t in d["thresholds"]),
            source="<wire>",
            abort_on_fail=bool(d.get("abort_on_fail", False)),
            abort_grace=float(d.get("abort_grace", 0.0)),
            budget=None if d.get("budget") is None else float(d["budget"]),
        )
