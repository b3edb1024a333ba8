"""Users and HTTP authentication, following clickhouse-server's rules.

Credentials come from exactly one of: ``X-ClickHouse-User``/``X-ClickHouse-Key``
headers, HTTP Basic auth, or ``user``/``password`` URL parameters; mixing them
is an error, and no credentials at all means the ``default`` user. There is no
access-control engine in chDB, so a user is just a password and a read-only
flag; read-only users get ``readonly=2`` on their engine sessions, which lets
them tune SELECT settings but refuses writes and DDL with READONLY (164).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from clickhouse.errors import AUTHENTICATION_FAILED, ClickHouseError


@dataclass(frozen=True)
class UserSpec:
    """A server user: its password (may be empty) and whether it may only read."""

    password: str = ""
    readonly: bool = False


DEFAULT_USERS: Mapping[str, UserSpec] = {"default": UserSpec()}


def _multiple(first: str, second: str) -> ClickHouseError:
    return ClickHouseError(
        AUTHENTICATION_FAILED,
        f"Invalid authentication: it is not allowed to use {first} and {second} simultaneously",
    )


def _basic_credentials(authorization: str) -> tuple[str, str]:
    scheme, _, info = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        raise ClickHouseError(
            AUTHENTICATION_FAILED,
            f"Invalid authentication: '{scheme}' HTTP Authorization scheme is not supported",
        )
    try:
        decoded = base64.b64decode(info.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ClickHouseError(
            AUTHENTICATION_FAILED, "Invalid authentication: malformed Basic credentials"
        ) from exc
    user, _, password = decoded.partition(":")
    return user, password


def extract_credentials(headers: Mapping[str, str], params: Mapping[str, str]) -> tuple[str, str]:
    """(user, password) from the request, refusing mixed schemes as ClickHouse does."""
    header_user = headers.get("X-ClickHouse-User", "")
    header_key = headers.get("X-ClickHouse-Key", "")
    authorization = headers.get("Authorization")
    in_params = "user" in params or "password" in params
    if header_user or header_key:
        if authorization:
            raise _multiple("X-ClickHouse HTTP headers", "Authorization HTTP header")
        if in_params:
            raise _multiple("X-ClickHouse HTTP headers", "authentication via parameters")
        user, password = header_user, header_key
        source = "X-ClickHouse HTTP headers"
    elif authorization:
        if in_params:
            raise _multiple("Authorization HTTP header", "authentication via parameters")
        user, password = _basic_credentials(authorization)
        source = "Authorization HTTP header"
    else:
        user, password = params.get("user", "default"), params.get("password", "")
        source = "authentication via parameters"
    if not user:
        raise ClickHouseError(AUTHENTICATION_FAILED, f"Got an empty user name from {source}")
    return user, password


def authenticate(users: Mapping[str, UserSpec], user: str, password: str) -> UserSpec:
    """The user's spec if the password matches; AUTHENTICATION_FAILED otherwise.

    Unknown users and wrong passwords get the same message, as in ClickHouse,
    so the answer does not reveal which user names exist.
    """
    spec = users.get(user)
    expected = spec.password if spec is not None else ""
    matches = hmac.compare_digest(password.encode("utf-8"), expected.encode("utf-8"))
    if spec is None or not matches:
        raise ClickHouseError(
            AUTHENTICATION_FAILED,
            f"{user}: Authentication failed: password is incorrect, "
            "or there is no user with such name",
        )
    return spec
