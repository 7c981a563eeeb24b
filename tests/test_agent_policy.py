"""The agent's decisions (pure): the dead-man's switch and what the agent tells its operator. Refusals are
in tests/test_agent_limits.py."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agents.policy import coordinator_lost, no_answer, waiting_line

_times = st.floats(0, 1e6, allow_nan=False, allow_infinity=False)


def test_the_coordinator_is_lost_only_past_the_timeout() -> None:
    assert not coordinator_lost(now=110.0, last_heard=100.0, timeout=10.0)  # exactly the timeout: not yet
    assert coordinator_lost(now=110.001, last_heard=100.0, timeout=10.0)
    assert not coordinator_lost(now=100.0, last_heard=100.0, timeout=1.0)


@given(_times, _times, st.floats(0.5, 3600, allow_nan=False), st.floats(0, 3600, allow_nan=False))
def test_silence_only_grows_into_a_loss(last_heard: float, now: float, timeout: float, more: float) -> None:
    """Once lost, the coordinator stays lost as time goes on without a word from it; a longer timeout never
    loses it sooner."""
    if coordinator_lost(now, last_heard, timeout):
        assert coordinator_lost(now + more, last_heard, timeout)
    else:
        assert not coordinator_lost(now, last_heard, timeout + more)
    assert not coordinator_lost(last_heard, last_heard, timeout)


def test_the_waiting_lines() -> None:
    assert (
        waiting_line("tcp://127.0.0.1:5555", 0.0, 0) == "waiting for the coordinator at tcp://127.0.0.1:5555"
    )
    assert (
        waiting_line("tcp://127.0.0.1:5555", 0.2, 1) == "waiting for the coordinator at tcp://127.0.0.1:5555"
    )
    assert (
        waiting_line("tcp://h:1", 10.02, 10)
        == "waiting for the coordinator at tcp://h:1 (10 s, 10 hellos sent)"
    )
    assert waiting_line("tcp://h:1", 1.0, 1) == "waiting for the coordinator at tcp://h:1 (1 s, 1 hello sent)"


def test_giving_up_says_what_may_be_wrong() -> None:
    assert no_answer("tcp://h:1", 30.0, secured=False) == "no coordinator answered at tcp://h:1 within 30 s"
    keyed = no_answer("tcp://h:1", 30.0, secured=True)
    assert (
        keyed
        == "no reply from tcp://h:1: wrong coordinator key, or this agent's key is not authorized there?"
    )
