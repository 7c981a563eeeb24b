"""``/metrics`` on real runs (real agents, the built-in target, loopback): scraped while the run goes on and
parsed with Prometheus's own parser; its exact percentile gauges equal the run's own figures for the same
seconds; read-only (405); up until the final figures have been scraped once."""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import loadgen
from tests.conftest import Target, Watched, read_results, write_profile
from tests.conftest import loadgen as loadgen_cli

pytestmark = pytest.mark.integration

TWO_REQUESTS = '[[requests]]\nname = "home"\npath = "/"\nweight = 3\n\n[[requests]]\nname = "slow"\npath = "/delay?ms=5"\n'
QUANTILES = {"0.5": "p50", "0.9": "p90", "0.95": "p95", "0.99": "p99", "0.999": "p999"}


def scrape(url: str) -> dict[str, list[Any]]:
    """The samples at ``url`` by sample name (``loadgen_requests_total``, ``..._bucket``), each checked to
    belong to a family the parser knows."""
    with urllib.request.urlopen(url, timeout=5) as resp:  # loopback only
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    out: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("loadgen_") and family.documentation, family
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def value(fams: dict[str, list[Any]], family: str, **labels: str) -> float:
    found = [s.value for s in fams[family] if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (family, labels, fams[family])
    return float(found[0])


def scrape_when(url: str, ready: Any, timeout: float = 20.0) -> dict[str, list[Any]]:
    deadline = time.monotonic() + timeout
    while True:
        fams = scrape(url)
        if ready(fams):
            return fams
        assert time.monotonic() < deadline, "the metrics never showed what was awaited"
        time.sleep(0.2)


def status_of(url: str, method: str) -> int:
    req = urllib.request.Request(url, method=method, data=b"x" if method in ("POST", "PUT") else None)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def assert_gauges_match(fams: dict[str, list[Any]], window: loadgen.Window) -> None:
    """The percentile gauges of one scrape are the run's exact percentiles over the same seconds."""
    for q, attr in QUANTILES.items():
        assert value(fams, "loadgen_response_time_seconds", request="", quantile=q) == getattr(
            window.latency, attr
        )
        assert value(fams, "loadgen_service_time_seconds", request="", quantile=q) == getattr(
            window.service, attr
        )
        for name, figures in window.requests.items():
            got = value(fams, "loadgen_response_time_seconds", request=name, quantile=q)
            assert got == getattr(figures, attr), (name, q)


def test_a_library_run_serves_exact_fleet_percentiles_while_it_runs(tmp_path: Path, target: Target) -> None:
    path = write_profile(
        tmp_path / "watched.toml",
        target.url,
        '[{ duration = "0s", rate = 150 }, { duration = "6s", rate = 150 }]',
        requests=TWO_REQUESTS,
        extra='thresholds = ["p99 < 5s", "error_rate > 50%"]',
    )
    said: list[str] = []
    with loadgen.start(
        loadgen.load_profile(path), agents=2, seed=5, metrics_bind="127.0.0.1:0", progress=said.append
    ) as run:
        url = run.metrics_url
        assert url is not None and re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", url)
        assert f"metrics at {url}" in said
        during = scrape_when(url, lambda f: value(f, "loadgen_closed_seconds") >= 4)
        assert not run.done
        assert status_of(url, "POST") == 405
        assert status_of(url, "DELETE") == 405
        assert status_of(url, "HEAD") == 200
        assert status_of(url.replace("/metrics", "/"), "GET") == 200  # the live page
        assert status_of(url.replace("/metrics", "/live.json"), "POST") == 405
        assert status_of(url.replace("/metrics", "/elsewhere"), "GET") == 404
    results = run.wait()

    assert value(during, "loadgen_run_finished") == 0
    info = during["loadgen_run_info"][0].labels
    assert info == {"name": "watched", "profile": "watched.toml", "run_id": info["run_id"]}
    assert value(during, "loadgen_agents", state="connected") == 2
    assert value(during, "loadgen_target_rate") == 150
    assert value(during, "loadgen_generator_saturated", cause="generator") in (0, 1)
    assert value(during, "loadgen_threshold_passing", threshold="error_rate > 50%") == 0
    labels = {k for samples in during.values() for s in samples for k in s.labels}
    assert labels <= {"request", "outcome", "quantile", "le", "cause", "state", "threshold", "type"} | set(
        info
    )
    end = int(value(during, "loadgen_closed_seconds"))
    assert_gauges_match(during, results.window(max(0, end - 10), end))

    after = scrape(url)  # the endpoint stays up after the run until its end has been scraped
    assert value(after, "loadgen_run_finished") == 1
    end = int(value(after, "loadgen_closed_seconds"))
    assert_gauges_match(after, results.window(max(0, end - 10), end))
    assert value(after, "loadgen_threshold_passing", threshold="p99 < 5s") == 1
    for name, r in results.requests.items():
        assert value(after, "loadgen_requests_total", request=name, outcome="ok") == r.ok
        assert value(after, "loadgen_request_duration_seconds_count", request=name) == r.latency.count
        h = r.latency.histogram
        assert h is not None
        for le, bound_us in (("0.005", 5000), ("0.01", 10_000), ("0.1", 100_000)):
            under = sum(
                item.count_at_value_iterated_to
                for item in h.get_recorded_iterator()
                if h.get_lowest_equivalent_value(item.value_iterated_to) <= bound_us
            )
            assert value(after, "loadgen_request_duration_seconds_bucket", request=name, le=le) == under
    assert value(after, "loadgen_dropped_total") == results.totals.dropped


def test_the_cli_serves_metrics_and_leaves_once_the_end_is_scraped(tmp_path: Path, target: Target) -> None:
    path = write_profile(
        tmp_path / "cli.toml",
        target.url,
        '[{ duration = "0s", rate = 100 }, { duration = "3s", rate = 100 }]',
    )
    out = tmp_path / "out"
    proc = Watched("run", str(path), "--agents", "1", "--out", str(out), "--metrics-bind", ":0")
    try:
        url = proc.wait_for("metrics at ").split("metrics at ", 1)[1].strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", url)
        during = scrape_when(url, lambda f: value(f, "loadgen_closed_seconds") >= 1)
        assert value(during, "loadgen_run_finished") == 0
        proc.wait_for("written: ")
        after = scrape(url)
        scraped_at = time.monotonic()
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - scraped_at < 3  # it left once the end was scraped, not after the linger
    finally:
        proc.kill()
    doc = read_results(out)
    assert value(after, "loadgen_run_finished") == 1
    assert value(after, "loadgen_requests_total", request="GET /", outcome="ok") == doc["totals"]["ok"] == 300
    assert value(after, "loadgen_scheduled_total") == doc["totals"]["scheduled"]
    assert value(after, "loadgen_request_duration_seconds_count", request="GET /") == 300
    assert value(after, "loadgen_request_duration_seconds_bucket", request="GET /", le="+Inf") == 300


def test_a_bad_metrics_bind_is_a_usage_error_before_anything_starts(tmp_path: Path) -> None:
    path = write_profile(tmp_path / "p.toml", "http://127.0.0.1:9", '[{ duration = "1s", rate = 1 }]')
    for command in ("run", "coordinator"):
        done = loadgen_cli(command, str(path), "--metrics-bind", "127.0.0.1:99999", timeout=30)
        assert done.returncode == 2, done.stderr
        assert "--metrics-bind" in done.stderr and "out of range" in done.stderr
