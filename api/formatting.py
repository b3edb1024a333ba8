"""How the pages show figures (JSON and CSV keep raw numbers: seconds for time on site)."""

from __future__ import annotations

__all__ = ["format_time_on_site"]

_UNITS = (("day", 86_400), ("hour", 3_600), ("min", 60))


def format_time_on_site(seconds: int) -> str:
    """ "2 days 3 hours 5 mins", as Askbot shows it: zero parts left out, seconds truncated,
    "<1 min" under a minute; unlike Askbot, "1 day", "1 hour", "1 min" in the singular, and
    "0 mins" for no time at all (so an idle user does not read as a short visit)."""
    if seconds < 0:
        raise ValueError(f"time on site cannot be negative: {seconds}")
    if seconds == 0:
        return "0 mins"
    if seconds < 60:
        return "<1 min"
    parts = []
    for name, size in _UNITS:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {name}{'' if count == 1 else 's'}")
    return " ".join(parts)
