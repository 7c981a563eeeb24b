from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadgen.thresholds import (
    LATENCY_METRICS,
    METRICS,
    Threshold,
    Verdict,
    evaluate,
    evaluate_all,
    parse_threshold,
    scope_problem,
    verdicts_to_json,
)
from tests.results_fixtures import make_results

# -- grammar ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", LATENCY_METRICS)
def test_every_latency_metric_parses_in_ms(metric: str) -> None:
    th = parse_threshold(f"{metric} < 250ms")
    assert (th.scope, th.metric, th.op, th.value) == (None, metric, "<", 250.0)
    assert th.is_latency
    assert th.latency_key == "latency_ms"
    assert th.stat == metric


@pytest.mark.parametrize("metric", LATENCY_METRICS)
def test_service_prefix_reads_service_time(metric: str) -> None:
    th = parse_threshold(f"service.{metric} <= 80ms")
    assert th.metric == f"service.{metric}"
    assert th.stat == metric
    assert th.latency_key == "service_ms"
    assert th.value == 80.0


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("250us", 0.25),
        ("120ms", 120.0),
        ("1.5s", 1500.0),
        ("2m", 120_000.0),
        ("100", 100.0),
        ("100 ms", 100.0),
        (".5s", 500.0),
        ("1e3us", 1.0),
    ],
)
def test_duration_units(text: str, ms: float) -> None:
    assert parse_threshold(f"p99 < {text}").value == pytest.approx(ms)


@pytest.mark.parametrize(
    ("text", "fraction"),
    [("1%", 0.01), ("0.5%", 0.005), ("100%", 1.0), ("0%", 0.0), ("0.01", 0.01), ("1", 1.0), ("2 %", 0.02)],
)
def test_error_rate_as_percentage_or_fraction(text: str, fraction: float) -> None:
    th = parse_threshold(f"error_rate < {text}")
    assert th.metric == "error_rate"
    assert th.value == pytest.approx(fraction)
    assert not th.is_latency


@pytest.mark.parametrize(
    ("expr", "metric", "value"),
    [
        ("rps >= 199.5", "rps", 199.5),
        ("requests > 1000", "requests", 1000.0),
        ("failures <= 0", "failures", 0.0),
    ],
)
def test_rate_and_count_metrics(expr: str, metric: str, value: float) -> None:
    th = parse_threshold(expr)
    assert (th.metric, th.value) == (metric, value)


@pytest.mark.parametrize("op", ["<", "<=", ">", ">="])
def test_every_operator_with_and_without_spaces(op: str) -> None:
    assert parse_threshold(f"p95 {op} 10").op == op
    assert parse_threshold(f"p95{op}10").op == op


@pytest.mark.parametrize(
    ("expr", "scope", "metric"),
    [
        ("home: p99 < 1s", "home", "p99"),
        ("home:p99<1s", "home", "p99"),
        ("checkout flow: error_rate < 1%", "checkout flow", "error_rate"),
        ("GET /api/items:list: p95 < 200ms", "GET /api/items:list", "p95"),
        ("a:b:c: service.p99.9 < 1s", "a:b:c", "service.p99.9"),
        # the split is at the LAST ':' followed by a metric, so a scope may itself look like one
        ("odd: p99: p50 < 5", "odd: p99", "p50"),
        ("GET /items/<id>: p99 < 5", "GET /items/<id>", "p99"),
        ("  spaced  name  :  rps  >  3  ", "spaced  name", "rps"),
    ],
)
def test_scopes(expr: str, scope: str, metric: str) -> None:
    th = parse_threshold(expr)
    assert (th.scope, th.metric) == (scope, metric)
    assert th.expr == expr


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        ("", "empty threshold expression"),
        ("   ", "empty threshold expression"),
        ("p99 100ms", "no comparison operator"),
        ("p99 == 100", "no comparison operator"),
        ("p99 =< 5", "malformed operator"),
        ("p99 < = 5", "malformed operator"),
        ("p99 << 5", "malformed operator"),
        ("< 5", "missing metric"),
        ("p99 <", "missing value after '<'"),
        ("p42 < 5", "unknown metric 'p42'"),
        ("latency < 5", "unknown metric 'latency'"),
        ("home: latency < 5", "unknown metric 'latency'"),
        ("home p99 < 5", "separate the request name with ':'"),
        (": p99 < 5", "empty scope before ':'"),
        ("p99 < fast", "p99 needs a duration like 250ms"),
        ("p99 < 5h", "unknown duration unit 'h'"),
        ("p99 < -5ms", "must not be negative"),
        ("p99 < 1e999", "value out of range"),
        ("error_rate < 150%", "above 100%"),
        ("error_rate < 5", "above 1 (write 5% for percent)"),
        ("error_rate < 5ms", "error_rate needs a percentage like 1%"),
        ("rps > 100/s", "rps needs a plain number (requests per second)"),
        ("requests > many", "requests needs a plain number (a count)"),
        ("service.rps > 5", "'service.' applies only to latency metrics, not 'rps'"),
        ("service.error_rate < 1%", "'service.' applies only to latency metrics"),
    ],
)
def test_bad_expressions_say_why_in_one_line(expr: str, reason: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_threshold(expr)
    message = str(info.value)
    assert reason in message
    assert "\n" not in message
    if expr.strip():
        assert repr(expr) in message  # names the expression it refused


# -- properties --------------------------------------------------------------------------------------------

_scopes = st.none() | st.text(min_size=1, max_size=30).filter(lambda s: s.strip() == s and s != "")
_finite = st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False)


@st.composite
def thresholds(draw: st.DrawFn) -> Threshold:
    metric = draw(st.sampled_from(METRICS))
    value = draw(st.floats(min_value=0, max_value=1) if metric == "error_rate" else _finite)
    op = draw(st.sampled_from(["<", "<=", ">", ">="]))
    return Threshold(expr="", scope=draw(_scopes), metric=metric, op=op, value=value)


@given(thresholds())
def test_canonical_form_round_trips(th: Threshold) -> None:
    again = parse_threshold(th.canonical())
    assert again == th
    assert again.expr == th.canonical()


@given(st.text(max_size=40))
def test_any_text_parses_or_raises_value_error(text: str) -> None:
    try:
        th = parse_threshold(text)
    except ValueError as exc:
        assert "\n" not in str(exc).replace(repr(text), "")
    else:
        assert th.metric in METRICS
        assert math.isfinite(th.value)
        assert th.value >= 0


# -- evaluation ----------------------------------------------------------------------------------------------


def test_run_latency_pass_and_fail() -> None:
    r = make_results()
    p99 = r["latency_ms"]["p99"]
    good = evaluate(parse_threshold(f"p99 < {p99 + 1}ms"), r)
    bad = evaluate(parse_threshold(f"p99 < {p99 - 1}"), r)
    assert good == Verdict(good.expr, True, p99, good.detail)
    assert not bad.passed
    assert bad.observed == p99
    assert "p99 = " in bad.detail
    assert "limit <" in bad.detail


def test_boundary_follows_the_operator() -> None:
    r = make_results()
    p99 = r["latency_ms"]["p99"]
    assert evaluate(parse_threshold(f"p99 <= {p99}"), r).passed
    assert not evaluate(parse_threshold(f"p99 < {p99}"), r).passed
    assert evaluate(parse_threshold(f"p99 >= {p99}"), r).passed
    assert not evaluate(parse_threshold(f"p99 > {p99}"), r).passed


def test_service_prefix_reads_service_ms() -> None:
    r = make_results()
    r["service_ms"]["p95"] = 5.0
    r["latency_ms"]["p95"] = 500.0
    v = evaluate(parse_threshold("service.p95 < 10ms"), r)
    assert (v.passed, v.observed) == (True, 5.0)
    assert not evaluate(parse_threshold("p95 < 10ms"), r).passed


def test_scoped_thresholds_read_the_named_request() -> None:
    r = make_results()
    checkout = r["requests"]["checkout"]
    v = evaluate(parse_threshold("checkout: p99 < 0.3s"), r)
    assert (v.passed, v.observed) == (False, checkout["latency_ms"]["p99"])
    assert v.detail.startswith("checkout: p99 = ")
    v = evaluate(parse_threshold("GET /api/items:list: p95 < 200ms"), r)
    assert (v.passed, v.observed) == (True, r["requests"]["GET /api/items:list"]["latency_ms"]["p95"])


def test_error_rate_rps_requests_failures() -> None:
    r = make_results()
    t = r["totals"]
    completed = t["ok"] + t["failed"]
    ck = r["requests"]["checkout"]
    cases = {
        "error_rate < 1%": (True, t["failed"] / completed),
        "error_rate < 0.001": (False, t["failed"] / completed),
        "checkout: error_rate < 1%": (False, ck["failed"] / (ck["ok"] + ck["failed"])),
        "rps >= 199": (True, completed / r["duration_s"]),
        "checkout: rps > 20": (False, (ck["ok"] + ck["failed"]) / r["duration_s"]),
        "requests >= 12000": (True, float(completed)),
        "home: requests > 9000": (False, 9000.0),
        f"failures <= {t['failed']}": (True, float(t["failed"])),
        "failures < 1": (False, float(t["failed"])),
        "GET /api/items:list: failures < 1": (True, 0.0),
    }
    for expr, (passed, observed) in cases.items():
        v = evaluate(parse_threshold(expr), r)
        assert v.passed == passed, expr
        assert v.observed == pytest.approx(observed), expr


def test_unknown_scope_fails_without_data() -> None:
    v = evaluate(parse_threshold("search page: p99 < 1s"), make_results())
    assert (v.passed, v.observed) == (False, None)
    assert v.detail.startswith("no request named 'search page'")
    assert "'checkout'" in v.detail  # lists what there is


def test_scope_problem_says_which_names_there_are() -> None:
    names = ("checkout", "home")
    assert scope_problem(parse_threshold("p99 < 1s"), names) is None
    assert scope_problem(parse_threshold("home: p99 < 1s"), names) is None
    assert scope_problem(parse_threshold("hom: p99 < 1s"), names) == (
        "no request named 'hom' (known: 'checkout', 'home'); did you mean 'home'?"
    )
    assert scope_problem(parse_threshold("x: p99 < 1s"), ()) == "no request named 'x' (known: none)"


def test_no_completed_requests_is_no_data_not_a_pass() -> None:
    r = make_results()
    r["requests"]["checkout"].update(ok=0, failed=0, count=0)
    for expr in ("checkout: p99 < 1s", "checkout: error_rate < 1%"):
        v = evaluate(parse_threshold(expr), r)
        assert (v.passed, v.observed) == (False, None), expr
        assert "no completed requests" in v.detail
    v = evaluate(parse_threshold("checkout: requests > 0"), r)  # a count of zero *is* data
    assert (v.passed, v.observed) == (False, 0.0)


def test_missing_latency_dict_or_duration_is_no_data() -> None:
    r = make_results()
    del r["service_ms"]
    v = evaluate(parse_threshold("service.p99 < 1s"), r)
    assert (v.passed, v.observed) == (False, None)
    assert "service_ms.p99 is missing" in v.detail
    r["duration_s"] = 0
    v = evaluate(parse_threshold("rps > 1"), r)
    assert (v.passed, v.observed) == (False, None)
    assert "no duration" in v.detail


def test_evaluate_all_keeps_order_and_turns_bad_expressions_into_failures() -> None:
    vs = evaluate_all(["p99 < 1s", "p99 < fast", "failures >= 0"], make_results())
    assert [v.passed for v in vs] == [True, False, True]
    assert vs[1].observed is None
    assert vs[1].detail.startswith("invalid: ")
    assert "needs a duration" in vs[1].detail


def test_verdicts_to_json_is_json() -> None:
    vs = evaluate_all(["p99 < 1s", "nope: p99 < 1s"], make_results())
    doc = verdicts_to_json(vs)
    assert json.loads(json.dumps(doc)) == doc
    assert [set(d) for d in doc] == [{"expr", "passed", "observed", "detail"}] * 2
    assert doc[1] == {"expr": "nope: p99 < 1s", "passed": False, "observed": None, "detail": vs[1].detail}


def test_thresholds_are_values() -> None:
    a, b = parse_threshold("home: p99 < 1s"), parse_threshold("home:p99<1000")
    assert a == b
    assert hash(a) == hash(b)
    with pytest.raises(AttributeError):
        a.value = 2.0  # type: ignore[misc]
