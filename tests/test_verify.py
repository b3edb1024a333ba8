"""`forum-analytics verify` against a real (embedded) ClickHouse.

Each scenario inserts raw `events` and the streamed tables' rows as computed BY HAND here (or,
in the property test, by a small Python reference written here), then checks that `verify`
finds no difference, and that it reports exactly the differences a tampering introduces.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from pathlib import Path
from random import Random
from typing import Any, NamedTuple

import pytest
from clickhouse_connect.driver.client import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from clickhouse.client import connect
from clickhouse.migrate import migrate
from clickhouse.verify import ROW, SUMMARY_FIELDS, Difference, VerifyReport, verify
from forum_analytics.cli import app
from forum_analytics.settings import load_settings
from streams.sink import EVENT_COLUMNS

MINUTE = timedelta(minutes=1)
MS = timedelta(milliseconds=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAR1 = date(2026, 3, 1)


def fresh() -> dict[str, str]:
    """Insert settings: the tables drop a block identical to a recent one (the worker's retries
    rely on it; `insert_deduplicate = 0` does not turn it off here), and rows written by hand
    may repeat an earlier block on purpose, so each insert gets a token of its own."""
    return {"insert_deduplication_token": uuid.uuid4().hex}


SESSION_COLUMNS = [
    "session_id", "user_id", "start", "last_activity", "duration", "ip", "user_agent",
    "event_count", "sign",
]  # fmt: skip


def at(hh: int, mm: int = 0, ss: int = 0, ms: int = 0, day: int = 1) -> datetime:
    """An instant on 2026-03-<day>, UTC."""
    return datetime(2026, 3, day, hh, mm, ss, ms * 1000, tzinfo=UTC)


@dataclass
class Db:
    url: str
    client: Client


def _database(server: Any, directory: Path | None = None) -> Iterator[Db]:
    name = f"verify_{uuid.uuid4().hex[:10]}"
    url = f"http://default:@127.0.0.1:{server.port}/{name}"
    migrate(url, name, directory=directory)
    client = connect(url)
    yield Db(url, client)
    client.close()
    connect(url, database="").command(f"DROP DATABASE IF EXISTS {name}")


@pytest.fixture
def db(clickhouse_server: Any) -> Iterator[Db]:
    """A freshly migrated database of its own."""
    yield from _database(clickhouse_server)


@pytest.fixture
def old_db(clickhouse_server: Any, tmp_path: Path) -> Iterator[Db]:
    """A database migrated only up to 0003: no `num_sessions_started`, which verify then leaves
    out. The hand-written cases below predate the column; the DESIGN case above and the
    streaming tests (tests/test_exactly_once.py) check it."""
    migrations = Path(str(resources.files("clickhouse").joinpath("migrations")))
    for source in sorted(migrations.glob("000[1-3]_*.sql")):
        shutil.copy(source, tmp_path / source.name)
    yield from _database(clickhouse_server, tmp_path)


class Ev(NamedTuple):
    """An `events` row: where it was read decides which copy of an id counts."""

    id: str
    type: str
    ts: datetime
    user_id: int
    ip: str = ""
    user_agent: str = ""
    offset: int = -1  # -1: its index in the inserted list
    partition: int = 0


def insert_events(client: Client, events: Sequence[Ev]) -> None:
    rows = [
        [e.id, e.type, e.ts, e.user_id, e.ip, e.user_agent, "", None, None, None, e.ts,
         "forum-events", e.partition, n if e.offset < 0 else e.offset, 0]
        for n, e in enumerate(events)
    ]  # fmt: skip
    client.insert("events", rows, column_names=list(EVENT_COLUMNS), settings=fresh())


def insert_summary(
    client: Client, table: str, rows: Sequence[tuple[Any, ...]], keys: Sequence[str]
) -> None:
    """Signed delta rows: (*key values, {field: delta}); fields left out are 0."""
    started = any("num_sessions_started" in row[-1] for row in rows)
    fields = [*SUMMARY_FIELDS, *(["num_sessions_started"] if started else [])]
    data = [[*row[:-1], *(row[-1].get(f, 0) for f in fields)] for row in rows]
    client.insert(table, data, column_names=[*keys, *fields], settings=fresh())


def insert_hourly(
    client: Client, rows: Sequence[tuple[datetime, date, int, dict[str, int]]]
) -> None:
    """Deltas for `hourly_user_summary`; the materialized view adds them to the daily table."""
    insert_summary(client, "hourly_user_summary", rows, ["hour", "day", "user_id"])


def insert_daily(client: Client, rows: Sequence[tuple[date, int, dict[str, int]]]) -> None:
    insert_summary(client, "daily_user_summary", rows, ["day", "user_id"])


class S(NamedTuple):
    """A `sessions` row version."""

    session_id: str
    user_id: int
    start: datetime
    last: datetime
    duration: int
    ip: str
    user_agent: str
    event_count: int
    sign: int = 1


def insert_sessions(client: Client, rows: Sequence[S]) -> None:
    client.insert(
        "sessions", [list(r) for r in rows], column_names=SESSION_COLUMNS, settings=fresh()
    )


def run(
    db: Db,
    tz: str = "UTC",
    first: date | None = None,
    last: date | None = None,
    limit: int | None = None,
) -> VerifyReport:
    config = load_settings(clickhouse_url=db.url, time_zone=tz, session_timeout_minutes=30)
    return verify(db.client, config, first, last, limit=limit)


def cli(db: Db, *args: str, tz: str = "UTC") -> subprocess.CompletedProcess[str]:
    env = {
        "ANALYTICS_CLICKHOUSE_URL": db.url,
        "ANALYTICS_TIME_ZONE": tz,
        "ANALYTICS_SESSION_TIMEOUT_MINUTES": "30",
    }
    return subprocess.run(
        [sys.executable, "-m", "forum_analytics", "verify", *args],
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def hour_key(user: int, hour: datetime, day: date) -> tuple[tuple[str, Any], ...]:
    return (("user_id", user), ("hour", hour), ("day", day))


# -- the DESIGN example and the edge cases, UTC --------------------------------------------

IP1, UA1 = "10.0.0.1", "ua-1"
EVENTS = [
    # User 1: one session 12:40 → 14:10 (gaps of exactly the timeout continue it).
    Ev("a", "logged_in", at(12, 40), 1, IP1, UA1),
    Ev("b", "question_viewed", at(13, 5), 1, "10.0.0.2", "ua-2"),
    Ev("c", "activity", at(13, 35), 1),
    Ev("d", "upvoted", at(14, 5), 1),
    Ev("e", "question_asked", at(14, 10), 1),
    Ev("b", "answer_posted", at(16, 0), 1),  # redelivered id, other fields: the first counts
    # User 2: timeout + 1 ms splits; the second session ends on a whole second (1800 s).
    Ev("h", "downvoted", at(10, 10), 2, offset=100),  # read after the copy below: ignored
    Ev("f", "logged_in", at(10), 2, "10.0.0.3", "ua-3"),
    Ev("g", "answer_commented", at(10, 30, 0, 1), 2, "10.0.0.4", "ua-4"),
    Ev("h", "activity", at(11), 2, offset=0, partition=0),  # smallest position: this one counts
]
HOURLY = [
    (at(12), MAR1, 1, {"num_logins": 1, "num_events": 1, "time_on_site": 1200,
                       "num_sessions_started": 1}),
    # hour 13 written in two deltas, as a late event's correction would be
    (at(13), MAR1, 1, {"question_views": 1, "num_events": 1, "time_on_site": 1500}),
    (at(13), MAR1, 1, {"num_events": 1, "time_on_site": 2100}),
    (at(14), MAR1, 1, {"num_upvotes": 1, "num_questions": 1, "num_events": 2, "time_on_site": 600}),
    (at(10), MAR1, 2, {"num_logins": 1, "num_comments": 1, "num_events": 2, "time_on_site": 1800,
                       "num_sessions_started": 2}),
    (at(11), MAR1, 2, {"num_events": 1}),
    # deltas that cancel out: the key counts as absent
    (at(9), MAR1, 3, {"num_events": 4, "time_on_site": 60}),
    (at(9), MAR1, 3, {"num_events": -4, "time_on_site": -60}),
]  # fmt: skip
DAILY_EXPECTED = {
    (1, MAR1): {"num_logins": 1, "question_views": 1, "num_upvotes": 1, "num_questions": 1,
                "num_events": 5, "time_on_site": 5400, "num_sessions_started": 1},
    (2, MAR1): {"num_logins": 1, "num_comments": 1, "num_events": 3, "time_on_site": 1800,
                "num_sessions_started": 2},
}  # fmt: skip
SESSIONS = [
    S("s1", 1, at(12, 40), at(13, 5), 1500, IP1, UA1, 2),  # first written shorter...
    S("s1", 1, at(12, 40), at(13, 5), 1500, IP1, UA1, 2, -1),  # ...cancelled...
    S("s1", 1, at(12, 40), at(14, 10), 5400, IP1, UA1, 5),  # ...and written whole
    S("s2", 2, at(10), at(10), 0, "10.0.0.3", "ua-3", 1),  # one event: 0 s
    S("s3", 2, at(10, 30, 0, 1), at(11), 1800, "10.0.0.4", "ua-4", 2),
]


@pytest.fixture
def design(db: Db) -> Db:
    insert_events(db.client, EVENTS)
    insert_hourly(db.client, HOURLY)
    insert_sessions(db.client, SESSIONS)
    return db


def test_design_example_has_no_differences(design: Db) -> None:
    daily = design.client.query(
        f"SELECT user_id, day, {', '.join(f'sum({f})' for f in SUMMARY_FIELDS)} "
        "FROM daily_user_summary GROUP BY user_id, day HAVING sum(num_events) != 0"
    ).result_rows
    by_hand = {k: tuple(v.get(f, 0) for f in SUMMARY_FIELDS) for k, v in DAILY_EXPECTED.items()}
    assert {(r[0], r[1]): tuple(r[2:]) for r in daily} == by_hand  # the view did its part

    report = run(design)
    assert report.differences == []
    assert report.ok and report.total == 0
    assert report.summary().startswith("verify: no differences")

    result = cli(design, "--from", "2026-03-01", "--to", "2026-03-01")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("verify: no differences")
    assert "recomputing sessions" in result.stderr  # progress, on stderr


def tamper(db: Db) -> set[Difference]:
    """Spoil each table; return the differences that must be reported."""
    insert_hourly(db.client, [(at(13), MAR1, 1, {"time_on_site": 60})])  # an extra delta
    insert_daily(db.client, [(MAR1, 2, {"num_logins": 1})])  # the daily table alone
    insert_sessions(
        db.client,
        [
            S("s2", 2, at(10), at(10), 0, "10.0.0.3", "ua-3", 1, -1),  # a lost session
            S("s3", 2, at(10, 30, 0, 1), at(11), 1800, "10.0.0.4", "ua-4", 2, -1),
            S("s3", 2, at(10, 30, 0, 1), at(11), 1800, "6.6.6.6", "ua-4", 2),  # a wrong ip
            S("s1", 1, at(12, 40), at(14, 10), 5400, IP1, UA1, 5),  # written twice
        ],
    )
    s2 = "{last_activity=2026-03-01T10:00:00Z duration=0 ip='10.0.0.3' user_agent='ua-3' "
    s2 += "event_count=1 rows=1}"
    return {
        Difference("sessions", (("user_id", 1), ("start", at(12, 40))), "rows", 1, 2),
        Difference("sessions", (("user_id", 2), ("start", at(10))), ROW, s2, None),
        Difference(
            "sessions", (("user_id", 2), ("start", at(10, 30, 0, 1))), "ip", "10.0.0.4", "6.6.6.6"
        ),
        Difference("hourly_user_summary", hour_key(1, at(13), MAR1), "time_on_site", 3600, 3660),
        Difference(
            "daily_user_summary", (("user_id", 1), ("day", MAR1)), "time_on_site", 5400, 5460
        ),
        Difference("daily_user_summary", (("user_id", 2), ("day", MAR1)), "num_logins", 1, 2),
    }


def test_tampering_reports_exactly_the_differences(design: Db) -> None:
    expected = tamper(design)
    report = run(design)
    assert set(report.differences) == expected
    assert len(report.differences) == len(expected)
    assert report.counts == {"sessions": 3, "hourly_user_summary": 1, "daily_user_summary": 2}

    limited = run(design, limit=1)  # listed per table up to the limit, all counted
    assert len(limited.differences) == 3 and limited.counts == report.counts

    result = cli(design, "--limit", "2", "--silent")
    assert result.returncode == 1, result.stderr
    assert result.stderr == ""
    lines = result.stdout.strip().splitlines()
    assert lines == [
        "sessions user_id=1 start=2026-03-01T12:40:00Z: rows: expected 1, actual 2",
        "sessions user_id=2 start=2026-03-01T10:00:00Z: row: expected {last_activity="
        "2026-03-01T10:00:00Z duration=0 ip='10.0.0.3' user_agent='ua-3' event_count=1 rows=1}, "
        "actual absent",
        "verify: 6 difference(s): sessions 3, hourly_user_summary 1, daily_user_summary 2; "
        "2 shown (--limit 2)",
    ]


def test_bad_arguments_exit_2() -> None:
    runner = CliRunner()
    for args in (
        ["--from", "2026-3-1"],
        ["--to", "20260301"],
        ["--from", "2026-02-30"],
        ["--from", "2026-03-02", "--to", "2026-03-01"],
        ["--limit", "-1"],
    ):
        result = runner.invoke(app, ["verify", *args])
        assert result.exit_code == 2, (args, result.output)


# -- time zones ----------------------------------------------------------------------------


def test_hours_and_days_are_local_kolkata(old_db: Db) -> None:
    """+05:30: local hours start at :30 UTC and local midnight is 18:30 UTC."""
    db = old_db
    insert_events(
        db.client,
        [
            Ev("k1", "logged_in", at(18), 1, IP1, UA1),  # 23:30 local, March 1st
            Ev("k2", "activity", at(18, 20), 1),
            Ev("k3", "activity", at(18, 40), 1),  # 00:10 local, March 2nd
            Ev("k4", "question_asked", at(19), 1),
        ],
    )
    mar2 = date(2026, 3, 2)
    insert_hourly(
        db.client,
        [
            (at(17, 30), MAR1, 1, {"num_logins": 1, "num_events": 2, "time_on_site": 1800}),
            (at(18, 30), mar2, 1, {"num_questions": 1, "num_events": 2, "time_on_site": 1800}),
        ],
    )
    insert_sessions(db.client, [S("k", 1, at(18), at(19), 3600, IP1, UA1, 4)])
    assert run(db, tz="Asia/Kolkata").differences == []

    in_utc = run(db, tz="UTC")  # the same rows are wrong for UTC hours
    hourly_keys = {d.key for d in in_utc.differences if d.table == "hourly_user_summary"}
    assert hour_key(1, at(18), MAR1) in hourly_keys
    assert hour_key(1, at(18, 30), mar2) in hourly_keys
    assert in_utc.counts["sessions"] == 0


def test_hours_after_a_half_hour_dst_change_lord_howe(old_db: Db) -> None:
    """Australia/Lord_Howe falls back 30 minutes at 2026-04-04T15:00Z (+11 → +10:30): local
    hours then start at :30 UTC (ClickHouse's toStartOfHour says :00 for the rest of that day)."""
    db = old_db
    ts = datetime(2026, 4, 5, 6, 10, tzinfo=UTC)  # 16:40 local
    insert_events(db.client, [Ev("l1", "activity", ts, 1)])
    hour = datetime(2026, 4, 5, 5, 30, tzinfo=UTC)
    insert_hourly(db.client, [(hour, date(2026, 4, 5), 1, {"num_events": 1})])
    insert_sessions(db.client, [S("l", 1, ts, ts, 0, "", "", 1)])
    assert run(db, tz="Australia/Lord_Howe").differences == []


# -- --from/--to ---------------------------------------------------------------------------


def test_day_range_uses_whole_sessions_and_ignores_days_outside(old_db: Db) -> None:
    db = old_db
    mar2, mar3 = date(2026, 3, 2), date(2026, 3, 3)
    insert_events(
        db.client,
        [
            Ev("r1", "logged_in", at(23, 40), 1, IP1, UA1),
            Ev("r2", "activity", at(0, 10, day=2), 1),
            Ev("r3", "question_viewed", at(0, 20, day=2), 1),
            Ev("r4", "upvoted", at(9, day=3), 1),
            Ev("r5", "activity", at(8), 2),
        ],
    )
    # Right for March 2nd: 00:00 gets 20 min of a session that started on March 1st.
    insert_hourly(
        db.client,
        [(at(0, day=2), mar2, 1, {"question_views": 1, "num_events": 2, "time_on_site": 1200})],
    )
    # Wrong or missing on the other days: user 1's 23:00 hour, user 2, both sessions.
    insert_hourly(db.client, [(at(23), MAR1, 1, {"num_logins": 1, "num_events": 1})])
    insert_sessions(db.client, [S("r", 1, at(9, day=3), at(9, day=3), 0, "", "", 7)])

    assert run(db, first=mar2, last=mar2).differences == []
    everything = run(db)
    assert everything.counts == {"sessions": 3, "hourly_user_summary": 3, "daily_user_summary": 3}
    assert run(db, first=mar3).counts == {
        "sessions": 1, "hourly_user_summary": 1, "daily_user_summary": 1,
    }  # fmt: skip

    insert_hourly(db.client, [(at(0, day=2), mar2, 1, {"time_on_site": -1})])
    report = run(db, first=mar2, last=mar2)
    assert set(report.differences) == {
        Difference("hourly_user_summary", hour_key(1, at(0, day=2), mar2), "time_on_site", 1200,
                   1199),
        Difference("daily_user_summary", (("user_id", 1), ("day", mar2)), "time_on_site", 1200,
                   1199),
    }  # fmt: skip


# -- property: a simple reference agrees, and any perturbation shows -----------------------

TIMEOUT_MS = 30 * 60_000
TYPES = [
    "user_registered", "logged_in", "logged_out", "question_viewed", "answer_viewed", "upvoted",
    "downvoted", "vote_canceled", "question_asked", "answer_posted", "question_commented",
    "answer_commented", "question_retagged", "activity",
]  # fmt: skip
FIELD_OF = {
    "question_asked": "num_questions", "answer_posted": "num_answers", "upvoted": "num_upvotes",
    "downvoted": "num_downvotes", "question_viewed": "question_views",
    "answer_viewed": "answer_views", "question_commented": "num_comments",
    "answer_commented": "num_comments", "question_retagged": "num_retags",
    "vote_canceled": "num_vote_cancels", "logged_in": "num_logins",
}  # fmt: skip
OFFSETS = {"UTC": 0, "Asia/Kolkata": 19_800}  # fixed-offset zones keep the reference simple
BASE_MS = 1_772_366_400_000  # 2026-03-01T12:00Z


class Raw(NamedTuple):
    user: int
    id: str
    type: str
    ms: int
    ip: str
    partition: int
    offset: int


@st.composite
def raw_events(draw: st.DrawFn) -> list[Raw]:
    """A few users' events: gaps at the timeout's edges and at second/hour boundaries, ids
    reused (redeliveries, with other fields), Kafka positions in any order."""
    gap = st.one_of(
        st.sampled_from([0, 1, 999, 1000, TIMEOUT_MS, TIMEOUT_MS + 1, 3_600_000]),
        st.integers(0, 50 * 60_000),
    )
    out: list[Raw] = []
    seen: set[tuple[str, int]] = set()
    for user in range(1, draw(st.integers(1, 3)) + 1):
        ms = BASE_MS + draw(st.integers(-4 * 3_600_000, 4 * 3_600_000))
        for _ in range(draw(st.integers(1, 8))):
            ms += draw(gap)
            event_id = f"u{user}-{draw(st.integers(0, 6))}"
            if (event_id, ms) in seen:
                continue  # events is a ReplacingMergeTree on (ts, id): such copies are merged
            seen.add((event_id, ms))
            position = draw(st.integers(0, 10_000))
            out.append(
                Raw(user, event_id, draw(st.sampled_from(TYPES)), ms,
                    draw(st.sampled_from(["", "1.1.1.1", "2.2.2.2"])), user % 2,
                    position * 100 + len(out))
            )  # fmt: skip
    return out


class Expected(NamedTuple):
    sessions: dict[tuple[int, int], tuple[int, int, str, int]]  # (user, start) → last, dur, ip, n
    hourly: dict[tuple[int, int, date], Counter[str]]  # (user, hour s, day)
    daily: dict[tuple[int, date], Counter[str]]


def reference(events: Sequence[Raw], offset_s: int) -> Expected:
    """Sessions and summaries the plain way, from DESIGN.md's words."""
    first: dict[str, Raw] = {}
    for e in sorted(events, key=lambda e: (e.partition, e.offset)):
        first.setdefault(e.id, e)
    per_user: dict[int, list[Raw]] = defaultdict(list)
    for e in first.values():
        per_user[e.user].append(e)

    def hour(ms: int) -> int:
        s = ms // 1000
        return s - (s + offset_s) % 3600

    def day(hour_s: int) -> date:
        return (EPOCH + timedelta(seconds=hour_s + offset_s)).date()

    sessions: dict[tuple[int, int], tuple[int, int, str, int]] = {}
    hourly: dict[tuple[int, int, date], Counter[str]] = defaultdict(Counter)
    for user, evs in per_user.items():
        evs.sort(key=lambda e: (e.ms, e.id))
        groups: list[list[Raw]] = []
        for e in evs:
            if groups and e.ms - groups[-1][-1].ms <= TIMEOUT_MS:
                groups[-1].append(e)
            else:
                groups.append([e])
        for g in groups:
            start, last = g[0].ms, g[-1].ms
            sessions[(user, start)] = (last, last // 1000 - start // 1000, g[0].ip, len(g))
            t = start
            while t < last:
                end = min((hour(t) + 3600) * 1000, last)
                hourly[(user, hour(t), day(hour(t)))]["time_on_site"] += end // 1000 - t // 1000
                t = end
        for e in evs:
            counts = hourly[(user, hour(e.ms), day(hour(e.ms)))]
            counts["num_events"] += 1
            if e.type in FIELD_OF:
                counts[FIELD_OF[e.type]] += 1
    hourly = defaultdict(Counter, {k: v for k, v in hourly.items() if any(v.values())})
    daily: dict[tuple[int, date], Counter[str]] = defaultdict(Counter)
    for (user, _, d), counts in hourly.items():
        daily[(user, d)].update(counts)
    return Expected(sessions, hourly, daily)


def split(value: int, rng: Random) -> list[int]:
    """`value` as 1 to 3 signed parts."""
    parts = [rng.randint(-5, 5) for _ in range(rng.randint(0, 2))]
    return [*parts, value - sum(parts)]


def write_streamed(db: Db, expected: Expected, rng: Random) -> dict[tuple[int, int], S]:
    """The reference's figures as the worker might have written them: in signed deltas, with
    superseded session versions and their cancellations. Returns the live session rows."""
    rows: list[tuple[datetime, date, int, dict[str, int]]] = []
    for (user, hour_s, day), counts in expected.hourly.items():
        hour = EPOCH + timedelta(seconds=hour_s)
        for field, value in counts.items():
            rows += [(hour, day, user, {field: part}) for part in split(value, rng)]
    rng.shuffle(rows)
    insert_hourly(db.client, rows)
    live: dict[tuple[int, int], S] = {}
    versions: list[S] = []
    for (user, start), (last, duration, ip, n) in expected.sessions.items():
        s = S(uuid.uuid4().hex, user, EPOCH + start * MS, EPOCH + last * MS, duration, ip, "", n)
        if rng.random() < 0.5:  # an earlier, shorter version, cancelled
            stale = s._replace(event_count=n + 1, duration=duration + 7)
            versions += [stale, stale._replace(sign=-1)]
        versions.append(s)
        live[(user, start)] = s
    insert_sessions(db.client, versions)
    return live


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(events=raw_events(), tz=st.sampled_from(sorted(OFFSETS)), seed=st.integers(0, 2**32))
def test_matches_a_reference_and_reports_any_perturbation(
    old_db: Db, events: list[Raw], tz: str, seed: int
) -> None:
    db = old_db
    for table in ("events", "sessions", "hourly_user_summary", "daily_user_summary"):
        db.client.command(f"TRUNCATE TABLE {table}")
    rng = Random(seed)
    insert_events(
        db.client,
        [Ev(e.id, e.type, EPOCH + e.ms * MS, e.user, e.ip, "", e.offset, e.partition)
         for e in events],
    )  # fmt: skip
    expected = reference(events, OFFSETS[tz])
    live = write_streamed(db, expected, rng)
    assert run(db, tz=tz).differences == []

    if rng.random() < 0.5:  # one more delta on one figure: its hour and its day are off by one
        (user, hour_s, day), counts = rng.choice(sorted(expected.hourly.items()))
        field = rng.choice(SUMMARY_FIELDS)
        hour = EPOCH + timedelta(seconds=hour_s)
        insert_hourly(db.client, [(hour, day, user, {field: 1})])
        daily = expected.daily[(user, day)][field]
        assert set(run(db, tz=tz).differences) == {
            Difference("hourly_user_summary", hour_key(user, hour, day), field, counts[field],
                       counts[field] + 1),
            Difference("daily_user_summary", (("user_id", user), ("day", day)), field, daily,
                       daily + 1),
        }  # fmt: skip
    else:  # a session cancelled: missing
        session = rng.choice(sorted(live.values()))
        insert_sessions(db.client, [session._replace(sign=-1)])
        (only,) = run(db, tz=tz).differences
        key = (("user_id", session.user_id), ("start", session.start))
        assert (only.table, only.key, only.field, only.actual) == ("sessions", key, ROW, None)
        assert f"event_count={session.event_count} " in str(only.expected)


def test_an_id_counts_once_per_user_not_across_users(old_db: Db) -> None:
    """The stream deduplicates per user (a user's events share a partition), so does verify."""
    db = old_db
    insert_events(
        db.client,
        [Ev("same", "upvoted", at(9), 4), Ev("same", "upvoted", at(9, 30), 5)],
    )
    for user, minute in ((4, 0), (5, 30)):
        insert_hourly(db.client, [(at(9), MAR1, user, {"num_upvotes": 1, "num_events": 1})])
        start = at(9, minute)
        insert_sessions(db.client, [S(f"s{user}", user, start, start, 0, "", "", 1)])
    report = run(db)
    assert report.differences == []
    assert report.ok
