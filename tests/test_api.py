"""The report API against a real (embedded) ClickHouse: access rules and the event log."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import jwt
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.tokens import Role, create_token, revoke_token
from clickhouse.client import connect
from forum_analytics.settings import load_settings
from streams.sink import EVENT_COLUMNS

JWT_KEY = "test-signing-key-of-enough-length-for-hs256"
ALL = "/analytics/activity/all-activity/all-content/all-users/all-time/"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    settings = load_settings(clickhouse_url=db_url, jwt_key=JWT_KEY)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _insert(db_url: str, rows: Sequence[tuple[str, str, datetime, int, int | None]]) -> None:
    """Rows of (id, type, ts, user_id, thread_id), as the worker's sink writes them."""
    data = [
        [i, t, ts, u, "", "", "post", 1, th, None, ts, "forum-events", 0, n, 0]
        for n, (i, t, ts, u, th) in enumerate(rows)
    ]
    connect(db_url).insert("events", data, column_names=list(EVENT_COLUMNS))


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _jwt(role: str, expires_in: int = 300) -> str:
    claims = {"sub": "42", "role": role, "exp": int(time.time()) + expires_in}
    return jwt.encode(claims, JWT_KEY, algorithm="HS256")


def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "clickhouse": True}


def test_access_rules(client: TestClient, db_url: str) -> None:
    ch = connect(db_url)
    admin = create_token(ch, name="a", role=Role.ADMIN)
    moderator = create_token(ch, name="m", role=Role.MODERATOR)
    assert client.get(ALL).status_code == 401
    assert client.get(ALL, headers=_bearer("fa_nothing_here")).status_code == 401
    assert client.get(ALL, headers=_bearer(admin + "x")).status_code == 401
    assert client.get(ALL, headers=_bearer(admin)).status_code == 200
    assert client.get(ALL, headers=_bearer(moderator)).status_code == 200
    assert client.get(ALL, headers=_bearer(_jwt("moderator"))).status_code == 200
    assert client.get(ALL, headers=_bearer(_jwt("user"))).status_code == 403
    assert client.get(ALL, headers=_bearer(_jwt("admin", expires_in=-10))).status_code == 401
    forged = jwt.encode({"role": "admin", "exp": int(time.time()) + 60}, "other-key-" * 4)
    assert client.get(ALL, headers=_bearer(forged)).status_code == 401
    token_id = admin.split("_")[1]
    assert revoke_token(ch, token_id)
    assert client.get(ALL, headers=_bearer(admin)).status_code == 401


def test_event_log_newest_first_each_event_once(client: TestClient, db_url: str) -> None:
    token = create_token(connect(db_url), name="a", role=Role.ADMIN)
    rows: list[tuple[str, str, datetime, int, int | None]] = [
        (f"e{n:03d}", "question_viewed", T0 + timedelta(minutes=n), 7, 3) for n in range(45)
    ]
    rows.append(("keepalive", "activity", T0 + timedelta(hours=5), 7, None))
    _insert(db_url, rows)
    _insert(db_url, rows[:10])  # a redelivered batch: listed once all the same
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"per_page": 20} | ({"cursor": cursor} if cursor else {})
        page = client.get(ALL, headers=_bearer(token), params=params).json()
        seen += [e["id"] for e in page["events"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    expected = [f"e{n:03d}" for n in reversed(range(45))]
    assert seen == expected  # newest first, no duplicates, `activity` not listed


def test_filters(client: TestClient, db_url: str) -> None:
    token = create_token(connect(db_url), name="a", role=Role.ADMIN)
    _insert(
        db_url,
        [
            ("a", "question_asked", T0, 1, 10),
            ("b", "upvoted", T0 + timedelta(days=1), 2, 10),
            ("c", "answer_posted", T0 + timedelta(days=2), 1, 11),
        ],
    )

    def ids(path: str) -> list[str]:
        response = client.get(path, headers=_bearer(token))
        assert response.status_code == 200, response.text
        return [e["id"] for e in response.json()["events"]]

    base = "/analytics/activity"
    assert ids(f"{base}/any-content-posted/all-content/all-users/all-time/") == ["c", "a"]
    page = client.get(f"{base}/all-activity/all-content/user:2/all-time/", headers=_bearer(token))
    assert page.json()["events"][0]["ts"] == "2026-03-02T12:00:00Z"  # explicit UTC
    assert ids(f"{base}/all-activity/thread:10/all-users/all-time/") == ["b", "a"]
    assert ids(f"{base}/all-activity/all-content/user:1/all-time/") == ["c", "a"]
    assert ids(f"{base}/all-activity/all-content/all-users/2026-03-02..2026-03-02/") == ["b"]


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("/analytics/activity/nope/all-content/all-users/all-time/", "content-upvoted"),
        ("/analytics/activity/all-activity/thread:x/all-users/all-time/", "thread:<id>"),
        ("/analytics/activity/all-activity/all-content/user:0/all-time/", "user:<id>"),
        ("/analytics/activity/all-activity/all-content/all-users/2026-13-01..2026-13-02/", "date"),
        ("/analytics/activity/all-activity/all-content/all-users/yesterday/", "YYYY-MM-DD"),
        ("/analytics/activity/all-activity/all-content/all-users/yesterday/", "last-6-months"),
        ("/analytics/activity/all-activity/all-content/all-users/2026-03-02..2026-03-01/", "end"),
    ],
)
def test_bad_segments_name_the_accepted_forms(
    client: TestClient, db_url: str, path: str, named: str
) -> None:
    token = create_token(connect(db_url), name="a", role=Role.ADMIN)
    response = client.get(path, headers=_bearer(token))
    assert response.status_code == 404
    assert named in response.json()["detail"]


def test_named_date_ranges_count_from_today_in_the_time_zone(db_url: str) -> None:
    settings = load_settings(clickhouse_url=db_url, time_zone="Asia/Kolkata")
    token = create_token(connect(db_url), name="a", role=Role.ADMIN)
    now = datetime.now(UTC)
    today = now.astimezone(ZoneInfo("Asia/Kolkata")).date()
    seven_days_back = datetime.combine(today - timedelta(days=6), datetime.min.time())
    first_kept = seven_days_back.replace(tzinfo=ZoneInfo("Asia/Kolkata"))
    rows = [
        ("now", "upvoted", now - timedelta(seconds=1), 1, None),
        ("edge", "upvoted", first_kept, 1, None),  # the first instant of last-7-days
        ("before", "upvoted", first_kept - timedelta(milliseconds=1), 1, None),
    ]
    _insert(db_url, rows)
    base = "/analytics/activity/all-activity/all-content/all-users"
    with TestClient(create_app(settings)) as api:

        def ids(dates: str) -> list[str]:
            page = api.get(f"{base}/{dates}/", headers=_bearer(token)).json()
            return [e["id"] for e in page["events"]]

        assert ids("last-7-days") == ["now", "edge"]
        assert ids("last-30-days") == ["now", "edge", "before"]
        assert ids("all-time") == ["now", "edge", "before"]
        zone = ZoneInfo("Asia/Kolkata")
        last_year = [i for i, _, ts, _, _ in rows if ts.astimezone(zone).year == today.year - 1]
        assert ids("last-year") == last_year


def test_bad_cursor_is_a_400(client: TestClient, db_url: str) -> None:
    token = create_token(connect(db_url), name="a", role=Role.ADMIN)
    response = client.get(ALL, headers=_bearer(token), params={"cursor": "!!!"})
    assert response.status_code == 400


def test_custom_dates_are_days_of_the_configured_time_zone(db_url: str) -> None:
    settings = load_settings(clickhouse_url=db_url, time_zone="America/New_York")
    token = create_token(connect(db_url), name="a", role=Role.ADMIN)
    # 03:00 UTC on 2 March is 22:00 on 1 March in New York (UTC-5 in winter).
    _insert(db_url, [("late", "upvoted", datetime(2026, 3, 2, 3, 0, tzinfo=UTC), 1, None)])
    base = "/analytics/activity/all-activity/all-content/all-users"
    with TestClient(create_app(settings)) as api:
        first = api.get(f"{base}/2026-03-01..2026-03-01/", headers=_bearer(token)).json()
        second = api.get(f"{base}/2026-03-02..2026-03-02/", headers=_bearer(token)).json()
    assert [e["id"] for e in first["events"]] == ["late"]
    assert second["events"] == []
