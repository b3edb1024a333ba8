"""The ClickHouse rows of users, memberships, group hours and purges, and their columns.

Every row type is a plain tuple of ints and strings, so a step record can hold it (orjson) and
write it again after a crash; datetimes are made only when inserting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, NamedTuple
from zoneinfo import ZoneInfo

from streams.events import ms_to_datetime
from streams.hourly import FIELDS
from streams.memberships import GroupHourRow, Interval
from streams.timebuckets import day_of, hour_start_ms

__all__ = [
    "ANONYMOUS_BASE",
    "GROUP_HOUR_COLUMNS",
    "MEMBER_COLUMNS",
    "USER_COLUMNS",
    "MemberRow",
    "Purge",
    "UserRow",
    "group_hour_rows",
    "member_rows",
    "user_rows",
]

#: Purged users' group contributions move to a random id at or above this: no real user id
#: (1..2**63-1) can be one, and no mapping back to the user is kept.
ANONYMOUS_BASE: Final = 2**63

USER_COLUMNS: Final = (
    "user_id",
    "username",
    "email",
    "joined_at",
    "is_active",
    "role",
    "group_ids",
    "organization_id",
    "updated_at",
    "version",
)
MEMBER_COLUMNS: Final = (
    "group_id",
    "user_id",
    "since",
    "until",
    "since_hour",
    "since_day",
    "until_hour",
    "until_day",
    "organization",
    "version",
    "is_deleted",
)
GROUP_HOUR_COLUMNS: Final = ("group_id", "hour", "day", "user_id", *FIELDS)


class UserRow(NamedTuple):
    """A `users` row version."""

    user_id: int
    username: str
    email: str
    joined_ms: int
    is_active: bool
    role: str
    group_ids: tuple[int, ...]
    organization_id: int | None
    updated_ms: int
    version: int


class MemberRow(NamedTuple):
    """A `group_members` row version: an interval of a user, or its deletion."""

    user_id: int
    interval: Interval
    deleted: bool = False


class Purge(NamedTuple):
    """A user's personal data removed (a null `forum-users` value): their group rows moved to
    `anonymous_id` (`moved`, already under the new id) and everything else with their id
    deleted, recorded in `purge_audit` with the request's position."""

    user_id: int
    anonymous_id: int
    offset: int
    purged_ms: int
    moved: tuple[GroupHourRow, ...]
    members: tuple[MemberRow, ...]


def user_rows(rows: Sequence[UserRow]) -> list[list[Any]]:
    return [
        [
            r.user_id,
            r.username,
            r.email,
            ms_to_datetime(r.joined_ms),
            r.is_active,
            r.role,
            list(r.group_ids),
            r.organization_id,
            ms_to_datetime(r.updated_ms),
            r.version,
        ]
        for r in rows
    ]


def member_rows(rows: Sequence[MemberRow], zone: ZoneInfo) -> list[list[Any]]:
    """`group_members` rows, with the local hour and day of since and until."""
    out = []
    for row in rows:
        i = row.interval
        since_hour = hour_start_ms(i.since_ms, zone)
        until_hour = None if i.until_ms is None else hour_start_ms(i.until_ms, zone)
        out.append(
            [
                i.group_id,
                row.user_id,
                ms_to_datetime(i.since_ms),
                None if i.until_ms is None else ms_to_datetime(i.until_ms),
                ms_to_datetime(since_hour),
                day_of(since_hour, zone),
                None if until_hour is None else ms_to_datetime(until_hour),
                None if until_hour is None else day_of(until_hour, zone),
                i.organization,
                i.version,
                int(row.deleted),
            ]
        )
    return out


def group_hour_rows(rows: Sequence[GroupHourRow], zone: ZoneInfo) -> list[list[Any]]:
    return [
        [r.group_id, ms_to_datetime(r.hour_ms), day_of(r.hour_ms, zone), r.user_id, *r.values]
        for r in rows
    ]
