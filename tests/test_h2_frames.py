"""The HTTP/2 codec (:mod:`agents.h2_frames`) without sockets: request header blocks read back by ``hpack``,
``:status`` read by the scanner as ``hpack`` reads it, the block decoder's cache exact whatever the server's
encoder does, and frames split off a byte stream however it arrives."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hpack import Decoder, Encoder, NeverIndexedHeaderTuple
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.h2_frames import (
    DATA,
    HEADERS,
    PADDED,
    PRIORITY_FLAG,
    STATIC,
    BlockDecoder,
    FrameError,
    FrameReader,
    encode_block,
    frame,
    scan_status,
    strip_padding,
)

Fields = list[tuple[bytes, bytes]]

# --- encode_block

PSEUDO = [b":method", b":scheme", b":authority", b":path", b":status"]
STATIC_NAMES = sorted({name for name, _ in STATIC})
names = st.one_of(
    st.sampled_from(PSEUDO + STATIC_NAMES),
    st.from_regex(r"[a-z0-9!#$%&'*+.^_`|~-]{1,40}", fullmatch=True).map(str.encode),
)
values = st.one_of(
    st.sampled_from([value for _, value in STATIC]),  # fields fully in the static table
    st.binary(max_size=300),  # lengths past 127: multi-byte HPACK integers
)
field_lists = st.lists(st.tuples(names, values), max_size=30)


@given(field_lists)
def test_a_request_block_reads_back_as_its_fields_and_leaves_the_table_empty(fields: Fields) -> None:
    decoder = Decoder()
    assert decoder.decode(encode_block(fields), raw=True) == fields
    assert len(decoder.header_table.dynamic_entries) == 0


# --- scan_status


def _literal(name_index: int, value: bytes, *, kind: int = 0x00, name: bytes = b"") -> bytes:
    """A literal field, its name an index (4-bit prefix; ``kind`` 0x00 without indexing, 0x10 never
    indexed) or, with ``name_index`` 0, a string; no Huffman."""
    assert name_index < 15 and len(value) < 127 and len(name) < 127
    head = bytes([kind | name_index]) + (bytes([len(name)]) + name if name_index == 0 else b"")
    return head + bytes([len(value)]) + value


def _incremental(name_index: int, value: bytes) -> bytes:
    """A literal with incremental indexing (6-bit prefix), no Huffman: what nginx sends."""
    assert name_index < 63 and len(value) < 127
    return bytes([0x40 | name_index, len(value)]) + value


@pytest.mark.parametrize("status", [200, 204, 206, 304, 400, 404, 500])
def test_a_status_in_the_static_table_is_read(status: int) -> None:
    block = Encoder().encode([(b":status", str(status).encode()), NeverIndexedHeaderTuple(b"server", b"x")])
    assert block[0] & 0x80  # indexed
    assert scan_status(block) == status


@pytest.mark.parametrize("status", [201, 503])
@pytest.mark.parametrize("kind", [0x00, 0x10])
def test_a_literal_status_without_indexing_is_read(status: int, kind: int) -> None:
    value = str(status).encode()
    for block in (
        _literal(8, value, kind=kind),
        _literal(14, value, kind=kind),  # any ":status" entry may name it (RFC 7541 6.2.2)
        _literal(0, value, kind=kind, name=b":status"),  # or the name as a string
    ):
        assert Decoder().decode(block, raw=True) == [(b":status", value)]
        assert scan_status(block + _literal(0, b"x", name=b"x-y")) == status


@pytest.mark.parametrize("huffman", [False, True])
def test_a_never_indexed_status_is_read_or_left_to_the_decoder(huffman: bool) -> None:
    block = Encoder().encode([NeverIndexedHeaderTuple(b":status", b"201")], huffman=huffman)
    assert scan_status(block) == (-1 if huffman else 201)
    assert BlockDecoder().status(block) == 201


@pytest.mark.parametrize("huffman", [False, True])
def test_a_block_that_changes_the_table_goes_to_the_decoder(huffman: bool) -> None:
    encoder = Encoder()
    first = encoder.encode([(b":status", b"201"), (b"server", b"x")], huffman=huffman)  # indexed by hpack
    again = encoder.encode([(b":status", b"201"), (b"server", b"x")], huffman=huffman)  # refers to it
    assert scan_status(first) == -1
    assert scan_status(again) == -1  # its status is in the dynamic table
    decoder = BlockDecoder()
    assert [decoder.status(first), decoder.status(again)] == [201, 201]
    resized = Encoder()
    resized.header_table_size = 0
    assert scan_status(resized.encode([(b":status", b"200")])) == -1  # a table size update


def test_trailers_have_no_status() -> None:
    trailer = [NeverIndexedHeaderTuple(b"grpc-status", b"0")]
    assert scan_status(Encoder().encode(trailer, huffman=False)) == 0
    huffman = Encoder().encode(trailer)
    assert scan_status(huffman) == -1  # a Huffman-coded name might be ":status": the decoder reads it
    assert BlockDecoder().status(huffman) == 0
    assert scan_status(encode_block([(b"x-checksum", b"abc")])) == 0
    assert scan_status(b"") == 0


# --- BlockDecoder


class CountingDecoder(Decoder):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def decode(self, data: bytes, raw: bool = False) -> Any:
        self.calls += 1
        return super().decode(data, raw=raw)


POOL: list[Fields] = [
    [
        (b":status", b"200"),
        (b"server", b"nginx"),
        (b"content-type", b"text/plain"),
        (b"content-length", b"2"),
    ],
    [(b":status", b"404"), (b"server", b"nginx"), (b"content-length", b"0")],
    [(b":status", b"201"), (b"x-id", b"abc"), (b"content-length", b"4")],
    [(b":status", b"503"), (b"retry-after", b"1")],
    [(b":status", b"304")],
    [(b"grpc-status", b"0")],  # trailers
]

steps = st.lists(
    st.fixed_dictionaries(
        {
            "fields": st.sampled_from(range(len(POOL))),
            "date": st.none() | st.integers(0, 2),  # a date that sometimes changes
            "table": st.sampled_from([None] * 6 + [0, 60, 256, 4096]),  # header table size changes
            "never": st.booleans(),  # the last field never indexed
            "huffman": st.booleans(),
            "whole": st.booleans(),  # read with fields() (a READ stream), else status()
            "nginx": st.sampled_from([False, False, True]),  # a block made as nginx makes it, not by hpack
        }
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_the_block_decoder_reads_every_block_as_hpack_does(sequence: list[dict[str, Any]]) -> None:
    encoder, plain, ours = Encoder(), Decoder(), BlockDecoder()
    for step in sequence:
        date = f"Sat, 05 Dec 2026 12:00:0{step['date'] or 0} GMT".encode()
        if step["nginx"]:  # the same fields as hpack's encoder would add them, the table kept in step
            block = _nginx_block(date)
            for name, value in nginx_fields(date):
                encoder.header_table.add(name, value)
        else:
            fields: list[Any] = list(POOL[step["fields"]])
            if step["date"] is not None:
                fields.append((b"date", date))
            if step["never"]:
                fields[-1] = NeverIndexedHeaderTuple(*fields[-1])
            if step["table"] is not None:
                encoder.header_table_size = step["table"]
            block = encoder.encode(fields, huffman=step["huffman"])
        expected = plain.decode(block, raw=True)
        status = next((int(v) for k, v in expected if k == b":status"), 0)
        if step["whole"]:
            assert ours.fields(block) == expected
        else:
            assert ours.status(block) == status


def nginx_fields(date: bytes) -> Fields:
    return [
        (b"server", b"nginx/1.24.0"),
        (b"date", date),
        (b"content-type", b"text/plain"),
        (b"content-length", b"2"),
    ]


def _nginx_block(date: bytes) -> bytes:
    """A response head as nginx sends it: ``:status`` indexed, the rest literals with incremental indexing
    (names from the static table), the same bytes every time until the date changes."""
    names = {b"server": 54, b"date": 33, b"content-type": 31, b"content-length": 28}
    return b"\x88" + b"".join(_incremental(names[name], value) for name, value in nginx_fields(date))


@pytest.mark.parametrize("whole", [False, True])
def test_a_block_repeated_with_incremental_indexing_is_soon_answered_from_the_last_decode(
    whole: bool,
) -> None:
    counting, plain = CountingDecoder(), Decoder()
    ours = BlockDecoder(counting)
    calls = []
    for i in range(400):
        block = _nginx_block(
            b"Sat, 05 Dec 2026 12:00:00 GMT" if i < 200 else b"Sat, 05 Dec 2026 12:00:01 GMT"
        )
        expected = plain.decode(block, raw=True)
        assert (ours.fields(block) if whole else ours.status(block)) == (expected if whole else 200)
        calls.append(counting.calls)
    # The table (4,096 bytes) holds about 22 copies of the four fields: once full of them, the block leaves
    # it as it was and is no longer decoded; the new date starts it over.
    assert calls[199] - calls[100] == 0
    assert calls[399] - calls[300] == 0
    assert calls[399] < 100
    # a block that differs is decoded again (and the table kept in step), then the cache starts over
    other = b"\x88" + _incremental(54, b"other")
    assert ours.status(other) == 200
    plain.decode(other, raw=True)
    last = _nginx_block(b"Sat, 05 Dec 2026 12:00:01 GMT")
    assert ours.fields(last) == plain.decode(last, raw=True)


# --- FrameReader, strip_padding

frames = st.lists(
    st.tuples(st.integers(0, 12), st.integers(0, 255), st.integers(0, 2**31 - 1), st.binary(max_size=200)),
    max_size=20,
)


@given(frames, st.lists(st.integers(0, 5000), max_size=30))
def test_frames_split_anyhow_are_read_whole(sent: list[tuple[int, int, int, bytes]], cuts: list[int]) -> None:
    stream = b"".join(frame(*f) for f in sent)
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    reader = FrameReader(16_384)
    read = []
    for start, end in itertools.pairwise(bounds):
        read += reader.frames(stream[start:end])
    assert read == sent


def test_a_frame_over_the_max_frame_size_is_an_error_from_its_header() -> None:
    reader = FrameReader(16_384)
    assert reader.frames(frame(DATA, 0, 1, b"x" * 16_384)) == [(DATA, 0, 1, b"x" * 16_384)]
    with pytest.raises(FrameError):
        reader.frames(frame(DATA, 0, 1, b"x" * 16_385)[:9])


def test_padding_and_priority_fields_are_stripped() -> None:
    assert strip_padding(PADDED, bytes([3]) + b"data" + b"\0\0\0") == b"data"
    assert strip_padding(PADDED, bytes([0]) + b"data") == b"data"
    assert strip_padding(PADDED, bytes([4]) + b"\0\0\0\0") == b""
    priority = b"\x80\0\0\x03\x10"  # exclusive, depends on 3, weight 16
    assert strip_padding(PRIORITY_FLAG, priority + b"block", priority=True) == b"block"
    assert (
        strip_padding(PADDED | PRIORITY_FLAG, bytes([2]) + priority + b"block\0\0", priority=True) == b"block"
    )
    assert strip_padding(PRIORITY_FLAG, b"data") == b"data"  # DATA has no priority fields


@pytest.mark.parametrize(
    ("flags", "payload", "priority"),
    [
        (PADDED, b"", False),
        (PADDED, bytes([4]) + b"abc", False),
        (PADDED, bytes([200]) + b"abc", False),
        (PADDED | PRIORITY_FLAG, bytes([1]) + b"\0\0\0\x03", True),
        (PRIORITY_FLAG, b"\0\0\0", True),
    ],
)
def test_padding_longer_than_the_frame_is_an_error(flags: int, payload: bytes, priority: bool) -> None:
    with pytest.raises(FrameError):
        strip_padding(flags, payload, priority=priority)


def test_frame_types_round_trip_through_the_reader() -> None:
    reader = FrameReader(16_384)
    data = frame(HEADERS, 0x5, 1, b"\x88") + frame(DATA, 0x1, 1, b"ok")
    assert reader.frames(data) == [(HEADERS, 0x5, 1, b"\x88"), (DATA, 0x1, 1, b"ok")]
