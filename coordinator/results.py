"""Turning the merged aggregate into the ``results.json`` document (see docs/results-schema.md)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from coordinator.aggregate import SATURATION_LAG_P99_MS, AgentTotals, RunAggregate
from coordinator.costs import cost_summary
from coordinator.membership import AGENT_STATES, AgentInfo
from coordinator.saturation import STOLEN_NOTABLE, connections_notable, generator_behind, saturation_cause
from coordinator.spool import IntervalSpool, IntervalTally, SpoolMark
from loadgen.atomic import replacing
from loadgen.percentiles import summary_ms
from loadgen.profile import Profile
from loadgen.reports.warnings import render as render_warning
from loadgen.results_model import ConnectionFigures, ResultsDoc, ThresholdVerdict
from loadgen.thresholds import Verdict, evaluate_all, verdicts_to_json

__all__ = [
    "AGENT_STATES",
    "SCHEMA_VERSION",
    "AgentInfo",
    "build_results",
    "judge",
    "render_json",
    "write_json_atomic",
]

SCHEMA_VERSION = 1


def iso_utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_results(
    profile: Profile,
    agg: RunAggregate,
    intervals: list[dict[str, Any]] | SpoolMark,
    agents: list[AgentInfo],
    events: list[dict[str, Any]],
    *,
    started_at: float,
    elapsed_s: float,
    agents_expected: int,
    final: bool,
    tally: IntervalTally | None = None,
    planned: float | None = None,
    unsent: float = 0.0,
    incomplete: str | None = None,
    aborted: str | None = None,
    aborted_at: float = 0.0,
    planned_stop: bool = False,
    interrupted: bool = False,
    hours: list[dict[str, Any]] | None = None,
) -> ResultsDoc:
    """The document; its ``intervals`` is the list given, or the :class:`SpoolMark` of the spooled seconds it
    covers (``tally`` then describes them), which :func:`write_json_atomic` streams from the spool."""
    if tally is None:
        if not isinstance(intervals, list):
            raise TypeError("build_results needs the tally of spooled intervals")
        tally = IntervalTally.of(intervals)
    t = agg.totals
    completed = t.ok + t.failed
    in_flight_at_end = t.scheduled - completed - t.dropped
    duration = profile.load.duration
    lag = summary_ms(agg.lag)
    warnings: list[dict[str, Any]] = []  # coded: {"code": ..., **figures}; words in loadgen.reports.warnings
    saturated = False
    lag_p99 = lag.get("p99")
    cpu_max = max((agg.agent(a.id).cpu_max for a in agents), default=0.0)
    behind = generator_behind(lag_p99, cpu_max)
    if t.no_data:
        warnings.append({"code": "no_data", "count": t.no_data})
    if t.dropped > t.no_data:
        saturated = True
        warnings.append(
            {
                "code": "dropped",
                "dropped": t.dropped - t.no_data,
                "max_in_flight": profile.load.max_in_flight,
                "behind": behind,
                "send_lag_p99_ms": lag_p99,
                "cpu_max": cpu_max,
                "service_p99_ms": summary_ms(agg.service).get("p99"),
            }
        )
    if lag_p99 is not None and lag_p99 > SATURATION_LAG_P99_MS:
        saturated = True
        warnings.append({"code": "send_lag", "send_lag_p99_ms": lag_p99, "limit_ms": SATURATION_LAG_P99_MS})
    for a in agents:
        at = agg.agent(a.id)
        if at.cpu_saturated_s >= max(2, at.intervals // 20):
            saturated = True
            warnings.append(
                {
                    "code": "agent_full_core",
                    "agent": a.id,
                    "seconds": at.cpu_saturated_s,
                    "of": at.intervals,
                    "cpu_max": at.cpu_max,
                }
            )
    if tally.saturated:
        warnings.append(
            {
                "code": "saturated_seconds",
                "seconds": tally.saturated,
                "of": tally.count,
                "first": tally.first_saturated,
            }
        )
    if behind or tally.saturated:  # over the run, or in some of its seconds
        for a in agents:
            at = agg.agent(a.id)
            if at.stolen_max >= STOLEN_NOTABLE:
                warnings.append(
                    {
                        "code": "stolen",
                        "agent": a.id,
                        "stolen_max": at.stolen_max,
                        "stolen_mean": at.stolen_sum / max(1, at.intervals),
                    }
                )
    connections_max = max((agg.agent(a.id).connections_max for a in agents), default=0)
    if connections_notable(behind, connections_max, profile.load.max_connections is not None):
        warnings.append({"code": "many_connections", "connections_max": connections_max})
    if profile.tls is not None and not profile.tls.verify and profile.target.startswith("https:"):
        warnings.append({"code": "tls_unverified"})
    if agg.late_intervals:
        warnings.append({"code": "late_intervals", "count": agg.late_intervals})
    lost = [a for a in agents if a.lost]
    unreported = round(sum(a.unreported_estimate for a in lost))
    lost_in_flight = sum(max(0, agg.agent(a.id).in_flight) for a in lost)
    unsent_n = round(unsent)
    if lost:
        warnings.append(
            {
                "code": "agents_lost",
                "agents": [a.id for a in lost],
                "unreported": unreported,
                "lost_in_flight": lost_in_flight,
            }
        )
    if unsent_n:
        warnings.append({"code": "unsent", "count": unsent_n})
    if incomplete:
        warnings.append({"code": "incomplete", "reason": incomplete})
    if final and t.ok == 0:
        if t.scheduled == 0:
            warnings.append({"code": "nothing_sent"})
        else:
            top = sorted(t.errors.items(), key=lambda kv: -kv[1])[:3]
            warnings.append(
                {"code": "no_success", "completed": completed, "top_errors": [list(kv) for kv in top]}
            )
    for e in events:
        if e.get("type") == "agent_totals_mismatch":
            warnings.append(
                {
                    "code": "totals_mismatch",
                    "agent": e["agent"],
                    "reported": e["reported"],
                    "merged": e["merged"],
                }
            )
    lates = [a.start_late_ms for a in agents if a.start_late_ms is not None and a.joined_t == 0.0]
    offset_error = max([a.clock_error_ms for a in agents] or [0.0])
    requests: dict[str, Any] = {}

    def figures(name: str, method: str, path: str) -> dict[str, Any]:
        nt = agg.names[name]
        c = nt.counts
        return {
            "method": method,
            "path": path,
            "scheduled": c.scheduled,
            "count": c.ok + c.failed,
            "ok": c.ok,
            "failed": c.failed,
            "errors": dict(sorted(c.errors.items())),
            "latency_ms": summary_ms(nt.latency),
            "service_ms": summary_ms(nt.service),
        }

    for spec in profile.requests:
        requests[spec.name] = figures(spec.name, spec.method, spec.path)
    for step in profile.code_steps:  # the steps of flows written in Python: no request of the profile
        requests[step] = figures(step, "", "")
    flows: dict[str, Any] = {}
    for flow in profile.flows:
        nt = agg.names[flow.name]
        c = nt.counts
        flows[flow.name] = {
            "scheduled": c.scheduled,
            "count": c.ok + c.failed,
            "ok": c.ok,
            "failed": c.failed,
            "errors": dict(sorted(c.errors.items())),
            "duration_ms": summary_ms(nt.latency),
            "active_ms": summary_ms(nt.service),
            "steps": list(flow.step_results),
        }
        for step_name in flow.step_results:
            requests[step_name]["flow"] = flow.name
    doc: ResultsDoc = {
        "schema": SCHEMA_VERSION,
        "final": final,
        "name": profile.name,
        "profile": profile.source,
        "target": profile.target,
        "started_at": iso_utc(started_at),
        "duration_s": duration,
        "elapsed_s": round(elapsed_s, 3),
        "agents_expected": agents_expected,
        "totals": {
            "scheduled": t.scheduled,
            "ok": t.ok,
            "failed": t.failed,
            "dropped": t.dropped,
            "dropped_no_data": t.no_data,
            "in_flight_at_end": in_flight_at_end,
            "lost_in_flight": lost_in_flight,
            "unreported_estimate": unreported,
            "planned": None if planned is None else round(planned),
            "unsent": unsent_n,
        },
        "incomplete": incomplete,
        "start_skew_ms": round(max(lates) - min(lates) + 2 * offset_error, 3) if lates else None,
        "errors": dict(sorted(t.errors.items())),
        "connections": connection_totals(agg.agent(a.id) for a in agents),
        # an aborted run's rate is over the time it ran
        "rps": round(completed / aborted_at, 3)
        if aborted is not None and aborted_at > 0
        else (round(completed / duration, 3) if duration > 0 else 0.0),
        "error_rate": (t.failed / completed) if completed else 0.0,
        "latency_ms": summary_ms(agg.latency),
        "service_ms": summary_ms(agg.service),
        "send_lag_ms": lag,
        "requests": requests,
        "intervals": intervals,
        "agents": [
            {
                "id": a.id,
                "host": a.host,
                "pid": a.pid,
                "share": round(a.share, 6),
                "clock_offset_ms": round(a.clock_offset_ms, 3),
                "clock_error_ms": round(a.clock_error_ms, 3),
                "scheduled": agg.agent(a.id).counts.scheduled,
                "ok": agg.agent(a.id).counts.ok,
                "failed": agg.agent(a.id).counts.failed,
                "dropped": agg.agent(a.id).counts.dropped,
                "state": a.state,
                "lost": a.lost,
                "joined_t": round(a.joined_t, 3),
                "lost_t": None if a.lost_t is None else round(a.lost_t, 3),
                "start_late_ms": None if a.start_late_ms is None else round(a.start_late_ms, 3),
                "max_rate": a.max_rate,
                "cpu_mean": round(agg.agent(a.id).cpu_sum / max(1, agg.agent(a.id).intervals), 3),
                "cpu_max": round(agg.agent(a.id).cpu_max, 3),
                "connections_max": agg.agent(a.id).connections_max,
                "connections_opened": agg.agent(a.id).opened,
                "protocol": agg.agent(a.id).protocol,
                "stolen_mean": round(agg.agent(a.id).stolen_sum / max(1, agg.agent(a.id).intervals), 3),
                "stolen_max": round(agg.agent(a.id).stolen_max, 3),
            }
            for a in agents
        ],
        "events": events,
        "generator_saturated": saturated,
        "saturation_cause": saturation_cause(saturated, t.dropped - t.no_data, lag_p99, cpu_max),
        "cost": None,
        "warnings": [render_warning(w) for w in warnings],
        "warning_codes": warnings,
        "aborted": aborted,
        "planned_stop": planned_stop,
        "hours": hours or [],
        "interrupted": interrupted,
    }
    if flows:
        doc["flows"] = flows
    doc["cost"] = cost_summary(profile, doc)
    return doc


def connection_totals(agents: Iterable[AgentTotals]) -> ConnectionFigures:
    """Connections the agents opened, by protocol, their failed attempts by category, and the most HTTP/2
    streams one connection carried at once, over the run."""
    opened = peak = 0
    failed: dict[str, int] = {}
    protocols: dict[str, int] = {}
    for at in agents:
        opened += at.opened
        peak = max(peak, at.peak_streams)
        for k, n in at.open_failed.items():
            failed[k] = failed.get(k, 0) + n
        if at.protocol and at.opened:
            protocols[at.protocol] = protocols.get(at.protocol, 0) + at.opened
    return {
        "opened": opened,
        "failed": dict(sorted(failed.items())),
        "protocols": dict(sorted(protocols.items())),
        "peak_streams": peak,
    }


def judge(doc: ResultsDoc, thresholds: Sequence[str]) -> list[Verdict]:
    """Evaluate ``thresholds`` against the document and store the verdicts in it (``thresholds``, ``passed``).
    An aborted run (a threshold already lost, or the budget spent), or one whose fleet could not carry its
    load, is a failed run whatever else held; a run stopped as its profile asked (``planned_stop``: its
    unique test data ran out with ``on_exhausted = "stop"``) is judged on its thresholds."""
    verdicts = evaluate_all(list(thresholds), doc)
    doc["thresholds"] = cast(list[ThresholdVerdict], verdicts_to_json(verdicts))
    failed_stop = doc.get("aborted") and not doc.get("planned_stop")
    doc["passed"] = all(v.passed for v in verdicts) and not failed_stop and not doc.get("incomplete")
    return verdicts


def render_json(doc: Mapping[str, Any]) -> str:
    """``doc`` as ``json.dump(doc, indent=1)`` writes it (its ``intervals`` a list)."""
    return json.dumps(doc, indent=1)


def _head_and_tail(doc: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """The text of ``doc`` before and after its ``intervals`` array's body (between ``[`` and ``\n ]``)."""
    marker = uuid.uuid4().hex
    text = json.dumps({**doc, "intervals": marker}, indent=1)
    head, tail = text.split(f'"intervals": "{marker}"', 1)
    return (head + '"intervals": [').encode("ascii"), tail.encode("ascii")


def write_json_atomic(path: Path, doc: Mapping[str, Any], spool: IntervalSpool | None = None) -> None:
    """Write ``doc`` so that readers see the old file or the new one, never half of one. When its
    ``intervals`` is a :class:`SpoolMark`, they are copied from ``spool``: the same bytes as ``json.dump`` of
    the document with the list, without holding the list."""
    mark = doc.get("intervals")
    if isinstance(mark, SpoolMark) and spool is None:
        raise TypeError("the results' intervals are in a spool, and none was given")
    with replacing(path) as f:
        if not isinstance(mark, SpoolMark):
            f.write(render_json(doc).encode("ascii"))
        else:
            assert spool is not None
            head, tail = _head_and_tail(doc)
            if mark.count == 0:
                f.write(head[:-1] + b"[]" + tail)
            else:
                f.write(head)
                spool.copy_into(f, mark)
                f.write(b"\n ]" + tail)
        f.write(b"\n")
