"""End to end with real processes: coordinator and agents over ZeroMQ on loopback, the built-in target."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import (
    Target,
    Watched,
    free_port,
    loadgen,
    loadgen_bg,
    read_results,
    with_open_files,
    write_profile,
)

pytestmark = pytest.mark.integration


def _accounted(res: dict) -> None:
    t = res["totals"]
    assert t["scheduled"] == t["ok"] + t["failed"] + t["dropped"] + t["in_flight_at_end"]


def test_coordinator_and_two_agents_over_tcp(target: Target, tmp_path: Path) -> None:
    target.reset()
    prof = write_profile(
        tmp_path / "steady.toml", target.url, '[{duration = "0s", rate = 200}, {duration = "4s", rate = 200}]'
    )
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    coord = loadgen_bg(
        "coordinator",
        str(prof),
        "--bind",
        endpoint,
        "--expect-agents",
        "2",
        "--out",
        str(tmp_path / "out"),
        "--join-timeout",
        "30",
    )
    agents = [loadgen_bg("agent", "--connect", endpoint, "--wait", "30") for _ in range(2)]
    try:
        _, err = coord.communicate(timeout=60)
        assert coord.returncode == 0, err
        for a in agents:
            a.communicate(timeout=30)
            assert a.returncode == 0
    finally:
        for p in (coord, *agents):
            p.kill()
            p.communicate()
    res = read_results(tmp_path / "out")
    _accounted(res)
    # constant arrivals: exactly the integral of the curve, split over two agents
    assert res["totals"]["scheduled"] == 800
    assert res["totals"]["ok"] == 800
    # what the server saw is what we counted
    assert target.stats()["by_path"].get("/", 0) == 800
    assert sorted(a["share"] for a in res["agents"]) == [0.5, 0.5]
    assert sum(a["ok"] for a in res["agents"]) == 800
    # the rate per second holds
    per_second = [iv["scheduled"] for iv in res["intervals"][:4]]
    assert per_second == [200, 200, 200, 200]
    assert res["latency_ms"]["p50"] is not None
    assert res["schema"] == 1
    # A run that leaves the generator idle most of the time raises no false alarm from the rules with a wide
    # margin here (drops, a full core: the agents used a few percent of one); the send-lag rule, whose 5 ms
    # a shared machine's scheduler can reach on its own, is checked on a virtual clock
    # (tests/test_fleet_virtual.py).
    assert res["totals"]["dropped"] == 0
    assert all(a["cpu_max"] < 0.5 for a in res["agents"]), res["agents"]
    assert not {w["code"] for w in res["warning_codes"]} & {"dropped", "agent_full_core"}
    assert res["totals"]["planned"] == 800 and res["totals"]["unsent"] == 0


def test_spike_is_delivered(target: Target, tmp_path: Path) -> None:
    stages = '[{duration = "0s", rate = 100}, {duration = "2s", rate = 100}, {duration = "0s", rate = 1000}, {duration = "1s", rate = 1000}, {duration = "0s", rate = 100}, {duration = "2s", rate = 100}]'
    prof = write_profile(tmp_path / "spike.toml", target.url, stages)
    r = loadgen("run", str(prof), "--agents", "2", "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    res = read_results(tmp_path / "out")
    _accounted(res)
    assert res["totals"]["scheduled"] == 1400
    sched = [iv["scheduled"] for iv in res["intervals"][:5]]
    assert sched == [100, 100, 1000, 100, 100]
    assert [iv["target_rate"] for iv in res["intervals"][:5]] == [100, 100, 1000, 100, 100]
    done = [iv["ok"] + iv["failed"] for iv in res["intervals"]]
    assert max(done) >= 900  # completions follow the spike within its second


def test_ramp_follows_the_curve(target: Target, tmp_path: Path) -> None:
    prof = write_profile(tmp_path / "ramp.toml", target.url, '[{duration = "4s", rate = 400}]')
    r = loadgen("run", str(prof), "--agents", "2", "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    res = read_results(tmp_path / "out")
    _accounted(res)
    assert res["totals"]["scheduled"] == 800
    assert [iv["scheduled"] for iv in res["intervals"][:4]] == [50, 150, 250, 350]


def test_stalled_server_shows_in_the_tail(target: Target, tmp_path: Path) -> None:
    """Coordinated omission: freeze the server for 1 s; the open model keeps scheduling, and latency
    measured from the intended send time shows the stall for every request caught behind it."""
    prof = write_profile(
        tmp_path / "co.toml", target.url, '[{duration = "0s", rate = 200}, {duration = "4s", rate = 200}]'
    )
    proc = loadgen_bg("run", str(prof), "--agents", "2", "--out", str(tmp_path / "out"))

    def freeze() -> None:
        time.sleep(3.0)  # process start-up plus about 1.5 s into the run
        target.get("/__freeze?ms=1000", timeout=10)

    th = threading.Thread(target=freeze)
    th.start()
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        th.join(timeout=15)
        proc.kill()
    assert proc.returncode == 0, err
    res = read_results(tmp_path / "out")
    _accounted(res)
    assert res["totals"]["scheduled"] == 800
    assert res["totals"]["ok"] == 800
    lat = res["latency_ms"]
    # ~200 arrivals fall inside the 1 s stall: about a quarter of all requests wait 0..1000 ms.
    assert lat["max"] >= 900
    assert lat["p90"] >= 200
    # service time from the actual send hides most of it for requests that queued in the client
    assert res["service_ms"]["p50"] <= lat["p90"]


def test_broken_profile_is_refused_before_any_traffic(target: Target, tmp_path: Path) -> None:
    target.reset()
    bad = tmp_path / "bad.toml"
    bad.write_text(
        f'target = "{target.url}"\n[load]\nstages = [{{duration = "1s", rate = -5}}]\n[[requests]]\npath = "/"\n'
    )
    r = loadgen("run", str(bad), "--agents", "1")
    assert r.returncode == 2
    assert "bad.toml" in r.stderr and "rate" in r.stderr
    assert "Traceback" not in r.stderr
    assert target.stats()["requests"] == 0


def test_no_agent_means_exit_3(tmp_path: Path, target: Target) -> None:
    prof = write_profile(tmp_path / "p.toml", target.url, '[{duration = "1s", rate = 1}]')
    r = loadgen("coordinator", str(prof), "--bind", f"tcp://127.0.0.1:{free_port()}", "--join-timeout", "1")
    assert r.returncode == 3
    assert "0 of 1 agents joined" in r.stderr


def test_dead_target_is_counted_as_connect_errors(tmp_path: Path) -> None:
    prof = write_profile(
        tmp_path / "dead.toml",
        f"http://127.0.0.1:{free_port()}",
        '[{duration = "0s", rate = 50}, {duration = "2s", rate = 50}]',
    )
    r = loadgen("run", str(prof), "--agents", "1", "--out", str(tmp_path / "out"))
    # no threshold in the profile: a run that completed is a success, whatever the target answered
    assert r.returncode == 0, r.stderr
    res = read_results(tmp_path / "out")
    _accounted(res)
    assert res["totals"]["scheduled"] == 100
    assert res["errors"].get("connect") == 100, (res["errors"], r.stderr)
    # ... but not one that looks like it: said in the results, the terminal and the report
    assert "NO REQUEST SUCCEEDED: all 100 completed requests failed (connect 100)" in res["warnings"]
    assert "NO REQUEST SUCCEEDED" in r.stdout
    assert "NO SUCCESSFUL REQUEST" in (tmp_path / "out" / "report.html").read_text()


def test_latency_matches_a_known_distribution(target: Target, tmp_path: Path) -> None:
    """Ground truth: the target delays 90% of requests by 10 ms and 10% by 100 ms."""
    requests = (
        '[[requests]]\nname = "fast"\npath = "/delay?ms=10"\nweight = 9\n'
        '[[requests]]\nname = "slow"\npath = "/delay?ms=100"\nweight = 1\n'
    )
    prof = write_profile(
        tmp_path / "truth.toml",
        target.url,
        '[{duration = "0s", rate = 100}, {duration = "5s", rate = 100}]',
        requests=requests,
    )
    r = loadgen("run", str(prof), "--agents", "2", "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    res = read_results(tmp_path / "out")
    _accounted(res)
    fast, slow = res["requests"]["fast"], res["requests"]["slow"]
    assert fast["ok"] + slow["ok"] == 500
    assert 400 < fast["ok"] < 490  # weights 9:1, drawn at random
    for figures, ms in ((fast, 10.0), (slow, 100.0)):
        for kind in ("latency_ms", "service_ms"):
            # the target's timers have millisecond resolution (libuv), so a delay may end up to 1 ms early
            assert ms - 1 <= figures[kind]["p50"] <= ms + 5, (kind, figures[kind])
            assert ms - 1 <= figures[kind]["min"]
    overall = res["latency_ms"]
    assert 9.0 <= overall["p80"] <= 15.0
    assert 99.0 <= overall["p95"] <= 105.0
    assert 100.0 <= overall["max"] <= 120.0
    # Nothing dropped, and the generator kept up: of 500 arrivals the 5 latest make the p99 send lag, so one
    # pause of this shared two-core machine (agents, coordinator and target on it) over 5 ms can put the run
    # over the saturation rule; that is the rule working, not the latencies above being wrong. A pause has
    # been seen to delay the latest 2% (p98 7.9 ms), so the check is that nine in ten were on time.
    assert res["totals"]["dropped"] == 0
    if res["generator_saturated"]:
        assert res["saturation_cause"] == "generator", res["warnings"]
        assert res["send_lag_ms"]["p90"] < 5.0, res["send_lag_ms"]


def test_abort_on_fail_stops_a_run_whose_threshold_is_lost(target: Target, tmp_path: Path) -> None:
    prof = write_profile(
        tmp_path / "abort.toml",
        target.url,
        '[{duration = "0s", rate = 50}, {duration = "30s", rate = 50}]',
        extra='thresholds = ["p99 < 5ms", "requests >= 1000"]\nabort_on_fail = true\nabort_grace = "2s"',
        requests='[[requests]]\npath = "/delay?ms=20"\n',
    )
    started = time.monotonic()
    r = loadgen("run", str(prof), "--agents", "1", "--out", str(tmp_path / "out"))
    assert r.returncode == 1, r.stderr
    assert time.monotonic() - started < 20  # well before the profile's 30 s
    res = read_results(tmp_path / "out")
    assert "p99 < 5ms" in res["aborted"]
    assert any(e["type"] == "aborted" for e in res["events"])
    assert res["passed"] is False
    _accounted(res)
    assert "RUN ABORTED EARLY" in (tmp_path / "out" / "summary.md").read_text()


def test_budget_stops_the_run_and_costs_are_reported(target: Target, tmp_path: Path) -> None:
    prof = write_profile(
        tmp_path / "paid.toml",
        target.url,
        '[{duration = "0s", rate = 100}, {duration = "30s", rate = 100}]',
        extra="budget = 1.0",
        requests='[[requests]]\nname = "paid"\npath = "/"\ncost = 0.005\n',
    )
    r = loadgen("run", str(prof), "--agents", "1", "--out", str(tmp_path / "out"))
    assert r.returncode == 1, r.stderr
    res = read_results(tmp_path / "out")
    cost = res["cost"]
    assert cost["budget_exceeded"] is True
    # checked every second: stops within about two seconds' spending of the budget
    assert 1.0 < cost["total"] <= 1.0 + 2 * 100 * 0.005
    assert cost["by_request"]["paid"] == pytest.approx(res["requests"]["paid"]["count"] * 0.005)
    assert res["totals"]["scheduled"] < 1500
    assert "budget exceeded" in res["aborted"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl_c", "sigterm"])
def test_ctrl_c_stops_the_agents_and_still_writes_results(
    target: Target, tmp_path: Path, sig: signal.Signals
) -> None:
    prof = write_profile(
        tmp_path / "long.toml", target.url, '[{duration = "0s", rate = 100}, {duration = "60s", rate = 100}]'
    )
    run = Watched("run", str(prof), "--agents", "2", "--out", str(tmp_path / "out"))
    try:
        run.wait_for("starting 'long'")
        time.sleep(2.5)
        run.proc.send_signal(sig)
        assert run.wait(timeout=30) == 3, run.stderr()
        assert "ABORTING the run: interrupted by the operator" in run.stderr()
    finally:
        run.kill()
    res = read_results(tmp_path / "out")
    assert res["final"] is True and res["interrupted"] is True
    _accounted(res)
    assert 150 <= res["totals"]["scheduled"] <= 400
    assert res["totals"]["ok"] == res["totals"]["scheduled"]
    assert {a["state"] for a in res["agents"]} == {"finished"}


def test_httpx_engine_runs_the_same_profile(target: Target, tmp_path: Path) -> None:
    target.reset()
    prof = write_profile(
        tmp_path / "hx.toml", target.url, '[{duration = "0s", rate = 100}, {duration = "2s", rate = 100}]'
    )
    r = loadgen("run", str(prof), "--agents", "1", "--engine", "httpx", "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    res = read_results(tmp_path / "out")
    _accounted(res)
    assert res["totals"]["ok"] == 200 == target.stats()["by_path"]["/"]


def _one_agent_run(tmp_path: Path, target: Target, load: str, rate: int, path: str) -> tuple[dict, str]:
    """``loadgen run`` with one agent: 2 s of constant arrivals at ``rate`` to ``path``, with ``load`` lines
    added to the [load] table; returns results.json (checked to add up) and the run's stderr."""
    prof = tmp_path / "one.toml"
    prof.write_text(
        f'name = "one"\ntarget = "{target.url}"\n\n[load]\narrival = "constant"\ntimeout = "5s"\n{load}\n'
        f'stages = [{{duration = "0s", rate = {rate}}}, {{duration = "2s", rate = {rate}}}]\n\n'
        f'[[requests]]\npath = "{path}"\n'
    )
    proc = loadgen_bg("run", str(prof), "--agents", "1", "--out", str(tmp_path / "out"))
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    res = read_results(tmp_path / "out")
    _accounted(res)
    return res, err


def test_max_connections_bounds_the_connections_and_the_wait_shows_in_latency(
    target: Target, tmp_path: Path
) -> None:
    """6 requests in flight at a time are needed (100/s, 60 ms each); 4 connections carry them, so requests
    queue in the agent. Every one is still sent and answered, and the wait counts in latency (from the
    intended time), not in service time."""
    target.reset()
    before = target.stats()["connections_total"]
    res, _ = _one_agent_run(tmp_path, target, "max_connections = 4", 100, "/delay?ms=60")
    assert res["totals"]["ok"] == 200
    assert target.stats()["connections_total"] - before - 1 <= 4  # less the connection asking for the stats
    # 4 connections serve about 66/s of the 100/s: the queue grows to about 70 requests by the end
    assert res["latency_ms"]["max"] >= 500
    assert res["service_ms"]["p50"] < 200  # the answer itself still takes about 60 ms
    [agent] = res["agents"]
    assert agent["connections_max"] == 4  # what the agent reports it held
    assert 0.0 <= agent["stolen_mean"] <= agent["stolen_max"] <= 1.0  # its host's, from /proc/stat
    assert all(0.0 <= i["stolen"] <= agent["stolen_max"] for i in res["intervals"])
    assert max(i["connections"] for i in res["intervals"]) == 4


def test_drops_behind_a_slow_target_are_blamed_on_the_target(target: Target, tmp_path: Path) -> None:
    """200/s of 200 ms requests need 40 in flight; the limit is 10. The agent keeps its schedule, so the
    warning says the target is the limit instead of asking for more agents."""
    res, err = _one_agent_run(tmp_path, target, "max_in_flight = 10", 200, "/delay?ms=200")
    assert res["totals"]["dropped"] > 200
    assert res["generator_saturated"] is True
    [warning] = [w for w in res["warnings"] if "dropped at max_in_flight=10" in w]
    assert "the target is the limit, more agents will not help" in warning
    assert res["saturation_cause"] == "in_flight_limit"
    assert "the target answered slower than requests arrived" in err  # the live warning too


def test_an_agent_short_of_file_descriptors_waits_for_connections_instead_of_failing(
    target: Target, tmp_path: Path
) -> None:
    """The agent's open-file limit is 200 and cannot be raised: 1,000/s of 300 ms requests would need about
    300 connections. It opens at most what the limit leaves, says so, and every request is answered: none is
    reported as the target refusing connections (EMFILE from connect)."""
    target.reset()
    before = target.stats()["connections_total"]
    prof = tmp_path / "fds.toml"
    prof.write_text(
        f'name = "fds"\ntarget = "{target.url}"\n\n[load]\narrival = "constant"\ntimeout = "8s"\n'
        'stages = [{duration = "0s", rate = 1000}, {duration = "2s", rate = 1000}]\n\n'
        '[[requests]]\npath = "/delay?ms=300"\n'
    )

    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            with_open_files(200),
            "run",
            str(prof),
            "--agents",
            "1",
            "--out",
            str(tmp_path / "out"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    res = read_results(tmp_path / "out")
    _accounted(res)
    assert res["totals"]["ok"] == 2000, res["totals"]
    assert target.stats()["connections_total"] - before - 1 <= 200 - 64
    assert "can open at most 136 connections (its open-file limit" in err


def test_a_coordinator_short_of_file_descriptors_for_its_fleet_says_so(
    target: Target, tmp_path: Path
) -> None:
    prof = write_profile(tmp_path / "p.toml", target.url, '[{duration = "1s", rate = 10}]')
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    args = ["coordinator", str(prof), "--bind", endpoint, "--expect-agents", "500", "--join-timeout", "1"]
    proc = subprocess.run(
        [sys.executable, "-c", with_open_files(200), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 3, proc.stderr
    assert (
        "the open-file limit (200) leaves room for 136 agents, not 500; raise it with ulimit -n"
        in proc.stderr
    )
