"""Hourly summaries (streams.hourly): DESIGN.md's examples and a per-second brute force."""

from __future__ import annotations

from collections.abc import Iterable
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.events import Event, EventType
from streams.hourly import FIELDS, TYPE_FIELD, HourSummary, summarize
from streams.sessionizer import Session
from tests.test_sessionizer import ref_sessions
from tests.test_timebuckets import ZONES, ms, ref_hour_start_ms, ref_hour_start_s

UTC = ZoneInfo("UTC")
MINUTE = 60_000
TIMEOUT = 30 * MINUTE

# -- the reference ---------------------------------------------------------------------------

REF_COUNTER: dict[str, str | None] = {
    "question_asked": "num_questions",
    "answer_posted": "num_answers",
    "upvoted": "num_upvotes",
    "downvoted": "num_downvotes",
    "question_viewed": "question_views",
    "answer_viewed": "answer_views",
    "question_commented": "num_comments",
    "answer_commented": "num_comments",
    "question_retagged": "num_retags",
    "vote_canceled": "num_vote_cancels",
    "logged_in": "num_logins",
    "logged_out": None,
    "user_registered": None,
    "activity": None,
}
"""DESIGN.md's list, written out by wire name rather than derived from the code."""


def ref_summary(
    events: Iterable[Event], sessions: Iterable[Session], zone: ZoneInfo
) -> dict[int, HourSummary]:
    """Hour → summary by brute force: each event in its hour; each session second by second.

    A session [first, last] covers the second ending at each whole-second tick in
    (first, last] (so its seconds add up to floor(last/1000) - floor(first/1000)), and that
    second belongs to the local hour that holds it.
    """
    rows: dict[int, dict[str, int]] = {}

    def row(hour: int) -> dict[str, int]:
        return rows.setdefault(hour, dict.fromkeys(FIELDS, 0))

    for event in events:
        r = row(ref_hour_start_ms(event.ts_ms, zone))
        r["num_events"] += 1
        counter = REF_COUNTER[event.type.value]
        if counter:
            r[counter] += 1
    for session in sessions:
        row(ref_hour_start_ms(session.start_ms, zone))["num_sessions_started"] += 1
        for tick in range(session.start_ms // 1000 + 1, session.last_ms // 1000 + 1):
            row(ref_hour_start_s(tick - 1, zone) * 1000)["time_on_site"] += 1
    return {h: HourSummary(**r) for h, r in sorted(rows.items()) if any(r.values())}


def ev(event_id: str, ts_ms: int, kind: EventType = EventType.ACTIVITY, user_id: int = 7) -> Event:
    return Event(event_id, kind, ts_ms, user_id)


# -- examples ----------------------------------------------------------------------------------


def test_design_example_twelve_forty_to_fourteen_ten() -> None:
    events = [ev(f"e{i}", ms("2024-05-01T12:40:00+00:00") + i * 10 * MINUTE) for i in range(10)]
    summary = summarize(events, ref_sessions(7, events, TIMEOUT), UTC)
    h12, h13, h14 = (ms(f"2024-05-01T{h}:00:00+00:00") for h in (12, 13, 14))
    assert {h: s.time_on_site for h, s in summary.items()} == {h12: 1200, h13: 3600, h14: 600}
    assert {h: s.num_events for h, s in summary.items()} == {h12: 2, h13: 6, h14: 2}
    assert summary[h12].num_sessions_started == 1
    assert summary[h13].num_sessions_started == summary[h14].num_sessions_started == 0


def test_design_example_in_kolkata_splits_at_half_past() -> None:
    zone = ZoneInfo("Asia/Kolkata")
    events = [ev(f"e{i}", ms("2024-05-01T12:40:00+00:00") + i * 10 * MINUTE) for i in range(10)]
    summary = summarize(events, ref_sessions(7, events, TIMEOUT), zone)
    # Local hours start at :30 UTC: 12:40 → 13:30 → 14:10 gives 50 and 40 minutes.
    assert {h: s.time_on_site for h, s in summary.items()} == {
        ms("2024-05-01T12:30:00+00:00"): 3000,
        ms("2024-05-01T13:30:00+00:00"): 2400,
    }


def test_every_type_counts_in_num_events_and_its_own_counter() -> None:
    t = ms("2024-05-01T12:00:00+00:00")
    events = [ev(f"e{i}", t + i, kind) for i, kind in enumerate(EventType)]
    (summary,) = summarize(events, [], UTC).values()
    assert summary.num_events == 14
    assert summary.num_comments == 2  # question and answer comments
    for name in FIELDS:
        if name not in ("num_events", "num_comments", "time_on_site", "num_sessions_started"):
            assert getattr(summary, name) == 1, name
    assert summary.time_on_site == summary.num_sessions_started == 0


def test_type_field_covers_every_type_as_designed() -> None:
    assert set(TYPE_FIELD) == set(EventType)
    for kind, index in TYPE_FIELD.items():
        assert (None if index is None else FIELDS[index]) == REF_COUNTER[kind.value]


def test_events_count_in_their_own_hour_not_the_session_start() -> None:
    a = ms("2024-05-01T12:50:00+00:00")
    events = [ev("a", a), ev("b", a + 20 * MINUTE, EventType.QUESTION_ASKED)]
    summary = summarize(events, ref_sessions(7, events, TIMEOUT), UTC)
    assert summary[ms("2024-05-01T13:00:00+00:00")].num_questions == 1
    assert summary[ms("2024-05-01T12:00:00+00:00")].num_questions == 0


def test_an_hour_with_nothing_but_a_zero_second_piece_is_left_out() -> None:
    # Session 12:59:59.500 → 13:00:00.000: one tick (13:00:00), in hour 12; hour 13 only
    # holds the event, so it has a row for the event but no time.
    a = ms("2024-05-01T13:00:00+00:00")
    events = [ev("a", a - 500), ev("b", a)]
    summary = summarize(events, ref_sessions(7, events, TIMEOUT), UTC)
    assert summary[a - 3_600_000].time_on_site == 1
    assert summary[a].time_on_site == 0 and summary[a].num_events == 1
    assert summarize([], [], UTC) == {}


def test_hour_summary_arithmetic() -> None:
    a = HourSummary(num_questions=2, time_on_site=30, num_events=5)
    b = HourSummary(num_questions=1, time_on_site=45, num_logins=1)
    assert a + b == HourSummary(num_questions=3, time_on_site=75, num_events=5, num_logins=1)
    assert a - b == HourSummary(num_questions=1, time_on_site=-15, num_events=5, num_logins=-1)
    assert (a - a).is_zero() and HourSummary().is_zero() and not a.is_zero()
    assert -a + a == HourSummary()
    assert a.values()[FIELDS.index("time_on_site")] == 30
    assert len(a.values()) == len(FIELDS) == 13
    with pytest.raises(AttributeError):
        a.num_questions = 3  # type: ignore[misc]


# -- property ----------------------------------------------------------------------------------

STARTS = [
    ms("2024-03-31T00:10:00+00:00"),  # Berlin spring forward at 01:00 UTC
    ms("2024-10-27T00:10:00+00:00"),  # Berlin fall back at 01:00 UTC
    ms("2024-11-03T05:10:00+00:00"),  # New York fall back at 06:00 UTC
    ms("2024-04-06T14:10:00+00:00"),  # Lord Howe back 30 minutes at 15:00 UTC
    ms("2024-10-05T14:40:00+00:00"),  # Lord Howe forward 30 minutes at 15:30 UTC
    ms("2024-12-31T17:40:00+00:00"),  # Kolkata midnight at 18:30 UTC
    ms("2024-05-01T22:50:00+00:00"),
]


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Event], int, ZoneInfo]:
    zone = draw(st.sampled_from(ZONES))
    timeout = draw(st.sampled_from([1000, MINUTE, TIMEOUT]))
    gaps = st.one_of(
        st.sampled_from([0, 1, timeout - 1, timeout, timeout + 1]),
        st.integers(0, 2 * timeout),
        st.integers(0, 2 * 3_600_000),
    )
    ts = draw(st.sampled_from(STARTS)) + draw(st.integers(0, 3_600_000))
    events = []
    for i in range(draw(st.integers(0, 25))):
        ts += draw(gaps)
        events.append(ev(f"e{i}", ts, draw(st.sampled_from(list(EventType)))))
    return events, timeout, zone


@settings(max_examples=150, deadline=None)
@given(histories())
def test_summarize_matches_the_brute_force(case: tuple[list[Event], int, ZoneInfo]) -> None:
    events, timeout, zone = case
    sessions = ref_sessions(7, events, timeout)
    summary = summarize(events, sessions, zone)
    assert summary == ref_summary(events, sessions, zone)
    assert sum(s.time_on_site for s in summary.values()) == sum(s.duration_s for s in sessions)
    assert sum(s.num_events for s in summary.values()) == len(events)
