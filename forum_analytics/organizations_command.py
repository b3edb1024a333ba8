"""`forum-analytics groups from-email-domains`: put every user in their email's organization.

askbot-reference.md §4 (Askbot's `askbot_create_per_email_domain_groups`), with our rules for
names and for who has no organization (streams.organizations: webmail, empty or invalid email).

Decisions:
* The command never writes ClickHouse. Its `users` and `groups` tables are the worker's copy of
  the compacted topics `forum-users` and `forum-groups`; the command reads that copy and
  publishes changes to the topics, and the worker applies them. A user's membership change then
  goes through the same partition, in order with the user's events, exactly once, and the
  topics stay the source of truth a rebuild replays.
* Planning (rows in, records out) is a pure function, `plan_organizations`, separate from the
  reading and publishing around it, so the rules can be tested without a broker or database.
* A group is looked up by name ignoring case, the lowest id winning, as the worker's own
  assignment does (streams.profiles.ClickHouseProfiles.group_by_name), so both agree on an
  organization's group. An existing group (even one made by hand) is reused and switched to
  `used_for_analytics`, as in Askbot; a missing one gets `organization_group_id(name)`, a hash,
  so re-running after a half-published run, or the worker meeting the same organization,
  gives the same id.
* Only users whose stored `organization_id` differs are republished, so a second run publishes
  nothing. A republished record is the stored profile with the new `organization_id`; the
  stored `group_ids` carry no `since`, which the worker reads as "keep the open intervals as
  they are" (streams.memberships.change_memberships), and it opens the organization's
  interval at the user's registration (sticky).
* Limits, accepted: the command sees users the worker has applied so far (run it again later
  for newer ones), and a profile the forum changes between the read and the publish is
  overwritten by the stored one until the forum sends the user again.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from clickhouse.client import connect
from forum_analytics.settings import Settings
from forum_analytics.user_import import ImportFile, UserImportError, open_producer, send_records
from streams.events import GroupRecord, Role, UserRecord
from streams.organizations import organization_group_id, organization_name
from streams.producer import SyncEventProducer

__all__ = [
    "OrganizationPlan",
    "OrganizationsError",
    "StoredUser",
    "open_publisher",
    "plan_organizations",
    "read_groups",
    "read_users",
    "send_plan",
]

_USERS_SQL = (
    "SELECT user_id, username, email, joined_at, is_active, role, group_ids, organization_id "
    "FROM users FINAL ORDER BY user_id"
)
_GROUPS_SQL = "SELECT group_id, name, used_for_analytics FROM groups FINAL ORDER BY group_id"


class OrganizationsError(Exception):
    """The command cannot go on (ClickHouse or Kafka unreachable or refusing); the message is
    one line meant for the operator, without a stack trace."""


class StoredUser(NamedTuple):
    """A row of `users FINAL`: the profile the worker last applied."""

    user_id: int
    username: str
    email: str
    joined_at: datetime
    is_active: bool
    role: Role
    group_ids: tuple[int, ...]
    organization_id: int | None


@dataclass(frozen=True)
class OrganizationPlan:
    """What a run publishes (groups first, then users) and the figures of its summary."""

    groups: tuple[GroupRecord, ...]
    """Groups created or switched to `used_for_analytics`."""
    users: tuple[UserRecord, ...]
    """Users whose organization changes."""
    new: int
    reused: int
    skipped: int

    @property
    def organizations(self) -> int:
        return self.new + self.reused

    @property
    def total(self) -> int:
        """Records to publish."""
        return len(self.groups) + len(self.users)

    def summary(self) -> str:
        """The line printed after a run."""
        return (
            f"{self.organizations} organizations ({self.new} new, {self.reused} reused), "
            f"{len(self.users)} users assigned, {self.skipped} skipped (webmail or no domain)"
        )


# -- planning (pure) ---------------------------------------------------------------------------


def plan_organizations(
    users: Iterable[StoredUser], groups: Iterable[GroupRecord], now: datetime
) -> OrganizationPlan:
    """The groups and users to publish so that every user with an organization is in its group.

    `now` becomes the republished records' `updated_at`. Users are taken in id order, so the
    spelling of a new group's name does not depend on the order rows arrive in.
    """
    existing = _groups_by_name(groups)
    resolved: dict[str, GroupRecord] = {}
    new = 0
    skipped = 0
    to_publish: list[GroupRecord] = []
    to_assign: list[UserRecord] = []
    for user in sorted(users, key=lambda u: u.user_id):
        name = organization_name(user.email)
        if name is None:
            skipped += 1
            continue
        key = name.lower()
        if key not in resolved:
            group, changed = _organization_group(existing.get(key), name)
            resolved[key] = group
            new += key not in existing
            if changed:
                to_publish.append(group)
        group_id = resolved[key].group_id
        if user.organization_id != group_id:
            to_assign.append(_assigned(user, group_id, now))
    return OrganizationPlan(
        groups=tuple(to_publish),
        users=tuple(to_assign),
        new=new,
        reused=len(resolved) - new,
        skipped=skipped,
    )


def _groups_by_name(groups: Iterable[GroupRecord]) -> dict[str, GroupRecord]:
    """Lower-cased name → the group with the lowest id of that name (as the worker looks up)."""
    out: dict[str, GroupRecord] = {}
    for group in sorted(groups, key=lambda g: g.group_id, reverse=True):
        out[group.name.lower()] = group
    return out


def _organization_group(found: GroupRecord | None, name: str) -> tuple[GroupRecord, bool]:
    """The organization's group and whether it must be published (new, or switched on)."""
    if found is None:
        return GroupRecord(organization_group_id(name), name, True), True
    if not found.used_for_analytics:
        return found._replace(used_for_analytics=True), True
    return found, False


def _assigned(user: StoredUser, group_id: int, now: datetime) -> UserRecord:
    """The user's stored profile with the organization; plain group ids (no `since`)."""
    return UserRecord(
        user_id=user.user_id,
        username=user.username,
        email=user.email,
        joined_at=user.joined_at,
        is_active=user.is_active,
        role=user.role,
        group_ids=user.group_ids,
        organization_id=group_id,
        updated_at=now,
    )


# -- reading ClickHouse ------------------------------------------------------------------------


def read_users(settings: Settings) -> list[StoredUser]:
    """Every user the worker has applied, from `users FINAL`."""
    return [_stored_user(row) for row in _query(settings, _USERS_SQL)]


def read_groups(settings: Settings) -> list[GroupRecord]:
    """Every group the worker has applied, from `groups FINAL`."""
    return [
        GroupRecord(int(gid), str(name), bool(used))
        for gid, name, used in _query(settings, _GROUPS_SQL)
    ]


def _stored_user(row: Sequence[Any]) -> StoredUser:
    user_id, username, email, joined_at, is_active, role, group_ids, organization_id = row
    try:
        parsed_role = Role(role)
    except ValueError:
        raise OrganizationsError(
            f"user {user_id} has an unknown role {role!r} in ClickHouse"
        ) from None
    return StoredUser(
        int(user_id),
        str(username),
        str(email),
        _aware(joined_at),
        bool(is_active),
        parsed_role,
        tuple(int(g) for g in group_ids),
        None if organization_id is None else int(organization_id),
    )


def _aware(value: datetime) -> datetime:
    """The column is UTC; the driver may hand back a naive datetime."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _query(settings: Settings, sql: str) -> list[Sequence[Any]]:
    with _clickhouse_errors(settings):
        client = connect(settings.clickhouse_url)
        try:
            return list(client.query(sql).result_rows)
        finally:
            client.close()


@contextmanager
def _clickhouse_errors(settings: Settings) -> Iterator[None]:
    """Turn ClickHouse failures into one `OrganizationsError` line naming the setting (and
    never the URL itself, which holds the password)."""
    from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

    parts = urlsplit(settings.clickhouse_url)
    where = f"ClickHouse at {parts.hostname}:{parts.port} (ANALYTICS_CLICKHOUSE_URL)"
    quiet = logging.getLogger("clickhouse_connect")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # it logs each failed attempt; we say it once
    try:
        yield
    except OperationalError as exc:  # before ClickHouseError, its base class
        errno = re.search(r"\[Errno -?\d+\] [^\"')]+", str(exc))
        reason = errno.group(0) if errno else _first_line(exc)
        raise OrganizationsError(f"cannot reach {where}: {reason}") from None
    except ClickHouseError as exc:
        hint = _missing_table_hint(str(exc))
        raise OrganizationsError(f"{where} refused: {_first_line(exc)}{hint}") from None
    finally:
        quiet.setLevel(level)


def _missing_table_hint(text: str) -> str:
    if "UNKNOWN_TABLE" in text or "UNKNOWN_DATABASE" in text:
        return " (run `forum-analytics migrate` and start the worker first)"
    return ""


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else repr(exc)


# -- publishing --------------------------------------------------------------------------------


@contextmanager
def open_publisher(settings: Settings) -> Iterator[SyncEventProducer]:
    """`users import`'s producer (topics created first; on leaving, every record acknowledged),
    with its Kafka failures as `OrganizationsError`. Separate from sending so that the CLI
    shows its progress bar only once Kafka answered."""
    try:
        with open_producer(settings) as producer:
            yield producer
    except UserImportError as exc:
        raise OrganizationsError(str(exc)) from None


def send_plan(
    producer: SyncEventProducer,
    plan: OrganizationPlan,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Queue the plan's groups, then its users (a reader meeting a user's organization then
    already has its group); `progress(n)` as records are handed to the producer."""
    records = ImportFile(users=list(plan.users), groups=list(plan.groups))
    send_records(producer, records, progress)
