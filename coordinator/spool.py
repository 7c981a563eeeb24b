"""The run's per-second series on disk: ``intervals.spool`` in the run's folder, appended as seconds close.

A coordinator keeps no closed second in memory. Each one is appended once, as it closes, in exactly the text
that ``results.json`` has for it inside its ``intervals`` array (``json.dump(doc, indent=1)``'s layout at
depth 1, each entry led by its separator), so the file is that array's body: ``"[" + spool + "\\n ]"``.
``results.json`` is written by copying the spool between the document's head and tail, and a checkpoint
records how much of the spool it covers (:class:`SpoolMark`: seconds and bytes) after the spool is fsynced.
A resumed coordinator cuts the spool back to that mark: seconds appended after the last checkpoint are closed
again from the data the agents re-send, so none is lost or counted twice.

Errors: :class:`SpoolError` (a :class:`~loadgen.errors.LoadgenError`) names the file when a spool is missing,
shorter than its checkpoint says, or not what this module wrote.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from loadgen.errors import LoadgenError

SPOOL_FILE = "intervals.spool"
_CHUNK = 1 << 20
_ENTRY_END = b"  }"  # the closing brace of one entry: the only line at depth 1 (nested values sit deeper)


class SpoolError(LoadgenError):
    """The spool cannot be used to resume: missing, truncated or malformed (the message names the file)."""


@dataclass(frozen=True)
class SpoolMark:
    """How much of the spool a checkpoint covers: the first ``count`` seconds, ``size`` bytes."""

    count: int = 0
    size: int = 0


@dataclass
class IntervalTally:
    """What the results and the progress line need from the whole series, kept as it grows."""

    count: int = 0
    saturated: int = 0
    first_saturated: int | None = None
    last: dict[str, Any] | None = None

    def add(self, iv: dict[str, Any]) -> None:
        self.count += 1
        if iv.get("saturated"):
            self.saturated += 1
            if self.first_saturated is None:
                self.first_saturated = iv["t"]
        self.last = iv

    @classmethod
    def of(cls, intervals: list[dict[str, Any]]) -> IntervalTally:
        tally = cls()
        for iv in intervals:
            tally.add(iv)
        return tally


def render_entry(iv: dict[str, Any], position: int) -> bytes:
    """Entry ``position`` of ``intervals`` as ``json.dumps(doc, indent=1)`` writes it, separator first."""
    separator = "\n  " if position == 0 else ",\n  "
    return (separator + json.dumps(iv, indent=1).replace("\n", "\n  ")).encode("ascii")


def render_body(intervals: list[dict[str, Any]]) -> bytes:
    """A whole spool's content for ``intervals`` (what appending them one by one writes)."""
    return b"".join(render_entry(iv, i) for i, iv in enumerate(intervals))


class IntervalSpool:
    """An open spool. Not thread-safe; one writer (the coordinator)."""

    def __init__(self, file: IO[bytes], path: Path | None, tally: IntervalTally, size: int) -> None:
        self._file = file
        self.path = path  # None: a temporary file (a run without an output folder)
        self.tally = tally
        self._size = size

    @classmethod
    def create(cls, out: Path | None) -> IntervalSpool:
        """A new, empty spool in ``out`` (replacing any); an anonymous temporary file if ``out`` is None."""
        if out is None:
            return cls(tempfile.TemporaryFile(prefix="loadgen-intervals-"), None, IntervalTally(), 0)
        out.mkdir(parents=True, exist_ok=True)
        path = out / SPOOL_FILE
        return cls(path.open("w+b"), path, IntervalTally(), 0)

    @classmethod
    def reopen(cls, out: Path, mark: SpoolMark) -> IntervalSpool:
        """The spool in ``out`` cut back to ``mark`` (a checkpoint's), checked entry by entry."""
        path = out / SPOOL_FILE
        try:
            file = path.open("r+b")
        except FileNotFoundError as exc:
            raise SpoolError(f"{path}: missing; the checkpoint covers {mark.count} seconds in it") from exc
        try:
            size = file.seek(0, os.SEEK_END)
            if size < mark.size:
                raise SpoolError(
                    f"{path}: truncated: {size} bytes, but the checkpoint covers {mark.count} seconds in "
                    f"{mark.size} bytes"
                )
            file.truncate(mark.size)
            spool = cls(file, path, IntervalTally(), mark.size)
            for iv in spool.entries(check=True):
                spool.tally.add(iv)
            if spool.tally.count != mark.count:
                raise SpoolError(
                    f"{path}: holds {spool.tally.count} seconds in its first {mark.size} bytes, but the "
                    f"checkpoint says {mark.count}"
                )
            file.seek(0, os.SEEK_END)
        except BaseException:
            file.close()
            raise
        return spool

    @property
    def mark(self) -> SpoolMark:
        """Everything appended so far (durable once :meth:`sync` returned it)."""
        return SpoolMark(self.tally.count, self._size)

    def append(self, iv: dict[str, Any]) -> None:
        data = render_entry(iv, self.tally.count)
        self._file.write(data)
        self._size += len(data)
        self.tally.add(iv)

    def sync(self) -> SpoolMark:
        """Make everything appended durable (a checkpoint may then record the mark returned)."""
        self._file.flush()
        if self.path is not None:
            os.fsync(self._file.fileno())
        return self.mark

    def copy_into(self, dst: IO[bytes], mark: SpoolMark) -> None:
        """Write the first ``mark.size`` bytes (the body of results.json's ``intervals``) to ``dst``."""
        self._file.flush()
        fd, offset = self._file.fileno(), 0
        while offset < mark.size:
            chunk = os.pread(fd, min(_CHUNK, mark.size - offset), offset)
            if not chunk:
                raise SpoolError(f"{self.path or 'the interval spool'}: shorter than {mark.size} bytes")
            dst.write(chunk)
            offset += len(chunk)

    def entries(self, *, check: bool = False) -> Iterator[dict[str, Any]]:
        """The seconds in the spool, in order, read back from the file one at a time; with ``check``, each
        must render back to the bytes it was read from (what :meth:`reopen` asks of a file it did not just
        write)."""
        self._file.flush()
        name = str(self.path or "the interval spool")
        fd, offset, pending, lines = self._file.fileno(), 0, b"", []
        position = 0
        while offset < self._size:
            chunk = os.pread(fd, min(_CHUNK, self._size - offset), offset)
            if not chunk:
                break
            offset += len(chunk)
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                lines.append(line)
                if line.rstrip(b",") == _ENTRY_END:
                    yield _parse(lines, position, name, check)
                    position += 1
                    lines = []
        lines.append(pending)
        if pending.rstrip(b",") == _ENTRY_END:
            yield _parse(lines, position, name, check)
        elif lines != [b""]:
            raise SpoolError(f"{name}: entry {position} is cut short")

    def read(self) -> list[dict[str, Any]]:
        """Every second in the spool (for the end-of-run reports, which need the whole series)."""
        return list(self.entries())

    def close(self) -> None:
        self._file.close()


def _parse(lines: list[bytes], position: int, name: str, check: bool) -> dict[str, Any]:
    """One entry's lines (its separator included) back to its summary."""
    raw = b"\n".join([*lines[:-1], lines[-1].rstrip(b",")])  # a trailing comma leads the next entry
    if position > 0:  # the separator that led the entry ended the previous line
        raw = b",\n" + raw
    try:
        iv = json.loads(raw[raw.index(b"{") :])
    except ValueError as exc:
        raise SpoolError(f"{name}: entry {position} is not valid JSON ({exc})") from exc
    if (
        not isinstance(iv, dict)
        or not isinstance(iv.get("t"), int)
        or (check and render_entry(iv, position) != raw)
    ):
        raise SpoolError(f"{name}: entry {position} is not an interval this coordinator wrote")
    return iv
