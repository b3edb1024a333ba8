"""Local hours as UTC instants: the buckets every hourly figure is keyed by.

DESIGN.md: hours and days are UTC unless `ANALYTICS_TIME_ZONE` names another zone. An hour
bucket is keyed by the UTC instant (epoch ms) at which it starts, so the key is unambiguous even
when a local wall-clock hour occurs twice (the autumn DST change) and it is what ClickHouse stores
in `hour` (DateTime, UTC).

Definition (exact in every zone, including non-whole-hour offsets and half-hour DST shifts):
a *local hour* is a maximal run of instants sharing the same local date, local hour of day and
UTC offset. Its boundaries are therefore (a) the instants whose local wall time is hh:00:00 and
(b) the instants at which the zone's UTC offset changes. Consequences:

* UTC and whole-hour zones: hours start at :00 UTC. Asia/Kolkata (+05:30): at :30 UTC.
* A DST change yields a local day of 23 or 25 hours (Australia/Lord_Howe, which shifts by 30
  minutes: 24 or 25 buckets, one of them 30 minutes long; Pacific/Chatham, which changes at
  02:45/03:45, has a 15-minute hour). A bucket lasts at most one hour and never spans two local
  dates, so `day_of` (the local date of its start) is well defined and keys the daily figures.
  A date's hours are not always contiguous, though (see `hours_of_day`).
* Every boundary is a whole second (tzdata offsets and transitions are whole seconds), so
  splitting a span at hour boundaries and flooring to seconds telescopes exactly.

Assumption, true of every tzdata zone: the offset changes at most once within any 5 minutes.
Computed boundaries are cached per (zone, UTC hour), so the per-event cost is a dict look-up
and a bisect; UTC takes an arithmetic fast path.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from functools import lru_cache
from typing import Final
from zoneinfo import ZoneInfo

__all__ = [
    "HOUR_MS",
    "day_of",
    "day_start_ms",
    "hour_end_ms",
    "hour_start_ms",
    "hours_of_day",
    "is_utc",
    "split_seconds",
]

HOUR_MS: Final = 3_600_000
_HOUR_S: Final = 3600
_DAY_WINDOW_MS: Final = 16 * HOUR_MS  # beyond any UTC offset
_SAMPLE_S: Final = 300  # offsets are sampled every 5 minutes when looking for a change
_UTC_KEYS: Final = frozenset({"UTC", "Etc/UTC", "Etc/UCT", "GMT", "Etc/GMT", "Universal"})


def is_utc(zone: ZoneInfo) -> bool:
    """True for the usual names of UTC: they take the arithmetic fast path (any other zone,
    UTC under a rarer alias included, takes the general path, which gives the same answers)."""
    return zone.key in _UTC_KEYS


def _offset_s(zone: ZoneInfo, epoch_s: int) -> int:
    """The zone's UTC offset in seconds at an instant (exact: `fromtimestamp` resolves folds)."""
    offset = datetime.fromtimestamp(epoch_s, zone).utcoffset()
    assert offset is not None  # a ZoneInfo always answers
    return int(offset.total_seconds())


def _change_in(zone: ZoneInfo, lo: int, hi: int, off_hi: int) -> int:
    """The first second in (lo, hi] with offset `off_hi`, given that lo has another offset."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _offset_s(zone, mid) == off_hi:
            hi = mid
        else:
            lo = mid
    return hi


@lru_cache(maxsize=1 << 16)
def _boundaries(zone: ZoneInfo, utc_hour: int) -> tuple[int, ...]:
    """The sorted local-hour boundaries (epoch ms) inside UTC hour [utc_hour, utc_hour + 1).

    Offset changes are found by sampling the offset every 5 minutes (from one second before the
    hour, so a change exactly at its start is seen) and bisecting between differing samples.
    """
    lo = utc_hour * _HOUR_S
    hi = lo + _HOUR_S
    samples = [lo - 1, *range(lo, hi, _SAMPLE_S), hi - 1]
    offsets = [_offset_s(zone, s) for s in samples]
    found: set[int] = set()
    if offsets[0] != offsets[1]:
        found.add(lo)  # the offset changes exactly at this UTC hour's start
    segments: list[tuple[int, int]] = [(lo, offsets[1])]  # (segment start, its offset)
    for i in range(2, len(samples)):
        if offsets[i] != offsets[i - 1]:
            start = _change_in(zone, samples[i - 1], samples[i], offsets[i])
            segments.append((start, offsets[i]))
            found.add(start)
    ends = [s for s, _ in segments[1:]] + [hi]
    for (start, offset), end in zip(segments, ends, strict=True):
        first_whole = start + (-(start + offset)) % _HOUR_S  # first local hh:00:00 >= start
        if first_whole < end:
            found.add(first_whole)
    return tuple(sorted(s * 1000 for s in found))


def hour_start_ms(ts_ms: int, zone: ZoneInfo) -> int:
    """The start (epoch ms) of the local hour holding `ts_ms`: the hourly summaries' key."""
    if zone.key in _UTC_KEYS:
        return ts_ms - ts_ms % HOUR_MS
    utc_hour = ts_ms // HOUR_MS
    bounds = _boundaries(zone, utc_hour)
    i = bisect_right(bounds, ts_ms)
    if i:
        return bounds[i - 1]
    # A local hour lasts at most an hour, so it started in the previous UTC hour.
    return _boundaries(zone, utc_hour - 1)[-1]


def hour_end_ms(hour_start: int, zone: ZoneInfo) -> int:
    """The end (exclusive, epoch ms) of the local hour starting at `hour_start`, which is the
    start of the next one; accepts any instant and answers for the hour holding it."""
    if zone.key in _UTC_KEYS:
        return hour_start - hour_start % HOUR_MS + HOUR_MS
    utc_hour = hour_start // HOUR_MS
    bounds = _boundaries(zone, utc_hour)
    i = bisect_right(bounds, hour_start)
    if i < len(bounds):
        return bounds[i]
    return _boundaries(zone, utc_hour + 1)[0]


def day_of(hour_start: int, zone: ZoneInfo) -> date:
    """The local date of the hour starting at `hour_start` (a local hour never spans two dates):
    the key of the daily summaries."""
    return datetime.fromtimestamp(hour_start // 1000, zone).date()


def hours_of_day(day: date, zone: ZoneInfo) -> list[int]:
    """The starts of the local hours dated `day` (by `day_of`), in time order.

    24 of them; 23 or 25 on a day the offset changes, up to 26 in zones that change at odd
    times (Pacific/Chatham, 03:45 → 02:45: hours 03:00, 02:45 and 03:00 of 45, 15 and 60
    minutes); none for a date the zone skipped (Pacific/Apia, 2011-12-30). Usually contiguous,
    but not always: when the clock goes back across midnight, an hour of the previous date
    comes between (America/St_Johns, 2008-11-02 00:01 → 2008-11-01 23:01).

    Found by walking every local hour of a window that any date's hours fall in (UTC offsets
    stay within ±16 h); meant for ranges and checks, not for the per-event path.
    """
    midnight_ms = int(datetime.combine(day, time(0), tzinfo=UTC).timestamp()) * 1000
    start = hour_start_ms(midnight_ms - _DAY_WINDOW_MS, zone)
    stop = midnight_ms + 24 * HOUR_MS + _DAY_WINDOW_MS
    hours = []
    while start < stop:
        if day_of(start, zone) == day:
            hours.append(start)
        start = hour_end_ms(start, zone)
    return hours


def day_start_ms(day: date, zone: ZoneInfo) -> int:
    """The start of the first local hour dated `day`; `ValueError` for a date the zone skipped."""
    hours = hours_of_day(day, zone)
    if not hours:
        raise ValueError(f"{day} does not exist in {zone.key}")
    return hours[0]


def split_seconds(first_ms: int, last_ms: int, zone: ZoneInfo) -> Iterator[tuple[int, int]]:
    """Split the span [first_ms, last_ms] into (hour start, whole seconds) pieces.

    A piece [a, b) counts floor(b/1000) - floor(a/1000) seconds, so the pieces of a span always
    sum to floor(last/1000) - floor(first/1000) exactly and no float is ever involved. Pieces of
    zero seconds are not yielded (the instant `last_ms` itself has no length).
    """
    start = first_ms
    while start < last_ms:
        hour = hour_start_ms(start, zone)
        end = min(hour_end_ms(hour, zone), last_ms)
        seconds = end // 1000 - start // 1000
        if seconds:
            yield hour, seconds
        start = end
