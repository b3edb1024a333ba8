"""Who may read reports: administrators and moderators, by API token or forum JWT.

No or bad credentials → 401; valid credentials of any other role → 403.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any

import jwt
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.deps import get_clickhouse, get_settings_dep
from api.session_cookie import COOKIE, decode_session, session_secret
from api.tokens import TOKEN_PREFIX, Role, verify_token
from forum_analytics.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="An API token or a JWT from the forum")
STAFF_ROLES = frozenset(role.value for role in Role)


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    role: str
    via: str  # "token", "jwt" or "session"
    subject: str | None = None


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


def decode_jwt(token: str, settings: Settings) -> dict[str, Any]:
    """The claims of a forum JWT (key and algorithm from the settings; `exp` and `role`
    required); 401 when it is expired, forged, or JWTs are not configured."""
    if not settings.jwt_key:
        raise unauthorized("invalid token")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            settings.jwt_key,
            algorithms=[settings.jwt_algorithm],
            options={"require": ["exp", "role"]},
        )
    except jwt.ExpiredSignatureError:
        raise unauthorized("token expired") from None
    except jwt.PyJWTError:
        raise unauthorized("invalid token") from None
    return claims


def _from_jwt(token: str, settings: Settings) -> Principal:
    claims = decode_jwt(token, settings)
    subject = claims.get("sub")
    return Principal(str(claims["role"]), "jwt", str(subject) if subject is not None else None)


def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    settings: Annotated[Settings, Depends(get_settings_dep)],
) -> Principal:
    """The caller, from `Authorization: Bearer`, else from the session cookie of a forum
    sign-in link (api.sign_in); 401 when missing or invalid."""
    if credentials is None or not credentials.credentials:
        return _from_cookie(request, settings)
    token = credentials.credentials
    if token.startswith(TOKEN_PREFIX):
        role = verify_token(get_clickhouse(request), token)
        if role is None:
            raise unauthorized("invalid or revoked token")
        return Principal(role.value, "token")
    return _from_jwt(token, settings)


def _from_cookie(request: Request, settings: Settings) -> Principal:
    value = request.cookies.get(COOKIE)
    if not value:
        raise unauthorized(
            "authentication required: send Authorization: Bearer <token>, or sign in through "
            "the forum"
        )
    session = decode_session(value, session_secret(settings), time.time())
    if session is None:
        raise unauthorized("session expired or invalid: sign in through the forum again")
    return Principal(session.role, "session", session.subject)


def require_staff(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """Only administrators and moderators; 403 for any other role."""
    if principal.role not in STAFF_ROLES:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, detail="reports are for administrators and moderators"
        )
    return principal
