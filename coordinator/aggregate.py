"""Merging what agents send into the run's numbers, exactly.

Each agent's 1-second :class:`~loadgen.wire.Interval` carries counters and encoded HDR histograms per request
name. The aggregate adds the counters and the histograms (HDR addition is exact) into run totals per name, and
into a per-second slot that is *closed* once every agent has reported past it (or it is too old to wait for);
a closed second becomes one entry of ``intervals`` and one histogram for the interval log. Data that arrives
for an already-closed second still counts in every total; only that second's summary misses it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from loadgen import histogram
from loadgen.curve import RateCurve
from loadgen.errors import WireError
from loadgen.histogram import new_histogram
from loadgen.percentiles import percentiles_ms
from loadgen.profile import Profile
from loadgen.wire import Interval


@dataclass
class Counts:
    scheduled: int = 0
    ok: int = 0
    failed: int = 0
    dropped: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    no_data: int = 0  # of the dropped: arrivals that found no row of a unique [[data]] source

    def add_errors(self, errors: dict[str, int]) -> None:
        for k, v in errors.items():
            self.errors[k] = self.errors.get(k, 0) + v


@dataclass
class NameTotals:
    counts: Counts = field(default_factory=Counts)
    latency: HdrHistogram = field(default_factory=new_histogram)
    service: HdrHistogram = field(default_factory=new_histogram)


@dataclass
class Slot:
    """One second of the run, across agents, until it is closed."""

    index: int
    counts: Counts = field(default_factory=Counts)
    latency: HdrHistogram = field(default_factory=new_histogram)
    by_name: dict[str, HdrHistogram] = field(default_factory=dict)  # response time per request name
    service_by_name: dict[str, HdrHistogram] = field(default_factory=dict)
    lag: HdrHistogram = field(default_factory=new_histogram)
    cpu_max: float = 0.0
    connections: int = 0  # the agents' open connections, summed
    stolen_max: float = 0.0  # the most any agent's host lost to its hypervisor (agents.steal)


def _into(hists: dict[str, HdrHistogram], name: str) -> HdrHistogram:
    h = hists.get(name)
    if h is None:
        h = hists[name] = new_histogram()
    return h


@dataclass
class ClosedInterval:
    index: int
    summary: dict[str, Any]
    latency: HdrHistogram
    by_name: dict[str, HdrHistogram]
    service_by_name: dict[str, HdrHistogram]


CPU_SATURATED = 0.95  # share of one core at which an agent process cannot be trusted to keep time
PROTOCOLS = frozenset({"", "http/1.1", "h2"})  # what an interval may say its engine speaks
SATURATION_LAG_P99_MS = 5.0  # send lag beyond which the generator is behind its own schedule


@dataclass
class AgentTotals:
    counts: Counts = field(default_factory=Counts)
    last_index: int = -1
    in_flight: int = 0
    intervals: int = 0
    cpu_sum: float = 0.0
    cpu_max: float = 0.0
    cpu_saturated_s: int = 0  # seconds spent at or above CPU_SATURATED
    connections_max: int = 0  # the most connections its engine had open at the end of a second
    stolen_sum: float = 0.0  # shares of its host's CPU time stolen by the hypervisor, summed over seconds
    stolen_max: float = 0.0
    opened: int = 0  # connections its engine opened (over TLS: handshakes done)
    open_failed: dict[str, int] = field(default_factory=dict)  # its failed attempts to open one, by category
    protocol: str = ""  # what its engine speaks ("http/1.1", "h2"; "" not told)
    peak_streams: int = 0  # HTTP/2: the most streams open at once on one of its connections
    first: int = 0
    contiguous: int = -1  # every interval from `first` through this index is merged
    ahead: set[int] = field(default_factory=set)  # merged indices beyond `contiguous`

    def seen(self, index: int) -> bool:
        return index <= self.contiguous or index in self.ahead

    def mark(self, first: int, index: int) -> None:
        if self.contiguous < first - 1:
            self.first = first
            self.contiguous = first - 1
        self.ahead.add(index)
        while self.contiguous + 1 in self.ahead:
            self.contiguous += 1
            self.ahead.discard(self.contiguous)


def _check_name_entry(
    name: object, entry: object, peer: str
) -> tuple[str, int, int, int, dict[str, int], bytes, bytes]:
    if not isinstance(name, str) or not isinstance(entry, list) or len(entry) != 6:
        raise WireError("interval: bad entry in names", peer)
    scheduled, ok, failed, errors, lat, svc = entry
    for v in (scheduled, ok, failed):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise WireError(f"interval: bad counter for {name!r}", peer)
    if not isinstance(errors, dict) or not all(
        isinstance(k, str) and isinstance(c, int) and not isinstance(c, bool) and c >= 0
        for k, c in errors.items()
    ):
        raise WireError(f"interval: bad errors for {name!r}", peer)
    if not isinstance(lat, bytes) or not isinstance(svc, bytes):
        raise WireError(f"interval: bad histogram for {name!r}", peer)
    return name, scheduled, ok, failed, errors, lat, svc


def roles(profile: Profile) -> dict[str, frozenset[str]]:
    """The names' roles for :class:`RunAggregate`: which are flows' steps and which are flows."""
    return {"steps": profile.step_names, "flows": frozenset(f.name for f in profile.flows)}


class RunAggregate:
    """The run's numbers. With user journeys (:mod:`loadgen.flows`) the names have roles: a flow's
    ``steps`` count only under their own names (the arrival was the flow's), and ``flows`` stay out of the
    run's latency (a flow's time is its journey's, pauses included, not a request's). So the run's totals
    count arrivals (plain requests and flows) and its latency is the requests' (plain ones and steps)."""

    def __init__(
        self,
        names: Iterable[str],
        curve: RateCurve,
        *,
        steps: Iterable[str] = (),
        flows: Iterable[str] = (),
    ) -> None:
        self.curve = curve
        self.names: dict[str, NameTotals] = {n: NameTotals() for n in names}
        self.steps = frozenset(steps)
        self.flows = frozenset(flows)
        self.totals = Counts()
        self.lag = new_histogram()
        self.service = new_histogram()
        self.latency = new_histogram()
        self.agents: dict[str, AgentTotals] = {}
        self._slots: dict[int, Slot] = {}
        self.closed_through = -1  # every slot <= this index is closed
        self._merger = histogram.Merger()
        self.late_intervals = 0

    def open_slots(self) -> dict[int, Slot]:
        return dict(self._slots)

    def restore_slot(self, slot: Slot) -> None:
        self._slots[slot.index] = slot

    def agent(self, agent_id: str) -> AgentTotals:
        at = self.agents.get(agent_id)
        if at is None:
            at = self.agents[agent_id] = AgentTotals()
        return at

    def add(self, agent_id: str, iv: Interval) -> bool:
        """Merge one interval; False if it was merged before (an agent re-sending after a coordinator
        restart). Validates the content first: a bad message changes nothing."""
        if (
            iv.index < iv.first
            or iv.first < 0
            or min(iv.scheduled, iv.dropped, iv.in_flight, iv.connections, iv.opened, iv.no_data) < 0
            or iv.no_data > iv.dropped
            or not 0.0 <= iv.cpu < 1e3
            or not 0.0 <= iv.stolen <= 1.0
        ):
            raise WireError("interval: negative index or counter, or a share out of range", agent_id)
        if not all(
            isinstance(k, str) and isinstance(n, int) and not isinstance(n, bool) and n >= 0
            for k, n in iv.open_failed.items()
        ):
            raise WireError("interval: bad open_failed", agent_id)
        if iv.protocol not in PROTOCOLS or iv.peak_streams < 0:
            raise WireError("interval: unknown protocol or negative peak_streams", agent_id)
        entries = [_check_name_entry(n, e, agent_id) for n, e in iv.names.items()]
        unknown = [e[0] for e in entries if e[0] not in self.names]
        if unknown:
            raise WireError(f"interval: unknown request names {unknown}", agent_id)
        at = self.agent(agent_id)
        if at.seen(iv.index):
            return False
        merger = self._merger
        merger.clear()
        try:
            staged = [(e, merger.stage(e[5]), merger.stage(e[6])) for e in entries]
            lag = merger.stage(iv.lag)
        except histogram.EncodedHistogramError as exc:
            merger.clear()
            raise WireError(f"interval: {exc}", agent_id) from exc
        at.mark(iv.first, iv.index)

        slot = self._slots.get(iv.index)
        if slot is None and iv.index > self.closed_through:
            slot = self._slots[iv.index] = Slot(iv.index)
        if slot is None:
            self.late_intervals += 1
        at.last_index = max(at.last_index, iv.index)
        at.in_flight = iv.in_flight
        at.intervals += 1
        at.cpu_sum += iv.cpu
        at.cpu_max = max(at.cpu_max, iv.cpu)
        at.connections_max = max(at.connections_max, iv.connections)
        at.stolen_sum += iv.stolen
        at.stolen_max = max(at.stolen_max, iv.stolen)
        at.opened += iv.opened
        for k, n in iv.open_failed.items():
            at.open_failed[k] = at.open_failed.get(k, 0) + n
        at.protocol = iv.protocol or at.protocol
        at.peak_streams = max(at.peak_streams, iv.peak_streams)
        if iv.cpu >= CPU_SATURATED:
            at.cpu_saturated_s += 1
        if lag >= 0:
            merger.commit(lag, self.lag if slot is None else slot.lag)
        if slot is not None:
            slot.cpu_max = max(slot.cpu_max, iv.cpu)
            slot.connections += iv.connections
            slot.stolen_max = max(slot.stolen_max, iv.stolen)
        ok = failed = 0
        errors: dict[str, int] = {}
        names = self.names
        steps, flows = self.steps, self.flows
        for (name, n_scheduled, n_ok, n_failed, n_errors, _, _), lat, svc in staged:
            nt = names[name]
            c = nt.counts
            c.scheduled += n_scheduled
            c.ok += n_ok
            c.failed += n_failed
            if n_errors:
                c.add_errors(n_errors)
            if name not in steps:
                ok += n_ok
                failed += n_failed
                for k, v in n_errors.items():
                    errors[k] = errors.get(k, 0) + v
            if slot is None:  # a late second: straight into the totals
                run = name not in flows
                if lat >= 0:
                    merger.commit(lat, nt.latency)
                    if run:
                        merger.commit(lat, self.latency)
                if svc >= 0:
                    merger.commit(svc, nt.service)
                    if run:
                        merger.commit(svc, self.service)
                continue
            # Per second and name only: the run totals are folded in once, when the second closes, so the
            # cost per agent message is two decodes and two adds per name whatever the fleet's size.
            if lat >= 0:
                merger.commit(lat, _into(slot.by_name, name))
            if svc >= 0:
                merger.commit(svc, _into(slot.service_by_name, name))
        merger.clear()
        for counts in (self.totals, at.counts, *(() if slot is None else (slot.counts,))):
            counts.scheduled += iv.scheduled
            counts.dropped += iv.dropped
            counts.no_data += iv.no_data
            counts.ok += ok
            counts.failed += failed
            if errors:
                counts.add_errors(errors)
        return True

    def close(self, active: Iterable[str], now_index: int, grace: int = 3) -> list[ClosedInterval]:
        """Close every slot that all ``active`` agents have reported past, or that is more than ``grace``
        seconds older than ``now_index``. Returns the closed seconds in order."""
        reported = [self.agent(a).last_index for a in active]
        through = min(reported) if reported else now_index
        through = max(through, now_index - grace)
        out = []
        for index in range(self.closed_through + 1, through + 1):
            slot = self._slots.pop(index, None) or Slot(index)
            out.append(self._summarize(slot))
        self.closed_through = max(self.closed_through, through)
        return out

    def close_all(self) -> list[ClosedInterval]:
        last = max([self.closed_through, *self._slots])
        return self.close((), last, grace=0)

    def _fold(self, name: str, lat: HdrHistogram | None, svc: HdrHistogram | None) -> None:
        nt = self.names[name]
        run = name not in self.flows
        if lat is not None:
            nt.latency.add(lat)
            if run:
                self.latency.add(lat)
        if svc is not None:
            nt.service.add(svc)
            if run:
                self.service.add(svc)

    def _summarize(self, slot: Slot) -> ClosedInterval:
        flows = self.flows
        for name, lat in slot.by_name.items():
            self._fold(name, lat, None)
            if name not in flows:
                slot.latency.add(lat)
        service = new_histogram()
        for name, svc in slot.service_by_name.items():
            self._fold(name, None, svc)
            if name not in flows:
                service.add(svc)
        self.lag.add(slot.lag)
        h = slot.latency
        has = h.get_total_count() > 0
        p50, p99 = percentiles_ms(h, 50.0, 99.0)
        service_p50, service_p99 = percentiles_ms(service, 50.0, 99.0)
        c = slot.counts
        summary: dict[str, Any] = {
            "t": slot.index,
            "target_rate": round(self.curve.between(slot.index, slot.index + 1), 3),
            "scheduled": c.scheduled,
            "ok": c.ok,
            "failed": c.failed,
            "dropped": c.dropped,
            "errors": dict(c.errors),
            "p50": p50,
            "p99": p99,
            "max": h.get_max_value() / 1000.0 if has else None,
            "service_p50": service_p50,
            "service_p99": service_p99,
            "send_lag_p99": percentiles_ms(slot.lag, 99.0)[0],
            "cpu_max": round(slot.cpu_max, 3),
            "connections": slot.connections,
            "stolen": round(slot.stolen_max, 3),
        }
        summary["saturated"] = bool(
            c.dropped > c.no_data  # arrivals without test data are not the generator's fault
            or (summary["send_lag_p99"] or 0.0) > SATURATION_LAG_P99_MS
            or slot.cpu_max >= CPU_SATURATED
        )
        return ClosedInterval(slot.index, summary, h, slot.by_name, slot.service_by_name)
