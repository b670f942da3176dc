"""Tests for iotvideo.domain.schedule: validation, merging, activity and next change across DST."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iotvideo.domain.schedule import (
    SECONDS_PER_WEEK,
    SectionError,
    TimeSection,
    is_active,
    next_change,
    normalize_sections,
    week_coverage_seconds,
)

UTC = timezone.utc
DST_ZONES = ["America/New_York", "Europe/London", "Australia/Lord_Howe"]
FIXED_ZONES = ["Asia/Shanghai", "UTC"]
ZONES = DST_ZONES + FIXED_ZONES
WHOLE_DAY = 86399
US = timedelta(microseconds=1)

S = TimeSection


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def local(tz: str, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(tz), fold=fold)  # type: ignore[misc]


# ---------------------------------------------------------------- brute-force oracles

def end_excl(end: int) -> int:
    return 86400 if end == WHOLE_DAY else end


def covered(sections: list[TimeSection]) -> set[tuple[int, int]]:
    """Every (day, second) covered, by enumeration."""
    return {(s.day_of_week, x) for s in sections for x in range(s.begin, end_excl(s.end))}


def brute_active(sections: list[TimeSection], at: datetime, tz: str) -> bool:
    wall = at.astimezone(ZoneInfo(tz))
    day = (wall.weekday() + 1) % 7
    sec = wall.hour * 3600 + wall.minute * 60 + wall.second
    return any(s.day_of_week == day and s.begin <= sec < end_excl(s.end) for s in sections)


def transitions(tz: str, years: range) -> list[int]:
    """UTC instants of offset changes, found hour by hour then to the second."""
    z = ZoneInfo(tz)

    def off(ts: int) -> timedelta | None:
        return datetime.fromtimestamp(ts, z).utcoffset()

    out = []
    t = int(utc(years.start, 1, 1).timestamp())
    end = int(utc(years.stop, 1, 1).timestamp())
    while t < end:
        if off(t) != off(t + 3600):
            a, b = t, t + 3600
            while b - a > 1:
                m = (a + b) // 2
                a, b = (m, b) if off(m) == off(a) else (a, m)
            out.append(b)
        t += 3600
    return out


TRANSITIONS = {tz: transitions(tz, range(2019, 2027)) for tz in DST_ZONES}


# ---------------------------------------------------------------- strategies

@st.composite
def small_sections(draw: st.DrawFn) -> TimeSection:
    """Sections with few seconds (cheap to enumerate) that often overlap, touch or end the day."""
    day = draw(st.integers(0, 2))
    if draw(st.booleans()):
        b = draw(st.integers(0, 40))
        e = draw(st.integers(b + 1, 41))
    else:
        b = draw(st.integers(86360, 86398))
        e = draw(st.integers(b + 1, WHOLE_DAY))
    return S(day, b, e)


@st.composite
def grid_sections(draw: st.DrawFn) -> TimeSection:
    """Sections on a 15-minute grid (End may be 86399), so every change falls on the grid."""
    day = draw(st.integers(0, 6))
    b = draw(st.integers(0, 95)) * 900
    e = draw(st.integers(b // 900 + 1, 96)) * 900
    return S(day, b, WHOLE_DAY if e == 86400 else e)


@st.composite
def any_sections(draw: st.DrawFn) -> TimeSection:
    day = draw(st.integers(0, 6))
    b = draw(st.integers(0, 86398))
    e = draw(st.integers(b + 1, WHOLE_DAY))
    return S(day, b, e)


@st.composite
def instants(draw: st.DrawFn, tz: str, grid: int = 1) -> datetime:
    """Aware UTC instants, half of them within three days of a DST transition of tz."""
    if tz in TRANSITIONS and draw(st.booleans()):
        ts = draw(st.sampled_from(TRANSITIONS[tz])) + draw(st.integers(-3 * 86400, 3 * 86400))
    else:
        ts = draw(st.integers(int(utc(2000, 1, 1).timestamp()), int(utc(2037, 1, 1).timestamp())))
    ts -= ts % grid
    us = 0 if grid > 1 else draw(st.sampled_from([0, 0, 1, 500_000, 999_999]))
    return datetime.fromtimestamp(ts, UTC) + timedelta(microseconds=us)


section_lists = st.lists(st.one_of(grid_sections(), any_sections()), max_size=8)
# database=None: no .hypothesis/ example database is written into the tree.
FAST = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize(
    ("section", "field"),
    [
        (S(7, 0, 10), "DayOfWeek"),
        (S(-1, 0, 10), "DayOfWeek"),
        (S(True, 0, 10), "DayOfWeek"),  # type: ignore[arg-type]
        (S(0, -1, 10), "Begin"),
        (S(0, 86400, 86401), "Begin"),
        (S(0, "0", 10), "Begin"),  # type: ignore[arg-type]
        (S(0, 0, 86400), "End"),
        (S(0, 0, 1.5), "End"),  # type: ignore[arg-type]
        (S(0, 10, 10), "End"),
        (S(0, 11, 10), "End"),
    ],
)
def test_invalid_sections_name_the_field(section: TimeSection, field: str) -> None:
    with pytest.raises(SectionError) as e:
        normalize_sections([S(1, 0, 5), section])
    assert isinstance(e.value, ValueError)
    assert e.value.field == field
    assert e.value.index == 1
    assert field in str(e.value) and "section 1" in str(e.value)


def test_not_a_section() -> None:
    with pytest.raises(SectionError):
        normalize_sections([(0, 0, 10)])  # type: ignore[list-item]


def test_extremes_are_valid() -> None:
    assert normalize_sections([S(6, 0, WHOLE_DAY), S(0, 86398, WHOLE_DAY)]) == (
        S(0, 86398, WHOLE_DAY), S(6, 0, WHOLE_DAY))


# ---------------------------------------------------------------- merging

def test_merge_overlapping_touching_and_sorting() -> None:
    got = normalize_sections([
        S(2, 500, 600), S(1, 100, 200), S(1, 150, 300), S(1, 300, 400),  # overlap, then touch
        S(1, 401, 500),  # one second apart: stays separate
        S(1, 1000, WHOLE_DAY), S(1, 2000, 3000),  # contained in a whole-rest-of-day section
    ])
    assert got == (S(1, 100, 400), S(1, 401, 500), S(1, 1000, WHOLE_DAY), S(2, 500, 600))


def test_merge_touching_the_end_of_day() -> None:
    # [0, 86398) and [86398, 86400) touch; the union is the whole day, End written 86399
    assert normalize_sections([S(3, 0, 86398), S(3, 86398, WHOLE_DAY)]) == (S(3, 0, WHOLE_DAY),)


def test_days_are_not_merged_across_midnight() -> None:
    got = normalize_sections([S(0, 0, 10), S(6, 86000, WHOLE_DAY)])
    assert got == (S(0, 0, 10), S(6, 86000, WHOLE_DAY))


def test_empty() -> None:
    assert normalize_sections([]) == ()
    assert week_coverage_seconds([]) == 0


def test_week_coverage() -> None:
    assert week_coverage_seconds([S(0, 0, WHOLE_DAY)]) == 86400
    assert week_coverage_seconds([S(0, 0, 10), S(0, 5, 20), S(1, 0, 1)]) == 21
    assert week_coverage_seconds([S(d, 0, WHOLE_DAY) for d in range(7)]) == SECONDS_PER_WEEK


@FAST
@given(st.lists(small_sections(), max_size=6))
def test_merge_preserves_covered_seconds_and_is_idempotent(sections: list[TimeSection]) -> None:
    norm = normalize_sections(sections)
    assert covered(list(norm)) == covered(sections)
    assert normalize_sections(norm) == norm
    assert week_coverage_seconds(sections) == len(covered(sections))
    # sorted, and disjoint and not touching within a day
    assert list(norm) == sorted(norm, key=lambda s: (s.day_of_week, s.begin))
    for a, b in zip(norm, norm[1:]):
        if a.day_of_week == b.day_of_week:
            assert end_excl(a.end) < b.begin


@FAST
@given(section_lists, st.randoms(use_true_random=False))
def test_merge_is_order_independent(sections: list[TimeSection], rnd: object) -> None:
    shuffled = list(sections)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert normalize_sections(shuffled) == normalize_sections(sections)


# ---------------------------------------------------------------- is_active

def test_days_of_week_and_end_semantics() -> None:
    tz = "Asia/Shanghai"
    sunday = local(tz, 2024, 6, 2)  # a Sunday
    secs = [S(0, 3600, 7200), S(6, 0, WHOLE_DAY)]
    assert is_active(False, secs, sunday + timedelta(seconds=3600), tz)
    assert is_active(False, secs, sunday + timedelta(seconds=7199, microseconds=999_999), tz)
    assert not is_active(False, secs, sunday + timedelta(seconds=7200), tz)  # End exclusive
    assert not is_active(False, secs, sunday + timedelta(seconds=3599), tz)
    assert is_active(False, secs, sunday - timedelta(microseconds=1), tz)  # Saturday 23:59:59.999999
    assert is_active(False, secs, sunday - timedelta(days=1), tz)
    assert not is_active(False, secs, sunday, tz)
    # End=86398 is exclusive: the last two seconds are not covered
    assert not is_active(False, [S(0, 0, 86398)], sunday + timedelta(seconds=86398), tz)
    # the instant is read in the device zone, whatever zone it is given in
    assert is_active(False, [S(0, 3600, 7200)], utc(2024, 6, 1, 17, 30), tz)


def test_all_day_and_empty() -> None:
    at = utc(2024, 1, 1)
    assert is_active(True, [], at, "UTC")
    assert is_active(True, [S(0, 0, 1)], at, "UTC")  # sections ignored
    assert not is_active(False, [], at, "UTC")


def test_naive_datetime_rejected() -> None:
    with pytest.raises(ValueError):
        is_active(False, [], datetime(2024, 1, 1), "UTC")
    with pytest.raises(ValueError):
        next_change(False, [S(0, 0, 1)], datetime(2024, 1, 1), "UTC")


def test_invalid_sections_rejected_by_is_active() -> None:
    with pytest.raises(SectionError):
        is_active(False, [S(0, 5, 5)], utc(2024, 1, 1), "UTC")


@FAST
@given(st.data(), section_lists, st.sampled_from(ZONES))
def test_is_active_matches_brute_force(data: st.DataObject, sections: list[TimeSection], tz: str) -> None:
    at = data.draw(instants(tz))
    assert is_active(False, sections, at, tz) == brute_active(sections, at, tz)
    assert is_active(True, sections, at, tz)


# ---------------------------------------------------------------- next_change: examples

def test_next_change_simple() -> None:
    tz = "Asia/Shanghai"
    secs = [S(1, 3600, 7200)]  # Monday 01:00-02:00
    monday = local(tz, 2024, 6, 3)
    assert next_change(False, secs, monday, tz) == monday + timedelta(hours=1)
    assert next_change(False, secs, monday + timedelta(hours=1), tz) == monday + timedelta(hours=2)
    # from just after the end: a week later
    assert next_change(False, secs, monday + timedelta(hours=2), tz) == monday + timedelta(days=7, hours=1)
    got = next_change(False, secs, monday, tz)
    assert got is not None and got.utcoffset() == timedelta(0)
    assert got.astimezone(ZoneInfo(tz)) == local(tz, 2024, 6, 3, 1)


def test_next_change_never() -> None:
    at = utc(2024, 3, 10, 6)
    tz = "America/New_York"
    assert next_change(True, [], at, tz) is None
    assert next_change(True, [S(0, 0, 5)], at, tz) is None
    assert next_change(False, [], at, tz) is None
    week = [S(d, 0, 50_000) for d in range(7)] + [S(d, 50_000, WHOLE_DAY) for d in range(7)]
    assert next_change(False, week, at, tz) is None


def test_next_change_across_midnight_and_week_wrap() -> None:
    tz = "UTC"
    secs = [S(6, 0, WHOLE_DAY), S(0, 0, 3600)]  # Saturday all day into Sunday 01:00
    saturday = utc(2024, 6, 1)
    assert next_change(False, secs, saturday, tz) == saturday + timedelta(days=1, hours=1)
    # inactive on Sunday 01:00 -> next Saturday 00:00
    assert next_change(False, secs, saturday + timedelta(days=1, hours=1), tz) == saturday + timedelta(days=7)


def test_spring_forward_gap_swallows_section() -> None:
    tz = "America/New_York"  # 2024-03-10 02:00 EST -> 03:00 EDT (07:00 UTC)
    secs = [S(0, 2 * 3600 + 600, 2 * 3600 + 3000)]  # Sunday 02:10-02:50, inside the gap
    at = local(tz, 2024, 3, 9, 12)
    got = next_change(False, secs, at, tz)
    assert got == local(tz, 2024, 3, 17, 2, 10)  # skipped on the 10th, fires a week later
    assert not any(is_active(False, secs, utc(2024, 3, 10, 6) + timedelta(minutes=m), tz) for m in range(120))


def test_spring_forward_section_straddling_gap() -> None:
    tz = "America/New_York"
    secs = [S(0, 5400, 9000)]  # Sunday 01:30-02:30
    start = next_change(False, secs, local(tz, 2024, 3, 10, 0), tz)
    assert start == local(tz, 2024, 3, 10, 1, 30) == utc(2024, 3, 10, 6, 30)
    end = next_change(False, secs, start, tz)
    assert end == utc(2024, 3, 10, 7)  # the transition: wall clock jumps to 03:00 EDT


def test_fall_back_fold_runs_twice() -> None:
    tz = "America/New_York"  # 2024-11-03 02:00 EDT -> 01:00 EST (06:00 UTC)
    secs = [S(0, 4500, 6300)]  # Sunday 01:15-01:45
    t = utc(2024, 11, 3, 0)
    changes = []
    for _ in range(4):
        t = next_change(False, secs, t, tz)  # type: ignore[assignment]
        changes.append(t.astimezone(UTC))
    assert changes == [utc(2024, 11, 3, 5, 15), utc(2024, 11, 3, 5, 45),
                       utc(2024, 11, 3, 6, 15), utc(2024, 11, 3, 6, 45)]
    second = next_change(False, secs, utc(2024, 11, 3, 5, 50), tz)
    assert second is not None
    shown = second.astimezone(ZoneInfo(tz))
    assert (shown.hour, shown.minute, shown.fold) == (1, 15, 1)  # 01:15 EST, the second 01:15


def test_fall_back_change_at_transition() -> None:
    tz = "America/New_York"
    secs = [S(0, 1800, 5400)]  # Sunday 00:30-01:30
    # 01:40 EDT is inactive; at 06:00 UTC the clock reads 01:00 EST again: active
    assert next_change(False, secs, utc(2024, 11, 3, 5, 40), tz) == utc(2024, 11, 3, 6)
    assert next_change(False, secs, utc(2024, 11, 3, 6), tz) == utc(2024, 11, 3, 6, 30)


def test_london_spring_forward() -> None:
    tz = "Europe/London"  # 2024-03-31 01:00 GMT -> 02:00 BST (01:00 UTC)
    secs = [S(0, 0, 5400)]  # Sunday 00:00-01:30
    assert next_change(False, secs, utc(2024, 3, 31, 0, 10), tz) == utc(2024, 3, 31, 1)


# ---------------------------------------------------------------- next_change: properties

def check_change(sections: list[TimeSection], at: datetime, tz: str, c: datetime | None) -> None:
    before = is_active(False, sections, at, tz)
    if c is None:
        assert week_coverage_seconds(sections) in (0, SECONDS_PER_WEEK)
        return
    assert c.tzinfo is not None and c > at
    assert c - at <= timedelta(days=40)
    span = c - at
    for k in range(1, 24):  # sample points on (at, c)
        assert is_active(False, sections, at + span * k / 24, tz) == before
    assert is_active(False, sections, c - US, tz) == before
    assert is_active(False, sections, c, tz) != before


@SLOW
@given(st.data(), section_lists, st.sampled_from(ZONES))
def test_next_change_properties(data: st.DataObject, sections: list[TimeSection], tz: str) -> None:
    at = data.draw(instants(tz))
    c = next_change(False, sections, at, tz)
    check_change(sections, at, tz, c)
    assert next_change(True, sections, at, tz) is None
    assert (c is None) == (week_coverage_seconds(sections) in (0, SECONDS_PER_WEEK))


@SLOW
@given(st.data(), st.lists(grid_sections(), min_size=1, max_size=5), st.sampled_from(ZONES))
def test_next_change_matches_brute_force_on_grid(data: st.DataObject, sections: list[TimeSection],
                                                 tz: str) -> None:
    # Sections, instants and every offset/transition of these zones lie on a 15-minute grid,
    # so stepping the grid finds the exact first change.
    at = data.draw(instants(tz, grid=900))
    want = None
    if week_coverage_seconds(sections) not in (0, SECONDS_PER_WEEK):
        before = brute_active(sections, at, tz)
        t = at
        for _ in range(40 * 96):
            t += timedelta(seconds=900)
            if brute_active(sections, t, tz) != before:
                want = t
                break
        assert want is not None
    got = next_change(False, sections, at, tz)
    assert got == want


@FAST
@given(st.data(), st.lists(any_sections(), max_size=4), st.sampled_from(ZONES))
def test_next_change_chain(data: st.DataObject, sections: list[TimeSection], tz: str) -> None:
    # successive changes alternate the value
    t = data.draw(instants(tz))
    value = is_active(False, sections, t, tz)
    for _ in range(4):
        c = next_change(False, sections, t, tz)
        if c is None:
            return
        assert is_active(False, sections, c, tz) != value
        t, value = c, not value
