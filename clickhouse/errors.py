"""ClickHouse-style errors for the embedded server.

ClickHouse clients recognise a failure by three things: the HTTP status, the
``X-ClickHouse-Exception-Code`` header and a body of the form
``Code: N. DB::Exception: message. (NAME) (version ...)``. chDB raises plain
``RuntimeError`` whose text already starts with ``Code: N.``; this module turns
both those and the server's own failures into one exception type that knows
how to render itself the way clickhouse-server does.
"""

from __future__ import annotations

import re
from http import HTTPStatus

# Codes the server raises itself, plus every code ClickHouse maps to a non-500 status.
# Numbers are ClickHouse's (src/Common/ErrorCodes.cpp); names are what clients match on.
CODE_NAMES: dict[int, str] = {
    6: "CANNOT_PARSE_TEXT",
    8: "THERE_IS_NO_COLUMN",
    15: "DUPLICATE_COLUMN",
    25: "CANNOT_PARSE_ESCAPE_SEQUENCE",
    26: "CANNOT_PARSE_QUOTED_STRING",
    27: "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
    33: "CANNOT_READ_ALL_DATA",
    36: "BAD_ARGUMENTS",
    37: "UNKNOWN_ELEMENT_IN_AST",
    38: "CANNOT_PARSE_DATE",
    41: "CANNOT_PARSE_DATETIME",
    44: "ILLEGAL_COLUMN",
    46: "UNKNOWN_FUNCTION",
    47: "UNKNOWN_IDENTIFIER",
    48: "NOT_IMPLEMENTED",
    50: "UNKNOWN_TYPE",
    53: "TYPE_MISMATCH",
    56: "UNKNOWN_STORAGE",
    60: "UNKNOWN_TABLE",
    62: "SYNTAX_ERROR",
    63: "UNKNOWN_AGGREGATE_FUNCTION",
    72: "CANNOT_PARSE_NUMBER",
    73: "UNKNOWN_FORMAT",
    76: "CANNOT_OPEN_FILE",
    78: "UNKNOWN_TYPE_OF_QUERY",
    81: "UNKNOWN_DATABASE",
    89: "UNKNOWN_COMPRESSION_METHOD",
    115: "UNKNOWN_SETTING",
    117: "INCORRECT_DATA",
    123: "UNKNOWN_TYPE_OF_AST_NODE",
    152: "UNKNOWN_DIRECTION_OF_SORTING",
    159: "TIMEOUT_EXCEEDED",
    164: "READONLY",
    167: "TOO_DEEP_AST",
    168: "TOO_BIG_AST",
    192: "UNKNOWN_USER",
    193: "WRONG_PASSWORD",
    194: "REQUIRED_PASSWORD",
    209: "SOCKET_TIMEOUT",
    210: "NETWORK_ERROR",
    223: "UNEXPECTED_AST_STRUCTURE",
    229: "QUERY_IS_TOO_LARGE",
    271: "CANNOT_DECOMPRESS",
    321: "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
    336: "UNKNOWN_DATABASE_ENGINE",
    344: "SUPPORT_IS_DISABLED",
    358: "INTO_OUTFILE_NOT_ALLOWED",
    372: "SESSION_NOT_FOUND",
    373: "SESSION_IS_LOCKED",
    376: "CANNOT_PARSE_UUID",
    381: "HTTP_LENGTH_REQUIRED",
    394: "QUERY_WAS_CANCELLED",
    427: "CANNOT_COMPILE_REGEXP",
    439: "CANNOT_SCHEDULE_TASK",
    441: "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING",
    497: "ACCESS_DENIED",
    511: "UNKNOWN_ROLE",
    512: "SET_NON_GRANTED_ROLE",
    516: "AUTHENTICATION_FAILED",
    675: "CANNOT_PARSE_IPV4",
    676: "CANNOT_PARSE_IPV6",
    779: "UNSUPPORTED_MEDIA_TYPE",
    1000: "POCO_EXCEPTION",
    1001: "STD_EXCEPTION",
    202: "TOO_MANY_SIMULTANEOUS_QUERIES",
    1002: "UNKNOWN_EXCEPTION",
}

CANNOT_READ_ALL_DATA = 33
BAD_ARGUMENTS = 36
NOT_IMPLEMENTED = 48
SYNTAX_ERROR = 62
UNKNOWN_DATABASE = 81
UNKNOWN_COMPRESSION_METHOD = 89
UNKNOWN_SETTING = 115
READONLY = 164
SOCKET_TIMEOUT = 209
CANNOT_DECOMPRESS = 271
SUPPORT_IS_DISABLED = 344
INTO_OUTFILE_NOT_ALLOWED = 358
SESSION_NOT_FOUND = 372
SESSION_IS_LOCKED = 373
QUERY_WAS_CANCELLED = 394
ACCESS_DENIED = 497
QUERY_IS_TOO_LARGE = 229
TOO_MANY_SIMULTANEOUS_QUERIES = 202
AUTHENTICATION_FAILED = 516
UNSUPPORTED_MEDIA_TYPE = 779
UNKNOWN_EXCEPTION = 1002

# Mirrors exceptionCodeToHTTPStatus() in ClickHouse's src/Server/HTTP. Note that
# AUTHENTICATION_FAILED is 403 (only REQUIRED_PASSWORD is 401) and READONLY is 500.
_UNAUTHORIZED = {194}
_FORBIDDEN = {192, 193, 516, 512, 497}
_BAD_REQUEST = {
    36, 427, 6, 25, 26, 38, 41, 72, 441, 675, 676, 27, 376, 15, 44, 37, 123, 8, 167, 168,
    223, 62, 117, 53, 321,
}  # fmt: skip
_NOT_FOUND = {60, 46, 47, 50, 56, 81, 115, 152, 63, 73, 336, 78, 511}
_OTHER: dict[int, HTTPStatus] = {
    229: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    202: HTTPStatus.SERVICE_UNAVAILABLE,
    48: HTTPStatus.NOT_IMPLEMENTED,
    209: HTTPStatus.SERVICE_UNAVAILABLE,
    76: HTTPStatus.SERVICE_UNAVAILABLE,
    381: HTTPStatus.LENGTH_REQUIRED,
    159: HTTPStatus.REQUEST_TIMEOUT,
    439: HTTPStatus.SERVICE_UNAVAILABLE,
    779: HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
}

_CODE_RE = re.compile(r"Code:\s*(\d+)\.\s*")
_NAME_SUFFIX_RE = re.compile(r"\s*\(([A-Z][A-Z0-9_]+)\)\s*$")
_VERSION_SUFFIX_RE = re.compile(r"\s*\(version\s+(?:[^()]|\([^()]*\))*\)\s*$")
_WRAPPER_PREFIXES = (
    "Streaming query failed: ",
    "Streaming insert append failed: ",
    "Streaming insert finish failed: ",
    "Failed to create connection: ",
)


def http_status_for(code: int) -> HTTPStatus:
    """The HTTP status clickhouse-server answers with for an exception code."""
    if code in _UNAUTHORIZED:
        return HTTPStatus.UNAUTHORIZED
    if code in _FORBIDDEN:
        return HTTPStatus.FORBIDDEN
    if code in _BAD_REQUEST:
        return HTTPStatus.BAD_REQUEST
    if code in _NOT_FOUND:
        return HTTPStatus.NOT_FOUND
    return _OTHER.get(code, HTTPStatus.INTERNAL_SERVER_ERROR)


class ClickHouseError(Exception):
    """An error to report to the client exactly as clickhouse-server would.

    ``message`` is the bare exception text (no ``Code:`` prefix, no name or
    version suffix); ``render()`` adds those back in ClickHouse's layout.
    """

    def __init__(self, code: int, message: str, name: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.name = name or CODE_NAMES.get(code, "UNKNOWN_EXCEPTION")

    @property
    def http_status(self) -> HTTPStatus:
        return http_status_for(self.code)

    def render(self, version: str) -> str:
        """``Code: N. DB::Exception: msg. (NAME) (version V)`` as the server prints it."""
        text = self.message.rstrip()
        if not text.endswith("."):
            text += "."
        return f"Code: {self.code}. DB::Exception: {text} ({self.name}) (version {version})"

    @classmethod
    def from_chdb(cls, exc: BaseException) -> ClickHouseError:
        """Parse chDB's exception text (``Code: N. DB::Exception: ... (NAME)``)."""
        return cls.from_text(str(exc))

    @classmethod
    def from_text(cls, raw: str) -> ClickHouseError:
        """Split ClickHouse exception text into code, message and name.

        chDB sometimes wraps the text ("Streaming query failed: Code: ...") and
        sometimes nests one exception in another; the first ``Code:`` wins, as
        it does in clickhouse-server's own output.
        """
        text = raw.strip()
        for prefix in _WRAPPER_PREFIXES:
            if text.startswith(prefix):
                text = text[len(prefix) :]
        match = _CODE_RE.search(text)
        if match is None:
            return cls(UNKNOWN_EXCEPTION, text or "Unknown exception")
        code = int(match.group(1))
        body = text[match.end() :]
        body = body.removeprefix("DB::Exception: ")
        body = _VERSION_SUFFIX_RE.sub("", body)
        name_match = _NAME_SUFFIX_RE.search(body)
        name = None
        if name_match is not None:
            name = name_match.group(1)
            body = body[: name_match.start()]
        body = _VERSION_SUFFIX_RE.sub("", body)
        return cls(code, body.strip(), name or CODE_NAMES.get(code))
