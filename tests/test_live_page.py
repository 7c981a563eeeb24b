"""The live page in a real browser on a real run (the CLI, a real agent, the built-in target, loopback):
headless Chromium, driven over its DevTools pipe, opens ``/`` while the run goes on and keeps it open. The
page loads without a script error or a refused load, its figures change between two looks a couple of
seconds apart, a request named like markup shows as text, every request it makes stays on its own origin,
and when the run ends it reloads into the run's report, after which the server leaves without waiting out
its linger. A control page shows that these checks see an outside request and that the page's policy
refuses one."""

from __future__ import annotations

import contextlib
import fcntl
import http.server
import json
import os
import re
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from coordinator.live_feed import EventLog, History, Plan, Point, Query, feed
from coordinator.live_metrics import Board, Identity
from coordinator.live_page import PAGE, PAGE_POLICY
from tests.conftest import Target, Watched, read_results, write_profile
from tests.test_report_html import chromium_path

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


class Browser:
    """Headless Chromium driven over its DevTools pipe (``--remote-debugging-pipe``: JSON messages ending in
    a NUL, written to its fd 3 and read from its fd 4), so one page can be watched in real time: its DOM
    at any moment, every request it makes and every error it logs. Bounded: each call waits 20 s at most."""

    def __init__(self, profile: Path) -> None:
        binary = chromium_path()
        theirs_in, ours = os.pipe()  # we write, the browser reads it as its fd 3
        mine, theirs_out = os.pipe()  # the browser writes its fd 4, we read
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (theirs_in, theirs_out)]
        for fd in (theirs_in, theirs_out):
            os.close(fd)
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update", f"--user-data-dir={profile}",
                 "--remote-debugging-pipe", "about:blank"]  # fmt: skip
        self.proc = subprocess.Popen(
            [
                "bash",
                "-c",
                f'exec "$0" "$@" 3<&{high[0]} 4>&{high[1]} {high[0]}<&- {high[1]}>&-',
                binary,
                *flags,
            ],
            pass_fds=high,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for fd in high:
            os.close(fd)
        self._to = os.fdopen(ours, "wb")
        self._from = os.fdopen(mine, "rb")
        self.events: list[dict[str, Any]] = []
        self._replies: dict[int, dict[str, Any]] = {}
        self._last_id = 0
        self._cv = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.session = ""

    def _read(self) -> None:
        buffer = b""
        while chunk := self._from.read1(65536):
            *messages, buffer = (buffer + chunk).split(b"\0")
            with self._cv:
                for text in messages:
                    message = json.loads(text)
                    if "id" in message:
                        self._replies[message["id"]] = message
                    else:
                        self.events.append(message)
                self._cv.notify_all()

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """The reply of a DevTools command (to the page once :meth:`open` has attached to it)."""
        with self._cv:
            self._last_id += 1
            ident = self._last_id
        message: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        self._to.write(json.dumps(message).encode() + b"\0")
        self._to.flush()
        with self._cv:
            assert self._cv.wait_for(lambda: ident in self._replies, 20), f"no answer to {method}"
            return self._replies.pop(ident)

    def open(self, url: str) -> None:
        """Attach to the tab, start recording its requests and errors, then load ``url`` in it."""
        tab = next(t for t in self.call("Target.getTargets")["result"]["targetInfos"] if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=tab["targetId"], flatten=True)["result"][
            "sessionId"
        ]
        for domain in ("Network", "Runtime", "Log", "Page"):
            assert "error" not in self.call(f"{domain}.enable")
        assert "error" not in self.call("Page.navigate", url=url)

    def dom(self) -> str:
        """The page's DOM now ("" while it is between two documents)."""
        reply = self.call(
            "Runtime.evaluate", expression="document.documentElement.outerHTML", returnByValue=True
        )
        return str(reply.get("result", {}).get("result", {}).get("value", ""))

    def dom_when(self, ready: Any, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while not ready(dom := self.dom()):
            assert time.monotonic() < deadline, f"the page never showed what was awaited: {dom[-3000:]}"
            time.sleep(0.2)
        return dom

    def requests(self) -> list[str]:
        with self._cv:
            return [
                e["params"]["request"]["url"]
                for e in self.events
                if e["method"] == "Network.requestWillBeSent"
            ]

    def problems(self) -> list[Any]:
        """Script errors, console errors and warnings, and loads the browser refused or that failed."""
        with self._cv:
            return [
                e["params"]
                for e in self.events
                if e["method"] == "Runtime.exceptionThrown"
                or (e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] in ("error", "warning"))
                or (e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "warning"))
                or e["method"] == "Network.loadingFailed"
            ]

    def close(self) -> None:
        with contextlib.suppress(AssertionError, OSError):
            self.session = ""
            self.call("Browser.close")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._to.close()
        self._reader.join(timeout=5)
        self._from.close()


def text_of(dom: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', dom)
    assert found is not None, element_id
    return found[1]


def test_the_live_page_follows_the_run_in_a_browser_then_shows_the_report(
    tmp_path: Path, target: Target
) -> None:
    path = write_profile(
        tmp_path / "live.toml",
        target.url,
        '[{ duration = "0s", rate = 40 }, { duration = "16s", rate = 80 }]',
        requests=REQUESTS,
        extra='thresholds = ["p99 < 5s"]',
    )
    out = tmp_path / "out"
    proc = Watched("run", str(path), "--agents", "1", "--out", str(out), "--metrics-bind", ":0", "--no-panel")
    browser = Browser(tmp_path / "browser")
    try:
        page = proc.wait_for("live page at ").split("live page at ", 1)[1].strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", page)
        headers, html = get(page)
        assert html == PAGE.encode()
        assert headers["Content-Security-Policy"] == PAGE_POLICY
        assert headers["Content-Type"] == "text/html; charset=utf-8"
        feed_when(page, lambda d: d["closed_seconds"] >= 2)
        browser.open(page)
        first = browser.dom_when(lambda d: "data-closed-seconds" in d)
        time.sleep(2.5)
        second = browser.dom()
        assert not feed_when(page, lambda d: True)["finished"], "the run ended before the second look"
        final = browser.dom_when(lambda d: 'id="chart-percentiles"' in d, timeout=60)  # reloaded: the report
        read_at = time.monotonic()
        assert proc.wait(timeout=20) == 0
        left_after = time.monotonic() - read_at
        requests, problems = browser.requests(), browser.problems()
    finally:
        browser.close()
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

    assert 'id="chart-percentiles"' in final and "<script" not in final  # the report, not the live page
    assert "&lt;img src=x onerror=alert(1)&gt;" in final and "<img" not in final
    assert problems == []  # no script error, no console error, no load refused by the policy or failed
    assert requests[0] == page and requests[-1] == page  # the page, then the report at the same address
    assert sum(u.startswith(page + "live.json?") for u in requests) >= 5  # one a second
    assert [u for u in requests if not u.startswith(page)] == []  # nothing leaves the page's origin
    assert left_after < 4.0, "the server waited out its linger although the page had read the end"
    doc = read_results(out)
    assert doc["totals"]["ok"] > 0 and doc["requests"]["broken"]["errors"]["http_503"] > 0


def test_the_browser_checks_see_a_request_to_another_origin_and_the_policy_refuses_it(tmp_path: Path) -> None:
    """The checks above are only worth something if they would catch a page that calls out: a page's load
    from another origin is seen (an attempt counts, even one the browser then refuses); with the live page's
    policy the browser refuses it, and says so."""
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
    page = f"http://127.0.0.1:{server.server_address[1]}/"
    seen: list[tuple[list[str], list[Any]]] = []
    try:
        for header in ({}, {"Content-Security-Policy": PAGE_POLICY}):
            policy.clear()
            policy.update(header)
            browser = Browser(tmp_path / f"browser-{len(seen)}")
            try:
                browser.open(page)
                browser.dom_when(lambda d: "<img" in d)
                time.sleep(0.5)
                seen.append((browser.requests(), browser.problems()))
            finally:
                browser.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    (open_requests, _), (closed_requests, closed_problems) = seen
    assert elsewhere in open_requests and elsewhere in closed_requests  # attempted either way: it is seen
    assert any(p.get("blockedReason") == "csp" for p in closed_problems)  # and under the policy, refused
    assert any("Content Security Policy" in json.dumps(p) for p in closed_problems)


def test_an_eight_hour_runs_page_draws_quickly(tmp_path: Path) -> None:
    """The page of an eight-hour soak (the whole curve at once, as on loading it late in the run: 1,800
    points of 16 s, errors, 500 events) draws its charts well within a second of the answer."""
    history = History()
    for t in range(28_800):
        errors = {"timeout": 2} if t % 5 == 0 else {}
        history.add(
            Point(t, 1, 200.0, 199.0 + t % 3, (2.0 + t % 7, 9.0, 40.0 + t % 11), errors, t % 997 == 0)
        )
    log = EventLog()
    log.extend({"t": 30.0 * i, "type": "reshare"} for i in range(600))
    board = Board(Identity("soak", "soak.toml", "abc", 28_800.0), ["home"])
    plan = Plan("soak", "soak.toml", "abc", 28_800.0, 200.0, ())
    doc = feed(
        plan, board.frame, history.published, log.published, elapsed=28_000.0, query=Query(), report=False
    )
    body = json.dumps({**doc, "closed_seconds": 28_799}).encode()

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data, kind = (
                (body, "application/json")
                if self.path.startswith("/live.json")
                else (PAGE.encode(), "text/html")
            )
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Security-Policy", PAGE_POLICY)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    browser = Browser(tmp_path / "browser")
    try:
        browser.open(f"http://127.0.0.1:{server.server_address[1]}/")
        dom = browser.dom_when(lambda d: 'data-closed-seconds="28799"' in d)
        drawn = browser.call(
            "Runtime.evaluate",
            expression="(() => { const t0 = performance.now(); draw(last); return performance.now() - t0; })()",
            returnByValue=True,
        )["result"]["result"]["value"]
        problems = browser.problems()
    finally:
        browser.close()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    print(f"8 h live page: {len(body):,} bytes of feed, one redraw {drawn:.0f} ms")
    assert problems == []
    assert dom.count('<path class="series"') == 5 and dom.count("<polygon") == 1
    assert "every point covers 16 s" in dom and "8:00:00" in dom
    assert drawn < 1000
