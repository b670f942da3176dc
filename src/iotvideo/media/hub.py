"""The per-stream hub: one publisher's ``MediaFrame``s fanned out to players, sinks and the recorder.

A ``StreamHub`` knows nothing of protocols or storage. A server (RTMP ingest) attaches a
``Publisher`` and calls its synchronous ``publish(frame)``; outputs take a ``Subscription``
(an async iterator of frames with a bounded queue) or a synchronous sink (the shared
LL-HLS packager, ``HlsSink``). The hub keeps the codec configurations and the current
GOP (optionally more, for event pre-roll), so a new player starts on a key frame at once.
A subscriber that falls behind its bound loses its queue and resumes at the next key
frame; the publisher and the other subscribers never wait for it. ``HubRegistry`` holds
the hubs of a node and says when a stream has had no players for a while.

Everything here runs on one asyncio loop: call it from the loop's thread only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

from . import accel
from .codecs import parse_aac_config, parse_avc_config, parse_hevc_config
from .frames import VIDEO_CODECS as _VIDEO_CODECS
from .frames import Codec, MediaFrame
from .hls import HlsConfig, HlsPackager
from .hubcore import Gop

if TYPE_CHECKING:
    from .transcode import G711ToAac

__all__ = [
    "FrameMemo",
    "HlsSink",
    "HubClosed",
    "HubConfig",
    "HubKey",
    "HubRegistry",
    "HubStats",
    "Publisher",
    "PublisherConflict",
    "StreamHub",
    "StreamKey",
    "Subscription",
]

log = logging.getLogger("iotvideo.media.hub")

MiB: Final = 1 << 20
Clock = Callable[[], float]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StreamKey:
    """A device's live stream: ``stream_type`` 0 is the main stream, 1 the sub stream."""

    iot_id: str
    stream_type: int = 0

    def __str__(self) -> str:
        return f"{self.iot_id}/{self.stream_type}"

    @classmethod
    def parse(cls, path: str) -> StreamKey:
        """``"{iot_id}/{stream_type}"`` back to a key; ValueError if it is not one."""
        iot_id, sep, stream_type = path.rpartition("/")
        if not sep or not iot_id or not stream_type.isdigit():
            raise ValueError(f"not a stream key: {path!r}")
        return cls(iot_id, int(stream_type))


HubKey = StreamKey | str


class PublisherConflict(Exception):
    """The stream already has an active publisher and this hub refuses a second one."""


class HubClosed(Exception):
    """The hub was removed from its registry: no more publishers or subscribers."""


@dataclass(frozen=True, slots=True)
class HubConfig:
    """Cache bounds and publisher policy. Sizes in bytes, durations in milliseconds."""

    gop_max_bytes: int = 8 * MiB  # a GOP larger than this is not cached (players wait for the next key frame)
    gop_max_ms: int = 10_000  # nor one longer than this
    preroll_ms: int = 0  # complete GOPs kept beyond the current one, for event pre-roll (see ``StreamHub.keep_history``)
    cache_max_bytes: int = 32 * MiB  # all GOPs held, current included (older ones go first)
    queue_max_bytes: int = 4 * MiB  # a subscriber's default bound
    replace_publisher: bool = False  # a second publisher replaces the first (else it is refused)


@dataclass(frozen=True, slots=True)
class HubStats:
    """A snapshot of one hub. Times are Unix seconds; rates bits per second."""

    key: str
    publishing: bool
    started_at: float | None
    last_frame_at: float | None
    frames_in: int
    bytes_in: int
    bitrate_bps: float
    subscribers: int
    sinks: int
    dropped_frames: int  # summed over the current subscribers
    video_codec: Codec | None
    audio_codec: Codec | None
    codecs: tuple[str, ...]  # RFC 6381 strings, from the configuration records
    width: int | None
    height: int | None
    sample_rate: int | None
    channels: int | None
    gop_frames: int
    cache_bytes: int


@dataclass(eq=False, slots=True)
class _Sink:
    feed: Callable[[MediaFrame], object]
    on_end: Callable[[], object] | None
    errors: int = 0


def _same_config(a: MediaFrame | None, b: MediaFrame | None) -> bool:
    return a is b or (a is not None and b is not None and a.codec is b.codec and a.data == b.data)


class Subscription:
    """One consumer's view of a hub: ``async for frame in sub`` (or ``await sub.get()``).

    The queue holds at most ``max_queue_bytes`` of media (plus the burst it started with)
    and, if set, ``max_queue_ms`` of stream time. Past either bound the subscriber is
    lagging: the queue is dropped (``dropped_frames`` counts them) and delivery resumes at
    the next key frame, preceded by the codec configurations if they changed.
    """

    __slots__ = (
        "hub", "max_queue_bytes", "max_queue_ms", "dropped_frames", "lag_count",
        "_q", "_bytes", "_burst", "_waiting", "_lagging", "_ended", "_waiter", "_sent", "_taken", "_direct", "_fast",
    )

    def __init__(self, hub: StreamHub, max_queue_bytes: int, max_queue_ms: int | None) -> None:
        self.hub = hub
        self.max_queue_bytes = max_queue_bytes
        self.max_queue_ms = max_queue_ms
        self.dropped_frames = 0
        self.lag_count = 0
        self._q: deque[MediaFrame] = deque()
        self._bytes = 0
        self._burst = 0  # bytes of the initial GOP still queued: allowed over the bound
        self._waiting = True  # dropping media until a key frame
        self._lagging = False
        self._ended = False
        self._waiter: asyncio.Future[None] | None = None
        # the latest video and audio configurations queued, and those the consumer has taken
        self._sent: dict[bool, MediaFrame] = {}
        self._taken: dict[bool, MediaFrame] = {}
        self._direct: Callable[[MediaFrame], bool] | None = None
        self._fast: object | None = None  # ``_direct`` when it is a C output (``accel.FAST_OUTS``): the hub's Fanout feeds it

    # --- consumer side --------------------------------------------------------------

    @property
    def lagging(self) -> bool:
        """Fell behind and is waiting for the next key frame."""
        return self._lagging

    @property
    def ended(self) -> bool:
        """No frame will come any more (the stream ended, or ``close()``), and none is queued."""
        return self._ended and not self._q

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    @property
    def queued_frames(self) -> int:
        return len(self._q)

    async def get(self) -> MediaFrame | None:
        """The next frame, waiting for it; ``None`` once the stream has ended."""
        while not self._q:
            if self._ended:
                return None
            await self._wait()
        return self._pop()

    async def batch(self) -> list[MediaFrame]:
        """Every queued frame (waiting for at least one): one socket write per wake-up. Empty at the end."""
        while not self._q:
            if self._ended:
                return []
            await self._wait()
        out: list[MediaFrame] = []
        while self._q:
            out.append(self._pop())
        return out

    def get_nowait(self) -> MediaFrame | None:
        """The next queued frame, or ``None`` if there is none right now."""
        return self._pop() if self._q else None

    def deliver_to(self, take: Callable[[MediaFrame], bool] | None) -> None:
        """Hand each frame to ``take`` as it is published, while nothing is queued: no queue,
        no wake-up, no task switch per frame. ``take`` returns False when it cannot take the
        frame now (its socket is full): the frame is queued, bounds apply, and the consumer
        drains the queue as usual (``batch``); delivery is direct again once it is empty.
        ``take`` runs inside the publisher's ``publish``: it must be quick and must not raise
        (if it does, direct delivery stops). ``None`` stops it.

        A C ``accel.RtmpOut`` or ``accel.FlvOut`` as ``take`` lets the hub feed this subscription from its ``Fanout``
        (one C call per frame for all such players) while it keeps up."""
        self._direct = take
        self._fast = take if accel.FAST_OUTS and isinstance(take, accel.FAST_OUTS) else None
        if self._fast is None:
            self.hub._fan_leave(self)

    def close(self) -> None:
        """Leave the stream (a player disconnected). Iteration stops."""
        if self._ended and self not in self.hub._subs:
            self._q.clear()
            return
        self._ended = True
        self._q.clear()
        self._bytes = self._burst = 0
        self._wake()
        self.hub._unsubscribe(self, left=True)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> MediaFrame:
        frame = await self.get()
        if frame is None:
            raise StopAsyncIteration
        return frame

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def _wait(self) -> None:
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def _pop(self) -> MediaFrame:
        frame = self._q.popleft()
        self._bytes -= len(frame.data)
        if self._burst > self._bytes:
            self._burst = self._bytes
        if frame.is_config:
            self._taken[frame.is_video] = frame
        return frame

    # --- hub side -------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _prime(self, frames: list[MediaFrame]) -> None:
        """Start with a cached GOP (configurations first); it may exceed the bound once."""
        self._q.extend(frames)
        self._bytes = self._burst = sum(len(f.data) for f in frames)
        for f in frames:
            if f.is_config:
                self._sent[f.is_video] = f
        self._waiting = False
        self._wake()

    def _offer(self, frame: MediaFrame, sync: bool, direct_ok: bool = True) -> None:
        """Called by the hub for each frame published; never blocks. ``direct_ok`` False: direct
        delivery already refused this frame (the hub's Fanout tried it)."""
        direct = direct_ok and self._direct is not None
        if (
            direct and not self._q and not self._waiting and not frame.is_config
            and len(frame.data) <= self.max_queue_bytes  # with nothing queued, the only bound that can apply
        ):
            if self._take(frame):
                if self._fast is not None:
                    self.hub._fan_join(self)
                return
            direct = False  # refused (socket full): this frame is queued
        if self._waiting:
            if not sync:
                if self._lagging and not frame.is_config:
                    self.dropped_frames += 1
                return
            self._resume()
        elif not frame.is_config and self._over_bound(frame):
            self._lag()
            if not sync:
                self.dropped_frames += 1
                return
            self._resume()
        elif frame.is_config:
            self._sent[frame.is_video] = frame
        if direct and not self._q and self._take(frame):
            if frame.is_config:
                self._taken[frame.is_video] = frame
            if self._fast is not None:
                self.hub._fan_join(self)
            return
        self._q.append(frame)
        self._bytes += len(frame.data)
        self._wake()

    def _take(self, frame: MediaFrame) -> bool:
        """Direct delivery of one frame; False when the consumer cannot take it now (or failed:
        direct delivery then stops for good)."""
        assert self._direct is not None
        try:
            return self._direct(frame)
        except Exception:
            log.exception("stream %s: direct delivery failed; queueing instead", self.hub.path)
            self._direct = self._fast = None
            self.hub._fan_leave(self)
            return False

    def _over_bound(self, frame: MediaFrame) -> bool:
        if self._bytes + len(frame.data) > self.max_queue_bytes + self._burst:
            return True
        limit, q = self.max_queue_ms, self._q
        if limit is None or not q:
            return False
        head = q[0]
        for i in (1, 2):  # skip the configurations a resume puts first (their times are old)
            if not head.is_config or len(q) <= i:
                break
            head = q[i]
        return not head.is_config and frame.dts - head.dts > limit

    def _lag(self) -> None:
        self.dropped_frames += sum(1 for f in self._q if not f.is_config)
        self.lag_count += 1
        self._q.clear()
        self._bytes = self._burst = 0
        self._waiting = self._lagging = True
        self._sent = dict(self._taken)

    def _resume(self) -> None:
        """At a key frame: queue the current configurations the consumer will otherwise lack."""
        self._waiting = self._lagging = False
        for is_video, current in ((True, self.hub._video_cfg), (False, self.hub._audio_cfg)):
            if current is not None and not _same_config(current, self._sent.get(is_video)):
                self._sent[is_video] = current
                self._q.append(current)
                self._bytes += len(current.data)

    def _end(self) -> None:
        """The stream ended: deliver what is queued, then stop."""
        self._ended = True
        self._waiting = False
        self._wake()


class FrameMemo(Generic[T]):
    """What an output derives from a frame (a tag body, a chunked message), built once and
    shared by all its players: keyed by the frame's identity (the entry holds the frame, so
    the identity is not reused meanwhile), for the ``size`` frames most recently asked for.
    Players fed directly ask for a frame one after another, so a small ``size`` suffices."""

    __slots__ = ("_build", "_size", "_entries")

    def __init__(self, build: Callable[[MediaFrame], T], size: int = 64) -> None:
        self._build = build
        self._size = size
        self._entries: dict[int, tuple[MediaFrame, T]] = {}

    def __call__(self, frame: MediaFrame) -> T:
        entries = self._entries
        entry = entries.get(id(frame))
        if entry is not None and entry[0] is frame:
            return entry[1]
        value = self._build(frame)
        self.put(frame, value)
        return value

    def put(self, frame: MediaFrame, value: T) -> None:
        """Set what ``frame`` gives, when its producer already has it (a tag as it came in)."""
        entries = self._entries
        entries[id(frame)] = (frame, value)
        if len(entries) > self._size:
            del entries[next(iter(entries))]

    def __len__(self) -> int:
        return len(self._entries)


class Publisher:
    """The one source of a hub's frames. ``publish`` is synchronous and never blocks."""

    __slots__ = ("hub", "on_evicted", "_active")

    def __init__(self, hub: StreamHub, on_evicted: Callable[[], object] | None) -> None:
        self.hub = hub
        self.on_evicted = on_evicted  # replaced by another publisher, or the hub was removed
        self._active = True

    @property
    def active(self) -> bool:
        return self._active

    def publish(self, frame: MediaFrame) -> bool:
        """Hand one frame to the hub; False (and ignored) once this publisher is no longer active."""
        if not self._active:
            return False
        self.hub._publish(frame)
        return True

    def close(self) -> None:
        """The publisher left: every subscription ends once drained; sinks are told."""
        if self._active:
            self._active = False
            self.hub._publisher_gone(self)

    def _evict(self) -> None:
        self._active = False
        if self.on_evicted is not None:
            _call(self.on_evicted)


def _call(fn: Callable[..., object], *args: object) -> None:
    """Run an owner's callback; its failure is logged and never reaches the publisher."""
    try:
        fn(*args)
    except Exception:
        log.exception("hub callback %r failed", fn)


class StreamHub:
    """One live stream: a publisher, the cached configurations and GOPs, subscribers and sinks."""

    def __init__(
        self,
        key: HubKey,
        config: HubConfig | None = None,
        *,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        on_last_player_left: Callable[[StreamHub, float], object] | None = None,
        on_publisher_gone: Callable[[StreamHub], object] | None = None,
    ) -> None:
        self.key = key
        self.path = str(key)
        self.config = config or HubConfig()
        self.on_last_player_left = on_last_player_left  # (hub, clock time) when the last subscriber closes
        self.on_publisher_gone = on_publisher_gone
        self.idle_after_s: float | None = None  # overrides the registry's idle time for this stream
        self.closed = False
        self.hls: HlsSink | None = None
        self.hls_config: HlsConfig | None = None  # what ``enable_hls()`` packages with
        self._clock = clock
        self._wall = wall_clock
        # the per-frame state, shared with the C fast path (``accel.HubCore``; media/hubcore.py)
        core = self._core = accel.HubCore(clock)
        core.gop_max_bytes, core.gop_max_ms = self.config.gop_max_bytes, self.config.gop_max_ms
        core.cache_max_bytes = self.config.cache_max_bytes
        self._subs: dict[Subscription, None] = {}
        self._subs_t: tuple[Subscription, ...] = ()
        # subscriptions fed directly by C (``accel.Fanout``, when built), and the others
        self._fan = core.fan = accel.Fanout() if accel.Fanout is not None else None
        self._slow_t: tuple[Subscription, ...] = ()
        self._sinks_t: tuple[_Sink, ...] = ()
        self._video_cfg: MediaFrame | None = None
        self._audio_cfg: MediaFrame | None = None
        self._gops: deque[Gop] = deque()
        core.gops = self._gops
        core.preroll_ms = self.config.preroll_ms
        self.idle_since: float | None = clock()  # clock time since when nobody watches; None while someone does
        self._reset_stats()

    def _reset_stats(self) -> None:
        core = self._core
        core.frames_in = core.bytes_in = core.rate_bytes = 0
        core.last_frame = core.rate_start = core.bitrate = 0.0
        core.video_codec = core.audio_codec = None
        self._started_mono: float | None = None
        self._started_wall: float | None = None
        self._codec_strings: dict[bool, str] = {}
        self._size: tuple[int, int] | None = None
        self._audio_format: tuple[int, int] | None = None

    # --- publisher ------------------------------------------------------------------

    @property
    def publisher(self) -> Publisher | None:
        return self._core.publisher  # type: ignore[no-any-return]

    @property
    def publishing(self) -> bool:
        return self._core.publisher is not None

    def attach_publisher(
        self, *, replace: bool | None = None, on_evicted: Callable[[], object] | None = None
    ) -> Publisher:
        """Become the stream's source. With another publisher active, replace it (``replace``,
        default ``config.replace_publisher``: its ``on_evicted`` runs) or raise ``PublisherConflict``."""
        if self.closed:
            raise HubClosed(self.path)
        old = self._core.publisher
        if old is not None:
            if not (self.config.replace_publisher if replace is None else replace):
                raise PublisherConflict(self.path)
            old._evict()
            self._fan_clear()
            for sub in self._subs_t:  # the new source starts on its own key frame
                if not sub._ended:
                    sub._waiting = True
        publisher = self._core.publisher = Publisher(self, on_evicted)
        self._set_configs(None, None)
        self._core.has_video = False
        self._clear_cache()
        self._reset_stats()
        self._started_mono = self._core.rate_start = self._clock()
        self._started_wall = self._wall()
        self._slow_changed()
        return publisher

    def _publish(self, frame: MediaFrame) -> None:
        """One frame from the publisher. (The C fast path, ``accel.HubCore``, does the same for an
        ordinary frame while ``core.fast``: keep the two in step.)"""
        core = self._core
        core.count(len(frame.data))
        codec = frame.codec
        is_config = frame.is_config
        if is_config:
            if codec in _VIDEO_CODECS:
                if _same_config(self._video_cfg, frame):
                    return
                self._set_configs(frame, self._audio_cfg)
                core.has_video = True
            else:
                if _same_config(self._audio_cfg, frame):
                    return
                self._set_configs(self._video_cfg, frame)
            self._describe(frame)
            if self._gops:
                self._cache(frame)
            sync = False
        elif codec in _VIDEO_CODECS:
            core.has_video = True
            sync = frame.keyframe
            if sync:
                self._new_gop(frame)
            elif self._gops:
                self._cache(frame)
            if core.video_codec is not codec:
                core.video_codec = codec
        else:
            sync = not core.has_video  # in an audio-only stream every frame is a starting point
            if self._gops:
                self._cache(frame)
            if core.audio_codec is not codec:
                core.audio_codec = codec
                if frame.sample_rate and codec is not Codec.AAC:
                    self._audio_format = (frame.sample_rate, frame.channels)
        for sink in self._sinks_t:
            try:
                sink.feed(frame)
            except Exception:
                sink.errors += 1
                if sink.errors == 1:
                    log.exception("stream %s: a sink failed (further failures are only counted)", self.path)
        fan = self._fan
        if fan is None:
            for sub in self._subs_t:
                sub._offer(frame, sync)
            return
        slow = self._slow_t if fan.version == core.fan_version else self._slow_subs(fan)
        if fan and not is_config:  # members first, in one C call; those that refuse queue it
            refused = fan.send(frame)
            if refused is not None:
                for sub in refused:
                    sub._offer(frame, sync, False)
            for sub in slow:
                sub._offer(frame, sync)
            return
        for sub in self._subs_t:
            sub._offer(frame, sync)

    def _slow_subs(self, fan: Any) -> tuple[Subscription, ...]:
        """The subscriptions not in ``fan`` (recomputed when its membership changed); the C fast
        path runs while there are none and no sinks."""
        core = self._core
        if fan.version != core.fan_version:
            self._slow_t = tuple(s for s in self._subs_t if s not in fan)
            core.fan_version = fan.version
            core.fast = not self._slow_t and not self._sinks_t
        return self._slow_t

    def _set_configs(self, video: MediaFrame | None, audio: MediaFrame | None) -> None:
        self._video_cfg, self._audio_cfg = video, audio
        self._core.configs = tuple(c for c in (video, audio) if c is not None)

    def _slow_changed(self) -> None:
        """Subscriptions or sinks changed: the next frame takes the Python path, which recomputes."""
        self._core.fan_version = -1
        self._core.fast = False

    def _fan_join(self, sub: Subscription) -> None:
        if self._fan is not None and not sub._ended and sub in self._subs:
            self._fan.add(sub, sub._fast, sub.max_queue_bytes)

    def _fan_leave(self, sub: Subscription) -> None:
        if self._fan is not None:
            self._fan.discard(sub)

    def _fan_clear(self) -> None:
        if self._fan is not None:
            self._fan.clear()

    def _describe(self, frame: MediaFrame) -> None:
        """Codec, picture size and audio format from a configuration record, for ``stats``."""
        try:
            if frame.codec is Codec.H264 or frame.codec is Codec.H265:
                v = parse_avc_config(frame.data) if frame.codec is Codec.H264 else parse_hevc_config(frame.data)
                self._core.video_codec, self._size = frame.codec, (v.width, v.height)
                self._codec_strings[True] = v.codec_string
            elif frame.codec is Codec.AAC:
                a = parse_aac_config(frame.data)
                self._core.audio_codec, self._audio_format = frame.codec, (a.sample_rate, a.channels)
                self._codec_strings[False] = a.codec_string
        except Exception as e:  # a malformed record from the publisher: players will find out
            log.debug("stream %s: unparsable %s configuration: %s", self.path, frame.codec.value, e)

    def _publisher_gone(self, publisher: Publisher) -> None:
        if publisher is not self._core.publisher:
            return
        self._core.publisher = None
        self._end_outputs(sinks=True)
        if self.on_publisher_gone is not None:
            _call(self.on_publisher_gone, self)

    def _end_outputs(self, sinks: bool) -> None:
        self._clear_cache()
        for sink in self._sinks_t if sinks else ():
            if sink.on_end is not None:
                _call(sink.on_end)
        subs = self._subs_t
        self._fan_clear()
        self._subs.clear()
        self._subs_t = ()
        self._slow_changed()
        for sub in subs:
            sub._end()
        if subs:
            self.idle_since = self._clock()

    def close(self) -> None:
        """Remove the stream: evict the publisher, end subscriptions and sinks, refuse newcomers."""
        if self.closed:
            return
        self.closed = True
        publisher, self._core.publisher = self._core.publisher, None
        if publisher is not None:
            publisher._evict()
        self._end_outputs(sinks=publisher is not None)
        self._sinks_t = ()

    # --- cache ----------------------------------------------------------------------

    def _clear_cache(self) -> None:
        self._gops.clear()
        self._core.cache_bytes = 0
        self._core.gop = None

    def _new_gop(self, key: MediaFrame) -> None:
        gops = self._gops
        core = self._core
        gop = accel.Gop(core.configs, key.dts, [key], len(key.data))
        gops.append(gop)
        core.gop = gop
        core.cache_bytes += len(key.data)
        keep_from = key.dts - core.preroll_ms
        while len(gops) > 1 and (gops[1].start_dts <= keep_from or core.cache_bytes > self.config.cache_max_bytes):
            core.cache_bytes -= gops.popleft().nbytes
        if len(key.data) > self.config.gop_max_bytes:
            self._clear_cache()

    def _cache(self, frame: MediaFrame) -> None:
        """Append to the current GOP (the C fast path does this itself while it stays within the bounds)."""
        gops = self._gops
        gop = gops[-1]
        core = self._core
        size = len(frame.data)
        gop.frames.append(frame)
        gop.nbytes += size
        core.cache_bytes += size
        config = self.config
        if gop.nbytes > config.gop_max_bytes or (
            not frame.is_config and frame.dts - gop.start_dts > config.gop_max_ms
        ):
            log.debug("stream %s: GOP over its bounds, not cached until the next key frame", self.path)
            self._clear_cache()
            return
        if core.cache_bytes > config.cache_max_bytes:
            while len(gops) > 1 and core.cache_bytes > config.cache_max_bytes:
                core.cache_bytes -= gops.popleft().nbytes

    def _frames_from(self, index: int) -> list[MediaFrame]:
        gops = self._gops
        out = list(gops[index].configs)
        for i in range(index, len(gops)):
            out.extend(gops[i].frames)
        return out

    def gop(self) -> list[MediaFrame]:
        """The configurations and the current GOP (key frame first); empty when none is cached."""
        return self._frames_from(len(self._gops) - 1) if self._gops else []

    @property
    def preroll_ms(self) -> int:
        """History kept beyond the current GOP (``keep_history``)."""
        return self._core.preroll_ms  # type: ignore[no-any-return]

    def keep_history(self, ms: int) -> None:
        """From now on keep at least ``ms`` of history before the live edge (whole GOPs, within
        ``config.cache_max_bytes``), for players that start that far back (``CacheDuration``)."""
        if ms > self._core.preroll_ms:
            self._core.preroll_ms = ms

    def preroll(self, seconds: float) -> list[MediaFrame]:
        """At least the last ``seconds`` (as far as the cache reaches), configurations first,
        then frames from the latest key frame at or before the live edge minus ``seconds``.
        Keep ``preroll_ms`` (``keep_history``) for more than one GOP."""
        gops = self._gops
        if not gops:
            return []
        last = gops[-1].frames[-1].dts
        target = last - seconds * 1000
        index = len(gops) - 1
        while index > 0 and gops[index].start_dts > target:
            index -= 1
        return self._frames_from(index)

    # --- subscribers and sinks ------------------------------------------------------

    def subscribe(
        self, max_queue_bytes: int | None = None, *, max_queue_ms: int | None = None, preroll_s: float = 0.0
    ) -> Subscription:
        """A new consumer, starting with the configurations and the current GOP (or
        ``preroll_s`` of history: the latest key frame at least that far behind the live edge,
        as far as the cache reaches; the hub keeps that much for later players), else at the
        next key frame."""
        if self.closed:
            raise HubClosed(self.path)
        if preroll_s > 0:
            self.keep_history(round(preroll_s * 1000))
        sub = Subscription(self, self.config.queue_max_bytes if max_queue_bytes is None else max_queue_bytes, max_queue_ms)
        start = self.preroll(preroll_s) if preroll_s > 0 else self.gop()
        if start:
            sub._prime(start)
        self._subs[sub] = None
        self._subs_t = tuple(self._subs)
        self._slow_changed()
        self.idle_since = None
        return sub

    def _unsubscribe(self, sub: Subscription, left: bool) -> None:
        if sub not in self._subs:
            return
        del self._subs[sub]
        self._subs_t = tuple(self._subs)
        self._fan_leave(sub)
        self._slow_changed()
        if not self._subs:
            now = self.idle_since = self._clock()
            if left and self.on_last_player_left is not None:
                _call(self.on_last_player_left, self, now)

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def add_sink(
        self, feed: Callable[[MediaFrame], object], on_end: Callable[[], object] | None = None
    ) -> Callable[[], None]:
        """Feed ``feed`` every frame synchronously, starting with the configurations and the
        cached GOP; ``on_end`` runs when a publisher leaves. Returns the function that detaches it.
        Sinks are not players: they do not keep a stream from being idle."""
        if self.closed:
            raise HubClosed(self.path)
        sink = _Sink(feed, on_end)
        start = self.gop() or list(self._core.configs)
        for frame in start:
            try:
                feed(frame)
            except Exception:
                sink.errors += 1
                if sink.errors == 1:
                    log.exception("stream %s: a sink failed while starting", self.path)
        self._sinks_t = (*self._sinks_t, sink)
        self._slow_changed()

        def remove() -> None:
            self._sinks_t = tuple(s for s in self._sinks_t if s is not sink)
            self._slow_changed()

        return remove

    def enable_hls(self, config: HlsConfig | None = None) -> HlsSink:
        """The stream's shared LL-HLS packager, attached on first call (``config``, else the
        registry's ``hls_config``); it starts from the cached GOP, so a stream already live has
        its first segment at once."""
        if self.hls is None:
            self.hls = HlsSink(config or self.hls_config, wall_clock=self._wall)
            self.hls.detach = self.add_sink(self.hls, on_end=self.hls.end)
        return self.hls

    # --- idle and stats -------------------------------------------------------------

    def touch(self, now: float | None = None) -> None:
        """Player activity that holds no subscription (HLS requests): the stream is not idle."""
        if not self._subs:
            self.idle_since = self._clock() if now is None else now

    def idle_for(self, now: float | None = None) -> float:
        """Seconds since the last player left (or the hub was created or touched); 0 while watched."""
        if self.idle_since is None:
            return 0.0
        return max(0.0, (self._clock() if now is None else now) - self.idle_since)

    def stats(self) -> HubStats:
        core = self._core
        wall = None
        if core.frames_in and self._started_mono is not None and self._started_wall is not None:
            wall = self._started_wall + (core.last_frame - self._started_mono)
        size = self._size
        fmt = self._audio_format
        strings = tuple(self._codec_strings[v] for v in (True, False) if v in self._codec_strings)
        return HubStats(
            key=self.path,
            publishing=self.publishing,
            started_at=self._started_wall,
            last_frame_at=wall,
            frames_in=core.frames_in,
            bytes_in=core.bytes_in,
            bitrate_bps=core.bitrate,
            subscribers=len(self._subs),
            sinks=len(self._sinks_t),
            dropped_frames=sum(s.dropped_frames for s in self._subs_t),
            video_codec=core.video_codec,
            audio_codec=core.audio_codec,
            codecs=strings,
            width=size[0] if size else None,
            height=size[1] if size else None,
            sample_rate=fmt[0] if fmt else None,
            channels=fmt[1] if fmt else None,
            gop_frames=len(self._gops[-1].frames) if self._gops else 0,
            cache_bytes=core.cache_bytes,
        )


class HlsSink:
    """The stream's LL-HLS packager, fed by the hub and shared by every HLS player.

    A publisher leaving finishes the playlist (``#EXT-X-ENDLIST``); the next publisher
    starts a fresh packager. ``await changed()`` wakes on every playlist change (for
    blocking playlist reload).

    G.711 audio cannot go into fMP4 for browsers: it is transcoded to AAC-LC on its way
    to the packager (``transcode.G711ToAac``, created at the first G.711 frame, so AAC
    streams pay nothing). G.711 carries no configuration record, so a packager would
    start its first segment on the first key frame without audio; at a packager's start
    the video is therefore held back until audio shows up (its AAC config comes with the
    first G.711 frame) or until the video has advanced half a part target (stream time).
    """

    _HOLD_MAX_FRAMES: Final = 256

    def __init__(self, config: HlsConfig | None = None, *, wall_clock: Clock = time.time) -> None:
        self.config = config or HlsConfig()
        self.packager = HlsPackager(self.config)
        self.detach: Callable[[], None] | None = None
        self.transcoder: G711ToAac | None = None
        self._wall = wall_clock
        self._waiters: list[asyncio.Future[None]] = []
        self._starting = True  # no audio seen yet by this packager: hold its first video
        self._held: list[tuple[MediaFrame, float]] = []

    def __call__(self, frame: MediaFrame) -> None:
        if self.packager.ended:
            self._renew()
        now = self._wall()
        if frame.codec is Codec.PCMA or frame.codec is Codec.PCMU:
            if self.transcoder is None:
                from .transcode import G711ToAac  # PyAV is loaded only for streams that need it

                self.transcoder = G711ToAac()
            changed = False
            for aac in self.transcoder.feed(frame):
                changed = self._feed(aac, now) or changed
        else:
            changed = self._feed(frame, now)
        if changed:
            self._notify()

    def end(self) -> None:
        if self.transcoder is not None and not self.packager.ended:
            for aac in self.transcoder.flush():
                self._feed(aac, self._wall())
        self._release()
        self.packager.finish()
        self._notify()

    def _renew(self) -> None:
        self.packager = HlsPackager(self.config)
        self.transcoder = None  # a new publisher: a new timeline, and the packager needs the AAC config again
        self._starting = True
        self._held = []

    def _feed(self, frame: MediaFrame, now: float) -> bool:
        if self._starting:
            if frame.is_audio:  # its configuration goes in before the held key frame starts the segment
                self._starting = False
                if frame.is_config:
                    changed = self.packager.feed(frame, now)
                    return self._release() or changed
                changed = self._release()
                return self.packager.feed(frame, now) or changed
            if frame.is_video and not frame.is_config and (self._held or frame.keyframe):
                self._held.append((frame, now))
                first = self._held[0][0]
                if frame.dts - first.dts >= self.config.part_target_ms / 2 or len(self._held) >= self._HOLD_MAX_FRAMES:
                    self._starting = False
                    return self._release()
                return False
        return self.packager.feed(frame, now)

    def _release(self) -> bool:
        held, self._held = self._held, []
        changed = False
        for frame, at in held:
            changed = self.packager.feed(frame, at) or changed
        return changed

    async def changed(self) -> None:
        """Return at the next playlist change (callers loop until ``ready_for`` holds)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)


@dataclass(slots=True)
class _Entry:
    hub: StreamHub
    idle_notified: float | None = field(default=None)


class HubRegistry:
    """The hubs of one media node, by path (``str(key)``: a ``StreamKey`` and its string
    are the same stream). ``check_idle`` (or the ``run`` task) calls ``on_idle(hub)`` once
    each time a hub has had no players for ``idle_after_s``; ``on_publisher_gone(hub)``
    runs when a publisher leaves. Neither removes the hub: the owner decides (``remove``)."""

    def __init__(
        self,
        config: HubConfig | None = None,
        *,
        idle_after_s: float = 30.0,
        on_idle: Callable[[StreamHub], object] | None = None,
        on_publisher_gone: Callable[[StreamHub], object] | None = None,
        on_last_player_left: Callable[[StreamHub, float], object] | None = None,
        hls: HlsConfig | None = None,
        hls_eager: bool = False,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        self.config = config or HubConfig()
        self.idle_after_s = idle_after_s
        self.on_idle = on_idle
        self.on_publisher_gone = on_publisher_gone
        self.on_last_player_left = on_last_player_left
        self.hls = hls or HlsConfig()  # the LL-HLS packaging of every hub, once enabled
        # Package every hub from its first frame, or only once HLS is asked for (a play URL
        # issued, a playlist requested: ``enable_hls``). Packaging costs as much CPU per frame
        # as the rest of the hub, so streams nobody watches over HLS do not pay it by default.
        self.hls_eager = hls_eager
        self._clock = clock
        self._wall = wall_clock
        self._entries: dict[str, _Entry] = {}

    def get(self, key: HubKey) -> StreamHub | None:
        entry = self._entries.get(str(key))
        return entry.hub if entry is not None else None

    def get_or_create(self, key: HubKey) -> StreamHub:
        path = str(key)
        entry = self._entries.get(path)
        if entry is None:
            hub = StreamHub(
                key, self.config, clock=self._clock, wall_clock=self._wall,
                on_last_player_left=self._last_player_left, on_publisher_gone=self._publisher_gone,
            )
            hub.hls_config = self.hls
            if self.hls_eager:
                hub.enable_hls()
            entry = self._entries[path] = _Entry(hub)
        return entry.hub

    def publish(
        self, key: HubKey, *, replace: bool | None = None, on_evicted: Callable[[], object] | None = None
    ) -> Publisher:
        """Attach a publisher to the stream's hub (created if needed); see ``StreamHub.attach_publisher``."""
        return self.get_or_create(key).attach_publisher(replace=replace, on_evicted=on_evicted)

    def remove(self, key: HubKey) -> StreamHub | None:
        """Forget a stream and close its hub (publisher evicted, subscriptions ended)."""
        entry = self._entries.pop(str(key), None)
        if entry is None:
            return None
        entry.hub.close()
        return entry.hub

    def __contains__(self, key: object) -> bool:
        return isinstance(key, (StreamKey, str)) and str(key) in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[StreamHub]:
        return iter([e.hub for e in self._entries.values()])

    def check_idle(self, now: float | None = None) -> list[StreamHub]:
        """Hubs that just became idle (each is reported once per idle period), after ``on_idle``."""
        now = self._clock() if now is None else now
        idle: list[StreamHub] = []
        for entry in list(self._entries.values()):
            hub = entry.hub
            since = hub.idle_since
            limit = self.idle_after_s if hub.idle_after_s is None else hub.idle_after_s
            if since is None or entry.idle_notified == since or now - since < limit:
                continue
            entry.idle_notified = since
            idle.append(hub)
            if self.on_idle is not None:
                _call(self.on_idle, hub)
        return idle

    async def run(self, interval_s: float = 1.0) -> None:
        """Check for idle hubs every ``interval_s`` until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            self.check_idle()

    def close(self) -> None:
        for path in list(self._entries):
            self.remove(path)

    def _last_player_left(self, hub: StreamHub, when: float) -> None:
        if self.on_last_player_left is not None:
            self.on_last_player_left(hub, when)

    def _publisher_gone(self, hub: StreamHub) -> None:
        if self.on_publisher_gone is not None:
            self.on_publisher_gone(hub)
