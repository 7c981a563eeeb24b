"""The HTTP/2 engine's pool policy: which connection takes the next stream, and how many connections to open.

No I/O here: :mod:`agents.h2_engine` asks and does what the answers say. A connection carries up to its
``limit`` streams at once (the profile's ``max_streams_per_connection`` or, lower, the server's
``SETTINGS_MAX_CONCURRENT_STREAMS``). Streams are packed: the oldest connection with a free stream takes the
next request, so that a few connections carry many streams (what HTTP/2 is for) and a new one is opened only
when every open one is full. Requests that find no free stream wait FIFO in the engine; their wait counts in
their latency from the intended time, as on HTTP/1.1.

As on HTTP/1.1 (:mod:`agents.pool`), no connection is opened while the agent is short of CPU (:func:`busy`;
the waiting requests wait, their wait counted) unless none is open, and one that carried no stream for
:data:`agents.pool.IDLE_EXPIRY` seconds is closed (:func:`stale`), so the engine shrinks back to what the load
needs after a burst.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, TypeVar

from agents.pool import BEHIND, BUSY

ASSUMED_STREAMS = 100
"""Streams a connection is assumed to take before the server's SETTINGS say (RFC 9113 recommends servers
allow at least 100)."""


class Streams(Protocol):
    """What the policy reads of a connection: the streams it carries and how many it may."""

    @property
    def active(self) -> int: ...

    @property
    def limit(self) -> int: ...


S = TypeVar("S", bound=Streams)


class Idle(Streams, Protocol):
    """What :func:`stale` reads and keeps of a connection: the last stream it opened (its number grows with
    each one), and when it was last seen carrying or opening one."""

    @property
    def last_stream(self) -> int: ...

    seen_stream: int
    idle_since: float


I = TypeVar("I", bound=Idle)  # noqa: E741


def stream_limit(max_streams: int | None, peer_max: int | None) -> int:
    """The streams one connection carries at once: the lower of ours (None: no limit of ours) and the
    server's (None: its SETTINGS not read yet, :data:`ASSUMED_STREAMS`); at least 1 is never promised, a
    server that allows 0 gets 0."""
    peer = ASSUMED_STREAMS if peer_max is None else peer_max
    return peer if max_streams is None else min(max_streams, peer)


def take(connections: Sequence[S]) -> S | None:
    """The connection that takes the next stream: the first (oldest) with a free one; None if all are full."""
    for connection in connections:
        if connection.active < connection.limit:
            return connection
    return None


def to_open(
    waiting: int,
    connections: Sequence[Streams],
    opening: int,
    max_connections: int,
    max_opening: int,
    per: int,
) -> int:
    """How many connections to start opening now for ``waiting`` requests that found no free stream, with
    ``opening`` connections on their way (each expected to carry ``per`` streams): enough for the rest, at
    most ``max_connections`` in all and ``max_opening`` opening at once."""
    if waiting <= 0:
        return 0
    free = sum(max(0, c.limit - c.active) for c in connections)
    short = waiting - free - opening * per
    if short <= 0:
        return 0
    want = math.ceil(short / max(per, 1))
    room = min(max_connections - len(connections) - opening, max_opening - opening)
    return max(0, min(want, room))


def busy(late: float, cpu_used: float, wall: float) -> bool:
    """Whether the agent is short of CPU, so that opening a connection would make every request dearer: its
    sweep ran ``late`` seconds late (more than :data:`agents.pool.BEHIND`), or it used more than
    :data:`agents.pool.BUSY` of a core (``cpu_used`` CPU seconds in ``wall`` seconds) since the last sweep."""
    return late > BEHIND or (wall > 0.0 and cpu_used / wall > BUSY)


def stale(connections: Sequence[I], now: float, expiry: float) -> list[I]:
    """The connections that carried no stream and opened none for ``expiry`` seconds or more, to close.
    Called by each sweep: a connection seen with a stream, or with a new one since the last call, counts as
    idle from ``now``. Costs nothing per request (the stream number is h2's)."""
    expired = []
    for connection in connections:
        last = connection.last_stream
        if connection.active or last != connection.seen_stream:
            connection.seen_stream = last
            connection.idle_since = now
        elif now - connection.idle_since >= expiry:
            expired.append(connection)
    return expired
