"""The ClickHouse rows of a step: `hourly_user_summary` deltas and `sessions` versions.

Rows are signed deltas (hours) and signed versions (sessions), so a late event's correction is
just more rows and every sum, in the tables and in the materialized views they feed, is exact
(migrations 0003/0004). Each table's rows of a step are one insert named after the step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final
from zoneinfo import ZoneInfo

from streams.events import ms_to_datetime
from streams.hourly import FIELDS
from streams.partition_processor import HourRow, SessionRow
from streams.timebuckets import day_of

__all__ = ["HOURLY_COLUMNS", "SESSION_COLUMNS", "hourly_rows", "session_rows", "step_token"]

HOURLY_COLUMNS: Final = ("hour", "day", "user_id", *FIELDS)
SESSION_COLUMNS: Final = (
    "session_id",
    "user_id",
    "start",
    "last_activity",
    "duration",
    "ip",
    "user_agent",
    "event_count",
    "sign",
)


def step_token(app_id: str, table: str, topic: str, partition: int, seq: int) -> str:
    """The deduplication token of a step's insert into `table`: the same on every retry and
    every replay of the step, and different for any other step, table, topic or worker group."""
    return f"{app_id}:{table}:{topic}:{partition}:{seq}"


def hourly_rows(rows: Sequence[HourRow], zone: ZoneInfo) -> list[list[Any]]:
    """`hourly_user_summary` rows; `day` is the hour's local date, so no view needs the zone."""
    return [
        [ms_to_datetime(r.hour_ms), day_of(r.hour_ms, zone), r.user_id, *r.values] for r in rows
    ]


def session_rows(rows: Sequence[SessionRow]) -> list[list[Any]]:
    """`sessions` rows: a cancel repeats the written version's values with sign -1."""
    out = []
    for row in rows:
        s = row.session
        out.append(
            [
                f"{s.session_id:016x}",
                s.user_id,
                ms_to_datetime(s.start_ms),
                ms_to_datetime(s.last_ms),
                s.duration_s,
                s.ip or "",
                s.user_agent or "",
                s.event_count,
                row.sign,
            ]
        )
    return out
