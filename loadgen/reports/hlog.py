"""HdrHistogram interval logs (``.hlog``, log format version 1.3), as the reference tools read them.

One line per interval histogram, after a short header::

    #[Histogram log format version 1.3]
    #[StartTime: 1763790792.210 (seconds since epoch), Sat Nov 22 05:53:12 UTC 2026]
    #[BaseTime: 1763790792.210 (seconds since epoch)]
    "StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"
    0.000,1.000,0.021,HISTFAAAAC...
    Tag=home,0.000,1.000,0.009,HISTFAAAAB...

The numbers follow the reference Java ``HistogramLogWriter`` exactly: ``%.3f`` (half-up rounding, US
locale) for the start timestamp, the interval length and the interval max, then the base64 compressed
histogram. Timestamps are seconds relative to the run start; the ``BaseTime`` line says so explicitly
(it equals ``StartTime``, which is also what the reference reader assumes when it is absent: writing
``BaseTime: 0.000`` would declare the timestamps absolute epoch seconds and the reference tools would
place every interval ~56 years before the start and skip it).

``Interval_Max`` is the histogram's max divided by the reference default ``maxValueUnitRatio`` of
1,000,000. That default assumes nanosecond values (printing milliseconds); loadgen's histograms hold
microseconds, so our ``Interval_Max`` column is in **seconds**. Readers take the real values from the
histogram itself; the column is informational.

The histograms are loadgen's (:mod:`loadgen.histogram`): microseconds, 1 µs .. 1 h, 3 significant digits.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_UP, Decimal
from typing import TextIO

from hdrh.codec import HdrHistogramEncoder
from hdrh.histogram import HdrHistogram

from loadgen.errors import LoadgenError
from loadgen.histogram import encode_blob

FORMAT_VERSION = "1.3"
MAX_VALUE_UNIT_RATIO = 1_000_000.0
LEGEND = '"StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"'

_THOUSANDTH = Decimal("0.001")
_TAG_DELIMITERS = re.compile(r"[,\s]")
_HEADER_NUMBER = re.compile(r"#\[(StartTime|BaseTime):\s*([-+0-9.eE]+)")
_YEAR_S = 365 * 24 * 3600.0


class HlogError(LoadgenError):
    """An interval log line cannot be read. Carries the 1-based line number."""

    def __init__(self, line: int, reason: str) -> None:
        self.line = line
        self.reason = reason
        super().__init__(f"line {line}: {reason}")


@dataclass(frozen=True)
class HlogInterval:
    """One interval line: ``start`` and ``length`` in seconds, ``start`` relative to the log's start time.

    ``max_value`` is the ``Interval_Max`` column as written (seconds for loadgen's logs, see the module
    docstring). The histogram is kept encoded (a decoded one holds ~190 KB of counters, and an 8-hour
    log has over 100,000 lines): :attr:`histogram` decodes it on every access.
    """

    tag: str | None
    start: float
    length: float
    max_value: float
    encoded: bytes = field(repr=False)
    line: int = 0  # in the log, for error messages

    @property
    def histogram(self) -> HdrHistogram:
        """The interval histogram, freshly decoded. Raises :class:`HlogError` if it cannot be."""
        try:
            h: HdrHistogram = HdrHistogram.decode(self.encoded)
        except Exception as exc:  # hdrh raises TypeError, zlib.error and its own cookie/length errors
            raise HlogError(self.line, f"undecodable histogram: {exc}") from exc
        return h


@dataclass
class HlogContents:
    """A whole log: the ``StartTime`` header (epoch seconds, None if absent) and the intervals in order."""

    start_time: float | None
    intervals: list[HlogInterval] = field(default_factory=list)

    def tags(self) -> list[str]:
        """The tags present, in order of first appearance (untagged lines are not included)."""
        return list(dict.fromkeys(iv.tag for iv in self.intervals if iv.tag is not None))

    def merged(self, tag: str | None = None) -> HdrHistogram | None:
        """The sum of every interval with ``tag`` (None: the untagged ones); None when there are none.

        Decodes one interval at a time, so memory stays flat however long the log is.
        """
        return merge_histograms(iv.histogram for iv in self.intervals if iv.tag == tag)


def merge_histograms(histograms: Iterable[HdrHistogram]) -> HdrHistogram | None:
    """The exact sum of ``histograms`` in a new histogram (the first one's layout); None if none given."""
    total: HdrHistogram | None = None
    for h in histograms:
        if total is None:
            total = HdrHistogram(h.lowest_trackable_value, h.highest_trackable_value, h.significant_figures)
        if h.get_total_count():  # hdrh's add() would pull min to 0 for an empty histogram
            total.add(h)
    return total


def sanitize_tag(tag: str) -> str:
    """``tag`` made legal for a log line: commas and whitespace become ``_`` (never empty)."""
    return _TAG_DELIMITERS.sub("_", tag) or "_"


def format_seconds(value: float) -> str:
    """Java's ``String.format(Locale.US, "%.3f", value)``: the exact binary value, rounded half up."""
    return str(Decimal(value).quantize(_THOUSANDTH, rounding=ROUND_HALF_UP))


def _human_date(epoch_s: float) -> str:
    """Like Java's ``Date.toString()`` (``Sat Nov 22 05:53:12 UTC 2026``), always in UTC."""
    return time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime(epoch_s))


class HlogWriter:
    """Writes an interval log to ``stream``. Constructing it writes nothing; call :meth:`write_header`
    once, then :meth:`write_interval` per interval (each line is flushed so a crash loses at most one).

    ``start_time`` is the run start as wall-clock epoch seconds; interval starts are relative to it.
    """

    def __init__(self, stream: TextIO, start_time: float) -> None:
        self._stream = stream
        self._start_time = start_time

    def write_header(self) -> None:
        start = format_seconds(self._start_time)
        self._stream.write(
            f"#[Histogram log format version {FORMAT_VERSION}]\n"
            f"#[StartTime: {start} (seconds since epoch), {_human_date(self._start_time)}]\n"
            f"#[BaseTime: {start} (seconds since epoch)]\n"
            f"{LEGEND}\n"
        )
        self._stream.flush()

    def write_interval(
        self, start: float, length: float, histogram: HdrHistogram, tag: str | None = None
    ) -> None:
        """One interval line; ``start`` in seconds since ``start_time``, ``length`` in seconds.

        ``tag`` is sanitized with :func:`sanitize_tag` (the format forbids commas and spaces in it).
        """
        payload = encode_blob(histogram)
        line = ",".join(
            (
                format_seconds(start),
                format_seconds(length),
                format_seconds(histogram.get_max_value() / MAX_VALUE_UNIT_RATIO),
                payload.decode("ascii"),
            )
        )
        prefix = "" if tag is None else f"Tag={sanitize_tag(tag)},"
        self._stream.write(f"{prefix}{line}\n")
        self._stream.flush()


def read_hlog(stream: TextIO) -> HlogContents:
    """Parse an interval log (any version the reference reader accepts: 1.x, tagged or not).

    Interval starts come back relative to the log's start time, with the reference reader's rules:
    ``BaseTime`` says what the timestamps are relative to; without it, timestamps more than a year
    before ``StartTime`` are relative to it and others are absolute; without ``StartTime``, the first
    interval's timestamp is the start. Raises :class:`HlogError` for a malformed interval line.
    """
    start_time: float | None = None
    base_time: float | None = None
    reference: float | None = None  # what interval starts are made relative to
    intervals: list[HlogInterval] = []
    for number, raw in enumerate(stream, start=1):
        line = raw.strip()
        if not line or line.startswith('"StartTimestamp"'):
            continue
        if line.startswith("#"):
            m = _HEADER_NUMBER.match(line)
            if m is not None:
                value = _number(m.group(2), number, m.group(1))
                if m.group(1) == "StartTime":
                    start_time = value
                else:
                    base_time = value
            continue
        interval = _interval_fields(line, number)
        ts = interval.start
        if reference is None:
            reference = start_time if start_time is not None else ts
        if base_time is None:
            base_time = reference if ts < reference - _YEAR_S else 0.0
        if base_time != reference:
            interval = replace(interval, start=ts + base_time - reference)
        intervals.append(interval)
    return HlogContents(start_time, intervals)


def _interval_fields(line: str, number: int) -> HlogInterval:
    """An interval line parsed and its histogram checked (base64, cookies, zlib: everything but the
    counters, which :attr:`HlogInterval.histogram` decodes when asked); ``start`` is still the raw
    timestamp."""
    tag = None
    if line.startswith("Tag="):
        tag, _, line = line[4:].partition(",")
    fields = [f.strip() for f in line.split(",")]
    if len(fields) != 4:
        raise HlogError(number, f"expected 4 comma-separated fields after the tag, got {len(fields)}")
    ts = _number(fields[0], number, "StartTimestamp")
    length = _number(fields[1], number, "Interval_Length")
    max_value = _number(fields[2], number, "Interval_Max")
    try:
        encoded = fields[3].encode("ascii")
        HdrHistogramEncoder.decode(encoded)
    except Exception as exc:  # hdrh raises TypeError, zlib.error and its own cookie/length errors
        raise HlogError(number, f"undecodable histogram: {exc}") from exc
    return HlogInterval(tag, ts, length, max_value, encoded, number)


def _number(text: str, number: int, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise HlogError(number, f"{what} is not a number: {text!r}") from None
