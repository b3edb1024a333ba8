"""Sign-in links from the forum (real ClickHouse): a JWT accepted once becomes a signed,
HttpOnly, SameSite session cookie; every bad token, role, cookie or redirect target is refused;
RS256 keys work."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from api.app import create_app
from api.session_cookie import COOKIE, Session, decode_session, encode_session, session_secret
from forum_analytics.settings import load_settings

KEY = "forum-signing-key-of-enough-length-for-hs256"
HOME = "/analytics/"
ACTIVITY = "/analytics/activity/all-activity/all-content/all-users/all-time/"


def _jwt(role: str = "admin", expires_in: int = 60, key: str = KEY, **claims: Any) -> str:
    body = {"sub": "7", "role": role, "exp": int(time.time()) + expires_in, **claims}
    return jwt.encode(body, key, algorithm="HS256")


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    settings = load_settings(clickhouse_url=db_url, jwt_key=KEY)
    with TestClient(create_app(settings), base_url="https://forum.example") as test_client:
        yield test_client


def _sign_in(client: TestClient, token: str, target: str = ACTIVITY) -> Any:
    return client.get(
        "/analytics/sign-in", params={"token": token, "next": target}, follow_redirects=False
    )


def test_a_link_signs_in_once_and_the_cookie_opens_the_reports(client: TestClient) -> None:
    assert client.get(ACTIVITY).status_code == 401
    token = _jwt("moderator", jti=uuid.uuid4().hex)
    response = _sign_in(client, token)
    assert response.status_code == 303
    assert response.headers["location"] == ACTIVITY
    cookie = response.headers["set-cookie"]
    for attribute in ("HttpOnly", "SameSite=lax", "Secure", "Path=/analytics/", "Max-Age=28800"):
        assert attribute.lower() in cookie.lower(), cookie
    assert client.get(ACTIVITY).status_code == 200  # the client keeps the cookie
    client.cookies.clear()
    again = _sign_in(client, token)
    assert again.status_code == 401 and "used already" in again.json()["detail"]


def test_a_token_without_jti_is_also_accepted_once(client: TestClient) -> None:
    token = _jwt()
    assert _sign_in(client, token).status_code == 303
    assert _sign_in(client, token).status_code == 401
    assert _sign_in(client, _jwt(jti="another")).status_code == 303


@pytest.mark.parametrize(
    ("token", "status", "says"),
    [
        (lambda: _jwt(expires_in=-5), 401, "expired"),
        (lambda: _jwt(key="some-other-key-of-enough-length-for-hs256"), 401, "invalid"),
        (lambda: _jwt()[:-3] + "abc", 401, "invalid"),  # tampered signature
        (lambda: jwt.encode({"role": "admin"}, KEY, algorithm="HS256"), 401, "invalid"),  # no exp
        (lambda: "not-a-jwt", 401, "invalid"),
        (lambda: _jwt("user"), 403, "administrators and moderators"),
        (lambda: _jwt("blocked"), 403, "administrators and moderators"),
    ],
)
def test_bad_links_are_refused(client: TestClient, token: Any, status: int, says: str) -> None:
    response = _sign_in(client, token())
    assert response.status_code == status
    assert says in response.json()["detail"]
    assert "set-cookie" not in response.headers


@pytest.mark.parametrize(
    "target",
    ["https://evil.example/", "//evil.example/analytics/", "/elsewhere/", "/analytics\\@evil"],
)
def test_next_never_leaves_the_reports(client: TestClient, target: str) -> None:
    response = _sign_in(client, _jwt(jti=uuid.uuid4().hex), target)
    assert response.status_code == 303
    assert response.headers["location"] == HOME


def test_forged_damaged_and_expired_cookies_are_refused(client: TestClient, db_url: str) -> None:
    secret = session_secret(load_settings(clickhouse_url=db_url, jwt_key=KEY))
    good = encode_session(Session("admin", "7", int(time.time()) + 60), secret)
    cases = {
        "forged": encode_session(Session("admin", "7", int(time.time()) + 60), b"x" * 32),
        "expired": encode_session(Session("admin", "7", int(time.time()) - 1), secret),
        "damaged": good[:-2] + "xx",
        "empty": "",
    }
    for name, value in cases.items():
        client.cookies.set(COOKIE, value, path="/analytics/")
        assert client.get(ACTIVITY).status_code == 401, name
    client.cookies.set(COOKIE, good, path="/analytics/")
    assert client.get(ACTIVITY).status_code == 200
    user = encode_session(Session("user", "8", int(time.time()) + 60), secret)
    client.cookies.set(COOKIE, user, path="/analytics/")
    assert client.get(ACTIVITY).status_code == 403


def test_cookies_round_trip_and_carry_the_role() -> None:
    secret = b"s" * 32
    session = Session("moderator", None, 2_000_000_000)
    assert decode_session(encode_session(session, secret), secret, 1_999_999_999) == session
    assert decode_session(encode_session(session, secret), secret, 2_000_000_000) is None
    assert decode_session(encode_session(session, secret), b"t" * 32, 0) is None


def test_rs256_keys_sign_in(db_url: str) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    settings = load_settings(
        clickhouse_url=db_url,
        jwt_key=public,
        jwt_algorithm="RS256",
        api_session_secret="a-session-secret-of-at-least-32-chars",
    )
    claims = {"role": "admin", "exp": int(time.time()) + 60}
    token = jwt.encode(claims, private, algorithm="RS256")
    with TestClient(create_app(settings)) as api:
        assert api.get(ACTIVITY, headers={"Authorization": f"Bearer {token}"}).status_code == 200
        response = api.get("/analytics/sign-in", params={"token": token}, follow_redirects=False)
        assert response.status_code == 303
        assert api.get(ACTIVITY).status_code == 200
        forged = jwt.encode(claims, KEY, algorithm="HS256")  # the algorithm is not the caller's
        assert api.get(ACTIVITY, headers={"Authorization": f"Bearer {forged}"}).status_code == 401
