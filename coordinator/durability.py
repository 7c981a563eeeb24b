"""What the coordinator makes durable in ``--out``, and reads back to resume a run.

``intervals.spool`` holds every closed second (appended as it closes); ``latency.hlog`` the closed seconds'
histograms (appended at each checkpoint); ``state.msgpack`` everything else a restarted coordinator needs to
go on (membership, the aggregate, the spool's and the log's marks); ``results.json`` the results document,
rewritten every ``RESULTS_EVERY`` seconds during the run (``"final": false``) and once at the end.

A run without ``--out`` still spools its seconds (to a temporary file) so memory stays flat in a long soak.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from coordinator.aggregate import ClosedInterval
from coordinator.results import write_json_atomic
from coordinator.spool import IntervalSpool, SpoolMark
from coordinator.state import read_state, write_state

HLOG_FILE = "latency.hlog"
RESULTS_FILE = "results.json"


class Durability:
    def __init__(self, out: Path | None, started_wall: float = 0.0) -> None:
        self.out = out
        self.started_wall = started_wall
        self.hlog_size = 0
        self._spool: IntervalSpool | None = None
        self._unlogged: list[ClosedInterval] = []  # closed but not yet in the interval log
        self.flows: frozenset[str] = frozenset()  # names that are flows: tagged flow:<name> in the log

    @property
    def spool(self) -> IntervalSpool:
        """The closed seconds so far: in ``out`` (a temporary file for a run without one)."""
        if self._spool is None:
            self._spool = IntervalSpool.create(self.out)
        return self._spool

    def closed(self, c: ClosedInterval) -> None:
        """A second closed: spool its summary; its histograms go into the log at the next checkpoint."""
        self.spool.append(c.summary)
        if self.out is not None:
            self._unlogged.append(c)

    def checkpoint(self, state: dict[str, Any], results: Mapping[str, Any] | None) -> None:
        """Write the interval log's new seconds, then ``state`` (given the spool's mark under ``"spool"``
        and the log's size under ``"hlog_size"``), then ``results`` when given. Nothing without ``out``."""
        out = self.out
        if out is None:
            return
        out.mkdir(parents=True, exist_ok=True)
        self._write_hlog(out)
        mark = self.spool.sync()
        write_state(
            out, {**state, "spool": {"count": mark.count, "size": mark.size}, "hlog_size": self.hlog_size}
        )
        if results is not None:
            write_json_atomic(out / RESULTS_FILE, results, self.spool)

    def write_results(self, results: Mapping[str, Any]) -> None:
        """``results`` (its ``intervals`` a :class:`SpoolMark` or a list) into ``out``; nothing without it."""
        if self.out is not None:
            write_json_atomic(self.out / RESULTS_FILE, results, self.spool)

    def _write_hlog(self, out: Path) -> None:
        from loadgen.reports.hlog import HlogWriter

        path = out / HLOG_FILE
        new = self.hlog_size == 0 or not path.exists()
        with path.open("w" if new else "r+") as f:
            if not new:
                f.seek(self.hlog_size)
                f.truncate()
            writer = HlogWriter(f, self.started_wall)
            if new:
                writer.write_header()
            for c in self._unlogged:
                writer.write_interval(float(c.index), 1.0, c.latency)
                for name, h in sorted(c.by_name.items()):
                    tag = f"flow:{name}" if name in self.flows else name
                    writer.write_interval(float(c.index), 1.0, h, tag=tag)
            f.flush()
            self.hlog_size = f.tell()
        self._unlogged = []

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    @classmethod
    def reopen(cls, out: Path) -> tuple[Durability, dict[str, Any]]:
        """The durable state of the run checkpointed in ``out``, cut back to what the checkpoint covers, and
        the checkpoint itself."""
        st = read_state(out)
        d = cls(out, st["started_wall"])
        d.hlog_size = st["hlog_size"]
        if "spool" in st:
            d._spool = IntervalSpool.reopen(
                out, SpoolMark(int(st["spool"]["count"]), int(st["spool"]["size"]))
            )
        else:  # a version 1 checkpoint kept the list itself
            d._spool = IntervalSpool.create(out)
            for iv in st["intervals"]:
                d._spool.append(iv)
            d._spool.sync()
        return d, st
