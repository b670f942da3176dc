"""The C ingest path (``media/native/ingest.c``) against its Python twins: same messages, frames, errors.

Differential tests: random chunk streams (ChunkWriter output and hand-made chunks with every header
form, extended timestamps, Abort, Set Chunk Size, limits), mutated and random bytes, fed in random
pieces as bytes, bytearray or memoryview, give the same messages, exceptions, ``buffered`` and
``chunk_size`` after every feed from both readers; random FLV tag bodies give the same
``(frame, as_built)`` or the same exception. Skipped when the C module is not built.
"""

from __future__ import annotations

import gc
import os
import random
import struct
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iotvideo.media import accel, flvtags
from iotvideo.media.frames import Codec, MediaFrame
from iotvideo.media.rtmp import chunk as pychunk
from iotvideo.media.rtmp.chunk import ChunkError, RawMessage, chunk_basic_header

native = accel.native
if native is None or not all(hasattr(native, n) for n in ("ChunkReader", "parse_video_tag", "parse_audio_tag")):
    pytest.skip("the C ingest path is not built (or IOTVIDEO_NATIVE=0)", allow_module_level=True)

CReader = native.ChunkReader
PyReader = pychunk.ChunkReader
FUZZ = settings(  # IOTVIDEO_FUZZ_EXAMPLES=5000 for a longer soak
    max_examples=int(os.environ.get("IOTVIDEO_FUZZ_EXAMPLES", "300")), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


# --- helpers --------------------------------------------------------------------------------------


def as_input(data: bytes, kind: int) -> bytes | bytearray | memoryview:
    if kind == 1:
        return bytearray(data)
    if kind == 2:
        return memoryview(b"??" + data)[2:]
    return data


def feed_both(pieces: list[bytes], kinds: list[int] | None = None, **limits: Any) -> list[Any]:
    """Feed ``pieces`` to a C and a Python reader; assert equal outcomes after every feed."""
    readers = (CReader(**limits), PyReader(**limits))
    trace = []
    for k, piece in enumerate(pieces):
        kind = kinds[k % len(kinds)] if kinds else 0
        outcomes = []
        for reader in readers:
            try:
                got: Any = reader.feed(as_input(piece, kind))
                assert type(got) is list
                for m in got:
                    assert type(m) is RawMessage and type(m.payload) is bytes
                    assert all(type(v) is int for v in (m.type_id, m.stream_id, m.timestamp))
                got = [(m.type_id, m.stream_id, m.timestamp, m.payload) for m in got]
            except ChunkError as exc:
                got = ("ChunkError", str(exc))
            outcomes.append((got, reader.buffered, reader.chunk_size))
        assert outcomes[0] == outcomes[1], f"feed {k}"
        trace.append(outcomes[0])
    return trace


def cut(wire: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(wire)) for c in cuts}) + [len(wire)]
    pieces, prev = [], 0
    for p in points:
        pieces.append(wire[prev:p])
        prev = p
    return pieces


def header(fmt: int, csid: int, field: int, length: int = 0, type_id: int = 0, stream_id: int = 0) -> bytes:
    basic = chunk_basic_header(fmt, csid)
    f24 = min(field, 0xFFFFFF).to_bytes(3, "big")
    ext = struct.pack(">I", field) if field >= 0xFFFFFF else b""
    if fmt == 0:
        return basic + f24 + length.to_bytes(3, "big") + bytes([type_id]) + struct.pack("<I", stream_id) + ext
    if fmt == 1:
        return basic + f24 + length.to_bytes(3, "big") + bytes([type_id]) + ext
    if fmt == 2:
        return basic + f24 + ext
    return basic


# --- chunk streams --------------------------------------------------------------------------------

_written = st.lists(
    st.tuples(
        st.sampled_from([2, 3, 4, 6, 63, 64, 319, 320, 65599]),
        st.sampled_from([1, 2, 8, 9, 18, 20]),
        st.sampled_from([0, 1, 0x01020304]),
        st.one_of(st.integers(0, 5000), st.integers(0xFFFFF0, 0x1000100), st.integers(0, 2**32 - 1)),
        st.binary(max_size=900),
    ),
    max_size=12,
)


@FUZZ
@given(
    _written,
    st.lists(st.integers(1, 700), min_size=1, max_size=3),
    st.lists(st.integers(0, 12000), max_size=10),
    st.lists(st.integers(0, 2), min_size=1, max_size=4),
)
def test_written_streams(messages: list[Any], sizes: list[int], cuts: list[int], kinds: list[int]) -> None:
    """ChunkWriter output (Set Chunk Size changes on the way; control types 1 and 2 with random
    bodies too, so invalid sizes and aborts happen) read in random pieces."""
    writer = pychunk.ChunkWriter()
    wire = b""
    for i, (csid, type_id, stream_id, ts, payload) in enumerate(messages):
        if i % 4 == 0 and sizes:
            size = sizes[(i // 4) % len(sizes)]
            wire += writer.write(2, 1, 0, 0, struct.pack(">I", size))
            writer.chunk_size = size
        wire += writer.write(csid, type_id, stream_id, ts, payload)
        if type_id == 1 and len(payload) >= 4:  # what the reader will take as the new size
            value = struct.unpack_from(">I", payload)[0]
            if value and not value & 0x80000000:
                writer.chunk_size = min(value, pychunk.MAX_CHUNK_SIZE)
    feed_both(cut(wire, cuts), kinds)


_hand = st.lists(
    st.tuples(
        st.sampled_from([2, 3, 4, 63, 64, 320]),
        st.integers(0, 3),  # header form
        st.one_of(st.integers(0, 5000), st.integers(0xFFFFF0, 0x1000100), st.integers(0, 2**32 - 1)),
        st.sampled_from([2, 8, 9, 18]),
        st.sampled_from([1, 0x01020304]),
        st.binary(max_size=700),
        st.integers(0, 2),  # continuation chunks: repeat ext (0), leave it out (1), a wrong value (2)
        st.booleans(),  # the message is cut short (a new header, or another chunk stream, follows)
    ),
    max_size=12,
)


@FUZZ
@given(_hand, st.integers(0, 2**32), st.one_of(st.none(), st.integers(1, 400)), st.lists(st.integers(0, 9000), max_size=10))
def test_hand_made_streams(messages: list[Any], seed: int, chunk_size: int | None, cuts: list[int]) -> None:
    """Chunks written by hand: every header form on fresh and known chunk streams (errors
    included), extended timestamps repeated, omitted or wrong in continuation chunks, messages
    interrupted by new headers, Abort messages with random bodies, interleaved chunk streams."""
    order = random.Random(seed)
    size = 128
    wire = bytearray()
    if chunk_size is not None:
        wire += header(0, 2, 0, 4, 1) + struct.pack(">I", chunk_size)
        size = chunk_size
    pending: list[list[bytes]] = []
    for csid, fmt, field, type_id, stream_id, body, ext_mode, short in messages:
        ext = struct.pack(">I", field) if field >= 0xFFFFFF else b""
        if ext and ext_mode == 1:
            ext = b""
        elif ext and ext_mode == 2:
            ext = struct.pack(">I", field ^ 0x5A5A)
        if type_id == 2 and order.random() < 0.5:  # an Abort naming a chunk stream in use
            body = struct.pack(">I", order.choice([3, 4, 63, 64, 320]))
        pieces = [header(fmt, csid, field, len(body), type_id, stream_id) + body[:size]]
        pieces += [chunk_basic_header(3, csid) + (ext if fmt < 3 else b"") + body[o : o + size] for o in range(size, len(body), size)]
        if short and len(pieces) > 1:
            pieces = pieces[: order.randrange(1, len(pieces))]
        pending.append(pieces)
        if order.random() < 0.5:  # interleave with what is pending
            while pending and order.random() < 0.7:
                p = order.choice(pending)
                wire += p.pop(0)
                if not p:
                    pending.remove(p)
    for p in pending:
        wire += b"".join(p)
    feed_both(cut(bytes(wire), cuts), [order.randrange(3)])


@FUZZ
@given(
    st.binary(max_size=900),
    st.integers(1, 64),
    st.sampled_from([{}, {"max_message_size": 300}, {"max_message_size": 2000, "max_pending_bytes": 2500}, {"max_chunk_streams": 2}]),
)
def test_random_bytes(data: bytes, step: int, limits: dict[str, int]) -> None:
    feed_both([data[i : i + step] for i in range(0, len(data), step)] + [b"\x04", b"\x44\x00"], **limits)


@FUZZ
@given(_written, st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6), st.integers(1, 300))
def test_mutated_streams(messages: list[Any], flips: list[tuple[int, int]], step: int) -> None:
    writer = pychunk.ChunkWriter()
    wire = bytearray(b"".join(writer.write(c, t, s, ts, p) for c, t, s, ts, p in messages) or b"\x00")
    for where, value in flips:
        wire[where % len(wire)] = value
    data = bytes(wire)
    feed_both([data[i : i + step] for i in range(0, len(data), step)], max_message_size=4096, max_pending_bytes=6000)


def test_byte_by_byte_extended_timestamps() -> None:
    ts = 0x01234567
    body = bytes(range(256)) * 3
    for cont in (struct.pack(">I", ts), b"", struct.pack(">I", ts + 1)):
        wire = header(0, 4, ts, len(body), 9, 1) + body[:128]
        for o in range(128, len(body), 128):
            wire += b"\xc4" + cont + body[o : o + 128]
        wire += header(3, 4, 0) + cont + body[:128]  # a new type-3 message adds the last delta
        trace = feed_both([wire[i : i + 1] for i in range(len(wire))])
        assert any(t[0] for t in trace)


def test_errors_kill_both_readers_alike() -> None:
    cases = [
        header(0, 2, 0, 4, 1) + struct.pack(">I", 0),  # invalid chunk size
        header(0, 2, 0, 4, 1) + struct.pack(">I", 0x80000000),
        header(0, 2, 0, 2, 1) + b"\x00\x01",  # control message too short
        header(0, 2, 0, 0, 2),
        b"\xc4abc",  # type 3 before any header
        header(2, 4, 5),  # type 2 before any length
        header(0, 4, 0, 9000, 9, 1),  # over max_message_size
        b"".join(header(0, c, 0, 1000, 9, 1) + bytes(128) for c in range(3, 9)),  # over max_pending_bytes
    ]
    for wire in cases:
        trace = feed_both([wire, b"", header(0, 5, 0, 1, 9, 1) + b"x"], max_message_size=8000, max_pending_bytes=3500)
        assert trace[0][0][0] == "ChunkError" and trace[1][0] == trace[2][0] == trace[0][0]
        assert trace[2][1] == 0  # nothing held after an error
    trace = feed_both([b"".join(header(0, c, 0, 0, 9, 1) for c in range(3, 7))], max_chunk_streams=3)
    assert trace[0][0] == ("ChunkError", "more than 3 chunk streams")


def test_reader_surface() -> None:
    r = CReader(max_message_size=1000)
    assert (r.chunk_size, r.buffered, r.max_message_size, r.max_pending_bytes, r.max_chunk_streams) == (128, 0, 1000, 2000, 64)
    r.chunk_size = 10  # as a connection may set it
    got = r.feed(header(0, 4, 7, 25, 9, 1) + bytes(10) + b"\xc4" + bytes(10) + b"\xc4" + bytes(2))
    assert got == [] and r.buffered == 22
    assert r.feed(bytearray(b"\x00\x00\x00")) == [RawMessage(9, 1, 7, bytes(25))]
    assert r.buffered == 0
    with pytest.raises(TypeError):
        r.feed("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        CReader(1000)  # type: ignore[misc]
    with pytest.raises(ValueError):
        r.chunk_size = 0
    assert r.feed(b"") == []
    with pytest.raises(AttributeError):
        r.other = 1  # type: ignore[attr-defined]


def test_big_messages_in_small_reads() -> None:
    body = random.Random(1).randbytes(300_000)
    wire = pychunk.ChunkWriter().write(6, 9, 1, 40, body)
    for step in (1000, 4096, 16384, 65536):
        trace = feed_both([wire[i : i + step] for i in range(0, len(wire), step)])
        assert [t[0] for t in trace if t[0]] == [[(9, 1, 40, body)]]


def test_no_references_leak() -> None:
    """Refcounts of what the reader hands out and holds stay put over many feeds (CPython only)."""
    writer = pychunk.ChunkWriter()
    wire = b"".join(writer.write(4, 9, 1, t * 40, bytes(3000)) for t in range(50))
    reader = CReader()
    gc.collect()
    before = sys.getrefcount(RawMessage), sys.getrefcount(ChunkError)
    for _ in range(200):
        for i in range(0, len(wire), 1000):
            reader.feed(wire[i : i + 1000])
    bad = CReader()
    for _ in range(200):
        try:
            bad.feed(b"\xc4")
        except ChunkError:
            pass
    del bad  # it holds its ChunkError (whose traceback holds the frame that holds it: gc's work)
    gc.collect()
    assert (sys.getrefcount(RawMessage), sys.getrefcount(ChunkError)) == before


# --- FLV tags -------------------------------------------------------------------------------------


def call(func: Any, payload: Any, timestamp: Any) -> Any:
    try:
        frame, as_built = func(payload, timestamp)
    except (flvtags.FlvError, TypeError) as exc:
        return (type(exc), str(exc))
    assert type(as_built) is bool
    if frame is None:
        return (None, as_built)
    assert type(frame) is MediaFrame and isinstance(frame.codec, Codec)
    fields = (frame.codec, frame.dts, frame.pts, frame.data, frame.keyframe, frame.is_config, frame.sample_rate, frame.channels)
    return ([(type(v), v) for v in fields], as_built, hash(frame) if type(frame.data) is bytes else None)


def same_video(payload: Any, timestamp: Any) -> None:
    assert call(native.parse_video_tag, payload, timestamp) == call(flvtags.parse_video_tag, payload, timestamp)


def same_audio(payload: Any, timestamp: Any) -> None:
    assert call(native.parse_audio_tag, payload, timestamp) == call(flvtags.parse_audio_tag, payload, timestamp)


_nals = st.lists(st.binary(min_size=1, max_size=40), max_size=4)
_video_data = st.one_of(
    _nals.map(lambda ns: b"".join(struct.pack(">I", len(n)) + n for n in ns)),  # length-prefixed
    _nals.map(lambda ns: b"".join(b"\x00\x00\x00\x01" + n for n in ns)),  # Annex B
    _nals.map(lambda ns: b"".join(b"\x00\x00\x01" + n + b"\x00" for n in ns)),  # Annex B, trailing zeros
    st.lists(st.sampled_from([b"\x00", b"\x01", b"\x00\x00\x01", b"\x00\x00\x00\x01", b"\x65", b"\x00\x00\x00\x02"]), max_size=10).map(b"".join),
    st.binary(max_size=60),
)
_timestamps = st.one_of(st.integers(0, 2**32 - 1), st.integers(-(2**40), 2**40), st.just(2**70))


@FUZZ
@given(
    st.one_of(st.integers(0, 255), st.sampled_from([0x17, 0x27, 0x1C, 0x2C, 0x47, 0x37, 0x57, 0x07, 0x77, 0x12])),
    st.integers(0, 3),
    st.integers(0, 0xFFFFFF),
    _video_data,
    _timestamps,
)
def test_legacy_video_tags(b0: int, packet_type: int, cts: int, data: bytes, ts: int) -> None:
    same_video(bytes([b0, packet_type]) + cts.to_bytes(3, "big") + data, ts)


@FUZZ
@given(
    st.one_of(st.integers(0x80, 0xFF), st.sampled_from([0x90, 0x91, 0x93, 0xA1, 0xA3, 0x92, 0x94, 0xD4, 0xD1, 0x96, 0x97, 0x95, 0x98])),
    st.one_of(st.sampled_from([b"avc1", b"hvc1", b"av01", b"hvc"]), st.binary(max_size=4)),
    st.binary(max_size=3),
    _video_data,
    _timestamps,
)
def test_enhanced_video_tags(b0: int, fourcc: bytes, cts: bytes, data: bytes, ts: int) -> None:
    same_video(bytes([b0]) + fourcc + cts + data, ts)


@FUZZ
@given(
    st.one_of(st.integers(0, 255), st.sampled_from([0xAF, 0xAE, 0xA0, 0x72, 0x7F, 0x82, 0x8D, 0x90])),
    st.integers(0, 3),
    st.one_of(st.binary(max_size=12), st.sampled_from([b"\x12\x10", b"\x11\x90", b"\xf8\x00", b"\x17\x80\x00\x00\x01\x00", b"\x13\x88"])),
    _timestamps,
)
def test_audio_tags(b0: int, packet_type: int, data: bytes, ts: int) -> None:
    same_audio(bytes([b0, packet_type]) + data, ts)
    same_audio(bytes([b0]) + data[:1], ts)


@FUZZ
@given(st.binary(max_size=40), _timestamps)
def test_random_tag_bodies(payload: bytes, ts: int) -> None:
    same_video(payload, ts)
    same_audio(payload, ts)


def test_tag_inputs_the_c_path_leaves_to_python() -> None:
    body = b"\x17\x01\x00\x00\x28" + struct.pack(">I", 2) + b"\x65\x88"
    for payload in (body, bytearray(body), memoryview(body)):
        for ts in (1000, 2**80, True, 1.5, "x"):
            same_video(payload, ts)
            same_audio(b"\xaf\x01\x21", ts)
    assert native.parse_video_tag(payload=body, timestamp=5) == flvtags.parse_video_tag(body, 5)
    for args in ((), (body,), (body, 1, 2)):
        with pytest.raises(TypeError):
            native.parse_video_tag(*args)


def test_common_tags_build_equal_frames() -> None:
    nals = struct.pack(">I", 3) + b"\x65\x88\x84"
    frame, as_built = native.parse_video_tag(b"\x17\x01\x00\x00\x28" + nals, 1000)
    assert as_built and frame == MediaFrame(Codec.H264, 1000, 1040, nals, keyframe=True)
    assert hash(frame) == hash(MediaFrame(Codec.H264, 1000, 1040, nals, keyframe=True))
    frame, as_built = native.parse_video_tag(b"\xa3hvc1" + nals, 7)
    assert as_built and frame == MediaFrame(Codec.H265, 7, 7, nals)
    frame, as_built = native.parse_audio_tag(b"\xaf\x01\x21\x10", 9)
    assert as_built and frame == MediaFrame(Codec.AAC, 9, 9, b"\x21\x10")
    frame, as_built = native.parse_audio_tag(b"\xaf\x00\x12\x10", 0)
    assert as_built and frame == MediaFrame(Codec.AAC, 0, 0, b"\x12\x10", is_config=True, sample_rate=44100, channels=2)
    with pytest.raises(flvtags.UnsupportedCodec, match="sound format 2"):
        native.parse_audio_tag(b"\x2f\x01", 0)
    with pytest.raises(flvtags.UnsupportedCodec, match="av01"):
        native.parse_video_tag(b"\x91av01\x00\x00\x00", 0)
