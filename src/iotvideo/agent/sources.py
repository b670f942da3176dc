"""Video sources for the device agent: an encoded test picture and a relay of a camera or file.

Both produce :class:`MediaFrame`\\ s as the media components expect them (video as 4-byte
length-prefixed NAL units, a config frame carrying the AVC/HEVC decoder configuration record
before the first frame and whenever the parameter sets change; AAC as raw access units after
an AudioSpecificConfig; G.711 as raw samples).  Timestamps are milliseconds from 0, monotonic
per track.  The work (encoding, demuxing) runs in a worker thread, so the event loop stays free.

* :class:`VirtualSource` encodes a moving colour-bar pattern with the wall clock burned in
  (H.264 or H.265 via libx264/libx265: ultrafast, zerolatency, no B-frames, one thread) and,
  optionally, a beep once a second (AAC, or G.711 A-law/µ-law at 8 kHz as cheap cameras send);
  :meth:`FrameSource.force_keyframe` makes the next picture an IDR.
* :class:`RelaySource` relays an RTSP URL (over TCP) or a file (looped, paced in real time)
  without transcoding: Annex B is converted to length prefixes, in-band parameter sets move into
  the config record, AAC and G.711 audio go through as they are.

Use: ``await src.start()`` (raises :class:`SourceError`), ``async for frame in src.frames()``
(ends when the source ends or is closed; raises :class:`SourceError` if it failed),
``await src.close()``.  If the consumer falls behind, frames are dropped up to the next key
frame (``dropped`` counts them).
"""

from __future__ import annotations

import array
import asyncio
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Final

import av
from av.video.frame import PictureType

from iotvideo.media.codecs import (
    CodecError,
    annexb_nalus,
    avc_config_record,
    hevc_config_record,
    length_prefixed_nalus,
    parse_avc_config,
    parse_hevc_config,
)
from iotvideo.media.frames import Codec, MediaFrame

__all__ = [
    "FrameSource",
    "RelaySource",
    "SourceError",
    "SourceInfo",
    "VideoPacker",
    "VirtualSource",
    "nal_type",
]

log = logging.getLogger("iotvideo.agent.media")

_END: Final = object()
H264_PARAMETER_SETS: Final = frozenset({7, 8})
H265_PARAMETER_SETS: Final = frozenset({32, 33, 34})
_H264_DROPPED: Final = frozenset({9, 12})  # access unit delimiter, filler data
_H265_DROPPED: Final = frozenset({35, 38})
G711_RATES: Final = frozenset({8000, 11025, 22050, 44100})  # what an FLV audio tag can say for G.711


class SourceError(Exception):
    """A source could not be opened, or failed while producing."""


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What a started source produces (for ``onMetaData`` and logs)."""

    video: Codec
    width: int
    height: int
    fps: float
    bitrate: int = 0  # bits per second, 0 if unknown
    audio: Codec | None = None
    sample_rate: int = 0
    channels: int = 0
    description: str = ""


def nal_type(codec: Codec, nal: bytes) -> int:
    """The NAL unit type from a NAL unit's first header byte."""
    return nal[0] & 0x1F if codec is Codec.H264 else (nal[0] >> 1) & 0x3F


def is_key_nal(codec: Codec, kind: int) -> bool:
    """Whether a NAL unit type is a slice of an IDR (H.264 5) or IRAP (H.265 16..21) picture."""
    return kind == 5 if codec is Codec.H264 else 16 <= kind <= 21


# --- the shared machinery ---------------------------------------------------------------------------


class FrameSource:
    """Base of the sources: a worker thread ``_produce``\\ s frames into an asyncio queue."""

    def __init__(self, *, max_queued: int = 240) -> None:
        self.info: SourceInfo | None = None
        self.dropped = 0
        self.produced = 0
        self._max_queued = max_queued
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._resync = False
        self._lock = threading.Lock()
        self._opened = False  # _open succeeded and _release has not run yet

    async def start(self) -> None:
        """Open the source (in a thread) and start producing; raises :class:`SourceError`."""
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        try:
            await asyncio.to_thread(self._open_guarded)
        except SourceError:
            raise
        except Exception as exc:
            raise SourceError(f"{type(exc).__name__}: {exc}") from exc
        self._thread = threading.Thread(target=self._run, name=f"source-{type(self).__name__}", daemon=True)
        self._thread.start()

    async def frames(self) -> AsyncIterator[MediaFrame]:
        """The frames, configs first; ends when the source ends or is closed."""
        if self._queue is None:
            raise SourceError("source not started")
        while True:
            item = await self._queue.get()
            if item is _END:
                self._queue.put_nowait(_END)  # later iterations end too
                if self._error is not None and not self._stop.is_set():
                    raise SourceError(f"{type(self._error).__name__}: {self._error}") from self._error
                return
            yield item

    def force_keyframe(self) -> None:
        """Make the next video frame a key frame, if the source can (a relay cannot)."""

    async def close(self) -> None:
        """Stop the worker and release the source (a worker stuck in a read finishes by itself)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            if thread.is_alive():
                await asyncio.to_thread(thread.join, 2.0)
        else:
            self._release_once()

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    # worker side

    def _open(self) -> None:
        raise NotImplementedError

    def _produce(self) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        """Free what ``_open`` took (runs once, in the worker thread or when closed before it started)."""

    def _open_guarded(self) -> None:
        if self._stop.is_set():
            raise SourceError("source closed")
        self._open()
        with self._lock:
            self._opened = True
        if self._stop.is_set():  # closed while opening (a push that failed to start)
            self._release_once()
            raise SourceError("source closed")

    def _release_once(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, False
        if opened:
            try:
                self._release()
            except Exception:
                log.exception("releasing %s failed", type(self).__name__)

    def _run(self) -> None:
        try:
            self._produce()
        except BaseException as exc:  # reported to the consumer
            if not self._stop.is_set():
                log.warning("%s failed: %s: %s", type(self).__name__, type(exc).__name__, exc)
            self._error = exc
        finally:
            self._release_once()
            self._emit(_END)

    def _emit(self, item: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._put, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self._stop.set()

    def _put(self, item: Any) -> None:
        queue = self._queue
        assert queue is not None
        if item is _END or item.is_config:
            queue.put_nowait(item)
            return
        if self._resync:
            if item.is_video and item.keyframe:
                self._resync = False
            else:
                self.dropped += 1
                return
        if queue.qsize() >= self._max_queued:
            self.dropped += 1
            self._resync = True
            self.force_keyframe()
            return
        self.produced += 1
        queue.put_nowait(item)


# --- NAL units ---------------------------------------------------------------------------------------


class VideoPacker:
    """Turns coded packets (Annex B or length-prefixed) into config + length-prefixed frames.

    Parameter sets found in band update the config record (a config frame is emitted when it
    changes, always before the first frame); they, access unit delimiters and filler data are
    removed from the frames; every other NAL unit is kept byte for byte.  Frames before the first
    key frame (or before parameter sets are known) are dropped.
    """

    def __init__(self, codec: Codec, extradata: bytes | None = None) -> None:
        self.codec = codec
        self.length_size = 0  # 0: packets are Annex B
        self._params: dict[int, list[bytes]] = {}
        self._record: bytes | None = None
        self._sent_record: bytes | None = None
        self._started = False
        if extradata:
            self._load_extradata(bytes(extradata))

    def _load_extradata(self, data: bytes) -> None:
        if data[:1] == b"\x01":
            try:
                if self.codec is Codec.H264:
                    avc = parse_avc_config(data)
                    self.length_size = avc.nal_length_size
                    self._params = {7: list(avc.sps), 8: list(avc.pps)}
                else:
                    hevc = parse_hevc_config(data)
                    self.length_size = hevc.nal_length_size
                    self._params = {32: list(hevc.vps), 33: list(hevc.sps), 34: list(hevc.pps)}
            except CodecError as exc:
                raise SourceError(f"unusable {self.codec.value} configuration record: {exc}") from exc
            self._record = data if self.length_size == 4 else self._build()
            return
        self._take_parameter_sets(annexb_nalus(data))
        if self._params:
            self._record = self._build()

    @property
    def parameter_sets(self) -> frozenset[int]:
        return H264_PARAMETER_SETS if self.codec is Codec.H264 else H265_PARAMETER_SETS

    def _build(self) -> bytes | None:
        p = self._params
        try:
            if self.codec is Codec.H264:
                return avc_config_record(p.get(7, []), p.get(8, [])) if p.get(7) and p.get(8) else None
            if p.get(32) and p.get(33) and p.get(34):
                return hevc_config_record(p[32], p[33], p[34])
        except CodecError as exc:
            log.warning("cannot build a %s configuration record: %s", self.codec.value, exc)
        return None

    def _take_parameter_sets(self, nalus: list[bytes]) -> bool:
        found: dict[int, list[bytes]] = {}
        for n in nalus:
            kind = nal_type(self.codec, n)
            if kind in self.parameter_sets:
                found.setdefault(kind, []).append(n)
        changed = False
        for kind, sets in found.items():
            if self._params.get(kind) != sets:
                self._params[kind] = sets
                changed = True
        return changed

    def split(self, data: bytes) -> list[bytes]:
        """The NAL units of one packet."""
        if self.length_size:
            try:
                return list(length_prefixed_nalus(data, self.length_size))
            except CodecError:
                if not data.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01")):
                    raise
        return annexb_nalus(data)

    def pack(self, data: bytes, dts: int, pts: int) -> list[MediaFrame]:
        """Config frame (if new) and the frame for one packet; ``[]`` while waiting for a key frame."""
        codec = self.codec
        try:
            nalus = self.split(data)
        except CodecError:
            return []
        if self._take_parameter_sets(nalus):
            self._record = self._build() or self._record
        dropped = self.parameter_sets | (_H264_DROPPED if codec is Codec.H264 else _H265_DROPPED)
        kept = [n for n in nalus if n and nal_type(codec, n) not in dropped]
        if not kept:
            return []
        key = any(is_key_nal(codec, nal_type(codec, n)) for n in kept)
        if not self._started:
            if not key or self._record is None:
                return []
            self._started = True
        out: list[MediaFrame] = []
        if self._record is not None and self._record != self._sent_record:
            self._sent_record = self._record
            out.append(MediaFrame(codec, dts, dts, self._record, is_config=True))
        body = b"".join(len(n).to_bytes(4, "big") + n for n in kept)
        out.append(MediaFrame(codec, dts, pts, body, keyframe=key))
        return out


# --- the virtual camera ------------------------------------------------------------------------------

_FONT: Final = {
    "0": ("01110", "10001", "10011", "10101", "11001", "10001", "01110"),
    "1": ("00100", "01100", "00100", "00100", "00100", "00100", "01110"),
    "2": ("01110", "10001", "00001", "00010", "00100", "01000", "11111"),
    "3": ("11111", "00010", "00100", "00010", "00001", "10001", "01110"),
    "4": ("00010", "00110", "01010", "10010", "11111", "00010", "00010"),
    "5": ("11111", "10000", "11110", "00001", "00001", "10001", "01110"),
    "6": ("00110", "01000", "10000", "11110", "10001", "10001", "01110"),
    "7": ("11111", "00001", "00010", "00100", "01000", "01000", "01000"),
    "8": ("01110", "10001", "10001", "01110", "10001", "10001", "01110"),
    "9": ("01110", "10001", "10001", "01111", "00001", "00010", "01100"),
    ":": ("00000", "01100", "01100", "00000", "01100", "01100", "00000"),
    ".": ("00000", "00000", "00000", "00000", "00000", "01100", "01100"),
    "-": ("00000", "00000", "00000", "11111", "00000", "00000", "00000"),
    " ": ("00000",) * 7,
}
_BARS_RGB: Final = ((191, 191, 191), (191, 191, 0), (0, 191, 191), (0, 191, 0),
                    (191, 0, 191), (191, 0, 0), (0, 0, 191), (16, 16, 16))  # fmt: skip
_INK: Final = 235
_PAPER: Final = 16
_TONE_RATE: Final = 16000
_TONE_SAMPLES: Final = 1024
_TONE_HZ: Final = 1000  # 64 whole periods per 1024 samples at 16 kHz: no clicks between frames
_G711_TONE: Final = {"g711a": Codec.PCMA, "g711u": Codec.PCMU}  # the beep at 8 kHz in 20 ms frames


def _yuv(r: int, g: int, b: int) -> tuple[int, int, int]:
    """BT.601 limited-range Y'CbCr of an RGB colour."""
    y = 16 + (65.738 * r + 129.057 * g + 25.064 * b) / 256
    u = 128 + (-37.945 * r - 74.494 * g + 112.439 * b) / 256
    v = 128 + (112.439 * r - 94.154 * g - 18.285 * b) / 256
    return round(y), round(u), round(v)


class _Painter:
    """Draws the test picture straight into YUV 4:2:0 planes: diagonal colour bars moving
    sideways, and the wall clock (``HH:MM:SS.mmm``) in a box at the top left."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        bar = max(2, (width // 8) & ~1)
        self.period = 8 * bar
        colours = [_yuv(*c) for c in _BARS_RGB]
        span = self.period + width + height
        reps = span // self.period + 2
        self._y = bytes(colours[x // bar][0] for x in range(self.period)) * reps
        half = self.period // 2
        self._u = bytes(colours[(2 * x) // bar][1] for x in range(half)) * reps
        self._v = bytes(colours[(2 * x) // bar][2] for x in range(half)) * reps
        self.scale = max(1, min(height // 90, width // 160))
        self._glyphs = {
            ch: [b"".join(bytes([_INK if bit == "1" else _PAPER]) * self.scale for bit in row)
                 + bytes([_PAPER]) * self.scale for row in rows]
            for ch, rows in _FONT.items()
        }  # fmt: skip
        self.x0 = self.y0 = 2 * self.scale

    def paint(self, frame: av.VideoFrame, step: int, clock: str) -> None:
        """Fill ``frame`` for picture number ``step`` with ``clock`` burned in."""
        w, h = self.width, self.height
        k = (2 * step) % self.period  # even, so chroma follows luma exactly
        s = self.scale
        text_rows = [b"".join(self._glyphs.get(ch, self._glyphs[" "])[r] for ch in clock) for r in range(7)]
        box_w = min(len(text_rows[0]) + 2 * s, w - self.x0) & ~1
        box_h = min(9 * s, h - self.y0) & ~1
        pad = bytes([_PAPER]) * s
        blank = bytes([_PAPER]) * box_w
        box = [blank] * s
        for r in range(7):
            box += [(pad + text_rows[r] + pad)[:box_w].ljust(box_w, pad[:1])] * s
        box = (box + [blank] * s)[:box_h]
        x0, y0 = self.x0, self.y0
        y_plane, u_plane, v_plane = frame.planes
        rows: list[bytes] = []
        base = self._y
        fill = b"\x00" * (y_plane.line_size - w)
        for y in range(h):
            start = (k + y) % self.period
            row = base[start : start + w]
            if y0 <= y < y0 + box_h:
                row = row[:x0] + box[y - y0] + row[x0 + box_w :]
            rows.append(row + fill if fill else row)
        y_plane.update(b"".join(rows))
        cw, ch = (w + 1) // 2, (h + 1) // 2
        grey = b"\x80" * (box_w // 2)
        for plane, src in ((u_plane, self._u), (v_plane, self._v)):
            fill = b"\x00" * (plane.line_size - cw)
            rows = []
            half = self.period // 2
            for cy in range(ch):
                start = (k // 2 + cy) % half
                row = src[start : start + cw]
                if y0 // 2 <= cy < (y0 + box_h) // 2:
                    row = row[: x0 // 2] + grey + row[x0 // 2 + len(grey) :]
                rows.append(row + fill if fill else row)
            plane.update(b"".join(rows))


class VirtualSource(FrameSource):
    """A live test picture: see the module docstring.  ``gop_s`` is the key-frame interval."""

    def __init__(
        self,
        width: int = 640,
        height: int = 360,
        fps: float = 15.0,
        codec: str | Codec = "h264",
        *,
        gop_s: float = 1.0,
        audio: bool | str = False,
        bitrate: int = 800_000,
        max_queued: int = 240,
    ) -> None:
        super().__init__(max_queued=max_queued)
        self.codec = Codec(codec)
        if self.codec not in (Codec.H264, Codec.H265):
            raise ValueError("codec must be h264 or h265")
        if width < 16 or height < 16 or width % 2 or height % 2:
            raise ValueError("width and height must be even and at least 16")
        if not 0 < fps <= 60:
            raise ValueError("fps must be in 0..60")
        if gop_s <= 0:
            raise ValueError("gop_s must be positive")
        self.width, self.height, self.fps = width, height, float(fps)
        self.gop = max(1, round(gop_s * fps))
        if isinstance(audio, str) and audio not in ("aac", *_G711_TONE):
            raise ValueError("audio must be aac, g711a or g711u")
        self.audio = bool(audio)  # True or "aac": the AAC beep; "g711a"/"g711u": the beep in G.711 at 8 kHz
        self.audio_codec = _G711_TONE.get(audio, Codec.AAC) if isinstance(audio, str) else (
            Codec.AAC if audio else None)
        self.bitrate = bitrate
        self._force = threading.Event()
        self._video: Any = None
        self._aac: Any = None

    def force_keyframe(self) -> None:
        self._force.set()

    def _open(self) -> None:
        name = "libx264" if self.codec is Codec.H264 else "libx265"
        ctx = av.CodecContext.create(name, "w")
        ctx.width, ctx.height, ctx.pix_fmt = self.width, self.height, "yuv420p"
        rate = Fraction(self.fps).limit_denominator(1001)
        ctx.time_base = 1 / rate
        ctx.framerate = rate
        ctx.gop_size = self.gop
        ctx.max_b_frames = 0
        ctx.thread_count = 1
        ctx.bit_rate = self.bitrate
        options = {"preset": "ultrafast", "tune": "zerolatency", "forced-idr": "1",
                   "maxrate": str(self.bitrate), "bufsize": str(self.bitrate)}  # fmt: skip
        if self.codec is Codec.H264:
            options["x264-params"] = f"keyint={self.gop}:min-keyint={self.gop}:scenecut=0:bframes=0"
        else:
            options["x265-params"] = (f"keyint={self.gop}:min-keyint={self.gop}:scenecut=0:bframes=0:"
                                      "log-level=error:info=0:pools=none:frame-threads=1:repeat-headers=1")
        ctx.options = options
        ctx.open()
        self._video = ctx
        sample_rate = channels = 0
        if self.audio_codec is Codec.PCMA or self.audio_codec is Codec.PCMU:
            g711 = av.CodecContext.create("pcm_alaw" if self.audio_codec is Codec.PCMA else "pcm_mulaw", "w")
            g711.sample_rate, g711.layout, g711.format = 8000, "mono", "s16"
            g711.open()
            self._aac = g711
            sample_rate, channels = 8000, 1
        elif self.audio:
            aac = av.CodecContext.create("aac", "w")
            aac.sample_rate, aac.layout, aac.format = _TONE_RATE, "mono", "fltp"
            aac.bit_rate = 32000
            aac.time_base = Fraction(1, _TONE_RATE)
            aac.open()
            self._aac = aac
            sample_rate, channels = _TONE_RATE, 1
        self.info = SourceInfo(
            self.codec, self.width, self.height, self.fps, self.bitrate,
            self.audio_codec, sample_rate, channels,
            f"virtual {self.codec.value} {self.width}x{self.height}@{self.fps:g}",
        )  # fmt: skip

    def _release(self) -> None:
        self._video = self._aac = None

    def _produce(self) -> None:
        painter = _Painter(self.width, self.height)
        packer = VideoPacker(self.codec)
        picture = av.VideoFrame(self.width, self.height, "yuv420p")
        audio_codec = self.audio_codec or Codec.AAC
        g711 = audio_codec is not Codec.AAC
        rate, per_frame = (8000, 160) if g711 else (_TONE_RATE, _TONE_SAMPLES)
        wave = [0.3 * math.sin(2 * math.pi * _TONE_HZ * i / rate) for i in range(per_frame)]
        tone = (array.array("h", (int(32767 * x) for x in wave)) if g711 else array.array("f", wave)).tobytes()
        silence = bytes(len(tone))
        t0 = time.monotonic()
        v_index = a_index = a_out = 0
        v_step = 1.0 / self.fps
        a_step = per_frame / rate
        aac_config_sent = False
        while not self._stop.is_set():
            next_v = t0 + v_index * v_step
            next_a = t0 + a_index * a_step if self._aac is not None else math.inf
            due = min(next_v, next_a)
            now = time.monotonic()
            if due > now:
                self._stop.wait(due - now)
                continue
            if now - due > 1.0:  # starved of CPU: skip what is too late rather than catch up
                late = now - t0
                v_index = max(v_index, int(late / v_step))
                if self._aac is not None:
                    a_index = max(a_index, int(late / a_step))
                continue
            if next_v <= next_a:
                ms = round(v_index * 1000 / self.fps)
                wall = time.time()
                clock = time.strftime("%H:%M:%S", time.localtime(wall)) + f".{int(wall * 1000) % 1000:03d}"
                painter.paint(picture, v_index, clock)
                picture.pts = v_index
                forced = self._force.is_set()
                if forced:
                    self._force.clear()
                picture.pict_type = PictureType.I if forced else PictureType.NONE
                for packet in self._video.encode(picture):
                    for frame in packer.pack(bytes(packet), ms, ms):
                        self._emit(frame)
                v_index += 1
            else:
                samples = a_index * per_frame
                chunk = av.AudioFrame(format="s16" if g711 else "fltp", layout="mono", samples=per_frame)
                chunk.sample_rate = rate
                chunk.planes[0].update(tone if samples % rate < rate // 4 else silence)
                chunk.pts = samples
                for packet in self._aac.encode(chunk):
                    if g711:  # one packet per chunk, no delay
                        ms = round(samples * 1000 / rate)
                        self._emit(MediaFrame(audio_codec, ms, ms, bytes(packet), sample_rate=rate, channels=1))
                        continue
                    if not aac_config_sent:
                        aac_config_sent = True
                        self._emit(MediaFrame(Codec.AAC, 0, 0, bytes(self._aac.extradata or b""), is_config=True,
                                              sample_rate=_TONE_RATE, channels=1))
                    ms = round(a_out * _TONE_SAMPLES * 1000 / _TONE_RATE)
                    a_out += 1
                    self._emit(MediaFrame(Codec.AAC, ms, ms, bytes(packet), sample_rate=_TONE_RATE, channels=1))
                a_index += 1


# --- the relay -----------------------------------------------------------------------------------


def _adts_config(header: bytes) -> tuple[bytes, int, int, int]:
    """(AudioSpecificConfig, header length, sample rate, channels) from an ADTS header."""
    profile = (header[2] >> 6) + 1
    index = (header[2] >> 2) & 0x0F
    channels = ((header[2] & 0x01) << 2) | (header[3] >> 6)
    rates = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
    asc = ((profile << 11) | (index << 7) | (channels << 3)).to_bytes(2, "big")
    length = 7 if header[1] & 0x01 else 9
    return asc, length, rates[index] if index < len(rates) else 0, channels


class RelaySource(FrameSource):
    """An RTSP URL or a media file relayed without transcoding (see the module docstring).

    Video must be H.264 or H.265; audio is relayed when it is AAC or G.711 (at a rate FLV can
    describe), ignored otherwise.  A file is looped (``loop``) and paced in real time
    (``realtime``); a live URL is taken as it comes.
    """

    def __init__(
        self,
        url_or_path: str,
        *,
        loop: bool = True,
        realtime: bool = True,
        audio: bool = True,
        open_timeout: float = 5.0,
        read_timeout: float = 10.0,
        max_queued: int = 240,
    ) -> None:
        super().__init__(max_queued=max_queued)
        self.url = url_or_path
        self.live = "://" in url_or_path and not url_or_path.startswith("file:")
        self.loop = loop and not self.live
        self.realtime = realtime and not self.live
        self.audio = audio
        self.open_timeout, self.read_timeout = open_timeout, read_timeout
        self._container: Any = None
        self._vstream: Any = None
        self._astream: Any = None

    def _open(self) -> None:
        from iotvideo.agent.device import redact_source

        options = {"rtsp_transport": "tcp", "analyzeduration": "1000000", "probesize": "500000"} if \
            self.url.startswith(("rtsp://", "rtsps://")) else {}
        try:
            container = av.open(self.url, options=options, timeout=(self.open_timeout, self.read_timeout))
        except av.FFmpegError as exc:
            raise SourceError(f"cannot open {redact_source(self.url)}: {exc}") from exc
        try:
            video = next((s for s in container.streams.video if s.codec_context.name in ("h264", "hevc")), None)
            if video is None:
                names = ", ".join(s.codec_context.name for s in container.streams.video) or "none"
                raise SourceError(f"{redact_source(self.url)}: no H.264 or H.265 video to relay (video: {names})")
            audio = None
            if self.audio:
                for s in container.streams.audio:
                    cc = s.codec_context
                    if cc.name == "aac" or cc.name in ("pcm_alaw", "pcm_mulaw") and cc.sample_rate in G711_RATES \
                            and cc.channels in (1, 2):
                        audio = s
                        break
                if audio is None and container.streams.audio:
                    log.info("audio of %s not relayed (%s)", redact_source(self.url),
                             ", ".join(s.codec_context.name for s in container.streams.audio))
        except BaseException:
            container.close()
            raise
        self._container, self._vstream, self._astream = container, video, audio
        vcc = video.codec_context
        rate = video.average_rate or video.guessed_rate or 0
        acodec = None
        if audio is not None:
            acodec = {"aac": Codec.AAC, "pcm_alaw": Codec.PCMA, "pcm_mulaw": Codec.PCMU}[audio.codec_context.name]
        self.info = SourceInfo(
            Codec.H264 if vcc.name == "h264" else Codec.H265, vcc.width, vcc.height, float(rate),
            int(vcc.bit_rate or 0), acodec, audio.codec_context.sample_rate if audio is not None else 0,
            audio.codec_context.channels if audio is not None else 0, f"relay of {redact_source(self.url)}",
        )  # fmt: skip

    def _release(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def _packets(self) -> Iterator[Any]:
        streams = [s for s in (self._vstream, self._astream) if s is not None]
        while not self._stop.is_set():
            yielded = False
            for packet in self._container.demux(*streams):
                if self._stop.is_set():
                    return
                if packet.size:
                    yielded = True
                    yield packet
            if not self.loop or not yielded:
                return
            yield None  # end of one pass
            self._container.seek(0)

    def _produce(self) -> None:
        assert self.info is not None
        vstream, astream = self._vstream, self._astream
        packer = VideoPacker(self.info.video, vstream.codec_context.extradata)
        frame_ms = 1000 / self.info.fps if self.info.fps else 40.0
        aac_config: bytes | None = None
        if astream is not None and astream.codec_context.name == "aac" and astream.codec_context.extradata:
            aac_config = bytes(astream.codec_context.extradata)
        aac_config_sent = False
        pass_base: float | None = None  # source ms of the first frame of this pass
        offset = 0.0  # output ms where this pass starts
        end = 0.0  # output ms just after the last frame so far
        last = {"video": -1, "audio": -1}
        wall0: float | None = None
        started = False
        for packet in self._packets():
            if packet is None:  # looping: the next pass continues the timeline
                offset, pass_base = end, None
                continue
            tb = packet.time_base
            raw = packet.dts if packet.dts is not None else packet.pts
            if raw is None or tb is None:
                continue
            ms = float(raw * tb * 1000)
            is_video = packet.stream is vstream
            if pass_base is None:
                if not is_video:
                    continue
                pass_base = ms
            ts = ms - pass_base + offset
            if ts < offset - 1 and not is_video:
                continue  # audio from before this pass's first video frame
            if is_video:
                cts = float((packet.pts - packet.dts) * tb * 1000) if packet.pts is not None and \
                    packet.dts is not None else 0.0
                frames = packer.pack(bytes(packet), 0, 0)
                if not frames:
                    continue
                started = True
                dts = max(round(ts), last["video"])
                last["video"] = dts
                duration = float(packet.duration * tb * 1000) if packet.duration else frame_ms
                end = max(end, ts + duration)
                out = [MediaFrame(f.codec, dts, dts if f.is_config else dts + round(cts), f.data,
                                  keyframe=f.keyframe, is_config=f.is_config) for f in frames]
            else:
                if not started:
                    continue
                dts = max(round(ts), last["audio"])
                last["audio"] = dts
                out = self._audio_frames(bytes(packet), dts, astream, aac_config, aac_config_sent)
                if out and out[0].is_config:
                    aac_config_sent = True
                    aac_config = out[0].data
            if self.realtime:
                now = time.monotonic()
                if wall0 is None:
                    wall0 = now - dts / 1000
                wait = wall0 + dts / 1000 - now
                if wait > 0 and self._stop.wait(wait):
                    return
            for f in out:
                self._emit(f)

    def _audio_frames(self, data: bytes, ts: int, stream: Any, config: bytes | None,
                      config_sent: bool) -> list[MediaFrame]:
        cc = stream.codec_context
        if cc.name in ("pcm_alaw", "pcm_mulaw"):
            codec = Codec.PCMA if cc.name == "pcm_alaw" else Codec.PCMU
            return [MediaFrame(codec, ts, ts, data, sample_rate=cc.sample_rate, channels=cc.channels)]
        out: list[MediaFrame] = []
        if len(data) >= 7 and data[0] == 0xFF and data[1] & 0xF0 == 0xF0:  # ADTS: strip the header
            asc, length, rate, channels = _adts_config(data)
            data = data[length:]
            if config is None or not config_sent:
                config = asc
        else:
            rate, channels = cc.sample_rate, cc.channels
        if config is None:
            return []
        if not config_sent:
            out.append(MediaFrame(Codec.AAC, ts, ts, config, is_config=True, sample_rate=rate, channels=channels))
        if data:
            out.append(MediaFrame(Codec.AAC, ts, ts, data, sample_rate=rate, channels=channels))
        return out
