"""The worker's agents for the dimension topics, `forum-users` and `forum-groups`.

`forum-users` has as many partitions as `forum-events` and the same key (the user id), and
every worker subscribes to both, so Faust assigns partition p of both topics to the same worker
(co-partitioning): its records are applied as steps of partition p's own sequence, under the
same lock as the events (streams.steps.StepRunner.run_users). `forum-groups` is independent:
a group's row only says what the group is called and whether its figures are shown, so it is
written as it comes, deduplicated by its position.

Bad records go to the dead-letter topic with the reason, like bad events; a null value on
`forum-users` is a purge request, not an error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, Final

import faust
from faust.types import EventT

from forum_analytics.settings import Settings
from streams.events import GroupRecord, InvalidEvent, UserRecord, ms_to_datetime
from streams.sink import ClickHouseSink
from streams.steps import StepRunner
from streams.user_changes import UserMessage

__all__ = ["DimensionAgents"]

GROUP_COLUMNS: Final = ("group_id", "name", "used_for_analytics", "updated_at", "version")

DeadLetter = Callable[[list[tuple[EventT[bytes], bytes, str]]], Awaitable[None]]


class DimensionAgents:
    """Registers the two agents on the worker's Faust app; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        app: faust.App,
        steps: StepRunner,
        sink: ClickHouseSink,
        dead_letter: DeadLetter,
    ) -> None:
        self.settings = settings
        self.steps = steps
        self.sink = sink
        self.dead_letter = dead_letter
        self.users_topic = app.topic(
            settings.topic_users,
            partitions=settings.topic_partitions,
            key_serializer="raw",
            value_serializer="raw",
        )
        self.groups_topic = app.topic(
            settings.topic_groups, key_serializer="raw", value_serializer="raw"
        )
        steps.publish_groups = self.publish_groups

    async def users(self, stream: Any) -> None:
        """The `forum-users` agent body."""
        await self._consume(stream, self.process_users)

    async def groups(self, stream: Any) -> None:
        """The `forum-groups` agent body."""
        await self._consume(stream, self.process_groups)

    async def _consume(
        self,
        stream: Any,
        process: Callable[[Sequence[EventT[bytes]]], Awaitable[Sequence[EventT[bytes]]]],
    ) -> None:
        """Batches, each applied durably, then acknowledged (what `process` returns)."""
        async for batch in stream.noack_take(500, within=self.settings.batch_max_seconds):
            for event in await process(batch):
                await stream.ack(event)

    async def process_users(self, batch: Sequence[EventT[bytes]]) -> list[EventT[bytes]]:
        """Apply the users' records of the partitions this worker owns (StepRunner.owns);
        returns the events to acknowledge."""
        good: dict[int, list[UserMessage]] = {}
        dead = []
        for event in batch:
            message = event.message
            try:
                item = _user_message(message)
            except InvalidEvent as exc:
                dead.append((event, message.value or b"", str(exc)))
                continue
            good.setdefault(message.partition, []).append(item)
        await self.dead_letter(dead)
        async with self.steps.lock:
            owned = {p for p in {e.message.partition for e in batch} if self.steps.owns(p)}
            for partition, items in sorted(good.items()):
                if partition in owned:
                    await self.steps.run_users(partition, items)
        return [event for event in batch if event.message.partition in owned]

    async def process_groups(self, batch: Sequence[EventT[bytes]]) -> Sequence[EventT[bytes]]:
        """Upsert the groups (idempotent rows, whoever owns the topic's partition); returns the
        events to acknowledge: all of them."""
        rows: dict[int, list[tuple[int, list[Any]]]] = {}
        dead = []
        for event in batch:
            message = event.message
            try:
                group = GroupRecord.from_json(message.value or b"null")
            except InvalidEvent as exc:
                dead.append((event, message.value or b"", str(exc)))
                continue
            ts = _timestamp_ms(message)
            version = (ts << 16) | (message.offset & 0xFFFF)
            row = [
                group.group_id,
                group.name,
                group.used_for_analytics,
                ms_to_datetime(ts),
                version,
            ]
            rows.setdefault(message.partition, []).append((message.offset, row))
        await self.dead_letter(dead)
        for partition, items in sorted(rows.items()):
            first, last = items[0][0], items[-1][0]
            token = f"{self.settings.app_id}:groups:{self.settings.topic_groups}:{partition}:"
            await self.sink.run(
                partial(
                    self.sink.insert,
                    "groups",
                    GROUP_COLUMNS,
                    [row for _, row in items],
                    f"{token}{first}-{last}",
                )
            )
        return batch

    async def publish_groups(self, groups: Sequence[GroupRecord]) -> None:
        """Send groups the worker made (organizations) to `forum-groups`, and wait."""
        futures = [await self.groups_topic.send(key=g.key, value=g.to_json()) for g in groups]
        await asyncio.gather(*futures)


def _timestamp_ms(message: Any) -> int:
    """The record's time (when the forum sent the change), or now if it has none."""
    return int((message.timestamp or time.time()) * 1000)


def _user_message(message: Any) -> UserMessage:
    """A `forum-users` message checked: the key is the user's id, the value a user record
    about that user, or null (a purge)."""
    key = message.key or b""
    if not key.isdigit() or key.startswith(b"0"):
        raise InvalidEvent(f"key {key[:40]!r} is not a user id as decimal text")
    user_id = int(key)
    record = None if message.value is None else UserRecord.from_json(message.value)
    if record is not None and record.user_id != user_id:
        raise InvalidEvent(f"record of user {record.user_id} under the key of user {user_id}")
    return UserMessage(message.offset, user_id, record, _timestamp_ms(message))
