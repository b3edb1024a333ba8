"""The producer SDK: how a forum sends events, users and groups to Kafka.

`EventProducer` (asyncio) batches events per partition: one Kafka message carries a JSON array
of one partition's events, because the worker pays per message, not per event (risks.md §2).
A message is cut when it reaches `max_events_per_message` events, `max_message_bytes` bytes, or
`linger_ms` after its first event. Partitions are computed here with Kafka's murmur2 of the
decimal user id, so a batch obeys the contract's partition rule and single-event messages land
exactly where any Kafka client's default partitioner would put them.

Nothing is dropped silently: every send returns a future that fails if its message fails, and
`flush()` raises `DeliveryError` with the number of undelivered events if any failed since the
previous flush. A broker that is down fails `start()` at once ("cannot reach Kafka") or the
sends within `request_timeout_ms`.

`SyncEventProducer` wraps it for WSGI forums (Django): a daemon thread runs the event loop,
`send()` only queues (bounded), and `atexit` flushes what is left when the process exits.

Against Tansu: `enable_idempotence` stays off (Tansu cannot, risks.md §4.1) and `acks="all"`
works on its single node. Batched writes are fine for producers; the ListOffsets bug (§4.2)
only hurts consumers that read end offsets.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Final, NamedTuple, Unpack

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from streams.events import (
    MAX_BATCH_BYTES,
    MAX_EVENT_BYTES,
    Event,
    GroupRecord,
    InvalidEvent,
    UserRecord,
    encode_batch,
    now_ms,
    parse_event,
    parse_group,
    parse_user,
)
from streams.partitioning import partition_for_user
from streams.topics import (
    DEFAULT_EVENTS_TOPIC,
    DEFAULT_GROUPS_TOPIC,
    DEFAULT_USERS_TOPIC,
    KafkaSecurity,
)

__all__ = [
    "BufferFullError",
    "Delivery",
    "DeliveryError",
    "EventProducer",
    "KafkaUnavailable",
    "SyncEventProducer",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES: Final = 1_000_000
"""Below the contract's 1 MiB and Kafka's default `message.max.bytes` (1 MiB + 12) with room
for the record and batch headers around the value."""


class Delivery(NamedTuple):
    """Where the Kafka message carrying an event (or a user/group record) was stored."""

    topic: str
    partition: int
    offset: int


class DeliveryError(Exception):
    """Some records were not delivered: `undelivered` counts them, `first_error` says why."""

    def __init__(self, undelivered: int, first_error: BaseException | None) -> None:
        super().__init__(f"{undelivered} record(s) not delivered to Kafka: {first_error!r}")
        self.undelivered = undelivered
        self.first_error = first_error


class KafkaUnavailable(ConnectionError):
    """The producer could not connect to the bootstrap servers at start."""


class BufferFullError(RuntimeError):
    """`SyncEventProducer.send` waited its timeout for room in the buffer: Kafka is not keeping
    up or is unreachable. The event was not queued."""


class _Pending:
    """One partition's message being filled: its encoded events and the future they share."""

    __slots__ = ("count", "future", "partition", "payloads", "size", "timer", "user_id")

    def __init__(self, partition: int, user_id: int, loop: asyncio.AbstractEventLoop) -> None:
        self.partition = partition
        self.user_id = user_id  # the message key: any of its users maps to the partition
        self.payloads: list[bytes] = []
        self.size = 2  # the brackets
        self.count = 0
        self.future: asyncio.Future[Delivery] = loop.create_future()
        self.timer: asyncio.TimerHandle | None = None


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a failed future's exception as seen: failures are reported through `flush()` and
    counters, and must not also spam "exception was never retrieved" for futures nobody kept."""
    if not future.cancelled():
        future.exception()


class EventProducer:
    """Async producer for `forum-events` and the dimension topics; use `async with`.

    batching=False sends one event per message (for consumers that cannot take arrays).
    `**security` (security_protocol, sasl_*, ssl_context) goes to aiokafka unchanged.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        events_topic: str = DEFAULT_EVENTS_TOPIC,
        users_topic: str = DEFAULT_USERS_TOPIC,
        groups_topic: str = DEFAULT_GROUPS_TOPIC,
        batching: bool = True,
        max_events_per_message: int = 500,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        linger_ms: float = 50,
        acks: int | str = "all",
        request_timeout_ms: int = 30_000,
        client_id: str = "forum-analytics-producer",
        max_batch_size: int = 16_384,
        **security: Unpack[KafkaSecurity],
    ) -> None:
        if max_events_per_message < 1:
            raise ValueError("max_events_per_message must be >= 1")
        if not MAX_EVENT_BYTES + 2 <= max_message_bytes <= MAX_BATCH_BYTES:
            raise ValueError(
                f"max_message_bytes must be in {MAX_EVENT_BYTES + 2}..{MAX_BATCH_BYTES}"
            )
        self.bootstrap = bootstrap
        self.events_topic = events_topic
        self.users_topic = users_topic
        self.groups_topic = groups_topic
        self.batching = batching
        self.max_events_per_message = max_events_per_message
        self.max_message_bytes = max_message_bytes
        self.linger = linger_ms / 1000
        self.request_timeout_ms = request_timeout_ms
        self._kafka_options: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "client_id": client_id,
            "acks": acks,
            "enable_idempotence": False,  # Tansu cannot (risks.md §4.1); duplicates are
            # harmless anyway: events carry ids and the pipeline counts each id once.
            "request_timeout_ms": request_timeout_ms,
            "max_batch_size": max_batch_size,  # bytes; one oversized message still goes alone
            "max_request_size": MAX_BATCH_BYTES + 64 * 1024,
            "linger_ms": 0,  # we linger ourselves, per partition
            **security,
        }
        self._producer: AIOKafkaProducer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.num_partitions = 0
        self._pending: dict[int, _Pending] = {}
        self._inflight: set[asyncio.Future[Any]] = set()
        self._flush_tasks: set[asyncio.Task[None]] = set()
        self._send_lock = asyncio.Lock()  # keeps messages of a partition in order
        self._accepted = 0
        self.delivered = 0
        self.failed = 0
        self._failed_since_flush = 0
        self._first_error: BaseException | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and learn the events topic's partition count; `KafkaUnavailable` if we can't.

        Create topics first (`streams.topics.ensure_topics`): asking a broker with automatic
        topic creation about a missing topic creates it with the broker's default count.
        """
        self._loop = asyncio.get_running_loop()
        producer = AIOKafkaProducer(**self._kafka_options)
        timeout = self.request_timeout_ms / 1000
        try:
            await asyncio.wait_for(producer.start(), timeout)
            partitions = await asyncio.wait_for(producer.partitions_for(self.events_topic), timeout)
        except (KafkaError, OSError, TimeoutError) as exc:
            with contextlib.suppress(Exception):
                await producer.stop()
            why = f"no answer within {timeout:g} s" if isinstance(exc, TimeoutError) else exc
            raise KafkaUnavailable(f"cannot reach Kafka at {self.bootstrap}: {why}") from exc
        self._producer = producer
        self.num_partitions = len(partitions)

    async def flush(self) -> None:
        """Send everything buffered and wait until each record is acknowledged or failed.

        Raises `DeliveryError` if any record failed since the previous flush (and resets that
        count, so each failure is reported once).
        """
        for partition in list(self._pending):
            await self._send_partition(partition)
        while self._flush_tasks or self._inflight:
            await asyncio.gather(*self._flush_tasks, *self._inflight, return_exceptions=True)
        if self._failed_since_flush:
            error = DeliveryError(self._failed_since_flush, self._first_error)
            self._failed_since_flush, self._first_error = 0, None
            raise error

    async def close(self) -> None:
        """Flush, then disconnect; raises `DeliveryError` (once disconnected) if records failed."""
        try:
            await self.flush()
        finally:
            if self._producer is not None:
                await self._producer.stop()
                self._producer = None

    async def __aenter__(self) -> EventProducer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def pending(self) -> int:
        """Records accepted but not yet acknowledged or failed."""
        return self._accepted - self.delivered - self.failed

    # -- events --------------------------------------------------------------------------------

    async def send(self, event: Event) -> asyncio.Future[Delivery]:
        """Queue one event; the future resolves when its message is stored (or fails).

        Raises `InvalidEvent` at once for an event that breaks the contract: better in the
        forum's request than in the dead-letter topic.
        """
        payload = self._validated_payload(event)
        return await self._enqueue(event.user_id, payload)

    async def send_many(self, events: Iterable[Event]) -> asyncio.Future[list[Delivery]]:
        """Queue several events (all validated first, so a bad one queues none of them).

        The future resolves to one `Delivery` per event, in order, when all are stored, or
        fails with the first error.
        """
        checked = [(event.user_id, self._validated_payload(event)) for event in events]
        futures = [await self._enqueue(user_id, payload) for user_id, payload in checked]
        distinct = list({id(future): future for future in futures}.values())  # shared by batches

        async def all_delivered() -> list[Delivery]:
            await asyncio.gather(*distinct)
            return [future.result() for future in futures]

        task = asyncio.ensure_future(all_delivered())
        task.add_done_callback(_retrieve)
        return task

    def _validated_payload(self, event: Event) -> bytes:
        parse_event(event.to_dict(), received_at_ms=now_ms())
        payload = event.to_json()
        if len(payload) > MAX_EVENT_BYTES:
            raise InvalidEvent(f"event is {len(payload)} bytes; limit {MAX_EVENT_BYTES}")
        return payload

    async def _enqueue(self, user_id: int, payload: bytes) -> asyncio.Future[Delivery]:
        if self._producer is None or self._loop is None:
            raise RuntimeError("producer not started (or closed)")
        partition = partition_for_user(user_id, self.num_partitions)
        self._accepted += 1
        if not self.batching:
            pending = _Pending(partition, user_id, self._loop)
            pending.payloads.append(payload)
            pending.count = 1
            await self._send_message(pending, payload)
            return pending.future
        while True:  # re-read after each await: another task may have filled the partition
            found = self._pending.get(partition)
            if found is None:
                pending = self._new_pending(partition, user_id)
                break
            if found.size + len(payload) + 1 <= self.max_message_bytes:
                pending = found
                break
            await self._send_partition(partition)  # would overflow: send what we have first
        pending.payloads.append(payload)
        pending.size += len(payload) + (1 if pending.count else 0)
        pending.count += 1
        future = pending.future
        if pending.count >= self.max_events_per_message:
            await self._send_partition(partition)
        return future

    def _new_pending(self, partition: int, user_id: int) -> _Pending:
        assert self._loop is not None
        pending = _Pending(partition, user_id, self._loop)
        pending.timer = self._loop.call_later(self.linger, self._linger_expired, partition)
        self._pending[partition] = pending
        return pending

    def _linger_expired(self, partition: int) -> None:
        task = asyncio.ensure_future(self._send_partition(partition))
        self._flush_tasks.add(task)
        task.add_done_callback(self._flush_tasks.discard)

    async def _send_partition(self, partition: int) -> None:
        pending = self._pending.pop(partition, None)
        if pending is None:
            return
        if pending.timer is not None:
            pending.timer.cancel()
        await self._send_message(pending, encode_batch(pending.payloads))

    async def _send_message(self, pending: _Pending, value: bytes) -> None:
        """Hand one message to aiokafka; its outcome settles every event in it."""
        assert self._producer is not None
        key = str(pending.user_id).encode()
        try:
            async with self._send_lock:
                kafka_future = await self._producer.send(
                    self.events_topic, value, key=key, partition=pending.partition
                )
        except Exception as exc:  # a full or closed producer: the events are not delivered
            self._settle_failure(pending.future, pending.count, exc)
            return
        self._track(kafka_future, pending.future, pending.count)

    # -- users and groups ----------------------------------------------------------------------

    async def upsert_user(self, user: UserRecord) -> asyncio.Future[Delivery]:
        """Send a user's current profile to `forum-users` (key = user id)."""
        parse_user(user.to_dict())  # same checks as the reader's
        return await self._send_record(self.users_topic, user.key, user.to_json())

    async def delete_user(self, user_id: int) -> asyncio.Future[Delivery]:
        """Send a tombstone (null value): the user's personal data is to be forgotten."""
        if type(user_id) is not int or user_id <= 0:
            raise InvalidEvent("user_id must be an integer > 0")
        return await self._send_record(self.users_topic, str(user_id).encode(), None)

    async def upsert_group(self, group: GroupRecord) -> asyncio.Future[Delivery]:
        """Send a group's current definition to `forum-groups` (key = group id)."""
        parse_group(group.to_dict())
        return await self._send_record(self.groups_topic, group.key, group.to_json())

    async def _send_record(
        self, topic: str, key: bytes, value: bytes | None
    ) -> asyncio.Future[Delivery]:
        if self._producer is None or self._loop is None:
            raise RuntimeError("producer not started (or closed)")
        future: asyncio.Future[Delivery] = self._loop.create_future()
        self._accepted += 1
        try:
            async with self._send_lock:
                kafka_future = await self._producer.send(topic, value, key=key)
        except Exception as exc:
            self._settle_failure(future, 1, exc)
        else:
            self._track(kafka_future, future, 1)
        return future

    # -- outcomes ------------------------------------------------------------------------------

    def _track(
        self, kafka_future: asyncio.Future[Any], future: asyncio.Future[Delivery], n: int
    ) -> None:
        self._inflight.add(kafka_future)

        def settle(done: asyncio.Future[Any]) -> None:
            self._inflight.discard(done)
            if done.cancelled():
                self._settle_failure(future, n, asyncio.CancelledError("send cancelled"))
            elif (exc := done.exception()) is not None:
                self._settle_failure(future, n, exc)
            else:
                metadata = done.result()
                self.delivered += n
                if not future.done():
                    future.set_result(Delivery(metadata.topic, metadata.partition, metadata.offset))

        kafka_future.add_done_callback(settle)

    def _settle_failure(self, future: asyncio.Future[Delivery], n: int, exc: BaseException) -> None:
        self.failed += n
        self._failed_since_flush += n
        if self._first_error is None:
            self._first_error = exc
        log.error("%d record(s) not delivered to Kafka: %r", n, exc)
        if not future.done():
            future.set_exception(exc)
            _retrieve(future)

    def _fail_unsent(self, n: int, exc: BaseException) -> None:
        """Count records that never reached `send` (used by the sync facade)."""
        self._accepted += n
        self.failed += n
        self._failed_since_flush += n
        if self._first_error is None:
            self._first_error = exc


class SyncEventProducer:
    """A thread-safe, blocking facade for WSGI code: `send()` queues and returns at once.

    The buffer holds at most `buffer_size` events not yet acknowledged by Kafka. When it is
    full, `send()` blocks up to `block_timeout` seconds for room, then raises `BufferFullError`
    (the event is not queued): a page should not hang because analytics is down, and the error
    tells the caller, who may log it and go on. `flush()` and `close()` raise `DeliveryError`
    as the async producer does. `close()` runs at interpreter exit (atexit) if not called.

    Create it after the web server forks its workers (e.g. lazily on first use): a thread does
    not survive `fork()`.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        buffer_size: int = 10_000,
        block_timeout: float = 5.0,
        start_timeout: float = 30.0,
        **options: Any,
    ) -> None:
        self.block_timeout = block_timeout
        self._room = threading.BoundedSemaphore(buffer_size)
        self._queue: collections.deque[tuple[str, Any]] = collections.deque()
        self._queue_lock = threading.Lock()
        self._pump_active = False  # set by a putter that schedules a wake-up, cleared by the pump
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="forum-analytics-producer", daemon=True
        )
        self._thread.start()
        self._wakeup: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._closed = False
        self._producer: EventProducer | None = None
        try:
            self._call(self._start(bootstrap, options), start_timeout)
        except BaseException:
            self._stop_loop()
            raise
        atexit.register(self._close_at_exit)

    async def _start(self, bootstrap: str, options: dict[str, Any]) -> None:
        producer = EventProducer(bootstrap, **options)
        await producer.start()
        self._producer = producer
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._pump_task = asyncio.ensure_future(self._pump())

    def _call(self, coroutine: Any, timeout: float | None) -> Any:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"Kafka producer did not finish within {timeout} s") from None

    # -- the caller's side ---------------------------------------------------------------------

    def send(self, event: Event) -> None:
        """Validate and queue one event; raises `InvalidEvent` or `BufferFullError`."""
        parse_event(event.to_dict(), received_at_ms=now_ms())
        self._put("event", event)

    def send_many(self, events: Iterable[Event]) -> None:
        """Validate all, then queue each (a bad event queues none)."""
        batch = list(events)
        for event in batch:
            parse_event(event.to_dict(), received_at_ms=now_ms())
        for event in batch:
            self._put("event", event)

    def upsert_user(self, user: UserRecord) -> None:
        parse_user(user.to_dict())
        self._put("user", user)

    def delete_user(self, user_id: int) -> None:
        if type(user_id) is not int or user_id <= 0:
            raise InvalidEvent("user_id must be an integer > 0")
        self._put("delete_user", user_id)

    def upsert_group(self, group: GroupRecord) -> None:
        parse_group(group.to_dict())
        self._put("group", group)

    def _put(self, kind: str, item: Any) -> None:
        if self._closed:
            raise RuntimeError("producer closed")
        if not self._room.acquire(timeout=self.block_timeout):
            raise BufferFullError(
                f"no room for the event after {self.block_timeout} s: the buffer holds "
                "events Kafka has not acknowledged yet (is the broker reachable?)"
            )
        with self._queue_lock:
            self._queue.append((kind, item))
            wake = not self._pump_active
            self._pump_active = True
        if wake:
            self._loop.call_soon_threadsafe(self._wake)

    def flush(self, timeout: float | None = 30.0) -> None:
        """Block until every queued record is acknowledged or failed; `DeliveryError` if any
        failed since the last flush, `TimeoutError` after `timeout` seconds."""
        self._call(self._flush(), timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Flush, disconnect and stop the thread; idempotent. Raises like `flush()`."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._close_at_exit)
        try:
            self._call(self._close(), timeout)
        finally:
            self._stop_loop()

    def _close_at_exit(self) -> None:
        try:
            self.close()
        except Exception:
            log.exception("forum-analytics producer: records lost at exit")

    def __enter__(self) -> SyncEventProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def delivered(self) -> int:
        return 0 if self._producer is None else self._producer.delivered

    @property
    def failed(self) -> int:
        return 0 if self._producer is None else self._producer.failed

    # -- the loop's side -----------------------------------------------------------------------

    def _wake(self) -> None:
        assert self._wakeup is not None and self._idle is not None
        self._idle.clear()
        self._wakeup.set()

    async def _pump(self) -> None:
        """Move queued items into the async producer, in order, one loop task for all threads."""
        assert self._wakeup is not None and self._idle is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while True:
                with self._queue_lock:
                    if not self._queue:
                        self._pump_active = False  # the next put schedules a wake-up
                        self._idle.set()
                        break
                    kind, item = self._queue.popleft()
                await self._forward(kind, item)

    async def _forward(self, kind: str, item: Any) -> None:
        assert self._producer is not None
        try:
            if kind == "event":
                future = await self._producer.send(item)
            elif kind == "user":
                future = await self._producer.upsert_user(item)
            elif kind == "group":
                future = await self._producer.upsert_group(item)
            else:
                future = await self._producer.delete_user(item)
        except Exception as exc:
            self._producer._fail_unsent(1, exc)
            self._room.release()
            return
        future.add_done_callback(lambda _: self._room.release())

    async def _flush(self) -> None:
        assert self._idle is not None and self._producer is not None
        while self._pump_active:  # a scheduled wake-up clears `_idle` on its next turn
            await self._idle.wait()
            await asyncio.sleep(0)
        await self._producer.flush()

    async def _close(self) -> None:
        assert self._producer is not None
        try:
            await self._flush()
        finally:
            self._pump_task.cancel()
            await self._producer.close()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()
