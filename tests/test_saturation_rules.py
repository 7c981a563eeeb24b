"""The run-level saturation rules of results.json, on both sides of their edges.

Only :func:`coordinator.results.build_results` and the public names of :mod:`coordinator.saturation` are
used: the aggregate is fed the agents' interval messages as a real run feeds it (a :class:`Recorder` per
second), so these tests do not depend on how the document is put together inside.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agents.recorder import Recorder
from coordinator.aggregate import RunAggregate
from coordinator.results import AgentInfo, build_results
from coordinator.saturation import CPU_SATURATED, SATURATION_LAG_P99_MS
from loadgen.curve import RateCurve
from loadgen.profile_file import load_profile

RATE = 100  # arrivals per second in the built runs


def run_results(
    tmp_path: Path,
    seconds: int,
    *,
    lag_s: Callable[[int, int], float] = lambda second, k: 0.001,
    cpu: Callable[[int], float] = lambda second: 0.4,
) -> dict[str, Any]:
    """results.json of a ``seconds``-long run of one agent at RATE/s: arrival ``k`` of ``second`` left
    ``lag_s(second, k)`` late, every request answered in 1 ms, the agent used ``cpu(second)`` of a core."""
    path = tmp_path / "p.toml"
    path.write_text(
        f'target = "http://127.0.0.1:1"\n[load]\narrival = "constant"\n'
        f'stages = [{{ duration = "0s", rate = {RATE} }}, {{ duration = "{seconds}s", rate = {RATE} }}]\n'
        '[[requests]]\nname = "a"\npath = "/"\n'
    )
    profile = load_profile(path)
    agg = RunAggregate(["a"], RateCurve(profile.load.start_rate, profile.load.stages))
    for second in range(seconds):
        rec = Recorder(["a"])
        for k in range(RATE):
            lag = lag_s(second, k)
            rec.scheduled(0, lag)
            intended = second + k / RATE
            rec.response(0, intended, intended + lag, intended + lag + 0.001, 200)
        rec.seal_arrivals()
        agg.add("x", rec.take_interval(second, 0, cpu(second)))
    agg.close_all()
    agent = AgentInfo("x", "h", 1, state="finished")
    return build_results(
        profile,
        agg,
        [],
        [agent],
        [],
        started_at=0.0,
        elapsed_s=float(seconds),
        agents_expected=1,
        final=True,
    )


def saturation_warnings(res: dict[str, Any]) -> list[str]:
    return [w for w in res["warnings"] if "SATURATED" in w]


def test_a_run_well_within_its_means_is_not_saturated(tmp_path: Path) -> None:
    res = run_results(tmp_path, 60)
    assert res["totals"]["scheduled"] == 60 * RATE and res["totals"]["dropped"] == 0
    assert res["generator_saturated"] is False
    assert res["saturation_cause"] is None
    assert saturation_warnings(res) == []
    assert res["send_lag_ms"]["p99"] == pytest.approx(1.0, rel=0.01)


def full_core_for(n: int) -> Callable[[int], float]:
    """An agent at a full core in its first ``n`` seconds, at 40% in the others."""
    return lambda second: CPU_SATURATED if second < n else 0.4


@pytest.mark.parametrize(
    ("seconds", "edge"),
    [
        (60, 3),  # more than 5% of the run: 60 // 20 = 3 seconds
        (200, 10),
        (20, 2),  # a short run: never fewer than 2 seconds
        (10, 2),
    ],
)
def test_a_full_core_for_5_percent_of_the_run_saturates_it(tmp_path: Path, seconds: int, edge: int) -> None:
    below = run_results(tmp_path, seconds, cpu=full_core_for(edge - 1))
    assert below["generator_saturated"] is False, below["warnings"]
    assert not any("used a full CPU core" in w for w in below["warnings"])
    at = run_results(tmp_path, seconds, cpu=full_core_for(edge))
    assert at["generator_saturated"] is True
    assert at["saturation_cause"] == "generator"
    [warning] = [w for w in at["warnings"] if "used a full CPU core" in w]
    assert f"for {edge} of {seconds} s" in warning


def test_just_under_a_full_core_never_counts(tmp_path: Path) -> None:
    res = run_results(tmp_path, 20, cpu=lambda second: CPU_SATURATED - 0.001)
    assert res["generator_saturated"] is False, res["warnings"]


@pytest.mark.parametrize("factor", [0.96, 1.04])
def test_the_send_lag_rule_at_its_edge(tmp_path: Path, factor: float) -> None:
    """Every arrival equally late, just under and just over SATURATION_LAG_P99_MS."""
    lag = SATURATION_LAG_P99_MS * factor / 1000.0
    res = run_results(tmp_path, 30, lag_s=lambda second, k: lag)
    over = factor > 1
    assert res["send_lag_ms"]["p99"] == pytest.approx(SATURATION_LAG_P99_MS * factor, rel=0.01)
    assert res["generator_saturated"] is over, res["warnings"]
    assert res["saturation_cause"] == ("generator" if over else None)
    assert any("send lag p99" in w for w in saturation_warnings(res)) is over


@pytest.mark.parametrize(("late_per_second", "over"), [(1, False), (2, True)])
def test_the_send_lag_rule_is_the_99th_percentile_of_the_run(
    tmp_path: Path, late_per_second: int, over: bool
) -> None:
    """1% of arrivals 50 ms late leaves p99 on time; 2% puts it over the limit."""
    res = run_results(tmp_path, 30, lag_s=lambda second, k: 0.050 if k < late_per_second else 0.001)
    assert (res["send_lag_ms"]["p99"] > SATURATION_LAG_P99_MS) is over, res["send_lag_ms"]
    assert res["generator_saturated"] is over
