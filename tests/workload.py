"""A deterministic forum workload for the exactly-once tests: users, sessions, days, with
duplicates and late arrivals on request, in the order they are sent."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, date, datetime

from streams.events import Event, EventType

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR

_TYPES = [
    (EventType.ACTIVITY, 30),
    (EventType.QUESTION_VIEWED, 30),
    (EventType.ANSWER_VIEWED, 10),
    (EventType.UPVOTED, 6),
    (EventType.DOWNVOTED, 2),
    (EventType.VOTE_CANCELED, 1),
    (EventType.ANSWER_POSTED, 4),
    (EventType.QUESTION_ASKED, 2),
    (EventType.QUESTION_COMMENTED, 3),
    (EventType.ANSWER_COMMENTED, 3),
    (EventType.QUESTION_RETAGGED, 1),
    (EventType.LOGGED_IN, 2),
    (EventType.LOGGED_OUT, 1),
]
# Gaps inside a session, with the timeout (30 min) and its neighbours on purpose.
_GAPS = [5_000, 40_000, 3 * MIN, 10 * MIN, 30 * MIN - 1, 30 * MIN, 30 * MIN + 1]


@dataclass(frozen=True)
class Workload:
    """The events in sending order, and the days they cover (UTC)."""

    events: list[Event]
    first_day: date
    last_day: date

    @property
    def unique(self) -> int:
        return len({(e.user_id, e.id) for e in self.events})


def build(
    *,
    seed: int,
    users: int = 500,
    events: int = 50_000,
    days: int = 3,
    end_ms: int,
    duplicates: float = 0.0,
    late: float = 0.0,
) -> Workload:
    """`events` events of `users` users over the `days` whole UTC days before `end_ms`'s day
    (nothing on or after that day),
    sent in time order except for the `late` share (sent hours after their time) and the
    `duplicates` share (sent again, later)."""
    rng = random.Random(seed)
    first_ms = (end_ms // DAY - days) * DAY
    span = days * DAY
    kinds = [k for k, _ in _TYPES]
    weights = [w for _, w in _TYPES]
    out: list[Event] = []
    while len(out) < events:
        user = rng.randrange(1, users + 1)
        t = first_ms + rng.randrange(span - 4 * HOUR)
        for _ in range(rng.randint(1, 40)):
            if len(out) >= events or t >= first_ms + span:
                break
            kind = rng.choices(kinds, weights)[0]
            out.append(
                Event(
                    f"ev-{len(out)}",
                    kind,
                    t,
                    user,
                    f"10.0.{user % 250}.{rng.randrange(4)}",
                    f"agent-{user % 7}",
                    None,
                    None,
                    None,
                    None,
                )
            )
            t += rng.choice(_GAPS)
    out.sort(key=lambda e: (e.ts_ms, e.id))
    order = [(e.ts_ms, i, e) for i, e in enumerate(out)]
    for i, e in enumerate(out):
        if rng.random() < late:  # sent 2-5 hours of stream time after its own time
            order[i] = (e.ts_ms + rng.randrange(2 * HOUR, 5 * HOUR), i, e)
        if rng.random() < duplicates:  # resent, up to an hour later
            order.append((e.ts_ms + rng.randrange(HOUR), len(order), e))
    order.sort(key=lambda item: (item[0], item[1]))
    first_day = datetime.fromtimestamp(first_ms / 1000, UTC).date()
    last_day = datetime.fromtimestamp((first_ms + span - 1) / 1000, UTC).date()
    return Workload([e for _, _, e in order], first_day, last_day)
