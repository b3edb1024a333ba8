"""The incremental per-user core: one `UserState` per user, `apply` per batch, exact deltas.

The worker keeps one `UserState` per user (a Faust table, serialised with `to_bytes` to its
changelog), calls `apply` with the user's new events of a batch, and writes what comes back:
`hour_deltas` as corrections to `hourly_user_summary`, `sessions_removed`/`sessions_added` to
`sessions`. Summed over every apply, the deltas equal a batch recomputation over the deduplicated
events, whatever the arrival order and batching (tests/test_user_state.py proves it against a brute
force reference).

What the state keeps, and why it is enough:

* Sessions only, not activities. Adding activities can only extend or merge sessions, never split
  them, and a new session's first event is either an old session's first or a new event; so the
  interval, count and first event of each session determine every future result. That keeps the
  state small: a user-hour of activity costs its ids and a session, not 20 events.
* The ids it has seen, for deduplication, as 96-bit BLAKE2b digests in sorted arrays (12 bytes,
  plus 4 for the second of the event's time, used by eviction; valid until 2106). Two different
  ids collide with probability about n²/2⁹⁷ (n = ids kept for the user): far below hardware
  error rates.
  A duplicate is an event whose id was applied before, by this state or earlier in the same batch:
  the first applied wins, even if the copies' other fields differ, and the copy is only counted in
  `StateChange.duplicates`. Arrival order decides only that; everything else uses the total order
  (ts_ms, id).

Cost: `apply` touches only the sessions within the timeout of a new event (found by bisection),
plus the hours those sessions span; an event costs its hash, one array insertion and a few dict
operations.

Eviction and the horizon (the worker decides when; `evict` decides what):

* `evict(before_ms)` promises that events with `ts_ms >= before_ms` stay exact. It forgets the
  sessions that ended more than the timeout before `before_ms` (no such event can reach them),
  and the ids of their events, and remembers the last instant forgotten, `forgotten_ms`. Pass
  watermark - grace - margin: the timeout is added here, do not subtract it twice.
* A later event within the timeout of `forgotten_ms` (ts_ms <= forgotten_ms + timeout) may belong
  to a forgotten session, or duplicate a forgotten id. `apply` still applies it, deterministically,
  as if the forgotten history were empty: its counters land in its own hour exactly, but sessions
  and time on site near it are computed against what the state holds. It is returned in
  `StateChange.beyond_horizon`, so that the worker can recompute that user's sessions and time on
  site around it from the raw `events` table (and count it in a metric).

`last_applied` is an opaque (partition, offset, index) the worker sets after each apply and keeps
in the same changelog record, so a replay after a crash never applies an event twice.
"""

from __future__ import annotations

import struct
import sys
import zlib
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import blake2b
from operator import itemgetter
from typing import Final, NamedTuple
from zoneinfo import ZoneInfo

from streams.events import Event
from streams.hourly import Counts, HourSummary, add_event, add_span, add_start, freeze
from streams.sessionizer import Session, merge_blocks

__all__ = ["Position", "StateChange", "StateConfig", "UserState"]

Position = tuple[int, int, int]
"""(partition, offset, index in the message): where the last applied event was read."""

_START: Final = itemgetter(1)  # Session.start_ms
_BLOCK_ORDER: Final = itemgetter(1, 3)  # (start_ms, first_id): the (ts_ms, id) order of firsts
_SECOND: Final = 2**32 - 1  # the mask of the second in a packed id; also its largest value
_MAX_TS_S: Final = _SECOND

assert array("Q").itemsize == 8


@dataclass(frozen=True)
class StateConfig:
    """The settings a state's contents depend on; shared by every `UserState` of a worker."""

    timeout_ms: int
    zone: ZoneInfo

    @property
    def fingerprint(self) -> int:
        """Stored with each serialised state: restoring it under another timeout or zone would
        produce wrong deltas, so `from_bytes` refuses instead (recompute from the raw events)."""
        return zlib.crc32(f"{self.timeout_ms}|{self.zone.key}".encode())


class StateChange(NamedTuple):
    """What one `apply` changed; the worker writes it as is."""

    hour_deltas: dict[int, HourSummary]
    """Hour start (epoch ms) → new figures minus old, for every hour that changed (non-zero)."""
    sessions_removed: list[Session]
    """Sessions that no longer exist as they were (changed or merged), in start order."""
    sessions_added: list[Session]
    """Sessions that are new or changed, in start order."""
    duplicates: int
    """Events ignored because their id was applied before."""
    accepted: list[Event]
    """The events applied (not duplicates), in the order given."""
    beyond_horizon: list[Event]
    """Accepted events that may interact with forgotten history (see the module docstring)."""


def _digest(event_id: str) -> tuple[int, int]:
    """The 96-bit stable digest of an id, as (high 64 bits, low 32 bits)."""
    raw = blake2b(event_id.encode(), digest_size=12).digest()
    return int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:], "little")


def _intern(text: str | None) -> str | None:
    """Share the many equal IPs and user agents kept on sessions across users."""
    return None if text is None else sys.intern(text)


class UserState:
    """One user's sessions still open to change, and the ids seen; see the module docstring."""

    __slots__ = (
        "_hi",
        "_rest",
        "config",
        "forgotten_ms",
        "last_applied",
        "sessions",
        "user_id",
    )

    def __init__(self, user_id: int, config: StateConfig) -> None:
        self.user_id = user_id
        self.config = config
        self.sessions: list[Session] = []
        """Disjoint, sorted by start; only ones that may still change."""
        self.forgotten_ms: int | None = None
        """The last activity of the latest evicted session, if any."""
        self.last_applied: Position | None = None
        # Seen ids, sorted: the digest's high 64 bits in `_hi`; its low 32 bits and the event's
        # epoch second packed as (low << 32 | second) in `_rest`. Two flat arrays cost 16 bytes
        # an id; Python ints in a set would cost about 70.
        self._hi = array("Q")
        self._rest = array("Q")

    # -- applying events -------------------------------------------------------------------

    def apply(self, events: Sequence[Event]) -> StateChange:
        """Apply a batch of this user's events (any order, duplicates allowed)."""
        accepted: list[Event] = []
        duplicates = 0
        for event in events:
            if event.user_id != self.user_id:
                raise ValueError(
                    f"event {event.id!r} of user {event.user_id} in user {self.user_id}"
                )
            if self._remember(event.id, event.ts_ms):
                accepted.append(event)
            else:
                duplicates += 1
        counts: Counts = {}
        zone = self.config.zone
        for event in accepted:
            add_event(counts, event, zone)
        removed, added = self._merge(accepted, counts) if accepted else ([], [])
        return StateChange(
            freeze(counts), removed, added, duplicates, accepted, self._beyond(accepted)
        )

    def _remember(self, event_id: str, ts_ms: int) -> bool:
        """Record an id; False if it was seen before."""
        hi, lo = _digest(event_id)
        his, rest = self._hi, self._rest
        i = bisect_left(his, hi)
        n = len(his)
        while i < n and his[i] == hi:  # almost never more than one round
            other = rest[i] >> 32
            if other == lo:
                return False
            if other > lo:
                break
            i += 1
        his.insert(i, hi)
        rest.insert(i, lo << 32 | min(max(ts_ms // 1000, 0), _MAX_TS_S))
        return True

    def _merge(self, accepted: list[Event], counts: Counts) -> tuple[list[Session], list[Session]]:
        """Fold new events into the sessions, adding the session figures' change to `counts`;
        returns (removed, added).

        Only sessions within the timeout of a new event can change (a chain of merges always
        runs through new events), so only those are re-swept with the new events.
        """
        timeout = self.config.timeout_ms
        sessions = self.sessions
        touched: set[int] = set()
        for event in accepted:
            j = bisect_right(sessions, event.ts_ms + timeout, key=_START) - 1
            while j >= 0 and sessions[j].last_ms >= event.ts_ms - timeout:
                touched.add(j)
                j -= 1
        old = [sessions[j] for j in sorted(touched)]
        uid = self.user_id
        blocks = old + [
            Session(uid, e.ts_ms, e.ts_ms, e.id, _intern(e.ip), _intern(e.user_agent), 1)
            for e in accepted
        ]
        blocks.sort(key=_BLOCK_ORDER)
        merged = merge_blocks(blocks, timeout)
        kept = [s for j, s in enumerate(sessions) if j not in touched] if touched else sessions
        self.sessions = sorted(kept + merged, key=_START)
        _count_growth(counts, old, merged, self.config.zone)
        return old, merged

    def _beyond(self, accepted: list[Event]) -> list[Event]:
        if self.forgotten_ms is None:
            return []
        limit = self.forgotten_ms + self.config.timeout_ms
        return [e for e in accepted if e.ts_ms <= limit]

    # -- eviction --------------------------------------------------------------------------

    def evict(self, before_ms: int) -> int:
        """Forget what no event at or after `before_ms` can reach; returns sessions forgotten.

        A session is forgotten when its last activity is more than the timeout before
        `before_ms`, with the ids of its events. Sessions are disjoint and sorted, so the
        forgotten ones are a prefix and every id left belongs to a kept session: ids are kept
        from the first kept session's second on (with a timeout under a second, an id of the
        forgotten session's last second may stay: harmless).
        """
        cutoff = before_ms - self.config.timeout_ms
        sessions = self.sessions
        n = bisect_left([s.last_ms for s in sessions], cutoff)
        if not n:
            return 0
        last = sessions[n - 1].last_ms
        self.sessions = sessions = sessions[n:]
        self.forgotten_ms = last if self.forgotten_ms is None else max(self.forgotten_ms, last)
        if sessions:
            self._drop_ids_before(sessions[0].start_ms // 1000)
        else:
            self._hi, self._rest = array("Q"), array("Q")
        return n

    def _drop_ids_before(self, second: int) -> None:
        keep = [i for i, packed in enumerate(self._rest) if packed & _SECOND >= second]
        if len(keep) == len(self._rest):
            return
        self._hi = array("Q", [self._hi[i] for i in keep])
        self._rest = array("Q", [self._rest[i] for i in keep])

    def restore_sessions(self, sessions: Sequence[Session]) -> int:
        """Put back forgotten sessions, read again from the raw events, so that a very late
        event is applied against them (see "Eviction and the horizon"); returns how many.

        Only sessions that end more than the timeout before every kept one are taken: the
        forgotten ones are a prefix, and anything nearer is a kept session seen again.
        Their ids are not put back: an event that could repeat one is beyond the horizon
        too, and its caller checks it against the raw events.
        """
        timeout = self.config.timeout_ms
        first = self.sessions[0].start_ms if self.sessions else None
        back = [s for s in sessions if first is None or s.last_ms + timeout < first]
        if back:
            self.sessions = sorted(back + self.sessions, key=_START)
        return len(back)

    def is_empty(self) -> bool:
        """No sessions and no ids: only `forgotten_ms` and `last_applied` are left."""
        return not self.sessions and not self._hi

    @property
    def ids_kept(self) -> int:
        """How many event ids the state remembers (for metrics and tests)."""
        return len(self._hi)

    # -- serialisation ---------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """A compact little-endian record; `from_bytes` restores an identical state."""
        flags = (self.last_applied is not None) | (self.forgotten_ms is not None) << 1
        parts = [_HEADER.pack(_VERSION, self.config.fingerprint, self.user_id, flags)]
        if self.last_applied is not None:
            parts.append(_POSITION.pack(*self.last_applied))
        if self.forgotten_ms is not None:
            parts.append(_I64.pack(self.forgotten_ms))
        parts.append(_U32.pack(len(self.sessions)))
        for s in self.sessions:
            parts.append(_SESSION.pack(s.start_ms, s.last_ms, s.event_count))
            parts.extend(_text(t) for t in (s.first_id, s.ip, s.user_agent))
        parts.append(_U32.pack(len(self._hi)))
        parts.extend(_le(a) for a in (self._hi, self._rest))
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes, config: StateConfig) -> UserState:
        """Restore a state; raises `ValueError` for another format version or configuration."""
        reader = _Reader(data)
        version, fingerprint, user_id, flags = reader.unpack(_HEADER)
        if version != _VERSION:
            raise ValueError(f"user state format {version}; this code reads {_VERSION}")
        if fingerprint != config.fingerprint:
            raise ValueError(
                "user state was built under another session timeout or time zone; "
                "recompute it from the raw events"
            )
        state = cls(user_id, config)
        if flags & 1:
            partition, offset, index = reader.unpack(_POSITION)
            state.last_applied = (partition, offset, index)
        if flags & 2:
            (state.forgotten_ms,) = reader.unpack(_I64)
        (count,) = reader.unpack(_U32)
        for _ in range(count):
            start, last, events = reader.unpack(_SESSION)
            first_id = reader.text()
            assert first_id is not None
            ip, agent = _intern(reader.text()), _intern(reader.text())
            state.sessions.append(Session(user_id, start, last, first_id, ip, agent, events))
        (ids,) = reader.unpack(_U32)
        state._hi = reader.array("Q", ids)
        state._rest = reader.array("Q", ids)
        reader.end()
        return state

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UserState):
            return NotImplemented
        return (
            self.user_id == other.user_id
            and self.config == other.config
            and self.sessions == other.sessions
            and self.forgotten_ms == other.forgotten_ms
            and self.last_applied == other.last_applied
            and self._hi == other._hi
            and self._rest == other._rest
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return (
            f"UserState(user_id={self.user_id}, sessions={len(self.sessions)}, "
            f"ids={len(self._hi)}, forgotten_ms={self.forgotten_ms}, "
            f"last_applied={self.last_applied})"
        )


def _count_growth(counts: Counts, old: list[Session], new: list[Session], zone: ZoneInfo) -> None:
    """Add the figures of `new` minus those of `old` to `counts`, where each old session lies
    inside one new one (sessions only grow and merge).

    Time on site changes only in the gaps a new session filled (before its first old part,
    between its parts, after its last), so the cost follows the change, not the session's
    length; `num_sessions_started` moves from each old start to the new one.
    """
    parts = iter(old)
    part = next(parts, None)
    for session in new:
        add_start(counts, session.start_ms, zone)
        edge = session.start_ms  # covered up to here
        while part is not None and part.start_ms <= session.last_ms:
            add_start(counts, part.start_ms, zone, -1)
            add_span(counts, edge, part.start_ms, zone)
            edge = part.last_ms
            part = next(parts, None)
        add_span(counts, edge, session.last_ms, zone)


# -- the binary format -------------------------------------------------------------------------

_VERSION: Final = 1
_HEADER: Final = struct.Struct("<BIqB")  # version, config fingerprint, user id, flags
_POSITION: Final = struct.Struct("<qqq")
_SESSION: Final = struct.Struct("<qqI")  # start_ms, last_ms, event_count
_I64: Final = struct.Struct("<q")
_U32: Final = struct.Struct("<I")
_NONE: Final = 0xFFFFFFFF  # the length that stands for None (an empty string is length 0)
_BIG_ENDIAN: Final = sys.byteorder == "big"


def _text(value: str | None) -> bytes:
    if value is None:
        return _U32.pack(_NONE)
    raw = value.encode("utf-8", "surrogatepass")
    return _U32.pack(len(raw)) + raw


def _le(values: array[int]) -> bytes:
    if _BIG_ENDIAN:  # pragma: no cover - no big-endian machine here
        values = array(values.typecode, values)
        values.byteswap()
    return values.tobytes()


class _Reader:
    """Sequential reads from a serialised state, failing loudly on truncation."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def take(self, size: int) -> memoryview:
        end = self.pos + size
        if end > len(self.data):
            raise ValueError("user state record is truncated")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def unpack(self, fmt: struct.Struct) -> tuple[int, ...]:
        return fmt.unpack(self.take(fmt.size))

    def text(self) -> str | None:
        (size,) = self.unpack(_U32)
        if size == _NONE:
            return None
        return str(self.take(size), "utf-8", "surrogatepass")

    def array(self, typecode: str, count: int) -> array[int]:
        values = array(typecode)
        values.frombytes(self.take(count * values.itemsize))
        if _BIG_ENDIAN:  # pragma: no cover
            values.byteswap()
        return values

    def end(self) -> None:
        if self.pos != len(self.data):
            raise ValueError("user state record has trailing bytes")
