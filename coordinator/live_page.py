"""The live page served at ``/`` of the metrics port while a run goes on: one HTML document with its CSS and
script inline, nothing fetched but ``live.json`` beside it (a relative URL, so the page also works behind
a reverse proxy under a sub-path). It polls the feed (:mod:`coordinator.live_feed`) every second and draws
the report's charts (:mod:`loadgen.reports.html`'s look) with inline SVG; once the feed says the run's
report is served, it reloads to show it.

Every string from the run (request names, error categories, thresholds, events) reaches the page through
``textContent`` and never as markup; :data:`PAGE_POLICY` lets the browser run only this exact script
(by its hash), load nothing from anywhere and connect only to the page's own origin, so an injection could
neither run nor call out.
"""

from __future__ import annotations

import base64
import hashlib
import json
from importlib import resources

from loadgen.reports.html import CSS, ERROR_PALETTE, PALETTE
from loadgen.reports.svg import BOTTOM, HEIGHT, LEFT, RIGHT, TOP, WIDTH

_EXTRA_CSS = """
.progress{height:8px;background:#eee;border-radius:4px;margin:8px 0 4px;overflow:hidden}
.progress div{height:100%;width:0;background:#1f77b4}
.cards{display:flex;flex-wrap:wrap;gap:8px;margin:14px 0}
.card{border:1px solid #e4e4e4;border-radius:6px;padding:6px 12px;min-width:8em}
.card b{display:block;font-size:20px;font-variant-numeric:tabular-nums}
.card span{color:#666;font-size:12px}
.running-badge{background:#1f77b4}
.warn{color:#c62828;font-weight:700}
"""


_BODY = """<h1><span id="name">loadgen</span>
<span id="state" class="badge neutral-badge">CONNECTING</span></h1>
<p class="meta" id="meta"></p>
<div class="progress"><div id="bar"></div></div>
<p class="meta" id="clock"></p>
<div class="banner" id="banner" role="alert" hidden></div>
<p class="warn" id="saturation" hidden></p>
<div class="cards">
<div class="card"><span>target</span><b id="v-target">-</b></div>
<div class="card"><span>achieved</span><b id="v-achieved">-</b></div>
<div class="card"><span id="l-p50">p50</span><b id="v-p50">-</b></div>
<div class="card"><span id="l-p90">p90</span><b id="v-p90">-</b></div>
<div class="card"><span id="l-p99">p99</span><b id="v-p99">-</b></div>
<div class="card"><span>ok</span><b id="v-ok">-</b></div>
<div class="card"><span>failed</span><b id="v-failed">-</b></div>
<div class="card"><span>dropped</span><b id="v-dropped">-</b></div>
<div class="card"><span>in flight</span><b id="v-in-flight">-</b></div>
<div class="card"><span>agents</span><b id="v-agents">-</b></div>
<div class="card"><span>cost</span><b id="v-cost">-</b></div>
</div>
<p class="note" id="note"></p>
<h2>Over time</h2>
@FIGURES
<div class="events" id="events" hidden><b>Events</b> (numbered on the charts above)
<ol id="event-list"></ol></div>
<h2 id="h-requests" hidden>Requests</h2>
<table id="requests" hidden><thead><tr><th>request</th><th class="r">ok</th><th class="r">failed</th>
<th class="r">p50</th><th class="r">p90</th><th class="r">p99</th></tr></thead><tbody></tbody></table>
<h2 id="h-errors" hidden>Errors</h2>
<table id="errors" hidden><thead><tr><th>error</th><th class="r">count</th></tr></thead>
<tbody></tbody></table>
<h2 id="h-thresholds" hidden>Thresholds</h2>
<table id="thresholds" hidden><thead><tr><th>threshold</th><th class="c">so far</th></tr></thead>
<tbody></tbody></table>
"""


def _figure(chart_id: str) -> str:
    return (
        f'<figure id="{chart_id}"><figcaption id="cap-{chart_id.removeprefix("chart-")}"></figcaption>'
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img">'
        "</svg>"
        "</figure>"
    )


def _script() -> str:
    """live_page.js after the report's chart geometry and colours, as constants."""
    geometry = {"W": WIDTH, "H": HEIGHT, "L": LEFT, "R": RIGHT, "T": TOP, "B": BOTTOM}
    head = "const " + ", ".join(f"{k} = {v}" for k, v in geometry.items()) + ";\n"
    head += f"const PALETTE = {json.dumps(PALETTE)}, ERRORS = {json.dumps(ERROR_PALETTE)};\n"
    return head + resources.files("coordinator").joinpath("live_page.js").read_text(encoding="utf-8")


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


SCRIPT = _script()
STYLE = CSS + _EXTRA_CSS
PAGE = (
    '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
    '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
    '<link rel="icon" href="data:,">\n'
    f"<title>loadgen live</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
    + _BODY.replace(
        "@FIGURES", "\n".join(_figure(c) for c in ("chart-rate", "chart-latency", "chart-errors"))
    )
    + f"<script>{SCRIPT}</script>\n</body>\n</html>\n"
)
"""The live page; the same bytes for every run (what it shows comes from ``live.json``)."""

PAGE_POLICY = (
    f"default-src 'none'; script-src {_csp_hash(SCRIPT)}; style-src {_csp_hash(STYLE)}; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""The live page's Content-Security-Policy: only its own script and style run, it may fetch only from its
own origin, and it loads nothing else."""
REPORT_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
"""The final report's Content-Security-Policy, once ``/`` serves it: no script at all, nothing fetched."""
