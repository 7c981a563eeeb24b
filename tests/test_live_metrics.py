"""The live Prometheus figures, built from closed seconds made here: the exact percentile gauges are the HDR
merge of the window's seconds, the histogram's buckets are the HDR histograms' counts, the exposition parses
with Prometheus's own parser, and the observers fan out. Pure: no socket."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hdrh.histogram import HdrHistogram
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from coordinator.aggregate import ClosedInterval
from coordinator.coordinator import Observers
from coordinator.live_metrics import (
    BUCKETS_S,
    OVERALL,
    QUANTILES,
    WINDOW_S,
    Board,
    FleetView,
    FrameCollector,
    Identity,
)
from coordinator.metrics_server import exposure_warning, parse_metrics_bind
from loadgen.histogram import new_histogram
from loadgen.percentiles import values_at_percentiles

NAMES = ("home", "search")
IDENTITY = Identity("checkout", "checkout.toml", "abc123", 60.0)


def second(index: int, samples: dict[str, list[int]], **summary: Any) -> ClosedInterval:
    """A closed second whose response times are ``samples`` (µs) per name, and service times half of them."""
    by_name: dict[str, HdrHistogram] = {}
    service: dict[str, HdrHistogram] = {}
    latency = new_histogram()
    for name, values in samples.items():
        h = by_name[name] = new_histogram()
        s = service[name] = new_histogram()
        for v in values:
            h.record_value(v)
            s.record_value(max(1, v // 2))
        latency.add(h)
    n = sum(len(v) for v in samples.values())
    base = {"t": index, "target_rate": 100.0, "ok": n, "failed": 0, "dropped": 0, "send_lag_p99": 0.1}
    return ClosedInterval(
        index, {**base, "saturated": False, "cpu_max": 0.2, **summary}, latency, by_name, service
    )


def view(**kw: Any) -> FleetView:
    return FleetView({"home": {"ok": 1}}, **kw)


def merged(seconds: list[ClosedInterval], name: str, kind: str) -> HdrHistogram:
    h = new_histogram()
    for c in seconds:
        hists = c.by_name if kind == "response" else c.service_by_name
        for n, part in hists.items():
            if name in (OVERALL, n):
                h.add(part)
    return h


def random_seconds(n: int, seed: int) -> list[ClosedInterval]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        samples = {
            name: [int(rng.lognormvariate(9.5, 1.2)) + 1 for _ in range(rng.randrange(0, 200))]
            for name in NAMES
        }
        out.append(second(i, {k: v for k, v in samples.items() if v or rng.random() < 0.5}))
    return out


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 25), st.integers(0, 2**32))
def test_percentile_gauges_are_the_hdr_merge_of_the_last_ten_seconds(n: int, seed: int) -> None:
    board = Board(IDENTITY, NAMES)
    seconds = random_seconds(n, seed)
    for c in seconds:
        board.second(c, view())
    frame = board.frame
    assert frame.closed_seconds == n
    window = seconds[-WINDOW_S:]
    for kind in ("response", "service"):
        for name in (*NAMES, OVERALL):
            h = merged(window, name, kind)
            if not h.get_total_count():
                assert (kind, name) not in frame.quantiles
                continue
            expected = values_at_percentiles(h, [round(q * 100, 6) for q in QUANTILES])
            assert frame.quantiles[kind, name] == tuple(
                (q, expected[round(q * 100, 6)] / 1e6) for q in QUANTILES
            )
            for q in QUANTILES:  # and hdrhistogram's own reading, the one results.json's figures come from
                assert (
                    dict(frame.quantiles[kind, name])[q] == h.get_value_at_percentile(round(q * 100, 6)) / 1e6
                )


def test_histogram_buckets_are_the_counts_of_the_hdr_histograms() -> None:
    rng = random.Random(7)
    board = Board(IDENTITY, NAMES)
    raw: dict[str, list[int]] = {n: [] for n in NAMES}
    for i in range(30):  # more than the window: the buckets are the whole run's
        samples = {n: [int(rng.lognormvariate(10, 1.5)) + 1 for _ in range(150)] for n in NAMES}
        samples["home"] += [1000, 2500, 5000, 60_000_000, 61_000_000]  # on the bounds, and beyond the last
        for n, values in samples.items():
            raw[n] += values
        board.second(second(i, samples), view())
    h = new_histogram()
    for n in NAMES:
        cumulative, total = board.frame.buckets[n]
        expected = [
            sum(1 for v in raw[n] if h.get_lowest_equivalent_value(v) <= round(b * 1e6)) for b in BUCKETS_S
        ]
        assert list(cumulative) == [*expected, len(raw[n])]
        assert total == pytest.approx(sum(raw[n]) / 1e6, rel=1e-3)  # each sample at its counter's median
        exact = [sum(1 for v in raw[n] if v <= round(b * 1e6)) for b in BUCKETS_S]
        assert all(abs(a - e) <= 0.01 * len(raw[n]) for a, e in zip(cumulative, exact, strict=False))


def test_the_window_slides_out_seconds_exactly_and_an_empty_window_shows_nothing() -> None:
    board = Board(IDENTITY, NAMES)
    board.second(second(0, {"home": [50_000] * 10}), view())
    assert dict(board.frame.quantiles["response", "home"])[0.99] == pytest.approx(0.05, rel=1e-3)
    for i in range(1, WINDOW_S):
        board.second(second(i, {"home": [1000]}), view())
    assert dict(board.frame.quantiles["response", "home"])[0.999] == pytest.approx(0.05, rel=1e-3)
    board.second(second(WINDOW_S, {}), view())  # the slow second leaves the window
    assert dict(board.frame.quantiles["response", "home"])[0.999] == 0.001
    for i in range(WINDOW_S + 1, 2 * WINDOW_S + 1):
        board.second(second(i, {}), view())
    assert not board.frame.quantiles


def exposition(board: Board) -> dict[str, Any]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FrameCollector(board))
    text = generate_latest(registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_the_exposition_parses_with_the_names_labels_and_values_documented() -> None:
    board = Board(IDENTITY, NAMES)
    fleet = FleetView(
        {"home": {"ok": 90, "http_5xx": 3}, "search": {"ok": 10}},
        scheduled=110,
        dropped=7,
        in_flight=4,
        agents={"connected": 2, "lost": 1},
        cost=1.5,
        budget=10.0,
        thresholds={"p95 < 500ms": True, "error_rate < 1%": False},
        events={"agent_lost": 1},
    )
    board.second(second(0, {"home": [2000] * 5}, dropped=7, saturated=True, send_lag_p99=0.2), fleet)
    fams = exposition(board)
    assert {
        "loadgen_run_info",
        "loadgen_run_finished",
        "loadgen_requests",
        "loadgen_dropped",
        "loadgen_in_flight",
        "loadgen_target_rate",
        "loadgen_achieved_rate",
        "loadgen_send_lag_p99_seconds",
        "loadgen_generator_saturated",
        "loadgen_agents",
        "loadgen_threshold_passing",
        "loadgen_cost",
        "loadgen_response_time_seconds",
        "loadgen_service_time_seconds",
        "loadgen_request_duration_seconds",
        "loadgen_events",
    } <= set(fams)

    def samples(name: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in fams[name].samples}

    assert samples("loadgen_run_info") == {
        ("loadgen_run_info", (("name", "checkout"), ("profile", "checkout.toml"), ("run_id", "abc123"))): 1.0
    }
    requests = samples("loadgen_requests")
    assert requests[("loadgen_requests_total", (("outcome", "http_5xx"), ("request", "home")))] == 3
    assert requests[("loadgen_requests_total", (("outcome", "ok"), ("request", "search")))] == 10
    assert samples("loadgen_dropped") == {("loadgen_dropped_total", ()): 7}
    assert samples("loadgen_generator_saturated") == {
        ("loadgen_generator_saturated", (("cause", "generator"),)): 0.0,
        ("loadgen_generator_saturated", (("cause", "in_flight_limit"),)): 1.0,  # dropped, kept its schedule
    }
    assert samples("loadgen_agents")[("loadgen_agents", (("state", "lost"),))] == 1
    assert samples("loadgen_threshold_passing") == {
        ("loadgen_threshold_passing", (("threshold", "p95 < 500ms"),)): 1.0,
        ("loadgen_threshold_passing", (("threshold", "error_rate < 1%"),)): 0.0,
    }
    gauges = samples("loadgen_response_time_seconds")
    assert {dict(k[1])["quantile"] for k in gauges} == {"0.5", "0.9", "0.95", "0.99", "0.999"}
    assert {dict(k[1])["request"] for k in gauges} == {"home", ""}
    assert gauges[("loadgen_response_time_seconds", (("quantile", "0.99"), ("request", "")))] == 0.002
    buckets = samples("loadgen_request_duration_seconds")
    assert buckets[("loadgen_request_duration_seconds_bucket", (("le", "0.0025"), ("request", "home")))] == 5
    assert buckets[("loadgen_request_duration_seconds_bucket", (("le", "0.001"), ("request", "home")))] == 0
    assert buckets[("loadgen_request_duration_seconds_count", (("request", "home"),))] == 5
    labels = {k for f in fams.values() for s in f.samples for k in s.labels}
    assert labels <= {
        "request",
        "outcome",
        "quantile",
        "le",
        "cause",
        "state",
        "threshold",
        "type",
        "name",
        "profile",
        "run_id",
    }


def test_a_view_without_a_second_keeps_the_figures_and_marks_the_end() -> None:
    board = Board(IDENTITY, NAMES)
    board.second(second(0, {"home": [3000]}), view())
    board.view(view(finished=True))
    assert board.frame.view.finished and board.frame.quantiles and board.frame.closed_seconds == 1
    assert exposition(board)["loadgen_run_finished"].samples[0].value == 1.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9100", ("127.0.0.1", 9100)),
        (":0", ("127.0.0.1", 0)),
        ("127.0.0.2:9100", ("127.0.0.2", 9100)),
        ("0.0.0.0:9100", ("0.0.0.0", 9100)),
        ("[::1]:9100", ("::1", 9100)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_metrics_bind_forms(text: str, expected: tuple[str, int]) -> None:
    assert parse_metrics_bind(text) == expected


@pytest.mark.parametrize("text", ["", "x", "host:", "1:2:3", "127.0.0.1:65536", ":-1"])
def test_bad_metrics_binds_are_refused_with_a_reason(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected|IPv6|out of range"):
        parse_metrics_bind(text)


def test_only_an_address_beyond_loopback_warns() -> None:
    assert exposure_warning("127.0.0.1") is None and exposure_warning("::1") is None
    assert exposure_warning("localhost") is None
    assert "reverse proxy" in (exposure_warning("0.0.0.0") or "")


class Recorder:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def started(self, start_at: float) -> None:
        self.log.append(f"{self.name} started {start_at}")

    def second(self, closed: ClosedInterval) -> None:
        self.log.append(f"{self.name} second {closed.index}")

    def finishing(self) -> None:
        self.log.append(f"{self.name} finishing")


def test_observers_are_each_told_in_order() -> None:
    log: list[str] = []
    fan = Observers([Recorder("a", log)])
    fan.add(Recorder("b", log))
    fan.started(1.0)
    fan.second(second(3, {}))
    fan.finishing()
    assert log == [
        "a started 1.0",
        "b started 1.0",
        "a second 3",
        "b second 3",
        "a finishing",
        "b finishing",
    ]


def test_flows_are_counted_apart_from_requests() -> None:
    from coordinator.live_metrics import FleetView, Frame, Identity, families

    view = FleetView(
        {"shop.login": {"ok": 3, "check:login": 1}},
        flows={"shop": {"ok": 3, "check:login": 1}},
    )
    frame = Frame(Identity("n", "p.toml", "r1", 60.0), view)
    by_name = {f.name: f for f in families(frame)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in by_name["loadgen_flows"].samples}
    assert samples[("loadgen_flows_total", (("flow", "shop"), ("outcome", "check:login")))] == 1
    requests = {s.labels["request"] for s in by_name["loadgen_requests"].samples}
    assert requests == {"shop.login"}
