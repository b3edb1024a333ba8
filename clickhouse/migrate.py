"""Ordered SQL migrations, applied once each and recorded in `schema_migrations`.

Migration files live in `clickhouse/migrations/NNNN_name.sql`; each holds one or more
statements separated by `;` at the end of a line. Statements are written to be safe to
repeat (`IF NOT EXISTS`), so a run interrupted half-way through a file is finished by the
next run. A migration whose file changed after it was applied is reported, not re-run:
the schema must move forward with a new file.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from clickhouse_connect.driver.client import Client

from clickhouse.client import connect

MIGRATIONS_TABLE = "schema_migrations"
_FILE_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_STATEMENT_END = re.compile(r";[ \t]*(?:--[^\n]*)?(?:\n|$)")


class MigrationError(Exception):
    """The migrations cannot be applied; the message says which one and why."""


@dataclass(frozen=True)
class Migration:
    """One migration file: its version (the number), name and statements."""

    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self) -> list[str]:
        """The file's statements, comments-only fragments dropped."""
        parts = _STATEMENT_END.split(self.sql)
        return [p.strip() for p in parts if _strip_comments(p).strip()]


def _strip_comments(sql: str) -> str:
    return "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))


def load_migrations(directory: Path | None = None) -> list[Migration]:
    """All migration files in version order; a malformed name or duplicate version fails."""
    root = directory or Path(str(resources.files("clickhouse").joinpath("migrations")))
    migrations: list[Migration] = []
    seen: set[str] = set()
    for path in sorted(root.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        version = match.group(1)
        if version in seen:
            raise MigrationError(f"{path.name}: version {version} is used twice")
        seen.add(version)
        migrations.append(Migration(version, path.stem, path.read_text(encoding="utf-8")))
    return migrations


def _ensure_database(url: str, database: str) -> None:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", database):
        raise MigrationError(f"database name {database!r} must be a plain identifier")
    admin = connect(url, database="")
    try:
        admin.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    finally:
        admin.close()


def _ensure_table(client: Client) -> None:
    client.command(
        f"""CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE}
        (version String, name String, checksum String, applied_at DateTime64(3, 'UTC'))
        ENGINE = ReplacingMergeTree ORDER BY version"""
    )


def applied_migrations(client: Client) -> dict[str, str]:
    """version → checksum of every migration recorded as applied."""
    rows = client.query(
        f"SELECT version, argMax(checksum, applied_at) FROM {MIGRATIONS_TABLE} GROUP BY version"
    ).result_rows
    return {str(v): str(c) for v, c in rows}


def migrate(
    url: str,
    database: str,
    *,
    directory: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[str]:
    """Apply every pending migration to `database`; return the names applied."""
    migrations = load_migrations(directory)
    _ensure_database(url, database)
    client = connect(url, database=database)
    try:
        _ensure_table(client)
        done = applied_migrations(client)
        applied: list[str] = []
        for migration in migrations:
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"{migration.name} was changed after it was applied; "
                        "add a new migration instead of editing an applied one"
                    )
                continue
            if progress:
                progress(f"applying {migration.name}")
            for statement in migration.statements():
                client.command(statement)
            client.insert(
                MIGRATIONS_TABLE,
                [[migration.version, migration.name, migration.checksum, datetime.now(UTC)]],
                column_names=["version", "name", "checksum", "applied_at"],
            )
            applied.append(migration.name)
        return applied
    finally:
        client.close()
