"""ClickHouse connections, made the same way for the embedded server and a real one.

Every part talks to ClickHouse through clickhouse-connect over HTTP, so the code paths
that run in tests against chDB are the ones that run in production.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client

#: Settings every writer session uses: retried inserts with the same token are dropped
#: by ClickHouse, also in the tables that materialized views feed (anchors.md §7).
WRITER_SETTINGS: dict[str, Any] = {
    "insert_deduplicate": 1,
    "deduplicate_blocks_in_dependent_materialized_views": 1,
}


def connect(
    url: str,
    *,
    database: str | None = None,
    settings: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Client:
    """Open a client for `url` (`http[s]://user:password@host:port/database`).

    `database` overrides the one in the URL; pass "" to connect without one
    (for example to create it).
    """
    parts = urlsplit(url)
    db = parts.path.strip("/") if database is None else database
    return clickhouse_connect.get_client(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or (8443 if parts.scheme == "https" else 8123),
        username=unquote(parts.username or "default"),
        password=unquote(parts.password or ""),
        database=db or "__default__",
        secure=parts.scheme == "https",
        settings=settings or {},
        compress=False,
        **kwargs,
    )
