"""The unit every media component passes around: one coded audio or video frame.

Protocol parsers (RTMP/FLV) produce ``MediaFrame``s; the stream hub fans them out;
muxers (FLV, fMP4/HLS) and the recorder consume them. Times are milliseconds on the
stream's own clock (RTMP timestamps), ``pts = dts + composition offset``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Codec(str, Enum):
    H264 = "h264"
    H265 = "h265"
    AAC = "aac"
    PCMA = "pcma"  # G.711 A-law
    PCMU = "pcmu"  # G.711 mu-law


VIDEO_CODECS = frozenset({Codec.H264, Codec.H265})
AUDIO_CODECS = frozenset({Codec.AAC, Codec.PCMA, Codec.PCMU})


@dataclass(slots=True, unsafe_hash=True)
class MediaFrame:
    """One frame, or a codec configuration record when ``is_config``. Shared by every consumer:
    treat it as immutable (``dataclasses.replace`` for a changed copy). It is not ``frozen``
    only because a frozen dataclass costs three times as much to build, and one is built per
    frame; equality and hashing are a frozen dataclass's.

    Video ``data`` is length-prefixed NAL units (4-byte big-endian lengths, AVCC/HVCC
    layout as in FLV/MP4); a config frame's data is the AVCDecoderConfigurationRecord or
    HEVCDecoderConfigurationRecord. AAC ``data`` is one raw access unit; its config is
    the AudioSpecificConfig. G.711 ``data`` is the raw samples (8 kHz mono unless the
    FLV header says otherwise; ``sample_rate``/``channels`` carry what it says).
    """

    codec: Codec
    dts: int
    pts: int
    data: bytes
    keyframe: bool = False
    is_config: bool = False
    sample_rate: int = 0
    channels: int = 0

    @property
    def is_video(self) -> bool:
        return self.codec in VIDEO_CODECS

    @property
    def is_audio(self) -> bool:
        return self.codec in AUDIO_CODECS
