"""Who may read what: every report route (taken from the OpenAPI schema, so a new route is
covered by itself) against every kind of caller: anonymous, API tokens (valid, revoked,
garbage), forum JWTs of each role (and expired, tampered, wrong-key ones), session cookies."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.session_cookie import COOKIE, Session, encode_session, session_secret
from api.tokens import Role, create_token, revoke_token
from clickhouse.client import connect
from forum_analytics.settings import Settings, load_settings

KEY = "forum-signing-key-of-enough-length-for-hs256"
PUBLIC = {"/healthz", "/analytics/sign-in"}  # health, and the sign-in link (its own tests)
EXAMPLES = {
    "activity": "all-activity",
    "content": "all-content",
    "users": "all-users",
    "dates": "all-time",
}


def _jwt(role: str, expires_in: int = 60, key: str = KEY) -> str:
    return jwt.encode({"role": role, "exp": int(time.time()) + expires_in}, key, algorithm="HS256")


@pytest.fixture
def app_and_settings(db_url: str) -> Iterator[tuple[TestClient, Settings]]:
    settings = load_settings(clickhouse_url=db_url, jwt_key=KEY)
    with TestClient(create_app(settings)) as client:
        yield client, settings


def _report_paths(client: TestClient) -> list[str]:
    """Every GET route of the schema but the public ones, with example path values."""
    paths = []
    for path, operations in client.app.openapi()["paths"].items():  # type: ignore[attr-defined]
        if "get" not in operations or path in PUBLIC:
            continue
        names = re.findall(r"{(\w+)}", path)
        missing = [n for n in names if n not in EXAMPLES]
        assert not missing, f"add an example value for {missing} of {path}"
        paths.append(re.sub(r"{(\w+)}", lambda m: EXAMPLES[m[1]], path))
    return paths


Credential = Callable[[Settings, str], dict[str, str]]
"""Headers of a kind of caller, given the app's settings and database."""


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _api_token(role: Role, revoked: bool = False) -> Credential:
    def make(_: Settings, db_url: str) -> dict[str, str]:
        client = connect(db_url)
        token = create_token(client, name="t", role=role)
        if revoked:
            assert revoke_token(client, token.split("_")[1])
        return _bearer(token)

    return make


def _cookie(role: str, secret: bytes | None = None) -> Credential:
    def make(settings: Settings, _: str) -> dict[str, str]:
        session = Session(role, "9", int(time.time()) + 60)
        value = encode_session(session, secret or session_secret(settings))
        return {"Cookie": f"{COOKIE}={value}"}

    return make


def _jwt_credential(role: str, **options: Any) -> Credential:
    return lambda _settings, _url: _bearer(_jwt(role, **options))


def _tampered() -> dict[str, str]:
    token = _jwt("admin")
    head, body, signature = token.split(".")
    forged_body = jwt.utils.base64url_encode(b'{"role":"admin","exp":4102444800}').decode()
    return _bearer(f"{head}.{forged_body}.{signature}")


CALLERS: dict[str, tuple[Credential, int]] = {
    "anonymous": (lambda _s, _u: {}, 401),
    "garbage bearer": (lambda _s, _u: _bearer("fa_nothing_here"), 401),
    "admin token": (_api_token(Role.ADMIN), 200),
    "moderator token": (_api_token(Role.MODERATOR), 200),
    "revoked token": (_api_token(Role.ADMIN, revoked=True), 401),
    "admin jwt": (_jwt_credential("admin"), 200),
    "moderator jwt": (_jwt_credential("moderator"), 200),
    "user jwt": (_jwt_credential("user"), 403),
    "blocked jwt": (_jwt_credential("blocked"), 403),
    "expired jwt": (_jwt_credential("admin", expires_in=-5), 401),
    "wrong-key jwt": (_jwt_credential("admin", key="another-key-of-enough-length-for-hs256"), 401),
    "tampered jwt": (lambda _s, _u: _tampered(), 401),
    "admin cookie": (_cookie("admin"), 200),
    "moderator cookie": (_cookie("moderator"), 200),
    "user cookie": (_cookie("user"), 403),
    "forged cookie": (_cookie("admin", b"f" * 32), 401),
}


@pytest.mark.parametrize("caller", sorted(CALLERS))
def test_every_route_answers_every_caller(
    app_and_settings: tuple[TestClient, Settings], db_url: str, caller: str
) -> None:
    client, settings = app_and_settings
    make, expected = CALLERS[caller]
    paths = _report_paths(client)
    assert "/analytics/" in paths and len(paths) >= 2
    for path in paths:
        headers = make(settings, db_url)
        response = client.get(path, headers=headers)
        assert response.status_code == expected, (caller, path, response.text)
        if expected == 401:
            assert response.headers.get("www-authenticate") == "Bearer"
