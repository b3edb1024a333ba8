"""The producer SDK and topic creation against a real Tansu broker, read back with aiokafka."""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.partitioner import DefaultPartitioner

from forum_analytics.ports import free_port
from streams.broker import EmbeddedBroker
from streams.events import (
    Event,
    EventType,
    GroupRecord,
    InvalidEvent,
    Role,
    UserRecord,
    decode_message,
    now_ms,
)
from streams.producer import (
    BufferFullError,
    Delivery,
    DeliveryError,
    EventProducer,
    KafkaUnavailable,
    SyncEventProducer,
)
from streams.topics import TopicSpec, default_topic_specs, ensure_topics

T = TypeVar("T")
Records = list[Any]  # aiokafka ConsumerRecord


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


async def read_back(
    bootstrap: str,
    topic: str,
    partitions: int,
    done: Callable[[Records], bool],
    timeout: float = 20.0,
) -> Records:
    """Every record of `topic` from the start, by manual assignment (no group: no join wait),
    until `done(records)` holds; fails after `timeout`."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        records: Records = []
        deadline = time.monotonic() + timeout
        while not done(records):
            if time.monotonic() > deadline:
                raise AssertionError(f"read {len(records)} records of {topic} before timeout")
            batches = await consumer.getmany(timeout_ms=500)
            for batch in batches.values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


def decoded_events(records: Records, partitions: int) -> list[Event]:
    events: list[Event] = []
    for record in records:
        result = decode_message(
            record.value,
            partition=record.partition,
            num_partitions=partitions,
            received_at_ms=now_ms(),
            key=record.key,
        )
        assert result.errors == [], result.errors
        events.extend(result.events)
    return events


def count_at_least(n: int, partitions: int) -> Callable[[Records], bool]:
    return lambda records: len(decoded_events(records, partitions)) >= n


def make_events(n: int, users: int, start_ms: int) -> list[Event]:
    """`n` events over `users` users, each user's in time order."""
    return [
        Event(f"ev-{i}", EventType.QUESTION_VIEWED, start_ms + i, i % users + 1, ip="10.0.0.1")
        for i in range(n)
    ]


async def create(bootstrap: str, topic: str, partitions: int) -> None:
    assert await ensure_topics(bootstrap, [TopicSpec(topic, partitions)]) == []


# ---------------------------------------------------------------------------------------------
# EventProducer


def test_batched_events_arrive_once_in_order_in_their_users_partitions(
    kafka_broker: EmbeddedBroker, unique_name: Callable[[str], str]
) -> None:
    topic, partitions = unique_name("events"), 4
    events = make_events(900, users=37, start_ms=now_ms() - 60_000)

    async def scenario() -> tuple[list[Delivery], Records]:
        await create(kafka_broker.bootstrap, topic, partitions)
        async with EventProducer(
            kafka_broker.bootstrap, events_topic=topic, max_events_per_message=40, linger_ms=20
        ) as producer:
            futures = [await producer.send(e) for e in events[:450]]
            rest = await producer.send_many(events[450:])
            await producer.flush()
            assert (producer.delivered, producer.failed, producer.pending) == (900, 0, 0)
        deliveries = [f.result() for f in futures] + rest.result()
        records = await read_back(
            kafka_broker.bootstrap, topic, partitions, count_at_least(900, partitions)
        )
        return deliveries, records

    deliveries, records = run(scenario())
    partitioner = DefaultPartitioner()
    assert len(deliveries) == 900
    for event, delivery in zip(events, deliveries, strict=True):
        expected = partitioner(str(event.user_id).encode(), [0, 1, 2, 3], [0, 1, 2, 3])
        assert (delivery.topic, delivery.partition) == (topic, expected)
    got = decoded_events(records, partitions)  # also checks keys and the partition rule
    assert sorted(got) == sorted(events)
    by_user: dict[int, list[int]] = collections.defaultdict(list)
    for event in got:
        by_user[event.user_id].append(event.ts_ms)
    assert all(ts == sorted(ts) for ts in by_user.values())
    sizes = [len(orjson.loads(r.value)) for r in records]
    assert all(isinstance(orjson.loads(r.value), list) for r in records)
    assert max(sizes) == 40 and len(records) < 900 / 10


def test_single_event_messages_when_batching_is_off(
    kafka_broker: EmbeddedBroker, unique_name: Callable[[str], str]
) -> None:
    topic, partitions = unique_name("events"), 3
    events = make_events(60, users=9, start_ms=now_ms() - 1000)

    async def scenario() -> Records:
        await create(kafka_broker.bootstrap, topic, partitions)
        async with EventProducer(kafka_broker.bootstrap, events_topic=topic, batching=False) as p:
            for event in events:
                await p.send(event)
        return await read_back(kafka_broker.bootstrap, topic, partitions, lambda r: len(r) >= 60)

    records = run(scenario())
    assert len(records) == 60
    for record in records:
        value = orjson.loads(record.value)
        assert isinstance(value, dict)
        assert record.key == str(value["user_id"]).encode()
    assert sorted(decoded_events(records, partitions)) == sorted(events)


def test_messages_stay_within_the_byte_bound(
    kafka_broker: EmbeddedBroker, unique_name: Callable[[str], str]
) -> None:
    topic, limit = unique_name("events"), 70_000
    events = [
        Event(f"big-{i}", EventType.ACTIVITY, now_ms() - 1000, 1, user_agent="u" * 20_000)
        for i in range(12)
    ]

    async def scenario() -> Records:
        await create(kafka_broker.bootstrap, topic, 1)
        async with EventProducer(
            kafka_broker.bootstrap, events_topic=topic, max_message_bytes=limit
        ) as producer:
            for event in events:
                await producer.send(event)
        return await read_back(kafka_broker.bootstrap, topic, 1, count_at_least(12, 1))

    records = run(scenario())
    assert all(len(r.value) <= limit for r in records)
    assert [len(orjson.loads(r.value)) for r in records] == [3, 3, 3, 3]
    assert decoded_events(records, 1) == events


def test_invalid_events_are_refused_before_anything_is_sent() -> None:
    producer = EventProducer("127.0.0.1:1")
    bad = Event("", EventType.ACTIVITY, now_ms(), 1)
    with pytest.raises(InvalidEvent, match="field 'id'"):
        run(producer.send(bad))
    future_event = Event("x", EventType.ACTIVITY, now_ms() + 2 * 86_400_000, 1)
    with pytest.raises(InvalidEvent, match="more than 1 day after"):
        run(producer.send_many([Event("ok", EventType.ACTIVITY, now_ms(), 1), future_event]))
    assert producer.pending == 0


def test_unreachable_broker_fails_start_quickly_and_clearly() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens there
    producer = EventProducer(bootstrap, request_timeout_ms=5000)
    started = time.monotonic()
    with pytest.raises(KafkaUnavailable, match=f"cannot reach Kafka at {bootstrap}"):
        run(producer.start())
    assert time.monotonic() - started < 15
    assert producer.delivered == 0
    with pytest.raises(RuntimeError, match="not started"):
        run(producer.send(Event("a", EventType.ACTIVITY, now_ms(), 1)))


def test_broker_going_down_fails_sends_and_flush_reports_the_undelivered(
    unique_name: Callable[[str], str],
) -> None:
    topic = unique_name("events")
    with EmbeddedBroker() as broker:

        async def scenario() -> None:
            await create(broker.bootstrap, topic, 2)
            producer = EventProducer(broker.bootstrap, events_topic=topic, request_timeout_ms=2000)
            await producer.start()
            for event in make_events(10, users=5, start_ms=now_ms() - 1000):
                await producer.send(event)
            await producer.flush()
            assert producer.delivered == 10
            broker.stop(timeout=0.5)
            lost = make_events(25, users=5, start_ms=now_ms() - 500)
            futures = [await producer.send(e) for e in lost]
            started = time.monotonic()
            with pytest.raises(DeliveryError) as info:
                await producer.flush()
            assert time.monotonic() - started < 15
            assert info.value.undelivered == 25
            assert "25 record(s) not delivered" in str(info.value)
            assert all(f.done() and f.exception() is not None for f in futures)
            assert (producer.delivered, producer.failed, producer.pending) == (10, 25, 0)
            await producer.flush()  # each failure is reported once
            await producer.close()

        run(scenario())


def test_security_options_reach_the_kafka_client(kafka_broker: EmbeddedBroker) -> None:
    """Tansu runs without authentication: asking for SASL must make the connection fail,
    which shows the options went through (PLAINTEXT to the same broker works)."""
    sasl: dict[str, Any] = {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "forum",
        "sasl_plain_password": "secret",
    }
    with pytest.raises(KafkaUnavailable):
        run(EventProducer(kafka_broker.bootstrap, request_timeout_ms=3000, **sasl).start())
    with pytest.raises(Exception, match="(?i)bootstrap|sasl|connect"):
        run(ensure_topics(kafka_broker.bootstrap, [], request_timeout_ms=3000, **sasl))
    run(ensure_topics(kafka_broker.bootstrap, [], security_protocol="PLAINTEXT"))


# ---------------------------------------------------------------------------------------------
# Users and groups


def test_user_and_group_helpers_including_the_null_delete(
    kafka_broker: EmbeddedBroker, unique_name: Callable[[str], str]
) -> None:
    users_topic, groups_topic = unique_name("users"), unique_name("groups")
    ann = UserRecord(7, "ann", "ann@example.org", datetime(2024, 5, 1, tzinfo=UTC), True,
                     Role.ADMIN, (1, 2))  # fmt: skip
    bob = UserRecord(8, "bob", "", datetime(2024, 5, 2, tzinfo=UTC), False, Role.BLOCKED)
    staff = GroupRecord(1, "Staff", True)

    async def scenario() -> tuple[Records, Records]:
        specs = [TopicSpec(users_topic, 2, compacted=True), TopicSpec(groups_topic, 1, True)]
        await ensure_topics(kafka_broker.bootstrap, specs)
        async with EventProducer(
            kafka_broker.bootstrap, users_topic=users_topic, groups_topic=groups_topic
        ) as producer:
            await producer.upsert_user(ann)
            await producer.upsert_user(bob)
            deleted = await producer.delete_user(7)
            await producer.upsert_group(staff)
            await producer.flush()
            assert deleted.result().topic == users_topic
            with pytest.raises(InvalidEvent):
                await producer.delete_user(0)
        users = await read_back(kafka_broker.bootstrap, users_topic, 2, lambda r: len(r) >= 3)
        groups = await read_back(kafka_broker.bootstrap, groups_topic, 1, lambda r: len(r) >= 1)
        return users, groups

    users, groups = run(scenario())
    ann_records = sorted((r for r in users if r.key == b"7"), key=lambda r: r.offset)
    assert [UserRecord.from_json(r.value) for r in ann_records[:1]] == [ann]
    assert ann_records[1].value is None  # the tombstone
    assert ann_records[0].partition == ann_records[1].partition
    assert [UserRecord.from_json(r.value) for r in users if r.key == b"8"] == [bob]
    assert [(r.key, GroupRecord.from_json(r.value)) for r in groups] == [(b"1", staff)]


# ---------------------------------------------------------------------------------------------
# The sync facade


def test_sync_producer_from_many_threads_delivers_each_event_exactly_once(
    kafka_broker: EmbeddedBroker, unique_name: Callable[[str], str]
) -> None:
    topic, partitions, per_thread, threads = unique_name("events"), 3, 250, 4
    run(create(kafka_broker.bootstrap, topic, partitions))
    producer = SyncEventProducer(kafka_broker.bootstrap, events_topic=topic, linger_ms=10)
    start = now_ms() - 10_000

    def work(worker: int) -> None:
        for i in range(per_thread):
            producer.send(
                Event(f"w{worker}-{i}", EventType.ACTIVITY, start + i, worker * 50 + i % 7 + 1)
            )

    pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    producer.upsert_user(UserRecord(1, "a", "", datetime(2024, 1, 1, tzinfo=UTC), True, Role.USER))
    producer.close(timeout=20)
    assert producer.delivered == per_thread * threads + 1 and producer.failed == 0
    producer.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        producer.send(Event("late", EventType.ACTIVITY, now_ms(), 1))

    records = run(
        read_back(
            kafka_broker.bootstrap, topic, partitions, count_at_least(per_thread * threads, 3)
        )
    )
    counts = collections.Counter(e.id for e in decoded_events(records, partitions))
    assert len(counts) == per_thread * threads
    assert set(counts.values()) == {1}


def test_sync_producer_full_buffer_blocks_then_raises_and_close_reports_losses(
    unique_name: Callable[[str], str],
) -> None:
    topic = unique_name("events")
    with EmbeddedBroker() as broker:
        run(create(broker.bootstrap, topic, 1))
        producer = SyncEventProducer(
            broker.bootstrap,
            events_topic=topic,
            buffer_size=5,
            block_timeout=0.5,
            request_timeout_ms=2000,
        )
        broker.stop(timeout=0.5)
        for event in make_events(5, users=2, start_ms=now_ms() - 1000):
            producer.send(event)
        started = time.monotonic()
        with pytest.raises(BufferFullError, match="no room for the event after 0.5 s"):
            producer.send(Event("sixth", EventType.ACTIVITY, now_ms(), 1))
        assert 0.4 < time.monotonic() - started < 5
        with pytest.raises(DeliveryError) as info:
            producer.close(timeout=20)
        assert info.value.undelivered == 5
        assert producer.delivered == 0


def test_sync_producer_refuses_invalid_events_in_the_callers_thread(
    kafka_broker: EmbeddedBroker,
) -> None:
    with SyncEventProducer(kafka_broker.bootstrap) as producer:
        with pytest.raises(InvalidEvent, match="field 'user_id'"):
            producer.send(Event("a", EventType.ACTIVITY, now_ms(), 0))
        with pytest.raises(InvalidEvent):
            producer.send_many([Event("b", EventType.ACTIVITY, now_ms(), 1), Event("", "x", 0, 1)])  # type: ignore[arg-type]
    assert producer.delivered == 0


def test_sync_producer_start_fails_clearly_without_a_broker() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    with pytest.raises(KafkaUnavailable, match=bootstrap):
        SyncEventProducer(bootstrap, request_timeout_ms=3000)


# ---------------------------------------------------------------------------------------------
# Topics


def test_ensure_topics_creates_compacts_and_is_idempotent(
    kafka_broker: EmbeddedBroker, unique_name: Callable[[str], str]
) -> None:
    names = {role: unique_name(role) for role in ("events", "dlq", "users", "groups")}
    specs = default_topic_specs(
        3,
        events_topic=names["events"],
        dlq_topic=names["dlq"],
        users_topic=names["users"],
        groups_topic=names["groups"],
    )

    async def scenario() -> tuple[dict[str, int], dict[str, str | None], list[str]]:
        assert await ensure_topics(kafka_broker.bootstrap, specs) == []
        assert await ensure_topics(kafka_broker.bootstrap, specs) == []  # idempotent
        other = [TopicSpec(names["events"], 5)]
        warnings = await ensure_topics(kafka_broker.bootstrap, other)
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
        await admin.start()
        try:
            described = await admin.describe_topics(list(names.values()))
            counts = {t["topic"]: len(t["partitions"]) for t in described}
            resources = [ConfigResource(ConfigResourceType.TOPIC, n) for n in names.values()]
            configs = await admin.describe_configs(resources)
        finally:
            await admin.close()
        policies: dict[str, str | None] = {}
        for response in configs:
            for resource in response.to_object()["resources"]:
                entries = {e["config_names"]: e["config_value"] for e in resource["config_entries"]}
                policies[resource["resource_name"]] = entries.get("cleanup.policy")
        return counts, policies, warnings

    counts, policies, warnings = run(scenario())
    assert counts == {names["events"]: 3, names["dlq"]: 3, names["users"]: 3, names["groups"]: 1}
    assert policies[names["users"]] == policies[names["groups"]] == "compact"
    assert policies[names["events"]] in (None, "delete")
    assert warnings == [
        f"topic {names['events']!r} exists with 3 partitions, not 5: left as it is "
        "(changing it would move users between partitions)"
    ]


def test_default_topic_names() -> None:
    assert [s.name for s in default_topic_specs(6)] == [
        "forum-events",
        "forum-events-dlq",
        "forum-users",
        "forum-groups",
    ]
    assert [s.compacted for s in default_topic_specs(6)] == [False, False, True, True]
