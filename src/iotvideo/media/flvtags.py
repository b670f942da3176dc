"""FLV audio/video tag bodies (the payload of RTMP audio and video messages) ⇄ ``MediaFrame``.

Video: H.264 (codec id 7) and legacy H.265 (codec id 12, same layout) with AVCPacketType and a
signed 24-bit composition time; Enhanced RTMP (IsExHeader) with FourCC ``avc1``/``hvc1``.
Audio: AAC (sound format 10), G.711 A-law (7) and mu-law (8). ``parse_video``/``parse_audio``
return None for tags that carry no frame (end of sequence, command frames, HDR metadata);
``video_payload``/``audio_payload`` build tag bodies (H.265 as Enhanced RTMP ``hvc1`` unless
``hevc_legacy``). Config frames come back with ``keyframe=False``. Malformed input raises
``FlvError``; a well-formed tag of a codec we do not handle raises ``UnsupportedCodec``.
``parse_video_tag``/``parse_audio_tag`` also say whether the tag is exactly what
``video_payload``/``audio_payload`` build from the frame, so a relay can send it on as it came.
"""

from __future__ import annotations

import struct
from typing import Final

from .frames import Codec, MediaFrame

__all__ = [
    "CODEC_ID_AVC",
    "CODEC_ID_HEVC_LEGACY",
    "FlvError",
    "UnsupportedCodec",
    "audio_payload",
    "parse_audio",
    "parse_audio_tag",
    "parse_video",
    "parse_video_tag",
    "video_payload",
]

# video
FRAME_KEY: Final = 1
FRAME_INTER: Final = 2
FRAME_DISPOSABLE: Final = 3
FRAME_GENERATED_KEY: Final = 4
FRAME_COMMAND: Final = 5
CODEC_ID_AVC: Final = 7
CODEC_ID_HEVC_LEGACY: Final = 12
AVC_SEQUENCE_HEADER: Final = 0
AVC_NALU: Final = 1
AVC_END_OF_SEQUENCE: Final = 2
EX_HEADER: Final = 0x80
EX_SEQUENCE_START: Final = 0
EX_CODED_FRAMES: Final = 1
EX_SEQUENCE_END: Final = 2
EX_CODED_FRAMES_X: Final = 3
EX_METADATA: Final = 4
EX_MPEG2TS_SEQUENCE_START: Final = 5
EX_MULTITRACK: Final = 6
EX_MODEX: Final = 7
_FOURCCS: Final = {b"avc1": Codec.H264, b"hvc1": Codec.H265}
_LEGACY_IDS: Final = {CODEC_ID_AVC: Codec.H264, CODEC_ID_HEVC_LEGACY: Codec.H265}

# audio
SOUND_PCMA: Final = 7
SOUND_PCMU: Final = 8
SOUND_EX_HEADER: Final = 9
SOUND_AAC: Final = 10
AAC_SEQUENCE_HEADER: Final = 0
AAC_RAW: Final = 1
_G711_RATES: Final = (8000, 11025, 22050, 44100)  # rate bits 0 (5.5 kHz) mean 8 kHz for G.711, as in FFmpeg
_G711_RATE_BITS: Final = {0: 0, 5512: 0, 5500: 0, 8000: 0, 11025: 1, 22050: 2, 44100: 3}
_AAC_RATES: Final = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
_AAC_CHANNELS: Final = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 8, 11: 7, 12: 8, 13: 24, 14: 8}
_U32: Final = struct.Struct(">I")
_SI24_MIN: Final = -(1 << 23)
_SI24_MAX: Final = (1 << 23) - 1


class FlvError(ValueError):
    """A malformed FLV audio or video tag body."""


class UnsupportedCodec(FlvError):
    """A well-formed tag of a codec or packet form this server does not handle."""


def _si24(payload: bytes, i: int) -> int:
    value = (payload[i] << 16) | (payload[i + 1] << 8) | payload[i + 2]
    return value - (1 << 24) if value & 0x800000 else value


def _nal_units(data: bytes) -> bytes:
    """``data`` if it is 4-byte length-prefixed NAL units; Annex B (start codes) converted to that."""
    n = len(data)
    i = 0
    while i + 4 <= n:
        size = _U32.unpack_from(data, i)[0]
        if not size:
            break
        i += 4 + size
    if i == n:
        return data
    if data.startswith(b"\x00\x00\x01") or data.startswith(b"\x00\x00\x00\x01"):
        return _annexb_to_lengths(data)
    raise FlvError("video data is neither length-prefixed NAL units nor Annex B")


def _annexb_to_lengths(data: bytes) -> bytes:
    parts: list[bytes] = []
    i = data.find(b"\x00\x00\x01") + 3
    while True:
        j = data.find(b"\x00\x00\x01", i)
        nal = data[i:] if j < 0 else data[i:j].rstrip(b"\x00")  # zeros before a start code belong to it
        if nal:
            parts.append(_U32.pack(len(nal)))
            parts.append(nal)
        if j < 0:
            break
        i = j + 3
    if not parts:
        raise FlvError("Annex B video data without NAL units")
    return b"".join(parts)


def _config(codec: Codec, data: bytes) -> bytes:
    if codec is Codec.H264:
        if len(data) < 7 or data[0] != 1:
            raise FlvError("malformed AVCDecoderConfigurationRecord")
    elif len(data) < 23:  # some muxers write configurationVersion 0 for HEVC: tolerated
        raise FlvError("malformed HEVCDecoderConfigurationRecord")
    return data


def parse_video(payload: bytes, timestamp: int) -> MediaFrame | None:
    """The frame in a video tag body whose message timestamp (the DTS) is ``timestamp``."""
    return parse_video_tag(payload, timestamp)[0]


def parse_video_tag(payload: bytes, timestamp: int) -> tuple[MediaFrame | None, bool]:
    """``parse_video``, and whether ``video_payload(frame)`` gives back exactly ``payload``."""
    n = len(payload)
    if not n:
        raise FlvError("empty video tag")
    b0 = payload[0]
    if b0 & EX_HEADER:
        frame_type = (b0 >> 4) & 0x07
        packet_type = b0 & 0x0F
        if frame_type == FRAME_COMMAND and packet_type != EX_METADATA:
            return None, False
        if packet_type == EX_MULTITRACK or packet_type == EX_MODEX:
            raise UnsupportedCodec(f"Enhanced RTMP video packet type {packet_type}")
        if n < 5:
            raise FlvError("truncated Enhanced RTMP video header")
        fourcc = payload[1:5]
        codec = _FOURCCS.get(fourcc)
        if codec is None:
            raise UnsupportedCodec(f"video FourCC {fourcc!r}")
        if packet_type == EX_SEQUENCE_END or packet_type == EX_METADATA:
            return None, False
        cts = 0
        if packet_type == EX_SEQUENCE_START:
            config = True
            data = payload[5:]
        elif packet_type == EX_CODED_FRAMES:
            if n < 8:
                raise FlvError("truncated Enhanced RTMP composition time")
            config = False
            cts = _si24(payload, 5)
            data = payload[8:]
        elif packet_type == EX_CODED_FRAMES_X:
            config = False
            data = payload[5:]
        else:
            raise FlvError(f"Enhanced RTMP video packet type {packet_type} invalid for {fourcc!r}")
    else:
        frame_type = b0 >> 4
        if frame_type == FRAME_COMMAND:
            return None, False
        codec_id = b0 & 0x0F
        codec = _LEGACY_IDS.get(codec_id)
        if codec is None:
            raise UnsupportedCodec(f"video codec id {codec_id}")
        if n < 5:
            raise FlvError("truncated AVC video header")
        packet_type = payload[1]
        cts = _si24(payload, 2)
        if packet_type == AVC_END_OF_SEQUENCE:
            return None, False
        if packet_type > AVC_END_OF_SEQUENCE:
            raise FlvError(f"AVCPacketType {packet_type}")
        config = packet_type == AVC_SEQUENCE_HEADER
        data = payload[5:]
    if not FRAME_KEY <= frame_type <= FRAME_GENERATED_KEY:
        raise FlvError(f"video frame type {frame_type}")
    # what video_payload writes: legacy H.264, Enhanced ``hvc1`` H.265 (coded frames with a
    # composition time only when it is not 0), frame type 1 (key, config) or 2 (inter)
    canonical = (
        (codec is Codec.H264) is not bool(b0 & EX_HEADER)
        and (codec is Codec.H264 or packet_type != EX_CODED_FRAMES or cts != 0)
    )
    if config:
        return MediaFrame(codec, timestamp, timestamp + cts, _config(codec, data), is_config=True), (
            canonical and frame_type == FRAME_KEY
        )
    if not data:
        return None, False
    keyframe = frame_type == FRAME_KEY or frame_type == FRAME_GENERATED_KEY
    nal = _nal_units(data)
    frame = MediaFrame(codec, timestamp, timestamp + cts, nal, keyframe=keyframe)
    return frame, canonical and nal is data and frame_type == (FRAME_KEY if keyframe else FRAME_INTER)


def _aac_config(data: bytes) -> tuple[int, int]:
    """(sample rate, channels) from an AudioSpecificConfig."""
    bits = int.from_bytes(data[:8].ljust(8, b"\x00"), "big")
    avail = min(len(data), 8) * 8
    pos = 5
    if bits >> 59 == 31:  # escaped audio object type
        pos += 6
    index = (bits >> (64 - pos - 4)) & 0x0F
    pos += 4
    if index == 15:
        rate = (bits >> (64 - pos - 24)) & 0xFFFFFF
        pos += 24
    elif index < len(_AAC_RATES):
        rate = _AAC_RATES[index]
    else:
        raise FlvError(f"AAC sampling frequency index {index}")
    if pos + 4 > avail:
        raise FlvError("truncated AudioSpecificConfig")
    channels = _AAC_CHANNELS.get((bits >> (64 - pos - 4)) & 0x0F, 0)
    return rate, channels


def parse_audio(payload: bytes, timestamp: int) -> MediaFrame | None:
    """The frame in an audio tag body whose message timestamp is ``timestamp``."""
    return parse_audio_tag(payload, timestamp)[0]


def parse_audio_tag(payload: bytes, timestamp: int) -> tuple[MediaFrame | None, bool]:
    """``parse_audio``, and whether ``audio_payload(frame)`` gives back exactly ``payload``."""
    n = len(payload)
    if not n:
        raise FlvError("empty audio tag")
    b0 = payload[0]
    sound_format = b0 >> 4
    if sound_format == SOUND_AAC:
        if n < 2:
            raise FlvError("truncated AAC audio header")
        packet_type = payload[1]
        data = payload[2:]
        if packet_type == AAC_SEQUENCE_HEADER:
            if len(data) < 2:
                raise FlvError("truncated AudioSpecificConfig")
            rate, channels = _aac_config(data)
            return MediaFrame(
                Codec.AAC, timestamp, timestamp, data, is_config=True, sample_rate=rate, channels=channels
            ), b0 == 0xAF
        if packet_type != AAC_RAW:
            raise FlvError(f"AACPacketType {packet_type}")
        return (MediaFrame(Codec.AAC, timestamp, timestamp, data), b0 == 0xAF) if data else (None, False)
    if sound_format == SOUND_PCMA or sound_format == SOUND_PCMU:
        data = payload[1:]
        if not data:
            return None, False
        codec = Codec.PCMA if sound_format == SOUND_PCMA else Codec.PCMU
        rate = _G711_RATES[(b0 >> 2) & 0x03]
        frame = MediaFrame(codec, timestamp, timestamp, data, sample_rate=rate, channels=2 if b0 & 0x01 else 1)
        return frame, bool(b0 & 0x02)  # audio_payload always sets the 16-bit flag
    raise UnsupportedCodec(f"sound format {sound_format}")


def _si24_bytes(value: int) -> bytes:
    if not _SI24_MIN <= value <= _SI24_MAX:
        raise FlvError(f"composition time {value} ms does not fit 24 bits")
    return (value & 0xFFFFFF).to_bytes(3, "big")


def video_payload(frame: MediaFrame, *, hevc_legacy: bool = False) -> bytes:
    """The video tag body for ``frame``: legacy for H.264, Enhanced RTMP ``hvc1`` for H.265 (or legacy id 12)."""
    cts = frame.pts - frame.dts
    frame_type = FRAME_KEY if frame.keyframe or frame.is_config else FRAME_INTER
    if frame.codec is Codec.H264 or frame.codec is Codec.H265 and hevc_legacy:
        codec_id = CODEC_ID_AVC if frame.codec is Codec.H264 else CODEC_ID_HEVC_LEGACY
        packet_type = AVC_SEQUENCE_HEADER if frame.is_config else AVC_NALU
        return bytes(((frame_type << 4) | codec_id, packet_type)) + _si24_bytes(cts) + frame.data
    if frame.codec is not Codec.H265:
        raise FlvError(f"{frame.codec.value} is not a video codec")
    if frame.is_config:
        return bytes((EX_HEADER | (frame_type << 4) | EX_SEQUENCE_START,)) + b"hvc1" + frame.data
    if cts:
        return bytes((EX_HEADER | (frame_type << 4) | EX_CODED_FRAMES,)) + b"hvc1" + _si24_bytes(cts) + frame.data
    return bytes((EX_HEADER | (frame_type << 4) | EX_CODED_FRAMES_X,)) + b"hvc1" + frame.data


def audio_payload(frame: MediaFrame) -> bytes:
    """The audio tag body for ``frame`` (AAC, or G.711 with its rate and channel bits)."""
    codec = frame.codec
    if codec is Codec.AAC:
        return bytes((0xAF, AAC_SEQUENCE_HEADER if frame.is_config else AAC_RAW)) + frame.data
    if codec is Codec.PCMA or codec is Codec.PCMU:
        rate_bits = _G711_RATE_BITS.get(frame.sample_rate)
        if rate_bits is None:
            raise FlvError(f"G.711 at {frame.sample_rate} Hz cannot be described in FLV")
        if frame.channels not in (0, 1, 2):
            raise FlvError(f"G.711 with {frame.channels} channels")
        sound_format = SOUND_PCMA if codec is Codec.PCMA else SOUND_PCMU
        flags = (sound_format << 4) | (rate_bits << 2) | 0x02 | (1 if frame.channels == 2 else 0)
        return bytes((flags,)) + frame.data
    raise FlvError(f"{codec.value} is not an audio codec")
