"""HTTP-FLV output: the FLV file header, tags with PreviousTagSize, and a per-player muxer.

Tag bodies come from ``media.flvtags`` (``video_payload``/``audio_payload``, overridable,
e.g. with ``hevc_legacy=True`` for players that only know codec id 12); onMetaData is
encoded with ``media.rtmp.amf0``. A tag is its 11-byte header (with the player's own
timestamp) and a tail (body + PreviousTagSize) that is the same for every player: muxers
can share tails (``FlvMuxer(tails=…)``, e.g. a ``hub.FrameMemo`` of ``frame_tail``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from functools import partial
from enum import IntEnum
from typing import Any

from . import flvtags
from .frames import MediaFrame
from .timeline import Timeline
from .rtmp import amf0

__all__ = ["FlvMuxer", "PayloadFn", "TagKind", "file_header", "frame_tail", "metadata_tag", "tag", "tag_header"]

PayloadFn = Callable[[MediaFrame], bytes]


class TagKind(IntEnum):
    AUDIO = 8
    VIDEO = 9
    SCRIPT = 18


def file_header(has_audio: bool, has_video: bool) -> bytes:
    """The 9-byte FLV header followed by PreviousTagSize0."""
    flags = (0x04 if has_audio else 0) | (0x01 if has_video else 0)
    return b"FLV" + struct.pack(">BBI", 1, flags, 9) + b"\x00\x00\x00\x00"


_HEADER = struct.Struct(">I3sB3s")
_U32 = struct.Struct(">I")


def tag_header(kind: TagKind | int, timestamp: int, size: int) -> bytes:
    """The 11-byte header of a tag whose body has ``size`` bytes; ``timestamp`` in ms, wrapped to 32 bits."""
    if size > 0xFF_FFFF:
        raise ValueError("FLV tag body over 16 MiB")
    ts = timestamp & 0xFFFF_FFFF
    return _HEADER.pack((int(kind) << 24) | size, (ts & 0xFF_FFFF).to_bytes(3, "big"), ts >> 24, b"\x00\x00\x00")


def tag(kind: TagKind | int, timestamp: int, body: bytes) -> bytes:
    """One tag and its trailing PreviousTagSize; ``timestamp`` in ms, wrapped to 32 bits."""
    return tag_header(kind, timestamp, len(body)) + body + _U32.pack(11 + len(body))


def frame_tail(
    frame: MediaFrame, video_payload: PayloadFn = flvtags.video_payload, audio_payload: PayloadFn = flvtags.audio_payload
) -> bytes:
    """What follows a frame's tag header, the same for every player: its tag body and PreviousTagSize."""
    body = video_payload(frame) if frame.is_video else audio_payload(frame)
    if len(body) > 0xFF_FFFF:
        raise ValueError("FLV tag body over 16 MiB")
    return body + _U32.pack(11 + len(body))


def metadata_tag(metadata: Mapping[str, Any]) -> bytes:
    """A script tag ``onMetaData`` carrying ``metadata`` (width, height, videocodecid, ...) as an ECMA array."""
    return tag(TagKind.SCRIPT, 0, amf0.encode("onMetaData", amf0.EcmaArray(metadata)))


class FlvMuxer:
    """One player's FLV byte stream: ``start()`` once, then ``frame()`` per frame.

    Timestamps are the player's ``timeline`` (``media.timeline.Timeline``, or its C twin): the
    first media frame at 0 (players that join mid-stream start at the beginning of their
    timeline), never jumping with the source's clock; configurations take the last time, frames
    a little earlier keep theirs (clamped to 0). ``tails`` (a frame → ``frame_tail`` with these
    payload functions) lets players share the part of each tag that does not depend on the player.
    """

    def __init__(
        self,
        video_payload: PayloadFn = flvtags.video_payload,
        audio_payload: PayloadFn = flvtags.audio_payload,
        *,
        tails: Callable[[MediaFrame], bytes] | None = None,
        timeline: Timeline | None = None,
    ) -> None:
        self._video_payload = video_payload
        self._audio_payload = audio_payload
        self.tails: Callable[[MediaFrame], bytes] = tails or partial(
            frame_tail, video_payload=video_payload, audio_payload=audio_payload)
        self.timeline = timeline if timeline is not None else Timeline()

    def start(self, *, has_audio: bool, has_video: bool, metadata: Mapping[str, Any] | None = None) -> bytes:
        out = file_header(has_audio, has_video)
        if metadata:
            out += metadata_tag(metadata)
        return out

    def frame(self, frame: MediaFrame) -> bytes:
        header, tail = self.frame_parts(frame)
        return header + tail

    def frame_parts(self, frame: MediaFrame) -> tuple[bytes, bytes]:
        """``frame()`` as (this player's tag header, the tail shared by every player)."""
        tail = self.tails(frame)
        ts = self.timeline.at(frame)
        return tag_header(TagKind.VIDEO if frame.is_video else TagKind.AUDIO, ts, len(tail) - 4), tail
