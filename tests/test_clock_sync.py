"""Clock probes as a policy: what to do with each reply, on made-up clocks."""

from __future__ import annotations

import pytest

from coordinator.clock_sync import ClockEstimate, ClockProbes, ClockSample


def test_probes_ask_again_until_every_answer_is_in_then_keep_the_shortest_round_trip() -> None:
    probes = ClockProbes(probes=3)
    assert probes.answer("a", ClockSample(0.0, 5.0, 0.2)) is None  # not being probed
    probes.begin("a")
    assert probes.estimate("a") is None
    assert probes.answer("a", ClockSample(0.0, 5.2, 0.4)) == 1
    assert probes.answer("a", ClockSample(1.0, 6.05, 1.1)) == 2  # the best: 0.1 s round trip
    done = probes.answer("a", ClockSample(2.0, 7.3, 2.6))
    assert isinstance(done, ClockEstimate)
    assert done.offset == pytest.approx(5.0) and done.error == pytest.approx(0.05) and done.samples == 3


def test_a_round_is_answered_when_every_probed_agent_answered_it() -> None:
    probes = ClockProbes()
    for agent in ("a", "b"):
        probes.begin(agent)
    probes.answer("a", ClockSample(0.0, 0.0, 0.1))
    assert not probes.answered(0)
    probes.answer("b", ClockSample(0.0, 0.0, 0.1))
    assert probes.answered(0) and not probes.answered(1)
