"""Build realistic ``results.json`` dicts (schema 1, docs/results-schema.md) for tests of the readers.

``make_results()`` returns a fresh, self-consistent document every call (the counting rule holds, the
per-second intervals add up to the totals, percentiles rise with the rank), so a test may change any
field of it in place to set up its case.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# multiples of a request's median response time: a right-skewed, monotone latency distribution
_SHAPE = {
    "min": 0.25,
    "mean": 1.3,
    "p50": 1.0,
    "p66": 1.15,
    "p75": 1.3,
    "p80": 1.4,
    "p90": 1.8,
    "p95": 2.3,
    "p98": 3.0,
    "p99": 4.0,
    "p99.9": 7.0,
    "p99.99": 10.0,
    "max": 12.0,
}
LATENCY_KEYS = tuple(_SHAPE)


@dataclass(frozen=True)
class RequestFixture:
    name: str
    method: str = "GET"
    path: str = "/"
    share: float = 1.0  # of all completed requests; the shares of a fixture should add up to 1
    error_fraction: float = 0.0
    error_category: str = "http_503"
    median_ms: float = 20.0


DEFAULT_REQUESTS: tuple[RequestFixture, ...] = (
    RequestFixture("home", "GET", "/", share=0.75, error_fraction=0.001, median_ms=12.0),
    RequestFixture("GET /api/items:list", "GET", "/api/items", share=0.2, median_ms=25.0),
    RequestFixture(
        "checkout",
        "POST",
        "/checkout",
        share=0.05,
        error_fraction=0.02,
        error_category="timeout",
        median_ms=80.0,
    ),
)


def latency_stats(median_ms: float) -> dict[str, float]:
    """A full latency dict (every key of the schema) around ``median_ms``."""
    return {k: round(median_ms * f, 3) for k, f in _SHAPE.items()}


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` spread over ``parts`` as evenly as integers allow; the parts add up to ``total``."""
    return [total * (i + 1) // parts - total * i // parts for i in range(parts)]


def make_results(
    *,
    name: str = "checkout-spike",
    target: str = "http://127.0.0.1:8080",
    duration_s: float = 60.0,
    rate: float = 200.0,
    requests: Sequence[RequestFixture] = DEFAULT_REQUESTS,
    dropped: int = 0,
    in_flight_at_end: int = 0,
    latency_scale: float = 1.0,
    generator_saturated: bool = False,
    warnings: Sequence[str] = (),
    started_at: str = "2026-11-22T05:30:00.000Z",
) -> dict[str, Any]:
    scheduled = round(rate * duration_s)
    completed = scheduled - dropped - in_flight_at_end
    counts = _split_by_share(completed, [r.share for r in requests])

    per_request: dict[str, Any] = {}
    errors: dict[str, int] = {}
    for spec, count in zip(requests, counts, strict=True):
        failed = round(count * spec.error_fraction)
        req_errors = {spec.error_category: failed} if failed else {}
        for category, n in req_errors.items():
            errors[category] = errors.get(category, 0) + n
        latency = latency_stats(spec.median_ms * latency_scale)
        per_request[spec.name] = {
            "method": spec.method,
            "path": spec.path,
            "count": count,
            "ok": count - failed,
            "failed": failed,
            "errors": req_errors,
            "latency_ms": latency,
            "service_ms": {k: round(v * 0.9, 3) for k, v in latency.items()},
        }
    ok = sum(r["ok"] for r in per_request.values())
    failed = sum(r["failed"] for r in per_request.values())
    merged = _merge([(r["count"], r["latency_ms"]) for r in per_request.values()])
    merged_service = _merge([(r["count"], r["service_ms"]) for r in per_request.values()])

    seconds = max(1, int(duration_s))
    intervals = _intervals(
        seconds=seconds, rate=rate, scheduled=scheduled, ok=ok, errors=errors, dropped=dropped, merged=merged
    )
    half = scheduled // 2
    return {
        "schema": 1,
        "name": name,
        "profile": f"profiles/{name}.toml",
        "target": target,
        "started_at": started_at,
        "duration_s": duration_s,
        "elapsed_s": duration_s + 1.2,
        "agents_expected": 2,
        "totals": {
            "scheduled": scheduled,
            "ok": ok,
            "failed": failed,
            "dropped": dropped,
            "in_flight_at_end": in_flight_at_end,
        },
        "errors": errors,
        "rps": (ok + failed) / duration_s,
        "error_rate": failed / (ok + failed) if ok + failed else 0.0,
        "latency_ms": merged,
        "service_ms": merged_service,
        "send_lag_ms": {k: round(0.02 * f, 3) for k, f in _SHAPE.items()},
        "requests": per_request,
        "intervals": intervals,
        "agents": [
            {
                "id": f"host-{1234 + i}-ab1{i}",
                "host": "host",
                "pid": 1234 + i,
                "share": 0.5,
                "clock_offset_ms": 0.01,
                "scheduled": share,
                "ok": o,
                "failed": f,
                "dropped": d,
            }
            for i, (share, o, f, d) in enumerate(
                zip(
                    [half, scheduled - half],
                    split_evenly(ok, 2),
                    split_evenly(failed, 2),
                    split_evenly(dropped, 2),
                    strict=True,
                )
            )
        ],
        "events": [{"t": 0.0, "type": "run_started"}, {"t": duration_s, "type": "run_finished"}],
        "generator_saturated": generator_saturated,
        "warnings": list(warnings),
    }


def _split_by_share(total: int, shares: Sequence[float]) -> list[int]:
    counts = [int(total * s / sum(shares)) for s in shares]
    counts[0] += total - sum(counts)
    return counts


def _merge(parts: Sequence[tuple[int, dict[str, float]]]) -> dict[str, float]:
    """Not an HDR merge, but plausible: extremes from the extremes, the rest count-weighted."""
    live = [(n, d) for n, d in parts if n > 0] or [(1, dict.fromkeys(LATENCY_KEYS, 0.0))]
    total = sum(n for n, _ in live)
    merged = {k: round(sum(n * d[k] for n, d in live) / total, 3) for k in LATENCY_KEYS}
    merged["min"] = min(d["min"] for _, d in live)
    merged["max"] = max(d["max"] for _, d in live)
    return merged


def _intervals(
    *,
    seconds: int,
    rate: float,
    scheduled: int,
    ok: int,
    errors: dict[str, int],
    dropped: int,
    merged: dict[str, float],
) -> list[dict[str, Any]]:
    sched = split_evenly(scheduled, seconds)
    oks = split_evenly(ok, seconds)
    drops = split_evenly(dropped, seconds)
    errs = {c: split_evenly(n, seconds) for c, n in errors.items()}
    out = []
    for t in range(seconds):
        interval_errors = {c: v[t] for c, v in errs.items() if v[t]}
        done = oks[t] + sum(interval_errors.values())
        wobble = 0.8 + 0.04 * (t % 6)  # 0.8 .. 1.0: no second beats the whole run
        out.append(
            {
                "t": t,
                "target_rate": rate,
                "scheduled": sched[t],
                "ok": oks[t],
                "failed": sum(interval_errors.values()),
                "dropped": drops[t],
                "errors": interval_errors,
                "p50": round(merged["p50"] * wobble, 3) if done else None,
                "p99": round(merged["p99"] * wobble, 3) if done else None,
                "max": round(merged["max"] * wobble, 3) if done else None,
            }
        )
    return out
