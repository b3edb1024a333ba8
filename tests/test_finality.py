"""An hour's row appears once the partition's watermark passes the hour's end plus the grace
period: moved by later events on a busy partition, by the wall clock on an idle one."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from forum_analytics.processes import stop
from streams.broker import EmbeddedBroker
from streams.events import Event, EventType
from streams.partitioning import partition_for_user
from tests.helpers import wait_until
from tests.pipeline import PARTITIONS, Pipeline, start_pipeline

MIN = 60_000
HOUR = 60 * MIN
GRACE = 1 * MIN


@pytest.fixture(scope="module")
def pipe(
    kafka_broker: EmbeddedBroker, clickhouse_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    pipeline = start_pipeline(
        kafka_broker,
        clickhouse_server.port,
        tmp_path_factory.mktemp("finality"),
        ANALYTICS_GRACE_MINUTES=str(GRACE // MIN),
    )
    yield pipeline
    assert stop(pipeline.worker, timeout=20) == 0, pipeline.log()[-3000:]


def _user_on(partition: int, start: int) -> int:
    return next(
        u for u in range(start, start + 1000) if partition_for_user(u, PARTITIONS) == partition
    )


def _send(pipe: Pipeline, user: int, ts_ms: int) -> None:
    pipe.send([Event(uuid.uuid4().hex, EventType.ACTIVITY, ts_ms, user)])


def _stored(pipe: Pipeline, user: int) -> int:
    return pipe.count("SELECT count() FROM events WHERE user_id = {u:UInt64}", u=user)


def _hour_rows(pipe: Pipeline, user: int, hour_ms: int) -> int:
    sql = (
        "SELECT count() FROM hourly_user_summary WHERE user_id = {u:UInt64} "
        "AND hour = {h:DateTime('UTC')}"
    )
    return pipe.count(sql, u=user, h=datetime.fromtimestamp(hour_ms / 1000, UTC))


def test_a_busy_partition_closes_the_hour_with_its_events(pipe: Pipeline) -> None:
    hour = (int(time.time() * 1000) // HOUR - 3) * HOUR  # three hours ago
    user, other = _user_on(0, 7_000_000), _user_on(0, 7_001_000)  # one partition
    _send(pipe, user, hour + 10 * MIN)
    # Another user's event five minutes before hour end + grace: not final yet (the idle
    # advance would need five minutes of silence to get there).
    _send(pipe, other, hour + HOUR + GRACE - 5 * MIN)
    wait_until(lambda: _stored(pipe, other) == 1, timeout=60, what="the second event stored")
    time.sleep(3)  # a few more steps and timer ticks
    assert _hour_rows(pipe, user, hour) == 0
    _send(pipe, other, hour + HOUR + GRACE)  # the watermark reaches hour end + grace
    wait_until(lambda: _hour_rows(pipe, user, hour) == 1, timeout=60, what="the final hour")


def test_an_idle_partition_closes_the_hour_with_the_wall_clock(pipe: Pipeline) -> None:
    now = int(time.time() * 1000)
    hour_end = now // HOUR * HOUR  # the hour that ended last; the event 5 s before its end
    user = _user_on(1, 7_002_000)
    sent_at = time.monotonic()
    _send(pipe, user, hour_end - 5_000)
    wait_until(lambda: _stored(pipe, user) == 1, timeout=60, what="the event stored")
    # Idle from here: the watermark moves from the event's time at the wall clock's pace, so
    # the hour cannot be final before 5 s + grace have passed since the event was read.
    while time.monotonic() - sent_at < (5_000 + GRACE) / 1000 - 10:
        assert _hour_rows(pipe, user, hour_end - HOUR) == 0
        time.sleep(2)
    wait_until(
        lambda: _hour_rows(pipe, user, hour_end - HOUR) == 1, timeout=90, what="the final hour"
    )
    assert time.monotonic() - sent_at >= (5_000 + GRACE) / 1000
