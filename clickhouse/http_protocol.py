"""The request side of ClickHouse's HTTP interface: parameters, bodies, formats.

clickhouse-server mixes three kinds of URL parameters: protocol keys (``query``,
``database``, ``session_id``, ``param_x`` ...), settings handled by the HTTP
layer itself (``enable_http_compression`` ...), and every other query setting.
This module sorts them, reads request bodies (Content-Length or chunked, then
Content-Encoding), and knows per output format its Content-Type and whether
chDB's per-chunk output can be concatenated into one valid stream.
"""

from __future__ import annotations

import email.parser
import email.policy
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl

from clickhouse.compression import decode_error, request_decoder
from clickhouse.errors import (
    BAD_ARGUMENTS,
    CANNOT_READ_ALL_DATA,
    NOT_IMPLEMENTED,
    QUERY_IS_TOO_LARGE,
    UNKNOWN_SETTING,
    UNSUPPORTED_MEDIA_TYPE,
    ClickHouseError,
)
from clickhouse.sql_scan import find_insert_data

# URL parameters that belong to the HTTP protocol, never to the query's settings.
PROTOCOL_PARAMS = frozenset(
    {
        "query", "database", "default_format", "user", "password", "quota_key", "query_id",
        "session_id", "session_timeout", "session_check", "compress", "decompress",
        "buffer_size", "wait_end_of_query", "client_protocol_version", "role", "stacktrace",
    }
)  # fmt: skip

# Real ClickHouse settings that only steer the HTTP layer. The server interprets
# them itself and does not forward them to the engine, where they would do nothing.
HTTP_LAYER_SETTINGS = frozenset(
    {
        "enable_http_compression", "http_zlib_compression_level", "send_progress_in_http_headers",
        "http_headers_progress_interval_ms", "cancel_http_readonly_queries_on_client_close",
        "http_response_buffer_size", "http_wait_end_of_query", "add_http_cors_header",
        "http_native_compression_disable_checksumming_on_decompress",
    }
)  # fmt: skip

MAX_QUERY_HEAD = 256 * 1024  # ClickHouse's max_query_size: an INSERT's data must start within
MAX_BUFFERED_BODY = 128 << 20  # bodies that are not INSERT data are held in memory, up to this

_SETTING_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TRUE = ("1", "true", "yes", "on")

# Formats whose output for consecutive blocks can simply be concatenated: no
# header, footer or separator between blocks. Only these are streamed chunk by
# chunk; chDB renders every chunk as a complete document, so streaming e.g. JSON
# would repeat its header.
_STREAMABLE_FORMATS = frozenset(
    {
        "native", "rowbinary", "tabseparated", "tsv", "tabseparatedraw", "tsvraw", "raw", "csv",
        "jsoneachrow", "jsonlines", "ndjson", "jsoncompacteachrow", "jsonstringseachrow",
        "jsoncompactstringseachrow", "tskv", "lineasstring", "rawblob", "null",
    }
)  # fmt: skip


def is_streamable(fmt: str) -> bool:
    """Whether chunks of this output format may be sent as they come."""
    return fmt.lower() in _STREAMABLE_FORMATS


def content_type_for(fmt: str) -> str:
    """The Content-Type clickhouse-server sends for an output format."""
    low = fmt.lower()
    if low.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if low.startswith("csv"):
        header = "present" if "withnames" in low else "absent"
        return f"text/csv; charset=UTF-8; header={header}"
    if low.startswith(("json", "ndjson")):
        return "application/json; charset=UTF-8"
    if low == "xml":
        return "application/xml; charset=UTF-8"
    if low.startswith(("native", "rowbinary", "parquet", "arrow", "orc", "avro", "msgpack")):
        return "application/octet-stream"
    return "text/plain; charset=UTF-8"


def parse_bool(value: str | None) -> bool:
    return value is not None and value.strip().lower() in _TRUE


@dataclass
class RequestParams:
    """A request's parameters, sorted by who consumes them."""

    query: str = ""
    database: str | None = None
    default_format: str | None = None
    session_id: str | None = None
    session_timeout: float | None = None
    session_check: bool = False
    query_id: str | None = None
    wait_end_of_query: bool = False
    user_params: dict[str, str] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    http_settings: dict[str, str] = field(default_factory=dict)
    raw: dict[str, str] = field(default_factory=dict)


def _session_timeout(value: str | None) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError as exc:
        raise ClickHouseError(BAD_ARGUMENTS, f"Invalid session timeout: '{value}'") from exc


def parse_params(pairs: list[tuple[str, str]]) -> RequestParams:
    """Sort URL (and form) parameters; the last occurrence of a key wins, as in ClickHouse."""
    raw = dict(pairs)
    if parse_bool(raw.get("compress")) or parse_bool(raw.get("decompress")):
        raise ClickHouseError(
            NOT_IMPLEMENTED,
            "ClickHouse's internal block compression (compress=1/decompress=1) is not "
            "supported by the embedded server; use HTTP compression (Content-Encoding)",
        )
    out = RequestParams(raw=raw)
    out.query = raw.get("query", "")
    out.database = raw.get("database") or None
    out.default_format = raw.get("default_format") or None
    out.session_id = raw.get("session_id") or None
    out.session_timeout = _session_timeout(raw.get("session_timeout"))
    out.session_check = parse_bool(raw.get("session_check"))
    out.query_id = raw.get("query_id") or None
    out.wait_end_of_query = parse_bool(raw.get("wait_end_of_query"))
    for key, value in raw.items():
        if key.startswith("param_"):
            out.user_params[key[len("param_") :]] = value
        elif key in PROTOCOL_PARAMS:
            continue
        elif key in HTTP_LAYER_SETTINGS:
            out.http_settings[key] = value
        elif _SETTING_NAME_RE.match(key):
            out.settings[key] = value
        else:
            raise ClickHouseError(UNKNOWN_SETTING, f"Unknown setting '{key}'")
    if parse_bool(out.http_settings.get("http_wait_end_of_query")):
        out.wait_end_of_query = True
    return out


def parse_query_string(query_string: str) -> list[tuple[str, str]]:
    return parse_qsl(query_string, keep_blank_values=True)


def _truncated() -> ClickHouseError:
    """The client went away mid-body: never let a partial INSERT look complete."""
    return ClickHouseError(CANNOT_READ_ALL_DATA, "Unexpected end of the request body")


class Readable(Protocol):
    """The part of a socket file a request body is read through."""

    def read(self, size: int, /) -> bytes: ...

    def readline(self, size: int, /) -> bytes: ...


class RequestBody:
    """A request body as a stream of decoded chunks.

    Handles Content-Length and chunked transfer encoding (clickhouse-connect
    streams inserts chunked), then the Content-Encoding. Bodies are never held
    whole: an INSERT of any size flows through in pieces.
    """

    CHUNK = 1 << 20

    def __init__(self, rfile: Readable, headers: Mapping[str, str]) -> None:
        self._rfile = rfile
        transfer = headers.get("Transfer-Encoding", "").lower()
        self._chunked = "chunked" in transfer
        length = headers.get("Content-Length")
        self._remaining = int(length) if length and not self._chunked else 0
        self._chunk_left = 0
        self._eof = not self._chunked and self._remaining == 0
        self._decoder = request_decoder(headers.get("Content-Encoding"))
        self._pending = b""

    def _read_raw(self, size: int) -> bytes:
        """Up to ``size`` undecoded bytes; b"" at the end of the body."""
        if self._eof:
            return b""
        if not self._chunked:
            data = self._rfile.read(min(size, self._remaining))
            if not data:
                raise _truncated()
            self._remaining -= len(data)
            self._eof = self._remaining == 0
            return data
        if self._chunk_left == 0:
            line = self._rfile.readline(65537)
            if not line:
                raise _truncated()
            try:
                self._chunk_left = int(line.split(b";", 1)[0].strip() or b"0", 16)
            except ValueError as exc:
                raise ClickHouseError(BAD_ARGUMENTS, "Malformed chunked request body") from exc
            if self._chunk_left == 0:
                while self._rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailer headers
                self._eof = True
                return b""
        data = self._rfile.read(min(size, self._chunk_left))
        if not data:
            raise _truncated()
        self._chunk_left -= len(data)
        if self._chunk_left == 0:
            self._rfile.readline(3)  # CRLF after the chunk
        return data

    def read_chunk(self) -> bytes:
        """The next decoded piece (b"" at the end)."""
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        while True:
            raw = self._read_raw(self.CHUNK)
            if not raw:
                if self._decoder is not None:
                    self._decoder.finish()
                return b""
            if self._decoder is None:
                return raw
            try:
                data = self._decoder.decompress(raw)
            except ClickHouseError:
                raise
            except Exception as exc:
                raise decode_error(exc) from exc
            if data:
                return data

    def read_head(self, limit: int) -> bytes:
        """At least ``limit`` bytes (or all of a shorter body), kept for later chunks too."""
        parts: list[bytes] = []
        size = 0
        while size < limit:
            data = self.read_chunk()
            if not data:
                break
            parts.append(data)
            size += len(data)
        return b"".join(parts)

    def read_all(self, limit: int = MAX_BUFFERED_BODY) -> bytes:
        """The whole (decoded) body, refusing to hold more than ``limit`` bytes."""
        parts: list[bytes] = []
        size = 0
        for data in self.chunks():
            size += len(data)
            if size > limit:
                raise ClickHouseError(QUERY_IS_TOO_LARGE, f"Request body exceeds {limit} bytes")
            parts.append(data)
        return b"".join(parts)

    def chunks(self) -> Iterator[bytes]:
        return iter(self.read_chunk, b"")

    def drain(self, limit: int = 64 << 20) -> bool:
        """Discard the unread body so the connection can be reused; False if too big."""
        drained = 0
        try:
            while not self._eof:
                drained += len(self._read_raw(self.CHUNK))
                if drained > limit:
                    return False
        except (ClickHouseError, OSError):
            return False
        return True


def parse_multipart(content_type: str, body: bytes) -> tuple[list[tuple[str, str]], bool]:
    """Form fields of a multipart/form-data body, and whether it carried files.

    clickhouse-connect switches to multipart when server-side bind parameters
    get too long for the URL; fields are then ``query`` and ``param_*``.
    External-data files are reported so the caller can refuse them.
    """
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise ClickHouseError(UNSUPPORTED_MEDIA_TYPE, "Malformed multipart/form-data body")
    fields: list[tuple[str, str]] = []
    has_files = False
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        if part.get_filename():
            has_files = True
            continue
        payload = part.get_payload(decode=True)
        text = payload.decode("utf-8") if isinstance(payload, bytes) else ""
        fields.append((name, text))
    return fields, has_files


class HeaderMap(dict[str, str]):
    """Request headers with case-insensitive ``get``, as HTTP wants."""

    def __init__(self, headers: Any) -> None:
        super().__init__((k.lower(), v) for k, v in headers.items())

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


@dataclass
class Plan:
    """What a request asks for: a statement, and for an INSERT the streamed data."""

    sql: bytes
    insert_format: str | None = None
    insert_data: Iterator[bytes] = field(default_factory=lambda: iter(()))


def plan_request(query: str, body: RequestBody) -> Plan:
    """Assemble ``query`` + newline + body as ClickHouse does and find INSERT data.

    Only as much of the body is read as needed to find where the statement
    ends; INSERT data is then streamed from the body, never held whole.
    """
    prefix = query.encode("utf-8") + b"\n" if query else b""
    insert = find_insert_data(prefix) if prefix else None
    text = prefix
    if insert is None:
        text = prefix + body.read_head(MAX_QUERY_HEAD)
        insert = find_insert_data(text)
    if insert is not None:
        first = text[insert.data_offset :]
        return Plan(insert.statement, insert.format, _prepend(first, body.chunks()))
    if len(text) >= MAX_QUERY_HEAD:
        text += body.read_all(MAX_BUFFERED_BODY)
    return Plan(text)


def _prepend(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest
