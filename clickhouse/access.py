"""What chDB would allow but a ClickHouse server user could not do.

chDB is clickhouse-local: it has no grants and no ``user_files_path`` jail,
so any query can read server files (``file('/proc/self/environ')`` holds the
server's passwords), fetch URLs, run executables or write ``INTO OUTFILE``.
clickhouse-server refuses ``INTO OUTFILE`` over HTTP for everyone, and a
read-only analyst without source grants gets ACCESS_DENIED for such table
functions. This module restores both rules. ``readonly=2`` alone is not
enough: it still allows ``file()`` and ``url()``.

Table functions are matched by name followed by ``(`` anywhere in the query
(a scalar ``file()`` reads files too). The list comes from the engine's own
``system.table_functions`` minus a set known to stay inside the database, so
table functions added by a future chDB are refused until judged safe.
"""

from __future__ import annotations

from collections.abc import Iterable

from clickhouse.errors import ACCESS_DENIED, INTO_OUTFILE_NOT_ALLOWED, ClickHouseError
from clickhouse.sql_scan import tokens

# Table functions that only read the database itself or generate data.
SAFE_TABLE_FUNCTIONS = frozenset(
    {
        "numbers", "numbers_mt", "zeros", "zeros_mt", "primes", "generaterandom",
        "generateseries", "generate_series", "values", "sqlstandardvalues", "view",
        "viewifpermitted", "viewexplain", "merge", "null", "format", "loop", "dictionary",
        "fuzzjson", "fuzzquery", "mergetreeindex", "mergetreeprojection", "mergetreetextindex",
        "mergetreeanalyzeindexes", "mergetreeanalyzeindexesuuid", "mergetreecodecblockcounts",
        "timeseriesdata", "timeseriesmetrics", "timeseriessamples", "timeseriestags",
        "timeseriesselector", "timeseriesmetricfamilies",
    }
)  # fmt: skip


class AccessPolicy:
    """Checks a statement against the server-side rules chDB does not enforce."""

    def __init__(self, table_functions: Iterable[str]) -> None:
        self.restricted = frozenset(n.lower() for n in table_functions) - SAFE_TABLE_FUNCTIONS

    def check(self, sql: bytes, user: str, readonly: bool) -> None:
        """Raise INTO_OUTFILE_NOT_ALLOWED or ACCESS_DENIED like clickhouse-server."""
        previous = None
        for token in tokens(sql):
            if previous is not None:
                if previous.upper == "INTO" and token.upper == "OUTFILE":
                    raise ClickHouseError(INTO_OUTFILE_NOT_ALLOWED, "INTO OUTFILE is not allowed")
                if readonly and token.text == b"(" and previous.kind in ("word", "quoted"):
                    name = previous.text.decode("utf-8", "replace").strip('`"').lower()
                    if name in self.restricted:
                        raise ClickHouseError(
                            ACCESS_DENIED,
                            f"{user}: Not enough privileges. To execute this query, it's "
                            f"necessary to have access to table function {name}() outside "
                            "read-only mode",
                        )
            previous = token
