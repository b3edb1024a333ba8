"""History read back from the raw `events` table, for events older than a partition's horizon.

The worker forgets a user's sessions some time after they are final (streams.user_state,
"Eviction and the horizon"). An event older than that may repeat an id or join a session the
state no longer holds; the processor then asks this class for both, from the events stored by
earlier steps: rows of this partition after the step's starting offset are excluded, so the
answer is the same when a step is replayed after a crash. Copies of an id are resolved as
`verify` does: the first Kafka position wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from clickhouse_connect.driver.client import Client

from streams.partition_processor import PartitionMark
from streams.sessionizer import Activity, Session, sessionize
from streams.sink import ClickHouseSink

__all__ = ["ClickHouseHistory"]

_DAY_MS = 24 * 3600 * 1000
_MAX_SPAN_MS = 400 * _DAY_MS

_STORED_BEFORE = (
    "user_id = {user:UInt64} AND NOT (_topic = {topic:String} "
    "AND _partition = {partition:UInt16} AND _offset > {end:Int64})"
)


class ClickHouseHistory:
    """`History` for one partition of one topic; call only on the sink's thread."""

    def __init__(self, sink: ClickHouseSink, topic: str, partition: int, timeout_ms: int) -> None:
        self.sink = sink
        self.topic = topic
        self.partition = partition
        self.timeout_ms = timeout_ms

    def _params(self, user_id: int, before: PartitionMark, **more: Any) -> dict[str, Any]:
        return {
            "user": user_id,
            "topic": self.topic,
            "partition": self.partition,
            "end": before.end_offset,
            **more,
        }

    def seen_ids(self, user_id: int, ids: Sequence[str], before: PartitionMark) -> set[str]:
        sql = (
            f"SELECT DISTINCT id FROM events WHERE {_STORED_BEFORE} AND id IN {{ids:Array(String)}}"
        )
        params = self._params(user_id, before, ids=list(ids))
        result = self.sink.retrying(
            lambda c: c.query(sql, parameters=params).result_rows, f"history of user {user_id}"
        )
        return {row[0] for row in result}

    def sessions_near(
        self, user_id: int, first_ms: int, last_ms: int, before: PartitionMark
    ) -> list[Session]:
        """Whole sessions: the window read grows until no session near the range can reach
        past its edges."""
        timeout = self.timeout_ms
        lo, hi = first_ms - timeout, last_ms + timeout
        span = max(timeout, _DAY_MS // 4)
        while True:
            start, end = lo - span, hi + span
            activities = self._activities(user_id, start, end, before)
            sessions = sessionize(user_id, activities, timeout)
            near = [s for s in sessions if s.last_ms >= lo and s.start_ms <= hi]
            whole = all(s.start_ms - start > timeout and end - s.last_ms > timeout for s in near)
            if whole or span >= _MAX_SPAN_MS:
                return near
            span *= 4

    def _activities(
        self, user_id: int, start_ms: int, end_ms: int, before: PartitionMark
    ) -> list[Activity]:
        sql = (
            "SELECT id, argMin((toUnixTimestamp64Milli(ts), ip, user_agent), "
            "(_partition, _offset, _index)) FROM events "
            f"WHERE {_STORED_BEFORE} "
            "AND ts >= fromUnixTimestamp64Milli({start:Int64}, 'UTC') "
            "AND ts <= fromUnixTimestamp64Milli({end_ms:Int64}, 'UTC') GROUP BY id"
        )
        params = self._params(user_id, before, start=start_ms, end_ms=end_ms)

        def query(client: Client) -> list[Any]:
            return list(client.query(sql, parameters=params).result_rows)

        rows = self.sink.retrying(query, f"history of user {user_id}")
        return sorted(
            Activity(int(ms), event_id, ip or None, agent or None)
            for event_id, (ms, ip, agent) in rows
        )
