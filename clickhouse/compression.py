"""HTTP body compression as clickhouse-server speaks it.

Request bodies arrive with ``Content-Encoding`` (clickhouse-connect compresses
inserts with lz4 by default); responses are compressed when the client sets
``enable_http_compression=1`` and sends ``Accept-Encoding``. gzip, deflate, xz
and bz2 come from the standard library. zstd and lz4 come from
``backports.zstd`` and ``lz4``, which clickhouse-connect itself requires, so
they are present wherever the default client is; they are imported lazily and
reported as unsupported if missing.
"""

from __future__ import annotations

import bz2
import importlib
import lzma
import zlib
from collections.abc import Callable
from types import ModuleType
from typing import Any, Protocol

from clickhouse.errors import (
    CANNOT_DECOMPRESS,
    SUPPORT_IS_DISABLED,
    UNKNOWN_COMPRESSION_METHOD,
    ClickHouseError,
)


class Encoder(Protocol):
    """Incremental compressor for a response body."""

    def compress(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


def _optional_module(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


_zstd = _optional_module("backports.zstd")
_lz4_frame = _optional_module("lz4.frame")


class _FrameDecoder:
    """Decode a body that may hold several concatenated frames/members.

    clickhouse-connect compresses each insert block as its own frame, and
    ``cat a.gz b.gz | curl`` is legal too, so a decoder that reached the end
    of one frame is replaced by a fresh one for the remaining bytes.
    """

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._current: Any = None

    def decompress(self, data: bytes) -> bytes:
        out: list[bytes] = []
        while data:
            if self._current is None:
                self._current = self._factory()
            out.append(self._current.decompress(data))
            if self._current.eof:
                data = self._current.unused_data
                self._current = None
            else:
                data = b""
        return b"".join(out)

    def finish(self) -> None:
        if self._current is not None and not self._current.eof:
            raise ClickHouseError(CANNOT_DECOMPRESS, "Compressed request body is truncated")


def _decoder_factory(encoding: str) -> Callable[[], Any]:
    if encoding in ("gzip", "x-gzip"):
        return lambda: zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return lambda: zlib.decompressobj(zlib.MAX_WBITS)
    if encoding == "xz":
        return lzma.LZMADecompressor
    if encoding in ("bz2", "bzip2"):
        return bz2.BZ2Decompressor
    if encoding == "zstd" and _zstd is not None:
        return _zstd.ZstdDecompressor  # type: ignore[no-any-return]
    if encoding == "lz4" and _lz4_frame is not None:
        return _lz4_frame.LZ4FrameDecompressor  # type: ignore[no-any-return]
    if encoding in ("zstd", "lz4", "br", "snappy"):
        raise ClickHouseError(
            SUPPORT_IS_DISABLED, f"{encoding} compression is not available in this server"
        )
    raise ClickHouseError(
        UNKNOWN_COMPRESSION_METHOD,
        f"Unknown compression method '{encoding}'. Supported: gzip, deflate, xz, bz2, zstd, lz4",
    )


def request_decoder(content_encoding: str | None) -> _FrameDecoder | None:
    """A decoder for a request body's ``Content-Encoding``, or None for identity."""
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity", "none"):
        return None
    return _FrameDecoder(_decoder_factory(encoding))


def decode_error(exc: Exception) -> ClickHouseError:
    """Report a corrupt compressed body the way the server does."""
    return ClickHouseError(CANNOT_DECOMPRESS, f"Cannot decompress request body: {exc}")


class _ZlibEncoder:
    """gzip/deflate with a sync flush per chunk, so streamed rows reach the client."""

    def __init__(self, level: int, wbits: int) -> None:
        self._obj = zlib.compressobj(level, zlib.DEFLATED, wbits)

    def compress(self, data: bytes) -> bytes:
        return self._obj.compress(data) + self._obj.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self._obj.flush(zlib.Z_FINISH)


class _ZstdEncoder:
    def __init__(self, module: ModuleType) -> None:
        self._module = module
        self._obj = module.ZstdCompressor(level=3)

    def compress(self, data: bytes) -> bytes:
        out: bytes = self._obj.compress(data, mode=self._module.ZstdCompressor.FLUSH_BLOCK)
        return out

    def finish(self) -> bytes:
        out: bytes = self._obj.flush(mode=self._module.ZstdCompressor.FLUSH_FRAME)
        return out


class _Lz4Encoder:
    def __init__(self, module: ModuleType) -> None:
        self._obj = module.LZ4FrameCompressor(auto_flush=True)
        self._header: bytes = self._obj.begin()

    def compress(self, data: bytes) -> bytes:
        out: bytes = self._header + self._obj.compress(data)
        self._header = b""
        return out

    def finish(self) -> bytes:
        out: bytes = self._header + self._obj.flush()
        self._header = b""
        return out


def _accepted(accept_encoding: str) -> dict[str, float]:
    """Parse ``Accept-Encoding`` into {token: q}; q=0 means refused."""
    accepted: dict[str, float] = {}
    for part in accept_encoding.split(","):
        token, _, params = part.strip().partition(";")
        q = 1.0
        params = params.strip()
        if params.lower().startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                q = 0.0
        if token:
            accepted[token.strip().lower()] = q
    return accepted


def choose_response_encoding(accept_encoding: str | None) -> str | None:
    """Pick the response encoding in clickhouse-server's order of preference."""
    if not accept_encoding:
        return None
    accepted = _accepted(accept_encoding)
    wildcard = accepted.get("*", 0.0) > 0
    available = ["zstd"] if _zstd is not None else []
    available += ["lz4"] if _lz4_frame is not None else []
    available += ["gzip", "deflate"]
    for name in available:
        if accepted.get(name, 1.0 if wildcard else 0.0) > 0:
            return name
    return None


def response_encoder(encoding: str, level: int = 3) -> Encoder:
    """A streaming encoder for a negotiated response encoding."""
    if encoding == "gzip":
        return _ZlibEncoder(level, 16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return _ZlibEncoder(level, zlib.MAX_WBITS)
    if encoding == "zstd" and _zstd is not None:
        return _ZstdEncoder(_zstd)
    if encoding == "lz4" and _lz4_frame is not None:
        return _Lz4Encoder(_lz4_frame)
    raise ValueError(f"unsupported response encoding {encoding}")
