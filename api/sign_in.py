"""Sign-in links from the forum: a JWT accepted once and turned into a session cookie.

The forum sends its staff to `/analytics/sign-in?token=<JWT>&next=/analytics/users/...`. The
JWT is checked as a Bearer JWT is (key and algorithm from the settings, `exp` and `role`
required) and, because a link ends up in browser histories and logs, accepted only once: its
`jti`, or a SHA-256 of the token, is recorded in ClickHouse (every API process
sees it; two requests racing with the same link within milliseconds could both pass). The
answer sets the session cookie (api.session_cookie) and redirects to `next`, a path under
/analytics/ only (no open redirect).
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from typing import Annotated, Final

from clickhouse_connect.driver.client import Client
from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import RedirectResponse

from api.auth import STAFF_ROLES, decode_jwt, unauthorized
from api.deps import get_clickhouse, get_settings_dep
from api.session_cookie import COOKIE, Session, encode_session, session_secret
from forum_analytics.settings import Settings

__all__ = ["router"]

router = APIRouter()

_HOME: Final = "/analytics/"


@router.get(
    "/analytics/sign-in",
    summary="Sign in with a one-time JWT from the forum; sets a session cookie, redirects",
    status_code=status.HTTP_303_SEE_OTHER,
    response_class=RedirectResponse,
    responses={
        401: {"description": "invalid, expired or used token"},
        403: {"description": "not staff"},
    },
)
def sign_in(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings_dep)],
    token: Annotated[str, Query(description="A JWT from the forum (role, exp; jti optional)")],
    next: Annotated[str, Query(description="Where to go, a path under /analytics/")] = _HOME,
) -> RedirectResponse:
    claims = decode_jwt(token, settings)
    role = str(claims["role"])
    if role not in STAFF_ROLES:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, detail="reports are for administrators and moderators"
        )
    expires_at = int(claims["exp"])
    if not _first_use(get_clickhouse(request), _token_key(token, claims), expires_at):
        raise unauthorized("this sign-in link was used already; ask the forum for a new one")
    subject = claims.get("sub")
    lifetime = int(settings.api_session_hours * 3600)
    session = Session(role, None if subject is None else str(subject), int(time.time()) + lifetime)
    response = RedirectResponse(_safe_next(next), status_code=status.HTTP_303_SEE_OTHER)
    response.set_cookie(
        COOKIE,
        encode_session(session, session_secret(settings)),
        max_age=lifetime,
        path=_HOME,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


def _safe_next(target: str) -> str:
    """Only paths of this API: an absolute URL or `//host` would make the link a redirector."""
    if target.startswith(_HOME) and not target.startswith("//") and "\\" not in target:
        return target
    return _HOME


def _token_key(token: str, claims: dict[str, object]) -> str:
    jti = claims.get("jti")
    if isinstance(jti, str) and jti:
        return f"jti:{jti}"
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def _first_use(client: Client, key: str, expires_at: int) -> bool:
    """Record the token as used; False if it was already."""
    seen = client.query(
        "SELECT count() FROM api_sign_in_tokens WHERE token_key = {key:String}",
        parameters={"key": key},
    ).result_rows[0][0]
    if seen:
        return False
    now = datetime.now(UTC)
    expires = datetime.fromtimestamp(expires_at, UTC)
    client.insert(
        "api_sign_in_tokens",
        [[key, now, expires]],
        column_names=["token_key", "used_at", "expires_at"],
    )
    return True
