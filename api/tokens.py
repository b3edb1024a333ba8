"""API tokens with a role, stored hashed in ClickHouse (`api_tokens`).

A token reads `fa_<token_id>_<secret>`. Only its SHA-256 is stored, so a database dump
does not leak working tokens; the token is shown once, by `forum-analytics tokens create`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from clickhouse_connect.driver.client import Client

TOKEN_PREFIX = "fa_"
_COLUMNS = ("token_id", "name", "role", "token_sha256", "created_at", "revoked_at", "version")


class Role(StrEnum):
    """Roles allowed to read reports (DESIGN.md: administrators and moderators only)."""

    ADMIN = "admin"
    MODERATOR = "moderator"


@dataclass(frozen=True)
class TokenInfo:
    """A stored token, without its secret."""

    token_id: str
    name: str
    role: str
    created_at: datetime
    revoked_at: datetime | None


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _version() -> int:
    return time.time_ns()


def create_token(client: Client, *, name: str, role: Role) -> str:
    """Store a new token and return it; it cannot be recovered later."""
    token_id = secrets.token_hex(6)
    token = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    _write(client, [token_id, name, role.value, _hash(token), datetime.now(UTC), None, _version()])
    return token


def _write(client: Client, row: list[object]) -> None:
    client.insert("api_tokens", [row], column_names=list(_COLUMNS))


def list_tokens(client: Client) -> list[TokenInfo]:
    """Every token, newest first, revoked ones included."""
    rows = client.query(
        "SELECT token_id, name, role, created_at, revoked_at FROM api_tokens FINAL "
        "ORDER BY created_at DESC"
    ).result_rows
    return [TokenInfo(*row) for row in rows]


def _active(client: Client, token_id: str) -> tuple[str, str, str, datetime] | None:
    """(name, role, token_sha256, created_at) of the unrevoked token `token_id`, if any."""
    rows = client.query(
        "SELECT name, role, token_sha256, created_at FROM api_tokens FINAL "
        "WHERE token_id = {i:String} AND revoked_at IS NULL",
        parameters={"i": token_id},
    ).result_rows
    if not rows:
        return None
    name, role, digest, created_at = rows[0]
    return str(name), str(role), str(digest), created_at


def revoke_token(client: Client, token_id: str) -> bool:
    """Mark a token revoked; False when no active token has that id."""
    row = _active(client, token_id)
    if row is None:
        return False
    name, role, digest, created_at = row
    _write(client, [token_id, name, role, digest, created_at, datetime.now(UTC), _version()])
    return True


def verify_token(client: Client, token: str) -> Role | None:
    """The role of a valid, unrevoked token, or None."""
    if not token.startswith(TOKEN_PREFIX) or token.count("_") < 2:
        return None
    row = _active(client, token[len(TOKEN_PREFIX) :].split("_", 1)[0])
    if row is None or not hmac.compare_digest(row[2], _hash(token)):
        return None
    try:
        return Role(row[1])
    except ValueError:
        return None
