"""The expected figures of a simulated forum: DESIGN.md's rules, computed in plain Python.

This is the ground truth the real pipeline (Kafka → worker → ClickHouse → API) is compared
against, so it is deliberately written from the rules alone and shares no code with the worker
or the SQL: a bug copied into both sides would go unseen. It favours obviousness over speed,
but stays linear enough (one sort per user, a bisect per event) for a million events.

Rules, as DESIGN.md "Semantics" states them, made exact:

* Events count once per (user_id, id), the first one sent; a user's events are ordered by time,
  ties by send order.
* Sessions: a gap of more than the timeout starts a new one (exactly the timeout continues it);
  every type counts. A session lasts floor(last/1000) - floor(first/1000) seconds.
* Hours are *local hours* of the zone (`local_hour_bounds`); time on site splits each session's
  span at hour boundaries, a piece [a, b) counting floor(b/1000) - floor(a/1000) seconds, so the
  pieces add up to the session's duration.
* Groups and segments: a user's hour [h, e) belongs to a group when one of the user's membership
  intervals [since, until) of that group meets it: since < e and (until is None or until > h).
"""

from __future__ import annotations

import bisect
import operator
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final, NamedTuple
from zoneinfo import ZoneInfo

import orjson

from forum.model import Forum, Membership
from forum_analytics.segments import Segments
from streams.events import Event, EventType

__all__ = [
    "ALL_USERS_SLUG",
    "FIELDS",
    "FORMAT",
    "EventCounts",
    "Figures",
    "GroupDayRow",
    "HourRow",
    "SegmentRow",
    "SessionRow",
    "Truth",
    "UserDayRow",
    "compute_truth",
    "local_hour_bounds",
]

FORMAT: Final = "forum-analytics-truth/1"
ALL_USERS_SLUG: Final = "all-users"
"""The pseudo-segment of every user, listed after the configured segments."""


class Figures(NamedTuple):
    """The additive figures of a user-hour, and of any sum of user-hours (days, groups...)."""

    num_questions: int = 0
    num_answers: int = 0
    num_upvotes: int = 0
    num_downvotes: int = 0
    question_views: int = 0
    answer_views: int = 0
    num_comments: int = 0
    num_retags: int = 0
    num_vote_cancels: int = 0
    num_logins: int = 0
    num_events: int = 0
    time_on_site: int = 0
    num_sessions_started: int = 0


FIELDS: Final[tuple[str, ...]] = Figures._fields
_N: Final = len(FIELDS)
_EVENTS: Final = FIELDS.index("num_events")
_TIME: Final = FIELDS.index("time_on_site")
_STARTED: Final = FIELDS.index("num_sessions_started")

_TYPE_FIELD: Final[Mapping[str, int]] = {
    EventType.QUESTION_ASKED: FIELDS.index("num_questions"),
    EventType.ANSWER_POSTED: FIELDS.index("num_answers"),
    EventType.UPVOTED: FIELDS.index("num_upvotes"),
    EventType.DOWNVOTED: FIELDS.index("num_downvotes"),
    EventType.QUESTION_VIEWED: FIELDS.index("question_views"),
    EventType.ANSWER_VIEWED: FIELDS.index("answer_views"),
    EventType.QUESTION_COMMENTED: FIELDS.index("num_comments"),
    EventType.ANSWER_COMMENTED: FIELDS.index("num_comments"),
    EventType.QUESTION_RETAGGED: FIELDS.index("num_retags"),
    EventType.VOTE_CANCELED: FIELDS.index("num_vote_cancels"),
    EventType.LOGGED_IN: FIELDS.index("num_logins"),
}
"""Which field an event type adds to, besides `num_events`; absent types add to none."""


# -- result types ------------------------------------------------------------------------------


class EventCounts(NamedTuple):
    """Events as sent, once deduplicated, and the unique ones by type (all 14 types listed)."""

    sent: int
    unique: int
    by_type: Mapping[str, int]


class SessionRow(NamedTuple):
    """One session; `ip`/`user_agent` are those of its first event, "" when absent."""

    user_id: int
    start_ms: int
    last_activity_ms: int
    duration_s: int
    ip: str
    user_agent: str
    event_count: int


class HourRow(NamedTuple):
    """All users' figures for one local hour, keyed by its UTC start ("…T13:00:00Z")."""

    hour: str
    figures: Figures


class UserDayRow(NamedTuple):
    """One user's figures for one local day ("YYYY-MM-DD")."""

    day: str
    user_id: int
    figures: Figures


class GroupDayRow(NamedTuple):
    """One analytics group's figures for one local day: members' hours and member counts."""

    day: str
    group_id: int
    num_users: int
    num_users_added: int
    num_active_users: int
    figures: Figures


class SegmentRow(NamedTuple):
    """One segment's figures over the whole range (slug `all-users`: every user)."""

    slug: str
    num_users: int
    num_users_added: int
    num_active_users: int
    figures: Figures


_SESSION_COLUMNS: Final = SessionRow._fields
_HOUR_COLUMNS: Final = ("hour", *FIELDS)
_USER_DAY_COLUMNS: Final = ("day", "user_id", *FIELDS)


@dataclass(frozen=True)
class Truth:
    """The expected figures for local days `first_day`..`last_day` (inclusive) of `time_zone`.

    File format (`to_json`; UTF-8 JSON, one object, one table row per line):

    * `format`: "forum-analytics-truth/1"; `time_zone` (IANA key), `session_timeout_minutes`,
      `first_day`, `last_day` ("YYYY-MM-DD").
    * `fields`: the 13 figure names in order (`FIELDS`, equal to `streams.hourly.FIELDS`), and
      `columns`: the column names of the three array tables below.
    * `events`: {"sent", "unique", "by_type": {type: unique count}}: every event, whatever its day.
    * `sessions`: arrays [user_id, start_ms, last_activity_ms, duration_s, ip, user_agent,
      event_count], sorted by user and start, for the sessions that start in the range.
    * `hourly_totals`: arrays [hour, *figures] for the range's hours with a non-zero figure; the
      hour is its UTC start instant, "2026-11-20T13:00:00Z".
    * `daily_user_summary`: arrays [day, user_id, *figures], non-zero rows, by day then user.
    * `daily_group_summary`: objects {day, group_id, num_users, num_users_added,
      num_active_users, <figures>} for every analytics group and every day (idle days too),
      by day then group.
    * `segments`: objects {slug, num_users, num_users_added, num_active_users, <figures>}:
      the named segments in order, the default segment, then `all-users`.
    """

    time_zone: str
    session_timeout_minutes: int
    first_day: date
    last_day: date
    events: EventCounts
    sessions: tuple[SessionRow, ...]
    hourly_totals: tuple[HourRow, ...]
    daily_user_summary: tuple[UserDayRow, ...]
    daily_group_summary: tuple[GroupDayRow, ...]
    segments: tuple[SegmentRow, ...]

    def segment(self, slug: str) -> SegmentRow:
        """The row of one segment (or `all-users`); KeyError when there is none."""
        for row in self.segments:
            if row.slug == slug:
                return row
        raise KeyError(slug)

    def to_json(self) -> bytes:
        """The file form described in the class docstring."""
        doc: dict[str, Any] = {
            "format": FORMAT,
            "time_zone": self.time_zone,
            "session_timeout_minutes": self.session_timeout_minutes,
            "first_day": self.first_day.isoformat(),
            "last_day": self.last_day.isoformat(),
            "fields": list(FIELDS),
            "columns": {
                "sessions": list(_SESSION_COLUMNS),
                "hourly_totals": list(_HOUR_COLUMNS),
                "daily_user_summary": list(_USER_DAY_COLUMNS),
            },
            "events": self.events._asdict(),
            "sessions": [list(row) for row in self.sessions],
            "hourly_totals": [[r.hour, *r.figures] for r in self.hourly_totals],
            "daily_user_summary": [[r.day, r.user_id, *r.figures] for r in self.daily_user_summary],
            "daily_group_summary": [_flat(r) for r in self.daily_group_summary],
            "segments": [_flat(r) for r in self.segments],
        }
        return _dump(doc)

    @classmethod
    def from_json(cls, data: bytes) -> Truth:
        """Read what `to_json` wrote; ValueError for another format or other figure names."""
        doc = orjson.loads(data)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} document")
        if tuple(doc["fields"]) != FIELDS:
            raise ValueError(f"figure names {doc['fields']} differ from {list(FIELDS)}")
        events = doc["events"]
        return cls(
            time_zone=str(doc["time_zone"]),
            session_timeout_minutes=int(doc["session_timeout_minutes"]),
            first_day=date.fromisoformat(doc["first_day"]),
            last_day=date.fromisoformat(doc["last_day"]),
            events=EventCounts(
                int(events["sent"]),
                int(events["unique"]),
                {str(k): int(v) for k, v in events["by_type"].items()},
            ),
            sessions=tuple(SessionRow(*row) for row in doc["sessions"]),
            hourly_totals=tuple(HourRow(row[0], Figures(*row[1:])) for row in doc["hourly_totals"]),
            daily_user_summary=tuple(
                UserDayRow(row[0], row[1], Figures(*row[2:])) for row in doc["daily_user_summary"]
            ),
            daily_group_summary=tuple(
                GroupDayRow(*_counts(obj, "day", "group_id")) for obj in doc["daily_group_summary"]
            ),
            segments=tuple(SegmentRow(*_counts(obj, "slug")) for obj in doc["segments"]),
        )


def _flat(row: GroupDayRow | SegmentRow) -> dict[str, Any]:
    """A row with figures as one flat object, as ClickHouse rows look."""
    out = {k: v for k, v in row._asdict().items() if k != "figures"}
    out.update(row.figures._asdict())
    return out


def _counts(obj: Mapping[str, Any], *keys: str) -> tuple[Any, ...]:
    """A flat object back to a row's arguments: keys, the three user counts, the figures."""
    head = [obj[k] for k in (*keys, "num_users", "num_users_added", "num_active_users")]
    return (*head, Figures(*(int(obj[name]) for name in FIELDS)))


def _dump(doc: Mapping[str, Any]) -> bytes:
    """Indented JSON with one table row per line: readable and diffable, yet compact for
    hundreds of thousands of rows (fully indented JSON puts every number on its own line)."""
    parts = []
    for key, value in doc.items():
        name = orjson.dumps(key)
        if isinstance(value, list) and value and isinstance(value[0], list | dict):
            rows = b",\n    ".join(orjson.dumps(row) for row in value)
            parts.append(b"  " + name + b": [\n    " + rows + b"\n  ]")
        else:
            parts.append(b"  " + name + b": " + orjson.dumps(value))
    return b"{\n" + b",\n".join(parts) + b"\n}\n"


# -- local hours -------------------------------------------------------------------------------


def local_midnight_ms(day: date, zone: ZoneInfo) -> int:
    """The instant (epoch ms) the local day starts: 00:00 local, first occurrence."""
    return int(datetime.combine(day, time(0), tzinfo=zone).timestamp()) * 1000


def _offset_s(t_s: int, zone: ZoneInfo) -> int:
    offset = datetime.fromtimestamp(t_s, zone).utcoffset()
    assert offset is not None  # a ZoneInfo always knows its offset
    return int(offset.total_seconds())


def _offset_changes(start_s: int, end_s: int, zone: ZoneInfo) -> list[int]:
    """The instants in (start_s, end_s] where the zone's UTC offset changes, to the second.

    Samples hourly and bisects each change: zones never change twice within an hour, and
    zoneinfo's transitions fall on whole seconds.
    """
    changes = []
    t, before = start_s, _offset_s(start_s, zone)
    while t < end_s:
        nxt = min(t + 3600, end_s)
        after = _offset_s(nxt, zone)
        if after != before:
            lo, hi = t, nxt  # offset(lo) == before, offset(hi) != before
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if _offset_s(mid, zone) == before else (lo, mid)
            changes.append(hi)
        t, before = nxt, after
    return changes


def local_hour_bounds(zone: ZoneInfo, first_day: date, last_day: date) -> tuple[int, ...]:
    """The boundaries (epoch ms) of the local hours of days first_day..last_day, both ends in.

    A local hour is a maximal run of instants with the same local date, hour of day and UTC
    offset; so its boundaries are the instants whose wall clock reads hh:00:00 plus those where
    the offset changes. Hour i is [bounds[i], bounds[i+1]): UTC hours start at :00 UTC,
    Asia/Kolkata's at :30, and DST days have 23 or 25 hours.
    """
    start_s = local_midnight_ms(first_day, zone) // 1000
    end_s = local_midnight_ms(last_day + timedelta(days=1), zone) // 1000
    changes = _offset_changes(start_s, end_s, zone)
    bounds = {start_s, end_s, *changes}
    edges = [start_s, *changes, end_s]
    for lo, hi in zip(edges, edges[1:], strict=False):
        offset = _offset_s(lo, zone)
        t = lo + (-(lo + offset)) % 3600  # the first wall-clock hh:00:00 at or after lo
        bounds.update(range(t, hi, 3600))
    return tuple(s * 1000 for s in sorted(bounds))


class _Calendar:
    """The range's local hours: their bounds, keys and days, and an instant → hour lookup."""

    def __init__(self, zone: ZoneInfo, first_day: date, last_day: date) -> None:
        self.bounds = local_hour_bounds(zone, first_day, last_day)
        self.start_ms, self.end_ms = self.bounds[0], self.bounds[-1]
        self.days = [first_day + timedelta(days=i) for i in range((last_day - first_day).days + 1)]
        day_index = {d: i for i, d in enumerate(self.days)}
        starts = self.bounds[:-1]
        self.hour_keys = [_utc_key(ms) for ms in starts]
        self.hour_day = [day_index[_local_date(ms, zone)] for ms in starts]
        self.zone = zone

    def hour_of(self, ms: int) -> int:
        """The index of the hour holding `ms`, or -1 outside the range."""
        if ms < self.start_ms or ms >= self.end_ms:
            return -1
        return bisect.bisect_right(self.bounds, ms) - 1

    def local_date(self, ms: int) -> date:
        return _local_date(ms, self.zone)


def _utc_key(ms: int) -> str:
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _local_date(ms: int, zone: ZoneInfo) -> date:
    return datetime.fromtimestamp(ms // 1000, zone).date()


# -- events, sessions, user-hours ------------------------------------------------------------

_Row = tuple[int, str, str | None, str | None]
"""What a user's event keeps: (ts_ms, type, ip, user_agent)."""
_Hours = dict[int, list[int]]
"""A user's figures by hour index: mutable lists of len(FIELDS) ints."""


_KINDS: Final[Mapping[str, str]] = {t.value: t.value for t in EventType}
"""Type names as shared plain strings: str() of an enum member makes a new string each time,
which for a million events is tens of megabytes."""


@dataclass
class _Log:
    """One user's unique events, in send order, and the ids already seen."""

    seen: set[str] = field(default_factory=set)
    rows: list[_Row] = field(default_factory=list)


def _collect(events: Iterable[Event]) -> tuple[dict[int, _Log], int]:
    """Events grouped by user, each (user_id, id) kept once, the first sent; and how many
    were sent. Only 4 fields are kept per event: the rest never changes a figure."""
    logs: defaultdict[int, _Log] = defaultdict(_Log)
    sent = 0
    for event in events:
        sent += 1
        log = logs[event.user_id]
        if event.id not in log.seen:
            log.seen.add(event.id)
            kind = _KINDS.get(event.type) or str(event.type)
            log.rows.append((event.ts_ms, kind, event.ip, event.user_agent))
    return logs, sent


def _sessions(rows: Sequence[_Row], timeout_ms: int) -> Iterator[Sequence[_Row]]:
    """Time-ordered rows cut wherever the gap to the previous one exceeds the timeout."""
    first = 0
    for i in range(1, len(rows)):
        if rows[i][0] - rows[i - 1][0] > timeout_ms:
            yield rows[first:i]
            first = i
    if rows:
        yield rows[first:]


def _cell(hours: _Hours, hour: int) -> list[int]:
    cell = hours.get(hour)
    if cell is None:
        cell = hours[hour] = [0] * _N
    return cell


def _add_time_on_site(hours: _Hours, cal: _Calendar, first_ms: int, last_ms: int) -> None:
    """Split the span [first, last] at hour boundaries, clipped to the range (whose ends are
    boundaries too, so clipping keeps the pieces exact); a piece [a, b) gives its hour
    floor(b/1000) - floor(a/1000) seconds."""
    a, end = max(first_ms, cal.start_ms), min(last_ms, cal.end_ms)
    if a >= end:
        return
    hour = cal.hour_of(a)
    while a < end:
        b = min(cal.bounds[hour + 1], end)
        seconds = b // 1000 - a // 1000
        if seconds:
            _cell(hours, hour)[_TIME] += seconds
        a, hour = b, hour + 1


def _user_hours(
    user_id: int, rows: list[_Row], cal: _Calendar, timeout_ms: int, sessions: list[SessionRow]
) -> _Hours:
    """One user's figures by hour; appends the user's in-range sessions to `sessions`."""
    rows.sort(key=operator.itemgetter(0))  # stable: ties stay in send order
    hours: _Hours = {}
    for session in _sessions(rows, timeout_ms):
        first_ms, last_ms = session[0][0], session[-1][0]
        start_hour = cal.hour_of(first_ms)
        if start_hour >= 0:
            _cell(hours, start_hour)[_STARTED] += 1
            _, _, ip, agent = session[0]
            duration = last_ms // 1000 - first_ms // 1000
            sessions.append(
                SessionRow(
                    user_id, first_ms, last_ms, duration, ip or "", agent or "", len(session)
                )
            )
        _add_time_on_site(hours, cal, first_ms, last_ms)
        for ts, kind, _, _ in session:
            hour = cal.hour_of(ts)
            if hour >= 0:
                cell = _cell(hours, hour)
                cell[_EVENTS] += 1
                index = _TYPE_FIELD.get(kind)
                if index is not None:
                    cell[index] += 1
    return hours


def _add(total: list[int], values: Sequence[int]) -> None:
    total[:] = map(operator.add, total, values)


# -- memberships -------------------------------------------------------------------------------


def _covers(intervals: Iterable[Membership], start_ms: int, end_ms: int) -> bool:
    """Whether any interval [since, until) meets the hour [start, end)."""
    return any(
        m.since_ms < end_ms and (m.until_ms is None or m.until_ms > start_ms) for m in intervals
    )


def _member_at_end(intervals: Iterable[Membership], end_ms: int) -> bool:
    """A member at the period's last instant: since < end and until (if any) >= end."""
    return any(
        m.since_ms < end_ms and (m.until_ms is None or m.until_ms >= end_ms) for m in intervals
    )


class _Accumulator:
    """The sum of some user-hours, and how many users had an event in them."""

    __slots__ = ("active", "figures")

    def __init__(self) -> None:
        self.figures = [0] * _N
        self.active = 0


def _accumulate(hours: _Hours, targets: Iterable[tuple[int, _Accumulator]]) -> None:
    """Add one user's hours to their accumulators, then count the user once as active in
    each accumulator that got an hour with an event (however many such hours it got)."""
    active: dict[int, _Accumulator] = {}
    for hour, acc in targets:
        cell = hours[hour]
        _add(acc.figures, cell)
        if cell[_EVENTS] > 0:
            active[id(acc)] = acc
    for acc in active.values():
        acc.active += 1


def _covered(
    hours: Iterable[int], intervals: Sequence[Membership], cal: _Calendar, *, negate: bool = False
) -> list[int]:
    """The hours that a membership interval meets (with `negate`: that none meets)."""
    return [h for h in hours if _covers(intervals, cal.bounds[h], cal.bounds[h + 1]) is not negate]


# -- groups ------------------------------------------------------------------------------------


def _group_days(
    hours_by_user: Mapping[int, _Hours],
    cal: _Calendar,
    forum: Forum,
    memberships: Mapping[int, Mapping[int, list[Membership]]],
) -> list[GroupDayRow]:
    """Every analytics group × every day: members' hours, member counts, active members."""
    group_ids = sorted({g.group_id for g in forum.groups if g.used_for_analytics})
    accs = {(g, d): _Accumulator() for g in group_ids for d in range(len(cal.days))}
    for user_id, hours in hours_by_user.items():
        for group_id, intervals in memberships.get(user_id, {}).items():
            if (group_id, 0) in accs:
                chosen = _covered(hours, intervals, cal)
                _accumulate(hours, ((h, accs[group_id, cal.hour_day[h]]) for h in chosen))
    spans = _membership_days(forum.memberships, cal)
    rows = []
    for d, day in enumerate(cal.days):
        for group_id in group_ids:
            members, added = _member_counts(spans.get(group_id, []), day)
            acc = accs[group_id, d]
            figures = Figures(*acc.figures)
            rows.append(GroupDayRow(day.isoformat(), group_id, members, added, acc.active, figures))
    return rows


_DaySpan = tuple[date, date | None]


def _membership_days(
    memberships: Iterable[Membership], cal: _Calendar
) -> dict[int, list[_DaySpan]]:
    """Each group's membership intervals as local dates (since_day, until_day or None)."""
    spans: defaultdict[int, list[_DaySpan]] = defaultdict(list)
    for m in memberships:
        until = None if m.until_ms is None else cal.local_date(m.until_ms)
        spans[m.group_id].append((cal.local_date(m.since_ms), until))
    return spans


def _member_counts(spans: Iterable[_DaySpan], day: date) -> tuple[int, int]:
    """(intervals open on `day`: since_day <= day < until_day, intervals starting on `day`)."""
    members = added = 0
    for since, until in spans:
        added += since == day
        members += since <= day and (until is None or until > day)
    return members, added


# -- segments ----------------------------------------------------------------------------------


def _in_groups(
    memberships: Mapping[int, list[Membership]], group_ids: Iterable[int]
) -> list[Membership]:
    return [m for g in group_ids for m in memberships.get(g, [])]


def _segment_rows(
    hours_by_user: Mapping[int, _Hours],
    cal: _Calendar,
    forum: Forum,
    segments: Segments,
    memberships: Mapping[int, Mapping[int, list[Membership]]],
) -> list[SegmentRow]:
    """Named segments in order, the default segment, then all users, over the whole range."""
    rows = [
        _named_segment(s.slug, s.group_ids, hours_by_user, cal, memberships) for s in segments.named
    ]
    rows.append(
        _default_segment(
            segments.default.slug, segments.named_group_ids, hours_by_user, cal, forum, memberships
        )
    )
    rows.append(_all_users(hours_by_user, cal, forum))
    return rows


def _named_segment(
    slug: str,
    group_ids: Iterable[int],
    hours_by_user: Mapping[int, _Hours],
    cal: _Calendar,
    memberships: Mapping[int, Mapping[int, list[Membership]]],
) -> SegmentRow:
    """Users' hours covered by a membership in any of the groups, each user-hour once."""
    acc = _Accumulator()
    for user_id, hours in hours_by_user.items():
        intervals = _in_groups(memberships.get(user_id, {}), group_ids)
        if intervals:
            _accumulate(hours, ((h, acc) for h in _covered(hours, intervals, cal)))
    members = added = 0
    for by_group in memberships.values():
        intervals = _in_groups(by_group, group_ids)
        if not intervals:
            continue
        members += _member_at_end(intervals, cal.end_ms)
        added += cal.start_ms <= min(m.since_ms for m in intervals) < cal.end_ms
    return SegmentRow(slug, members, added, acc.active, Figures(*acc.figures))


def _default_segment(
    slug: str,
    named_groups: Iterable[int],
    hours_by_user: Mapping[int, _Hours],
    cal: _Calendar,
    forum: Forum,
    memberships: Mapping[int, Mapping[int, list[Membership]]],
) -> SegmentRow:
    """Users' hours covered by no membership of a named segment's group; registered users
    who are in none of those groups at the end of the range."""
    acc = _Accumulator()
    for user_id, hours in hours_by_user.items():
        intervals = _in_groups(memberships.get(user_id, {}), named_groups)
        chosen = _covered(hours, intervals, cal, negate=True)
        _accumulate(hours, ((h, acc) for h in chosen))
    members = added = 0
    for user in forum.users:
        if user.joined_ms >= cal.end_ms:
            continue
        intervals = _in_groups(memberships.get(user.user_id, {}), named_groups)
        if not _member_at_end(intervals, cal.end_ms):
            members += 1
            added += user.joined_ms >= cal.start_ms
    return SegmentRow(slug, members, added, acc.active, Figures(*acc.figures))


def _all_users(hours_by_user: Mapping[int, _Hours], cal: _Calendar, forum: Forum) -> SegmentRow:
    acc = _Accumulator()
    for hours in hours_by_user.values():
        _accumulate(hours, ((h, acc) for h in hours))
    joined = [u.joined_ms for u in forum.users if u.joined_ms < cal.end_ms]
    added = sum(ms >= cal.start_ms for ms in joined)
    return SegmentRow(ALL_USERS_SLUG, len(joined), added, acc.active, Figures(*acc.figures))


# -- totals ------------------------------------------------------------------------------------


def _hourly_totals(hours_by_user: Mapping[int, _Hours], cal: _Calendar) -> list[HourRow]:
    totals: dict[int, list[int]] = {}
    for hours in hours_by_user.values():
        for hour, cell in hours.items():
            _add(totals.setdefault(hour, [0] * _N), cell)
    return [
        HourRow(cal.hour_keys[h], Figures(*totals[h])) for h in sorted(totals) if any(totals[h])
    ]


def _user_days(hours_by_user: Mapping[int, _Hours], cal: _Calendar) -> list[UserDayRow]:
    rows = []
    for user_id, hours in hours_by_user.items():
        days: dict[int, list[int]] = {}
        for hour, cell in hours.items():
            _add(days.setdefault(cal.hour_day[hour], [0] * _N), cell)
        rows += [
            UserDayRow(cal.days[d].isoformat(), user_id, Figures(*v))
            for d, v in days.items()
            if any(v)
        ]
    rows.sort(key=lambda r: (r.day, r.user_id))
    return rows


def _event_counts(logs: Mapping[int, _Log], sent: int) -> EventCounts:
    by_type = Counter(kind for log in logs.values() for _, kind, _, _ in log.rows)
    return EventCounts(
        sent, sum(by_type.values()), {str(t): by_type.get(str(t), 0) for t in EventType}
    )


def _memberships_by_user(forum: Forum) -> dict[int, dict[int, list[Membership]]]:
    out: defaultdict[int, defaultdict[int, list[Membership]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for m in forum.memberships:
        out[m.user_id][m.group_id].append(m)
    return {user: dict(groups) for user, groups in out.items()}


def compute_truth(
    events: Iterable[Event],
    forum: Forum,
    segments: Segments,
    *,
    zone: ZoneInfo,
    timeout_minutes: int,
    first_day: date,
    last_day: date,
) -> Truth:
    """The expected figures of `events` (as sent, duplicates included) for local days
    first_day..last_day of `zone`: see the module docstring for the rules."""
    if last_day < first_day:
        raise ValueError(f"last_day {last_day} is before first_day {first_day}")
    cal = _Calendar(zone, first_day, last_day)
    logs, sent = _collect(events)
    counts = _event_counts(logs, sent)
    sessions: list[SessionRow] = []
    hours_by_user = {
        user_id: _user_hours(user_id, log.rows, cal, timeout_minutes * 60_000, sessions)
        for user_id, log in logs.items()
    }
    sessions.sort(key=lambda s: (s.user_id, s.start_ms))
    memberships = _memberships_by_user(forum)
    return Truth(
        time_zone=zone.key,
        session_timeout_minutes=timeout_minutes,
        first_day=first_day,
        last_day=last_day,
        events=counts,
        sessions=tuple(sessions),
        hourly_totals=tuple(_hourly_totals(hours_by_user, cal)),
        daily_user_summary=tuple(_user_days(hours_by_user, cal)),
        daily_group_summary=tuple(_group_days(hours_by_user, cal, forum, memberships)),
        segments=tuple(_segment_rows(hours_by_user, cal, forum, segments, memberships)),
    )
