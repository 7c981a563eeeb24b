"""HDR histograms as loadgen uses them: microseconds from 1 µs to 1 hour at 3 significant digits.

Agents record into these and ship them encoded (the standard HdrHistogram compressed form); the coordinator
decodes and adds them, which is exact: a merged histogram equals one histogram of all the samples.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from hdrh.codec import HdrHistogramEncoder, payload_header_size
from hdrh.histogram import HdrHistogram
from pyhdrh import add_array as _add_array
from pyhdrh import decode as _decode_counts

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour
SIGNIFICANT_DIGITS = 3

PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p66", 66.0),
    ("p75", 75.0),
    ("p80", 80.0),
    ("p90", 90.0),
    ("p95", 95.0),
    ("p98", 98.0),
    ("p99", 99.0),
    ("p99.9", 99.9),
    ("p99.99", 99.99),
)


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


_TEMPLATE = new_histogram()
if _TEMPLATE.unit_magnitude != 0:  # LOWEST_US is 1: counts index directly by value in the first bucket
    raise RuntimeError("loadgen's histograms start at 1 µs")
_SUB_BUCKET_HALF_MAGNITUDE: int = _TEMPLATE.sub_bucket_half_count_magnitude
_SUB_BUCKET_MASK: int = _TEMPLATE.sub_bucket_mask
del _TEMPLATE


def clamp_us(seconds: float) -> int:
    """A duration in seconds as whole microseconds inside the histogram's range."""
    us = int(seconds * 1_000_000.0)
    if us < LOWEST_US:
        return LOWEST_US
    if us > HIGHEST_US:
        return HIGHEST_US
    return us


def histogram_of_counts(counts: Mapping[int, int]) -> HdrHistogram:
    """A histogram holding ``count`` samples of each ``value`` (µs; clamped into range)."""
    h = new_histogram()
    add_counts(h, counts.items())
    return h


def add_counts(h: HdrHistogram, items: Iterable[tuple[int, int]]) -> None:
    """Record ``count`` samples of each ``value`` (µs; clamped into range) into ``h``, a histogram from
    :func:`new_histogram`: the same as ``h.record_value(value, count)`` for each, writing the counters
    directly (about four times faster than hdrhistogram's pure-Python ``record_value``, which matters when
    an agent folds a busy second)."""
    array = h.counts
    shift = _SUB_BUCKET_HALF_MAGNITUDE
    half = 1 << shift
    mask = _SUB_BUCKET_MASK
    total = 0
    lo = h.min_value
    hi = h.max_value
    for raw, count in items:
        value = LOWEST_US if raw < LOWEST_US else HIGHEST_US if raw > HIGHEST_US else raw
        if value <= mask:
            array[value] += count  # the first bucket: the index is the value itself
        else:
            bucket = (value | mask).bit_length() - shift - 1
            array[((bucket + 1) << shift) + (value >> bucket) - half] += count
        total += count
        if value < lo:  # noqa: PLR1730 - cheaper than calling min() per value
            lo = value
        if value > hi:  # noqa: PLR1730
            hi = value
    h.total_count += total
    h.min_value = lo
    h.max_value = hi


def encode(h: HdrHistogram) -> bytes:
    """The compressed form, or empty bytes for an empty histogram (the common case for quiet names)."""
    if h.get_total_count() == 0:
        return b""
    data: bytes = h.encode()
    return data


def decode(data: bytes) -> HdrHistogram | None:
    if not data:
        return None
    h: HdrHistogram = HdrHistogram.decode(data)
    return h


def add_encoded(into: HdrHistogram, data: bytes) -> HdrHistogram | None:
    """Decode ``data`` and add it into ``into``; return the decoded histogram (None if empty)."""
    h = decode(data)
    if h is not None:
        into.add(h)
    return h


def summary_ms(h: HdrHistogram) -> dict[str, float | None]:
    """min, mean, percentiles and max in milliseconds; all None for an empty histogram."""
    keys = ["min", "mean", *(k for k, _ in PERCENTILES), "max"]
    if h.get_total_count() == 0:
        return dict.fromkeys(keys)
    out: dict[str, float | None] = {"min": h.get_min_value() / 1000.0, "mean": h.get_mean_value() / 1000.0}
    values = h.get_percentile_to_value_dict([p for _, p in PERCENTILES])
    for key, p in PERCENTILES:
        out[key] = values[p] / 1000.0
    out["max"] = h.get_max_value() / 1000.0
    return out


class EncodedHistogramError(ValueError):
    """An encoded histogram is corrupt or was made with other settings than loadgen's."""


class Merger:
    """Adds encoded histograms into histograms without building a histogram object for each one.

    Decoding with hdrhistogram allocates and walks the full counts array (22,000 counters for 1 µs .. 1 h),
    twice, per histogram; agents' one-second histograms are sparse. :meth:`stage` decompresses and decodes
    into a reusable scratch array and remembers the highest index used; :meth:`commit` adds just that prefix
    into the target and clears it. Staging every histogram of a message before committing any keeps a bad
    message from changing anything.
    """

    def __init__(self) -> None:
        template = new_histogram()
        if template.word_size != 8:
            raise RuntimeError("loadgen's histograms use 64-bit counters")
        self._len = template.counts_len
        self._pool: list[Any] = []
        self._staged: list[tuple[int, int, int, int]] = []  # (slot, min index, max index, total)

    def _slot(self, i: int) -> Any:
        while len(self._pool) <= i:
            self._pool.append((ctypes.c_int64 * self._len)())
        return self._pool[i]

    def stage(self, data: bytes) -> int:
        """Decode ``data`` into a scratch slot; returns a handle for :meth:`commit` (-1 for empty data)."""
        if not data:
            return -1
        try:
            payload = HdrHistogramEncoder.decode(data)
        except Exception as exc:  # hdrh and zlib raise assorted errors on corrupt input
            raise EncodedHistogramError(f"undecodable histogram ({type(exc).__name__})") from exc
        header = payload.payload
        if (
            header.lowest_trackable_value != LOWEST_US
            or header.highest_trackable_value != HIGHEST_US
            or header.significant_figures != SIGNIFICANT_DIGITS
            or header.normalizing_index_offset != 0
        ):
            raise EncodedHistogramError("histogram made with other settings")
        handle = len(self._staged)
        scratch = self._slot(handle)
        try:
            res = _decode_counts(payload._data, payload_header_size, ctypes.addressof(scratch), self._len, 8)
        except Exception as exc:
            ctypes.memset(ctypes.addressof(scratch), 0, ctypes.sizeof(scratch))
            raise EncodedHistogramError(f"undecodable histogram counts ({type(exc).__name__})") from exc
        self._staged.append((handle, res["min_nonzero_index"], res["max_nonzero_index"], res["total"]))
        return handle

    def commit(self, handle: int, into: HdrHistogram) -> None:
        """Add a staged histogram into ``into`` (same settings as :func:`new_histogram`)."""
        slot, lo, hi, total = self._staged[handle]
        if total <= 0 or hi < 0:
            return
        lo = max(lo, 0)
        offset = lo * 8
        _add_array(
            ctypes.addressof(into.encoder.get_counts()) + offset,
            ctypes.addressof(self._pool[slot]) + offset,
            hi - lo + 1,
            8,
        )
        into.total_count += total
        into.max_value = max(into.max_value, into.get_highest_equivalent_value(into.get_value_from_index(hi)))
        into.min_value = min(into.get_min_value() or sys.maxsize, into.get_value_from_index(lo))

    def clear(self) -> None:
        """Forget every staged histogram (and zero the scratch they used)."""
        for slot, low, hi, _ in self._staged:
            if hi >= 0:
                lo = max(low, 0)
                ctypes.memset(ctypes.addressof(self._pool[slot]) + lo * 8, 0, (hi - lo + 1) * 8)
        self._staged = []


def keep_memory_flat() -> bool:
    """Have glibc hand every block of 128 KiB or more straight back to the system when it is freed.

    Each histogram's counters are one ~180 KiB block. glibc raises its mmap threshold after the first such
    block is freed, after which these blocks come from the heap and fragment it: a long run's memory then
    grows by hundreds of MiB an hour although nothing is leaked (measured: +200 MiB/h for a coordinator
    merging 3 request names, flat with this). Returns False where it does not apply (not glibc)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_mmap_threshold = -3
        return bool(libc.mallopt(m_mmap_threshold, 128 * 1024))
    except (OSError, AttributeError):
        return False
