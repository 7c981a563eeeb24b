"""The HTTP/2 engine's pool policy: which connection takes the next stream, and how many connections to open.

No I/O here: :mod:`agents.h2_engine` asks and does what the answers say. A connection carries up to its
``limit`` streams at once (the profile's ``max_streams_per_connection`` or, lower, the server's
``SETTINGS_MAX_CONCURRENT_STREAMS``). Streams are packed: the oldest connection with a free stream takes the
next request, so that a few connections carry many streams (what HTTP/2 is for) and a new one is opened only
when every open one is full. Requests that find no free stream wait FIFO in the engine; their wait counts in
their latency from the intended time, as on HTTP/1.1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, TypeVar

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
