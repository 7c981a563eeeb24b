"""Turning the merged aggregate into the ``results.json`` document (see docs/results-schema.md)."""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from coordinator.aggregate import SATURATION_LAG_P99_MS, RunAggregate
from coordinator.membership import AGENT_STATES, AgentInfo
from coordinator.saturation import (
    STOLEN_NOTABLE,
    connections_advice,
    dropped_warning,
    generator_behind,
    saturation_cause,
    stolen_warning,
)
from coordinator.spool import IntervalSpool, IntervalTally, SpoolMark
from loadgen.percentiles import summary_ms
from loadgen.profile import Profile

__all__ = ["AGENT_STATES", "SCHEMA_VERSION", "AgentInfo", "build_results", "render_json", "write_json_atomic"]

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
) -> dict[str, Any]:
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
    warnings: list[str] = []
    saturated = False
    lag_p99 = lag.get("p99")
    cpu_max = max((agg.agent(a.id).cpu_max for a in agents), default=0.0)
    if t.dropped:
        saturated = True
        service_p99 = summary_ms(agg.service).get("p99")
        warnings.append(dropped_warning(t.dropped, profile.load.max_in_flight, lag_p99, cpu_max, service_p99))
    if lag_p99 is not None and lag_p99 > SATURATION_LAG_P99_MS:
        saturated = True
        warnings.append(
            f"GENERATOR SATURATED: send lag p99 {lag_p99:.1f} ms exceeds {SATURATION_LAG_P99_MS:g} ms "
            "(the generator sent late; add agents or cores)"
        )
    for a in agents:
        at = agg.agent(a.id)
        if at.cpu_saturated_s >= max(2, at.intervals // 20):
            saturated = True
            warnings.append(
                f"GENERATOR SATURATED: agent {a.id} used a full CPU core for {at.cpu_saturated_s} of "
                f"{at.intervals} s (max {at.cpu_max:.0%}); its timing is not trustworthy, add agents"
            )
    if tally.saturated:
        warnings.append(
            f"the generator was saturated in {tally.saturated} of {tally.count} seconds "
            f"(first at t={tally.first_saturated} s: drops, send lag p99 over 5 ms or an agent at a full "
            "core); figures from those seconds include its own delays"
        )
    if generator_behind(lag_p99, cpu_max) or tally.saturated:  # over the run, or in some of its seconds
        for a in agents:
            at = agg.agent(a.id)
            if at.stolen_max >= STOLEN_NOTABLE:
                warnings.append(stolen_warning(a.id, at.stolen_max, at.stolen_sum / max(1, at.intervals)))
    advice = connections_advice(
        generator_behind(lag_p99, cpu_max),
        max((agg.agent(a.id).connections_max for a in agents), default=0),
        profile.load.max_connections is not None,
    )
    if advice:
        warnings.append(advice)
    if agg.late_intervals:
        warnings.append(f"{agg.late_intervals} agent intervals arrived after their second was closed")
    lost = [a for a in agents if a.lost]
    unreported = round(sum(a.unreported_estimate for a in lost))
    lost_in_flight = sum(max(0, agg.agent(a.id).in_flight) for a in lost)
    unsent_n = round(unsent)
    if lost:
        warnings.append(
            f"agents lost during the run: {', '.join(a.id for a in lost)}; about {unreported} arrivals they "
            f"scheduled after their last report are not in the totals, and {lost_in_flight} requests they "
            "had in flight have no known outcome (counted in in_flight_at_end)"
        )
    if unsent_n:
        warnings.append(
            f"about {unsent_n} arrivals of the profile were never sent: the share of an agent that was lost "
            "or refused the run, from then until the others took it over (or, with no agent left, until the "
            "end); counted in totals.unsent"
        )
    if incomplete:
        warnings.append(f"THE FLEET DID NOT CARRY THE PROFILE'S LOAD: {incomplete}")
    if final and t.ok == 0:
        if t.scheduled == 0:
            warnings.append("NOTHING WAS SENT: no agent scheduled a single request")
        else:
            top = ", ".join(f"{k} {v}" for k, v in sorted(t.errors.items(), key=lambda kv: -kv[1])[:3])
            warnings.append(
                f"NO REQUEST SUCCEEDED: all {completed} completed requests failed"
                + (f" ({top})" if top else "")
            )
    for e in events:
        if e.get("type") == "agent_totals_mismatch":
            warnings.append(
                f"agent {e['agent']}'s own totals {e['reported']} differ from what was merged from its "
                f"intervals {e['merged']}: some of its reports were lost"
            )
    lates = [a.start_late_ms for a in agents if a.start_late_ms is not None and a.joined_t == 0.0]
    offset_error = max([a.clock_error_ms for a in agents] or [0.0])
    requests: dict[str, Any] = {}
    for spec in profile.requests:
        nt = agg.names[spec.name]
        c = nt.counts
        requests[spec.name] = {
            "method": spec.method,
            "path": spec.path,
            "scheduled": c.scheduled,
            "count": c.ok + c.failed,
            "ok": c.ok,
            "failed": c.failed,
            "errors": dict(sorted(c.errors.items())),
            "latency_ms": summary_ms(nt.latency),
            "service_ms": summary_ms(nt.service),
        }
    return {
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
            "in_flight_at_end": in_flight_at_end,
            "lost_in_flight": lost_in_flight,
            "unreported_estimate": unreported,
            "planned": None if planned is None else round(planned),
            "unsent": unsent_n,
        },
        "incomplete": incomplete,
        "start_skew_ms": round(max(lates) - min(lates) + 2 * offset_error, 3) if lates else None,
        "errors": dict(sorted(t.errors.items())),
        "rps": round(completed / duration, 3) if duration > 0 else 0.0,
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
                "stolen_mean": round(agg.agent(a.id).stolen_sum / max(1, agg.agent(a.id).intervals), 3),
                "stolen_max": round(agg.agent(a.id).stolen_max, 3),
            }
            for a in agents
        ],
        "events": events,
        "generator_saturated": saturated,
        "saturation_cause": saturation_cause(saturated, t.dropped, lag_p99, cpu_max),
        "cost": None,
        "warnings": warnings,
    }


def render_json(doc: dict[str, Any]) -> str:
    """``doc`` as ``json.dump(doc, indent=1)`` writes it (its ``intervals`` a list)."""
    return json.dumps(doc, indent=1)


def _head_and_tail(doc: dict[str, Any]) -> tuple[bytes, bytes]:
    """The text of ``doc`` before and after its ``intervals`` array's body (between ``[`` and ``\n ]``)."""
    marker = uuid.uuid4().hex
    text = json.dumps({**doc, "intervals": marker}, indent=1)
    head, tail = text.split(f'"intervals": "{marker}"', 1)
    return (head + '"intervals": [').encode("ascii"), tail.encode("ascii")


def write_json_atomic(path: Path, doc: dict[str, Any], spool: IntervalSpool | None = None) -> None:
    """Write ``doc`` so that readers see the old file or the new one, never half of one. When its
    ``intervals`` is a :class:`SpoolMark`, they are copied from ``spool``: the same bytes as ``json.dump`` of
    the document with the list, without holding the list."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            mark = doc.get("intervals")
            if not isinstance(mark, SpoolMark):
                f.write(render_json(doc).encode("ascii"))
            elif spool is None:
                raise TypeError("the results' intervals are in a spool, and none was given")
            else:
                head, tail = _head_and_tail(doc)
                if mark.count == 0:
                    f.write(head[:-1] + b"[]" + tail)
                else:
                    f.write(head)
                    spool.copy_into(f, mark)
                    f.write(b"\n ]" + tail)
            f.write(b"\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
