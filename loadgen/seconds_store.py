"""Every closed second of a run, kept for questions asked later: "the p99 between 20 s and 30 s".

The coordinator merges each second's histograms and then lets them go (the run's totals keep only the
whole-run sums). The library's live handle and its results answer percentiles over any window of seconds
exactly, so this store keeps each second's summary and its histograms per request name (response time and
service time) in their compact encoded form, in a temporary file: memory stays flat through an eight-hour
run (an index of a few numbers per second), and a window is merged back from the file on demand.

It is filled from the coordinator's thread and read from the caller's; a lock keeps the two apart.
"""

from __future__ import annotations

import tempfile
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import msgpack
from hdrh.histogram import HdrHistogram

from loadgen import histogram
from loadgen.histogram import new_histogram


@dataclass
class SecondFigures:
    """One closed second, read back: its summary (as in ``results.json``'s ``intervals``) and histograms."""

    summary: dict[str, Any]
    latency: dict[str, bytes] = field(default_factory=dict)  # request name -> encoded histogram
    service: dict[str, bytes] = field(default_factory=dict)


@dataclass
class Merged:
    """The sum of some seconds: counts, and histograms overall and per request name."""

    seconds: int = 0
    scheduled: int = 0
    ok: int = 0
    failed: int = 0
    dropped: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latency: HdrHistogram = field(default_factory=new_histogram)
    service: HdrHistogram = field(default_factory=new_histogram)
    latency_by_name: dict[str, HdrHistogram] = field(default_factory=dict)
    service_by_name: dict[str, HdrHistogram] = field(default_factory=dict)

    def add(self, second: SecondFigures) -> None:
        s = second.summary
        self.seconds += 1
        self.scheduled += int(s["scheduled"])
        self.ok += int(s["ok"])
        self.failed += int(s["failed"])
        self.dropped += int(s["dropped"])
        for k, v in s["errors"].items():
            self.errors[k] = self.errors.get(k, 0) + int(v)
        _add_all(self.latency, self.latency_by_name, second.latency)
        _add_all(self.service, self.service_by_name, second.service)


def _add_all(total: HdrHistogram, by_name: dict[str, HdrHistogram], encoded: dict[str, bytes]) -> None:
    for name, data in encoded.items():
        h = by_name.get(name)
        if h is None:
            h = by_name[name] = new_histogram()
        decoded = histogram.add_encoded(h, data)
        if decoded is not None:
            total.add(decoded)


class SecondsStore:
    """Closed seconds in the order they closed, each found by its index (seconds since the start)."""

    def __init__(self) -> None:
        self._file: IO[bytes] = tempfile.TemporaryFile(prefix="loadgen-seconds-")  # noqa: SIM115 - closed by close()
        self._where: dict[int, tuple[int, int]] = {}  # second index -> (offset, length) in the file
        self._size = 0
        self._lock = threading.Lock()
        self._closer = weakref.finalize(self, self._file.close)  # results may outlive their run: close on GC

    def add(
        self,
        index: int,
        summary: dict[str, Any],
        latency: dict[str, HdrHistogram],
        service: dict[str, HdrHistogram],
    ) -> None:
        record = msgpack.packb(
            {
                "s": summary,
                "l": {n: histogram.encode_wire(h) for n, h in latency.items() if h.get_total_count()},
                "v": {n: histogram.encode_wire(h) for n, h in service.items() if h.get_total_count()},
            }
        )
        with self._lock:
            self._file.seek(self._size)
            self._file.write(record)
            self._where[index] = (self._size, len(record))
            self._size += len(record)

    @property
    def indexes(self) -> list[int]:
        with self._lock:
            return sorted(self._where)

    def seconds(self, start: float, end: float) -> Iterator[SecondFigures]:
        """The closed seconds whose start lies in ``[start, end)`` (run seconds), in order."""
        with self._lock:
            chosen = sorted(i for i in self._where if start <= i < end)
            records = []
            for i in chosen:
                offset, length = self._where[i]
                self._file.seek(offset)
                records.append(self._file.read(length))
        for data in records:
            d = msgpack.unpackb(data)
            yield SecondFigures(d["s"], d["l"], d["v"])

    def merged(self, start: float, end: float) -> Merged:
        out = Merged()
        for second in self.seconds(start, end):
            out.add(second)
        return out

    def close(self) -> None:
        with self._lock:
            self._closer()
