"""A fleet that survives and lets no one in: real coordinator and agent processes over TCP on loopback.

The sockets' tier: what only real processes show (a SIGKILL, a coordinator process replaced, garbage on the
port, CURVE keys, the CLI's processes). Membership stories themselves (a late joiner, the dead-man's switch,
refusals, resume with resend) run on a virtual clock in tests/test_fleet_virtual.py."""

from __future__ import annotations

import os
import random
import signal
import socket
import time
from pathlib import Path

import msgpack
import pytest
import zmq

from loadgen.wire import PROTOCOL_VERSION
from tests.conftest import Target, Watched, free_port, read_results, write_profile

pytestmark = pytest.mark.integration

STEADY = '[{{duration = "0s", rate = {rate}}}, {{duration = "{secs}s", rate = {rate}}}]'


def _steady(tmp_path: Path, target: Target, rate: int, secs: int, name: str = "steady") -> Path:
    return write_profile(tmp_path / f"{name}.toml", target.url, STEADY.format(rate=rate, secs=secs))


def _accounted(res: dict) -> None:
    t = res["totals"]
    assert t["scheduled"] == t["ok"] + t["failed"] + t["dropped"] + t["in_flight_at_end"]


def test_killed_agent_is_lost_and_its_share_moves_to_the_survivors(target: Target, tmp_path: Path) -> None:
    target.reset()
    prof = _steady(tmp_path, target, 300, 10)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "out"
    coord = Watched("coordinator", str(prof), "--bind", endpoint, "--expect-agents", "3", "--out", str(out))
    agents = [Watched("agent", "--connect", endpoint, "--wait", "30") for _ in range(3)]
    try:
        coord.wait_for("starting 'steady'")
        time.sleep(0.5 + 3.5)  # the start lead, then 3.5 s into the run
        agents[0].proc.send_signal(signal.SIGKILL)
        assert coord.wait(timeout=60) == 0, coord.stderr()
        assert agents[0].wait(timeout=10) == -signal.SIGKILL
        for survivor in agents[1:]:
            assert survivor.wait(timeout=30) == 0, survivor.stderr()
    finally:
        for p in (coord, *agents):
            p.kill()
    res = read_results(out)
    lost = [e for e in res["events"] if e["type"] == "agent_lost"]
    assert len(lost) == 1
    assert 3.5 <= lost[0]["t"] <= 3.5 + 3.0 + 1.5  # declared lost within about 3 s of the kill
    reshares = [e for e in res["events"] if e["type"] == "reshare"]
    assert reshares and reshares[-1]["at"] - lost[0]["t"] < 1.0
    assert sorted(reshares[-1]["shares"].values()) == pytest.approx([0.5, 0.5])
    # After the survivors took over, the fleet's rate is the profile's rate again.
    takeover = reshares[-1]["at"]
    after = [iv for iv in res["intervals"] if takeover + 1 <= iv["t"] < 10]
    assert after
    for iv in after:
        assert abs(iv["scheduled"] - 300) <= 3, after
    # Totals add up, and what is missing is said.
    _accounted(res)
    assert res["totals"]["unreported_estimate"] > 0
    assert any("lost" in w for w in res["warnings"])
    # Every planned arrival is accounted for: the victim's share from its death to the takeover (about 3 s
    # of a third of 300/s) was sent by no one, and is counted and said.
    t = res["totals"]
    assert t["planned"] == 3000
    assert 100 <= t["unsent"] <= 700, t
    assert t["scheduled"] + t["unreported_estimate"] + t["unsent"] == pytest.approx(3000, abs=150)
    assert any(f"about {t['unsent']} arrivals of the profile were never sent" in w for w in res["warnings"])
    seen_by_server = target.stats()["by_path"]["/"]
    completed = res["totals"]["ok"] + res["totals"]["failed"]
    assert completed <= seen_by_server <= completed + res["totals"]["unreported_estimate"] + 150


def test_coordinator_crash_and_resume_loses_no_completed_request(target: Target, tmp_path: Path) -> None:
    target.reset()
    prof = _steady(tmp_path, target, 100, 12)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "out"
    coord = Watched("coordinator", str(prof), "--bind", endpoint, "--expect-agents", "2", "--out", str(out))
    agents = [Watched("agent", "--connect", endpoint, "--wait", "30") for _ in range(2)]
    resumed: Watched | None = None
    try:
        coord.wait_for("starting 'steady'")
        time.sleep(4.5)
        coord.proc.send_signal(signal.SIGKILL)
        assert coord.wait(timeout=10) == -signal.SIGKILL
        time.sleep(2.0)  # the coordinator is away; the agents keep going and keep their data
        resumed = Watched("coordinator", "--resume", str(out))
        assert resumed.wait(timeout=60) == 0, resumed.stderr()
        for a in agents:
            assert a.wait(timeout=30) == 0, a.stderr()
    finally:
        for p in (coord, *agents, *([resumed] if resumed else [])):
            p.kill()
    res = read_results(out)
    assert res["final"] is True
    assert any(e["type"] == "coordinator_resumed" for e in res["events"])
    _accounted(res)
    assert res["totals"]["scheduled"] == 1200
    # every request the server answered is in the results
    assert res["totals"]["ok"] + res["totals"]["failed"] == target.stats()["by_path"]["/"] == 1200
    assert (out / "latency.hlog").exists()


def test_garbage_on_the_control_port_does_not_disturb_a_run(target: Target, tmp_path: Path) -> None:
    prof = _steady(tmp_path, target, 100, 4)
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    out = tmp_path / "out"
    coord = Watched("coordinator", str(prof), "--bind", endpoint, "--expect-agents", "1", "--out", str(out))
    agent = Watched("agent", "--connect", endpoint, "--wait", "30")
    rnd = random.Random(7)
    try:
        coord.wait_for("starting 'steady'")
        # raw bytes on a plain TCP connection
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(os.urandom(rnd.randrange(1, 4096)))
        # well-framed ZeroMQ messages with random msgpack and random bytes inside
        ctx = zmq.Context()
        rogue = ctx.socket(zmq.DEALER)
        rogue.setsockopt(zmq.LINGER, 0)
        rogue.connect(endpoint)
        for i in range(200):
            body: object = rnd.choice(
                [
                    {"v": 1, "type": "interval", "index": i},
                    {"v": 1, "type": "hello"},
                    {"v": PROTOCOL_VERSION, "type": "ping", "seq": 1, "t_coord": 0.0},
                    [1, 2, {"x": b"y"}],
                    "interval",
                ]
            )
            rogue.send(msgpack.packb(body) if i % 3 else os.urandom(rnd.randrange(1, 300)))
            if i % 50 == 0:
                rogue.send_multipart([b"a", b"b", b"c"])
        rogue.close()
        ctx.term()
        assert coord.wait(timeout=60) == 0, coord.stderr()
        assert agent.wait(timeout=30) == 0, agent.stderr()
    finally:
        coord.kill()
        agent.kill()
    res = read_results(out)
    _accounted(res)
    assert res["totals"]["scheduled"] == 400
    assert res["totals"]["ok"] == 400


def test_secured_fleet_admits_only_known_agents(target: Target, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    for name in ("coordinator", "good", "bad"):
        gen = Watched("keys", "generate", name, "--dir", str(keys))
        assert gen.wait(timeout=30) == 0, gen.stderr()
    (allowed / "good.key").write_bytes((keys / "good.key").read_bytes())
    prof = _steady(tmp_path, target, 50, 2)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "out"
    coord = Watched(
        "coordinator",
        str(prof),
        "--bind",
        endpoint,
        "--expect-agents",
        "1",
        "--out",
        str(out),
        "--secret-key",
        str(keys / "coordinator.key_secret"),
        "--authorized-agents",
        str(allowed),
        "--join-timeout",
        "20",
    )
    bad = Watched(
        "agent",
        "--connect",
        endpoint,
        "--wait",
        "8",
        "--secret-key",
        str(keys / "bad.key_secret"),
        "--coordinator-key",
        str(keys / "coordinator.key"),
    )
    good: Watched | None = None
    try:
        assert bad.wait(timeout=20) == 3  # never let in: nobody answered it
        assert not (out / "results.json").exists()
        good = Watched(
            "agent",
            "--connect",
            endpoint,
            "--wait",
            "20",
            "--secret-key",
            str(keys / "good.key_secret"),
            "--coordinator-key",
            str(keys / "coordinator.key"),
        )
        assert coord.wait(timeout=60) == 0, coord.stderr()
        assert good.wait(timeout=30) == 0, good.stderr()
    finally:
        for p in (coord, bad, *([good] if good else [])):
            p.kill()
    res = read_results(out)
    assert res["totals"]["ok"] == 100
    assert len(res["agents"]) == 1
    rejected = [e for e in res["events"] if e["type"] == "agent_rejected"]
    assert len(rejected) == 1
    assert rejected[0]["public_key"] in (keys / "bad.key").read_text()


def test_plain_tcp_beyond_loopback_needs_insecure(tmp_path: Path, target: Target) -> None:
    prof = _steady(tmp_path, target, 1, 1)
    r = Watched("coordinator", str(prof), "--bind", f"tcp://0.0.0.0:{free_port()}", "--join-timeout", "1")
    assert r.wait(timeout=30) == 2
    assert "--insecure" in r.stderr()
    r = Watched(
        "coordinator",
        str(prof),
        "--bind",
        f"tcp://0.0.0.0:{free_port()}",
        "--join-timeout",
        "1",
        "--insecure",
    )
    assert r.wait(timeout=30) == 3
    assert "WARNING" in r.stderr()


def test_agent_refuses_a_target_it_does_not_allow(tmp_path: Path, target: Target) -> None:
    prof = _steady(tmp_path, target, 10, 2)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    coord = Watched(
        "coordinator", str(prof), "--bind", endpoint, "--expect-agents", "1", "--out", str(tmp_path / "o")
    )
    agent = Watched("agent", "--connect", endpoint, "--wait", "30", "--allow-target", "staging.example:443")
    try:
        assert agent.wait(timeout=30) == 3
        assert "not allowed" in agent.stderr()
        # the run could not complete: nothing was sent, so it must not pass as a success
        assert coord.wait(timeout=30) == 3, coord.stderr()
    finally:
        coord.kill()
        agent.kill()
    assert "refused the run" in coord.stderr()
    assert "the run sent no request: every agent refused it" in coord.stderr()
    res = read_results(tmp_path / "o")
    assert res["totals"]["scheduled"] == 0
    assert [a["state"] for a in res["agents"]] == ["refused"]
    assert any(e["type"] == "agent_refused" for e in res["events"])
    assert res["incomplete"] and res["totals"]["unsent"] == res["totals"]["planned"] == 20
    assert any("NOTHING WAS SENT" in w for w in res["warnings"]) and res["passed"] is False


def test_one_command_runs_an_agent_per_process_and_reports_start_skew(target: Target, tmp_path: Path) -> None:
    prof = _steady(tmp_path, target, 100, 2)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "out"
    coord = Watched("coordinator", str(prof), "--bind", endpoint, "--expect-agents", "2", "--out", str(out))
    agents = Watched("agent", "--connect", endpoint, "--wait", "30", "--processes", "2")
    try:
        line = coord.wait_for("start skew", timeout=30)
        assert coord.wait(timeout=60) == 0, coord.stderr()
        assert agents.wait(timeout=30) == 0, agents.stderr()
    finally:
        coord.kill()
        agents.kill()
    res = read_results(out)
    assert len({a["pid"] for a in res["agents"]}) == 2
    assert res["totals"]["ok"] == 200
    skew = float(line.split("start skew ")[1].split(" ms")[0])
    assert skew < 50.0  # one machine's loopback: a few ms at most, even on a busy CI box
    assert res["start_skew_ms"] is not None
    assert all(abs(a["clock_offset_ms"]) < 50 for a in res["agents"])


def test_other_protocol_versions_are_refused_with_a_clear_message(tmp_path: Path, target: Target) -> None:
    prof = _steady(tmp_path, target, 10, 1)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    coord = Watched(
        "coordinator", str(prof), "--bind", endpoint, "--expect-agents", "1", "--join-timeout", "5"
    )
    ctx = zmq.Context()
    old = ctx.socket(zmq.DEALER)
    old.setsockopt(zmq.LINGER, 0)
    old.setsockopt(zmq.IDENTITY, b"agent-from-the-future")
    try:
        old.connect(endpoint)
        coord.wait_for("waiting for 1 agent")
        hello = {
            "v": PROTOCOL_VERSION + 1,
            "type": "hello",
            "agent_id": "x",
            "host": "h",
            "pid": 1,
            "software": "loadgen 9",
        }
        old.send(msgpack.packb(hello))
        assert old.poll(5000)
        reply = msgpack.unpackb(old.recv())
        assert reply["type"] == "stop" and f"protocol version {PROTOCOL_VERSION + 1}" in reply["reason"]
        assert coord.wait(timeout=30) == 3
        assert f"protocol version {PROTOCOL_VERSION + 1} is not supported" in coord.stderr()
    finally:
        old.close()
        ctx.term()
        coord.kill()
