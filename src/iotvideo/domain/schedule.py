"""Time-template arithmetic: is a weekly schedule active at an instant, and when does that change.

A time template is either *all day* (active all week) or a list of time sections.
Each section names a day of the week and a span of seconds of that day, in the
*device's* wall-clock time (an IANA zone such as ``"Asia/Shanghai"``).

Semantics
---------
* ``DayOfWeek`` is 0..6 with 0 = Sunday … 6 = Saturday.
* ``Begin`` and ``End`` are seconds of the day, 0..86399, with ``Begin < End``.
* A section covers the half-open span ``[Begin, End)`` of seconds, **except** that
  ``End = 86399`` means "to the end of the day", i.e. ``[Begin, 86400)``: 86399 is the
  largest value the API accepts and users write ``0..86399`` for a whole day, so that
  section must include the very last second (23:59:59) and join seamlessly with the
  next day. Consequently the span ``[x, 86399)`` (excluding only the last second) is
  not expressible; nobody needs it.
* Sections never span midnight; a Saturday section ending at 86399 followed by a
  Sunday section starting at 0 is continuous in time but stays two sections.
* :func:`normalize_sections` merges overlapping *or touching* sections of the same day
  (``[0, 100)`` and ``[100, 200)`` become ``[0, 200)``) and sorts by (day, begin). A
  merged span reaching 86400 is written back with ``End = 86399``, so normalisation is
  lossless and idempotent.

Time zones and DST
------------------
An instant is active iff its local wall-clock reading in the device's zone (day of
week and second of day, sub-second part ignored) lies in a section. Sections are never
shifted to compensate for DST:

* **Gap** (spring forward, e.g. 02:00→03:00 in America/New_York): wall times inside the
  gap never happen, so a section, or the part of it, inside the gap is simply skipped
  that day. A section straddling the gap is active from the transition instant on (for
  ``[01:30, 02:30)`` that is 01:30 EST up to 03:00 EDT, when the clock reads past 02:30).
* **Fold** (fall back, e.g. 02:00→01:00): repeated wall times are evaluated on each
  occurrence, so ``[01:15, 01:45)`` is active twice that night (once in EDT, once in
  EST), and ``[00:30, 01:30)`` is active, inactive from 01:30 to 02:00 EDT, then active
  again from 01:00 EST to 01:30 EST.

A plan therefore records a little more or less than its nominal length on transition
days, exactly as a wall clock would tell it to.

:func:`next_change` returns an aware datetime in **UTC**, not in the device zone: by
PEP 495 a datetime in a fold (``fold=1``) compares unequal (``==``) to every datetime of
another zone, which would make results inside a fold treacherous to compare. Call
``.astimezone(ZoneInfo(tz))`` to display it in the device's time.

Naive datetimes are rejected with ``ValueError``; an unknown zone name raises
``zoneinfo.ZoneInfoNotFoundError`` (a ``KeyError``).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

__all__ = [
    "DAYS_PER_WEEK",
    "MAX_SECOND",
    "SECONDS_PER_DAY",
    "SECONDS_PER_WEEK",
    "SectionError",
    "TimeSection",
    "is_active",
    "next_change",
    "normalize_sections",
    "week_coverage_seconds",
]

SECONDS_PER_DAY = 86_400
DAYS_PER_WEEK = 7
SECONDS_PER_WEEK = SECONDS_PER_DAY * DAYS_PER_WEEK
MAX_SECOND = SECONDS_PER_DAY - 1  # 86399: the largest Begin/End the API accepts

# next_change scans the boundaries of one window of this length. Without DST a
# non-trivial weekly schedule always changes within a week; only when a DST gap swallows
# the sole change of a week must the scan go on into further windows.
_WINDOW_SECONDS = 8 * SECONDS_PER_DAY
_MAX_WINDOWS = 5
# Offset changes are found by probing the UTC offset at this step and bisecting where
# it differs (two transitions cancelling out within one step would be missed; no zone
# does that).
_PROBE_STEP = 3600
# Wall-clock dates examined either side of a window (covers clock jumps of up to a day).
_DATE_MARGIN = timedelta(days=2)


class SectionError(ValueError):
    """A time section is malformed; ``field`` is the wire name of the offending field."""

    def __init__(self, field: str, message: str, index: int | None = None) -> None:
        where = f"section {index}: " if index is not None else ""
        super().__init__(f"{where}{field} {message}")
        self.field = field
        self.index = index
        self.detail = message


@dataclass(frozen=True)
class TimeSection:
    """One weekly span: ``day_of_week`` 0..6 (0 = Sunday), seconds ``begin``..``end`` of that day."""

    day_of_week: int
    begin: int
    end: int

    @property
    def end_exclusive(self) -> int:
        """The exclusive end second: ``end``, or 86400 when ``end`` is 86399 (end of day)."""
        return SECONDS_PER_DAY if self.end == MAX_SECOND else self.end


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _validate(s: object, index: int) -> TimeSection:
    if not isinstance(s, TimeSection):
        raise SectionError("TimeSection", f"must be a TimeSection, got {type(s).__name__}", index)
    if not _is_int(s.day_of_week) or not 0 <= s.day_of_week < DAYS_PER_WEEK:
        raise SectionError("DayOfWeek", f"must be an integer in 0..6 (0 = Sunday), got {s.day_of_week!r}", index)
    if not _is_int(s.begin) or not 0 <= s.begin <= MAX_SECOND:
        raise SectionError("Begin", f"must be an integer in 0..{MAX_SECOND}, got {s.begin!r}", index)
    if not _is_int(s.end) or not 0 <= s.end <= MAX_SECOND:
        raise SectionError("End", f"must be an integer in 0..{MAX_SECOND}, got {s.end!r}", index)
    if s.begin >= s.end:
        raise SectionError("End", f"must be greater than Begin, got Begin={s.begin} End={s.end}", index)
    return s


def _section(day: int, begin: int, end_exclusive: int) -> TimeSection:
    return TimeSection(day, begin, MAX_SECOND if end_exclusive == SECONDS_PER_DAY else end_exclusive)


def normalize_sections(sections: Iterable[TimeSection]) -> tuple[TimeSection, ...]:
    """Validate sections and merge overlapping or touching ones of the same day.

    Returns the union as disjoint, non-touching sections sorted by (day, begin).
    Raises :class:`SectionError` (a ``ValueError``) naming the first bad field
    (``DayOfWeek``, ``Begin`` or ``End``) and the index of its section.
    """
    by_day: dict[int, list[tuple[int, int]]] = {}
    for i, raw in enumerate(sections):
        s = _validate(raw, i)
        by_day.setdefault(s.day_of_week, []).append((s.begin, s.end_exclusive))
    out: list[TimeSection] = []
    for day in sorted(by_day):
        spans = sorted(by_day[day])
        cur_b, cur_e = spans[0]
        for b, e in spans[1:]:
            if b <= cur_e:  # overlapping or touching
                cur_e = max(cur_e, e)
            else:
                out.append(_section(day, cur_b, cur_e))
                cur_b, cur_e = b, e
        out.append(_section(day, cur_b, cur_e))
    return tuple(out)


def week_coverage_seconds(sections: Iterable[TimeSection]) -> int:
    """How many seconds of a (DST-free) week the sections cover, 0..604800."""
    return sum(s.end_exclusive - s.begin for s in normalize_sections(sections))


class _Plan:
    """Normalised sections indexed by day for bisecting, plus each day's boundary seconds."""

    def __init__(self, sections: Sequence[TimeSection]) -> None:
        norm = normalize_sections(sections)
        self.coverage = sum(s.end_exclusive - s.begin for s in norm)
        self.begins: list[list[int]] = [[] for _ in range(DAYS_PER_WEEK)]
        self.ends: list[list[int]] = [[] for _ in range(DAYS_PER_WEEK)]
        for s in norm:
            self.begins[s.day_of_week].append(s.begin)
            self.ends[s.day_of_week].append(s.end_exclusive)
        # Seconds of each day at which the wall-clock value may change; 0 (midnight) always,
        # which also stands for an end of 86400 on the previous day.
        self.boundaries: list[tuple[int, ...]] = [
            tuple(sorted({0, *self.begins[d], *(e for e in self.ends[d] if e < SECONDS_PER_DAY)}))
            for d in range(DAYS_PER_WEEK)
        ]

    def active_wall(self, local: datetime) -> bool:
        day = local.isoweekday() % 7  # Monday=1 … Sunday=7 -> Sunday=0
        sec = local.hour * 3600 + local.minute * 60 + local.second
        i = bisect_right(self.begins[day], sec) - 1
        return i >= 0 and sec < self.ends[day][i]

    def active_ts(self, ts: float, zone: tzinfo) -> bool:
        return self.active_wall(datetime.fromtimestamp(ts, zone))


def _zone(tz: str) -> ZoneInfo:
    return ZoneInfo(tz)


def _require_aware(at: datetime) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("at must be a timezone-aware datetime")


def is_active(all_day: bool, sections: Sequence[TimeSection], at: datetime, tz: str) -> bool:
    """Whether the template is active at the aware instant ``at``, read on the wall clock of ``tz``."""
    _require_aware(at)
    if all_day:
        return True
    return _Plan(sections).active_wall(at.astimezone(_zone(tz)))


def _offset(ts: int, zone: tzinfo) -> timedelta | None:
    return datetime.fromtimestamp(ts, zone).utcoffset()


def _transitions(zone: tzinfo, lo: float, hi: float) -> list[int]:
    """The instants (POSIX seconds) in about [lo, hi] at which the zone's UTC offset changes."""
    out: list[int] = []
    t = math.floor(lo)
    end = math.ceil(hi)
    prev = _offset(t, zone)
    while t < end:
        n = min(t + _PROBE_STEP, end)
        cur = _offset(n, zone)
        if cur != prev:
            a, b = t, n  # offset(a) == prev != offset(b): find the first second that differs
            while b - a > 1:
                mid = (a + b) // 2
                if _offset(mid, zone) == prev:
                    a = mid
                else:
                    b = mid
            out.append(b)
        t, prev = n, cur
    return out


def _candidates(plan: _Plan, zone: tzinfo, lo: float, hi: float) -> list[int]:
    """Every instant in (lo, hi] where the activity may change, sorted.

    Between two consecutive candidates the offset is constant, so the wall clock runs
    continuously and crosses no section boundary: activity is constant there. The
    candidates are the offset transitions plus each instant whose wall-clock reading is a
    boundary second (both occurrences in a fold; extra points from gaps are harmless).
    """
    cands: set[int] = set(_transitions(zone, lo, hi))
    day = datetime.fromtimestamp(lo, zone).date() - _DATE_MARGIN
    last = datetime.fromtimestamp(hi, zone).date() + _DATE_MARGIN
    while day <= last:
        midnight = datetime.combine(day, time())
        for b in plan.boundaries[day.isoweekday() % 7]:
            wall = midnight + timedelta(seconds=b)
            for fold in (0, 1):
                cands.add(int(wall.replace(tzinfo=zone, fold=fold).timestamp()))
        day += timedelta(days=1)
    return sorted(c for c in cands if lo < c <= hi)


def next_change(all_day: bool, sections: Sequence[TimeSection], at: datetime, tz: str) -> datetime | None:
    """The first instant strictly after ``at`` at which :func:`is_active` changes value.

    Returns an aware datetime in UTC (see the module docstring), or ``None`` when the value
    never changes: all-day, no sections, or sections covering the whole week (and, in
    theory only, when the calendar ends at ``datetime.max``). Runs over the boundary
    instants of an 8-day window — never second by second — and continues into further
    windows only if a DST gap swallowed the one change of the week (at most 5 windows).
    """
    _require_aware(at)
    zone = _zone(tz)
    plan = _Plan(sections)
    if all_day or plan.coverage in (0, SECONDS_PER_WEEK):
        return None
    lo = at.timestamp()
    current = plan.active_wall(at.astimezone(zone))
    try:
        for _ in range(_MAX_WINDOWS):
            hi = lo + _WINDOW_SECONDS
            for c in _candidates(plan, zone, lo, hi):
                if plan.active_ts(c, zone) != current:
                    return datetime.fromtimestamp(c, timezone.utc)
            lo = hi
    except (OverflowError, ValueError):  # ran past datetime.max / min
        return None
    return None
