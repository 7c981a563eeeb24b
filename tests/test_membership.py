"""The fleet's membership policy, with no sockets and no clock: every story is a call and its actions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator import membership as mb
from coordinator.membership import Membership
from loadgen.curve import RateCurve
from loadgen.profile import Stage

RATE = 100.0
DURATION = 60.0


def _fleet(n: int = 2, *, max_rate: float = 0.0) -> Membership:
    m = Membership(n, seed=1000, curve=RateCurve(RATE, [Stage(DURATION, RATE)]), duration=DURATION)
    for i in range(n):
        m.hello(f"a{i}", "host", 100 + i, max_rate, 0.0)
    return m


def _of(actions: list[mb.Action], kind: type) -> list:
    return [a for a in actions if isinstance(a, kind)]


def _events(actions: list[mb.Action]) -> list[str]:
    return [a.kind for a in actions if isinstance(a, mb.Event)]


def test_agents_join_until_the_expected_number_and_the_next_is_turned_away() -> None:
    m = Membership(2, seed=1, curve=RateCurve(RATE, [Stage(DURATION, RATE)]), duration=DURATION)
    assert _of(m.hello("a", "h", 1, 0.0, 0.0), mb.Welcome) == [mb.Welcome("a")]
    assert _of(m.hello("a", "h", 1, 0.0, 0.0), mb.Welcome) == [mb.Welcome("a")]  # a repeated hello
    m.hello("b", "h", 2, 0.0, 0.0)
    stop = _of(m.hello("c", "h", 3, 0.0, 0.0), mb.StopAgent)
    assert stop and stop[0].agent == "c"
    assert list(m.agents) == ["a", "b"]


def test_start_gives_every_agent_a_share_and_its_own_seed() -> None:
    m = _fleet(3)
    starts = _of(m.start(), mb.StartShare)
    assert [s.agent for s in starts] == ["a0", "a1", "a2"]
    assert sum(s.share for s in starts) == pytest.approx(1.0)
    assert len({s.seed for s in starts}) == 3
    assert all(s.begin == 0.0 for s in starts)
    assert m.active() == ["a0", "a1", "a2"]


def test_start_refuses_shares_above_the_agents_own_limits() -> None:
    m = _fleet(2, max_rate=RATE / 2 - 1)
    with pytest.raises(mb.CapacityShort, match="allows at most 49"):
        m.start()


def test_a_lost_agent_share_moves_to_the_survivors_and_the_gap_is_counted() -> None:
    m = _fleet(2)
    m.start()
    actions = m.lost("a0", "silent for 3 s", now=10.0, last_index=6, last_heard=7.2)
    assert "agent_lost" in _events(actions)
    (change,) = _of(actions, mb.ShareChange)
    assert change.agent == "a1" and change.share == 1.0 and change.at == 10.0 + mb.LOST_LEAD
    info = m.agents["a0"]
    # Died about half a beat after its last word (7.7 s); reported up to second 6 (ending at 7 s).
    assert info.unreported_estimate == pytest.approx(0.5 * RATE * 0.7)
    # From then until the takeover no one sent its share.
    assert info.unsent == pytest.approx(0.5 * RATE * (10.25 - 7.7))
    assert m.unsent == pytest.approx(info.unsent)
    assert m.busy() == ["a1"]


def test_with_no_agent_left_the_whole_rate_is_unsent_until_one_joins() -> None:
    m = _fleet(1)
    m.start()
    actions = m.lost("a0", "silent", now=10.0, last_index=7, last_heard=8.0)
    assert any(isinstance(a, mb.Say) and "no agent left" in a.line for a in actions)
    assert m.went_empty and m.uncovered_since == pytest.approx(8.5)
    # A new agent joins at 20 s; its clock is known at 21 s and it starts at 22 s.
    assert _of(m.hello("b", "h", 9, 0.0, 20.0), mb.Probe) == [mb.Probe("b")]
    joined = m.clock_known("b", 21.0)
    (start,) = _of(joined, mb.StartShare)
    assert start.agent == "b" and start.share == 1.0 and start.begin == 21.0 + mb.JOIN_LEAD
    assert m.unsent == pytest.approx(RATE * (22.0 - 8.5))
    m.end(DURATION)
    assert m.unsent == pytest.approx(RATE * (22.0 - 8.5))  # nothing more once someone carries it


def test_a_run_left_with_no_agent_counts_until_the_end() -> None:
    m = _fleet(1)
    m.start()
    m.lost("a0", "silent", now=10.0, last_index=7, last_heard=8.0)
    m.end(DURATION)
    assert m.unsent == pytest.approx(RATE * (DURATION - 8.5))


def test_a_late_joiner_takes_a_share_from_shortly_after_its_clock_is_known() -> None:
    m = _fleet(1)
    m.start()
    m.hello("late", "h", 5, 0.0, 10.0)
    assert m.agents["late"].state == "joining" and m.busy() == ["a0", "late"]
    actions = m.clock_known("late", 11.0)
    (start,) = _of(actions, mb.StartShare)
    (change,) = _of(actions, mb.ShareChange)
    assert start.agent == "late" and change.agent == "a0"
    assert start.begin == change.at == 12.0
    assert start.share == change.share == 0.5
    assert "agent_joined" in _events(actions) and "reshare" in _events(actions)
    assert m.unsent == 0.0


def test_too_late_to_join() -> None:
    m = _fleet(1)
    m.start()
    assert _of(m.hello("late", "h", 5, 0.0, DURATION - 1.5), mb.StopAgent)
    m.hello("later", "h", 6, 0.0, DURATION - 3.0)
    stop = _of(m.clock_known("later", DURATION - 0.5), mb.StopAgent)
    assert stop and m.agents["later"].state == "refused"


def test_a_refused_share_moves_on_and_is_remembered() -> None:
    m = _fleet(2)
    m.start()
    actions = m.refused("a1", "target not allowed", now=0.1)
    assert "agent_refused" in _events(actions)
    assert _of(actions, mb.ShareChange)[0].share == 1.0
    assert m.share_refused
    assert m.agents["a1"].unsent == pytest.approx(0.5 * RATE * (0.1 + mb.LOST_LEAD))
    assert m.refused("a1", "again", now=0.2) == []


def test_every_agent_refusing_leaves_no_one_to_carry_the_load() -> None:
    m = _fleet(2)
    m.start()
    m.refused("a0", "no", now=0.0)
    m.refused("a1", "no", now=0.0)
    m.end(DURATION)
    assert m.went_empty and m.share_refused
    assert m.unsent == pytest.approx(RATE * DURATION)


def test_a_reshare_short_of_capacity_is_an_event_not_an_error() -> None:
    m = _fleet(2, max_rate=RATE * 0.6)
    m.start()
    actions = m.lost("a0", "silent", now=5.0, last_index=3, last_heard=4.0)
    assert "capacity_short" in _events(actions)
    assert _of(actions, mb.ShareChange)[0].share == 1.0


def test_finished_is_counted_once() -> None:
    m = _fleet(1)
    m.start()
    assert _events(m.finished("a0")) == ["agent_finished"]
    assert m.finished("a0") == []
    assert m.agents["a0"].state == "finished" and not m.busy()


def test_silent_agents_and_the_end_of_the_run() -> None:
    heard = {"a": 10.0, "b": 12.5}
    assert mb.silent_agents(["a", "b"], heard, now=13.5, timeout=3.0) == ["a"]
    assert mb.run_over(busy=False, any_agents=True, elapsed=60.0, deadline=60.0, aborted=False)
    assert not mb.run_over(busy=True, any_agents=True, elapsed=61.0, deadline=60.0, aborted=False)
    assert not mb.run_over(busy=False, any_agents=True, elapsed=30.0, deadline=60.0, aborted=False)
    assert mb.run_over(busy=False, any_agents=True, elapsed=30.0, deadline=60.0, aborted=True)


@given(
    n=st.integers(1, 6),
    losses=st.lists(st.tuples(st.integers(0, 5), st.floats(1.0, 50.0)), max_size=6),
)
def test_shares_of_the_carrying_agents_always_sum_to_one(n: int, losses: list[tuple[int, float]]) -> None:
    m = _fleet(n)
    m.start()
    now = 0.0
    for i, dt in losses:
        agent = f"a{i % n}"
        now += dt
        if m.agents[agent].state == "active" and now < DURATION:
            m.lost(agent, "x", now=now, last_index=int(now) - 2, last_heard=now - 3)
    active = m.active()
    if active:
        assert sum(m.agents[a].share for a in active) == pytest.approx(1.0)
    m.end(DURATION)
    assert 0.0 <= m.unsent <= RATE * DURATION + 1e-6


def test_stragglers_are_given_up_on_after_their_timeouts_and_a_grace() -> None:
    assert not mb.finish_overdue(60 + 10 + 3 + mb.FINISH_GRACE, 60, 10, 3)
    assert mb.finish_overdue(60 + 10 + 3 + mb.FINISH_GRACE + 0.01, 60, 10, 3)
