"""report.html: self-contained, escaped, bounded in size for long runs, and rendered by a real browser."""

from __future__ import annotations

import io
import itertools
import random
import re
import shutil
import struct
import subprocess
import time
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from loadgen.histogram import new_histogram
from loadgen.reports.files import write_reports
from loadgen.reports.hlog import HlogContents, HlogWriter, read_hlog
from loadgen.reports.html import MAX_POINTS, histogram_percentiles, render_html, summary_percentiles
from loadgen.reports.svg import clock, downsample
from tests.results_fixtures import RequestFixture, make_results

HOSTILE = "<script>alert(1)</script>"
HOSTILE_SPACED = '"><img src=x onerror=alert(2)>'
TARGET = "http://127.0.0.1:8080"
CHART_IDS = ("chart-rate", "chart-latency", "chart-errors", "chart-percentiles")


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += attrs
        self.ids += [v for k, v in attrs if k == "id" and v]


def parse(html: str) -> _Collector:
    c = _Collector()
    c.feed(html)
    c.close()
    return c


def make_hlog(results: dict[str, Any], seconds: int = 30, seed: int = 1) -> HlogContents:
    """A log like the coordinator writes: per second, one untagged line and one tagged line per name."""
    rng = random.Random(seed)
    out = io.StringIO()
    writer = HlogWriter(out, 1_795_326_600.0)
    writer.write_header()
    for second in range(seconds):
        everything = new_histogram()
        for name, req in results["requests"].items():
            h = new_histogram()
            for _ in range(20):
                h.record_value(max(1, int(req["latency_ms"]["p50"] * 1000 * rng.lognormvariate(0, 0.4))))
            everything.add(h)
            writer.write_interval(float(second), 1.0, h, name)
        writer.write_interval(float(second), 1.0, everything)
    return read_hlog(io.StringIO(out.getvalue()))


def assert_self_contained(html: str, allowed_text: tuple[str, ...] = (TARGET,)) -> None:
    doc = parse(html)
    assert not {"script", "link", "img", "iframe", "object", "embed", "base", "use", "image"} & set(doc.tags)
    referencing = {"src", "href", "xlink:href", "srcset", "action", "poster", "data", "background"}
    assert [(k, v) for k, v in doc.attrs if k in referencing] == []
    assert "url(" not in html
    assert "@import" not in html
    for text in allowed_text:  # the target is shown as text; nothing else may look like a URL
        html = html.replace(text, "")
    assert "http://" not in html
    assert "https://" not in html
    assert "file:" not in html


# -- content -----------------------------------------------------------------------------------------------


def test_report_is_self_contained_and_has_every_part() -> None:
    results = make_results(target=TARGET)
    results["thresholds"] = [
        {"expr": "p99 < 50ms", "passed": False, "observed": 80.0, "detail": "p99 = 80 ms"},
        {"expr": "error_rate < 5%", "passed": True, "observed": 0.01, "detail": "ok"},
    ]
    results["passed"] = False
    html = render_html(results, make_hlog(results))
    assert_self_contained(html)
    doc = parse(html)
    assert set(CHART_IDS) <= set(doc.ids)
    assert html.count('<svg class="chart"') == 4
    assert '<span class="badge fail-badge">FAIL</span>' in html
    for heading in ("Requests", "Thresholds", "Errors"):
        assert f"<h2>{heading}</h2>" in html
    assert "Per hour" not in html  # only for runs over an hour
    assert "from the merged per-second histograms of latency.hlog" in html
    for label in ("All", "home", "GET /api/items:list", "checkout"):  # tags mapped back to request names
        assert f">{label}</text>" in html
    assert 'class="banner"' not in html  # nothing to warn about


def test_warnings_and_saturation_raise_the_banner_and_events_are_marked() -> None:
    results = make_results(generator_saturated=True, warnings=["agent host-2 was lost at 12 s"])
    results["events"].append({"t": 12.0, "type": "agent_lost", "agent": "host-2"})
    html = render_html(results, None)
    banner = html.split('<div class="banner" role="alert">', 1)[1].split("</div>", 1)[0]
    assert "GENERATOR SATURATED" in banner
    assert "agent host-2 was lost at 12 s" in banner
    marks = re.findall(r'<g class="event-mark"><title>([^<]*)</title>', html)
    assert len(marks) == 3 * 3  # run_started, agent_lost, run_finished on each of the three time charts
    assert any("agent_lost host-2" in m for m in marks)
    assert "from the percentiles in results.json" in html


def test_every_string_from_results_is_escaped() -> None:
    requests = (
        RequestFixture(HOSTILE, share=0.5, error_fraction=0.1, error_category=HOSTILE),
        RequestFixture(HOSTILE_SPACED, share=0.5),
    )
    results = make_results(name=HOSTILE, target=HOSTILE_SPACED, requests=requests, warnings=[HOSTILE])
    results["events"].append({"t": 5.0, "type": HOSTILE, "agent": HOSTILE_SPACED})
    results["thresholds"] = [{"expr": HOSTILE, "passed": False, "observed": None, "detail": HOSTILE}]
    results["passed"] = False
    for hlog in (None, make_hlog(results, seconds=3)):
        html = render_html(results, hlog)
        assert "<script" not in html.lower()
        assert "<img" not in html.lower()
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "&quot;&gt;&lt;img src=x onerror=alert(2)&gt;" in html
        assert_self_contained(html, allowed_text=())
        assert set(CHART_IDS) <= set(parse(html).ids)


@pytest.mark.parametrize(
    "case",
    ["one interval", "zero everything", "missing p99", "no intervals or events", "bare document"],
)
def test_degenerate_runs_render(case: str) -> None:
    results: dict[str, Any]
    if case == "one interval":
        results = make_results(duration_s=1.0)
    elif case == "zero everything":
        results = make_results(rate=0.0, requests=(RequestFixture("home"),))
        results["latency_ms"] = dict.fromkeys(results["latency_ms"])
        results["requests"]["home"]["latency_ms"] = dict.fromkeys(results["latency_ms"])
    elif case == "missing p99":
        results = make_results()
        for i, iv in enumerate(results["intervals"]):
            iv["p99"] = None if i % 3 else iv["p99"]
            if i == 7:
                iv.update(p50=None, p99=None, max=None)
    elif case == "no intervals or events":
        results = make_results()
        del results["intervals"], results["events"]
    else:
        results = {"schema": 1}
    html = render_html(results, None)
    assert_self_contained(html)
    assert set(CHART_IDS) <= set(parse(html).ids)
    assert "nan" not in html.lower().replace("nanos", "")
    if case == "zero everything":
        assert ">no request completed</text>" in html
        assert ">no errors</text>" in html


def test_eight_hour_run_is_small_and_downsampled() -> None:
    """The page does not grow with the run: past MAX_POINTS seconds every chart is downsampled, so eight
    hours make a page about the size of one hour's (a per-hour table row more per hour), not eight times it."""
    results = make_results(duration_s=8 * 3600.0, rate=300.0)
    assert len(results["intervals"]) == 28_800
    results["intervals"][12_345]["max"] = 98_765.0  # one spike in one second of eight hours
    html = render_html(results, None)
    one_hour = render_html(make_results(duration_s=3600.0, rate=300.0), None)
    assert len(html.encode()) < 2_000_000
    assert len(html.encode()) < 1.2 * len(one_hour.encode())
    assert "<h2>Per hour</h2>" in html
    for d in re.findall(r'<path class="series" d="([^"]*)"', html):
        assert len(re.findall(r"[ML]", d)) <= MAX_POINTS
    assert ">100,000</text>" in html  # the log axis reaches the spike: the max survived downsampling
    assert "every point covers 20 s" in html


FIVE_REQUESTS = tuple(
    RequestFixture(
        f"step-{i} GET /api/{i}",
        path=f"/api/{i}",
        share=0.2,
        error_fraction=0.002 * i,
        error_category=("http_503", "timeout", "connect_refused", "http_500", "reset")[i],
        median_ms=8.0 + 15.0 * i,
    )
    for i in range(5)
)


def eight_hour_results() -> dict[str, Any]:
    """Issue 22's long run: 28,800 per-second intervals, five request names, four error categories."""
    results = make_results(duration_s=8 * 3600.0, rate=300.0, requests=FIVE_REQUESTS)
    results["intervals"][20_000]["max"] = 54_321.0
    return results


def test_eight_hours_and_five_requests_make_a_page_under_5_mb_while_results_stay_per_second() -> None:
    results = eight_hour_results()
    html = render_html(results, None)
    assert len(html.encode()) < 5_000_000
    assert len(results["intervals"]) == 28_800  # rendering coarsens the page, never the document
    assert [iv["t"] for iv in results["intervals"][:3]] == [0, 1, 2]
    assert set(CHART_IDS) <= set(parse(html).ids)
    for spec in FIVE_REQUESTS:
        assert f">{spec.name}</text>" in html  # every name in the percentile chart's legend
    for d in re.findall(r'<path class="series" d="([^"]*)"', html):
        assert len(re.findall(r"[ML]", d)) <= MAX_POINTS


# -- pieces ------------------------------------------------------------------------------------------------


def test_downsample_keeps_spikes_and_means() -> None:
    points = [(float(i), 1.0) for i in range(10_000)]
    points[4_321] = (4_321.0, 500.0)
    maxed = downsample(points, 1000, "max")
    assert len(maxed) == 1000
    assert max(y for _, y in maxed if y is not None) == 500.0
    meaned = downsample(points, 1000, "mean")
    assert sum(y for _, y in meaned if y is not None) / len(meaned) == pytest.approx((9_999 + 500) / 10_000)
    assert downsample(points[:5], 1000, "max") == points[:5]
    assert downsample([], 10, "mean") == []
    gaps = downsample([(0.0, None), (1.0, None), (2.0, 3.0), (3.0, None)], 2, "max")
    assert gaps == [(0.5, None), (2.5, 3.0)]
    assert len(downsample(points[:1001], 1000, "mean")) == 501  # runs of 2; never more than asked


def test_percentile_points() -> None:
    h = new_histogram()
    for v in range(1, 10_001):
        h.record_value(v * 10)  # 10 µs .. 100 ms, uniform
    points = histogram_percentiles(h)
    assert points[0][0] == 0.0
    assert points[0][1] == pytest.approx(0.01, rel=1e-3)
    assert points[-1][0] == 5.0
    assert points[-1][1] == pytest.approx(100.0, rel=1e-3)
    ys = [y for _, y in points if y is not None]
    assert ys == sorted(ys)
    x_at_99 = next(x for x, _ in points if x >= 2.0)
    assert dict(points)[x_at_99] == pytest.approx(99.0, rel=2e-3)
    summary = summary_percentiles(
        {"min": 1.0, "p50": 2.0, "p99": 5.0, "p99.9": 9.0, "max": 12.0, "mean": 3.0}
    )
    assert [y for _, y in summary] == [1.0, 2.0, 5.0, 9.0]
    assert [x for x, _ in summary] == pytest.approx([0.0, 0.30103, 2.0, 3.0], abs=1e-5)


def test_write_reports_uses_the_interval_log(tmp_path: Path) -> None:
    results = make_results()
    hlog_text = io.StringIO()
    writer = HlogWriter(hlog_text, 1_795_326_600.0)
    writer.write_header()
    h = new_histogram()
    h.record_value(12_000)
    writer.write_interval(0.0, 1.0, h)
    writer.write_interval(0.0, 1.0, h, "home")
    (tmp_path / "latency.hlog").write_text(hlog_text.getvalue())
    written = write_reports(tmp_path, results)
    assert tmp_path / "report.html" in written
    html = (tmp_path / "report.html").read_text()
    assert "from the merged per-second histograms of latency.hlog" in html

    (tmp_path / "latency.hlog").write_text(hlog_text.getvalue() + "0.000,1.000,0.012,garbage\n")
    write_reports(tmp_path, results)
    html = (tmp_path / "report.html").read_text()
    assert "latency.hlog unreadable" in html.split('class="banner"', 1)[1]
    assert "from the percentiles in results.json" in html
    assert "unreadable" not in (tmp_path / "summary.md").read_text()

    (tmp_path / "latency.hlog").unlink()
    write_reports(tmp_path, results)
    assert "from the percentiles in results.json" in (tmp_path / "report.html").read_text()


# -- a real browser ----------------------------------------------------------------------------------------


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path is not None:
            return path
    pytest.skip("chromium not found; install it with: apt-get install -y chromium")


def run_chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        chromium_path(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)


def page_problems(stderr: str) -> list[str]:
    """Console messages (a script's errors, a load the page's policy refused; our pages log nothing, so any
    at all is a problem) and failed loads. Chromium writes them ``:CONSOLE(line)]`` or, newer,
    ``:CONSOLE:line]``."""
    return [
        line
        for line in stderr.splitlines()
        if "Uncaught" in line or ":CONSOLE" in line or "Failed to load resource" in line
    ]


def png_pixels(path: Path, max_rows: int | None = None) -> tuple[int, int, list[list[bytes]]]:
    """Width, height and the RGB pixels of the first ``max_rows`` rows (all by default) of an 8-bit
    RGB/RGBA PNG, which is what chromium writes."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8
            channels = {2: 3, 6: 4}[color]
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride, rows = zlib.decompress(idat), width * channels, []
    prev = bytearray(stride)
    for y in range(height if max_rows is None else min(height, max_rows)):
        filt, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b, c = prev[i], prev[i - channels] if i >= channels else 0
            if filt == 1:
                line[i] = (line[i] + a) & 0xFF
            elif filt == 2:
                line[i] = (line[i] + b) & 0xFF
            elif filt == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif filt == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append([bytes(line[i : i + 3]) for i in range(0, stride, channels)])
        prev = line
    return width, height, rows


@pytest.fixture
def report_file(tmp_path: Path) -> Path:
    results = make_results(generator_saturated=True)
    results["events"].append({"t": 20.0, "type": "agent_lost", "agent": "host-1"})
    path = tmp_path / "report.html"
    path.write_text(render_html(results, make_hlog(results)))
    return path


@pytest.mark.integration
def test_chromium_renders_the_charts(report_file: Path, tmp_path: Path) -> None:
    done = run_chromium(tmp_path / "profile", "--dump-dom", report_file.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert dom.count('<svg class="chart"') == 4
    for chart_id in CHART_IDS:
        assert f'id="{chart_id}"' in dom
    assert dom.count('<path class="series"') >= 6
    assert "GENERATOR SATURATED" in dom
    assert page_problems(done.stderr) == []


@pytest.mark.integration
def test_chromium_screenshot_is_not_blank(report_file: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    done = run_chromium(
        tmp_path / "profile", f"--screenshot={shot}", "--window-size=1400,3000", report_file.as_uri()
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert page_problems(done.stderr) == []
    width, height, rows = png_pixels(shot, max_rows=1500)  # the charts are in the top half
    assert (width, height) == (1400, 3000)
    sample = [px for row in rows[::5] for px in row[::5]]
    assert len(set(sample)) > 50  # text, lines, areas and the red banner, not one flat colour
    assert sum(px == b"\xff\xff\xff" for px in sample) < 0.97 * len(sample)


@pytest.mark.integration
def test_page_problem_detection_catches_a_script_error(tmp_path: Path) -> None:
    """The check above is only worth something if a broken page would fail it."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><script>undefinedFunction();</script></body></html>")
    done = run_chromium(tmp_path / "profile", "--dump-dom", bad.as_uri())
    assert any("Uncaught" in line for line in page_problems(done.stderr))


def test_time_axis_labels_use_one_unit_per_axis() -> None:
    assert [clock(t, "s") for t in (0, 5, 60)] == ["0", "5", "60"]
    assert [clock(t, "m:ss") for t in (0, 65, 3600)] == ["0:00", "1:05", "60:00"]
    assert [clock(t, "h:mm") for t in (0, 900, 5400)] == ["0:00", "0:15", "1:30"]
    assert clock(3725, "h:mm:ss") == "1:02:05"
    html = render_html(make_results(duration_s=5400.0, rate=10.0), None)
    assert "time since start (h:mm)" in html
    assert ">1:30</text>" in html
    assert "time since start (s)" in render_html(make_results(duration_s=60.0), None)


@pytest.mark.parametrize(
    ("changes", "badge"),
    [
        ({"passed": True, "thresholds": [{"expr": "p99 < 1s", "passed": True}]}, "PASS"),
        ({"passed": True, "thresholds": []}, "NO THRESHOLDS"),
        ({"passed": False, "thresholds": [{"expr": "p99 < 1s", "passed": False}]}, "FAIL"),
        ({"passed": True, "thresholds": [], "totals": {"ok": 0, "failed": 10}}, "NO SUCCESSFUL REQUEST"),
        ({"passed": False, "incomplete": "no agent was left to carry the load"}, "INCOMPLETE"),
    ],
)
def test_the_badge_is_never_a_pass_for_a_run_with_nothing_to_show(changes: dict, badge: str) -> None:
    results = make_results()
    results.update({k: v for k, v in changes.items() if k != "totals"})
    results["totals"].update(changes.get("totals", {}))
    html = render_html(results, None)
    assert re.findall(r'-badge">([^<]+)<', html) == [badge]


def _chart(html: str, chart_id: str) -> str:
    return html.split(f'<figure id="{chart_id}">', 1)[1].split("</figure>", 1)[0]


def test_event_numbers_sit_above_the_plot_without_overlapping() -> None:
    results = make_results()
    results["events"] += [{"t": 10.0 + 0.1 * i, "type": "agent_joined", "agent": f"a{i}"} for i in range(30)]
    results["events"] += [{"t": 11.0 + 0.7 * i, "type": "reshare"} for i in range(40)]
    html = render_html(results, None)
    for chart_id in ("chart-rate", "chart-latency", "chart-errors"):
        numbers = [
            (float(x), float(y), int(n))
            for x, y, n in re.findall(
                r'<text class="event" x="([\d.]+)" y="([\d.]+)"[^>]*>(\d+)</text>', _chart(html, chart_id)
            )
        ]
        assert [n for _, _, n in numbers] == list(range(1, len(numbers) + 1))
        assert all(y < 44 for _, y, _ in numbers)  # in the top margin, not over the lines
        spans = [(x - (7 * len(str(n)) + 2) / 2, x + (7 * len(str(n)) + 2) / 2) for x, _, n in numbers]
        assert all(a[1] < b[0] for a, b in itertools.pairwise(spans))
        assert "agent_joined" not in re.sub(r"<title>[^<]*</title>", "", _chart(html, chart_id))
    legend = html.split('<div class="events" id="events">', 1)[1].split("</div>", 1)[0]
    assert "run_started" in legend and "agent_joined ×" in legend and "run_finished" in legend
    assert legend.count("<li ") == len(numbers)


def test_drain_seconds_are_shaded_and_left_out_of_the_lines() -> None:
    results = make_results()  # 60 s profile, intervals t = 0..59
    last = dict(results["intervals"][-1], t=60, p50=9999.0, p99=9999.0, max=9999.0, ok=3, failed=0)
    results["intervals"].append(last)
    html = render_html(results, None)
    latency = _chart(html, "chart-latency")
    assert "9999" not in latency
    assert '<g class="drain">' in latency
    assert "the drain after the profile ends is shaded, not drawn" in latency
    xs = [float(x) for x in re.findall(r"[ML]([\d.]+),", latency.split('class="series"', 1)[1])]
    x60 = 70 + 60 / 61 * (1100 - 34 - 70)
    assert max(xs) < x60  # no point drawn in the drain second
    assert re.search(rf'<rect x="{x60:.1f}"', latency)
    errors = _chart(html, "chart-errors")
    assert '<g class="drain">' in errors
    whole = make_results()  # a run without drain seconds shades nothing
    assert '<g class="drain">' not in render_html(whole, None)


# The page has no script; this one, added to a copy in the test only, writes what the browser measured into
# the DOM that --dump-dom prints: the time from navigation start to the load event with style and layout of
# the whole page forced (reading scrollHeight), in ms.
_LOAD_PROBE = (
    "<script>addEventListener('load', () => {const h = document.documentElement.scrollHeight;"
    "document.body.dataset.loadedMs = performance.now().toFixed(1); document.body.dataset.height = h;})"
    "</script></body>"
)


@pytest.mark.integration
def test_chromium_opens_the_eight_hour_report(tmp_path: Path) -> None:
    """Issue 22 asks for under 2 s. On this class of machine it takes well under 0.2 s in the page and under 1 s
    for the whole browser process (docs/performance-notes.md); the bounds here are the requirement for the
    page and a generous one for the process (``-rP`` prints both figures), so a busy shared machine does not make the test flaky."""
    page = tmp_path / "report.html"
    page.write_text(render_html(eight_hour_results(), None).replace("</body>", _LOAD_PROBE, 1))
    started = time.monotonic()
    done = run_chromium(tmp_path / "profile", "--dump-dom", page.as_uri())
    wall = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-2000:]
    assert page_problems(done.stderr) == []
    dom = done.stdout
    assert dom.count('<svg class="chart"') == 4
    for chart_id in CHART_IDS:
        assert f'id="{chart_id}"' in dom
    assert dom.count('<path class="series"') >= 5 + 5  # rate, latency and the five requests' percentiles
    measured = re.search(r'data-loaded-ms="([0-9.]+)" data-height="([0-9]+)"', dom)
    assert measured is not None, "the load probe did not run"
    loaded_ms, height = float(measured[1]), int(measured[2])
    print(f"8 h report: load+layout {loaded_ms:.0f} ms in the page, chromium process {wall:.2f} s")
    assert height > 1500  # laid out: four charts and the tables, not an empty body
    assert loaded_ms < 2000.0
    assert wall < 30.0
