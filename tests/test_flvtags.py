"""FLV tag bodies ⇄ MediaFrame: every codec form, composition time sign, round trips, malformed input, fuzzing."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iotvideo.media.flvtags import (
    FlvError,
    UnsupportedCodec,
    audio_payload,
    parse_audio,
    parse_audio_tag,
    parse_video,
    parse_video_tag,
    video_payload,
)
from iotvideo.media.frames import Codec, MediaFrame

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

AVC_CONFIG = bytes([1, 0x64, 0, 0x1F, 0xFF, 0xE1, 0, 4]) + b"\x67\x64\x00\x1f" + bytes([1, 0, 2, 0x68, 0xEB])
HEVC_CONFIG = bytes([1, 1, 0x60, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 0x5D, 0xF0, 0, 0xFC, 0xFD, 0xF8, 0xF8, 0, 0, 0x0F, 0])
NALS = struct.pack(">I", 3) + b"\x65\x88\x84" + struct.pack(">I", 2) + b"\x06\x05"


def cts(value: int) -> bytes:
    return (value & 0xFFFFFF).to_bytes(3, "big")


# --- video ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec_id, codec", [(7, Codec.H264), (12, Codec.H265)])
def test_legacy_video(codec_id: int, codec: Codec) -> None:
    config = AVC_CONFIG if codec is Codec.H264 else HEVC_CONFIG
    frame = parse_video(bytes([0x10 | codec_id, 0]) + cts(0) + config, 1000)
    assert frame == MediaFrame(codec, 1000, 1000, config, is_config=True)
    frame = parse_video(bytes([0x10 | codec_id, 1]) + cts(80) + NALS, 1000)
    assert frame == MediaFrame(codec, 1000, 1080, NALS, keyframe=True)
    frame = parse_video(bytes([0x20 | codec_id, 1]) + cts(-40) + NALS, 1000)  # negative composition time
    assert frame is not None and frame.pts == 960 and not frame.keyframe
    frame = parse_video(bytes([0x40 | codec_id, 1]) + cts(0) + NALS, 5)  # generated key frame
    assert frame is not None and frame.keyframe
    assert parse_video(bytes([0x30 | codec_id, 1]) + cts(0) + NALS, 5).keyframe is False  # type: ignore[union-attr]
    assert parse_video(bytes([0x10 | codec_id, 2]) + cts(0), 5) is None  # end of sequence
    assert parse_video(bytes([0x50 | codec_id, 0]), 5) is None  # video info/command frame
    assert parse_video(bytes([0x10 | codec_id, 1]) + cts(0), 5) is None  # empty frame


def test_composition_time_extremes() -> None:
    assert parse_video(b"\x17\x01\x80\x00\x00" + NALS, 10_000_000).pts == 10_000_000 - (1 << 23)  # type: ignore[union-attr]
    assert parse_video(b"\x17\x01\x7f\xff\xff" + NALS, 0).pts == (1 << 23) - 1  # type: ignore[union-attr]
    assert parse_video(b"\x17\x01\xff\xff\xff" + NALS, 100).pts == 99  # type: ignore[union-attr]


@pytest.mark.parametrize("fourcc, codec, config", [(b"hvc1", Codec.H265, HEVC_CONFIG), (b"avc1", Codec.H264, AVC_CONFIG)])
def test_enhanced_rtmp_video(fourcc: bytes, codec: Codec, config: bytes) -> None:
    assert parse_video(bytes([0x90]) + fourcc + config, 0) == MediaFrame(codec, 0, 0, config, is_config=True)
    frame = parse_video(bytes([0x91]) + fourcc + cts(-33) + NALS, 100)  # CodedFrames: with composition time
    assert frame == MediaFrame(codec, 100, 67, NALS, keyframe=True)
    frame = parse_video(bytes([0xA3]) + fourcc + NALS, 100)  # CodedFramesX: none
    assert frame == MediaFrame(codec, 100, 100, NALS)
    assert parse_video(bytes([0x92]) + fourcc, 0) is None  # SequenceEnd
    assert parse_video(bytes([0x94]) + fourcc + b"\x02\x00\x09colorInfo\x03\x00\x00\x09", 0) is None  # Metadata
    assert parse_video(bytes([0xD0, 0x01]), 0) is None  # command frame: no FourCC follows


@pytest.mark.parametrize(
    "payload",
    [b"\x12\x00\x00\x00\x00", bytes([0x91]) + b"av01" + cts(0) + NALS, b"\x96hvc1", b"\x97"],
)
def test_unsupported_video(payload: bytes) -> None:
    with pytest.raises(UnsupportedCodec):
        parse_video(payload, 0)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x17\x01\x00",  # truncated header
        b"\x1c\x01",  # truncated legacy HEVC header
        b"\x17\x03\x00\x00\x00" + NALS,  # AVCPacketType 3
        b"\x07\x01\x00\x00\x00" + NALS,  # frame type 0
        b"\x67\x01\x00\x00\x00" + NALS,  # frame type 6
        b"\x17\x00\x00\x00\x00\x01\x64",  # short AVC config
        b"\x17\x00\x00\x00\x00" + b"\x00" + AVC_CONFIG[1:],  # configurationVersion 0
        b"\x1c\x00\x00\x00\x00" + HEVC_CONFIG[:10],  # short HEVC config
        b"\x17\x01\x00\x00\x00" + struct.pack(">I", 10) + b"abc",  # NAL length past the end
        b"\x17\x01\x00\x00\x00\x00\x00\x00\x00",  # zero-length NAL and nothing else
        b"\x91hvc1\x00",  # CodedFrames without its composition time
        b"\x95hvc1",  # MPEG-2 TS sequence start is not for hvc1
        b"\x98hvc1",  # reserved packet type
        b"\x90hv",  # truncated FourCC
    ],
)
def test_malformed_video(payload: bytes) -> None:
    with pytest.raises(FlvError):
        parse_video(payload, 0)


def test_annex_b_video_is_converted() -> None:
    annexb = b"\x00\x00\x00\x01\x67\x64\x00\x1f\x00\x00\x01\x68\xeb\x00\x00\x00\x01\x65\x88\x84\x00"
    frame = parse_video(b"\x17\x01\x00\x00\x00" + annexb, 0)
    assert frame is not None
    assert frame.data == (
        struct.pack(">I", 4) + b"\x67\x64\x00\x1f" + struct.pack(">I", 2) + b"\x68\xeb" + struct.pack(">I", 4) + b"\x65\x88\x84\x00"
    )
    # A valid length-prefixed frame that happens to start like a start code stays as it is.
    eos = struct.pack(">I", 1) + b"\x0a"
    assert parse_video(b"\x17\x01\x00\x00\x00" + eos, 0).data == eos  # type: ignore[union-attr]


def test_video_payload_forms() -> None:
    key = MediaFrame(Codec.H264, 40, 80, NALS, keyframe=True)
    assert video_payload(key) == b"\x17\x01" + cts(40) + NALS
    assert video_payload(MediaFrame(Codec.H264, 0, 0, AVC_CONFIG, is_config=True)) == b"\x17\x00" + cts(0) + AVC_CONFIG
    assert video_payload(MediaFrame(Codec.H264, 80, 40, NALS)) == b"\x27\x01" + cts(-40) + NALS
    hevc = MediaFrame(Codec.H265, 40, 80, NALS, keyframe=True)
    assert video_payload(hevc) == b"\x91hvc1" + cts(40) + NALS
    assert video_payload(MediaFrame(Codec.H265, 40, 40, NALS)) == b"\xa3hvc1" + NALS
    assert video_payload(MediaFrame(Codec.H265, 0, 0, HEVC_CONFIG, is_config=True)) == b"\x90hvc1" + HEVC_CONFIG
    assert video_payload(hevc, hevc_legacy=True) == b"\x1c\x01" + cts(40) + NALS
    with pytest.raises(FlvError):
        video_payload(MediaFrame(Codec.H264, 0, 1 << 23, NALS))
    with pytest.raises(FlvError):
        video_payload(MediaFrame(Codec.AAC, 0, 0, b"x"))


nal_units = st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=4).map(
    lambda nals: b"".join(struct.pack(">I", len(n)) + n for n in nals)
)


@st.composite
def video_frames(draw: st.DrawFn) -> MediaFrame:
    codec = draw(st.sampled_from([Codec.H264, Codec.H265]))
    dts = draw(st.integers(0, 2**32 - 1))
    if draw(st.booleans()):
        tail = draw(st.binary(max_size=30))
        data = (AVC_CONFIG if codec is Codec.H264 else HEVC_CONFIG) + tail
        return MediaFrame(codec, dts, dts, data, is_config=True)
    offset = draw(st.integers(-(1 << 23), (1 << 23) - 1))
    return MediaFrame(codec, dts, dts + offset, draw(nal_units), keyframe=draw(st.booleans()))


@FUZZ
@given(video_frames(), st.booleans())
def test_video_round_trip(frame: MediaFrame, legacy: bool) -> None:
    assert parse_video(video_payload(frame, hevc_legacy=legacy), frame.dts) == frame


# --- audio ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "asc, rate, channels",
    [
        (b"\x12\x10", 44100, 2),  # AAC-LC 44.1 kHz stereo
        (b"\x11\x90", 48000, 2),
        (b"\x15\x88", 8000, 1),
        (b"\x14\x08\x56\xe5\x00", 16000, 1),  # with trailing SBR signalling
        (b"\x17\x80\x01\xf4\x08", 1000, 1),  # explicit 24-bit frequency (index 15)
        (b"\xf8\x08\x40", 44100, 2),  # escaped object type 31
    ],
)
def test_aac(asc: bytes, rate: int, channels: int) -> None:
    assert parse_audio(b"\xaf\x00" + asc, 20) == MediaFrame(
        Codec.AAC, 20, 20, asc, is_config=True, sample_rate=rate, channels=channels
    )


def test_aac_raw_and_payloads() -> None:
    assert parse_audio(b"\xaf\x01\x21\x10", 23) == MediaFrame(Codec.AAC, 23, 23, b"\x21\x10")
    assert parse_audio(b"\xaf\x01", 23) is None
    assert audio_payload(MediaFrame(Codec.AAC, 0, 0, b"\x12\x10", is_config=True)) == b"\xaf\x00\x12\x10"
    assert audio_payload(MediaFrame(Codec.AAC, 0, 0, b"\x21")) == b"\xaf\x01\x21"


@pytest.mark.parametrize(
    "flags, codec, rate, channels",
    [
        (0x72, Codec.PCMA, 8000, 1),  # FFmpeg's flags for A-law: rate bits 0 mean 8 kHz
        (0x82, Codec.PCMU, 8000, 1),
        (0x73, Codec.PCMA, 8000, 2),
        (0x76, Codec.PCMA, 11025, 1),
        (0x8F, Codec.PCMU, 44100, 2),
        (0x70, Codec.PCMA, 8000, 1),  # 8-bit size flag: still G.711
    ],
)
def test_g711(flags: int, codec: Codec, rate: int, channels: int) -> None:
    frame = parse_audio(bytes([flags]) + b"\xd5" * 160, 60)
    assert frame == MediaFrame(codec, 60, 60, b"\xd5" * 160, sample_rate=rate, channels=channels)
    assert parse_audio(audio_payload(frame), 60) == frame


def test_g711_payload_limits() -> None:
    assert audio_payload(MediaFrame(Codec.PCMU, 0, 0, b"\xff", sample_rate=8000, channels=1)) == b"\x82\xff"
    with pytest.raises(FlvError):
        audio_payload(MediaFrame(Codec.PCMA, 0, 0, b"\xff", sample_rate=16000, channels=1))
    with pytest.raises(FlvError):
        audio_payload(MediaFrame(Codec.PCMA, 0, 0, b"\xff", sample_rate=8000, channels=3))
    with pytest.raises(FlvError):
        audio_payload(MediaFrame(Codec.H264, 0, 0, b"\xff"))


@pytest.mark.parametrize(
    "payload",
    [b"", b"\xaf", b"\xaf\x02\x00", b"\xaf\x00", b"\xaf\x00\x17", b"\xaf\x00\x17\x80", b"\xaf\x00\x16\x88"],
)
def test_malformed_audio(payload: bytes) -> None:
    with pytest.raises(FlvError):
        parse_audio(payload, 0)


@pytest.mark.parametrize("payload", [b"\x2f\xff\xfb", b"\x9f\x00mp4a", b"\xbf\x00", b"\x3f\x00"])
def test_unsupported_audio(payload: bytes) -> None:
    with pytest.raises(UnsupportedCodec):
        parse_audio(payload, 0)


@st.composite
def audio_frames(draw: st.DrawFn) -> MediaFrame:
    ts = draw(st.integers(0, 2**32 - 1))
    data = draw(st.binary(min_size=1, max_size=50))
    kind = draw(st.sampled_from(["asc", "aac", "g711"]))
    if kind == "asc":
        return MediaFrame(Codec.AAC, ts, ts, b"\x12\x10" + data, is_config=True, sample_rate=44100, channels=2)
    if kind == "aac":
        return MediaFrame(Codec.AAC, ts, ts, data)
    codec = draw(st.sampled_from([Codec.PCMA, Codec.PCMU]))
    rate = draw(st.sampled_from([8000, 11025, 22050, 44100]))
    return MediaFrame(codec, ts, ts, data, sample_rate=rate, channels=draw(st.sampled_from([1, 2])))


@FUZZ
@given(audio_frames())
def test_audio_round_trip(frame: MediaFrame) -> None:
    assert parse_audio(audio_payload(frame), frame.dts) == frame


# --- fuzzing --------------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=80), st.integers(0, 2**32 - 1))
def test_fuzz_random(payload: bytes, ts: int) -> None:
    for parse in (parse_video, parse_audio):
        try:
            frame = parse(payload, ts)
        except FlvError:
            continue
        if frame is not None:
            assert frame.data or frame.is_config


@FUZZ
@given(st.one_of(video_frames().map(video_payload), audio_frames().map(audio_payload)), st.data())
def test_fuzz_mutated(payload: bytes, data: st.DataObject) -> None:
    raw = bytearray(payload)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    for body in (bytes(raw), bytes(raw[:cut])):
        for parse in (parse_video, parse_audio):
            try:
                parse(body, 0)
            except FlvError:
                pass


@FUZZ
@given(st.one_of(video_frames().map(video_payload), audio_frames().map(audio_payload),
                 video_frames().map(lambda f: video_payload(f, hevc_legacy=True))), st.data())
def test_as_built_says_exactly_when_the_tag_is_what_the_payload_builders_give(payload: bytes, data: st.DataObject) -> None:
    """A relay sends a published tag on as it came only when rebuilding it from the frame would
    give the same bytes (any other frame type, codec form, sound flags or Annex B is rebuilt)."""
    raw = bytearray(payload)
    if data.draw(st.booleans()):
        raw[0] = data.draw(st.integers(0, 255))
    for parse, build in ((parse_video_tag, video_payload), (parse_audio_tag, audio_payload)):
        try:
            frame, as_built = parse(bytes(raw), 1000)
        except FlvError:
            continue
        if frame is None:
            assert not as_built
            continue
        try:
            rebuilt = build(frame)
        except FlvError:
            rebuilt = None
        assert as_built == (rebuilt == bytes(raw)), (bytes(raw[:8]), as_built)
        assert parse(bytes(raw), 1000)[0] == (parse_video if parse is parse_video_tag else parse_audio)(bytes(raw), 1000)


def test_annex_b_and_other_frame_types_are_not_as_built() -> None:
    annexb = b"\x17\x01" + cts(0) + b"\x00\x00\x00\x01\x65\x88\x84"
    assert parse_video_tag(annexb, 0)[1] is False  # converted to length prefixes: rebuilt
    legacy = b"\x17\x01" + cts(40) + NALS
    assert parse_video_tag(legacy, 0)[1] is True
    for b0 in (0x37, 0x47):  # disposable inter frame, generated key frame
        assert parse_video_tag(bytes([b0]) + legacy[1:], 0)[1] is False
    assert parse_audio_tag(b"\xaf\x01\x21\x10", 0)[1] is True
    assert parse_audio_tag(b"\xae\x01\x21\x10", 0)[1] is False  # the mono flag: rebuilt as 0xAF
