"""Arrival schedules against the rate curve they come from."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.split import split
from loadgen.curve import RateCurve
from loadgen.profile import Stage
from loadgen.schedule import ArrivalSchedule, phases

stage_lists = st.lists(
    st.builds(
        Stage,
        duration=st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.5, 10.0]),
        rate=st.floats(min_value=0, max_value=500, allow_nan=False),
    ),
    min_size=1,
    max_size=6,
).filter(lambda ss: sum(s.duration for s in ss) > 0)


def test_integral_of_ramp_hold_spike() -> None:
    curve = RateCurve(0, [Stage(10, 100), Stage(10, 100), Stage(0, 1000), Stage(2, 1000)])
    assert curve.duration == 22
    assert curve.integral(10) == pytest.approx(500)
    assert curve.integral(20) == pytest.approx(1500)
    assert curve.total == pytest.approx(3500)
    assert curve.rate(5) == pytest.approx(50)
    assert curve.rate(20) == pytest.approx(1000)  # the jump is right-continuous
    assert curve.rate(19.999) == pytest.approx(100)
    assert curve.peak_rate == 1000


@given(stage_lists, st.floats(min_value=0, max_value=300))
def test_inverse_is_the_integrals_inverse(stages: list[Stage], start: float) -> None:
    curve = RateCurve(start, stages)
    for frac in (0.0, 0.1, 0.37, 0.5, 0.99, 1.0):
        c = curve.total * frac
        t = curve.inverse(c)
        assert 0 <= t <= curve.duration
        assert curve.integral(t) == pytest.approx(c, rel=1e-6, abs=1e-6)


@given(stage_lists, st.floats(min_value=0, max_value=300))
def test_constant_schedule_count_is_the_integral(stages: list[Stage], start: float) -> None:
    curve = RateCurve(start, stages)
    times = list(ArrivalSchedule(curve, "constant"))
    assert len(times) == math.floor(curve.total + 0.5 + 1e-9)
    assert times == sorted(times)
    assert all(0 <= t <= curve.duration for t in times)
    # the k-th arrival is where the integral reaches k - 1/2
    for k, t in enumerate(times[:50], start=1):
        assert curve.integral(t) == pytest.approx(k - 0.5, abs=1e-6)


@given(st.integers(min_value=1, max_value=7), stage_lists)
def test_constant_shares_interleave_into_the_fleet_schedule(n: int, stages: list[Stage]) -> None:
    curve = RateCurve(10, stages)
    fleet = list(ArrivalSchedule(curve, "constant"))
    merged = sorted(
        t
        for sh in split([f"a{i}" for i in range(n)])
        for t in ArrivalSchedule(curve, "constant", sh.share, sh.phase)
    )
    assert len(merged) == len(fleet)
    assert merged == pytest.approx(fleet, abs=1e-6)


@pytest.mark.parametrize("pause_rate", [0.0, 6.5253875887002215e-96])
def test_a_share_keeps_the_arrival_at_the_end_of_a_ramp_before_a_pause(pause_rate: float) -> None:
    """The 3rd arrival is where the ramp's integral ends (2.5), just before 10 s without arrivals. A share's
    count reaches 2.5 with a rounding error; it must not carry that arrival past the pause (found by the
    property above: one of 5 shares sent it at 10.5 s instead of 0.5 s)."""
    stages = [Stage(0.5, 0.0), Stage(10.0, pause_rate), Stage(0.5, 266.8422189561093), Stage(0.0, 266.84)]
    curve = RateCurve(10, stages)
    fleet = list(ArrivalSchedule(curve, "constant"))
    merged = sorted(
        t
        for sh in split([f"a{i}" for i in range(5)])
        for t in ArrivalSchedule(curve, "constant", sh.share, sh.phase)
    )
    assert fleet[2] == pytest.approx(0.5)
    assert merged == pytest.approx(fleet, abs=1e-6)


def test_phases_spread_evenly() -> None:
    assert phases(4) == [0.25, 0.5, 0.75, 1.0]


@settings(max_examples=20, deadline=None)
@given(st.integers(min_value=0, max_value=2**32), st.integers(min_value=1, max_value=5))
def test_poisson_count_matches_the_integral(seed: int, n: int) -> None:
    # ramp 0->400/s over 10 s, hold, spike: 2000 + 2000 + 1000 = 5000 expected arrivals
    curve = RateCurve(0, [Stage(10, 400), Stage(5, 400), Stage(0, 1000), Stage(1, 1000)])
    rng = random.Random(seed)
    counts = [
        len(list(ArrivalSchedule(curve, "poisson", 1 / n, 1.0, random.Random(rng.random()))))
        for _ in range(n)
    ]
    total = sum(counts)
    # Poisson with mean 5000: sd ~71; 6 sd is a bound a correct schedule never crosses in practice.
    assert abs(total - curve.total) < 6 * math.sqrt(curve.total)


def test_poisson_follows_the_shape_per_second() -> None:
    curve = RateCurve(0, [Stage(10, 1000)])
    times = list(ArrivalSchedule(curve, "poisson", rng=random.Random(1)))
    per_second = [0] * 10
    for t in times:
        per_second[min(int(t), 9)] += 1
    for s, count in enumerate(per_second):
        expected = curve.between(s, s + 1)
        assert abs(count - expected) < 5 * math.sqrt(expected), (s, count, expected)


def test_schedule_can_start_mid_curve() -> None:
    curve = RateCurve(100, [Stage(10, 100)])
    times = list(ArrivalSchedule(curve, "constant", start=4.0))
    assert len(times) == 600
    assert times[0] >= 4.0


def test_zero_rate_stretches_have_no_arrivals() -> None:
    curve = RateCurve(0, [Stage(5, 0), Stage(0, 10), Stage(1, 10), Stage(0, 0), Stage(5, 0)])
    times = list(ArrivalSchedule(curve, "constant"))
    assert len(times) == 10
    assert all(5 < t < 6 for t in times)


@given(st.lists(st.floats(min_value=0.01, max_value=100), min_size=1, max_size=20))
def test_split_sums_to_the_whole(weights: list[float]) -> None:
    ids = [f"a{i}" for i in range(len(weights))]
    shares = split(ids, dict(zip(ids, weights, strict=True)))
    assert sum(s.share for s in shares) == pytest.approx(1.0, abs=1e-12)
    assert all(0 < s.phase <= 1 for s in shares)
    for s, w in zip(shares, weights, strict=True):
        assert s.share == pytest.approx(w / sum(weights), rel=1e-6)


def test_bad_arguments_are_refused() -> None:
    curve = RateCurve(1, [Stage(1, 1)])
    with pytest.raises(ValueError):
        ArrivalSchedule(curve, "burst")
    with pytest.raises(ValueError):
        ArrivalSchedule(curve, "constant", share=0)
