"""HTTP-FLV output: the FLV file header, tags with PreviousTagSize, and a per-player muxer.

Tag bodies come from ``media.flvtags`` (``video_payload``/``audio_payload``, overridable,
e.g. with ``hevc_legacy=True`` for players that only know codec id 12); onMetaData is
encoded with ``media.rtmp.amf0``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from enum import IntEnum
from typing import Any

from . import flvtags
from .frames import MediaFrame
from .rtmp import amf0

__all__ = ["FlvMuxer", "PayloadFn", "TagKind", "file_header", "metadata_tag", "tag"]

PayloadFn = Callable[[MediaFrame], bytes]


class TagKind(IntEnum):
    AUDIO = 8
    VIDEO = 9
    SCRIPT = 18


def file_header(has_audio: bool, has_video: bool) -> bytes:
    """The 9-byte FLV header followed by PreviousTagSize0."""
    flags = (0x04 if has_audio else 0) | (0x01 if has_video else 0)
    return b"FLV" + struct.pack(">BBI", 1, flags, 9) + b"\x00\x00\x00\x00"


def tag(kind: TagKind | int, timestamp: int, body: bytes) -> bytes:
    """One tag and its trailing PreviousTagSize; ``timestamp`` in ms, wrapped to 32 bits."""
    if len(body) > 0xFF_FFFF:
        raise ValueError("FLV tag body over 16 MiB")
    ts = timestamp & 0xFFFF_FFFF
    header = struct.pack(">B3s3sB3s", int(kind), len(body).to_bytes(3, "big"), (ts & 0xFF_FFFF).to_bytes(3, "big"), ts >> 24, b"\x00\x00\x00")
    return header + body + struct.pack(">I", 11 + len(body))


def metadata_tag(metadata: Mapping[str, Any]) -> bytes:
    """A script tag ``onMetaData`` carrying ``metadata`` (width, height, videocodecid, ...) as an ECMA array."""
    return tag(TagKind.SCRIPT, 0, amf0.encode("onMetaData", amf0.EcmaArray(metadata)))


class FlvMuxer:
    """One player's FLV byte stream: ``start()`` once, then ``frame()`` per frame.

    Timestamps are rebased so the first media frame is at 0 (players that join mid-stream
    start at the beginning of their timeline); config frames before it, and frames a
    little earlier, are clamped to 0.
    """

    def __init__(
        self,
        video_payload: PayloadFn = flvtags.video_payload,
        audio_payload: PayloadFn = flvtags.audio_payload,
    ) -> None:
        self._video_payload = video_payload
        self._audio_payload = audio_payload
        self._base: int | None = None

    def start(self, *, has_audio: bool, has_video: bool, metadata: Mapping[str, Any] | None = None) -> bytes:
        out = file_header(has_audio, has_video)
        if metadata:
            out += metadata_tag(metadata)
        return out

    def frame(self, frame: MediaFrame) -> bytes:
        if self._base is None and not frame.is_config:
            self._base = frame.dts
        ts = 0 if self._base is None else max(0, frame.dts - self._base)
        if frame.is_video:
            return tag(TagKind.VIDEO, ts, self._video_payload(frame))
        return tag(TagKind.AUDIO, ts, self._audio_payload(frame))
