"""Segment totals checked against a second computation, from the group rows.

`clickhouse.segment_figures` reads a segment's figures from the per-user hourly rows and the
membership intervals. This module gets them another way: from `group_member_hours`, which
`verify` checks against the raw events, taking each (user, hour) once however many of the
segment's groups have it; the default segment as every user's hours minus those in a named
segment's groups; user counts from the `users` and `group_members` rows, in Python. Any
difference is reported, so double counting of users in two groups of a segment, or a user in no
group missing from the default segment, cannot pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

from clickhouse_connect.driver.client import Client

from clickhouse.segment_figures import ALL_USERS, SegmentFigures, segment_figures
from forum_analytics.segments import Segments
from streams.dimension_rows import ANONYMOUS_BASE
from streams.events import ms_to_datetime
from streams.hourly import FIELDS
from streams.timebuckets import day_start_ms

__all__ = ["SegmentDifference", "verify_segments"]

_EVENTS: Final = FIELDS.index("num_events")
#: A group row whose deltas cancel out (a membership correction took the hour back) is no row.
_NOT_ZERO: Final = f"({', '.join(FIELDS)}) != ({', '.join('0' for _ in FIELDS)})"


@dataclass(frozen=True)
class SegmentDifference:
    """`field` of segment `slug` over the range: `expected` (recomputed) but `actual`."""

    slug: str
    field: str
    expected: int
    actual: int

    def __str__(self) -> str:
        return f"segment {self.slug}: {self.field}: expected {self.expected}, actual {self.actual}"


def verify_segments(
    client: Client, segments: Segments, first: date, last: date, zone: ZoneInfo
) -> list[SegmentDifference]:
    """Every difference between the segment figures and their recomputation."""
    actual = segment_figures(client, segments, first, last, zone)
    expected = _recompute(client, segments, first, last, zone)
    out = []
    for figures in actual:
        want = expected[figures.slug]
        for name, value in _flat(figures).items():
            if want[name] != value:
                out.append(SegmentDifference(figures.slug, name, want[name], value))
    return out


def _flat(figures: SegmentFigures) -> dict[str, int]:
    return {
        "num_users": figures.num_users,
        "num_users_added": figures.num_users_added,
        "num_active_users": figures.num_active_users,
        **figures.values,
    }


def _recompute(
    client: Client, segments: Segments, first: date, last: date, zone: ZoneInfo
) -> dict[str, dict[str, int]]:
    start = ms_to_datetime(day_start_ms(first, zone))
    end = ms_to_datetime(day_start_ms(last + timedelta(days=1), zone))
    everyone = _everyone(client, first, last)
    users = _users(client)
    intervals = _intervals(client)
    out: dict[str, dict[str, int]] = {}
    outside = dict(everyone)
    named_members: set[int] = set()
    for segment in segments.named:
        hours = _union_hours(client, segment.group_ids, first, last)
        members = _members_at(intervals, segment.group_ids, end)
        named_members |= members
        firsts = _first_since(intervals, segment.group_ids)
        added = sum(1 for t in firsts.values() if start <= t < end)
        out[segment.slug] = _totals(hours, len(members), added)
    union = _union_hours(client, segments.named_group_ids, first, last)
    for user, values in union.items():
        outside[user] = [
            a - b for a, b in zip(outside.get(user, [0] * len(FIELDS)), values, strict=True)
        ]
    registered = {u: t for u, t in users.items() if t < end}
    rest_members = {u for u in registered if u not in named_members}
    out[segments.default.slug] = _totals(
        outside, len(rest_members), sum(1 for u in rest_members if registered[u] >= start)
    )
    out[ALL_USERS] = _totals(
        everyone, len(registered), sum(1 for t in registered.values() if t >= start)
    )
    return out


def _totals(per_user: dict[int, list[int]], members: int, added: int) -> dict[str, int]:
    sums = [sum(values[i] for values in per_user.values()) for i in range(len(FIELDS))]
    active = sum(1 for values in per_user.values() if values[_EVENTS] > 0)
    figures = {"num_users": members, "num_users_added": added, "num_active_users": active}
    return figures | dict(zip(FIELDS, sums, strict=True))


def _per_user(rows: Any) -> dict[int, list[int]]:
    return {int(r[0]): [int(v) for v in r[1:]] for r in rows.result_rows}


def _everyone(client: Client, first: date, last: date) -> dict[int, list[int]]:
    """Every user's summed hours: per-user rows plus anonymous members' group hours."""
    sums = ", ".join(f"sum({f})" for f in FIELDS)
    rows = client.query(
        f"SELECT user_id, {sums} FROM hourly_user_summary "
        "WHERE day >= {a:Date} AND day <= {b:Date} GROUP BY user_id",
        parameters={"a": first, "b": last},
    )
    out = _per_user(rows)
    anonymous = _union_hours(client, None, first, last)
    out.update(anonymous)
    return out


def _union_hours(
    client: Client, groups: frozenset[int] | None, first: date, last: date
) -> dict[int, list[int]]:
    """Per user, the sum over (user, hour) pairs of any of `groups` (None: anonymous
    members of any group), each pair once: every group that has the pair has the same figures
    (`verify` checks that), so any one of them will do."""
    per_group = ", ".join(f"sum({f}) AS {f}" for f in FIELDS)
    once = ", ".join(f"any({f}) AS {f}" for f in FIELDS)
    total = ", ".join(f"sum({f})" for f in FIELDS)
    where = (
        f"user_id >= {ANONYMOUS_BASE}" if groups is None else "group_id IN {groups:Array(UInt64)}"
    )
    sql = (
        f"SELECT user_id, {total} FROM (SELECT user_id, hour, {once} FROM ("
        f"SELECT group_id, user_id, hour, {per_group} FROM group_member_hours "
        f"WHERE {where} AND day >= {{a:Date}} AND day <= {{b:Date}} "
        f"GROUP BY group_id, user_id, hour HAVING {_NOT_ZERO}) "
        "GROUP BY user_id, hour) GROUP BY user_id"
    )
    params: dict[str, Any] = {"a": first, "b": last, "groups": sorted(groups or ())}
    return _per_user(client.query(sql, parameters=params))


def _users(client: Client) -> dict[int, datetime]:
    rows = client.query("SELECT user_id, joined_at FROM users FINAL").result_rows
    return {int(u): _aware(t) for u, t in rows}


def _intervals(client: Client) -> list[tuple[int, int, datetime, datetime | None]]:
    rows = client.query("SELECT user_id, group_id, since, until FROM group_members FINAL")
    return [
        (int(u), int(g), _aware(s), None if t is None else _aware(t))
        for u, g, s, t in rows.result_rows
    ]


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=ZoneInfo("UTC"))


def _members_at(
    intervals: list[tuple[int, int, datetime, datetime | None]],
    groups: frozenset[int],
    end: datetime,
) -> set[int]:
    """Users in any of `groups` at the last moment before `end`."""
    return {
        u
        for u, g, since, until in intervals
        if g in groups and since < end and (until is None or until >= end)
    }


def _first_since(
    intervals: list[tuple[int, int, datetime, datetime | None]], groups: frozenset[int]
) -> dict[int, datetime]:
    firsts: dict[int, datetime] = {}
    for u, g, since, _ in intervals:
        if g in groups and (u not in firsts or since < firsts[u]):
            firsts[u] = since
    return firsts
