"""End to end on real parts: Tansu broker → Faust worker process → chDB server → API.

One worker serves the module (joining a group on Tansu takes seconds); every test uses
its own user ids so they do not see each other's events.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from fastapi.testclient import TestClient

from api.app import create_app
from api.tokens import Role, create_token
from clickhouse.client import connect
from clickhouse.migrate import migrate
from forum_analytics.processes import stop
from forum_analytics.settings import load_settings
from streams.broker import EmbeddedBroker
from streams.events import Event, EventType, GroupRecord, UserRecord
from streams.events import Role as ForumRole
from streams.partitioning import partition_for_user
from tests.helpers import wait_until
from tests.pipeline import PARTITIONS, Pipeline, start_pipeline


@pytest.fixture(scope="module")
def pipeline(
    kafka_broker: EmbeddedBroker, clickhouse_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    pipe = start_pipeline(kafka_broker, clickhouse_server.port, tmp_path_factory.mktemp("pipe"))
    yield pipe
    code = stop(pipe.worker, timeout=20)
    assert code == 0, f"worker exited with {code}:\n{pipe.log()[-3000:]}"


def _events(user_id: int, n: int, kind: EventType = EventType.QUESTION_VIEWED) -> list[Event]:
    base = int(time.time() * 1000) - 60_000
    return [
        Event.new(
            kind,
            user_id,
            ts=base + i,
            id=f"u{user_id}-{i}-{uuid.uuid4().hex[:6]}",
            object_type="post",
            object_id=100 + i,
            thread_id=100 + i,
        )
        for i in range(n)
    ]


async def _send_raw(
    bootstrap: str, topic: str, messages: Sequence[tuple[bytes | None, bytes, int | None]]
) -> None:
    """Plain aiokafka, one message each: (key, value, partition or None)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        for key, value, partition in messages:
            await producer.send_and_wait(topic, value, key=key, partition=partition)
    finally:
        await producer.stop()


def _stored_ids(pipe: Pipeline, user_ids: list[int]) -> set[str]:
    rows = (
        connect(pipe.db_url)
        .query(
            "SELECT id FROM events FINAL WHERE user_id IN {u:Array(UInt64)}",
            parameters={"u": user_ids},
        )
        .result_rows
    )
    return {r[0] for r in rows}


def test_sdk_and_plain_kafka_events_reach_clickhouse_and_the_api(pipeline: Pipeline) -> None:
    sdk_events = _events(1001, 300) + _events(1002, 200)
    pipeline.send(sdk_events)
    plain = _events(1003, 20)
    asyncio.run(
        _send_raw(
            pipeline.bootstrap,
            pipeline.events_topic,
            [(b"1003", ev.to_json(), None) for ev in plain],
        )
    )
    want = {ev.id for ev in sdk_events + plain}
    wait_until(
        lambda: _stored_ids(pipeline, [1001, 1002, 1003]) == want,
        timeout=60,
        what="events in ClickHouse",
    )
    stored = (
        connect(pipeline.db_url)
        .query(
            "SELECT id, type, toUnixTimestamp64Milli(ts), user_id, object_id, thread_id, _topic "
            "FROM events WHERE user_id = 1003 ORDER BY ts"
        )
        .result_rows
    )
    assert [(r[0], r[1], r[2], r[3], r[4], r[5], r[6]) for r in stored] == [
        (e.id, e.type.value, e.ts_ms, 1003, e.object_id, e.thread_id, pipeline.events_topic)
        for e in plain
    ]
    settings = load_settings(clickhouse_url=pipeline.db_url)
    token = create_token(connect(pipeline.db_url), name="t", role=Role.ADMIN)
    with TestClient(create_app(settings)) as api:
        page = api.get(
            "/analytics/activity/all-activity/all-content/user:1003/all-time/",
            headers={"Authorization": f"Bearer {token}"},
        ).json()
    assert [e["id"] for e in page["events"]] == [e.id for e in reversed(plain)]


def _read_topic(pipe: Pipeline, topic: str, expected: int | None = None) -> list[Any]:
    """Every record of `topic` from the start: until `expected` arrived (60 s at most), or,
    with no `expected`, until a poll finds nothing more. Reads by offset, not by ListOffsets,
    which Tansu answers wrongly for batched writes (risks.md §4.2)."""

    async def read() -> list[Any]:
        consumer = AIOKafkaConsumer(bootstrap_servers=pipe.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            out: list[Any] = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and (expected is None or len(out) < expected):
                batches = await consumer.getmany(timeout_ms=1000)
                if not batches and expected is None:
                    break
                for records in batches.values():
                    out += records
            return out
        finally:
            await consumer.stop()

    return asyncio.run(read())


def test_bad_input_is_dead_lettered_and_the_worker_goes_on(pipeline: Pipeline) -> None:
    good = _events(2001, 1)[0]
    missing = orjson.dumps({"id": "m1", "type": "upvoted", "user_id": 2001})
    unknown = orjson.dumps({"id": "k1", "type": "teleported", "ts": good.ts_ms, "user_id": 2001})
    oversized = orjson.dumps(
        {"id": "o1", "type": "activity", "ts": good.ts_ms, "user_id": 2001, "ip": "x" * 70_000}
    )
    bad = {
        b"{not json": "JSON",
        unknown: "teleported",
        missing: "ts",
        oversized: "limit 65536",
    }
    partition = partition_for_user(2001, PARTITIONS)
    messages = [(b"2001", value, partition) for value in bad]
    messages.append((b"2001", good.to_json(), partition))
    asyncio.run(_send_raw(pipeline.bootstrap, pipeline.events_topic, messages))
    dead = _read_topic(pipeline, pipeline.dlq_topic, expected=len(bad))
    by_value = {r.value: dict(r.headers) for r in dead}
    assert set(by_value) == set(bad)  # the original bytes, each exactly once
    for value, fragment in bad.items():
        assert fragment in by_value[value]["reason"].decode()
        assert by_value[value]["source_topic"].decode() == pipeline.events_topic
    wait_until(lambda: _stored_ids(pipeline, [2001]) == {good.id}, what="the good event")
    assert pipeline.worker.poll() is None  # still alive
    assert pipeline.count("SELECT count() FROM events WHERE user_id = 2001") == 1


def test_bad_user_and_group_records_are_dead_lettered(pipeline: Pipeline) -> None:
    """A bad dimension record never stops the worker; a null user value is a purge, not bad."""
    user = UserRecord(2101, "ann", "ann@example.org", datetime(2024, 1, 1, tzinfo=UTC), True,
                      ForumRole.USER, (7,))  # fmt: skip
    partition = partition_for_user(2101, PARTITIONS)
    bad_users = {
        b'{"user_id": 2101}': "joined_at",
        orjson.dumps(user.to_dict() | {"user_id": 2102}): "under the key of user 2101",
    }
    users = [(b"2101", value, partition) for value in bad_users]
    users.append((b"2101", user.to_json(), partition))
    asyncio.run(_send_raw(pipeline.bootstrap, pipeline.users_topic, users))
    bad_group = b'{"group_id": 7, "name": "x"}'
    good_group = GroupRecord(7, "Staff", True).to_json()
    groups = [(b"7", bad_group, 0), (b"7", good_group, 0)]
    asyncio.run(_send_raw(pipeline.bootstrap, pipeline.groups_topic, groups))
    ours = {*bad_users, bad_group}

    def dead_letters() -> dict[bytes, dict[str, bytes]]:
        found = {r.value: dict(r.headers) for r in _read_topic(pipeline, pipeline.dlq_topic)}
        return found if ours <= set(found) else {}

    by_value = wait_until(dead_letters, timeout=60)
    for value, fragment in bad_users.items():
        assert fragment in by_value[value]["reason"].decode()
        assert by_value[value]["source_topic"].decode() == pipeline.users_topic
    assert by_value[bad_group]["source_topic"].decode() == pipeline.groups_topic
    wait_until(lambda: pipeline.count("SELECT count() FROM groups FINAL WHERE group_id = 7") == 1)
    wait_until(lambda: pipeline.count("SELECT count() FROM group_members FINAL") == 1)
    assert pipeline.count("SELECT count() FROM users FINAL WHERE user_id = 2101") == 1
    assert pipeline.worker.poll() is None


def test_worker_stops_with_an_error_when_clickhouse_refuses_for_good(
    kafka_broker: EmbeddedBroker, clickhouse_server: Any, tmp_path: Path
) -> None:
    pipe = start_pipeline(kafka_broker, clickhouse_server.port, tmp_path)
    try:
        pipe.send(_events(3001, 5))
        wait_until(lambda: pipe.count("SELECT count() FROM events") == 5, what="first batch")
        connect(pipe.db_url).command("DROP TABLE events")  # a refusal no retry can fix
        pipe.send(_events(3002, 5))
        code = pipe.worker.wait(timeout=60)  # it must exit by itself, not hang
    finally:
        stop(pipe.worker, timeout=5)
    assert code == 1, pipe.log()[-3000:]
    assert "ClickHouse refused the batch" in pipe.log()


def _committed(pipe: Pipeline) -> dict[int, int]:
    """The worker group's committed offset per partition (OffsetFetch for explicit partitions)."""

    async def fetch() -> dict[int, int]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=pipe.bootstrap,
            group_id=pipe.env["ANALYTICS_APP_ID"],
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            out = {}
            for p in range(PARTITIONS):
                offset = await consumer.committed(TopicPartition(pipe.events_topic, p))
                out[p] = offset or 0
            return out
        finally:
            await consumer.stop()

    return asyncio.run(fetch())


def _next_offsets(pipe: Pipeline) -> dict[int, int]:
    """Last offset + 1 per partition of the events topic."""
    ends = dict.fromkeys(range(PARTITIONS), 0)
    for record in _read_topic(pipe, pipe.events_topic):
        ends[record.partition] = max(ends[record.partition], record.offset + 1)
    return ends


def test_offsets_are_committed_only_after_clickhouse_acknowledged(
    kafka_broker: EmbeddedBroker, clickhouse_server: Any, tmp_path: Path
) -> None:
    """ClickHouse is down when events arrive: nothing is committed until it comes up."""
    from clickhouse.process import EmbeddedClickHouse
    from forum_analytics.ports import free_port

    down_port = free_port()
    pipe = start_pipeline(kafka_broker, clickhouse_server.port, tmp_path)
    stop(pipe.worker, timeout=20)  # restart it pointing at a ClickHouse that is not there yet
    database = pipe.db_url.rsplit("/", 1)[1]
    pipe.db_url = f"http://default:@127.0.0.1:{down_port}/{database}"
    pipe.env["ANALYTICS_CLICKHOUSE_URL"] = pipe.db_url
    pipe.worker = pipe.start_worker()
    late_server = EmbeddedClickHouse(tmp_path / "late-ch", port=down_port)
    try:
        events = _events(4001, 40) + _events(4002, 40) + _events(4003, 40)
        pipe.send(events)
        wait_until(lambda: "ClickHouse unavailable" in pipe.log(), timeout=60, what="a retry")
        time.sleep(3)  # several commit intervals (1 s) pass while the batch is unwritten
        assert sum(_committed(pipe).values()) == 0
        assert pipe.worker.poll() is None

        late_server.start()
        migrate(pipe.db_url, database)
        wait_until(
            lambda: _stored_ids(pipe, [4001, 4002, 4003]) == {e.id for e in events},
            timeout=60,
            what="the events once ClickHouse is back",
        )
        ends = _next_offsets(pipe)
        assert sum(ends.values()) > 0
        wait_until(lambda: _committed(pipe) == ends, what="every offset committed after the write")
    finally:
        code = stop(pipe.worker, timeout=20)
        late_server.stop()
    assert code == 0, pipe.log()[-3000:]
