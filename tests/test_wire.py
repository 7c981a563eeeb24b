"""The wire protocol: round trips, and refusal of anything else."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadgen.errors import WireError
from loadgen.profile import Load, Profile, Request
from loadgen.wire import (
    PROTOCOL_VERSION,
    Ack,
    Finished,
    Hello,
    Interval,
    Ping,
    Pong,
    Reshare,
    Start,
    Started,
    decode,
    encode,
)


def _profile() -> Profile:
    return Profile(
        name="p",
        target="http://127.0.0.1:1",
        load=Load(
            arrival="constant", start_rate=1.0, timeout=2.0, max_in_flight=10, stages=[(1.0, 5.0), (0.0, 9.0)]
        ),
        requests=[Request("/x", name="a", method="POST", headers={"h": "v"}, body=b"body", weight=2.0)],
        thresholds=("p99 < 1s",),
    )


@pytest.mark.parametrize(
    "msg",
    [
        Hello("a1", "host", 42, "loadgen 0.1", 0.0),
        Ping(3, 1.5),
        Pong(3, 1.5, 99.25),
        Start("run", _profile().to_wire(), 0.5, 1.0, 7, 123.5, 10.0, "fast", 0.0),
        Reshare(0.25, 0.5, 9, 12.0),
        Ack(7, False),
        Started(0.001),
        Interval(4, 0, 10, 1, 2, {"a": [10, 8, 1, {"http_500": 1}, b"h1", b""]}, b"", 0.5),
        Finished(10, 8, 1, 1, 0, 4),
    ],
)
def test_round_trip(msg: object) -> None:
    assert decode(encode(msg)) == msg  # type: ignore[arg-type]


def test_profile_round_trips_through_start() -> None:
    p = _profile()
    msg = decode(encode(Start("r", p.to_wire(), 1.0, 1.0, 1, 0.0, 10.0, "fast", 0.0)))
    assert isinstance(msg, Start)
    assert Profile.from_wire(msg.profile) == p


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\x93\x01", "not a msgpack"),
        (msgpack.packb([1, 2, 3]), "not a map"),
        (msgpack.packb({"v": 99, "type": "ping", "seq": 1, "t_coord": 1.0}), "protocol version 99"),
        (msgpack.packb({"v": PROTOCOL_VERSION, "type": "exec", "code": "rm"}), "unknown message type"),
        (msgpack.packb({"v": PROTOCOL_VERSION, "type": "ping", "seq": 1}), "missing fields"),
        (msgpack.packb({"v": PROTOCOL_VERSION, "type": "ping", "seq": "1", "t_coord": 1.0}), "ping.seq"),
        (msgpack.packb({"v": PROTOCOL_VERSION, "type": "ping", "seq": True, "t_coord": 1.0}), "ping.seq"),
    ],
)
def test_bad_messages_are_refused(body: bytes, reason: str) -> None:
    with pytest.raises(WireError, match=reason):
        decode(body, peer="peer-1")


def test_oversized_message_is_refused() -> None:
    with pytest.raises(WireError, match="exceeds"):
        decode(b"\x00" * (16 * 1024 * 1024 + 1))


@given(st.binary(max_size=200))
def test_random_bytes_never_crash(data: bytes) -> None:
    with contextlib.suppress(WireError):
        decode(data)


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@given(st.dictionaries(st.sampled_from(["v", "type", "seq", "t_coord", "index", "names"]), msgpack_values))
def test_random_msgpack_maps_never_crash(body: dict[str, object]) -> None:
    with contextlib.suppress(WireError):
        decode(msgpack.packb(body))
