"""Migrations against the real embedded server: ordered, recorded, idempotent."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from clickhouse.client import connect
from clickhouse.migrate import Migration, MigrationError, load_migrations, migrate


def _url(server: Any, database: str) -> str:
    return f"http://default:@127.0.0.1:{server.port}/{database}"


@pytest.fixture
def database(clickhouse_server: Any) -> Any:
    name = f"mig_{uuid.uuid4().hex[:10]}"
    yield name
    admin = connect(_url(clickhouse_server, ""), database="")
    admin.command(f"DROP DATABASE IF EXISTS {name}")


def test_files_are_ordered_and_split_into_statements() -> None:
    migrations = load_migrations()
    versions = [m.version for m in migrations]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    assert migrations[0].name == "0001_events"
    two = Migration("9999", "9999_x", "-- note; not a statement\nSELECT 1;\n\nSELECT ';' ;\n")
    assert two.statements() == ["-- note; not a statement\nSELECT 1", "SELECT ';'"]


def test_bad_file_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / "1_events.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="NNNN_name.sql"):
        load_migrations(tmp_path)


def test_migrate_creates_schema_and_is_idempotent(clickhouse_server: Any, database: str) -> None:
    url = _url(clickhouse_server, database)
    first = migrate(url, database)
    assert first == [m.name for m in load_migrations()]
    client = connect(url)
    tables = {r[0] for r in client.query("SHOW TABLES").result_rows}
    assert {"events", "api_tokens", "schema_migrations"} <= tables
    rows = client.query(
        "SELECT name, type FROM system.columns WHERE database = {d:String} AND table = 'events'",
        parameters={"d": database},
    ).result_rows
    columns = {str(name): str(kind) for name, kind in rows}
    assert columns["ts"] == "DateTime64(3, 'UTC')"
    assert {"_topic", "_partition", "_offset"} <= set(columns)
    partition_key = client.query(
        "SELECT partition_key FROM system.tables WHERE database = {d:String} AND name = 'events'",
        parameters={"d": database},
    ).result_rows[0][0]
    assert "toYYYYMM(ts)" in partition_key
    assert migrate(url, database) == []  # a second run applies nothing
    recorded = client.query("SELECT count() FROM schema_migrations FINAL").result_rows[0][0]
    assert recorded == len(first)


def test_changed_applied_migration_is_reported(
    clickhouse_server: Any, database: str, tmp_path: Path
) -> None:
    url = _url(clickhouse_server, database)
    (tmp_path / "0001_t.sql").write_text("CREATE TABLE IF NOT EXISTS t (x UInt8) ENGINE = Log;\n")
    assert migrate(url, database, directory=tmp_path) == ["0001_t"]
    (tmp_path / "0001_t.sql").write_text("CREATE TABLE IF NOT EXISTS t (x UInt16) ENGINE = Log;\n")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(url, database, directory=tmp_path)


def test_migrate_command(clickhouse_server: Any, database: str) -> None:
    env = dict(os.environ, ANALYTICS_CLICKHOUSE_URL=_url(clickhouse_server, database))
    run = [sys.executable, "-m", "forum_analytics", "migrate"]
    first = subprocess.run(run, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "applying 0001_events" in first.stdout
    again = subprocess.run([*run, "--silent"], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stdout == ""
