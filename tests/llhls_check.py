"""An LL-HLS media playlist validator for tests, written from RFC 8216bis rules (not from our packager).

``check_media_playlist(text, fetch)`` parses a live (or ended) media playlist and asserts:
EXTM3U first; one EXT-X-TARGETDURATION, and every EXTINF rounded to the nearest integer at
most that (4.3.3.1); EXT-X-PART-INF present when parts are, every part DURATION at most
PART-TARGET (4.4.4.9) and the parts of a segment adding up to its EXTINF; EXT-X-SERVER-CONTROL
with CAN-BLOCK-RELOAD=YES and PART-HOLD-BACK at least 3 × PART-TARGET (4.4.3.8, 6.2.5.2); media
sequence numbers continuous from EXT-X-MEDIA-SEQUENCE (our segment URIs carry theirs); part ids
continuous across segments; a single PRELOAD-HINT naming the next part; parts only at the live
end (not before a segment's parts were dropped); EXT-X-INDEPENDENT-SEGMENTS only if every
segment starts independent. With ``fetch`` (URI → bytes), each part's INDEPENDENT=YES must match
its first video sample being a sync sample, so a player starting on a flagged part can decode.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

_ATTR = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^",]*)')
_SEG = re.compile(r"seg(\d+)\.m4s")
_PART = re.compile(r"part(\d+)\.m4s")


def attrs(line: str) -> dict[str, str]:
    body = line.split(":", 1)[1]
    return {k: v.strip('"') for k, v in _ATTR.findall(body)}


@dataclass
class Part:
    uri: str
    duration: float
    independent: bool


@dataclass
class Seg:
    msn: int
    uri: str
    duration: float
    parts: list[Part] = field(default_factory=list)


@dataclass
class MediaPlaylist:
    target: int
    part_target: float | None
    media_sequence: int
    segments: list[Seg]
    open_parts: list[Part]  # parts of the segment being built (after the last EXTINF)
    preload_hint: str | None
    independent_segments: bool
    ended: bool

    @property
    def all_parts(self) -> list[Part]:
        return [p for s in self.segments for p in s.parts] + self.open_parts


def first_video_sync(fragment: bytes) -> bool | None:
    """Whether the first sample of track 1 in a moof+mdat is a sync sample (None: no video run)."""
    pos = 0
    while pos + 8 <= len(fragment):
        size, kind = struct.unpack_from(">I4s", fragment, pos)
        if kind == b"moof":
            return _traf_sync(fragment, pos + 8, pos + size)
        pos += max(size, 8)
    return None


def _traf_sync(data: bytes, start: int, end: int) -> bool | None:
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"traf":
            track, first_flags = None, None
            p = pos + 8
            while p + 8 <= pos + size:
                s2, k2 = struct.unpack_from(">I4s", data, p)
                if k2 == b"tfhd":
                    track = struct.unpack_from(">I", data, p + 12)[0]
                elif k2 == b"trun":
                    tflags = int.from_bytes(data[p + 9 : p + 12], "big")
                    q = p + 16 + (4 if tflags & 0x1 else 0)
                    if tflags & 0x4:
                        first_flags = struct.unpack_from(">I", data, q)[0]
                    else:
                        q += (4 if tflags & 0x100 else 0) + (4 if tflags & 0x200 else 0)
                        first_flags = struct.unpack_from(">I", data, q)[0] if tflags & 0x400 else 0
                p += max(s2, 8)
            if track == 1 and first_flags is not None:
                return not first_flags & 0x00010000
        pos += max(size, 8)
    return None


def check_media_playlist(text: str, fetch: Callable[[str], bytes | None] | None = None) -> MediaPlaylist:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    assert lines and lines[0] == "#EXTM3U", "a playlist starts with #EXTM3U"
    tags: dict[str, list[str]] = {}
    segments: list[Seg] = []
    pending: list[Part] = []
    duration: float | None = None
    hints: list[str] = []
    msn_first: int | None = None
    for ln in lines[1:]:
        if ln.startswith("#"):
            name = ln.split(":", 1)[0]
            tags.setdefault(name, []).append(ln)
            if name == "#EXT-X-PART":
                a = attrs(ln)
                pending.append(Part(a["URI"], float(a["DURATION"]), a.get("INDEPENDENT") == "YES"))
            elif name == "#EXTINF":
                duration = float(ln.split(":", 1)[1].split(",")[0])
            elif name == "#EXT-X-PRELOAD-HINT":
                a = attrs(ln)
                assert a["TYPE"] == "PART", a
                hints.append(a["URI"])
            elif name == "#EXT-X-MEDIA-SEQUENCE":
                msn_first = int(ln.split(":", 1)[1])
            continue
        assert duration is not None, f"segment {ln} without EXTINF"
        assert not hints, "PRELOAD-HINT must follow the last segment"
        m = _SEG.search(ln)
        assert m, ln
        segments.append(Seg(int(m.group(1)), ln, duration, pending))
        pending, duration = [], None
    for single in ("#EXT-X-TARGETDURATION", "#EXT-X-MEDIA-SEQUENCE"):
        assert len(tags.get(single, [])) == 1, f"exactly one {single}"
    target = int(tags["#EXT-X-TARGETDURATION"][0].split(":", 1)[1])
    assert msn_first is not None
    ended = "#EXT-X-ENDLIST" in tags
    for i, s in enumerate(segments):
        assert s.msn == msn_first + i, f"media sequence not continuous at {s.uri} (expected {msn_first + i})"
        assert round(s.duration) <= target, f"EXTINF {s.duration} > TARGETDURATION {target}"
    part_target: float | None = None
    all_parts = [p for s in segments for p in s.parts] + pending
    if all_parts or hints:
        assert len(tags.get("#EXT-X-PART-INF", [])) == 1, "parts need one EXT-X-PART-INF"
        part_target = float(attrs(tags["#EXT-X-PART-INF"][0])["PART-TARGET"])
        control = attrs(tags["#EXT-X-SERVER-CONTROL"][0])
        assert control.get("CAN-BLOCK-RELOAD") == "YES"
        assert float(control["PART-HOLD-BACK"]) >= 3 * part_target - 1e-9, control
        for p in all_parts:
            assert p.duration <= part_target + 1e-9, f"part {p.uri} {p.duration} s > PART-TARGET {part_target}"
        for s in segments:
            if s.parts:
                assert abs(sum(p.duration for p in s.parts) - s.duration) <= 0.001 * len(s.parts) + 1e-9, s
        # parts are listed for a tail of the playlist only: once a segment has them, all later do
        with_parts = [bool(s.parts) for s in segments]
        assert with_parts == sorted(with_parts), "a segment without parts after one with parts"
        ids = [int(_PART.search(p.uri).group(1)) for p in all_parts]  # type: ignore[union-attr]
        assert ids == list(range(ids[0], ids[0] + len(ids))) if ids else True, f"part ids not continuous: {ids}"
        if not ended:
            assert len(hints) == 1, "a live LL-HLS playlist ends with one PRELOAD-HINT"
            hinted = int(_PART.search(hints[0]).group(1))  # type: ignore[union-attr]
            assert not ids or hinted == ids[-1] + 1, (hinted, ids[-1])
    if ended:
        assert not hints and not pending, "an ended playlist has no open parts or hints"
    independent_segments = "#EXT-X-INDEPENDENT-SEGMENTS" in tags
    if fetch is not None:
        for p in all_parts:
            data = fetch(p.uri)
            assert data is not None, f"listed part {p.uri} is not served"
            sync = first_video_sync(data)
            if sync is not None:
                assert p.independent == sync, f"{p.uri}: INDEPENDENT={p.independent} but key frame first: {sync}"
        if independent_segments:
            for s in segments:
                data = fetch(s.uri)
                assert data is not None and first_video_sync(data) in (True, None), f"{s.uri} not independent"
    if independent_segments:
        for s in segments:
            assert not s.parts or s.parts[0].independent, f"{s.uri} listed under INDEPENDENT-SEGMENTS"
    return MediaPlaylist(target, part_target, msn_first, segments, pending, hints[0] if hints else None,
                         independent_segments, ended)
