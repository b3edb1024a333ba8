"""One partition's users, watermark and finality: turns batches of events into summary rows.

The worker owns one `PartitionProcessor` per assigned partition of `forum-events` and calls
`step` with each batch of the partition's events (or with none, when the wall clock has made
something final on an idle partition: `is_due`). A step

1. applies each user's new events to the user's `UserEntry` (streams.user_state does the
   sessions, hours and deduplication exactly); an event older than the partition's horizon may
   reach history the state has forgotten, so that user's nearby sessions and ids are first read
   back from the raw events (`History`);
2. moves the partition's event-time watermark (streams.watermark);
3. settles every user with something due: hours whose end plus the grace period the watermark
   has passed are written (`hours`: the summed delta of the hour, once; later changes to an hour
   already written are written at once, as corrections); sessions whose last activity plus the
   timeout plus the grace period it has passed are written (`sessions`: sign +1), and a session
   written before that a late event changes is cancelled (sign -1, the old values) and written
   again when final; sessions old enough are evicted, and users left with nothing are dropped.

Which sessions were written before is not stored: a session of the state was written exactly
when its deadline (last activity + timeout + grace) is at or below the watermark of the
previous step, because every step settles every user whose deadline it passed (a heap of
deadlines finds them). The step's result is everything the worker must make durable; replaying
a step on the entries it already changed changes nothing (events at or before a user's
`last_applied` are skipped, settling is idempotent), which is how the worker recovers a step
that crashed half-written (streams.step_record).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from streams.events import Event
from streams.sessionizer import Session
from streams.timebuckets import hour_end_ms
from streams.user_entry import UserEntry
from streams.user_state import StateConfig
from streams.watermark import PartitionWatermark

__all__ = [
    "History",
    "HourRow",
    "PartitionMark",
    "PartitionProcessor",
    "Positioned",
    "SessionRow",
    "Step",
    "StepConfig",
]


@dataclass(frozen=True)
class StepConfig:
    """What finality and eviction depend on; one per worker."""

    state: StateConfig
    grace_ms: int
    retention_ms: int
    """How long after a session is final its state is kept, so that late events are applied
    in memory; an event later than that is applied against history read back from ClickHouse."""


class Positioned(NamedTuple):
    """An event with where it was read: its message's offset, and its index in the message."""

    event: Event
    offset: int
    element: int
    received_at_ms: int


class PartitionMark(NamedTuple):
    """How far a partition has been processed; stored with every step."""

    seq: int = 0
    """Steps done; names each step's ClickHouse inserts (deduplication tokens)."""
    end_offset: int = -1
    """The last offset applied; messages at or before it are skipped."""
    watermark_ms: int | None = None
    horizon_ms: int | None = None
    """Events before this instant may reach forgotten history (see `StepConfig.retention_ms`)."""
    users_end_offset: int = -1
    """The last `forum-users` offset applied (streams.user_changes): the partition's user
    records are steps of the same sequence."""


class HourRow(NamedTuple):
    """A change to one user's hour, in `streams.hourly.FIELDS` order."""

    user_id: int
    hour_ms: int
    values: tuple[int, ...]


class SessionRow(NamedTuple):
    """A session written (sign 1) or cancelled (sign -1)."""

    session: Session
    sign: int


class History(Protocol):
    """The raw events already stored, read when an event is older than the horizon."""

    def seen_ids(self, user_id: int, ids: Sequence[str], before: PartitionMark) -> set[str]:
        """Which of `ids` the user's stored events, up to `before.end_offset`, already have."""
        ...

    def sessions_near(
        self, user_id: int, first_ms: int, last_ms: int, before: PartitionMark
    ) -> list[Session]:
        """The user's whole sessions from stored events up to `before.end_offset` that come
        within the timeout of [first_ms, last_ms]."""
        ...


@dataclass
class Step:
    """One step's outcome: what the worker writes, and the counts it reports."""

    partition: int
    before: PartitionMark
    mark: PartitionMark
    events: list[Positioned]
    hours: list[HourRow] = field(default_factory=list)
    sessions: list[SessionRow] = field(default_factory=list)
    changed: dict[int, UserEntry | None] = field(default_factory=dict)
    """User id → its entry after the step, or None when the user was dropped."""
    duplicates: int = 0
    late: int = 0
    """Events whose hour had been written already (corrections)."""
    beyond_horizon: int = 0


class PartitionProcessor:
    """The users of one partition; see the module docstring."""

    def __init__(
        self,
        partition: int,
        config: StepConfig,
        mark: PartitionMark,
        entries: dict[int, UserEntry],
        wall_ms: int,
    ) -> None:
        self.partition = partition
        self.config = config
        self.mark = mark
        self.entries = entries
        self.watermark = PartitionWatermark(value_ms=mark.watermark_ms)
        if mark.watermark_ms is not None:  # idle time counts from the restart
            self.watermark.max_event_ms = mark.watermark_ms
            self.watermark.last_event_wall_ms = wall_ms
        self._deadlines: list[tuple[int, int]] = []
        for entry in entries.values():
            self._schedule(entry, mark.watermark_ms)

    # -- the step ------------------------------------------------------------------------------

    def is_due(self, wall_ms: int) -> bool:
        """Whether an eventless step would write or evict anything now (idle partitions)."""
        w = self.watermark.advance(wall_ms)
        return bool(self._deadlines) and w is not None and self._deadlines[0][0] <= w

    def step(
        self,
        events: Sequence[Positioned],
        wall_ms: int,
        history: History,
        *,
        replay: PartitionMark | None = None,
    ) -> Step:
        """Apply `events` (this partition's, in offset order, after `mark.end_offset`) and settle.

        With `replay`, the step is one already made durable (its mark): its watermark is used
        as is, and events the entries already hold are skipped.
        """
        before = self.mark
        if replay is None:
            for item in events:
                self.watermark.observe(item.event.ts_ms, item.received_at_ms, wall_ms)
            w = self.watermark.advance(wall_ms)
        else:
            w = replay.watermark_ms
            self.watermark = PartitionWatermark(
                value_ms=w, max_event_ms=w, last_event_wall_ms=wall_ms if w else None
            )
        end = max((item.offset for item in events), default=before.end_offset)
        horizon = self._horizon(before.horizon_ms, w)
        step = Step(
            self.partition,
            before,
            PartitionMark(before.seq + 1, end, w, horizon, before.users_end_offset),
            list(events),
        )
        added = self._apply(step, history)
        self._settle(step, added)
        self.mark = step.mark
        return step

    def _horizon(self, previous: int | None, w: int | None) -> int | None:
        if w is None:
            return previous
        candidate = w - self.config.grace_ms - self.config.retention_ms
        return candidate if previous is None else max(previous, candidate)

    def _apply(self, step: Step, history: History) -> dict[int, set[Session]]:
        """Apply each user's events; returns each touched user's new sessions."""
        by_user: dict[int, list[Positioned]] = {}
        for item in step.events:
            by_user.setdefault(item.event.user_id, []).append(item)
        added: dict[int, set[Session]] = {}
        for user_id, items in by_user.items():
            entry = self.entries.get(user_id)
            if entry is None:
                entry = self.entries[user_id] = UserEntry.new(user_id, self.config.state)
            new = self._apply_user(step, entry, items, history)
            if new is not None:
                added[user_id] = new
        return added

    def _apply_user(
        self, step: Step, entry: UserEntry, items: list[Positioned], history: History
    ) -> set[Session] | None:
        state = entry.state
        last = state.last_applied
        if last is not None:
            items = [i for i in items if (self.partition, i.offset, i.element) > last]
        if not items:
            return None
        events = [i.event for i in items]
        events = self._read_back(step, entry, events, history)
        change = state.apply(events)
        tail = items[-1]
        state.last_applied = (self.partition, tail.offset, tail.element)
        step.duplicates += change.duplicates
        entry.add_deltas({h: d.values() for h, d in change.hour_deltas.items()})
        written_by = step.before.watermark_ms
        step.late += self._count_late(change.accepted, written_by)
        if written_by is not None:
            deadline = self._session_deadline
            step.sessions.extend(
                SessionRow(s, -1) for s in change.sessions_removed if deadline(s) <= written_by
            )
        return set(change.sessions_added)

    def _read_back(
        self, step: Step, entry: UserEntry, events: list[Event], history: History
    ) -> list[Event]:
        """For events before the horizon: drop the ones stored before, and put back the
        forgotten sessions they may join, so that `apply` stays exact."""
        horizon = step.before.horizon_ms
        if horizon is None:
            return events
        old = [e for e in events if e.ts_ms < horizon]
        if not old:
            return events
        step.beyond_horizon += len(old)
        seen = history.seen_ids(entry.user_id, sorted({e.id for e in old}), step.before)
        if seen:
            step.duplicates += sum(1 for e in events if e.id in seen)
            events = [e for e in events if e.id not in seen]
            old = [e for e in old if e.id not in seen]
        if old:
            first = min(e.ts_ms for e in old)
            last = max(e.ts_ms for e in old)
            entry.state.restore_sessions(
                history.sessions_near(entry.user_id, first, last, step.before)
            )
        return events

    def _count_late(self, events: Iterable[Event], written_by: int | None) -> int:
        if written_by is None:
            return 0
        zone, grace = self.config.state.zone, self.config.grace_ms
        return sum(1 for e in events if hour_end_ms(e.ts_ms, zone) + grace <= written_by)

    # -- settling ------------------------------------------------------------------------------

    def _session_deadline(self, session: Session) -> int:
        """When a session becomes final: no on-time event can reach it after this watermark."""
        return session.last_ms + self.config.state.timeout_ms + self.config.grace_ms

    def _settle(self, step: Step, added: dict[int, set[Session]]) -> None:
        """Write what the watermark made final, evict what the horizon passed, reschedule."""
        w = step.mark.watermark_ms
        due = set(added)
        while self._deadlines and w is not None and self._deadlines[0][0] <= w:
            due.add(heapq.heappop(self._deadlines)[1])
        for user_id in sorted(due):
            entry = self.entries.get(user_id)
            if entry is None:
                continue
            changed = user_id in added
            if w is not None:
                changed |= self._write_final(step, entry, added.get(user_id, set()))
            if step.mark.horizon_ms is not None:
                changed |= entry.state.evict(step.mark.horizon_ms) > 0
            if entry.is_empty():
                del self.entries[user_id]
                step.changed[user_id] = None
                continue
            if changed:
                step.changed[user_id] = entry
            self._schedule(entry, w)

    def _write_final(self, step: Step, entry: UserEntry, added: set[Session]) -> bool:
        """Write the entry's final hours and sessions; True if pending hours were taken."""
        w = step.mark.watermark_ms
        assert w is not None
        zone, grace = self.config.state.zone, self.config.grace_ms
        taken = False
        for hour in sorted(entry.pending):
            if hour_end_ms(hour, zone) + grace <= w:
                values = tuple(entry.pending.pop(hour))
                step.hours.append(HourRow(entry.user_id, hour, values))
                taken = True
        before = step.before.watermark_ms
        for session in entry.state.sessions:
            deadline = self._session_deadline(session)
            if deadline <= w and (session in added or before is None or deadline > before):
                step.sessions.append(SessionRow(session, 1))
        return taken

    def _schedule(self, entry: UserEntry, w: int | None) -> None:
        """Push the entry's next deadline after watermark `w`: an hour or session becoming
        final, or its first session's eviction."""
        zone, grace = self.config.state.zone, self.config.grace_ms
        deadlines = [hour_end_ms(h, zone) + grace for h in entry.pending]
        sessions = entry.state.sessions
        for session in sessions:
            deadline = self._session_deadline(session)
            if w is None or deadline > w:
                deadlines.append(deadline)
        if sessions:  # the first session goes first: evict(horizon) forgets it after this
            deadlines.append(self._session_deadline(sessions[0]) + self.config.retention_ms + 1)
        if deadlines:
            heapq.heappush(self._deadlines, (min(deadlines), entry.user_id))
