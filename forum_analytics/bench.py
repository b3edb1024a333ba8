"""`forum-analytics bench`: the worker's throughput against a raw consumer, in the same run.

Both read the same SDK-batched messages from a fresh topic on an embedded broker. The baseline
is a plain aiokafka consumer that only decodes them (streams.events.decode_message); the worker
does everything (decode, dead-letter check, raw events insert, sessions and hours, step record
and state to the changelog, summary inserts, commit), measured from the moment it reports
ready (group joined) until its committed offsets reach the end of the topic. Figures are
events per second; the ratio is what to compare across machines (BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from clickhouse.migrate import migrate
from clickhouse.process import EmbeddedClickHouse
from forum_analytics.processes import spawn, stop
from streams.broker import EmbeddedBroker
from streams.events import Event, EventType, decode_message
from streams.producer import EventProducer
from streams.topics import default_topic_specs, ensure_topics

PARTITIONS = 3
_HOUR = 3_600_000


@dataclass(frozen=True)
class BenchResult:
    events: int
    messages: int
    consumer_seconds: float
    worker_seconds: float

    @property
    def consumer_rate(self) -> float:
        return self.events / self.consumer_seconds

    @property
    def worker_rate(self) -> float:
        return self.events / self.worker_seconds

    def table(self) -> str:
        ratio = self.worker_rate / self.consumer_rate
        return "\n".join(
            [
                f"{self.events} events in {self.messages} SDK-batched messages, "
                f"{PARTITIONS} partitions",
                "| path | seconds | events/s |",
                "| --- | ---: | ---: |",
                f"| raw aiokafka consumer, decode only | {self.consumer_seconds:.2f} | "
                f"{self.consumer_rate:,.0f} |",
                f"| worker, end to end | {self.worker_seconds:.2f} | {self.worker_rate:,.0f} |",
                f"| ratio worker / consumer | | {ratio:.3f} |",
            ]
        )


def _events(n: int, users: int, seed: int = 7) -> list[Event]:
    """A day of activity ending an hour ago, sessions of a few events with minute gaps."""
    rng = random.Random(seed)
    start = (int(time.time() * 1000) // _HOUR - 25) * _HOUR
    out: list[Event] = []
    kinds = [EventType.ACTIVITY, EventType.QUESTION_VIEWED, EventType.ANSWER_VIEWED]
    clock = {u: start + rng.randrange(_HOUR) for u in range(1, users + 1)}
    for i in range(n):
        user = rng.randrange(1, users + 1)
        clock[user] += rng.choice([20_000, 90_000, 600_000, 2_400_000])
        out.append(Event(f"b{i}", rng.choice(kinds), clock[user], user, "10.0.0.1", "bench"))
    out.sort(key=lambda e: e.ts_ms)
    return out


async def _produce(bootstrap: str, topic: str, events: list[Event]) -> dict[int, int]:
    """Send the events; return each partition's end offset (last offset + 1)."""
    async with EventProducer(bootstrap, events_topic=topic) as producer:
        deliveries = await (await producer.send_many(events))
    ends: dict[int, int] = {}
    for d in deliveries:
        ends[d.partition] = max(ends.get(d.partition, 0), d.offset + 1)
    return ends


async def _consume(bootstrap: str, topic: str, ends: dict[int, int]) -> tuple[int, float]:
    """Read and decode every message; return (events, seconds)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in ends]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        began = time.perf_counter()
        events, done = 0, dict.fromkeys(ends, 0)
        while any(done[p] < ends[p] for p in ends):
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for tp, records in batches.items():
                for record in records:
                    assert record.value is not None
                    result = decode_message(
                        record.value,
                        partition=tp.partition,
                        num_partitions=PARTITIONS,
                        received_at_ms=record.timestamp,
                    )
                    events += len(result.events)
                    done[tp.partition] = record.offset + 1
        return events, time.perf_counter() - began
    finally:
        await consumer.stop()


async def _committed(bootstrap: str, group: str, topic: str, ends: dict[int, int]) -> bool:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        for p, end in ends.items():
            if (await consumer.committed(TopicPartition(topic, p)) or 0) < end:
                return False
        return True
    finally:
        await consumer.stop()


def _time_worker(
    env: dict[str, str], ready: Path, log: Path, topic: str, ends: dict[int, int]
) -> float:
    worker = spawn([sys.executable, "-m", "forum_analytics", "worker"], env=env, log_path=log)
    try:
        while not ready.exists():
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited; see {log}")
            time.sleep(0.05)
        began = time.perf_counter()
        group, bootstrap = env["ANALYTICS_APP_ID"], env["ANALYTICS_KAFKA_BOOTSTRAP"]
        while not asyncio.run(_committed(bootstrap, group, topic, ends)):
            time.sleep(0.1)
        return time.perf_counter() - began
    finally:
        stop(worker, timeout=20)


def run_bench(events: int = 100_000, users: int = 2_000) -> BenchResult:
    """Start a broker and ClickHouse in a temporary directory, measure both paths, stop."""
    with tempfile.TemporaryDirectory(prefix="fa-bench-") as tmp:
        root = Path(tmp)
        broker = EmbeddedBroker(log_dir=root).start()
        server = EmbeddedClickHouse(root / "ch", log_path=root / "ch.log").start()
        try:
            topic = "bench-events"
            url = f"http://default:@127.0.0.1:{server.port}/bench"
            migrate(url, "bench")
            specs = default_topic_specs(PARTITIONS, events_topic=topic, dlq_topic="bench-dlq")
            asyncio.run(ensure_topics(broker.bootstrap, specs))
            sample = _events(events, users)
            ends = asyncio.run(_produce(broker.bootstrap, topic, sample))
            consumed, consumer_seconds = asyncio.run(_consume(broker.bootstrap, topic, ends))
            assert consumed == events, (consumed, events)
            env = dict(
                os.environ,
                ANALYTICS_APP_ID="bench",
                ANALYTICS_KAFKA_BOOTSTRAP=broker.bootstrap,
                ANALYTICS_KAFKA_BROKER_FLAVOR="tansu",
                ANALYTICS_KAFKA_SESSION_TIMEOUT_SECONDS="6",
                ANALYTICS_TOPIC_PARTITIONS=str(PARTITIONS),
                ANALYTICS_TOPIC_EVENTS=topic,
                ANALYTICS_TOPIC_EVENTS_DLQ="bench-dlq",
                ANALYTICS_CLICKHOUSE_URL=url,
                ANALYTICS_WORKER_READY_FILE=str(root / "ready"),
            )
            seconds = _time_worker(env, root / "ready", root / "worker.log", topic, ends)
            return BenchResult(events, sum(ends.values()), consumer_seconds, seconds)
        finally:
            server.stop()
            broker.stop()
