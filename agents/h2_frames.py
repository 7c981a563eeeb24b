"""HTTP/2 framing and the parts of HPACK the engine needs, without I/O (RFC 9113, RFC 7541).

The HTTP/2 engine (:mod:`agents.h2_engine`) speaks the protocol itself instead of through ``h2``'s state
machine, which cost about 100 µs of CPU per request (three quarters of the engine's time, most of it
decoding and encoding the same header fields again for every request). Here:

- Frames are built by :func:`frame` and split off a buffer by :class:`FrameReader`.
- A request's header block is encoded once per request (:func:`encode_block`) and reused for every stream
  that sends it: every field is an index into HPACK's static table or a literal *without indexing*, so the
  block never touches the server's dynamic table and means the same on every connection.
- A response's header block is read by :class:`BlockDecoder`: scanned for its ``:status`` without decoding
  the rest when the block leaves the dynamic table as it is (indexed fields and literals without indexing);
  else decoded by ``hpack``'s :class:`hpack.Decoder`, which keeps the table in step with the server's. A
  server that adds the same fields to the table with every response (nginx does: its ``server``, ``date``,
  ``content-type`` and ``content-length`` as literals with incremental indexing, with the same bytes until
  the date changes) soon fills the table with copies of them, and from then on decoding that block again
  leaves the table exactly as it was: the decoder sees that, and the next identical block is answered from
  the last decode without decoding it again (exact: the block's effect depends only on the table, which it
  leaves unchanged).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import cast

from hpack import Decoder
from hpack.table import HeaderTable

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    range(10)
)
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# SETTINGS identifiers
HEADER_TABLE_SIZE = 0x1
ENABLE_PUSH = 0x2
MAX_CONCURRENT_STREAMS = 0x3
INITIAL_WINDOW_SIZE = 0x4
MAX_FRAME_SIZE = 0x5

# error codes
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
FLOW_CONTROL_ERROR = 0x3
REFUSED_STREAM = 0x7
FRAME_SIZE_ERROR = 0x6
CANCEL = 0x8

DEFAULT_WINDOW = 65_535
DEFAULT_MAX_FRAME = 16_384
MAX_WINDOW = 2**31 - 1
MAX_STREAM_ID = 2**31 - 1

_HEAD = struct.Struct(">HBBBL")  # a 24-bit length as 16 + 8 bits, type, flags, stream id
_U32 = struct.Struct(">L")
_SETTING = struct.Struct(">HL")

STATIC = HeaderTable.STATIC_TABLE
"""HPACK's static table (RFC 7541 Appendix A), index 1 first."""
_FULL = {(name, value): i for i, (name, value) in enumerate(STATIC, 1)}
_NAMES: dict[bytes, int] = {}
for _i, (_name, _) in enumerate(STATIC, 1):
    _NAMES.setdefault(_name, _i)
_STATUS_INDEX = {i: int(value) for i, (name, value) in enumerate(STATIC, 1) if name == b":status"}


class FrameError(Exception):
    """The peer broke the framing rules: the connection cannot go on (a ``protocol`` error)."""


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    """One frame: its 9-byte header, then ``payload``."""
    n = len(payload)
    return _HEAD.pack(n >> 8, n & 0xFF, kind, flags, stream) + payload


def settings(values: Iterable[tuple[int, int]]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(_SETTING.pack(k, v) for k, v in values))


def window_update(stream: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream, _U32.pack(increment))


def rst_stream(stream: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream, _U32.pack(code))


def goaway(last_stream: int, code: int) -> bytes:
    return frame(GOAWAY, 0, 0, _U32.pack(last_stream) + _U32.pack(code))


def parse_settings(payload: bytes) -> list[tuple[int, int]]:
    if len(payload) % 6:
        raise FrameError("SETTINGS payload not a multiple of 6 bytes")
    return [_SETTING.unpack_from(payload, i) for i in range(0, len(payload), 6)]


def u32(payload: bytes, at: int = 0) -> int:
    value: int = _U32.unpack_from(payload, at)[0]
    return value


# --- HPACK


def _integer(value: int, prefix: int, first: int) -> bytes:
    """``value`` as an HPACK integer with a ``prefix``-bit prefix, OR-ed into ``first``'s high bits."""
    limit = (1 << prefix) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(data: bytes) -> bytes:
    return _integer(len(data), 7, 0) + data  # no Huffman coding: the block is built once


def encode_block(fields: Sequence[tuple[bytes, bytes]]) -> bytes:
    """A header block for ``fields`` that leaves every dynamic table as it is (see the module docstring)."""
    out = []
    for name, value in fields:
        index = _FULL.get((name, value))
        if index is not None:
            out.append(_integer(index, 7, 0x80))
            continue
        index = _NAMES.get(name, 0)
        out.append(_integer(index, 4, 0x00) + (b"" if index else _string(name)) + _string(value))
    return b"".join(out)


def _read_integer(block: bytes, at: int, prefix: int) -> tuple[int, int]:
    limit = (1 << prefix) - 1
    value = block[at] & limit
    at += 1
    if value < limit:
        return value, at
    shift = 0
    while True:
        if at >= len(block) or shift > 28:
            raise FrameError("HPACK integer runs past its block")
        byte = block[at]
        at += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def _skip_string(block: bytes, at: int) -> tuple[int, int, bool]:
    """(start, end, Huffman-coded) of the string at ``at``."""
    huffman = bool(block[at] & 0x80)
    n, at = _read_integer(block, at, 7)
    if at + n > len(block):
        raise FrameError("HPACK string runs past its block")
    return at, at + n, huffman


def scan_status(block: bytes) -> int:
    """The ``:status`` of a response header block, read without decoding the other fields; -1 if the block
    must go through the full decoder instead (it changes the dynamic table, refers to it for the status, or
    codes the status, or a field name given as a string, with Huffman); 0 if it has no status (a trailer
    block, or a malformed one)."""
    status = 0
    at, end = 0, len(block)
    while at < end:
        byte = block[at]
        if byte & 0x80:  # indexed field
            index, at = _read_integer(block, at, 7)
            if index in _STATUS_INDEX:
                status = _STATUS_INDEX[index]
            elif index > len(STATIC) and not status:
                return -1  # a dynamic entry: it might be the status
            continue
        if byte & 0xC0 == 0x40 or byte & 0xE0 == 0x20:
            return -1  # incremental indexing, or a table size update: the decoder must see it
        index, at = _read_integer(block, at, 4)  # literal without indexing / never indexed
        named = index in _STATUS_INDEX  # any of the static table's :status entries names it (7541 6.2.2)
        if index == 0:
            start, at, huffman = _skip_string(block, at)
            if huffman and not status:
                return -1  # a Huffman-coded name: it might be ":status"
            named = block[start:at] == b":status"
        elif index > len(STATIC) and not status:
            return -1  # its name is in the dynamic table: it might be the status
        start, at, huffman = _skip_string(block, at)
        if named:
            if huffman:
                return -1
            try:
                status = int(block[start:at])
            except ValueError:
                return 0
    return status


class FrameReader:
    """Splits frames off the bytes read so far: ``feed`` the bytes, then iterate over whole frames as
    (type, flags, stream, payload). A frame larger than ``max_frame`` is a :class:`FrameError`."""

    __slots__ = ("_buffer", "max_frame")

    def __init__(self, max_frame: int) -> None:
        self._buffer = b""
        self.max_frame = max_frame

    def frames(self, data: bytes) -> list[tuple[int, int, int, bytes]]:
        buffer = self._buffer + data if self._buffer else data
        out = []
        at, end = 0, len(buffer)
        unpack = _HEAD.unpack_from
        while end - at >= 9:
            high, low, kind, flags, stream = unpack(buffer, at)
            n = (high << 8) | low
            if n > self.max_frame:
                raise FrameError(f"a frame of {n} bytes, over the {self.max_frame} we allow")
            if end - at - 9 < n:
                break
            out.append((kind, flags, stream & 0x7FFFFFFF, buffer[at + 9 : at + 9 + n]))
            at += 9 + n
        self._buffer = buffer[at:] if at < end else b""
        return out


def strip_padding(flags: int, payload: bytes, priority: bool = False) -> bytes:
    """The payload of a DATA or HEADERS frame without its padding (and, for HEADERS, its priority fields)."""
    start, end = 0, len(payload)
    if flags & PADDED:
        if not payload:
            raise FrameError("a padded frame without its pad length")
        start, end = 1, end - payload[0]
    if priority and flags & PRIORITY_FLAG:
        start += 5
    if end < start:
        raise FrameError("padding longer than the frame")
    return payload[start:end]


class BlockDecoder:
    """Response header blocks, read as the module docstring says; one per connection (the dynamic table is
    the connection's)."""

    __slots__ = ("_decoder", "_fields", "_same")

    def __init__(self, decoder: Decoder | None = None) -> None:
        self._decoder = Decoder() if decoder is None else decoder  # given: by a test that watches it
        self._same = b""  # the last block decoded, if decoding it left the table as it was
        self._fields: list[tuple[bytes, bytes]] = []

    def status(self, block: bytes) -> int:
        """The block's ``:status`` (0: none, e.g. trailers)."""
        status = scan_status(block)
        return status if status >= 0 else status_of(self.fields(block))

    def fields(self, block: bytes) -> list[tuple[bytes, bytes]]:
        """Every field of the block, names and values as bytes. Raises ``hpack.HPACKError``."""
        if block == self._same:
            return self._fields
        table = self._decoder.header_table
        before = (table.maxsize, tuple(table.dynamic_entries))
        fields = cast("list[tuple[bytes, bytes]]", self._decoder.decode(block, raw=True))
        if (table.maxsize, tuple(table.dynamic_entries)) == before:
            self._same, self._fields = block, fields
        else:
            self._same = b""
        return fields


def status_of(fields: Sequence[tuple[bytes, bytes]]) -> int:
    for name, value in fields:
        if name == b":status":
            return int(value) if value.isdigit() else 0
    return 0
