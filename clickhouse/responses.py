"""The response side of ClickHouse's HTTP interface: body framing, summary, errors in streams.

Results go out with chunked transfer encoding (HTTP/1.1) so they can start
before the query ends, optionally compressed. ``X-ClickHouse-Summary`` carries
the counters clickhouse-connect turns into ``QuerySummary``. An error after the
headers were sent is written into the body between ``__exception__`` markers
tagged with ``X-ClickHouse-Exception-Tag``, the way clickhouse-server 25.11+
does, so clients notice a stream that failed half-way.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import IO, Protocol

from clickhouse.compression import Encoder, response_encoder
from clickhouse.engine import Stats


class _Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...

    def flush(self) -> object: ...


class HeaderSink(Protocol):
    """The part of BaseHTTPRequestHandler a response needs."""

    request_version: str
    close_connection: bool

    @property
    def wfile(self) -> _Writable: ...

    def send_response(self, code: int, message: str | None = None) -> None: ...

    def send_header(self, keyword: str, value: str) -> None: ...

    def end_headers(self) -> None: ...


class ResponseWriter:
    """Writes one response body: optional compression, chunked framing on HTTP/1.1."""

    def __init__(self, handler: HeaderSink, encoding: str | None, level: int = 3) -> None:
        self._handler = handler
        self._encoding = encoding
        self._encoder: Encoder | None = response_encoder(encoding, level) if encoding else None
        self._chunked = handler.request_version != "HTTP/1.0"
        self.started = False

    def start(self, status: int, headers: Mapping[str, str]) -> None:
        handler = self._handler
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        if self._encoding:
            handler.send_header("Content-Encoding", self._encoding)
        if self._chunked:
            handler.send_header("Transfer-Encoding", "chunked")
        else:
            handler.close_connection = True  # HTTP/1.0: the end of the body is the close
        handler.end_headers()
        self.started = True

    def write(self, data: bytes) -> None:
        if self._encoder is not None:
            data = self._encoder.compress(data)
        self._write_raw(data)

    def copy_from(self, source: IO[bytes]) -> None:
        while data := source.read(1 << 20):
            self.write(data)

    def _write_raw(self, data: bytes) -> None:
        if not data:
            return
        out = self._handler.wfile
        if self._chunked:
            out.write(b"%x\r\n" % len(data) + data + b"\r\n")
        else:
            out.write(data)

    def finish(self) -> None:
        if self._encoder is not None:
            self._write_raw(self._encoder.finish())
        if self._chunked:
            self._handler.wfile.write(b"0\r\n\r\n")
        self._handler.wfile.flush()


def exception_block(tag: str, text: str) -> bytes:
    """An error inside an already started body, as clickhouse-connect parses it:
    ``__exception__\\r\\n<tag>\\r\\n<message>\\n<length> <tag>\\r\\n__exception__\\r\\n``."""
    message = text.encode("utf-8")
    return b"__exception__\r\n%s\r\n%s\n%d %s\r\n__exception__\r\n" % (
        tag.encode(),
        message,
        len(message),
        tag.encode(),
    )


def summary_header(stats: Stats, started_ns: int) -> str:
    """``X-ClickHouse-Summary``: ClickHouse sends every counter as a string."""
    values = {
        "read_rows": stats.read_rows,
        "read_bytes": stats.read_bytes,
        "written_rows": stats.written_rows,
        "written_bytes": stats.written_bytes,
        "total_rows_to_read": stats.read_rows,
        "result_rows": stats.result_rows,
        "result_bytes": stats.result_bytes,
        "elapsed_ns": max(0, time.monotonic_ns() - started_ns),
    }
    return json.dumps({k: str(v) for k, v in values.items()}, separators=(",", ":"))
