"""A player's timestamps: its first media frame at 0, never jumping, whatever the source's clock does."""

from __future__ import annotations

from typing import Final

from .frames import MediaFrame

__all__ = ["Timeline"]

JUMP_BACK_MS: Final = 5_000  # a player's timeline is rebased when the source jumps this far back
JUMP_AHEAD_MS: Final = 10_000  # or this far ahead


class Timeline:
    """Codec configurations take the last time; a frame a little behind the last keeps its time
    (clamped at 0); a jump of the source's clock beyond the bounds continues from the last time.
    ``media/native/fanout.c`` has a C twin (``accel.Timeline``)."""

    __slots__ = ("base", "last")

    def __init__(self) -> None:
        self.base: int | None = None
        self.last = 0

    def at(self, frame: MediaFrame) -> int:
        if frame.is_config:
            return self.last
        base = self.base
        if base is None:
            base = self.base = frame.dts
        t = frame.dts - base
        last = self.last
        if t >= last:
            if t <= last + JUMP_AHEAD_MS:
                self.last = t
                return t
        elif t >= last - JUMP_BACK_MS:
            return t if t > 0 else 0
        self.base = frame.dts - last  # a jump in the source's clock: continue from the last time
        return last
