"""The run as a Locust-compatible stats CSV (``*_stats.csv``), so dashboards and scripts written for
Locust read loadgen results unchanged.

One row per request name (``Type`` is its HTTP method), then an ``Aggregated`` row with an empty
``Type``. Times are milliseconds; like Locust, percentile columns say ``N/A`` when nothing completed.
Request and failure counts are completed requests (ok + failed) and failed ones; rates divide by the
profile duration. loadgen does not record response sizes, so ``Average Content Size`` is always 0. A user
journey adds a row of Type ``flow`` (its times from arrival to the end of its last step); its steps are
request rows named ``<flow>.<step>``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any

HEADER = (
    "Type",
    "Name",
    "Request Count",
    "Failure Count",
    "Median Response Time",
    "Average Response Time",
    "Min Response Time",
    "Max Response Time",
    "Average Content Size",
    "Requests/s",
    "Failures/s",
    "50%",
    "66%",
    "75%",
    "80%",
    "90%",
    "95%",
    "98%",
    "99%",
    "99.9%",
    "99.99%",
    "100%",
)
PERCENTILE_KEYS = ("p50", "p66", "p75", "p80", "p90", "p95", "p98", "p99", "p99.9", "p99.99", "max")


def render_stats_csv(results: Mapping[str, Any]) -> str:
    """The stats CSV as text (``\\n`` line ends, header first)."""
    duration = float(results.get("duration_s") or 0.0)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HEADER)
    requests: Mapping[str, Any] = results.get("requests") or {}
    for name, req in requests.items():
        writer.writerow(_row(str(req.get("method", "")), name, req, req, duration))
    totals = results.get("totals") or {}
    flows: Mapping[str, Any] = results.get("flows") or {}
    for name, flow in flows.items():
        # A user journey as a whole (Type "flow"): its times are its durations, arrival to last byte.
        writer.writerow(_row("flow", name, flow, {"latency_ms": flow.get("duration_ms")}, duration))
    if flows:  # the totals count flows; Aggregated adds up the requests, as Locust's does
        totals = {k: sum(int(r.get(k, 0)) for r in requests.values()) for k in ("ok", "failed")}
    writer.writerow(_row("", "Aggregated", totals, results, duration))
    return buf.getvalue()


def _row(
    kind: str, name: str, counts: Mapping[str, Any], source: Mapping[str, Any], duration: float
) -> list[str]:
    ok, failed = int(counts.get("ok", 0)), int(counts.get("failed", 0))
    completed = ok + failed
    latency: Mapping[str, Any] = (source.get("latency_ms") or {}) if completed else {}
    return [
        kind,
        name,
        str(completed),
        str(failed),
        _ms(latency.get("p50"), "0"),
        _ms(latency.get("mean"), "0"),
        _ms(latency.get("min"), "0"),
        _ms(latency.get("max"), "0"),
        "0",
        _num(completed / duration) if duration > 0 else "0",
        _num(failed / duration) if duration > 0 else "0",
        *(_ms(latency.get(k), "N/A") for k in PERCENTILE_KEYS),
    ]


def _ms(v: Any, missing: str) -> str:
    return missing if v is None else _num(float(v))


def _num(v: float) -> str:
    """At most three decimals (HDR values are exact to a microsecond), no trailing zeros."""
    text = f"{v:.3f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text
