"""Pass/fail thresholds as immutable values, judged against a finished run's ``results.json`` dict.

Grammar, one string per threshold (a profile's ``thresholds`` list)::

    [SCOPE:] METRIC OP VALUE          OP is one of  <  <=  >  >=

    METRIC                      VALUE
    p50 p66 p75 p80 p90 p95     a duration: 250us, 120ms, 1.5s, 2m; a bare number is milliseconds
    p98 p99 p99.9 p99.99        (response time from the *intended* send time, ``latency_ms``;
    min max mean                 prefix ``service.`` to judge ``service_ms`` instead: ``service.p99 < 80ms``)
    error_rate                  a percentage ``1%`` or a fraction ``0.01``
    rps                         completed requests per second of profile duration
    requests                    completed requests (ok + failed)
    failures                    failed requests

SCOPE is a request name from the profile; it may hold spaces, slashes and colons, because the
expression is split at the *last* ``:`` that is followed by a known metric (``GET /a:b: p99 < 1s``
scopes ``GET /a:b``). Without a scope the whole run is judged. A scope that names no request of the
profile is refused with the profile (:func:`scope_problem`), not found out after the run.

:func:`parse_threshold` raises :class:`ValueError` with a one-line reason; :func:`evaluate` never
raises on missing data: it returns a failing :class:`Verdict` with ``observed=None`` and says why.
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

LATENCY_METRICS = (
    "p50",
    "p66",
    "p75",
    "p80",
    "p90",
    "p95",
    "p98",
    "p99",
    "p99.9",
    "p99.99",
    "min",
    "max",
    "mean",
)
COUNT_METRICS = ("requests", "failures")
OTHER_METRICS = ("error_rate", "rps", *COUNT_METRICS)
SERVICE_PREFIX = "service."
METRICS = (*LATENCY_METRICS, *(SERVICE_PREFIX + m for m in LATENCY_METRICS), *OTHER_METRICS)
_METRIC_HELP = f"{' '.join(LATENCY_METRICS)}, service.<latency metric>, {' '.join(OTHER_METRICS)}"

OPS: Mapping[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}

_DURATION_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_NUMBER_RE = re.compile(_NUMBER)
_DURATION_RE = re.compile(rf"(?P<num>{_NUMBER})\s*(?P<unit>[a-zA-Zµ]*)")
_PERCENT_RE = re.compile(rf"(?P<num>{_NUMBER})\s*%")
# Everything up to the last operator, the operator, then a value that holds no '<' or '>'. The greedy
# left side finds the last operator (so a scope may itself contain '<' or '>'); at one position the
# alternation tries '<=' before '<'.
_LAST_OP_RE = re.compile(r"(?P<lhs>.*)(?P<op><=|>=|<|>)(?P<rhs>[^<>]*)", re.DOTALL)


@dataclass(frozen=True)
class Threshold:
    """One parsed threshold. ``value`` is normalised: milliseconds for latency metrics, a fraction
    (0..1) for ``error_rate``, requests/s for ``rps``, a count for ``requests`` and ``failures``.

    ``expr`` is the text as written; two thresholds that mean the same thing compare equal.
    """

    expr: str = field(compare=False)
    scope: str | None
    metric: str
    op: str
    value: float

    @property
    def is_latency(self) -> bool:
        return self.stat in LATENCY_METRICS

    @property
    def stat(self) -> str:
        """The statistic's key inside a latency dict (``p99`` for ``service.p99``), else the metric."""
        return self.metric.removeprefix(SERVICE_PREFIX)

    @property
    def latency_key(self) -> str:
        """Which latency dict of the results this threshold reads (only meaningful for latency metrics)."""
        return "service_ms" if self.metric.startswith(SERVICE_PREFIX) else "latency_ms"

    def canonical(self) -> str:
        """A normalised expression that parses back to an equal :class:`Threshold`."""
        scope = "" if self.scope is None else f"{self.scope}: "
        return f"{scope}{self.metric} {self.op} {_canonical_value(self.metric, self.value)}"


@dataclass(frozen=True)
class Verdict:
    expr: str
    passed: bool
    observed: float | None
    detail: str


def parse_threshold(expr: str) -> Threshold:
    """Parse one threshold expression. Raises :class:`ValueError` with a one-line reason."""
    text = expr.strip()
    if not text:
        raise ValueError("empty threshold expression")
    m = _LAST_OP_RE.fullmatch(text)
    if m is None:
        raise ValueError(f"threshold {expr!r}: no comparison operator (expected one of < <= > >=)")
    lhs, op, rhs = m["lhs"], m["op"], m["rhs"]
    if lhs.endswith(("<", ">", "=", "!")) or rhs.lstrip().startswith("="):
        raise ValueError(f"threshold {expr!r}: malformed operator (expected one of < <= > >=)")
    scope, metric = _split_scope(expr, lhs.strip())
    rhs = rhs.strip()
    if not rhs:
        raise ValueError(f"threshold {expr!r}: missing value after {op!r}")
    value = _parse_value(expr, metric, rhs)
    return Threshold(expr=expr, scope=scope, metric=metric, op=op, value=value)


def scope_problem(th: Threshold, names: Iterable[str]) -> str | None:
    """Why ``th`` cannot be judged for a run of requests called ``names`` (its scope names none), or None."""
    known = sorted(names)
    if th.scope is None or th.scope in known:
        return None
    close = difflib.get_close_matches(th.scope, known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"no request named {th.scope!r} (known: {', '.join(repr(n) for n in known) or 'none'}){hint}"


FLOW_KEYS = {"latency_ms": "duration_ms", "service_ms": "active_ms"}


def evaluate(th: Threshold, results: Mapping[str, Any]) -> Verdict:
    """Judge one threshold against a results dict (schema 1). Pure; never raises on missing data."""
    where = "run" if th.scope is None else f"request {th.scope!r}"
    if th.scope is None:
        source: Mapping[str, Any] = results
        ok, failed = _totals(results)
    else:
        requests = results.get("requests") or {}
        flows = results.get("flows") or {}
        if (problem := scope_problem(th, [*requests, *flows])) is not None:
            return Verdict(th.expr, False, None, problem)
        source = requests[th.scope] if th.scope in requests else flows[th.scope]
        ok, failed = int(source.get("ok", 0)), int(source.get("failed", 0))
    completed = ok + failed

    observed: float | None
    if th.is_latency:
        # A flow's latency is its whole journey's (arrival to last byte), its service time its active time.
        key = th.latency_key if th.scope not in (results.get("flows") or {}) else FLOW_KEYS[th.latency_key]
        stats = source.get(key) or {}
        raw = stats.get(th.stat)
        observed = None if completed == 0 or raw is None else float(raw)
        missing = (
            f"no data: the {where} has no completed requests"
            if completed == 0
            else (f"no data: {th.latency_key}.{th.stat} is missing for the {where}")
        )
    elif th.metric == "error_rate":
        observed = failed / completed if completed else None
        missing = f"no data: the {where} has no completed requests, so no error rate"
    elif th.metric == "rps":
        duration = float(results.get("duration_s") or 0.0)
        observed = completed / duration if duration > 0 else None
        missing = "no data: the run has no duration"
    elif th.metric == "requests":
        observed, missing = float(completed), ""
    else:  # failures
        observed, missing = float(failed), ""

    if observed is None:
        return Verdict(th.expr, False, None, missing)
    passed = OPS[th.op](observed, th.value)
    scope = "" if th.scope is None else f"{th.scope}: "
    limit = format_value(th.metric, th.value)
    detail = f"{scope}{th.metric} = {format_value(th.metric, observed)} (limit {th.op} {limit})"
    return Verdict(th.expr, passed, observed, detail)


def evaluate_all(exprs: Sequence[str], results: Mapping[str, Any]) -> list[Verdict]:
    """Judge every expression in order. An expression that does not parse becomes a failing verdict
    (``detail`` says why) rather than an exception, so a typo never costs the report of a long run."""
    verdicts = []
    for expr in exprs:
        try:
            th = parse_threshold(expr)
        except ValueError as exc:
            verdicts.append(Verdict(expr, False, None, f"invalid: {exc}"))
            continue
        verdicts.append(evaluate(th, results))
    return verdicts


def verdicts_to_json(vs: Iterable[Verdict]) -> list[dict[str, Any]]:
    return [{"expr": v.expr, "passed": v.passed, "observed": v.observed, "detail": v.detail} for v in vs]


def format_value(metric: str, value: float) -> str:
    """Human form of a metric value: ``123.4 ms``, ``0.42%``, ``199.2 req/s``, ``11950``."""
    stat = metric.removeprefix(SERVICE_PREFIX)
    if stat in LATENCY_METRICS:
        return f"{_trim(value, 3)} ms"
    if stat == "error_rate":
        return f"{_trim(value * 100, 4)}%"
    if stat == "rps":
        return f"{_trim(value, 2)} req/s"
    return _trim(value, 0) if value == int(value) else _trim(value, 3)


# -- parsing helpers ------------------------------------------------------------------------------------


def _split_scope(expr: str, lhs: str) -> tuple[str | None, str]:
    if not lhs:
        raise ValueError(f"threshold {expr!r}: missing metric before the operator")
    if lhs in METRICS:
        return None, lhs
    pos = lhs.rfind(":")
    while pos != -1:  # the last ':' followed by a known metric separates the scope
        if lhs[pos + 1 :].strip() in METRICS:
            scope = lhs[:pos].strip()
            if not scope:
                raise ValueError(f"threshold {expr!r}: empty scope before ':'")
            return scope, lhs[pos + 1 :].strip()
        pos = lhs.rfind(":", 0, pos)
    word = lhs[lhs.rfind(":") + 1 :].strip()
    if word.startswith(SERVICE_PREFIX) and word.removeprefix(SERVICE_PREFIX) in OTHER_METRICS:
        raise ValueError(
            f"threshold {expr!r}: 'service.' applies only to latency metrics, "
            f"not {word.removeprefix(SERVICE_PREFIX)!r}"
        )
    last = word.split()[-1] if word else ""
    if last in METRICS:
        raise ValueError(f"threshold {expr!r}: separate the request name with ':', as in 'NAME: {last} ...'")
    raise ValueError(f"threshold {expr!r}: unknown metric {word!r} (expected {_METRIC_HELP})")


def _parse_value(expr: str, metric: str, text: str) -> float:
    if text.startswith("-"):
        raise ValueError(f"threshold {expr!r}: value must not be negative ({text})")
    stat = metric.removeprefix(SERVICE_PREFIX)
    if stat in LATENCY_METRICS:
        m = _DURATION_RE.fullmatch(text)
        if m is None:
            raise ValueError(
                f"threshold {expr!r}: {metric} needs a duration like 250ms, 1.5s or 2m, not {text!r}"
            )
        unit = m["unit"] or "ms"
        if unit not in _DURATION_UNITS_MS:
            raise ValueError(f"threshold {expr!r}: unknown duration unit {unit!r} (use us, ms, s or m)")
        return _finite(expr, float(m["num"]) * _DURATION_UNITS_MS[unit])
    if stat == "error_rate":
        m = _PERCENT_RE.fullmatch(text)
        if m is not None:
            pct = _finite(expr, float(m["num"]))
            if pct > 100:
                raise ValueError(f"threshold {expr!r}: error_rate {text} is above 100%")
            return pct / 100
        if _NUMBER_RE.fullmatch(text) is None:
            raise ValueError(
                f"threshold {expr!r}: error_rate needs a percentage like 1% "
                f"or a fraction like 0.01, not {text!r}"
            )
        fraction = _finite(expr, float(text))
        if fraction > 1:
            raise ValueError(
                f"threshold {expr!r}: error_rate fraction {text} is above 1 (write {text}% for percent)"
            )
        return fraction
    if _NUMBER_RE.fullmatch(text) is None:
        what = "requests per second" if stat == "rps" else "a count"
        raise ValueError(f"threshold {expr!r}: {metric} needs a plain number ({what}), not {text!r}")
    return _finite(expr, float(text))


def _finite(expr: str, v: float) -> float:
    if not math.isfinite(v):
        raise ValueError(f"threshold {expr!r}: value out of range")
    return v


def _canonical_value(metric: str, value: float) -> str:
    stat = metric.removeprefix(SERVICE_PREFIX)
    if stat in LATENCY_METRICS:
        return f"{value!r}ms"
    return repr(value)


def _trim(v: float, decimals: int) -> str:
    text = f"{v:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _totals(results: Mapping[str, Any]) -> tuple[int, int]:
    totals = results.get("totals") or {}
    return int(totals.get("ok", 0)), int(totals.get("failed", 0))
