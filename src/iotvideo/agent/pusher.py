"""RTMP push from the device agent: one publish of one source to one ``PushUrl``.

:class:`RtmpPusher` connects to ``rtmp://host[:port]/app/name[?query]`` (the push token travels in
the query, which is part of the published stream name), runs connect → createStream → publish
with the sans-IO :class:`RtmpClientConnection`, then sends ``@setDataFrame onMetaData``, the codec
configs and the frames of its source (H.264 as codec id 7; H.265 as Enhanced RTMP ``hvc1``, or
codec id 12 with ``hevc_legacy``; AAC; G.711).  There is no reconnection: when the server goes
away or refuses, the push ends (``reason`` says why) and the cloud issues a new
``StartPushStreaming``.  If the network cannot keep up, frames are dropped up to the next key
frame (the source is asked for one) rather than buffered without bound.

With a :class:`~iotvideo.media.decrypt.KeyFrameCipher` (``EncryptType`` 1) every key-picture slice
is encrypted before it is sent; the layout, which leaves all headers in clear and keeps every
length, is documented in :mod:`iotvideo.media.decrypt`.  Tokens in the URL are never logged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl as _ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from iotvideo.agent.sources import FrameSource, SourceError, SourceInfo
from iotvideo.media.decrypt import KeyFrameCipher
from iotvideo.media.flvtags import FlvError, audio_payload, video_payload
from iotvideo.media.frames import Codec, MediaFrame
from iotvideo.media.rtmp import (
    ConnectionClosed,
    Connected,
    ConnectRejected,
    ProtocolError,
    RtmpClientConnection,
    StreamCreated,
    StreamStatus,
)

__all__ = ["PushError", "PushStats", "PushTarget", "RtmpPusher", "metadata_for", "parse_push_url", "redact_url"]

log = logging.getLogger("iotvideo.agent.media")

DEFAULT_PORTS: Final = {"rtmp": 1935, "rtmps": 443}
_FOURCC_HVC1: Final = int.from_bytes(b"hvc1", "big")
_AUDIO_IDS: Final = {Codec.AAC: 10, Codec.PCMA: 7, Codec.PCMU: 8}


class PushError(Exception):
    """The push could not start (bad URL, connection refused, publish rejected, source failed)."""


@dataclass(frozen=True, slots=True)
class PushTarget:
    """A parsed push URL: where to connect and what to publish."""

    scheme: str
    host: str
    port: int
    app: str
    name: str  # stream name including ``?query``
    tc_url: str


def parse_push_url(url: str) -> PushTarget:
    """Split ``rtmp[s]://host[:port]/app/name[?query]``; ``ValueError`` if it is not one."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"malformed push URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError("push URL must be rtmp:// or rtmps://")
    if not parts.hostname:
        raise ValueError("push URL without a host")
    app, _, name = parts.path.lstrip("/").partition("/")
    if not app or not name:
        raise ValueError("push URL must be rtmp://host[:port]/app/stream")
    if parts.query:
        name = f"{name}?{parts.query}"
    port = port or DEFAULT_PORTS[scheme]
    host = parts.hostname
    netloc = f"[{host}]" if ":" in host else host
    return PushTarget(scheme, host, port, app, name, f"{scheme}://{netloc}:{port}/{app}")


def redact_url(url: str) -> str:
    """The URL without its query (the push token) and credentials, for logs and messages."""
    try:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
        return f"{parts.scheme}://{host}{parts.path}" + ("?…" if parts.query else "")
    except ValueError:
        return "<unparsable URL>"


def metadata_for(info: SourceInfo | None, *, hevc_legacy: bool = False) -> dict[str, Any]:
    """``onMetaData`` for a source: size, frame rate, codec ids (H.265: FourCC ``hvc1`` or 12)."""
    meta: dict[str, Any] = {"encoder": "iotvideo-agent"}
    if info is None:
        return meta
    if info.video is Codec.H264:
        video_id: float = 7
    else:
        video_id = 12 if hevc_legacy else _FOURCC_HVC1
    meta.update(width=float(info.width), height=float(info.height), videocodecid=float(video_id))
    if info.fps:
        meta["framerate"] = float(info.fps)
    if info.bitrate:
        meta["videodatarate"] = info.bitrate / 1000
    if info.audio is not None:
        meta.update(audiocodecid=float(_AUDIO_IDS[info.audio]), audiosamplerate=float(info.sample_rate),
                    stereo=info.channels == 2)
    return meta


@dataclass
class PushStats:
    """Counters of one push."""

    started_at: float = 0.0  # epoch seconds when the publish was accepted
    frames: int = 0
    video_frames: int = 0
    audio_frames: int = 0
    key_frames: int = 0
    encrypted_frames: int = 0
    bytes: int = 0  # bytes written to the connection
    dropped: int = 0  # frames dropped because the connection could not keep up
    last_dts: int = -1


class _Protocol(asyncio.Protocol):
    """The transport side of a pusher: feeds bytes to the connection, events to the pusher."""

    def __init__(self, pusher: RtmpPusher) -> None:
        self.pusher = pusher
        self.transport: asyncio.Transport | None = None
        self.writable = asyncio.Event()
        self.writable.set()
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.pusher._flush()

    def data_received(self, data: bytes) -> None:
        self.pusher._on_events(self.pusher.conn.receive_data(data))
        self.pusher._flush()

    def eof_received(self) -> bool | None:
        self.pusher._on_events(self.pusher.conn.receive_data(b""))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.pusher.conn.closed:
            self.pusher._on_events(self.pusher.conn.receive_data(b""))
        if not self.lost.done():
            self.lost.set_result(exc)
        self.writable.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()


class RtmpPusher:
    """Publishes ``source`` to ``url`` until :meth:`stop`, the source ends, or the server closes.

    ``await start()`` returns once the server accepted the publish (``NetStream.Publish.Start``)
    and raises :class:`PushError` otherwise; the source is started at the same time, so no frame
    waits for the handshake.  ``stats`` counts what was sent, ``reason`` says why it ended,
    ``add_done_callback`` runs when it ends.
    """

    def __init__(
        self,
        url: str,
        source: FrameSource,
        *,
        cipher: KeyFrameCipher | None = None,
        hevc_legacy: bool = False,
        start_timeout: float = 4.0,
        max_buffer: int = 2 * 1024 * 1024,
        chunk_size: int = 4096,
        ssl: _ssl.SSLContext | None = None,
        label: str = "",
    ) -> None:
        self.url = url
        self.target = parse_push_url(url)
        self.source = source
        self.cipher = cipher
        self.hevc_legacy = hevc_legacy
        self.start_timeout = start_timeout
        self.max_buffer = max_buffer
        self.label = label or redact_url(url)
        self._ssl = ssl if ssl is not None else (_ssl.create_default_context() if self.target.scheme == "rtmps" else None)
        self.conn = RtmpClientConnection(self.target.app, self.target.tc_url, chunk_size=chunk_size)
        self.stats = PushStats()
        self.reason: str | None = None
        self.stream_id = 0
        self._protocol: _Protocol | None = None
        self._published: asyncio.Future[None] | None = None
        self._pump: asyncio.Task[None] | None = None
        self._done = asyncio.Event()
        self._callbacks: list[Callable[[RtmpPusher], None]] = []
        self._stopping = False
        self._waiting_key = False

    # --- public ---------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Publishing now: started, and neither stopped nor cut off."""
        return self._pump is not None and self.reason is None and not self._done.is_set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def add_done_callback(self, fn: Callable[[RtmpPusher], None]) -> None:
        """Call ``fn(self)`` when the push ends (at once if it already has)."""
        if self._done.is_set():
            fn(self)
        else:
            self._callbacks.append(fn)

    async def start(self) -> None:
        """Connect, publish and start sending; :class:`PushError` if that fails within ``start_timeout``."""
        if self._published is not None:
            raise RuntimeError("a pusher starts once")
        loop = asyncio.get_running_loop()
        self._published = loop.create_future()
        # start() may have given up (timeout, cancel) before the failure is set: mark it seen.
        self._published.add_done_callback(lambda f: f.cancelled() or f.exception())
        source_task = asyncio.ensure_future(self.source.start())
        try:
            async with asyncio.timeout(self.start_timeout):
                await self._connect()
                await asyncio.shield(self._published)
                await source_task
        except (TimeoutError, OSError, PushError, SourceError) as exc:
            source_task.cancel()
            await asyncio.gather(source_task, return_exceptions=True)
            reason = self._failure(exc)
            await self._close_all(reason)
            raise PushError(reason) from None
        except asyncio.CancelledError:
            source_task.cancel()
            await self._close_all("cancelled")
            raise
        self.stats.started_at = time.time()
        self._send_metadata()
        self._pump = loop.create_task(self._run(), name=f"push {self.label}")
        log.info("pushing %s to %s", self.source.info.description if self.source.info else "source", self.label)

    async def stop(self, reason: str = "stopped") -> None:
        """Stop publishing (deleteStream, close) and release the source.  Idempotent."""
        self._stopping = True
        pump = self._pump
        if pump is not None and not pump.done() and pump is not asyncio.current_task():
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
        await self._close_all(reason)

    async def wait_closed(self) -> str | None:
        """Wait until the push ends; why it ended."""
        await self._done.wait()
        return self.reason

    # --- connection -----------------------------------------------------------------------------

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        t = self.target
        await loop.create_connection(lambda: self._make_protocol(), t.host, t.port, ssl=self._ssl,
                                     server_hostname=t.host if self._ssl else None)

    def _make_protocol(self) -> _Protocol:
        self._protocol = _Protocol(self)
        return self._protocol

    def _failure(self, exc: BaseException) -> str:
        where = f"push to {self.label}"
        if isinstance(exc, TimeoutError):
            return f"{where}: no answer within {self.start_timeout:g} s"
        if isinstance(exc, SourceError):
            return f"{where}: source failed: {exc}"
        if isinstance(exc, OSError):
            return f"{where}: cannot connect: {exc.strerror or exc}"
        return f"{where}: {exc}"

    def _flush(self) -> None:
        p = self._protocol
        data = self.conn.data_to_send()
        if data and p is not None and p.transport is not None and not p.transport.is_closing():
            p.transport.write(data)
            self.stats.bytes += len(data)

    def _fail_start(self, reason: str) -> None:
        if self._published is not None and not self._published.done():
            self._published.set_exception(PushError(reason))

    def _on_events(self, events: list[Any]) -> None:
        for ev in events:
            if isinstance(ev, Connected):
                self.conn.create_stream()
            elif isinstance(ev, StreamCreated):
                self.stream_id = ev.stream_id
                self.conn.publish(ev.stream_id, self.target.name)
            elif isinstance(ev, StreamStatus):
                if ev.code == "NetStream.Publish.Start":
                    if self._published is not None and not self._published.done():
                        self._published.set_result(None)
                elif ev.level == "error" or ev.code in ("NetStream.Publish.BadName", "NetStream.Unpublish.Success"):
                    self._fail_start(f"server refused the publish: {ev.code} {ev.description}".strip())
                    self._end(f"server: {ev.code} {ev.description}".strip())
            elif isinstance(ev, ConnectRejected):
                text = ev.info.get("description") or ev.info.get("code") or "rejected"
                self._fail_start(f"server refused the connection: {text}")
            elif isinstance(ev, ProtocolError):
                self._fail_start(f"protocol error: {ev.reason}")
                self._end(f"protocol error: {ev.reason}")
            elif isinstance(ev, ConnectionClosed):
                self._fail_start("server closed the connection")
                self._end("server closed the connection")

    def _end(self, reason: str) -> None:
        """The connection is finished: stop the pump (it cleans up)."""
        if self.reason is None:
            self.reason = reason
        pump = self._pump
        if pump is not None and not pump.done():
            pump.cancel()
        p = self._protocol
        if p is not None and p.transport is not None:
            p.transport.close()

    async def _close_all(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        p = self._protocol
        if p is not None and p.transport is not None and not p.transport.is_closing():
            if self.stream_id and not self.conn.closed:
                self.conn.delete_stream(self.stream_id)
                self._flush()
            p.transport.close()
        if p is not None and p.transport is not None:
            try:
                await asyncio.wait_for(asyncio.shield(p.lost), 2.0)
            except TimeoutError:
                p.transport.abort()
        try:
            await self.source.close()
        except Exception:
            log.exception("closing the source of %s failed", self.label)
        if not self._done.is_set():
            self._done.set()
            if self.stats.started_at:
                log.info("push to %s ended (%s): %d frames, %d bytes, %d dropped", self.label, self.reason,
                         self.stats.frames, self.stats.bytes, self.stats.dropped)
            for fn in self._callbacks:
                try:
                    fn(self)
                except Exception:
                    log.exception("push done callback failed")

    # --- sending --------------------------------------------------------------------------------

    def _send_metadata(self) -> None:
        self.conn.send_metadata(self.stream_id, metadata_for(self.source.info, hevc_legacy=self.hevc_legacy))
        self._flush()

    async def _run(self) -> None:
        reason = "source ended"
        try:
            async for frame in self.source.frames():
                if self.conn.closed:
                    reason = self.reason or "server closed the connection"
                    break
                self._send(frame)
        except asyncio.CancelledError:
            reason = self.reason or "stopped"
        except SourceError as exc:
            reason = f"source failed: {exc}"
            log.warning("push to %s: %s", self.label, reason)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            log.exception("push to %s failed", self.label)
        if not self._stopping:
            await asyncio.shield(self._close_all(reason))

    def _send(self, frame: MediaFrame) -> None:
        p = self._protocol
        if p is None or p.transport is None or p.transport.is_closing():
            return
        st = self.stats
        if not frame.is_config:
            if p.transport.get_write_buffer_size() > self.max_buffer:
                if not self._waiting_key:
                    log.warning("push to %s cannot keep up: dropping up to the next key frame", self.label)
                    self.source.force_keyframe()
                self._waiting_key = True
            if self._waiting_key:
                if frame.is_video and frame.keyframe and p.transport.get_write_buffer_size() <= self.max_buffer:
                    self._waiting_key = False
                else:
                    st.dropped += 1
                    return
        try:
            if frame.is_video:
                if self.cipher is not None and frame.keyframe and not frame.is_config:
                    frame = dataclasses.replace(frame, data=self.cipher.encrypt_sample(frame.codec, frame.data))
                    st.encrypted_frames += 1
                self.conn.send_video(self.stream_id, frame.dts, video_payload(frame, hevc_legacy=self.hevc_legacy))
            else:
                self.conn.send_audio(self.stream_id, frame.dts, audio_payload(frame))
        except FlvError as exc:
            st.dropped += 1
            log.debug("push to %s: frame not sendable: %s", self.label, exc)
            return
        if not frame.is_config:
            st.frames += 1
            st.last_dts = frame.dts
            if frame.is_video:
                st.video_frames += 1
                st.key_frames += frame.keyframe
            else:
                st.audio_frames += 1
        self._flush()
