"""The live page's feed without a socket or a browser: the curve stays bounded and keeps what matters when it
coarsens (totals, means, spikes), a page that asks only for what changed ends up with exactly the server's
curve, the events are bounded, the figures are the metrics' exact ones, and a real coordinator (simulated
fleet, virtual time) feeds the page, then hands it the report. The page itself is checked for what it may
load and run."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import sim_fleet
from coordinator.coordinator import Coordinator, CoordinatorConfig
from coordinator.live_feed import (
    MAX_EVENTS,
    MAX_POINTS,
    EventLog,
    History,
    Plan,
    Point,
    Query,
    feed,
    point_of,
)
from coordinator.live_metrics import Board, FleetView
from coordinator.live_page import PAGE, PAGE_POLICY, REPORT_POLICY, SCRIPT, STYLE
from coordinator.metrics_server import RunMetrics, end_seen
from loadgen.percentiles import values_at_percentiles
from loadgen.profile import Stage
from loadgen.profile_file import load_profile
from tests.fleet_harness import counts_interval
from tests.strategies import live_seconds
from tests.test_live_metrics import IDENTITY, NAMES, random_seconds

PLAN = Plan("checkout", "checkout.toml", "abc123", 60.0, 10.0, (Stage(30.0, 100.0), Stage(30.0, 100.0)))


def one_second(t: int, achieved: float = 100.0, p99: float | None = 5.0, **errors: int) -> Point:
    return Point(t, 1, 100.0, achieved, (1.0, 2.0, p99), errors, False)


def history_of(points: list[Point], max_points: int = MAX_POINTS) -> History:
    h = History(max_points)
    for p in points:
        h.add(p)
    return h


def fed(
    history: History, query: Query | None = None, frame: Any = None, log: EventLog | None = None
) -> dict[str, Any]:
    frame = frame if frame is not None else Board(IDENTITY, NAMES).frame
    events = (log or EventLog()).published
    doc = feed(PLAN, frame, history.published, events, elapsed=12.0, query=query or Query(), report=False)
    json.dumps(doc, allow_nan=False)  # what the server sends
    return doc


def take(held: list[dict[str, Any]], doc: dict[str, Any]) -> list[dict[str, Any]]:
    """What the page's script does with an answer (live_page.js, ``take``)."""
    if doc["reset"]:
        return list(doc["points"])
    if doc["points"]:
        first = doc["points"][0]["t"]
        return [p for p in held if p["t"] < first] + doc["points"]
    return held


# -- the curve ---------------------------------------------------------------------------------------------


def test_an_eight_hour_soak_keeps_at_most_max_points_at_sixteen_seconds_each() -> None:
    h = history_of(
        [one_second(t, achieved=float(t % 100), p99=9999.0 if t == 20_001 else 5.0) for t in range(28_800)]
    )
    assert len(h.points) <= MAX_POINTS
    assert h.span == 16 and len(h.points) == 28_800 // 16
    assert all(p.t % 16 == 0 and p.seconds == 16 for p in h.points)
    assert max(p.percentiles[2] or 0 for p in h.points) == 9999.0  # the spike survives coarsening
    assert sum(p.achieved * p.seconds for p in h.points) == pytest.approx(sum(t % 100 for t in range(28_800)))
    doc = fed(h, Query(since=h.points[-1].t, span=16))
    assert len(doc["points"]) == 1 and not doc["reset"]
    print(f"8 h: {len(json.dumps(fed(h)))} bytes on a reset, {len(json.dumps(doc))} bytes a poll")


@settings(max_examples=150, deadline=None)
@given(seconds=live_seconds(), max_points=st.integers(2, 40))
def test_coarsening_keeps_totals_means_and_spikes(seconds: list[Point], max_points: int) -> None:
    h = history_of(seconds, max_points)
    points = h.points
    assert len(points) <= max_points
    assert [p.t for p in points] == sorted({p.t for p in points})
    assert all(p.t % h.span == 0 and 1 <= p.seconds <= h.span for p in points)
    assert sum(p.seconds for p in points) == len(seconds)
    assert sum(p.achieved * p.seconds for p in points) == pytest.approx(sum(p.achieved for p in seconds))
    for i in range(3):
        assert max((p.percentiles[i] for p in points if p.percentiles[i] is not None), default=None) == max(
            (p.percentiles[i] for p in seconds if p.percentiles[i] is not None), default=None
        )
    totals: dict[str, int] = {}
    for p in seconds:
        for k, v in p.errors.items():
            totals[k] = totals.get(k, 0) + v
    merged: dict[str, int] = {}
    for p in points:
        for k, v in p.errors.items():
            merged[k] = merged.get(k, 0) + v
    assert merged == totals
    assert any(p.saturated for p in points) == any(p.saturated for p in seconds)
    targets = [p.target for p in seconds if p.target is not None]
    if targets:
        weighted = [(p.target, p.seconds) for p in points if p.target is not None]
        assert (
            min(targets) - 1e-6
            <= min(t for t, _ in weighted)
            <= max(t for t, _ in weighted)
            <= max(targets) + 1e-6
        )


@settings(max_examples=100, deadline=None)
@given(seconds=live_seconds(max_size=120), max_points=st.integers(2, 12), every=st.integers(1, 5))
def test_a_page_that_asks_only_for_what_changed_holds_the_servers_curve(
    seconds: list[Point], max_points: int, every: int
) -> None:
    h = History(max_points)
    held: list[dict[str, Any]] = []
    span = 0
    for i, p in enumerate(seconds):
        h.add(p)
        if i % every == 0:
            doc = fed(h, Query(held[-1]["t"] if held else None, span))
            held, span = take(held, doc), doc["span"]
    doc = fed(h, Query(held[-1]["t"] if held else None, span))
    assert take(held, doc) == [p.as_json() for p in h.points]


def test_a_changed_span_or_no_since_resends_everything() -> None:
    h = history_of([one_second(t) for t in range(10)], max_points=4)
    assert h.span == 4
    assert fed(h)["reset"] and len(fed(h)["points"]) == len(h.points)
    stale = fed(h, Query(since=8, span=2))
    assert stale["reset"] and len(stale["points"]) == len(h.points)
    fresh = fed(h, Query(since=8, span=4))
    assert not fresh["reset"] and [p["t"] for p in fresh["points"]] == [8]


def test_a_second_after_a_gap_starts_its_own_point() -> None:
    h = history_of([one_second(0), one_second(1), one_second(7, achieved=3.0)], max_points=3)
    assert [(p.t, p.seconds) for p in h.points] == [(0, 1), (1, 1), (7, 1)]
    h.add(one_second(9))
    assert h.span == 2 and [(p.t, p.seconds) for p in h.points] == [(0, 2), (6, 1), (8, 1)]


def test_the_query_string_is_read_leniently() -> None:
    assert Query.parse({}) == Query(None, 0, 0)
    assert Query.parse({"since": ["12"], "span": ["4"], "events": ["3"]}) == Query(12, 4, 3)
    assert Query.parse({"since": ["x"], "span": ["-2"], "events": ["1e9"]}) == Query(None, 0, 0)


# -- the events --------------------------------------------------------------------------------------------


def test_events_are_bounded_and_sent_from_what_the_page_holds() -> None:
    log = EventLog()
    log.extend({"t": float(i), "type": "agent_joined", "agent": f"a{i}"} for i in range(MAX_EVENTS + 100))
    log.extend([{"t": 700.0, "type": "agent_lost", "agent": "<b>x</b>"}])
    h = History()
    doc = fed(h, log=log)
    assert doc["events_total"] == MAX_EVENTS + 101
    assert len(doc["events"]) == MAX_EVENTS and doc["events"][0]["n"] == 101
    assert doc["events"][-1] == {
        "n": MAX_EVENTS + 100,
        "t": 700.0,
        "type": "agent_lost",
        "text": "agent_lost <b>x</b>",
    }
    assert [e["n"] for e in fed(h, Query(events=MAX_EVENTS + 99), log=log)["events"]] == [599, 600]
    assert fed(h, Query(events=MAX_EVENTS + 101), log=log)["events"] == []
    assert doc["saturation"] is None


def test_saturation_warnings_outlive_the_kept_events() -> None:
    log = EventLog(keep=3)
    log.extend([{"t": 2.5, "type": "generator_saturated", "second": 2, "why": "send lag p99 9 ms over 5 ms"}])
    log.extend([{"t": 9.0, "type": "generator_saturated", "second": 8, "why": "dropped 4"}])
    log.extend({"t": 10.0 + i, "type": "reshare"} for i in range(5))
    doc = fed(History(), log=log)
    assert [e["type"] for e in doc["events"]] == ["reshare"] * 3
    assert doc["saturation"] == {"warnings": 2, "t": 9.0, "second": 8, "why": "dropped 4"}
    log = EventLog()
    log.extend([{"t": 2.5, "type": "generator_saturated", "second": 2, "why": "dropped 4"}])
    assert fed(History(), log=log)["events"][0]["text"] == "generator_saturated: dropped 4"


# -- the figures -------------------------------------------------------------------------------------------


def test_a_seconds_point_holds_its_exact_percentiles() -> None:
    for closed in random_seconds(20, seed=3):
        p = point_of(closed)
        h = closed.latency
        if not h.get_total_count():
            assert p.percentiles == (None, None, None)
            continue
        exact = values_at_percentiles(h, (50.0, 90.0, 99.0))
        assert p.percentiles == (exact[50.0] / 1000, exact[90.0] / 1000, exact[99.0] / 1000)
        assert p.achieved == closed.summary["ok"] and p.seconds == 1


def test_the_figures_are_the_metrics_ones() -> None:
    board = Board(IDENTITY, NAMES)
    seconds = random_seconds(12, seed=8)
    outcomes = {"home": {"ok": 90, "timeout": 3, "status 503": 7}, "search": {"ok": 5, "status 503": 1}}
    view = FleetView(outcomes, scheduled=110, dropped=4, in_flight=2, agents={"connected": 3, "lost": 1},
                     thresholds={"p99 < 1s": True, "error_rate < 1%": False})  # fmt: skip
    for closed in seconds:
        board.second(closed, view)
    doc = fed(History(), frame=board.frame)
    q = dict(board.frame.quantiles[("response", "")])
    assert (doc["p50"], doc["p90"], doc["p99"]) == tuple(round(q[x] * 1000, 3) for x in (0.5, 0.9, 0.99))
    home = next(r for r in doc["requests"] if r["name"] == "home")
    assert (home["ok"], home["failed"]) == (90, 10)
    assert home["p99"] == round(dict(board.frame.quantiles[("response", "home")])[0.99] * 1000, 3)
    assert doc["errors"] == [["status 503", 8], ["timeout", 3]]
    assert (doc["ok"], doc["failed"], doc["dropped"], doc["in_flight"]) == (95, 11, 4, 2)
    assert doc["agents"] == {"connected": 3, "lost": 1, "refused": 0}
    assert doc["thresholds"] == [
        {"expr": "p99 < 1s", "passing": True},
        {"expr": "error_rate < 1%", "passing": False},
    ]
    assert doc["window_s"] == 10 and doc["closed_seconds"] == 12
    assert doc["stage"] == {"index": 1, "count": 2, "from": 10.0, "to": 100.0}  # elapsed 12 s of a 30 s ramp


def test_the_server_leaves_once_every_kind_of_reader_has_read_the_end() -> None:
    assert not end_seen(frozenset(), frozenset())
    assert end_seen(frozenset(), frozenset({"metrics"}))  # nobody watched: anybody reading the end will do
    assert end_seen(frozenset({"metrics"}), frozenset({"metrics"}))
    assert not end_seen(frozenset({"metrics", "page"}), frozenset({"metrics"}))  # the page would miss it
    assert end_seen(frozenset({"metrics", "page"}), frozenset({"page", "metrics"}))


# -- a real coordinator, simulated fleet, no socket -------------------------------------------------------


def test_a_coordinator_feeds_the_page_then_hands_it_the_report(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        'name = "sim"\ntarget = "http://127.0.0.1:9"\n[load]\nstages = [{ duration = "20s", rate = 20 }]\n'
        '[[requests]]\nname = "<img src=x onerror=alert(1)>"\npath = "/a"\n'
    )
    name = "<img src=x onerror=alert(1)>"
    polls: list[dict[str, Any]] = []
    metrics: RunMetrics | None = None

    def poll(second: int) -> None:
        assert metrics is not None
        response = metrics.respond("/live.json")
        assert response.status == 200 and response.reader == "page" and not response.final
        polls.append(json.loads(response.body))

    fleet = sim_fleet.SimFleet(
        2, lambda k, s: counts_interval(s, 0, {name: 10}, failed=int(s == 3)), on_second=poll
    )
    coord = Coordinator(
        load_profile(path),
        CoordinatorConfig(expect_agents=2, out_dir=tmp_path / "out", seed=1),
        transport=fleet.transport,
        clock=fleet.clock,
        wall=fleet.clock.wall,
    )
    metrics = RunMetrics(coord, clock=fleet.clock)
    coord.watch(metrics)  # what start() does after binding
    try:
        page = metrics.respond("/")
        assert page.status == 200 and page.body.decode() == PAGE and page.reader is None
        assert dict(page.headers)["Content-Security-Policy"] == PAGE_POLICY
        doc = coord.run()
    finally:
        coord.close()
    closed = [p["closed_seconds"] for p in polls]
    assert closed == sorted(closed) and closed[-1] >= 15
    assert polls[0]["elapsed_s"] < 2 and polls[-1]["elapsed_s"] >= 15  # on the coordinator's (virtual) clock
    late = polls[-1]
    assert not late["finished"] and late["requests"][0]["name"] == name  # raw in JSON; the page escapes
    assert sum(sum(p["errors"].values()) for p in late["points"]) == 2  # the failed requests of second 3
    assert polls[5]["stage"] == {"index": 1, "count": 1, "from": 0.0, "to": 20.0}

    metrics.end(doc)
    final = json.loads(metrics.respond("/live.json").body)
    assert final["finished"] and final["report"] and final["closed_seconds"] == 20
    assert final["ok"] == doc["totals"]["ok"] and final["failed"] == doc["totals"]["failed"] == 2
    assert [e["type"] for e in final["events"]][-1] == "run_finished"
    report = metrics.respond("/")
    assert report.reader == "page" and report.final
    assert dict(report.headers)["Content-Security-Policy"] == REPORT_POLICY
    html = report.body.decode()
    assert 'id="chart-percentiles"' in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<script" not in html and name not in html
    assert metrics.respond("/nothing").status == 404


def test_when_the_report_cannot_be_made_the_page_keeps_the_final_figures(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('name = "sim"\ntarget = "http://127.0.0.1:9"\n[load]\nstages = [{ duration = "2s", rate = 5 }]\n'
                    '[[requests]]\nname = "a"\npath = "/a"\n')  # fmt: skip
    fleet = sim_fleet.SimFleet(1, lambda k, s: counts_interval(s, 0, {"a": 5}))
    coord = Coordinator(load_profile(path), CoordinatorConfig(expect_agents=1, seed=1),
                        transport=fleet.transport, clock=fleet.clock, wall=fleet.clock.wall)  # fmt: skip
    metrics = RunMetrics(coord, clock=fleet.clock)
    coord.watch(metrics)
    try:
        doc = coord.run()
    finally:
        coord.close()
    metrics.end({**doc, "requests": "not a mapping"})  # a report that cannot be drawn
    assert json.loads(metrics.respond("/live.json").body)["report"]
    page = metrics.respond("/")
    assert page.body.decode() == PAGE and not page.final  # the live page again, not a broken report
    again = metrics.respond("/live.json")
    assert not json.loads(again.body)["report"] and again.final  # it shows the final figures and stops


# -- the page ----------------------------------------------------------------------------------------------


def test_the_page_loads_nothing_and_runs_only_its_own_script() -> None:
    assert PAGE.count("<script>") == 1 and PAGE.count("<style>") == 1
    assert re.findall(r'(?:src|href|action|data)="([^"]*)"', PAGE) == ["data:,"]  # the empty favicon
    assert "url(" not in PAGE and "@import" not in PAGE
    assert re.findall(r"https?://[^\s\"']+", PAGE) == [
        "http://www.w3.org/2000/svg"
    ]  # a namespace, not a load
    assert re.findall(r"fetch\(([^,]+),", SCRIPT) == [
        '"live.json?span=" + span + "&events=" + eventsTotal + since'
    ]
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "Function(",
        "srcdoc",
    ):
        assert sink not in SCRIPT, sink  # the run's strings reach the page as text only
    import base64
    import hashlib

    for text in (SCRIPT, STYLE):
        digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in PAGE_POLICY
        assert f">{text}</" in PAGE
    directives = dict(d.strip().split(" ", 1) for d in PAGE_POLICY.split(";"))
    assert directives["default-src"] == "'none'" and directives["connect-src"] == "'self'"
    assert "unsafe" not in PAGE_POLICY
    print(f"live page: {len(PAGE.encode()):,} bytes")


def test_an_eight_hour_reset_stays_small() -> None:
    h = history_of([one_second(t, timeout=t % 3) for t in range(28_800)])
    size = len(json.dumps(fed(h)))
    assert size < 400_000 and math.isfinite(size)
