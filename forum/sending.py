"""Sending the simulated forum through the producer SDK: records, history, live traffic.

History goes as fast as the broker acknowledges it (the SDK batches per partition); the number
of unacknowledged events is bounded by flushing every `_FLUSH_EVERY`, so memory stays flat over
a long backfill. Live traffic is paced on the monotonic clock: after t seconds, rate × t events
have been handed to the producer (a slow moment is caught up, never skipped).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from forum.engine import Outbox
from forum.live import LiveForum
from forum.model import Forum
from forum.population import user_records
from streams.events import Event, now_ms
from streams.producer import EventProducer

__all__ = ["LiveResult", "send_events", "send_forum", "send_live"]

_CHUNK = 2000
_FLUSH_EVERY = 50_000
_TICK_SECONDS = 0.01

EventSink = Callable[[list[Event]], None]
"""Called with every chunk of events as it is handed to the producer (progress, truth)."""


async def send_forum(producer: EventProducer, forum: Forum) -> int:
    """Groups first, then users (and the later records of users who left a group); returns
    how many records were acknowledged."""
    futures = [await producer.upsert_group(g) for g in forum.groups]
    futures += [await producer.upsert_user(u) for u in user_records(forum)]
    await producer.flush()
    await asyncio.gather(*futures)
    return len(futures)


async def send_events(producer: EventProducer, events: Iterable[Event], sink: EventSink) -> int:
    """Send `events` in order; returns how many, all acknowledged."""
    sent = 0
    chunk: list[Event] = []
    for event in events:
        chunk.append(event)
        if len(chunk) == _CHUNK:
            sent += await _send_chunk(producer, chunk, sink, sent)
            chunk = []
    if chunk:
        sent += await _send_chunk(producer, chunk, sink, sent)
    await producer.flush()
    return sent


async def _send_chunk(
    producer: EventProducer, chunk: list[Event], sink: EventSink, sent_before: int
) -> int:
    await producer.send_many(chunk)
    sink(chunk)
    if (sent_before + len(chunk)) // _FLUSH_EVERY > sent_before // _FLUSH_EVERY:
        await producer.flush()
    return len(chunk)


@dataclass(frozen=True)
class LiveResult:
    """What a live run sent, and over how long (the rate it held)."""

    events: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


async def send_live(
    producer: EventProducer,
    live: LiveForum,
    outbox: Outbox,
    rate: float,
    *,
    duration: float | None,
    stop: asyncio.Event,
    sink: EventSink,
) -> LiveResult:
    """Send `rate` events a second until `duration` seconds have passed or `stop` is set;
    then send what the outbox still holds back (late events: nothing is lost) and wait for
    every acknowledgement. The result counts the paced part only."""
    started = time.monotonic()
    sent = 0
    while not stop.is_set():
        elapsed = time.monotonic() - started
        if duration is not None and elapsed >= duration:
            break
        target = int(elapsed * rate)
        if target > sent:
            sent += await _send_live_chunk(producer, live, outbox, target - sent, sink)
        await asyncio.sleep(_TICK_SECONDS)
    seconds = min(time.monotonic() - started, duration or float("inf"))
    rest = list(outbox.drain())
    if rest:
        await producer.send_many(rest)
        sink(rest)
    await producer.flush()
    return LiveResult(sent, seconds)


async def _send_live_chunk(
    producer: EventProducer, live: LiveForum, outbox: Outbox, wanted: int, sink: EventSink
) -> int:
    """Up to `wanted` events now: held-back and repeated ones whose time has come, then new
    ones (newcomers' user records go first)."""
    now = now_ms()
    batch = outbox.take_due(now, wanted)
    while len(batch) < wanted:
        outbox.put(live.next_event(now), now)
        batch.extend(outbox.due(now))
    for record in live.records:
        await producer.upsert_user(record)
    live.records.clear()
    await producer.send_many(batch)
    sink(batch)
    return len(batch)
