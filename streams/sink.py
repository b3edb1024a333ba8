"""Writes validated events to ClickHouse in batches, idempotently, off the event loop.

The worker acknowledges a batch's Kafka offsets only after `EventSink.write` returned, so
every committed offset is covered by rows ClickHouse acknowledged. A retry of the same
batch carries the same `insert_deduplication_token` and is dropped by ClickHouse; a
redelivery after a crash (other batch boundaries) is collapsed by the `events` table's
ReplacingMergeTree on the event id.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from clickhouse.client import WRITER_SETTINGS, connect
from streams.events import Event, ms_to_datetime

log = logging.getLogger(__name__)

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


class EventSink:
    """Batched, retried inserts into `events` on a dedicated thread.

    `clickhouse-connect` is synchronous; running it on its own thread keeps the Faust
    event loop free for heartbeats and fetches while an insert is in flight
    (anchors.md §5.5 item 13).
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
        """Make a retrying write give up (raising `SinkStopped`) and release the client."""
        self._stopping.set()

    def close(self) -> None:
        self.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            self._client.close()

    async def write(self, items: Sequence[SourcedEvent]) -> None:
        """Insert `items`, one insert per Kafka partition; return once ClickHouse acked all."""
        by_partition: dict[tuple[str, int], list[SourcedEvent]] = {}
        for item in items:
            by_partition.setdefault((item.topic, item.partition), []).append(item)
        loop = asyncio.get_running_loop()
        for part in by_partition.values():
            await loop.run_in_executor(self._executor, self._insert_with_retries, part)

    def _insert_with_retries(self, items: list[SourcedEvent]) -> None:
        token = dedup_token("events", items)
        rows = [to_row(item) for item in items]
        backoff, refusals = 0.25, 0
        while True:
            try:
                self._insert(rows, token)
                return
            except OperationalError as exc:  # unreachable, timeouts: wait for it to return
                log.warning("ClickHouse unavailable (%s); retrying in %.1fs", exc, backoff)
            except DatabaseError as exc:  # refused: retry a few times, then give up
                refusals += 1
                if refusals >= self._max_refusals:
                    raise SinkFailed(f"ClickHouse refused the batch {token}: {exc}") from exc
                log.warning("ClickHouse refused a batch (%s); retrying in %.1fs", exc, backoff)
            self._drop_client()
            if self._stopping.wait(backoff):
                raise SinkStopped(f"stopped while retrying batch {token}")
            backoff = min(backoff * 2, self._max_backoff)

    def _insert(self, rows: list[list[Any]], token: str) -> None:
        if self._client is None:
            self._client = connect(self._url, settings=WRITER_SETTINGS)
        self._client.insert(
            "events",
            rows,
            column_names=list(EVENT_COLUMNS),
            settings={"insert_deduplication_token": token},
        )

    def _drop_client(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None
