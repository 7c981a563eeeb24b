"""Whose fault a saturated run is: the advice follows the figures."""

from __future__ import annotations

from coordinator.saturation import (
    drop_cause,
    dropped_warning,
    generator_behind,
    live_reasons,
    saturation_cause,
)


def test_saturation_cause() -> None:
    assert saturation_cause(False, 0, 1.0, 0.5) is None
    assert saturation_cause(True, 10, 1.0, 0.5) == "in_flight_limit"
    assert saturation_cause(True, 10, 9.0, 0.5) == "generator"
    assert saturation_cause(True, 0, 9.0, 0.5) == "generator"
    assert saturation_cause(True, 10, 1.0, 0.99) == "generator"


def test_the_generator_is_behind_on_send_lag_or_a_full_core() -> None:
    assert not generator_behind(2.0, 0.6)
    assert not generator_behind(None, 0.0)
    assert generator_behind(5.1, 0.6)
    assert generator_behind(1.0, 0.95)


def test_drops_while_the_generator_kept_its_schedule_blame_the_target() -> None:
    text = dropped_warning(1234, 10_000, 2.5, 0.56, 31.6)
    assert text.startswith("GENERATOR SATURATED: 1234 arrivals dropped at max_in_flight=10000: ")
    assert "send lag p99 2.5 ms, agents at most 56% of a core" in text
    assert "service time p99 31.6 ms" in text
    assert "the target is the limit, more agents will not help" in text
    assert "add agents" not in text


def test_drops_while_the_generator_fell_behind_ask_for_agents() -> None:
    assert drop_cause(12.0, 0.6, 3.0) == "the generator fell behind its schedule; add agents or cores"
    assert "add agents or cores" in dropped_warning(5, 100, 1.0, 0.99, None)


def test_live_reasons_and_advice() -> None:
    why, advice = live_reasons(40, 3.0, 0.5, 30.0)
    assert why == ["40 arrivals dropped at max_in_flight"]
    assert "the target answered slower than requests arrived (service time p99 30.0 ms)" in advice
    why, advice = live_reasons(0, 8.0, 0.97, None)
    assert why == ["send lag p99 8.0 ms", "an agent at 97% CPU"]
    assert advice == "These numbers include the generator's own delays: add agents or cores."
    _, advice = live_reasons(40, 8.0, 0.5, 30.0)
    assert "add agents or cores" in advice
