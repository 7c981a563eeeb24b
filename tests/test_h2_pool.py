"""The HTTP/2 pool policy (:mod:`agents.h2_pool`) without sockets: which connection takes the next stream,
how many connections to open, what one connection may carry."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from agents.h2_pool import ASSUMED_STREAMS, busy, stale, stream_limit, take, to_open
from agents.pool import BEHIND, BUSY


@dataclass
class Conn:
    active: int
    limit: int


def test_the_limit_is_the_lower_of_ours_and_the_servers() -> None:
    assert stream_limit(None, None) == ASSUMED_STREAMS
    assert stream_limit(10, None) == 10
    assert stream_limit(None, 128) == 128
    assert stream_limit(500, 128) == 128
    assert stream_limit(10, 128) == 10
    assert stream_limit(10, 0) == 0  # a server that takes no streams gets none


def test_streams_are_packed_on_the_oldest_connection_with_room() -> None:
    full, half, empty = Conn(10, 10), Conn(5, 10), Conn(0, 10)
    assert take([full, half, empty]) is half
    assert take([empty, half]) is empty
    assert take([full, Conn(3, 3)]) is None
    assert take([]) is None


def test_connections_open_only_for_what_the_open_ones_cannot_carry() -> None:
    conns = [Conn(10, 10), Conn(4, 10)]
    assert to_open(6, conns, 0, 8, 16, 10) == 0  # 6 free streams
    assert to_open(7, conns, 0, 8, 16, 10) == 1
    assert to_open(26, conns, 0, 8, 16, 10) == 2
    assert to_open(26, conns, 2, 8, 16, 10) == 0  # two on their way carry the rest
    assert to_open(1000, conns, 0, 8, 16, 10) == 6  # at most 8 in all
    assert to_open(1000, conns, 0, 100, 4, 10) == 4  # at most 4 opening at once
    assert to_open(0, [], 0, 8, 16, 10) == 0
    assert to_open(1, [], 0, 8, 16, 10) == 1


@given(
    st.integers(0, 500),
    st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), max_size=10),
    st.integers(0, 5),
    st.integers(1, 20),
    st.integers(1, 16),
    st.integers(1, 200),
)
def test_opening_never_exceeds_the_caps_and_covers_the_wait(
    waiting: int, loads: list[tuple[int, int]], opening: int, max_connections: int, max_opening: int, per: int
) -> None:
    conns = [Conn(min(a, lim), lim) for a, lim in loads]
    n = to_open(waiting, conns, opening, max_connections, max_opening, per)
    assert n >= 0
    assert n == 0 or len(conns) + opening + n <= max_connections
    assert n == 0 or opening + n <= max_opening
    free = sum(c.limit - c.active for c in conns)
    room = min(max_connections - len(conns) - opening, max_opening - opening)
    if waiting > free + opening * per:  # short of streams: enough connections, or as many as allowed
        assert n == min(-(-(waiting - free - opening * per) // per), max(room, 0))
    else:
        assert n == 0


def test_busy_is_a_late_sweep_or_most_of_a_core() -> None:
    assert not busy(0.0, 0.0, 0.0)  # nothing measured yet
    assert not busy(BEHIND / 2, 0.5, 1.0)
    assert busy(BEHIND * 2, 0.0, 1.0)
    assert busy(0.0, BUSY + 0.01, 1.0)
    assert not busy(0.0, BUSY - 0.01, 1.0)


@dataclass
class IdleConn:
    active: int
    limit: int = 100
    last_stream: int = 0
    seen_stream: int = 0
    idle_since: float = 0.0


def test_a_connection_is_stale_after_the_expiry_without_a_stream() -> None:
    quiet, busy_one = IdleConn(0), IdleConn(3, last_stream=5)
    assert stale([quiet, busy_one], 10.0, 30.0) == []
    assert (busy_one.seen_stream, busy_one.idle_since) == (5, 10.0)  # seen busy: idle from now at most
    assert stale([quiet, busy_one], 30.0, 30.0) == [quiet]  # idle since 0; the other still busy at 30
    busy_one.active = 0
    assert stale([busy_one], 59.9, 30.0) == []
    assert stale([busy_one], 60.0, 30.0) == [busy_one]
    busy_one.last_stream = 7  # a stream opened and answered between two sweeps: it was used
    assert stale([busy_one], 65.0, 30.0) == []
    assert busy_one.idle_since == 65.0
