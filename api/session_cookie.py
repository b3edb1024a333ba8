"""The session cookie that a forum sign-in link (api.sign_in) sets, and that `authenticate`
accepts instead of an Authorization header.

The cookie is `<payload>.<HMAC-SHA256>`: the role, the subject and an expiry
(ANALYTICS_API_SESSION_HOURS), signed with ANALYTICS_API_SESSION_SECRET, or with a key derived
from an HS* ANALYTICS_JWT_KEY (an RS* key is public, so it cannot sign: without a session
secret, each API process makes a random one and sessions end when it restarts). It is set
HttpOnly (no script reads it), SameSite=Lax (other sites' requests do not carry it: the pages
only read, so that is all CSRF needs), Secure over https, Path=/analytics/.
"""

from __future__ import annotations

import base64
import hmac
import logging
import secrets
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

import orjson

from forum_analytics.settings import Settings

__all__ = ["COOKIE", "Session", "decode_session", "encode_session", "session_secret"]

log = logging.getLogger(__name__)

COOKIE: Final = "fa_session"


@dataclass(frozen=True)
class Session:
    """A signed-in staff member: role and subject from the JWT, until `expires` (epoch s)."""

    role: str
    subject: str | None
    expires: int


def session_secret(settings: Settings) -> bytes:
    """The key that signs session cookies (see the module docstring)."""
    if settings.api_session_secret:
        return settings.api_session_secret.encode()
    if settings.jwt_key and settings.jwt_algorithm.startswith("HS"):
        return hmac.digest(settings.jwt_key.encode(), b"forum-analytics session cookie", "sha256")
    return _process_secret()


@lru_cache(maxsize=1)
def _process_secret() -> bytes:
    log.warning(
        "ANALYTICS_API_SESSION_SECRET is not set and the JWT key cannot sign: sign-in sessions "
        "last until this API process stops"
    )
    return secrets.token_bytes(32)


def encode_session(session: Session, secret: bytes) -> str:
    payload = _b64(orjson.dumps([session.role, session.subject, session.expires]))
    return f"{payload}.{_b64(hmac.digest(secret, payload.encode(), 'sha256'))}"


def decode_session(value: str, secret: bytes, now: float) -> Session | None:
    """The session in a cookie, or None if it is forged, damaged or expired."""
    payload, _, signature = value.partition(".")
    expected = _b64(hmac.digest(secret, payload.encode(), "sha256"))
    if not hmac.compare_digest(signature, expected):
        return None
    try:
        role, subject, expires = orjson.loads(base64.urlsafe_b64decode(payload + "=="))
    except (ValueError, TypeError):
        return None
    if not isinstance(expires, int) or expires <= now:
        return None
    return Session(str(role), subject if isinstance(subject, str) else None, expires)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
