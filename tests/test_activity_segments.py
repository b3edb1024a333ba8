"""The Activity view's users forms on a simulated forum (real broker, worker and ClickHouse):
`group:<id>`, each named segment, the default segment and `user:<id>` list exactly the events
that an independent Python computation from the simulator's own events and memberships says
(an event belongs to a group when its user was a member at any moment of its local hour), every
page followed, no event twice."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.tokens import Role as TokenRole
from api.tokens import create_token
from clickhouse.client import connect
from forum.catalogue import BETA_TESTERS, segment_settings
from forum.history import Backfill, SimulationOptions
from forum.model import Forum
from forum.population import build_forum
from forum_analytics.processes import stop
from forum_analytics.segments import resolve_segments
from forum_analytics.settings import load_settings
from streams.broker import EmbeddedBroker
from streams.events import Event, EventType, Role, UserRecord
from tests.helpers import wait_until
from tests.pipeline import Pipeline, start_pipeline

ZONE = ZoneInfo("Asia/Kolkata")
SEED, USERS, DAYS = 21, 120, 3
HOUR_MS = 3_600_000


class Simulated:
    """The simulated forum and its events, rebuilt in process from the same arguments."""

    def __init__(self, end: datetime) -> None:
        end_ms = int(end.timestamp() * 1000)
        start_ms = end_ms - DAYS * 86_400_000
        self.forum: Forum = build_forum(SEED, USERS, start_ms, end_ms)
        options = SimulationOptions(SEED, 30 * 60_000)
        events = Backfill(self.forum, options, start_ms, end_ms).events()
        self.events = list({e.id: e for e in events}.values())


@pytest.fixture(scope="module")
def simulated(
    kafka_broker: EmbeddedBroker, clickhouse_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, Pipeline, Simulated]]:
    tmp = tmp_path_factory.mktemp("activity-segments")
    pipe = start_pipeline(
        kafka_broker,
        clickhouse_server.port,
        tmp,
        ANALYTICS_TIME_ZONE=ZONE.key,
        **segment_settings(),
    )
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
    result = subprocess.run(
        [sys.executable, "-m", "forum_analytics", "simulate", "--silent"]
        + ["--backfill", str(DAYS), "--users", str(USERS), "--seed", str(SEED)]
        + ["--end", end.isoformat()],
        env=dict(os.environ, **pipe.env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    forum = Simulated(end)
    members = len(forum.forum.memberships)
    stored = "SELECT uniqExact(id) FROM events"
    wait_until(lambda: pipe.count(stored) == len(forum.events), timeout=120, what="the events")
    intervals = "SELECT count() FROM group_members FINAL"
    wait_until(lambda: pipe.count(intervals) == members, timeout=60, what="the memberships")
    settings = load_settings(
        clickhouse_url=pipe.db_url,
        time_zone=ZONE.key,
        named_segments=segment_settings()["ANALYTICS_NAMED_SEGMENTS"],
        default_segment=segment_settings()["ANALYTICS_DEFAULT_SEGMENT"],
    )
    token = create_token(connect(pipe.db_url), name="t", role=TokenRole.ADMIN)
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        yield client, pipe, forum
    assert stop(pipe.worker, timeout=20) == 0, pipe.log()[-3000:]


def _listed(client: TestClient, users: str, activity: str = "all-activity") -> list[str]:
    """Every event id the view lists for `users`, following the pages."""
    ids: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"per_page": 500}
        if cursor:
            params["cursor"] = cursor
        url = f"/analytics/activity/{activity}/all-content/{users}/all-time/"
        page = client.get(url, params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        ids += [e["id"] for e in body["events"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return ids


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _hour_start(ms: int) -> int:
    local = datetime.fromtimestamp(ms / 1000, ZONE).replace(minute=0, second=0, microsecond=0)
    return int(local.timestamp() * 1000)


def _member(forum: Forum, event: Event, groups: set[int]) -> bool:
    h = _hour_start(event.ts_ms)
    return any(
        m.user_id == event.user_id
        and m.group_id in groups
        and m.since_ms < h + HOUR_MS
        and (m.until_ms is None or m.until_ms > h)
        for m in forum.memberships
    )


def _expected(sim: Simulated, keep: Any) -> list[str]:
    """Logged events (`activity` is never listed) that `keep` selects, newest first."""
    chosen = [e for e in sim.events if e.type is not EventType.ACTIVITY and keep(e)]
    return [e.id for e in sorted(chosen, key=lambda e: (e.ts_ms, e.id), reverse=True)]


def test_every_users_form_lists_exactly_its_events(
    simulated: tuple[TestClient, Pipeline, Simulated],
) -> None:
    client, _, sim = simulated
    forum = sim.forum
    segments = resolve_segments(
        load_settings(
            named_segments=segment_settings()["ANALYTICS_NAMED_SEGMENTS"],
            default_segment=segment_settings()["ANALYTICS_DEFAULT_SEGMENT"],
        )
    )
    named = set(segments.named_group_ids)
    checked = 0
    for segment in segments.named:
        groups = set(segment.group_ids)
        expected = _expected(sim, lambda e, g=groups: _member(forum, e, g))
        assert _listed(client, segment.slug) == expected, segment.slug
        checked += len(expected)
    default = _expected(sim, lambda e: not _member(forum, e, named))
    assert _listed(client, segments.default.slug) == default
    beta = _expected(sim, lambda e: _member(forum, e, {BETA_TESTERS}))
    assert _listed(client, f"group:{BETA_TESTERS}") == beta
    assert beta and default and checked  # the forum has events in each
    user = sim.events[0].user_id
    assert _listed(client, f"user:{user}") == _expected(sim, lambda e: e.user_id == user)
    everyone = _listed(client, "all-users")
    assert everyone == _expected(sim, lambda e: True) and len(set(everyone)) == len(everyone)


def test_a_left_member_keeps_the_events_of_their_membership(
    simulated: tuple[TestClient, Pipeline, Simulated],
) -> None:
    """Beta testers who left: their events while members are listed, later ones are not."""
    client, _, sim = simulated
    left = [m for m in sim.forum.memberships if m.group_id == BETA_TESTERS and m.until_ms]
    listed = set(_listed(client, f"group:{BETA_TESTERS}"))
    later = [
        e.id
        for m in left
        for e in sim.events
        if e.user_id == m.user_id
        and e.type is not EventType.ACTIVITY
        and m.until_ms is not None
        and _hour_start(e.ts_ms) >= m.until_ms
        and not _member(sim.forum, e, {BETA_TESTERS})
    ]
    assert not listed & set(later)


def test_the_hour_of_leaving_still_belongs_to_the_group(
    simulated: tuple[TestClient, Pipeline, Simulated],
) -> None:
    """A member who leaves at 12:30 (local): events at 12:20 and 12:40 are the group's (a
    member at a moment of that hour), the one at 13:10 is not."""
    client, pipe, _ = simulated
    user = 90_000  # outside the simulated forum
    day = datetime.now(ZONE).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
    left = day + timedelta(hours=12, minutes=30)
    joined = UserRecord(
        user, "leaver", "leaver@example.org", day - timedelta(days=30), True, Role.USER,
        (BETA_TESTERS,), ((BETA_TESTERS, day - timedelta(days=10)),),
    )  # fmt: skip
    pipe.publish([joined, joined._replace(group_ids=(), group_since=(), updated_at=left)])
    times = {"before": -10, "after": 10, "next-hour": 40}
    events = [
        Event(f"leaver-{name}", EventType.UPVOTED, _ms(left + timedelta(minutes=m)), user)
        for name, m in times.items()
    ]
    pipe.send(events)
    closed = (
        "SELECT count() FROM group_members FINAL WHERE user_id = {u:UInt64} AND until IS NOT NULL"
    )
    wait_until(lambda: pipe.count(closed, u=user) == 1, timeout=60, what="the leave")
    stored = "SELECT count() FROM events WHERE user_id = {u:UInt64}"
    wait_until(lambda: pipe.count(stored, u=user) == 3, timeout=60, what="the events")
    listed = [i for i in _listed(client, f"group:{BETA_TESTERS}") if i.startswith("leaver-")]
    assert listed == ["leaver-after", "leaver-before"]


def test_an_unknown_users_form_lists_the_configured_segments(
    simulated: tuple[TestClient, Pipeline, Simulated],
) -> None:
    client, _, _ = simulated
    response = client.get("/analytics/activity/all-activity/all-content/everyone/all-time/")
    assert response.status_code == 404
    detail = response.json()["detail"]
    for form in ("all-users", "customers", "partners", "staff", "community", "group:<id>"):
        assert form in detail
