"""The per-second series on disk: the spool reads back what was closed, results.json streamed from it is the
document ``json.dump`` writes, a resume after a crash between an append and a checkpoint neither loses nor
repeats a second, and the coordinator holds nothing per second of run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from coordinator.coordinator import Coordinator, CoordinatorConfig
from coordinator.results import AgentInfo, write_json_atomic
from coordinator.spool import SPOOL_FILE, IntervalSpool, SpoolError, SpoolMark, render_body
from coordinator.state import STATE_FILE, read_state
from loadgen import histogram, wire
from loadgen.profile_file import load_profile

AGENTS = ("sim-a", "sim-b")


def _interval_summary(t: int) -> dict[str, Any]:
    return {
        "t": t,
        "target_rate": 1000.5,
        "scheduled": 1000 + t,
        "ok": 990,
        "failed": 10,
        "dropped": 0,
        "errors": {"http_503": 10, "tim\u00e9out": 1} if t % 3 else {},
        "p50": 20.1 if t % 2 else None,
        "p99": 80.25,
        "max": 300.0,
        "service_p50": 19.5,
        "service_p99": 70.0,
        "send_lag_p99": 0.05,
        "cpu_max": 0.4,
        "saturated": t % 5 == 0,
    }


def test_spool_reads_back_what_was_appended_and_is_the_body_of_the_json_array(tmp_path: Path) -> None:
    spool = IntervalSpool.create(tmp_path)
    written = [_interval_summary(t) for t in range(50)]
    for iv in written:
        spool.append(iv)
    mark = spool.sync()
    assert mark == SpoolMark(50, (tmp_path / SPOOL_FILE).stat().st_size)
    assert spool.read() == written
    assert spool.tally.count == 50 and spool.tally.saturated == 10 and spool.tally.first_saturated == 0
    assert spool.tally.last == written[-1]
    text = json.dumps({"intervals": written}, indent=1)
    assert text == '{\n "intervals": [' + (tmp_path / SPOOL_FILE).read_text() + "\n ]\n}"
    spool.close()


def test_results_json_from_the_spool_is_byte_identical_to_json_dump(tmp_path: Path) -> None:
    spool = IntervalSpool.create(tmp_path / "run")
    intervals: list[dict[str, Any]] = []
    head = {"schema": 1, "name": 'quo"te\n\u00e9', "requests": {"a": {"count": 1}}}
    tail = {"agents": [{"id": "a", "share": 0.5}], "events": [], "passed": True}
    for n in (0, 1, 2, 7, 40):
        while len(intervals) < n:
            intervals.append(_interval_summary(len(intervals)))
            spool.append(intervals[-1])
        streamed = {**head, "intervals": spool.mark, **tail}
        write_json_atomic(tmp_path / "results.json", streamed, spool)
        in_memory = {**head, "intervals": intervals, **tail}
        assert (tmp_path / "results.json").read_text() == json.dumps(in_memory, indent=1) + "\n"
    spool.close()


def test_reopen_cuts_the_spool_back_to_the_checkpoint(tmp_path: Path) -> None:
    spool = IntervalSpool.create(tmp_path)
    for t in range(10):
        spool.append(_interval_summary(t))
    mark = spool.sync()
    spool.append(_interval_summary(10))  # closed after the checkpoint: must go
    spool.close()
    again = IntervalSpool.reopen(tmp_path, mark)
    assert again.mark == mark and [iv["t"] for iv in again.read()] == list(range(10))
    again.append(_interval_summary(10))
    assert [iv["t"] for iv in again.read()] == list(range(11))
    again.close()
    assert (tmp_path / SPOOL_FILE).read_bytes() == render_body([_interval_summary(t) for t in range(11)])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("delete", "missing"),
        ("shorten", "truncated"),
        ("cut_entry", "cut short|not valid JSON|not an interval"),
        ("garble", "not valid JSON|not an interval"),
        ("fewer", "holds 10 seconds .* says 9"),
    ],
)
def test_a_damaged_spool_is_a_clear_error_naming_the_file(tmp_path: Path, damage: str, message: str) -> None:
    spool = IntervalSpool.create(tmp_path)
    for t in range(10):
        spool.append(_interval_summary(t))
    mark = spool.sync()
    spool.close()
    path = tmp_path / SPOOL_FILE
    data = path.read_bytes()
    if damage == "delete":
        path.unlink()
    elif damage == "shorten":
        path.write_bytes(data[:-5])
    elif damage == "cut_entry":  # same length, but the last entry's end is gone
        path.write_bytes(data[: mark.size - 40] + b" " * 40)
    elif damage == "garble":  # a broken structure (the spool has no checksum: it catches framing damage)
        at = data.index(b'": ', 100)
        path.write_bytes(data[:at] + b'"# ' + data[at + 3 :])
    else:
        mark = SpoolMark(9, mark.size)
    with pytest.raises(SpoolError, match=message) as exc:
        IntervalSpool.reopen(tmp_path, mark)
    assert str(path) in str(exc.value)


# --- the coordinator, driven through simulated seconds --------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.t = 500.0

    def __call__(self) -> float:
        return self.t

    def wall(self) -> float:
        return 1.8e9 + self.t


def _profile(tmp_path: Path) -> Any:
    path = tmp_path / "p.toml"
    path.write_text(
        'name = "spool"\ntarget = "http://127.0.0.1:9"\n[load]\nstages = [{ duration = "1h", rate = 20 }]\n'
        '[[requests]]\nname = "a"\npath = "/a"\n[[requests]]\nname = "b"\npath = "/b"\n'
    )
    return load_profile(path)


def _message(agent: int, index: int) -> wire.Interval:
    names: dict[str, list[Any]] = {}
    for j, name in enumerate(("a", "b")):
        lat, svc = histogram.new_histogram(), histogram.new_histogram()
        for k in range(5):
            lat.record_value(1000 + 37 * index + 101 * k + 13 * agent + j)
            svc.record_value(900 + 29 * index + 97 * k + j)
        failed = int((index + agent + j) % 4 == 0)
        names[name] = [5, 5 - failed, failed, {"http_500": failed} if failed else {}, histogram.encode(lat),
                       histogram.encode(svc)]  # fmt: skip
    lag = histogram.new_histogram()
    lag.record_value(50 + index % 7)
    return wire.Interval(index, 0, 10, 0, 1, names, histogram.encode(lag), 0.1 + 0.01 * (index % 5))


def _new(tmp_path: Path, out: Path | None, clock: FakeClock) -> Coordinator:
    config = CoordinatorConfig(bind="tcp://127.0.0.1:0", expect_agents=len(AGENTS), out_dir=out, seed=7)
    coord = Coordinator(_profile(tmp_path), config, clock=clock, wall=clock.wall)
    coord.bind()
    coord.run_id = "r1"
    for a in AGENTS:
        coord.agents[a] = AgentInfo(a, "sim", 1, state="active", share=0.5)
    coord._phase = "run"
    coord._start_at = clock.t
    coord._started_wall = clock.wall()
    coord.events.append({"t": 0.0, "type": "run_started", "agents": len(AGENTS)})
    return coord


def _drive(coord: Coordinator, clock: FakeClock, seconds: range, checkpoint_every: int = 4) -> None:
    """Each simulated agent's interval for each second, closing and checkpointing as the run loop does."""
    for s in seconds:
        for k, a in enumerate(AGENTS):
            coord._on_interval(a, _message(k, s))
            coord._last_heard[a] = clock.t
        clock.t = coord._start_at + s + 2.0
        coord._close_intervals(s)
        coord._progress_line(clock.t)
        if (s + 1) % checkpoint_every == 0:
            coord._checkpoint(results=(s + 1) % (2 * checkpoint_every) == 0)


def _finish(coord: Coordinator) -> dict[str, Any]:
    for a in AGENTS:
        coord.agents[a].state = "finished"
    try:
        return coord._finish()
    finally:
        coord.close()


@pytest.mark.integration  # binds the coordinator's ZeroMQ socket on loopback
def test_resume_after_a_crash_between_append_and_checkpoint_gives_the_same_results(tmp_path: Path) -> None:
    clock = FakeClock()
    whole = _new(tmp_path, tmp_path / "whole", clock)
    _drive(whole, clock, range(40))
    expected = _finish(whole)

    clock = FakeClock()
    crashed = _new(tmp_path, tmp_path / "crashed", clock)
    _drive(crashed, clock, range(22))  # checkpointed through second 19 (the agents' data acknowledged)
    _drive(crashed, clock, range(22, 27), checkpoint_every=1000)  # closed and spooled, never checkpointed
    crashed.spool.sync()  # the appends reached the file before the crash
    assert crashed.spool.mark.count > read_state(tmp_path / "crashed")["spool"]["count"]
    crashed.close()

    state = read_state(tmp_path / "crashed")
    resumed = Coordinator.resume(tmp_path / "crashed", clock=clock, wall=clock.wall, bind="tcp://127.0.0.1:0")
    assert resumed.spool.mark.count == state["spool"]["count"]
    resumed.bind()
    resumed._hold_intervals_until = 0.0
    # The agents re-send everything not acknowledged by a checkpoint (here: from the last one on).
    acked = {a: resumed.agg.agent(a).contiguous for a in AGENTS}
    first = min(acked.values()) + 1
    assert first <= 22
    _drive(resumed, clock, range(first, 40))
    got = _finish(resumed)

    assert [iv["t"] for iv in got["intervals"]] == list(range(40))
    strip = ("events",)
    assert {k: v for k, v in got.items() if k not in strip} == {
        k: v for k, v in expected.items() if k not in strip
    }
    assert [e["type"] for e in got["events"]] == ["run_started", "coordinator_resumed", "run_finished"]
    for name in ("latency.hlog", SPOOL_FILE):
        assert (tmp_path / "crashed" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    assert (tmp_path / "crashed" / "results.json").read_text() == json.dumps(got, indent=1) + "\n"


@pytest.mark.integration  # binds the coordinator's ZeroMQ socket on loopback
def test_results_json_written_during_the_run_is_json_dump_of_the_document(tmp_path: Path) -> None:
    clock = FakeClock()
    coord = _new(tmp_path, tmp_path / "out", clock)
    _drive(coord, clock, range(30))
    doc = _finish(coord)
    assert len(doc["intervals"]) == 30
    on_disk = (tmp_path / "out" / "results.json").read_text()
    assert on_disk == json.dumps(doc, indent=1) + "\n"
    state = (tmp_path / "out" / STATE_FILE).read_bytes()
    assert b'"t": 3' not in state and read_state(tmp_path / "out")["spool"]["count"] == 30


@pytest.mark.integration  # binds the coordinator's ZeroMQ socket on loopback
def test_a_run_without_an_output_folder_spools_to_a_temporary_file(tmp_path: Path) -> None:
    clock = FakeClock()
    coord = _new(tmp_path, None, clock)
    _drive(coord, clock, range(12))
    doc = _finish(coord)
    assert [iv["t"] for iv in doc["intervals"]] == list(range(12))
    assert list(tmp_path.iterdir()) == [tmp_path / "p.toml"]


def _sizes(coord: Coordinator) -> dict[str, int]:
    """The length of every container the coordinator and its aggregate hold."""
    out = {}
    for owner, obj in (("coord", coord), ("agg", coord.agg), ("hours", coord.hours)):
        for key, value in vars(obj).items():
            if isinstance(value, list | dict | set | tuple | bytes | bytearray | str):
                out[f"{owner}.{key}"] = len(value)
    for a, t in coord.agg.agents.items():
        out[f"ahead.{a}"] = len(t.ahead)
    return out


@pytest.mark.integration  # binds the coordinator's ZeroMQ socket on loopback
def test_the_coordinator_holds_nothing_per_second_of_run(tmp_path: Path) -> None:
    clock = FakeClock()
    coord = _new(tmp_path, tmp_path / "out", clock)
    _drive(coord, clock, range(40))
    early = _sizes(coord)
    _drive(coord, clock, range(40, 400))
    late = _sizes(coord)
    assert coord.spool.mark.count == 400
    grown = {k: (early.get(k), n) for k, n in late.items() if n > early.get(k, 0)}
    assert grown == {}, grown
    _finish(coord)
