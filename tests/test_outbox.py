"""The agent's outbox: what the coordinator has not yet made durable (pure: no agent, no network)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.outbox import MAX_BUFFERED, Outbox
from tests.strategies import OutboxOp, outbox_ops


def _data(index: int) -> bytes:
    return f"interval {index}".encode()


def test_an_ack_drops_everything_up_to_its_index() -> None:
    box = Outbox()
    for i in range(5):
        assert box.add(i, _data(i)) == []
    assert box.ack(2, finished=False) is False
    assert box.unconfirmed() == [_data(3), _data(4)]
    assert box.ack(1, finished=False) is False  # an old ack changes nothing
    assert len(box) == 2


def test_the_finished_is_resent_until_confirmed() -> None:
    box = Outbox()
    box.add(0, _data(0))
    assert box.ack(0, finished=True) is False  # no Finished sent yet: nothing to confirm
    box.add(1, _data(1))
    box.finish(b"finished")
    assert box.unconfirmed() == [_data(1), b"finished"]
    assert box.ack(0, finished=False) is False
    assert box.ack(1, finished=True) is True
    assert box.finished_confirmed
    assert box.unconfirmed() == []


def test_past_the_cap_the_oldest_go_and_are_counted() -> None:
    box = Outbox(cap=3)
    assert [box.add(i, _data(i)) for i in range(5)] == [[], [], [], [0], [1]]
    assert box.dropped == 2
    assert box.unconfirmed() == [_data(2), _data(3), _data(4)]
    assert Outbox().cap == MAX_BUFFERED


def test_indexes_only_rise() -> None:
    box = Outbox()
    box.add(3, _data(3))
    with pytest.raises(ValueError, match="after interval 3"):
        box.add(3, _data(3))
    with pytest.raises(ValueError, match="at least one"):
        Outbox(cap=0)


@given(outbox_ops(), st.integers(1, 8))
def test_the_outbox_holds_exactly_what_is_unacknowledged(ops: list[OutboxOp], cap: int) -> None:
    box = Outbox(cap=cap)
    held: list[int] = []  # the model: indexes sent and not acknowledged, nor dropped
    dropped: list[int] = []
    finished = confirmed = False
    index = -1
    for op, n, flag in ops:
        if op == "add":
            index += n
            lost = box.add(index, _data(index))
            held.append(index)
            assert lost == held[: max(0, len(held) - cap)]  # the oldest, only past the cap
            dropped += lost
            held = held[len(lost) :]
        elif op == "ack":
            held = [i for i in held if i > n]
            confirmed = confirmed or (flag and finished)
            assert box.ack(n, flag) is confirmed
        else:
            finished = True
            box.finish(b"finished")
        assert len(box) == len(held) <= cap
        assert box.dropped == len(dropped)
        assert box.finished_confirmed is confirmed
        tail = [b"finished"] if finished and not confirmed else []
        assert box.unconfirmed() == [_data(i) for i in held] + tail
