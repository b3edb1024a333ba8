"""Local hours and days (streams.timebuckets) against a brute-force reference.

The reference defines a local hour as DESIGN.md does, from the wall clock alone: the instants
sharing (local date, local hour, UTC offset). It finds an hour's start by walking back second by
second while that label holds, with no knowledge of how `timebuckets` caches or bisects.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.timebuckets import (
    HOUR_MS,
    day_of,
    day_start_ms,
    hour_end_ms,
    hour_start_ms,
    hours_of_day,
    is_utc,
    split_seconds,
)

ZONES = [
    ZoneInfo(name)
    for name in (
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "Asia/Kolkata",
        "Australia/Lord_Howe",
        "Asia/Kathmandu",
        "America/St_Johns",
        "Pacific/Chatham",
        "Asia/Beirut",
        "Etc/Zulu",  # UTC by a name that takes the general path
    )
]


def ms(text: str) -> int:
    """Epoch ms of an ISO 8601 instant with an offset."""
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def utc(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat()


# -- the reference ---------------------------------------------------------------------------


def ref_label(second: int, zone: ZoneInfo) -> tuple[date, int, timedelta | None]:
    local = datetime.fromtimestamp(second, zone)
    return local.date(), local.hour, local.utcoffset()


def _ref_start_of_label(second: int, zone: ZoneInfo) -> int:
    label = ref_label(second, zone)
    start = second
    while ref_label(start - 60, zone) == label:  # a label holds on one interval: skip minutes
        start -= 60
    while ref_label(start - 1, zone) == label:
        start -= 1
    return start


_label_starts: dict[tuple[object, ...], int] = {}


def ref_hour_start_s(second: int, zone: ZoneInfo) -> int:
    """The first second of the local hour holding `second` (all boundaries are whole seconds)."""
    key = (zone.key, *ref_label(second, zone))
    start = _label_starts.get(key)
    if start is None:
        start = _label_starts[key] = _ref_start_of_label(second, zone)
    return start


def ref_hour_start_ms(ts_ms: int, zone: ZoneInfo) -> int:
    return ref_hour_start_s(ts_ms // 1000, zone) * 1000


# -- examples ----------------------------------------------------------------------------------


def test_utc_hours_start_on_the_hour() -> None:
    zone = ZoneInfo("UTC")
    assert is_utc(zone)
    t = ms("2024-05-01T12:40:00.123+00:00")
    assert hour_start_ms(t, zone) == ms("2024-05-01T12:00:00+00:00")
    assert hour_end_ms(hour_start_ms(t, zone), zone) == ms("2024-05-01T13:00:00+00:00")
    assert day_of(hour_start_ms(t, zone), zone) == date(2024, 5, 1)


def test_kolkata_hours_start_at_half_past_utc() -> None:
    zone = ZoneInfo("Asia/Kolkata")
    t = ms("2024-05-01T12:10:00+00:00")  # 17:40 local
    assert hour_start_ms(t, zone) == ms("2024-05-01T11:30:00+00:00")
    assert hour_end_ms(hour_start_ms(t, zone), zone) == ms("2024-05-01T12:30:00+00:00")
    # 18:29:59 UTC is 23:59:59 local; 18:30 UTC is the next local date.
    assert day_of(hour_start_ms(ms("2024-05-01T18:29:59+00:00"), zone), zone) == date(2024, 5, 1)
    assert day_of(hour_start_ms(ms("2024-05-01T18:30:00+00:00"), zone), zone) == date(2024, 5, 2)


@pytest.mark.parametrize(
    ("zone", "day", "count", "hours"),
    [
        ("Europe/Berlin", date(2024, 3, 31), 23, 23.0),
        ("Europe/Berlin", date(2024, 10, 27), 25, 25.0),
        ("Europe/Berlin", date(2024, 10, 28), 24, 24.0),
        ("America/New_York", date(2024, 3, 10), 23, 23.0),
        ("America/New_York", date(2024, 11, 3), 25, 25.0),
        ("Australia/Lord_Howe", date(2024, 10, 6), 24, 23.5),  # 02:00 → 02:30
        ("Australia/Lord_Howe", date(2024, 4, 7), 25, 24.5),  # 02:00 → 01:30
        ("Pacific/Chatham", date(2024, 4, 7), 26, 25.0),  # 03:45 → 02:45: 03:00, 02:45, 03:00
        ("Asia/Kolkata", date(2024, 3, 31), 24, 24.0),
        ("Asia/Beirut", date(2024, 10, 26), 25, 25.0),  # 00:00 on the 27th → 23:00 on the 26th
        ("America/St_Johns", date(2008, 11, 2), 25, 24 + 1 / 60),  # 00:01 → 23:01 on the 1st
        ("America/St_Johns", date(2008, 11, 1), 25, 24 + 59 / 60),
        ("Pacific/Apia", date(2011, 12, 30), 0, 0.0),  # Samoa skipped this date
    ],
)
def test_days_with_offset_changes(zone: str, day: date, count: int, hours: float) -> None:
    tz = ZoneInfo(zone)
    starts = hours_of_day(day, tz)
    assert len(starts) == count
    assert sum(hour_end_ms(h, tz) - h for h in starts) / HOUR_MS == pytest.approx(hours)
    assert all(day_of(h, tz) == day for h in starts)
    if starts:
        assert day_start_ms(day, tz) == starts[0]
    else:
        with pytest.raises(ValueError, match="does not exist"):
            day_start_ms(day, tz)


def test_a_date_can_resume_after_an_hour_of_the_previous_date() -> None:
    zone = ZoneInfo("America/St_Johns")
    starts = hours_of_day(date(2008, 11, 2), zone)
    # 00:00-00:01 (-02:30), then 23:01-00:00 of Nov 1 (-03:30), then the rest of Nov 2.
    assert hour_end_ms(starts[0], zone) - starts[0] == 60_000
    between = hour_end_ms(starts[0], zone)
    assert day_of(between, zone) == date(2008, 11, 1) and starts[1] == hour_end_ms(between, zone)


def test_new_york_autumn_has_two_one_o_clocks_with_distinct_keys() -> None:
    zone = ZoneInfo("America/New_York")
    first = hour_start_ms(ms("2024-11-03T01:30:00-04:00"), zone)
    second = hour_start_ms(ms("2024-11-03T01:30:00-05:00"), zone)
    assert second - first == HOUR_MS
    assert datetime.fromtimestamp(first / 1000, zone).hour == 1
    assert datetime.fromtimestamp(second / 1000, zone).hour == 1


def test_lord_howe_half_hour_bucket_after_the_clock_goes_back() -> None:
    zone = ZoneInfo("Australia/Lord_Howe")
    # 2024-04-07 02:00 +11:00 becomes 01:30 +10:30: a 30-minute hour 01:30-02:00 follows.
    change = ms("2024-04-07T02:00:00+11:00")
    assert hour_start_ms(change, zone) == change
    assert hour_end_ms(change, zone) - change == HOUR_MS // 2
    assert hour_start_ms(change - 1, zone) == ms("2024-04-07T01:00:00+11:00")


def test_split_seconds_design_example() -> None:
    zone = ZoneInfo("UTC")
    pieces = list(
        split_seconds(ms("2024-05-01T12:40:00+00:00"), ms("2024-05-01T14:10:00+00:00"), zone)
    )
    assert pieces == [
        (ms("2024-05-01T12:00:00+00:00"), 1200),
        (ms("2024-05-01T13:00:00+00:00"), 3600),
        (ms("2024-05-01T14:00:00+00:00"), 600),
    ]


def test_split_seconds_floors_each_end() -> None:
    zone = ZoneInfo("UTC")
    h = ms("2024-05-01T12:00:00+00:00")
    # [12:59:59.900, 13:00:00.100]: 0.1 s in each hour, but the tick at 13:00:00 is in hour 12.
    assert list(split_seconds(h + HOUR_MS - 100, h + HOUR_MS + 100, zone)) == [(h, 1)]
    assert list(split_seconds(h + 100, h + 900, zone)) == []  # no whole-second tick inside
    assert list(split_seconds(h, h, zone)) == []


# -- properties --------------------------------------------------------------------------------

INTERESTING = [
    ms("2024-03-31T01:00:00+00:00"),  # Berlin spring forward
    ms("2024-10-27T01:00:00+00:00"),  # Berlin fall back
    ms("2024-03-10T07:00:00+00:00"),  # New York spring forward
    ms("2024-11-03T06:00:00+00:00"),  # New York fall back
    ms("2024-04-06T15:00:00+00:00"),  # Lord Howe back 30 minutes
    ms("2024-10-05T15:30:00+00:00"),  # Lord Howe forward 30 minutes
    ms("2024-04-06T14:00:00+00:00"),  # Chatham fall back
    ms("2024-11-03T04:30:00+00:00"),  # St John's fall back
    ms("2024-12-31T18:30:00+00:00"),  # Kolkata new year
    ms("2025-01-01T00:00:00+00:00"),
]

instants = st.one_of(
    st.builds(
        lambda base, delta: base + delta,
        st.sampled_from(INTERESTING),
        st.integers(-3 * HOUR_MS, 3 * HOUR_MS),
    ),
    st.integers(ms("2000-01-01T00:00:00+00:00"), ms("2060-01-01T00:00:00+00:00")),
)
zones = st.sampled_from(ZONES)


@settings(max_examples=300, deadline=None)
@given(instants, zones)
def test_hour_start_matches_the_wall_clock_reference(t: int, zone: ZoneInfo) -> None:
    start = hour_start_ms(t, zone)
    assert start == ref_hour_start_ms(t, zone), (utc(t), zone.key)
    end = hour_end_ms(start, zone)
    assert start <= t < end
    assert 0 < end - start <= HOUR_MS
    assert start % 1000 == 0 and end % 1000 == 0
    assert hour_start_ms(start, zone) == start
    assert hour_start_ms(end, zone) == end  # the next hour starts where this one ends
    assert hour_end_ms(t, zone) == end
    assert ref_label(start // 1000, zone) == ref_label((end - 1) // 1000, zone)
    assert ref_label(start // 1000, zone) != ref_label(end // 1000, zone)


@settings(max_examples=150, deadline=None)
@given(st.dates(date(2000, 1, 2), date(2059, 12, 30)), zones)
def test_days_are_their_hours(day: date, zone: ZoneInfo) -> None:
    starts = hours_of_day(day, zone)
    assert starts == sorted(starts) and day_start_ms(day, zone) == starts[0]
    assert all(day_of(h, zone) == day for h in starts)
    assert all(datetime.fromtimestamp(h / 1000, zone).date() == day for h in starts)
    # Nothing dated `day` just outside; anything between two of its hours is of a next-door date.
    assert day_of(hour_start_ms(starts[0] - 1, zone), zone) != day
    assert day_of(hour_end_ms(starts[-1], zone), zone) != day
    for a, b in zip(starts, starts[1:], strict=False):
        h = hour_end_ms(a, zone)
        while h < b:
            assert abs((day_of(h, zone) - day).days) == 1
            h = hour_end_ms(h, zone)
    length = sum(hour_end_ms(h, zone) - h for h in starts)
    assert 23 * HOUR_MS <= length <= 25 * HOUR_MS
    # 24 hours; 23 to 26 when the offset changes (Chatham: a 15-minute 02:45 hour).
    assert len(starts) == 24 or (23 <= len(starts) <= 26 and length != 24 * HOUR_MS)


@settings(max_examples=200, deadline=None)
@given(instants, st.integers(0, 5 * HOUR_MS), zones)
def test_split_seconds_telescopes_over_local_hours(a: int, length: int, zone: ZoneInfo) -> None:
    b = a + length
    pieces = list(split_seconds(a, b, zone))
    assert sum(s for _, s in pieces) == b // 1000 - a // 1000
    hours = [h for h, _ in pieces]
    assert hours == sorted(set(hours))
    for hour, seconds in pieces:
        assert hour_start_ms(hour, zone) == hour
        assert 0 < seconds <= (hour_end_ms(hour, zone) - hour) // 1000
    # Brute force: the second ending at each whole-second tick in (a, b] belongs to its hour.
    expected: dict[int, int] = {}
    for k in range(a // 1000 + 1, b // 1000 + 1):
        hour = ref_hour_start_s(k - 1, zone) * 1000
        expected[hour] = expected.get(hour, 0) + 1
    assert dict(pieces) == expected


def test_utc_by_another_name_agrees_with_the_fast_path() -> None:
    fast, general = ZoneInfo("UTC"), ZoneInfo("Etc/Zulu")
    assert is_utc(fast) and not is_utc(general)
    for t in range(ms("2024-01-01T00:00:00+00:00"), ms("2024-01-03T00:00:00+00:00"), 997_001):
        assert hour_start_ms(t, fast) == hour_start_ms(t, general)
        assert hour_end_ms(t, fast) == hour_end_ms(t, general)
