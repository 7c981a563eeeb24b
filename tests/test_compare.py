from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadgen.reports.compare import ALL, METRICS, compare, parse_limit, render_comparison_md
from tests.results_fixtures import DEFAULT_REQUESTS, RequestFixture, make_results


def _error_free(r: dict[str, Any]) -> dict[str, Any]:
    for req in r["requests"].values():
        req.update(ok=req["count"], failed=0, errors={})
    r["totals"]["ok"] += r["totals"]["failed"]
    r["totals"]["failed"] = 0
    r["errors"] = {}
    return r


def test_twenty_percent_p99_regression_flagged_at_ten_not_at_thirty() -> None:
    base, cand = make_results(), make_results(latency_scale=1.2)
    strict = compare(base, cand, 0.10)
    cell = strict.row(ALL).cell("p99")
    assert cell.change_pct == pytest.approx(20.0, abs=0.01)
    assert cell.regressed
    assert strict.row("checkout").cell("p99").regressed
    assert strict.regressed
    lax = compare(base, cand, 0.30)
    assert not lax.row(ALL).cell("p99").regressed
    assert not lax.regressed


def test_a_change_of_exactly_the_limit_is_not_a_regression() -> None:
    base, cand = make_results(), make_results()
    base["latency_ms"]["p99"], cand["latency_ms"]["p99"] = 100.0, 110.0
    assert not compare(base, cand, 0.10).row(ALL).cell("p99").regressed
    cand["latency_ms"]["p99"] = 110.2
    assert compare(base, cand, 0.10).row(ALL).cell("p99").regressed


def test_faster_is_never_a_regression() -> None:
    cmp = compare(make_results(), make_results(latency_scale=0.5), 0.0)
    assert not cmp.regressed
    assert cmp.row(ALL).cell("p50").change_pct == pytest.approx(-50.0, abs=0.01)


def test_lower_throughput_is_worse_higher_is_not() -> None:
    base = make_results(rate=200.0)
    down = compare(base, make_results(rate=150.0), 0.10).row(ALL).cell("rps")
    assert down.change_pct == pytest.approx(-25.0)
    assert down.regressed
    up = compare(base, make_results(rate=300.0), 0.10).row(ALL).cell("rps")
    assert up.change_pct == pytest.approx(50.0)
    assert not up.regressed


def test_error_rate_relative_when_baseline_has_errors() -> None:
    base, cand = make_results(), make_results()
    checkout = cand["requests"]["checkout"]
    checkout.update(ok=checkout["ok"] - 1, failed=checkout["failed"] + 1)  # 12 -> 13 failures of 600: +8.3 %
    cell = compare(base, cand, 0.10).row("checkout").cell("error_rate")
    assert not cell.by_points
    assert cell.change_pct == pytest.approx(100 / 12, rel=1e-6)
    assert not cell.regressed
    assert compare(base, cand, 0.05).row("checkout").cell("error_rate").regressed


def test_error_rate_in_percentage_points_when_baseline_is_zero() -> None:
    base = _error_free(make_results())
    cand = make_results()  # checkout fails 2 %, home 0.1 %
    cmp = compare(base, cand, 0.10)
    checkout = cmp.row("checkout").cell("error_rate")
    assert checkout.by_points
    assert checkout.change_pct is None
    assert checkout.change_pp == pytest.approx(2.0)
    assert checkout.regressed
    home = cmp.row("home").cell("error_rate")
    assert home.change_pp == pytest.approx(0.1)
    assert not home.regressed  # exactly at the default 0.1 pp
    assert (
        compare(base, cand, 0.10, zero_baseline_error_pp=5.0).row("checkout").cell("error_rate").regressed
        is False
    )
    md = render_comparison_md(cmp)
    assert "+2.00 pp †" in md
    assert "percentage points" in md


def test_names_in_only_one_run_are_listed_not_compared() -> None:
    base = make_results(requests=(*DEFAULT_REQUESTS[:2], RequestFixture("legacy", share=0.05)))
    cand = make_results(requests=(*DEFAULT_REQUESTS[:2], RequestFixture("search", share=0.05)))
    cmp = compare(base, cand, 0.10)
    assert [r.name for r in cmp.rows] == [ALL, "home", "GET /api/items:list"]
    assert cmp.only_in_baseline == ("legacy",)
    assert cmp.only_in_candidate == ("search",)
    md = render_comparison_md(cmp)
    assert "Only in the baseline (not compared): `legacy`" in md
    assert "Only in the candidate (not compared): `search`" in md


def test_a_candidate_that_completed_nothing_regresses_on_throughput_only() -> None:
    base, cand = make_results(), make_results()
    cand["requests"]["checkout"].update(ok=0, failed=0, count=0)
    row = compare(base, cand, 0.10).row("checkout")
    for metric in ("p50", "p95", "p99", "error_rate"):
        cell = row.cell(metric)
        assert cell.candidate is None
        assert cell.change_pct is None
        assert not cell.regressed
    assert row.cell("rps").regressed


def test_markdown_marks_regressions() -> None:
    base = make_results()
    md = render_comparison_md(compare(base, make_results(latency_scale=1.2), 0.10))
    assert "⚠️ Regression" in md
    assert "| Name" in md
    assert "| Metric" in md
    p99_line = next(line for line in md.splitlines() if "| p99 ms" in line)
    assert p99_line.startswith("|")
    assert p99_line.count("|") == 7
    assert "+20.0%" in p99_line
    assert "⚠️" in p99_line
    assert md.count("⚠️") >= 2
    same = render_comparison_md(compare(base, make_results(), 0.10))
    assert "✅ No regression" in same
    assert "⚠️" not in same
    assert "may rise by at most 10%" in same


def test_every_row_has_every_metric() -> None:
    cmp = compare(make_results(), make_results(), 0.1)
    assert all(tuple(c.metric for c in r.cells) == METRICS for r in cmp.rows)
    with pytest.raises(KeyError):
        cmp.row("nope")


@pytest.mark.parametrize("limit", [-0.1, float("nan"), float("inf")])
def test_a_nonsense_limit_is_refused(limit: float) -> None:
    with pytest.raises(ValueError, match="max_regression"):
        compare(make_results(), make_results(), limit)


@given(
    scale=st.floats(min_value=0.5, max_value=2.0),
    limit=st.floats(min_value=0.0, max_value=1.0),
)
def test_latency_verdict_matches_the_change(scale: float, limit: float) -> None:
    base = make_results()
    cand = make_results()
    cand["latency_ms"]["p99"] = base["latency_ms"]["p99"] * scale
    cell = compare(base, cand, limit).row(ALL).cell("p99")
    change = scale - 1
    rise_ms = cand["latency_ms"]["p99"] - base["latency_ms"]["p99"]
    if abs(change - limit) > 1e-6:
        assert cell.regressed == (change > limit and rise_ms >= max(1.0, 0.001 * cand["latency_ms"]["p99"]))


@given(st.floats(min_value=0.0, max_value=1.0), st.floats(min_value=0.2, max_value=3.0))
def test_a_run_never_regresses_against_itself(limit: float, scale: float) -> None:
    r = make_results(latency_scale=scale)
    assert not compare(r, r, limit).regressed


def test_sub_millisecond_noise_is_never_a_regression() -> None:
    base, cand = make_results(), make_results()
    base["latency_ms"]["p50"], cand["latency_ms"]["p50"] = 0.2, 0.5  # +150 %, but 0.3 ms
    base["latency_ms"]["p99"], cand["latency_ms"]["p99"] = 3000.0, 3002.5  # over 0.05 %, within precision
    cmp = compare(base, cand, 0.0)
    p50, p99 = cmp.row(ALL).cell("p50"), cmp.row(ALL).cell("p99")
    assert (p50.regressed, p50.below_floor, p99.regressed, p99.below_floor) == (False, True, False, True)
    assert not cmp.regressed
    md = render_comparison_md(cmp)
    assert "Latency changes under 1 ms, or under the histograms' precision (0.1% of the value)" in md
    assert "+150.0% ‡" in md
    assert "‡ Worse by more than 0%, but by less than 1 ms" in md
    cand["latency_ms"]["p50"] = 1.2  # a whole millisecond worse counts
    assert compare(base, cand, 0.0).row(ALL).cell("p50").regressed


def test_a_limit_of_100_percent_or_more_does_not_promise_a_bigger_fall() -> None:
    base = make_results()
    assert "throughput may fall by at most 10%" in render_comparison_md(compare(base, base, 0.1))
    md = render_comparison_md(compare(base, make_results(rate=1.0), 5.0))
    assert "fall by at most 500%" not in md
    assert "latency and error rate may rise by at most 500%, throughput is not judged" in md


@pytest.mark.parametrize(("text", "value"), [("10%", 0.1), (" 500% ", 5.0), ("0.25", 0.25), ("0", 0.0)])
def test_limits_parse(text: str, value: float) -> None:
    assert parse_limit(text) == pytest.approx(value)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("ten", "is not a percentage like 10%"),
        ("-5%", "a percentage >= 0"),
        ("nan%", "a percentage >= 0"),
        ("inf", "a percentage >= 0"),
        ("10", "a bare number is a fraction (0.1 = 10%); write 10% for percent"),
    ],
)
def test_nonsense_limits_are_refused(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_limit(text)
