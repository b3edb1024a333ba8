"""Hourly per-user summaries: event counters by each event's own time, and time on site.

DESIGN.md "Hourly per-user summary". Every figure is an integer that adds up: counters count
events, `time_on_site` counts whole seconds of session spans (streams.timebuckets.split_seconds),
so summaries, and the deltas the worker writes as corrections, are summed and subtracted exactly.

`num_sessions_started` is an addition to the contract's columns: the sessions whose first
activity falls in the hour. It costs nothing here and lets "sessions per day" be a sum; a writer
whose table lacks the column ignores it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Final
from zoneinfo import ZoneInfo

from streams.events import Event, EventType
from streams.sessionizer import Session
from streams.timebuckets import hour_start_ms, split_seconds

__all__ = [
    "FIELDS",
    "TYPE_FIELD",
    "Counts",
    "HourSummary",
    "add_event",
    "add_session",
    "add_span",
    "add_start",
    "freeze",
    "summarize",
]


@dataclass(frozen=True, slots=True)
class HourSummary:
    """One user's figures for one local hour (or a change to them: fields may be negative)."""

    num_questions: int = 0  # question_asked
    num_answers: int = 0  # answer_posted
    num_upvotes: int = 0  # upvoted
    num_downvotes: int = 0  # downvoted
    question_views: int = 0  # question_viewed
    answer_views: int = 0  # answer_viewed
    num_comments: int = 0  # question_commented + answer_commented
    num_retags: int = 0  # question_retagged
    num_vote_cancels: int = 0  # vote_canceled
    num_logins: int = 0  # logged_in
    num_events: int = 0  # every event, `activity` included
    time_on_site: int = 0  # whole seconds of session spans inside the hour
    num_sessions_started: int = 0  # sessions whose first activity is in the hour

    def values(self) -> tuple[int, ...]:
        """The fields in `FIELDS` order (the row the worker writes)."""
        return tuple(getattr(self, name) for name in FIELDS)

    def __add__(self, other: HourSummary) -> HourSummary:
        return HourSummary(*(a + b for a, b in zip(self.values(), other.values(), strict=True)))

    def __sub__(self, other: HourSummary) -> HourSummary:
        return HourSummary(*(a - b for a, b in zip(self.values(), other.values(), strict=True)))

    def __neg__(self) -> HourSummary:
        return HourSummary(*(-a for a in self.values()))

    def is_zero(self) -> bool:
        """True when every figure is 0: such an hour (or delta) needs no row."""
        return not any(self.values())


FIELDS: Final[tuple[str, ...]] = tuple(f.name for f in fields(HourSummary))
_N: Final = len(FIELDS)
_EVENTS: Final = FIELDS.index("num_events")
_TIME: Final = FIELDS.index("time_on_site")
_STARTED: Final = FIELDS.index("num_sessions_started")

TYPE_FIELD: Final[dict[EventType, int | None]] = {
    EventType.QUESTION_ASKED: FIELDS.index("num_questions"),
    EventType.ANSWER_POSTED: FIELDS.index("num_answers"),
    EventType.UPVOTED: FIELDS.index("num_upvotes"),
    EventType.DOWNVOTED: FIELDS.index("num_downvotes"),
    EventType.QUESTION_VIEWED: FIELDS.index("question_views"),
    EventType.ANSWER_VIEWED: FIELDS.index("answer_views"),
    EventType.QUESTION_COMMENTED: FIELDS.index("num_comments"),
    EventType.ANSWER_COMMENTED: FIELDS.index("num_comments"),
    EventType.QUESTION_RETAGGED: FIELDS.index("num_retags"),
    EventType.VOTE_CANCELED: FIELDS.index("num_vote_cancels"),
    EventType.LOGGED_IN: FIELDS.index("num_logins"),
    EventType.LOGGED_OUT: None,
    EventType.USER_REGISTERED: None,
    EventType.ACTIVITY: None,
}
"""The counter (index into `FIELDS`) each event type increments besides `num_events`."""

Counts = dict[int, list[int]]
"""Mutable per-hour figures while summing (hour start → values in `FIELDS` order); `freeze`
turns them into `HourSummary`s. Lists because adding into them in place is what is cheap."""


def _row(counts: Counts, hour: int) -> list[int]:
    row = counts.get(hour)
    if row is None:
        row = counts[hour] = [0] * _N
    return row


def add_event(counts: Counts, event: Event, zone: ZoneInfo, sign: int = 1) -> None:
    """Count one event in its own hour."""
    row = _row(counts, hour_start_ms(event.ts_ms, zone))
    row[_EVENTS] += sign
    index = TYPE_FIELD[event.type]
    if index is not None:
        row[index] += sign


def add_session(counts: Counts, session: Session, zone: ZoneInfo, sign: int = 1) -> None:
    """Add (sign 1) or take away (sign -1) a session's time on site and its start."""
    add_start(counts, session.start_ms, zone, sign)
    add_span(counts, session.start_ms, session.last_ms, zone, sign)


def add_start(counts: Counts, start_ms: int, zone: ZoneInfo, sign: int = 1) -> None:
    """Count a session starting at `start_ms` in `num_sessions_started`."""
    _row(counts, hour_start_ms(start_ms, zone))[_STARTED] += sign


def add_span(counts: Counts, first_ms: int, last_ms: int, zone: ZoneInfo, sign: int = 1) -> None:
    """Add the whole seconds of [first_ms, last_ms) to `time_on_site`, hour by hour.

    Spans telescope (seconds of [a, b) + [b, c) = [a, c) in every hour), which lets a grown
    session's delta be computed from the gaps it filled alone.
    """
    for hour, seconds in split_seconds(first_ms, last_ms, zone):
        _row(counts, hour)[_TIME] += sign * seconds


def freeze(counts: Counts) -> dict[int, HourSummary]:
    """The non-zero hours as `HourSummary`s, in hour order."""
    return {hour: HourSummary(*row) for hour, row in sorted(counts.items()) if any(row)}


def summarize(
    events: Iterable[Event], sessions: Iterable[Session], zone: ZoneInfo
) -> dict[int, HourSummary]:
    """Hour start (epoch ms) → summary of already deduplicated events and their sessions.

    The batch form of what `UserState.apply` maintains incrementally (and what `verify` can
    recompute from the raw events); hours whose figures are all zero are left out.
    """
    counts: Counts = {}
    for event in events:
        add_event(counts, event, zone)
    for session in sessions:
        add_session(counts, session, zone)
    return freeze(counts)
