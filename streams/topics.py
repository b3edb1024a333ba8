"""Topic names, specs and idempotent creation, plus the security options every client takes.

Create topics before anything produces or asks for metadata: a broker with automatic topic
creation (Tansu always; Kafka often) makes a missing topic on first use with its default
partition count (4 on Tansu), and the partition count decides which partition a user's events
live in, so it must be the configured one from the start.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping, Sequence
from typing import Any, Final, NamedTuple, TypedDict, Unpack

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

__all__ = [
    "DEFAULT_DLQ_TOPIC",
    "DEFAULT_EVENTS_TOPIC",
    "DEFAULT_GROUPS_TOPIC",
    "DEFAULT_USERS_TOPIC",
    "KafkaSecurity",
    "TopicError",
    "TopicSpec",
    "default_topic_specs",
    "ensure_topics",
]

log = logging.getLogger(__name__)

DEFAULT_EVENTS_TOPIC: Final = "forum-events"
DEFAULT_DLQ_TOPIC: Final = "forum-events-dlq"
DEFAULT_USERS_TOPIC: Final = "forum-users"
DEFAULT_GROUPS_TOPIC: Final = "forum-groups"

_TOPIC_ALREADY_EXISTS: Final = 36


class KafkaSecurity(TypedDict, total=False):
    """Connection security options, passed unchanged to aiokafka's clients."""

    security_protocol: str  # PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
    sasl_mechanism: str  # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, ...
    sasl_plain_username: str | None
    sasl_plain_password: str | None
    ssl_context: ssl.SSLContext | None


class TopicError(RuntimeError):
    """The broker refused to create a topic (other than "it already exists")."""


class TopicSpec(NamedTuple):
    """A topic we need. `compacted` sets `cleanup.policy=compact` (dimension topics)."""

    name: str
    partitions: int
    compacted: bool = False
    replication_factor: int = 1
    configs: Mapping[str, str] | None = None

    def topic_configs(self) -> dict[str, str]:
        out = dict(self.configs or {})
        if self.compacted:
            out.setdefault("cleanup.policy", "compact")
        return out


def default_topic_specs(
    partitions: int,
    *,
    replication_factor: int = 1,
    events_topic: str = DEFAULT_EVENTS_TOPIC,
    dlq_topic: str = DEFAULT_DLQ_TOPIC,
    users_topic: str = DEFAULT_USERS_TOPIC,
    groups_topic: str = DEFAULT_GROUPS_TOPIC,
) -> list[TopicSpec]:
    """The product's four topics. `forum-users` has as many partitions as `forum-events` (both
    keyed by user id, so a worker can read a user's profile from the partition it owns); the
    dead-letter topic too, to keep a partition's rejects together; groups are few: 1 partition.
    """
    return [
        TopicSpec(events_topic, partitions, replication_factor=replication_factor),
        TopicSpec(dlq_topic, partitions, replication_factor=replication_factor),
        TopicSpec(users_topic, partitions, compacted=True, replication_factor=replication_factor),
        TopicSpec(groups_topic, 1, compacted=True, replication_factor=replication_factor),
    ]


async def ensure_topics(
    bootstrap: str,
    specs: Sequence[TopicSpec],
    *,
    request_timeout_ms: int = 30_000,
    **security: Unpack[KafkaSecurity],
) -> list[str]:
    """Create the missing topics; return (and log) a warning per existing topic that differs.

    Idempotent: existing topics are left alone, even with another partition count, because
    neither Kafka nor Tansu can shrink a topic and growing one moves users between partitions;
    the returned warnings say so and leave the decision to an operator. Raises `TopicError` if
    the broker refuses a creation, and aiokafka's `KafkaConnectionError` if it is unreachable.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=request_timeout_ms, **security
    )
    await admin.start()
    try:
        # A metadata request for all topics (not named ones) does not auto-create anything.
        existing = set(await admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        if missing:
            await _create(admin, missing)
        present = [spec for spec in specs if spec.name in existing]
        warnings = await _compare_partitions(admin, present) if present else []
    finally:
        await admin.close()
    for warning in warnings:
        log.warning("%s", warning)
    return warnings


async def _create(admin: AIOKafkaAdminClient, specs: Sequence[TopicSpec]) -> None:
    new_topics = [
        NewTopic(spec.name, spec.partitions, spec.replication_factor, None, spec.topic_configs())
        for spec in specs
    ]
    response = await admin.create_topics(new_topics)
    for result in response.to_object()["topic_errors"]:
        code = result["error_code"]
        if code not in (0, _TOPIC_ALREADY_EXISTS):  # "exists": another process won the race
            raise TopicError(
                f"cannot create topic {result['topic']!r}: error {code} {result['error_message']}"
            )
        if code == 0:
            log.info("created topic %s", result["topic"])


async def _compare_partitions(admin: AIOKafkaAdminClient, specs: Sequence[TopicSpec]) -> list[str]:
    described: list[dict[str, Any]] = await admin.describe_topics([spec.name for spec in specs])
    counts = {topic["topic"]: len(topic["partitions"]) for topic in described}
    warnings = []
    for spec in specs:
        actual = counts.get(spec.name)
        if actual is not None and actual != spec.partitions:
            warnings.append(
                f"topic {spec.name!r} exists with {actual} partitions, not {spec.partitions}: "
                "left as it is (changing it would move users between partitions)"
            )
    return warnings
