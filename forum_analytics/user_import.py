"""`forum-analytics users import FILE.jsonl`: a first load of `forum-users` and `forum-groups`.

Each non-blank line is one JSON object: a user (it has `user_id`; the `forum-users` value) or a
group (it has `group_id` and no `user_id`; the `forum-groups` value), checked by the same
validators the worker's readers use (`streams.events.parse_user` / `parse_group`).

Decisions:
* The whole file is validated before anything is sent. A half-published file is worse than
  none: the operator would have to work out which lines made it. On any bad line the command
  lists every bad line (the first `MAX_REPORTED_ERRORS`, then a count), publishes nothing and
  exits 1.
* Groups go first, then users: a reader that meets a user's `group_ids` then already has
  the groups (both topics are read independently, so this is a courtesy, not a guarantee).
* Records are upserts on compacted topics keyed by id, so running the import again (after a
  failure half-way through sending, or with a corrected file) is safe: the last value per id
  wins, as it would in the forum. Duplicate ids in one file are therefore not an error.
* Topics are created first exactly as the worker creates them (`default_topic_specs` from the
  settings): a producer's metadata request would otherwise let the broker auto-create them
  with its own partition count, and `forum-users` must be co-partitioned with `forum-events`.
* The file's records are kept in memory between validating and sending (a few hundred bytes
  per user): fine for a forum's users, and it reads the file once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from forum_analytics.kafka_publishing import ensure_product_topics, kafka_errors
from forum_analytics.settings import Settings
from streams.events import GroupRecord, InvalidEvent, UserRecord, parse_group, parse_user
from streams.producer import SyncEventProducer

__all__ = [
    "MAX_REPORTED_ERRORS",
    "ImportFile",
    "LineError",
    "UserImportError",
    "describe_errors",
    "open_producer",
    "parse_line",
    "parse_lines",
    "publish",
    "read_import_file",
    "send_records",
    "summary",
]

MAX_REPORTED_ERRORS: Final = 20
"""Bad lines listed by number; beyond this only a count (a wrong file would flood the screen)."""

PROGRESS_STEP: Final = 500
"""Records between progress callbacks: one per record would cost more than sending it."""

_SEND_BLOCK_SECONDS: Final = 60.0
"""How long a send waits for room in the producer's buffer before the import gives up: a slow
broker is waited for, an unreachable one ends the import with a message."""

_FLUSH_SECONDS: Final = 300.0
"""The last records' wait for acknowledgement: at most a buffer's worth (10,000) is pending."""

_BOM: Final = b"\xef\xbb\xbf"


class UserImportError(Exception):
    """The import cannot go on (file unreadable, Kafka unreachable or refusing); the message is
    meant for the operator, without a stack trace."""


@dataclass(frozen=True)
class LineError:
    """A bad line: its 1-based number in the file and why it was refused."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass
class ImportFile:
    """What a file holds, in file order: valid users and groups, and every bad line."""

    users: list[UserRecord] = field(default_factory=list)
    groups: list[GroupRecord] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Records to publish."""
        return len(self.users) + len(self.groups)


def parse_line(line: bytes) -> UserRecord | GroupRecord:
    """One line's record; raises `InvalidEvent` with the reason when it is not one."""
    try:
        doc: Any = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"not JSON: {exc}") from None
    if type(doc) is not dict:
        raise InvalidEvent("must be a JSON object (a user or a group)")
    if "user_id" in doc:
        return parse_user(doc)
    if "group_id" in doc:
        return parse_group(doc)
    raise InvalidEvent("neither a user (no 'user_id') nor a group (no 'group_id')")


def parse_lines(lines: Iterable[bytes]) -> ImportFile:
    """Validate every line (blank lines skipped), collecting all errors rather than stopping at
    the first, so one run shows the operator everything to fix."""
    result = ImportFile()
    for number, raw in enumerate(lines, start=1):
        line = raw.removeprefix(_BOM) if number == 1 else raw  # editors on Windows add one
        if not line.strip():
            continue
        try:
            record = parse_line(line)
        except InvalidEvent as exc:
            result.errors.append(LineError(number, exc.reason))
            continue
        if isinstance(record, UserRecord):
            result.users.append(record)
        else:
            result.groups.append(record)
    return result


def read_import_file(path: Path) -> ImportFile:
    """Read and validate `path`; `UserImportError` if it cannot be read."""
    try:
        with path.open("rb") as handle:
            return parse_lines(handle)
    except OSError as exc:
        raise UserImportError(f"cannot read {path}: {exc.strerror or exc}") from None


def describe_errors(errors: list[LineError], limit: int = MAX_REPORTED_ERRORS) -> list[str]:
    """The lines to print for a rejected file: each bad line up to `limit`, then a count."""
    lines = [str(error) for error in errors[:limit]]
    if len(errors) > limit:
        lines.append(f"... and {len(errors) - limit} more bad line(s)")
    lines.append(f"{len(errors)} bad line(s): nothing was published")
    return lines


def summary(parsed: ImportFile, settings: Settings) -> str:
    """The one line printed after a successful import."""
    return (
        f"published {len(parsed.users)} users and {len(parsed.groups)} groups "
        f"to {settings.topic_users}/{settings.topic_groups}"
    )


def publish(
    parsed: ImportFile, settings: Settings, progress: Callable[[int], None] | None = None
) -> None:
    """Create the topics, then send the groups and then the users, and wait until Kafka has
    acknowledged every record. `progress(n)` is called as records are handed to the producer.

    Raises `UserImportError` when Kafka is unreachable or a record was not delivered.
    """
    with open_producer(settings) as producer:
        send_records(producer, parsed, progress)


@contextmanager
def open_producer(settings: Settings) -> Iterator[SyncEventProducer]:
    """Create the topics and connect; on leaving, wait until Kafka acknowledged every record.

    Separate from sending so that the CLI shows its progress bar only once Kafka answered.
    Every Kafka failure, at connection or while sending in the block, becomes a
    `UserImportError`.
    """
    with kafka_errors(
        settings, UserImportError, retry="Records are upserts: re-run the import once Kafka is back"
    ):
        ensure_product_topics(settings)
        producer = SyncEventProducer(
            settings.kafka_bootstrap,
            block_timeout=_SEND_BLOCK_SECONDS,
            events_topic=settings.topic_events,
            users_topic=settings.topic_users,
            groups_topic=settings.topic_groups,
        )
        try:
            yield producer
            producer.flush(timeout=_FLUSH_SECONDS)
        finally:
            producer.close()


def send_records(
    producer: SyncEventProducer,
    parsed: ImportFile,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Queue the groups, then the users; `progress(n)` every `PROGRESS_STEP` records and at the
    end. Queueing blocks while the producer's buffer is full, so progress follows Kafka."""
    records: list[GroupRecord | UserRecord] = [*parsed.groups, *parsed.users]
    reported = 0
    for index, record in enumerate(records, start=1):
        if isinstance(record, GroupRecord):
            producer.upsert_group(record)
        else:
            producer.upsert_user(record)
        if progress is not None and (index - reported >= PROGRESS_STEP or index == len(records)):
            progress(index - reported)
            reported = index
