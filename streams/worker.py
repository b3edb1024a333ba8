"""The Faust worker: `forum-events` → validate → dead-letter bad input → ClickHouse.

Ordering that makes the pipeline lose nothing and count nothing twice:
1. a batch of Kafka messages is taken without acknowledging them (`noack_take`);
2. bad messages are sent to `forum-events-dlq` and their delivery awaited;
3. per partition this worker still owns, messages the partition's last step already covered
   are skipped (a
   redelivery after a crash), the others' events are inserted into `events` and ClickHouse's
   acknowledgement awaited;
4. the partition steps through them: sessions, hours and finality (streams.steps), durable in
   Kafka and ClickHouse before it returns;
5. only then are the messages acknowledged, so Faust can commit their offsets.
A crash anywhere before step 5 redelivers the batch; retries are deduplicated (sink.py,
streams.step_record). A timer steps idle partitions whose hours the wall clock made final.

An unexpected error in the agent is logged and stops the worker with exit code 1 and a
watchdog, because a Faust worker whose agent crashed can hang in its shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
from faust.types import EventT

from forum_analytics.kafka_publishing import product_topic_specs
from forum_analytics.settings import BrokerFlavor, Settings
from streams.dimension_agents import DimensionAgents
from streams.events import decode_message
from streams.partition_processor import Positioned
from streams.sink import ClickHouseSink, SinkFailed, SinkStopped, SourcedEvent
from streams.steps import StateMismatch, StepRunner
from streams.topics import ensure_topics

log = logging.getLogger("forum_analytics.worker")

#: Seconds a stopping worker may take before the watchdog ends the process.
SHUTDOWN_GRACE_SECONDS = 12.0

#: How often idle partitions are checked for hours the wall clock made final.
IDLE_TICK_SECONDS = 1.0


@dataclass
class WorkerStats:
    """Counters the worker logs and later exports as metrics."""

    messages: int = 0
    events: int = 0
    dead_lettered: int = 0
    batches: int = 0


def faust_settings(settings: Settings) -> dict[str, Any]:
    """Faust configuration; Tansu needs a short session and one record per batch (risks.md)."""
    conf: dict[str, Any] = {
        "broker": f"kafka://{settings.kafka_bootstrap.replace(',', ';kafka://')}",
        "store": "memory://",
        # Faust makes `<datadir>/v1/tables` even for memory tables: keep it out of the cwd.
        "datadir": str(Path(tempfile.gettempdir()) / f"forum-analytics-{settings.app_id}"),
        "topic_partitions": settings.topic_partitions,
        "broker_session_timeout": settings.kafka_session_timeout_seconds,
        "broker_heartbeat_interval": max(0.5, settings.kafka_session_timeout_seconds / 6),
        "broker_commit_interval": 1.0,
        "web_enabled": False,
        "processing_guarantee": "at_least_once",
        "consumer_auto_offset_reset": "earliest",
    }
    if settings.kafka_broker_flavor is BrokerFlavor.TANSU:
        # Tansu's ListOffsets(latest) is wrong for multi-record batches (risks.md §4.2).
        conf["producer_max_batch_size"] = 1
    return conf


class IngestWorker:
    """Builds the Faust app and its agent, and runs it as this process's worker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stats = WorkerStats()
        self.exit_code = 0
        self.sink = ClickHouseSink(settings.clickhouse_url)
        self.app = faust.App(settings.app_id, **faust_settings(settings))
        self.steps = StepRunner(settings, self.app, self.sink)
        self.events_topic = self.app.topic(
            settings.topic_events,
            partitions=settings.topic_partitions,
            key_serializer="raw",
            value_serializer="raw",
        )
        self.dlq_topic = self.app.topic(
            settings.topic_events_dlq, key_serializer="raw", value_serializer="raw"
        )
        self.app.agent(self.events_topic, name="ingest-events")(self._agent)
        dims = DimensionAgents(settings, self.app, self.steps, self.sink, self._dead_letter)
        self.app.agent(dims.users_topic, name="ingest-users")(self._guarded(dims.users, "users"))
        self.app.agent(dims.groups_topic, name="ingest-groups")(
            self._guarded(dims.groups, "groups")
        )
        self.app.timer(IDLE_TICK_SECONDS, name="idle-partitions")(self._tick)

    async def _agent(self, stream: Any) -> None:
        # `stream` is a faust.Stream; Any because faust annotates `noack_take` as yielding
        # values while it yields events, which is what we need to acknowledge them.
        settings = self.settings
        try:
            batches = stream.noack_take(  # yields events; we ack them
                settings.batch_max_events, within=settings.batch_max_seconds
            )
            async for batch in batches:
                for event in await self.process(batch):
                    await stream.ack(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._stop_on(exc, "the ingest agent crashed")

    def _guarded(
        self, body: Callable[[Any], Awaitable[None]], topic: str
    ) -> Callable[[Any], Awaitable[None]]:
        """An agent body that stops the worker, saying why, when it fails."""

        async def agent(stream: Any) -> None:
            try:
                await body(stream)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._stop_on(exc, f"the {topic} agent crashed")

        return agent

    async def _tick(self, *_: Any) -> None:
        try:
            await self.steps.tick()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._stop_on(exc, "stepping idle partitions failed")

    def _stop_on(self, exc: Exception, what: str) -> None:
        """Stop the worker after an error in the agent or the timer, saying why."""
        if isinstance(exc, SinkStopped):
            log.info("stopping with a step ClickHouse has not acknowledged; it will be redone")
            return
        if isinstance(exc, SinkFailed | StateMismatch):
            log.error("stopping: %s", exc)
        else:
            log.error("%s; stopping the worker", what, exc_info=exc)
        self.request_exit(1)

    async def process(self, batch: Sequence[EventT[bytes]]) -> list[EventT[bytes]]:
        """Validate, dead-letter and step one batch; returns, once it is durable, the events to
        acknowledge: those of the partitions this worker owns (StepRunner.owns). A bad message
        of a partition being revoked may reach the dead-letter topic twice."""
        good: list[SourcedEvent] = []
        dead: list[tuple[EventT[bytes], bytes, str]] = []
        now_ms = int(time.time() * 1000)
        for event in batch:
            message = event.message
            # The record's broker/producer time, so a redelivery is judged the same way.
            received_at_ms = int(message.timestamp * 1000) if message.timestamp else now_ms
            result = decode_message(
                message.value,
                partition=message.partition,
                num_partitions=self.settings.topic_partitions,
                received_at_ms=received_at_ms,
            )
            for index, ev in enumerate(result.events):
                good.append(
                    SourcedEvent(
                        ev, message.topic, message.partition, message.offset, index, received_at_ms
                    )
                )
            dead.extend((event, err.payload, err.reason) for err in result.errors)
        await self._dead_letter(dead)
        async with self.steps.lock:
            owned = {p for p in {e.message.partition for e in batch} if self.steps.owns(p)}
            for partition in sorted(owned):
                await self._step_partition(partition, good)
        done = [event for event in batch if event.message.partition in owned]
        self.stats.messages += len(done)
        self.stats.events += sum(1 for g in good if g.partition in owned)
        self.stats.batches += 1
        return done

    async def _step_partition(self, partition: int, good: list[SourcedEvent]) -> None:
        proc = await self.steps.processor(partition)
        end = proc.mark.end_offset
        items = [g for g in good if g.partition == partition and g.offset > end]
        if not items:
            return
        await self.sink.write_events(items)
        positioned = [Positioned(g.event, g.offset, g.index, g.received_at_ms) for g in items]
        await self.steps.run(partition, positioned)

    async def _dead_letter(self, dead: list[tuple[EventT[bytes], bytes, str]]) -> None:
        futures = []
        for event, raw, reason in dead:
            message = event.message
            headers = {
                "reason": reason.encode(),
                "source_topic": message.topic.encode(),
                "source_partition": str(message.partition).encode(),
                "source_offset": str(message.offset).encode(),
            }
            fut = await self.dlq_topic.send(key=message.key, value=raw, headers=headers)
            futures.append(fut)
        if futures:
            await asyncio.gather(*futures)  # delivered before the batch is acknowledged
            self.stats.dead_lettered += len(futures)
            log.warning("dead-lettered %d message(s)", len(futures))

    def request_exit(self, code: int) -> None:
        """Stop the worker with `code`, the same way SIGTERM does (watchdog included)."""
        self.exit_code = max(self.exit_code, code)
        os.kill(os.getpid(), signal.SIGTERM)

    def run(self) -> int:
        """Create missing topics, then run the Faust worker until stopped; return the exit code."""
        asyncio.run(self._ensure_topics())
        worker = _GuardedWorker(self, self.app, loglevel="INFO", quiet=True)
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
            self.exit_code = max(self.exit_code, code)
        finally:
            self.sink.close()
            if self.settings.worker_ready_file is not None:
                self.settings.worker_ready_file.unlink(missing_ok=True)
        log.info(
            "worker stopped: %d messages in %d batches, %d events written, %d dead-lettered",
            self.stats.messages,
            self.stats.batches,
            self.stats.events,
            self.stats.dead_lettered,
        )
        steps = self.steps.stats
        log.info(
            "worker stopped: %d steps wrote %d hour rows, %d session rows and %d group rows, "
            "applied %d user records (%d purges); %d duplicate, "
            "%d late and %d beyond-retention events",
            steps.steps,
            steps.hour_rows,
            steps.session_rows,
            steps.group_rows,
            steps.user_records,
            steps.purges,
            steps.duplicates,
            steps.late,
            steps.beyond_horizon,
        )
        return self.exit_code

    async def _ensure_topics(self) -> None:
        specs = product_topic_specs(self.settings)
        for warning in await ensure_topics(self.settings.kafka_bootstrap, specs):
            log.warning("%s", warning)


def start_watchdog(code: int, seconds: float = SHUTDOWN_GRACE_SECONDS) -> None:
    """End the process with `code` if it is still alive `seconds` from now."""

    def _expire() -> None:
        time.sleep(seconds)
        sys.stderr.write(f"worker did not stop within {seconds:.0f}s; exiting\n")
        sys.stderr.flush()
        os._exit(code or 1)

    threading.Thread(target=_expire, name="shutdown-watchdog", daemon=True).start()


class _GuardedWorker(faust.Worker):
    """A Faust worker whose shutdown cannot hang: a signal also arms the watchdog."""

    def __init__(self, owner: IngestWorker, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._owner = owner

    async def on_startup_finished(self) -> None:
        """Partitions assigned and recovery done: tell a supervisor through the ready file."""
        await super().on_startup_finished()
        ready = self._owner.settings.worker_ready_file
        if ready is not None:
            ready.write_text(f"{os.getpid()}\n")

    def _schedule_shutdown(self, signum: signal.Signals) -> None:
        self._owner.sink.stop()  # a write retrying against a dead ClickHouse gives up
        start_watchdog(self._owner.exit_code)
        super()._schedule_shutdown(signum)


def run_worker(settings: Settings) -> int:
    """Entry point of `forum-analytics worker`."""
    return IngestWorker(settings).run()
