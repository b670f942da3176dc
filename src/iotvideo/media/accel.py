"""Which implementation of the media hot path runs: the C accelerator's or the pure-Python twin.

``iotvideo.media._native`` (built from ``media/native/*.c`` when the package is installed; optional)
holds C types that behave exactly like their Python twins here; tests run both and compare them.
``IOTVIDEO_NATIVE=0`` in the environment forces the Python path (set before the first import).
Import the classes from this module, never from ``_native`` directly.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

from . import flvtags, hubcore, timeline
from .rtmp import chunk


def _load() -> ModuleType | None:
    if os.environ.get("IOTVIDEO_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    try:
        from . import _native
    except ImportError:
        return None
    return _native


native: ModuleType | None = _load()
"""The C module when it is built and not switched off, else None."""


def _pick(name: str, python: Any) -> Any:
    return getattr(native, name, python) if native is not None else python


# RTMP ingest (media/native/ingest.c)
ChunkReader: type[chunk.ChunkReader] = _pick("ChunkReader", chunk.ChunkReader)
parse_video_tag = _pick("parse_video_tag", flvtags.parse_video_tag)
parse_audio_tag = _pick("parse_audio_tag", flvtags.parse_audio_tag)

# RTMP fan-out (media/native/fanout.c). The writer and the message go together (the C writer
# takes C messages only); RtmpOut and Fanout have no Python twin: None means "use the Python path".
_fan = native is not None and all(hasattr(native, n) for n in ("ChunkWriter", "SharedMessage", "RtmpOut", "Fanout"))
ChunkWriter: type[chunk.ChunkWriter] = native.ChunkWriter if _fan else chunk.ChunkWriter  # type: ignore[union-attr]
SharedMessage: type[chunk.SharedMessage] = native.SharedMessage if _fan else chunk.SharedMessage  # type: ignore[union-attr]
Timeline: type[timeline.Timeline] = _pick("Timeline", timeline.Timeline)
RtmpOut: Any = native.RtmpOut if _fan else None  # type: ignore[union-attr]
FlvOut: Any = getattr(native, "FlvOut", None) if _fan else None
Fanout: Any = native.Fanout if _fan else None  # type: ignore[union-attr]
# A publisher's ordinary frames without Python (media/native/lane.c): the hub's per-frame state and a
# publishing connection's receive path. PublishLane has no Python twin (None: the Python path).
_lane = _fan and all(hasattr(native, n) for n in ("HubCore", "Gop", "PublishLane"))
HubCore: type[hubcore.HubCore] = native.HubCore if _lane else hubcore.HubCore  # type: ignore[union-attr]
Gop: type[hubcore.Gop] = native.Gop if _lane else hubcore.Gop  # type: ignore[union-attr]
PublishLane: Any = native.PublishLane if _lane else None  # type: ignore[union-attr]
# One epoll descriptor for all of a server's armed lanes (media/native/poll.c; Linux): the loop makes one
# callback for every lane ready at once. None: each armed lane is a reader of the loop's own.
LanePoll: Any = getattr(native, "LanePoll", None) if _lane else None
FAST_OUTS: tuple[type, ...] = tuple(t for t in (RtmpOut, FlvOut) if t is not None)
"""The C outputs a hub's ``Fanout`` feeds (``Subscription.deliver_to`` recognises them)."""


def describe() -> str:
    """One line for logs and benchmarks: which parts run in C."""
    if native is None:
        return "pure Python (C accelerator " + ("switched off)" if os.environ.get("IOTVIDEO_NATIVE") else "not built)")
    names = ("ChunkReader", "parse_video_tag", "parse_audio_tag", "ChunkWriter", "SharedMessage", "Timeline",
             "RtmpOut", "FlvOut", "Fanout", "HubCore", "Gop", "PublishLane", "LanePoll")
    parts = [n for n in names if hasattr(native, n)]
    return "C accelerator: " + (", ".join(parts) if parts else "nothing yet")
