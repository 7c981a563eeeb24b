"""Policies judged while a run goes on: what the run has cost, and which thresholds can be judged early."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from loadgen.profile import Profile
from loadgen.thresholds import parse_threshold


class _Counted(Protocol):
    ok: int
    failed: int


class _NameTotals(Protocol):
    counts: _Counted


class _Aggregate(Protocol):
    names: dict[str, Any]


def cost_of(profile: Profile, agg: _Aggregate) -> float:
    """The cost of every completed request so far (each request name's count times its ``cost``)."""
    total = 0.0
    for spec in profile.requests:
        if spec.cost:
            c = agg.names[spec.name].counts
            total += (c.ok + c.failed) * spec.cost
    return total


def cost_summary(profile: Profile, results: Mapping[str, Any]) -> dict[str, Any] | None:
    """``results["cost"]``: totals per request and per hour, or None when the profile prices nothing."""
    if profile.budget is None and not any(r.cost for r in profile.requests):
        return None
    by_request = {
        r.name: round(results["requests"][r.name]["count"] * r.cost, 6) for r in profile.requests if r.cost
    }
    total = sum(by_request.values())
    hours = max(results["elapsed_s"], 1e-9) / 3600.0
    return {
        "total": round(total, 6),
        "per_hour": round(total / hours, 6),
        "by_request": by_request,
        "budget": profile.budget,
        "budget_exceeded": profile.budget is not None and total > profile.budget,
    }


def judgeable_during_run(expr: str) -> bool:
    """Whether a threshold can already be lost before the run ends. Lower bounds on counts and rates
    (``requests >= 1000``, ``rps > 100``) only mean something at the end, so they never abort a run."""
    th = parse_threshold(expr)
    return not (th.metric in ("requests", "rps", "failures") and th.op in (">", ">="))
