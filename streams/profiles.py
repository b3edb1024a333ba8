"""What the worker reads back from ClickHouse about users and groups.

Only the worker that owns a user's partition writes the user's rows, one step at a time, and a
step's inserts are acknowledged before the next step starts; so these reads always see every
earlier step and nothing of a later one. Call on the sink's thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from clickhouse_connect.driver.client import Client

from streams.dimension_rows import UserRow
from streams.events import GroupRecord, datetime_to_ms
from streams.hourly import FIELDS
from streams.memberships import GroupHourRow, Interval
from streams.sink import ClickHouseSink

__all__ = ["ClickHouseProfiles", "Profile"]


def _ms(value: datetime) -> int:
    """A DateTime64 read from a UTC column (clickhouse-connect may return it naive)."""
    return datetime_to_ms(value if value.tzinfo else value.replace(tzinfo=UTC))


class Profile(NamedTuple):
    """A user as stored: the last `users` row (None: never seen) and every interval."""

    user: UserRow | None
    intervals: tuple[Interval, ...]


class ClickHouseProfiles:
    """Reads users, memberships and hours of users; see the module docstring."""

    def __init__(self, sink: ClickHouseSink) -> None:
        self.sink = sink

    def _rows(self, sql: str, params: dict[str, Any], what: str) -> list[Sequence[Any]]:
        def query(client: Client) -> list[Sequence[Any]]:
            return list(client.query(sql, parameters=params).result_rows)

        return self.sink.retrying(query, what)

    def intervals(self, user_ids: Iterable[int]) -> dict[int, tuple[Interval, ...]]:
        """Every stored interval of these users (users without any are absent)."""
        ids = sorted(set(user_ids))
        if not ids:
            return {}
        rows = self._rows(
            "SELECT user_id, group_id, since, until, organization, version "
            "FROM group_members FINAL WHERE user_id IN {ids:Array(UInt64)} "
            "ORDER BY user_id, group_id, since",
            {"ids": ids},
            "group memberships",
        )
        out: dict[int, list[Interval]] = {}
        for user_id, group_id, since, until, organization, version in rows:
            until_ms = None if until is None else _ms(until)
            interval = Interval(group_id, _ms(since), until_ms, bool(organization), version)
            out.setdefault(user_id, []).append(interval)
        return {u: tuple(v) for u, v in out.items()}

    def users(self, user_ids: Iterable[int]) -> dict[int, UserRow]:
        ids = sorted(set(user_ids))
        if not ids:
            return {}
        rows = self._rows(
            "SELECT user_id, username, email, joined_at, is_active, role, group_ids, "
            "organization_id, updated_at, version FROM users FINAL "
            "WHERE user_id IN {ids:Array(UInt64)}",
            {"ids": ids},
            "users",
        )
        out = {}
        for r in rows:
            out[r[0]] = UserRow(
                r[0],
                r[1],
                r[2],
                _ms(r[3]),
                bool(r[4]),
                r[5],
                tuple(r[6]),
                r[7],
                _ms(r[8]),
                r[9],
            )
        return out

    def profiles(self, user_ids: Iterable[int]) -> dict[int, Profile]:
        ids = sorted(set(user_ids))
        users = self.users(ids)
        intervals = self.intervals(ids)
        return {u: Profile(users.get(u), intervals.get(u, ())) for u in ids}

    def written_hours(self, user_ids: Iterable[int]) -> dict[int, dict[int, tuple[int, ...]]]:
        """The users' hours as written so far: user → hour start (epoch ms) → summed figures.
        One query for a whole step's users (a first load brings thousands at once)."""
        ids = sorted(set(user_ids))
        if not ids:
            return {}
        sums = ", ".join(f"sum({f})" for f in FIELDS)
        rows = self._rows(
            f"SELECT user_id, toUnixTimestamp(hour) * 1000, {sums} FROM hourly_user_summary "
            "WHERE user_id IN {ids:Array(UInt64)} GROUP BY user_id, hour ORDER BY user_id, hour",
            {"ids": ids},
            "hours of users",
        )
        out: dict[int, dict[int, tuple[int, ...]]] = {}
        for r in rows:
            if any(r[2:]):
                out.setdefault(int(r[0]), {})[int(r[1])] = tuple(int(v) for v in r[2:])
        return out

    def group_hours(self, user_id: int) -> list[GroupHourRow]:
        """The user's rows in every group, summed per group and hour (non-zero only)."""
        sums = ", ".join(f"sum({f})" for f in FIELDS)
        rows = self._rows(
            f"SELECT group_id, toUnixTimestamp(hour) * 1000, {sums} FROM group_member_hours "
            "WHERE user_id = {user:UInt64} GROUP BY group_id, hour ORDER BY group_id, hour",
            {"user": user_id},
            f"group hours of user {user_id}",
        )
        return [
            GroupHourRow(r[0], user_id, int(r[1]), tuple(int(v) for v in r[2:]))
            for r in rows
            if any(r[2:])
        ]

    def group_by_name(self, name: str) -> GroupRecord | None:
        """The group named `name`, ignoring case (the lowest id if several)."""
        rows = self._rows(
            "SELECT group_id, name, used_for_analytics FROM groups FINAL "
            "WHERE lowerUTF8(name) = lowerUTF8({n:String}) ORDER BY group_id LIMIT 1",
            {"n": name},
            "groups",
        )
        return GroupRecord(int(rows[0][0]), rows[0][1], bool(rows[0][2])) if rows else None
