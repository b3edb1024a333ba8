"""The report API: FastAPI app factory, health check and error handling.

Users never see a stack trace: unexpected errors are logged and answered with a short
JSON error.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse

from api.activity import router as activity_router
from api.auth import Principal, require_staff
from api.sign_in import router as sign_in_router
from clickhouse.client import connect
from forum_analytics.settings import Settings

log = logging.getLogger("forum_analytics.api")


def create_app(settings: Settings) -> FastAPI:
    """The API for `settings`; opens its ClickHouse client when the app starts."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.clickhouse = connect(
            settings.clickhouse_url, autogenerate_session_id=False, connect_timeout=5
        )
        try:
            yield
        finally:
            app.state.clickhouse.close()

    app = FastAPI(
        title="forum-analytics",
        summary="Reports on a Q&A forum's activity, for its administrators and moderators.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.include_router(activity_router)
    app.include_router(sign_in_router)

    @app.get("/healthz", summary="Liveness and ClickHouse reachability")
    def healthz(request: Request, response: Response) -> dict[str, Any]:
        try:
            ok = bool(request.app.state.clickhouse.ping())
        except Exception:  # noqa: BLE001 - reported in the answer, not raised
            ok = False
        if not ok:
            response.status_code = 503
        return {"status": "ok" if ok else "degraded", "clickhouse": ok}

    @app.get("/analytics/", summary="Links to the report views")
    def index(_: Annotated[Principal, Depends(require_staff)]) -> dict[str, str]:
        return {
            "users": "/analytics/users/all-users/all-time/",
            "activity": "/analytics/activity/all-activity/all-content/all-users/all-time/",
        }

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse({"detail": "internal error; see the API log"}, status_code=500)

    return app
