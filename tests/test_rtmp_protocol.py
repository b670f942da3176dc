"""Sans-IO RTMP core: AMF0, handshake, chunk streams, server/client conversations, FFmpeg byte vectors, fuzzing."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import random
import shutil
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iotvideo.media import accel, flvtags
from iotvideo.media.frames import Codec
from iotvideo.media.rtmp import (
    UNDEFINED,
    AmfDate,
    AmfError,
    ChunkError,
    ChunkReader,
    ChunkWriter,
    ClientHandshake,
    Connected,
    ConnectionClosed,
    ConnectRejected,
    ConnectRequest,
    CreateStream,
    DeleteStream,
    EcmaArray,
    HandshakeError,
    MediaData,
    Metadata,
    PlayRequest,
    ProtocolError,
    PublishRequest,
    RtmpClientConnection,
    RtmpServerConnection,
    RtmpUsageError,
    ServerHandshake,
    SharedMessage,
    StreamCreated,
    StreamStatus,
    amf0,
    shared_video,
)
from iotvideo.media.rtmp.chunk import chunk_basic_header
from iotvideo.media.rtmp.messages import (
    CommandMessage,
    DataMessage,
    MessageError,
    SetChunkSize,
    UserControl,
    UserControlEvent,
    parse_message,
    split_aggregate,
)

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
QUICK = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HS = 1536

# --- helpers --------------------------------------------------------------------------------------


def fixed_random(n: int) -> bytes:
    return bytes(i * 7 % 251 for i in range(n))


def pump(client: RtmpClientConnection, server: RtmpServerConnection) -> tuple[list[Any], list[Any]]:
    """Shuttle bytes both ways until quiet; return (server events, client events)."""
    s_events: list[Any] = []
    c_events: list[Any] = []
    for _ in range(50):
        a = client.data_to_send()
        if a:
            s_events += server.receive_data(a)
        b = server.data_to_send()
        if b:
            c_events += client.receive_data(b)
        if not a and not b:
            return s_events, c_events
    raise AssertionError("conversation did not settle")


def connected_pair(**server_kw: Any) -> tuple[RtmpClientConnection, RtmpServerConnection]:
    client = RtmpClientConnection("live", "rtmp://127.0.0.1/live")
    server = RtmpServerConnection(**server_kw)
    s_ev, _ = pump(client, server)
    assert s_ev == [ConnectRequest("live", "rtmp://127.0.0.1/live", s_ev[0].command_object)]
    assert server.accept_connect() == []
    _, c_ev = pump(client, server)
    assert isinstance(c_ev[0], Connected)
    assert c_ev[0].info["code"] == "NetConnection.Connect.Success"
    return client, server


def created_stream(client: RtmpClientConnection, server: RtmpServerConnection) -> int:
    tid = client.create_stream()
    s_ev, c_ev = pump(client, server)
    assert len(s_ev) == 1 and isinstance(s_ev[0], CreateStream)
    assert c_ev == [StreamCreated(tid, s_ev[0].stream_id)]
    return s_ev[0].stream_id


class Tap:
    """Decodes what one side sends (after the handshake) into typed messages, to check answers."""

    def __init__(self, handshake_bytes: int) -> None:
        self.skip = handshake_bytes
        self.reader = ChunkReader()

    def feed(self, data: bytes) -> list[Any]:
        if self.skip:
            cut = min(self.skip, len(data))
            self.skip -= cut
            data = data[cut:]
        return [parse_message(m.type_id, m.payload, m.timestamp, m.stream_id) for m in self.reader.feed(data)]


def chunk(fmt: int, csid: int, ts: int = 0, length: int = 0, type_id: int = 0, stream_id: int = 0) -> bytes:
    """A chunk header written by hand from the spec (section 5.3.1), independent of ChunkWriter."""
    basic = bytes([(fmt << 6) | csid])
    if fmt == 0:
        return basic + ts.to_bytes(3, "big") + length.to_bytes(3, "big") + bytes([type_id]) + struct.pack("<I", stream_id)
    if fmt == 1:
        return basic + ts.to_bytes(3, "big") + length.to_bytes(3, "big") + bytes([type_id])
    if fmt == 2:
        return basic + ts.to_bytes(3, "big")
    return basic


def chunked(csid: int, body: bytes, size: int, first_header: bytes) -> bytes:
    """``body`` split at ``size`` with type-3 continuation headers."""
    out = first_header + body[:size]
    for off in range(size, len(body), size):
        out += bytes([0xC0 | csid]) + body[off : off + size]
    return out


# --- AMF0 -----------------------------------------------------------------------------------------

_keys = st.text(max_size=12)
_scalars = (
    st.floats(allow_nan=False)
    | st.booleans()
    | st.text(max_size=40)
    | st.none()
    | st.just(UNDEFINED)
    | st.builds(AmfDate, st.floats(allow_nan=False), st.integers(-32768, 32767))
)
amf_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(_keys, inner, max_size=5)
    | st.dictionaries(_keys, inner, max_size=5).map(EcmaArray),
    max_leaves=25,
)


def same_types(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_types(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return all(same_types(x, y) for x, y in zip(a, b, strict=True))
    return True


@FUZZ
@given(st.lists(amf_values, max_size=4))
def test_amf0_round_trip(values: list[Any]) -> None:
    data = amf0.encode(*values)
    decoded = amf0.decode(data)
    assert decoded == values
    assert same_types(decoded, values)
    assert amf0.encode(*decoded) == data


def test_amf0_spec_vectors() -> None:
    assert amf0.encode("connect") == b"\x02\x00\x07connect"
    assert amf0.encode(1) == b"\x00\x3f\xf0" + bytes(6)
    assert amf0.encode(True, None, UNDEFINED) == b"\x01\x01\x05\x06"
    assert amf0.encode({"a": 1.0}) == b"\x03\x00\x01a\x00\x3f\xf0" + bytes(6) + b"\x00\x00\x09"
    assert amf0.encode(EcmaArray(a=False)) == b"\x08\x00\x00\x00\x01\x00\x01a\x01\x00\x00\x00\x09"
    assert amf0.encode([1.0]) == b"\x0a\x00\x00\x00\x01\x00\x3f\xf0" + bytes(6)
    assert amf0.encode(AmfDate(0.0, 0)) == b"\x0b" + bytes(10)
    long = "x" * 70000
    assert amf0.encode(long)[:5] == b"\x0c\x00\x01\x11\x70"
    assert amf0.decode(amf0.encode(long)) == [long]
    # An ECMA array whose writer left out the end marker at the end of the data (seen in the wild).
    assert amf0.decode(b"\x08\x00\x00\x00\x01\x00\x01a\x05") == [{"a": None}]
    # The count of an ECMA array is advisory.
    assert amf0.decode(b"\x08\x00\x00\x00\x09\x00\x01a\x05\x00\x00\x09") == [{"a": None}]
    # Invalid UTF-8 survives a round trip byte for byte.
    raw = b"\x02\x00\x02\xff\xfe"
    assert amf0.encode(*amf0.decode(raw)) == raw
    assert amf0.decode_value(b"\x05\x01\x00", 1) == (False, 3)


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x3f",  # truncated number
        b"\x02\x00\x05ab",  # truncated string
        b"\x03\x00\x01a\x05",  # object without end marker
        b"\x09",  # object end at top level
        b"\x0d",  # unsupported marker
        b"\x11\x01",  # AMF3 switch
        b"\x07\x00\x01",  # reference
        b"\x0a\xff\xff\xff\xff\x05",  # strict array count past the data
        b"\x0c\x00\x00\x10\x00abc",  # truncated long string
        b"\x03" * 40,  # deeper than MAX_DEPTH
    ],
)
def test_amf0_malformed(data: bytes) -> None:
    with pytest.raises(AmfError):
        amf0.decode(data)


def test_amf0_encode_limits() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    for bad in (cyclic, b"bytes", {1: 2}, 10**400, object(), "\ud800"):
        with pytest.raises(AmfError):
            amf0.encode(bad)
    nested: Any = 1.0
    for _ in range(amf0.MAX_DEPTH):
        nested = [nested]
    assert amf0.decode(amf0.encode(nested)) == [nested]
    with pytest.raises(AmfError):
        amf0.encode([nested])


@FUZZ
@given(st.binary(max_size=300))
def test_amf0_fuzz_random(data: bytes) -> None:
    try:
        amf0.decode(data)
    except AmfError:
        pass


@FUZZ
@given(st.lists(amf_values, min_size=1, max_size=3), st.data())
def test_amf0_fuzz_mutated(values: list[Any], data: st.DataObject) -> None:
    raw = bytearray(amf0.encode(*values))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    try:
        decoded = amf0.decode(bytes(raw))
    except AmfError:
        return
    if not any(isinstance(v, float) and math.isnan(v) for v in decoded):
        amf0.encode(*decoded)  # whatever decodes, encodes


# --- handshake ------------------------------------------------------------------------------------


def complex_c1(version: bytes = b"\x09\x00\x7c\x02") -> bytes:
    """C1 as FFmpeg/OBS write it when publishing: a version in bytes 4-7 and an HMAC digest (scheme 0)."""
    body = bytearray(bytes(4) + version + fixed_random(HS - 8))
    offset = (sum(body[8:12]) % 728) + 12
    key = b"Genuine Adobe Flash Player 001"
    digest = hmac.new(key, bytes(body[:offset] + body[offset + 32 :]), hashlib.sha256).digest()
    body[offset : offset + 32] = digest
    return bytes(body)


def test_server_handshake_answers_simple_scheme_to_digest_client() -> None:
    hs = ServerHandshake(random=fixed_random)
    c1 = complex_c1()
    assert hs.receive_data(b"\x03" + c1[:100]) == 101
    assert hs.data_to_send() == b""
    assert hs.receive_data(c1[100:] + b"C2") == HS - 100 + 2
    out = hs.data_to_send()
    assert len(out) == 1 + 2 * HS
    assert out[0] == 3
    s1, s2 = out[1 : 1 + HS], out[1 + HS :]
    assert s1[4:8] == b"\x00\x00\x00\x00"  # FFmpeg players would otherwise look for a digest
    assert s2 == c1
    assert hs.peer_version == b"\x09\x00\x7c\x02"
    assert not hs.done
    used = hs.receive_data(bytes(HS - 2) + b"\x02\x00")
    assert used == HS - 2 and hs.done


def test_client_and_server_handshake() -> None:
    client = ClientHandshake(random=fixed_random)
    server = ServerHandshake(random=lambda n: bytes(n))
    c0c1 = client.data_to_send()
    assert len(c0c1) == 1 + HS and c0c1[5:9] == bytes(4)
    server.receive_data(c0c1)
    s012 = server.data_to_send()
    for i in range(0, len(s012), 1000):  # in pieces
        client.receive_data(s012[i : i + 1000])
    assert client.done
    c2 = client.data_to_send()
    assert c2 == s012[1 : 1 + HS]
    assert server.receive_data(c2 + b"rest") == HS and server.done


@pytest.mark.parametrize("version", [0, 6, 0x47])
def test_handshake_wrong_version(version: int) -> None:
    with pytest.raises(HandshakeError):
        ServerHandshake().receive_data(bytes([version]) + bytes(HS))
    conn = RtmpServerConnection()
    events = conn.receive_data(bytes([version]) + bytes(HS))
    assert len(events) == 1 and isinstance(events[0], ProtocolError) and f"version {version}" in events[0].reason
    assert conn.closed and conn.receive_data(b"more") == []


# --- chunk streams --------------------------------------------------------------------------------

_messages = st.lists(
    st.tuples(
        st.sampled_from([2, 3, 4, 5, 6, 8, 63, 64, 319, 320, 65599]),  # csid: 1, 2 and 3-byte basic headers
        st.sampled_from([8, 9, 18, 20]),
        st.sampled_from([0, 1, 2, 0x01020304]),
        st.one_of(st.integers(0, 5000), st.integers(0xFFFFF0, 0x1000100), st.integers(0, 2**32 - 1)),
        st.binary(max_size=700),
    ),
    max_size=12,
)


@FUZZ
@given(_messages, st.integers(1, 600), st.integers(1, 600), st.lists(st.integers(0, 4000), max_size=6))
def test_chunk_round_trip(messages: list[Any], size1: int, size2: int, cuts: list[int]) -> None:
    writer = ChunkWriter()
    wire = b""
    expect = []
    half = len(messages) // 2
    for i, (csid, type_id, stream_id, ts, payload) in enumerate(messages):
        if i in (0, half):  # announce a chunk size, then change it mid-stream
            size = size1 if i == 0 else size2
            wire += writer.write(2, 1, 0, 0, SetChunkSize(size).encode())
            writer.chunk_size = size
            expect.append((1, 0, 0, struct.pack(">I", size)))
        wire += writer.write(csid, type_id, stream_id, ts, payload)
        expect.append((type_id, stream_id, ts & 0xFFFFFFFF, payload))
    reader = ChunkReader()
    got = []
    prev = 0
    for cut in sorted({min(c, len(wire)) for c in cuts}) + [len(wire)]:
        got += reader.feed(wire[prev:cut])
        prev = cut
        assert reader.buffered <= 18 + sum(len(m[4]) for m in messages)
    assert [(m.type_id, m.stream_id, m.timestamp, m.payload) for m in got] == expect
    assert reader.buffered == 0


_shared_sends = st.lists(
    st.tuples(
        st.integers(0, 2),  # which writer (player)
        st.integers(0, 5),  # which message
        st.sampled_from([1, 2, 0x01020304]),  # the player's message stream id
        st.one_of(st.integers(0, 5000), st.integers(0xFFFFF0, 0x1000100), st.integers(0, 2**32 - 1)),
    ),
    max_size=40,
)


@FUZZ
@given(
    st.lists(st.tuples(st.sampled_from([4, 6, 64, 320]), st.sampled_from([8, 9]), st.binary(max_size=700)),
             min_size=6, max_size=6),
    _shared_sends,
    st.lists(st.integers(1, 600), min_size=3, max_size=3),
)
def test_shared_messages_are_byte_for_byte_what_the_chunk_writer_writes(
    bodies: list[tuple[int, int, bytes]], sends: list[tuple[int, int, int, int]], sizes: list[int]
) -> None:
    """Several writers (players, each with its own chunk size and header state) send the same
    messages: ``write_shared`` gives exactly ``write``'s bytes, extended timestamps included."""
    shared = [SharedMessage(csid, type_id, body) for csid, type_id, body in bodies]
    reference = [ChunkWriter(size) for size in sizes]
    writers = [ChunkWriter(size) for size in sizes]
    for i, m, stream_id, ts in sends:
        csid, type_id, body = bodies[m]
        expect = reference[i].write(csid, type_id, stream_id, ts, body)
        assert writers[i].write_shared(shared[m], stream_id, ts) == expect


_WRITERS = [pytest.param((ChunkWriter, lambda body: SharedMessage(6, 9, body)), id="python")]
if accel.RtmpOut is not None:
    _WRITERS.append(pytest.param((accel.ChunkWriter, lambda body: accel.SharedMessage(6, 9, body)), id="c"))


@pytest.mark.parametrize("impl", _WRITERS)
def test_shared_message_with_extended_timestamps_reads_back(impl: Any) -> None:
    """Past 0xFFFFFF every chunk repeats the 4-byte timestamp: two players far apart in time."""
    writer_cls, shared_video = impl
    body = bytes(range(256)) * 40
    msg = shared_video(body)
    early, late = writer_cls(4096), writer_cls(4096)
    wire_early = early.write_shared(msg, 1, 1000)
    wire_late = late.write_shared(msg, 1, 0x1234567)
    assert wire_late.count(struct.pack(">I", 0x1234567)) == 3  # first header + two continuation chunks
    for wire, ts in ((wire_early, 1000), (wire_late, 0x1234567)):
        reader = ChunkReader()
        reader.chunk_size = 4096
        (got,) = reader.feed(wire)
        assert (got.timestamp, got.stream_id, got.type_id, got.payload) == (ts, 1, 9, body)
    # the next frame: both players send the same delta (a type-1 header), so they share one message
    nxt = shared_video(b"\x27\x01\x00\x00\x00" + bytes(5000))
    assert early.write_shared(nxt, 1, 1040) is late.write_shared(nxt, 1, 0x1234567 + 40)  # built once
    # a delta of 0xFFFFFF is extended too: the continuation chunks (type 3, csid 6) repeat it
    assert late.write_shared(shared_video(body), 1, 0x1234567 + 40 + 0xFFFFFF).count(b"\xc6\x00\xff\xff\xff") == 2


def test_chunk_header_forms_from_spec() -> None:
    # Example 1 of the spec (5.3.2.1): audio messages, type 0 then type 2 then type 3.
    wire = (
        chunk(0, 3, 1000, 32, 8, 12345) + bytes(32)
        + chunk(2, 3, 20) + bytes(32)
        + chunk(3, 3) + bytes(32)
        + chunk(3, 3) + bytes(32)
    )  # fmt: skip
    got = ChunkReader().feed(wire)
    assert [(m.timestamp, m.stream_id, m.type_id) for m in got] == [(1000, 12345, 8), (1020, 12345, 8), (1040, 12345, 8), (1060, 12345, 8)]
    # Example 2: a 307-byte video message in 128-byte chunks.
    body = bytes(range(256)) + bytes(51)
    got = ChunkReader().feed(chunked(4, body, 128, chunk(0, 4, 1000, 307, 9, 12346)))
    assert got[0].payload == body and got[0].timestamp == 1000
    # Two- and three-byte basic headers.
    for csid, basic in ((64, b"\x00\x00"), (319, b"\x00\xff"), (320, b"\x01\x00\x01"), (65599, b"\x01\xff\xff")):
        wire = basic + (5).to_bytes(3, "big") + (2).to_bytes(3, "big") + b"\x09" + bytes(4) + b"hi"
        assert ChunkReader().feed(wire)[0].payload == b"hi"
        assert ChunkWriter().write(csid, 9, 0, 5, b"hi") == wire


def test_type3_after_type0_adds_the_type0_field() -> None:
    # FFmpeg, librtmp and SRS read a new type-3 message after a type-0 header as adding that
    # header's timestamp field; FFmpeg's writer relies on it. Our writer never produces it.
    wire = chunk(0, 6, 40, 1, 9, 1) + b"a" + chunk(3, 6) + b"b"
    assert [m.timestamp for m in ChunkReader().feed(wire)] == [40, 80]
    writer = ChunkWriter()
    out = writer.write(6, 9, 1, 40, b"a") + writer.write(6, 9, 1, 80, b"b")
    assert out[13] == 0x86  # type 2, not type 3, after the type-0 header
    assert [m.timestamp for m in ChunkReader().feed(out)] == [40, 80]


@pytest.mark.parametrize("repeat_in_continuation", [True, False])
def test_extended_timestamp_type3_quirk(repeat_in_continuation: bool) -> None:
    ts = 0x01234567
    body = bytes(range(200))
    ext = struct.pack(">I", ts)
    wire = chunk(0, 4, 0xFFFFFF, 200, 9, 1) + ext + body[:128] + b"\xc4"
    if repeat_in_continuation:  # the spec (and FFmpeg) repeat it; some encoders do not
        wire += ext
    wire += body[128:]
    reader = ChunkReader()
    got = []
    for i in range(len(wire)):  # byte by byte
        got += reader.feed(wire[i : i + 1])
        assert reader.buffered <= 18 + 200
    assert [(m.timestamp, m.payload) for m in got] == [(ts, body)]
    # Our writer repeats the extended field in continuation chunks.
    out = ChunkWriter().write(4, 9, 1, ts, body)
    assert out.count(ext) == 2


def test_set_chunk_size_limits_and_abort() -> None:
    for value in (0, 0x80000000, 0xFFFFFFFF):
        reader = ChunkReader()
        with pytest.raises(ChunkError):
            reader.feed(chunk(0, 2, 0, 4, 1) + struct.pack(">I", value))
        with pytest.raises(ChunkError):  # dead after an error
            reader.feed(b"\x02")
    reader = ChunkReader()
    reader.feed(chunk(0, 2, 0, 4, 1) + struct.pack(">I", 0x7FFFFFFF))
    assert reader.chunk_size == 16 * 1024 * 1024  # legal, and acts like the largest useful size
    # Abort: the partial message on csid 4 is dropped; the next one is whole.
    reader = ChunkReader()
    got = reader.feed(chunk(0, 4, 0, 300, 9, 1) + bytes(128) + chunk(0, 2, 0, 4, 2) + struct.pack(">I", 4))
    assert [m.type_id for m in got] == [2]
    got = reader.feed(chunk(0, 4, 7, 3, 9, 1) + b"abc")
    assert [(m.timestamp, m.payload) for m in got] == [(7, b"abc")]
    assert reader.buffered == 0


def test_chunk_reader_limits() -> None:
    with pytest.raises(ChunkError, match="max_message_size"):
        ChunkReader(max_message_size=1000).feed(chunk(0, 4, 0, 1001, 9, 1))
    reader = ChunkReader(max_message_size=1000, max_pending_bytes=1500)
    reader.feed(chunk(0, 4, 0, 1000, 9, 1) + bytes(128))
    with pytest.raises(ChunkError, match="in progress"):
        reader.feed(chunk(0, 5, 0, 1000, 8, 1))
    reader = ChunkReader(max_chunk_streams=3)
    with pytest.raises(ChunkError, match="chunk streams"):
        reader.feed(b"".join(chunk(0, c, 0, 0, 9, 1) for c in range(3, 7)))
    with pytest.raises(ChunkError, match="before any header"):
        ChunkReader().feed(b"\xc4abc")
    with pytest.raises(ChunkError, match="type-2"):
        ChunkReader().feed(chunk(2, 4, 5))
    # A new header in the middle of a message replaces it (FFmpeg's reading).
    reader = ChunkReader()
    got = reader.feed(chunk(0, 4, 0, 300, 9, 1) + bytes(128) + chunk(0, 4, 9, 2, 9, 1) + b"ok")
    assert [(m.timestamp, m.payload) for m in got] == [(9, b"ok")]
    assert reader.buffered == 0
    # Zero-length messages are delivered.
    assert ChunkReader().feed(chunk(0, 3, 0, 0, 20, 0))[0].payload == b""


@QUICK
@given(st.binary(max_size=600))
def test_chunk_reader_fuzz(data: bytes) -> None:
    reader = ChunkReader(max_message_size=4096, max_pending_bytes=8192)
    try:
        for i in range(0, len(data), 37):
            reader.feed(data[i : i + 37])
            assert reader.buffered <= 8192 + 18
    except ChunkError:
        pass


class _GeneralReader(ChunkReader):
    """The chunk reader without its fast path for whole multi-chunk messages: chunk by chunk only."""

    __slots__ = ()

    def _run(self, st: Any, view: memoryview, pos: int, n: int, out: list[Any]) -> int:
        return pos


class _CountingReader(ChunkReader):
    __slots__ = ("fast",)

    def __init__(self) -> None:
        super().__init__()
        self.fast = 0

    def _run(self, st: Any, view: memoryview, pos: int, n: int, out: list[Any]) -> int:
        end = super()._run(st, view, pos, n, out)
        self.fast += end != pos
        return end


def _interleaved_wire(rounds: list[Any], order: random.Random) -> bytes:
    """Messages as chunks written by hand: each round's messages (one per chunk stream) interleaved
    chunk by chunk in a random order, a Set Chunk Size before the round when it has one. Header
    forms are as drawn (type 1–3 on a fresh chunk stream becomes type 0); extended timestamps
    are repeated in continuation chunks unless the message says not to."""
    wire = bytearray()
    size = 128
    lengths: dict[int, int] = {}
    for new_size, messages in rounds:
        if new_size is not None:
            wire += chunked(2, struct.pack(">I", new_size), size, chunk(0, 2, 0, 4, 1))
            size = new_size
        pending = []
        for csid, fmt, field, type_id, stream_id, body, repeat_ext in messages:
            if csid not in lengths:
                fmt = 0
            if fmt >= 2:  # the length is the chunk stream's last
                body = (body * (lengths[csid] // max(len(body), 1) + 1))[: lengths[csid]]
            lengths[csid] = len(body)
            ext = struct.pack(">I", field) if field >= 0xFFFFFF and fmt < 3 else b""
            basic = chunk_basic_header(fmt, csid)
            f24 = min(field, 0xFFFFFF).to_bytes(3, "big")
            if fmt == 0:
                head = basic + f24 + len(body).to_bytes(3, "big") + bytes([type_id]) + struct.pack("<I", stream_id)
            elif fmt == 1:
                head = basic + f24 + len(body).to_bytes(3, "big") + bytes([type_id])
            else:
                head = basic + (f24 if fmt == 2 else b"")
            cont = chunk_basic_header(3, csid) + (ext if repeat_ext else b"")
            pieces = [head + ext + body[:size]]
            pieces += [cont + body[off : off + size] for off in range(size, len(body), size)]
            pending.append(pieces)
        while pending:
            pieces = order.choice(pending)
            wire += pieces.pop(0)
            if not pieces:
                pending.remove(pieces)
    return bytes(wire)


_round_messages = st.lists(
    st.tuples(
        st.sampled_from([3, 4, 6, 63, 64, 320]),
        st.integers(0, 3),  # header form
        st.one_of(st.integers(0, 5000), st.integers(0xFFFFF0, 0x1000100)),  # timestamp field
        st.sampled_from([8, 9, 18]),
        st.sampled_from([1, 0x01020304]),
        st.binary(max_size=900),
        st.booleans(),  # continuation chunks repeat an extended timestamp
    ),
    max_size=5,
    unique_by=lambda m: m[0],  # one message per chunk stream in a round
)


@FUZZ
@given(
    st.lists(st.tuples(st.one_of(st.none(), st.integers(1, 700)), _round_messages), max_size=5),
    st.integers(0, 2**32),
    st.lists(st.integers(0, 12000), max_size=8),
)
def test_chunk_reader_fast_path_matches_chunk_by_chunk(rounds: list[Any], seed: int, cuts: list[int]) -> None:
    """Whole multi-chunk messages read in one go give exactly the events (and errors) of the
    general path, for random chunkings, interleaved chunk streams and extended timestamps."""
    wire = _interleaved_wire(rounds, random.Random(seed))
    fast, general = ChunkReader(), _GeneralReader()
    prev = 0
    for cut in sorted({min(c, len(wire)) for c in cuts}) + [len(wire)]:
        piece = wire[prev:cut]
        prev = cut
        results = []
        for reader in (fast, general):
            try:
                got: Any = [(m.type_id, m.stream_id, m.timestamp, bytes(m.payload)) for m in reader.feed(piece)]
            except ChunkError as exc:
                got = str(exc)
            results.append((got, reader.buffered, reader.chunk_size))
        assert results[0] == results[1]


def test_chunk_reader_fast_path_takes_whole_messages() -> None:
    body = bytes(range(256)) * 4
    wire = chunked(4, body, 128, chunk(0, 4, 5, len(body), 9, 1)) + chunked(4, body, 128, chunk(2, 4, 40))
    reader = _CountingReader()
    assert [(m.timestamp, m.payload) for m in reader.feed(wire)] == [(5, body), (45, body)]
    assert reader.fast == 2
    interleaved = chunk(2, 4, 40) + body[:128] + chunk(0, 5, 0, 3, 8, 1) + b"abc" + chunked(4, body[128:], 128, b"\xc4")
    assert [(m.timestamp, m.payload) for m in reader.feed(interleaved)] == [(0, b"abc"), (85, body)]
    assert reader.fast == 3  # up to the interleaved chunk, then the rest in one go


# --- messages -------------------------------------------------------------------------------------


def test_message_parsing() -> None:
    cmd = CommandMessage("connect", 1.0, {"app": "live"}, ("x",))
    assert parse_message(20, cmd.encode()) == cmd
    assert parse_message(17, b"\x00" + cmd.encode()) == cmd  # AMF3 command with an AMF0 body
    with pytest.raises(MessageError):
        parse_message(17, b"\x11" + cmd.encode())
    with pytest.raises(MessageError):
        parse_message(20, amf0.encode(1.0, 2.0))
    with pytest.raises(MessageError):
        parse_message(20, amf0.encode("x", "not a number"))
    with pytest.raises(MessageError):
        parse_message(20, b"\x02\x00")
    assert parse_message(18, amf0.encode("@setDataFrame", "onMetaData", {"w": 1.0}), 0, 1) == DataMessage(
        "@setDataFrame", ("onMetaData", {"w": 1.0}), 1
    )
    ping = UserControl(UserControlEvent.PING_REQUEST, 77)
    assert parse_message(4, ping.encode()) == ping
    sbl = UserControl(UserControlEvent.SET_BUFFER_LENGTH, 1, 3000)
    assert parse_message(4, sbl.encode()) == sbl
    for type_id, body in ((1, b"\x00"), (3, b""), (4, b"\x00\x06"), (4, b"\x00\x03\x00\x00\x00\x01"), (6, bytes(4))):
        with pytest.raises(MessageError):
            parse_message(type_id, body)
    assert parse_message(19, b"whatever") is None


def test_aggregate_split() -> None:
    def tag(kind: int, ts: int, body: bytes) -> bytes:
        head = bytes([kind]) + len(body).to_bytes(3, "big") + (ts & 0xFFFFFF).to_bytes(3, "big") + bytes([ts >> 24]) + bytes(3)
        return head + body + struct.pack(">I", 11 + len(body))

    payload = tag(9, 500, b"\x17\x01") + tag(8, 520, b"\xaf\x01") + tag(18, 540, amf0.encode("onMetaData", {"a": 1.0}))
    msgs = split_aggregate(payload, 1000, 1)
    assert [(type(m).__name__, m.timestamp) for m in msgs] == [("VideoMessage", 1000), ("AudioMessage", 1020), ("DataMessage", 1040)]
    with pytest.raises(MessageError):
        split_aggregate(payload[:-1], 0, 1)


# --- conversations --------------------------------------------------------------------------------

AVC_CONFIG = bytes([1, 0x64, 0, 0x1F, 0xFF, 0xE1, 0, 4]) + b"\x67\x64\x00\x1f" + bytes([1, 0, 2, 0x68, 0xEB])


def test_publish_conversation() -> None:
    client, server = connected_pair(chunk_size=200)
    sid = created_stream(client, server)
    client.publish(sid, "cam1?token=abc")
    s_ev, c_ev = pump(client, server)
    assert s_ev == [PublishRequest(sid, "cam1?token=abc", "live")]
    assert c_ev == []
    # A pusher that does not wait for the answer: its first tags are held, not lost.
    config = b"\x17\x00\x00\x00\x00" + AVC_CONFIG
    client.send_metadata(sid, {"width": 160.0, "videocodecid": 7.0})
    client.send_video(sid, 0, config)
    assert pump(client, server)[0] == []
    assert server.buffered > len(config)
    held = server.accept_publish(sid)
    assert held == [Metadata(sid, {"width": 160.0, "videocodecid": 7.0}), MediaData(sid, "video", 0, config)]
    assert server.buffered == 0
    _, c_ev = pump(client, server)
    assert [(e.stream_id, e.code) for e in c_ev] == [(sid, "NetStream.Publish.Start")]
    assert server.stream_state(sid) == "publishing"
    key = b"\x17\x01\x00\x00\x28" + struct.pack(">I", 5000) + bytes(5000)
    inter = b"\x27\x01\xff\xff\xd8" + struct.pack(">I", 30) + bytes(30)
    client.send_video(sid, 0, config)
    client.send_audio(sid, 0, b"\xaf\x00\x12\x10")
    for i in range(5):
        client.send_video(sid, 40 + 40 * i, key if i == 0 else inter)
        client.send_audio(sid, 40 + 23 * i, b"\xaf\x01" + bytes(100))
    s_ev, _ = pump(client, server)
    media = [e for e in s_ev if isinstance(e, MediaData)]
    assert len(media) == len(s_ev) == 12
    assert [(e.kind, e.timestamp) for e in media][:4] == [("video", 0), ("audio", 0), ("video", 40), ("audio", 40)]
    assert media[2].payload == key
    frames = [flvtags.parse_video(e.payload, e.timestamp) for e in media if e.kind == "video"]
    assert frames[0] is not None and frames[0].is_config and frames[0].codec is Codec.H264
    assert frames[1] is not None and frames[1].keyframe and frames[1].pts == 80
    assert frames[2] is not None and not frames[2].keyframe and frames[2].pts == 80 - 40
    client.delete_stream(sid)
    s_ev, _ = pump(client, server)
    assert s_ev == [DeleteStream(sid)]
    assert server.stream_state(sid) is None
    assert server.receive_data(b"") == [ConnectionClosed()]


def test_play_conversation() -> None:
    client, server = connected_pair()
    sid = created_stream(client, server)
    client.play(sid, "cam1?token=xyz")
    s_ev, _ = pump(client, server)
    assert s_ev == [PlayRequest(sid, "cam1?token=xyz", -2.0)]
    with pytest.raises(RtmpUsageError):
        server.accept_publish(sid)
    server.accept_play(sid)
    server.send_metadata(sid, {"width": 160.0, "height": 120.0})
    big = b"\x17\x01\x00\x00\x00" + struct.pack(">I", 20000) + bytes(20000)
    server.send_video(sid, 0, b"\x17\x00\x00\x00\x00" + AVC_CONFIG)
    server.send_video(sid, 0, big)
    server.send_audio(sid, 10, b"\xaf\x01abc")
    server.send_video(sid, 100, b"\x27\x01\x00\x00\x00" + struct.pack(">I", 1) + b"\x41")
    _, c_ev = pump(client, server)
    assert [e.code for e in c_ev if isinstance(e, StreamStatus)] == ["NetStream.Play.Reset", "NetStream.Play.Start"]
    assert Metadata(sid, {"width": 160.0, "height": 120.0}) in c_ev
    media = [(e.kind, e.timestamp, len(e.payload)) for e in c_ev if isinstance(e, MediaData)]
    assert media == [("video", 0, 5 + len(AVC_CONFIG)), ("video", 0, len(big)), ("audio", 10, 5), ("video", 100, 10)]
    server.end_play(sid)
    _, c_ev = pump(client, server)
    assert [e.code for e in c_ev] == ["NetStream.Play.UnpublishNotify"]


def test_rejections() -> None:
    client = RtmpClientConnection("nope", "rtmp://h/nope")
    server = RtmpServerConnection()
    pump(client, server)
    with pytest.raises(RtmpUsageError):
        server.accept_publish(1)
    server.reject_connect("unknown application")
    assert server.closed
    _, c_ev = pump(client, server)
    assert c_ev == [ConnectRejected(c_ev[0].info)]
    assert c_ev[0].info["code"] == "NetConnection.Connect.Rejected"
    assert c_ev[0].info["description"] == "unknown application"

    client, server = connected_pair()
    sid = created_stream(client, server)
    client.publish(sid, "cam1?token=bad")
    pump(client, server)
    server.reject_publish(sid, "invalid push token")
    _, c_ev = pump(client, server)
    assert [(e.level, e.code, e.description) for e in c_ev] == [("error", "NetStream.Publish.BadName", "invalid push token")]
    client.send_video(sid, 0, b"\x17\x00\x00\x00\x00" + AVC_CONFIG)
    assert pump(client, server)[0] == []  # not publishing: dropped
    client.play(sid, "other")
    pump(client, server)
    server.reject_play(sid, "no such stream")
    _, c_ev = pump(client, server)
    assert [e.code for e in c_ev] == ["NetStream.Play.StreamNotFound"]


def test_commands_before_connect_is_answered_are_held() -> None:
    client = RtmpClientConnection("live", "rtmp://h/live")
    server = RtmpServerConnection()
    s_ev, _ = pump(client, server)
    assert isinstance(s_ev[0], ConnectRequest)
    client.connected = True  # a client that pipelines createStream behind connect
    tid = client.create_stream()
    assert pump(client, server)[0] == []
    assert server.buffered > 0
    assert server.accept_connect() == [CreateStream(1)]
    _, c_ev = pump(client, server)
    assert c_ev[1] == StreamCreated(tid, 1)
    with pytest.raises(RtmpUsageError):
        server.accept_connect()


def test_window_acknowledgements_both_ways() -> None:
    client, server = connected_pair(window_ack_size=5000, peer_bandwidth=4000)
    # Set Peer Bandwidth 4000 differs from the client's window: it announced 4000 back.
    assert client._window_ack_size == 4000 and server._peer_window == 4000
    sid = created_stream(client, server)
    client.play(sid, "x")
    pump(client, server)
    server.accept_play(sid)
    for i in range(4):
        server.send_video(sid, i, bytes(3000))
    pump(client, server)
    assert server.peer_acknowledged >= 5000  # the client acknowledged our bytes
    tap = Tap(0)
    client.delete_stream(sid)
    assert pump(client, server)[0] == [DeleteStream(sid)]
    sid = created_stream(client, server)
    client.publish(sid, "p")
    pump(client, server)
    server.accept_publish(sid)
    pump(client, server)
    for i in range(3):
        client.send_video(sid, i, b"\x27\x01\x00\x00\x00" + bytes(3000))
    client_out = client.data_to_send()
    server.receive_data(client_out)
    acks = [m for m in tap.feed(server.data_to_send()) if type(m).__name__ == "Acknowledgement"]
    assert acks and acks[0].sequence == server._received


def test_ping_and_housekeeping_answers() -> None:
    client, server = connected_pair()
    tap = Tap(0)
    client.send_ping(1234)
    client._send_command(3, 0, "releaseStream", 2.0, None, "cam")
    client._send_command(3, 0, "FCPublish", 3.0, None, "cam")
    client._send_command(3, 0, "getStreamLength", 4.0, None, "cam")
    client._send_command(3, 0, "_checkbw", 5.0, None)
    client._send_command(3, 0, "receiveAudio", 0.0, None, True)
    client._send_command(3, 0, "FCUnpublish", 0.0, None, "cam")  # transaction 0: no answer
    server.receive_data(client.data_to_send())
    answers = tap.feed(server.data_to_send())
    assert answers[0] == UserControl(UserControlEvent.PING_RESPONSE, 1234)
    assert [(m.name, m.transaction_id, m.args) for m in answers[1:]] == [
        ("_result", 2.0, (UNDEFINED,)),
        ("_result", 3.0, (UNDEFINED,)),
        ("_result", 4.0, (0.0,)),
        ("_result", 5.0, (UNDEFINED,)),
    ]


@pytest.mark.parametrize(
    "command, reason",
    [
        (("createStream", 2.0, None), "before connect"),
        (("connect", 1.0, None), None),
    ],
)
def test_protocol_errors_as_events(command: tuple[Any, ...], reason: str | None) -> None:
    server = RtmpServerConnection(random=fixed_random)
    server.receive_data(b"\x03" + bytes(HS))
    server.receive_data(bytes(HS))
    body = amf0.encode(*command)
    events = server.receive_data(chunk(0, 3, 0, len(body), 20, 0) + body)
    if reason:
        assert len(events) == 1 and isinstance(events[0], ProtocolError) and reason in events[0].reason
        assert server.closed
    else:
        assert events == [ConnectRequest("", "", {})]
        server.accept_connect()
        events = server.receive_data(chunk(0, 3, 0, len(body), 20, 0) + body)
        assert isinstance(events[0], ProtocolError) and "second connect" in events[0].reason


# --- recorded byte vectors (built from the spec and FFmpeg's rtmpproto.c) ---------------------------


def ffmpeg_handshake(server: RtmpServerConnection) -> bytes:
    """Drive the handshake as FFmpeg does (digest C1) and return S0+S1+S2."""
    c1 = complex_c1()
    assert server.receive_data(b"\x03" + c1) == []
    answer = server.data_to_send()
    assert answer[0] == 3 and answer[5:9] == bytes(4) and answer[1 + HS :] == c1
    return answer


def test_ffmpeg_publish_byte_vector() -> None:
    server = RtmpServerConnection(random=fixed_random)
    answer = ffmpeg_handshake(server)
    c2 = answer[1 : 1 + HS]
    connect = amf0.encode(
        "connect", 1.0,
        {"app": "live", "type": "nonprivate", "flashVer": "FMLE/3.0 (compatible; Lavf61.7.100)",
         "tcUrl": "rtmp://127.0.0.1:1935/live"},
    )  # fmt: skip
    assert len(connect) > 128
    wire = c2 + chunked(3, connect, 128, chunk(0, 3, 0, len(connect), 20, 0))
    events = server.receive_data(wire)
    assert events == [ConnectRequest("live", "rtmp://127.0.0.1:1935/live", events[0].command_object)]
    server.accept_connect()
    tap = Tap(0)
    replies = tap.feed(server.data_to_send())
    assert [type(m).__name__ for m in replies] == ["WindowAckSize", "SetPeerBandwidth", "SetChunkSize", "CommandMessage"]
    assert replies[3].name == "_result" and replies[3].transaction_id == 1.0
    assert replies[3].args[0]["code"] == "NetConnection.Connect.Success"
    release = amf0.encode("releaseStream", 2.0, None, "test?token=abc")
    fcpub = amf0.encode("FCPublish", 3.0, None, "test?token=abc")
    create = amf0.encode("createStream", 4.0, None)
    wire = (
        chunk(1, 3, 0, len(release), 20) + release
        + chunk(1, 3, 0, len(fcpub), 20) + fcpub
        + chunk(1, 3, 0, len(create), 20) + create
    )  # fmt: skip
    assert server.receive_data(wire) == [CreateStream(1)]
    replies = tap.feed(server.data_to_send())
    assert [(m.name, m.transaction_id) for m in replies] == [("_result", 2.0), ("_result", 3.0), ("_result", 4.0)]
    assert replies[2].args == (1.0,)
    publish = amf0.encode("publish", 5.0, None, "test?token=abc", "live")
    events = server.receive_data(chunk(0, 8, 0, len(publish), 20, 1) + publish)
    assert events == [PublishRequest(1, "test?token=abc", "live")]
    server.accept_publish(1)
    replies = tap.feed(server.data_to_send())
    assert replies[0] == UserControl(UserControlEvent.STREAM_BEGIN, 1)
    assert replies[1].name == "onStatus" and replies[1].args[0]["code"] == "NetStream.Publish.Start"
    # FFmpeg then raises its chunk size and sends metadata, the AVC header and frames on csid 4.
    meta = amf0.encode("@setDataFrame", "onMetaData", EcmaArray(width=160.0, height=120.0, videocodecid=7.0))
    seq = b"\x17\x00\x00\x00\x00" + AVC_CONFIG
    key = b"\x17\x01\x00\x00\x00" + struct.pack(">I", 6) + b"\x65" + bytes(5)
    inter = b"\x27\x01\x00\x00\x00" + struct.pack(">I", 3) + b"\x41\x9a\x00"
    wire = (
        chunk(0, 2, 0, 4, 1, 0) + struct.pack(">I", 4096)
        + chunk(0, 4, 0, len(meta), 18, 1) + meta
        + chunk(1, 4, 0, len(seq), 9) + seq
        + chunk(1, 4, 0, len(key), 9) + key
        + chunk(1, 4, 100, len(inter), 9) + inter
        + chunk(3, 4) + inter  # same size and delta: type 3
        + chunk(2, 4, 100) + inter
    )  # fmt: skip
    events = server.receive_data(wire)
    assert events[0] == Metadata(1, {"width": 160.0, "height": 120.0, "videocodecid": 7.0})
    assert [(e.timestamp, e.payload) for e in events[1:]] == [(0, seq), (0, key), (100, inter), (200, inter), (300, inter)]
    deleted = amf0.encode("FCUnpublish", 6.0, None, "test?token=abc")
    delete = amf0.encode("deleteStream", 7.0, None, 1.0)
    wire = chunk(0, 3, 0, len(deleted), 20, 0) + deleted + chunk(1, 3, 0, len(delete), 20) + delete
    assert server.receive_data(wire) == [DeleteStream(1)]


def test_ffmpeg_play_byte_vector() -> None:
    server = RtmpServerConnection(random=fixed_random)
    answer = ffmpeg_handshake(server)  # S1 bytes 4-7 are zero: FFmpeg will not look for a digest
    connect = amf0.encode(
        "connect", 1.0,
        {"app": "live", "flashVer": "LNX 9,0,124,2", "tcUrl": "rtmp://127.0.0.1:1935/live", "fpad": False,
         "capabilities": 15.0, "audioCodecs": 4071.0, "videoCodecs": 252.0, "videoFunction": 1.0},
    )  # fmt: skip
    events = server.receive_data(answer[1 : 1 + HS] + chunked(3, connect, 128, chunk(0, 3, 0, len(connect), 20, 0)))
    assert isinstance(events[0], ConnectRequest) and events[0].command_object["videoCodecs"] == 252.0
    server.accept_connect()
    tap = Tap(0)
    tap.feed(server.data_to_send())
    # FFmpeg as a player: window ack size, createStream, _checkbw, getStreamLength, play(-2000), buffer length.
    create = amf0.encode("createStream", 2.0, None)
    checkbw = amf0.encode("_checkbw", 3.0, None)
    length = amf0.encode("getStreamLength", 4.0, None, "test?token=t")
    play = amf0.encode("play", 5.0, None, "test?token=t", -2000.0)
    buffer = UserControl(UserControlEvent.SET_BUFFER_LENGTH, 1, 3000).encode()
    wire = (
        chunk(0, 2, 0, 4, 5, 0) + struct.pack(">I", 2500000)
        + chunk(0, 3, 0, len(create), 20, 0) + create
        + chunk(1, 3, 0, len(checkbw), 20) + checkbw
        + chunk(1, 3, 0, len(length), 20) + length
        + chunk(0, 8, 0, len(play), 20, 1) + play
        + chunk(0, 2, 0, len(buffer), 4, 0) + buffer
    )  # fmt: skip
    events = server.receive_data(wire)
    assert events == [CreateStream(1), PlayRequest(1, "test?token=t", -2000.0)]
    server.accept_play(1)
    replies = tap.feed(server.data_to_send())
    assert [(m.name, m.transaction_id) for m in replies[:3]] == [("_result", 2.0), ("_result", 3.0), ("_result", 4.0)]
    assert replies[3] == UserControl(UserControlEvent.STREAM_BEGIN, 1)
    assert [m.args[0]["code"] for m in replies[4:6]] == ["NetStream.Play.Reset", "NetStream.Play.Start"]
    assert replies[6] == DataMessage("|RtmpSampleAccess", (True, True), 1)


# --- fuzzing the server ---------------------------------------------------------------------------


def valid_publisher_stream() -> bytes:
    """Everything a well-behaved publisher sends, handshake to media, as one byte string."""
    client = RtmpClientConnection("live", "rtmp://h/live", chunk_size=300, random=fixed_random)
    server = RtmpServerConnection(random=fixed_random)
    sent = bytearray()

    def step() -> list[Any]:
        out = client.data_to_send()
        sent.extend(out)
        events = server.receive_data(out) if out else []
        answer = server.data_to_send()
        if answer:
            client.receive_data(answer)
        return events

    for _ in range(2):
        for ev in step():
            if isinstance(ev, ConnectRequest):
                server.accept_connect()
    client.receive_data(server.data_to_send())
    assert client.connected
    client.create_stream()
    step()
    client.publish(1, "cam?token=1")
    step()
    server.accept_publish(1)
    client.receive_data(server.data_to_send())
    client.send_metadata(1, {"width": 16.0})
    client.send_video(1, 0, b"\x17\x00\x00\x00\x00" + AVC_CONFIG)
    for i in range(4):
        client.send_video(1, 40 * i, b"\x27\x01\x00\x00\x00" + struct.pack(">I", 400) + bytes(400))
        client.send_audio(1, 40 * i, b"\xaf\x01" + bytes(30))
    step()
    return bytes(sent)


VALID = valid_publisher_stream()
HANDSHAKE_END = 1 + 2 * HS


def drive(server: RtmpServerConnection, data: bytes, pieces: list[int]) -> list[Any]:
    events: list[Any] = []
    pos = 0
    for size in pieces + [len(data)]:
        batch = server.receive_data(data[pos : pos + size])
        for ev in batch:  # answers may return more events: they join the batch
            events.append(ev)
            if isinstance(ev, ConnectRequest):
                batch += server.accept_connect()
            elif isinstance(ev, PublishRequest):
                batch += server.accept_publish(ev.stream_id)
            elif isinstance(ev, PlayRequest):
                server.accept_play(ev.stream_id)
        server.data_to_send()
        assert server.buffered <= 2 * 65536 + 1024 * 1024 + 2 * HS
        pos += size
        if pos >= len(data):
            break
    return events


def test_valid_stream_in_pieces() -> None:
    rng = random.Random(7)
    for _ in range(20):
        server = RtmpServerConnection(random=fixed_random)
        pieces = [rng.randint(1, 700) for _ in range(40)]
        events = drive(server, VALID, pieces)
        assert not any(isinstance(e, ProtocolError) for e in events)
        assert sum(isinstance(e, MediaData) for e in events) == 9


@FUZZ
@given(st.binary(max_size=2000), st.booleans())
def test_server_fuzz_random_bytes(data: bytes, after_handshake: bool) -> None:
    server = RtmpServerConnection(max_message_size=65536, random=fixed_random)
    prefix = VALID[:HANDSHAKE_END] if after_handshake else b""
    events = drive(server, prefix + data, [len(prefix), 333, 1, 700])
    assert all(not isinstance(e, ProtocolError) for e in events[:-1])


@FUZZ
@given(st.data())
def test_server_fuzz_mutated_stream(data: st.DataObject) -> None:
    raw = bytearray(VALID)
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(HANDSHAKE_END, len(raw) - 1))
        op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if op == "flip":
            raw[i] = data.draw(st.integers(0, 255))
        elif op == "insert":
            raw[i:i] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            del raw[i : i + data.draw(st.integers(1, 8))]
    pieces = data.draw(st.lists(st.integers(1, 600), max_size=10))
    server = RtmpServerConnection(max_message_size=65536, random=fixed_random)
    events = drive(server, bytes(raw), pieces)
    errors = [e for e in events if isinstance(e, ProtocolError)]
    assert len(errors) <= 1 and (not errors or events[-1] is errors[0])
    for ev in events:
        if isinstance(ev, MediaData) and ev.kind == "video":
            try:
                flvtags.parse_video(ev.payload, ev.timestamp)
            except flvtags.FlvError:
                pass


# --- interop over TCP: our client, and FFmpeg when installed --------------------------------------


async def serve_once(port_ready: asyncio.Future[int], frames: list[Any], done: asyncio.Event) -> None:
    """A minimal asyncio server around RtmpServerConnection: accepts any publish, collects video frames."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = RtmpServerConnection()
        try:
            while not conn.closed:
                data = await reader.read(65536)
                events = conn.receive_data(data)
                for ev in events:  # answers may return more events: they join the list
                    if isinstance(ev, ConnectRequest):
                        events += conn.accept_connect()
                    elif isinstance(ev, PublishRequest):
                        events += conn.accept_publish(ev.stream_id)
                    elif isinstance(ev, MediaData) and ev.kind == "video":
                        frame = flvtags.parse_video(ev.payload, ev.timestamp)
                        if frame is not None:
                            frames.append(frame)
                    elif isinstance(ev, (DeleteStream, ProtocolError)):
                        done.set()
                writer.write(conn.data_to_send())
                await writer.drain()
        finally:
            done.set()
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port_ready.set_result(server.sockets[0].getsockname()[1])
    async with server:
        await done.wait()


async def push_with_our_client(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client = RtmpClientConnection("live", f"rtmp://127.0.0.1:{port}/live")

    async def until(kind: type) -> Any:
        while True:
            writer.write(client.data_to_send())
            await writer.drain()
            for ev in client.receive_data(await reader.read(65536)):
                if isinstance(ev, kind):
                    return ev

    await until(Connected)
    client.create_stream()
    sid = (await until(StreamCreated)).stream_id
    client.publish(sid, "test?token=abc")
    await until(StreamStatus)
    client.send_video(sid, 0, b"\x17\x00\x00\x00\x00" + AVC_CONFIG)
    for i in range(10):
        nal = (b"\x65" if i % 5 == 0 else b"\x41") + bytes(2000)
        client.send_video(sid, 100 * i, (b"\x17" if i % 5 == 0 else b"\x27") + b"\x01\x00\x00\x00" + struct.pack(">I", len(nal)) + nal)
    client.delete_stream(sid)
    writer.write(client.data_to_send())
    await writer.drain()
    writer.close()


def check_h264_frames(frames: list[Any]) -> None:
    assert frames and frames[0].is_config and frames[0].codec is Codec.H264
    keys = [f for f in frames if f.keyframe]
    assert len(keys) >= 2
    assert all(b.dts >= a.dts for a, b in zip(frames, frames[1:]))


def test_tcp_loopback_with_our_client() -> None:
    async def main() -> list[Any]:
        frames: list[Any] = []
        done = asyncio.Event()
        port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(serve_once(port, frames, done))
        await asyncio.wait_for(push_with_our_client(await port), 10)
        await asyncio.wait_for(task, 10)
        return frames

    frames = asyncio.run(main())
    check_h264_frames(frames)
    assert len(frames) == 11


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg binary not installed")
def test_ffmpeg_publishes_h264() -> None:
    async def main() -> list[Any]:
        frames: list[Any] = []
        done = asyncio.Event()
        port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(serve_once(port, frames, done))
        url = f"rtmp://127.0.0.1:{await port}/live/test"
        proc = await asyncio.create_subprocess_exec(
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi",
            "-i", "testsrc=size=160x120:rate=10", "-t", "2", "-c:v", "libx264", "-g", "10", "-f", "flv", url,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(proc.communicate(), 25)
        assert proc.returncode == 0, err.decode(errors="replace")
        await asyncio.wait_for(task, 5)
        return frames

    check_h264_frames(asyncio.run(main()))
