"""What an agent has sent and the coordinator has not yet made durable: its intervals and its Finished.

The coordinator acknowledges with ``Ack(index, finished)`` once the data is in a durable checkpoint; a new
coordinator process (a new epoch) gets everything unacknowledged again (see :mod:`loadgen.wire`). The outbox
holds the encoded messages and does no I/O: the agent sends what it returns.

It keeps at most ``cap`` intervals (an hour of them by default): past that the oldest is dropped, and
:meth:`Outbox.add` says which, so that the agent can warn.
"""

from __future__ import annotations

from collections import deque

MAX_BUFFERED = 3600  # unacknowledged intervals kept (an hour); older ones are dropped with a warning


class Outbox:
    """Unacknowledged intervals, oldest first, by index (added in increasing order), and the Finished."""

    def __init__(self, cap: int = MAX_BUFFERED) -> None:
        if cap < 1:
            raise ValueError(f"an outbox holds at least one interval, not {cap}")
        self.cap = cap
        self._intervals: deque[tuple[int, bytes]] = deque()
        self._finished: bytes | None = None
        self._finished_confirmed = False
        self.dropped = 0
        """Intervals dropped unacknowledged, in all, to stay within ``cap``."""

    def __len__(self) -> int:
        """Intervals held (not counting the Finished)."""
        return len(self._intervals)

    def add(self, index: int, data: bytes) -> list[int]:
        """Hold interval ``index`` (encoded as ``data``) until acknowledged. Returns the indexes of the
        intervals dropped to make room (the oldest; none while under the cap)."""
        if self._intervals and index <= self._intervals[-1][0]:
            raise ValueError(f"interval {index} added after interval {self._intervals[-1][0]}")
        self._intervals.append((index, data))
        lost: list[int] = []
        while len(self._intervals) > self.cap:
            lost.append(self._intervals.popleft()[0])
        self.dropped += len(lost)
        return lost

    def finish(self, data: bytes) -> None:
        """Hold the encoded Finished until acknowledged."""
        self._finished = data

    @property
    def finished_confirmed(self) -> bool:
        return self._finished_confirmed

    def ack(self, index: int, finished: bool) -> bool:
        """The coordinator made every interval up to ``index`` durable, and the Finished too if ``finished``:
        drop them. Returns whether the Finished is confirmed now (an acknowledgement of a Finished not yet
        sent confirms nothing)."""
        while self._intervals and self._intervals[0][0] <= index:
            self._intervals.popleft()
        if finished and self._finished is not None:
            self._finished_confirmed = True
        return self._finished_confirmed

    def unconfirmed(self) -> list[bytes]:
        """Everything to send again to a new coordinator: the intervals oldest first, then the Finished if it
        was sent and not confirmed."""
        out = [data for _, data in self._intervals]
        if self._finished is not None and not self._finished_confirmed:
            out.append(self._finished)
        return out
