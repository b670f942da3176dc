"""Fragmented MP4 (CMAF) writer: an init segment for a set of tracks, then moof+mdat fragments.

Pure functions from ``Track``s and ``Sample``s to bytes. Video runs on a 90 kHz clock,
AAC on its sample rate. Sample entries are ``avc1``/``hvc1``/``mp4a`` (``hvc1``, with
parameter sets in the hvcC only, is what Safari requires for HEVC).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from .codecs import CodecError, parse_aac_config, parse_avc_config, parse_hevc_config
from .frames import Codec, MediaFrame

__all__ = [
    "VIDEO_TIMESCALE",
    "Sample",
    "Track",
    "TrackFragment",
    "box",
    "fragment",
    "full_box",
    "init_segment",
]

VIDEO_TIMESCALE: Final = 90_000

# sample_flags (ISO/IEC 14496-12 8.8.3.1): depends_on=2 (I), or depends_on=1 + non-sync
SYNC_SAMPLE_FLAGS: Final = 0x0200_0000
NON_SYNC_SAMPLE_FLAGS: Final = 0x0101_0000

_UNITY_MATRIX: Final = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x4000_0000)


@dataclass(frozen=True, slots=True)
class Track:
    """One elementary stream as the init segment describes it."""

    track_id: int
    codec: Codec
    timescale: int
    config: bytes  # AVC/HEVC decoder configuration record, or the AAC AudioSpecificConfig
    codec_string: str  # RFC 6381, for CODECS= and MSE
    width: int = 0
    height: int = 0
    channels: int = 0
    frame_length: int = 0  # AAC samples per access unit

    @property
    def is_video(self) -> bool:
        return self.codec in (Codec.H264, Codec.H265)

    @classmethod
    def from_config(cls, frame: MediaFrame, track_id: int) -> Track:
        """Describe a track from a config frame; raises CodecError if it is malformed or not H.264/H.265/AAC."""
        if not frame.is_config:
            raise CodecError("not a codec configuration frame")
        if frame.codec is Codec.H264:
            avc = parse_avc_config(frame.data)
            if avc.nal_length_size != 4:
                raise CodecError("only 4-byte NAL unit lengths are supported")
            return cls(track_id, frame.codec, VIDEO_TIMESCALE, avc.record, avc.codec_string, avc.width, avc.height)
        if frame.codec is Codec.H265:
            hevc = parse_hevc_config(frame.data)
            if hevc.nal_length_size != 4:
                raise CodecError("only 4-byte NAL unit lengths are supported")
            return cls(track_id, frame.codec, VIDEO_TIMESCALE, hevc.record, hevc.codec_string, hevc.width, hevc.height)
        if frame.codec is Codec.AAC:
            aac = parse_aac_config(frame.data)
            return cls(
                track_id, frame.codec, aac.sample_rate, aac.record, aac.codec_string,
                channels=aac.channels or 2, frame_length=aac.frame_length,
            )
        raise CodecError(f"{frame.codec.value} cannot be carried in fMP4 here")


@dataclass(frozen=True, slots=True)
class Sample:
    """One access unit: duration and composition offset in the track's timescale."""

    data: bytes
    duration: int
    keyframe: bool = True
    composition_offset: int = 0


@dataclass(frozen=True, slots=True)
class TrackFragment:
    """The samples of one track in one fragment, starting at ``base_decode_time`` (track timescale)."""

    track: Track
    base_decode_time: int
    samples: Sequence[Sample]


# --- boxes ------------------------------------------------------------------------------


def box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags), *payload)


def _descriptor(tag: int, body: bytes) -> bytes:
    n = len(body)
    size = bytearray([n & 0x7F])
    n >>= 7
    while n:
        size.insert(0, 0x80 | (n & 0x7F))
        n >>= 7
    return bytes([tag]) + bytes(size) + body


def _esds(track: Track) -> bytes:
    decoder_config = _descriptor(
        0x04,
        struct.pack(">BB3sII", 0x40, (0x05 << 2) | 1, b"\x00\x00\x00", 0, 0) + _descriptor(0x05, track.config),
    )
    es = _descriptor(0x03, struct.pack(">HB", track.track_id, 0) + decoder_config + _descriptor(0x06, b"\x02"))
    return full_box(b"esds", 0, 0, es)


def _sample_entry(track: Track) -> bytes:
    if track.is_video:
        kind, cfg = (b"avc1", b"avcC") if track.codec is Codec.H264 else (b"hvc1", b"hvcC")
        return box(
            kind,
            bytes(6), struct.pack(">H", 1),  # reserved, data_reference_index
            bytes(16),  # pre_defined, reserved
            struct.pack(">HHIIIH", track.width, track.height, 0x480000, 0x480000, 0, 1),
            bytes(32),  # compressorname
            struct.pack(">Hh", 0x18, -1),
            box(cfg, track.config),
        )
    rate = track.timescale if track.timescale < 0x10000 else 0
    return box(
        b"mp4a",
        bytes(6), struct.pack(">H", 1),
        bytes(8),
        struct.pack(">HHHHI", track.channels, 16, 0, 0, rate << 16),
        _esds(track),
    )


def _trak(track: Track) -> bytes:
    video = track.is_video
    tkhd = full_box(
        b"tkhd", 0, 3,  # enabled, in movie
        struct.pack(">IIIII", 0, 0, track.track_id, 0, 0),
        bytes(8), struct.pack(">hhhH", 0, 0, 0 if video else 0x0100, 0),
        _UNITY_MATRIX,
        struct.pack(">II", track.width << 16, track.height << 16),
    )
    mdhd = full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, track.timescale, 0, 0x55C4, 0))  # 'und'
    handler, name = (b"vide", b"VideoHandler\x00") if video else (b"soun", b"SoundHandler\x00")
    hdlr = full_box(b"hdlr", 0, 0, struct.pack(">I4s", 0, handler), bytes(12), name)
    media_header = full_box(b"vmhd", 0, 1, bytes(8)) if video else full_box(b"smhd", 0, 0, bytes(4))
    dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))
    stbl = box(
        b"stbl",
        full_box(b"stsd", 0, 0, struct.pack(">I", 1), _sample_entry(track)),
        full_box(b"stts", 0, 0, bytes(4)),
        full_box(b"stsc", 0, 0, bytes(4)),
        full_box(b"stsz", 0, 0, bytes(8)),
        full_box(b"stco", 0, 0, bytes(4)),
    )
    return box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, box(b"minf", media_header, dinf, stbl)))


def init_segment(tracks: Sequence[Track]) -> bytes:
    """``ftyp`` + ``moov`` (no samples) + ``mvex``: what every fragment that follows refers to."""
    if not tracks:
        raise ValueError("an init segment needs at least one track")
    ftyp = box(b"ftyp", b"iso6", struct.pack(">I", 0), b"iso6cmfcmp41")
    mvhd = full_box(
        b"mvhd", 0, 0,
        struct.pack(">IIII", 0, 0, 1000, 0),
        struct.pack(">IH", 0x10000, 0x0100), bytes(10),
        _UNITY_MATRIX, bytes(24),
        struct.pack(">I", max(t.track_id for t in tracks) + 1),
    )
    mvex = box(b"mvex", *(full_box(b"trex", 0, 0, struct.pack(">IIIII", t.track_id, 1, 0, 0, 0)) for t in tracks))
    return ftyp + box(b"moov", mvhd, *(_trak(t) for t in tracks), mvex)


def _traf(frag: TrackFragment, data_offset: int) -> bytes:
    tfhd = full_box(b"tfhd", 0, 0x020000, struct.pack(">I", frag.track.track_id))  # default-base-is-moof
    tfdt = full_box(b"tfdt", 1, 0, struct.pack(">Q", frag.base_decode_time))
    rows = b"".join(
        struct.pack(
            ">IIIi", s.duration, len(s.data),
            SYNC_SAMPLE_FLAGS if s.keyframe else NON_SYNC_SAMPLE_FLAGS, s.composition_offset,
        )
        for s in frag.samples
    )
    # data-offset, duration, size, flags, composition-time-offset present
    trun = full_box(b"trun", 1, 0x000F01, struct.pack(">Ii", len(frag.samples), data_offset), rows)
    return box(b"traf", tfhd, tfdt, trun)


def fragment(sequence_number: int, track_samples: Sequence[TrackFragment]) -> bytes:
    """One ``moof`` + ``mdat``; each track's samples are contiguous in the mdat, in the given order."""
    frags = [f for f in track_samples if f.samples]
    if not frags:
        raise ValueError("a fragment needs at least one sample")
    mfhd = full_box(b"mfhd", 0, 0, struct.pack(">I", sequence_number))

    def moof(offsets: Sequence[int]) -> bytes:
        return box(b"moof", mfhd, *(_traf(f, o) for f, o in zip(frags, offsets)))

    sizes = [sum(len(s.data) for s in f.samples) for f in frags]
    header = len(moof([0] * len(frags))) + 8
    offsets, pos = [], header
    for n in sizes:
        offsets.append(pos)
        pos += n
    if pos > 0xFFFF_FFFF:
        raise ValueError("fragment too large")
    payload = b"".join(s.data for f in frags for s in f.samples)
    return moof(offsets) + struct.pack(">I4s", 8 + len(payload), b"mdat") + payload
