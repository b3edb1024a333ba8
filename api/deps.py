"""Objects the routes share: the settings and one ClickHouse client per app."""

from __future__ import annotations

from clickhouse_connect.driver.client import Client
from fastapi import Request

from forum_analytics.settings import Settings


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_clickhouse(request: Request) -> Client:
    client: Client = request.app.state.clickhouse
    return client
