"""The coordinator's durable state: everything needed to resume a run after a crash.

A checkpoint is one msgpack document written atomically (``state.msgpack`` in the run's folder) holding the
merged aggregate (counters and encoded histograms), events, agents and their shares, the run's clock (the
wall-clock instant of the aligned start), and how much of the interval spool (``intervals.spool``, see
:mod:`coordinator.spool`) and of the interval log it covers. The closed seconds themselves are not in it, so
its size and the cost of writing it do not grow with the run. Histograms are stored in the standard compressed
encoding. Version 1 checkpoints (which carried the closed seconds as a list) are still read for ``--resume``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack

from coordinator.aggregate import AgentTotals, Counts, RunAggregate, Slot
from loadgen import histogram
from loadgen.atomic import write_bytes
from loadgen.curve import RateCurve
from loadgen.errors import LoadgenError

STATE_FILE = "state.msgpack"
DATA_FILE = "data.msgpack"
"""The profile's test data rows, written once beside the checkpoint (which names the file instead of
holding up to 8 MiB of rows rewritten every 2 s)."""
STATE_VERSION = 2  # 2: the closed seconds are in the spool, the checkpoint holds its mark (1: a list of them)
READABLE_VERSIONS = (1, 2)


def _counts(c: Counts) -> list[Any]:
    return [c.scheduled, c.ok, c.failed, c.dropped, c.errors, c.no_data]


def _counts_back(v: list[Any]) -> Counts:
    errors = {str(k): int(n) for k, n in v[4].items()}
    return Counts(int(v[0]), int(v[1]), int(v[2]), int(v[3]), errors, int(v[5]) if len(v) > 5 else 0)


def _hist(data: bytes) -> Any:
    return histogram.decode(data) or histogram.new_histogram()


def aggregate_state(agg: RunAggregate) -> dict[str, Any]:
    return {
        "names": {
            n: [_counts(t.counts), histogram.encode(t.latency), histogram.encode(t.service)]
            for n, t in agg.names.items()
        },
        "totals": _counts(agg.totals),
        "lag": histogram.encode(agg.lag),
        "latency": histogram.encode(agg.latency),
        "service": histogram.encode(agg.service),
        "agents": {
            a: [
                _counts(t.counts),
                t.last_index,
                t.in_flight,
                t.intervals,
                t.cpu_sum,
                t.cpu_max,
                t.cpu_saturated_s,
                t.first,
                t.contiguous,
                sorted(t.ahead),
                t.connections_max,
                t.stolen_sum,
                t.stolen_max,
                t.opened,
                t.open_failed,
                t.protocol,
                t.peak_streams,
            ]
            for a, t in agg.agents.items()
        },
        "slots": {
            str(i): [
                _counts(s.counts),
                histogram.encode(s.latency),
                {n: histogram.encode(h) for n, h in s.by_name.items()},
                {n: histogram.encode(h) for n, h in s.service_by_name.items()},
            ]
            for i, s in agg.open_slots().items()
        },
        "closed_through": agg.closed_through,
        "late_intervals": agg.late_intervals,
    }


def restore_aggregate(
    d: dict[str, Any], names: list[str], curve: RateCurve, **roles: frozenset[str]
) -> RunAggregate:
    agg = RunAggregate(names, curve, **roles)
    for n, (counts, lat, svc) in d["names"].items():
        t = agg.names[n]
        t.counts = _counts_back(counts)
        t.latency = _hist(lat)
        t.service = _hist(svc)
    agg.totals = _counts_back(d["totals"])
    agg.lag = _hist(d["lag"])
    agg.latency = _hist(d["latency"])
    agg.service = _hist(d["service"])
    for a, v in d["agents"].items():
        agg.agents[a] = AgentTotals(
            counts=_counts_back(v[0]),
            last_index=v[1],
            in_flight=v[2],
            intervals=v[3],
            cpu_sum=v[4],
            cpu_max=v[5],
            cpu_saturated_s=v[6],
            first=v[7],
            contiguous=v[8],
            ahead=set(v[9]),
            connections_max=v[10] if len(v) > 10 else 0,  # checkpoints before it was kept: unknown
            stolen_sum=v[11] if len(v) > 11 else 0.0,
            stolen_max=v[12] if len(v) > 12 else 0.0,
            opened=v[13] if len(v) > 13 else 0,
            open_failed={str(k): int(n) for k, n in v[14].items()} if len(v) > 14 else {},
            protocol=str(v[15]) if len(v) > 15 else "",
            peak_streams=int(v[16]) if len(v) > 16 else 0,
        )
    for i, (counts, lat, by_name, svc_by_name) in d["slots"].items():
        agg.restore_slot(
            Slot(
                int(i),
                _counts_back(counts),
                _hist(lat),
                {n: _hist(h) for n, h in by_name.items()},
                {n: _hist(h) for n, h in svc_by_name.items()},
            )
        )
    agg.closed_through = d["closed_through"]
    agg.late_intervals = d["late_intervals"]
    return agg


def pack_state(state: dict[str, Any]) -> bytes:
    """The checkpoint document (a few hundred KiB whatever the run's length: the series is in the spool)."""
    data: bytes = msgpack.packb({"state_version": STATE_VERSION, **state}, use_bin_type=True)
    return data


def write_state(out: Path, state: dict[str, Any]) -> None:
    write_bytes(out / STATE_FILE, pack_state(state), durable=True)


def write_data(out: Path, data: list[Any]) -> None:
    """The profile's ``[[data]]`` rows (its wire form), once, durably, for :func:`read_state`."""
    out.mkdir(parents=True, exist_ok=True)
    write_bytes(out / DATA_FILE, msgpack.packb(data, use_bin_type=True), durable=True)


def read_state(out: Path) -> dict[str, Any]:
    path = out / STATE_FILE
    try:
        d: dict[str, Any] = msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=False)
    except FileNotFoundError as exc:
        raise LoadgenError(f"{path}: no checkpoint to resume from") from exc
    except Exception as exc:
        raise LoadgenError(f"{path}: unreadable checkpoint ({type(exc).__name__})") from exc
    if d.get("state_version") not in READABLE_VERSIONS:
        raise LoadgenError(f"{path}: checkpoint version {d.get('state_version')!r} is not supported")
    if d.get("data_file"):  # the test data rows, kept apart (write_data)
        data_path = out / DATA_FILE
        try:
            d["profile"]["data"] = msgpack.unpackb(data_path.read_bytes(), raw=False)
        except (OSError, ValueError) as exc:
            raise LoadgenError(f"{data_path}: the run's test data cannot be read ({exc})") from exc
    return d
