from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadgen.curve import RateCurve
from loadgen.profile import Stage
from loadgen.shapes import SHAPE_KINDS, ShapeError, expand_shape, parse_rate, shape_params
from tests import strategies


def test_ramp() -> None:
    assert expand_shape("ramp", {"to": 100, "over": "1m", "hold": "5m"}) == (Stage(60, 100), Stage(300, 100))


def test_ramp_from_a_rate_jumps_there_first() -> None:
    assert expand_shape("ramp", {"from": 10, "to": 100, "over": 60}) == (Stage(0, 10), Stage(60, 100))


def test_ramp_down() -> None:
    assert expand_shape("ramp", {"from": 100, "to": 0, "over": "10s"}) == (Stage(0, 100), Stage(10, 0))


def test_soak_with_ramp_up() -> None:
    stages = expand_shape("soak", {"rate": 100, "ramp": "5m", "duration": "8h"})
    assert stages == (Stage(300, 100), Stage(8 * 3600, 100))


def test_soak_without_ramp_starts_at_rate() -> None:
    assert expand_shape("soak", {"rate": 50, "duration": "1h"}) == (Stage(0, 50), Stage(3600, 50))


def test_spike() -> None:
    params = {"base": 100, "peak": 1000, "before": "1m", "ramp": "5s", "spike": "30s", "after": "2m"}
    assert expand_shape("spike", params) == (
        Stage(0, 100),
        Stage(60, 100),
        Stage(5, 1000),
        Stage(30, 1000),
        Stage(5, 100),
        Stage(120, 100),
    )


def test_spike_defaults_jump_at_once() -> None:
    assert expand_shape("spike", {"base": 0, "peak": 500, "spike": "10s"}) == (
        Stage(0, 500),
        Stage(10, 500),
        Stage(0, 0),
    )


def test_step() -> None:
    stages = expand_shape("step", {"start": 50, "step": 50, "steps": 3, "every": "1m", "ramp": "10s"})
    assert stages == (
        Stage(0, 50),
        Stage(60, 50),
        Stage(10, 100),
        Stage(60, 100),
        Stage(10, 150),
        Stage(60, 150),
    )


def test_step_down() -> None:
    stages = expand_shape("step", {"start": 300, "step": -100, "steps": 3, "every": 10})
    assert [s.rate for s in stages if s.duration > 0] == [300, 200, 100]


def test_single_step() -> None:
    assert expand_shape("step", {"start": 0, "step": 10, "steps": 1, "every": 5}) == (Stage(5, 0),)


@pytest.mark.parametrize(
    ("kind", "params", "param", "reason"),
    [
        ("rmp", {}, "kind", "unknown shape 'rmp' (did you mean 'ramp'?)"),
        ("wave", {}, "kind", "unknown shape 'wave' (expected one of: ramp, soak, spike, step)"),
        ("ramp", {"to": 1, "ovr": "1m"}, "ovr", "unknown parameter for a ramp shape (did you mean 'over'?)"),
        ("ramp", {"over": "1m"}, "to", "missing; a ramp shape needs to, over"),
        ("ramp", {"to": 5}, "over", "missing; a ramp shape needs to, over"),
        ("ramp", {"to": True, "over": "1m"}, "to", "got boolean true"),
        ("ramp", {"to": "100", "over": "1m"}, "to", "got string '100'"),
        ("ramp", {"to": -5, "over": "1m"}, "to", "rate must be >= 0, got -5"),
        ("ramp", {"to": float("inf"), "over": "1m"}, "to", "finite"),
        ("ramp", {"to": 5, "over": "soon"}, "over", "invalid duration 'soon'"),
        ("ramp", {"to": 5, "over": "-1m"}, "over", "negative"),
        ("ramp", {"to": 5, "over": False}, "over", "got boolean false"),
        ("ramp", {"to": 5, "over": 0}, "over", "over and hold are both 0s"),
        ("soak", {"rate": 10}, "duration", "missing; a soak shape needs rate, duration"),
        ("soak", {"rate": 10, "duration": "0s"}, "duration", "must be longer than 0s"),
        ("spike", {"base": 200, "peak": 100, "spike": "1s"}, "peak", "must be >= base (200), got 100"),
        ("spike", {"base": 1, "peak": 2, "spike": 0}, "spike", "must be longer than 0s"),
        ("spike", {"base": 1, "peak": 2}, "spike", "missing"),
        ("step", {"start": 100, "step": -60, "steps": 3, "every": 1}, "step", "the last level would be -20"),
        ("step", {"start": 1, "step": 1, "steps": 2.0, "every": 1}, "steps", "whole number from 1 to 10000"),
        ("step", {"start": 1, "step": 1, "steps": 0, "every": 1}, "steps", "whole number from 1 to 10000"),
        (
            "step",
            {"start": 1, "step": 1, "steps": 10_001, "every": 1},
            "steps",
            "whole number from 1 to 10000",
        ),
        ("step", {"start": 1, "step": 1, "steps": True, "every": 1}, "steps", "got boolean true"),
        (
            "step",
            {"start": 1, "step": "x", "steps": 2, "every": 1},
            "step",
            "expected a number, got string 'x'",
        ),
        ("step", {"start": 1, "step": 1, "steps": 2, "every": 0}, "every", "must be longer than 0s"),
    ],
)
def test_refuses(kind: str, params: dict[str, object], param: str, reason: str) -> None:
    with pytest.raises(ShapeError) as info:
        expand_shape(kind, params)
    assert info.value.param == param
    assert reason in info.value.reason
    assert isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)


def test_shape_params_lists_every_parameter() -> None:
    assert shape_params("ramp") == ("from", "to", "over", "hold")
    assert shape_params("spike") == ("base", "peak", "spike", "before", "after", "ramp")
    with pytest.raises(ShapeError):
        shape_params("nope")


@pytest.mark.parametrize("value", [True, None, "1", [1]])
def test_parse_rate_refuses_non_numbers(value: object) -> None:
    with pytest.raises(ValueError, match="expected a rate"):
        parse_rate(value)


@given(st.data())
def test_expansion_is_non_negative_and_as_long_as_the_parameters_say(data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(SHAPE_KINDS))
    params, total = data.draw(strategies.shape_params(kind))
    stages = expand_shape(kind, params)
    assert all(s.duration >= 0 and s.rate >= 0 for s in stages)
    assert sum(s.duration for s in stages) == pytest.approx(total, rel=1e-9, abs=1e-9)
    assert RateCurve(0, stages).duration == pytest.approx(total, rel=1e-9, abs=1e-9)


@given(strategies.shape_params("ramp"))
def test_ramp_starts_at_from_and_ends_at_to(drawn: tuple[dict[str, object], float]) -> None:
    params, _ = drawn
    curve = RateCurve(0, expand_shape("ramp", params))
    assert curve.rate(0) == pytest.approx(params["from"])
    assert curve.final_rate == params["to"]


@given(strategies.shape_params("spike"))
def test_spike_peaks_at_peak_and_returns_to_base(drawn: tuple[dict[str, object], float]) -> None:
    params, _ = drawn
    curve = RateCurve(0, expand_shape("spike", params))
    assert curve.peak_rate == params["peak"]
    assert curve.final_rate == params["base"]


@given(strategies.shape_params("step"))
def test_step_holds_each_level_for_every(drawn: tuple[dict[str, object], float]) -> None:
    params, _ = drawn
    start, step, steps = float(str(params["start"])), float(str(params["step"])), int(str(params["steps"]))
    stages = expand_shape("step", params)
    holds = stages[1 if start > 0 else 0 :: 2]
    assert len(holds) == steps
    assert [s.rate for s in holds] == [start + i * step for i in range(steps)]
    assert len({s.duration for s in holds}) == 1
