"""The coordinator benchmark's synchronous fleet (bench/sim_fleet.py) carries a real coordinator through a
whole run: a bench that hours of simulated run depend on must not stop speaking the protocol unnoticed."""

from __future__ import annotations

from pathlib import Path

from bench import sim_fleet
from coordinator.coordinator import Coordinator, CoordinatorConfig
from loadgen.profile_file import load_profile
from tests.fleet_harness import counts_interval


def test_a_synchronous_fleet_carries_a_real_coordinator_through_a_run(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        'name = "sim"\ntarget = "http://127.0.0.1:9"\n[load]\nstages = [{ duration = "30s", rate = 20 }]\n'
        '[[requests]]\nname = "a"\npath = "/a"\n'
    )
    seconds: list[int] = []
    fleet = sim_fleet.SimFleet(
        2, lambda k, s: counts_interval(s, 0, {"a": 10}, failed=int(s == 3)), on_second=seconds.append
    )
    coord = Coordinator(
        load_profile(path),
        CoordinatorConfig(expect_agents=2, out_dir=tmp_path / "out", seed=1),
        transport=fleet.transport,
        clock=fleet.clock,
        wall=fleet.clock.wall,
    )
    try:
        doc = coord.run()
    finally:
        coord.close()
    fleet.read()  # the last acknowledgements
    assert seconds == list(range(30))
    assert [iv["t"] for iv in doc["intervals"]] == list(range(30))
    assert doc["totals"]["ok"] == 2 * 30 * 10 - 2 and doc["totals"]["failed"] == 2
    assert [e["type"] for e in doc["events"]] == [
        "run_started",
        "agent_finished",
        "agent_finished",
        "run_finished",
    ]
    assert all(a.finished and a.acked == 29 for a in fleet.agents)
    assert (tmp_path / "out" / "results.json").exists()
