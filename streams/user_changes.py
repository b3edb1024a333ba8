"""What a batch of `forum-users` records changes: profiles, memberships, group figures, purges.

The worker applies a partition's user records in the same sequence of steps as its events
(streams.steps), so a membership change and the user's hours are never computed against each
other's half-written state. For each record, in offset order:

* a profile: the new `users` row version, and the membership intervals it implies
  (streams.memberships); where the coverage of a written hour changes, the hour is added to or
  removed from the groups (`corrections`), read from what was written before;
* a null value: the user's personal data is purged. Their hours stay in the group figures as
  an anonymous member (a random id, no mapping kept), so group totals do not change; the rest
  (events, sessions, per-user summaries, profile, membership rows) is deleted by the worker.

The step's result is what the worker records and writes; see streams.steps.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol
from zoneinfo import ZoneInfo

from streams.dimension_rows import ANONYMOUS_BASE, MemberRow, Purge, UserRow
from streams.events import GroupRecord, UserRecord, datetime_to_ms
from streams.memberships import (
    GroupHourRow,
    Interval,
    change_memberships,
    corrections,
    fan_out,
)
from streams.organizations import organization_group_id, organization_name
from streams.partition_processor import HourRow
from streams.profiles import Profile

__all__ = ["ProfileReader", "UserChanges", "UserMessage", "apply_user_messages"]


class UserMessage(NamedTuple):
    """A `forum-users` message: its offset, the user (its key) and the record (None: purge)."""

    offset: int
    user_id: int
    record: UserRecord | None
    timestamp_ms: int


class ProfileReader(Protocol):
    """The stored side of users (streams.profiles.ClickHouseProfiles)."""

    def profiles(self, user_ids: Sequence[int]) -> dict[int, Profile]: ...

    def written_hours(self, user_ids: Sequence[int]) -> dict[int, dict[int, tuple[int, ...]]]: ...

    def group_hours(self, user_id: int) -> list[GroupHourRow]: ...

    def group_by_name(self, name: str) -> GroupRecord | None: ...


@dataclass
class UserChanges:
    """A batch's outcome; `purged` users must also leave the worker's state."""

    users: list[UserRow] = field(default_factory=list)
    members: list[MemberRow] = field(default_factory=list)
    groups: list[GroupHourRow] = field(default_factory=list)
    purges: list[Purge] = field(default_factory=list)
    new_groups: list[GroupRecord] = field(default_factory=list)
    intervals: dict[int, tuple[Interval, ...]] = field(default_factory=dict)
    """Each user's intervals after the batch (empty for users purged)."""


@dataclass
class _Batch:
    reader: ProfileReader
    zone: ZoneInfo
    auto_organizations: bool
    pending: Callable[[int], Mapping[int, tuple[int, ...]]]
    rng: random.Random
    profiles: dict[int, Profile]
    out: UserChanges = field(default_factory=UserChanges)
    written: dict[int, dict[int, tuple[int, ...]]] | None = None
    organizations: dict[str, int] = field(default_factory=dict)


def apply_user_messages(
    messages: Sequence[UserMessage],
    reader: ProfileReader,
    zone: ZoneInfo,
    *,
    auto_organizations: bool,
    pending: Callable[[int], Mapping[int, tuple[int, ...]]],
    rng: random.Random | None = None,
) -> UserChanges:
    """Apply the records in order; `pending(user)` gives the user's hours the worker holds
    but has not written yet (a purge hands them to the anonymous member)."""
    batch = _Batch(
        reader,
        zone,
        auto_organizations,
        pending,
        rng or random.SystemRandom(),
        reader.profiles(sorted({m.user_id for m in messages})),
    )
    for message in messages:
        if message.record is None:
            _purge(batch, message)
        else:
            _update(batch, message, message.record)
    batch.out.intervals = {u: p.intervals for u, p in batch.profiles.items()}
    return batch.out


def _update(batch: _Batch, message: UserMessage, record: UserRecord) -> None:
    profile = batch.profiles[message.user_id]
    change_ms = datetime_to_ms(record.updated_at) if record.updated_at else message.timestamp_ms
    joined_ms = datetime_to_ms(record.joined_at)
    organization = record.organization_id
    has_organization = any(i.is_open and i.organization for i in profile.intervals)
    if organization is None and batch.auto_organizations and not has_organization:
        organization = _organization_of(batch, record.email)
    since = {g: datetime_to_ms(t) for g, t in record.group_since}
    wanted = {g: since.get(g) for g in record.group_ids}
    change = change_memberships(profile.intervals, wanted, organization, joined_ms, change_ms)
    out = batch.out
    user_id = message.user_id
    out.members.extend(MemberRow(user_id, i) for i in change.written)
    out.members.extend(MemberRow(user_id, i, deleted=True) for i in change.deleted)
    if change.written or change.deleted:
        if batch.written is None:  # read once per step, for all its users
            batch.written = batch.reader.written_hours(sorted(batch.profiles))
        written = batch.written.get(user_id, {})
        out.groups.extend(
            corrections(user_id, profile.intervals, change.intervals, written, batch.zone)
        )
    open_org = next((i.group_id for i in change.intervals if i.is_open and i.organization), None)
    previous = profile.user.version if profile.user else 0
    row = UserRow(
        user_id,
        record.username,
        record.email,
        joined_ms,
        record.is_active,
        record.role.value,
        record.group_ids,
        organization if organization is not None else open_org,
        change_ms,
        max(previous + 1, change_ms),
    )
    out.users.append(row)
    batch.profiles[user_id] = Profile(row, change.intervals)


def _organization_of(batch: _Batch, email: str) -> int | None:
    """The group of the email's organization: a group of that name (ignoring case) switched
    to `used_for_analytics` if it was not, or a new one; what changes is published."""
    name = organization_name(email)
    if name is None:
        return None
    key = name.lower()
    if key not in batch.organizations:
        found = batch.reader.group_by_name(name)
        if found is None:  # a new organization
            found = GroupRecord(organization_group_id(name), name, True)
            batch.out.new_groups.append(found)
        elif not found.used_for_analytics:  # an existing group becomes an organization
            batch.out.new_groups.append(found._replace(used_for_analytics=True))
        batch.organizations[key] = found.group_id
    return batch.organizations[key]


def _purge(batch: _Batch, message: UserMessage) -> None:
    user_id = message.user_id
    profile = batch.profiles[user_id]
    anonymous = ANONYMOUS_BASE + batch.rng.getrandbits(62)
    moved = [r._replace(user_id=anonymous) for r in batch.reader.group_hours(user_id)]
    # Hours already moved by an earlier purge in this batch are not in ClickHouse yet.
    moved.extend(_moved_earlier(batch, user_id, anonymous))
    pending = [HourRow(anonymous, h, v) for h, v in sorted(batch.pending(user_id).items())]
    moved.extend(fan_out(pending, {anonymous: profile.intervals}, batch.zone))
    members = tuple(MemberRow(anonymous, i) for i in profile.intervals)
    batch.out.purges.append(
        Purge(user_id, anonymous, message.offset, message.timestamp_ms, tuple(moved), members)
    )
    batch.out.users = [u for u in batch.out.users if u.user_id != user_id]
    batch.out.members = [m for m in batch.out.members if m.user_id != user_id]
    batch.out.groups = [g for g in batch.out.groups if g.user_id != user_id]
    batch.profiles[user_id] = Profile(None, ())


def _moved_earlier(batch: _Batch, user_id: int, anonymous: int) -> list[GroupHourRow]:
    """The user's group corrections made earlier in this batch, under the anonymous id."""
    return [g._replace(user_id=anonymous) for g in batch.out.groups if g.user_id == user_id]
