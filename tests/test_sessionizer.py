"""Sessions (streams.sessionizer): DESIGN.md's rules, and a brute-force reference."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.events import Event, EventType
from streams.sessionizer import Activity, Session, activity_of, merge_blocks, sessionize

MINUTE = 60_000
TIMEOUT = 30 * MINUTE
T0 = 1_714_567_200_000  # 2024-05-01T12:40:00Z


# -- the reference ---------------------------------------------------------------------------


def ref_sessions(user_id: int, events: Iterable[Event], timeout_ms: int) -> list[Session]:
    """Sort by (ts_ms, id) and cut wherever the gap exceeds the timeout: nothing cleverer.

    `events` must already be deduplicated.
    """
    ordered = sorted(events, key=lambda e: (e.ts_ms, e.id))
    groups: list[list[Event]] = []
    for event in ordered:
        if groups and event.ts_ms - groups[-1][-1].ts_ms <= timeout_ms:
            groups[-1].append(event)
        else:
            groups.append([event])
    return [
        Session(
            user_id=user_id,
            start_ms=g[0].ts_ms,
            last_ms=g[-1].ts_ms,
            first_id=g[0].id,
            ip=g[0].ip,
            user_agent=g[0].user_agent,
            event_count=len(g),
        )
        for g in groups
    ]


def act(ts_ms: int, event_id: str, ip: str | None = None, ua: str | None = None) -> Activity:
    return Activity(ts_ms, event_id, ip, ua)


# -- examples ----------------------------------------------------------------------------------


def test_a_gap_of_exactly_the_timeout_continues_the_session() -> None:
    sessions = sessionize(7, [act(T0, "a"), act(T0 + TIMEOUT, "b")], TIMEOUT)
    assert len(sessions) == 1
    assert sessions[0].event_count == 2
    assert sessions[0].duration_s == TIMEOUT // 1000


def test_a_gap_of_one_millisecond_more_splits_it() -> None:
    sessions = sessionize(7, [act(T0, "a"), act(T0 + TIMEOUT + 1, "b")], TIMEOUT)
    assert [(s.start_ms, s.last_ms, s.event_count) for s in sessions] == [
        (T0, T0, 1),
        (T0 + TIMEOUT + 1, T0 + TIMEOUT + 1, 1),
    ]


def test_one_event_lasts_zero_seconds_and_the_timeout_is_not_added() -> None:
    (session,) = sessionize(7, [act(T0 + 999, "a")], TIMEOUT)
    assert session.duration_s == 0
    assert session.last_ms == session.start_ms == T0 + 999


def test_duration_counts_whole_second_ticks() -> None:
    (session,) = sessionize(7, [act(T0 + 999, "a"), act(T0 + 1000, "b")], TIMEOUT)
    assert session.duration_s == 1  # 1 ms, but across a second boundary: as hours split it
    (session,) = sessionize(7, [act(T0 + 1, "a"), act(T0 + 999, "b")], TIMEOUT)
    assert session.duration_s == 0


def test_design_example_session_spans_ninety_minutes() -> None:
    acts = [act(T0 + i * 10 * MINUTE, f"e{i}") for i in range(10)]  # 12:40 … 14:10
    (session,) = sessionize(7, acts, TIMEOUT)
    assert session.duration_s == 90 * 60


def test_ip_and_agent_come_from_the_first_event_by_time_then_id() -> None:
    acts = sorted(
        [
            act(T0 + 5, "a", "10.0.0.3", "late"),
            act(T0, "z", "10.0.0.2", "second by id"),
            act(T0, "m", "10.0.0.1", "first by id"),
        ]
    )
    (session,) = sessionize(7, acts, TIMEOUT)
    assert (session.first_id, session.ip, session.user_agent) == ("m", "10.0.0.1", "first by id")


def test_session_id_is_stable_and_depends_on_user_start_and_first_id() -> None:
    base = Session(7, T0, T0 + 5, "a", None, None, 2)
    assert base.session_id == Session(7, T0, T0 + 9, "a", "ip", "ua", 3).session_id
    # The documented derivation, so that `verify` or SQL can compute the same id.
    digest = hashlib.blake2b(f"7\x00{T0}\x00a".encode(), digest_size=8).digest()
    assert base.session_id == int.from_bytes(digest, "little") == 6974604196648093753
    assert base.session_id != base._replace(user_id=8).session_id
    assert base.session_id != base._replace(start_ms=T0 + 1).session_id
    assert base.session_id != base._replace(first_id="b").session_id
    assert 0 <= base.session_id < 2**64


def test_merge_blocks_bridges_sessions_through_a_new_event() -> None:
    left = Session(7, T0, T0 + 10 * MINUTE, "a", "ip-a", None, 3)
    right = Session(7, T0 + 70 * MINUTE, T0 + 80 * MINUTE, "c", "ip-c", None, 2)
    bridge = Session(7, T0 + 40 * MINUTE, T0 + 40 * MINUTE, "b", "ip-b", None, 1)
    assert merge_blocks([left, right], TIMEOUT) == [left, right]
    (merged,) = merge_blocks([left, bridge, right], TIMEOUT)
    assert (merged.start_ms, merged.last_ms, merged.event_count) == (T0, T0 + 80 * MINUTE, 6)
    assert merged.ip == "ip-a"


def test_activity_of_keeps_what_sessions_need() -> None:
    event = Event("x", EventType.UPVOTED, T0, 7, "1.2.3.4", "agent")
    assert activity_of(event) == Activity(T0, "x", "1.2.3.4", "agent")


# -- property ----------------------------------------------------------------------------------


@st.composite
def activity_lists(draw: st.DrawFn) -> tuple[list[Event], int]:
    timeout = draw(st.sampled_from([1, 1000, MINUTE, TIMEOUT]))
    gaps = st.one_of(
        st.sampled_from([0, 1, timeout - 1, timeout, timeout + 1]),
        st.integers(0, 3 * timeout),
    )
    n = draw(st.integers(1, 30))
    ts = T0
    events = []
    ids = draw(st.permutations([f"id{i:02d}" for i in range(n)]))
    for i in range(n):
        ts += draw(gaps)
        ip = draw(st.sampled_from([None, "10.0.0.1", "10.0.0.2"]))
        events.append(Event(ids[i], EventType.ACTIVITY, ts, 7, ip, f"ua-{i}"))
    return events, timeout


@settings(max_examples=300, deadline=None)
@given(activity_lists())
def test_sessionize_matches_the_reference(case: tuple[list[Event], int]) -> None:
    events, timeout = case
    activities = sorted(activity_of(e) for e in events)
    sessions = sessionize(7, activities, timeout)
    assert sessions == ref_sessions(7, events, timeout)
    assert sum(s.event_count for s in sessions) == len(events)
    for a, b in zip(sessions, sessions[1:], strict=False):
        assert b.start_ms - a.last_ms > timeout
