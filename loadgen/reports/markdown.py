"""Human summaries of a finished run: Markdown for CI job summaries and PR comments, aligned text for
the terminal. Both are pure functions of the ``results.json`` dict (docs/results-schema.md) and the
threshold verdicts, and show the same content: the sections are built once as plain values
(:class:`Section`) and then rendered by :func:`render_summary_md` or :func:`render_summary_text`.

Missing keys are tolerated (a checkpoint written during a run may lack some), shown as ``-``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from loadgen.reports.tables import (
    NO_DATA,
    format_count,
    format_ms,
    format_pct,
    format_rps,
    render_markdown_table,
    render_table,
)
from loadgen.reports.warnings import warning_lines
from loadgen.thresholds import Verdict, format_value, parse_threshold

REQUEST_STATS = ("min", "mean", "p50", "p90", "p95", "p99", "p99.9", "max")
HOURLY_AFTER_S = 3600.0


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    align: str


@dataclass(frozen=True)
class Section:
    """A heading, lines of prose above an optional table, and notes below it."""

    title: str
    lines: tuple[str, ...] = ()
    table: Table | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Style:
    markdown: bool

    def bold(self, text: str) -> str:
        return f"**{text}**" if self.markdown else text

    def code(self, text: str) -> str:
        return f"`{text}`" if self.markdown else text

    def mark(self, passed: bool) -> str:
        if self.markdown:
            return "✅" if passed else "❌"
        return "pass" if passed else "FAIL"

    def verdict(self, passed: bool) -> str:
        word = "PASS" if passed else "FAIL"
        return f"{self.mark(passed)} {word}" if self.markdown else word

    @property
    def warn(self) -> str:
        return "⚠️" if self.markdown else "!!"


def render_summary_md(results: Mapping[str, Any], verdicts: Sequence[Verdict] | None) -> str:
    """The run summary as GitHub-flavoured Markdown."""
    title, sections = build_sections(results, verdicts, markdown=True)
    out = [f"# {title}"]
    for s in sections:
        if s.title:
            out.append(f"## {s.title}")
        if s.lines:
            out.append("  \n".join(s.lines))
        if s.table is not None:
            out.append(render_markdown_table(s.table.headers, s.table.rows, s.table.align))
        if s.notes:
            out.append("  \n".join(f"_{n}_" for n in s.notes))
    return "\n\n".join(out) + "\n"


def render_summary_text(results: Mapping[str, Any], verdicts: Sequence[Verdict] | None) -> str:
    """The run summary as aligned plain text for a terminal."""
    title, sections = build_sections(results, verdicts, markdown=False)
    out = [f"{title}\n{'=' * len(title)}"]
    for s in sections:
        block = []
        if s.title:
            block.append(f"{s.title}\n{'-' * len(s.title)}")
        block.extend(s.lines)
        if s.table is not None:
            block.append(render_table(s.table.headers, s.table.rows, s.table.align))
        block.extend(s.notes)
        out.append("\n".join(block))
    return "\n\n".join(out) + "\n"


def build_sections(
    results: Mapping[str, Any], verdicts: Sequence[Verdict] | None, *, markdown: bool
) -> tuple[str, list[Section]]:
    """The summary's title and sections, in order, as values (what both renderers draw)."""
    st = _Style(markdown)
    title = f"loadgen: {results.get('name', 'run')}"
    sections = [_overview(results, verdicts, st)]
    warnings = _warnings(results, st)
    if warnings:
        sections.append(Section("Warnings", lines=tuple(warnings)))
    if verdicts is not None:
        sections.append(_thresholds(verdicts, st))
    if results.get("flows"):
        sections.append(_flows(results))
    sections.append(_requests(results))
    sections.append(_errors(results))
    if float(results.get("duration_s") or 0.0) > HOURLY_AFTER_S:
        sections.append(_per_hour(results))
    if results.get("cost"):
        sections.append(_cost(results["cost"]))
    return title, sections


def _cost(cost: Mapping[str, Any]) -> Section:
    rows = tuple((name, f"{value:.6g}") for name, value in sorted(cost.get("by_request", {}).items()))
    lines = [f"total {cost['total']:.6g} · per hour {cost['per_hour']:.6g}"]
    if cost.get("budget") is not None:
        state = "EXCEEDED" if cost.get("budget_exceeded") else "within budget"
        lines.append(f"budget {cost['budget']:.6g}: {state}")
    return Section("Cost", lines=tuple(lines), table=Table(("Request", "Cost"), rows, "lr") if rows else None)


# -- sections -------------------------------------------------------------------------------------------


def _overview(results: Mapping[str, Any], verdicts: Sequence[Verdict] | None, st: _Style) -> Section:
    duration = results.get("duration_s")
    elapsed = results.get("elapsed_s")
    run_time = NO_DATA if duration is None else _duration(float(duration))
    if duration is not None and elapsed is not None and float(elapsed) > float(duration):
        run_time += f" (+{_duration(float(elapsed) - float(duration))} drain)"
    meta = [
        f"target {st.code(str(results.get('target', NO_DATA)))}",
        f"duration {run_time}",
        f"started {results.get('started_at', NO_DATA)}",
        describe_agents(results),
    ]
    if results.get("profile"):
        meta.insert(1, f"profile {st.code(str(results['profile']))}")

    t = results.get("totals") or {}
    completed = int(t.get("ok", 0)) + int(t.get("failed", 0))
    totals = [
        f"scheduled {format_count(t.get('scheduled'))}",
        f"ok {format_count(t.get('ok'))}",
        f"failed {format_count(t.get('failed'))}",
        f"dropped {format_count(t.get('dropped'))}",
        f"in flight at end {format_count(t.get('in_flight_at_end'))}",
        st.bold(f"{format_rps(results.get('rps'))} req/s"),
        st.bold(f"error rate {format_pct(int(t.get('failed', 0)) / completed if completed else None)}"),
    ]
    lines = [" · ".join(meta), " · ".join(totals)]
    lag = results.get("send_lag_ms") or {}
    if lag:
        lines.append(
            f"send lag (generator lateness behind schedule): p99 {format_ms(lag.get('p99'))} ms, "
            f"max {format_ms(lag.get('max'))} ms"
        )
    if verdicts:
        lines.append(st.bold(f"Thresholds: {st.verdict(all(v.passed for v in verdicts))}"))
    return Section("", lines=tuple(lines))


def _taking_part(results: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The agents that ran a share of the load: all that joined, but those that refused the run."""
    return [a for a in results.get("agents") or [] if a.get("state") != "refused"]


def describe_agents(results: Mapping[str, Any]) -> str:
    """``agents 2``, or what differed from the plan: ``agents 2 expected, 3 took part (1 joined late)``."""
    agents = _taking_part(results)
    expected = results.get("agents_expected")
    late = sum(float(a.get("joined_t") or 0.0) > 0 for a in agents)
    lost = sum(a.get("state") == "lost" or bool(a.get("lost")) for a in agents)
    refused = len(results.get("agents") or []) - len(agents)
    counted = ((late, "joined late"), (lost, "lost"), (refused, "refused the run"))
    notes = ", ".join(f"{n} {what}" for n, what in counted if n)
    if (expected is None or int(expected) == len(agents)) and not notes:
        return f"agents {len(agents)}"
    head = f"agents {len(agents)}"
    if expected is not None:
        head = f"agents {expected} expected, {len(agents)} took part"
    return f"{head} ({notes})" if notes else head


def _warnings(results: Mapping[str, Any], st: _Style) -> list[str]:
    out = []
    if results.get("aborted") and results.get("planned_stop"):
        out.append(f"{st.warn} the run stopped early, as its profile asks: {results['aborted']}")
    elif results.get("aborted"):
        out.append(st.bold(f"{st.warn} RUN ABORTED EARLY: {results['aborted']}"))
    if results.get("saturation_cause") == "in_flight_limit":
        out.append(
            st.bold(
                f"{st.warn} IN-FLIGHT LIMIT REACHED: the target answered slower than requests arrived, so "
                "requests in flight reached max_in_flight and later arrivals were not sent (dropped). The "
                "generator kept its schedule: the latencies are true for the requests that were sent, but "
                "the target got less load than the profile asked for."
            )
        )
    elif results.get("generator_saturated"):
        out.append(
            st.bold(
                f"{st.warn} GENERATOR SATURATED: the load generator fell behind its own schedule. "
                "The target got less load than the profile asked for, and latencies include the "
                "generator's lateness (see send lag). Do not trust these numbers as the target's."
            )
        )
    t = results.get("totals") or {}
    parts = [int(t.get(k, 0)) for k in ("ok", "failed", "dropped", "in_flight_at_end")]
    if t and int(t.get("scheduled", 0)) != sum(parts):
        out.append(
            f"{st.warn} counts do not add up: scheduled {format_count(t.get('scheduled'))} "
            f"!= ok + failed + dropped + in flight ({format_count(sum(parts))})"
        )
    in_flight_limit = int(t.get("dropped", 0)) - int(t.get("dropped_no_data", 0))
    if in_flight_limit:
        out.append(
            f"{st.warn} {format_count(in_flight_limit)} requests were dropped (not sent: too many in "
            "flight); they count as neither ok nor failed"
        )
    if int(t.get("in_flight_at_end", 0)):
        out.append(
            f"{st.warn} {format_count(t.get('in_flight_at_end'))} requests were still in flight at the end; "
            "they count as neither ok nor failed"
        )
    took_part, expected = len(_taking_part(results)), results.get("agents_expected")
    if expected is not None and results.get("agents") is not None and took_part < int(expected):
        out.append(f"{st.warn} only {took_part} of {expected} expected agents took part")
    out.extend(f"{st.warn} {w}" for w in warning_lines(results))
    return out


def render_thresholds_text(verdicts: Sequence[Verdict]) -> str:
    """The thresholds section alone, as plain text (a failing test's message)."""
    section = _thresholds(verdicts, _Style(markdown=False))
    block = list(section.lines)
    if section.table is not None:
        block.append(render_table(section.table.headers, section.table.rows, section.table.align))
    return "\n".join(block)


def _thresholds(verdicts: Sequence[Verdict], st: _Style) -> Section:
    if not verdicts:
        return Section("Thresholds", lines=("No thresholds defined.",))
    failed = sum(not v.passed for v in verdicts)
    summary = f"{len(verdicts) - failed} of {len(verdicts)} passed"
    rows = tuple((st.mark(v.passed), v.expr, _observed(v)) for v in verdicts)
    return Section(
        "Thresholds",
        lines=(st.bold(f"Thresholds: {st.verdict(failed == 0)}") + f" ({summary})",),
        table=Table(("", "Threshold", "Observed"), rows, "cll"),
    )


def _requests(results: Mapping[str, Any]) -> Section:
    duration = float(results.get("duration_s") or 0.0)
    headers = ("Name", "Count", "OK", "Failed", "RPS", *(f"{s} ms" for s in REQUEST_STATS))
    rows = []
    for name, req in (results.get("requests") or {}).items():
        rows.append(_request_row(name, req, req, duration))
    totals = results.get("totals") or {}
    if results.get("flows"):  # the totals count flows: the requests' row adds up the requests instead
        requests = (results.get("requests") or {}).values()
        totals = {k: sum(int(r.get(k, 0)) for r in requests) for k in ("count", "ok", "failed")}
    rows.append(_request_row("All", totals, results, duration))
    return Section(
        "Requests",
        table=Table(headers, tuple(rows), "l" + "r" * (len(headers) - 1)),
        notes=("Latency in ms, from the intended send time (includes any generator lateness).",),
    )


FLOW_STATS = ("p50", "p95", "p99")


def _flows(results: Mapping[str, Any]) -> Section:
    """User journeys: each flow as a whole, from its arrival to the end of its last step."""
    duration = float(results.get("duration_s") or 0.0)
    headers = (
        "Flow",
        "Count",
        "OK",
        "Failed",
        "per s",
        *(f"{s} ms" for s in FLOW_STATS),
        *(f"active {s}" for s in FLOW_STATS),
        "Top error",
    )
    rows = []
    for name, flow in (results.get("flows") or {}).items():
        ok, failed = int(flow.get("ok", 0)), int(flow.get("failed", 0))
        whole = flow.get("duration_ms") or {}
        active = flow.get("active_ms") or {}
        errors: Mapping[str, int] = flow.get("errors") or {}
        top = max(errors.items(), key=lambda kv: kv[1], default=None)
        rows.append(
            (
                name,
                format_count(ok + failed),
                format_count(ok),
                format_count(failed),
                format_rps((ok + failed) / duration if duration > 0 else None),
                *(format_ms(whole.get(s)) for s in FLOW_STATS),
                *(format_ms(active.get(s)) for s in FLOW_STATS),
                "" if top is None else f"{top[0]} ({format_count(top[1])})",
            )
        )
    return Section(
        "Flows",
        table=Table(headers, tuple(rows), "l" + "r" * (len(headers) - 2) + "l"),
        notes=(
            "A flow's time runs from its arrival to the end of its last step, pauses included; active: the "
            "same without its pauses. Its steps are under Requests as <flow>.<step>.",
        ),
    )


def _request_row(
    name: str, counts: Mapping[str, Any], source: Mapping[str, Any], duration: float
) -> tuple[str, ...]:
    ok, failed = int(counts.get("ok", 0)), int(counts.get("failed", 0))
    completed = ok + failed
    count = counts.get("count", completed)
    latency = (source.get("latency_ms") or {}) if completed else {}
    rps = completed / duration if duration > 0 else None
    return (
        name,
        format_count(count),
        format_count(ok),
        format_count(failed),
        format_rps(rps),
        *(format_ms(latency.get(s)) for s in REQUEST_STATS),
    )


def _connections_note(results: Mapping[str, Any]) -> tuple[str, ...]:
    """``Connections opened: N (HTTP/2, at most S streams at once on one); failed to open: tls_verify 3``
    (nothing for results written before connections were counted)."""
    conns = results.get("connections")
    if not conns:
        return ()
    failed = ", ".join(f"{k} {format_count(n)}" for k, n in (conns.get("failed") or {}).items())
    protocols = conns.get("protocols") or {}
    spoken = ""
    if "h2" in protocols:
        spoken = " (HTTP/2" if len(protocols) == 1 else f" ({format_count(protocols['h2'])} HTTP/2"
        peak = int(conns.get("peak_streams") or 0)
        spoken += f", at most {format_count(peak)} streams at once on one)" if peak else ")"
    return (
        f"Connections opened: {format_count(conns['opened'])}{spoken}"
        + (f"; failed to open: {failed}" if failed else ""),
    )


def _errors(results: Mapping[str, Any]) -> Section:
    errors: Mapping[str, int] = results.get("errors") or {}
    if not errors:
        return Section("Errors", lines=("No errors.", *_connections_note(results)))
    t = results.get("totals") or {}
    completed = int(t.get("ok", 0)) + int(t.get("failed", 0))
    by_request: dict[str, list[str]] = {}
    for name, req in (results.get("requests") or {}).items():
        for category, n in (req.get("errors") or {}).items():
            by_request.setdefault(category, []).append(f"{name} {format_count(n)}")
    rows = tuple(
        (
            category,
            format_count(n),
            format_pct(n / completed if completed else None),
            ", ".join(by_request.get(category, [])),
        )
        for category, n in sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    table = Table(("Category", "Count", "% of completed", "Requests"), rows, "lrrl")
    return Section("Errors", table=table, notes=_connections_note(results))


def _per_hour(results: Mapping[str, Any]) -> Section:
    if results.get("hours"):
        return _per_hour_exact(results)
    hours: dict[int, list[Mapping[str, Any]]] = {}
    for iv in results.get("intervals") or []:
        hours.setdefault(int(float(iv.get("t", 0)) // 3600), []).append(iv)
    start = _parse_time(results.get("started_at"))
    headers = ["Hour", "Since start"]
    if start is not None:
        headers.append("From (UTC)")
    headers += ["Scheduled", "OK", "Failed", "Success rate", "p99 ms (max of 1 s p99)", "max ms"]
    rows = []
    for hour in sorted(hours):
        ivs = hours[hour]
        end = min((hour + 1) * 3600, max(int(float(iv.get("t", 0))) for iv in ivs) + 1)
        ok = sum(int(iv.get("ok", 0)) for iv in ivs)
        failed = sum(int(iv.get("failed", 0)) for iv in ivs)
        row = [str(hour + 1), f"{_clock(hour * 3600)}–{_clock(end)}"]
        if start is not None:
            row.append((start + timedelta(hours=hour)).strftime("%Y-%m-%d %H:%M"))
        row += [
            format_count(sum(int(iv.get("scheduled", 0)) for iv in ivs)),
            format_count(ok),
            format_count(failed),
            _success(ok, failed),
            format_ms(_max_of(iv.get("p99") for iv in ivs)),
            format_ms(_max_of(iv.get("max") for iv in ivs)),
        ]
        rows.append(tuple(row))
    return Section(
        "Per hour",
        table=Table(tuple(headers), tuple(rows), "l" * (len(headers) - 6) + "r" * 6),
        notes=(
            "Per-second intervals carry only p50, p99 and max, so an hour's exact percentiles cannot be "
            "recovered from them and no hourly p95 is shown. The p99 column is the worst one-second p99 "
            "in the hour: never below the hour's true p99, often above it. max is exact.",
        ),
    )


def _per_hour_exact(results: Mapping[str, Any]) -> Section:
    """From ``results["hours"]``: each hour's merged histogram, so p95 and p99 are exact."""
    start = _parse_time(results.get("started_at"))
    headers = ["Hour"]
    if start is not None:
        headers.append("From (UTC)")
    headers += ["Scheduled", "OK", "Failed", "Success rate", "p95 ms", "p99 ms", "max ms"]
    rows = []
    for h in results["hours"]:
        hour = int(h["hour"])
        row = [str(hour + 1)]
        if start is not None:
            row.append((start + timedelta(hours=hour)).strftime("%Y-%m-%d %H:%M"))
        row += [
            format_count(h.get("scheduled")),
            format_count(h.get("ok")),
            format_count(h.get("failed")),
            _success(int(h.get("ok", 0)), int(h.get("failed", 0))),
            format_ms(h.get("p95")),
            format_ms(h.get("p99")),
            format_ms(h.get("max")),
        ]
        rows.append(tuple(row))
    return Section(
        "Per hour",
        table=Table(tuple(headers), tuple(rows), "l" * (len(headers) - 7) + "r" * 7),
        notes=("Response time from the intended send time; exact, from each hour's merged histogram.",),
    )


# -- formatting -----------------------------------------------------------------------------------------


def _success(ok: int, failed: int) -> str:
    """Success rate that never rounds a failure away (99.999% is '>99.99%', not '100.00%')."""
    if ok + failed == 0:
        return NO_DATA
    text = f"{100 * ok / (ok + failed):.2f}%"
    if failed and text == "100.00%":
        return ">99.99%"
    if ok and text == "0.00%":
        return "<0.01%"
    return text


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:g} s" if seconds == int(seconds) else f"{seconds:.1f} s"
    total = round(seconds)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


def _clock(seconds: int) -> str:
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}" if s == 0 else f"{h}:{m:02d}:{s:02d}"


def _observed(v: Verdict) -> str:
    if v.observed is None:
        return v.detail
    try:
        return format_value(parse_threshold(v.expr).metric, v.observed)
    except ValueError:
        return f"{v.observed:g}"


def _max_of(values: Any) -> float | None:
    present = [float(x) for x in values if x is not None]
    return max(present) if present else None


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
