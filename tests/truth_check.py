"""Compare what the pipeline stored in ClickHouse with a simulation's expected figures
(`forum.truth`): sessions, daily per-user rows, hourly totals, the daily group view and the
segment figures, over the truth's days. Returns every difference, as text."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from clickhouse_connect.driver.client import Client

from clickhouse.segment_figures import segment_figures
from forum.truth import FIELDS, Truth
from forum_analytics.segments import Segments

__all__ = ["truth_differences"]

_SUMS = ", ".join(f"sum({f})" for f in FIELDS)
_NONZERO = " OR ".join(f"sum({f}) != 0" for f in FIELDS)


def truth_differences(
    client: Client, truth: Truth, segments: Segments, *, max_user: int
) -> list[str]:
    """Every difference between the stored figures and `truth`; users >= `max_user` (the
    test's own helper events) are left out."""
    params = {"first": truth.first_day, "last": truth.last_day, "max_user": max_user}
    out: list[str] = []
    out += _diff("sessions", _stored_sessions(client, truth, params), _true_sessions(truth))
    out += _diff("daily_user_summary", _stored_days(client, params), _true_days(truth))
    out += _diff("hourly totals", _stored_hours(client, params), _true_hours(truth))
    out += _diff("daily_group_summary", _stored_groups(client, params), _true_groups(truth))
    zone = ZoneInfo(truth.time_zone)
    stored = segment_figures(client, segments, truth.first_day, truth.last_day, zone)
    out += _diff(
        "segments",
        {s.slug: (s.num_users, s.num_users_added, s.num_active_users, *s.values.values())
         for s in stored},
        {s.slug: (s.num_users, s.num_users_added, s.num_active_users, *s.figures)
         for s in truth.segments},
    )  # fmt: skip
    return out


def _diff(what: str, stored: dict[Any, Any], expected: dict[Any, Any]) -> list[str]:
    out = []
    for key in sorted(stored.keys() | expected.keys(), key=repr):
        if stored.get(key) != expected.get(key):
            out.append(f"{what} {key}: stored {stored.get(key)}, expected {expected.get(key)}")
    return out


def _stored_sessions(
    client: Client, truth: Truth, params: dict[str, Any]
) -> dict[tuple[int, int], tuple[Any, ...]]:
    zone = ZoneInfo(truth.time_zone)
    rows = client.query(
        "SELECT user_id, toUnixTimestamp64Milli(start), toUnixTimestamp64Milli(last_activity), "
        "duration, ip, user_agent, event_count FROM sessions WHERE user_id < {max_user:UInt64} "
        "GROUP BY user_id, start, session_id, last_activity, duration, ip, user_agent, "
        "event_count HAVING sum(sign) > 0",
        parameters=params,
    ).result_rows
    return {
        (r[0], r[1]): tuple(r[2:])
        for r in rows
        if truth.first_day <= _local_day(r[1], zone) <= truth.last_day
    }


def _true_sessions(truth: Truth) -> dict[tuple[int, int], tuple[Any, ...]]:
    return {
        (s.user_id, s.start_ms): (
            s.last_activity_ms,
            s.duration_s,
            s.ip,
            s.user_agent,
            s.event_count,
        )
        for s in truth.sessions
    }


def _stored_days(client: Client, params: dict[str, Any]) -> dict[tuple[str, int], tuple[int, ...]]:
    rows = client.query(
        f"SELECT day, user_id, {_SUMS} FROM daily_user_summary WHERE user_id < {{max_user:UInt64}} "
        "AND day BETWEEN {first:Date} AND {last:Date} GROUP BY day, user_id "
        f"HAVING {_NONZERO}",
        parameters=params,
    ).result_rows
    return {(r[0].isoformat(), r[1]): tuple(r[2:]) for r in rows}


def _true_days(truth: Truth) -> dict[tuple[str, int], tuple[int, ...]]:
    return {(r.day, r.user_id): tuple(r.figures) for r in truth.daily_user_summary}


def _stored_hours(client: Client, params: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    rows = client.query(
        f"SELECT hour, {_SUMS} FROM hourly_user_summary WHERE user_id < {{max_user:UInt64}} "
        "AND day BETWEEN {first:Date} AND {last:Date} GROUP BY hour "
        f"HAVING {_NONZERO}",
        parameters=params,
    ).result_rows
    return {f"{r[0]:%Y-%m-%dT%H:%M:%S}Z": tuple(r[1:]) for r in rows}


def _true_hours(truth: Truth) -> dict[str, tuple[int, ...]]:
    return {r.hour: tuple(r.figures) for r in truth.hourly_totals}


def _stored_groups(
    client: Client, params: dict[str, Any]
) -> dict[tuple[str, int], tuple[int, ...]]:
    names = ", ".join(FIELDS)
    rows = client.query(
        "SELECT day, group_id, num_users, num_users_added, num_active_users, "
        f"{names} FROM daily_group_summary WHERE day BETWEEN {{first:Date}} AND {{last:Date}}",
        parameters=params,
    ).result_rows
    return {(r[0].isoformat(), r[1]): tuple(int(v or 0) for v in r[2:]) for r in rows}


def _true_groups(truth: Truth) -> dict[tuple[str, int], tuple[int, ...]]:
    return {
        (r.day, r.group_id): (r.num_users, r.num_users_added, r.num_active_users, *r.figures)
        for r in truth.daily_group_summary
    }


def _local_day(ms: int, zone: ZoneInfo) -> date:
    return datetime.fromtimestamp(ms / 1000, zone).date()
