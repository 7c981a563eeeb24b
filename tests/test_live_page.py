"""The live page in a real browser on a real run (the CLI, a real agent, the built-in target, loopback):
headless Chromium loads ``/`` twice a couple of seconds apart while the run goes on, and once after its
end. The page loads without a script error or a refused load, its figures change between the two loads,
a request named like markup shows as text, every request the page makes stays on its own origin (Chromium's
own net log says so), and after the end ``/`` is the run's report and the server leaves once it has been
read, without waiting out the linger."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from coordinator.live_page import PAGE, PAGE_POLICY
from tests.conftest import Target, Watched, read_results, write_profile
from tests.test_report_html import page_problems, run_chromium

pytestmark = pytest.mark.integration

NAME = "<img src=x onerror=alert(1)>"
REQUESTS = (
    f'[[requests]]\nname = "{NAME}"\npath = "/"\nweight = 4\n\n'
    '[[requests]]\nname = "broken"\npath = "/status/503"\nweight = 1\n'
)


def get(url: str) -> tuple[dict[str, str], bytes]:
    with urllib.request.urlopen(url, timeout=5) as resp:  # loopback only
        assert resp.status == 200
        return dict(resp.headers), resp.read()


def feed_when(page: str, ready: Any, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        doc: dict[str, Any] = json.loads(get(page + "live.json")[1])
        if ready(doc):
            return doc
        assert time.monotonic() < deadline, "the feed never showed what was awaited"
        time.sleep(0.2)


def page_requests(net_log: Path, origin: str) -> list[str]:
    """The URLs the page asked for: every request Chromium started on behalf of a document of the page's
    site (its own background requests, update checks and the like, belong to no page and are left out)."""
    log = json.loads(net_log.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    site = "http://" + urlsplit(origin).hostname  # type: ignore[operator]
    urls = []
    for event in log["events"]:
        params = event.get("params") or {}
        if event["type"] != start or "url" not in params:
            continue
        if params.get("initiator") == origin or str(params.get("network_isolation_key", "")).startswith(site):
            urls.append(params["url"])
    return urls


def browse(tmp_path: Path, label: str, page: str) -> tuple[str, list[str]]:
    """The DOM of ``page`` after a few seconds of the page's (virtual) time, and the URLs it requested."""
    net_log = tmp_path / f"{label}.netlog.json"
    done = run_chromium(
        tmp_path / label, f"--log-net-log={net_log}", "--virtual-time-budget=2500", "--dump-dom", page
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert page_problems(done.stderr) == []  # no script error, and no load refused by the page's policy
    return done.stdout, page_requests(net_log, page.rstrip("/"))


def text_of(dom: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', dom)
    assert found is not None, element_id
    return found[1]


def test_the_live_page_updates_in_a_browser_stays_on_its_origin_then_shows_the_report(
    tmp_path: Path, target: Target
) -> None:
    path = write_profile(
        tmp_path / "live.toml",
        target.url,
        '[{ duration = "0s", rate = 40 }, { duration = "20s", rate = 80 }]',
        requests=REQUESTS,
        extra='thresholds = ["p99 < 5s"]',
    )
    out = tmp_path / "out"
    proc = Watched("run", str(path), "--agents", "1", "--out", str(out), "--metrics-bind", ":0", "--no-panel")
    try:
        page = proc.wait_for("live page at ").split("live page at ", 1)[1].strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", page)
        headers, html = get(page)
        assert html == PAGE.encode()
        assert headers["Content-Security-Policy"] == PAGE_POLICY
        assert headers["Content-Type"] == "text/html; charset=utf-8"
        feed_when(page, lambda d: d["closed_seconds"] >= 2)
        first, first_urls = browse(tmp_path, "first", page)
        time.sleep(2)
        second, second_urls = browse(tmp_path, "second", page)
        assert not feed_when(page, lambda d: True)["finished"], "the run ended before the second look"
        proc.wait_for("written: ", timeout=60)
        final, final_urls = browse(tmp_path, "final", page)
        read_at = time.monotonic()
        assert proc.wait(timeout=20) == 0
        left_after = time.monotonic() - read_at
    finally:
        proc.kill()

    for dom in (first, second):
        assert text_of(dom, "state") == "RUNNING"
        assert text_of(dom, "name") == "live"
        assert dom.count('<svg class="chart"') == 3 and '<path class="series"' in dom
        assert "<td>&lt;img src=x onerror=alert(1)&gt;</td>" in dom  # the name as text, not an element
        assert "<img" not in dom
        assert "<td>http_503</td>" in dom
        assert "<td>p99 &lt; 5s</td>" in dom
    closed = [int(re.findall(r'data-closed-seconds="(\d+)"', d)[0]) for d in (first, second)]
    assert closed[0] < closed[1]
    assert text_of(first, "v-ok") != text_of(second, "v-ok")
    assert text_of(first, "clock") != text_of(second, "clock")

    for urls in (first_urls, second_urls):
        assert urls and urls[0] == page
        assert any(u.startswith(page + "live.json?") for u in urls)
        assert [u for u in urls if not u.startswith(page)] == []

    assert 'id="chart-percentiles"' in final and "<script" not in final  # the report, not the live page
    assert "&lt;img src=x onerror=alert(1)&gt;" in final and "<img" not in final
    assert [u for u in final_urls if not u.startswith(page)] == []
    assert left_after < 4.0, "the server waited out its linger although the page had read the end"
    doc = read_results(out)
    assert doc["totals"]["ok"] > 0 and doc["requests"]["broken"]["errors"]["http_503"] > 0


def test_the_origin_check_sees_a_request_to_another_origin_and_the_policy_refuses_it(tmp_path: Path) -> None:
    """The checks above are only worth something if they would catch a page that calls out: served without
    the policy, a page's load from another origin shows in the net log; with the page's policy, the browser
    refuses it and says so on the console."""
    import http.server
    import threading

    elsewhere = (
        "http://127.0.0.1:9/pixel.png"  # another origin (nothing listens there; the attempt is enough)
    )
    markup = f'<!DOCTYPE html><html><body><img src="{elsewhere}"></body></html>'.encode()
    policy: dict[str, str] = {}

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            for k, v in policy.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(markup)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        page = f"http://127.0.0.1:{server.server_address[1]}/"
        net_log = tmp_path / "open.netlog.json"
        done = run_chromium(tmp_path / "open", f"--log-net-log={net_log}", "--dump-dom", page)
        assert elsewhere in page_requests(net_log, page.rstrip("/"))
        policy["Content-Security-Policy"] = PAGE_POLICY
        net_log = tmp_path / "closed.netlog.json"
        done = run_chromium(tmp_path / "closed", f"--log-net-log={net_log}", "--dump-dom", page)
        assert elsewhere not in page_requests(net_log, page.rstrip("/"))
        assert any("Content Security Policy" in line for line in page_problems(done.stderr))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
