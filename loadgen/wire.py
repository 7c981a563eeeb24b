"""The wire protocol between coordinator and agents: typed, versioned msgpack messages.

Every message is a msgpack map ``{"v": PROTOCOL_VERSION, "type": NAME, ...fields}``. Nothing executable
travels: only maps, lists, strings, numbers and byte strings. :func:`decode` checks size, version, type and
every field's type at the boundary and raises :class:`~loadgen.errors.WireError` on anything else; callers
drop and log such messages.

Agent → coordinator: Hello, CodeHashes, Pong, Started, Interval, Finished, Heartbeat, Refused, DataLease.
Coordinator → agent: CodeCheck, Welcome, Ping, Start, Reshare, Ack, Stop, Heartbeat, DataGrant.

A run with flows written in Python (:mod:`loadgen.code_refs`) answers an agent's Hello with ``CodeCheck``
first: the agent is welcomed once its ``CodeHashes`` agree with the other agents'.

Delivery: an agent keeps every Interval (and its Finished) until the coordinator acknowledges it with
``Ack``, which the coordinator sends only once the data is in a durable checkpoint. Each coordinator process
has an ``epoch``; when an agent sees a new epoch (a coordinator resumed after a crash) it sends everything
unacknowledged again, and the coordinator ignores what it already merged. So a coordinator restart inside the
agents' timeout loses no completed request.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgpack

from loadgen.errors import VersionMismatch, WireError

PROTOCOL_VERSION = 6  # 3: Interval.stolen; 4: histograms in binary forms (histogram.encode_wire);
# 5: Interval.opened, open_failed and no_data, the profile's tls, resolve, auth, flows and data; data leases;
# the code check of flows written in Python; 6: the profile's http_version and max_streams_per_connection,
# Interval.protocol and peak_streams
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Message:
    TYPE: ClassVar[str] = ""


@dataclass(frozen=True)
class Hello(Message):
    """An agent introduces itself, with the limits its operator set (``max_rate`` 0 = none)."""

    TYPE: ClassVar[str] = "hello"
    agent_id: str
    host: str
    pid: int
    software: str
    max_rate: float


@dataclass(frozen=True)
class Welcome(Message):
    TYPE: ClassVar[str] = "welcome"
    run_id: str


@dataclass(frozen=True)
class Ping(Message):
    """Clock probe: the agent answers at once with its own clock reading."""

    TYPE: ClassVar[str] = "ping"
    seq: int
    t_coord: float


@dataclass(frozen=True)
class Pong(Message):
    TYPE: ClassVar[str] = "pong"
    seq: int
    t_coord: float
    t_agent: float


@dataclass(frozen=True)
class Start(Message):
    """Run this profile with this share of the fleet's rate, starting at ``start_at`` on the agent's clock."""

    TYPE: ClassVar[str] = "start"
    run_id: str
    profile: dict[str, Any]
    share: float
    phase: float
    seed: int
    start_at: float
    coordinator_timeout: float
    engine: str
    begin: float  # seconds into the run at which this agent's arrivals begin (0, or later for a late joiner)


@dataclass(frozen=True)
class Reshare(Message):
    """From ``at`` seconds into the run, take this share of the fleet's rate (membership changed)."""

    TYPE: ClassVar[str] = "reshare"
    share: float
    phase: float
    seed: int
    at: float


@dataclass(frozen=True)
class Started(Message):
    """The agent began its arrivals ``late`` seconds after the instant it was given (start skew)."""

    TYPE: ClassVar[str] = "started"
    late: float


@dataclass(frozen=True)
class Ack(Message):
    """Every interval of this agent up to ``index`` is merged into a durable checkpoint; ``finished``: its
    Finished message too."""

    TYPE: ClassVar[str] = "ack"
    index: int
    finished: bool


@dataclass(frozen=True)
class Stop(Message):
    TYPE: ClassVar[str] = "stop"
    reason: str


@dataclass(frozen=True)
class Heartbeat(Message):
    TYPE: ClassVar[str] = "heartbeat"
    t: float
    epoch: str  # the coordinator process's epoch ("" from agents)


@dataclass(frozen=True)
class Interval(Message):
    """One second of an agent's measurements.

    ``names`` maps each request name to ``[scheduled, ok, failed, errors, latency, service]`` where ``errors``
    maps category to count and ``latency``/``service`` are HDR histograms in microseconds, encoded by
    :func:`loadgen.histogram.encode_wire` (empty bytes when nothing completed). ``lag`` is the histogram of
    send lag (actual minus intended send, µs), encoded the same way.
    ``cpu`` lets the coordinator see a generator that is saturated rather than a slow target, and ``stolen``
    one whose host lost CPU time to other guests of its hypervisor.
    """

    TYPE: ClassVar[str] = "interval"
    index: int
    first: int  # the index of this agent's first interval (they are consecutive from there)
    scheduled: int
    dropped: int
    in_flight: int
    names: dict[str, list[Any]]
    lag: bytes
    cpu: float  # share of one core the agent process used in this second (1.0 = a full core)
    connections: int = 0  # connections the agent's engine had open when the second was cut
    stolen: float = 0.0  # share of the agent host's CPU time its hypervisor gave to others (agents.steal)
    opened: int = 0  # connections the agent's engine opened in this second (over TLS: handshakes done)
    open_failed: dict[str, Any] = field(default_factory=dict)  # attempts to open one that failed, by category
    no_data: int = 0  # of the dropped arrivals, those that found no row of a unique [[data]] source
    protocol: str = ""  # what the agent's engine speaks: "http/1.1" or "h2" ("": not told)
    peak_streams: int = 0  # HTTP/2: the most streams open at once on one connection, since the start


@dataclass(frozen=True)
class Finished(Message):
    """The agent's run is over and drained; its totals for cross-checking."""

    TYPE: ClassVar[str] = "finished"
    scheduled: int
    ok: int
    failed: int
    dropped: int
    in_flight: int
    last_index: int


@dataclass(frozen=True)
class CodeCheck(Message):
    """Before welcoming the agent: hash the source of each of these flow functions (``package.module:fn``)."""

    TYPE: ClassVar[str] = "code_check"
    refs: list[str]


@dataclass(frozen=True)
class CodeHashes(Message):
    """The agent's answer to CodeCheck: ref -> SHA-256 of its module's source, or why it cannot (``problem``:
    a function it cannot import; empty when all is well)."""

    TYPE: ClassVar[str] = "code_hashes"
    hashes: dict[str, str]
    problem: str


@dataclass(frozen=True)
class DataLease(Message):
    """The agent asks for ``count`` more rows of the profile's unique [[data]] source number ``source``."""

    TYPE: ClassVar[str] = "data_lease"
    source: int
    count: int


@dataclass(frozen=True)
class DataGrant(Message):
    """Rows ``start`` .. ``start + count - 1`` of unique source ``source`` are the agent's alone (indexes into
    its rows, modulo their number); ``count`` 0: there are none left."""

    TYPE: ClassVar[str] = "data_grant"
    source: int
    start: int
    count: int


@dataclass(frozen=True)
class Refused(Message):
    TYPE: ClassVar[str] = "refused"
    reason: str


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Hello,
        Welcome,
        Ping,
        Pong,
        Start,
        Reshare,
        Started,
        Ack,
        Stop,
        Heartbeat,
        Interval,
        Finished,
        Refused,
        DataLease,
        DataGrant,
        CodeCheck,
        CodeHashes,
    )
}

_CHECKS: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "bool": (bool,),
    "float": (float, int),
    "bytes": (bytes,),
    "dict[str, Any]": (dict,),
    "dict[str, list[Any]]": (dict,),
    "dict[str, str]": (dict,),
    "list[str]": (list,),
}


def encode(msg: Message) -> bytes:
    body = {f.name: getattr(msg, f.name) for f in dataclasses.fields(msg)}
    body["v"] = PROTOCOL_VERSION
    body["type"] = msg.TYPE
    data: bytes = msgpack.packb(body, use_bin_type=True)
    return data


def decode(data: bytes, peer: str | None = None) -> Message:
    """Decode and validate one message; raise :class:`WireError` for anything unexpected."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise WireError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}", peer)
    try:
        body = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise WireError(f"not a msgpack message ({type(exc).__name__})", peer) from exc
    if not isinstance(body, dict):
        raise WireError("message is not a map", peer)
    version = body.pop("v", None)
    if version != PROTOCOL_VERSION:
        raise VersionMismatch(
            f"protocol version {version!r} is not supported (this side speaks {PROTOCOL_VERSION}); "
            "run the same loadgen version on coordinator and agents",
            peer,
            version,
            PROTOCOL_VERSION,
        )
    kind = body.pop("type", None)
    cls = MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise WireError(f"unknown message type {kind!r}", peer)
    fields = dataclasses.fields(cls)
    names = {f.name for f in fields}
    if set(body) != names:
        missing = sorted(names - set(body))
        extra = sorted(set(body) - names)
        raise WireError(f"{kind}: missing fields {missing}, unexpected fields {extra}", peer)
    for f in fields:
        value = body[f.name]
        allowed = _CHECKS[str(f.type)]
        if (isinstance(value, bool) and bool not in allowed) or not isinstance(value, allowed):
            raise WireError(f"{kind}.{f.name}: expected {f.type}, got {type(value).__name__}", peer)
    return cls(**body)
