"""Agents on separate hosts: network namespaces made by the test, joined by a bridge; one host is cut off.

Needs root and `ip netns` (iproute2); skipped cleanly elsewhere. Every address used belongs to hosts this test
creates (10.231.0.0/24 on its own bridge), and everything is torn down at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import read_results, write_profile

pytestmark = pytest.mark.integration

SUBNET = "10.231.0"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def _can_netns() -> str | None:
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"lgprobe{uuid.uuid4().hex[:6]}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, timeout=10, check=False)
    if r.returncode != 0:
        return f"`ip netns add` is not permitted here: {r.stderr.decode().strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10, check=False)
    return None


class Hosts:
    """A bridge in this namespace and one namespace per host, each with one address on the bridge."""

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:5]
        self.bridge = f"lgbr{self.tag}"
        self.hosts: dict[str, tuple[str, str]] = {}  # name -> (namespace, address)

    def up(self, names: list[str]) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{SUBNET}.1/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, name in enumerate(names, start=10):
            ns = f"lg{self.tag}{name}"
            host_if, ns_if = f"lgh{self.tag}{i}", f"lgn{self.tag}{i}"
            _ip("netns", "add", ns)
            _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
            _ip("link", "set", ns_if, "netns", ns)
            _ip("link", "set", host_if, "master", self.bridge)
            _ip("link", "set", host_if, "up")
            _ip("-n", ns, "addr", "add", f"{SUBNET}.{i}/24", "dev", ns_if)
            _ip("-n", ns, "link", "set", ns_if, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            self.hosts[name] = (ns, f"{SUBNET}.{i}")

    def cut(self, name: str) -> None:
        """Pull the host's cable: its link to the bridge goes down."""
        i = list(self.hosts).index(name) + 10
        _ip("link", "set", f"lgh{self.tag}{i}", "down")

    def popen(self, name: str, *args: str, **kw: object) -> subprocess.Popen[str]:
        ns, _ = self.hosts[name]
        return subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "loadgen", *args],
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            **kw,  # type: ignore[call-overload]
        )

    def down(self) -> None:
        for ns, _ in self.hosts.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10, check=False)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=10, check=False)


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    why = _can_netns()
    if why:
        pytest.skip(why)
    h = Hosts()
    try:
        h.up(["ctl", "a1", "a2", "a3"])
        yield h
    finally:
        h.down()


def test_agents_on_separate_hosts_survive_one_being_cut_off(hosts: Hosts, tmp_path: Path) -> None:
    _, ctl = hosts.hosts["ctl"]
    keys = tmp_path / "keys"
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    for name in ("coordinator", "a1", "a2", "a3"):
        subprocess.run(
            [sys.executable, "-m", "loadgen", "keys", "generate", name, "--dir", str(keys)],
            check=True,
            timeout=30,
        )
        if name != "coordinator":
            (allowed / f"{name}.key").write_bytes((keys / f"{name}.key").read_bytes())
    target = hosts.popen("ctl", "target", "--host", ctl, "--port", "18080", stdout=subprocess.PIPE)
    procs: list[subprocess.Popen[str]] = [target]
    try:
        assert target.stdout is not None
        assert "listening" in target.stdout.readline()
        prof = write_profile(
            tmp_path / "fleet.toml",
            f"http://{ctl}:18080",
            '[{duration = "0s", rate = 150}, {duration = "12s", rate = 150}]',
        )
        out = tmp_path / "out"
        coord = hosts.popen(
            "ctl",
            "coordinator",
            str(prof),
            "--bind",
            f"tcp://{ctl}:5555",
            "--expect-agents",
            "3",
            "--out",
            str(out),
            "--secret-key",
            str(keys / "coordinator.key_secret"),
            "--authorized-agents",
            str(allowed),
            "--join-timeout",
            "30",
            stderr=subprocess.PIPE,
        )
        procs.append(coord)
        agents = {
            name: hosts.popen(
                name,
                "agent",
                "--connect",
                f"tcp://{ctl}:5555",
                "--wait",
                "30",
                "--coordinator-timeout",
                "3",
                "--secret-key",
                str(keys / f"{name}.key_secret"),
                "--coordinator-key",
                str(keys / "coordinator.key"),
                "--allow-target",
                f"{ctl}:18080",
                stderr=subprocess.PIPE,
            )
            for name in ("a1", "a2", "a3")
        }
        procs.extend(agents.values())
        time.sleep(4.0 + 4.0)  # agents start and join (a few seconds), then about 4 s of the run
        hosts.cut("a3")
        _, err = coord.communicate(timeout=90)
        assert coord.returncode == 0, err
        # the cut-off agent's dead-man's switch fired: it stopped by itself
        _, a3_err = agents["a3"].communicate(timeout=30)
        assert agents["a3"].returncode == 3
        assert "stopped sending load" in a3_err
        for name in ("a1", "a2"):
            agents[name].communicate(timeout=30)
            assert agents[name].returncode == 0
        with urllib.request.urlopen(f"http://{ctl}:18080/__stats", timeout=5) as r:  # a host this test made
            served = json.loads(r.read())["by_path"]["/"]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate(timeout=10)
    res = read_results(out)
    assert [e["agent"] for e in res["events"] if e["type"] == "agent_lost"] == [
        a["id"] for a in res["agents"] if a["state"] == "lost"
    ]
    assert len([a for a in res["agents"] if a["state"] == "lost"]) == 1
    assert {a["host"] for a in res["agents"]} != set()  # hosts are reported
    takeover = [e for e in res["events"] if e["type"] == "reshare"][-1]["at"]
    for iv in res["intervals"]:
        if takeover + 1 <= iv["t"] < 12:
            assert abs(iv["scheduled"] - 150) <= 3, res["intervals"]
    t = res["totals"]
    assert t["scheduled"] == t["ok"] + t["failed"] + t["dropped"] + t["in_flight_at_end"]
    # everything reported was really served; the cut-off host's last seconds were served but not reported
    assert t["ok"] <= served <= t["ok"] + t["unreported_estimate"] + t["in_flight_at_end"] + 100
