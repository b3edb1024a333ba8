"""`forum-analytics verify` on the group rollups, against a real (embedded) ClickHouse.

As in tests/test_verify.py, every streamed row here is written BY HAND from DESIGN.md's words
(a member's hour counts toward a group if the user was a member at any moment of it), and
`verify` must find nothing in a consistent database and exactly the planted differences in a
tampered one. The scenario, 2026-03-01 UTC:

* user 1: sessions 12:10 → 13:05, 14:50 → 15:10 and 16:05; in group 1 over [12:30, 15:00)
  (so hours 12, 13 and 14, not 15), in groups 2 and 3 throughout;
* user 2: one event at 09:00, in no group;
* user 3: in group 1 since 10:00, no events;
* an anonymous member (a purged user, id >= 2**63, events gone) in group 1 since Feb 28
  09:00, with one stored hour at 11:00.

Groups 1 and 2 are analytics groups; group 3 is not (its rollup rows are checked, the views do
not show it).
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from clickhouse.client import connect
from clickhouse.migrate import migrate
from clickhouse.verify import (
    GROUP_TABLES,
    GROUP_VIEW_FIELDS,
    ROW,
    SUMMARY_FIELDS,
    TABLES,
    Difference,
    VerifyReport,
)
from tests.test_verify import (
    IP1,
    MAR1,
    UA1,
    Db,
    Ev,
    S,
    at,
    cli,
    fresh,
    insert_events,
    insert_hourly,
    insert_sessions,
    run,
)

Key = tuple[tuple[str, Any], ...]
Figures = dict[str, int]

FIELDS = (*SUMMARY_FIELDS, "num_sessions_started")
FEB28 = date(2026, 2, 28)
MAR2 = date(2026, 3, 2)
G1, G2, G3 = 1, 2, 3
ANON = 2**63 + 7


def feb28(hh: int) -> datetime:
    return datetime(2026, 2, 28, hh, tzinfo=UTC)


# -- database and row writers ----------------------------------------------------------------


@pytest.fixture
def db(clickhouse_server: Any) -> Iterator[Db]:
    """A database migrated to the latest migration, with the group tables."""
    yield from _database(clickhouse_server)


def _database(server: Any, directory: Path | None = None) -> Iterator[Db]:
    name = f"verify_groups_{uuid.uuid4().hex[:10]}"
    url = f"http://default:@127.0.0.1:{server.port}/{name}"
    migrate(url, name, directory=directory)
    client = connect(url)
    yield Db(url, client)
    client.close()
    connect(url, database="").command(f"DROP DATABASE IF EXISTS {name}")


def insert_groups(client: Client, groups: Sequence[tuple[int, bool]]) -> None:
    """`groups` rows: (group_id, used_for_analytics)."""
    rows = [[g, f"group {g}", analytics, at(0), 1] for g, analytics in groups]
    columns = ["group_id", "name", "used_for_analytics", "updated_at", "version"]
    client.insert("groups", rows, column_names=columns, settings=fresh())


def member(
    group: int,
    user: int,
    since: datetime,
    until: datetime | None,
    *,
    since_hour: datetime,
    since_day: date,
    until_hour: datetime | None = None,
    until_day: date | None = None,
    version: int = 1,
    is_deleted: int = 0,
) -> list[Any]:
    """A `group_members` row; the helper columns are given by hand, as the worker would."""
    return [group, user, since, until, since_hour, since_day, until_hour, until_day, False,
            version, is_deleted]  # fmt: skip


def insert_members(client: Client, rows: Sequence[list[Any]]) -> None:
    columns = ["group_id", "user_id", "since", "until", "since_hour", "since_day",
               "until_hour", "until_day", "organization", "version", "is_deleted"]  # fmt: skip
    client.insert("group_members", list(rows), column_names=columns, settings=fresh())


def insert_member_hours(
    client: Client, rows: Sequence[tuple[int, datetime, date, int, Figures]]
) -> None:
    """Signed deltas for `group_member_hours`: (group, hour, day, user, {field: delta}); the
    materialized view adds them to `group_member_days`."""
    data = [[g, hour, day, user, *(f.get(name, 0) for name in FIELDS)]
            for g, hour, day, user, f in rows]  # fmt: skip
    client.insert(
        "group_member_hours",
        data,
        column_names=["group_id", "hour", "day", "user_id", *FIELDS],
        settings=fresh(),
    )


def negated(figures: Figures) -> dict[str, int]:
    return {name: -value for name, value in figures.items()}


# -- the consistent scenario ------------------------------------------------------------------

EVENTS = [
    Ev("a", "logged_in", at(12, 10), 1, IP1, UA1),
    Ev("b", "question_viewed", at(12, 40), 1),
    Ev("c", "question_asked", at(13, 5), 1),
    Ev("d", "upvoted", at(14, 50), 1),  # 90 minutes later: a new session
    Ev("e", "activity", at(15, 10), 1),
    Ev("f", "answer_posted", at(16, 5), 1),  # 55 minutes later: a one-event session
    Ev("g", "activity", at(9), 2),
]
SESSIONS = [
    S("s1", 1, at(12, 10), at(13, 5), 3300, IP1, UA1, 3),
    S("s2", 1, at(14, 50), at(15, 10), 1200, "", "", 2),
    S("s3", 1, at(16, 5), at(16, 5), 0, "", "", 1),
    S("s4", 2, at(9), at(9), 0, "", "", 1),
]
#: User 1's hours: time on site split at the hour boundaries (50 + 5 min, 10 + 10 min).
U1_HOURS: dict[datetime, Figures] = {
    at(12): {"num_logins": 1, "question_views": 1, "num_events": 2, "time_on_site": 3000,
             "num_sessions_started": 1},
    at(13): {"num_questions": 1, "num_events": 1, "time_on_site": 300},
    at(14): {"num_upvotes": 1, "num_events": 1, "time_on_site": 600, "num_sessions_started": 1},
    at(15): {"num_events": 1, "time_on_site": 600},
    at(16): {"num_answers": 1, "num_events": 1, "num_sessions_started": 1},
}  # fmt: skip
ANON_HOUR: Figures = {"num_answers": 1, "num_events": 2, "time_on_site": 300}
MEMBERS = [
    member(G1, 1, at(12, 30), at(15), since_hour=at(12), since_day=MAR1, until_hour=at(15),
           until_day=MAR1),
    member(G1, 3, at(10), None, since_hour=at(10), since_day=MAR1),
    member(G1, ANON, feb28(9), None, since_hour=feb28(9), since_day=FEB28),
    member(G2, 1, feb28(22), None, since_hour=feb28(22), since_day=FEB28),
    member(G3, 1, feb28(22), None, since_hour=feb28(22), since_day=FEB28),
]  # fmt: skip


def member_hour_rows() -> list[tuple[int, datetime, date, int, Figures]]:
    """What the worker writes: user 1's hours to each group covering them (group 1: 12 to 14;
    hour 15 was written and then taken back, a zero-sum key), hour 12 of group 2 in two
    deltas, and the anonymous member's stored hour."""
    rows: list[tuple[int, datetime, date, int, Figures]] = []
    rows += [(G1, h, MAR1, 1, U1_HOURS[h]) for h in (at(12), at(13), at(14))]
    rows += [(G1, at(15), MAR1, 1, U1_HOURS[at(15)]), (G1, at(15), MAR1, 1,
              negated(U1_HOURS[at(15)]))]  # fmt: skip
    rows += [(G2, h, MAR1, 1, f) for h, f in U1_HOURS.items() if h != at(12)]
    rows += [(G2, at(12), MAR1, 1, {"num_logins": 1, "time_on_site": 1000}),
             (G2, at(12), MAR1, 1, {**U1_HOURS[at(12)], "num_logins": 0,
                                    "time_on_site": 2000})]  # fmt: skip
    rows += [(G3, h, MAR1, 1, f) for h, f in U1_HOURS.items()]
    rows += [(G1, at(11), MAR1, ANON, ANON_HOUR)]
    return rows


@pytest.fixture
def scenario(db: Db) -> Db:
    insert_events(db.client, EVENTS)
    insert_sessions(db.client, SESSIONS)
    hourly = [(h, MAR1, 1, f) for h, f in U1_HOURS.items()]
    insert_hourly(
        db.client, [*hourly, (at(9), MAR1, 2, {"num_events": 1, "num_sessions_started": 1})]
    )
    insert_groups(db.client, [(G1, True), (G2, True), (G3, False)])
    insert_members(db.client, MEMBERS)
    insert_member_hours(db.client, member_hour_rows())
    return db


def view_row(db: Db, view: str, group: int, period: str, value: date | datetime) -> dict[str, int]:
    """A group view's row, the non-zero figures only."""
    column = "day" if view == "daily_group_summary" else "hour"
    fields = (*GROUP_VIEW_FIELDS, *FIELDS)
    result = db.client.query(
        f"SELECT {', '.join(fields)} FROM {view} WHERE group_id = {{g:UInt64}} "
        f"AND {column} = {{p:{period}}}",
        parameters={"g": group, "p": value},
    )
    (row,) = result.result_rows
    return {f: v for f, v in zip(fields, row, strict=True) if v}


def timed(db: Db, **kwargs: Any) -> VerifyReport:
    """`run`, printing how long it took (pytest -s shows it: the report quotes it)."""
    began = time.monotonic()
    report = run(db, **kwargs)
    per_table = " ".join(f"{t}={s:.2f}" for t, s in report.seconds.items())
    print(f"verify {kwargs or ''}: {time.monotonic() - began:.2f} s ({per_table})")
    return report


# -- keys ---------------------------------------------------------------------------------------


def gmh(group: int, hour: datetime, user: int, day: date = MAR1) -> Key:
    return (("group_id", group), ("hour", hour), ("user_id", user), ("day", day))


def gmd(group: int, user: int, day: date = MAR1) -> Key:
    return (("group_id", group), ("day", day), ("user_id", user))


def hgs(group: int, hour: datetime) -> Key:
    return (("group_id", group), ("hour", hour))


def dgs(group: int, day: date = MAR1) -> Key:
    return (("group_id", group), ("day", day))


def diffs(table: str, key: Key, *changes: tuple[str, Any, Any]) -> set[Difference]:
    return {Difference(table, key, name, expected, actual) for name, expected, actual in changes}


# -- (1) consistent ---------------------------------------------------------------------------


def test_consistent_groups_have_no_differences(scenario: Db) -> None:
    db = scenario
    # The views did their part, by hand: group 1 on March 1st ends with user 3 and the
    # anonymous member (user 1 left), added users 1 and 3, and sums user 1's hours 12 to 14
    # plus the anonymous hour.
    assert view_row(db, "daily_group_summary", G1, "Date", MAR1) == {
        "num_users": 2, "num_users_added": 2, "num_active_users": 2, "num_questions": 1,
        "num_answers": 1, "num_upvotes": 1, "question_views": 1, "num_logins": 1,
        "num_events": 6, "time_on_site": 4200, "num_sessions_started": 2,
    }  # fmt: skip
    assert view_row(db, "daily_group_summary", G1, "Date", FEB28) == {
        "num_users": 1, "num_users_added": 1,
    }  # fmt: skip
    assert view_row(db, "hourly_group_summary", G1, "DateTime", at(15)) == {"num_users": 2}
    assert view_row(db, "hourly_group_summary", G1, "DateTime", at(11)) == {
        "num_users": 2, "num_active_users": 1, "num_answers": 1, "num_events": 2,
        "time_on_site": 300,
    }  # fmt: skip

    report = timed(db)
    assert report.differences == []
    assert report.tables == (*TABLES, *GROUP_TABLES)
    assert report.counts == dict.fromkeys(TABLES, 0)  # group tables join once they differ
    assert set(report.seconds) == set(report.tables)

    ranged = timed(db, first=MAR1, last=MAR1)
    assert ranged.differences == []


@pytest.fixture
def db_0004(clickhouse_server: Any, tmp_path: Path) -> Iterator[Db]:
    """A database migrated up to 0004: no group tables."""
    migrations = Path(str(resources.files("clickhouse").joinpath("migrations")))
    for source in sorted(migrations.glob("000[1-4]_*.sql")):
        shutil.copy(source, tmp_path / source.name)
    yield from _database(clickhouse_server, tmp_path)


def test_a_database_before_groups_still_verifies(db_0004: Db) -> None:
    """The group tables are not there, and not checked; the user tables are."""
    db = db_0004
    insert_events(db.client, EVENTS[-1:])
    insert_sessions(db.client, SESSIONS[-1:])
    insert_hourly(db.client, [(at(9), MAR1, 2, {"num_events": 1, "num_sessions_started": 1})])
    report = run(db)
    assert report.tables == TABLES
    assert report.differences == []
    insert_hourly(db.client, [(at(9), MAR1, 2, {"num_events": 1})])
    assert run(db).counts == {"sessions": 0, "hourly_user_summary": 1, "daily_user_summary": 1}


# -- (2) corruptions ---------------------------------------------------------------------------


def test_a_missing_member_hour(scenario: Db) -> None:
    db = scenario
    insert_member_hours(db.client, [(G1, at(13), MAR1, 1, negated(U1_HOURS[at(13)]))])
    report = timed(db)
    assert set(report.differences) == {
        Difference("group_member_hours", gmh(G1, at(13), 1), ROW,
                   "{num_questions=1 num_events=1 time_on_site=300}", None),
        *diffs("group_member_days", gmd(G1, 1), ("num_questions", 1, 0), ("num_events", 4, 3),
               ("time_on_site", 3900, 3600)),
        *diffs("hourly_group_summary", hgs(G1, at(13)), ("num_active_users", 1, 0),
               ("num_questions", 1, 0), ("num_events", 1, 0), ("time_on_site", 300, 0)),
        *diffs("daily_group_summary", dgs(G1), ("num_questions", 1, 0), ("num_events", 6, 5),
               ("time_on_site", 4200, 3900)),
    }  # fmt: skip
    assert report.counts == {
        **dict.fromkeys(TABLES, 0), "group_member_hours": 1, "group_member_days": 3,
        "hourly_group_summary": 4, "daily_group_summary": 3,
    }  # fmt: skip
    assert report.keys["hourly_group_summary"] == 1

    limited = run(db, limit=1)  # one listed per table, all counted
    assert len(limited.differences) == 4 and limited.counts == report.counts


def test_an_extra_hour_outside_the_membership(scenario: Db) -> None:
    """User 1 left group 1 at 15:00 sharp: hour 15 is not theirs there."""
    db = scenario
    insert_member_hours(db.client, [(G1, at(15), MAR1, 1, U1_HOURS[at(15)])])
    report = timed(db)
    assert set(report.differences) == {
        Difference("group_member_hours", gmh(G1, at(15), 1), ROW, None,
                   "{num_events=1 time_on_site=600}"),
        *diffs("group_member_days", gmd(G1, 1), ("num_events", 4, 5),
               ("time_on_site", 3900, 4500)),
        *diffs("hourly_group_summary", hgs(G1, at(15)), ("num_active_users", 0, 1),
               ("num_events", 0, 1), ("time_on_site", 0, 600)),
        *diffs("daily_group_summary", dgs(G1), ("num_events", 6, 7),
               ("time_on_site", 4200, 4800)),
    }  # fmt: skip


def test_a_wrong_figure_in_any_group_and_only_analytics_groups_in_the_views(
    scenario: Db,
) -> None:
    db = scenario
    insert_member_hours(
        db.client,
        [(G2, at(16), MAR1, 1, {"num_comments": 1}), (G3, at(12), MAR1, 1, {"time_on_site": -5})],
    )
    report = timed(db)
    assert set(report.differences) == {
        *diffs("group_member_hours", gmh(G2, at(16), 1), ("num_comments", 0, 1)),
        *diffs("group_member_days", gmd(G2, 1), ("num_comments", 0, 1)),
        *diffs("hourly_group_summary", hgs(G2, at(16)), ("num_comments", 0, 1)),
        *diffs("daily_group_summary", dgs(G2), ("num_comments", 0, 1)),
        # group 3 is not an analytics group: its rollup rows are checked, no view shows it
        *diffs("group_member_hours", gmh(G3, at(12), 1), ("time_on_site", 3000, 2995)),
        *diffs("group_member_days", gmd(G3, 1), ("time_on_site", 4500, 4495)),
    }  # fmt: skip

    result = cli(db, "--limit", "1", "--silent")
    assert result.returncode == 1, result.stderr
    assert result.stdout.strip().splitlines()[-1] == (
        "verify: 6 difference(s): sessions 0, hourly_user_summary 0, daily_user_summary 0, "
        "group_member_hours 2, group_member_days 2, hourly_group_summary 1, "
        "daily_group_summary 1; 1 shown (--limit 1)"
    )


def test_num_users_from_a_wrong_since_day(scenario: Db) -> None:
    """A newer version of user 3's interval in group 1 says since_day Feb 27 where `since` is
    March 1st 10:00: the daily view counts user 3 two days early. verify reads `since`."""
    db = scenario
    wrong = member(G1, 3, at(10), None, since_hour=at(10), since_day=date(2026, 2, 27), version=2)
    insert_members(db.client, [wrong])
    report = timed(db)
    assert set(report.differences) == {
        Difference("daily_group_summary", dgs(G1, date(2026, 2, 27)), ROW, None,
                   "{num_users=1 num_users_added=1}"),
        *diffs("daily_group_summary", dgs(G1, FEB28), ("num_users", 1, 2)),
        *diffs("daily_group_summary", dgs(G1, MAR1), ("num_users_added", 2, 1)),
    }  # fmt: skip

    # Inside a day range, only that range's rows (num_users still from the whole history).
    assert set(run(db, first=MAR1, last=MAR1).differences) == diffs(
        "daily_group_summary", dgs(G1, MAR1), ("num_users_added", 2, 1)
    )
    assert run(db, first=FEB28, last=FEB28).counts["daily_group_summary"] == 1


def test_an_idle_hour_missing_from_the_view_is_reported(scenario: Db) -> None:
    """The hourly view's rows come from `since_hour`: one an hour late makes group 2 start an
    hour late and count user 1 an hour late; the idle first hour goes missing."""
    db = scenario
    wrong = member(G2, 1, feb28(22), None, since_hour=feb28(23), since_day=FEB28, version=2)
    insert_members(db.client, [wrong])
    assert set(timed(db).differences) == {
        Difference("hourly_group_summary", hgs(G2, feb28(22)), ROW,
                   "{num_users=1 num_users_added=1}", None),
        *diffs("hourly_group_summary", hgs(G2, feb28(23)), ("num_users_added", 0, 1)),
    }  # fmt: skip


def test_anonymous_members_rows_are_taken_as_stored(scenario: Db) -> None:
    """No events back the anonymous member's hours, so they are not compared; the views count
    them (the view row below has them on both sides), and their days follow their hours."""
    db = scenario
    insert_member_hours(
        db.client,
        [(G1, at(16), MAR1, ANON, {"num_events": 3}),
         (G1, at(10), MAR1, ANON, {"time_on_site": 120})],  # no event: not active
    )  # fmt: skip
    assert view_row(db, "hourly_group_summary", G1, "DateTime", at(16)) == {
        "num_users": 2, "num_active_users": 1, "num_events": 3,
    }  # fmt: skip
    assert view_row(db, "hourly_group_summary", G1, "DateTime", at(10)) == {
        "num_users": 2, "num_users_added": 1, "time_on_site": 120,
    }  # fmt: skip
    assert timed(db).differences == []

    day_only = [[G1, MAR1, ANON, *(1 if f == "num_events" else 0 for f in FIELDS)]]
    db.client.insert(
        "group_member_days", day_only, column_names=["group_id", "day", "user_id", *FIELDS],
        settings=fresh(),
    )  # fmt: skip
    assert set(run(db).differences) == {
        *diffs("group_member_days", gmd(G1, ANON), ("num_events", 5, 6)),
        *diffs("daily_group_summary", dgs(G1), ("num_events", 9, 10)),
    }  # fmt: skip


def test_a_deleted_interval_no_longer_counts(scenario: Db) -> None:
    """`group_members FINAL` hides a deleted interval: user 1's group 2 hours become extra."""
    db = scenario
    gone = member(G2, 1, feb28(22), None, since_hour=feb28(22), since_day=FEB28, version=2,
                  is_deleted=1)  # fmt: skip
    insert_members(db.client, [gone])
    report = run(db)
    assert report.counts["group_member_hours"] == 5
    assert {d.key for d in report.differences if d.table == "group_member_hours"} == {
        gmh(G2, h, 1) for h in U1_HOURS
    }


# -- (3) a +05:30 zone ------------------------------------------------------------------------


def test_kolkata_half_hour_local_hours(db: Db) -> None:
    """Asia/Kolkata (+05:30): local hours start at :30 UTC, local midnight is 18:30 UTC.
    User 1 is in group 1 over [13:35Z, 18:40Z): the hour 12:30Z-13:30Z is not covered (it ends
    before `since`), the hour 13:30Z is (joined during it; the 13:32Z event before `since`
    counts), and so is 18:30Z, on local March 2nd (left during it)."""
    insert_events(
        db.client,
        [
            Ev("k1", "activity", at(13, 10), 1),
            Ev("k2", "question_asked", at(13, 32), 1),
            Ev("k3", "upvoted", at(18, 20), 1),
            Ev("k4", "activity", at(18, 50), 1),  # exactly the timeout later: same session
        ],
    )
    insert_sessions(
        db.client,
        [S("k1", 1, at(13, 10), at(13, 32), 1320, "", "", 2),
         S("k2", 1, at(18, 20), at(18, 50), 1800, "", "", 2)],
    )  # fmt: skip
    hours: dict[tuple[datetime, date], Figures] = {
        (at(12, 30), MAR1): {"num_events": 1, "time_on_site": 1200, "num_sessions_started": 1},
        (at(13, 30), MAR1): {"num_questions": 1, "num_events": 1, "time_on_site": 120},
        (at(17, 30), MAR1): {"num_upvotes": 1, "num_events": 1, "time_on_site": 600,
                             "num_sessions_started": 1},
        (at(18, 30), MAR2): {"num_events": 1, "time_on_site": 1200},
    }  # fmt: skip
    insert_hourly(db.client, [(h, d, 1, f) for (h, d), f in hours.items()])
    insert_groups(db.client, [(G1, True)])
    insert_members(
        db.client,
        [member(G1, 1, at(13, 35), at(18, 40), since_hour=at(13, 30), since_day=MAR1,
                until_hour=at(18, 30), until_day=MAR2)],
    )  # fmt: skip
    covered = [(at(13, 30), MAR1), (at(17, 30), MAR1), (at(18, 30), MAR2)]
    insert_member_hours(db.client, [(G1, h, d, 1, hours[(h, d)]) for h, d in covered])

    assert view_row(db, "daily_group_summary", G1, "Date", MAR2) == {
        "num_active_users": 1, "num_events": 1, "time_on_site": 1200,
    }  # fmt: skip
    assert view_row(db, "hourly_group_summary", G1, "DateTime", at(13, 30))["num_users"] == 1
    report = timed(db, tz="Asia/Kolkata")
    assert report.differences == []
    assert timed(db, tz="Asia/Kolkata", first=MAR2, last=MAR2).differences == []

    # The same rows are wrong in UTC: hours at :00, one day, and the 13:00Z hour is covered.
    in_utc = run(db, tz="UTC")
    keys = {d.key for d in in_utc.differences if d.table == "group_member_hours"}
    assert gmh(G1, at(13, 30), 1) in keys
    assert gmh(G1, at(13), 1) in keys
    assert gmh(G1, at(18, 30), 1, MAR2) in keys


def test_kolkata_half_hour_boundaries_are_exact(db: Db) -> None:
    """Local hours 12:30Z and 13:30Z, one event in each. A member from 13:25Z (18:55 local) has
    both (a UTC hour would start at 13:00Z, after the 13:20Z event); one from 13:30Z sharp has
    only 13:30Z; one who left at 13:30Z sharp has only 12:30Z."""
    insert_events(
        db.client, [Ev("x", "activity", at(13, 20), 1), Ev("y", "activity", at(13, 40), 1)]
    )
    insert_sessions(db.client, [S("x", 1, at(13, 20), at(13, 40), 1200, "", "", 2)])
    early = {"num_events": 1, "time_on_site": 600, "num_sessions_started": 1}
    late = {"num_events": 1, "time_on_site": 600}
    insert_hourly(db.client, [(at(12, 30), MAR1, 1, early), (at(13, 30), MAR1, 1, late)])
    insert_groups(db.client, [(G1, False), (G2, False), (G3, False)])
    insert_members(
        db.client,
        [member(G1, 1, at(13, 25), None, since_hour=at(12, 30), since_day=MAR1),
         member(G2, 1, at(13, 30), None, since_hour=at(13, 30), since_day=MAR1),
         member(G3, 1, feb28(0), at(13, 30), since_hour=feb28(0) - timedelta(minutes=30),
                since_day=FEB28, until_hour=at(13, 30), until_day=MAR1)],
    )  # fmt: skip
    insert_member_hours(
        db.client,
        [(G1, at(12, 30), MAR1, 1, early), (G1, at(13, 30), MAR1, 1, late),
         (G2, at(13, 30), MAR1, 1, late), (G3, at(12, 30), MAR1, 1, early)],
    )  # fmt: skip
    assert run(db, tz="Asia/Kolkata").differences == []
