"""`users import` against the real Tansu broker, read back with aiokafka."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from forum_analytics.ports import free_port
from forum_analytics.settings import Settings, load_settings
from forum_analytics.user_import import (
    MAX_REPORTED_ERRORS,
    LineError,
    describe_errors,
    parse_lines,
    publish,
    read_import_file,
)
from streams.broker import EmbeddedBroker
from streams.events import GroupRecord, Role, UserRecord

Records = list[Any]  # aiokafka ConsumerRecord

GROUPS = [GroupRecord(1, "Staff", True), GroupRecord(2, "Alumni", False)]
USERS = [
    UserRecord(7, "ann", "ann@example.org", datetime(2024, 5, 1, tzinfo=UTC), True, Role.ADMIN,
               (1, 2)),
    UserRecord(8, "bob", "", datetime(2024, 5, 2, tzinfo=UTC), False, Role.BLOCKED),
    UserRecord(9, "cy", "cy@example.org", datetime(2024, 5, 3, 12, tzinfo=UTC), True, Role.USER),
]  # fmt: skip
PARTITIONS = 3


def _write_jsonl(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _good_file(path: Path) -> Path:
    """Users and groups interleaved, as an export might list them, with a blank line."""
    user_lines = [user.to_json() for user in USERS]
    group_lines = [group.to_json() for group in GROUPS]
    return _write_jsonl(path, [user_lines[0], group_lines[0], b"", *user_lines[1:], group_lines[1]])


def _settings(broker: EmbeddedBroker, unique_name: Callable[[str], str]) -> Settings:
    return load_settings(
        kafka_bootstrap=broker.bootstrap,
        topic_partitions=PARTITIONS,
        topic_events=unique_name("events"),
        topic_events_dlq=unique_name("dlq"),
        topic_users=unique_name("users"),
        topic_groups=unique_name("groups"),
    )


async def _read_all(
    bootstrap: str, topic: str, partitions: int, expected: int, settle: float = 1.0
) -> Records:
    """Every record of `topic` from the start (manual assignment: no group join to wait for):
    until `expected` arrived, then `settle` seconds more, so that extra records are seen too."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        records: Records = []
        deadline, settled = time.monotonic() + 20, None
        while settled is None or time.monotonic() < settled:
            if settled is None and len(records) >= expected:
                settled = time.monotonic() + settle
            assert time.monotonic() < deadline, f"read {len(records)} of {expected} from {topic}"
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


def _read_back(settings: Settings, users: int, groups: int) -> tuple[Records, Records]:
    async def both() -> tuple[Records, Records]:
        bootstrap = settings.kafka_bootstrap
        return (
            await _read_all(bootstrap, settings.topic_users, PARTITIONS, users),
            await _read_all(bootstrap, settings.topic_groups, 1, groups),
        )

    return asyncio.run(both())


def _assert_published(user_records: Records, group_records: Records) -> None:
    """Keys are the decimal ids; values parse back to the very records of the file."""
    users = {r.key: UserRecord.from_json(r.value) for r in user_records}
    groups = {r.key: GroupRecord.from_json(r.value) for r in group_records}
    assert users == {str(u.user_id).encode(): u for u in USERS}
    assert groups == {str(g.group_id).encode(): g for g in GROUPS}
    assert len(user_records) == len(USERS) and len(group_records) == len(GROUPS)


def _partition_counts(bootstrap: str, topics: list[str]) -> dict[str, int]:
    async def describe() -> dict[str, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            described = await admin.describe_topics(topics)
        finally:
            await admin.close()
        return {t["topic"]: len(t["partitions"]) for t in described}

    return asyncio.run(describe())


# ---------------------------------------------------------------------------------------------
# Reading and validating


def test_every_bad_line_is_reported_by_number(tmp_path: Path) -> None:
    lines = [
        GROUPS[0].to_json(),
        b"{not json",
        b"[1, 2]",
        b'{"name": "no id"}',
        orjson.dumps({**USERS[0].to_dict(), "role": "owner"}),
        b"   ",
        orjson.dumps({**GROUPS[1].to_dict(), "used_for_analytics": "yes"}),
        USERS[1].to_json(),
    ]
    parsed = read_import_file(_write_jsonl(tmp_path / "bad.jsonl", lines))
    assert [error.line for error in parsed.errors] == [2, 3, 4, 5, 7]
    reasons = [error.reason for error in parsed.errors]
    assert reasons[0].startswith("not JSON")
    assert "JSON object" in reasons[1]
    assert "neither a user" in reasons[2]
    assert "field 'role'" in reasons[3]
    assert "field 'used_for_analytics'" in reasons[4]
    assert (parsed.users, parsed.groups) == ([USERS[1]], [GROUPS[0]])


def test_the_report_lists_twenty_lines_then_a_count() -> None:
    parsed = parse_lines([b"{}"] * (MAX_REPORTED_ERRORS + 5))
    report = describe_errors(parsed.errors)
    assert report[0].startswith("line 1: neither a user")
    assert report[MAX_REPORTED_ERRORS - 1].startswith(f"line {MAX_REPORTED_ERRORS}:")
    assert report[MAX_REPORTED_ERRORS:] == [
        "... and 5 more bad line(s)",
        f"{MAX_REPORTED_ERRORS + 5} bad line(s): nothing was published",
    ]
    assert describe_errors([LineError(3, "x")]) == [
        "line 3: x",
        "1 bad line(s): nothing was published",
    ]


def test_a_byte_order_mark_and_windows_line_ends_are_accepted() -> None:
    parsed = parse_lines([b"\xef\xbb\xbf" + GROUPS[0].to_json() + b"\r\n", USERS[0].to_json()])
    assert (parsed.errors, parsed.groups, parsed.users) == ([], [GROUPS[0]], [USERS[0]])


# ---------------------------------------------------------------------------------------------
# Publishing to the real broker


def test_publish_sends_groups_then_users_keyed_by_id(
    kafka_broker: EmbeddedBroker, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    settings = _settings(kafka_broker, unique_name)
    parsed = read_import_file(_good_file(tmp_path / "users.jsonl"))
    assert parsed.errors == []
    progressed: list[int] = []

    publish(parsed, settings, progress=progressed.append)

    assert sum(progressed) == len(USERS) + len(GROUPS)
    user_records, group_records = _read_back(settings, len(USERS), len(GROUPS))
    _assert_published(user_records, group_records)
    # Groups were sent (and stamped) before any user.
    assert max(r.timestamp for r in group_records) <= min(r.timestamp for r in user_records)
    # The topics were created as the worker creates them, not auto-created by the broker.
    topics = [settings.topic_events, settings.topic_users, settings.topic_groups]
    assert _partition_counts(settings.kafka_bootstrap, topics) == dict(
        zip(topics, [PARTITIONS, PARTITIONS, 1], strict=True)
    )


# ---------------------------------------------------------------------------------------------
# The command, end to end


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "forum_analytics", "users", "import", *args],
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_command_publishes_and_a_bad_file_publishes_nothing(
    kafka_broker: EmbeddedBroker, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    settings = _settings(kafka_broker, unique_name)
    env = {
        "ANALYTICS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "ANALYTICS_TOPIC_PARTITIONS": str(PARTITIONS),
        "ANALYTICS_TOPIC_EVENTS": settings.topic_events,
        "ANALYTICS_TOPIC_EVENTS_DLQ": settings.topic_events_dlq,
        "ANALYTICS_TOPIC_USERS": settings.topic_users,
        "ANALYTICS_TOPIC_GROUPS": settings.topic_groups,
    }
    done = _cli([str(_good_file(tmp_path / "good.jsonl"))], env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        f"published 3 users and 2 groups to {settings.topic_users}/{settings.topic_groups}\n"
    )
    _assert_published(*_read_back(settings, len(USERS), len(GROUPS)))

    bad_lines = [GroupRecord(5, "New", True).to_json(), b"{oops", USERS[2].to_json(), b"{}"]
    bad = _cli([str(_write_jsonl(tmp_path / "bad.jsonl", bad_lines)), "--silent"], env)
    assert bad.returncode == 1 and bad.stdout == ""
    assert "line 2: not JSON" in bad.stderr and "line 4: neither a user" in bad.stderr
    assert "2 bad line(s): nothing was published" in bad.stderr
    assert "Traceback" not in bad.stderr
    _assert_published(*_read_back(settings, len(USERS), len(GROUPS)))  # unchanged


def test_command_reports_a_missing_file_and_an_unreachable_broker(tmp_path: Path) -> None:
    missing = _cli([str(tmp_path / "nope.jsonl")], {})
    assert missing.returncode == 1
    assert f"cannot read {tmp_path / 'nope.jsonl'}: No such file" in missing.stderr
    assert "Traceback" not in missing.stderr

    good = str(_good_file(tmp_path / "good.jsonl"))
    bootstrap = f"127.0.0.1:{free_port()}"
    down = _cli([good, "--silent"], {"ANALYTICS_KAFKA_BOOTSTRAP": bootstrap})
    assert down.returncode == 1 and down.stdout == ""
    assert f"cannot reach Kafka at {bootstrap} (ANALYTICS_KAFKA_BOOTSTRAP)" in down.stderr
    assert "Traceback" not in down.stderr and len(down.stderr.splitlines()) == 1
