"""Time on site as the pages show it."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.formatting import format_time_on_site


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0 mins"),
        (1, "<1 min"),
        (59, "<1 min"),
        (60, "1 min"),
        (119, "1 min"),
        (3_600, "1 hour"),
        (3_660, "1 hour 1 min"),
        (86_400, "1 day"),
        (2 * 86_400 + 3 * 3_600 + 5 * 60 + 59, "2 days 3 hours 5 mins"),
        (86_400 + 60, "1 day 1 min"),
        (400 * 86_400, "400 days"),
    ],
)
def test_time_on_site_reads_like_askbot(seconds: int, shown: str) -> None:
    assert format_time_on_site(seconds) == shown


def test_negative_time_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        format_time_on_site(-1)


_PART = re.compile(r"(\d+) (day|hour|min)s?")


@given(st.integers(60, 10**9))
def test_the_parts_add_up_to_the_whole_minutes(seconds: int) -> None:
    sizes = {"day": 86_400, "hour": 3_600, "min": 60}
    parts = _PART.findall(format_time_on_site(seconds))
    assert sum(int(n) * sizes[unit] for n, unit in parts) == seconds // 60 * 60
    assert all(int(n) > 0 for n, _ in parts)
