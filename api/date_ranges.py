"""The `<dates>` of the report URLs: nine named ranges and custom ones, as inclusive days.

DESIGN.md: `last-7-days` (today and the 6 days before), `last-30-days`, `this-month`,
`last-month`, `last-3-months` and `last-6-months` (whole months before this one), `this-year`,
`last-year`, `all-time` (from the first day with data), and `YYYY-MM-DD..YYYY-MM-DD`; both
ends are included (Askbot's Users view drops the first day and its Activity view the last:
askbot-reference.md §6.3). "Today" is the date in ANALYTICS_TIME_ZONE, which the caller
passes, so this module is pure.

The previous period (`?compare=previous`) has the range's own shape, just before it:

* a run of days (`last-7-days`, `last-30-days`, a custom range, `all-time`): as many days,
  ending the day before;
* whole months (`last-month`, `last-3-months`, `last-6-months`) and `last-year`: as many whole
  months before;
* `this-month` and `this-year` (to date): the same span of the month or year before, its last
  day clamped to that month's length (March 31 → February 28 or 29).
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Final

__all__ = ["NAMED_RANGES", "BadDates", "DayRange", "previous_period", "resolve_dates"]

NAMED_RANGES: Final = (
    "last-7-days",
    "last-30-days",
    "this-month",
    "last-month",
    "last-3-months",
    "last-6-months",
    "this-year",
    "last-year",
    "all-time",
)
ACCEPTED: Final = ", ".join(NAMED_RANGES) + ", YYYY-MM-DD..YYYY-MM-DD"
_CUSTOM: Final = re.compile(r"(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})", re.ASCII)
_WHOLE_MONTHS: Final = {"last-month": 1, "last-3-months": 3, "last-6-months": 6, "last-year": 12}
_EARLIEST: Final = date(2000, 1, 1)  # events before 2000 are refused (DESIGN.md)


class BadDates(ValueError):
    """A `<dates>` value that is none of the accepted forms; the message lists them."""


@dataclass(frozen=True)
class DayRange:
    """Days `first` to `last`, both included; `slug` is the URL form it came from."""

    first: date
    last: date
    slug: str

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1


def resolve_dates(value: str, today: date, first_with_data: date | None) -> DayRange:
    """The days a `<dates>` value means on `today`; `all-time` starts at `first_with_data`
    (today when there is no data). Raises `BadDates`."""
    if value == "all-time":
        return DayRange(min(first_with_data or today, today), today, value)
    if value in NAMED_RANGES:
        first, last = _named(value, today)
        return DayRange(first, last, value)
    match = _CUSTOM.fullmatch(value)
    if match is None:
        raise BadDates(f"unknown dates {value!r}; accepted: {ACCEPTED}")
    try:
        first, last = date.fromisoformat(match[1]), date.fromisoformat(match[2])
    except ValueError as exc:
        raise BadDates(f"invalid date in {value!r} ({exc}); accepted: {ACCEPTED}") from None
    if first > last:
        raise BadDates(f"dates {value!r} end before they start; the first day comes first")
    if first < _EARLIEST:
        raise BadDates(f"dates {value!r} start before {_EARLIEST}: there is no data before it")
    return DayRange(first, last, value)


def _named(slug: str, today: date) -> tuple[date, date]:
    this_month = today.replace(day=1)
    if slug == "last-7-days":
        return today - timedelta(days=6), today
    if slug == "last-30-days":
        return today - timedelta(days=29), today
    if slug == "this-month":
        return this_month, today
    if slug == "this-year":
        return today.replace(month=1, day=1), today
    if slug == "last-year":
        return date(today.year - 1, 1, 1), date(today.year - 1, 12, 31)
    months = _WHOLE_MONTHS[slug]
    return _add_months(this_month, -months), this_month - timedelta(days=1)


def previous_period(current: DayRange) -> DayRange:
    """The period `?compare=previous` sets beside `current` (see the module docstring)."""
    slug = current.slug
    if slug in _WHOLE_MONTHS:
        months = _WHOLE_MONTHS[slug]
        first = _add_months(current.first, -months)
        return DayRange(first, current.first - timedelta(days=1), slug)
    if slug in ("this-month", "this-year"):
        months = 1 if slug == "this-month" else 12
        first = _add_months(current.first, -months)
        return DayRange(first, _clamped(first, current.last.day, current.last.month, months), slug)
    last = current.first - timedelta(days=1)
    return DayRange(last - timedelta(days=current.days - 1), last, slug)


def _clamped(first: date, day: int, month: int, months: int) -> date:
    """The same day of the month in the period starting `first`, clamped to the month's end."""
    target_month = first.month if months == 1 else month
    length = calendar.monthrange(first.year, target_month)[1]
    return date(first.year, target_month, min(day, length))


def _add_months(day: date, months: int) -> date:
    """The first of the month `months` after (or before) `day`'s month; `day` is a first."""
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)
