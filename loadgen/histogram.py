"""HDR histograms as loadgen uses them: microseconds from 1 µs to 1 hour at 3 significant digits.

Agents record into these and ship them encoded (the standard HdrHistogram compressed form); the coordinator
decodes and adds them, which is exact: a merged histogram equals one histogram of all the samples.
"""

from __future__ import annotations

import binascii
import ctypes
import functools
import struct
import threading
import weakref
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from hdrh.codec import (
    V2_COMPRESSION_COOKIE_BASE,
    V2_ENCODING_COOKIE_BASE,
    get_compression_cookie,
    payload_header_size,
)
from hdrh.histogram import HdrHistogram
from pyhdrh import decode as _decode_counts
from pyhdrh import encode as _encode_counts

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour
SIGNIFICANT_DIGITS = 3


def new_histogram() -> HdrHistogram:
    """An empty histogram with loadgen's range and precision, freed as soon as it is dropped.

    hdrhistogram's histogram and its encoder point at each other, so a dropped histogram would wait for the
    cyclic garbage collector; agents and the coordinator make many ~180 KiB histograms (measured on the
    coordinator with 1,000 agents: +3.3 MiB/s of RSS until a full collection). The encoder only reads its
    histogram while it is being encoded, so a weak reference there breaks the cycle.
    """
    return _freed_when_dropped(HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS))


def _freed_when_dropped(h: HdrHistogram) -> HdrHistogram:
    h.encoder.histogram = weakref.proxy(h)
    return h


_TEMPLATE = new_histogram()
if _TEMPLATE.unit_magnitude != 0:  # LOWEST_US is 1: counts index directly by value in the first bucket
    raise RuntimeError("loadgen's histograms start at 1 µs")
_SUB_BUCKET_HALF_MAGNITUDE: int = _TEMPLATE.sub_bucket_half_count_magnitude
_SUB_BUCKET_MASK: int = _TEMPLATE.sub_bucket_mask
del _TEMPLATE

_EXTERNAL_HEADER = struct.Struct(">II")  # cookie, length of the zlib part (hdrh's ExternalHeader)
_PAYLOAD_HEADER = struct.Struct(">IIIIQQd")  # hdrh's PayloadHeader, before the counters
_BINARY_FIRST_BYTE = V2_ENCODING_COOKIE_BASE >> 24  # 0x1c: both cookies' first byte (big-endian)
if V2_COMPRESSION_COOKIE_BASE >> 24 != _BINARY_FIRST_BYTE:
    raise RuntimeError("hdrhistogram's cookies changed")


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
    return encode_blob(h)


class _EncodeBuffer(threading.local):
    """Each thread's scratch space for :func:`encode_blob`, sized for a histogram's every counter."""

    def __init__(self) -> None:
        self.buffer = ctypes.create_string_buffer(0)


_SCRATCH = _EncodeBuffer()
_COMPRESSION_COOKIE: int = get_compression_cookie()


def encode_blob(h: HdrHistogram) -> bytes:
    """The standard compressed form (base64 of the external header and the zlib'd V2 payload), the bytes
    ``h.encode()`` returns, also for an empty histogram: what ``latency.hlog`` and state checkpoints hold."""
    return binascii.b2a_base64(_compressed(_v2_payload(h)), newline=False)


WIRE_COMPRESS_FROM = 512
"""Payload bytes from which :func:`encode_wire` compresses: below, zlib saves little (a second of 100
samples: 256 bytes, 216 compressed) and costs the coordinator more than the rest of the merge; from 1,000
samples on it halves the bytes (1,535 to 728)."""


def encode_wire(h: HdrHistogram) -> bytes:
    """The form agents send a histogram in: empty bytes for an empty histogram, else HdrHistogram's V2
    payload as it is (its uncompressed encoding) up to :data:`WIRE_COMPRESS_FROM` bytes, or its compressed
    form without the base64 (msgpack carries bytes as they are). :class:`Merger` reads every one of these
    and the base64 text form too.

    Measured per histogram of 100 samples on the coordinator: 11.0 µs to merge in the text form (base64
    1.3 µs and zlib 3.6 µs of it), 6.0 µs in this one; 1,000 agents of 10 request names send 21,000 a
    second."""
    if h.get_total_count() == 0:
        return b""
    payload = _v2_payload(h)
    return _compressed(payload) if len(payload) >= WIRE_COMPRESS_FROM else payload


def _compressed(payload: bytes) -> bytes:
    """HdrHistogram's compressed form of a V2 payload (before base64): cookie, length, zlib'd payload."""
    compressed = zlib.compress(payload)
    return _EXTERNAL_HEADER.pack(_COMPRESSION_COOKIE, len(compressed)) + compressed


def _v2_payload(h: HdrHistogram) -> bytes:
    """HdrHistogram's V2 payload of ``h``: its header and its counters, varint and zero-run encoded.

    hdrhistogram allocates its scratch buffer as ``(c_byte * size)()``, which makes a new ctypes array
    type for every size: a type is a reference cycle that only a full collection frees, and sizes vary
    with each histogram's highest value, so a process that encodes every second (an agent's intervals, the
    coordinator's log) piled up thousands of them between the rare full collections (measured: 2,000
    encodes of histograms of random maxima left 41,000 more allocated blocks, 1,500 after a collection).
    This encodes the same bytes into a buffer kept for the next time.
    """
    payload = h.encoder.payload
    word_size = payload.word_size
    counts_limit = h.get_counts_array_index(h.max_value) + 1 if h.total_count else 0
    room = counts_limit * (word_size + 1)  # the worst case of the varint encoding
    scratch = _SCRATCH.buffer
    if len(scratch) < payload_header_size + room:  # once per thread (all of loadgen's have one size)
        scratch = _SCRATCH.buffer = ctypes.create_string_buffer(
            payload_header_size + h.counts_len * (word_size + 1)
        )
    start = ctypes.addressof(scratch)
    used = _encode_counts(
        ctypes.addressof(payload.counts), counts_limit, word_size, start + payload_header_size, room
    )
    header = payload.payload
    header.payload_len = used
    ctypes.memmove(start, ctypes.addressof(header), payload_header_size)
    return ctypes.string_at(start, payload_header_size + used)


def decode(data: bytes) -> HdrHistogram | None:
    """A histogram from any of its encoded forms (None for empty bytes): the base64 text form
    (:func:`encode`) with hdrhistogram's decoder, the agents' binary forms (:func:`encode_wire`) through
    a :class:`Merger`, which raises :class:`EncodedHistogramError` for a corrupt one or other settings."""
    if not data:
        return None
    if data[0] != _BINARY_FIRST_BYTE:
        return _freed_when_dropped(HdrHistogram.decode(data))
    merger = Merger()
    h = new_histogram()
    merger.commit(merger.stage(data), h)
    return h


def add_encoded(into: HdrHistogram, data: bytes) -> HdrHistogram | None:
    """Decode ``data`` and add it into ``into``; return the decoded histogram (None if empty)."""
    h = decode(data)
    if h is not None:
        into.add(h)
    return h


class EncodedHistogramError(ValueError):
    """An encoded histogram is corrupt or was made with other settings than loadgen's."""


class Merger:
    """Adds encoded histograms into histograms without building a histogram object for each one.

    Decoding with hdrhistogram allocates and walks the full counts array (23,552 counters for 1 µs .. 1 h),
    twice, per histogram, and builds several objects; agents' one-second histograms are sparse. :meth:`stage`
    unwraps the encoding itself (the agents' binary forms or the base64 text form, header checks, zlib
    bounded so a small message cannot inflate into a large one), decodes the counters into a reusable
    scratch array and remembers the range of indices used; :meth:`commit` adds just that range into the
    target and :meth:`clear` zeroes it. Staging every histogram of a message before committing any keeps a
    bad message from changing anything.

    The coordinator calls this for every histogram of every agent's every second (21,000 a second for
    1,000 agents with 10 request names), so the Python around the C calls is kept to a few lookups.
    """

    def __init__(self) -> None:
        template = new_histogram()
        if template.word_size != 8:
            raise RuntimeError("loadgen's histograms use 64-bit counters")
        self._len: int = template.counts_len
        # The largest decompressed payload a histogram of this size can have (9 bytes per counter at most).
        self._max_payload = payload_header_size + 9 * self._len
        self._lowest, self._highest = index_values()
        self._pool: list[Any] = []
        self._addresses: list[int] = []
        self._views: list[np.ndarray[Any, np.dtype[np.int64]]] = []
        self._staged: list[tuple[int, int, int, int]] = []  # (slot, min index, max index, total)

    def _slot(self, i: int) -> int:
        while len(self._pool) <= i:
            array = (ctypes.c_int64 * self._len)()
            self._pool.append(array)
            self._addresses.append(ctypes.addressof(array))
            self._views.append(np.frombuffer(memoryview(array), dtype=np.int64))
        return self._addresses[i]

    def _payload(self, data: bytes) -> bytes:
        """The V2 payload of an encoded histogram (any form :func:`encode_wire` or :func:`encode_blob`
        makes), its headers checked."""
        if data[0] == _BINARY_FIRST_BYTE:
            raw = data  # agents' form (base64 text never holds this byte)
        else:
            try:
                raw = binascii.a2b_base64(data)
            except (binascii.Error, ValueError) as exc:
                raise EncodedHistogramError("undecodable histogram (base64)") from exc
        if len(raw) < _EXTERNAL_HEADER.size:
            raise EncodedHistogramError("undecodable histogram (too short)")
        cookie, length = _EXTERNAL_HEADER.unpack_from(raw)
        if cookie & ~0xF0 == V2_ENCODING_COOKIE_BASE:
            payload = raw
            if len(payload) > self._max_payload:
                raise EncodedHistogramError("undecodable histogram (payload too large)")
        elif cookie & ~0xF0 == V2_COMPRESSION_COOKIE_BASE and length == len(raw) - _EXTERNAL_HEADER.size:
            inflate = zlib.decompressobj()
            try:
                payload = inflate.decompress(raw[_EXTERNAL_HEADER.size :], self._max_payload + 1)
            except zlib.error as exc:
                raise EncodedHistogramError("undecodable histogram (zlib)") from exc
            if len(payload) > self._max_payload or not inflate.eof:
                raise EncodedHistogramError("undecodable histogram (payload too large or truncated)")
        else:
            raise EncodedHistogramError("undecodable histogram (header)")
        if len(payload) < payload_header_size:
            raise EncodedHistogramError("undecodable histogram (payload too short)")
        cookie, length, offset, digits, lowest, highest, _ = _PAYLOAD_HEADER.unpack_from(payload)
        if cookie & ~0xF0 != V2_ENCODING_COOKIE_BASE or length != len(payload) - payload_header_size:
            raise EncodedHistogramError("undecodable histogram (payload header)")
        if lowest != LOWEST_US or highest != HIGHEST_US or digits != SIGNIFICANT_DIGITS or offset != 0:
            raise EncodedHistogramError("histogram made with other settings")
        return payload

    def stage(self, data: bytes) -> int:
        """Decode ``data`` into a scratch slot; returns a handle for :meth:`commit` (-1 for empty data)."""
        if not data:
            return -1
        payload = self._payload(data)
        handle = len(self._staged)
        address = self._slot(handle)
        try:
            res = _decode_counts(payload, payload_header_size, address, self._len, 8)
        except Exception as exc:
            ctypes.memset(address, 0, self._len * 8)
            raise EncodedHistogramError(f"undecodable histogram counts ({type(exc).__name__})") from exc
        self._staged.append((handle, res["min_nonzero_index"], res["max_nonzero_index"], res["total"]))
        return handle

    def commit(self, handle: int, into: HdrHistogram) -> None:
        """Add a staged histogram into ``into`` (same settings as :func:`new_histogram`)."""
        slot, lo, hi, total = self._staged[handle]
        if total <= 0 or hi < 0:
            return
        lo = max(lo, 0)
        # A vectorised add over the staged range: hdrhistogram's add_array adds one counter at a time, and
        # an agent's second spans thousands of mostly empty counters (10,000: 12 µs against 2.5 µs; at
        # 1,000 agents x 21 histograms a second that was a quarter of the coordinator's core).
        target = np.frombuffer(into.counts, dtype=np.int64)[lo : hi + 1]
        np.add(target, self._views[slot][lo : hi + 1], out=target)
        into.total_count += total
        high = self._highest[hi]
        if high > into.max_value:  # noqa: PLR1730 - cheaper than max() on the hottest path
            into.max_value = high
        low = self._lowest[lo]
        if low < into.min_value or into.total_count == total:  # total_count == total: it was empty
            into.min_value = low

    def clear(self) -> None:
        """Forget every staged histogram (and zero the scratch they used)."""
        addresses = self._addresses
        for slot, low, hi, _ in self._staged:
            if hi >= 0:
                lo = max(low, 0)
                ctypes.memset(addresses[slot] + lo * 8, 0, (hi - lo + 1) * 8)
        self._staged = []


@functools.cache
def index_values() -> tuple[list[int], list[int]]:
    """For every counter index of loadgen's histograms: the lowest and the highest value it counts (what
    hdrhistogram's ``get_value_from_index`` and ``get_highest_equivalent_value`` give), computed once."""
    h = new_histogram()
    shift = h.sub_bucket_half_count_magnitude
    half = h.sub_bucket_half_count
    lowest: list[int] = []
    highest: list[int] = []
    for index in range(h.counts_len):
        bucket = (index >> shift) - 1
        sub = (index & (half - 1)) + half
        if bucket < 0:
            sub -= half
            bucket = 0
        value = sub << (bucket + h.unit_magnitude)
        lowest.append(value)
        highest.append(value + (1 << (bucket + h.unit_magnitude)) - 1)
    return lowest, highest


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
