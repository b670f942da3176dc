"""MQTT 3.1.1 codec: round trips, spec byte vectors, chunked input, malformed input and fuzzing."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iotvideo.devicelink.mqtt import (
    CONNACK_IDENTIFIER_REJECTED,
    CONNACK_NOT_AUTHORIZED,
    CONNACK_UNACCEPTABLE_PROTOCOL_VERSION,
    SUBACK_FAILURE,
    ConnAck,
    Connect,
    Disconnect,
    MqttProtocolError,
    Packet,
    PacketReader,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    PubRec,
    PubRel,
    Publish,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
    encode,
)

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- strategies -----------------------------------------------------------------------------------

_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
_level_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00/+#")
texts = st.text(_chars, max_size=12)
levels = st.text(_level_chars, max_size=6)
topic_names = st.lists(levels, min_size=1, max_size=5).map("/".join).filter(bool)
topic_filters = st.builds(
    lambda parts, hash_: "/".join(parts + ["#"] * hash_),
    st.lists(levels | st.just("+"), max_size=5),
    st.booleans(),
).filter(bool)
pids = st.integers(1, 0xFFFF)
qoss = st.integers(0, 2)
blobs = st.binary(max_size=48)


@st.composite
def connects(draw: st.DrawFn) -> Connect:
    level = draw(st.sampled_from([3, 4]))
    clean = draw(st.booleans())
    client_id = draw(st.text(_chars, min_size=0 if clean and level == 4 else 1, max_size=23))
    will_topic = draw(st.none() | topic_names)
    username = draw(st.none() | texts)
    may_password = username is not None or level == 3
    return Connect(
        protocol_name="MQTT" if level == 4 else "MQIsdp",
        protocol_level=level,
        client_id=client_id,
        username=username,
        password=draw(st.none() | blobs) if may_password else None,
        keepalive=draw(st.integers(0, 0xFFFF)),
        clean_session=clean,
        will_topic=will_topic,
        will_payload=None if will_topic is None else draw(blobs),
        will_qos=0 if will_topic is None else draw(qoss),
        will_retain=False if will_topic is None else draw(st.booleans()),
    )


@st.composite
def publishes(draw: st.DrawFn) -> Publish:
    qos = draw(qoss)
    return Publish(
        draw(topic_names),
        draw(st.binary(max_size=300)),
        qos,
        draw(st.booleans()),
        draw(st.booleans()) if qos else False,
        draw(pids) if qos else None,
    )


client_packets = st.one_of(
    connects(),
    publishes(),
    st.builds(PubAck, pids),
    st.builds(PubRec, pids),
    st.builds(PubRel, pids),
    st.builds(PubComp, pids),
    st.builds(Subscribe, pids, st.lists(st.tuples(topic_filters, qoss), min_size=1, max_size=4).map(tuple)),
    st.builds(Unsubscribe, pids, st.lists(topic_filters, min_size=1, max_size=4).map(tuple)),
    st.just(PingReq()),
    st.just(Disconnect()),
)
server_packets = st.one_of(
    st.builds(ConnAck, st.just(False), st.integers(0, 5)),
    st.builds(ConnAck, st.just(True), st.just(0)),
    publishes(),
    st.builds(PubAck, pids),
    st.builds(PubRec, pids),
    st.builds(PubRel, pids),
    st.builds(PubComp, pids),
    st.builds(SubAck, pids, st.lists(st.sampled_from([0, 1, 2, SUBACK_FAILURE]), min_size=1, max_size=5).map(tuple)),
    st.builds(UnsubAck, pids),
    st.just(PingResp()),
)
any_packets = client_packets | server_packets

EXAMPLES: list[Packet] = [
    Connect(client_id="cam-0001"),
    Connect(
        client_id="cam-0002",
        username="device",
        password=b"\x00secret\xff",
        keepalive=300,
        clean_session=False,
        will_topic="dev/cam-0002/state",
        will_payload=b"offline",
        will_qos=1,
        will_retain=True,
    ),
    Connect(protocol_name="MQIsdp", protocol_level=3, client_id="legacy", password=b"pw"),
    ConnAck(),
    ConnAck(True, 0),
    ConnAck(False, CONNACK_NOT_AUTHORIZED),
    Publish("dev/cam/event", b"motion"),
    Publish("dev/cam/\u00e9v\u00e9nement", b"x" * 300, 1, True, True, 7),
    Publish("/", b"", 2, packet_id=0xFFFF),
    Publish("$SYS/broker/uptime", b"42", retain=True),
    PubAck(1),
    PubRec(2),
    PubRel(3),
    PubComp(0xFFFF),
    Subscribe(10, (("dev/+/event", 1), ("#", 0), ("a/b/#", 2))),
    SubAck(10, (1, 0, SUBACK_FAILURE)),
    Unsubscribe(11, ("dev/+/event", "#")),
    UnsubAck(11),
    PingReq(),
    PingResp(),
    Disconnect(),
]


def read_all(data: bytes, **kwargs: object) -> list[Packet]:
    return PacketReader(**kwargs).feed(data)  # type: ignore[arg-type]


# --- round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize("packet", EXAMPLES, ids=lambda p: type(p).__name__)
def test_round_trip_examples(packet: Packet) -> None:
    assert read_all(encode(packet)) == [packet]


def test_round_trip_all_examples_in_one_stream() -> None:
    stream = b"".join(map(encode, EXAMPLES))
    assert read_all(stream) == EXAMPLES


@settings(max_examples=300, deadline=None)
@given(client_packets)
def test_round_trip_client_packets_property(packet: Packet) -> None:
    assert read_all(encode(packet), role="server") == [packet]


@settings(max_examples=300, deadline=None)
@given(server_packets)
def test_round_trip_server_packets_property(packet: Packet) -> None:
    assert read_all(encode(packet), role="client") == [packet]


@settings(max_examples=150, deadline=None)
@given(st.lists(any_packets, min_size=1, max_size=6), st.lists(st.integers(1, 40), min_size=1, max_size=30))
def test_round_trip_random_chunking(packets: list[Packet], chunk_sizes: list[int]) -> None:
    stream = b"".join(map(encode, packets))
    reader = PacketReader()
    got: list[Packet] = []
    pos = 0
    i = 0
    while pos < len(stream):
        size = chunk_sizes[i % len(chunk_sizes)]
        got += reader.feed(stream[pos : pos + size])
        pos += size
        i += 1
    assert got == packets
    assert reader.buffered == 0


def test_packets_are_frozen_and_password_not_in_repr() -> None:
    p = Connect(client_id="c", username="u", password=b"hunter2")
    with pytest.raises(AttributeError):
        p.client_id = "other"  # type: ignore[misc]
    assert "hunter2" not in repr(p)
    assert not hasattr(Publish("a", b""), "__dict__")


# --- byte-exact vectors ---------------------------------------------------------------------------

VECTORS: list[tuple[str, Packet]] = [
    # paho-mqtt's CONNECT for Client(client_id="") with clean session, keepalive 60
    ("100c00044d5154540402003c0000", Connect(client_id="", keepalive=60)),
    # spec 3.1.2.10 variable header example (flags 0xCE, keepalive 10) with one-letter fields
    (
        "101900044d51545404ce000a" "000163" "000177" "00016d" "000175" "000170",
        Connect(
            client_id="c",
            will_topic="w",
            will_payload=b"m",
            will_qos=1,
            username="u",
            password=b"p",
            keepalive=10,
        ),
    ),
    # MQTT 3.1 CONNECT as older camera SDKs (and mosquitto -V 31) send it
    ("101400064d51497364700302003c000663616d2d3031", Connect(protocol_name="MQIsdp", protocol_level=3, client_id="cam-01")),
    ("20020000", ConnAck(False, 0)),
    ("20020100", ConnAck(True, 0)),
    ("20020005", ConnAck(False, 5)),
    # spec 3.3.2.3: topic "a/b", packet identifier 10
    ("32070003612f62000a", Publish("a/b", b"", 1, packet_id=10)),
    ("30080003612f6268656c", Publish("a/b", b"hel")),
    ("3d070003612f62000a", Publish("a/b", b"", 2, True, True, 10)),
    ("4002000a", PubAck(10)),
    ("5002000a", PubRec(10)),
    ("6202000a", PubRel(10)),
    ("7002000a", PubComp(10)),
    # spec 3.8.3.1: "a/b" QoS 1, "c/d" QoS 2
    ("820e000a0003612f6201" "0003632f6402", Subscribe(10, (("a/b", 1), ("c/d", 2)))),
    # spec 3.9.3: 0x00, 0x02, 0x80
    ("9005000a000280", SubAck(10, (0, 2, 0x80))),
    # spec 3.10.3.1: "a/b", "c/d"
    ("a20c000a0003612f62" "0003632f64", Unsubscribe(10, ("a/b", "c/d"))),
    ("b002000a", UnsubAck(10)),
    ("c000", PingReq()),
    ("d000", PingResp()),
    ("e000", Disconnect()),
]


@pytest.mark.parametrize(("hexbytes", "packet"), VECTORS, ids=[type(p).__name__ for _, p in VECTORS])
def test_spec_vectors(hexbytes: str, packet: Packet) -> None:
    raw = bytes.fromhex(hexbytes)
    assert encode(packet) == raw
    assert read_all(raw) == [packet]


@pytest.mark.parametrize(
    ("remaining", "encoded"),
    [
        (3, "03"),
        (127, "7f"),
        (128, "8001"),
        (16_383, "ff7f"),
        (16_384, "808001"),
        (2_097_151, "ffff7f"),
        (2_097_152, "80808001"),
    ],
)
def test_remaining_length_table(remaining: int, encoded: str) -> None:
    packet = Publish("t", b"\xab" * (remaining - 3))
    raw = encode(packet)
    assert raw[1 : 1 + len(encoded) // 2] == bytes.fromhex(encoded)
    assert len(raw) == 1 + len(encoded) // 2 + remaining
    assert read_all(raw, max_packet_size=len(raw)) == [packet]


def test_maximum_remaining_length_header_is_accepted_when_allowed() -> None:
    reader = PacketReader(max_packet_size=300_000_000)
    assert reader.feed(bytes.fromhex("30ffffff7f")) == []
    assert reader.buffered == 5


def test_encoder_refuses_remaining_length_over_maximum() -> None:
    from iotvideo.devicelink.mqtt.packets import _fixed_header

    assert _fixed_header(0x30, 268_435_455) == bytes.fromhex("30ffffff7f")
    with pytest.raises(ValueError):
        _fixed_header(0x30, 268_435_456)


# --- chunked input --------------------------------------------------------------------------------

CHUNK_STREAM = [
    Connect(client_id="cam-7", username="u", password=b"p", will_topic="w/t", will_payload=b"bye"),
    PingReq(),
    Publish("dev/7/frame", bytes(range(256)) * 2, 1, packet_id=1),
    Subscribe(2, (("dev/7/cmd", 1),)),
    Disconnect(),
]


def test_every_single_split_point() -> None:
    stream = b"".join(map(encode, CHUNK_STREAM))
    for cut in range(len(stream) + 1):
        reader = PacketReader()
        got = reader.feed(stream[:cut])
        got += reader.feed(stream[cut:])
        assert got == CHUNK_STREAM, cut
        assert reader.buffered == 0


def test_every_pair_of_split_points_in_a_short_stream() -> None:
    packets: list[Packet] = [PingReq(), Publish("a/b", b"xy", 1, packet_id=9), PubAck(9), Disconnect(), PingReq()]
    stream = b"".join(map(encode, packets))
    for i in range(len(stream) + 1):
        for j in range(i, len(stream) + 1):
            reader = PacketReader()
            got = reader.feed(stream[:i]) + reader.feed(stream[i:j]) + reader.feed(stream[j:])
            assert got == packets, (i, j)


def test_byte_at_a_time_and_bytes_like_inputs() -> None:
    stream = b"".join(map(encode, CHUNK_STREAM))
    reader = PacketReader()
    got: list[Packet] = []
    for k in range(len(stream)):
        got += reader.feed(stream[k : k + 1])
    assert got == CHUNK_STREAM
    assert PacketReader().feed(bytearray(stream)) == CHUNK_STREAM
    assert PacketReader().feed(memoryview(stream)) == CHUNK_STREAM
    assert PacketReader().feed(b"") == []


def test_large_payload_in_small_chunks_is_linear() -> None:
    # 16 MiB in 1 KiB chunks: ~40 ms when linear; re-copying the buffer per chunk costs seconds.
    payload = b"\x5a" * (16 * 1024 * 1024)
    raw = encode(Publish("cam/1/video", payload, 1, packet_id=1))
    reader = PacketReader(max_packet_size=32 * 1024 * 1024)
    view = memoryview(raw)
    start = time.perf_counter()
    got: list[Packet] = []
    for pos in range(0, len(raw), 1024):
        got += reader.feed(view[pos : pos + 1024])
    elapsed = time.perf_counter() - start
    assert got == [Publish("cam/1/video", payload, 1, packet_id=1)]
    assert elapsed < 1.0, f"16 MiB in 1 KiB chunks took {elapsed:.2f}s: buffering is not linear"


# --- size limit -----------------------------------------------------------------------------------


def test_oversized_packet_refused_from_its_header() -> None:
    reader = PacketReader(max_packet_size=1024)
    with pytest.raises(MqttProtocolError, match="max_packet_size"):
        reader.feed(b"\x30\xd0\x0f")  # PUBLISH, remaining length 2000
    assert reader.buffered == 0


def test_size_limit_counts_the_whole_packet() -> None:
    at_limit = Publish("t", b"x" * (1024 - 3 - 3))  # 3-byte fixed header, 3-byte topic
    assert len(encode(at_limit)) == 1024
    assert read_all(encode(at_limit), max_packet_size=1024) == [at_limit]
    with pytest.raises(MqttProtocolError):
        read_all(encode(Publish("t", b"x" * (1024 - 3 - 3 + 1))), max_packet_size=1024)


def test_default_limit_is_256_kib() -> None:
    big = Publish("t", b"x" * (256 * 1024 - 4 - 3))
    assert len(encode(big)) == 256 * 1024
    assert read_all(encode(big)) == [big]
    with pytest.raises(MqttProtocolError):
        PacketReader().feed(encode(Publish("t", b"x" * (256 * 1024)))[:5])


# --- malformed input ------------------------------------------------------------------------------

MALFORMED: list[tuple[str, str]] = [
    ("reserved type 0", "0000"),
    ("reserved type 15", "f000"),
    ("remaining length over 4 bytes", "30ffffffff01"),
    ("SUBSCRIBE flags 0", "800800010003612f6200"),
    ("UNSUBSCRIBE flags 0", "a00700010003612f62"),
    ("PUBREL flags 0", "60020001"),
    ("PUBACK flags", "41020001"),
    ("PINGREQ flags", "c100"),
    ("CONNECT flags", "120c00044d5154540402003c0000"),
    ("PINGREQ with body", "c00100"),
    ("DISCONNECT with body", "e00100"),
    ("PUBACK too long", "4003000100"),
    ("PUBACK too short", "400100"),
    ("CONNACK too long", "2003000000"),
    ("PUBLISH QoS 3", "3607000161000101"),
    ("PUBLISH DUP at QoS 0", "3803000161"),
    ("PUBLISH '+' in topic", "30050003612f2b"),
    ("PUBLISH '#' in topic", "30050003612f23"),
    ("PUBLISH empty topic", "30020000"),
    ("PUBLISH invalid UTF-8", "30040002c328"),
    ("PUBLISH overlong UTF-8", "30040002c0af"),
    ("PUBLISH encoded surrogate", "30050003eda080"),
    ("PUBLISH U+0000", "3005000361006a"),
    ("PUBLISH truncated topic", "3003000561"),
    ("PUBLISH missing length", "300100"),
    ("PUBLISH QoS 1 packet id 0", "32050001610000"),
    ("PUBLISH QoS 1 missing packet id", "3203000161"),
    ("PUBACK packet id 0", "40020000"),
    ("UNSUBACK packet id 0", "b0020000"),
    ("SUBSCRIBE empty payload", "82020001"),
    ("SUBSCRIBE packet id 0", "8206000000016100"),
    ("SUBSCRIBE QoS 3", "8206000100016103"),
    ("SUBSCRIBE reserved QoS bits", "8206000100016141"),
    ("SUBSCRIBE missing QoS", "82050001000161"),
    ("SUBSCRIBE bad filter a#", "820700010002612300"),
    ("SUBSCRIBE bad filter a/#/b", "820a00010005612f232f6200"),
    ("SUBSCRIBE bad filter a+", "820700010002612b00"),
    ("SUBSCRIBE empty filter", "82050001000000"),
    ("UNSUBSCRIBE empty payload", "a2020001"),
    ("UNSUBSCRIBE bad filter", "a206000100026123"),
    ("SUBACK no codes", "90020001"),
    ("SUBACK reserved code", "9003000103"),
    ("CONNACK reserved flags", "20020200"),
    ("CONNACK reserved return code", "20020006"),
    ("CONNACK session present on refusal", "20020105"),
    ("CONNECT trailing bytes", "100d00044d5154540402003c0000ff"),
    ("CONNECT truncated", "100700044d51545404"),
    ("CONNECT reserved flag", "100c00044d5154540403003c0000"),
    ("CONNECT will QoS without will", "100c00044d515454040a003c0000"),
    ("CONNECT will retain without will", "100c00044d5154540422003c0000"),
    ("CONNECT will QoS 3", "100c00044d515454041e003c0000"),
    ("CONNECT password without username", "100c00044d5154540442003c0000"),
    ("CONNECT will topic wildcard", "101100044d5154540406003c0000" "00012b" "0000"),
    ("CONNECT empty will topic", "101000044d5154540406003c0000" "0000" "0000"),
    ("CONNECT unknown protocol name", "100c0004485454500402003c0000"),
    ("CONNECT username flag, no username", "100c00044d5154540482003c0000"),
    ("CONNECT invalid UTF-8 client id", "100e00044d5154540402003c0002c328"),
]


@pytest.mark.parametrize(("hexbytes"), [h for _, h in MALFORMED], ids=[name for name, _ in MALFORMED])
def test_malformed_input_is_refused(hexbytes: str) -> None:
    with pytest.raises(MqttProtocolError) as info:
        read_all(bytes.fromhex(hexbytes))
    assert info.value.connack_code is None
    assert info.value.reason == str(info.value)


@pytest.mark.parametrize(
    ("hexbytes", "code"),
    [
        ("100c00044d5154540502003c0000", CONNACK_UNACCEPTABLE_PROTOCOL_VERSION),  # MQTT 5
        ("100c00044d5154540302003c0000", CONNACK_UNACCEPTABLE_PROTOCOL_VERSION),  # "MQTT" at level 3
        ("100e00064d51497364700402003c0000", CONNACK_UNACCEPTABLE_PROTOCOL_VERSION),
        ("100c00044d5154540400003c0000", CONNACK_IDENTIFIER_REJECTED),  # empty id, no clean session
        ("100e00064d51497364700302003c0000", CONNACK_IDENTIFIER_REJECTED),  # 3.1: empty id
    ],
)
def test_connect_errors_carry_connack_code(hexbytes: str, code: int) -> None:
    with pytest.raises(MqttProtocolError) as info:
        read_all(bytes.fromhex(hexbytes))
    assert info.value.connack_code == code


def test_reader_stays_failed_and_drops_its_buffer() -> None:
    reader = PacketReader()
    assert reader.feed(b"\x30\x02\x00") == []
    assert reader.buffered == 3
    with pytest.raises(MqttProtocolError):
        reader.feed(b"\x00")  # empty topic
    assert reader.buffered == 0
    with pytest.raises(MqttProtocolError):
        reader.feed(encode(PingReq()))


def test_roles_refuse_packets_from_the_wrong_side() -> None:
    with pytest.raises(MqttProtocolError, match="CONNACK"):
        PacketReader(role="server").feed(encode(ConnAck()))
    with pytest.raises(MqttProtocolError):
        PacketReader(role="server").feed(encode(SubAck(1, (0,))))
    with pytest.raises(MqttProtocolError, match="CONNECT"):
        PacketReader(role="client").feed(encode(Connect(client_id="x")))
    with pytest.raises(MqttProtocolError):
        PacketReader(role="client").feed(encode(PingReq()))
    assert PacketReader(role="client").feed(encode(PingResp())) == [PingResp()]
    with pytest.raises(ValueError):
        PacketReader(role="broker")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        PacketReader(max_packet_size=1)


def test_mqtt31_leniencies() -> None:
    legacy = Connect(protocol_name="MQIsdp", protocol_level=3, client_id="cam")
    sub31 = bytes.fromhex("8a06000100016101")  # SUBSCRIBE with DUP, as 3.1 allowed on retries
    reader = PacketReader(role="server")
    assert reader.feed(encode(legacy) + sub31) == [legacy, Subscribe(1, (("a", 1),))]
    assert reader.protocol_level == 3
    with pytest.raises(MqttProtocolError):
        PacketReader(role="server").feed(encode(Connect(client_id="cam")) + sub31)
    # username and password flags set but the fields omitted: tolerated at level 3 only
    raw = bytes.fromhex("101100064d514973647003c2003c000363616d")
    assert read_all(raw) == [legacy]
    # reserved CONNECT flag is not checked at level 3
    raw = bytes.fromhex("101100064d51497364700303003c000363616d")
    assert read_all(raw) == [legacy]


# --- encoder refuses what it cannot encode --------------------------------------------------------

INVALID_FOR_ENCODING: list[object] = [
    Publish("a/+", b""),
    Publish("", b""),
    Publish("a\x00", b""),
    Publish("\ud800", b""),
    Publish("a", b"", 3, packet_id=1),
    Publish("a", b"", 1),
    Publish("a", b"", 1, packet_id=0),
    Publish("a", b"", 1, packet_id=65536),
    Publish("a", b"", 0, packet_id=1),
    Publish("a", b"", 0, dup=True),
    Publish("a" * 65536, b""),
    Connect(client_id="", clean_session=False),
    Connect(client_id="c", password=b"p"),
    Connect(client_id="c", will_topic="w"),
    Connect(client_id="c", will_qos=1),
    Connect(client_id="c", will_topic="w/#", will_payload=b""),
    Connect(client_id="c", keepalive=70000),
    ConnAck(True, 5),
    ConnAck(False, 6),
    PubAck(0),
    Subscribe(1, ()),
    Subscribe(1, (("a#", 0),)),
    Subscribe(1, (("a", 3),)),
    SubAck(1, ()),
    SubAck(1, (3,)),
    Unsubscribe(1, ()),
    Unsubscribe(1, ("+a",)),
]


@pytest.mark.parametrize("packet", INVALID_FOR_ENCODING, ids=repr)
def test_encoder_refuses_invalid_packets(packet: Packet) -> None:
    with pytest.raises(ValueError):
        encode(packet)


def test_encode_rejects_non_packets() -> None:
    with pytest.raises(TypeError):
        encode(object())  # type: ignore[arg-type]


def test_fixed_packets_are_precomputed() -> None:
    assert encode(PingResp()) is encode(PingResp())
    assert encode(ConnAck()) is encode(ConnAck())


# --- fuzzing --------------------------------------------------------------------------------------

_FIRST_BYTES = [0x10, 0x20, 0x30, 0x31, 0x32, 0x3B, 0x34, 0x40, 0x50, 0x62, 0x70, 0x82, 0x90, 0xA2, 0xB0, 0xC0, 0xD0, 0xE0]


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        digit, n = n & 0x7F, n >> 7
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _feed_checked(reader: PacketReader, data: bytes, chunk: int) -> list[Packet]:
    """Feed in chunks; only MqttProtocolError may escape; the buffer stays bounded."""
    got: list[Packet] = []
    try:
        for pos in range(0, len(data), chunk):
            got += reader.feed(data[pos : pos + chunk])
            assert reader.buffered <= reader.max_packet_size + 5
    except MqttProtocolError as exc:
        assert isinstance(exc.reason, str)
        assert exc.connack_code in (None, CONNACK_UNACCEPTABLE_PROTOCOL_VERSION, CONNACK_IDENTIFIER_REJECTED)
        with pytest.raises(MqttProtocolError):
            reader.feed(b"\xc0\x00")
    for packet in got:  # whatever was accepted must re-encode to something that reads back the same
        assert read_all(encode(packet)) == [packet]
    return got


roles = st.sampled_from([None, "server", "client"])


@FUZZ
@given(st.binary(max_size=400), st.integers(2, 300), st.integers(1, 64), roles)
def test_fuzz_random_bytes(data: bytes, max_size: int, chunk: int, role: str | None) -> None:
    _feed_checked(PacketReader(max_size, role=role), data, chunk)  # type: ignore[arg-type]


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(_FIRST_BYTES), st.binary(max_size=60)), max_size=6), st.integers(1, 64))
def test_fuzz_well_framed_random_bodies(frames: list[tuple[int, bytes]], chunk: int) -> None:
    data = b"".join(bytes((first,)) + _remaining_length(len(body)) + body for first, body in frames)
    _feed_checked(PacketReader(128), data, chunk)


@st.composite
def mutated_streams(draw: st.DrawFn) -> bytes:
    stream = bytearray(b"".join(map(encode, draw(st.lists(any_packets, min_size=1, max_size=4)))))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        if not stream:
            break
        at = draw(st.integers(0, len(stream) - 1))
        if op == "flip":
            stream[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            stream[at] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, 0x23, 0x2B, 0x2F, 0xC0]))
        elif op == "insert":
            stream[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del stream[at : at + draw(st.integers(1, 4))]
        else:
            del stream[at:]
    return bytes(stream)


@FUZZ
@given(mutated_streams(), st.integers(1, 64), st.sampled_from([64, 512, 4096]))
def test_fuzz_mutated_valid_packets(data: bytes, chunk: int, max_size: int) -> None:
    _feed_checked(PacketReader(max_size), data, chunk)
