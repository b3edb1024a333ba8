"""One HTTP request against the embedded engine, answered as clickhouse-server would.

The request is routed (``/ping``, ``/replicas_status``, queries on any other
path), authenticated, its SQL assembled from the ``query`` parameter and the
body, then either fed to the engine as INSERT data or run as a query whose
result is streamed (or buffered when the client asked to wait for the end).
"""

from __future__ import annotations

import contextlib
import io
import logging
import secrets
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from clickhouse.access import AccessPolicy
from clickhouse.auth import UserSpec, authenticate, extract_credentials
from clickhouse.compression import choose_response_encoding
from clickhouse.engine import Connection, Engine, RequestScope, Stats, check_statement_count
from clickhouse.errors import (
    NOT_IMPLEMENTED,
    READONLY,
    SYNTAX_ERROR,
    TOO_MANY_SIMULTANEOUS_QUERIES,
    UNKNOWN_EXCEPTION,
    ClickHouseError,
)
from clickhouse.http_protocol import (
    HTTP_LAYER_SETTINGS,
    HeaderMap,
    Plan,
    RequestBody,
    RequestParams,
    content_type_for,
    is_streamable,
    parse_bool,
    parse_multipart,
    parse_params,
    parse_query_string,
    plan_request,
)
from clickhouse.responses import ResponseWriter, exception_block, summary_header
from clickhouse.sql_scan import first_keyword, output_format

log = logging.getLogger("clickhouse.server")

KEEP_ALIVE_SECONDS = 30
_GET_ALLOWED_CONTROL = ("SET", "USE")
_PING_ROUTES = ("/ping", "/replicas_status")
DEFAULT_MAX_CONCURRENT_QUERIES = 100


class ClickHouseHTTPServer(ThreadingHTTPServer):
    """Threaded HTTP server holding the engine, users and in-flight bookkeeping."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the stdlib's 5 refuses connections when clients burst

    def __init__(
        self,
        address: tuple[str, int],
        engine: Engine,
        users: Mapping[str, UserSpec],
        max_concurrent_queries: int = DEFAULT_MAX_CONCURRENT_QUERIES,
    ) -> None:
        super().__init__(address, Handler)
        # Each query holds a thread and a chDB connection: bound them, as clickhouse-server's
        # max_concurrent_queries does, instead of letting a burst exhaust the machine.
        self.max_concurrent_queries = max_concurrent_queries
        self.query_slots = threading.BoundedSemaphore(max_concurrent_queries)
        self.engine = engine
        self.users = dict(users)
        self.display_name = socket.gethostname()
        self.http_defaults = engine.setting_defaults(sorted(HTTP_LAYER_SETTINGS))
        self.access = AccessPolicy(engine.table_functions())
        self.stopping = threading.Event()
        self._state = threading.Condition()
        self._active = 0
        self._idle: set[socket.socket] = set()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Connection-level failures (bad request lines, resets) go to the log, not stderr."""
        log.warning(
            "connection from %s failed", client_address, exc_info=log.isEnabledFor(logging.DEBUG)
        )

    def request_started(self, sock: socket.socket) -> None:
        with self._state:
            self._active += 1
            self._idle.discard(sock)

    def request_finished(self, sock: socket.socket) -> None:
        with self._state:
            self._active -= 1
            if not self.stopping.is_set():
                self._idle.add(sock)
            self._state.notify_all()

    def connection_closed(self, sock: socket.socket) -> None:
        with self._state:
            self._idle.discard(sock)

    def begin_shutdown(self) -> None:
        """Stop serving keep-alive connections that are waiting for a next request."""
        self.stopping.set()
        with self._state:
            idle, self._idle = list(self._idle), set()
        for sock in idle:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)

    def wait_idle(self, timeout: float) -> bool:
        """Wait for in-flight requests to finish; False if some are still running."""
        deadline = time.monotonic() + timeout
        with self._state:
            while self._active > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._state.wait(remaining)
        return True


class Handler(BaseHTTPRequestHandler):
    """ClickHouse's HTTP interface over the embedded engine."""

    protocol_version = "HTTP/1.1"
    server_version = "ClickHouse"
    sys_version = ""
    timeout = KEEP_ALIVE_SECONDS
    server: ClickHouseHTTPServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; with Nagle on, the second
        # waits for the client's delayed ACK (~40 ms per request).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._user = "-"

    def finish(self) -> None:
        self.server.connection_closed(self.connection)
        super().finish()

    def version_string(self) -> str:
        return "ClickHouse"

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Requests are logged once, with more detail, by ``_serve``."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:  # ``curl -T file`` uploads INSERT data with PUT
        self._serve()

    def do_HEAD(self) -> None:
        """Health checks only: HEAD cannot carry a query result."""
        path = urlsplit(self.path).path
        self._send_simple(200 if path in (*_PING_ROUTES, "/") else 405, b"Ok.\n")

    # -- request entry -------------------------------------------------------

    def _serve(self) -> None:
        started = time.monotonic()
        self.server.request_started(self.connection)
        self._query_id = str(uuid.uuid4())
        self._sql_preview = ""
        self._response: ResponseWriter | None = None
        self._body: RequestBody | None = None
        status = 200
        try:
            if self.server.stopping.is_set():
                self.close_connection = True
            status = self._route()
        except ClickHouseError as exc:
            status = self._fail(exc)
        except OSError as exc:  # the client went away or stalled past the socket timeout
            log.info("connection to %s lost: %s", self.address_string(), exc)
            self.close_connection = True
            status = 499
        except Exception:
            log.exception("internal error while serving %s", self.path)
            status = self._fail(ClickHouseError(UNKNOWN_EXCEPTION, "Internal server error"))
        finally:
            if self.server.stopping.is_set():
                self.close_connection = True
            self.server.request_finished(self.connection)
        log.debug(
            "%s %s %s user=%s status=%s %.1fms query_id=%s %s",
            self.address_string(), self.command, urlsplit(self.path).path, self._user, status,
            (time.monotonic() - started) * 1000, self._query_id, self._sql_preview,
        )  # fmt: skip

    def _route(self) -> int:
        url = urlsplit(self.path)
        pairs = parse_query_string(url.query)
        if url.path in _PING_ROUTES or (
            url.path == "/" and self.command == "GET" and all(k != "query" for k, _ in pairs)
        ):
            self._drain_body()
            return self._send_simple(200, b"Ok.\n")
        return self._query(pairs)

    def _drain_body(self) -> None:
        RequestBody(self.rfile, HeaderMap(self.headers)).drain()

    # -- queries -------------------------------------------------------------

    def _query(self, pairs: list[tuple[str, str]]) -> int:
        headers = HeaderMap(self.headers)
        body = RequestBody(self.rfile, headers)
        self._body = body
        content_type = headers.get("Content-Type", "")
        if content_type.lower().startswith("multipart/form-data"):
            fields, has_files = parse_multipart(content_type, body.read_all())
            if has_files:
                raise ClickHouseError(
                    NOT_IMPLEMENTED, "External data (file fields) is not supported"
                )
            pairs = pairs + fields
            body = RequestBody(io.BytesIO(), {})
        params = parse_params(pairs)
        self._query_id = params.query_id or self._query_id
        user, password = extract_credentials(headers, params.raw)
        spec = authenticate(self.server.users, user, password)
        self._user = user
        plan = plan_request(params.query, body)
        self._sql_preview = plan.sql[:300].decode("utf-8", "replace").replace("\n", " ")
        self.server.access.check(plan.sql, user, spec.readonly)
        scope = RequestScope(
            readonly=spec.readonly,
            settings=params.settings,
            database=params.database or headers.get("X-ClickHouse-Database") or None,
            session_id=params.session_id,
            session_user=user,
            session_timeout=params.session_timeout,
            session_check=params.session_check,
        )
        if not self.server.query_slots.acquire(blocking=False):
            raise ClickHouseError(
                TOO_MANY_SIMULTANEOUS_QUERIES,
                f"Too many simultaneous queries. Maximum: {self.server.max_concurrent_queries}",
            )
        try:
            return self._run(plan, params, scope)
        finally:
            self.server.query_slots.release()

    def _run(self, plan: Plan, params: RequestParams, scope: RequestScope) -> int:
        """Run one authenticated, planned query in a chDB connection of its own."""
        with self.server.engine.connection(scope) as conn:
            kind = "MUTATING"  # the INSERT header alone does not parse; it is one statement
            if not plan.sql.strip(b" \t\r\n;"):
                raise ClickHouseError(SYNTAX_ERROR, "Empty query")
            if plan.insert_format is None:
                kind, count = conn.classify(plan.sql)
                check_statement_count(count)
            self._check_method(kind, plan.sql)
            if plan.insert_format is not None:
                started = time.monotonic_ns()
                stats = conn.insert(plan.sql, plan.insert_format, plan.insert_data)
                return self._send_done(stats, started)
            return self._run_query(conn, params, plan.sql, produces_output=kind == "READ_ONLY")

    def _check_method(self, kind: str, sql: bytes) -> None:
        """GET implies readonly in ClickHouse: only reads and SET/USE may pass."""
        if self.command != "GET" or kind in ("READ_ONLY", "UNKNOWN"):
            return
        if kind == "CONTROL" and first_keyword(sql) in _GET_ALLOWED_CONTROL:
            return
        raise ClickHouseError(
            READONLY,
            "Cannot execute query in readonly mode. For queries over HTTP, method GET implies "
            "readonly. You should use method POST for modifying queries",
        )

    def _run_query(
        self, conn: Connection, params: RequestParams, sql: bytes, produces_output: bool
    ) -> int:
        fmt = (
            output_format(sql)
            or params.default_format
            or self.headers.get("X-ClickHouse-Format")
            or "TabSeparated"
        )
        stats = Stats()
        started = time.monotonic_ns()
        if not produces_output:  # DDL, SET, INSERT ... SELECT: nothing to stream
            data, stats = conn.execute(sql, fmt, params.user_params)
            return self._send_done(stats, started, data)
        chunks = conn.stream(sql, fmt, params.user_params, stats) if is_streamable(fmt) else None
        if chunks is None:
            data, stats = conn.execute(sql, fmt, params.user_params)
            chunks = iter((data,))
        headers = self._result_headers(fmt)
        if params.wait_end_of_query:
            return self._send_buffered(params, headers, chunks, stats, started)
        return self._send_streamed(params, headers, chunks, stats, started)

    # -- responses -----------------------------------------------------------

    def _common_headers(self) -> dict[str, str]:
        return {
            "X-ClickHouse-Server-Display-Name": self.server.display_name,
            "X-ClickHouse-Query-Id": self._query_id,
            "X-ClickHouse-Timezone": self.server.engine.timezone,
            "Keep-Alive": f"timeout={KEEP_ALIVE_SECONDS}",
        }

    def _result_headers(self, fmt: str) -> dict[str, str]:
        headers = self._common_headers()
        headers["Content-Type"] = content_type_for(fmt)
        headers["X-ClickHouse-Format"] = fmt  # clickhouse-connect: "this statement has a result"
        return headers

    def _encoding(self, params: RequestParams) -> tuple[str | None, int]:
        settings = {**self.server.http_defaults, **params.http_settings}
        if not parse_bool(settings.get("enable_http_compression")):
            return None, 3
        try:
            level = int(settings.get("http_zlib_compression_level", "3"))
        except ValueError:
            level = 3
        return choose_response_encoding(self.headers.get("Accept-Encoding")), level

    def _send_done(self, stats: Stats, started: int, body: bytes = b"") -> int:
        """A statement without a result set (INSERT, DDL): summary, no format header."""
        headers = self._common_headers()
        headers["X-ClickHouse-Summary"] = summary_header(stats, started)
        return self._send_simple(200, body, headers)

    def _send_streamed(
        self,
        params: RequestParams,
        headers: dict[str, str],
        chunks: Iterator[bytes],
        stats: Stats,
        started: int,
    ) -> int:
        """Send headers as soon as the first chunk exists, then each chunk as it comes.

        An error after the headers can no longer change the status, so it is
        written into the body inside ``__exception__`` markers carrying the
        ``X-ClickHouse-Exception-Tag``, which clickhouse-connect detects.
        """
        first = next(chunks, b"")
        tag = secrets.token_hex(8)
        headers["X-ClickHouse-Exception-Tag"] = tag
        headers["X-ClickHouse-Summary"] = summary_header(stats, started)
        response = self._open_response(params if first else None)
        response.start(200, headers)
        try:
            response.write(first)
            for chunk in chunks:
                response.write(chunk)
        except ClickHouseError as exc:
            log.warning("query %s failed mid-stream: %s", self._query_id, exc.message)
            response.write(exception_block(tag, exc.render(self.server.engine.version)))
            self.close_connection = True
        response.finish()
        return 200

    def _send_buffered(
        self,
        params: RequestParams,
        headers: dict[str, str],
        chunks: Iterator[bytes],
        stats: Stats,
        started: int,
    ) -> int:
        """``wait_end_of_query=1``: run to the end first, so any error gets a real status.

        The result is spooled to a temporary file beyond 16 MiB instead of
        being held in memory, as clickhouse-server does.
        """
        with tempfile.SpooledTemporaryFile(max_size=16 << 20) as spool:
            size = 0
            for chunk in chunks:
                spool.write(chunk)
                size += len(chunk)
            spool.seek(0)
            headers["X-ClickHouse-Summary"] = summary_header(stats, started)
            response = self._open_response(params if size else None)
            response.start(200, headers)
            response.copy_from(spool)
            response.finish()
        return 200

    def _open_response(self, params: RequestParams | None) -> ResponseWriter:
        encoding, level = self._encoding(params) if params is not None else (None, 3)
        self._response = ResponseWriter(self, encoding, level)
        return self._response

    def _send_simple(self, status: int, body: bytes, headers: Mapping[str, str] = {}) -> int:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if "Content-Type" not in headers:
            self.send_header("Content-Type", "text/plain; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return status

    def _fail(self, exc: ClickHouseError) -> int:
        """Answer with ClickHouse's error layout; nothing but the message reaches the client."""
        log.warning(
            "query %s failed: code %d %s: %s", self._query_id, exc.code, exc.name, exc.message
        )
        body = self._body
        if body is not None and not body.drain():
            self.close_connection = True
        if self._response is not None and self._response.started:
            self.close_connection = True  # headers are gone; the stream is cut short
            return 200
        headers = self._common_headers()
        headers["X-ClickHouse-Exception-Code"] = str(exc.code)
        text = exc.render(self.server.engine.version) + "\n"
        try:
            return self._send_simple(int(exc.http_status), text.encode("utf-8"), headers)
        except OSError:
            self.close_connection = True
            return int(exc.http_status)
