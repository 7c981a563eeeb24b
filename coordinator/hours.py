"""Exact per-hour figures for long runs: every closed second's merged histogram is added into its hour's."""

from __future__ import annotations

from typing import Any

from hdrh.histogram import HdrHistogram

from loadgen import histogram
from loadgen.histogram import new_histogram
from loadgen.percentiles import summary_ms


class HourTable:
    def __init__(self) -> None:
        self.done: list[dict[str, Any]] = []  # finished hours, in order
        self.hour = -1
        self._hist: HdrHistogram = new_histogram()
        self._counts = [0, 0, 0]  # scheduled, ok, failed

    def add(self, second: int, summary: dict[str, Any], latency: HdrHistogram) -> None:
        hour = second // 3600
        if hour != self.hour:
            if self.hour >= 0:
                self.done.append(self._summary())
            self.hour = hour
            self._hist = new_histogram()
            self._counts = [0, 0, 0]
        self._hist.add(latency)
        self._counts[0] += summary["scheduled"]
        self._counts[1] += summary["ok"]
        self._counts[2] += summary["failed"]

    def _summary(self) -> dict[str, Any]:
        scheduled, ok, failed = self._counts
        ms = summary_ms(self._hist)
        return {
            "hour": self.hour,
            "scheduled": scheduled,
            "ok": ok,
            "failed": failed,
            "success_rate": ok / (ok + failed) if ok + failed else None,
            "p50": ms["p50"],
            "p95": ms["p95"],
            "p99": ms["p99"],
            "max": ms["max"],
        }

    def rows(self) -> list[dict[str, Any]]:
        """Every hour so far, the current one included (exact percentiles, from merged histograms)."""
        return [*self.done, *([self._summary()] if self.hour >= 0 else [])]

    def state(self) -> dict[str, Any]:
        return {
            "done": self.done,
            "hour": self.hour,
            "hist": histogram.encode(self._hist),
            "counts": self._counts,
        }

    @classmethod
    def restore(cls, d: dict[str, Any]) -> HourTable:
        t = cls()
        t.done = list(d["done"])
        t.hour = int(d["hour"])
        t._hist = histogram.decode(d["hist"]) or histogram.new_histogram()
        t._counts = [int(x) for x in d["counts"]]
        return t
