"""Writes to ClickHouse in batches, idempotently, off the event loop.

The worker acknowledges a batch's Kafka offsets only after its inserts returned, so every
committed offset is covered by rows ClickHouse acknowledged. Every insert carries an
`insert_deduplication_token` that names its content, so a retry is dropped by ClickHouse.
Raw events are named by their Kafka positions: a redelivery after a crash (other batch
boundaries) may insert an event again, and the `events` table's ReplacingMergeTree collapses
the copies; `verify` and the worker both take the first copy of an id. Summary rows are named
by the step that produced them (streams.step_record).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from clickhouse.client import WRITER_SETTINGS, connect
from streams.events import Event, ms_to_datetime

log = logging.getLogger(__name__)

T = TypeVar("T")

EVENT_COLUMNS = (
    "id",
    "type",
    "ts",
    "user_id",
    "ip",
    "user_agent",
    "object_type",
    "object_id",
    "thread_id",
    "post_id",
    "received_at",
    "_topic",
    "_partition",
    "_offset",
    "_index",
)


class SinkStopped(Exception):
    """The worker is stopping while ClickHouse is still failing: nothing is acknowledged."""


class SinkFailed(Exception):
    """ClickHouse refused a batch for a reason retries cannot fix."""


@dataclass(frozen=True)
class SourcedEvent:
    """A valid event with the Kafka position it came from."""

    event: Event
    topic: str
    partition: int
    offset: int
    index: int  # position inside a batched (JSON array) message
    received_at_ms: int


def to_row(item: SourcedEvent) -> list[Any]:
    """The `events` row for one event, in `EVENT_COLUMNS` order."""
    ev = item.event
    return [
        ev.id,
        ev.type,
        ms_to_datetime(ev.ts_ms),
        ev.user_id,
        ev.ip or "",
        ev.user_agent or "",
        ev.object_type or "",
        ev.object_id,
        ev.thread_id,
        ev.post_id,
        ms_to_datetime(item.received_at_ms),
        item.topic,
        item.partition,
        item.offset,
        item.index,
    ]


def dedup_token(table: str, items: Sequence[SourcedEvent]) -> str:
    """A token that names exactly these Kafka positions, so a retry is recognised."""
    first, last = items[0], items[-1]
    return (
        f"{table}:{first.topic}:{first.partition}:"
        f"{first.offset}.{first.index}-{last.offset}.{last.index}:{len(items)}"
    )


class ClickHouseSink:
    """Idempotent, retried ClickHouse calls on one dedicated thread.

    `clickhouse-connect` is synchronous; running it on its own thread keeps the Faust
    event loop free for heartbeats and fetches while an insert is in flight
    (anchors.md §5.5 item 13). Everything the worker asks of ClickHouse goes through
    `retrying`: while ClickHouse is unreachable it waits with a growing backoff (the worker
    holds its batch meanwhile, and Faust stops fetching once its buffers are full, so memory
    stays bounded); a statement ClickHouse refuses five times stops the worker (`SinkFailed`).
    """

    def __init__(
        self,
        url: str,
        *,
        max_backoff_seconds: float = 10.0,
        max_refusals: int = 5,
    ) -> None:
        self._url = url
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ch-sink")
        self._client: Client | None = None
        self._stopping = threading.Event()
        self._max_backoff = max_backoff_seconds
        self._max_refusals = max_refusals

    def stop(self) -> None:
        """Make a retrying call give up (raising `SinkStopped`)."""
        self._stopping.set()

    def close(self) -> None:
        self.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            self._client.close()

    async def run(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the sink's thread (where it may call `retrying`)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn)

    async def write_events(self, items: Sequence[SourcedEvent]) -> None:
        """Insert `items`, one insert per Kafka partition; return once ClickHouse acked all."""
        by_partition: dict[tuple[str, int], list[SourcedEvent]] = {}
        for item in items:
            by_partition.setdefault((item.topic, item.partition), []).append(item)
        for part in by_partition.values():
            rows = [to_row(item) for item in part]
            await self.run(
                partial(self.insert, "events", EVENT_COLUMNS, rows, dedup_token("events", part))
            )

    def insert(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], token: str
    ) -> None:
        """Insert one block under `token`, so that a repeat of it is dropped by ClickHouse."""
        if not rows:
            return
        settings = {"insert_deduplication_token": token}
        self.retrying(
            lambda client: client.insert(
                table, rows, column_names=list(columns), settings=settings
            ),
            f"the batch {token}",
        )

    def count_rows(self, tables: Sequence[str], user_id: int) -> dict[str, int]:
        """How many rows of each table hold `user_id` (a purge's audit)."""
        counts = {}
        for table in tables:
            sql = f"SELECT count() FROM {table} WHERE user_id = {{u:UInt64}}"

            def count(client: Client, sql: str = sql) -> int:
                return int(client.query(sql, parameters={"u": user_id}).result_rows[0][0])

            counts[table] = self.retrying(count, f"counting a purged user's rows in {table}")
        return counts

    def delete_rows(self, tables: Sequence[str], user_id: int) -> None:
        """Delete every row of `user_id` from the tables, waiting until they are gone
        (a mutation: the rows leave the parts, not just the query results)."""
        for table in tables:
            sql = (
                f"ALTER TABLE {table} DELETE WHERE user_id = {{u:UInt64}} "
                "SETTINGS mutations_sync = 2"
            )

            def delete(client: Client, sql: str = sql) -> None:
                client.command(sql, parameters={"u": user_id})

            self.retrying(delete, f"deleting a purged user's rows from {table}")

    def retrying(self, call: Callable[[Client], T], what: str) -> T:
        """Run `call` with the sink's client, retried as the class docstring says; sink thread
        only."""
        backoff, refusals = 0.25, 0
        while True:
            try:
                if self._client is None:
                    self._client = connect(self._url, settings=WRITER_SETTINGS)
                return call(self._client)
            except OperationalError as exc:  # unreachable, timeouts: wait for it to return
                log.warning("ClickHouse unavailable (%s); retrying in %.1fs", exc, backoff)
            except DatabaseError as exc:  # refused: retry a few times, then give up
                refusals += 1
                if refusals >= self._max_refusals:
                    raise SinkFailed(f"ClickHouse refused {what}: {exc}") from exc
                log.warning("ClickHouse refused %s (%s); retrying in %.1fs", what, exc, backoff)
            self._drop_client()
            if self._stopping.wait(backoff):
                raise SinkStopped(f"stopped while retrying {what}")
            backoff = min(backoff * 2, self._max_backoff)

    def _drop_client(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None
