"""The report date ranges (`api.date_ranges`): every named range on fixed "today"s (Askbot's
verified table, month and year edges, leap days), custom ranges and their errors, and
properties of every range and its previous period over a century of days."""

from __future__ import annotations

import calendar
from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.date_ranges import NAMED_RANGES, BadDates, DayRange, previous_period, resolve_dates

D = date


def _range(slug: str, today: date, first_with_data: date | None = None) -> tuple[date, date]:
    r = resolve_dates(slug, today, first_with_data)
    return r.first, r.last


# Askbot's table (askbot-reference.md §6.3), verified there for 2024-03-05; ours includes both
# ends and starts all-time at the first day with data.
ASKBOT_TODAY = D(2024, 3, 5)
EXPECTED = {
    "last-7-days": (D(2024, 2, 28), D(2024, 3, 5)),
    "last-30-days": (D(2024, 2, 5), D(2024, 3, 5)),
    "this-month": (D(2024, 3, 1), D(2024, 3, 5)),
    "last-month": (D(2024, 2, 1), D(2024, 2, 29)),
    "last-3-months": (D(2023, 12, 1), D(2024, 2, 29)),
    "last-6-months": (D(2023, 9, 1), D(2024, 2, 29)),
    "this-year": (D(2024, 1, 1), D(2024, 3, 5)),
    "last-year": (D(2023, 1, 1), D(2023, 12, 31)),
    "all-time": (D(2023, 7, 9), D(2024, 3, 5)),
}


@pytest.mark.parametrize("slug", NAMED_RANGES)
def test_every_named_range_on_askbots_day(slug: str) -> None:
    assert _range(slug, ASKBOT_TODAY, D(2023, 7, 9)) == EXPECTED[slug]


@pytest.mark.parametrize(
    ("today", "slug", "first", "last"),
    [
        # a leap day
        (D(2024, 2, 29), "last-7-days", D(2024, 2, 23), D(2024, 2, 29)),
        (D(2024, 2, 29), "this-month", D(2024, 2, 1), D(2024, 2, 29)),
        (D(2024, 2, 29), "last-month", D(2024, 1, 1), D(2024, 1, 31)),
        (D(2024, 2, 29), "last-year", D(2023, 1, 1), D(2023, 12, 31)),
        # the first day of a year: "this" ranges are one day, "last" ranges are last year's
        (D(2025, 1, 1), "this-month", D(2025, 1, 1), D(2025, 1, 1)),
        (D(2025, 1, 1), "this-year", D(2025, 1, 1), D(2025, 1, 1)),
        (D(2025, 1, 1), "last-month", D(2024, 12, 1), D(2024, 12, 31)),
        (D(2025, 1, 1), "last-3-months", D(2024, 10, 1), D(2024, 12, 31)),
        (D(2025, 1, 1), "last-6-months", D(2024, 7, 1), D(2024, 12, 31)),
        (D(2025, 1, 1), "last-30-days", D(2024, 12, 3), D(2025, 1, 1)),
        # the last day of a month and of a year
        (D(2025, 3, 31), "last-month", D(2025, 2, 1), D(2025, 2, 28)),
        (D(2025, 3, 31), "last-3-months", D(2024, 12, 1), D(2025, 2, 28)),
        (D(2025, 12, 31), "this-year", D(2025, 1, 1), D(2025, 12, 31)),
        (D(2025, 12, 31), "last-6-months", D(2025, 6, 1), D(2025, 11, 30)),
    ],
)
def test_named_ranges_at_month_and_year_edges(
    today: date, slug: str, first: date, last: date
) -> None:
    assert _range(slug, today) == (first, last)


def test_all_time_without_data_is_today() -> None:
    assert _range("all-time", D(2026, 11, 25), None) == (D(2026, 11, 25), D(2026, 11, 25))


def test_custom_ranges_include_both_ends() -> None:
    r = resolve_dates("2024-02-28..2024-03-01", ASKBOT_TODAY, None)
    assert (r.first, r.last, r.days) == (D(2024, 2, 28), D(2024, 3, 1), 3)
    assert resolve_dates("2024-02-29..2024-02-29", ASKBOT_TODAY, None).days == 1


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("yesterday", "accepted: last-7-days, last-30-days"),
        ("2024-02-30..2024-03-01", "invalid date"),
        ("2023-02-29..2023-03-01", "invalid date"),
        ("2024-03-02..2024-03-01", "end before they start"),
        ("1999-12-31..2000-01-02", "start before 2000-01-01"),
        ("2024-3-1..2024-3-2", "YYYY-MM-DD..YYYY-MM-DD"),
        ("2024-03-01..", "YYYY-MM-DD..YYYY-MM-DD"),
        ("2024-03-01..2024-03-02x", "YYYY-MM-DD..YYYY-MM-DD"),
        ("２０２４-03-01..2024-03-02", "YYYY-MM-DD..YYYY-MM-DD"),  # non-ASCII digits
        ("LAST-7-DAYS", "accepted"),
    ],
)
def test_bad_dates_say_why_and_what_is_accepted(value: str, says: str) -> None:
    with pytest.raises(BadDates, match=None) as caught:
        resolve_dates(value, ASKBOT_TODAY, None)
    assert says in str(caught.value)


@pytest.mark.parametrize(
    ("today", "slug", "first", "last"),
    [
        (ASKBOT_TODAY, "last-7-days", D(2024, 2, 21), D(2024, 2, 27)),
        (ASKBOT_TODAY, "this-month", D(2024, 2, 1), D(2024, 2, 5)),
        (ASKBOT_TODAY, "last-3-months", D(2023, 9, 1), D(2023, 11, 30)),
        (ASKBOT_TODAY, "this-year", D(2023, 1, 1), D(2023, 3, 5)),
        (ASKBOT_TODAY, "last-year", D(2022, 1, 1), D(2022, 12, 31)),
        (D(2024, 3, 31), "this-month", D(2024, 2, 1), D(2024, 2, 29)),  # clamped, leap year
        (D(2025, 3, 31), "this-month", D(2025, 2, 1), D(2025, 2, 28)),
        (D(2024, 2, 29), "this-year", D(2023, 1, 1), D(2023, 2, 28)),  # no Feb 29 in 2023
        (D(2025, 1, 1), "last-month", D(2024, 11, 1), D(2024, 11, 30)),
    ],
)
def test_previous_periods(today: date, slug: str, first: date, last: date) -> None:
    previous = previous_period(resolve_dates(slug, today, None))
    assert (previous.first, previous.last) == (first, last)


def test_the_previous_period_of_a_custom_range_has_as_many_days() -> None:
    previous = previous_period(resolve_dates("2024-03-01..2024-03-10", ASKBOT_TODAY, None))
    assert (previous.first, previous.last) == (D(2024, 2, 20), D(2024, 2, 29))


# -- properties over every day of a century ------------------------------------------------------

days = st.dates(min_value=D(2001, 1, 1), max_value=D(2099, 12, 31))


def _months(r: DayRange) -> int:
    """Whole months covered, or -1 when the range is not made of whole months."""
    if r.first.day != 1 or r.last.day != calendar.monthrange(r.last.year, r.last.month)[1]:
        return -1
    return (r.last.year - r.first.year) * 12 + r.last.month - r.first.month + 1


@settings(max_examples=400, deadline=None)
@given(today=days, slug=st.sampled_from(NAMED_RANGES))
def test_every_named_range_ends_by_today_and_has_its_shape(today: date, slug: str) -> None:
    r = resolve_dates(slug, today, D(2000, 1, 1))
    assert r.first <= r.last <= today
    this_month = today.replace(day=1)
    if slug in ("last-7-days", "last-30-days"):
        assert r.last == today and r.days == int(slug.split("-")[1])
    elif slug in ("last-month", "last-3-months", "last-6-months"):
        assert r.last + timedelta(days=1) == this_month  # the current month is excluded
        assert _months(r) == {"last-month": 1, "last-3-months": 3, "last-6-months": 6}[slug]
    elif slug == "last-year":
        assert (r.first, r.last) == (D(today.year - 1, 1, 1), D(today.year - 1, 12, 31))
    elif slug in ("this-month", "this-year"):
        start = this_month if slug == "this-month" else D(today.year, 1, 1)
        assert (r.first, r.last) == (start, today)


@settings(max_examples=400, deadline=None)
@given(today=days, slug=st.sampled_from(NAMED_RANGES), data_days=st.integers(0, 5000))
def test_every_previous_period_comes_just_before_and_matches(
    today: date, slug: str, data_days: int
) -> None:
    current = resolve_dates(slug, today, today - timedelta(days=data_days))
    previous = previous_period(current)
    assert previous.first <= previous.last < current.first
    if slug in ("this-month", "this-year"):  # the same span of the month or year before
        if slug == "this-month":
            assert previous.first == (current.first - timedelta(days=1)).replace(day=1)
        else:
            assert previous.first == D(current.first.year - 1, 1, 1)
        assert previous.last.month == (
            previous.first.month if slug == "this-month" else today.month
        )
        month_length = calendar.monthrange(previous.last.year, previous.last.month)[1]
        assert previous.last.day == min(current.last.day, month_length)
    else:
        assert previous.last + timedelta(days=1) == current.first  # adjacent
        if slug in ("last-month", "last-3-months", "last-6-months", "last-year"):
            assert _months(previous) == _months(current) > 0
        else:
            assert previous.days == current.days


@settings(max_examples=300, deadline=None)
@given(first=days, length=st.integers(1, 800))
def test_custom_ranges_round_trip(first: date, length: int) -> None:
    last = first + timedelta(days=length - 1)
    r = resolve_dates(f"{first.isoformat()}..{last.isoformat()}", D(2100, 1, 1), None)
    assert (r.first, r.last, r.days) == (first, last, length)
