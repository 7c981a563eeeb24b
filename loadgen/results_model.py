"""The shape of ``results.json``, typed: what :func:`coordinator.results.build_results` makes (its one
author) and what the reports, ``compare`` and library callers read. docs/results-schema.md says what each
field means; this module says what each field is.

The document stays a plain mapping (it is written as JSON and read back from files of older versions), so the
types are :class:`~typing.TypedDict`: checked where the document is built, free where it is read.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

Summary = dict[str, float | None]
"""Latency figures in milliseconds: ``min``, ``mean``, ``p50`` ... ``p99.99``, ``max`` (None when empty)."""

CodedWarning = dict[str, Any]
"""``{"code": CODE, **figures}``; its words: :func:`loadgen.reports.warnings.render`."""


class Totals(TypedDict):
    scheduled: int
    ok: int
    failed: int
    dropped: int
    dropped_no_data: int  # of the dropped: no row of a unique [[data]] source was left for them
    in_flight_at_end: int
    lost_in_flight: int
    unreported_estimate: int
    planned: int | None
    unsent: int


class RequestFigures(TypedDict):
    method: str
    path: str
    scheduled: int
    count: int
    ok: int
    failed: int
    errors: dict[str, int]
    latency_ms: Summary
    service_ms: Summary
    flow: NotRequired[str]  # the flow this request is a step of


class FlowFigures(TypedDict):
    """A user journey's figures: arrivals and outcomes as a request's; ``duration_ms`` from the arrival to
    the end of its last step (pauses included), ``active_ms`` the same without its pauses."""

    scheduled: int
    count: int
    ok: int
    failed: int
    errors: dict[str, int]
    duration_ms: Summary
    active_ms: Summary
    steps: list[str]


class AgentFigures(TypedDict):
    id: str
    host: str
    pid: int
    share: float
    clock_offset_ms: float
    clock_error_ms: float
    scheduled: int
    ok: int
    failed: int
    dropped: int
    state: str
    lost: bool
    joined_t: float
    lost_t: float | None
    start_late_ms: float | None
    max_rate: float
    cpu_mean: float
    cpu_max: float
    connections_max: int
    connections_opened: NotRequired[int]
    protocol: NotRequired[str]  # what its engine spoke: "http/1.1" or "h2" ("" if it never said)
    stolen_mean: float
    stolen_max: float


class ConnectionFigures(TypedDict):
    opened: int  # connections the agents opened (over TLS: handshakes that completed)
    failed: dict[str, int]  # attempts to open one that failed, by error category (tls_verify, dns, ...)
    protocols: NotRequired[dict[str, int]]  # connections opened by protocol ("http/1.1", "h2")
    peak_streams: NotRequired[int]  # HTTP/2: the most streams open at once on one connection (0: HTTP/1.1)


class ThresholdVerdict(TypedDict):
    expr: str
    passed: bool
    observed: Any
    detail: str


class ResultsDoc(TypedDict):
    schema: int
    final: bool
    name: str
    profile: str
    target: str
    started_at: str
    duration_s: float
    elapsed_s: float
    agents_expected: int
    totals: Totals
    incomplete: str | None
    start_skew_ms: float | None
    errors: dict[str, int]
    connections: NotRequired[ConnectionFigures]  # results written before it was kept have none
    rps: float
    error_rate: float
    latency_ms: Summary
    service_ms: Summary
    send_lag_ms: Summary
    requests: dict[str, RequestFigures]
    flows: NotRequired[dict[str, FlowFigures]]  # only when the profile has [[flows]]
    intervals: Any  # the per-second summaries: a list, or while being written the spool's mark
    agents: list[AgentFigures]
    events: list[dict[str, Any]]
    generator_saturated: bool
    saturation_cause: str | None
    cost: dict[str, Any] | None
    warnings: list[str]
    warning_codes: list[CodedWarning]
    aborted: str | None
    planned_stop: NotRequired[bool]  # stopped as the profile asked: its unique test data ran out
    hours: list[dict[str, Any]]
    interrupted: bool
    thresholds: NotRequired[list[ThresholdVerdict]]  # judged by the coordinator before the final write
    passed: NotRequired[bool]
