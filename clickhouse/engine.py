"""chDB access for the HTTP server: connections, sessions, settings, execution.

Facts about chDB 4.x this is built on (measured on this project's machine):

* One connection shared by threads serialises queries; separate
  ``chdb.connect(path)`` connections to the same path run in parallel, and
  opening one costs ~0.1 ms. So every request gets its own connection, and
  its settings (``SET``) and current database (``USE``) die with it.
* The engine shuts down when the last connection closes, so an *anchor*
  connection is held open for the server's lifetime.
* ``send_query`` streams SELECT results chunk by chunk (other statements are
  refused with BAD_ARGUMENTS and run through ``query``); ``send_insert``
  takes INSERT data in pieces.
* Never use the module-level ``chdb.query()``: it holds a process-wide lock.

A ClickHouse HTTP session (``session_id``) keeps one connection across
requests so ``SET`` and temporary tables persist (see sessions.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import chdb

from clickhouse.errors import QUERY_WAS_CANCELLED, SYNTAX_ERROR, ClickHouseError
from clickhouse.sessions import SessionRegistry, quote_identifier, quote_string, set_statement
from clickhouse.sql_scan import first_keyword

log = logging.getLogger(__name__)

_STREAMING_NOT_SUPPORTED = "Streaming query is not supported"


@dataclass
class Stats:
    """Counters for ``X-ClickHouse-Summary``."""

    read_rows: int = 0
    read_bytes: int = 0
    written_rows: int = 0
    written_bytes: int = 0
    result_rows: int = 0
    result_bytes: int = 0

    def add_result(self, result: Any) -> None:
        """Fold in a chDB query_result (one streamed chunk or a whole result)."""
        self.result_rows += int(result.rows_read())
        self.result_bytes += int(result.bytes_read())
        self.read_rows += int(result.storage_rows_read())
        self.read_bytes += int(result.storage_bytes_read())
        self.written_rows += int(result.rows_written())
        self.written_bytes += int(result.bytes_written())


def _run(conn: Any, sql: str, fmt: str = "TabSeparated") -> bytes:
    """Run a statement on a connection; chDB errors become ClickHouseError."""
    try:
        data: bytes = conn.query(sql, fmt).bytes()
    except Exception as exc:
        raise ClickHouseError.from_chdb(exc) from None
    return data


class Connection:
    """One request's view of the engine: a prepared chDB connection.

    Everything that runs SQL for a request goes through here so that errors
    are uniformly ClickHouseError and the connection's state is known.
    """

    def __init__(self, conn: Any, cancelled: threading.Event) -> None:
        self._conn = conn
        self._cancelled = cancelled
        self.statement_keywords: list[str] = []
        self._streams: list[Any] = []

    def release(self) -> None:
        """Cancel streams still open, before the connection is closed or reused.

        A result generator abandoned mid-way (client gone) would otherwise be
        cancelled later by the garbage collector, on a closed connection,
        which brings the whole engine down.
        """
        for stream in self._streams:
            with contextlib.suppress(Exception):
                stream.close()
        self._streams.clear()

    def classify(self, sql: bytes) -> tuple[str, int]:
        """(query class, statement count) from chDB's own parser; UNKNOWN if unparsable."""
        raw = getattr(self._conn, "_conn", None)
        if raw is None or not hasattr(raw, "classify_query"):
            return "UNKNOWN", 1
        report = raw.classify_query(sql.decode("utf-8", errors="replace"))
        return str(report["query_class"].name), int(report["statement_count"])

    def execute(self, sql: bytes, fmt: str, params: Mapping[str, str]) -> tuple[bytes, Stats]:
        """Run any statement to completion and return its whole output."""
        stats = Stats()
        self.statement_keywords.append(first_keyword(sql))
        try:
            result = self._conn.query(sql, fmt, params=dict(params))
        except Exception as exc:
            raise ClickHouseError.from_chdb(exc) from None
        stats.add_result(result)
        return result.bytes(), stats

    def stream(
        self, sql: bytes, fmt: str, params: Mapping[str, str], stats: Stats
    ) -> Iterator[bytes] | None:
        """Stream a SELECT's output chunk by chunk, or None if chDB cannot stream it.

        The query is planned and its first chunk computed before this returns,
        so early errors still reach the client as a proper HTTP error.
        """
        try:
            stream = self._conn.send_query(sql, fmt, params=dict(params))
        except Exception as exc:
            if _STREAMING_NOT_SUPPORTED in str(exc):
                return None
            raise ClickHouseError.from_chdb(exc) from None
        self._streams.append(stream)
        try:
            first = stream.fetch()
        except Exception as exc:
            stream.close()
            raise ClickHouseError.from_chdb(exc) from None
        return self._chunks(stream, first, stats)

    def _chunks(self, stream: Any, first: Any, stats: Stats) -> Iterator[bytes]:
        chunk = first
        try:
            while chunk is not None:
                stats.add_result(chunk)
                yield chunk.bytes()
                if self._cancelled.is_set():
                    raise _cancelled_error()
                try:
                    chunk = stream.fetch()
                except Exception as exc:
                    raise ClickHouseError.from_chdb(exc) from None
        finally:
            stream.close()

    def insert(self, statement: bytes, fmt: str, chunks: Iterator[bytes]) -> Stats:
        """Feed INSERT data to the engine piece by piece and commit it."""
        try:
            inserter = self._conn.send_insert(statement.decode("utf-8"), fmt)
        except Exception as exc:
            raise ClickHouseError.from_chdb(exc) from None
        try:
            for chunk in chunks:
                if self._cancelled.is_set():
                    raise _cancelled_error()
                inserter.append(chunk)
            result = inserter.finish()
        except BaseException as exc:
            inserter.cancel()
            if isinstance(exc, (ClickHouseError, OSError)) or not isinstance(exc, Exception):
                raise  # our own errors, the client going away, interrupts
            raise ClickHouseError.from_chdb(exc) from None
        return Stats(written_rows=int(result.rows_written), written_bytes=int(result.bytes_written))


@dataclass
class RequestScope:
    """What a request asks of its connection before any SQL runs."""

    readonly: bool = False
    settings: Mapping[str, str] = field(default_factory=dict)
    database: str | None = None
    session_id: str | None = None
    session_user: str = ""
    session_timeout: float | None = None
    session_check: bool = False


class Engine:
    """The embedded ClickHouse: owns the data path, connections and sessions."""

    def __init__(self, path: str, connect: Callable[[str], Any] = chdb.connect) -> None:
        self.path = path
        self._connect = connect
        self._anchor = connect(path)
        self._sessions = SessionRegistry(self._open, _run)
        self.cancelled = threading.Event()
        self.version = _run(self._anchor, "SELECT version()").decode().strip()
        self.timezone = _run(self._anchor, "SELECT timezone()").decode().strip()

    def table_functions(self) -> list[str]:
        """Names of every table function this chDB build has."""
        rows = _run(self._anchor, "SELECT name FROM system.table_functions")
        return rows.decode().split()

    def setting_defaults(self, names: list[str]) -> dict[str, str]:
        """Current values of settings the HTTP layer interprets itself."""
        listed = ", ".join(quote_string(n) for n in names)
        rows = _run(
            self._anchor,
            f"SELECT name, value FROM system.settings WHERE name IN ({listed})",
            "JSONEachRow",
        )
        return {r["name"]: r["value"] for r in map(json.loads, rows.splitlines())}

    @contextmanager
    def connection(self, scope: RequestScope) -> Iterator[Connection]:
        """A connection prepared for one request (settings, database, read-only)."""
        if scope.session_id is None:
            conn = self._open(scope.readonly)
            connection = Connection(conn, self.cancelled)
            try:
                if scope.settings:
                    _run(conn, set_statement(scope.settings))
                if scope.database:
                    _run(conn, f"USE {quote_identifier(scope.database)}")
                yield connection
            finally:
                connection.release()
                conn.close()
            return
        session = self._sessions.lease(
            scope.session_user,
            scope.session_id,
            scope.readonly,
            scope.session_timeout,
            scope.session_check,
        )
        connection = Connection(session.conn, self.cancelled)
        try:
            session.apply(scope.settings, scope.database)
            yield connection
        finally:
            connection.release()
            try:
                for keyword in connection.statement_keywords:
                    session.after_statement(keyword)
            except ClickHouseError as exc:
                log.warning("session %s state unclear, dropping it: %s", scope.session_id, exc)
                self._sessions.discard(session)
            self._sessions.release(session)

    def _open(self, readonly: bool) -> Any:
        try:
            conn = self._connect(self.path)
        except Exception as exc:
            raise ClickHouseError.from_chdb(exc) from None
        if readonly:
            try:
                _run(conn, "SET readonly = 2")
            except BaseException:
                conn.close()
                raise
        return conn

    def reap_sessions(self) -> None:
        self._sessions.reap()

    def close(self) -> None:
        """Close sessions and the anchor; chDB flushes and shuts down with the last one."""
        self.cancelled.set()
        self._sessions.close_all()
        self._anchor.close()


def _cancelled_error() -> ClickHouseError:
    return ClickHouseError(QUERY_WAS_CANCELLED, "Query was cancelled: the server is shutting down")


def check_statement_count(count: int) -> None:
    """ClickHouse's HTTP interface runs one statement per request."""
    if count > 1:
        raise ClickHouseError(SYNTAX_ERROR, "Syntax error: Multi-statements are not allowed")
