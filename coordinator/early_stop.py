"""When a run stops before its end: pure decisions, judged on every closed second.

``budget = N`` stops a run whose cost so far exceeds it; ``abort_on_fail`` stops one that has already lost a
threshold (only thresholds that cannot recover count during the run: see
:func:`coordinator.costs.judgeable_during_run`), from ``abort_grace`` seconds on, every other second.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from coordinator.aggregate import RunAggregate
from coordinator.costs import cost_of, judgeable_during_run
from loadgen.profile import Profile


@dataclass(frozen=True)
class Abort:
    reason: str
    kind: str  # the event: "budget_exceeded" or "aborted"


def over_budget(profile: Profile, agg: RunAggregate) -> Abort | None:
    if profile.budget is None:
        return None
    spent = cost_of(profile, agg)
    if spent > profile.budget:
        return Abort(f"budget exceeded: cost {spent:.4g} > budget {profile.budget:.4g}", "budget_exceeded")
    return None


def threshold_lost(profile: Profile, second: int, results: Callable[[], Mapping[str, Any]]) -> Abort | None:
    """``results`` makes the document so far (only called when a judgement is due)."""
    if not (
        profile.abort_on_fail and profile.thresholds and second + 1 >= profile.abort_grace and second % 2 == 0
    ):
        return None
    from loadgen.thresholds import evaluate_all

    judged = [t for t in profile.thresholds if judgeable_during_run(t)]
    lost = [v for v in evaluate_all(judged, results()) if not v.passed]
    if lost:
        return Abort(f"threshold already lost: {lost[0].expr} ({lost[0].detail})", "aborted")
    return None
