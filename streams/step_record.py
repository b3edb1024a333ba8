"""The step record: one Kafka record that makes a partition's step durable before ClickHouse.

Writing a step touches several ClickHouse tables and many user entries, and a crash can stop it
anywhere. The worker therefore first writes one record per step, under the partition's own key
in the state table's changelog, holding what the step read (its events and marks) and what it
must write (the hour and session rows), and waits until Kafka has it. Only then does it insert
the rows (each table's insert named `<table>:<topic>:<partition>:<seq>`, so a repeat is dropped
by ClickHouse), write the changed user entries to the changelog, and acknowledge the messages.

After a crash the last record is all that is needed: its rows are inserted again (a no-op where
they landed), its events are applied again to the entries that do not have them yet (each
entry's `last_applied` tells), and messages up to its end offset are skipped. No step depends on
how Kafka happens to batch the messages it redelivers.

A record is orjson, compressed with zlib (level 1); a step is capped in events so that it stays
far below Kafka's default 1 MB record limit.
"""

from __future__ import annotations

import zlib
from typing import Any, Final, NamedTuple

import orjson

from streams.dimension_rows import MemberRow, Purge, UserRow
from streams.events import Event, EventType, GroupRecord
from streams.memberships import GroupHourRow, Interval
from streams.partition_processor import HourRow, PartitionMark, Positioned, SessionRow, Step
from streams.sessionizer import Session

__all__ = ["StepRecord", "partition_key"]

_VERSION: Final = 2
_READABLE: Final = (1, 2)  # 1: before group figures (no dimension rows)


def partition_key(partition: int) -> bytes:
    """The table key of a partition's step record; user keys are decimal ids, so no clash."""
    return f"~partition:{partition}".encode()


class StepRecord(NamedTuple):
    """A step as stored: enough to replay it and to write its rows again."""

    partition: int
    before: PartitionMark
    mark: PartitionMark
    events: list[Positioned]
    hours: list[HourRow]
    sessions: list[SessionRow]
    groups: list[GroupHourRow] = []
    """Group rows: the hours fanned out to the members' groups, and membership corrections."""
    users: list[UserRow] = []
    members: list[MemberRow] = []
    purges: list[Purge] = []
    new_groups: list[GroupRecord] = []
    """Organizations the step made; published to `forum-groups` before the rows are written."""

    @classmethod
    def of(cls, step: Step, groups: list[GroupHourRow] | None = None) -> StepRecord:
        return cls(
            step.partition,
            step.before,
            step.mark,
            step.events,
            step.hours,
            step.sessions,
            groups or [],
        )

    def to_bytes(self) -> bytes:
        body = {
            "v": _VERSION,
            "p": self.partition,
            "before": list(self.before),
            "mark": list(self.mark),
            "events": [_event_out(item) for item in self.events],
            "hours": [[r.user_id, r.hour_ms, list(r.values)] for r in self.hours],
            "sessions": [[*r.session, r.sign] for r in self.sessions],
            "groups": [_group_out(r) for r in self.groups],
            "users": [list(r) for r in self.users],
            "members": [_member_out(r) for r in self.members],
            "purges": [_purge_out(p) for p in self.purges],
            "new_groups": [list(g) for g in self.new_groups],
        }
        return zlib.compress(orjson.dumps(body), 1)

    @classmethod
    def from_bytes(cls, data: bytes) -> StepRecord:
        """Restore a record; `ValueError` for a damaged one or another format version."""
        try:
            body = orjson.loads(zlib.decompress(data))
        except (zlib.error, orjson.JSONDecodeError) as exc:
            raise ValueError(f"unreadable step record: {exc}") from exc
        if body.get("v") not in _READABLE:
            raise ValueError(f"step record format {body.get('v')}; this code reads {_READABLE}")
        return cls(
            body["p"],
            PartitionMark(*body["before"]),
            PartitionMark(*body["mark"]),
            [_event_in(row) for row in body["events"]],
            [HourRow(u, h, tuple(v)) for u, h, v in body["hours"]],
            [SessionRow(Session(*row[:-1]), row[-1]) for row in body["sessions"]],
            [_group_in(row) for row in body.get("groups", [])],
            [_user_in(row) for row in body.get("users", [])],
            [_member_in(row) for row in body.get("members", [])],
            [_purge_in(row) for row in body.get("purges", [])],
            [GroupRecord(*row) for row in body.get("new_groups", [])],
        )


def _group_out(row: GroupHourRow) -> list[Any]:
    return [row.group_id, row.user_id, row.hour_ms, list(row.values)]


def _group_in(row: list[Any]) -> GroupHourRow:
    return GroupHourRow(row[0], row[1], row[2], tuple(row[3]))


def _user_in(row: list[Any]) -> UserRow:
    values = list(row)
    values[6] = tuple(values[6])
    return UserRow(*values)


def _member_out(row: MemberRow) -> list[Any]:
    i = row.interval
    return [row.user_id, i.group_id, i.since_ms, i.until_ms, i.organization, i.version, row.deleted]


def _member_in(row: list[Any]) -> MemberRow:
    user_id, group_id, since, until, organization, version, deleted = row
    return MemberRow(user_id, Interval(group_id, since, until, organization, version), deleted)


def _purge_out(purge: Purge) -> list[Any]:
    return [
        purge.user_id,
        purge.anonymous_id,
        purge.offset,
        purge.purged_ms,
        [_group_out(r) for r in purge.moved],
        [_member_out(r) for r in purge.members],
    ]


def _purge_in(row: list[Any]) -> Purge:
    user_id, anonymous, offset, purged, moved, members = row
    return Purge(
        user_id,
        anonymous,
        offset,
        purged,
        tuple(_group_in(r) for r in moved),
        tuple(_member_in(r) for r in members),
    )


def _event_out(item: Positioned) -> list[Any]:
    """What replaying needs of an event: its position and the fields sessions and hours use."""
    e = item.event
    return [
        item.offset,
        item.element,
        item.received_at_ms,
        e.id,
        str(e.type),
        e.ts_ms,
        e.user_id,
        e.ip,
        e.user_agent,
    ]


def _event_in(row: list[Any]) -> Positioned:
    offset, element, received, event_id, kind, ts, user, ip, agent = row
    return Positioned(
        Event(event_id, EventType(kind), ts, user, ip, agent), offset, element, received
    )
