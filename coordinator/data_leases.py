"""Unique test data across the fleet: the coordinator leases each ``mode = "unique"`` [[data]] source's rows
to agents in blocks, so that no two agents ever use the same row (a pure policy: no I/O).

An agent asks for rows (:class:`~loadgen.wire.DataLease`) before it needs them and again when its block runs
low; the coordinator hands out the next block from one cursor per source (:class:`~loadgen.wire.DataGrant`).
Rows leased to an agent that is lost are never handed out again in the same pass: each row is used at most
once per pass. After the last row, the source's ``on_exhausted`` decides: ``wrap`` starts a new pass from
the first row (a block is at most one pass; when the fleet holds more rows leased than the file has, as a
small file does, the next pass hands a row to one agent while another still holds it, as Gatling's circular
feeder does), ``stop`` and ``drop`` grant nothing more (the coordinator stops
the run for ``stop``; for ``drop`` each arrival that finds no row is counted as dropped, cause ``no_data``).

A coordinator that resumes after a crash must never lease a row twice, so its checkpoint holds, per source,
a mark beyond every row it has granted: before a grant would pass the mark, the mark moves further ahead
(:data:`RESERVE` rows, or ten times the grant; of a source that does not wrap, a tenth of its rows at most, or
the grant) and the grant says so (``checkpoint``): the coordinator makes the new mark durable before it sends
the grant. A resumed coordinator goes on from the mark; the rows between its last grant and the mark are never
used.
"""

from __future__ import annotations

from dataclasses import dataclass

from loadgen.flows import DataSource

MAX_LEASE = 100_000
"""The most rows one grant carries (an agent asking for more gets this many, and asks again)."""
RESERVE = 10_000
"""Rows the durable mark moves ahead of the cursor at a time, at least: a checkpoint per that many rows."""


@dataclass(frozen=True)
class Grant:
    source: int
    start: int
    count: int
    exhausted: bool  # this grant reached the end of the rows (the first to), and the source does not wrap
    checkpoint: bool = False  # the durable mark moved: checkpoint before sending the grant


class DataLeases:
    """The cursors of a profile's unique sources (indexes into ``profile.data``)."""

    def __init__(self, sources: tuple[DataSource, ...]) -> None:
        self._sources = sources
        self.exhausted: set[int] = set()  # sources whose end was reached (reported once)
        self.cursors: dict[int, int] = {i: 0 for i, s in enumerate(sources) if s.mode == "unique"}
        self.marks: dict[int, int] = dict(self.cursors)  # beyond every row granted; what a checkpoint holds

    def grant(self, source: int, count: int, agents: int = 1) -> Grant | None:
        """The next block of ``source`` for an agent that asked for ``count`` rows, or None when ``source``
        is not a unique source of the profile (a bad request: drop it). Of rows that will not come round
        again (no ``wrap``), an agent gets at most half its share of what is left among ``agents``, so that a
        small file is spread over the fleet instead of going whole to whoever asks first."""
        if source not in self.cursors or count < 1:
            return None
        rows = len(self._sources[source].rows)
        cursor = self.cursors[source]
        count = min(count, MAX_LEASE)
        wrap = self._sources[source].on_exhausted == "wrap"
        if wrap:
            count = min(count, rows)  # a block holds no row twice
        else:
            left = rows - cursor
            count = max(0, min(count, left, -(-left // (2 * max(1, agents)))))
        end = self.cursors[source] = cursor + count
        checkpoint = end > self.marks[source]
        if checkpoint:
            ahead = max(RESERVE, 10 * count)
            if not wrap:  # a resume skips to the mark: of a small file, a tenth at most, never all of it
                ahead = min(ahead, max(count, rows // 10))
            self.marks[source] = end + ahead
        if wrap:
            return Grant(source, cursor % rows, count, exhausted=False, checkpoint=checkpoint)
        first_end = end >= rows and source not in self.exhausted
        if first_end:
            self.exhausted.add(source)
        return Grant(source, cursor, count, exhausted=first_end, checkpoint=checkpoint)

    def to_state(self) -> dict[str, int]:
        """What a checkpoint keeps: each source's mark."""
        return {str(i): m for i, m in self.marks.items()}

    def restore(self, state: dict[str, int]) -> None:
        """Go on after a checkpoint: from each source's mark (rows granted before it are never granted
        again)."""
        for key, mark in state.items():
            if int(key) in self.cursors:
                self.cursors[int(key)] = self.marks[int(key)] = int(mark)
