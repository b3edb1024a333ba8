"""All settings in one place, read from `ANALYTICS_*` environment variables and `.env`.

Every part (worker, API, CLI) reads the same `Settings`, so a setting means the same thing
everywhere. A bad value stops start-up with `SettingsError`, whose message names the
environment variable and says why, instead of a stack trace.
"""

from __future__ import annotations

import json
import re
import zoneinfo
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

from forum_analytics.segments import (
    DefaultSegmentConfig,
    NamedSegmentConfig,
    SegmentConfigError,
    check_unique_default_slug,
    parse_default_segment,
    parse_named_segments,
)

ENV_PREFIX = "ANALYTICS_"


class SettingsError(Exception):
    """A setting is missing or invalid; the message is meant for the operator."""


class BrokerFlavor(StrEnum):
    """Which Kafka implementation we talk to; Tansu needs workarounds (risks.md §1.6, §4.2)."""

    KAFKA = "kafka"
    TANSU = "tansu"


class Settings(BaseSettings):
    """The product's settings. Field names map to `ANALYTICS_<NAME>` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
    )

    # Kafka
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_broker_flavor: BrokerFlavor = BrokerFlavor.KAFKA
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_security_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_security_sasl_username: str | None = None
    kafka_security_sasl_password: str | None = None
    kafka_security_ssl_cafile: str | None = None
    kafka_session_timeout_seconds: float = Field(default=10.0, ge=1.0, le=300.0)
    topic_partitions: int = Field(default=6, ge=1, le=1000)
    topic_events: str = "forum-events"
    topic_events_dlq: str = "forum-events-dlq"
    topic_users: str = "forum-users"
    topic_groups: str = "forum-groups"
    app_id: str = Field(default="forum-analytics", min_length=1)

    # ClickHouse
    clickhouse_url: str = "http://default:@127.0.0.1:8123/forum_analytics"
    clickhouse_analyst_user: str = "analyst"
    clickhouse_analyst_password: str = ""

    # Worker
    worker_ready_file: Path | None = None  # created when the worker is ready, removed at exit

    # Worker batching
    batch_max_events: int = Field(default=5000, ge=1, le=1_000_000)
    batch_max_seconds: float = Field(default=1.0, gt=0, le=60)

    # Semantics
    session_timeout_minutes: int = Field(default=30, ge=1, le=24 * 60)
    grace_minutes: int = Field(default=10, ge=0, le=24 * 60)
    # How long a worker keeps a user's final sessions and event ids in memory for late events;
    # a later event is still exact, at the cost of reading the user's history from ClickHouse.
    state_retention_hours: float = Field(default=6.0, ge=0, le=24 * 30)
    time_zone: str = "UTC"
    # JSON; validated and resolved by forum_analytics.segments (use `get_segments()` to read them).
    named_segments: tuple[NamedSegmentConfig, ...] = ()
    default_segment: DefaultSegmentConfig | None = Field(default=None, validate_default=True)
    email_domain_organizations_enabled: bool = False
    raw_events_ttl_days: int | None = Field(default=None, ge=1)

    # API
    jwt_key: str | None = None
    jwt_algorithm: Literal["HS256", "HS384", "HS512", "RS256", "RS384", "RS512"] = "HS256"
    # Signs the session cookie of forum sign-in links; default: derived from an HS* JWT key.
    api_session_secret: str | None = Field(default=None, min_length=32)
    api_session_hours: float = Field(default=8.0, gt=0, le=24 * 30)
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}; use an IANA name like UTC") from exc
        return value

    @field_validator("clickhouse_url")
    @classmethod
    def _clickhouse_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must look like http://user:password@host:8123/database")
        return value

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError("must be host:port[,host:port...]")
        return value

    @field_validator("named_segments", mode="before")
    @classmethod
    def _named_segments(cls, value: object) -> tuple[NamedSegmentConfig, ...]:
        try:
            return parse_named_segments(value)
        except SegmentConfigError as exc:
            raise _segment_error(exc) from None

    @field_validator("default_segment", mode="before")
    @classmethod
    def _default_segment(cls, value: object, info: ValidationInfo) -> DefaultSegmentConfig | None:
        # Runs after named_segments (field order), so the slugs can be checked for clashes;
        # validate_default=True makes it run when unset too (the implicit `rest` can clash).
        try:
            config = parse_default_segment(value)
            named = info.data.get("named_segments")
            if named is not None:  # absent when named_segments failed: reported already
                check_unique_default_slug(named, config)
        except SegmentConfigError as exc:
            raise _segment_error(exc) from None
        return config

    @property
    def clickhouse_password(self) -> str:
        """The password in `clickhouse_url` (empty when none)."""
        return unquote(urlsplit(self.clickhouse_url).password or "")

    @property
    def clickhouse_database(self) -> str:
        """The database named in `clickhouse_url` (default `forum_analytics`)."""
        return urlsplit(self.clickhouse_url).path.strip("/") or "forum_analytics"


def _segment_error(exc: SegmentConfigError) -> PydanticCustomError:
    """The problems as the error's message verbatim (a ValueError would add "Value error, ")."""
    return PydanticCustomError("segment_config", "{problems}", {"problems": str(exc)})


def _describe(error: dict[str, Any]) -> str:
    """One line per problem: the variable, the value, and why it is rejected.

    JSON lists and objects are not echoed (the message points into them instead), nor is an
    unset value.
    """
    field = str(error["loc"][0]) if error.get("loc") else "?"
    name = ENV_PREFIX + field.upper()
    value = error.get("input")
    plain = value is not None and not isinstance(value, dict | list | tuple)
    shown = f" (got {json.dumps(value, default=str)})" if plain else ""
    return "\n  ".join(f"{name}{shown}: {line}" for line in str(error["msg"]).splitlines())


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings, raising `SettingsError` with a readable message."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = [_describe(dict(err)) for err in exc.errors()]
        raise SettingsError("Invalid settings:\n  " + "\n  ".join(lines)) from None
    except SourceError as exc:
        # Raised before validation when a list/object setting is not valid JSON.
        match = re.search(r'field "(\w+)"', str(exc))
        name = ENV_PREFIX + (match.group(1).upper() if match else "?")
        raise SettingsError(f"Invalid settings:\n  {name}: must be valid JSON") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, validated once."""
    return load_settings()
