"""The incremental core (streams.user_state) against the batch reference.

The central property: however a user's events are split into batches and ordered, with
duplicates and serialisation round trips in between, the sum of every `hour_deltas` equals the
brute-force summary of the deduplicated events, and replaying `sessions_removed`/`sessions_added`
yields exactly the reference sessions.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.events import Event, EventType
from streams.hourly import HourSummary
from streams.sessionizer import Session
from streams.user_state import StateChange, StateConfig, UserState
from tests.test_hourly import STARTS, ref_summary
from tests.test_sessionizer import ref_sessions
from tests.test_timebuckets import ZONES, ms

UTC = ZoneInfo("UTC")
MINUTE = 60_000
TIMEOUT = 30 * MINUTE
CONFIG = StateConfig(TIMEOUT, UTC)
USER = 7
T0 = ms("2024-05-01T12:40:00+00:00")


def ev(
    event_id: str,
    ts_ms: int,
    kind: EventType = EventType.ACTIVITY,
    ip: str | None = None,
    ua: str | None = None,
) -> Event:
    return Event(event_id, kind, ts_ms, USER, ip, ua)


class Ledger:
    """What a writer downstream of `apply` holds: summed deltas and replayed sessions. It also
    checks the change protocol: a removed session exists, an added one does not yet."""

    def __init__(self) -> None:
        self.hours: dict[int, HourSummary] = {}
        self.sessions: set[Session] = set()
        self.duplicates = 0

    def record(self, change: StateChange) -> None:
        for hour, delta in change.hour_deltas.items():
            assert not delta.is_zero(), "a zero delta was returned"
            total = self.hours.get(hour, HourSummary()) + delta
            if total.is_zero():
                self.hours.pop(hour, None)
            else:
                self.hours[hour] = total
        for session in change.sessions_removed:
            assert session in self.sessions, f"removed a session never added: {session}"
            self.sessions.remove(session)
        for session in change.sessions_added:
            assert session not in self.sessions, f"added a session twice: {session}"
            self.sessions.add(session)
        assert not set(change.sessions_removed) & set(change.sessions_added)
        self.duplicates += change.duplicates

    def sorted_sessions(self) -> list[Session]:
        return sorted(self.sessions, key=lambda s: s.start_ms)


def first_applied(events: Iterable[Event]) -> list[Event]:
    """Deduplicate in application order: the first copy of an id wins."""
    seen: dict[str, Event] = {}
    for event in events:
        seen.setdefault(event.id, event)
    return list(seen.values())


def apply_all(state: UserState, batches: Iterable[Sequence[Event]], ledger: Ledger) -> UserState:
    for batch in batches:
        ledger.record(state.apply(batch))
    return state


# -- examples ----------------------------------------------------------------------------------


def test_design_example_arriving_event_by_event() -> None:
    state, ledger = UserState(USER, CONFIG), Ledger()
    apply_all(state, [[ev(f"e{i}", T0 + i * 10 * MINUTE)] for i in range(10)], ledger)
    h12, h13, h14 = (ms(f"2024-05-01T{h}:00:00+00:00") for h in (12, 13, 14))
    assert {h: s.time_on_site for h, s in ledger.hours.items()} == {h12: 1200, h13: 3600, h14: 600}
    (session,) = ledger.sessions
    assert session.duration_s == 90 * 60 and session.event_count == 10


def test_late_event_merging_two_sessions_changes_other_hours() -> None:
    state, ledger = UserState(USER, CONFIG), Ledger()
    left = [ev("a", T0), ev("b", T0 + 10 * MINUTE)]  # 12:40 → 12:50
    right = [ev("d", T0 + 70 * MINUTE), ev("e", T0 + 100 * MINUTE)]  # 13:50 → 14:20
    apply_all(state, [left, right], ledger)
    assert len(ledger.sessions) == 2
    change = state.apply([ev("c", T0 + 40 * MINUTE)])  # 13:20 bridges them
    ledger.record(change)
    h12, h13, h14 = (ms(f"2024-05-01T{h}:00:00+00:00") for h in (12, 13, 14))
    assert change.hour_deltas == {
        h12: HourSummary(time_on_site=600),  # 12:50 → 13:00 filled
        h13: HourSummary(num_events=1, time_on_site=50 * 60, num_sessions_started=-1),
    }
    assert len(change.sessions_removed) == 2 and len(change.sessions_added) == 1
    (merged,) = ledger.sessions
    assert (merged.start_ms, merged.last_ms, merged.event_count) == (T0, T0 + 100 * MINUTE, 5)
    assert ledger.hours[h14].time_on_site == 20 * 60


def test_exact_timeout_continues_and_one_more_millisecond_splits() -> None:
    for gap, sessions in ((TIMEOUT, 1), (TIMEOUT + 1, 2)):
        state, ledger = UserState(USER, CONFIG), Ledger()
        apply_all(state, [[ev("b", T0 + gap)], [ev("a", T0)]], ledger)  # late arrival
        assert len(ledger.sessions) == sessions == len(state.sessions)


def test_duplicate_ids_count_once_and_the_first_applied_wins() -> None:
    state, ledger = UserState(USER, CONFIG), Ledger()
    first = ev("x", T0, EventType.UPVOTED, "10.0.0.1")
    resent = ev("x", T0 + 5 * MINUTE, EventType.DOWNVOTED, "10.0.0.2")  # same id, other fields
    change = state.apply([first, first])
    assert change.duplicates == 1 and change.accepted == [first]
    ledger.record(change)
    change = state.apply([resent])
    assert change.duplicates == 1 and change.accepted == []
    assert change.hour_deltas == {} and change.sessions_added == change.sessions_removed == []
    ledger.record(change)
    (summary,) = ledger.hours.values()
    assert (summary.num_upvotes, summary.num_downvotes, summary.num_events) == (1, 0, 1)
    assert ledger.duplicates == 2 and state.ids_kept == 1


def test_ip_and_agent_follow_the_earliest_event_whatever_the_arrival() -> None:
    state, ledger = UserState(USER, CONFIG), Ledger()
    apply_all(
        state,
        [
            [ev("b", T0 + MINUTE, ip="10.0.0.2", ua="later")],
            [ev("z", T0, ip="10.0.0.9", ua="same ms, bigger id")],
            [ev("m", T0, ip="10.0.0.1", ua="first")],
        ],
        ledger,
    )
    (session,) = ledger.sessions
    assert (session.first_id, session.ip, session.user_agent) == ("m", "10.0.0.1", "first")


def test_an_event_inside_a_session_changes_only_its_count_and_hour() -> None:
    state, ledger = UserState(USER, CONFIG), Ledger()
    apply_all(state, [[ev("a", T0), ev("c", T0 + 90 * MINUTE // 9)]], ledger)
    change = state.apply([ev("b", T0 + MINUTE, EventType.QUESTION_ASKED)])
    (old,), (new,) = change.sessions_removed, change.sessions_added
    assert new == old._replace(event_count=3)
    assert change.hour_deltas == {
        ms("2024-05-01T12:00:00+00:00"): HourSummary(num_questions=1, num_events=1)
    }


def test_empty_batch_and_foreign_user() -> None:
    state = UserState(USER, CONFIG)
    assert state.apply([]) == StateChange({}, [], [], 0, [], [])
    with pytest.raises(ValueError, match="user 8"):
        state.apply([Event("x", EventType.ACTIVITY, T0, 8)])


def test_ids_sharing_the_high_digest_bits_are_told_apart_by_the_low_bits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Force 64-bit collisions (the high part is 0 or 1) to exercise the sorted-run search."""
    import streams.user_state as module

    monkeypatch.setattr(module, "_digest", lambda i: (len(i) % 2, int(i.lstrip("x")) * 7 % 40))
    state = UserState(USER, CONFIG)
    ids = [f"{'x' * (k % 3)}{k}" for k in range(40)]
    order = ids[::2] + ids[1::2][::-1]
    change = state.apply([ev(i, T0 + n) for n, i in enumerate(order)])
    assert change.duplicates == 0 and state.ids_kept == 40
    change = state.apply([ev(i, T0) for i in reversed(ids)])
    assert change.duplicates == 40 and change.accepted == []


# -- eviction and the horizon ------------------------------------------------------------------


def test_evict_forgets_sessions_out_of_reach_and_their_ids() -> None:
    state = UserState(USER, CONFIG)
    state.apply([ev("a", T0), ev("b", T0 + MINUTE)])  # ends 12:41
    state.apply([ev("c", T0 + 3 * 60 * MINUTE)])  # 15:40
    # Events from 13:11 on cannot reach the first session (12:41 + 30 min): nothing to forget.
    assert state.evict(T0 + MINUTE + TIMEOUT) == 0
    assert state.evict(T0 + MINUTE + TIMEOUT + 1) == 1
    assert state.forgotten_ms == T0 + MINUTE
    assert [s.first_id for s in state.sessions] == ["c"] and state.ids_kept == 1
    assert state.evict(T0) == 0  # an older horizon changes nothing


def test_events_at_or_after_the_horizon_stay_exact() -> None:
    state = UserState(USER, CONFIG)
    state.apply([ev("a", T0)])
    before = T0 + TIMEOUT + 1
    state.evict(before)
    change = state.apply([ev("b", before)])  # 30 min + 1 ms after "a": a new session anyway
    assert change.beyond_horizon == []
    assert change.sessions_removed == []


def test_a_very_late_event_is_applied_and_flagged() -> None:
    state = UserState(USER, CONFIG)
    state.apply([ev("a", T0), ev("b", T0 + 10 * MINUTE)])
    state.apply([ev("d", T0 + 5 * 60 * MINUTE)])
    state.evict(T0 + 4 * 60 * MINUTE)
    late = ev("c", T0 + 15 * MINUTE, EventType.ANSWER_POSTED)  # would extend the forgotten one
    change = state.apply([late])
    assert change.beyond_horizon == [late]
    # Its own hour's counters are exact; its session is computed without the forgotten history.
    h12 = ms("2024-05-01T12:00:00+00:00")
    assert change.hour_deltas == {
        h12: HourSummary(num_answers=1, num_events=1, num_sessions_started=1)
    }
    assert [s.first_id for s in change.sessions_added] == ["c"]
    # Deterministic: the same history gives the same answer, and a re-sent copy is a duplicate.
    assert state.apply([late]).duplicates == 1
    # An event after forgotten + timeout is not flagged even though it is old.
    assert state.apply([ev("e", T0 + 10 * MINUTE + TIMEOUT + 1)]).beyond_horizon == []


# -- serialisation -----------------------------------------------------------------------------


def test_round_trip_keeps_everything() -> None:
    state = UserState(2**63 - 1, StateConfig(TIMEOUT, ZoneInfo("Australia/Lord_Howe")))
    user = 2**63 - 1
    state.apply(
        [
            Event("é-ü-\U0001f600", EventType.LOGGED_IN, T0, user, "", None),
            Event("b", EventType.ACTIVITY, T0 + 5, user, None, "ü" * 300),
            Event("c", EventType.ACTIVITY, T0 + 3 * TIMEOUT, user, "::1", ""),
            Event("old", EventType.ACTIVITY, T0 - 3 * TIMEOUT, user),
        ]
    )
    assert state.evict(T0) == 1
    state.last_applied = (5, 2**40, 17)
    copy = UserState.from_bytes(state.to_bytes(), state.config)
    assert copy == state and copy.to_bytes() == state.to_bytes()
    assert copy.sessions == state.sessions and copy.forgotten_ms == state.forgotten_ms
    assert copy.last_applied == (5, 2**40, 17) and copy.sessions[0].first_id == "é-ü-\U0001f600"
    assert copy.sessions[0].ip == "" and copy.sessions[0].user_agent is None
    empty = UserState(USER, CONFIG)
    assert UserState.from_bytes(empty.to_bytes(), CONFIG) == empty
    assert copy != empty


def test_from_bytes_refuses_another_configuration_or_damage() -> None:
    state = UserState(USER, CONFIG)
    state.apply([ev("a", T0)])
    data = state.to_bytes()
    with pytest.raises(ValueError, match="another session timeout or time zone"):
        UserState.from_bytes(data, StateConfig(TIMEOUT, ZoneInfo("Europe/Berlin")))
    with pytest.raises(ValueError, match="another session timeout"):
        UserState.from_bytes(data, StateConfig(TIMEOUT + 1, UTC))
    with pytest.raises(ValueError, match="truncated"):
        UserState.from_bytes(data[:-1], CONFIG)
    with pytest.raises(ValueError, match="trailing"):
        UserState.from_bytes(data + b"\0", CONFIG)
    with pytest.raises(ValueError, match="format"):
        UserState.from_bytes(b"\x63" + data[1:], CONFIG)


def test_serialised_size_of_a_typical_user_hour_is_under_a_kibibyte() -> None:
    """20 events an hour (UUID ids, an IP, a browser user agent) in one session."""
    agent = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0"
    for hours in (1, 2, 4):
        state = UserState(USER, CONFIG)
        for i in range(20 * hours):
            state.apply([ev(uuid.uuid4().hex, T0 + i * 3 * MINUTE, ip="203.0.113.77", ua=agent)])
        assert len(state.to_bytes()) <= 1024 * hours
        assert state.ids_kept == 20 * hours


# -- the central property ----------------------------------------------------------------------


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[StateConfig, list[Event], list[list[Event]]]:
    """A user's history and one way of delivering it: shuffled, duplicated, in batches."""
    zone = draw(st.sampled_from(ZONES))
    timeout = draw(st.sampled_from([1000, MINUTE, TIMEOUT]))
    gaps = st.one_of(
        st.sampled_from([0, 1, timeout - 1, timeout, timeout + 1]),
        st.integers(0, 2 * timeout),
        st.integers(0, 2 * 3_600_000),
    )
    n = draw(st.integers(1, 20))
    ids = draw(st.permutations([f"id{i:02d}" for i in range(n)]))  # ties break either way
    ts = draw(st.sampled_from(STARTS)) + draw(st.integers(0, 3_600_000))
    events = []
    for i in range(n):
        ts += draw(gaps)
        kind = draw(st.sampled_from(list(EventType)))
        ip = draw(st.sampled_from([None, "10.0.0.1", "10.0.0.2"]))
        events.append(ev(ids[i], ts, kind, ip, f"agent {i}"))
    copies = draw(st.lists(st.sampled_from(events), max_size=5))
    arrival = draw(st.permutations(events + copies))
    cuts = sorted(draw(st.lists(st.integers(0, len(arrival)), max_size=6)))
    bounds = [0, *cuts, len(arrival)]
    batches = [arrival[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    return StateConfig(timeout, zone), arrival, batches


@settings(max_examples=250, deadline=None)
@given(scenarios(), st.data())
def test_any_batching_and_order_sums_to_the_reference(
    case: tuple[StateConfig, list[Event], list[list[Event]]], data: st.DataObject
) -> None:
    config, arrival, batches = case
    state, ledger = UserState(USER, config), Ledger()
    for number, batch in enumerate(batches):
        ledger.record(state.apply(batch))
        state.last_applied = (0, number, len(batch))
        if data.draw(st.booleans(), label="round trip"):
            copy = UserState.from_bytes(state.to_bytes(), config)
            assert copy == state
            state = copy
    unique = first_applied(arrival)
    expected_sessions = ref_sessions(USER, unique, config.timeout_ms)
    assert ledger.hours == ref_summary(unique, expected_sessions, config.zone)
    assert ledger.sorted_sessions() == expected_sessions
    assert state.sessions == expected_sessions
    assert ledger.duplicates == len(arrival) - len(unique)


@settings(max_examples=150, deadline=None)
@given(scenarios(), st.data())
def test_eviction_keeps_later_events_exact(
    case: tuple[StateConfig, list[Event], list[list[Event]]], data: st.DataObject
) -> None:
    """Deliver everything before `before` (and some of the rest), evict, then the rest:
    the totals stay exact, nothing is flagged, and only out-of-reach sessions were forgotten."""
    config, arrival, _ = case
    times = sorted({e.ts_ms for e in arrival})
    before = data.draw(st.sampled_from(times), label="before") + data.draw(
        st.sampled_from([-1, 0, 1]), label="nudge"
    )
    early_ids = {e.id for e in arrival if e.ts_ms < before}
    early_ids |= set(data.draw(st.lists(st.sampled_from([e.id for e in arrival])), label="early"))
    early = [e for e in arrival if e.id in early_ids]
    late = [e for e in arrival if e.id not in early_ids]
    late += data.draw(st.lists(st.sampled_from(late or early)), label="late copies")
    late = [e for e in late if e.ts_ms >= before]
    state, ledger = UserState(USER, config), Ledger()
    ledger.record(state.apply(early))
    state.evict(before)
    for session in state.sessions:
        assert session.last_ms >= before - config.timeout_ms
    kept_from = state.sessions[0].start_ms // 1000 if state.sessions else float("inf")
    assert state.ids_kept == sum(e.ts_ms // 1000 >= kept_from for e in first_applied(early))
    if data.draw(st.booleans(), label="round trip"):
        state = UserState.from_bytes(state.to_bytes(), config)
    for event in late:
        change = state.apply([event])
        assert change.beyond_horizon == []
        ledger.record(change)
    unique = first_applied(early + late)
    expected_sessions = ref_sessions(USER, unique, config.timeout_ms)
    assert ledger.hours == ref_summary(unique, expected_sessions, config.zone)
    assert ledger.sorted_sessions() == expected_sessions
    assert state.sessions == [
        s for s in expected_sessions if s.last_ms >= before - config.timeout_ms
    ]
