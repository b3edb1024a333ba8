"""Runs the partition processors inside the Faust worker, and makes every step durable.

Per-user state lives in a plain Faust table (`user-state`, raw bytes, keyed by the user id as
decimal text: the key `forum-events` is partitioned by, so the table is co-partitioned with it
and needs no repartition topic). No windowed table and no `on_window_close` (anchors.md §5.5):
windows and finality are ours (streams.partition_processor).

Each step of a partition is written in this order (streams.step_record explains why):

1. the step record, under the partition's key in the table's changelog, and wait for Kafka;
2. the step's hour and session rows, one insert per table named after the step, and wait for
   ClickHouse (retried while it is down: the consumer is not acknowledged meanwhile);
3. the changed user entries (tombstones for users dropped), and wait for Kafka;
4. the caller acknowledges the messages, and Faust commits their offsets.

When a partition is (re)assigned, its processor is rebuilt from the restored table and its last
step record is replayed: rows inserted again (ClickHouse drops what it has), entries brought up
to the record, messages up to its end offset skipped. Rebalances and the idle-partition timer
take the same lock as the agent, so a step is never half-done when a partition moves.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final
from zoneinfo import ZoneInfo

import faust

from forum_analytics.settings import Settings
from streams.history import ClickHouseHistory
from streams.partition_processor import PartitionMark, PartitionProcessor, Positioned, StepConfig
from streams.partitioning import partition_for_user
from streams.sink import ClickHouseSink
from streams.step_record import StepRecord, partition_key
from streams.summary_rows import (
    HOURLY_COLUMNS,
    SESSION_COLUMNS,
    hourly_rows,
    session_rows,
    step_token,
)
from streams.user_entry import UserEntry
from streams.user_state import StateConfig

log = logging.getLogger("forum_analytics.worker")

TABLE_NAME: Final = "user-state"

#: Events per step at most: keeps a step record far below Kafka's 1 MB record limit.
MAX_STEP_EVENTS: Final = 2000


class StateMismatch(Exception):
    """The stored state was built under other settings; the message says what to do."""


@dataclass
class StepStats:
    """Counters the worker logs and later exports as metrics."""

    steps: int = 0
    hour_rows: int = 0
    session_rows: int = 0
    duplicates: int = 0
    late: int = 0
    beyond_horizon: int = 0


def step_config(settings: Settings) -> StepConfig:
    """The worker's `StepConfig` from its settings."""
    state = StateConfig(settings.session_timeout_minutes * 60_000, ZoneInfo(settings.time_zone))
    retention_ms = int(settings.state_retention_hours * 3_600_000)
    return StepConfig(state, settings.grace_minutes * 60_000, retention_ms)


class StepRunner:
    """The processors of the partitions this worker owns; see the module docstring."""

    def __init__(self, settings: Settings, app: faust.App, sink: ClickHouseSink) -> None:
        self.settings = settings
        self.app = app
        self.sink = sink
        self.config = step_config(settings)
        self.stats = StepStats()
        self.table = app.Table(
            TABLE_NAME,
            partitions=settings.topic_partitions,
            key_type=bytes,
            value_type=bytes,  # bytes: raw serializers, our own record formats
        )
        self.lock = asyncio.Lock()
        self.processors: dict[int, PartitionProcessor] = {}
        self.assigned: set[int] = set()
        self.ready = False
        app.on_partitions_revoked.connect(self._on_revoked)
        app.on_rebalance_complete.connect(self._on_rebalance_complete)

    # -- rebalances ----------------------------------------------------------------------------

    async def _on_revoked(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """Stop stepping until the table is restored; an idle step in flight finishes first."""
        self.ready = False
        async with self.lock:
            self.processors.clear()

    async def _on_rebalance_complete(
        self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any
    ) -> None:
        """The table is restored: note the partitions owned, forget entries of the others."""
        topic = self.settings.topic_events
        self.assigned = {tp.partition for tp in self.app.consumer.assignment() if tp.topic == topic}
        data = self.table.data
        for key in [k for k in list(data) if self._partition_of(k) not in self.assigned]:
            data.pop(key, None)
        self.ready = True
        log.info("partitions assigned: %s", sorted(self.assigned) or "none")

    def _partition_of(self, key: bytes) -> int:
        if key.startswith(b"~"):
            return int(key.rsplit(b":", 1)[1])
        return partition_for_user(int(key), self.settings.topic_partitions)

    # -- processors ----------------------------------------------------------------------------

    async def processor(self, partition: int) -> PartitionProcessor:
        """The partition's processor, rebuilt from the table (and its last step replayed) the
        first time after an assignment. Call with the lock held."""
        proc = self.processors.get(partition)
        if proc is not None:
            return proc
        entries, record = self._load(partition)
        wall = int(time.time() * 1000)
        mark = record.before if record is not None else PartitionMark()
        proc = PartitionProcessor(partition, self.config, mark, entries, wall)
        if record is not None:
            history = self._history(partition)
            replayed = await self.sink.run(
                partial(proc.step, record.events, wall, history, replay=record.mark)
            )
            await self.sink.run(partial(self._insert, record))
            await self._save(partition, replayed.changed)
            log.info(
                "partition %d: %d users restored, resuming after offset %d (step %d)",
                partition,
                len(entries),
                record.mark.end_offset,
                record.mark.seq,
            )
        self.processors[partition] = proc
        return proc

    def _load(self, partition: int) -> tuple[dict[int, UserEntry], StepRecord | None]:
        data = self.table.data
        record = None
        entries: dict[int, UserEntry] = {}
        state = self.config.state
        for key in list(data.keys()):
            if self._partition_of(key) != partition:
                continue
            value = data[key]
            if key.startswith(b"~"):
                record = StepRecord.from_bytes(value)
                continue
            try:
                entry = (
                    value if isinstance(value, UserEntry) else UserEntry.from_bytes(value, state)
                )
            except ValueError as exc:
                raise StateMismatch(
                    f"the worker state in {self.table.changelog_topic.get_topic_name()} cannot "
                    f"be used: {exc}. Start the worker under a new ANALYTICS_APP_ID (or delete "
                    "that topic) and rebuild the summaries (README, Recovery)."
                ) from exc
            data[key] = entry  # live objects from now on; the changelog keeps the bytes
            entries[entry.user_id] = entry
        return entries, record

    def _history(self, partition: int) -> ClickHouseHistory:
        return ClickHouseHistory(
            self.sink, self.settings.topic_events, partition, self.config.state.timeout_ms
        )

    # -- steps ---------------------------------------------------------------------------------

    async def run(self, partition: int, items: Sequence[Positioned]) -> None:
        """Step a partition through `items` (after its end offset, in offset order), durably,
        in steps of whole messages (a step's end offset covers every event of its messages).
        Call with the lock held."""
        proc = await self.processor(partition)
        for chunk in _whole_messages(items, MAX_STEP_EVENTS):
            await self._step(proc, chunk)

    async def _step(self, proc: PartitionProcessor, items: Sequence[Positioned]) -> None:
        wall = int(time.time() * 1000)
        history = self._history(proc.partition)
        step = await self.sink.run(partial(proc.step, items, wall, history))
        record = StepRecord.of(step)
        key, value = partition_key(proc.partition), record.to_bytes()
        self.table.data[key] = value
        self._send(key, value, proc.partition)
        await self.app.producer.flush()
        await self.sink.run(partial(self._insert, record))
        await self._save(proc.partition, step.changed)
        stats = self.stats
        stats.steps += 1
        stats.hour_rows += len(step.hours)
        stats.session_rows += len(step.sessions)
        stats.duplicates += step.duplicates
        stats.late += step.late
        stats.beyond_horizon += step.beyond_horizon

    def _insert(self, record: StepRecord) -> None:
        """The step's rows, one insert per table; on the sink's thread."""
        app_id, topic, p, seq = (
            self.settings.app_id,
            self.settings.topic_events,
            record.partition,
            record.mark.seq,
        )
        zone = self.config.state.zone
        self.sink.insert(
            "hourly_user_summary",
            HOURLY_COLUMNS,
            hourly_rows(record.hours, zone),
            step_token(app_id, "hourly_user_summary", topic, p, seq),
        )
        self.sink.insert(
            "sessions",
            SESSION_COLUMNS,
            session_rows(record.sessions),
            step_token(app_id, "sessions", topic, p, seq),
        )

    async def _save(self, partition: int, changed: dict[int, UserEntry | None]) -> None:
        """Write changed entries to the changelog (tombstones for dropped users); wait."""
        data = self.table.data
        for user_id, entry in changed.items():
            key = str(user_id).encode()
            if entry is None:
                data.pop(key, None)
                self._send(key, None, partition)
            else:
                data[key] = entry
                self._send(key, entry.to_bytes(), partition)
        if changed:
            await self.app.producer.flush()

    def _send(self, key: bytes, value: bytes | None, partition: int) -> None:
        self.table.send_changelog(partition, key, value, value_serializer="raw")

    async def tick(self) -> None:
        """Step idle partitions whose watermark, moved by the wall clock, made something due."""
        if not self.ready:
            return
        async with self.lock:
            if not self.ready:
                return
            wall = int(time.time() * 1000)
            for partition in sorted(self.assigned):
                proc = await self.processor(partition)
                if proc.is_due(wall):
                    await self._step(proc, [])


def _whole_messages(items: Sequence[Positioned], limit: int) -> list[list[Positioned]]:
    """`items` cut into runs of at most `limit` events (more only for one big message),
    never inside a message."""
    chunks: list[list[Positioned]] = []
    current: list[Positioned] = []
    for i, item in enumerate(items):
        new_message = i == 0 or item.offset != items[i - 1].offset
        if new_message and len(current) >= limit:
            chunks.append(current)
            current = []
        current.append(item)
    if current:
        chunks.append(current)
    return chunks
