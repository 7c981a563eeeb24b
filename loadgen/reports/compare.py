"""Compare two runs (baseline and candidate ``results.json`` dicts) and flag regressions.

For the whole run ("All") and for every request name present in both runs, five metrics are compared:
p50, p95 and p99 response time and the error rate (higher is worse), and throughput in requests/s
(lower is worse). A cell has regressed when the candidate is worse than the baseline by more than
``max_regression``, a fraction of the baseline (0.10 = 10 %).

An error rate cannot be compared relatively when the baseline had no errors (any error would be an
infinite increase), so then the change is measured in absolute percentage points and flagged above
``zero_baseline_error_pp`` (0.1 pp by default: more than one request in a thousand failing). The
rendered table marks such cells and says so. A metric with no data on either side (nothing completed)
is shown but not judged; a candidate that completed nothing still regresses on throughput.

A latency cell never regresses by less than an absolute floor: changes under ``min_latency_change_ms``
(1 ms by default) or under the histograms' precision (:data:`PRECISION`, the relative error of 3
significant digits) are measurement noise, whatever their percentage (0.2 ms to 0.5 ms is +150 %). The
rendered table marks such cells.

Throughput can fall by at most 100 %, so a limit of 100 % or more leaves it unjudged, and the rendered
text says so rather than promising a bound that cannot be reached.

Names present in only one of the runs are listed, not compared. :func:`compare` and :func:`parse_limit`
are pure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from loadgen.histogram import SIGNIFICANT_DIGITS
from loadgen.reports.tables import format_ms, format_pct, format_rps, render_markdown_table

LATENCY = ("p50", "p95", "p99")
METRICS = (*LATENCY, "error_rate", "rps")
LOWER_IS_WORSE = frozenset({"rps"})
ALL = "All"
_EPS = 1e-9  # a change of exactly the limit is not a regression, whatever the float rounding
PRECISION = 10.0**-SIGNIFICANT_DIGITS
"""Relative precision of a recorded latency: two values closer than this fraction may be the same bucket."""
MIN_LATENCY_CHANGE_MS = 1.0
"""Latency changes smaller than this never count as regressions (sub-millisecond noise)."""


@dataclass(frozen=True)
class Cell:
    """One metric of one row. ``change_pct`` is relative to the baseline (None when the baseline is 0 or
    either side has no data); ``change_pp`` is set for ``error_rate`` only: the absolute difference in
    percentage points. ``by_points`` says the verdict was taken on ``change_pp``."""

    metric: str
    baseline: float | None
    candidate: float | None
    change_pct: float | None
    regressed: bool
    change_pp: float | None = None
    by_points: bool = False
    below_floor: bool = False  # worse by more than the limit, but by less than the absolute latency floor


@dataclass(frozen=True)
class Row:
    name: str
    cells: tuple[Cell, ...]

    def cell(self, metric: str) -> Cell:
        for c in self.cells:
            if c.metric == metric:
                return c
        raise KeyError(metric)

    @property
    def regressed(self) -> bool:
        return any(c.regressed for c in self.cells)


@dataclass(frozen=True)
class Comparison:
    baseline_label: str
    candidate_label: str
    max_regression: float
    zero_baseline_error_pp: float
    min_latency_change_ms: float
    rows: tuple[Row, ...]  # "All" first, then the shared names in the baseline's order
    only_in_baseline: tuple[str, ...]
    only_in_candidate: tuple[str, ...]

    @property
    def regressed(self) -> bool:
        return any(r.regressed for r in self.rows)

    def row(self, name: str) -> Row:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)


def compare(
    baseline: Mapping[str, Any],
    candidate: Mapping[str, Any],
    max_regression: float,
    *,
    zero_baseline_error_pp: float = 0.1,
    min_latency_change_ms: float = MIN_LATENCY_CHANGE_MS,
) -> Comparison:
    """Compare ``candidate`` against ``baseline``. ``max_regression`` is a fraction (0.1 = 10 %)."""
    for label, v in (
        ("max_regression", max_regression),
        ("zero_baseline_error_pp", zero_baseline_error_pp),
        ("min_latency_change_ms", min_latency_change_ms),
    ):
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"{label} must be a non-negative number, got {v!r}")
    base_reqs: Mapping[str, Any] = {**(baseline.get("requests") or {}), **_flows(baseline)}
    cand_reqs: Mapping[str, Any] = {**(candidate.get("requests") or {}), **_flows(candidate)}
    shared = [n for n in base_reqs if n in cand_reqs]

    def row(name: str, base: dict[str, float | None], cand: dict[str, float | None]) -> Row:
        cells = (
            _cell(m, base[m], cand[m], max_regression, zero_baseline_error_pp, min_latency_change_ms)
            for m in METRICS
        )
        return Row(name, tuple(cells))

    rows = [
        row(
            ALL,
            _metrics(baseline, baseline.get("totals") or {}, baseline),
            _metrics(candidate, candidate.get("totals") or {}, candidate),
        )
    ]
    rows += [
        row(
            n, _metrics(base_reqs[n], base_reqs[n], baseline), _metrics(cand_reqs[n], cand_reqs[n], candidate)
        )
        for n in shared
    ]
    return Comparison(
        baseline_label=_label(baseline),
        candidate_label=_label(candidate),
        max_regression=max_regression,
        zero_baseline_error_pp=zero_baseline_error_pp,
        min_latency_change_ms=min_latency_change_ms,
        rows=tuple(rows),
        only_in_baseline=tuple(n for n in base_reqs if n not in cand_reqs),
        only_in_candidate=tuple(n for n in cand_reqs if n not in base_reqs),
    )


def parse_limit(text: str) -> float:
    """``--max-regression`` as a fraction: ``10%`` is 0.1, a bare ``0.1`` too. Raises ValueError with a
    one-line reason for anything else, including a bare number above 1 (``10`` is 1000 %, never meant)."""
    stripped = text.strip()
    try:
        value = float(stripped[:-1]) / 100 if stripped.endswith("%") else float(stripped)
    except ValueError:
        raise ValueError(f"{text!r} is not a percentage like 10%") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{text!r}: the allowed worsening is a percentage >= 0, like 10%")
    if not stripped.endswith("%") and value > 1:
        raise ValueError(f"{text!r}: a bare number is a fraction (0.1 = 10%); write {stripped}% for percent")
    return value


def render_comparison_md(cmp: Comparison) -> str:
    """The comparison as Markdown: verdict, limits, one table row per (name, metric), ⚠️ on regressions."""
    limit = f"{cmp.max_regression * 100:g}%"
    if cmp.max_regression < 1:
        throughput = f"throughput may fall by at most {limit}"
    else:  # a fall is at most 100 %: no candidate could exceed this limit
        throughput = f"throughput is not judged (it can fall by at most 100%, which {limit} allows)"
    regressions = [(r.name, c) for r in cmp.rows for c in r.cells if c.regressed]
    if regressions:
        verdict = f"**⚠️ Regression** ({len(regressions)} of {sum(len(r.cells) for r in cmp.rows)} cells)"
    else:
        verdict = "**✅ No regression**"
    out = [
        "## Comparison",
        f"Baseline: {cmp.baseline_label}  \nCandidate: {cmp.candidate_label}",
        f"{verdict}: latency and error rate may rise by at most {limit}, {throughput}. Latency changes "
        f"under {cmp.min_latency_change_ms:g} ms, or under the histograms' precision ({PRECISION:.1%} of the "
        "value), are noise and never count.",
    ]
    rows = []
    any_points = any_floor = False
    for r in cmp.rows:
        for i, c in enumerate(r.cells):
            any_points = any_points or c.by_points
            any_floor = any_floor or c.below_floor
            rows.append(
                (
                    r.name if i == 0 else "",
                    _metric_label(c.metric),
                    _value(c.metric, c.baseline),
                    _value(c.metric, c.candidate),
                    _change(c),
                    "⚠️" if c.regressed else "",
                )
            )
    out.append(
        render_markdown_table(("Name", "Metric", "Baseline", "Candidate", "Change", ""), rows, "llrrrc")
    )
    if any_points:
        out.append(
            f"_† The baseline had no errors, so the error-rate change is absolute, in percentage points "
            f"(pp), and is flagged above +{cmp.zero_baseline_error_pp:g} pp._"
        )
    if any_floor:
        out.append(
            f"_‡ Worse by more than {limit}, but by less than {cmp.min_latency_change_ms:g} ms or the "
            "histograms' precision: not a regression._"
        )
    if cmp.only_in_baseline:
        out.append(
            "Only in the baseline (not compared): " + ", ".join(f"`{n}`" for n in cmp.only_in_baseline)
        )
    if cmp.only_in_candidate:
        out.append(
            "Only in the candidate (not compared): " + ", ".join(f"`{n}`" for n in cmp.only_in_candidate)
        )
    return "\n\n".join(out) + "\n"


# -- helpers --------------------------------------------------------------------------------------------


def _flows(run: Mapping[str, Any]) -> dict[str, Any]:
    """A run's user journeys as rows named ``flow:<name>``, their latency a flow's whole duration."""
    flows: Mapping[str, Any] = run.get("flows") or {}
    return {f"flow:{name}": {**flow, "latency_ms": flow.get("duration_ms")} for name, flow in flows.items()}


def _metrics(
    source: Mapping[str, Any], counts: Mapping[str, Any], run: Mapping[str, Any]
) -> dict[str, float | None]:
    ok, failed = int(counts.get("ok", 0)), int(counts.get("failed", 0))
    completed = ok + failed
    latency: Mapping[str, Any] = (source.get("latency_ms") or {}) if completed else {}
    duration = float(run.get("duration_s") or 0.0)
    out: dict[str, float | None] = {m: _float(latency.get(m)) for m in LATENCY}
    out["error_rate"] = failed / completed if completed else None
    out["rps"] = completed / duration if duration > 0 else None
    return out


def _cell(
    metric: str, base: float | None, cand: float | None, limit: float, zero_pp: float, floor_ms: float
) -> Cell:
    if base is None or cand is None:
        return Cell(metric, base, cand, None, False)
    change_pp = (cand - base) * 100 if metric == "error_rate" else None
    if metric == "error_rate" and base == 0:
        return Cell(metric, base, cand, None, cand * 100 > zero_pp + _EPS, cand * 100, by_points=True)
    change_pct = (cand - base) / base * 100 if base != 0 else None
    if change_pct is None:  # a zero latency or throughput baseline: nothing to be relative to
        return Cell(metric, base, cand, None, False, change_pp)
    relative = change_pct / 100
    worse = -relative if metric in LOWER_IS_WORSE else relative
    regressed = worse > limit + _EPS
    if regressed and metric in LATENCY and cand - base < max(floor_ms, PRECISION * max(base, cand)):
        return Cell(metric, base, cand, change_pct, False, change_pp, below_floor=True)
    return Cell(metric, base, cand, change_pct, regressed, change_pp)


def _float(v: Any) -> float | None:
    return None if v is None else float(v)


def _label(run: Mapping[str, Any]) -> str:
    name = run.get("name", "run")
    started = run.get("started_at")
    return f"{name} ({started})" if started else str(name)


def _metric_label(metric: str) -> str:
    if metric in LATENCY:
        return f"{metric} ms"
    return {"error_rate": "error rate", "rps": "throughput req/s"}[metric]


def _value(metric: str, v: float | None) -> str:
    if metric in LATENCY:
        return format_ms(v)
    if metric == "error_rate":
        return format_pct(v)
    return format_rps(v)


def _change(c: Cell) -> str:
    if c.by_points and c.change_pp is not None:
        return f"{c.change_pp:+.2f} pp †"
    if c.change_pct is None:
        return "-"
    return f"{c.change_pct:+.1f}%" + (" ‡" if c.below_floor else "")
