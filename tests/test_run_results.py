"""The library's typed results, the store of every closed second, and the action runner: pure logic, with
hdrhistogram's own figures as the reference and a clock the test moves."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadgen.actions import Action, ActionRunner, StopRun, actions_from, check_within
from loadgen.histogram import new_histogram
from loadgen.run_results import Percentiles, Results, Window
from loadgen.seconds_store import SecondsStore
from tests.results_fixtures import make_results


def hist(values_us: list[int]) -> Any:
    h = new_histogram()
    for v in values_us:
        h.record_value(v)
    return h


@given(st.lists(st.integers(1, 10_000_000), min_size=1, max_size=300), st.floats(0.001, 100.0))
@settings(max_examples=60, deadline=None)
def test_percentiles_are_hdrhistograms_own_figures_in_seconds(values: list[int], p: float) -> None:
    h = hist(values)
    figures = Percentiles.of(h)
    assert figures.count == len(values)
    assert figures.p99 == h.get_value_at_percentile(99.0) / 1e6
    assert figures.p999 == h.get_value_at_percentile(99.9) / 1e6
    assert figures.max == h.get_max_value() / 1e6
    assert figures.percentile(p) == h.get_value_at_percentile(p) / 1e6


def test_no_sample_is_nan_so_that_no_assertion_passes_by_accident() -> None:
    empty = Percentiles.of(new_histogram())
    assert empty.count == 0 and math.isnan(empty.p99) and math.isnan(empty.percentile(50))
    assert not empty.p99 < 1.0 and not empty.p99 > 1.0
    assert "p99=nan" in repr(empty)


def test_figures_read_from_a_file_know_only_their_own_percentiles() -> None:
    figures = Percentiles.from_summary({"p50": 2.0, "p99": 12.5, "p99.9": 30.0, "max": 31.0}, count=10)
    assert figures.p99 == 0.0125 and figures.percentile(99.9) == 0.03
    with pytest.raises(ValueError, match="without its histogram"):
        figures.percentile(99.5)
    with pytest.raises(ValueError, match="> 0 and <= 100"):
        Percentiles.of(hist([1])).percentile(0)


def test_the_repr_reads_in_milliseconds() -> None:
    assert repr(Percentiles.of(hist([1500, 2500, 1_200_000]))).startswith(
        "Percentiles(count=3, p50=2.5ms, p90=1.2s"
    )


def second(index: int, values: dict[str, list[int]], failed: int = 0) -> tuple[Any, ...]:
    n = sum(len(v) for v in values.values())
    summary = {"t": index, "scheduled": n + failed, "ok": n, "failed": failed, "dropped": 0, "errors": {}}
    if failed:
        summary["errors"] = {"http_500": failed}
    by_name = {name: hist(v) for name, v in values.items()}
    service = {name: hist([max(1, x // 2) for x in v]) for name, v in values.items()}
    return index, summary, by_name, service


@given(
    st.lists(
        st.dictionaries(st.sampled_from(["a", "b"]), st.lists(st.integers(1, 10**6), max_size=20)),
        max_size=12,
    ),
    st.integers(0, 12),
    st.integers(1, 13),
)
@settings(max_examples=40, deadline=None)
def test_a_window_merges_exactly_the_seconds_inside_it(
    seconds: list[dict[str, list[int]]], lo: int, span: int
) -> None:
    store = SecondsStore()
    try:
        for i, values in enumerate(seconds):
            store.add(*second(i, values, failed=i % 3))
        window = Window.of(lo, lo + span, store.merged(lo, lo + span))
        inside = seconds[lo : lo + span]
        expected = hist([v for s in inside for vs in s.values() for v in vs])
        assert window.seconds == len(inside)
        assert window.ok == sum(len(v) for s in inside for v in s.values())
        assert window.failed == sum(i % 3 for i in range(lo, min(lo + span, len(seconds))))
        assert window.latency.count == expected.get_total_count()
        if expected.get_total_count():
            assert window.latency.p99 == expected.get_value_at_percentile(99.0) / 1e6
        for name, figures in window.requests.items():
            assert figures.count == sum(len(s.get(name, [])) for s in inside)
    finally:
        store.close()


def test_results_window_needs_its_histograms_and_a_window_that_ends_after_it_starts() -> None:
    results = Results(make_results())  # as if read from a file: no store
    with pytest.raises(ValueError, match="no per-second histograms"):
        results.window("1s")
    store = SecondsStore()
    with_store = Results(make_results(), store=store)
    with pytest.raises(ValueError, match="must come after its start"):
        with_store.window("5s", "2s")
    store.close()


def test_the_threshold_table_names_every_verdict() -> None:
    doc = make_results()
    doc["thresholds"] = [
        {"expr": "p99 < 500ms", "passed": True, "observed": 12.0, "detail": ""},
        {"expr": "error_rate < 1%", "passed": False, "observed": 0.05, "detail": ""},
    ]
    table = Results(doc).threshold_table()
    assert "Thresholds: FAIL (1 of 2 passed)" in table
    assert "pass  p99 < 500ms" in table and "FAIL  error_rate < 1%" in table


# --- actions ---------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        self.stops: list[str] = []
        self.changed = threading.Condition()

    def post(self, t: float, kind: str, **fields: Any) -> None:
        with self.changed:
            self.events.append((t, kind, fields))
            self.changed.notify_all()

    def stop(self, reason: str) -> None:
        self.stops.append(reason)

    def wait_for(self, n: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.events) >= n, timeout=5), self.events

    def kinds(self) -> list[tuple[str, str]]:
        return [(kind, fields["name"]) for _, kind, fields in self.events]


def test_actions_are_called_when_the_clock_reaches_them_and_their_outcomes_recorded() -> None:
    clock, rec = FakeClock(), Recorder()
    called: list[str] = []

    def boom() -> None:
        raise RuntimeError("no")

    async def coro() -> None:
        called.append("coro")

    actions = [
        *actions_from({"2s": lambda: called.append("two"), "1s": boom}),
        Action.make(3, coro, name="c"),
    ]
    runner = ActionRunner(actions, post=rec.post, stop=rec.stop, clock=clock)
    runner.start(start_at=100.0)
    time.sleep(0.15)  # the scheduler looks at the clock every 50 ms; nothing is due at 0 s
    assert rec.events == []
    clock.now = 101.0
    rec.wait_for(2)
    assert rec.kinds() == [("action_started", "boom"), ("action_finished", "boom")]
    assert rec.events[1][2] == {
        "name": "boom",
        "outcome": "error",
        "seconds": 0.0,
        "error": "RuntimeError: no",
    }
    assert rec.events[0][0] == 1.0 and rec.stops == []  # the run goes on
    clock.now = 103.5
    rec.wait_for(6)
    assert sorted(called) == ["coro", "two"]
    runner.finish(clock.now)
    assert {k for k, _ in rec.kinds()} == {"action_started", "action_finished"}


def test_an_action_stops_the_run_by_raising_stoprun_or_by_failing_with_on_error_stop() -> None:
    clock, rec = FakeClock(), Recorder()

    def enough() -> None:
        raise StopRun("seen enough")

    def broken() -> None:
        raise ValueError("bad")

    actions = [Action.make("1s", enough), Action.make("2s", broken, on_error="stop")]
    runner = ActionRunner(actions, post=rec.post, stop=rec.stop, clock=clock)
    runner.start(100.0)
    clock.now = 101.0  # one at a time: each action has its own thread, so two due at once end in any order
    rec.wait_for(2)
    clock.now = 102.0
    rec.wait_for(4)
    assert rec.stops == ["seen enough", "action 'broken' failed: ValueError: bad"]
    outcomes = [f["outcome"] for _, k, f in rec.events if k == "action_finished"]
    assert outcomes == ["stopped the run", "error"]


def test_at_the_end_running_and_unstarted_actions_are_accounted_for() -> None:
    clock, rec = FakeClock(), Recorder()
    release = threading.Event()
    actions = [Action.make("1s", release.wait, name="slow"), Action.make("10s", lambda: None, name="late")]
    runner = ActionRunner(actions, post=rec.post, stop=rec.stop, clock=clock)
    runner.start(100.0)
    clock.now = 101.0
    rec.wait_for(1)
    clock.now = 105.0
    runner.finish(clock.now)
    runner.finish(clock.now)  # once only
    release.set()
    assert rec.kinds() == [
        ("action_started", "slow"),
        ("action_finished", "slow"),
        ("action_skipped", "late"),
    ]
    assert rec.events[1][2]["outcome"] == "still running at the end of the run"
    assert rec.events[2][0] == 5.0


def test_actions_are_checked_before_the_run() -> None:
    with pytest.raises(TypeError, match="callable"):
        Action.make("1s", "not a function")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="on_error"):
        Action.make("1s", print, on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="duration"):
        Action.make("soon", print)
    with pytest.raises(ValueError, match="'late' at 60 s is outside the profile, which lasts 30 s"):
        check_within([Action.make("1m", print, name="late")], 30.0)
