"""fMP4 writer, LL-HLS packager, codec record parsers and the FLV framer.

Box structure is checked with a tiny box reader here; playlists against golden text.
When PyAV is importable, real libx264/libx265/AAC streams go through the packager and
are demuxed and decoded back by FFmpeg (fMP4 and an HLS VOD playlist).
"""

from __future__ import annotations

import fractions
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iotvideo.media.codecs import (
    BitReader,
    BitWriter,
    CodecError,
    annexb_nalus,
    avc_config_record,
    hevc_config_record,
    length_prefixed_nalus,
    parse_aac_config,
    parse_avc_config,
    parse_h264_sps,
    parse_hevc_config,
    parse_hevc_sps,
    unescape_rbsp,
)
from iotvideo.media.flv import FlvMuxer, TagKind, file_header, metadata_tag, tag
from iotvideo.media.fmp4 import Sample, Track, TrackFragment, fragment, init_segment
from iotvideo.media.frames import Codec, MediaFrame
from iotvideo.media.rtmp import amf0
from iotvideo.media.hls import HlsConfig, HlsPackager, Variant, VodSegment, render_multivariant, render_vod_playlist
from llhls_check import check_media_playlist, first_video_sync

# --- helpers: parameter sets, configs, frames -----------------------------------------


def escape(rbsp: bytes) -> bytes:
    """Insert emulation-prevention bytes (the inverse of unescape_rbsp)."""
    out, zeros = bytearray(), 0
    for b in rbsp:
        if zeros >= 2 and b <= 3:
            out.append(3)
            zeros = 0
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


def h264_sps(profile: int = 66, level: int = 30, w_mbs: int = 20, h_units: int = 15,
             crop: tuple[int, int, int, int] | None = None, frame_mbs_only: bool = True) -> bytes:
    w = BitWriter()
    w.u(8, profile), w.u(8, 0xC0), w.u(8, level), w.ue(0)
    if profile == 100:
        w.ue(1), w.ue(0), w.ue(0), w.u(1, 0), w.u(1, 0)  # 4:2:0, 8 bit, no scaling matrix
    w.ue(0), w.ue(0), w.ue(0)  # log2_max_frame_num, poc type 0, log2_max_poc_lsb
    w.ue(1), w.u(1, 0), w.ue(w_mbs - 1), w.ue(h_units - 1), w.u(1, int(frame_mbs_only))
    if not frame_mbs_only:
        w.u(1, 0)
    w.u(1, 1)
    w.u(1, crop is not None)
    for v in crop or ():
        w.ue(v)
    w.u(1, 0)  # no VUI
    return b"\x67" + escape(w.to_bytes())


def hevc_sps(width: int = 1920, height: int = 1088, crop_bottom: int = 4) -> bytes:
    w = BitWriter()
    w.u(4, 0), w.u(3, 0), w.u(1, 1)
    w.u(2, 0), w.u(1, 0), w.u(5, 1)  # Main
    w.u(32, 0x6000_0000), w.u(48, 0xB0 << 40), w.u(8, 93)
    w.ue(0), w.ue(1), w.ue(width), w.ue(height)
    w.u(1, 1), w.ue(0), w.ue(0), w.ue(0), w.ue(crop_bottom)
    w.ue(0), w.ue(0)
    return b"\x42\x01" + escape(w.to_bytes())


H264_SPS = h264_sps()
H264_PPS = b"\x68\xce\x3c\x80"
AVC_RECORD = avc_config_record([H264_SPS], [H264_PPS])
HEVC_RECORD = hevc_config_record([b"\x40\x01\x0c\x01"], [hevc_sps()], [b"\x44\x01\xc1\x72"])
ASC_44100_STEREO = bytes([0x12, 0x10])


def avcc(*nalus: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(n)) + n for n in nalus)


def video_frame(dts: int, key: bool, size: int = 100, cts: int = 0, codec: Codec = Codec.H264) -> MediaFrame:
    nal = (b"\x65" if key else b"\x41") + bytes([dts & 0xFF]) * (size - 1)
    return MediaFrame(codec, dts, dts + cts, avcc(nal), keyframe=key)


def video_config(record: bytes = AVC_RECORD, codec: Codec = Codec.H264) -> MediaFrame:
    return MediaFrame(codec, 0, 0, record, keyframe=True, is_config=True)


def audio_config() -> MediaFrame:
    return MediaFrame(Codec.AAC, 0, 0, ASC_44100_STEREO, is_config=True, sample_rate=44100, channels=2)


def audio_frame(k: int) -> MediaFrame:
    t = round(k * 1024 * 1000 / 44100)
    return MediaFrame(Codec.AAC, t, t, bytes([0x21, k & 0xFF]) * 20)


# --- helpers: a tiny ISO BMFF box reader ----------------------------------------------

CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"mvex", b"moof", b"traf", b"dinf"}


def boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, box end) of each box in data[start:end]; sizes must tile exactly."""
    pos, end = start, len(data) if end is None else end
    while pos < end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        assert size >= 8 and pos + size <= end, f"bad size for {kind!r} at {pos}"
        yield kind, pos + 8, pos + size
        pos += size
    assert pos == end


def tree(data: bytes, start: int = 0, end: int | None = None) -> dict[bytes, list]:
    """Nested {type: [(payload start, end, children)]} for the container boxes."""
    out: dict[bytes, list] = {}
    for kind, s, e in boxes(data, start, end):
        children = tree(data, s, e) if kind in CONTAINERS else {}
        out.setdefault(kind, []).append((s, e, children))
    return out


def path(t: dict, *kinds: bytes) -> tuple[int, int, dict]:
    node = None
    for k in kinds:
        assert k in t, f"missing {k!r}"
        node = t[k][0]
        t = node[2]
    assert node is not None
    return node


def sample_entry(data: bytes) -> tuple[bytes, bytes]:
    """(sample entry type, its codec configuration box type) from an init segment."""
    s, e, _ = path(tree(data), b"moov", b"trak", b"mdia", b"minf", b"stbl")
    stsd = next((ps, pe) for k, ps, pe in boxes(data, s, e) if k == b"stsd")
    entry_kind, es, ee = next(boxes(data, stsd[0] + 8, stsd[1]))
    inner_start = es + (78 if entry_kind in (b"avc1", b"hvc1") else 28)
    inner = [k for k, _, _ in boxes(data, inner_start, ee)]
    return entry_kind, inner[0]


def check_fragment(data: bytes) -> list[tuple[int, int, list[int]]]:
    """Check a moof+mdat; returns (track id, base decode time, sample sizes) per traf."""
    top = list(boxes(data))
    assert [k for k, _, _ in top] == [b"moof", b"mdat"]
    moof_start = 0
    mdat_payload = (top[1][1], top[1][2])
    t = tree(data)
    out = []
    covered = []
    for s, e, traf in t[b"moof"][0][2][b"traf"]:
        ts, _, _ = traf[b"tfhd"][0]
        flags = int.from_bytes(data[ts + 1 : ts + 4], "big")
        assert flags & 0x020000  # default-base-is-moof
        track_id = struct.unpack_from(">I", data, ts + 4)[0]
        ds, _, _ = traf[b"tfdt"][0]
        assert data[ds] == 1
        base = struct.unpack_from(">Q", data, ds + 4)[0]
        rs, re_, _ = traf[b"trun"][0]
        version, tflags = data[rs], int.from_bytes(data[rs + 1 : rs + 4], "big")
        assert version == 1 and tflags == 0xF01
        count, offset = struct.unpack_from(">Ii", data, rs + 4)
        assert re_ - rs == 12 + 16 * count
        sizes = [struct.unpack_from(">IIIi", data, rs + 12 + 16 * i)[1] for i in range(count)]
        covered.append((moof_start + offset, moof_start + offset + sum(sizes)))
        out.append((track_id, base, sizes))
    covered.sort()
    assert covered[0][0] == mdat_payload[0] and covered[-1][1] == mdat_payload[1]
    assert all(a[1] == b[0] for a, b in zip(covered, covered[1:]))
    return out


# --- codecs ----------------------------------------------------------------------------


def test_h264_sps_size_and_codec_string() -> None:
    cfg = parse_avc_config(AVC_RECORD)
    assert (cfg.width, cfg.height, cfg.codec_string) == (320, 240, "avc1.42C01E")
    assert cfg.sps == (H264_SPS,) and cfg.pps == (H264_PPS,) and cfg.nal_length_size == 4
    hd = parse_h264_sps(h264_sps(100, 40, 120, 68, crop=(0, 0, 0, 4)))
    assert (hd.width, hd.height, hd.profile_idc, hd.level_idc) == (1920, 1080, 100, 40)
    interlaced = parse_h264_sps(h264_sps(77, 30, 45, 18, frame_mbs_only=False))
    assert (interlaced.width, interlaced.height) == (720, 576)
    rec = avc_config_record([h264_sps(100, 31, 80, 45)], [H264_PPS])
    assert parse_avc_config(rec).codec_string == "avc1.64C01F" and len(rec) > 15 + len(H264_PPS)


def test_hevc_config_codec_string_and_size() -> None:
    cfg = parse_hevc_config(HEVC_RECORD)
    assert cfg.codec_string == "hvc1.1.6.L93.B0"
    assert (cfg.width, cfg.height) == (1920, 1080)
    sps = parse_hevc_sps(hevc_sps(1280, 720, 0))
    assert (sps.width, sps.height, sps.chroma_format_idc, sps.bit_depth_luma) == (1280, 720, 1, 8)


def test_aac_config() -> None:
    cfg = parse_aac_config(ASC_44100_STEREO)
    assert (cfg.object_type, cfg.sample_rate, cfg.channels, cfg.frame_length) == (2, 44100, 2, 1024)
    assert cfg.codec_string == "mp4a.40.2"
    assert parse_aac_config(bytes([0x11, 0x88])).sample_rate == 48000  # mono, 48 kHz
    explicit = BitWriter()
    explicit.u(5, 2), explicit.u(4, 15), explicit.u(24, 12345), explicit.u(4, 1)
    assert parse_aac_config(explicit.to_bytes()).sample_rate == 12345
    for bad in (b"", b"\x00\x00", bytes([0x17, 0x90])):  # truncated, object type 0, index 14
        with pytest.raises(CodecError):
            parse_aac_config(bad)


def test_malformed_records_raise_codec_error() -> None:
    for bad in (b"", b"\x01\x42", AVC_RECORD[:-2], b"\x02" + AVC_RECORD[1:]):
        with pytest.raises(CodecError):
            parse_avc_config(bad)
    for bad in (b"", HEVC_RECORD[:30], b"\x01" + bytes(22)):
        with pytest.raises(CodecError):
            parse_hevc_config(bad)


def test_unescape_rbsp_and_annexb() -> None:
    assert unescape_rbsp(b"\x00\x00\x03\x01\x00\x00\x03\x00\x03") == b"\x00\x00\x01\x00\x00\x00\x03"
    stream = b"\x00\x00\x00\x01\x67\x42\x00\x00\x01\x68\xce\x00\x00\x00\x01\x65\x88"
    assert annexb_nalus(stream) == [b"\x67\x42", b"\x68\xce", b"\x65\x88"]
    assert list(length_prefixed_nalus(avcc(b"ab", b"c"))) == [b"ab", b"c"]
    with pytest.raises(CodecError):
        list(length_prefixed_nalus(avcc(b"ab")[:-1]))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_sps_parsers_only_raise_codec_error(data: bytes) -> None:
    for parse, header in ((parse_h264_sps, b"\x67"), (parse_hevc_sps, b"\x42\x01")):
        try:
            parse(header + data)
        except CodecError:
            pass
    for parse_record in (parse_avc_config, parse_hevc_config, parse_aac_config):
        try:
            parse_record(data)
        except CodecError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**32 - 2), st.integers(-(2**31) + 1, 2**31 - 1)), max_size=20))
def test_exp_golomb_round_trip(values: list[tuple[int, int]]) -> None:
    w = BitWriter()
    for u, s in values:
        w.ue(u)
        w.se(s)
    r = BitReader(w.to_bytes())
    assert [(r.ue(), r.se()) for _ in values] == values
    assert r.u(1) == 1  # rbsp stop bit


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 300), st.integers(1, 300), st.tuples(*[st.integers(0, 3)] * 4))
def test_h264_sps_round_trip_with_escapes(w_mbs: int, h_units: int, crop: tuple[int, int, int, int]) -> None:
    sps = parse_h264_sps(h264_sps(100, 51, w_mbs, h_units, crop=crop))
    assert sps.width == w_mbs * 16 - 2 * (crop[0] + crop[1])
    assert sps.height == h_units * 16 - 2 * (crop[2] + crop[3])


# --- fMP4 ------------------------------------------------------------------------------


def tracks() -> tuple[Track, Track]:
    return Track.from_config(video_config(), 1), Track.from_config(audio_config(), 2)


def test_init_segment_structure() -> None:
    video, audio = tracks()
    assert (video.width, video.height, video.timescale, audio.timescale, audio.channels) == (320, 240, 90000, 44100, 2)
    init = init_segment([video, audio])
    t = tree(init)
    assert list(t) == [b"ftyp", b"moov"]
    s, _, _ = t[b"ftyp"][0]
    assert init[s : s + 4] == b"iso6" and b"cmfc" in init[s : t[b"ftyp"][0][1]]
    moov = t[b"moov"][0][2]
    assert len(moov[b"trak"]) == 2 and len(moov[b"mvex"][0][2][b"trex"]) == 2
    for _, _, trak in moov[b"trak"]:
        stbl = path(trak, b"mdia", b"minf", b"stbl")[2]
        assert set(stbl) == {b"stsd", b"stts", b"stsc", b"stsz", b"stco"}
        assert {b"tkhd", b"mdia"} <= set(trak)
        assert {b"mdhd", b"hdlr", b"minf"} <= set(path(trak, b"mdia")[2])
    assert sample_entry(init) == (b"avc1", b"avcC")
    assert init.count(AVC_RECORD) == 1
    hevc = Track.from_config(video_config(HEVC_RECORD, Codec.H265), 1)
    assert sample_entry(init_segment([hevc])) == (b"hvc1", b"hvcC")
    assert sample_entry(init_segment([audio])) == (b"mp4a", b"esds")


def test_fragment_structure() -> None:
    video, audio = tracks()
    vs = [Sample(b"v" * n, 3000, i == 0, 6000 if i % 2 else 0) for i, n in enumerate((500, 20, 30))]
    aus = [Sample(b"a" * n, 1024) for n in (7, 8, 9, 10)]
    data = fragment(7, [TrackFragment(video, 900_000, vs), TrackFragment(audio, 441_000, aus)])
    assert check_fragment(data) == [(1, 900_000, [500, 20, 30]), (2, 441_000, [7, 8, 9, 10])]
    s, _, _ = path(tree(data), b"moof", b"mfhd")
    assert struct.unpack_from(">I", data, s + 4)[0] == 7
    rs, _, _ = path(tree(data), b"moof", b"traf", b"trun")
    rows = [struct.unpack_from(">IIIi", data, rs + 12 + 16 * i) for i in range(3)]
    assert [r[2] for r in rows] == [0x02000000, 0x01010000, 0x01010000]
    assert [r[3] for r in rows] == [0, 6000, 0]


# --- HLS packaging ----------------------------------------------------------------------


def feed_video(p: HlsPackager, frames: int, fps: int = 10, gop: int = 10, start: int = 0) -> None:
    for i in range(start, start + frames):
        p.feed(video_frame(i * 1000 // fps, i % gop == 0), now=1_700_000_000.0 + i / fps)


def small_packager(window: int = 3) -> HlsPackager:
    p = HlsPackager(HlsConfig(segment_target=1.0, part_target=0.3, window=window, start_segment=None))
    p.feed(video_config())
    return p


GOLDEN = """\
#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:1
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.900
#EXT-X-PART-INF:PART-TARGET=0.300
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MAP:URI="init.mp4?s=abc"
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z
#EXT-X-PART:DURATION=0.300,URI="part0.m4s?s=abc",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.300,URI="part1.m4s?s=abc"
#EXT-X-PART:DURATION=0.300,URI="part2.m4s?s=abc"
#EXT-X-PART:DURATION=0.100,URI="part3.m4s?s=abc"
#EXTINF:1.000,
seg0.m4s?s=abc
#EXT-X-PART:DURATION=0.300,URI="part4.m4s?s=abc",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part5.m4s?s=abc"
"""


def test_media_playlist_golden() -> None:
    p = small_packager()
    feed_video(p, 14)  # frames 0..1.3 s: segment 0 closed at the 1 s key frame, one part of segment 1
    assert p.media_playlist(lambda name: f"{name}?s=abc") == GOLDEN
    assert p.resource("init.mp4") == p.init() and p.init() is not None
    assert p.resource("seg0.m4s") == p.segment(0) == b"".join(p.part(0, i) or b"" for i in range(4))
    assert p.resource("part4.m4s") == p.part(1, 0) and p.part(1, 1) is None
    assert p.resource("part5.m4s") is None and p.pending("part5.m4s") and not p.pending("part9.m4s")
    assert p.resource("seg1.m4s") is None and p.pending("seg1.m4s")
    assert p.resource("../etc/passwd") is None and not p.pending("x")
    # every part is a fragment with increasing sequence numbers and whole frames
    for part_id in range(5):
        (track_id, base, sizes), = check_fragment(p.resource(f"part{part_id}.m4s") or b"")
        assert track_id == 1 and base == [0, 27000, 54000, 81000, 90000][part_id]
        assert len(sizes) == [3, 3, 3, 1, 3][part_id]


def test_blocking_reload_readiness_and_version() -> None:
    p = small_packager()
    assert not p.ready_for(0) and not p.ready_for(0, 0)
    v0 = p.version
    feed_video(p, 3)
    assert p.version == v0 and not p.ready_for(0, 0)  # the frame at 200 ms is still open
    assert p.feed(video_frame(300, False), now=0.0)  # closes part 0
    assert p.version > v0 and p.ready_for(0, 0) and not p.ready_for(0, 1) and not p.ready_for(0)
    feed_video(p, 8, start=4)  # up to 1.1 s: segment 0 done
    assert p.ready_for(0) and p.ready_for(0, 9) and not p.ready_for(1, 0) and not p.ready_for(1)
    assert p.blocking_request_valid(3) and not p.blocking_request_valid(4)
    p.finish()
    assert p.ended and p.ready_for(5, 5) and p.media_playlist().endswith("#EXT-X-ENDLIST\n")
    assert "PRELOAD-HINT" not in p.media_playlist() and p.segment(1) is not None


def test_window_slides_media_sequence() -> None:
    p = small_packager(window=4)
    feed_video(p, 64)  # segments 0..5 complete, 6 open with one part
    playlist = p.media_playlist()
    assert "#EXT-X-MEDIA-SEQUENCE:2\n" in playlist
    assert [s.msn for s in p.segments] == [2, 3, 4, 5]
    assert p.segment(1) is None and p.segment(2) is not None
    assert "seg1.m4s" not in playlist and playlist.count("#EXTINF:1.000,") == 4
    assert p.part(1, 0) is None and p.part(2, 0) is not None and p.resource("part7.m4s") is None
    # parts are listed only for the last three target durations: segments 3, 4, 5 and 6
    assert '"part11.m4s"' not in playlist and '"part12.m4s"' in playlist and '"part24.m4s"' in playlist
    assert "#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:22.000Z" in playlist
    assert playlist.endswith('#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part25.m4s"\n')


def test_codec_change_starts_a_discontinuity() -> None:
    p = small_packager(window=4)
    feed_video(p, 15)
    p.feed(video_config(avc_config_record([h264_sps(100, 40, 120, 68, (0, 0, 0, 4))], [H264_PPS])))
    p.feed(video_frame(1500, False))  # still the old configuration's GOP
    p.feed(video_frame(1600, True))
    feed_video(p, 15, start=17)
    playlist = p.media_playlist()
    assert '#EXT-X-MAP:URI="init.mp4"' in playlist and '#EXT-X-MAP:URI="init1.mp4"' in playlist
    assert playlist.count("#EXT-X-DISCONTINUITY\n") == 1
    assert p.tracks[0].width == 1920 and p.resource("init1.mp4") == p.init()
    assert p.init(0) is not None and p.init(0) != p.init(1)
    feed_video(p, 60, start=32)
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:1" in p.media_playlist() and p.init(0) is None


def test_audio_and_video_parts() -> None:
    p = HlsPackager(HlsConfig(segment_target=2.0, part_target=1 / 3, window=6, start_segment=None))
    p.feed(video_config())
    p.feed(audio_config())
    k = 0
    for i in range(25 * 5):  # 5 s at 25 fps, GOP 1 s
        t = i * 40
        while round(k * 1024 * 1000 / 44100) <= t:
            p.feed(audio_frame(k), now=float(t))
            k += 1
        p.feed(video_frame(t, i % 25 == 0, cts=80 if i % 25 else 0), now=float(t))
    assert [s.duration_ms for s in p.segments] == [2000, 2000]
    assert p.codecs == "avc1.42C01E,mp4a.40.2"
    assert "#EXT-X-PART-INF:PART-TARGET=0.334" in p.media_playlist()
    audio_times = []
    for seg in p.segments:
        assert all(part.duration_ms <= 334 for part in seg.parts)
        for i in range(len(seg.parts)):
            runs = check_fragment(seg.part_bytes(i))
            assert [r[0] for r in runs] == [1, 2]
            audio_times.append((runs[1][1], len(runs[1][2])))
    # audio runs are contiguous: each starts where the previous ended (1024 samples a frame)
    for (t0, n0), (t1, _) in zip(audio_times, audio_times[1:]):
        assert t1 == t0 + 1024 * n0
    variant = p.variant("live.m3u8")
    assert variant.resolution == (320, 240) and variant.bandwidth > 0
    assert render_multivariant([variant]) == (
        "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n"
        f'#EXT-X-STREAM-INF:BANDWIDTH={variant.bandwidth},CODECS="avc1.42C01E,mp4a.40.2",RESOLUTION=320x240\n'
        "live.m3u8\n"
    )


def test_audio_only_stream_and_dropped_frames() -> None:
    p = HlsPackager(HlsConfig(segment_target=1.0, part_target=0.3, start_segment=None))
    p.feed(audio_frame(0))  # no configuration yet: dropped
    p.feed(MediaFrame(Codec.PCMA, 0, 0, b"\xd5" * 160))  # G.711: transcoded upstream, ignored here
    p.feed(audio_config())
    for k in range(100):
        p.feed(audio_frame(k), now=0.0)
    assert p.codecs == "mp4a.40.2" and len(p.segments) >= 2
    assert "#EXT-X-INDEPENDENT-SEGMENTS" in p.media_playlist()
    assert all(pi.independent for s in p.segments for pi in s.parts)
    assert all(pi.duration_ms <= 300 for s in p.segments for pi in s.parts)


def test_waits_for_key_frame_and_survives_timestamp_reset() -> None:
    p = small_packager()
    p.feed(video_frame(0, False))
    assert p.init() is None and p.version == 0
    feed_video(p, 25, start=10)  # starts at the key frame at 1.0 s
    p.feed(video_frame(10, True))  # publisher restarted its clock
    feed_video(p, 15, start=1)
    times = [b for s in p.segments for i in range(len(s.parts)) for _, b, _ in check_fragment(s.part_bytes(i))]
    assert times == sorted(times) and len(set(times)) == len(times)


def test_segment_cut_without_key_frames_when_too_long() -> None:
    # a GOP longer than the target duration: segments are cut at part boundaries anyway, so
    # EXT-X-TARGETDURATION (1 s) holds and never changes; the next key frame starts a segment again
    p = HlsPackager(HlsConfig(segment_target=1.0, part_target=0.3, start_segment=None))
    p.feed(video_config())
    for i in range(80):
        p.feed(video_frame(i * 100, i in (0, 50)), now=0.0)
        check_media_playlist(p.media_playlist(), p.resource)
    assert [s.duration_ms for s in p.segments] == [1400, 1400, 1400, 800, 1400, 1400]
    assert [s.independent for s in p.segments] == [True, False, False, False, True, False]
    assert "#EXT-X-INDEPENDENT-SEGMENTS" not in p.media_playlist() and p.target_duration() == 1


def test_first_segment_cut_short_then_back_on_key_frames() -> None:
    p = HlsPackager(HlsConfig(segment_target=2.0, part_target=1 / 3))  # start_segment 0.7 s by default
    p.feed(video_config())
    assert not p.ready_for(0)
    for i in range(12):  # 15 fps, GOP 1 s: frames 0..733 ms
        p.feed(video_frame(i * 1000 // 15, i % 15 == 0), now=1_700_000_000.0 + i / 15)
    # the first segment ends at the first frame past 0.7 s: a player reading whole segments starts now
    assert p.ready_for(0) and [round(s.duration_ms) for s in p.segments] == [733]
    assert [(round(pi.duration_ms), pi.independent) for pi in p.segments[0].parts] == [(333, True), (333, False),
                                                                                         (67, False)]
    for i in range(12, 75):  # to 5 s
        p.feed(video_frame(i * 1000 // 15, i % 15 == 0), now=1_700_000_000.0 + i / 15)
    # the rest of the first GOP is a segment of its own (not independent), then 2 s key-frame segments
    assert [round(s.duration_ms) for s in p.segments] == [733, 267, 2000]
    assert [s.independent for s in p.segments] == [True, False, True]
    pl = check_media_playlist(p.media_playlist(), p.resource)
    assert pl.target == 2 and not pl.independent_segments and pl.part_target == 0.334
    assert [first_video_sync(s.data) for s in p.segments] == [True, False, True]


def test_long_gop_start_every_part_a_segment_until_the_key_frame() -> None:
    p = HlsPackager(HlsConfig(segment_target=2.0, part_target=1 / 3, window=20))
    p.feed(video_config())
    for i in range(15 * 9):  # 15 fps, GOP 4 s, 9 s
        p.feed(video_frame(i * 1000 // 15, i % 60 == 0), now=1_700_000_000.0 + i / 15)
        check_media_playlist(p.media_playlist(), p.resource)
    durations = [round(s.duration_ms) for s in p.segments]
    # 0.733 s, then one part (1/3 s) per segment up to the key frame at 4 s: a player that starts
    # no segment on a part that is not independent (hls.js) gets each as soon as it is complete
    k = next(i for i, s in enumerate(p.segments) if i and s.independent)
    assert durations[0] == 733 and all(d <= 334 for d in durations[1:k]) and sum(durations[:k]) == 4000
    assert p.segments[k].start_ms == 4000 and k == 11
    assert all(d <= 2499 for d in durations[k:]) and not any(s.independent for s in p.segments[1:k])


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([10, 12.5, 15, 24, 25, 30]), st.integers(1, 150), st.integers(0, 6),
       st.sampled_from([None, 0.3, 0.7, 1.5]), st.booleans(), st.integers(0, 2**32 - 1))
def test_live_playlists_follow_the_ll_hls_rules(fps: float, gop_frames: int, jitter_ms: int,
                                                 start: float | None, audio: bool, seed: int) -> None:
    """Every playlist a player could fetch, for a camera with any frame rate and GOP (up to 5 s,
    longer than the target duration), timestamps jittering by a few ms, with or without AAC:
    valid per RFC 8216bis, and the target duration never changes."""
    import random

    rng = random.Random(seed)
    gop_frames = min(gop_frames, int(5 * fps))
    p = HlsPackager(HlsConfig(start_segment=start))
    p.feed(video_config())
    if audio:
        p.feed(audio_config())
    k = 0
    targets: set[int] = set()
    last_msn = -1
    for i in range(int(fps * 9)):
        t = round(i * 1000 / fps) + (rng.randint(-jitter_ms, jitter_ms) if i else 0)
        while audio and round(k * 1024 * 1000 / 44100) <= t:
            p.feed(audio_frame(k), now=float(t))
            k += 1
        if p.feed(video_frame(t, i % gop_frames == 0), now=1_700_000_000.0 + t / 1000):
            pl = check_media_playlist(p.media_playlist(), p.resource)
            targets.add(pl.target)
            if pl.segments:
                assert pl.segments[-1].msn >= last_msn
                last_msn = pl.segments[-1].msn
    assert len(targets) == 1, f"TARGETDURATION changed: {targets}"
    assert p.segments
    if gop_frames / fps <= 2.0 - 1 / fps and start is None:  # every segment a whole number of GOPs
        assert all(s.independent for s in p.segments)
    p.finish()
    check_media_playlist(p.media_playlist(), p.resource)


frame_events = st.lists(
    st.tuples(st.sampled_from(["video", "audio", "vconfig", "aconfig"]), st.integers(-7000, 12000), st.booleans()),
    max_size=120,
)


@settings(max_examples=60, deadline=None)
@given(frame_events)
def test_packager_survives_any_frame_sequence(events: list[tuple[str, int, bool]]) -> None:
    p = HlsPackager(HlsConfig(segment_target=1.0, part_target=0.3, window=50))
    alt_avc = avc_config_record([h264_sps(100, 40, 120, 68, (0, 0, 0, 4))], [H264_PPS])
    t = 0
    for kind, delta, flag in events:
        t = max(0, t + delta // 40)
        if kind == "video":
            p.feed(video_frame(t, flag), now=0.0)
        elif kind == "audio":
            p.feed(MediaFrame(Codec.AAC, t, t, b"\x21\x00"), now=0.0)
        elif kind == "vconfig":
            p.feed(video_config(alt_avc if flag else AVC_RECORD))
        else:
            p.feed(audio_config())
        p.media_playlist()
    p.finish()
    last: dict[tuple[int, int], int] = {}
    for s in p.segments:
        for i in range(len(s.parts)):
            for track_id, base, _ in check_fragment(s.part_bytes(i)):
                assert base >= last.get((s.generation, track_id), 0)
                last[s.generation, track_id] = base
    assert p.media_playlist().endswith("#EXT-X-ENDLIST\n")


def test_malformed_config_raises_codec_error() -> None:
    p = HlsPackager()
    with pytest.raises(CodecError):
        p.feed(video_config(b"\x01\x42\x00"))


def test_vod_playlist() -> None:
    segs = [
        VodSegment("a/0.m4s", 2.0, "a/init.mp4", program_date_time=1_700_000_000.0),
        VodSegment("a/1.m4s", 1.6, "a/init.mp4"),
        VodSegment("a/2.m4s", 2.5, "a/init.mp4", discontinuity=True),
        VodSegment("b/0.m4s", 2.0, "b/init.mp4"),
    ]
    assert render_vod_playlist(segs) == """\
#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:3
#EXT-X-PLAYLIST-TYPE:VOD
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MAP:URI="a/init.mp4"
#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z
#EXTINF:2.000,
a/0.m4s
#EXTINF:1.600,
a/1.m4s
#EXT-X-DISCONTINUITY
#EXTINF:2.500,
a/2.m4s
#EXT-X-DISCONTINUITY
#EXT-X-MAP:URI="b/init.mp4"
#EXTINF:2.000,
b/0.m4s
#EXT-X-ENDLIST
"""
    assert render_multivariant([Variant("x.m3u8", 1000, ("mp4a.40.2",))]).endswith('CODECS="mp4a.40.2"\nx.m3u8\n')


# --- FLV -------------------------------------------------------------------------------


def test_flv_framing() -> None:
    assert file_header(True, True) == b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00"
    t = tag(TagKind.VIDEO, 0x01020304, b"abc")
    assert t == b"\x09\x00\x00\x03\x02\x03\x04\x01\x00\x00\x00abc\x00\x00\x00\x0e"
    meta = metadata_tag({"width": 2.0, "stereo": True})
    assert meta[0] == TagKind.SCRIPT and int.from_bytes(meta[-4:], "big") == len(meta) - 4
    assert amf0.decode(meta[11:-4]) == ["onMetaData", {"width": 2.0, "stereo": True}]
    mux = FlvMuxer(lambda f: b"V" + f.data, lambda f: b"A" + f.data)
    head = mux.start(has_audio=False, has_video=True, metadata={"width": 320})
    assert head.startswith(b"FLV\x01\x01") and b"onMetaData" in head
    first = mux.frame(MediaFrame(Codec.H264, 5000, 5000, b"x", keyframe=True))
    second = mux.frame(MediaFrame(Codec.AAC, 5040, 5040, b"y"))
    assert first[0] == 9 and first[4:8] == b"\x00\x00\x00\x00" and first[11:13] == b"Vx"
    assert second[0] == 8 and second[4:7] == b"\x00\x00\x28" and second[11:13] == b"Ay"


# --- PyAV round trip ----------------------------------------------------------------------

PARAMETER_SETS = {Codec.H264: {7, 8}, Codec.H265: {32, 33, 34}}


def nal_type(codec: Codec, nal: bytes) -> int:
    return nal[0] & 0x1F if codec is Codec.H264 else (nal[0] >> 1) & 0x3F


def encode_video(av: object, codec: Codec, frames: int, fps: int = 25, gop: int = 25) -> list[MediaFrame]:
    """A moving test pattern through libx264/libx265 (with B-frames) as AVCC/HVCC MediaFrames."""
    import av as _av

    name, params = ("libx264", "x264-params") if codec is Codec.H264 else ("libx265", "x265-params")
    ctx = _av.CodecContext.create(name, "w")
    ctx.width, ctx.height, ctx.pix_fmt = 320, 240, "yuv420p"
    ctx.time_base = fractions.Fraction(1, fps)
    ctx.framerate = fps
    extra = ":log-level=error" if codec is Codec.H265 else ""
    ctx.options = {"preset": "ultrafast", params: f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=2{extra}"}
    ctx.open()
    packets = []
    for i in range(frames):
        f = _av.VideoFrame(320, 240, "yuv420p")
        for n, plane in enumerate(f.planes):
            row = bytes(((x + 4 * i) * (n + 1)) & 0xFF for x in range(plane.line_size))
            plane.update(row * (plane.buffer_size // plane.line_size))
        f.pts = i
        packets += ctx.encode(f)
    packets += ctx.encode(None)
    out: list[MediaFrame] = []
    config: dict[int, list[bytes]] = {}
    for pkt in packets:
        nalus = annexb_nalus(bytes(pkt))
        for n in nalus:
            if nal_type(codec, n) in PARAMETER_SETS[codec]:
                config.setdefault(nal_type(codec, n), []).append(n)
        if not out:
            if codec is Codec.H264:
                record = avc_config_record(config[7], config[8])
            else:
                record = hevc_config_record(config[32], config[33], config[34])
            out.append(MediaFrame(codec, 0, 0, record, keyframe=True, is_config=True))
        body = avcc(*(n for n in nalus if nal_type(codec, n) not in PARAMETER_SETS[codec]))
        dts, pts = pkt.dts * 1000 // fps, pkt.pts * 1000 // fps
        out.append(MediaFrame(codec, dts + 1000, pts + 1000, body, keyframe=pkt.is_keyframe))
    return out


def encode_aac(seconds: float) -> list[MediaFrame]:
    import av as _av

    ctx = _av.CodecContext.create("aac", "w")
    ctx.sample_rate, ctx.layout, ctx.format = 44100, "stereo", "fltp"
    ctx.time_base = fractions.Fraction(1, 44100)
    ctx.open()
    out = [MediaFrame(Codec.AAC, 0, 0, bytes(ctx.extradata or b""), is_config=True, sample_rate=44100, channels=2)]
    packets = []
    for k in range(int(seconds * 44100 / 1024)):
        f = _av.AudioFrame(format="fltp", layout="stereo", samples=1024)
        for plane in f.planes:
            plane.update(struct.pack("<f", 0.1) * 1024)
        f.sample_rate, f.pts = 44100, k * 1024
        packets += ctx.encode(f)
    packets += ctx.encode(None)
    for pkt in packets:
        t = round(pkt.pts * 1000 / 44100) + 1000
        out.append(MediaFrame(Codec.AAC, t, t, bytes(pkt)))
    return out


def interleave(*streams: list[MediaFrame]) -> list[MediaFrame]:
    configs = [f for s in streams for f in s if f.is_config]
    media = sorted((f for s in streams for f in s if not f.is_config), key=lambda f: f.dts)
    return configs + media


def package(frames: list[MediaFrame], tmp: Path) -> HlsPackager:
    p = HlsPackager(HlsConfig(segment_target=1.0, part_target=1 / 3, window=100))
    for f in frames:
        p.feed(f, now=1_700_000_000.0 + f.dts / 1000)
    p.finish()
    (tmp / "init.mp4").write_bytes(p.init() or b"")
    for s in p.segments:
        (tmp / f"seg{s.msn}.m4s").write_bytes(s.data)
    (tmp / "all.mp4").write_bytes((p.init() or b"") + b"".join(s.data for s in p.segments))
    vod = [VodSegment(f"seg{s.msn}.m4s", s.duration_ms / 1000, "init.mp4") for s in p.segments]
    (tmp / "vod.m3u8").write_text(render_vod_playlist(vod))
    (tmp / "live.m3u8").write_text(p.media_playlist())
    for s in p.segments:
        for part in s.parts:
            (tmp / f"part{part.part_id}.m4s").write_bytes(p.resource(f"part{part.part_id}.m4s") or b"")
    return p


@pytest.mark.parametrize("codec", [Codec.H264, Codec.H265])
def test_pyav_decodes_our_fmp4_and_hls(codec: Codec, tmp_path: Path) -> None:
    av = pytest.importorskip("av")
    try:
        video = encode_video(av, codec, frames=75)  # 3 s, key frame every second
    except Exception as e:  # an FFmpeg build without this encoder
        pytest.skip(f"cannot encode {codec.value}: {e}")
    audio = encode_aac(3.0) if codec is Codec.H264 else []
    p = package(interleave(video, audio), tmp_path)
    # a short first segment (to the first frame past 0.7 s), the rest of the first GOP, then GOPs
    assert [round(s.duration_ms) for s in p.segments] == [720, 280, 1000, 1000]
    check_media_playlist((tmp_path / "live.m3u8").read_text(), lambda uri: (tmp_path / uri).read_bytes())
    expected_entry = b"avc1" if codec is Codec.H264 else b"hvc1"
    assert sample_entry(p.init() or b"")[0] == expected_entry
    n_video = sum(1 for f in video if not f.is_config)
    keys = [i for i, f in enumerate(f for f in video if not f.is_config) if f.keyframe]
    assert keys == [0, 25, 50]

    with av.open(str(tmp_path / "all.mp4")) as container:
        vstream = container.streams.video[0]
        assert (vstream.codec_context.width, vstream.codec_context.height) == (320, 240)
        if codec is Codec.H265:
            assert vstream.codec_context.codec_tag == "hvc1"
        packets = [pkt for pkt in container.demux(vstream) if pkt.size]
        assert len(packets) == n_video
        assert [i for i, pkt in enumerate(packets) if pkt.is_keyframe] == keys
        dts = [pkt.dts for pkt in packets]
        assert dts == sorted(dts) and len(set(dts)) == len(dts)
    with av.open(str(tmp_path / "all.mp4")) as container:
        frames = list(container.decode(video=0))
        assert len(frames) == n_video
        pts = [fr.pts for fr in frames]
        assert pts == sorted(pts) and len(set(pts)) == len(pts)
        assert frames[-1].time - frames[0].time == pytest.approx(74 / 25, abs=0.05)
    if audio:
        with av.open(str(tmp_path / "all.mp4")) as container:
            decoded = list(container.decode(audio=0))
            assert len(decoded) >= len(audio) - 3 and all(fr.sample_rate == 44100 for fr in decoded)
            times = [fr.pts for fr in decoded]
            assert times == sorted(times)
    # the same frames as HTTP-FLV (tag bodies from media.flvtags)
    mux = FlvMuxer()
    flv = mux.start(has_audio=bool(audio), has_video=True, metadata={"width": 320, "height": 240})
    flv += b"".join(mux.frame(f) for f in interleave(video, audio))
    (tmp_path / "live.flv").write_bytes(flv)
    with av.open(str(tmp_path / "live.flv")) as container:
        frames = list(container.decode(video=0))
        assert len(frames) == n_video and (frames[0].width, frames[0].height) == (320, 240)
        pts = [fr.pts for fr in frames]
        assert pts == sorted(pts) and len(set(pts)) == len(pts)
    # the same segments through FFmpeg's HLS demuxer, from the VOD and the (ended) live playlist
    for playlist in ("vod.m3u8", "live.m3u8"):
        with av.open(str(tmp_path / playlist)) as container:
            assert len(list(container.decode(video=0))) == n_video
