"""Runs the forum's visits in time order and turns their steps into events.

Visits are resumed in order of their next step's time (a heap), so the board changes in time
order: nobody answers a question before it was asked. Everything random comes from one
`random.Random` seeded from the simulation seed, and the heap breaks ties by insertion order,
so the same inputs give the same events.

Event ids are `<prefix>-<n>`: the prefix names the run (seed and period), so a rerun of the
same backfill resends the same events with the same ids (the pipeline counts each once), and a
different run cannot collide with it.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from dataclasses import dataclass

from forum.browsing import Step, Think, VisitSteps, visit
from forum.content import Board
from forum.model import Device, SimUser
from streams.events import Event, Role

__all__ = ["Engine", "Outbox"]

_STAFF = frozenset({Role.ADMIN, Role.MODERATOR})


@dataclass
class _Visit:
    due_ms: int
    user: SimUser
    device: Device | None
    steps: VisitSteps | None  # None: the visit starts at `due_ms`
    registering: bool = False


class Engine:
    """The visits in progress and the board they read and write."""

    def __init__(self, rng: random.Random, board: Board, timeout_ms: int, id_prefix: str) -> None:
        self.rng = rng
        self.board = board
        self.timeout_ms = timeout_ms
        self.id_prefix = id_prefix
        self.emitted = 0
        self._heap: list[tuple[int, int, _Visit]] = []  # (due, insertion order, visit)
        self._seq = 0
        self._visiting: set[int] = set()
        self._starting = 0
        self._last_ts: dict[int, int] = {}

    @property
    def visiting(self) -> int:
        """Visits in progress or about to start."""
        return len(self._visiting) + self._starting

    def is_visiting(self, user_id: int) -> bool:
        return user_id in self._visiting

    def start_visit(self, user: SimUser, at_ms: int, *, registering: bool = False) -> None:
        """The user comes at `at_ms`, unless a visit of theirs is still going on then."""
        self._seq += 1
        self._starting += 1
        heapq.heappush(self._heap, (at_ms, self._seq, _Visit(at_ms, user, None, None, registering)))

    def next_due(self) -> int | None:
        """When the next step of any visit happens (None: nobody is visiting)."""
        return self._heap[0][0] if self._heap else None

    def run_until(self, end_ms: int) -> Iterator[Event]:
        """Every step due before `end_ms`, in time order."""
        while self._heap and self._heap[0][0] < end_ms:
            event = self.step()
            if event is not None:
                yield event

    def step(self, ts_ms: int | None = None) -> Event | None:
        """Take the earliest visit's next step; its event happens at the step's due time, or
        at `ts_ms` when given (live mode: now). None when that visit had just ended or could
        not start."""
        current = heapq.heappop(self._heap)[2]
        if current.steps is None and not self._begin(current):
            return None
        assert current.steps is not None and current.device is not None
        step = None if self._blocked(current, ts_ms) else next(current.steps, None)
        if step is None:
            self._visiting.discard(current.user.user_id)
            return None
        assert isinstance(step, Step)
        event = self._event(current, step, current.due_ms if ts_ms is None else ts_ms)
        pause = next(current.steps, None)
        if pause is None:
            self._visiting.discard(current.user.user_id)
        else:
            assert isinstance(pause, Think)
            current.due_ms += pause.ms
            self._seq += 1
            heapq.heappush(self._heap, (current.due_ms, self._seq, current))
        return event

    def _blocked(self, current: _Visit, ts_ms: int | None) -> bool:
        """Whether the user is blocked by this step's time: then the visit ends there, before
        the step touches the board."""
        blocked = current.user.blocked_ms
        if blocked is None:
            return False
        at = current.due_ms if ts_ms is None else ts_ms
        return max(at, self._last_ts.get(current.user.user_id, 0) + 1) >= blocked

    def _begin(self, current: _Visit) -> bool:
        """Turn a scheduled start into a visit; False if the user is here already."""
        user = current.user
        self._starting -= 1
        if user.user_id in self._visiting:
            return False
        self._visiting.add(user.user_id)
        current.device = self.rng.choice(user.devices)
        current.steps = visit(
            self.rng,
            user.user_id,
            self.board,
            self.timeout_ms,
            registering=current.registering,
            staff=user.role in _STAFF,
        )
        return True

    def _event(self, current: _Visit, step: Step, ts_ms: int) -> Event:
        """The step as an event; a user's events never share a millisecond (live mode could)."""
        assert current.device is not None
        user_id = current.user.user_id
        ts_ms = max(ts_ms, self._last_ts.get(user_id, 0) + 1)
        self._last_ts[user_id] = ts_ms
        self.emitted += 1
        return Event(
            f"{self.id_prefix}-{self.emitted}",
            step.type,
            ts_ms,
            user_id,
            current.device.ip,
            current.device.user_agent,
            step.object_type,
            step.object_id,
            step.thread_id,
            step.post_id,
        )


class Outbox:
    """Events waiting to be sent, in sending order: most at once, a `late` share held back
    (60% by 1 to 9 minutes, inside the grace period; 40% by 1 to 6 hours, after their hour was
    final, so they arrive as corrections) and a `duplicates` share sent a second time, up to an
    hour later, with the same id."""

    def __init__(self, rng: random.Random, late: float, duplicates: float) -> None:
        self.rng = rng
        self.late = late
        self.duplicates = duplicates
        self.held_back = 0
        self.resent = 0
        self._heap: list[tuple[int, int, Event]] = []
        self._seq = 0

    def put(self, event: Event, now_ms: int) -> None:
        """Queue an event produced at `now_ms` (its own time in a backfill)."""
        rng = self.rng
        send_ms = now_ms
        if self.late and rng.random() < self.late:
            self.held_back += 1
            minute, hour = 60_000, 3_600_000
            late_by = (
                rng.randrange(minute, 9 * minute)
                if rng.random() < 0.6
                else rng.randrange(hour, 6 * hour)
            )
            send_ms += late_by
        self._add(send_ms, event)
        if self.duplicates and rng.random() < self.duplicates:
            self.resent += 1
            self._add(send_ms + rng.randrange(1000, 3_600_000), event)

    def due(self, now_ms: int) -> Iterator[Event]:
        """The events whose sending time has come."""
        while self._heap and self._heap[0][0] <= now_ms:
            yield heapq.heappop(self._heap)[2]

    def take_due(self, now_ms: int, limit: int) -> list[Event]:
        """At most `limit` of the events whose sending time has come (the rest stay queued)."""
        out: list[Event] = []
        while self._heap and self._heap[0][0] <= now_ms and len(out) < limit:
            out.append(heapq.heappop(self._heap)[2])
        return out

    def drain(self) -> Iterator[Event]:
        """Everything still waiting, in sending order."""
        while self._heap:
            yield heapq.heappop(self._heap)[2]

    def __len__(self) -> int:
        return len(self._heap)

    def _add(self, send_ms: int, event: Event) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (send_ms, self._seq, event))
