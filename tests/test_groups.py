"""Groups, memberships, segments and purges through the real broker, worker and ClickHouse.

One forum, hand-made so every figure can be worked out here: five users, three groups, events
on one day, then membership changes that reach back before the activity (a user leaving a
group at 12:30, another joining with a `since` at the start of the day), late events and
duplicates, and finally a purge. Group rows are checked against the per-user hourly rows (which
`verify` checks against the raw events) times the membership intervals written out below.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from clickhouse.client import connect
from clickhouse.segment_figures import segment_figures
from clickhouse.verify import verify
from clickhouse.verify_segments import verify_segments
from forum_analytics.processes import stop
from forum_analytics.segments import Segment, Segments
from forum_analytics.settings import load_settings
from streams.broker import EmbeddedBroker
from streams.events import Event, EventType, GroupRecord, Role, UserRecord
from streams.organizations import organization_group_id
from streams.partitioning import partition_for_user
from streams.steps import PURGED_TABLES
from tests.helpers import wait_until
from tests.pipeline import PARTITIONS, Pipeline, start_pipeline

H = 3600
DAY0 = datetime.combine(date.today() - timedelta(days=3), datetime.min.time(), UTC)
REGISTERED = DAY0 - timedelta(days=10)
ACME, STAFF, HIDDEN = 1, 2, 3


def _user_on(partition: int, start: int) -> int:
    return next(
        u for u in range(start, start + 100) if partition_for_user(u, PARTITIONS) == partition
    )


def _users() -> dict[str, int]:
    """Five users spread over the partitions."""
    names = ("ann", "bob", "cat", "dan", "eve")
    return {
        n: _user_on(p, 1000 + 100 * i)
        for i, (n, p) in enumerate(zip(names, (0, 1, 2, 0, 1), strict=True))
    }


U = _users()


def _record(name: str, groups: tuple[int, ...], **more: Any) -> UserRecord:
    return UserRecord(
        U[name], name, f"{name}@example.org", REGISTERED, True, Role.USER, groups, **more
    )


def _at(hour: float) -> int:
    return int((DAY0 + timedelta(hours=hour)).timestamp() * 1000)


def _events(
    name: str, hours: list[float], kind: EventType = EventType.QUESTION_VIEWED
) -> list[Event]:
    return [Event(uuid.uuid4().hex, kind, _at(h), U[name]) for h in hours]


#: The memberships the records below imply: user → group → [since, until) in hours of DAY0
#: (None: open; -240: the registration, ten days before).
FINAL_INTERVALS: dict[str, dict[int, tuple[float, float | None]]] = {
    "ann": {ACME: (-240, None)},
    "bob": {ACME: (-240, 12.5), STAFF: (-240, None)},
    "cat": {},
    "dan": {STAFF: (0, None)},
    "eve": {HIDDEN: (-240, None)},
}


@pytest.fixture(scope="module")
def pipe(
    kafka_broker: EmbeddedBroker, clickhouse_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    pipeline = start_pipeline(
        kafka_broker,
        clickhouse_server.port,
        tmp_path_factory.mktemp("groups"),
        ANALYTICS_GRACE_MINUTES="1",
    )
    yield pipeline
    assert stop(pipeline.worker, timeout=20) == 0, pipeline.log()[-3000:]


def _group_rows(pipe: Pipeline) -> dict[tuple[int, int, int], int]:
    rows = connect(pipe.db_url).query(
        "SELECT group_id, toUnixTimestamp(hour), user_id, sum(num_events) FROM "
        "group_member_hours GROUP BY group_id, hour, user_id HAVING sum(num_events) != 0"
    )
    return {(g, h, u): n for g, h, u, n in rows.result_rows}


def _expected_group_rows(pipe: Pipeline) -> dict[tuple[int, int, int], int]:
    """Each user's hours (as written; verify checks them) for each group covering the hour."""
    hours = connect(pipe.db_url).query(
        "SELECT user_id, toUnixTimestamp(hour), sum(num_events) FROM hourly_user_summary "
        "GROUP BY user_id, hour HAVING sum(num_events) != 0"
    )
    names = {u: n for n, u in U.items()}
    day0 = int(DAY0.timestamp())
    out = {}
    for user, hour, n in hours.result_rows:
        if user not in names:
            continue
        for group, (since, until) in FINAL_INTERVALS[names[user]].items():
            if day0 + since * H < hour + H and (until is None or day0 + until * H > hour):
                out[(group, hour, user)] = n
    return out


def _send_and_settle(pipe: Pipeline, events: list[Event], total: int) -> None:
    """Send the events plus one event now on every partition (from users outside the forum
    above), which moves every watermark past day 0: then wait until all of day 0's `total`
    events are in final hours."""
    now = int(time.time() * 1000)
    pushers = [
        Event(uuid.uuid4().hex, EventType.ACTIVITY, now, _user_on(p, 500))
        for p in range(PARTITIONS)
    ]
    pipe.send(events + pushers)
    sql = "SELECT sum(num_events) FROM hourly_user_summary WHERE user_id IN {ids:Array(UInt64)}"
    ids = list(U.values())
    try:
        wait_until(lambda: pipe.count(sql, ids=ids) == total, timeout=60)
    except AssertionError:
        c = connect(pipe.db_url)
        print(c.query("SELECT user_id, count() FROM events GROUP BY user_id").result_rows)
        print(c.query("SELECT user_id, hour, num_events FROM hourly_user_summary").result_rows)
        print(pipe.log()[-6000:])
        raise


def _verify(pipe: Pipeline) -> None:
    """`verify` over the forum's days (today's pushers' hours are not final yet)."""
    settings = load_settings(clickhouse_url=pipe.db_url)
    report = verify(connect(pipe.db_url), settings, REGISTERED.date(), DAY0.date())
    assert report.ok, report.summary()


def test_group_figures_follow_membership_changes(pipe: Pipeline) -> None:
    groups = [
        GroupRecord(ACME, "Acme", True),
        GroupRecord(STAFF, "Staff", True),
        GroupRecord(HIDDEN, "Hidden", False),
    ]
    first = [
        _record("ann", (ACME,)),
        _record("bob", (ACME, STAFF)),
        _record("cat", ()),
        _record("dan", ()),
        _record("eve", (HIDDEN,)),
    ]
    pipe.publish(first, groups)
    wait_until(lambda: pipe.count("SELECT count() FROM users FINAL") == 5, timeout=60)
    batch = (
        _events("ann", [10, 10.2, 11, 14])
        + _events("bob", [10.5, 12, 13, 15], EventType.QUESTION_ASKED)
        + _events("cat", [9, 9.5])
        + _events("dan", [11, 11.25, 16])
        + _events("eve", [12])
    )
    _send_and_settle(pipe, batch, len(batch))
    before = _group_rows(pipe)
    assert before and all(g != STAFF or u != U["dan"] for g, _, u in before)

    # Bob leaves Acme at 12:30; Dan joins Staff with a `since` at the start of the day.
    changes = [
        _record("bob", (STAFF,), updated_at=DAY0 + timedelta(hours=12.5)),
        _record("dan", (STAFF,), group_since=((STAFF, DAY0),)),
    ]
    pipe.publish(changes)
    late = _events("ann", [10.1]) + _events("bob", [11.5]) + _events("dan", [15.5])
    _send_and_settle(pipe, late + late[:1], len(batch) + len(late))  # one duplicate
    wait_until(lambda: _group_rows(pipe) == _expected_group_rows(pipe), timeout=60)
    _verify(pipe)
    _check_daily_view(pipe)
    _check_segments(pipe)
    _check_verify_command(pipe)


def _check_verify_command(pipe: Pipeline) -> None:
    """`forum-analytics verify` checks the configured segments' totals too."""
    segments = '[{"name": "Acme and Staff", "slug": "acme-staff", "group_ids": [1, 2]}]'
    env = dict(os.environ, **pipe.env, ANALYTICS_NAMED_SEGMENTS=segments)
    days = ["--from", str(REGISTERED.date()), "--to", str(DAY0.date())]
    result = subprocess.run(
        [sys.executable, "-m", "forum_analytics", "verify", *days],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "checking segment totals" in result.stderr


def _check_daily_view(pipe: Pipeline) -> None:
    rows = connect(pipe.db_url).query(
        "SELECT group_id, day, num_users, num_users_added, num_active_users, num_events, "
        "num_questions FROM daily_group_summary ORDER BY group_id, day"
    )
    by_key = {(g, d): tuple(r) for g, d, *r in rows.result_rows}
    day0, registered = DAY0.date(), REGISTERED.date()
    assert {g for g, _ in by_key} == {ACME, STAFF}  # Hidden is not used for analytics
    # Acme: Ann and Bob registered ten days before; Bob left at 12:30 on day 0.
    assert by_key[(ACME, registered)][:3] == (2, 2, 0)
    assert by_key[(ACME, registered + timedelta(days=5))][:3] == (2, 0, 0)  # an idle day
    ann_events, bob_events_before_1230 = 5, 3  # 10, 10.1, 10.2, 11, 14 / 10.5, 11.5, 12
    bob_questions_before_1230 = 2  # 10.5 and 12 (11.5 is a view)
    assert by_key[(ACME, day0)] == (
        1,
        0,
        2,
        ann_events + bob_events_before_1230,
        bob_questions_before_1230,
    )
    # Staff: Bob since registration, Dan since the start of day 0.
    assert by_key[(STAFF, day0)][:3] == (2, 1, 2)
    assert by_key[(STAFF, day0)][3] == 5 + 4  # Bob's 5 events, Dan's 4
    assert by_key[(STAFF, day0 - timedelta(days=1))][:3] == (1, 0, 0)
    # A filter on the view keeps the running member count (the README's advice).
    one_day = connect(pipe.db_url).query(
        "SELECT num_users, num_users_added FROM daily_group_summary "
        "WHERE group_id = {g:UInt64} AND day = {d:Date}",
        parameters={"g": ACME, "d": day0},
    )
    assert one_day.result_rows == [(1, 0)]
    hourly = connect(pipe.db_url).query(
        "SELECT toHour(hour), num_users, num_active_users FROM hourly_group_summary "
        "WHERE group_id = {g:UInt64} AND toDate(hour) = {d:Date} AND toHour(hour) IN (12, 13)",
        parameters={"g": ACME, "d": day0},
    )
    # Bob left Acme at 12:30: a member at the end of neither hour, active in hour 12.
    assert sorted(tuple(r) for r in hourly.result_rows) == [(12, 1, 1), (13, 1, 0)]


def _check_segments(pipe: Pipeline) -> None:
    """A user in two groups of a segment counts once; users in no group are in the default."""
    both = Segment("acme-staff", "Acme and Staff", "", frozenset({ACME, STAFF}), False)
    default = Segment("rest", "Rest of Users", "", frozenset(), True)
    figures = segment_figures(
        connect(pipe.db_url), Segments((both,), default), DAY0.date(), DAY0.date(), ZoneInfo("UTC")
    )
    by_slug = {f.slug: f for f in figures}
    # Ann (Acme), Bob (both groups: once), Dan (Staff): 5 + 5 + 4 events; all three active.
    segment = by_slug["acme-staff"]
    assert (segment.num_users, segment.num_active_users) == (3, 3)
    assert segment.values["num_events"] == 14
    assert segment.values["num_questions"] == 4  # Bob's questions, counted once
    rest = by_slug["rest"]  # Cat (no group) and Eve (a group outside the segments)
    assert (rest.num_users, rest.num_active_users, rest.values["num_events"]) == (2, 2, 3)
    total = by_slug["all-users"]
    assert (total.num_users, total.num_active_users, total.values["num_events"]) == (5, 5, 17)
    assert total.num_users_added == 0
    for first, last in ((DAY0.date(), DAY0.date()), (REGISTERED.date(), DAY0.date())):
        differences = verify_segments(
            connect(pipe.db_url), Segments((both,), default), first, last, ZoneInfo("UTC")
        )
        assert differences == []


def test_a_purge_removes_the_user_and_keeps_group_totals(pipe: Pipeline) -> None:
    """Runs after the test above, on its data."""
    client = connect(pipe.db_url)
    totals_sql = (
        "SELECT group_id, day, num_users, num_active_users, num_events FROM daily_group_summary "
        "ORDER BY group_id, day"
    )
    before = client.query(totals_sql).result_rows
    ann = U["ann"]
    pipe.publish(purge=[ann])
    wait_until(lambda: pipe.count("SELECT count() FROM purge_audit") == 1, timeout=60)
    tables = client.query(
        "SELECT table FROM system.columns WHERE database = currentDatabase() "
        "AND name = 'user_id' AND table NOT LIKE '%_mv'"
    ).result_rows
    assert len(tables) == len(PURGED_TABLES)
    for (table,) in tables:
        assert pipe.count(f"SELECT count() FROM {table} WHERE user_id = {ann}") == 0, table
    assert client.query(totals_sql).result_rows == before
    audit = client.query("SELECT rows_deleted FROM purge_audit").result_rows[0][0]
    assert audit["events"] >= 5 and audit["users"] >= 1
    _verify(pipe)
    segments = Segments(
        (Segment("acme", "Acme", "", frozenset({ACME}), False),),
        Segment("rest", "Rest of Users", "", frozenset(), True),
    )
    after = segment_figures(client, segments, DAY0.date(), DAY0.date(), ZoneInfo("UTC"))
    acme = next(f for f in after if f.slug == "acme")
    assert acme.values["num_events"] == 8  # Ann's 5, now anonymous, and Bob's 3
    assert verify_segments(client, segments, DAY0.date(), DAY0.date(), ZoneInfo("UTC")) == []


def test_the_analyst_reads_every_documented_table_and_cannot_write(
    pipe: Pipeline, clickhouse_server: Any
) -> None:
    database = pipe.db_url.rsplit("/", 1)[1]
    analyst = connect(clickhouse_server.analyst_url.rstrip("/") + "/" + database)
    documented = [
        "events",
        "sessions FINAL",
        "hourly_user_summary FINAL",
        "daily_user_summary FINAL",
        "hourly_group_summary",
        "daily_group_summary",
        "users FINAL",
        "groups FINAL",
        "group_members FINAL",
    ]
    for source in documented:
        analyst.query(f"SELECT count() FROM {source}")
    for statement in (
        "INSERT INTO groups (group_id, name) VALUES (99, 'x')",
        "ALTER TABLE users DELETE WHERE 1",
        "DROP TABLE daily_group_summary",
    ):
        with pytest.raises(Exception, match="(?i)readonly|not enough privileges|cannot execute"):
            analyst.command(statement)
    assert pipe.count("SELECT count() FROM groups FINAL WHERE group_id = 99") == 0


def test_segment_totals_that_disagree_are_reported(pipe: Pipeline) -> None:
    """A group row for Cat, who is in no group: the recomputation from the group rows counts
    it in the segment, the figures do not; verify_segments says so. Runs last on this data."""
    client = connect(pipe.db_url)
    hour = DAY0 + timedelta(hours=9)
    client.insert(
        "group_member_hours",
        [[ACME, hour, hour.date(), U["cat"], 7]],
        column_names=["group_id", "hour", "day", "user_id", "num_events"],
        settings={"insert_deduplication_token": uuid.uuid4().hex},
    )
    segments = Segments(
        (Segment("acme", "Acme", "", frozenset({ACME}), False),),
        Segment("rest", "Rest of Users", "", frozenset(), True),
    )
    differences = verify_segments(client, segments, DAY0.date(), DAY0.date(), ZoneInfo("UTC"))
    assert {(d.slug, d.field, d.expected - d.actual) for d in differences} >= {
        ("acme", "num_events", 7),
        ("acme", "num_active_users", 1),
    }
    assert any(d.slug == "rest" and d.field == "num_events" for d in differences)


def test_new_users_join_their_email_domain_organization(
    kafka_broker: EmbeddedBroker, clickhouse_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """With ANALYTICS_EMAIL_DOMAIN_ORGANIZATIONS_ENABLED: an existing group of the name is
    reused (ignoring case) and switched to analytics, a new one is made, webmail gives none."""
    auto = start_pipeline(
        kafka_broker,
        clickhouse_server.port,
        tmp_path_factory.mktemp("organizations"),
        ANALYTICS_EMAIL_DOMAIN_ORGANIZATIONS_ENABLED="true",
    )
    try:
        people = {
            1: "ann@acme.com",
            2: "bob@Sales.ACME.co.uk",
            3: "cat@gmail.com",
            4: "dan@my-company.org",
            5: "",
        }
        users = [
            UserRecord(u, f"u{u}", email, REGISTERED, True, Role.USER)
            for u, email in people.items()
        ]
        auto.publish(groups=[GroupRecord(50, "acme", False)])
        wait_until(lambda: auto.count("SELECT count() FROM groups FINAL") == 1, timeout=60)
        auto.publish(users)
        wait_until(lambda: auto.count("SELECT count() FROM users FINAL") == 5, timeout=60)
        client = connect(auto.db_url)
        members = client.query(
            "SELECT user_id, group_id, since, organization, until IS NULL "
            "FROM group_members FINAL ORDER BY user_id"
        ).result_rows
        new_id = organization_group_id("My-Company")
        registered = REGISTERED.replace(tzinfo=None)
        assert [(u, g, s.replace(tzinfo=None), o, open_) for u, g, s, o, open_ in members] == [
            (1, 50, registered, True, True),
            (2, 50, registered, True, True),
            (4, new_id, registered, True, True),
        ]
        wait_until(
            lambda: (
                client.query(
                    "SELECT group_id, name, used_for_analytics FROM groups FINAL ORDER BY group_id"
                ).result_rows
                == [(50, "acme", True), (new_id, "My-Company", True)]
            ),
            timeout=60,
        )
        organizations = client.query(
            "SELECT user_id, organization_id FROM users FINAL ORDER BY user_id"
        ).result_rows
        assert organizations == [(1, 50), (2, 50), (3, None), (4, new_id), (5, None)]
    finally:
        assert stop(auto.worker, timeout=20) == 0, auto.log()[-3000:]
