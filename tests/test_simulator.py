"""The simulated forum (`forum/`) does what its docstrings promise: the same inputs give the same
forum and events; every event meets the contract and refers only to content that exists; votes,
registrations and blocks are consistent; sessions meet the timeout on both sides; the day and
week have a rhythm; the outbox holds back and repeats what it says; the population matches the
catalogue; live traffic is stamped now. Pure: no broker, no ClickHouse."""

from __future__ import annotations

import dataclasses
import math
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forum.browsing import think_ms
from forum.catalogue import COMPANIES, STAFF, forum_groups, segment_settings
from forum.content import Board
from forum.engine import Engine, Outbox
from forum.history import Backfill, SimulationOptions, new_board
from forum.live import LiveForum
from forum.model import Forum, Membership, SimUser
from forum.population import build_forum, organization_of, user_records
from forum_analytics.segments import resolve_segments
from forum_analytics.settings import load_settings
from streams.events import (
    Event,
    EventType,
    ObjectType,
    Role,
    ms_to_datetime,
    parse_event,
    parse_user,
)
from streams.organizations import email_domain, is_webmail, organization_name

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
TIMEOUT = 30 * MINUTE
MONDAY = int(datetime(2026, 1, 5, tzinfo=UTC).timestamp() * 1000)  # 2026-01-05T00:00Z, a Monday

USER_TYPES = frozenset({EventType.USER_REGISTERED, EventType.LOGGED_IN, EventType.LOGGED_OUT})
CREATING_TYPES = frozenset(
    {
        EventType.QUESTION_ASKED,
        EventType.ANSWER_POSTED,
        EventType.QUESTION_COMMENTED,
        EventType.ANSWER_COMMENTED,
    }
)
READING_TYPES = frozenset(
    {
        EventType.QUESTION_VIEWED,
        EventType.ANSWER_VIEWED,
        EventType.UPVOTED,
        EventType.DOWNVOTED,
        EventType.VOTE_CANCELED,
    }
)
POST_TYPES = CREATING_TYPES | READING_TYPES
VOTES = frozenset({EventType.UPVOTED, EventType.DOWNVOTED})
GROUP_NAMES = {g.group_id: g.name for g in forum_groups()}
ORGANIZATIONS = {c.name: g for g, name in GROUP_NAMES.items() for c in COMPANIES if c.name == name}
"""Each company's organization group id, by the company's name."""


# -- running the simulator ---------------------------------------------------------------------


@dataclass(frozen=True)
class History:
    """The content `new_board` wrote before the period: each post's thread and author, each
    thread's question, and which posts are answers."""

    thread_of: dict[int, int]
    author_of: dict[int, int]
    question_of: dict[int, int]
    answers: frozenset[int]

    @property
    def last_post(self) -> int:
        """The highest pre-existing post id (0: none)."""
        return max(self.thread_of, default=0)

    @property
    def last_thread(self) -> int:
        """The highest pre-existing thread id (0: none)."""
        return max(self.question_of, default=0)


def snapshot(board: Board) -> History:
    """The board's content as it is now (call it before the run changes the board)."""
    threads = list(board.hot)
    return History(
        thread_of={p: t.thread_id for p, t in board.threads.items()},
        author_of=dict(board.authors),
        question_of={t.thread_id: t.question for t in threads},
        answers=frozenset(a for t in threads for a in t.answers),
    )


@dataclass(frozen=True)
class Run:
    """A finished backfill: its forum, period, history and events in sending order."""

    forum: Forum
    start_ms: int
    end_ms: int
    timeout_ms: int
    history: History
    events: tuple[Event, ...]
    held_back: int
    resent: int

    def users(self) -> dict[int, SimUser]:
        """The forum's users by id."""
        return {u.user_id: u for u in self.forum.users}


def backfill(forum: Forum, options: SimulationOptions, start_ms: int, end_ms: int) -> Run:
    """Run a backfill of `forum` over [start_ms, end_ms) to the end."""
    sim = Backfill(forum, options, start_ms, end_ms)
    history = snapshot(sim.engine.board)
    events = tuple(sim.events())
    return Run(
        forum,
        start_ms,
        end_ms,
        options.timeout_ms,
        history,
        events,
        sim.outbox.held_back,
        sim.outbox.resent,
    )


@cache
def simulate(
    seed: int,
    users: int,
    start_ms: int,
    period_ms: int,
    *,
    late: float = 0.0,
    duplicates: float = 0.0,
    timeout_ms: int = TIMEOUT,
) -> Run:
    """A backfill of a built forum (cached: several tests read the same run)."""
    end_ms = start_ms + period_ms
    forum = build_forum(seed, users, start_ms, end_ms)
    options = SimulationOptions(seed, timeout_ms, late, duplicates)
    return backfill(forum, options, start_ms, end_ms)


def week_run() -> Run:
    """The reference run: 300 users, a week, exact sending (no late events, no duplicates)."""
    return simulate(11, 300, MONDAY, 7 * DAY)


@st.composite
def small_runs(draw: st.DrawFn) -> Run:
    """Small backfills of any seed, size, period start and length, and timeout."""
    return simulate(
        draw(st.integers(0, 2**32)),
        draw(st.integers(1, 120)),
        draw(st.integers(MONDAY - 400 * DAY, MONDAY + 400 * DAY)),
        draw(st.integers(HOUR, 3 * DAY)),
        timeout_ms=draw(st.sampled_from([5 * MINUTE, TIMEOUT, 60 * MINUTE])),
    )


def by_user(events: Iterable[Event]) -> dict[int, list[Event]]:
    """Each user's events, in the given order."""
    out: dict[int, list[Event]] = {}
    for e in events:
        out.setdefault(e.user_id, []).append(e)
    return out


def unique(events: Iterable[Event]) -> list[Event]:
    """The events without resent copies (first copy kept), in time order."""
    seen: dict[str, Event] = {}
    for e in events:
        seen.setdefault(e.id, e)
    return sorted(seen.values(), key=lambda e: (e.ts_ms, e.id))


def shape(events: Iterable[Event]) -> list[tuple[str, int, int]]:
    """What happened, when, by whom: events without their ids."""
    return [(e.type.value, e.ts_ms, e.user_id) for e in events]


def counts(events: Iterable[Event]) -> Counter[EventType]:
    """Events by type."""
    return Counter(e.type for e in events)


def local_ms(event: Event, user: SimUser) -> int:
    """The event's time on the user's local clock (epoch ms shifted by their UTC offset)."""
    return event.ts_ms + user.utc_offset_minutes * MINUTE


# -- checks shared by backfill and live tests --------------------------------------------------


def check_contract(event: Event, user: SimUser, received_at_ms: int) -> None:
    """The event survives the wire and carries what DESIGN.md's contract says for its type."""
    assert parse_event(orjson.loads(event.to_json()), received_at_ms=received_at_ms) == event
    assert parse_event(event.to_dict(), received_at_ms=received_at_ms) == event
    assert any((event.ip, event.user_agent) == (d.ip, d.user_agent) for d in user.devices)
    if event.type in POST_TYPES:
        assert event.object_type is ObjectType.POST
        assert event.thread_id is not None and event.post_id is not None
        assert event.object_id == event.post_id
    elif event.type is EventType.QUESTION_RETAGGED:
        assert event.object_type is ObjectType.THREAD
        assert event.thread_id is not None and event.post_id is not None
        assert event.object_id == event.thread_id
    elif event.type in USER_TYPES:
        assert (event.object_type, event.object_id) == (ObjectType.USER, event.user_id)
        assert event.thread_id is None and event.post_id is None
    else:
        assert event.type is EventType.ACTIVITY
        assert event.object_type is None and event.object_id is None
        assert event.thread_id is None and event.post_id is None


def check_users_never_share_a_millisecond(events: Sequence[Event]) -> None:
    """Per user, every event has its own millisecond."""
    for mine in by_user(events).values():
        stamps = [e.ts_ms for e in mine]
        assert len(set(stamps)) == len(stamps)


def check_content(history: History, events: Iterable[Event], slack_ms: int = 0) -> None:
    """Walk the events in causal order: a post or thread is referred to only once it exists
    (from history, or created by an earlier event, at most `slack_ms` later); new ids come
    after every older one; a post keeps its thread; views see questions and answers; nobody
    votes on their own post."""
    thread_of, author_of = dict(history.thread_of), dict(history.author_of)
    question_of, answers = dict(history.question_of), set(history.answers)
    created_at: dict[int, int] = {}
    for e in events:
        if e.post_id is None:
            continue
        assert e.thread_id is not None
        if e.type is EventType.QUESTION_ASKED:
            assert e.thread_id == max(question_of, default=0) + 1
            question_of[e.thread_id] = e.post_id
        if e.type in CREATING_TYPES:
            assert e.post_id == max(thread_of, default=0) + 1
            thread_of[e.post_id], author_of[e.post_id] = e.thread_id, e.user_id
            created_at[e.post_id] = e.ts_ms
        assert thread_of.get(e.post_id) == e.thread_id, f"{e}: unknown post or wrong thread"
        assert e.ts_ms + slack_ms >= created_at.get(e.post_id, 0)
        if e.type is EventType.ANSWER_POSTED:
            answers.add(e.post_id)
        if e.type in (EventType.QUESTION_VIEWED, EventType.QUESTION_RETAGGED):
            assert question_of[e.thread_id] == e.post_id
        if e.type is EventType.ANSWER_VIEWED:
            assert e.post_id in answers
        if e.type in VOTES:
            assert author_of[e.post_id] != e.user_id


def check_votes(events: Iterable[Event]) -> None:
    """Per user and post: vote, cancel, vote, cancel...; never two votes or two cancels."""
    voted: set[tuple[int, int]] = set()
    for e in events:
        key = (e.user_id, e.post_id or 0)
        if e.type in VOTES:
            assert key not in voted, f"{e}: a second vote without a cancel"
            voted.add(key)
        elif e.type is EventType.VOTE_CANCELED:
            assert key in voted, f"{e}: a cancel without a vote"
            voted.remove(key)


def check_lifecycle(users: Iterable[SimUser], events: Sequence[Event], start_ms: int) -> None:
    """Registrations in the period: one `user_registered`, at `joined_ms`, first; none for
    earlier users; nothing from a blocked user at or after `blocked_ms`."""
    mine = by_user(events)
    for user in users:
        theirs = mine.get(user.user_id, [])
        registered = [e for e in theirs if e.type is EventType.USER_REGISTERED]
        blocked = user.blocked_ms
        if blocked is not None:
            assert all(e.ts_ms < blocked for e in theirs), f"user {user.user_id} after blocked"
        if user.joined_ms < start_ms or (blocked is not None and blocked <= user.joined_ms):
            assert registered == []
            continue
        assert [e.ts_ms for e in registered] == [user.joined_ms]
        assert min(e.ts_ms for e in theirs) == user.joined_ms


# -- 1. determinism ----------------------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    users=st.integers(1, 80),
    start=st.integers(MONDAY - 400 * DAY, MONDAY + 400 * DAY),
    period=st.integers(HOUR, 2 * DAY),
    late=st.sampled_from([0.0, 0.01, 0.2]),
)
def test_same_inputs_give_the_same_forum_and_events(
    seed: int, users: int, start: int, period: int, late: float
) -> None:
    end = start + period
    options = SimulationOptions(seed, TIMEOUT, late, late / 2)
    first = backfill(build_forum(seed, users, start, end), options, start, end)
    again = backfill(build_forum(seed, users, start, end), options, start, end)
    assert again.forum == first.forum
    assert again.history == first.history
    assert again.events == first.events


def test_another_seed_gives_other_events() -> None:
    one = simulate(1, 100, MONDAY, 2 * DAY)
    other = simulate(2, 100, MONDAY, 2 * DAY)
    assert one.events and other.events
    assert shape(one.events) != shape(other.events)
    assert {e.id for e in one.events}.isdisjoint(e.id for e in other.events)


def identity(user: SimUser) -> tuple[object, ...]:
    """Who a user is, as opposed to when things happened to them."""
    u = user
    return (
        u.user_id,
        u.username,
        u.email,
        u.role,
        u.utc_offset_minutes,
        u.visits_per_day,
        u.devices,
    )


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    users=st.integers(1, 120),
    periods=st.lists(
        st.tuples(st.integers(MONDAY - 900 * DAY, MONDAY), st.integers(0, 60 * DAY)),
        min_size=2,
        max_size=2,
    ),
)
def test_who_a_user_is_does_not_depend_on_the_period(
    seed: int, users: int, periods: list[tuple[int, int]]
) -> None:
    (start_a, length_a), (start_b, length_b) = periods
    a = build_forum(seed, users, start_a, start_a + length_a)
    b = build_forum(seed, users, start_b, start_b + length_b)
    assert [identity(u) for u in a.users] == [identity(u) for u in b.users]


def test_when_users_joined_depends_on_the_period() -> None:
    a = build_forum(5, 50, MONDAY, MONDAY + 7 * DAY)
    b = build_forum(5, 50, MONDAY + 30 * DAY, MONDAY + 37 * DAY)
    assert [u.joined_ms for u in a.users] != [u.joined_ms for u in b.users]


# -- 2. what a week looks like -----------------------------------------------------------------


def test_a_week_has_every_event_type_in_forum_proportions() -> None:
    seen = counts(week_run().events)
    assert set(seen) == set(EventType)
    views = seen[EventType.QUESTION_VIEWED] + seen[EventType.ANSWER_VIEWED]
    voting = sum(seen[t] for t in (*VOTES, EventType.VOTE_CANCELED))
    assert views > 5 * voting
    votes = seen[EventType.UPVOTED] + seen[EventType.DOWNVOTED]
    assert votes > seen[EventType.ANSWER_POSTED] > seen[EventType.QUESTION_ASKED]


# -- 3. the contract ---------------------------------------------------------------------------


def check_run_contract(run: Run) -> None:
    """Every event of the run meets the contract, lies in the period, and users never share a
    millisecond (resent copies aside)."""
    users = run.users()
    for e in run.events:
        check_contract(e, users[e.user_id], received_at_ms=run.end_ms)
        assert run.start_ms <= e.ts_ms < run.end_ms
    check_users_never_share_a_millisecond(unique(run.events))


@settings(max_examples=20, deadline=None)
@given(small_runs())
def test_every_event_meets_the_contract(run: Run) -> None:
    check_run_contract(run)


def test_a_week_meets_the_contract_with_late_and_repeated_events() -> None:
    check_run_contract(week_run())
    check_run_contract(simulate(11, 300, MONDAY, 7 * DAY, late=0.05, duplicates=0.05))


# -- 4. causality and consistency --------------------------------------------------------------


def check_consistency(run: Run) -> None:
    """Content, votes, registrations and blocks, walked in sending order (the run must have no
    late events: then sending order is time order)."""
    check_content(run.history, run.events)
    check_votes(run.events)
    check_lifecycle(run.forum.users, run.events, run.start_ms)


@settings(max_examples=20, deadline=None)
@given(small_runs())
def test_events_are_consistent_with_the_forum(run: Run) -> None:
    check_consistency(run)


def test_a_week_is_consistent_with_the_forum() -> None:
    run = week_run()
    check_consistency(run)
    seen = counts(run.events)
    assert seen[EventType.VOTE_CANCELED] > 10 and seen[EventType.USER_REGISTERED] > 10
    assert sum(u.blocked_ms is not None for u in run.forum.users) >= 2
    created = [e for e in run.events if e.type in CREATING_TYPES]
    assert run.history.last_post > 50 and run.history.last_thread > 50  # history exists
    assert min(e.post_id or 0 for e in created) == run.history.last_post + 1
    assert min(e.thread_id or 0 for e in created if e.type is EventType.QUESTION_ASKED) == (
        run.history.last_thread + 1
    )


def test_a_user_blocked_during_a_visit_stops_at_once() -> None:
    """Many blocked regulars, so that visits are in progress when blocks happen."""
    start, end = MONDAY, MONDAY + 3 * DAY
    forum = build_forum(3, 150, start, end)
    rng = random.Random(3)
    users = tuple(
        u
        if u.user_id == 1
        else dataclasses.replace(
            u, role=Role.BLOCKED, blocked_ms=rng.randrange(start, end), visits_per_day=6.0
        )
        for u in forum.users
    )
    run = backfill(
        dataclasses.replace(forum, users=users), SimulationOptions(3, TIMEOUT, 0, 0), start, end
    )
    assert len(run.events) > 1000
    check_lifecycle(users, run.events, start)
    check_content(run.history, run.events)


# -- 5. sessions around the timeout ------------------------------------------------------------


def gaps(events: Iterable[Event]) -> Counter[int]:
    """Every gap between a user's consecutive events (resent copies aside)."""
    out: Counter[int] = Counter()
    for mine in by_user(unique(events)).values():
        out.update(b.ts_ms - a.ts_ms for a, b in zip(mine, mine[1:], strict=False))
    return out


def test_sessions_meet_the_timeout_on_both_sides() -> None:
    seen = gaps(week_run().events)
    assert seen[TIMEOUT] >= 5  # exactly the timeout: the session goes on
    assert seen[TIMEOUT + SECOND] >= 5  # a second over: a new session
    assert sum(n for gap, n in seen.items() if gap > 3 * TIMEOUT) > 0  # away and back


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32), timeout=st.integers(MINUTE, 3 * HOUR))
def test_think_times_straddle_the_timeout(seed: int, timeout: int) -> None:
    rng = random.Random(seed)
    pauses = Counter(think_ms(rng, timeout) for _ in range(3000))
    assert pauses[timeout] > 0 and pauses[timeout + SECOND] > 0
    assert min(pauses) >= SECOND
    assert max(pauses) <= max(15 * MINUTE, 3 * timeout + 5 * MINUTE)


# -- 6. the rhythm of days and weeks -----------------------------------------------------------


def test_nights_are_quiet_on_the_users_local_clock() -> None:
    run = simulate(21, 300, MONDAY, 21 * DAY)
    users = run.users()
    by_hour = Counter(local_ms(e, users[e.user_id]) // HOUR % 24 for e in run.events)
    night = sum(by_hour[h] for h in range(2, 6)) / 4
    midday = sum(by_hour[h] for h in range(10, 16)) / 6
    assert night < 0.25 * midday


def session_starts(run: Run) -> Iterator[Event]:
    """Each session's first event (the user's first, or after a gap over the timeout)."""
    for mine in by_user(unique(run.events)).values():
        yield mine[0]
        yield from (b for a, b in zip(mine, mine[1:], strict=False) if b.ts_ms - a.ts_ms > TIMEOUT)


def test_weekends_bring_fewer_visits() -> None:
    run = simulate(22, 300, MONDAY, 28 * DAY)
    users = run.users()
    weekday = Counter(
        datetime.fromtimestamp(local_ms(e, users[e.user_id]) / 1000, UTC).weekday()
        for e in session_starts(run)
    )
    workdays = sum(weekday[d] for d in range(5)) / 5
    weekend = (weekday[5] + weekday[6]) / 2
    assert weekend < 0.75 * workdays


# -- 7. the outbox -----------------------------------------------------------------------------


def steady_events(n: int, spacing_ms: int) -> list[Event]:
    """`n` events of a few users, `spacing_ms` apart."""
    return [
        Event(f"e{i}", EventType.ACTIVITY, MONDAY + i * spacing_ms, 1 + i % 7) for i in range(n)
    ]


Copy = tuple[str, int]
"""An event id and which copy of it (0: the first sent, 1: the repeat)."""


def copies_of(events: Iterable[Event]) -> list[Copy]:
    """Each sent event as (id, how many of that id came before it)."""
    seen: Counter[str] = Counter()
    out: list[Copy] = []
    for e in events:
        out.append((e.id, seen[e.id]))
        seen[e.id] += 1
    return out


def send_through(outbox: Outbox, events: Sequence[Event], poll_ms: int) -> list[tuple[Event, int]]:
    """Feed the events as a backfill does, looking into the outbox at each event's time and
    then every `poll_ms` until it is empty; each sent event with the look that found it."""
    sent: list[tuple[Event, int]] = []
    now = 0
    for e in events:
        outbox.put(e, e.ts_ms)
        now = e.ts_ms
        sent.extend((out, now) for out in outbox.due(now))
    while len(outbox):
        now += poll_ms
        sent.extend((out, now) for out in outbox.due(now))
    return sent


def sending_windows(sent: Sequence[tuple[Event, int]], poll_ms: int) -> dict[Copy, range]:
    """When each copy was sent, as far as the looks tell: after the previous look, at or
    before the one that found it (looks are at most `poll_ms` apart)."""
    found = [at for _, at in sent]
    return {
        c: range(at - poll_ms + 1, at + 1)
        for c, at in zip(copies_of(e for e, _ in sent), found, strict=True)
    }


def check_sending_order(order: Sequence[Event], windows: dict[Copy, range]) -> None:
    """`order` is by sending time: no copy comes after one that was surely sent later."""
    earliest_so_far = -1
    for copy in copies_of(order):
        window = windows[copy]
        assert earliest_so_far <= window.stop - 1, f"{copy} sent later than something after it"
        earliest_so_far = max(earliest_so_far, window.start)


def within_binomial(observed: int, n: int, p: float) -> bool:
    """`observed` is within five standard deviations of a Binomial(n, p) draw's mean."""
    return abs(observed - n * p) <= 5 * math.sqrt(n * p * (1 - p))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_the_outbox_holds_back_and_repeats_its_shares(seed: int) -> None:
    spacing = 10 * SECOND
    events = steady_events(4000, spacing)
    outbox = Outbox(random.Random(seed), late=0.1, duplicates=0.05)
    sent = send_through(outbox, events, spacing)
    assert within_binomial(outbox.held_back, len(events), 0.1)
    assert within_binomial(outbox.resent, len(events), 0.05)
    copies: dict[str, list[tuple[Event, int]]] = {}
    for e, at in sent:
        copies.setdefault(e.id, []).append((e, at))
    assert len(copies) == len(events) and len(sent) == len(events) + outbox.resent
    assert all(len(c) in (1, 2) for c in copies.values())
    assert sum(len(c) == 2 for c in copies.values()) == outbox.resent
    for pair in (c for c in copies.values() if len(c) == 2):
        (first, first_at), (second, second_at) = pair
        assert first == second  # an exact copy: same id, same fields
        assert 0 <= second_at - first_at <= HOUR + spacing
    delays = [c[0][1] - c[0][0].ts_ms for c in copies.values()]
    held = [d for d in delays if d > 0]
    assert len(held) == outbox.held_back
    assert all(MINUTE <= d <= 6 * HOUR + spacing for d in held)
    short = sum(d <= 9 * MINUTE + spacing for d in held)
    assert within_binomial(short, len(held), 0.6)
    overtaken, latest = 0, 0
    for e, _ in sent:
        overtaken += e.ts_ms < latest
        latest = max(latest, e.ts_ms)
    assert overtaken >= outbox.held_back  # a late event comes after later events


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_the_outbox_sends_in_order_of_sending_time(seed: int) -> None:
    """Filled at once and drained, the outbox gives what looks at every step showed, in
    sending order (the same seed makes the same decisions)."""
    spacing = 10 * SECOND
    events = steady_events(3000, spacing)
    looked = send_through(Outbox(random.Random(seed), 0.1, 0.05), events, spacing)
    windows = sending_windows(looked, spacing)
    check_sending_order([e for e, _ in looked], windows)
    filled = Outbox(random.Random(seed), 0.1, 0.05)
    for e in events:
        filled.put(e, e.ts_ms)
    drained = list(filled.drain())
    assert sorted(drained) == sorted(e for e, _ in looked)
    check_sending_order(drained, windows)


def test_without_late_or_repeated_events_the_outbox_sends_in_time_order() -> None:
    events = steady_events(2000, 3 * SECOND)
    outbox = Outbox(random.Random(1), late=0.0, duplicates=0.0)
    sent = send_through(outbox, events, SECOND)
    assert [e for e, _ in sent] == events
    assert all(at == e.ts_ms for e, at in sent)
    assert (outbox.held_back, outbox.resent) == (0, 0)


def test_a_backfill_sends_late_and_repeated_copies_of_the_same_events() -> None:
    exact = week_run()
    messy = simulate(11, 300, MONDAY, 7 * DAY, late=0.1, duplicates=0.05)
    assert list(exact.events) == sorted(exact.events, key=lambda e: e.ts_ms)
    assert len({e.id for e in exact.events}) == len(exact.events)
    assert (exact.held_back, exact.resent) == (0, 0)
    assert unique(messy.events) == unique(exact.events)  # the outbox changes sending only
    assert len(messy.events) == len(exact.events) + messy.resent
    assert within_binomial(messy.held_back, len(exact.events), 0.1)
    assert within_binomial(messy.resent, len(exact.events), 0.05)
    assert list(messy.events) != sorted(messy.events, key=lambda e: e.ts_ms)


# -- 8. the population -------------------------------------------------------------------------


def check_organization(user: SimUser, memberships: Sequence[Membership]) -> None:
    """A company address puts the user in its organization group, by Askbot's naming rule,
    since registration; a webmail address puts them in none."""
    domain = email_domain(user.email)
    assert domain is not None
    organizations = [m for m in memberships if m.group_id in ORGANIZATIONS.values()]
    name = organization_name(user.email)
    if name is None:
        assert is_webmail(domain)
        assert organizations == [] and organization_of(user) is None
        return
    assert not is_webmail(domain)
    (membership,) = organizations
    assert GROUP_NAMES[membership.group_id] == name
    assert organization_of(user) == membership.group_id
    assert (membership.since_ms, membership.until_ms) == (user.joined_ms, None)


def check_memberships(forum: Forum, end_ms: int) -> None:
    """Staff are staff; memberships are intervals inside the period's past, one per group."""
    mine: dict[int, list[Membership]] = {u.user_id: [] for u in forum.users}
    group_ids = {g.group_id for g in forum.groups}
    for m in forum.memberships:
        mine[m.user_id].append(m)
        assert m.group_id in group_ids
        assert m.since_ms < end_ms
        if m.until_ms is not None:
            assert m.since_ms < m.until_ms < end_ms
    for user in forum.users:
        groups = [m.group_id for m in mine[user.user_id]]
        assert len(set(groups)) == len(groups)
        assert (STAFF in groups) == (user.role in (Role.ADMIN, Role.MODERATOR))
        assert (user.blocked_ms is not None) == (user.role is Role.BLOCKED)
        check_organization(user, mine[user.user_id])


def check_user_records(forum: Forum) -> None:
    """Records survive the wire; each ended membership has a later record without its group,
    updated when the user left."""
    records = user_records(forum)
    for record in records:
        assert parse_user(orjson.loads(record.to_json())) == record
    first = records[: len(forum.users)]
    assert [r.user_id for r in first] == [u.user_id for u in forum.users]
    assert all(r.updated_at is None for r in first)
    later = records[len(forum.users) :]
    ended = [(m, m.until_ms) for m in forum.memberships if m.until_ms is not None]
    assert len(later) == len(ended)
    for m, until in ended:
        assert any(
            r.user_id == m.user_id
            and r.updated_at == ms_to_datetime(until)
            and m.group_id not in r.group_ids
            for r in later
        ), m
    stamps = [r.updated_at for r in later if r.updated_at is not None]
    assert stamps == sorted(stamps)


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    users=st.integers(1, 150),
    start=st.integers(MONDAY - 400 * DAY, MONDAY + 400 * DAY),
    period=st.integers(0, 60 * DAY),
)
def test_the_population_matches_the_catalogue(
    seed: int, users: int, start: int, period: int
) -> None:
    forum = build_forum(seed, users, start, start + period)
    assert [u.user_id for u in forum.users] == list(range(1, users + 1))
    assert forum.users[0].role is Role.ADMIN
    assert len({u.username for u in forum.users}) == users
    check_memberships(forum, start + period)
    check_user_records(forum)


def test_a_large_population_has_every_kind_of_member() -> None:
    forum = week_run().forum
    roles = Counter(u.role for u in forum.users)
    assert roles[Role.ADMIN] == 1 and roles[Role.MODERATOR] > 0 and roles[Role.BLOCKED] > 0
    companies = sum(organization_of(u) is not None for u in forum.users)
    assert 0.3 * len(forum.users) < companies < 0.6 * len(forum.users)
    assert any(m.until_ms is not None for m in forum.memberships)
    assert len(ORGANIZATIONS) == len(COMPANIES)
    check_user_records(forum)


@pytest.mark.parametrize("how", ["environment", "arguments"])
def test_segment_settings_load_and_resolve(
    how: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    for name in ("ANALYTICS_NAMED_SEGMENTS", "ANALYTICS_DEFAULT_SEGMENT"):
        monkeypatch.delenv(name, raising=False)
    values = segment_settings()
    if how == "environment":
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        loaded = load_settings()
    else:
        loaded = load_settings(
            named_segments=values["ANALYTICS_NAMED_SEGMENTS"],
            default_segment=values["ANALYTICS_DEFAULT_SEGMENT"],
        )
    segments = resolve_segments(loaded)
    assert segments.all_slugs() == ("customers", "partners", "staff", "community")
    assert segments.default.slug == "community"

    def groups_of(slug: str) -> frozenset[int]:
        segment = segments.by_slug(slug)
        assert segment is not None
        return segment.group_ids

    kinds = {
        kind: {ORGANIZATIONS[c.name] for c in COMPANIES if c.kind == kind}
        for kind in ("customer", "partner")
    }
    assert groups_of("customers") == kinds["customer"] and groups_of("partners") == kinds["partner"]
    assert groups_of("staff") == {STAFF}
    analytics = {g.group_id for g in forum_groups() if g.used_for_analytics}
    assert segments.named_group_ids < analytics  # beta testers count in the default segment


# -- 9. live traffic ---------------------------------------------------------------------------


def check_live_lifecycle(users: Iterable[SimUser], events: Sequence[Event], known: int) -> None:
    """Users 1..`known` were there before: they never register. A newcomer's first event is
    their one registration, after they joined; a blocked user never comes back."""
    mine = by_user(events)
    for user in users:
        theirs = mine.get(user.user_id, [])
        registered = [e for e in theirs if e.type is EventType.USER_REGISTERED]
        if user.blocked_ms is not None:
            assert all(e.ts_ms < user.blocked_ms for e in theirs)
        if user.user_id <= known:
            assert registered == []
        elif theirs:
            assert registered == theirs[:1] and theirs[0].ts_ms >= user.joined_ms


def live_forum(seed: int, users: int, rate: float, now_ms: int) -> LiveForum:
    """Live traffic with no history before it, as `simulate --live` without a backfill."""
    forum = build_forum(seed, users, now_ms, now_ms)
    rng = random.Random(f"{seed}/visits")
    engine = Engine(rng, new_board(rng, forum, now_ms), TIMEOUT, f"live{seed}")
    return LiveForum(engine, forum, rate, random.Random(f"{seed}/live"))


@pytest.mark.parametrize("rate", [0.05, 2.0, 50.0])
def test_live_events_happen_now_and_newcomers_come_with_a_record(rate: float) -> None:
    users = 150
    now = MONDAY
    live = live_forum(4, users, rate, now)
    assert live.concurrency == max(4, min(int(rate * 60), users // 3))
    history = snapshot(live.engine.board)
    last: dict[int, int] = {}
    events: list[Event] = []
    chunk_size = 10
    for chunk in range(500):  # as the sender: one `now` for a chunk of events
        now += 1 + (chunk % 3) * SECOND  # 1 ms, 1 s or 2 s later
        for _ in range(chunk_size):
            e = live.next_event(now)
            assert e.ts_ms == max(now, last.get(e.user_id, 0) + 1)
            last[e.user_id] = e.ts_ms
            if e.type is EventType.USER_REGISTERED:
                assert e.user_id > users and any(r.user_id == e.user_id for r in live.records)
            assert live.engine.visiting <= live.concurrency
            events.append(e)
    forum = live.forum
    everyone = {u.user_id: u for u in forum.users}
    newcomers = [u for u in forum.users if u.user_id > users]
    assert len(newcomers) >= 2
    assert {r.user_id for r in live.records} == {u.user_id for u in newcomers}
    for r in live.records:
        newcomer = everyone[r.user_id]
        assert (r.email, r.role, r.organization_id) == (
            newcomer.email,
            Role.USER,
            organization_of(newcomer),
        )
    for e in events:
        check_contract(e, everyone[e.user_id], received_at_ms=now)
    check_users_never_share_a_millisecond(events)
    # One `now` stamps a chunk; a user acting twice in it gets now+1, now+2..., so a post
    # created at now+1 may be read by another user's event at `now`: a chunk's length of slack.
    check_content(history, events, slack_ms=chunk_size)
    check_votes(events)
    check_live_lifecycle(forum.users, events, users)
    check_memberships(forum, now + 1)
