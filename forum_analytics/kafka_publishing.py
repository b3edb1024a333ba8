"""What every publishing command (`users import`, `groups from-email-domains`, `simulate`)
needs before and around sending: the product's topics, and Kafka failures as one line."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from aiokafka.errors import KafkaConnectionError, KafkaError

from forum_analytics.settings import Settings
from streams.producer import BufferFullError, DeliveryError, KafkaUnavailable
from streams.topics import TopicError, TopicSpec, default_topic_specs, ensure_topics

__all__ = ["ensure_product_topics", "kafka_errors", "product_topic_specs"]


def product_topic_specs(settings: Settings) -> list[TopicSpec]:
    """The product's topics as the settings name them (the worker creates the same)."""
    return default_topic_specs(
        settings.topic_partitions,
        events_topic=settings.topic_events,
        dlq_topic=settings.topic_events_dlq,
        users_topic=settings.topic_users,
        groups_topic=settings.topic_groups,
    )


def ensure_product_topics(settings: Settings) -> None:
    """Create the product's topics before producing: a producer's metadata request would
    otherwise let the broker auto-create them with its own partition count, and `forum-users`
    must be co-partitioned with `forum-events`."""
    asyncio.run(ensure_topics(settings.kafka_bootstrap, product_topic_specs(settings)))


@contextmanager
def kafka_errors(settings: Settings, error: type[Exception], *, retry: str) -> Iterator[None]:
    """Turn the ways Kafka can fail into one `error` line naming the setting; `retry` says
    what to do when records were not all delivered."""
    where = f"Kafka at {settings.kafka_bootstrap} (ANALYTICS_KAFKA_BOOTSTRAP)"
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # it logs each failed connection; we say it once
    try:
        yield
    except TimeoutError:  # before OSError, its base class
        raise error(f"{where} did not answer in time") from None
    except KafkaConnectionError:  # its text lists resolved addresses: not for operators
        raise error(f"cannot reach {where}: no broker answered") from None
    except (KafkaUnavailable, KafkaError, OSError) as exc:
        reason = str(exc).removeprefix(f"cannot reach Kafka at {settings.kafka_bootstrap}: ")
        raise error(f"cannot reach {where}: {reason}") from None
    except TopicError as exc:
        raise error(f"{where}: {exc}") from None
    except (DeliveryError, BufferFullError) as exc:
        raise error(f"not every record reached {where}: {exc}. {retry}") from None
    finally:
        quiet.setLevel(level)
