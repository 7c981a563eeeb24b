"""The journey benchmark's pure parts (bench/flows.py): its order, its arithmetic, its profiles and its
section of the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import flows, lib, report, run


def test_the_side_by_side_trials_are_interleaved() -> None:
    assert flows.order(3) == list("ABCCBAABC")


def test_cpu_per_request_is_taken_over_the_hold_without_its_edges() -> None:
    intervals = [{"t": t, "ok": 1000, "failed": 0, "cpu_max": 0.5} for t in range(8)]
    intervals[0]["cpu_max"] = intervals[7]["cpu_max"] = 0.9  # ramp and the last second: left out
    intervals[3]["failed"] = 1000  # failed requests count as completed
    per = flows.hold_cpu_per_request(intervals, ramp=2, seconds=6)  # seconds 3, 4, 5, 6
    assert per is not None
    assert abs(per - 4 * 0.5 / 5000) < 1e-12
    assert flows.hold_cpu_per_request([], 2, 6) is None


def test_ratios_are_paired_within_rounds() -> None:
    trials = [
        {"round": 0, "profile": "A", "us": 10.0},
        {"round": 0, "profile": "B", "us": 11.0},
        {"round": 1, "profile": "B", "us": 24.0},
        {"round": 1, "profile": "A", "us": 20.0},
        {"round": 2, "profile": "A", "us": None},
        {"round": 2, "profile": "B", "us": 9.0},
    ]
    assert flows.paired_ratios(trials, "B", "A") == [1.1, 1.2]
    s = flows.spread([1.0, 3.0, 2.0])
    assert s == {"median": 2.0, "min": 1.0, "max": 3.0, "rel": 1.0}
    assert flows.spread([]) is None


def test_steps_sent_but_not_counted_as_scheduled_are_summed() -> None:
    results = {
        "requests": {
            "home": {"scheduled": 5, "ok": 9, "failed": 0},  # not a step of the journey
            "journey.login": {"flow": "journey", "scheduled": 10, "ok": 9, "failed": 1},
            "journey.items": {"flow": "journey", "scheduled": 8, "ok": 9, "failed": 0, "in_flight_at_end": 1},
        }
    }
    assert flows.step_gap(results) == 2


def test_the_journey_search_grows_then_bisects() -> None:
    assert flows.next_rate(2000, 2000, None) == 2500
    assert flows.next_rate(3100, 2500, 3100) == 2800
    assert flows.next_rate(2600, 2500, 2600) is None  # within 5%
    assert flows.next_rate(2000, None, 2000) == 1000


def test_the_profiles_load_and_only_b_skips_the_runner(tmp_path: Path) -> None:
    assert flows._direct(flows.ONE_STEP["B"][0], tmp_path)
    assert not flows._direct(flows.ONE_STEP["C"][0], tmp_path)
    (tmp_path / "users.csv").write_text("user,password\nu1,p1\n", encoding="utf-8")
    assert not flows._direct(flows.JOURNEY, tmp_path)
    from loadgen.profile_file import load_profile

    path = lib.write_profile(tmp_path / "j.toml", "http://127.0.0.1:9", 10, 1, requests=flows.JOURNEY)
    (flow,) = load_profile(path).flows
    assert len(flow.request_steps) == flows.STEPS


def _figures() -> dict[str, Any]:
    one = [
        {
            "profile": p,
            "round": i // 3,
            "rate": 20000.0,
            "achieved": 19990.0,
            "us": {"A": 10.0, "B": 10.5, "C": 12.5}[p] + i * 0.1,
            "proc_us": {"A": 11.0, "B": 11.2, "C": 13.0}[p],
            "agent_cpu": 0.22,
            "lag_p99": 1.5,
            "dropped": 0,
            "failed": 0,
            "stolen": 0.0,
        }
        for i, p in enumerate(flows.order(2))
    ]
    search = [
        {
            "rate": r,
            "steps_per_s": r * 5,
            "agent_cpu": 0.5,
            "us_step": 40.0,
            "lag_p99": 2.0 if ok else 9.0,
            "dropped": 0,
            "failed": 0,
            "errors": {},
            "ok": ok,
            "cmd": "loadgen agent",
        }
        for r, ok in ((2000, True), (2500, True), (3100, False))
    ]
    paired = [
        {"who": "locust", "round": 0, "users": 50, "steps_per_s": 6000.0, "cpu": 1.0, "per_cpu_s": 6000.0},
        {"who": "ours", "round": 0, **search[0], "per_cpu_s": 20000.0},
        {"who": "ours", "round": 1, **search[0], "per_cpu_s": 22000.0},
        {"who": "locust", "round": 1, "users": 50, "steps_per_s": 5000.0, "cpu": 1.0, "per_cpu_s": 5000.0},
        {"who": "plain", "round": 0, **search[0], "steps_per_s": 7500.0, "per_cpu_s": 60000.0},
        {"who": "plain", "round": 1, **search[0], "steps_per_s": 7500.0, "per_cpu_s": 66000.0},
    ]
    for r in paired:
        r.setdefault("failures", 0)
        r.setdefault("cmd", "locust")
    return {
        "started": "2026-12-05 09:00 UTC",
        "quick": True,
        "one_step": {
            "rate": 20000.0,
            "seconds": 6,
            "direct": {"A": True, "B": True, "C": False},
            "trials": one,
        },
        "journey": {"steps": 5, "max_flows": 2500, "best": search[1], "trials": search},
        "paired": paired,
        "fixed_flows": 1500.0,
    }


def test_the_section_renders_the_ratios_and_the_journey() -> None:
    text = "\n".join(flows.section(_figures()))
    assert "## 11. User journeys" in text
    assert "B/A = 1.0" in text and "met" in text
    assert "| loadgen, fast engine, highest sustained rate | 2,500 | 12,500 |" in text
    assert "12,500 steps/s ours (using 50% of its core), 5,500 Locust's (2.3x)" in text
    assert "(a core's worth): 21,000 ours, 5,500 Locust's: 3.9x (median of the rounds)" in text
    ours, theirs, ratio = flows.journey_ratio(_figures())
    assert (ours, theirs) == (12500, 5500.0) and ratio is not None
    eff = flows.efficiency(_figures())["ratio"]
    assert eff is not None and eff["min"] == 20000 / 6000 and eff["max"] == 22000 / 5000
    assert "ours / Locust by round: 3.87x (3.33-4.40)" in text
    assert "a journey step costs 3.00x (3.00-3.00) the CPU of a plain request" in text
    assert "| loadgen, fast engine, plain GET / (one request a step) | - | 7,500 |" in text


def test_the_report_has_the_journeys_and_their_goal(tmp_path: Path) -> None:
    f = run.Figures(quick=True)
    f.journeys = _figures()
    path = tmp_path / "benchmarks.md"
    report.write_report(f, path)
    text = path.read_text()
    assert "a one-step flow within 10% of a plain request" in text
    assert "## 11. User journeys" in text
    report.write_report(run.Figures(quick=True), path)  # none measured: no section
    assert "User journeys" not in path.read_text()
