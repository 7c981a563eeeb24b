"""Whose fault a saturated run is: the advice follows the figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from coordinator.aggregate import RunAggregate
from coordinator.results import AgentInfo, build_results
from coordinator.saturation import (
    MANY_CONNECTIONS,
    WARN_EVERY,
    LiveWarnings,
    connections_notable,
    generator_behind,
    live_reasons,
    saturation_cause,
)
from loadgen.curve import RateCurve
from loadgen.profile_file import load_profile
from loadgen.reports.warnings import connections_advice, drop_cause, dropped_warning, stolen_warning
from loadgen.wire import Interval


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
    text = dropped_warning(1234, 10_000, False, 2.5, 0.56, 31.6)
    assert text.startswith("GENERATOR SATURATED: 1234 arrivals dropped at max_in_flight=10000: ")
    assert "send lag p99 2.5 ms, agents at most 56% of a core" in text
    assert "service time p99 31.6 ms" in text
    assert "the target is the limit, more agents will not help" in text
    assert "add agents" not in text


def test_drops_while_the_generator_fell_behind_ask_for_agents() -> None:
    assert generator_behind(12.0, 0.6) and generator_behind(1.0, 0.99)
    assert drop_cause(True, 12.0, 0.6, 3.0) == "the generator fell behind its schedule; add agents or cores"
    assert "add agents or cores" in dropped_warning(5, 100, True, 1.0, 0.99, None)


def test_live_reasons_and_advice() -> None:
    why, advice = live_reasons(40, 3.0, 0.5, 30.0)
    assert why == ["40 arrivals dropped at max_in_flight"]
    assert "the target answered slower than requests arrived (service time p99 30.0 ms)" in advice
    why, advice = live_reasons(0, 8.0, 0.97, None)
    assert why == ["send lag p99 8.0 ms", "an agent at 97% CPU"]
    assert advice == "These numbers include the generator's own delays: add agents or cores."
    _, advice = live_reasons(40, 8.0, 0.5, 30.0)
    assert "add agents or cores" in advice


def test_many_connections_are_pointed_out_only_when_the_generator_fell_behind_uncapped() -> None:
    many = MANY_CONNECTIONS + 1
    assert connections_notable(True, many, capped=False)
    advice = connections_advice(many)
    assert f"{many:,} connections" in advice and "load.max_connections" in advice
    assert not connections_notable(False, many, capped=False)  # kept its schedule: not its problem
    assert not connections_notable(True, many, capped=True)  # the user chose the pool already
    assert not connections_notable(True, MANY_CONNECTIONS, capped=False)


def test_stolen_time_is_named_only_when_the_generator_fell_behind() -> None:
    why, advice = live_reasons(0, 9.0, 0.5, None, stolen=0.26)
    assert why == [
        "send lag p99 9.0 ms",
        "an agent's host lost 26% of its CPU time to other guests of its hypervisor (steal)",
    ]
    assert "on hosts whose CPUs are not shared with other guests" in advice
    why, advice = live_reasons(0, 9.0, 0.5, None, stolen=0.02)  # noise: not named
    assert why == ["send lag p99 9.0 ms"]
    assert advice == "These numbers include the generator's own delays: add agents or cores."
    why, advice = live_reasons(40, 2.0, 0.5, 30.0, stolen=0.3)  # kept its schedule: the target's fault
    assert why == ["40 arrivals dropped at max_in_flight"] and "steal" not in advice
    text = stolen_warning("x", 0.26, 0.041)
    assert "agent x's host lost up to 26% of its CPU time in a second" in text and "4.1% over the run" in text


def _results_of_one_busy_agent(
    tmp_path: Path, load: str, stolen: float = 0.0, cpu: float = 1.0, late_second: bool = False
) -> dict[str, Any]:
    """results.json of a run whose one agent used a full core (``cpu``) with 3,000 connections open; with
    ``late_second``, one of its seconds was saturated (its send lag) though the run as a whole was not."""
    path = tmp_path / "p.toml"
    path.write_text(
        f'target = "http://127.0.0.1:1"\n[load]\nstages = [{{ duration = "2s", rate = 10 }}]\n{load}\n'
        '[[requests]]\nname = "a"\npath = "/"\n'
    )
    profile = load_profile(path)
    agg = RunAggregate(["a"], RateCurve(profile.load.start_rate, profile.load.stages))
    agg.add("x", Interval(0, 0, 0, 0, 0, {}, b"", cpu, 3_000, stolen=stolen))
    agg.close_all()
    agent = AgentInfo("x", "h", 1, state="finished")
    seconds = [{"t": 0, "saturated": True}] if late_second else []
    return build_results(
        profile, agg, seconds, [agent], [], started_at=0.0, elapsed_s=2.0, agents_expected=1, final=True
    )


def test_the_results_point_out_many_connections_of_an_agent_at_a_full_core(tmp_path: Path) -> None:
    res = _results_of_one_busy_agent(tmp_path, "")
    assert res["agents"][0]["connections_max"] == 3_000
    assert any("up to 3,000 connections" in w for w in res["warnings"])
    capped = _results_of_one_busy_agent(tmp_path, "max_in_flight = 5000\nmax_connections = 3000")
    assert not any("connections while" in w for w in capped["warnings"])


def test_the_results_name_an_agent_whose_host_lost_time_to_its_hypervisor(tmp_path: Path) -> None:
    res = _results_of_one_busy_agent(tmp_path, "", stolen=0.2)
    assert (res["agents"][0]["stolen_max"], res["agents"][0]["stolen_mean"]) == (0.2, 0.2)
    assert any("agent x's host lost up to 20% of its CPU time" in w for w in res["warnings"])
    quiet = _results_of_one_busy_agent(tmp_path, "", stolen=0.01)
    assert not any("hypervisor" in w for w in quiet["warnings"])
    on_time = _results_of_one_busy_agent(tmp_path, "", stolen=0.2, cpu=0.3)  # kept its schedule throughout
    assert not any("hypervisor" in w for w in on_time["warnings"])
    late_once = _results_of_one_busy_agent(tmp_path, "", stolen=0.2, cpu=0.3, late_second=True)
    assert any("agent x's host lost up to 20%" in w for w in late_once["warnings"])


def test_live_warnings_are_throttled_per_cause() -> None:
    warnings = LiveWarnings()
    assert warnings.due(True, 100.0)  # the generator behind: shown
    assert not warnings.due(True, 101.0)  # the same cause within WARN_EVERY: not again
    assert warnings.due(False, 102.0)  # the target the limit: a new cause shows at once
    assert not warnings.due(False, 102.0 + WARN_EVERY - 0.5)
    assert not warnings.due(True, 100.0 + WARN_EVERY - 0.01)
    assert warnings.due(True, 100.0 + WARN_EVERY)  # its wait is over
    assert warnings.due(False, 102.0 + WARN_EVERY)
    assert not warnings.due(False, 102.0 + WARN_EVERY + 1.0)
