"""Every command a user runs, run as the user runs it: the real CLI in its own process, with its exit status
checked (0 success, 1 thresholds or regression, 2 usage, 3 the run could not complete)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tests.conftest import Target, Watched, free_port, loadgen, read_results, write_profile
from tests.results_fixtures import make_results

pytestmark = pytest.mark.integration

STEADY = '[{{duration = "0s", rate = {rate}}}, {{duration = "{secs}s", rate = {rate}}}]'


def test_plan_names_the_stages_and_the_expected_count(tmp_path: Path) -> None:
    prof = write_profile(
        tmp_path / "planned.toml",
        "http://127.0.0.1:9",
        '[{duration = "2s", rate = 50}, {duration = "3s", rate = 50}, {duration = "0s", rate = 120}, '
        '{duration = "1s", rate = 120}]',
    )
    r = loadgen("plan", str(prof))
    assert r.returncode == 0, r.stderr
    assert "planned → http://127.0.0.1:9" in r.stdout
    stage_rows = [line.split() for line in r.stdout.splitlines() if line[:1].isdigit() and "s " in line]
    # index, from/s, to/s, duration, starts at, requests: one row per stage
    assert [row[0] for row in stage_rows] == ["0", "1", "2", "3"]
    assert [row[5] for row in stage_rows] == ["50", "150", "0", "120"]
    assert "320 expected" in r.stdout
    assert "peak rate   120/s" in r.stdout


def test_plan_of_a_broken_profile_is_a_usage_error(tmp_path: Path) -> None:
    bad = write_profile(tmp_path / "bad.toml", "http://127.0.0.1:9", '[{duration = "1s", rate = -1}]')
    r = loadgen("plan", str(bad))
    assert r.returncode == 2
    assert "bad.toml" in r.stderr and "Traceback" not in r.stderr


def _results_dir(path: Path, **kw: object) -> Path:
    path.mkdir()
    (path / "results.json").write_text(json.dumps(make_results(**kw)))  # type: ignore[arg-type]
    return path


def test_report_regenerates_the_reports_of_a_results_folder(tmp_path: Path) -> None:
    out = _results_dir(tmp_path / "run")
    r = loadgen("report", str(out))
    assert r.returncode == 0, r.stderr
    for name in ("summary.md", "stats.csv", "report.html"):
        assert (out / name).stat().st_size > 0, name
        assert str(out / name) in r.stderr  # "written: ..."
    assert "checkout" in (out / "stats.csv").read_text()  # a request of the fixture
    assert "checkout-spike" in (out / "summary.md").read_text()  # the run's name
    assert "checkout-spike" in r.stdout  # and the summary printed
    # run again over its own output: the same reports
    before = (out / "stats.csv").read_text()
    assert loadgen("report", str(out)).returncode == 0
    assert (out / "stats.csv").read_text() == before


def test_report_of_a_failed_run_exits_1_and_of_no_results_exits_2(tmp_path: Path) -> None:
    doc = make_results()
    doc["passed"] = False
    (tmp_path / "failed").mkdir()
    (tmp_path / "failed" / "results.json").write_text(json.dumps(doc))
    assert loadgen("report", str(tmp_path / "failed")).returncode == 1
    (tmp_path / "empty").mkdir()
    r = loadgen("report", str(tmp_path / "empty"))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr


def test_compare_exits_1_on_a_regression_beyond_the_limit(tmp_path: Path) -> None:
    base = _results_dir(tmp_path / "base")
    same = _results_dir(tmp_path / "same")
    slower = _results_dir(tmp_path / "slower", latency_scale=1.3)
    r = loadgen("compare", str(base), str(same))
    assert r.returncode == 0, r.stderr
    assert "No regression" in r.stdout
    r = loadgen("compare", str(base), str(slower), "--max-regression", "10%")
    assert r.returncode == 1, r.stderr
    assert "Regression" in r.stdout
    # 30% slower is within a 40% limit; files work as well as folders
    r = loadgen(
        "compare", str(base / "results.json"), str(slower / "results.json"), "--max-regression", "40%"
    )
    assert r.returncode == 0, r.stderr
    r = loadgen("compare", str(base), str(slower), "--max-regression", "lots")
    assert r.returncode == 2
    assert "--max-regression" in r.stderr


def test_keys_generate_writes_a_private_secret_key(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    r = loadgen("keys", "generate", "alice", "--dir", str(keys))
    assert r.returncode == 0, r.stderr
    public, secret = keys / "alice.key", keys / "alice.key_secret"
    assert public.exists() and secret.exists()
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert str(public) in r.stdout and str(secret) in r.stdout
    assert "secret" in secret.read_text().lower() and "secret-key" not in public.read_text()
    # never over an existing key
    again = loadgen("keys", "generate", "alice", "--dir", str(keys))
    assert again.returncode == 2, again.stderr


def test_agent_processes_auto_runs_one_agent_per_core(target: Target, tmp_path: Path) -> None:
    n = os.cpu_count() or 1
    prof = write_profile(tmp_path / "auto.toml", target.url, STEADY.format(rate=20 * n, secs=2))
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "out"
    coord = Watched(
        "coordinator", str(prof), "--bind", endpoint, "--expect-agents", str(n), "--out", str(out)
    )
    agents = Watched("agent", "--connect", endpoint, "--wait", "30", "--processes", "auto")
    try:
        assert coord.wait(timeout=60) == 0, coord.stderr()
        assert agents.wait(timeout=30) == 0, agents.stderr()
    finally:
        coord.kill()
        agents.kill()
    res = read_results(out)
    assert len({a["pid"] for a in res["agents"]}) == n
    assert res["totals"]["ok"] == 40 * n


def test_agent_processes_must_be_a_count_or_auto() -> None:
    for bad in ("many", "0"):
        r = loadgen("agent", "--connect", "tcp://127.0.0.1:1", "--processes", bad)
        assert r.returncode == 2, r.stderr
        assert "--processes" in r.stderr


def test_an_agent_with_max_rate_is_not_given_a_share_above_it(target: Target, tmp_path: Path) -> None:
    """One agent allowing 10 requests/s, a profile of 50/s: the run does not start, the coordinator says
    which agent and why, and both processes exit with status 3. Nothing reaches the target."""
    target.reset()
    prof = write_profile(tmp_path / "fast.toml", target.url, STEADY.format(rate=50, secs=2))
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    coord = Watched(
        "coordinator", str(prof), "--bind", endpoint, "--expect-agents", "1", "--join-timeout", "20"
    )
    agent = Watched("agent", "--connect", endpoint, "--wait", "10", "--max-rate", "10")
    try:
        assert coord.wait(timeout=60) == 3, coord.stderr()
        assert agent.wait(timeout=60) == 3, agent.stderr()
    finally:
        coord.kill()
        agent.kill()
    assert "allows at most 10 requests/s, but its share of the peak rate is 50/s" in coord.stderr()
    assert "--max-rate" in coord.stderr()
    assert "the run cannot start: agent" in agent.stderr()  # told why, not "no coordinator answered"
    assert "Traceback" not in coord.stderr() + agent.stderr()
    assert target.stats()["requests"] == 0


def test_max_rate_at_the_share_lets_the_run_go(target: Target, tmp_path: Path) -> None:
    prof = write_profile(tmp_path / "ok.toml", target.url, STEADY.format(rate=20, secs=2))
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "out"
    coord = Watched("coordinator", str(prof), "--bind", endpoint, "--expect-agents", "2", "--out", str(out))
    agents = Watched("agent", "--connect", endpoint, "--wait", "30", "--processes", "2", "--max-rate", "10")
    try:
        assert coord.wait(timeout=60) == 0, coord.stderr()
        assert agents.wait(timeout=30) == 0, agents.stderr()
    finally:
        coord.kill()
        agents.kill()
    assert read_results(out)["totals"]["ok"] == 40


def test_demo_runs_its_showcase_and_writes_its_reports(tmp_path: Path) -> None:
    """``loadgen demo`` as it is: about 30 s of load on the built-in target, then the reports."""
    out = tmp_path / "demo"
    r = loadgen("demo", "--out", str(out), timeout=120)
    assert r.returncode in (0, 1), r.stderr  # 1 only if this busy machine broke the demo's p99 threshold
    assert "demo: built-in target at http://127.0.0.1:" in r.stderr
    res = read_results(out)
    assert res["final"] is True
    assert res["totals"]["scheduled"] == pytest.approx(8200, rel=0.05)  # Poisson around the curve's 8,200
    assert res["errors"], "the flaky endpoint fails some requests"
    assert r.returncode == (0 if res["passed"] else 1)
    for name in ("summary.md", "stats.csv", "report.html", "latency.hlog"):
        assert (out / name).exists(), name
