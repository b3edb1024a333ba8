"""Sessions: a user's activities split wherever the gap exceeds the timeout (DESIGN.md).

Rules, from DESIGN.md "Semantics", with the choices it leaves open:

* Every event type is activity. Activities are totally ordered by (ts_ms, event id), so the
  result never depends on arrival order: the *first* event of a session is the least by that
  order, and it gives the session its IP, user agent and id.
* An activity more than `timeout_ms` after the previous one starts a new session; a gap of
  exactly `timeout_ms` continues it.
* A session lasts from its first to its last activity: `duration_s` is
  floor(last/1000) - floor(start/1000), the same whole-second arithmetic that splits time on site
  over hours (streams.timebuckets.split_seconds), so the hours of a session sum to its duration.

Adding activities can only lengthen or merge sessions, never split one; `UserState` relies on
that, and `merge_blocks` is the one sweep both the batch and the incremental paths use.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from streams.events import Event

__all__ = ["Activity", "Session", "activity_of", "merge_blocks", "sessionize", "single_session"]


class Activity(NamedTuple):
    """What sessions need of an event; tuple order makes `sorted()` the (ts_ms, id) order."""

    ts_ms: int
    id: str
    ip: str | None = None
    user_agent: str | None = None


def activity_of(event: Event) -> Activity:
    """The session-relevant part of an event."""
    return Activity(event.ts_ms, event.id, event.ip, event.user_agent)


class Session(NamedTuple):
    """One session of one user; a value: two equal sessions are the same session.

    `first_id` is the id of the first event (least by (ts_ms, id)); `ip` and `user_agent` are
    that event's.
    """

    user_id: int
    start_ms: int
    last_ms: int
    first_id: str
    ip: str | None
    user_agent: str | None
    event_count: int

    @property
    def duration_s(self) -> int:
        """Whole seconds from the first to the last activity (one event: 0)."""
        return self.last_ms // 1000 - self.start_ms // 1000

    @property
    def session_id(self) -> int:
        """A stable UInt64 id from (user_id, start_ms, first event id): the same session gets the
        same id in every run and every recomputation (`verify`), and a session that grows earlier
        (a late event before its start) gets a new id, as it is removed and re-added anyway."""
        key = f"{self.user_id}\x00{self.start_ms}\x00{self.first_id}".encode()
        return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")


def merge_blocks(blocks: Iterable[Session], timeout_ms: int) -> list[Session]:
    """Merge sessions and single activities (as one-event sessions) into sessions.

    `blocks` must be sorted by (start_ms, first_id) and each one already internally connected
    (gaps within it at most the timeout). Two consecutive blocks join when the later starts at
    most `timeout_ms` after the earlier one's last activity (an overlap is a gap below zero);
    the earlier block's first event stays the first, which is why the order must include the id.
    """
    out: list[Session] = []
    current: Session | None = None
    for block in blocks:
        if current is None:
            current = block
        elif block.start_ms - current.last_ms <= timeout_ms:
            current = current._replace(
                last_ms=max(current.last_ms, block.last_ms),
                event_count=current.event_count + block.event_count,
            )
        else:
            out.append(current)
            current = block
    if current is not None:
        out.append(current)
    return out


def single_session(user_id: int, activity: Activity) -> Session:
    """A one-activity session: the unit `merge_blocks` grows sessions from."""
    return Session(
        user_id, activity.ts_ms, activity.ts_ms, activity.id, activity.ip, activity.user_agent, 1
    )


def sessionize(user_id: int, activities: Sequence[Activity], timeout_ms: int) -> list[Session]:
    """The sessions of one user's activities, which must be sorted by (ts_ms, id) and free of
    duplicate ids (deduplication is the caller's: `UserState` does it)."""
    return merge_blocks((single_session(user_id, a) for a in activities), timeout_ms)
