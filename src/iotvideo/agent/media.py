"""The agent's live media backend: ``StartPushStreaming``, ``StopPushStreaming`` and ``ForceIFrame``.

:class:`LiveMedia` keeps at most one push per ``StreamType`` (0 main, 1 sub), so main and sub
stream can be pushed at the same time.  ``StartPushStreaming`` for a stream type that is already
pushing to the same ``PushUrl`` keeps that push (and forces a key frame if ``ForceIFrame`` is 1);
to another URL it stops the old push and starts the new one.  Each push gets a fresh source built
from the agent's ``--source``: ``virtual`` encodes a test picture (main and sub at their own sizes),
an ``rtsp://`` URL or a file is relayed as it is to both stream types.  The reply comes once the
server accepted the publish (``{"Code": 0}``); a push that cannot start is answered with 500 and
why (460 for unusable arguments).  ``EncryptType`` 1 encrypts key frames with ``Key``/``Iv``
(layout in :mod:`iotvideo.media.decrypt`); ``Key``/``Iv`` with ``EncryptType`` 0 (none) are
refused with 460 rather than pushed in clear.  ``PreRecordSeconds`` is accepted but there is no
pre-record buffer yet (recording and the SD card come later), so the other media services still
raise :class:`NotSupported`.  ``streams_pushing`` counts the pushes that are really running.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from iotvideo.agent.device import NotSupported, ServiceError, UnsupportedMedia, redact_source
from iotvideo.agent.pusher import PushError, RtmpPusher, parse_push_url, redact_url
from iotvideo.agent.sources import FrameSource, RelaySource, VirtualSource
from iotvideo.devicelink import alink
from iotvideo.media.decrypt import KeyFrameCipher
from iotvideo.media.frames import Codec

__all__ = ["MAIN_STREAM", "SUB_STREAM", "LiveMedia", "StreamProfile"]

log = logging.getLogger("iotvideo.agent.media")

STREAM_NAMES: Final = {0: "main", 1: "sub"}
LIVE_ONLY: Final = "this agent does live push only (pictures, recording and playback come with SD-card support)"


@dataclass(frozen=True, slots=True)
class StreamProfile:
    """Picture size, frame rate and bit rate of one stream of the virtual camera."""

    width: int
    height: int
    fps: float = 15.0
    bitrate: int = 800_000


MAIN_STREAM: Final = StreamProfile(640, 360, 15.0, 800_000)
SUB_STREAM: Final = StreamProfile(320, 180, 15.0, 200_000)

SourceFactory = Callable[[int], FrameSource]


class LiveMedia(UnsupportedMedia):
    """Live pushes for the agent (see the module docstring); other media services raise NotSupported."""

    def __init__(
        self,
        source: str = "virtual",
        *,
        codec: str | Codec = "h264",
        audio: bool | str | None = None,
        main: StreamProfile = MAIN_STREAM,
        sub: StreamProfile = SUB_STREAM,
        gop_s: float = 1.0,
        hevc_legacy: bool = False,
        start_timeout: float = 4.0,
        source_factory: SourceFactory | None = None,
    ) -> None:
        super().__init__(source)
        self.codec = Codec(codec)
        if self.codec not in (Codec.H264, Codec.H265):
            raise ValueError("codec must be h264 or h265")
        self.audio = audio  # None: off for the virtual camera, relayed when present for a relay; or the
        # virtual camera's audio codec: "aac", "g711a", "g711u"
        self.profiles = {0: main, 1: sub}
        self.gop_s = gop_s
        self.hevc_legacy = hevc_legacy
        self.start_timeout = start_timeout
        self._factory = source_factory or self.make_source
        self.pushes: dict[int, RtmpPusher] = {}
        self._locks = {0: asyncio.Lock(), 1: asyncio.Lock()}
        self._closed = False

    def _no(self, identifier: str) -> dict[str, Any]:
        raise NotSupported(identifier, f"{LIVE_ONLY}; source {redact_source(self.source)}")

    def make_source(self, stream_type: int) -> FrameSource:
        """A new source for ``stream_type`` from the agent's ``--source``."""
        if self.source == "virtual":
            p = self.profiles[stream_type]
            return VirtualSource(p.width, p.height, p.fps, self.codec, gop_s=self.gop_s, audio=self.audio or False,
                                 bitrate=p.bitrate)
        return RelaySource(self.source, audio=self.audio is not False, open_timeout=max(1.0, self.start_timeout - 1))

    # --- services -------------------------------------------------------------------------------

    async def start_push_streaming(self, args: dict[str, Any]) -> dict[str, Any]:
        url = str(args["PushUrl"])
        stream_type = int(args["StreamType"])
        try:
            parse_push_url(url)
        except ValueError as exc:
            raise ServiceError(alink.CODE_PARAM_ERROR, f"PushUrl: {exc}") from None
        cipher = self._cipher(args)
        if self._closed:
            raise ServiceError(alink.CODE_SYSTEM_ERROR, "the agent is stopping")
        name = STREAM_NAMES[stream_type]
        async with self._locks[stream_type]:
            current = self.pushes.get(stream_type)
            if current is not None and current.running and current.url == url and \
                    (current.cipher is None) == (cipher is None):
                if args.get("ForceIFrame"):
                    current.source.force_keyframe()
                log.info("%s stream already pushing to %s", name, current.label)
                return {"Code": 0}
            if current is not None:
                await current.stop("replaced by a new push")
                self.pushes.pop(stream_type, None)
            pusher = RtmpPusher(url, self._factory(stream_type), cipher=cipher, hevc_legacy=self.hevc_legacy,
                                start_timeout=self.start_timeout, label=f"{name}:{redact_url(url)}")
            try:
                await pusher.start()
            except PushError as exc:
                log.warning("%s stream: %s (source %s)", name, exc, redact_source(self.source))
                raise ServiceError(alink.CODE_SYSTEM_ERROR, str(exc)) from None
            self.pushes[stream_type] = pusher
            pusher.add_done_callback(functools.partial(self._forget, stream_type))
        return {"Code": 0}

    async def stop_push_streaming(self, args: dict[str, Any]) -> dict[str, Any]:
        stream_type = int(args["StreamType"])
        url = args.get("PushUrl")
        async with self._locks[stream_type]:
            current = self.pushes.get(stream_type)
            if current is None or url is not None and url != current.url:
                return {}
            self.pushes.pop(stream_type, None)
            await current.stop("StopPushStreaming")
        return {}

    async def force_i_frame(self, args: dict[str, Any]) -> dict[str, Any]:
        current = self.pushes.get(int(args["StreamType"]))
        if current is not None and current.running:
            current.source.force_keyframe()
        return {}

    def streams_pushing(self) -> int:
        return sum(1 for p in self.pushes.values() if p.running)

    async def close(self) -> None:
        self._closed = True
        pushes = list(self.pushes.values())
        self.pushes.clear()
        await asyncio.gather(*(p.stop("agent stopping") for p in pushes), return_exceptions=True)

    # --- internals ------------------------------------------------------------------------------

    @staticmethod
    def _cipher(args: dict[str, Any]) -> KeyFrameCipher | None:
        key, iv = args.get("Key"), args.get("Iv")
        if args.get("EncryptType") == 1:
            try:
                return KeyFrameCipher.from_base64(str(key), str(iv))
            except ValueError as exc:
                raise ServiceError(alink.CODE_PARAM_ERROR, f"Key/Iv: {exc}") from None
        if key or iv:
            raise ServiceError(alink.CODE_PARAM_ERROR, "Key/Iv given but EncryptType is not 1 (AES-128-CBC): "
                               "refusing to push in clear")
        return None

    def _forget(self, stream_type: int, pusher: RtmpPusher) -> None:
        if self.pushes.get(stream_type) is pusher:
            del self.pushes[stream_type]
        if pusher.reason and pusher.stats.started_at:
            log.info("%s stream push ended: %s", STREAM_NAMES[stream_type], pusher.reason)
