"""A run's results as typed values, for code that asserts on them (the library and its pytest plugin).

:class:`Results` wraps the results document the coordinator wrote (``results.json``; ``Results.doc`` is it,
unchanged) and adds what only the run's own process still has: the merged histograms, so that any percentile
can be read off them (``results.latency.percentile(99.97)``), and every second's histograms, so that a
window of the run has exact percentiles too (``results.window("20s", "30s").latency.p99``).

Latencies here are in **seconds** (``results.latency.p99 < 0.5``), as Python's own clocks count; the
document keeps its milliseconds. A figure of a histogram with no sample is ``nan``: every comparison with it
is false, so an assertion about a request that never completed fails instead of passing by accident.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from loadgen.durations import parse_duration
from loadgen.percentiles import mean_value, values_at_percentiles
from loadgen.results_model import ResultsDoc
from loadgen.seconds_store import Merged, SecondsStore

_US = 1_000_000.0


def _ms(value: Any) -> float:
    return math.nan if value is None else float(value) / 1000.0


def _fmt(seconds: float) -> str:
    if math.isnan(seconds):
        return "nan"
    return f"{seconds * 1000:.3g}ms" if seconds < 1 else f"{seconds:.3g}s"


@dataclass(frozen=True)
class Percentiles:
    """Latency figures in seconds: ``count``, ``min``, ``mean``, ``p50`` ... ``p999``, ``max``; and any other
    percentile from the merged histogram with :meth:`percentile`."""

    count: int
    min: float
    mean: float
    p50: float
    p90: float
    p95: float
    p99: float
    p999: float
    max: float
    histogram: HdrHistogram | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, h: HdrHistogram) -> Percentiles:
        """The figures of a histogram of microseconds (loadgen's unit)."""
        n = h.get_total_count()
        if not n:
            nan = math.nan
            return cls(0, nan, nan, nan, nan, nan, nan, nan, nan, histogram=h)
        v = values_at_percentiles(h, (50.0, 90.0, 95.0, 99.0, 99.9))
        return cls(
            n,
            h.get_min_value() / _US,
            mean_value(h) / _US,
            v[50.0] / _US,
            v[90.0] / _US,
            v[95.0] / _US,
            v[99.0] / _US,
            v[99.9] / _US,
            h.get_max_value() / _US,
            histogram=h,
        )

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any], count: int) -> Percentiles:
        """The figures of a ``results.json`` summary (in ms); :meth:`percentile` then knows only them."""
        p = {k: _ms(summary.get(k)) for k in ("min", "mean", "p50", "p90", "p95", "p99", "p99.9", "max")}
        return cls(count, p["min"], p["mean"], p["p50"], p["p90"], p["p95"], p["p99"], p["p99.9"], p["max"])

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile (0 < p <= 100) in seconds, exactly as the merged histogram gives it."""
        if not 0 < p <= 100:
            raise ValueError(f"a percentile is > 0 and <= 100, got {p}")
        if self.histogram is None:
            known = {50.0: self.p50, 90.0: self.p90, 95.0: self.p95, 99.0: self.p99, 99.9: self.p999}
            if p in known:
                return known[p]
            raise ValueError(
                "these figures were read from a file without its histogram; only p50 ... p999 are known"
            )
        if not self.count:
            return math.nan
        return values_at_percentiles(self.histogram, (p,))[p] / _US

    def __repr__(self) -> str:
        figures = ", ".join(
            f"{k}={_fmt(getattr(self, k))}" for k in ("p50", "p90", "p95", "p99", "p999", "max")
        )
        return f"Percentiles(count={self.count}, {figures})"


@dataclass(frozen=True)
class Totals:
    """Every scheduled arrival, accounted for: ``scheduled == ok + failed + dropped + in_flight_at_end``."""

    scheduled: int
    ok: int
    failed: int
    dropped: int
    in_flight_at_end: int
    planned: int | None
    unsent: int

    @property
    def completed(self) -> int:
        return self.ok + self.failed


@dataclass(frozen=True)
class RequestResults:
    """One request name's figures over the whole run."""

    name: str
    method: str
    path: str
    scheduled: int
    ok: int
    failed: int
    errors: dict[str, int]
    latency: Percentiles
    service: Percentiles


@dataclass(frozen=True)
class Window:
    """A stretch of the run (whole seconds): its counts and exact percentiles, overall and per request."""

    start: float
    end: float
    seconds: int
    scheduled: int
    ok: int
    failed: int
    dropped: int
    errors: dict[str, int]
    latency: Percentiles
    service: Percentiles
    requests: dict[str, Percentiles]  # response time per request name

    @classmethod
    def of(cls, start: float, end: float, m: Merged) -> Window:
        return cls(
            start,
            end,
            m.seconds,
            m.scheduled,
            m.ok,
            m.failed,
            m.dropped,
            m.errors,
            Percentiles.of(m.latency),
            Percentiles.of(m.service),
            {name: Percentiles.of(h) for name, h in sorted(m.latency_by_name.items())},
        )

    @property
    def error_rate(self) -> float:
        done = self.ok + self.failed
        return self.failed / done if done else 0.0

    @property
    def rps(self) -> float:
        """Completed requests per second over the window."""
        return (self.ok + self.failed) / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class ThresholdResult:
    expr: str
    passed: bool
    observed: Any
    detail: str


@dataclass(frozen=True)
class Event:
    """Something that happened during the run, at ``t`` seconds after the start (``results.json`` events)."""

    t: float
    type: str
    fields: dict[str, Any]


def seconds_of(value: str | float) -> float:
    """A point of the run: ``"1m30s"`` or a number of seconds."""
    return parse_duration(value)


class Results:
    """What a run measured; ``doc`` is the results document itself (what ``results.json`` holds)."""

    def __init__(
        self,
        doc: ResultsDoc,
        *,
        latency: HdrHistogram | None = None,
        service: HdrHistogram | None = None,
        latency_by_name: Mapping[str, HdrHistogram] | None = None,
        service_by_name: Mapping[str, HdrHistogram] | None = None,
        store: SecondsStore | None = None,
        out: Path | None = None,
    ) -> None:
        self.doc = doc
        self.out = out
        self._store = store
        t = doc["totals"]
        self.totals = Totals(
            t["scheduled"],
            t["ok"],
            t["failed"],
            t["dropped"],
            t.get("in_flight_at_end", 0),
            t.get("planned"),
            t.get("unsent", 0),
        )  # older files lack the last three
        done = t["ok"] + t["failed"]
        self.latency = (
            Percentiles.of(latency)
            if latency is not None
            else Percentiles.from_summary(doc["latency_ms"], done)
        )
        self.service = (
            Percentiles.of(service)
            if service is not None
            else Percentiles.from_summary(doc.get("service_ms", {}), done)
        )
        lat, svc = latency_by_name or {}, service_by_name or {}
        self.requests = {
            name: RequestResults(
                name,
                r["method"],
                r["path"],
                r.get("scheduled", r["count"]),
                r["ok"],
                r["failed"],
                dict(r["errors"]),
                Percentiles.of(lat[name])
                if name in lat
                else Percentiles.from_summary(r["latency_ms"], r["count"]),
                Percentiles.of(svc[name])
                if name in svc
                else Percentiles.from_summary(r.get("service_ms", {}), r["count"]),
            )
            for name, r in doc["requests"].items()
        }
        self.thresholds = [
            ThresholdResult(v["expr"], bool(v["passed"]), v.get("observed"), str(v.get("detail", "")))
            for v in doc.get("thresholds", [])
        ]
        self.events = [
            Event(float(e["t"]), str(e["type"]), {k: v for k, v in e.items() if k not in ("t", "type")})
            for e in doc.get("events", [])
        ]

    @classmethod
    def read(cls, folder: str | Path) -> Results:
        """The results a run wrote to ``folder`` (its ``out``): the document, and the response-time
        histograms from its ``latency.hlog`` when it has one, so that any percentile of the response time
        can still be read (service time keeps the document's percentiles; :meth:`window` needs the run's
        own process). Raises :class:`~loadgen.errors.LoadgenError` for a folder without readable results."""
        from loadgen.reports.files import read_hlog_if_any, read_results
        from loadgen.reports.hlog import sanitize_tag

        path = Path(folder)
        doc = read_results(path)
        hlog, _ = read_hlog_if_any(path / "latency.hlog")
        if hlog is None:
            return cls(doc, out=path)  # type: ignore[arg-type]
        by_name = {name: hlog.merged(sanitize_tag(name)) for name in doc["requests"]}
        return cls(
            doc,  # type: ignore[arg-type]
            latency=hlog.merged(None),
            latency_by_name={name: h for name, h in by_name.items() if h is not None},
            out=path,
        )

    # --- the document's own figures ----------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.doc["name"]

    @property
    def passed(self) -> bool:
        """Every threshold passed, and the run was neither stopped early nor short of agents."""
        return bool(self.doc.get("passed", True))

    @property
    def failed_thresholds(self) -> list[ThresholdResult]:
        return [t for t in self.thresholds if not t.passed]

    @property
    def rps(self) -> float:
        return self.doc["rps"]

    @property
    def error_rate(self) -> float:
        return self.doc["error_rate"]

    @property
    def errors(self) -> dict[str, int]:
        return dict(self.doc["errors"])

    @property
    def connections_opened(self) -> int | None:
        """Connections the agents opened (over TLS: handshakes that completed); None in results written
        before it was counted."""
        conns = self.doc.get("connections")
        return None if conns is None else int(conns["opened"])

    @property
    def connections_failed(self) -> dict[str, int]:
        """Attempts to open a connection that failed, by category (``tls_verify``, ``dns``, ...)."""
        conns = self.doc.get("connections")
        return {} if conns is None else dict(conns["failed"])

    @property
    def generator_saturated(self) -> bool:
        """The generator could not keep to its schedule somewhere: see :attr:`saturation_cause`."""
        return self.doc["generator_saturated"]

    @property
    def saturation_cause(self) -> str | None:
        return self.doc.get("saturation_cause")

    @property
    def warnings(self) -> list[str]:
        return list(self.doc["warnings"])

    @property
    def aborted(self) -> str | None:
        return self.doc.get("aborted")

    @property
    def seconds(self) -> list[dict[str, Any]]:
        """The per-second series: one summary per second of the run (``results.json``'s ``intervals``;
        latencies there in milliseconds)."""
        intervals = self.doc["intervals"]
        return list(intervals) if isinstance(intervals, list) else []

    def events_of(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.type == kind]

    # --- what only the run's process can answer -------------------------------------------------------

    def window(self, start: str | float, end: str | float | None = None) -> Window:
        """Counts and exact percentiles over the run's seconds from ``start`` up to ``end`` (``"20s"``,
        ``"1m"`` or numbers of seconds; ``end`` defaults to the end of the run)."""
        if self._store is None:
            raise ValueError("this result has no per-second histograms (it was read from a file)")
        lo = seconds_of(start)
        hi = math.inf if end is None else seconds_of(end)
        if hi <= lo:
            raise ValueError(f"the window's end ({end}) must come after its start ({start})")
        return Window.of(lo, hi, self._store.merged(lo, hi))

    def threshold_table(self) -> str:
        """The thresholds and their verdicts as a plain-text table (what a failing test shows)."""
        from loadgen.reports.markdown import render_thresholds_text
        from loadgen.thresholds import Verdict

        return render_thresholds_text(
            [Verdict(t.expr, t.passed, t.observed, t.detail) for t in self.thresholds]
        )

    def summary(self) -> str:
        """The run's summary as ``loadgen run`` prints it."""
        from loadgen.reports.files import verdicts_from
        from loadgen.reports.markdown import render_summary_text

        return render_summary_text(self.doc, verdicts_from(self.doc))

    def __repr__(self) -> str:
        t = self.totals
        return (
            f"Results({self.name!r}, passed={self.passed}, scheduled={t.scheduled}, ok={t.ok}, "
            f"failed={t.failed}, dropped={t.dropped}, latency={self.latency!r})"
        )
