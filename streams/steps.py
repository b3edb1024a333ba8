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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final
from zoneinfo import ZoneInfo

import faust

from forum_analytics.settings import Settings
from streams.dimension_rows import (
    GROUP_HOUR_COLUMNS,
    MEMBER_COLUMNS,
    USER_COLUMNS,
    Purge,
    group_hour_rows,
    member_rows,
    user_rows,
)
from streams.events import GroupRecord, ms_to_datetime
from streams.history import ClickHouseHistory
from streams.memberships import GroupHourRow, Interval, fan_out
from streams.partition_processor import (
    PartitionMark,
    PartitionProcessor,
    Positioned,
    Step,
    StepConfig,
)
from streams.partitioning import partition_for_user
from streams.profiles import ClickHouseProfiles
from streams.sink import ClickHouseSink
from streams.step_record import StepRecord, partition_key
from streams.summary_rows import (
    HOURLY_COLUMNS,
    SESSION_COLUMNS,
    hourly_rows,
    session_rows,
    step_token,
)
from streams.user_changes import UserChanges, UserMessage, apply_user_messages
from streams.user_entry import UserEntry
from streams.user_state import StateConfig

log = logging.getLogger("forum_analytics.worker")

TABLE_NAME: Final = "user-state"
AUDIT_COLUMNS: Final = ("purged_at", "topic", "partition", "offset", "rows_deleted")

#: Events per step at most: keeps a step record far below Kafka's 1 MB record limit.
MAX_STEP_EVENTS: Final = 2000
#: User records per step at most, for the same reason (a record can bring a user's history of
#: group corrections).
MAX_STEP_USERS: Final = 200

#: Tables holding a purged user's personal data, deleted by user id (group rows are moved to
#: the anonymous member first).
PURGED_TABLES: Final = (
    "events",
    "sessions",
    "hourly_user_summary",
    "daily_user_summary",
    "users",
    "group_members",
    "group_member_hours",
    "group_member_days",
)


class StateMismatch(Exception):
    """The stored state was built under other settings; the message says what to do."""


@dataclass
class StepStats:
    """Counters the worker logs and later exports as metrics."""

    steps: int = 0
    hour_rows: int = 0
    session_rows: int = 0
    group_rows: int = 0
    user_records: int = 0
    purges: int = 0
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
        self.profiles = ClickHouseProfiles(sink)
        self.intervals: dict[int, tuple[Interval, ...]] = {}
        """Users' membership intervals, read once from ClickHouse; only this worker's steps
        change those of its partitions' users, so the copy stays exact while it owns them."""
        self.publish_groups: Callable[[Sequence[GroupRecord]], Awaitable[None]] | None = None
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
            self.intervals.clear()

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

    def owns(self, partition: int) -> bool:
        """Whether this worker may step `partition` now: not while a rebalance is under way,
        and only if the partition is still assigned here. Messages of a partition it does not
        own are left unacknowledged; they are delivered again, to whoever owns it (stepping
        them here would write rows whose step record the new owner may never see, and it would
        count them a second time). Call with the lock held."""
        return self.ready and partition in self.assigned

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
            changed: dict[int, UserEntry | None] = {}
            if record.mark.users_end_offset == record.before.users_end_offset:  # events
                history = self._history(partition)
                replayed = await self.sink.run(
                    partial(proc.step, record.events, wall, history, replay=record.mark)
                )
                changed = replayed.changed
            proc.mark = record.mark
            changed.update(self._forget_purged(proc, record.purges))
            await self._publish(record)
            await self.sink.run(partial(self._insert, record))
            await self._save(partition, changed)
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
        step, groups = await self.sink.run(partial(self._compute, proc, items, wall, history))
        record = StepRecord.of(step, groups)
        await self._record(record)
        await self.sink.run(partial(self._insert, record))
        await self._save(proc.partition, step.changed)
        stats = self.stats
        stats.steps += 1
        stats.hour_rows += len(step.hours)
        stats.session_rows += len(step.sessions)
        stats.group_rows += len(groups)
        stats.duplicates += step.duplicates
        stats.late += step.late
        stats.beyond_horizon += step.beyond_horizon

    def _compute(
        self,
        proc: PartitionProcessor,
        items: Sequence[Positioned],
        wall: int,
        history: ClickHouseHistory,
    ) -> tuple[Step, list[GroupHourRow]]:
        """The processor's step, and its hours fanned out to the users' groups (sink thread)."""
        step = proc.step(items, wall, history)
        users = {row.user_id for row in step.hours}
        missing = [u for u in users if u not in self.intervals]
        if missing:
            loaded = self.profiles.intervals(missing)
            for user_id in missing:
                self.intervals[user_id] = loaded.get(user_id, ())
        return step, fan_out(step.hours, self.intervals, self.config.state.zone)

    async def _record(self, record: StepRecord) -> None:
        """Write the step record under the partition's key, and wait until Kafka has it."""
        key, value = partition_key(record.partition), record.to_bytes()
        self.table.data[key] = value
        self._send(key, value, record.partition)
        await self.app.producer.flush()

    # -- user records ----------------------------------------------------------------------------

    async def run_users(self, partition: int, messages: Sequence[UserMessage]) -> None:
        """Apply a partition's `forum-users` records (in offset order) as steps of its
        sequence; a purge ends a step, so the next one reads what it left. Call with the lock
        held."""
        proc = await self.processor(partition)
        todo = [m for m in messages if m.offset > proc.mark.users_end_offset]
        chunk: list[UserMessage] = []
        for message in todo:
            chunk.append(message)
            if message.record is None or len(chunk) >= MAX_STEP_USERS:
                await self._user_step(proc, chunk)
                chunk = []
        if chunk:
            await self._user_step(proc, chunk)

    async def _user_step(self, proc: PartitionProcessor, messages: list[UserMessage]) -> None:
        changes = await self.sink.run(partial(self._user_changes, proc, messages))
        before = proc.mark
        mark = before._replace(seq=before.seq + 1, users_end_offset=messages[-1].offset)
        record = StepRecord(
            proc.partition,
            before,
            mark,
            [],
            [],
            [],
            changes.groups,
            changes.users,
            changes.members,
            changes.purges,
            changes.new_groups,
        )
        await self._record(record)
        proc.mark = mark
        await self._publish(record)
        await self.sink.run(partial(self._insert, record))
        await self._save(proc.partition, self._forget_purged(proc, record.purges))
        self.intervals.update(changes.intervals)
        stats = self.stats
        stats.steps += 1
        stats.group_rows += len(changes.groups)
        stats.user_records += len(messages)
        stats.purges += len(changes.purges)

    def _user_changes(self, proc: PartitionProcessor, messages: list[UserMessage]) -> UserChanges:
        def pending(user_id: int) -> dict[int, tuple[int, ...]]:
            entry = proc.entries.get(user_id)
            return {} if entry is None else {h: tuple(v) for h, v in entry.pending.items()}

        return apply_user_messages(
            messages,
            self.profiles,
            self.config.state.zone,
            auto_organizations=self.settings.email_domain_organizations_enabled,
            pending=pending,
        )

    def _forget_purged(
        self, proc: PartitionProcessor, purges: Sequence[Purge]
    ) -> dict[int, UserEntry | None]:
        """Drop purged users from the processor; their table entries become tombstones."""
        dropped: dict[int, UserEntry | None] = {}
        for purge in purges:
            proc.entries.pop(purge.user_id, None)
            self.intervals.pop(purge.user_id, None)
            dropped[purge.user_id] = None
        return dropped

    async def _publish(self, record: StepRecord) -> None:
        """Organizations the step made go to `forum-groups` before its rows are written."""
        if record.new_groups and self.publish_groups is not None:
            await self.publish_groups(record.new_groups)

    # -- inserts -------------------------------------------------------------------------------

    def _insert(self, record: StepRecord) -> None:
        """The step's rows, one insert per table, then its purges; on the sink's thread."""
        zone = self.config.state.zone
        tables: list[tuple[str, tuple[str, ...], list[list[Any]]]] = [
            ("hourly_user_summary", HOURLY_COLUMNS, hourly_rows(record.hours, zone)),
            ("sessions", SESSION_COLUMNS, session_rows(record.sessions)),
            ("group_member_hours", GROUP_HOUR_COLUMNS, group_hour_rows(record.groups, zone)),
            ("users", USER_COLUMNS, user_rows(record.users)),
            ("group_members", MEMBER_COLUMNS, member_rows(record.members, zone)),
        ]
        for table, columns, rows in tables:
            if rows:
                self.sink.insert(table, columns, rows, self._token(table, record))
        for index, purge in enumerate(record.purges):
            self._purge(purge, record, index)

    def _token(self, table: str, record: StepRecord, suffix: str = "") -> str:
        settings = self.settings
        token = step_token(
            settings.app_id, table, settings.topic_events, record.partition, record.mark.seq
        )
        return token + suffix

    def _purge(self, purge: Purge, record: StepRecord, index: int) -> None:
        """Move the user's group rows to the anonymous member, count and delete the rest,
        and record the purge; every part is safe to repeat after a crash."""
        zone = self.config.state.zone
        suffix = f":purge{index}"
        self.sink.insert(
            "group_member_hours",
            GROUP_HOUR_COLUMNS,
            group_hour_rows(purge.moved, zone),
            self._token("group_member_hours", record, suffix),
        )
        self.sink.insert(
            "group_members",
            MEMBER_COLUMNS,
            member_rows(purge.members, zone),
            self._token("group_members", record, suffix),
        )
        counts = self.sink.count_rows(PURGED_TABLES, purge.user_id)
        audit = [
            ms_to_datetime(purge.purged_ms),
            self.settings.topic_users,
            record.partition,
            purge.offset,
            counts,
        ]
        self.sink.delete_rows(PURGED_TABLES, purge.user_id)
        # Last, so an audit row means the purge is complete. (A crash just before it makes the
        # replay count again, after the deletes: the row then reports fewer rows deleted.)
        self.sink.insert(
            "purge_audit", AUDIT_COLUMNS, [audit], self._token("purge_audit", record, suffix)
        )
        log.info(
            "partition %d: purged a user's personal data at offset %d (%d rows)",
            record.partition,
            purge.offset,
            sum(counts.values()),
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
