"""Codec configuration records: H.264/H.265 parameter sets and AAC AudioSpecificConfig.

Parses what the muxers need (picture size, channel layout, RFC 6381 codec strings) from
the records carried by config ``MediaFrame``s, and builds those records from raw
parameter sets (for sources that deliver Annex B). Malformed input raises ``CodecError``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "AacConfig",
    "AvcConfig",
    "BitReader",
    "BitWriter",
    "CodecError",
    "H264Sps",
    "HevcConfig",
    "HevcSps",
    "annexb_nalus",
    "avc_config_record",
    "hevc_config_record",
    "length_prefixed_nalus",
    "parse_aac_config",
    "parse_avc_config",
    "parse_h264_sps",
    "parse_hevc_config",
    "parse_hevc_sps",
    "unescape_rbsp",
]

MAX_DIMENSION: Final = 16384  # larger than any level allows; guards against garbage


class CodecError(ValueError):
    """A codec configuration record or parameter set is malformed or unsupported."""


# --- bits -------------------------------------------------------------------------------


class BitReader:
    """MSB-first bit reader with exp-Golomb codes; reading past the end raises CodecError."""

    __slots__ = ("_data", "_pos", "_end")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0
        self._end = len(data) * 8

    @property
    def bits_left(self) -> int:
        return self._end - self._pos

    def u(self, n: int) -> int:
        if n == 0:
            return 0
        if self._pos + n > self._end:
            raise CodecError("parameter set truncated")
        value = 0
        data, pos = self._data, self._pos
        for i in range(pos, pos + n):
            value = (value << 1) | ((data[i >> 3] >> (7 - (i & 7))) & 1)
        self._pos = pos + n
        return value

    def flag(self) -> bool:
        return self.u(1) == 1

    def skip(self, n: int) -> None:
        if self._pos + n > self._end:
            raise CodecError("parameter set truncated")
        self._pos += n

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise CodecError("exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


class BitWriter:
    """MSB-first bit writer with exp-Golomb codes (the inverse of ``BitReader``)."""

    __slots__ = ("_value", "_bits")

    def __init__(self) -> None:
        self._value = 0
        self._bits = 0

    def u(self, n: int, value: int) -> None:
        if value < 0 or value >> n:
            raise ValueError(f"{value} does not fit in {n} bits")
        self._value = (self._value << n) | value
        self._bits += n

    def ue(self, value: int) -> None:
        if value < 0:
            raise ValueError("ue(v) is unsigned")
        code = value + 1
        self.u(code.bit_length() - 1, 0)
        self.u(code.bit_length(), code)

    def se(self, value: int) -> None:
        self.ue(2 * value - 1 if value > 0 else -2 * value)

    def to_bytes(self) -> bytes:
        """The bits so far followed by rbsp_trailing_bits (a 1, then zeros to a byte)."""
        value, bits = (self._value << 1) | 1, self._bits + 1
        pad = -bits % 8
        return (value << pad).to_bytes((bits + pad) // 8, "big")


def unescape_rbsp(nal: bytes) -> bytes:
    """Remove emulation-prevention bytes (00 00 03 → 00 00)."""
    if b"\x00\x00\x03" not in nal:
        return nal
    out = bytearray()
    zeros = 0
    for b in nal:
        if zeros >= 2 and b == 3:
            zeros = 0
            continue
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


def length_prefixed_nalus(data: bytes, size: int = 4) -> Iterator[bytes]:
    """The NAL units of an AVCC/HVCC sample (``size``-byte big-endian lengths)."""
    pos, end = 0, len(data)
    while pos < end:
        if pos + size > end:
            raise CodecError("truncated NAL unit length")
        n = int.from_bytes(data[pos : pos + size], "big")
        pos += size
        if pos + n > end:
            raise CodecError("NAL unit overruns the sample")
        yield data[pos : pos + n]
        pos += n


def annexb_nalus(data: bytes) -> list[bytes]:
    """Split an Annex B byte stream (00 00 01 / 00 00 00 01 start codes) into NAL units."""
    out: list[bytes] = []
    starts: list[int] = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        starts.append(i + 3)
        i = data.find(b"\x00\x00\x01", i + 3)
    for k, s in enumerate(starts):
        end = starts[k + 1] - 3 if k + 1 < len(starts) else len(data)
        nal = data[s:end].rstrip(b"\x00") if k + 1 < len(starts) else data[s:end]
        if nal:
            out.append(nal)
    return out


# --- H.264 ------------------------------------------------------------------------------

_HIGH_PROFILES: Final = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})


@dataclass(frozen=True, slots=True)
class H264Sps:
    profile_idc: int
    constraint_flags: int
    level_idc: int
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    width: int
    height: int


def _skip_scaling_list(r: BitReader, size: int) -> None:
    last, nxt = 8, 8
    for _ in range(size):
        if nxt != 0:
            nxt = (last + r.se() + 256) % 256
        last = nxt if nxt != 0 else last


def parse_h264_sps(nal: bytes) -> H264Sps:
    """Parse an H.264 SPS NAL unit (with its header byte) up to the cropping window."""
    if len(nal) < 4 or nal[0] & 0x1F != 7:
        raise CodecError("not an H.264 SPS")
    r = BitReader(unescape_rbsp(nal[1:]))
    profile, constraints, level = r.u(8), r.u(8), r.u(8)
    if r.ue() > 31:
        raise CodecError("seq_parameter_set_id out of range")
    chroma, separate, depth_l, depth_c = 1, False, 8, 8
    if profile in _HIGH_PROFILES:
        chroma = r.ue()
        if chroma > 3:
            raise CodecError("chroma_format_idc out of range")
        if chroma == 3:
            separate = r.flag()
        depth_l, depth_c = r.ue() + 8, r.ue() + 8
        if depth_l > 14 or depth_c > 14:
            raise CodecError("bit depth out of range")
        r.skip(1)  # qpprime_y_zero_transform_bypass_flag
        if r.flag():  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma != 3 else 12):
                if r.flag():
                    _skip_scaling_list(r, 16 if i < 6 else 64)
    if r.ue() > 12:
        raise CodecError("log2_max_frame_num_minus4 out of range")
    poc_type = r.ue()
    if poc_type == 0:
        if r.ue() > 12:
            raise CodecError("log2_max_pic_order_cnt_lsb_minus4 out of range")
    elif poc_type == 1:
        r.skip(1)
        r.se()
        r.se()
        cycle = r.ue()
        if cycle > 255:
            raise CodecError("num_ref_frames_in_pic_order_cnt_cycle out of range")
        for _ in range(cycle):
            r.se()
    elif poc_type != 2:
        raise CodecError("pic_order_cnt_type out of range")
    r.ue()  # max_num_ref_frames
    r.skip(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs, height_units = r.ue() + 1, r.ue() + 1
    frame_mbs_only = r.flag()
    if not frame_mbs_only:
        r.skip(1)  # mb_adaptive_frame_field_flag
    r.skip(1)  # direct_8x8_inference_flag
    width = width_mbs * 16
    height = (2 - frame_mbs_only) * height_units * 16
    if r.flag():  # frame_cropping_flag
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        array_type = 0 if separate else chroma
        if array_type == 0:
            unit_x, unit_y = 1, 2 - frame_mbs_only
        else:
            unit_x = 2 if chroma in (1, 2) else 1
            unit_y = (2 if chroma == 1 else 1) * (2 - frame_mbs_only)
        width -= (left + right) * unit_x
        height -= (top + bottom) * unit_y
    _check_size(width, height)
    return H264Sps(profile, constraints, level, chroma, depth_l, depth_c, width, height)


def _check_size(width: int, height: int) -> None:
    if not (0 < width <= MAX_DIMENSION and 0 < height <= MAX_DIMENSION):
        raise CodecError(f"implausible picture size {width}x{height}")


@dataclass(frozen=True, slots=True)
class AvcConfig:
    """An AVCDecoderConfigurationRecord and what its first SPS says."""

    profile_idc: int
    profile_compatibility: int
    level_idc: int
    nal_length_size: int
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]
    width: int
    height: int
    record: bytes

    @property
    def codec_string(self) -> str:
        return f"avc1.{self.profile_idc:02X}{self.profile_compatibility:02X}{self.level_idc:02X}"


class _Bytes:
    """Bounds-checked cursor over a byte string."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise CodecError("configuration record truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")


def parse_avc_config(record: bytes) -> AvcConfig:
    """Parse an AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1)."""
    b = _Bytes(record)
    if b.u8() != 1:
        raise CodecError("AVCDecoderConfigurationRecord version is not 1")
    profile, compat, level = b.u8(), b.u8(), b.u8()
    length_size = (b.u8() & 3) + 1
    if length_size == 3:
        raise CodecError("NAL length size 3 is not allowed")
    sps = tuple(b.take(b.u16()) for _ in range(b.u8() & 0x1F))
    pps = tuple(b.take(b.u16()) for _ in range(b.u8()))
    if not sps or not pps:
        raise CodecError("AVCDecoderConfigurationRecord without SPS or PPS")
    info = parse_h264_sps(sps[0])
    return AvcConfig(profile, compat, level, length_size, sps, pps, info.width, info.height, bytes(record))


def avc_config_record(sps: Sequence[bytes], pps: Sequence[bytes]) -> bytes:
    """Build an AVCDecoderConfigurationRecord (4-byte NAL lengths) from raw SPS/PPS NAL units."""
    if not sps or not pps:
        raise CodecError("need at least one SPS and one PPS")
    info = parse_h264_sps(sps[0])
    out = bytearray([1, sps[0][1], sps[0][2], sps[0][3], 0xFF, 0xE0 | len(sps)])
    for s in sps:
        out += struct.pack(">H", len(s)) + s
    out.append(len(pps))
    for p in pps:
        out += struct.pack(">H", len(p)) + p
    if info.profile_idc in _HIGH_PROFILES:
        out += bytes([
            0xFC | info.chroma_format_idc,
            0xF8 | (info.bit_depth_luma - 8),
            0xF8 | (info.bit_depth_chroma - 8),
            0,
        ])
    return bytes(out)


# --- H.265 ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ProfileTierLevel:
    profile_space: int
    tier: int
    profile_idc: int
    compatibility: int  # 32 bits, flag j at bit (31 - j)
    constraints: int  # 48 bits
    level_idc: int


@dataclass(frozen=True, slots=True)
class HevcSps:
    profile_space: int
    tier: int
    profile_idc: int
    compatibility: int
    constraints: int
    level_idc: int
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    width: int
    height: int
    max_sub_layers: int
    temporal_id_nesting: bool


def _profile_tier_level(r: BitReader, max_sub_layers_minus1: int) -> _ProfileTierLevel:
    space, tier, idc = r.u(2), r.u(1), r.u(5)
    compat = r.u(32)
    constraints = r.u(48)
    level = r.u(8)
    profile_present, level_present = [], []
    for _ in range(max_sub_layers_minus1):
        profile_present.append(r.flag())
        level_present.append(r.flag())
    if max_sub_layers_minus1 > 0:
        r.skip(2 * (8 - max_sub_layers_minus1))
    for p, lv in zip(profile_present, level_present):
        r.skip((88 if p else 0) + (8 if lv else 0))
    return _ProfileTierLevel(space, tier, idc, compat, constraints, level)


def parse_hevc_sps(nal: bytes) -> HevcSps:
    """Parse an H.265 SPS NAL unit (with its 2-byte header) up to the conformance window and bit depths."""
    if len(nal) < 3 or (nal[0] >> 1) & 0x3F != 33:
        raise CodecError("not an H.265 SPS")
    r = BitReader(unescape_rbsp(nal[2:]))
    r.skip(4)  # sps_video_parameter_set_id
    sub_minus1 = r.u(3)
    if sub_minus1 > 6:
        raise CodecError("sps_max_sub_layers_minus1 out of range")
    nesting = r.flag()
    ptl = _profile_tier_level(r, sub_minus1)
    if r.ue() > 15:
        raise CodecError("sps_seq_parameter_set_id out of range")
    chroma = r.ue()
    if chroma > 3:
        raise CodecError("chroma_format_idc out of range")
    separate = r.flag() if chroma == 3 else False
    width, height = r.ue(), r.ue()
    if r.flag():  # conformance_window_flag
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        array_type = 0 if separate else chroma
        sub_w = 2 if array_type in (1, 2) else 1
        sub_h = 2 if array_type == 1 else 1
        width -= sub_w * (left + right)
        height -= sub_h * (top + bottom)
    depth_l, depth_c = r.ue() + 8, r.ue() + 8
    if depth_l > 16 or depth_c > 16:
        raise CodecError("bit depth out of range")
    _check_size(width, height)
    return HevcSps(
        ptl.profile_space, ptl.tier, ptl.profile_idc, ptl.compatibility, ptl.constraints,
        ptl.level_idc, chroma, depth_l, depth_c, width, height, sub_minus1 + 1, nesting,
    )


@dataclass(frozen=True, slots=True)
class HevcConfig:
    """An HEVCDecoderConfigurationRecord and what its first SPS says."""

    profile_space: int
    tier: int
    profile_idc: int
    compatibility: int
    constraints: int
    level_idc: int
    nal_length_size: int
    vps: tuple[bytes, ...]
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]
    width: int
    height: int
    record: bytes

    @property
    def codec_string(self) -> str:
        """``hvc1.<space><profile>.<compat reversed>.<tier><level>[.<constraint bytes>]`` (ISO/IEC 14496-15 E.3)."""
        space = ("", "A", "B", "C")[self.profile_space]
        compat = int(f"{self.compatibility:032b}"[::-1], 2)
        cbytes = self.constraints.to_bytes(6, "big").rstrip(b"\x00")
        parts = [f"hvc1.{space}{self.profile_idc}", f"{compat:X}", f"{'LH'[self.tier]}{self.level_idc}"]
        parts += [f"{c:X}" for c in cbytes]
        return ".".join(parts)


_HEVC_VPS, _HEVC_SPS, _HEVC_PPS = 32, 33, 34


def parse_hevc_config(record: bytes) -> HevcConfig:
    """Parse an HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 8.3.3.1)."""
    b = _Bytes(record)
    if b.u8() != 1:
        raise CodecError("HEVCDecoderConfigurationRecord version is not 1")
    first = b.u8()
    compat = int.from_bytes(b.take(4), "big")
    constraints = int.from_bytes(b.take(6), "big")
    level = b.u8()
    b.take(2 + 1 + 1 + 1 + 1 + 2)  # segmentation, parallelism, chroma, depths, avgFrameRate
    length_size = (b.u8() & 3) + 1
    if length_size == 3:
        raise CodecError("NAL length size 3 is not allowed")
    arrays: dict[int, list[bytes]] = {_HEVC_VPS: [], _HEVC_SPS: [], _HEVC_PPS: []}
    for _ in range(b.u8()):
        nal_type = b.u8() & 0x3F
        nalus = [b.take(b.u16()) for _ in range(b.u16())]
        if nal_type in arrays:
            arrays[nal_type] += nalus
    if not arrays[_HEVC_SPS] or not arrays[_HEVC_PPS]:
        raise CodecError("HEVCDecoderConfigurationRecord without SPS or PPS")
    info = parse_hevc_sps(arrays[_HEVC_SPS][0])
    return HevcConfig(
        first >> 6, (first >> 5) & 1, first & 0x1F, compat, constraints, level, length_size,
        tuple(arrays[_HEVC_VPS]), tuple(arrays[_HEVC_SPS]), tuple(arrays[_HEVC_PPS]),
        info.width, info.height, bytes(record),
    )


def hevc_config_record(vps: Sequence[bytes], sps: Sequence[bytes], pps: Sequence[bytes]) -> bytes:
    """Build an HEVCDecoderConfigurationRecord (4-byte NAL lengths) from raw VPS/SPS/PPS NAL units."""
    if not vps or not sps or not pps:
        raise CodecError("need at least one VPS, SPS and PPS")
    s = parse_hevc_sps(sps[0])
    out = bytearray([1, (s.profile_space << 6) | (s.tier << 5) | s.profile_idc])
    out += s.compatibility.to_bytes(4, "big") + s.constraints.to_bytes(6, "big")
    out += bytes([
        s.level_idc, 0xF0, 0x00,  # min_spatial_segmentation_idc 0
        0xFC,  # parallelismType unknown
        0xFC | s.chroma_format_idc,
        0xF8 | (s.bit_depth_luma - 8),
        0xF8 | (s.bit_depth_chroma - 8),
        0, 0,  # avgFrameRate unknown
        (s.max_sub_layers << 3) | (int(s.temporal_id_nesting) << 2) | 3,
        3,
    ])
    for nal_type, nalus in ((_HEVC_VPS, vps), (_HEVC_SPS, sps), (_HEVC_PPS, pps)):
        out += bytes([0x80 | nal_type]) + struct.pack(">H", len(nalus))
        for n in nalus:
            out += struct.pack(">H", len(n)) + n
    return bytes(out)


# --- AAC --------------------------------------------------------------------------------

SAMPLE_RATES: Final = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


@dataclass(frozen=True, slots=True)
class AacConfig:
    """An AudioSpecificConfig: object type (2 = AAC-LC), sample rate, channels, frame length."""

    object_type: int
    sample_rate: int
    channels: int  # 0 when the layout is in a program config element
    frame_length: int  # samples per access unit: 1024 or 960
    record: bytes

    @property
    def codec_string(self) -> str:
        return f"mp4a.40.{self.object_type}"


def _audio_object_type(r: BitReader) -> int:
    aot = r.u(5)
    return 32 + r.u(6) if aot == 31 else aot


def _sample_rate(r: BitReader) -> int:
    index = r.u(4)
    if index == 15:
        rate = r.u(24)
    elif index < len(SAMPLE_RATES):
        rate = SAMPLE_RATES[index]
    else:
        raise CodecError(f"reserved sampling frequency index {index}")
    if rate == 0:
        raise CodecError("sample rate 0")
    return rate


def parse_aac_config(record: bytes) -> AacConfig:
    """Parse an AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1).

    With explicit SBR/PS signalling ``object_type`` is 5 or 29 (so the codec string says
    HE-AAC) while ``sample_rate`` and ``frame_length`` are those of the AAC core, the
    clock the MP4 track runs on.
    """
    r = BitReader(bytes(record))
    aot = _audio_object_type(r)
    if aot == 0:
        raise CodecError("audio object type 0")
    rate = _sample_rate(r)
    config = r.u(4)
    if config > 7:
        raise CodecError(f"reserved channel configuration {config}")
    channels = 8 if config == 7 else config
    core = aot
    if aot in (5, 29):  # explicit SBR/PS: extension rate, then the core object type
        _sample_rate(r)
        core = _audio_object_type(r)
    frame_length = 1024
    if core in (1, 2, 3, 4, 6, 7, 17, 19, 20, 21, 22, 23) and r.bits_left >= 1:
        frame_length = 960 if r.flag() else 1024
    return AacConfig(aot, rate, channels, frame_length, bytes(record))
