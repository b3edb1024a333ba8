"""Live traffic: the forum's visitors acting now, at a steady number of events per second.

A fixed number of visits run at once (a minute's worth of events, at most a third of the users,
at least 4); each event is the next step of the visit that is due first, stamped with the wall
clock, and a finished visit is replaced by a new one of a user picked by how often they come.
So the rate is exact (the sender paces it) and the forum looks the same as in a backfill: when
the rate is higher than its users would naturally produce, they simply act faster.

About one new visit in fifty is a newcomer registering: their user record (with their email
organization) is published before their `user_registered` event.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from itertools import accumulate

from forum.engine import Engine
from forum.model import Forum, Membership, SimUser
from forum.population import new_user, organization_of, user_record
from streams.events import Event, Role, UserRecord

__all__ = ["LiveForum"]

_NEWCOMER_CHANCE = 0.02
_TRIES = 20


class LiveForum:
    """Produces live events one at a time; new users' records wait in `records`."""

    def __init__(self, engine: Engine, forum: Forum, rate: float, rng: random.Random) -> None:
        self.engine = engine
        self.rng = rng
        self.users = list(forum.users)
        self.memberships = list(forum.memberships)
        self._groups = forum.groups
        self.records: list[UserRecord] = []
        self._taken = {u.username for u in self.users}
        self._next_id = max((u.user_id for u in self.users), default=0) + 1
        self.concurrency = max(4, min(int(rate * 60), len(self.users) // 3))
        self._model_ms = engine.next_due() or 0
        self._refresh_weights()

    @property
    def forum(self) -> Forum:
        """The forum as it is now, newcomers included (for the truth)."""
        return Forum(tuple(self.users), self._groups, tuple(self.memberships))

    def next_event(self, now_ms: int) -> Event:
        """The next event, happening at `now_ms`."""
        while True:
            while self.engine.visiting < self.concurrency and self._start_one(now_ms):
                pass
            due = self.engine.next_due()
            if due is None:  # nobody can come back now: someone new does
                self.engine.start_visit(self._newcomer(now_ms), self._model_ms, registering=True)
                continue
            if due is not None:
                self._model_ms = max(self._model_ms, due)
            event = self.engine.step(ts_ms=now_ms)
            if event is not None:
                return event

    def _start_one(self, now_ms: int) -> bool:
        """Start a visit of a returning user, or of a newcomer; False if nobody can come."""
        at = self._model_ms + self.rng.randrange(60_000)
        if not self.users or self.rng.random() < _NEWCOMER_CHANCE:
            self.engine.start_visit(self._newcomer(now_ms), at, registering=True)
            return True
        for _ in range(_TRIES):
            user = self.users[bisect_right(self._cumulative, self.rng.random() * self._total)]
            if self._can_come(user, now_ms):
                self.engine.start_visit(user, at)
                return True
        return False

    def _can_come(self, user: SimUser, now_ms: int) -> bool:
        blocked = user.role is Role.BLOCKED and (user.blocked_ms or 0) <= now_ms
        return (
            user.joined_ms <= now_ms and not blocked and not self.engine.is_visiting(user.user_id)
        )

    def _newcomer(self, now_ms: int) -> SimUser:
        user = new_user(self.rng, self._next_id, now_ms, self._taken)
        self._next_id += 1
        self.users.append(user)
        organization = organization_of(user)
        joined = [] if organization is None else [Membership(user.user_id, organization, now_ms)]
        self.memberships.extend(joined)
        self.records.append(user_record(user, joined, None))
        self._refresh_weights()
        return user

    def _refresh_weights(self) -> None:
        self._cumulative = list(accumulate(u.visits_per_day for u in self.users))
        self._total = self._cumulative[-1] if self._cumulative else 0.0
