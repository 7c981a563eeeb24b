"""User journeys in real runs: the CLI, local agent processes over ZeroMQ, the built-in target, both engines.
Every flow and every step is accounted for in results.json, the summary and the interval log."""

from __future__ import annotations

import csv
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loadgen.reports.hlog import read_hlog
from tests.conftest import Target, free_port, loadgen, loadgen_bg

pytestmark = pytest.mark.integration

JOURNEY = """\
name = "journey"
target = "{url}"
thresholds = ["shop: p99 < 5s", "shop.size: p99 < 1s", "home: error_rate < 0.01"]

[load]
arrival = "constant"
timeout = "5s"
stages = [{{ duration = "0s", rate = 40 }}, {{ duration = "3s", rate = 40 }}]

[[data]]
file = "ids.csv"

[[requests]]
name = "home"
path = "/"

[[flows]]
name = "shop"
weight = 3

[[flows.steps]]
name = "size"
path = "/bytes?n={{{{ n }}}}"
capture = {{ length = "header:content-length" }}
check = {{ status = [200] }}

[[flows.steps]]
pause = "50ms"

[[flows.steps]]
name = "wait"
path = "/delay?ms={{{{ length }}}}&id={{{{ uuid }}}}"

[[flows.steps]]
name = "gone"
path = "/status/404"
check = {{ status = [404] }}
"""


def write(tmp_path: Path, target: Target, text: str = JOURNEY) -> Path:
    (tmp_path / "ids.csv").write_text("n\n7\n9\n11\n", encoding="utf-8")
    path = tmp_path / "journey.toml"
    path.write_text(text.format(url=target.url), encoding="utf-8")
    return path


def conserved(entry: dict[str, Any]) -> None:
    assert entry["scheduled"] == entry["ok"] + entry["failed"] + entry.get("dropped", 0) + entry.get(
        "in_flight_at_end", 0
    )


@pytest.mark.parametrize("engine", ["fast", "httpx"])
def test_a_journey_runs_on_two_agents_and_every_flow_and_step_is_counted(
    target: Target, tmp_path: Path, engine: str
) -> None:
    target.reset()
    profile = write(tmp_path, target)
    out = tmp_path / "out"
    done = loadgen("run", str(profile), "--agents", "2", "--engine", engine, "--out", str(out), "--no-panel")
    assert done.returncode == 0, done.stdout + done.stderr
    res = json.loads((out / "results.json").read_text())
    totals = res["totals"]
    conserved(totals)
    assert totals["failed"] == 0 and totals["dropped"] == 0 and totals["in_flight_at_end"] == 0
    flow = res["flows"]["shop"]
    assert flow["steps"] == ["shop.size", "shop.wait", "shop.gone"]
    assert flow["ok"] == flow["scheduled"] > 50
    requests = res["requests"]
    assert totals["scheduled"] == requests["home"]["scheduled"] + flow["scheduled"]  # arrivals
    for step in flow["steps"]:
        assert requests[step]["flow"] == "shop"
        assert requests[step]["ok"] == flow["ok"]  # every step of every flow, once
        assert requests[step]["scheduled"] == requests[step]["ok"]  # sent, and counted as sent
    # The captured length (7, 9 or 11 bytes) was the next step's delay, so the flow took at least the
    # delay plus the pause, and its active time at least the delay (less the target's timer rounding, up
    # to a millisecond early).
    assert flow["duration_ms"]["min"] >= 56.0
    assert flow["active_ms"]["min"] >= 6.0
    assert flow["duration_ms"]["max"] - flow["active_ms"]["max"] >= 45.0
    assert requests["shop.wait"]["latency_ms"]["min"] >= 6.0
    # The server saw each step as often as it was counted.
    by_path = target.stats()["by_path"]
    assert by_path["/bytes"] == by_path["/delay"] == by_path["/status/404"] == flow["ok"]
    # The run's latency is the requests', not the flows' (which include the pause).
    assert res["latency_ms"]["max"] < flow["duration_ms"]["max"]
    assert [v["passed"] for v in res["thresholds"]] == [True, True, True]
    summary = (out / "summary.md").read_text()
    assert "## Flows" in summary and "| shop " in summary and "shop.wait" in summary
    with (out / "latency.hlog").open() as f:
        tags = read_hlog(f).tags()
    assert {"flow:shop", "shop.size", "shop.wait", "shop.gone", "home"} <= set(tags)
    rows = {r[1]: r for r in csv.reader((out / "stats.csv").read_text().splitlines())}
    assert rows["shop"][0] == "flow" and int(rows["shop"][2]) == flow["ok"]
    steps_and_home = sum(int(rows[n][2]) for n in ("home", *flow["steps"]))
    assert int(rows["Aggregated"][2]) == steps_and_home  # the requests, as Locust's Aggregated
    html = (out / "report.html").read_text()
    assert "<h2>Flows</h2>" in html
    compared = loadgen("compare", str(out), str(out))
    assert compared.returncode == 0 and "| flow:shop " in compared.stdout, compared.stdout


def test_a_failing_step_ends_its_flow_with_the_steps_category(target: Target, tmp_path: Path) -> None:
    text = JOURNEY.replace("check = {{ status = [404] }}", "check = {{ status = [200] }}")
    text = text.replace('"shop: p99 < 5s"', '"shop: error_rate < 0.5"')
    profile = write(tmp_path, target, text)
    out = tmp_path / "out"
    done = loadgen("run", str(profile), "--agents", "1", "--out", str(out), "--no-panel")
    assert done.returncode == 1, done.stdout + done.stderr  # the flow's threshold is lost
    res = json.loads((out / "results.json").read_text())
    assert [v["passed"] for v in res["thresholds"]] == [False, True, True]
    flow = res["flows"]["shop"]
    assert flow["ok"] == 0 and flow["failed"] > 0
    assert flow["errors"] == {"check:gone": flow["failed"]}
    assert res["requests"]["shop.gone"]["errors"] == {"check:gone": flow["failed"]}
    assert res["errors"]["check:gone"] == flow["failed"]
    conserved(res["totals"])


def test_a_profile_with_an_undefined_variable_is_refused_before_any_traffic(
    target: Target, tmp_path: Path
) -> None:
    target.reset()
    profile = write(tmp_path, target, JOURNEY.replace("{{{{ length }}}}", "{{{{ lenght }}}}"))
    done = loadgen("run", str(profile), "--agents", "1", "--out", str(tmp_path / "out"), "--no-panel")
    assert done.returncode == 2
    assert "flows[0].steps[2].path" in done.stderr and "{{ lenght }} is not defined" in done.stderr
    assert "Traceback" not in done.stderr
    assert target.stats()["requests"] == 0


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers 200 to anything, keeping every request line's target (the server's ``paths``)."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.server.paths.append(self.path)  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def recording_server() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.paths = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


UNIQUE = """\
name = "unique"
target = "http://127.0.0.1:{port}"

[load]
arrival = "constant"
timeout = "5s"
stages = [{{ duration = "0s", rate = 60 }}, {{ duration = "4s", rate = 60 }}]

[[data]]
file = "users.csv"
mode = "unique"
on_exhausted = "{on_exhausted}"

[[flows]]
name = "signup"

[[flows.steps]]
name = "create"
path = "/signup?user={{{{ user }}}}"
"""


@pytest.mark.parametrize("on_exhausted", ["drop", "stop"])
def test_unique_rows_are_each_used_once_across_two_agents(
    recording_server: http.server.ThreadingHTTPServer, tmp_path: Path, on_exhausted: str
) -> None:
    rows = 150  # fewer than the run's 240 arrivals
    (tmp_path / "users.csv").write_text("user\n" + "".join(f"u{i}\n" for i in range(rows)))
    profile = tmp_path / "unique.toml"
    profile.write_text(UNIQUE.format(port=recording_server.server_address[1], on_exhausted=on_exhausted))
    out = tmp_path / "out"
    done = loadgen("run", str(profile), "--agents", "2", "--out", str(out), "--no-panel")
    assert done.returncode == 0, done.stdout + done.stderr
    res = json.loads((out / "results.json").read_text())
    paths: list[str] = recording_server.paths  # type: ignore[attr-defined]
    users = [p.split("user=", 1)[1] for p in paths]
    assert len(users) == len(set(users)) == rows  # each row once, across both agents, all of them
    assert sorted(users) == sorted(f"u{i}" for i in range(rows))
    per_agent = [a["ok"] for a in res["agents"]]
    assert all(n > 0 for n in per_agent), per_agent  # the rows were spread, not taken by one agent
    totals = res["totals"]
    assert totals["ok"] == rows
    # Arrivals without a row are not the generator falling behind (it may still be, on a busy machine).
    assert not any(w["code"] == "dropped" for w in res["warning_codes"])
    assert res["saturation_cause"] != "in_flight_limit"
    if on_exhausted == "drop":
        assert totals["dropped"] == totals["dropped_no_data"] == totals["scheduled"] - rows
        assert any(w["code"] == "no_data" for w in res["warning_codes"])
    else:
        assert res["aborted"] == "the test data ran out (users.csv)"
        assert any(e["type"] == "data_exhausted" for e in res["events"])
        assert totals["scheduled"] < 240  # stopped before the end of the profile


# --- flows written in Python

CODE_FLOW = """\
name = "code"
target = "{url}"

[load]
arrival = "constant"
timeout = "5s"
stages = [{{ duration = "0s", rate = 20 }}, {{ duration = "3s", rate = 20 }}]

[[flows]]
name = "py"
function = "{function}"
steps = ["size", "wait"]
"""


def test_a_flow_written_in_python_runs_on_the_agents(target: Target, tmp_path: Path) -> None:
    target.reset()
    profile = tmp_path / "code.toml"
    profile.write_text(CODE_FLOW.format(url=target.url, function="tests.flow_functions:shop"))
    out = tmp_path / "out"
    done = loadgen("run", str(profile), "--agents", "2", "--out", str(out), "--no-panel")
    assert done.returncode == 0, done.stdout + done.stderr
    res = json.loads((out / "results.json").read_text())
    flow = res["flows"]["py"]
    assert flow["ok"] == flow["scheduled"] == res["totals"]["scheduled"] == 60
    assert flow["steps"] == ["py.size", "py.wait"]
    assert res["requests"]["py.size"]["ok"] == res["requests"]["py.wait"]["ok"] == 60
    assert res["requests"]["py.wait"]["flow"] == "py"
    assert flow["duration_ms"]["min"] >= 55.0  # the 50 ms pause and the 12 ms delay the first step decided
    by_path = target.stats()["by_path"]
    assert by_path["/bytes"] == by_path["/delay"] == 60


def write_module(folder: Path, body: str) -> None:
    folder.mkdir()
    (folder / "jflows.py").write_text(
        "from loadgen.session import Session\n\n\nasync def go(s: Session) -> None:\n" + body
    )


def test_agents_with_different_code_are_refused_before_the_start(target: Target, tmp_path: Path) -> None:
    """Two agents whose flow module differs: the run does not start, and says which agents differ."""
    target.reset()
    write_module(tmp_path / "v1", '    await s.get("/bytes?n=1", name="size")\n')
    write_module(tmp_path / "v2", '    await s.get("/bytes?n=2", name="size")\n')
    profile = tmp_path / "code.toml"
    profile.write_text(
        CODE_FLOW.format(url=target.url, function="jflows:go").replace('["size", "wait"]', '["size"]')
    )
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    coord = loadgen_bg(
        "coordinator", str(profile), "--bind", endpoint, "--expect-agents", "2", "--out", str(tmp_path / "o")
    )
    agents = [
        subprocess.Popen(
            [sys.executable, "-m", "loadgen", "agent", "--connect", endpoint, "--wait", "30"],
            env={**os.environ, "PYTHONPATH": str(tmp_path / version)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for version in ("v1", "v2")
    ]
    try:
        _, err = coord.communicate(timeout=60)
        for a in agents:
            a.communicate(timeout=30)
    finally:
        for p in (coord, *agents):
            p.kill()
            p.communicate()
    assert coord.returncode == 3, err
    assert "cannot run this profile's Python flows" in err and "jflows:go differs from agent" in err
    assert "Traceback" not in err
    assert target.stats()["requests"] == 0
    assert all(a.returncode != 0 for a in agents)


def test_the_example_journey_logs_in_carries_its_token_and_cookie_and_buys(
    target: Target, tmp_path: Path
) -> None:
    """profiles/journey.toml, shortened: every purchase logs in, the cart is reached with the session
    cookie alone and the purchase with the bearer token alone (the target answers 401 without them)."""
    import dataclasses
    import shutil

    from loadgen.loads import soak
    from loadgen.profile_file import load_profile

    root = Path(__file__).parent.parent / "profiles"
    shutil.copy(root / "users.csv", tmp_path / "users.csv")
    profile = load_profile(root / "journey.toml", target=target.url)
    short = dataclasses.replace(profile, load=soak(rate=30, duration="3s", arrival="constant"))
    (tmp_path / "journey.toml").write_text(short.to_toml())
    target.reset()
    out = tmp_path / "out"
    done = loadgen("run", str(tmp_path / "journey.toml"), "--agents", "2", "--out", str(out), "--no-panel")
    assert done.returncode == 0, done.stdout + done.stderr
    res = json.loads((out / "results.json").read_text())
    purchase, browse = res["flows"]["purchase"], res["flows"]["browse"]
    assert purchase["failed"] == browse["failed"] == 0
    assert purchase["ok"] > 20 and browse["ok"] > 0
    by_path = target.stats()["by_path"]
    assert by_path["/login"] == by_path["/cart"] == by_path["/buy/*"] == purchase["ok"]
    assert res["errors"] == {}
