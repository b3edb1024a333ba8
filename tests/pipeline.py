"""A pipeline under test: a fresh database and topics on the shared broker and ClickHouse,
and worker processes started on them."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clickhouse.client import connect
from clickhouse.migrate import migrate
from streams.broker import EmbeddedBroker
from streams.events import Event, GroupRecord, UserRecord
from streams.producer import EventProducer
from streams.topics import default_topic_specs, ensure_topics
from tests.helpers import start_cli

PARTITIONS = 3


@dataclass
class Pipeline:
    """A running worker and the names it uses."""

    env: dict[str, str]
    db_url: str
    bootstrap: str
    events_topic: str
    dlq_topic: str
    users_topic: str
    groups_topic: str
    worker: subprocess.Popen[bytes]
    log_path: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def send(self, events: list[Event]) -> None:
        """Send events through the SDK (batched per partition) and wait until all are stored."""

        async def send() -> None:
            async with EventProducer(self.bootstrap, events_topic=self.events_topic) as producer:
                delivered = await producer.send_many(events)
                await producer.flush()
            assert len(await delivered) == len(events)

        asyncio.run(send())

    def publish(
        self,
        users: Sequence[UserRecord] = (),
        groups: Sequence[GroupRecord] = (),
        purge: Sequence[int] = (),
    ) -> None:
        """Send groups, then user records, then purge requests (null values), and wait."""

        async def send() -> None:
            async with EventProducer(
                self.bootstrap, users_topic=self.users_topic, groups_topic=self.groups_topic
            ) as producer:
                futures = [await producer.upsert_group(g) for g in groups]
                futures += [await producer.upsert_user(u) for u in users]
                futures += [await producer.delete_user(u) for u in purge]
                await producer.flush()
                await asyncio.gather(*futures)

        asyncio.run(send())

    def count(self, sql: str, **params: Any) -> int:
        return int(connect(self.db_url).query(sql, parameters=params).result_rows[0][0])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def start_worker(self, **env: str) -> subprocess.Popen[bytes]:
        """Another worker of the same group (log appended to the same file)."""
        proc = start_cli(["worker"], self.env | env, self.log_path)
        self.workers.append(proc)
        return proc


def _names() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {
        "ANALYTICS_APP_ID": f"fa-test-{tag}",
        "ANALYTICS_TOPIC_EVENTS": f"events-{tag}",
        "ANALYTICS_TOPIC_EVENTS_DLQ": f"events-dlq-{tag}",
        "ANALYTICS_TOPIC_USERS": f"users-{tag}",
        "ANALYTICS_TOPIC_GROUPS": f"groups-{tag}",
    }


def start_pipeline(broker: EmbeddedBroker, ch_port: int, tmp: Path, **extra_env: str) -> Pipeline:
    """Migrate a fresh database, create the topics and start a worker process."""
    names = _names()
    database = "pipe_" + names["ANALYTICS_APP_ID"].rsplit("-", 1)[1]
    db_url = f"http://default:@127.0.0.1:{ch_port}/{database}"
    migrate(db_url, database)
    specs = default_topic_specs(
        PARTITIONS,
        events_topic=names["ANALYTICS_TOPIC_EVENTS"],
        dlq_topic=names["ANALYTICS_TOPIC_EVENTS_DLQ"],
        users_topic=names["ANALYTICS_TOPIC_USERS"],
        groups_topic=names["ANALYTICS_TOPIC_GROUPS"],
    )
    asyncio.run(ensure_topics(broker.bootstrap, specs))
    env = names | {
        "ANALYTICS_KAFKA_BOOTSTRAP": broker.bootstrap,
        "ANALYTICS_KAFKA_BROKER_FLAVOR": "tansu",
        "ANALYTICS_KAFKA_SESSION_TIMEOUT_SECONDS": "6",
        "ANALYTICS_TOPIC_PARTITIONS": str(PARTITIONS),
        "ANALYTICS_CLICKHOUSE_URL": db_url,
        "ANALYTICS_BATCH_MAX_SECONDS": "0.2",
        **extra_env,
    }
    log_path = tmp / f"worker-{database}.log"
    worker = start_cli(["worker"], env, log_path)
    return Pipeline(
        env,
        db_url,
        broker.bootstrap,
        names["ANALYTICS_TOPIC_EVENTS"],
        names["ANALYTICS_TOPIC_EVENTS_DLQ"],
        names["ANALYTICS_TOPIC_USERS"],
        names["ANALYTICS_TOPIC_GROUPS"],
        worker,
        log_path,
        [worker],
    )
