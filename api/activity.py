"""The Activity view: the event log, newest first, with keyset pagination.

Keyset (a cursor naming the last row shown) instead of OFFSET keeps deep pages as fast
as the first one. `activity` events keep sessions alive but are not listed (DESIGN.md).
"""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from clickhouse_connect.driver.client import Client
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel

from api.auth import Principal, require_staff
from api.date_ranges import BadDates, DayRange, resolve_dates
from api.deps import get_clickhouse, get_settings_dep
from api.segments import (
    BadSegment,
    ContentFilter,
    UsersFilter,
    parse_activity,
    parse_content,
    parse_users,
)
from clickhouse.segment_figures import MEMBERSHIP_SPANS
from forum_analytics.segments import resolve_segments
from forum_analytics.settings import Settings

router = APIRouter()


class ActivityEvent(BaseModel):
    """One listed event."""

    id: str
    type: str
    ts: datetime
    user_id: int
    object_type: str | None
    object_id: int | None
    thread_id: int | None
    post_id: int | None


class ActivityPage(BaseModel):
    """A page of the event log; `next_cursor` fetches the following (older) page."""

    events: list[ActivityEvent]
    per_page: int
    next_cursor: str | None


def _encode_cursor(ts: datetime, event_id: str) -> str:
    raw = f"{int(ts.timestamp() * 1000)}:{event_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ms, event_id = raw.split(":", 1)
        return int(ms), event_id
    except (ValueError, UnicodeDecodeError):
        raise HTTPException(400, detail="invalid cursor; use next_cursor from a page") from None


_HOUR = "toStartOfHour(e.ts, {zone:String})"
_IN_HOUR = (
    f"arrayExists(s -> s.1 < {_HOUR} + INTERVAL 1 HOUR AND (s.2 IS NULL OR s.2 > {_HOUR}), m.spans)"
)


def _where(
    types: tuple[str, ...],
    content: ContentFilter,
    users: UsersFilter,
    dates: DayRange,
    zone: ZoneInfo,
) -> tuple[str, list[str], dict[str, Any]]:
    """The FROM clause, the conditions and their parameters. Groups and segments follow the
    rule the figures use: an event belongs to a group when its user was a member at any moment
    of the event's hour (DESIGN.md "Groups"); the default segment holds the events of users in
    no named segment's group then (everyone's, when there are no named segments)."""
    clauses = ["e.type IN {types:Array(String)}"]
    params: dict[str, Any] = {"types": list(types), "zone": zone.key}
    if content.kind == "thread":
        clauses.append("e.thread_id = {content_id:UInt64}")
        params["content_id"] = content.id
    elif content.kind == "post":
        clauses.append("e.post_id = {content_id:UInt64}")
        params["content_id"] = content.id
    if dates.slug != "all-time":  # all time: every event, whatever its day
        clauses.append("e.ts >= {start:DateTime64(3, 'UTC')} AND e.ts < {end:DateTime64(3, 'UTC')}")
        # Days are days of the configured time zone (DESIGN.md), converted to UTC instants.
        params["start"] = _day_start(dates.first, zone)
        params["end"] = _day_start(dates.last + timedelta(days=1), zone)
    source = "events AS e FINAL"
    if users.kind == "user":
        clauses.append("e.user_id = {user_id:UInt64}")
        params["user_id"] = users.id
    elif users.group_ids:
        join = "LEFT" if users.excludes else "INNER"
        source = f"events AS e FINAL {join} JOIN ({MEMBERSHIP_SPANS}) AS m ON m.user_id = e.user_id"
        clauses.append(f"NOT {_IN_HOUR}" if users.excludes else _IN_HOUR)
        params["groups"] = sorted(users.group_ids)
    return source, clauses, params


def _utc(ts: datetime) -> datetime:
    """clickhouse-connect returns naive datetimes for UTC columns; make them explicit."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


def _day_start(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time.min, zone).astimezone(UTC)


def query_events(
    client: Client,
    *,
    zone: ZoneInfo,
    types: tuple[str, ...],
    content: ContentFilter,
    users: UsersFilter,
    dates: DayRange,
    per_page: int,
    cursor: str | None,
) -> ActivityPage:
    """One page of matching events, newest first, each event once."""
    source, clauses, params = _where(types, content, users, dates, zone)
    if cursor:
        ms, event_id = _decode_cursor(cursor)
        clauses.append("(toUnixTimestamp64Milli(e.ts), e.id) < ({c_ms:Int64}, {c_id:String})")
        params.update(c_ms=ms, c_id=event_id)
    params["limit"] = per_page + 1
    sql = (
        "SELECT e.id, e.type, e.ts, e.user_id, e.object_type, e.object_id, e.thread_id, "
        f"e.post_id FROM {source} WHERE {' AND '.join(clauses)} "
        "ORDER BY e.ts DESC, e.id DESC LIMIT {limit:UInt32}"
    )
    rows = client.query(sql, parameters=params, settings={"join_use_nulls": 0}).result_rows
    events = [
        ActivityEvent(
            id=r[0],
            type=r[1],
            ts=_utc(r[2]),
            user_id=r[3],
            object_type=r[4] or None,
            object_id=r[5],
            thread_id=r[6],
            post_id=r[7],
        )
        for r in rows[:per_page]
    ]
    next_cursor = _encode_cursor(events[-1].ts, events[-1].id) if len(rows) > per_page else None
    return ActivityPage(events=events, per_page=per_page, next_cursor=next_cursor)


@router.get(
    "/analytics/activity/{activity}/{content}/{users}/{dates}/",
    response_model=ActivityPage,
    summary="The event log, newest first",
)
def activity_view(
    request: Request,
    activity: str,
    content: str,
    users: str,
    dates: str,
    _: Annotated[Principal, Depends(require_staff)],
    settings: Annotated[Settings, Depends(get_settings_dep)],
    per_page: Annotated[int, Query(ge=1, le=500)] = 20,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> ActivityPage:
    try:
        types = parse_activity(activity)
        content_filter = parse_content(content)
        users_filter = parse_users(users, resolve_segments(settings))
        zone = ZoneInfo(settings.time_zone)
        date_range = resolve_dates(dates, datetime.now(zone).date(), None)
    except (BadSegment, BadDates) as exc:
        raise HTTPException(404, detail=str(exc)) from None
    return query_events(
        get_clickhouse(request),
        zone=zone,
        types=types,
        content=content_filter,
        users=users_filter,
        dates=date_range,
        per_page=per_page,
        cursor=cursor,
    )
