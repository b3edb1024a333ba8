"""Raw-event retention against the real embedded ClickHouse: only `events` ever expires."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from clickhouse.client import connect
from clickhouse.migrate import migrate
from clickhouse.process import EmbeddedClickHouse
from clickhouse.retention import apply_raw_events_ttl, current_ttl
from streams.summary_rows import SESSION_COLUMNS

NOW = datetime.now(UTC).replace(microsecond=0)
OLD_DAYS, NEW_DAYS, TTL_DAYS = (400, 45), (1, 0), 30
EVENT_COLUMNS = ["id", "type", "ts", "user_id", "received_at", "_topic", "_partition", "_offset"]
SUMMARY_TABLES = ("hourly_user_summary", "daily_user_summary", "sessions")


def _url(server: EmbeddedClickHouse, database: str) -> str:
    return f"http://default:@127.0.0.1:{server.port}/{database}"


@pytest.fixture
def database(clickhouse_server: EmbeddedClickHouse) -> Iterator[str]:
    """A fresh database with the product's schema, dropped afterwards."""
    name = f"ret_{uuid.uuid4().hex[:10]}"
    migrate(_url(clickhouse_server, name), name)
    yield name
    admin = connect(_url(clickhouse_server, ""), database="")
    admin.command(f"DROP DATABASE IF EXISTS {name} SYNC")
    admin.close()


@pytest.fixture
def client(clickhouse_server: EmbeddedClickHouse, database: str) -> Iterator[Client]:
    ch = connect(_url(clickhouse_server, database))
    yield ch
    ch.close()


def _insert(client: Client, table: str, rows: list[list[Any]], columns: list[str]) -> None:
    """One insert per row, each with its own token: the embedded server ignores
    insert_deduplicate=0, so identical blocks would otherwise be dropped as retries."""
    for row in rows:
        token = f"{table}-{uuid.uuid4().hex}"
        client.insert(
            table, [row], column_names=columns, settings={"insert_deduplication_token": token}
        )


def _event(event_id: str, days_ago: int) -> list[Any]:
    return [event_id, "question_viewed", NOW - timedelta(days=days_ago), 7, NOW, "t", 0, 0]


def _seed(client: Client) -> None:
    """Events older and newer than the TTL; summary and session rows of both ages."""
    events = [_event(f"old-{d}", d) for d in OLD_DAYS] + [_event(f"new-{d}", d) for d in NEW_DAYS]
    _insert(client, "events", events, EVENT_COLUMNS)
    for days_ago in (*OLD_DAYS, *NEW_DAYS):
        hour = (NOW - timedelta(days=days_ago)).replace(minute=0, second=0)
        _insert(
            client,
            "hourly_user_summary",
            [[hour, hour.date(), 7, 1, days_ago + 1, 60]],
            ["hour", "day", "user_id", "question_views", "num_events", "time_on_site"],
        )
        _insert(
            client,
            "sessions",
            [[f"s-{days_ago}", 7, hour, hour, 0, "", "", 1, 1]],
            list(SESSION_COLUMNS),
        )


def _all_rows(client: Client, table: str) -> list[tuple[Any, ...]]:
    return sorted(tuple(row) for row in client.query(f"SELECT * FROM {table}").result_rows)


def _event_ids(client: Client) -> set[str]:
    return {str(r[0]) for r in client.query("SELECT id FROM events").result_rows}


def _mutations(client: Client) -> int:
    query = (
        "SELECT count() FROM system.mutations "
        "WHERE database = currentDatabase() AND table = 'events'"
    )
    return int(client.query(query).result_rows[0][0])


def _force_ttl(client: Client) -> None:
    """Do now what ClickHouse's TTL merges would do on their own, later."""
    client.command("ALTER TABLE events MATERIALIZE TTL SETTINGS mutations_sync = 2")
    client.command("OPTIMIZE TABLE events FINAL")


def test_ttl_expires_old_events_only_and_leaves_summaries_alone(client: Client) -> None:
    _seed(client)
    before = {table: _all_rows(client, table) for table in SUMMARY_TABLES}
    assert all(len(rows) == 4 for rows in before.values()), before
    assert _event_ids(client) == {"old-400", "old-45", "new-1", "new-0"}

    assert apply_raw_events_ttl(client, TTL_DAYS).startswith("raw events: TTL set to 30 day(s)")
    _force_ttl(client)
    for table in SUMMARY_TABLES:
        client.command(f"OPTIMIZE TABLE {table} FINAL")

    assert _event_ids(client) == {"new-1", "new-0"}
    assert {table: _all_rows(client, table) for table in SUMMARY_TABLES} == before


def test_apply_is_idempotent_and_unset_removes_the_ttl(client: Client) -> None:
    assert "no TTL" in apply_raw_events_ttl(client, None)  # nothing to remove: no ALTER
    assert current_ttl(client) is None and _mutations(client) == 0

    apply_raw_events_ttl(client, TTL_DAYS)
    assert current_ttl(client) == "toDateTime(ts) + toIntervalDay(30)"
    mutations = _mutations(client)
    assert apply_raw_events_ttl(client, TTL_DAYS) == "raw events: TTL unchanged, 30 day(s)"
    assert _mutations(client) == mutations  # no ALTER, so no new mutation

    changed = apply_raw_events_ttl(client, 90)
    assert changed.startswith("raw events: TTL set to 90 day(s) (was 30 day(s))")
    assert current_ttl(client) == "toDateTime(ts) + toIntervalDay(90)"

    removed = apply_raw_events_ttl(client, None)
    assert removed.startswith("raw events: TTL removed (was 90 day(s))")
    assert current_ttl(client) is None


def test_a_foreign_ttl_is_replaced_or_removed(client: Client) -> None:
    client.command("ALTER TABLE events MODIFY TTL toDateTime(received_at) + INTERVAL 1 YEAR")
    assert "was 'toDateTime(received_at)" in apply_raw_events_ttl(client, TTL_DAYS)
    assert current_ttl(client) == "toDateTime(ts) + toIntervalDay(30)"
    client.command("ALTER TABLE events MODIFY TTL toDateTime(received_at) + INTERVAL 1 YEAR")
    assert "TTL removed" in apply_raw_events_ttl(client, None)
    assert current_ttl(client) is None


def test_only_events_ever_gets_a_ttl(client: Client) -> None:
    apply_raw_events_ttl(client, TTL_DAYS)
    tables = [
        str(r[0])
        for r in client.query(
            "SELECT name FROM system.tables WHERE database = currentDatabase() "
            "AND engine LIKE '%MergeTree%'"
        ).result_rows
    ]
    assert {"events", *SUMMARY_TABLES} <= set(tables)
    others = [table for table in tables if table != "events"]
    assert {table: current_ttl(client, table) for table in others} == dict.fromkeys(others)


def test_bad_ttl_is_refused(client: Client) -> None:
    with pytest.raises(ValueError, match=">= 1"):
        apply_raw_events_ttl(client, 0)


def test_migrate_command_applies_the_setting(
    clickhouse_server: EmbeddedClickHouse, database: str, client: Client
) -> None:
    base = dict(os.environ, ANALYTICS_CLICKHOUSE_URL=_url(clickhouse_server, database))
    base.pop("ANALYTICS_RAW_EVENTS_TTL_DAYS", None)
    command = [sys.executable, "-m", "forum_analytics", "migrate"]

    def run(*extra: str, ttl: str | None = None) -> str:
        env = base if ttl is None else dict(base, ANALYTICS_RAW_EVENTS_TTL_DAYS=ttl)
        done = subprocess.run(
            [*command, *extra], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "raw events: TTL set to 30 day(s)" in run(ttl="30")
    assert current_ttl(client) == "toDateTime(ts) + toIntervalDay(30)"
    assert run("--silent", ttl="30") == ""
    assert "raw events: TTL unchanged, 30 day(s)" in run(ttl="30")
    assert "raw events: TTL removed" in run()
    assert current_ttl(client) is None
