"""A real Prometheus (the system package, on loopback) scrapes a real run every second; every PromQL expression
of the Grafana dashboard in deploy/grafana/ must parse and return data over that run, the exact percentile
gauges as Prometheus stored them must equal the run's own figures for the same seconds, and the example
alerting rules must pass ``promtool check rules``. Skips, saying how to install it, without Prometheus."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import loadgen
from tests.conftest import ROOT, Target, free_port, write_profile

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("prometheus") is None or shutil.which("promtool") is None,
        reason="needs Prometheus: apt-get install prometheus (Debian's package has prometheus and promtool)",
    ),
]

DASHBOARD = ROOT / "deploy" / "grafana" / "loadgen-dashboard.json"
RULES = ROOT / "deploy" / "prometheus" / "loadgen-rules.yml"
REQUESTS = (
    '[[requests]]\nname = "home"\npath = "/"\nweight = 4\ncost = 0.001\n\n'
    '[[requests]]\nname = "broken"\npath = "/status/503"\nweight = 1\n'
)


def query(base: str, path: str, **params: str) -> Any:
    url = f"{base}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as resp:  # loopback only
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    return body["data"]


def expressions(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard: its panels' targets and its annotations."""
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", ())]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a]
    return exprs


def grafana(expr: str, instance: str) -> str:
    """``expr`` as Grafana would send it: its variables replaced."""
    return expr.replace("$__rate_interval", "30s").replace("$instance", instance)


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A Prometheus on loopback whose scrape targets are read from a file the test writes."""
    port = free_port()
    targets = tmp_path / "targets.json"
    targets.write_text("[]")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: loadgen\n    file_sd_configs:\n"
        f"      - files: ['{targets}']\n        refresh_interval: 1s\n"
    )
    proc = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "Prometheus did not start"
            time.sleep(0.2)
        yield base, targets
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_every_dashboard_expression_returns_data_from_a_real_run(
    tmp_path: Path, target: Target, prometheus: tuple[str, Path]
) -> None:
    base, targets = prometheus
    path = write_profile(
        tmp_path / "graphed.toml",
        target.url,
        '[{ duration = "0s", rate = 100 }, { duration = "12s", rate = 100 }]',
        requests=REQUESTS,
        extra='thresholds = ["error_rate < 1%", "p99 < 5s"]\nbudget = 100.0',
    )
    with loadgen.start(
        loadgen.load_profile(path),
        agents=2,
        seed=9,
        metrics_bind="127.0.0.1:0",
        actions={"9s": lambda: None},  # an event while Prometheus watches: the dashboard's annotation
    ) as run:
        assert run.metrics_url is not None
        instance = urllib.parse.urlsplit(run.metrics_url).netloc
        targets.write_text(json.dumps([{"targets": [instance]}]))
        began = time.time()
    results = run.wait()
    deadline = time.monotonic() + 15  # the endpoint stays up until Prometheus has scraped the end
    while not query(base, "query", query="loadgen_run_finished == 1")["result"]:
        assert time.monotonic() < deadline, "Prometheus never scraped the run's end"
        time.sleep(0.5)
    ended = time.time() + 3  # evaluated a step after the last scrape, whatever the steps' phase

    dashboard = json.loads(DASHBOARD.read_text())
    exprs = expressions(dashboard)
    assert len(exprs) >= 12
    empty = []
    for expr in exprs:
        data = query(
            base, "query_range", query=grafana(expr, instance), start=str(began), end=str(ended), step="1"
        )
        if not data["result"]:
            empty.append(expr)
    assert not empty, f"expressions without data: {empty}"
    variable = dashboard["templating"]["list"][1]["definition"]
    assert variable == "label_values(loadgen_run_info, instance)"
    assert instance in query(base, "label/instance/values")

    # What Prometheus stored of the last scrape: the exact gauges over the same seconds as the run's own.
    now = str(time.time())
    end = int(float(query(base, "query", query="loadgen_closed_seconds", time=now)["result"][0]["value"][1]))
    window = results.window(max(0, end - 10), end)
    for quantile, attr in (("0.5", "p50"), ("0.99", "p99"), ("0.999", "p999")):
        selector = f'loadgen_response_time_seconds{{request="", quantile="{quantile}"}}'
        stored = float(query(base, "query", query=selector, time=now)["result"][0]["value"][1])
        assert stored == getattr(window.latency, attr)
    failing = query(base, "query", query="loadgen_threshold_passing == 0", time=now)["result"]
    assert [r["metric"]["threshold"] for r in failing] == ["error_rate < 1%"]  # a fifth of them are 503s


def test_the_example_alerting_rules_pass_promtool() -> None:
    done = subprocess.run(
        ["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 4 rules found" in done.stdout
