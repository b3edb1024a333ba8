"""The expected figures (forum.truth): hand-computed examples of DESIGN.md's rules, and
properties that must hold whatever the input."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forum.model import Device, Forum, Membership, SimUser
from forum.truth import (
    FIELDS,
    Figures,
    GroupDayRow,
    SessionRow,
    Truth,
    compute_truth,
    local_hour_bounds,
)
from forum_analytics.segments import Segment, Segments, resolve_default
from streams.events import Event, EventType, GroupRecord, Role

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = date(2026, 11, 20)
UTC_ZONE = ZoneInfo("UTC")
ZONES = [ZoneInfo(k) for k in ("UTC", "Asia/Kolkata", "Europe/Berlin", "America/New_York")]
NO_SEGMENTS = Segments((), resolve_default(None, has_named_segments=False))
NO_FORUM = Forum((), (), ())


def ms(text: str) -> int:
    """Epoch ms of an RFC 3339 instant."""
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def at(hh_mm: str, day: date = DAY) -> int:
    """Epoch ms of a UTC wall time on `day`."""
    return ms(f"{day.isoformat()}T{hh_mm}:00+00:00")


_ids = iter(range(10**9))


def ev(
    ts: int,
    user_id: int = 7,
    kind: EventType = EventType.ACTIVITY,
    *,
    ip: str | None = None,
    ua: str | None = None,
) -> Event:
    return Event(f"e{next(_ids)}", kind, ts, user_id, ip, ua)


def sim_user(user_id: int, joined_ms: int = at("00:00", date(2026, 1, 1))) -> SimUser:
    return SimUser(
        user_id, f"u{user_id}", f"u{user_id}@example.org", joined_ms, Role.USER, 0, 1.0,
        (Device("10.0.0.1", "agent"),),
    )  # fmt: skip


def segments(*named: tuple[str, set[int]]) -> Segments:
    rows = tuple(Segment(slug, slug.title(), "", frozenset(g), False) for slug, g in named)
    return Segments(rows, resolve_default(None, has_named_segments=bool(rows)))


def truth(
    events: Sequence[Event],
    forum: Forum = NO_FORUM,
    segs: Segments = NO_SEGMENTS,
    *,
    zone: ZoneInfo = UTC_ZONE,
    first_day: date = DAY,
    last_day: date | None = None,
    timeout: int = 30,
) -> Truth:
    return compute_truth(
        events, forum, segs, zone=zone, timeout_minutes=timeout,
        first_day=first_day, last_day=last_day or first_day,
    )  # fmt: skip


def hours(t: Truth) -> dict[str, Figures]:
    return {row.hour: row.figures for row in t.hourly_totals}


def group_rows(t: Truth, group_id: int) -> dict[str, GroupDayRow]:
    return {row.day: row for row in t.daily_group_summary if row.group_id == group_id}


# -- the contract ------------------------------------------------------------------------------


def test_fields_are_the_workers_hour_fields_in_order() -> None:
    from streams.hourly import FIELDS as WORKER_FIELDS

    assert FIELDS == WORKER_FIELDS
    assert Figures._fields == FIELDS


def test_each_type_adds_to_its_field_and_every_type_to_num_events() -> None:
    t = truth([ev(at("12:00") + i, kind=kind) for i, kind in enumerate(EventType)])
    figures = hours(t)["2026-11-20T12:00:00Z"]
    assert figures == Figures(
        num_questions=1, num_answers=1, num_upvotes=1, num_downvotes=1, question_views=1,
        answer_views=1, num_comments=2, num_retags=1, num_vote_cancels=1, num_logins=1,
        num_events=14, time_on_site=0, num_sessions_started=1,
    )  # fmt: skip
    assert t.events.by_type == {str(kind): 1 for kind in EventType}


# -- sessions and time on site -----------------------------------------------------------------


def test_design_example_session_12_40_to_14_10() -> None:
    times = ["12:40", "13:00", "13:25", "13:50", "14:10"]
    t = truth([ev(at(hh_mm)) for hh_mm in times])
    assert t.sessions == (SessionRow(7, at("12:40"), at("14:10"), 5400, "", "", 5),)
    by_hour = hours(t)
    assert [by_hour[f"2026-11-20T{h}:00:00Z"].time_on_site for h in (12, 13, 14)] == [
        1200,
        3600,
        600,
    ]
    assert [by_hour[f"2026-11-20T{h}:00:00Z"].num_sessions_started for h in (12, 13, 14)] == [
        1,
        0,
        0,
    ]
    (day,) = t.daily_user_summary
    assert (day.day, day.user_id, day.figures.time_on_site, day.figures.num_events) == (
        "2026-11-20",
        7,
        5400,
        5,
    )


def test_a_gap_of_exactly_the_timeout_continues_the_session() -> None:
    t = truth([ev(at("10:00")), ev(at("10:30"))])
    assert [(s.start_ms, s.last_activity_ms, s.event_count) for s in t.sessions] == [
        (at("10:00"), at("10:30"), 2)
    ]
    assert hours(t)["2026-11-20T10:00:00Z"].time_on_site == 1800


def test_a_gap_one_millisecond_longer_splits_it() -> None:
    t = truth([ev(at("10:00")), ev(at("10:30") + 1)])
    assert [(s.start_ms, s.last_activity_ms, s.duration_s) for s in t.sessions] == [
        (at("10:00"), at("10:00"), 0),
        (at("10:30") + 1, at("10:30") + 1, 0),
    ]
    assert hours(t)["2026-11-20T10:00:00Z"].num_sessions_started == 2
    assert hours(t)["2026-11-20T10:00:00Z"].time_on_site == 0


def test_pieces_count_whole_second_ticks() -> None:
    # 12:59:59.500 → 13:00:00.400 lasts 0.9 s but crosses one second tick (13:00:00), which
    # ends the piece [12:59:59.500, 13:00:00): hour 12 gets 1 s, hour 13 none.
    t = truth([ev(at("13:00") - 500), ev(at("13:00") + 400)])
    assert t.sessions[0].duration_s == 1
    assert hours(t)["2026-11-20T12:00:00Z"].time_on_site == 1
    assert hours(t)["2026-11-20T13:00:00Z"].time_on_site == 0


def test_duplicates_count_once_and_ids_are_per_user() -> None:
    first = ev(at("09:00"), kind=EventType.UPVOTED)
    other_user_same_id = first._replace(user_id=8)
    t = truth([first, ev(at("09:05")), first, first, other_user_same_id])
    assert (t.events.sent, t.events.unique) == (5, 3)
    assert t.events.by_type[EventType.UPVOTED] == 2
    assert hours(t)["2026-11-20T09:00:00Z"].num_upvotes == 2
    assert hours(t)["2026-11-20T09:00:00Z"].num_events == 3


def test_ip_and_agent_come_from_the_first_event_by_time_then_send_order() -> None:
    t = truth(
        [
            ev(at("09:10"), ip="10.0.0.3", ua="late"),
            ev(at("09:00"), ip="10.0.0.1", ua="first-sent"),
            ev(at("09:00"), ip="10.0.0.2", ua="second-sent"),
            ev(at("11:00"), user_id=8),
        ]
    )
    assert [(s.user_id, s.ip, s.user_agent) for s in t.sessions] == [
        (7, "10.0.0.1", "first-sent"),
        (8, "", ""),
    ]


def test_a_session_begun_before_the_range_gives_time_but_is_not_listed() -> None:
    previous, following = DAY - timedelta(days=1), DAY + timedelta(days=1)
    t = truth(
        [ev(at("23:50", previous)), ev(at("00:10")), ev(at("23:55")), ev(at("00:05", following))]
    )
    assert [s.start_ms for s in t.sessions] == [at("23:55")]  # ends the next day: still listed
    midnight = hours(t)["2026-11-20T00:00:00Z"]
    assert (midnight.time_on_site, midnight.num_events, midnight.num_sessions_started) == (
        600,
        1,
        0,
    )
    assert hours(t)["2026-11-20T23:00:00Z"].time_on_site == 300  # 23:55 → midnight
    (day,) = t.daily_user_summary
    assert (day.figures.num_events, day.figures.time_on_site) == (2, 900)
    assert t.events.unique == 4  # counts every day


# -- local hours -------------------------------------------------------------------------------


def test_asia_kolkata_hours_start_at_half_past_utc() -> None:
    kolkata = ZoneInfo("Asia/Kolkata")
    # 13:45Z is 19:15 IST; 18:31Z is 00:01 IST on the 21st: outside a one-day range.
    t = truth([ev(ms("2026-11-20T13:45:00Z")), ev(ms("2026-11-20T18:31:00Z"))], zone=kolkata)
    assert list(hours(t)) == ["2026-11-20T13:30:00Z"]
    bounds = local_hour_bounds(kolkata, DAY, DAY)
    assert len(bounds) == 25
    assert (bounds[0], bounds[-1]) == (ms("2026-11-19T18:30:00Z"), ms("2026-11-20T18:30:00Z"))


@pytest.mark.parametrize(
    ("zone", "day", "num_hours"),
    [
        ("Europe/Berlin", date(2026, 3, 29), 23),
        ("Europe/Berlin", date(2026, 10, 25), 25),
        ("America/New_York", date(2026, 3, 8), 23),
        ("America/New_York", date(2026, 11, 1), 25),
        ("Europe/Berlin", date(2026, 3, 30), 24),
        ("UTC", date(2026, 3, 29), 24),
    ],
)
def test_dst_days_have_23_or_25_hours(zone: str, day: date, num_hours: int) -> None:
    assert len(local_hour_bounds(ZoneInfo(zone), day, day)) == num_hours + 1


def test_berlin_spring_forward_hours_and_time_on_site() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    day = date(2026, 3, 29)  # 02:00 CET (01:00Z) jumps to 03:00 CEST
    events = [ev(ms("2026-03-29T00:40:00Z") + i * 10 * MINUTE) for i in range(9)]  # → 02:00Z
    t = truth(events, zone=berlin, first_day=day)
    assert {h: f.time_on_site for h, f in hours(t).items()} == {
        "2026-03-29T00:00:00Z": 1200,  # 01:00 CET
        "2026-03-29T01:00:00Z": 3600,  # 03:00 CEST
        "2026-03-29T02:00:00Z": 0,  # 04:00 CEST: the last event's hour, no time
    }
    bounds = local_hour_bounds(berlin, day, day)
    assert bounds[:3] == (
        ms("2026-03-28T23:00:00Z"),
        ms("2026-03-29T00:00:00Z"),
        ms("2026-03-29T01:00:00Z"),
    )


def _scanned_hours(zone: ZoneInfo, day: date) -> list[int]:
    """Hour starts by brute force: every minute of the day, a new hour wherever (local date,
    local hour, offset) changes. Exact for zones whose offsets are whole minutes."""
    start = int(datetime.combine(day, datetime.min.time(), tzinfo=zone).timestamp()) * 1000
    starts, last = [], None
    t = start - 2 * HOUR
    while t < start + 27 * HOUR:
        local = datetime.fromtimestamp(t / 1000, zone)
        key = (local.date(), local.hour, local.utcoffset())
        if key != last and local.date() == day:
            starts.append(t)
        last = key
        t += MINUTE
    return starts


@pytest.mark.parametrize("zone", ZONES, ids=lambda z: z.key)
@pytest.mark.parametrize(
    "day", [date(2026, 3, 8), date(2026, 3, 29), date(2026, 10, 25), date(2026, 11, 1), DAY]
)
def test_local_hours_match_a_minute_by_minute_scan(zone: ZoneInfo, day: date) -> None:
    bounds = local_hour_bounds(zone, day, day)
    assert list(bounds[:-1]) == _scanned_hours(zone, day)
    next_day = local_hour_bounds(zone, day + timedelta(days=1), day + timedelta(days=1))
    assert bounds[-1] == next_day[0]


# -- groups ------------------------------------------------------------------------------------


STAFF = GroupRecord(1, "staff", True)
HIDDEN = GroupRecord(9, "hidden", False)


def test_a_member_leaving_at_12_30_still_counts_hour_12_and_joining_at_13_59_hour_13() -> None:
    forum = Forum(
        (sim_user(7), sim_user(8)),
        (STAFF, HIDDEN),
        (
            Membership(7, 1, at("00:00", date(2026, 1, 1)), at("12:30")),
            Membership(8, 1, at("13:59")),
            Membership(7, 9, at("00:00", date(2026, 1, 1))),
        ),
    )
    events = [ev(at("12:45"), kind=EventType.QUESTION_ASKED), ev(at("13:05"))]
    events += [ev(at("13:10"), 8, EventType.ANSWER_POSTED), ev(at("12:10"), 8)]
    t = truth(events, forum)
    row = group_rows(t, 1)["2026-11-20"]
    # User 7's hour 12 (the question) and user 8's hour 13 (the answer); 7's 13 and 8's 12 out.
    assert (row.figures.num_questions, row.figures.num_answers, row.figures.num_events) == (1, 1, 2)
    assert row.figures.time_on_site == 15 * 60  # 7's 12:45 → 13:00 piece; 8's two sessions: 0
    assert row.num_active_users == 2
    assert (row.num_users, row.num_users_added) == (1, 1)  # 7 left today, 8 joined today
    assert group_rows(t, 9) == {}  # not used for analytics


def test_member_counts_on_join_leave_and_idle_days() -> None:
    days = [date(2026, 11, 20) + timedelta(days=i) for i in range(4)]
    forum = Forum(
        (sim_user(7),),
        (STAFF,),
        (
            Membership(7, 1, at("10:00", days[0]), at("08:00", days[2])),
            Membership(8, 1, at("23:00", days[1]), at("23:30", days[1])),  # in and out in a day
        ),
    )
    t = truth([ev(at("09:00", days[1]))], forum, first_day=days[0], last_day=days[3])
    rows = group_rows(t, 1)
    assert [(r.day, r.num_users, r.num_users_added, r.num_active_users) for r in rows.values()] == [
        ("2026-11-20", 1, 1, 0),
        ("2026-11-21", 1, 1, 1),
        ("2026-11-22", 0, 0, 0),  # left on the 22nd: until_day is not after the day
        ("2026-11-23", 0, 0, 0),
    ]
    assert rows["2026-11-21"].figures.num_events == 1


def test_two_intervals_covering_one_hour_count_it_once() -> None:
    forum = Forum(
        (sim_user(7),),
        (STAFF,),
        (Membership(7, 1, at("08:00"), at("12:20")), Membership(7, 1, at("12:40"))),
    )
    t = truth([ev(at("12:30"), kind=EventType.UPVOTED)], forum)
    row = group_rows(t, 1)["2026-11-20"]
    assert (row.figures.num_upvotes, row.num_users, row.num_users_added) == (1, 1, 2)


# -- segments ----------------------------------------------------------------------------------


def test_a_user_in_two_groups_of_a_segment_is_counted_once() -> None:
    start = at("00:00")
    forum = Forum(
        (sim_user(7), sim_user(8)),
        (STAFF, GroupRecord(2, "mods", True)),
        (Membership(7, 1, start + HOUR), Membership(7, 2, start - HOUR)),
    )
    events = [ev(at("10:00"), kind=EventType.LOGGED_IN), ev(at("10:20")), ev(at("11:00"), 8)]
    t = truth(events, forum, segments(("staff", {1, 2})))
    staff = t.segment("staff")
    assert (staff.num_users, staff.num_users_added, staff.num_active_users) == (1, 0, 1)
    assert (staff.figures.num_logins, staff.figures.num_events) == (1, 2)
    assert staff.figures.time_on_site == 1200
    rest = t.segment("rest")
    assert (rest.num_users, rest.num_active_users, rest.figures.num_events) == (1, 1, 1)


def test_default_segment_holds_users_in_no_group_and_in_unnamed_groups() -> None:
    joined_today = at("06:00")
    forum = Forum(
        (sim_user(1), sim_user(2), sim_user(3, joined_today), sim_user(4, at("00:00") + 24 * HOUR)),
        (STAFF, HIDDEN, GroupRecord(5, "students", True)),
        (Membership(1, 1, at("00:00")), Membership(2, 9, at("00:00")), Membership(2, 5, 0)),
    )
    # User 4 joins after the range; user 99 is not in forum.users at all.
    events = [ev(at("10:00"), uid) for uid in (1, 2, 3, 99)] + [ev(at("10:00"), 4)]
    t = truth(events, forum, segments(("staff", {1})))
    staff, rest, everyone = t.segments
    assert [staff.slug, rest.slug, everyone.slug] == ["staff", "rest", "all-users"]
    assert (staff.num_users, staff.num_users_added, staff.figures.num_events) == (1, 1, 1)
    assert (rest.num_users, rest.num_users_added, rest.num_active_users) == (2, 1, 4)
    assert rest.figures.num_events == 4  # users 2, 3, 4 and 99
    assert (everyone.num_users, everyone.num_users_added, everyone.num_active_users) == (3, 1, 5)
    assert everyone.figures.num_events == 5


def test_leaving_a_named_group_moves_later_hours_to_the_default_segment() -> None:
    forum = Forum((sim_user(7),), (STAFF,), (Membership(7, 1, 0, at("12:00")),))
    t = truth([ev(at("11:59")), ev(at("12:00") + HOUR)], forum, segments(("staff", {1})))
    staff, rest, _ = t.segments
    assert (staff.figures.num_events, staff.num_users, staff.num_active_users) == (1, 0, 1)
    assert (rest.figures.num_events, rest.num_users, rest.num_active_users) == (1, 1, 1)


def test_membership_ending_exactly_at_the_range_end_is_a_member_at_the_end() -> None:
    end = at("00:00", DAY + timedelta(days=1))
    forum = Forum((sim_user(7),), (STAFF,), (Membership(7, 1, 0, end),))
    t = truth([], forum, segments(("staff", {1})))
    assert (t.segment("staff").num_users, t.segment("rest").num_users) == (1, 0)


# -- the file --------------------------------------------------------------------------------


def test_the_file_names_its_format_and_columns() -> None:
    t = truth([ev(at("12:40")), ev(at("13:00"))], zone=ZoneInfo("Europe/Berlin"))
    text = t.to_json()
    assert text.startswith(b'{\n  "format": "forum-analytics-truth/1",\n  "time_zone": "Europe/')
    assert b"\n    [7," in text  # one session per line
    assert Truth.from_json(text) == t
    with pytest.raises(ValueError, match="not a forum-analytics-truth/1"):
        Truth.from_json(text.replace(b"truth/1", b"truth/2"))


# -- properties --------------------------------------------------------------------------------

GAPS = st.one_of(st.sampled_from([0, 1, 30 * MINUTE, 30 * MINUTE + 1]), st.integers(0, 3 * HOUR))
"""Gaps between a user's events: ties, the timeout exactly, and anything up to 3 hours."""


@st.composite
def forums(draw: st.DrawFn, start_ms: int) -> tuple[list[Event], Forum, Segments]:
    """Up to 4 users, their events from `start_ms` on (ip and agent depend on the time only,
    so that ties cannot make the result depend on send order), groups and memberships."""
    events: list[Event] = []
    for user_id in range(1, draw(st.integers(1, 4)) + 1):
        ts = start_ms + draw(st.integers(0, 2 * HOUR))
        for _ in range(draw(st.integers(0, 12))):
            ts += draw(GAPS)
            kind = draw(st.sampled_from(list(EventType)))
            events.append(ev(ts, user_id, kind, ip=f"ip{ts % 3}", ua=f"ua{ts % 2}"))
    moments = st.integers(start_ms - 6 * HOUR, start_ms + 30 * HOUR)
    memberships = []
    for _ in range(draw(st.integers(0, 5))):
        since = draw(moments)
        until = draw(st.none() | st.integers(since, since + 12 * HOUR))
        memberships.append(
            Membership(draw(st.integers(1, 4)), draw(st.integers(1, 3)), since, until)
        )
    users = tuple(sim_user(u, draw(moments)) for u in range(1, 4))  # user 4: only in events
    groups = (GroupRecord(1, "a", True), GroupRecord(2, "b", True), GroupRecord(3, "c", False))
    segs = draw(st.sampled_from([NO_SEGMENTS, segments(("ab", {1, 2})), segments(("c", {3}))]))
    return events, Forum(users, groups, tuple(memberships)), segs


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[Event], Forum, Segments, ZoneInfo]:
    zone = draw(st.sampled_from(ZONES))
    day = draw(st.sampled_from([DAY, date(2026, 3, 29), date(2026, 11, 1), date(2026, 3, 8)]))
    start_ms = int(datetime.combine(day, datetime.min.time(), tzinfo=zone).timestamp()) * 1000
    events, forum, segs = draw(forums(start_ms))
    return events, forum, segs, zone


def _around(zone: ZoneInfo, events: Sequence[Event]) -> tuple[date, date]:
    """Local days holding all the events, with one day to spare on each side."""
    days = [datetime.fromtimestamp(e.ts_ms / 1000, zone).date() for e in events] or [DAY]
    return min(days) - timedelta(days=1), max(days) + timedelta(days=1)


@settings(max_examples=100, deadline=None)
@given(cases(), st.randoms(use_true_random=False))
def test_send_order_and_duplicates_do_not_change_the_figures(
    case: tuple[list[Event], Forum, Segments, ZoneInfo], rnd: random.Random
) -> None:
    events, forum, segs, zone = case
    resent = events + rnd.sample(events, k=min(len(events), 5))
    rnd.shuffle(resent)
    first_day = datetime.fromtimestamp(events[0].ts_ms / 1000, zone).date() if events else DAY
    last_day = first_day + timedelta(days=1)
    once = truth(events, forum, segs, zone=zone, first_day=first_day, last_day=last_day)
    again = truth(resent, forum, segs, zone=zone, first_day=first_day, last_day=last_day)
    assert again.events.sent == len(resent)
    assert dataclasses.replace(again, events=once.events) == once


@settings(max_examples=100, deadline=None)
@given(cases())
def test_figures_add_up_when_every_session_is_inside_the_range(
    case: tuple[list[Event], Forum, Segments, ZoneInfo],
) -> None:
    events, forum, segs, zone = case
    first_day, last_day = _around(zone, events)
    t = truth(events, forum, segs, zone=zone, first_day=first_day, last_day=last_day)
    hourly = _sum(r.figures for r in t.hourly_totals)
    assert hourly.time_on_site == sum(s.duration_s for s in t.sessions)
    assert hourly.num_sessions_started == len(t.sessions)
    assert hourly.num_events == t.events.unique == sum(s.event_count for s in t.sessions)
    assert _sum(r.figures for r in t.daily_user_summary) == hourly
    assert t.segment("all-users").figures == hourly
    if len(segs.named) == 1:  # one named segment and the rest split every user-hour
        assert _sum(r.figures for r in t.segments[:2]) == hourly
    num_days = (last_day - first_day).days + 1
    assert len(t.daily_group_summary) == 2 * num_days


@settings(max_examples=50, deadline=None)
@given(cases())
def test_the_file_round_trips(case: tuple[list[Event], Forum, Segments, ZoneInfo]) -> None:
    events, forum, segs, zone = case
    first_day, last_day = _around(zone, events)
    t = truth(events, forum, segs, zone=zone, first_day=first_day, last_day=last_day)
    assert Truth.from_json(t.to_json()) == t


def _sum(rows: Iterable[Figures]) -> Figures:
    return Figures(*(sum(column) for column in zip(Figures(), *rows, strict=True)))
