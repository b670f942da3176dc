"""Low-Latency HLS packaging as a sans-IO state machine, plus playlist renderers.

``HlsPackager`` takes a stream's ``MediaFrame``s and cuts them into fMP4 parts (about a
third of a second, on any frame) and segments (on key frames), keeping a sliding window
in memory. A stream's first segment is cut short, at the first frame past ``start_segment``
(key frame or not), and then every part is a segment until the next key frame: players that
read whole segments (FFmpeg, VLC; hls.js for its first playlist, and it starts no segment on a
part that is not independent) need not wait for a whole GOP. Segments are otherwise as many
whole GOPs as fit in the target duration (rounded); a longer GOP is cut at a part boundary (a
segment that is not independent), so ``EXT-X-TARGETDURATION`` never changes.
It renders the media and multivariant playlists and answers lookups and blocking-reload
questions; the asyncio server waits on its ``version`` changing.
Resource names are ``init.mp4`` (``init<g>.mp4`` after a codec change), ``seg<msn>.m4s``
and ``part<id>.m4s``, where a part id counts parts across segments so the preload hint
names a part that will exist whichever segment it lands in.
"""

from __future__ import annotations

import math
import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from .codecs import CodecError
from .fmp4 import VIDEO_TIMESCALE, Sample, Track, TrackFragment, fragment, init_segment
from .frames import Codec, MediaFrame

__all__ = [
    "HlsConfig",
    "HlsPackager",
    "PartInfo",
    "Segment",
    "Variant",
    "VodSegment",
    "format_program_date_time",
    "render_multivariant",
    "render_vod_playlist",
]

UriBuilder = Callable[[str], str]
_NAME: Final = re.compile(r"^(?:init(\d*)\.mp4|seg(\d+)\.m4s|part(\d+)\.m4s)$")
_MS_PER_VIDEO_TICK: Final = VIDEO_TIMESCALE // 1000
_JUMP_BACK_MS: Final = 5_000  # a timestamp this far behind, or
_JUMP_AHEAD_MS: Final = 10_000  # this far ahead, is a reset: the output timeline continues


def _same(name: str) -> str:
    return name


def format_program_date_time(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _seconds(ms: float) -> str:
    return f"{ms / 1000:.3f}"


@dataclass(frozen=True, slots=True)
class HlsConfig:
    """Cutting and window parameters. Durations in seconds."""

    segment_target: float = 2.0
    part_target: float = 1 / 3
    window: int = 6  # complete segments kept and listed
    max_segment: float = 12.0  # cut here even without a key frame, so memory stays bounded
    # A stream's first segment ends at the first frame this far in, key frame or not (None: whole GOPs
    # from the start). Every player's first playlist needs one segment; FFmpeg probing half a second
    # (-analyzeduration 0.5 s) needs ≈ 0.6 s of frames in it, and hls.js, which starts playing at once,
    # stalls if it starts with much less than this buffered (0.3 s: it does).
    start_segment: float | None = 0.7

    @property
    def part_target_ms(self) -> int:
        return math.ceil(self.part_target * 1000 - 1e-6)


@dataclass(frozen=True, slots=True)
class PartInfo:
    """Where a part lies in its segment's bytes."""

    part_id: int
    offset: int
    size: int
    duration_ms: float
    independent: bool


@dataclass(frozen=True, slots=True)
class Segment:
    """A finished segment: its bytes are its parts, back to back."""

    msn: int
    generation: int  # bumps on a codec change: a new init segment and a discontinuity
    start_ms: float  # on the packager's output timeline
    duration_ms: float
    program_date_time: float
    data: bytes
    parts: tuple[PartInfo, ...]

    @property
    def independent(self) -> bool:
        """Starts with a key frame (false only for a segment cut by ``max_segment``)."""
        return self.parts[0].independent

    def part_bytes(self, index: int) -> bytes:
        p = self.parts[index]
        return self.data[p.offset : p.offset + p.size]


@dataclass(slots=True)
class _Open:
    """The segment being built."""

    msn: int
    generation: int
    start_ms: float
    program_date_time: float
    parts: list[tuple[PartInfo, bytes]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Held:
    """The last video frame: its duration is known only when the next one arrives."""

    t: float
    composition_ms: int
    data: bytes
    keyframe: bool


class HlsPackager:
    """One live stream's LL-HLS state: feed frames in, read playlists and bytes out.

    ``feed`` raises ``CodecError`` for a malformed codec configuration; media frames it
    cannot place (no configuration yet, waiting for the first key frame, G.711) are
    dropped. ``version`` grows whenever the playlist changes.
    """

    def __init__(self, config: HlsConfig | None = None) -> None:
        self.config = config or HlsConfig()
        self.version = 0
        self.ended = False
        self._video: Track | None = None
        self._audio: Track | None = None
        self._next_video: Track | None = None
        self._next_audio: Track | None = None
        self._tracks_changed = False
        self._generation = -1
        self._inits: dict[int, bytes] = {}
        self._segments: deque[Segment] = deque()
        self._open: _Open | None = None
        self._next_msn = 0
        self._next_part_id = 0
        self._max_segment_ms = 0.0
        # output timeline
        self._offset = 0.0
        self._last_t: float | None = None
        self._clock: tuple[float, float] | None = None  # (wall clock, t) at the first frame
        # the part being built
        self._part_start = 0.0
        self._held: _Held | None = None
        self._video_samples: list[Sample] = []
        self._video_base = 0
        self._audio_samples: list[Sample] = []
        self._audio_base = 0
        self._audio_next: int | None = None  # expected decode time of the next AAC frame
        self._last_step = 40.0  # the last video frame's duration, ms
        self._closed = 0  # segments closed since the stream started (the first one is cut at ``start_segment``)
        self._start_phase = False  # from that cut to the next key frame: one part per segment
        self._stream_start: float | None = None
        self._last_key_t: float | None = None
        self._gop_ms: float | None = None  # the last key-frame interval seen

    # --- input ----------------------------------------------------------------------

    def feed(self, frame: MediaFrame, now: float | None = None) -> bool:
        """Take one frame; True when the playlist changed (``version`` grew)."""
        before = self.version
        if self.ended:
            return False
        if frame.is_config:
            self._on_config(frame)
        elif frame.is_video:
            self._on_video(frame, time.time() if now is None else now)
        elif frame.codec is Codec.AAC:
            self._on_audio(frame, time.time() if now is None else now)
        return self.version != before

    def finish(self) -> None:
        """The publisher left: close what is open; the playlist gets ``#EXT-X-ENDLIST``."""
        if self.ended:
            return
        if self._open is not None:
            if self._held is not None:
                end = self._held.t + self._last_step
                self._make_room(end)
                self._take_held(end)
                self._close_part(end)
                self._held = None
            else:
                self._close_part(self._audio_end_ms())
            self._close_segment()
        self.ended = True
        self.version += 1

    def _on_config(self, frame: MediaFrame) -> None:
        if frame.codec not in (Codec.H264, Codec.H265, Codec.AAC):
            return
        current = self._next_video if frame.is_video else self._next_audio
        if current is not None and current.config == frame.data and current.codec is frame.codec:
            return
        track = Track.from_config(frame, 1 if frame.is_video else 2)
        if frame.is_video:
            self._next_video = track
        else:
            self._next_audio = track
        if self._generation >= 0:
            self._tracks_changed = True

    def _start_generation(self, t: float) -> None:
        self._video, self._audio = self._next_video, self._next_audio
        tracks = [x for x in (self._video, self._audio) if x is not None]
        self._generation += 1
        self._inits[self._generation] = init_segment(tracks)
        self._tracks_changed = False
        self._audio_next = None
        self._open_segment(t)

    def _time(self, dts: int) -> float:
        """Map a stream timestamp onto the output timeline, which never jumps."""
        t = dts + self._offset
        if self._last_t is None:
            if t < 0:
                self._offset -= t
                t = 0
        elif t < self._last_t - _JUMP_BACK_MS or t > self._last_t + _JUMP_AHEAD_MS:
            self._offset += self._last_t - t
            t = self._last_t
        self._last_t = t if self._last_t is None else max(self._last_t, t)
        return t

    def _on_video(self, frame: MediaFrame, now: float) -> None:
        if self._next_video is None or frame.codec is not self._next_video.codec:
            return
        if self._open is None or self._video is None:
            # (re)start on a key frame: first frame, or video appearing in an audio-only stream
            if not frame.keyframe:
                return
            t = self._time(frame.dts)
            if self._open is not None:
                self._close_part(self._audio_end_ms())
                self._close_segment()
            if self._clock is None:
                self._clock = (now, t)
            self._start_generation(t)
            self._held = _Held(t, frame.pts - frame.dts, frame.data, True)
            self._last_key_t = t
            return
        if frame.codec is not self._video.codec and not (frame.keyframe and self._tracks_changed):
            return  # frames of the next configuration before its first key frame
        t = self._time(frame.dts)
        held = self._held
        assert held is not None
        if t <= held.t:
            t = held.t + 1
            self._last_t = t if self._last_t is None else max(self._last_t, t)
        step = self._last_step = t - held.t
        self._make_room(t)
        self._take_held(t)
        assert self._open is not None
        segment_ms = t - self._open.start_ms
        part_full = t - self._part_start + step > self.config.part_target_ms
        gop = None if self._last_key_t is None else t - self._last_key_t
        if frame.keyframe:
            self._last_key_t, self._gop_ms = t, gop
        # after the start cut and until the next key frame, every part is a segment of its own: a
        # player that starts no segment on a part that is not independent (hls.js) gets each as
        # soon as it is complete
        starting_cut = part_full and self._start_phase
        if (
            frame.keyframe and (
                self._tracks_changed
                or (segment_ms >= self.config.segment_target * 1000 - step / 2 if self._gop_ms is None
                    else segment_ms + self._gop_ms + step > self._limit_ms)  # another GOP would not fit
                or not self._open_independent()  # back on key-frame boundaries after a short cut
            )
        ) or segment_ms >= self.config.max_segment * 1000 or self._start_cut(t) or starting_cut \
                or (part_full and segment_ms + step > self._limit_ms):  # a GOP longer than the target: cut anyway
            self._close_part(t)
            self._close_segment()
            if self._tracks_changed and frame.keyframe:
                self._start_generation(t)
            else:
                self._open_segment(t)
        elif part_full:
            self._close_part(t)
        if frame.keyframe:
            self._start_phase = False
        self._held = _Held(t, frame.pts - frame.dts, frame.data, frame.keyframe)

    @property
    def _limit_ms(self) -> float:
        """The longest segment whose duration still rounds to at most the target duration."""
        return (self.target_duration() + 0.5) * 1000 - 1

    def _make_room(self, end: float) -> None:
        """Before the held frame takes its place up to ``end``: if that would make the part longer
        than PART-TARGET or the segment round above TARGETDURATION (a late or long frame), end
        them before the held frame, so the playlist's promises hold."""
        held, seg = self._held, self._open
        assert held is not None and seg is not None
        late_segment = end - seg.start_ms > self._limit_ms and (seg.parts or self._video_samples)
        if self._video_samples and (late_segment or end - self._part_start > self.config.part_target_ms):
            self._close_part(held.t)
        if late_segment and seg.parts:
            self._close_segment()
            self._open_segment(held.t)

    def _start_cut(self, t: float) -> bool:
        """Whether the stream's first segment ends at this frame (``start_segment``); if so, the
        start phase (one part per segment until the next key frame) begins."""
        start = self.config.start_segment
        if start is None or self._closed or self._stream_start is None:
            return False
        if t - self._stream_start < start * 1000 - 1e-6:
            return False
        self._start_phase = True
        return True

    def _open_independent(self) -> bool:
        """The open segment starts with a key frame (its first part, or the frames not cut yet)."""
        assert self._open is not None
        if self._open.parts:
            return self._open.parts[0][0].independent
        return self._video_samples[0].keyframe if self._video_samples else True

    def _take_held(self, end: float) -> None:
        held = self._held
        assert held is not None and self._video is not None
        if not self._video_samples:
            self._video_base = round(held.t * _MS_PER_VIDEO_TICK)
        done = sum(s.duration for s in self._video_samples)
        duration = max(1, round(end * _MS_PER_VIDEO_TICK) - self._video_base - done)
        self._video_samples.append(Sample(held.data, duration, held.keyframe, held.composition_ms * _MS_PER_VIDEO_TICK))

    def _on_audio(self, frame: MediaFrame, now: float) -> None:
        if self._next_audio is None:
            return
        if self._open is None:
            if self._next_video is not None:
                return  # wait for the first video key frame
            t = self._time(frame.dts)
            self._clock = self._clock or (now, t)
            self._start_generation(t)
        elif self._audio is None:
            return  # audio appeared in a video-only stream: joins at the next key frame
        else:
            t = self._time(frame.dts)
            if self._video is None and self._next_video is None and self._tracks_changed:
                end = self._audio_end_ms()
                self._close_part(end)
                self._close_segment()
                self._start_generation(end)
        audio = self._audio
        assert audio is not None
        at = round(t * audio.timescale / 1000)
        expected = self._audio_next
        if expected is not None and abs(at - expected) <= audio.frame_length:
            at = expected
        elif expected is not None and at < expected:
            return  # overlaps what was sent: drop
        if not self._audio_samples:
            self._audio_base = at
        elif expected is not None and at > expected:  # a gap: stretch the last sample over it
            last = self._audio_samples[-1]
            self._audio_samples[-1] = Sample(last.data, last.duration + at - expected, True)
        self._audio_samples.append(Sample(frame.data, audio.frame_length, True))
        self._audio_next = at + audio.frame_length
        if self._video is None:
            assert self._open is not None
            end = self._audio_end_ms()
            frame_ms = audio.frame_length * 1000 / audio.timescale
            if end - self._part_start + frame_ms > self.config.part_target_ms:
                self._close_part(end)
                if end - self._open.start_ms >= self.config.segment_target * 1000 - frame_ms / 2:
                    self._close_segment()
                    self._open_segment(end)

    def _audio_end_ms(self) -> float:
        if self._audio is None or self._audio_next is None:
            return self._part_start
        return self._audio_next * 1000 / self._audio.timescale

    # --- cutting --------------------------------------------------------------------

    def _open_segment(self, t: float) -> None:
        assert self._clock is not None
        if self._stream_start is None:
            self._stream_start = t
        wall0, t0 = self._clock
        self._open = _Open(self._next_msn, self._generation, t, wall0 + (t - t0) / 1000)
        self._next_msn += 1
        self._part_start = t

    def _close_part(self, end: float) -> None:
        frags = []
        if self._video is not None and self._video_samples:
            frags.append(TrackFragment(self._video, self._video_base, self._video_samples))
        if self._audio is not None and self._audio_samples:
            frags.append(TrackFragment(self._audio, self._audio_base, self._audio_samples))
        if not frags or self._open is None:
            return
        independent = self._video_samples[0].keyframe if self._video_samples else True
        data = fragment(self._next_part_id + 1, frags)
        offset = sum(p.size for p, _ in self._open.parts)
        info = PartInfo(self._next_part_id, offset, len(data), max(end - self._part_start, 0.0), independent)
        self._open.parts.append((info, data))
        self._next_part_id += 1
        self._part_start = end
        self._video_samples = []
        self._audio_samples = []
        self.version += 1

    def _close_segment(self) -> None:
        seg = self._open
        self._open = None
        if seg is None or not seg.parts:
            if seg is not None:
                self._next_msn = seg.msn  # nothing in it: reuse its number
            return
        duration = sum(p.duration_ms for p, _ in seg.parts)
        self._closed += 1
        self._max_segment_ms = max(self._max_segment_ms, duration)
        self._segments.append(Segment(
            seg.msn, seg.generation, seg.start_ms, duration, seg.program_date_time,
            b"".join(d for _, d in seg.parts), tuple(p for p, _ in seg.parts),
        ))
        while len(self._segments) > self.config.window:
            self._segments.popleft()
        live = {s.generation for s in self._segments} | {self._generation}
        for g in [g for g in self._inits if g not in live]:
            del self._inits[g]
        self.version += 1

    # --- lookups --------------------------------------------------------------------

    @property
    def tracks(self) -> tuple[Track, ...]:
        """The tracks of the current init segment (empty before the first frame)."""
        return tuple(x for x in (self._video, self._audio) if x is not None)

    @property
    def codecs(self) -> str:
        return ",".join(t.codec_string for t in self.tracks)

    @property
    def segments(self) -> tuple[Segment, ...]:
        return tuple(self._segments)

    @property
    def last_msn(self) -> int:
        """The media sequence number of the segment being built (or the last one, once ended)."""
        return self._next_msn - 1

    def init(self, generation: int | None = None) -> bytes | None:
        return self._inits.get(self._generation if generation is None else generation)

    def segment(self, msn: int) -> bytes | None:
        for s in self._segments:
            if s.msn == msn:
                return s.data
        return None

    def part(self, msn: int, index: int) -> bytes | None:
        if self._open is not None and self._open.msn == msn:
            return self._open.parts[index][1] if 0 <= index < len(self._open.parts) else None
        for s in self._segments:
            if s.msn == msn:
                return s.part_bytes(index) if 0 <= index < len(s.parts) else None
        return None

    def part_by_id(self, part_id: int) -> bytes | None:
        if self._open is not None:
            for info, data in self._open.parts:
                if info.part_id == part_id:
                    return data
        for s in self._segments:
            if s.parts and s.parts[0].part_id <= part_id <= s.parts[-1].part_id:
                return s.part_bytes(part_id - s.parts[0].part_id)
        return None

    def resource(self, name: str) -> bytes | None:
        """The bytes of ``init*.mp4``, ``seg<msn>.m4s`` or ``part<id>.m4s``, if held."""
        m = _NAME.match(name)
        if m is None:
            return None
        init_gen, msn, part_id = m.groups()
        if msn is not None:
            return self.segment(int(msn))
        if part_id is not None:
            return self.part_by_id(int(part_id))
        return self.init(int(init_gen) if init_gen else 0)

    def pending(self, name: str) -> bool:
        """True if ``name`` is not held yet but soon will be: worth waiting for (preload hint)."""
        if self.ended:
            return False
        m = _NAME.match(name)
        if m is None:
            return False
        _, msn, part_id = m.groups()
        if msn is not None:
            return int(msn) == self._next_msn - 1 or (self._open is None and int(msn) == self._next_msn)
        if part_id is not None:
            return self._next_part_id <= int(part_id) <= self._next_part_id + 1
        return not self._inits

    def ready_for(self, msn: int, part: int | None = None) -> bool:
        """Whether a playlist request with ``_HLS_msn``/``_HLS_part`` can be answered now."""
        if self.ended:
            return True
        if self._segments and msn <= self._segments[-1].msn:
            return True
        if part is None or self._open is None or msn != self._open.msn:
            return False
        return part < len(self._open.parts)

    def blocking_request_valid(self, msn: int) -> bool:
        """RFC 8216bis 6.2.5.2: an ``_HLS_msn`` beyond the last segment plus two is a bad request."""
        return msn <= self._next_msn + 1

    # --- playlists ------------------------------------------------------------------

    def target_duration(self) -> int:
        """EXT-X-TARGETDURATION: the segment target rounded; segments are cut to stay within it, so
        it never changes (only a single frame longer than it could raise it)."""
        return max(1, round(self.config.segment_target), round(self._max_segment_ms / 1000 + 1e-9))

    def media_playlist(self, uri: UriBuilder = _same) -> str:
        """The live LL-HLS media playlist; ``uri`` turns a resource name into its URI."""
        target = self.target_duration()
        part_target = self.config.part_target_ms
        lines = [
            "#EXTM3U",
            "#EXT-X-VERSION:9",
            f"#EXT-X-TARGETDURATION:{target}",
            f"#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={_seconds(3 * part_target)}",
            f"#EXT-X-PART-INF:PART-TARGET={_seconds(part_target)}",
        ]
        open_seg = self._open
        first_msn = self._segments[0].msn if self._segments else (open_seg.msn if open_seg else 0)
        first_gen = self._segments[0].generation if self._segments else (open_seg.generation if open_seg else 0)
        lines.append(f"#EXT-X-MEDIA-SEQUENCE:{first_msn}")
        if first_gen > 0:
            lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{first_gen}")
        if all(s.independent for s in self._segments) and (open_seg is None or all(p.independent for p, _ in open_seg.parts[:1])):
            lines.append("#EXT-X-INDEPENDENT-SEGMENTS")
        # parts are listed for the last three target durations (RFC 8216bis 6.2.2)
        horizon = 3 * target * 1000.0
        span = sum(p.duration_ms for p, _ in open_seg.parts) if open_seg else 0.0
        with_parts: set[int] = set()
        for s in reversed(self._segments):
            if span >= horizon:
                break
            with_parts.add(s.msn)
            span += s.duration_ms
        generation: int | None = None

        def start(gen: int, pdt: float) -> None:
            nonlocal generation
            if generation is not None and gen != generation:
                lines.append("#EXT-X-DISCONTINUITY")
            if gen != generation:
                lines.append(f'#EXT-X-MAP:URI="{uri(self._init_name(gen))}"')
                lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{format_program_date_time(pdt)}")
            generation = gen

        def part_lines(infos: Sequence[PartInfo]) -> None:
            for p in infos:
                line = f'#EXT-X-PART:DURATION={_seconds(p.duration_ms)},URI="{uri(f"part{p.part_id}.m4s")}"'
                lines.append(line + (",INDEPENDENT=YES" if p.independent else ""))

        for s in self._segments:
            start(s.generation, s.program_date_time)
            if s.msn in with_parts:
                part_lines(s.parts)
            lines.append(f"#EXTINF:{_seconds(s.duration_ms)},")
            lines.append(uri(f"seg{s.msn}.m4s"))
        if self.ended:
            lines.append("#EXT-X-ENDLIST")
        elif open_seg is not None:
            start(open_seg.generation, open_seg.program_date_time)
            part_lines([p for p, _ in open_seg.parts])
            lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{uri(f"part{self._next_part_id}.m4s")}"')
        return "\n".join(lines) + "\n"

    @staticmethod
    def _init_name(generation: int) -> str:
        return "init.mp4" if generation == 0 else f"init{generation}.mp4"

    def bandwidth(self, default: int = 2_000_000) -> int:
        """Peak bits per second over the segments held, or ``default`` before the first one."""
        rates = [len(s.data) * 8000 / s.duration_ms for s in self._segments if s.duration_ms > 0]
        return round(max(rates)) if rates else default

    def variant(self, uri: str, default_bandwidth: int = 2_000_000) -> Variant:
        """This stream as an entry of a multivariant playlist (needs the tracks: after the first frame)."""
        if not self.tracks:
            raise CodecError("no tracks yet")
        v = self._video
        return Variant(
            uri, self.bandwidth(default_bandwidth), tuple(t.codec_string for t in self.tracks),
            (v.width, v.height) if v is not None else None,
        )


@dataclass(frozen=True, slots=True)
class Variant:
    """One ``#EXT-X-STREAM-INF`` entry."""

    uri: str
    bandwidth: int
    codecs: tuple[str, ...]
    resolution: tuple[int, int] | None = None


def render_multivariant(variants: Sequence[Variant]) -> str:
    lines = ["#EXTM3U", "#EXT-X-VERSION:9", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for v in variants:
        attrs = f'BANDWIDTH={v.bandwidth},CODECS="{",".join(v.codecs)}"'
        if v.resolution is not None:
            attrs += f",RESOLUTION={v.resolution[0]}x{v.resolution[1]}"
        lines += [f"#EXT-X-STREAM-INF:{attrs}", v.uri]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class VodSegment:
    """A finished segment of a recording, for a VOD playlist."""

    uri: str
    duration: float  # seconds
    map_uri: str  # its init segment
    program_date_time: float | None = None
    discontinuity: bool = False  # a gap before it (a changed map implies one)


def render_vod_playlist(segments: Sequence[VodSegment]) -> str:
    """A complete (``#EXT-X-ENDLIST``) playlist of recorded fMP4 segments."""
    target = max([1, *(round(s.duration + 1e-9) for s in segments)])
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:7",
        f"#EXT-X-TARGETDURATION:{target}",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-INDEPENDENT-SEGMENTS",
    ]
    current_map: str | None = None
    for s in segments:
        if current_map is not None and (s.discontinuity or s.map_uri != current_map):
            lines.append("#EXT-X-DISCONTINUITY")
        if s.map_uri != current_map:
            lines.append(f'#EXT-X-MAP:URI="{s.map_uri}"')
            current_map = s.map_uri
        if s.program_date_time is not None:
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{format_program_date_time(s.program_date_time)}")
        lines += [f"#EXTINF:{s.duration:.3f},", s.uri]
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"
