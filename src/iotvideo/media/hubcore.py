"""A stream hub's per-frame state (counters, the GOP being cached, what the fast path may assume) and its cached GOPs.

``StreamHub`` keeps these fields here rather than on itself so that the C accelerator's twin
(``accel.HubCore``, media/native/lane.c) can take a publisher's frames without running Python
(not configurations; key frames start a new ``Gop``): it updates the same fields, appends to the
same GOPs and feeds the hub's ``Fanout``. This Python twin has the same fields and ``count``; the hub alone decides what the
fields mean (see ``StreamHub._publish``), and sets ``fast`` only while a frame may skip it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Gop:
    """One cached GOP: its key frame first (the C twin, ``accel.Gop``, is what the C fast path appends to)."""

    configs: tuple[Any, ...]  # the configurations in effect at its key frame
    start_dts: int
    frames: list[Any]
    nbytes: int

    @property
    def records(self) -> int:
        """Frames held without objects yet (the C twin's fast path; never here)."""
        return 0


class HubCore:
    """Fields a hub's publish path reads and writes for every frame."""

    __slots__ = (
        "frames_in", "bytes_in", "last_frame", "rate_start", "rate_bytes", "bitrate",
        "cache_bytes", "gops", "gop", "configs", "preroll_ms", "gop_max_bytes", "gop_max_ms", "cache_max_bytes",
        "video_codec", "audio_codec", "has_video", "fan", "fan_version", "fast", "publisher", "clock",
    )

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.frames_in = 0
        self.bytes_in = 0
        self.last_frame = 0.0  # clock time of the last frame (meaningless while frames_in is 0)
        self.rate_start = 0.0
        self.rate_bytes = 0
        self.bitrate = 0.0  # bits per second, smoothed over about a second
        self.cache_bytes = 0  # media held by the cached GOPs
        self.gops: Any = None  # the hub's cached GOPs (a deque of Gop, oldest first)
        self.gop: Gop | None = None  # the GOP frames are appended to (the hub's latest), or None
        self.configs: tuple[Any, ...] = ()  # the configurations in effect (video first): a new GOP's
        self.preroll_ms = 0  # history kept beyond the current GOP
        self.gop_max_bytes = 0
        self.gop_max_ms = 0
        self.cache_max_bytes = 0
        self.video_codec: Any = None
        self.audio_codec: Any = None
        self.has_video = False
        self.fan: Any = None  # the hub's ``accel.Fanout`` (None without the C accelerator)
        self.fan_version = -1  # the Fanout's version the hub's list of slow subscriptions was made at
        self.fast = False  # the hub allows the C fast path (no sinks, no slow subscriptions)
        self.publisher: Any = None  # the active ``Publisher``
        self.clock = clock

    def count(self, size: int) -> None:
        """One frame of ``size`` bytes arrived now: counters and bit rate."""
        now = self.clock()
        self.frames_in += 1
        self.bytes_in += size
        self.last_frame = now
        self.rate_bytes += size
        if now - self.rate_start >= 1.0:
            rate = self.rate_bytes * 8 / (now - self.rate_start)
            self.bitrate = rate if self.bitrate == 0.0 else 0.5 * self.bitrate + 0.5 * rate
            self.rate_start, self.rate_bytes = now, 0
