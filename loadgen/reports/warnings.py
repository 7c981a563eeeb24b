"""The words of a run's warnings: each coded warning (a ``code`` and its figures, as the coordinator decides
them in :func:`coordinator.results.build_results`) rendered as the English the terminal, the summary and the
report show. The only place those sentences live.

A warning travels as a plain mapping ``{"code": CODE, **figures}`` (results.json's ``warning_codes``), and
as its English in ``warnings``; readers of results files written before codes existed get the English only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


def drop_cause(behind: bool, lag_p99_ms: float | None, cpu_max: float, service_p99_ms: float | None) -> str:
    """Why arrivals were dropped at ``max_in_flight``, with what to do about it (one clause)."""
    if behind:
        return "the generator fell behind its schedule; add agents or cores"
    service = "" if service_p99_ms is None else f", service time p99 {service_p99_ms:,.1f} ms"
    return (
        f"the generator kept its schedule (send lag p99 {lag_p99_ms or 0.0:.1f} ms, agents at most "
        f"{cpu_max:.0%} of a core) while the target answered slower than requests arrived{service}: "
        "the target is the limit, more agents will not help; raise max_in_flight to keep sending, or lower "
        "the rate"
    )


def dropped_warning(
    dropped: int,
    max_in_flight: int,
    behind: bool,
    lag_p99_ms: float | None,
    cpu_max: float,
    service_p99_ms: float | None,
) -> str:
    """The run's warning for arrivals dropped at ``max_in_flight``."""
    cause = drop_cause(behind, lag_p99_ms, cpu_max, service_p99_ms)
    return f"GENERATOR SATURATED: {dropped} arrivals dropped at max_in_flight={max_in_flight}: {cause}"


def stolen_warning(agent_id: str, stolen_max: float, stolen_mean: float) -> str:
    """The run's warning for an agent whose host lost notable CPU time to its hypervisor while the
    generator fell behind."""
    return (
        f"agent {agent_id}'s host lost up to {stolen_max:.0%} of its CPU time in a second to other guests of "
        f"its hypervisor (steal; {stolen_mean:.1%} over the run): part of the generator's delays came from "
        "sharing the physical machine, not from the load; prefer hosts with dedicated CPUs for the agents"
    )


def connections_advice(connections_max: int) -> str:
    """What to tell a run whose generator fell behind while an agent held many connections."""
    return (
        f"an agent held up to {connections_max:,} connections while the generator was behind: near its CPU "
        "limit every connection an agent holds makes each request dearer; against a fast target, cap them "
        "with load.max_connections (a few times the rate times the target's response time) or add agents"
    )


def _saturated_seconds(w: Mapping[str, Any]) -> str:
    return (
        f"the generator was saturated in {w['seconds']} of {w['of']} seconds "
        f"(first at t={w['first']} s: drops, send lag p99 over 5 ms or an agent at a full "
        "core); figures from those seconds include its own delays"
    )


def _agents_lost(w: Mapping[str, Any]) -> str:
    return (
        f"agents lost during the run: {', '.join(w['agents'])}; about {w['unreported']} arrivals they "
        f"scheduled after their last report are not in the totals, and {w['lost_in_flight']} requests they "
        "had in flight have no known outcome (counted in in_flight_at_end)"
    )


def _no_success(w: Mapping[str, Any]) -> str:
    top = ", ".join(f"{k} {v}" for k, v in w["top_errors"])
    return f"NO REQUEST SUCCEEDED: all {w['completed']} completed requests failed" + (
        f" ({top})" if top else ""
    )


_TEXTS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "dropped": lambda w: dropped_warning(
        w["dropped"], w["max_in_flight"], w["behind"], w["send_lag_p99_ms"], w["cpu_max"], w["service_p99_ms"]
    ),
    "send_lag": lambda w: (
        f"GENERATOR SATURATED: send lag p99 {w['send_lag_p99_ms']:.1f} ms exceeds {w['limit_ms']:g} ms "
        "(the generator sent late; add agents or cores)"
    ),
    "agent_full_core": lambda w: (
        f"GENERATOR SATURATED: agent {w['agent']} used a full CPU core for {w['seconds']} of "
        f"{w['of']} s (max {w['cpu_max']:.0%}); its timing is not trustworthy, add agents"
    ),
    "saturated_seconds": _saturated_seconds,
    "stolen": lambda w: stolen_warning(w["agent"], w["stolen_max"], w["stolen_mean"]),
    "many_connections": lambda w: connections_advice(w["connections_max"]),
    "tls_unverified": lambda w: (
        "TLS CERTIFICATES NOT VERIFIED (tls.verify = false): the target's identity was not checked; "
        "measure this way only a target you know"
    ),
    "late_intervals": lambda w: f"{w['count']} agent intervals arrived after their second was closed",
    "agents_lost": _agents_lost,
    "unsent": lambda w: (
        f"about {w['count']} arrivals of the profile were never sent: the share of an agent that was lost "
        "or refused the run, from then until the others took it over (or, with no agent left, until the "
        "end); counted in totals.unsent"
    ),
    "no_data": lambda w: (
        f"{w['count']} arrivals were dropped because a unique [[data]] source had no row for them (the rows "
        "ran out, or an agent's next block of rows was late); counted in totals.dropped and "
        "totals.dropped_no_data, not a saturation of the generator"
    ),
    "incomplete": lambda w: f"THE FLEET DID NOT CARRY THE PROFILE'S LOAD: {w['reason']}",
    "nothing_sent": lambda w: "NOTHING WAS SENT: no agent scheduled a single request",
    "no_success": _no_success,
    "totals_mismatch": lambda w: (
        f"agent {w['agent']}'s own totals {w['reported']} differ from what was merged from its "
        f"intervals {w['merged']}: some of its reports were lost"
    ),
}

CODES = frozenset(_TEXTS)


def render(warning: Mapping[str, Any]) -> str:
    """The English of one coded warning (an unknown code, from a newer loadgen, is shown as its figures)."""
    text = _TEXTS.get(str(warning.get("code")))
    if text is None:
        return ", ".join(f"{k}={v}" for k, v in warning.items())
    return text(warning)


def warning_lines(results: Mapping[str, Any]) -> list[str]:
    """A results document's warnings in English: rendered from its codes, or its English as written."""
    codes = results.get("warning_codes")
    if codes is not None:
        return [render(w) for w in codes]
    return [str(w) for w in results.get("warnings") or []]
