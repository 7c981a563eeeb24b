"""The benchmark suite's pure parts: a 15-minute `make bench` must not fail at the end on its own report."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from bench import lib, report, run, sampling


def _trial(
    rate: float, achieved: float, lag_p99: float, cpu: float, kernel_s: float, target_busy: float = 0.5
) -> lib.Trial:
    results = {
        "send_lag_ms": {"p50": 0.8, "p99": lag_p99, "p99.9": lag_p99 * 2, "max": lag_p99 * 3},
        "latency_ms": {"p50": 1.0, "p99": 3.0},
        "totals": {"ok": int(achieved * 10), "failed": 0, "dropped": 0},
        "intervals": [{"t": t, "ok": achieved, "failed": 0} for t in range(2, 12)],
    }
    samples = [
        lib.Sample(0.0, {1: 0.0}, {1: 1 << 20}, {}, sys={1: 0.0}),
        lib.Sample(10.0, {1: cpu * 10}, {1: 1 << 20}, {}, sys={1: kernel_s}, connections=300),
    ]
    trial = lib.Trial("fast", rate, 10, results, cpu, 0.05, "cmd", samples, 1, 2, None, [60.0, 40.0], 2)
    trial.target_busy = target_busy
    return trial


def test_trial_figures() -> None:
    held = _trial(60_000, 60_000, 2.0, 0.6, 3.0)
    assert held.sustained
    assert held.rps == 60_000
    assert held.agent_kernel == pytest.approx(0.5)
    assert held.per_cpu_second == pytest.approx(100_000)
    assert held.max_connections == 300
    assert not _trial(60_000, 60_000, 6.0, 0.6, 3.0).sustained  # send lag beyond the rule
    assert not _trial(60_000, 50_000, 2.0, 0.6, 3.0).sustained  # rate not achieved


def test_a_trial_that_fails_with_the_target_core_full_is_target_bound() -> None:
    assert _trial(60_000, 60_000, 2.0, 0.6, 3.0, target_busy=1.0).verdict == "holds"
    assert _trial(80_000, 50_000, 2.0, 0.6, 3.0, target_busy=0.99).verdict == "target-bound"
    assert _trial(80_000, 50_000, 9.0, 0.95, 3.0, target_busy=0.99).verdict == "saturated"  # agent full too
    assert _trial(80_000, 50_000, 9.0, 0.6, 3.0, target_busy=0.7).verdict == "saturated"
    # the rate achieved, the send lag over the rule: the agent's own, even with the target's core full
    assert _trial(80_000, 80_000, 9.0, 0.6, 3.0, target_busy=0.99).verdict == "saturated"


def test_busiest_core_window() -> None:
    sampler = lib.Sampler([])
    # core 1: idle for 2 s, then fully busy for 2 s (100 jiffies per second)
    sampler.samples = [
        lib.Sample(float(t), {}, {}, {}, cores=[(0, 100 * t), (max(0, 100 * (t - 2)), 100 * t)])
        for t in range(5)
    ]
    assert sampler.busiest_core(1, 2.0) == pytest.approx(1.0)
    assert sampler.busiest_core(1, 4.0) == pytest.approx(0.5)
    assert sampler.busiest_core(0, 2.0) == pytest.approx(0.0)
    assert sampler.busiest_core(5, 2.0) is None


def test_the_findings_name_the_target_when_it_was_the_limit(tmp_path: Path) -> None:
    held = _trial(60_000, 60_000, 2.0, 0.6, 3.0)
    f = run.Figures(quick=True)
    f.wrk = [
        {"cmd": "wrk", "rps": 66_000.0, "connections": 50, "cpu": 1.0, "kernel": 0.9, "target_busy": 1.0}
    ]
    f.maxima = {"fast": 60_000.0}
    f.searches = {"fast": [held, _trial(90_000, 50_000, 9.0, 0.6, 3.0, target_busy=0.99)]}
    path = tmp_path / "benchmarks.md"
    report.write_report(f, path)
    text = path.read_text()
    assert "The target was the limit, not the agent." in text
    assert "At that cost a whole core would carry 100,000 requests/s" in text
    assert "at 90,000/s it was 99% busy in the busiest window while the agent used 60%" in text
    assert "| target-bound |" in text
    f.searches = {"fast": [held, _trial(90_000, 50_000, 9.0, 0.99, 3.0, target_busy=0.99)]}
    report.write_report(f, path)
    text = path.read_text()
    assert "The agent's core was the limit." in text  # both cores full: the agent's is named
    assert "(90,000/s) the\n   agent used 99% of its core" in text
    f.searches = {"fast": [held, _trial(90_000, 90_000, 9.0, 0.8, 3.0)]}  # everything sent, but late
    report.write_report(f, path)
    assert "bounded by the send lag rule" in path.read_text()


def test_report_renders_from_figures(tmp_path: Path) -> None:
    held = _trial(60_000, 60_000, 2.0, 0.64, 3.7)
    f = run.Figures(quick=True)
    f.wrk = [{"cmd": "wrk", "rps": 140_000.0, "connections": 50, "cpu": 1.0, "kernel": 0.91}]
    f.locust = [{"cmd": "locust", "rps": 10_000.0, "users": 50, "cpu": 1.0, "kernel": 0.1}]
    f.closed = [
        {"engine": "fast", "connections": 10, "rps": 110_000.0, "cpu": 1.0, "kernel": 0.6, "cmd": "c"},
        *(
            {"engine": "httpx", "connections": n, "rps": rps, "cpu": 1.0, "kernel": 0.2, "cmd": "c"}
            for n, rps in ((1000, 15_000.0), (1, 8_000.0), (10, 16_000.0))
        ),
    ]
    f.maxima = {"fast": 60_000.0}
    f.searches = {"fast": [_trial(90_000, 70_000, 40.0, 0.9, 5.0), held]}
    f.fractions = {"fast": [held]}
    f.sampled = {
        "rate": 54_000.0,
        "trial": held,
        "parts": Counter({sampling.WRITE: 3, sampling.LOOP: 1}),
        "lines": Counter({"agents/x.py:1 `y`": 2}),
        "samples": 4,
    }
    path = tmp_path / "benchmarks.md"
    report.write_report(f, path)
    text = path.read_text()
    assert "| fast engine >= 0.5x wrk | 0.43x | **no** |" in text
    assert "(closed loop per CPU-second, slowest / fastest) | 0.50 | **no** |" in text
    assert "section 4 too) | 0.94 | yes |" in text  # 15,000 at 1,000 against 16,000 at 10
    assert "| fast | 60,000/s | 0.43x | 6.00x | 64% |" in text  # the trial that held, not the last one
    assert "wrk spent 91% of its CPU in the" in text
    assert "needs the whole request, kernel included, under 10 µs of CPU; the agent spends 10.7 µs" in text
    assert "| write system call" in text and "75.0%" in text


def test_the_soak_says_how_many_connections_the_agent_held(tmp_path: Path) -> None:
    soak = _trial(28_000, 28_000, 2.0, 0.4, 1.0)
    soak.results["intervals"] = [
        {"t": t, "ok": 28_000, "failed": 0, "connections": c, "service_p99": ms}
        for t, (c, ms) in enumerate([(40, 1.0), (60, 2.0), (1_700, 80.5), (50, 1.5)])
    ]
    f = run.Figures(quick=True)
    f.soak = {"rate": 28_000.0, "seconds": 4, "trial": soak}
    path = tmp_path / "benchmarks.md"
    report.write_report(f, path)
    text = path.read_text()
    assert "The agent held 60 connections in the median second and 1,700 at" in text
    assert "had a service time p99 of 80.5 ms" in text


def test_empty_figures_still_render(tmp_path: Path) -> None:
    path = tmp_path / "benchmarks.md"
    report.write_report(run.Figures(quick=True), path)
    assert "## Summary against the goals" in path.read_text()


def test_samples_are_attributed_to_the_innermost_project_frame() -> None:
    root = str(lib.ROOT)
    raw = "\n".join(
        [
            # the write line of the fast engine, innermost: the write system call
            f"main (x.py:1);send ({root}/agents/fast_engine.py:{_line('agents/fast_engine.py')}) 5",
            # library code called from the recorder counts for the recorder
            "run (x.py:1);_fold (agents/recorder.py:10);update (/usr/lib/python3.11/collections/__init__.py:690) 3",
            # uvloop's own loop
            "main (x.py:1);Runner.run (/usr/lib/python3.11/asyncio/runners.py:118) 2",
            "garbage line",
        ]
    )
    parts, lines, total = sampling.attribute(raw)
    assert total == 10
    assert sum(lines.values()) == 8  # the loop's samples have no project line
    assert parts[sampling.WRITE] == 5
    assert parts[sampling.LOOP] == 2
    assert parts["recorder and once-a-second histogram fold"] == 3


def _line(path: str) -> int:
    """The line of ``path`` that writes a request (where the fast engine calls transport.write)."""
    for number, text in enumerate((lib.ROOT / path).read_text().splitlines(), start=1):
        if "transport.write(" in text:
            return number
    raise AssertionError(f"no transport.write in {path}")


def test_the_in_flight_section_and_goal(tmp_path: Path) -> None:
    f = run.Figures(quick=True)
    slow = _trial(10_000, 10_000, 2.0, 0.7, 1.0)
    slow.results["latency_ms"]["mean"] = 101.0
    late = _trial(10_000, 10_000, 7.0, 0.8, 1.0)
    f.concurrency = {
        "httpx": [run.InFlight(0, _trial(10_000, 10_000, 2.0, 0.7, 1.0), 12), run.InFlight(100, slow, 1010)]
    }
    path = tmp_path / "benchmarks.md"
    report.write_report(f, path)
    text = path.read_text()
    assert "## 9. Open model by requests in flight" in text
    assert "| httpx | 10,000 | 100 ms | 10,000 | 1,010 | 1,010 | 2.000 |" in text
    assert "from a few to 1,000 requests in flight (section 9) | holds at 2 of 2" in text
    f.concurrency["httpx"].append(run.InFlight(100, late, 1000))
    report.write_report(f, path)
    assert "holds at 2 of 3" in path.read_text()


def test_stolen_time_is_shown_per_trial_and_for_the_suite(tmp_path: Path) -> None:
    assert lib.stolen_share((100, 1_000), (130, 1_200)) == pytest.approx(0.15)
    assert lib.stolen_share((100, 1_000), (100, 1_000)) is None
    trial = _trial(20_000, 20_000, 2.0, 0.4, 1.0)
    trial.stolen = 0.26
    f = run.Figures(quick=True, stolen=0.12)
    f.wrk = [{"cmd": "wrk", "rps": 140_000.0, "connections": 50, "cpu": 1.0, "kernel": 0.9, "stolen": 0.31}]
    f.searches = {"fast": [trial]}
    path = tmp_path / "benchmarks.md"
    report.write_report(f, path)
    text = path.read_text()
    assert "12% over the whole suite" in text
    assert "| 60%/40% | 26% |" in text  # the trial's row: cores busy, then stolen
    assert "| - | 31% | `wrk` |" in text  # wrk's row: target core busy (not measured here), stolen, command


def test_a_memory_rise_within_the_allocators_steps_is_too_short_to_tell() -> None:
    mib = 1024 * 1024
    window = {"low": 100 * mib, "high": 101 * mib, "first_peak": 100 * mib, "hours": 0.1}
    assert lib.growth_verdict(None, mib) is None
    assert lib.growth_verdict({**window, "last_peak": 100.05 * mib}, mib) == "flat"  # under 0.1 MiB allowed
    assert lib.growth_verdict({**window, "last_peak": 100.4 * mib}, mib) == "unresolved"
    assert lib.growth_verdict({**window, "last_peak": 101 * mib}, mib) == "growing"
    assert lib.growth_verdict({**window, "last_peak": 99 * mib}, mib) == "flat"  # shrinking is flat
    long_run = {**window, "hours": 1.0}
    assert lib.growth_verdict({**long_run, "last_peak": 100.9 * mib}, mib) == "flat"
    assert [report._yes(v) for v in ("flat", "growing", "unresolved", None)] == [
        "yes",
        "**no**",
        "too short to tell",
        "-",
    ]


@pytest.mark.integration
def test_this_machine_reports_its_stolen_jiffies() -> None:
    stolen, total = lib.jiffies_stolen()  # /proc/stat
    assert 0 <= stolen <= total


def test_the_https_section_shows_cpu_per_request_and_resumed_handshakes(tmp_path: Path) -> None:
    f = run.Figures(quick=True)
    f.tls = [
        {"trial": "wrk, HTTPS, keep-alive", "rps": 50_000.0, "cpu": 0.35, "target_busy": 0.9, "resumed": None,
         "cmd": "taskset -c 0 wrk -t1 -c50 -d10s URL/"},
        {"trial": "fast, HTTPS, a connection per request", "rps": 800.0, "cpu": 0.6, "cpu_us_per_request": 760.4,
         "target_busy": 0.6, "resumed": 0.995, "cmd": "c"},
    ]  # fmt: skip
    path = tmp_path / "benchmarks.md"
    report.write_report(f, path)
    text = path.read_text()
    assert "## 10. HTTPS: TLS against nginx" in text
    assert (
        "| wrk, HTTPS, keep-alive | 50,000 | 35% | 7.0 | 90% |  | `taskset -c 0 wrk -t1 -c50 -d10s URL/` |"
        in text
    )
    assert "| fast, HTTPS, a connection per request | 800 | 60% | 760.4 | 60% | 100% | `c` |" in text
    report.write_report(run.Figures(quick=True), path)
    assert "## 10." not in path.read_text()  # nothing measured, no section


def test_the_http2_section_sets_ours_beside_h2load_and_httpx(tmp_path: Path) -> None:
    f = run.Figures(quick=True)
    row = {"transport": "h2c", "streams": 100, "failed": 0}
    f.http2 = [
        {**row, "generator": "loadgen", "round": 1, "rps": 100_000.0, "cpu_us_per_request": 9.0},
        {**row, "generator": "loadgen", "round": 2, "rps": 120_000.0, "cpu_us_per_request": 8.0},
        {**row, "generator": "h2load", "round": 1, "rps": 150_000.0, "cpu_us_per_request": 6.0},
        {**row, "generator": "httpx", "round": 1, "rps": 1_100.0, "cpu_us_per_request": 700.0},
    ]
    path = tmp_path / "benchmarks.md"
    report.write_report(f, path)
    text = path.read_text()
    assert "## 12. HTTP/2 against nginx" in text
    assert "| h2c | 100 | 100,000–120,000 | 9.0 | 150,000 | 6.0 | 1,100 | 700.0 | 0.73x | 100.00x |" in text
    report.write_report(run.Figures(quick=True), path)
    assert "## 12." not in path.read_text()
