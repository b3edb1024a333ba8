"""A simulated forum's history: `--backfill DAYS` of visits, as events in sending order.

Rhythm: each user's visits on a day follow a Poisson law around their own mean, on weekdays;
Saturdays bring half as many and Sundays a bit less. Visits start by the hour of the user's
local clock (few at night, a morning and an afternoon peak, a smaller evening one), so the
forum's hourly curve is the sum of its users' time zones. A user who registers in the period
comes first at their registration instant; a blocked user stops coming when blocked.

Days are generated one at a time and visits run in time order, so memory holds a day or two of
events whatever the length of the backfill.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache

from forum.content import Board
from forum.engine import Engine, Outbox
from forum.model import Forum, SimUser
from streams.events import Event

__all__ = ["HOURLY_RHYTHM", "Backfill", "SimulationOptions", "new_board"]

DAY_MS = 86_400_000
HOUR_MS = 3_600_000

HOURLY_RHYTHM: tuple[float, ...] = (
    0.15, 0.08, 0.05, 0.04, 0.04, 0.08, 0.2, 0.45, 0.8, 1.0, 1.1, 1.1,
    0.9, 1.0, 1.1, 1.05, 0.95, 0.8, 0.7, 0.75, 0.8, 0.7, 0.5, 0.3,
)  # fmt: skip
"""Relative visit starts by local hour of day, 0 to 23."""
_WEEKDAY = (1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.45)  # Monday first


@dataclass(frozen=True)
class SimulationOptions:
    """What every mode shares."""

    seed: int
    timeout_ms: int
    late: float = 0.01
    duplicates: float = 0.005


def new_board(rng: random.Random, forum: Forum, start_ms: int) -> Board:
    """The content written before the period: a thread for every third user (at least 20),
    by users registered by then."""
    board = Board()
    authors = [u.user_id for u in forum.users if u.joined_ms < start_ms]
    board.seed(rng, max(20, len(forum.users) // 3), authors)
    return board


class Backfill:
    """History from `start_ms` to `end_ms`: iterate `events()` once."""

    def __init__(
        self, forum: Forum, options: SimulationOptions, start_ms: int, end_ms: int
    ) -> None:
        self.forum = forum
        self.start_ms = start_ms
        self.end_ms = end_ms
        rng = random.Random(f"{options.seed}/visits")
        prefix = f"sim{options.seed}-{start_ms // 1000:x}"
        self.engine = Engine(rng, new_board(rng, forum, start_ms), options.timeout_ms, prefix)
        self.outbox = Outbox(
            random.Random(f"{options.seed}/outbox"), options.late, options.duplicates
        )
        self._schedule_rng = random.Random(f"{options.seed}/schedule")

    @property
    def days(self) -> int:
        """Calendar days (UTC) the period touches: the progress bar's length."""
        return (self.end_ms - 1) // DAY_MS - self.start_ms // DAY_MS + 1

    def events(self, on_day: Callable[[], None] | None = None) -> Iterator[Event]:
        """Every event of the period in sending order; `on_day()` after each day."""
        day = self.start_ms // DAY_MS * DAY_MS
        while day < self.end_ms:
            self._schedule(day)
            until = min(day + DAY_MS, self.end_ms)
            for event in self.engine.run_until(until):
                self.outbox.put(event, event.ts_ms)
                yield from self.outbox.due(event.ts_ms)
            yield from self.outbox.due(until - 1)
            if on_day is not None:
                on_day()
            day += DAY_MS
        yield from self.outbox.drain()

    def _schedule(self, day_ms: int) -> None:
        """Start times of the day's visits, in [day_ms, day_ms + 1 day) and the period."""
        rng = self._schedule_rng
        first, last = max(day_ms, self.start_ms), min(day_ms + DAY_MS, self.end_ms)
        starts: list[tuple[int, int, SimUser, bool]] = []
        for user in self.forum.users:
            if first <= user.joined_ms < last:
                starts.append((user.joined_ms, user.user_id, user, True))
            for at in _visit_starts(rng, user, day_ms):
                if max(first, user.joined_ms + 60_000) <= at < last and (
                    user.blocked_ms is None or at < user.blocked_ms
                ):
                    starts.append((at, user.user_id, user, False))
        for at, _, user, registering in sorted(starts, key=lambda s: (s[0], s[1])):
            self.engine.start_visit(user, at, registering=registering)


def _visit_starts(rng: random.Random, user: SimUser, day_ms: int) -> list[int]:
    """When the user comes on this UTC day."""
    local_noon = day_ms + 12 * HOUR_MS + user.utc_offset_minutes * 60_000
    weekday = datetime.fromtimestamp(local_noon / 1000, UTC).weekday()
    expected = user.visits_per_day * _WEEKDAY[weekday]
    count = _poisson(rng, expected)
    if not count:
        return []
    weights = _utc_hour_weights(user.utc_offset_minutes)
    hours = rng.choices(range(24), weights, k=count)
    return sorted(day_ms + h * HOUR_MS + rng.randrange(HOUR_MS) for h in hours)


@cache
def _utc_hour_weights(offset_minutes: int) -> tuple[float, ...]:
    """HOURLY_RHYTHM seen from UTC by someone at this offset."""
    return tuple(HOURLY_RHYTHM[(h + offset_minutes // 60) % 24] for h in range(24))


def _poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method: exact, and fast for the small means of daily visits."""
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k
