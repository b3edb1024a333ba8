"""ClickHouse HTTP sessions (``session_id``) over long-lived chDB connections.

In ClickHouse a session keeps ``SET`` changes, the current database from
``USE`` and temporary tables across requests, while settings and ``database``
given as URL parameters apply to one request only. clickhouse-connect sends a
session id and the same handful of URL settings with every request, so
reverting and re-applying them each time would cost a snapshot query per
request. Instead the URL values are kept as an *overlay* on the session's own
values and only swapped when a request brings different ones, or after the
session itself ran ``SET``/``USE``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from clickhouse.errors import SESSION_IS_LOCKED, SESSION_NOT_FOUND, ClickHouseError

log = logging.getLogger(__name__)

DEFAULT_SESSION_TIMEOUT = 60.0
MAX_SESSION_TIMEOUT = 3600.0

Runner = Callable[[Any, str, str], bytes]


def quote_string(value: str) -> str:
    """A ClickHouse string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_identifier(name: str) -> str:
    """A ClickHouse back-quoted identifier."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def set_statement(values: Mapping[str, str | None]) -> str:
    """``SET a = 'x', b = DEFAULT`` (None means back to the default)."""
    parts = [f"{n} = {'DEFAULT' if v is None else quote_string(v)}" for n, v in values.items()]
    return "SET " + ", ".join(parts)


@dataclass
class Session:
    """One session: a dedicated connection, its lease, and the URL-parameter overlay."""

    conn: Any
    run: Runner
    timeout: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_used: float = field(default_factory=time.monotonic)
    overlay: dict[str, str] = field(default_factory=dict)
    base: dict[str, str | None] = field(default_factory=dict)
    url_database: str | None = None
    base_database: str | None = None

    def expired(self, now: float) -> bool:
        return now - self.last_used > self.timeout

    def apply(self, settings: Mapping[str, str], database: str | None) -> None:
        """Make the connection reflect this request's URL settings and database."""
        if dict(settings) != self.overlay:
            self._revert_settings()
            if settings:
                self.base = self._snapshot(list(settings))
                self.overlay = dict(settings)
                try:
                    self.run(self.conn, set_statement(settings), "TabSeparated")
                except ClickHouseError:
                    self._revert_settings()
                    raise
        if database != self.url_database:
            self._revert_database()
            if database:
                current = self.run(self.conn, "SELECT currentDatabase()", "TabSeparated")
                self.run(self.conn, f"USE {quote_identifier(database)}", "TabSeparated")
                self.base_database = current.decode().strip()
                self.url_database = database

    def after_statement(self, keyword: str) -> None:
        """Adopt what a ``SET``/``USE`` run in the session changed, as the session's own."""
        if keyword == "USE":
            self.url_database = self.base_database = None
        if keyword == "SET" and self.overlay:
            current = self._current_values(list(self.overlay))
            changed_by_user = {n for n, v in current.items() if v != self.overlay.get(n)}
            for name in changed_by_user:
                self.overlay.pop(name, None)
                self.base.pop(name, None)
            self._revert_settings()

    def _revert_settings(self) -> None:
        if self.base:
            try:
                self.run(self.conn, set_statement(self.base), "TabSeparated")
            except ClickHouseError as exc:
                log.warning("could not restore session settings: %s", exc.message)
        self.overlay, self.base = {}, {}

    def _revert_database(self) -> None:
        if self.base_database:
            try:
                self.run(self.conn, f"USE {quote_identifier(self.base_database)}", "TabSeparated")
            except ClickHouseError as exc:
                log.warning("could not restore session database: %s", exc.message)
        self.url_database = self.base_database = None

    def _snapshot(self, names: list[str]) -> dict[str, str | None]:
        """The session's own values (None = default) of known settings among ``names``."""
        listed = ", ".join(quote_string(n) for n in names)
        rows = self.run(
            self.conn,
            f"SELECT name, value, changed FROM system.settings WHERE name IN ({listed})",
            "JSONEachRow",
        )
        return {
            row["name"]: row["value"] if int(row["changed"]) else None
            for row in map(json.loads, rows.splitlines())
        }

    def _current_values(self, names: list[str]) -> dict[str, str]:
        listed = ", ".join(quote_string(n) for n in names)
        rows = self.run(
            self.conn,
            f"SELECT name, value FROM system.settings WHERE name IN ({listed})",
            "JSONEachRow",
        )
        return {row["name"]: row["value"] for row in map(json.loads, rows.splitlines())}


class SessionRegistry:
    """Sessions by (user, session_id), leased to one request at a time."""

    def __init__(self, open_connection: Callable[[bool], Any], run: Runner) -> None:
        self._open = open_connection
        self._run = run
        self._sessions: dict[tuple[str, str], Session] = {}
        self._lock = threading.Lock()

    def lease(
        self, user: str, session_id: str, readonly: bool, timeout: float | None, check: bool
    ) -> Session:
        """The session, locked for the caller; SESSION_IS_LOCKED if another request holds it."""
        key = (user, session_id)
        seconds = min(timeout or DEFAULT_SESSION_TIMEOUT, MAX_SESSION_TIMEOUT)
        with self._lock:
            self._reap_locked()
            session = self._sessions.get(key)
            if session is None:
                if check:
                    raise ClickHouseError(SESSION_NOT_FOUND, f"Session {session_id} not found")
                session = Session(self._open(readonly), self._run, seconds)
                self._sessions[key] = session
            if not session.lock.acquire(blocking=False):
                raise ClickHouseError(
                    SESSION_IS_LOCKED, f"Session {session_id} is locked by a concurrent client"
                )
            if timeout is not None:
                session.timeout = seconds
            return session

    def discard(self, session: Session) -> None:
        """Forget a session whose connection state is no longer trustworthy."""
        with self._lock:
            for key, known in list(self._sessions.items()):
                if known is session:
                    del self._sessions[key]
        session.conn.close()

    def release(self, session: Session) -> None:
        session.last_used = time.monotonic()
        session.lock.release()

    def _reap_locked(self) -> None:
        now = time.monotonic()
        for key, session in list(self._sessions.items()):
            if session.expired(now) and session.lock.acquire(blocking=False):
                del self._sessions[key]
                session.conn.close()

    def reap(self) -> None:
        """Close sessions idle longer than their timeout."""
        with self._lock:
            self._reap_locked()

    def close_all(self) -> None:
        """Close every session not in use; one still serving a request is left alone,
        since closing a connection under a running query can abort the engine."""
        with self._lock:
            for key, session in list(self._sessions.items()):
                if session.lock.acquire(blocking=False):
                    session.conn.close()
                    del self._sessions[key]
