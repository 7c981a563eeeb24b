"""The coordinator's one progress line, from what it knows: a pure function."""

from __future__ import annotations

from typing import Any

from coordinator.aggregate import Counts


def progress_line(
    elapsed: float,
    duration: float,
    last: dict[str, Any] | None,
    totals: Counts,
    p99_ms: float | None,
    agents: int,
) -> str:
    """``last``: the last second every agent has reported (its summary), ``p99_ms`` over the last seconds,
    ``agents`` still taking part (neither lost nor refused)."""
    p99s = f"{p99_ms:.1f} ms" if p99_ms is not None else "-"
    if last is None:
        rates = "target        -   achieved        -"
    else:  # both figures for the last second every agent has reported
        done = last["ok"] + last["failed"]
        rates = f"target {last['target_rate']:8.1f}/s  achieved {done:8d}/s @{last['t']}s"
    return (
        f"[{min(elapsed, duration):6.0f}/{duration:.0f} s] {rates}  ok {totals.ok}  failed {totals.failed}  "
        f"dropped {totals.dropped}  p99(5s) {p99s}  agents {agents}"
    )
