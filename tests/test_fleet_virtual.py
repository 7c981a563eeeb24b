"""Fleet behaviours on a virtual clock, in one process: a real coordinator and scripted agents over the
in-memory transport. Each story runs minutes of run time in well under a second, deterministically: no
sockets, no sleeps, no private fields. (tests/test_fleet.py keeps a few real-process runs for the sockets.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
import pytest

from loadgen import wire
from loadgen.errors import RunError
from loadgen.profile import Profile
from loadgen.profile_file import load_profile
from tests.fleet_harness import Crashed, VirtualFleet, counts_interval

RATE = 100


def _profile(tmp_path: Path, seconds: int = 20, rate: int = RATE, extra: str = "") -> Profile:
    path = tmp_path / "p.toml"
    path.write_text(
        f'name = "virtual"\ntarget = "http://127.0.0.1:9"\n{extra}\n[load]\narrival = "constant"\n'
        f'stages = [{{ duration = "0s", rate = {rate} }}, {{ duration = "{seconds}s", rate = {rate} }}]\n[[requests]]\nname = "a"\npath = "/a"\n'
    )
    return load_profile(path)


def _steady(index: int, share: float) -> wire.Interval:
    """A second of an agent carrying ``share`` of RATE, every request a success."""
    return counts_interval(index, 0, {"a": round(share * RATE)})


def _types(doc: dict[str, Any]) -> list[str]:
    return [e["type"] for e in doc["events"]]


def _run(fleet: VirtualFleet, profile: Profile, **config: Any) -> dict[str, Any]:
    coord = fleet.coordinator(profile, **config)
    try:
        return coord.run()
    finally:
        coord.close()
        fleet.settle()
        fleet.close()


def _accounted(doc: dict[str, Any]) -> None:
    t = doc["totals"]
    assert t["scheduled"] == t["ok"] + t["failed"] + t["dropped"] + t["in_flight_at_end"]


def test_two_agents_carry_the_profile_and_every_arrival_is_accounted_for(tmp_path: Path) -> None:
    fleet = VirtualFleet()
    agents = [fleet.agent(f"a{i}", _steady) for i in range(2)]
    doc = _run(fleet, _profile(tmp_path), expect_agents=2)
    assert doc["totals"]["scheduled"] == doc["totals"]["ok"] == doc["totals"]["planned"] == 20 * RATE
    assert doc["totals"]["unsent"] == 0 and doc["incomplete"] is None and doc["passed"] is True
    assert [iv["t"] for iv in doc["intervals"]] == list(range(20))
    assert all(iv["scheduled"] == RATE for iv in doc["intervals"])
    assert _types(doc) == ["run_started", "agent_finished", "agent_finished", "run_finished"]
    assert all(a.finished and a.stopped is None for a in agents)
    assert not doc["generator_saturated"] and doc["warnings"] == []


def test_a_killed_agent_is_declared_lost_its_share_moves_and_the_unsent_gap_is_counted(
    tmp_path: Path,
) -> None:
    fleet = VirtualFleet()
    fleet.agent("a0", _steady)
    survivor = fleet.agent("a1", _steady)
    start = fleet.loop.now
    fleet.loop.call_at(start + 6.0, fleet.kill, "a0")  # about 5 s into the run
    doc = _run(fleet, _profile(tmp_path, 30), expect_agents=2, agent_timeout=3.0)

    (lost,) = [e for e in doc["events"] if e["type"] == "agent_lost"]
    assert lost["agent"] == "a0"
    reshare = [e for e in doc["events"] if e["type"] == "reshare"][-1]
    assert reshare["shares"] == {"a1": 1.0} and 0 < reshare["at"] - lost["t"] <= 0.25 + 1e-9
    assert survivor.share == 1.0
    t = doc["totals"]
    # The gap between the victim's last report and the takeover: what it may have sent unreported, then
    # what no one sent. With them, every planned arrival is accounted for.
    assert t["unsent"] > 0 and t["unreported_estimate"] > 0
    assert t["scheduled"] + t["unreported_estimate"] + t["unsent"] == pytest.approx(t["planned"], abs=2)
    assert any("never sent" in w and str(t["unsent"]) in w for w in doc["warnings"])
    assert doc["incomplete"] is None  # the survivor carried the load
    after = [iv for iv in doc["intervals"] if iv["t"] >= reshare["at"] + 1]
    assert after and all(iv["scheduled"] == RATE for iv in after)
    _accounted(doc)


def test_an_agent_joining_mid_run_is_probed_and_given_a_share(tmp_path: Path) -> None:
    fleet = VirtualFleet()
    first = fleet.agent("a0", _steady)
    start = fleet.loop.now
    fleet.loop.call_at(start + 5.0, lambda: fleet.agent("late", _steady))
    doc = _run(fleet, _profile(tmp_path), expect_agents=1)
    (joined,) = [e for e in doc["events"] if e["type"] == "agent_joined"]
    assert joined["agent"] == "late" and joined["share"] == 0.5
    assert first.share == fleet.agents["late"].share == 0.5
    late = next(a for a in doc["agents"] if a["id"] == "late")
    assert late["joined_t"] == joined["at"] and late["scheduled"] > 0
    assert doc["totals"]["unsent"] == 0
    assert len(doc["agents"]) == 2 and doc["agents_expected"] == 1


def test_a_crashed_coordinator_resumes_and_the_agents_resend_what_it_had_not_made_durable(
    tmp_path: Path,
) -> None:
    fleet = VirtualFleet()
    agents = [fleet.agent(f"a{i}", _steady) for i in range(2)]
    profile = _profile(tmp_path, 20)
    coord = fleet.coordinator(profile, expect_agents=2, out_dir=tmp_path / "out")
    fleet.crash_at = fleet.loop.now + 9.3
    with pytest.raises(Crashed):
        coord.run()
    coord.close()
    fleet.loop.advance(2.0)  # the agents go on while no coordinator listens; their reports are lost
    resumed = fleet.resume(tmp_path / "out")
    try:
        doc = resumed.run_resumed()
    finally:
        resumed.close()
        fleet.settle()
        fleet.close()
    assert "coordinator_resumed" in _types(doc)
    # Nothing any agent sent is missing or counted twice.
    assert doc["totals"]["scheduled"] == doc["totals"]["ok"] == 20 * RATE
    assert [iv["t"] for iv in doc["intervals"]] == list(range(20))
    assert all(a.finished for a in agents)


def test_a_resumed_coordinator_still_refuses_a_late_agent_whose_flow_code_differs(tmp_path: Path) -> None:
    """The hashes of the first admitted agent's Python flow code survive a coordinator crash: an agent that
    joins after the resume with other code is refused, not taken as the new reference."""
    fleet = VirtualFleet()
    ref = "tests.flow_functions:shop"
    same, other = {ref: "a" * 64}, {ref: "b" * 64}
    for i in range(2):
        fleet.agent(f"a{i}", _steady, code_hashes=same)
    flows = f'[[flows]]\nname = "shop"\nfunction = "{ref}"\nsteps = ["size", "wait"]\n'
    path = tmp_path / "p.toml"
    path.write_text(
        'name = "virtual"\ntarget = "http://127.0.0.1:9"\n[load]\narrival = "constant"\n'
        f'stages = [{{ duration = "0s", rate = {RATE} }}, {{ duration = "20s", rate = {RATE} }}]\n{flows}'
    )
    profile = load_profile(path)
    coord = fleet.coordinator(profile, expect_agents=2, out_dir=tmp_path / "out")
    fleet.crash_at = fleet.loop.now + 6.3
    with pytest.raises(Crashed):
        coord.run()
    coord.close()
    resumed = fleet.resume(tmp_path / "out")
    late = fleet.agent("late", _steady, code_hashes=other)
    try:
        doc = resumed.run_resumed()
    finally:
        resumed.close()
        fleet.settle()
        fleet.close()
    refused = [e for e in doc["events"] if e["type"] == "agent_code_refused"]
    assert [e["agent"] for e in refused] == ["late"] and "differs from agent a" in refused[0]["reason"]
    assert late.stopped is not None and "Python flows" in late.stopped
    assert "late" not in {a["id"] for a in doc["agents"]}


def test_every_agent_refusing_the_run_is_a_run_that_did_not_carry_its_load(tmp_path: Path) -> None:
    fleet = VirtualFleet()
    for i in range(2):
        fleet.agent(f"a{i}", _steady, refuse="target not allowed on this agent")
    doc = _run(fleet, _profile(tmp_path, 10), expect_agents=2)
    assert _types(doc).count("agent_refused") == 2
    assert doc["incomplete"] and doc["totals"]["scheduled"] == 0
    assert doc["totals"]["unsent"] == doc["totals"]["planned"] == 10 * RATE
    assert any("NOTHING WAS SENT" in w for w in doc["warnings"])
    assert any("no agent left" in line for line in fleet.lines)


def test_one_agent_refusing_moves_its_share_but_the_run_is_still_incomplete(tmp_path: Path) -> None:
    fleet = VirtualFleet()
    fleet.agent("a0", _steady)
    fleet.agent("a1", _steady, refuse="share of the peak rate exceeds this agent's --max-rate")
    doc = _run(fleet, _profile(tmp_path, 10), expect_agents=2)
    assert doc["incomplete"] == "an agent refused its share of the run"
    t = doc["totals"]
    assert 0 < t["unsent"] < RATE and t["scheduled"] + t["unsent"] == pytest.approx(t["planned"], abs=1)


def test_agents_whose_limits_cannot_carry_the_peak_are_refused_before_the_start(tmp_path: Path) -> None:
    fleet = VirtualFleet()
    for i in range(2):
        fleet.agent(f"a{i}", _steady, max_rate=RATE / 4)
    coord = fleet.coordinator(_profile(tmp_path, 10), expect_agents=2)
    with pytest.raises(RunError, match="allows at most 25 requests/s"):
        coord.run()
    coord.close()
    fleet.settle(1.0)
    fleet.close()
    for a in fleet.agents.values():  # told why, not left to wonder where the coordinator went
        assert a.stopped is not None and "the run cannot start" in a.stopped


def test_a_peer_speaking_another_protocol_version_is_stopped_and_the_run_goes_on(tmp_path: Path) -> None:
    fleet = VirtualFleet()
    fleet.agent("a0", _steady)
    stranger = fleet.net.client("stranger")
    hello = msgpack.packb({"v": wire.PROTOCOL_VERSION + 1, "type": "hello", "agent_id": "stranger"})
    start = fleet.loop.now
    fleet.loop.call_at(start + 3.0, lambda: fleet.net.inject([b"stranger", hello]))
    fleet.loop.call_at(start + 4.0, lambda: fleet.net.inject([b"x", b"\xc1 not msgpack"]))
    fleet.loop.call_at(start + 4.5, lambda: fleet.net.inject([b"only one frame"]))
    doc = _run(fleet, _profile(tmp_path, 10), expect_agents=1)
    assert doc["totals"]["scheduled"] == 10 * RATE
    assert any("refused stranger" in line and "version" in line for line in fleet.lines)
    assert fleet.net.sent_to.get("stranger") == 1  # one Stop, saying why
    del stranger


def test_an_interrupted_run_stops_the_agents_and_still_ends_with_results(tmp_path: Path) -> None:
    fleet = VirtualFleet()
    agents = [fleet.agent(f"a{i}", _steady) for i in range(2)]
    coord = fleet.coordinator(_profile(tmp_path, 60), expect_agents=2)
    fleet.loop.call_at(fleet.loop.now + 8.0, coord.interrupt)
    try:
        doc = coord.run()
    finally:
        coord.close()
        fleet.settle()
        fleet.close()
    assert doc["interrupted"] is True and "interrupted" in _types(doc)
    assert all(a.stopped == "interrupted by the operator" for a in agents)
    assert 5 * RATE < doc["totals"]["scheduled"] < 10 * RATE
    assert doc["totals"]["planned"] < 10 * RATE  # planned up to the stop, not the profile's hour


def test_a_coordinator_with_no_agents_gives_up_at_its_join_timeout(tmp_path: Path) -> None:
    fleet = VirtualFleet()
    coord = fleet.coordinator(_profile(tmp_path), expect_agents=2, join_timeout=5.0)
    fleet.agent("a0", _steady)
    before = fleet.loop.now
    with pytest.raises(RunError, match="only 1 of 2 agents joined within 5 s"):
        coord.run()
    assert 5.0 <= fleet.loop.now - before < 5.5
    coord.close()
    fleet.settle(1.0)
    fleet.close()
    assert fleet.agents["a0"].stopped == "not enough agents joined"


# --- the real agent beside the real coordinator ------------------------------------------------------------


def test_real_agents_and_a_real_coordinator_carry_a_run_and_agree_on_every_count(tmp_path: Path) -> None:
    fleet = VirtualFleet()
    for i in range(2):
        fleet.real_agent(f"a{i}")
    coord = fleet.coordinator(_profile(tmp_path, 10), expect_agents=2, out_dir=tmp_path / "out")
    try:
        doc = coord.run()
    finally:
        coord.close()
        fleet.settle()
    outcomes = {a: t.result() for a, t in fleet.outcomes.items()}
    fleet.close()
    assert outcomes == {"a0": None, "a1": None}
    t = doc["totals"]
    assert t["scheduled"] == t["ok"] == t["planned"] == 10 * RATE
    assert t["unsent"] == 0 and t["in_flight_at_end"] == 0
    assert "agent_totals_mismatch" not in _types(doc)  # Finished agrees with the merged intervals
    assert doc["latency_ms"]["p50"] == pytest.approx(20.0, abs=0.1)  # the fake engine's 20 ms
    assert not doc["generator_saturated"] and doc["warnings"] == []
    assert [iv["scheduled"] for iv in doc["intervals"]] == [RATE] * 10 + [0]  # and the drain second
    assert any("a0: finished: scheduled 500, ok 500" in line for line in fleet.lines)


def test_a_killed_real_agent_is_replaced_by_the_survivor(tmp_path: Path) -> None:
    fleet = VirtualFleet()
    victim = fleet.real_agent("a0")
    fleet.real_agent("a1")
    at_kill: list[Any] = []

    def kill() -> None:
        at_kill.append(victim.counts())  # what it really had done when it died
        fleet.kill("a0")

    fleet.loop.call_at(fleet.loop.now + 7.6, kill)
    coord = fleet.coordinator(_profile(tmp_path, 20), expect_agents=2)
    try:
        doc = coord.run()
    finally:
        coord.close()
        fleet.settle()
    survivor = fleet.outcomes["a1"].result()
    fleet.close()
    assert survivor is None
    t = doc["totals"]
    assert "agent_lost" in _types(doc)
    assert t["scheduled"] + t["unreported_estimate"] + t["unsent"] == pytest.approx(t["planned"], abs=3)
    after = [iv for iv in doc["intervals"] if 11 <= iv["t"] < 20]
    assert after and all(iv["scheduled"] == RATE for iv in after)
    _accounted(doc)
    # The estimates against what the victim really had: arrivals it scheduled after its last report, within
    # one heartbeat's worth of its share; requests in flight, as of its last report.
    (really,) = at_kill
    merged = next(a for a in doc["agents"] if a["id"] == "a0")
    unreported = really.scheduled - merged["scheduled"]
    assert unreported > 0
    assert abs(t["unreported_estimate"] - unreported) <= 0.5 * RATE * 1.0
    assert t["lost_in_flight"] <= really.in_flight + 1


def test_real_agents_stop_on_their_own_when_the_coordinator_dies(tmp_path: Path) -> None:
    """The dead-man's switch: with the coordinator gone (crashed, never resumed), each agent stops sending
    load within its coordinator timeout and says so."""
    fleet = VirtualFleet()
    for i in range(2):
        fleet.real_agent(f"a{i}")
    coord = fleet.coordinator(_profile(tmp_path, 60), expect_agents=2, coordinator_timeout=3.0)
    fleet.crash_at = fleet.loop.now + 5.0
    with pytest.raises(Crashed):
        coord.run()
    coord.close()
    fleet.loop.advance(3.0 + 1.5)  # the timeout, and a turn of each agent's control loop
    outcomes = {a: t.done() and t.result() for a, t in fleet.outcomes.items()}
    fleet.close()
    for exc in outcomes.values():
        assert isinstance(exc, RunError) and "stopped sending load" in str(exc)
