"""Who may read reports: administrators and moderators, by API token or forum JWT.

No or bad credentials → 401; valid credentials of any other role → 403.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import jwt
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.deps import get_clickhouse, get_settings_dep
from api.tokens import TOKEN_PREFIX, Role, verify_token
from forum_analytics.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="An API token or a JWT from the forum")
STAFF_ROLES = frozenset(role.value for role in Role)


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    role: str
    via: str  # "token" or "jwt"
    subject: str | None = None


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


def _from_jwt(token: str, settings: Settings) -> Principal:
    if not settings.jwt_key:
        raise _unauthorized("invalid token")
    try:
        claims = jwt.decode(
            token,
            settings.jwt_key,
            algorithms=[settings.jwt_algorithm],
            options={"require": ["exp", "role"]},
        )
    except jwt.ExpiredSignatureError:
        raise _unauthorized("token expired") from None
    except jwt.PyJWTError:
        raise _unauthorized("invalid token") from None
    subject = claims.get("sub")
    return Principal(str(claims["role"]), "jwt", str(subject) if subject is not None else None)


def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    settings: Annotated[Settings, Depends(get_settings_dep)],
) -> Principal:
    """The caller, from `Authorization: Bearer`; 401 when missing or invalid."""
    if credentials is None or not credentials.credentials:
        raise _unauthorized("authentication required: send Authorization: Bearer <token>")
    token = credentials.credentials
    if token.startswith(TOKEN_PREFIX):
        role = verify_token(get_clickhouse(request), token)
        if role is None:
            raise _unauthorized("invalid or revoked token")
        return Principal(role.value, "token")
    return _from_jwt(token, settings)


def require_staff(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """Only administrators and moderators; 403 for any other role."""
    if principal.role not in STAFF_ROLES:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, detail="reports are for administrators and moderators"
        )
    return principal
