"""Figures of user segments over a range of days, each user counted once per segment.

A segment is a union of groups (or, for the default segment, everyone outside the named
segments' groups: forum_analytics.segments). Summing group rows would count a user in two of
the segment's groups twice, so segment figures are read from the per-user hourly rows instead:
a user's hour belongs to a segment if the user was a member of any of its groups at any moment
of that hour (the rule group figures use), and each (user, hour) row is taken once.

* `num_users`: users in the segment at the end of the range (all users: registered by then);
* `num_users_added`: users whose first membership of the segment began in the range (all
  users, and the default segment: registrations in the range, as in Askbot);
* `num_active_users`: distinct users with an event in the range while in the segment;
* the summary fields, summed over those hours.

A purged user's hours stay in the figures of the segments of their groups, as an anonymous
member's (streams.user_changes); their hours outside any group are gone with their data.

Hours are local hours of ANALYTICS_TIME_ZONE; a local hour is taken to last 3600 s, which holds
in every zone whose daylight-saving shift is a whole hour (not Australia/Lord_Howe).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

from clickhouse_connect.driver.client import Client

from forum_analytics.segments import Segment, Segments
from streams.dimension_rows import ANONYMOUS_BASE
from streams.events import ms_to_datetime
from streams.hourly import FIELDS
from streams.timebuckets import day_start_ms

__all__ = ["ALL_USERS", "MEMBERSHIP_SPANS", "SegmentFigures", "segment_figures"]

ALL_USERS: Final = "all-users"

# Each user's membership intervals [since, until) in the groups {groups}: joined on user_id.
MEMBERSHIP_SPANS: Final = (
    "SELECT user_id, groupArray((since, until)) AS spans FROM group_members FINAL "
    "WHERE group_id IN {groups:Array(UInt64)} GROUP BY user_id"
)
_IN_HOUR: Final = "arrayExists(s -> s.1 < h.hour + 3600 AND (s.2 IS NULL OR s.2 > h.hour), m.spans)"


@dataclass(frozen=True)
class SegmentFigures:
    """One segment's figures over the range (see the module docstring)."""

    slug: str
    num_users: int
    num_users_added: int
    num_active_users: int
    values: dict[str, int]


def segment_figures(
    client: Client, segments: Segments, first: date, last: date, zone: ZoneInfo
) -> list[SegmentFigures]:
    """Each named segment, the default segment, then all users (slug `all-users`)."""
    start = ms_to_datetime(day_start_ms(first, zone))
    end = ms_to_datetime(day_start_ms(last + timedelta(days=1), zone))
    params: dict[str, Any] = {"first": first, "last": last, "start": start, "end": end}
    named_groups = sorted(segments.named_group_ids)
    out = [
        _figures(client, s.slug, _named_sql(), params | {"groups": sorted(s.group_ids)})
        for s in segments.named
    ]
    out.append(_default(client, segments.default, params | {"groups": named_groups}))
    out.append(_figures(client, ALL_USERS, _all_sql(), params | {"groups": named_groups}))
    return out


def _sums(prefix: str = "") -> str:
    return ", ".join(f"sum({prefix}{f}) AS {f}" for f in FIELDS)


def _hours_sql() -> str:
    """Every user's hours: the per-user rows, and the hours purged users left in groups (as
    anonymous members: one row per hour, however many groups had it)."""
    fields = ", ".join(FIELDS)
    anonymous = ", ".join(f"any({f}) AS {f}" for f in FIELDS)
    per_group = ", ".join(f"sum({f}) AS {f}" for f in FIELDS)
    return (
        f"SELECT hour, day, user_id, {fields} FROM hourly_user_summary UNION ALL "
        f"SELECT hour, any(day) AS day, user_id, {anonymous} FROM ("
        f"SELECT group_id, hour, day, user_id, {per_group} FROM group_member_hours "
        f"WHERE user_id >= {ANONYMOUS_BASE} GROUP BY group_id, hour, day, user_id "
        f"HAVING ({fields}) != ({', '.join('0' for _ in FIELDS)})"
        ") GROUP BY hour, user_id"
    )


def _activity_sql(join: str, condition: str) -> str:
    """Per user, then overall: the fields summed and the active users counted."""
    per_user = (
        f"SELECT h.user_id AS user_id, sum(h.num_events) AS events_total, {_sums('h.')} "
        f"FROM ({_hours_sql()}) AS h {join} "
        f"WHERE h.day >= {{first:Date}} AND h.day <= {{last:Date}} {condition} "
        "GROUP BY h.user_id"
    )
    return f"SELECT countIf(events_total > 0), {_sums()} FROM ({per_user})"


def _named_sql() -> tuple[str, str, str]:
    activity = _activity_sql(
        f"INNER JOIN ({MEMBERSHIP_SPANS}) AS m ON m.user_id = h.user_id", "AND " + _IN_HOUR
    )
    members = (
        "SELECT uniqExactIf(user_id, since < {end:DateTime64(3, 'UTC')} AND (until IS NULL "
        "OR until >= {end:DateTime64(3, 'UTC')})) FROM group_members FINAL "
        "WHERE group_id IN {groups:Array(UInt64)}"
    )
    added = (
        "SELECT countIf(first >= {start:DateTime64(3, 'UTC')} AND first < "
        "{end:DateTime64(3, 'UTC')}) FROM (SELECT user_id, min(since) AS first "
        "FROM group_members FINAL WHERE group_id IN {groups:Array(UInt64)} GROUP BY user_id)"
    )
    return activity, members, added


def _outside_named_at_end() -> str:
    """Users registered by the end of the range and in no named segment's group then."""
    return (
        "SELECT user_id, joined_at FROM users FINAL WHERE joined_at < {end:DateTime64(3, 'UTC')} "
        "AND user_id NOT IN (SELECT user_id FROM group_members FINAL "
        "WHERE group_id IN {groups:Array(UInt64)} AND since < {end:DateTime64(3, 'UTC')} "
        "AND (until IS NULL OR until >= {end:DateTime64(3, 'UTC')}))"
    )


def _registrations(source: str) -> tuple[str, str]:
    members = f"SELECT count() FROM ({source})"
    added = f"SELECT countIf(joined_at >= {{start:DateTime64(3, 'UTC')}}) FROM ({source})"
    return members, added


def _default(client: Client, segment: Segment, params: dict[str, Any]) -> SegmentFigures:
    activity = _activity_sql(
        f"LEFT JOIN ({MEMBERSHIP_SPANS}) AS m ON m.user_id = h.user_id", "AND NOT " + _IN_HOUR
    )
    members, added = _registrations(_outside_named_at_end())
    return _figures(client, segment.slug, (activity, members, added), params)


def _all_sql() -> tuple[str, str, str]:
    activity = _activity_sql("", "")
    members, added = _registrations(
        "SELECT user_id, joined_at FROM users FINAL WHERE joined_at < {end:DateTime64(3, 'UTC')}"
    )
    return activity, members, added


def _figures(
    client: Client, slug: str, sql: tuple[str, str, str], params: dict[str, Any]
) -> SegmentFigures:
    activity_sql, members_sql, added_sql = sql
    settings = {"join_use_nulls": 0}
    row = client.query(activity_sql, parameters=params, settings=settings).result_rows[0]
    members = client.query(members_sql, parameters=params).result_rows[0][0]
    added = client.query(added_sql, parameters=params).result_rows[0][0]
    values = {f: int(v) for f, v in zip(FIELDS, row[1:], strict=True)}
    return SegmentFigures(slug, int(members), int(added), int(row[0]), values)
