"""PartitionProcessor and StepRecord, without Kafka: the rows a partition's steps write, summed,
equal a batch recomputation from the deduplicated events, whatever the batching, lateness,
duplicates, eviction and crashes (a step replayed from its record after any partial write)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.events import Event, EventType
from streams.hourly import FIELDS, summarize
from streams.partition_processor import (
    PartitionMark,
    PartitionProcessor,
    Positioned,
    Step,
    StepConfig,
)
from streams.sessionizer import Session, activity_of, sessionize
from streams.step_record import StepRecord, partition_key
from streams.user_entry import UserEntry
from streams.user_state import StateConfig

MIN = 60_000
HOUR = 60 * MIN
T0 = 1_700_000_000_000 - 1_700_000_000_000 % (24 * HOUR)  # a UTC midnight
TIMEOUT = 30 * MIN
GRACE = 10 * MIN
TYPES = list(EventType)


class StoredHistory:
    """The `events` table as the worker leaves it: every valid event, with its offset."""

    def __init__(self, timeout_ms: int) -> None:
        self.rows: list[Positioned] = []
        self.timeout_ms = timeout_ms

    def _upto(self, user_id: int, before: PartitionMark) -> list[Positioned]:
        return [
            r for r in self.rows if r.event.user_id == user_id and r.offset <= before.end_offset
        ]

    def seen_ids(self, user_id: int, ids: Sequence[str], before: PartitionMark) -> set[str]:
        stored = {r.event.id for r in self._upto(user_id, before)}
        return {i for i in ids if i in stored}

    def sessions_near(
        self, user_id: int, first_ms: int, last_ms: int, before: PartitionMark
    ) -> list[Session]:
        sessions = sessionize(user_id, _activities(self._upto(user_id, before)), self.timeout_ms)
        lo, hi = first_ms - self.timeout_ms, last_ms + self.timeout_ms
        return [s for s in sessions if s.last_ms >= lo and s.start_ms <= hi]


def _activities(rows: list[Positioned]) -> list:  # type: ignore[type-arg]
    first: dict[str, Event] = {}
    for r in sorted(rows, key=lambda r: (r.offset, r.element)):
        first.setdefault(r.event.id, r.event)
    return sorted(activity_of(e) for e in first.values())


@dataclass
class Sink:
    """ClickHouse as the worker sees it: inserts named by token, a repeat dropped."""

    tokens: set[str] = field(default_factory=set)
    hours: Counter[tuple[int, int, int]] = field(default_factory=Counter)
    sessions: Counter[Session] = field(default_factory=Counter)

    def insert(self, record: StepRecord) -> None:
        token = f"{record.partition}:{record.mark.seq}"
        if token in self.tokens:
            return
        self.tokens.add(token)
        for row in record.hours:
            for i, value in enumerate(row.values):
                self.hours[(row.user_id, row.hour_ms, i)] += value
        for s in record.sessions:
            self.sessions[s.session] += s.sign


class Worker:
    """The worker's write protocol around a processor, with crashes at chosen points."""

    def __init__(self, config: StepConfig, history: StoredHistory, rng: random.Random) -> None:
        self.config = config
        self.history = history
        self.rng = rng
        self.store: dict[bytes, bytes] = {}  # the state table's changelog, compacted
        self.sink = Sink()
        self.proc = PartitionProcessor(0, config, PartitionMark(), {}, T0)

    def run(self, batch: list[Positioned], wall_ms: int, crash: str | None) -> None:
        self.history.rows.extend(batch)
        step = self.proc.step(batch, wall_ms, self.history)
        record = StepRecord.of(step)
        self.store[partition_key(0)] = record.to_bytes()
        if crash == "after-record":
            self.restart(wall_ms, same_rows=step)
            return
        self.sink.insert(record)
        if crash == "after-insert":
            changed = list(step.changed.items())
            self.rng.shuffle(changed)
            self._save(dict(changed[: len(changed) // 2]))
            self.restart(wall_ms)
            return
        self._save(step.changed)

    def _save(self, changed: dict[int, UserEntry | None]) -> None:
        for user_id, entry in changed.items():
            key = str(user_id).encode()
            if entry is None:
                self.store.pop(key, None)
            else:
                self.store[key] = entry.to_bytes()

    def restart(self, wall_ms: int, same_rows: Step | None = None) -> None:
        """A new process: entries and the last record from the changelog, the record replayed."""
        state = self.config.state
        entries = {
            int(k): UserEntry.from_bytes(v, state)
            for k, v in self.store.items()
            if not k.startswith(b"~")
        }
        record = StepRecord.from_bytes(self.store[partition_key(0)])
        self.proc = PartitionProcessor(0, self.config, record.before, entries, wall_ms)
        replayed = self.proc.step(record.events, wall_ms, self.history, replay=record.mark)
        if same_rows is not None:  # nothing had been written: the replay is the step again
            assert replayed.hours == same_rows.hours
            assert replayed.sessions == same_rows.sessions
        self.sink.insert(record)
        self._save(replayed.changed)


def expected(rows: list[Positioned], zone: ZoneInfo) -> tuple[Counter, Counter]:  # type: ignore[type-arg]
    by_user: dict[int, list[Positioned]] = {}
    for r in rows:
        by_user.setdefault(r.event.user_id, []).append(r)
    hours: Counter[tuple[int, int, int]] = Counter()
    sessions: Counter[Session] = Counter()
    for user_id, items in by_user.items():
        first: dict[str, Event] = {}
        for r in items:
            first.setdefault(r.event.id, r.event)
        sess = sessionize(user_id, sorted(activity_of(e) for e in first.values()), TIMEOUT)
        sessions.update(sess)
        for hour, summary in summarize(first.values(), sess, zone).items():
            for i, value in enumerate(summary.values()):
                if value:
                    hours[(user_id, hour, i)] += value
    return hours, sessions


def _nonzero(counter: Counter) -> Counter:  # type: ignore[type-arg]
    return Counter({k: v for k, v in counter.items() if v})


@st.composite
def streams_(draw: st.DrawFn) -> tuple[list[tuple[Event, int]], int]:
    """(event, received_at) in arrival order, and a seed for batching and crashes."""
    n = draw(st.integers(1, 60))
    events = []
    t = T0 + draw(st.integers(0, 2 * HOUR))
    for i in range(n):
        t += draw(st.sampled_from([0, 1, 999, TIMEOUT - 1, TIMEOUT, TIMEOUT + 1, 5 * MIN, HOUR]))
        user = draw(st.integers(1, 4))
        kind = draw(st.sampled_from(TYPES))
        ts = t + draw(st.integers(-20 * MIN, 20 * MIN))
        delay = draw(st.sampled_from([0, 1000, MIN, 15 * MIN, 2 * HOUR, 7 * HOUR]))
        ev = Event(f"e{i}", kind, ts, user, f"10.0.0.{i % 3}", "ua")
        events.append((ev, ts + delay))
        if draw(st.integers(0, 9)) == 0:  # a duplicate, resent later
            events.append((ev, ts + delay + draw(st.sampled_from([0, MIN, 3 * HOUR]))))
    events.sort(key=lambda pair: pair[1])
    return events, draw(st.integers(0, 2**32))


@settings(max_examples=300, deadline=None)
@given(
    streams_(),
    st.sampled_from(["UTC", "Asia/Kolkata", "America/St_Johns"]),
    st.sampled_from([0, 20 * MIN, 3 * HOUR]),
    st.booleans(),
)
def test_steps_sum_to_the_batch_recomputation(
    stream: tuple[list[tuple[Event, int]], int], zone_name: str, retention: int, crashes: bool
) -> None:
    arrivals, seed = stream
    rng = random.Random(seed)
    zone = ZoneInfo(zone_name)
    config = StepConfig(StateConfig(TIMEOUT, zone), GRACE, retention)
    history = StoredHistory(TIMEOUT)
    worker = Worker(config, history, rng)
    rows = [Positioned(ev, offset, 0, received) for offset, (ev, received) in enumerate(arrivals)]
    i = 0
    while i < len(rows):
        size = rng.choice([1, 2, 5, 50])
        batch = rows[i : i + size]
        i += size
        crash = rng.choice([None, None, "after-record", "after-insert"]) if crashes else None
        worker.run(batch, batch[-1].received_at_ms, crash)
        if rng.random() < 0.3:  # an idle tick, an hour later on the wall clock
            wall = batch[-1].received_at_ms + HOUR
            if worker.proc.is_due(wall):
                worker.run([], wall, None)
    end = rows[-1].received_at_ms + 30 * 24 * HOUR
    worker.run([], end, None)  # everything final and evicted
    hours, sessions = expected(rows, zone)
    assert _nonzero(worker.sink.hours) == hours
    assert _nonzero(worker.sink.sessions) == sessions
    assert not worker.proc.entries  # all evicted
    assert [k for k in worker.store if not k.startswith(b"~")] == []


def _event(i: int, ts: int, user: int = 1) -> Positioned:
    return Positioned(Event(f"e{i}", EventType.ACTIVITY, ts, user), i, 0, ts)


def test_an_hour_is_written_once_final_then_corrected() -> None:
    config = StepConfig(StateConfig(TIMEOUT, ZoneInfo("UTC")), GRACE, HOUR)
    proc = PartitionProcessor(0, config, PartitionMark(), {}, T0)
    history = StoredHistory(TIMEOUT)
    step = proc.step([_event(0, T0 + 5 * MIN)], T0 + 5 * MIN, history)
    assert step.hours == []  # the hour is open
    step = proc.step([_event(1, T0 + HOUR + GRACE - 1)], T0 + HOUR + GRACE - 1, history)
    assert step.hours == []  # one millisecond short of hour end + grace
    step = proc.step([_event(2, T0 + HOUR + GRACE)], T0 + HOUR + GRACE, history)
    events = FIELDS.index("num_events")
    assert [(r.hour_ms, r.values[events]) for r in step.hours] == [(T0, 1)]
    late = proc.step([_event(3, T0 + 20 * MIN)], T0 + HOUR + GRACE, history)
    assert late.late == 1
    assert [(r.hour_ms, r.values[events]) for r in late.hours] == [(T0, 1)]  # a correction


def test_an_idle_partition_becomes_due_with_the_wall_clock() -> None:
    config = StepConfig(StateConfig(TIMEOUT, ZoneInfo("UTC")), GRACE, HOUR)
    proc = PartitionProcessor(0, config, PartitionMark(), {}, T0)
    history = StoredHistory(TIMEOUT)
    proc.step([_event(0, T0 + 50 * MIN)], T0 + 50 * MIN, history)
    assert not proc.is_due(T0 + HOUR + GRACE - 1)
    assert proc.is_due(T0 + HOUR + GRACE)
    step = proc.step([], T0 + HOUR + GRACE, history)
    assert [r.hour_ms for r in step.hours] == [T0]


def test_a_late_event_merging_written_sessions_cancels_them() -> None:
    config = StepConfig(StateConfig(TIMEOUT, ZoneInfo("UTC")), GRACE, 5 * HOUR)
    proc = PartitionProcessor(0, config, PartitionMark(), {}, T0)
    history = StoredHistory(TIMEOUT)
    a, b = _event(0, T0), _event(1, T0 + 50 * MIN)
    first = proc.step([a, b], T0 + 50 * MIN, history)
    assert [r.session.start_ms for r in first.sessions] == [T0]  # a is final: T0 + 40 min
    step = proc.step([], T0 + 3 * HOUR, history)
    assert [r.session.start_ms for r in step.sessions] == [T0 + 50 * MIN]
    bridge = _event(2, T0 + 25 * MIN)
    step = proc.step([bridge], T0 + 3 * HOUR, history)
    assert sorted((r.sign, r.session.event_count) for r in step.sessions) == [
        (-1, 1),
        (-1, 1),
        (1, 3),
    ]


def test_a_record_round_trips() -> None:
    config = StepConfig(StateConfig(TIMEOUT, ZoneInfo("UTC")), GRACE, HOUR)
    proc = PartitionProcessor(3, config, PartitionMark(), {}, T0)
    history = StoredHistory(TIMEOUT)
    step = proc.step([_event(0, T0), _event(1, T0 + 3 * HOUR)], T0 + 3 * HOUR, history)
    record = StepRecord.of(step)
    assert record.hours and record.sessions
    assert StepRecord.from_bytes(record.to_bytes()) == record


def test_a_session_final_exactly_at_the_previous_watermark_is_written_once() -> None:
    config = StepConfig(StateConfig(TIMEOUT, ZoneInfo("UTC")), GRACE, HOUR)
    proc = PartitionProcessor(0, config, PartitionMark(), {}, T0)
    history = StoredHistory(TIMEOUT)
    deadline = T0 + TIMEOUT + GRACE
    first = proc.step([_event(0, T0), _event(1, deadline)], deadline, history)
    assert [r.session.start_ms for r in first.sessions] == [T0]
    later = deadline + 2 * HOUR  # the user comes back: settled again, `a` not written again
    again = proc.step([_event(2, later)], later, history)
    assert [r.session.start_ms for r in again.sessions] == [deadline]


def test_an_event_beyond_the_horizon_joins_forgotten_history() -> None:
    config = StepConfig(StateConfig(TIMEOUT, ZoneInfo("UTC")), GRACE, 0)
    proc = PartitionProcessor(0, config, PartitionMark(), {}, T0)
    history = StoredHistory(TIMEOUT)
    a, b = _event(0, T0), _event(1, T0 + 5 * HOUR)
    history.rows += [a, b]
    proc.step([a, b], T0 + 5 * HOUR, history)
    assert [s.start_ms for s in proc.entries[1].state.sessions] == [T0 + 5 * HOUR]  # a forgotten
    late = _event(2, T0 + 10 * MIN)
    again = Positioned(a.event, 3, 0, T0 + 5 * HOUR)  # a resent, beyond the horizon too
    history.rows += [late, again]
    step = proc.step([late, again], T0 + 5 * HOUR, history)
    assert step.beyond_horizon == 2
    assert step.duplicates == 1
    assert sorted((r.sign, r.session.start_ms, r.session.event_count) for r in step.sessions) == [
        (-1, T0, 1),
        (1, T0, 2),
    ]
    time_on_site = FIELDS.index("time_on_site")
    assert [(r.hour_ms, r.values[time_on_site]) for r in step.hours] == [(T0, 600)]


def test_steps_never_split_a_message() -> None:
    from streams.steps import _whole_messages

    items = [_event(i, T0 + i) for i in range(5)]
    batched = [item._replace(offset=7, element=i) for i, item in enumerate(items)]
    chunks = _whole_messages([*items[:2], *batched, items[4]._replace(offset=9)], 2)
    assert [[(i.offset, i.element) for i in c] for c in chunks] == [
        [(0, 0), (1, 0)],
        [(7, 0), (7, 1), (7, 2), (7, 3), (7, 4)],
        [(9, 0)],
    ]
