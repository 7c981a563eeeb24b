"""The library's run entry points with real agent processes over real ZeroMQ sockets, against the built-in
target: loadgen.run, loadgen.start's live handle, actions, arun, and that no agent process outlives a call
however it ends (including Ctrl-C in the middle)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import loadgen
from tests.conftest import Target, write_profile
from tests.conftest import loadgen as loadgen_cli

pytestmark = pytest.mark.integration


def profile_file(tmp_path: Path, target: Target, stages: str, name: str = "lib") -> Path:
    """A profile of two requests; ``stages`` follows an instant jump to the first stage's rate."""
    first_rate = stages.split("rate = ", 1)[1].split(" ", 1)[0]
    stages = f'[{{ duration = "0s", rate = {first_rate} }}, ' + stages.lstrip("[")
    requests = '[[requests]]\nname = "home"\npath = "/"\nweight = 3\n\n[[requests]]\nname = "slow"\npath = "/delay?ms=5"\n'
    return write_profile(tmp_path / f"{name}.toml", target.url, stages, requests=requests)


def children_of(pid: int) -> set[int]:
    """The live processes whose parent is ``pid``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def shape_of(value: Any) -> Any:
    """A document's shape: its keys, nested, with the types of the leaves (lists by their first item)."""
    if isinstance(value, dict):
        return {k: shape_of(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape_of(value[0])] if value else []
    return (
        "number" if isinstance(value, int | float) and not isinstance(value, bool) else type(value).__name__
    )


def test_run_returns_typed_results_that_agree_with_the_document(tmp_path: Path, target: Target) -> None:
    profile = loadgen.load_profile(profile_file(tmp_path, target, '[{ duration = "3s", rate = 100 }]'))
    results = loadgen.run(profile, agents=2, out=tmp_path / "out", seed=3)

    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    t = results.totals
    assert (t.scheduled, t.ok, t.failed, t.dropped) == tuple(
        doc["totals"][k] for k in ("scheduled", "ok", "failed", "dropped")
    )
    assert t.scheduled == 300 and t.ok == 300
    assert results.passed and results.out == tmp_path / "out"
    assert results.latency.count == 300
    assert results.latency.p99 == pytest.approx(doc["latency_ms"]["p99"] / 1000)
    assert results.latency.percentile(99.9) == pytest.approx(doc["latency_ms"]["p99.9"] / 1000)
    assert 0 < results.latency.p50 <= results.latency.percentile(97.5) <= results.latency.max
    assert set(results.requests) == {"home", "slow"}
    assert results.requests["slow"].latency.p50 >= 0.005  # /delay?ms=5 answers after 5 ms
    assert sum(r.scheduled for r in results.requests.values()) == 300
    whole = results.window(0)
    assert (whole.scheduled, whole.ok) == (300, 300)
    assert whole.latency.p99 == results.latency.p99  # every second's histograms add up to the run's
    assert [s["scheduled"] for s in results.seconds][:3] == [100, 100, 100]  # and the drain's second(s)
    assert sum(s["scheduled"] for s in results.seconds) == 300
    for name in ("results.json", "summary.md", "stats.csv", "report.html", "latency.hlog"):
        assert (tmp_path / "out" / name).exists(), name
    saved = loadgen.Results.read(tmp_path / "out")  # later, from the files: the interval log's histograms
    assert saved.totals == results.totals
    assert saved.latency.percentile(97.5) == results.latency.percentile(97.5)
    assert saved.requests["slow"].latency.percentile(12.5) == results.requests["slow"].latency.percentile(
        12.5
    )


def test_an_api_run_and_a_cli_run_of_a_profile_agree(tmp_path: Path, target: Target) -> None:
    path = profile_file(tmp_path, target, '[{ duration = "2s", rate = 100 }]')
    cli = loadgen_cli("run", str(path), "--agents", "2", "--out", str(tmp_path / "cli"), "--seed", "11")
    assert cli.returncode == 0, cli.stderr
    results = loadgen.run(loadgen.load_profile(path), agents=2, out=tmp_path / "api", seed=11)

    by_cli = json.loads((tmp_path / "cli" / "results.json").read_text())
    by_api = json.loads((tmp_path / "api" / "results.json").read_text())
    assert by_api["totals"] == by_cli["totals"]
    assert {n: r["scheduled"] for n, r in by_api["requests"].items()} == {
        n: r["scheduled"] for n, r in by_cli["requests"].items()
    }
    assert shape_of(by_api) == shape_of(by_cli)
    assert sorted(p.name for p in (tmp_path / "api").iterdir()) == sorted(
        p.name for p in (tmp_path / "cli").iterdir()
    )
    assert results.doc["totals"] == by_api["totals"]


def test_the_live_handle_watches_waits_and_stops(tmp_path: Path, target: Target) -> None:
    path = profile_file(
        tmp_path, target, '[{ duration = "2s", rate = 50 }, { duration = "20s", rate = 100 }]'
    )
    profile = loadgen.load_profile(path)
    with loadgen.start(profile, agents=2) as run:
        assert run.wait_until(stage=2)  # stage 0 is the jump to 50/s
        assert run.elapsed >= 2.0
        assert run.wait_until("4s")
        snap = run.snapshot(last="2s")
        assert snap.closed_seconds >= 1 and snap.scheduled >= 25
        assert snap.last.seconds <= 2 and snap.last.scheduled > 0
        assert snap.latency.count > 0
        run.stop()
    results = run.results
    assert results is not None
    assert results.aborted == "stopped by the caller" and not results.passed
    assert [e.type for e in results.events if e.type == "stopped"] == ["stopped"]
    assert (
        results.totals.scheduled < 0.6 * profile.load.duration * 100
    )  # it ended well before the profile's end
    t = results.totals
    assert t.scheduled == t.ok + t.failed + t.dropped + t.in_flight_at_end


def test_actions_are_called_on_the_profiles_clock_and_recorded(tmp_path: Path, target: Target) -> None:
    profile = loadgen.load_profile(profile_file(tmp_path, target, '[{ duration = "30s", rate = 50 }]'))
    called: dict[str, float] = {}

    def mark() -> None:
        called["mark"] = run.elapsed

    def broken() -> None:
        raise RuntimeError("the failover script failed")

    async def later() -> None:
        await asyncio.sleep(0.01)
        called["later"] = run.elapsed

    def enough() -> None:
        raise loadgen.StopRun("seen enough")

    actions = {"1s": mark, "1.5s": broken, "2s": later, "3s": enough}
    with loadgen.start(profile, agents=1, out=tmp_path / "out", actions=actions) as run:
        pass
    results = run.results
    assert results is not None
    assert called["mark"] >= 1.0 and called["later"] >= 2.0
    finished = {e.fields["name"]: e for e in results.events_of("action_finished")}
    assert finished["mark"].fields["outcome"] == "ok"
    assert finished["broken"].fields["outcome"] == "error"
    assert finished["broken"].fields["error"] == "RuntimeError: the failover script failed"
    assert finished["later"].fields["outcome"] == "ok"
    assert finished["enough"].fields["outcome"] == "stopped the run"
    started = {e.fields["name"]: e.t for e in results.events_of("action_started")}
    for name, at in (("mark", 1.0), ("broken", 1.5), ("later", 2.0), ("enough", 3.0)):
        assert started[name] >= at
    assert results.aborted == "seen enough"
    assert results.totals.scheduled < 30 * 50 / 2  # the run went on after the error and stopped at 3 s
    html = (tmp_path / "out" / "report.html").read_text()
    assert "action_started mark" in html and "RuntimeError: the failover script failed" in html


def test_arun_and_async_with_run_coroutine_actions_on_the_callers_loop(
    tmp_path: Path, target: Target
) -> None:
    profile = loadgen.load_profile(profile_file(tmp_path, target, '[{ duration = "2s", rate = 50 }]'))
    loops: list[asyncio.AbstractEventLoop] = []

    async def on_the_loop() -> None:
        loops.append(asyncio.get_running_loop())

    async def main() -> tuple[loadgen.Results, loadgen.Results]:
        first = await loadgen.arun(profile, agents=1, actions={"0.5s": on_the_loop})
        async with loadgen.start(profile, agents=1) as run:
            assert await run.await_until("1s")
        assert run.results is not None
        loops.append(asyncio.get_running_loop())
        return first, run.results

    first, second = asyncio.run(main())
    assert first.totals.ok == second.totals.ok == 100
    assert loops[0] is loops[1]


_SCRIPT = """
import sys, loadgen
profile = loadgen.load_profile(sys.argv[1])
how = sys.argv[2]
try:
    if how == "run":
        loadgen.run(profile, agents=2, progress=lambda line: print(line, flush=True))
    elif how == "raise":
        with loadgen.start(profile, agents=2, progress=lambda line: print(line, flush=True)) as run:
            run.wait_until("1s")
            raise RuntimeError("the test's own code failed")
    elif how == "join":
        loadgen.run(profile, agents=1, expect_agents=2, join_timeout=1.5)
except KeyboardInterrupt:
    print("KeyboardInterrupt", flush=True)
    sys.exit(130)
except Exception as exc:
    print(f"raised {type(exc).__name__}: {exc}", flush=True)
    sys.exit(1)
"""


class Script:
    def __init__(self, tmp_path: Path, profile: Path, how: str) -> None:
        code = tmp_path / "script.py"
        code.write_text(textwrap.dedent(_SCRIPT))
        self.proc = subprocess.Popen(
            [sys.executable, str(code), str(profile), how], stdout=subprocess.PIPE, text=True, cwd=tmp_path
        )
        self.lines: list[str] = []
        self.agents: set[int] = set()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert time.monotonic() < deadline and self.proc.poll() is None, "".join(self.lines)
            self.agents |= children_of(self.proc.pid)
            time.sleep(0.05)
        self.agents |= children_of(self.proc.pid)

    def finish(self, timeout: float = 40.0) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return code


def test_ctrl_c_in_the_middle_of_run_leaves_no_agent_behind(tmp_path: Path, target: Target) -> None:
    script = Script(tmp_path, profile_file(tmp_path, target, '[{ duration = "60s", rate = 20 }]'), "run")
    script.wait_for("agents started")
    assert len(script.agents) == 2
    script.proc.send_signal(signal.SIGINT)
    assert script.finish() == 130, "".join(script.lines)
    assert "KeyboardInterrupt" in script.lines[-1]
    assert not [pid for pid in script.agents if alive(pid)]


def test_an_exception_in_the_block_stops_the_run_and_its_agents(tmp_path: Path, target: Target) -> None:
    script = Script(tmp_path, profile_file(tmp_path, target, '[{ duration = "60s", rate = 20 }]'), "raise")
    script.wait_for("agents started")
    assert len(script.agents) == 2
    assert script.finish() == 1
    assert script.lines[-1].startswith("raised RuntimeError: the test's own code failed")
    assert not [pid for pid in script.agents if alive(pid)]


def test_agents_that_do_not_arrive_raise_join_timeout_and_leave_nothing(
    tmp_path: Path, target: Target
) -> None:
    script = Script(tmp_path, profile_file(tmp_path, target, '[{ duration = "5s", rate = 20 }]'), "join")
    started = time.monotonic()
    while not script.agents and script.proc.poll() is None:
        script.agents |= children_of(script.proc.pid)
        time.sleep(0.02)
    assert script.finish() == 1
    assert time.monotonic() - started < 10
    assert script.lines[-1].strip() == "raised JoinTimeout: only 1 of 2 agents joined within 1.5 s"
    assert not [pid for pid in script.agents if alive(pid)]


def test_a_fleet_that_never_comes_raises_join_timeout(tmp_path: Path, target: Target) -> None:
    profile = loadgen.load_profile(profile_file(tmp_path, target, '[{ duration = "5s", rate = 20 }]'))
    before = children_of(os.getpid())  # the target
    with pytest.raises(loadgen.JoinTimeout) as info:
        loadgen.run(profile, bind="tcp://127.0.0.1:0", expect_agents=3, join_timeout=0.5)
    assert (info.value.joined, info.value.expected) == (0, 3)
    assert children_of(os.getpid()) == before


def test_a_fleet_of_waiting_agents_joins_over_an_encrypted_channel(tmp_path: Path, target: Target) -> None:
    from loadgen.security import generate_keypair
    from tests.conftest import Watched, free_port

    keys = tmp_path / "keys"
    generate_keypair(keys, "coordinator")
    generate_keypair(keys / "agents", "agent-1")
    (keys / "agents" / "agent-1.key_secret").rename(keys / "agent-1.key_secret")
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    agent = Watched(
        "agent", "--connect", endpoint, "--wait", "30",
        "--secret-key", str(keys / "agent-1.key_secret"), "--coordinator-key", str(keys / "coordinator.key"),
    )  # fmt: skip
    try:
        profile = loadgen.load_profile(profile_file(tmp_path, target, '[{ duration = "2s", rate = 50 }]'))
        results = loadgen.run(
            profile,
            bind=endpoint,
            expect_agents=1,
            join_timeout=20,
            secret_key=keys / "coordinator.key_secret",
            authorized_agents=keys / "agents",
        )
        assert results.totals.ok == 100 and results.passed
        assert [a["state"] for a in results.doc["agents"]] == ["finished"]
        assert agent.wait(timeout=20) == 0
    finally:
        if agent.proc.poll() is None:
            agent.proc.kill()
            agent.wait()
