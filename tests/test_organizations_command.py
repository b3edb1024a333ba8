"""`groups from-email-domains`: the plan (askbot-reference.md §4 examples), reading ClickHouse,
the errors, and the command end to end through the real broker, ClickHouse and worker."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from clickhouse.client import connect
from clickhouse.migrate import migrate
from forum_analytics.organizations_command import (
    OrganizationPlan,
    OrganizationsError,
    StoredUser,
    plan_organizations,
    read_groups,
    read_users,
)
from forum_analytics.ports import free_port
from forum_analytics.processes import stop
from forum_analytics.settings import load_settings
from streams.broker import EmbeddedBroker
from streams.events import GroupRecord, Role, UserRecord
from streams.organizations import organization_group_id
from streams.producer import SyncEventProducer
from tests.helpers import wait_until
from tests.pipeline import Pipeline, start_pipeline

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
EXAMPLE = GroupRecord(5, "example", False)  # made by hand, lower case, not for analytics
STAFF = GroupRecord(9, "Staff", True)


def _user(user_id: int, email: str, **fields: Any) -> StoredUser:
    row = StoredUser(
        user_id=user_id,
        username=f"u{user_id}",
        email=email,
        joined_at=datetime(2024, 5, 1, tzinfo=UTC) + timedelta(days=user_id),
        is_active=True,
        role=Role.USER,
        group_ids=(),
        organization_id=None,
    )
    return row._replace(**fields)


USERS = [
    _user(1, "ann@Sub.Example.co.uk", group_ids=(STAFF.group_id,), role=Role.ADMIN),
    _user(2, "bob@example.com", is_active=False),
    _user(3, "cy@EXAMPLE.COM"),
    _user(4, "dee@foo.bar.baz.io"),
    _user(5, "eve@my-company.org"),
    _user(6, "fay@gmail.com"),
    _user(7, ""),
]


Tables = tuple[list[StoredUser], list[GroupRecord]]


def _apply(users: list[StoredUser], groups: list[GroupRecord], plan: OrganizationPlan) -> Tables:
    """What the worker's tables hold once it has applied the plan."""
    assigned = {u.user_id: u.organization_id for u in plan.users}
    new_users = [
        u._replace(organization_id=assigned.get(u.user_id, u.organization_id)) for u in users
    ]
    by_id = {g.group_id: g for g in groups} | {g.group_id: g for g in plan.groups}
    return new_users, list(by_id.values())


# -- the plan ----------------------------------------------------------------------------------


def test_askbot_examples_become_three_organizations() -> None:
    plan = plan_organizations(USERS, [EXAMPLE, STAFF], NOW)

    baz, company = organization_group_id("Baz"), organization_group_id("My-Company")
    # Groups come first; the existing lower-case "example" is reused and switched on.
    assert plan.groups == (
        GroupRecord(5, "example", True),
        GroupRecord(baz, "Baz", True),
        GroupRecord(company, "My-Company", True),
    )
    assert {u.user_id: u.organization_id for u in plan.users} == {
        1: 5,
        2: 5,
        3: 5,
        4: baz,
        5: company,
    }
    assert (plan.organizations, plan.new, plan.reused, plan.skipped) == (3, 2, 1, 2)
    assert plan.summary() == (
        "3 organizations (2 new, 1 reused), 5 users assigned, 2 skipped (webmail or no domain)"
    )


def test_a_republished_user_is_the_stored_profile_with_its_organization() -> None:
    plan = plan_organizations(USERS[:2], [EXAMPLE, STAFF], NOW)
    ann, bob = plan.users
    assert ann == UserRecord(
        1, "u1", "ann@Sub.Example.co.uk", USERS[0].joined_at, True, Role.ADMIN,
        group_ids=(9,), group_since=(), organization_id=5, updated_at=NOW,
    )  # fmt: skip
    assert (bob.is_active, bob.role, bob.group_ids) == (False, Role.USER, ())
    # What goes on the wire parses back to the same record.
    assert UserRecord.from_json(ann.to_json()) == ann


def test_the_lowest_id_wins_among_groups_named_alike() -> None:
    groups = [GroupRecord(12, "EXAMPLE", True), GroupRecord(8, "Example", True)]
    plan = plan_organizations([_user(1, "a@example.com")], groups, NOW)
    assert plan.groups == ()
    assert [u.organization_id for u in plan.users] == [8]
    assert (plan.new, plan.reused) == (0, 1)


def test_replanning_after_the_plan_is_applied_changes_nothing() -> None:
    groups = [EXAMPLE, STAFF]
    first = plan_organizations(USERS, groups, NOW)
    users, groups = _apply(USERS, groups, first)

    again = plan_organizations(users, groups, NOW + timedelta(hours=1))

    assert (again.groups, again.users) == ((), ())
    assert again.summary() == (
        "3 organizations (0 new, 3 reused), 0 users assigned, 2 skipped (webmail or no domain)"
    )


def test_a_user_in_another_organization_is_moved_and_nobody_is_a_no_op() -> None:
    moved = plan_organizations([_user(1, "a@example.com", organization_id=77)], [EXAMPLE], NOW)
    assert [u.organization_id for u in moved.users] == [5]
    empty = plan_organizations([], [], NOW)
    assert (empty.total, empty.summary()) == (
        0,
        "0 organizations (0 new, 0 reused), 0 users assigned, 0 skipped (webmail or no domain)",
    )


# -- reading ClickHouse and errors ---------------------------------------------------------------


@pytest.fixture
def database(clickhouse_server: Any) -> Iterator[str]:
    """A migrated database's URL, dropped afterwards."""
    name = f"orgs_{uuid.uuid4().hex[:8]}"
    url = f"http://default:@127.0.0.1:{clickhouse_server.port}/{name}"
    migrate(url, name)
    yield url
    connect(url, database="").command(f"DROP DATABASE IF EXISTS `{name}` SYNC")


def _insert_user(url: str, user: StoredUser, version: int) -> None:
    connect(url).insert(
        "users",
        [[user.user_id, user.username, user.email, user.joined_at, user.is_active,
          user.role.value, list(user.group_ids), user.organization_id, NOW, version]],
        column_names=["user_id", "username", "email", "joined_at", "is_active", "role",
                      "group_ids", "organization_id", "updated_at", "version"],
    )  # fmt: skip


def test_read_users_and_groups_give_the_latest_versions(database: str) -> None:
    _insert_user(database, USERS[0], 1)
    _insert_user(database, USERS[0]._replace(email="ann@example.org", organization_id=5), 2)
    _insert_user(database, USERS[1], 1)
    connect(database).insert(
        "groups",
        [[5, "example", False, NOW, 1], [5, "example", True, NOW, 2], [9, "Staff", True, NOW, 1]],
        column_names=["group_id", "name", "used_for_analytics", "updated_at", "version"],
    )
    settings = load_settings(clickhouse_url=database)

    users = read_users(settings)
    assert users == [USERS[0]._replace(email="ann@example.org", organization_id=5), USERS[1]]
    assert users[0].joined_at.tzinfo is not None
    assert read_groups(settings) == [GroupRecord(5, "example", True), STAFF]


def test_a_database_without_the_tables_says_to_migrate(clickhouse_server: Any) -> None:
    url = f"http://default:@127.0.0.1:{clickhouse_server.port}/default"
    with pytest.raises(OrganizationsError, match=r"ANALYTICS_CLICKHOUSE_URL.*migrate"):
        read_users(load_settings(clickhouse_url=url))


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "forum_analytics", "groups", "from-email-domains", *args],
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _assert_one_clean_line(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert done.returncode == 1 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("groups from-email-domains: ")
    assert "Traceback" not in done.stderr
    for needle in needles:
        assert needle in done.stderr


def test_command_reports_clickhouse_unreachable_without_the_password() -> None:
    port = free_port()
    url = f"http://default:s3cret@127.0.0.1:{port}/forum_analytics"
    done = _cli({"ANALYTICS_CLICKHOUSE_URL": url})
    _assert_one_clean_line(
        done, f"cannot reach ClickHouse at 127.0.0.1:{port} (ANALYTICS_CLICKHOUSE_URL)"
    )
    assert "s3cret" not in done.stderr


def test_command_reports_kafka_unreachable(database: str) -> None:
    _insert_user(database, USERS[1], 1)
    bootstrap = f"127.0.0.1:{free_port()}"
    env = {"ANALYTICS_CLICKHOUSE_URL": database, "ANALYTICS_KAFKA_BOOTSTRAP": bootstrap}
    done = _cli(env, "--silent")
    _assert_one_clean_line(done, f"cannot reach Kafka at {bootstrap} (ANALYTICS_KAFKA_BOOTSTRAP)")


# -- end to end: the worker applies what the command publishes -----------------------------------


@pytest.fixture
def pipe(
    kafka_broker: EmbeddedBroker, clickhouse_server: Any, tmp_path: Path
) -> Iterator[Pipeline]:
    pipeline = start_pipeline(kafka_broker, clickhouse_server.port, tmp_path)
    yield pipeline
    assert stop(pipeline.worker, timeout=20) == 0, pipeline.log()[-3000:]


def _publish(pipe: Pipeline, groups: list[GroupRecord], users: list[UserRecord]) -> None:
    producer = SyncEventProducer(
        pipe.bootstrap,
        users_topic=pipe.env["ANALYTICS_TOPIC_USERS"],
        groups_topic=pipe.env["ANALYTICS_TOPIC_GROUPS"],
    )
    try:
        for group in groups:
            producer.upsert_group(group)
        for user in users:
            producer.upsert_user(user)
        producer.flush()
    finally:
        producer.close()


def _rows(pipe: Pipeline, sql: str) -> list[tuple[Any, ...]]:
    """The rows, with the driver's naive datetimes (the columns are UTC) made aware."""
    rows = connect(pipe.db_url).query(sql).result_rows
    return [tuple(_utc(value) for value in row) for row in rows]


def _utc(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _wait_rows(pipe: Pipeline, sql: str, expected: list[tuple[Any, ...]], what: str) -> None:
    try:
        wait_until(lambda: _rows(pipe, sql) == expected, timeout=60, what=what)
    except AssertionError:
        raise AssertionError(
            f"{what}: {_rows(pipe, sql)} != {expected}\nworker log:\n{pipe.log()[-4000:]}"
        ) from None


_ORG_MEMBERS = (
    "SELECT group_id, user_id, since FROM group_members FINAL "
    "WHERE organization AND until IS NULL ORDER BY user_id"
)
_VERSIONS = "SELECT user_id, organization_id, version FROM users FINAL ORDER BY user_id"


@pytest.mark.slow
def test_command_end_to_end_and_idempotent(pipe: Pipeline) -> None:
    staff_since = datetime(2024, 6, 1, tzinfo=UTC)
    records = [
        UserRecord(u.user_id, u.username, u.email, u.joined_at, u.is_active, u.role, u.group_ids,
                   tuple((g, staff_since) for g in u.group_ids))
        for u in USERS
    ]  # fmt: skip
    _publish(pipe, [EXAMPLE, STAFF], records)
    _wait_rows(pipe, "SELECT count() FROM users FINAL", [(len(USERS),)], "users applied")
    _wait_rows(pipe, "SELECT count() FROM groups FINAL", [(2,)], "groups applied")

    done = _cli(pipe.env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "3 organizations (2 new, 1 reused), 5 users assigned, 2 skipped (webmail or no domain)\n"
    )

    baz, company = organization_group_id("Baz"), organization_group_id("My-Company")
    _wait_rows(
        pipe,
        "SELECT group_id, name, used_for_analytics FROM groups FINAL ORDER BY group_id",
        [(5, "example", True), (9, "Staff", True), (baz, "Baz", True),
         (company, "My-Company", True)],
        "organization groups",
    )  # fmt: skip
    expected = [
        (g, u.user_id, u.joined_at) for g, u in zip([5, 5, 5, baz, company], USERS, strict=False)
    ]
    _wait_rows(pipe, _ORG_MEMBERS, expected, "organization memberships since registration")
    # Ann's own group kept the since the forum gave, though the command's record has none.
    staff = "SELECT user_id, since, until FROM group_members FINAL WHERE group_id = 9"
    assert _rows(pipe, staff) == [(1, staff_since, None)]
    versions = _rows(pipe, _VERSIONS)
    assert [row[1] for row in versions] == [5, 5, 5, baz, company, None, None]

    again = _cli(pipe.env)
    assert again.returncode == 0, again.stderr
    assert again.stdout == (
        "3 organizations (0 new, 3 reused), 0 users assigned, 2 skipped (webmail or no domain)\n"
    )
    silent = _cli(pipe.env, "--silent")
    assert (silent.returncode, silent.stdout, silent.stderr) == (0, "", "")
    assert _rows(pipe, _VERSIONS) == versions
