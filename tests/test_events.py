"""The event contract: every acceptance and rejection rule, the partition rule, the JSON Schema."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.event_schema import SCHEMA_PATH, event_json_schema
from streams.events import (
    MAX_BATCH_BYTES,
    MAX_EVENT_BYTES,
    MAX_FUTURE_MS,
    MAX_ID,
    MIN_TS_MS,
    DecodeResult,
    Event,
    EventType,
    GroupRecord,
    InvalidEvent,
    ObjectType,
    Role,
    UserRecord,
    datetime_to_ms,
    decode_message,
    encode_batch,
    ms_to_datetime,
    parse_event,
)
from streams.partitioning import _murmur2, partition_for_user

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z: a fixed receive time keeps the tests exact


def base(**changes: Any) -> dict[str, Any]:
    """A valid minimal event, with fields changed (a value of ... removes the field)."""
    event: dict[str, Any] = {"id": "e1", "type": "logged_in", "ts": NOW - 1000, "user_id": 42}
    for name, value in changes.items():
        if value is ...:
            event.pop(name, None)
        else:
            event[name] = value
    return event


def decode(value: bytes | None, **kwargs: Any) -> DecodeResult:
    kwargs.setdefault("received_at_ms", NOW)
    return decode_message(value, **kwargs)


def reason_of(doc: Any) -> str:
    """The single whole-message reason for a document that must be refused."""
    result = decode(orjson.dumps(doc))
    assert result.events == []
    assert len(result.errors) == 1, result.errors
    return result.errors[0].reason


# ---------------------------------------------------------------------------------------------
# Partitioning


KAFKA_MURMUR2_VECTORS = {
    # org.apache.kafka.common.utils.UtilsTest.testMurmur2 (signed Java ints)
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
    # decimal keys like ours, as computed by Kafka's Utils.murmur2
    b"1": -1993445489,
    b"12": 126087238,
    b"123": -267702483,
    b"1234": -1614185708,
    b"12345": -1188365604,
}


@pytest.mark.parametrize(("data", "expected"), KAFKA_MURMUR2_VECTORS.items())
def test_murmur2_matches_kafka_test_vectors(data: bytes, expected: int) -> None:
    signed = _murmur2(data) - (1 << 32) if _murmur2(data) >= 1 << 31 else _murmur2(data)
    assert signed == expected


def test_partition_matches_java_to_positive_modulo() -> None:
    # toPositive(murmur2("21")) % 7, computed by hand from the Java value
    assert partition_for_user(21, 7) == (-973932308 & 0x7FFFFFFF) % 7
    assert partition_for_user(12345, 10) == (-1188365604 & 0x7FFFFFFF) % 10


@pytest.mark.parametrize("num_partitions", [1, 2, 3, 4, 6, 7, 12, 64])
def test_partition_for_user_agrees_with_aiokafka_default_partitioner(num_partitions: int) -> None:
    partitioner = DefaultPartitioner()
    partitions = list(range(num_partitions))
    for user_id in [*range(1, 3000), 2**31, 2**32 + 7, MAX_ID]:
        expected = partitioner(str(user_id).encode(), partitions, partitions)
        assert partition_for_user(user_id, num_partitions) == expected


def test_partition_for_user_rejects_zero_partitions() -> None:
    with pytest.raises(ValueError, match="num_partitions"):
        partition_for_user(1, 0)


# ---------------------------------------------------------------------------------------------
# Acceptance


def test_minimal_event_is_accepted_with_ts_as_epoch_ms() -> None:
    result = decode(orjson.dumps(base()))
    assert result.errors == []
    assert result.events == [Event("e1", EventType.LOGGED_IN, NOW - 1000, 42)]
    event = result.events[0]
    assert event.type == "logged_in" and isinstance(event.type, EventType)
    assert event.ts == datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC)


def test_full_event_is_accepted() -> None:
    doc = base(
        ip="2001:db8::1",
        user_agent="Mozilla/5.0",
        object_type="post",
        object_id=7,
        thread_id=3,
        post_id=7,
    )
    (event,) = decode(orjson.dumps(doc)).events
    assert event == Event("e1", EventType.LOGGED_IN, NOW - 1000, 42, "2001:db8::1",
                          "Mozilla/5.0", ObjectType.POST, 7, 3, 7)  # fmt: skip


@pytest.mark.parametrize("event_type", list(EventType))
def test_all_fourteen_types_are_accepted(event_type: EventType) -> None:
    assert decode(orjson.dumps(base(type=event_type.value))).events[0].type is event_type


def test_there_are_fourteen_types() -> None:
    assert len(EventType) == 14


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-12-31T23:00:00Z", datetime(2025, 12, 31, 23, tzinfo=UTC)),
        ("2025-12-31T23:00:00+00:00", datetime(2025, 12, 31, 23, tzinfo=UTC)),
        ("2026-01-01T01:30:00+02:30", datetime(2025, 12, 31, 23, tzinfo=UTC)),
        ("2025-12-31T20:00:00-03:00", datetime(2025, 12, 31, 23, tzinfo=UTC)),
        ("2025-12-31t23:00:00z", datetime(2025, 12, 31, 23, tzinfo=UTC)),
        ("2025-12-31 23:00:00Z", datetime(2025, 12, 31, 23, tzinfo=UTC)),
        ("2025-12-31T23:00:00.5Z", datetime(2025, 12, 31, 23, 0, 0, 500000, tzinfo=UTC)),
        ("2025-12-31T23:00:00.123999999Z", datetime(2025, 12, 31, 23, 0, 0, 123000, tzinfo=UTC)),
        ("2000-01-01T00:00:00Z", datetime(2000, 1, 1, tzinfo=UTC)),
    ],
)
def test_rfc3339_timestamps_normalise_to_epoch_ms(text: str, expected: datetime) -> None:
    (event,) = decode(orjson.dumps(base(ts=text))).events
    assert event.ts_ms == datetime_to_ms(expected)
    assert event.ts == expected


def test_ts_bounds_are_inclusive() -> None:
    assert decode(orjson.dumps(base(ts=MIN_TS_MS))).events
    assert decode(orjson.dumps(base(ts=NOW + MAX_FUTURE_MS))).events


def test_null_optional_fields_count_as_absent() -> None:
    doc = base(ip=None, user_agent=None, object_type=None, object_id=None, thread_id=None)
    (event,) = decode(orjson.dumps(doc | {"post_id": None})).events
    assert event == Event("e1", EventType.LOGGED_IN, NOW - 1000, 42)


def test_unknown_fields_are_ignored() -> None:
    (event,) = decode(orjson.dumps(base(session="abc", extra={"nested": [1]}))).events
    assert event == Event("e1", EventType.LOGGED_IN, NOW - 1000, 42)
    assert "session" not in event.to_dict()


def test_id_of_64_characters_is_accepted_and_counted_in_characters() -> None:
    assert decode(orjson.dumps(base(id="é" * 64))).events


# ---------------------------------------------------------------------------------------------
# Rejection: one test per reason


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        (base(id=...), "field 'id': missing"),
        (base(id=""), "field 'id': must be a string of 1..64 characters, got string ''"),
        (base(id="x" * 65), "field 'id': must be a string of 1..64 characters"),
        (base(id=17), "field 'id': must be a string of 1..64 characters, got integer 17"),
        (base(type=...), "field 'type': missing"),
        (base(type="foo"), "unknown type 'foo'; accepted: user_registered, logged_in"),
        (base(type="Logged_In"), "unknown type 'Logged_In'"),
        (base(type=3), "field 'type': must be a string, got integer 3"),
        (base(ts=...), "field 'ts': missing"),
        (base(ts=1.7e12), "field 'ts': must be an RFC 3339 string or integer epoch milliseconds"),
        (base(ts=True), "field 'ts': must be an RFC 3339 string or integer epoch milliseconds"),
        (base(ts="yesterday"), "field 'ts': 'yesterday' is not RFC 3339 with an offset"),
        (base(ts="2025-12-31T23:00:00"), "is not RFC 3339 with an offset"),
        (base(ts="20251231T230000Z"), "is not RFC 3339 with an offset"),
        (base(ts="2025-12-31T23:00:00Z\n"), "is not RFC 3339 with an offset"),
        (base(ts="2025-02-30T00:00:00Z"), "is not a valid date-time: day is out of range"),
        (base(ts="2025-12-31T23:00:60Z"), "is not a valid date-time"),
        (base(ts=MIN_TS_MS - 1), "field 'ts': 1999-12-31T23:59:59.999000Z is before 2000-01-01"),
        (base(ts="1999-12-31T23:59:59Z"), "is before 2000-01-01"),
        (base(ts=0), "field 'ts': 1970-01-01T00:00:00Z is before 2000-01-01"),
        (base(ts=NOW + MAX_FUTURE_MS + 1), "is more than 1 day after the receive time"),
        (base(ts=10**30 // 10**12), "is more than 1 day after the receive time"),
        (base(user_id=...), "field 'user_id': missing"),
        (base(user_id=0), "field 'user_id': must be an integer in 1..2**63-1, got integer 0"),
        (base(user_id=-5), "field 'user_id': must be an integer in 1..2**63-1"),
        (base(user_id="42"), "field 'user_id': must be an integer in 1..2**63-1, got string"),
        (base(user_id=True), "field 'user_id': must be an integer in 1..2**63-1, got boolean"),
        (base(user_id=42.0), "field 'user_id': must be an integer in 1..2**63-1, got number"),
        (base(user_id=2**63), "field 'user_id': must be an integer in 1..2**63-1"),
        (base(ip=127), "field 'ip': must be a string of at most 64 characters"),
        (base(ip="1" * 65), "field 'ip': must be a string of at most 64 characters"),
        (base(user_agent=["x"]), "field 'user_agent': must be a string, got array"),
        (base(object_type="comment", object_id=1), "field 'object_type': must be one of user"),
        (base(object_type="post"), "field 'object_id': missing (required with 'object_type')"),
        (base(object_id=5), "field 'object_type': missing (required with 'object_id')"),
        (base(object_type="post", object_id=0), "field 'object_id': must be an integer in 1.."),
        (base(thread_id="9"), "field 'thread_id': must be an integer in 1..2**63-1"),
        (base(post_id=-1), "field 'post_id': must be an integer in 1..2**63-1"),
    ],
)
def test_bad_field_is_refused_with_a_specific_reason(doc: dict[str, Any], reason: str) -> None:
    assert reason in reason_of(doc)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{", "not JSON: "),
        (b"", "not JSON: "),
        (b"\xff\xfe{}", "not JSON: "),
        (b'{"id": NaN}', "not JSON: "),
        (b"42", "message must be a JSON object or array, got integer"),
        (b'"text"', "message must be a JSON object or array, got string"),
        (b"null", "message must be a JSON object or array, got null"),
        (b"[]", "empty batch"),
        (None, "null value (tombstone)"),
    ],
)
def test_bad_message_is_refused_whole_with_its_original_bytes(
    value: bytes | None, reason: str
) -> None:
    result = decode(value)
    assert result.events == []
    assert len(result.errors) == 1
    error = result.errors[0]
    assert error.reason.startswith(reason), error.reason
    assert error.payload == (value or b"")
    assert error.element_index is None


def test_event_over_64_kib_is_refused() -> None:
    doc = base(user_agent="a" * MAX_EVENT_BYTES)
    assert reason_of(doc).startswith(f"event is {len(orjson.dumps(doc))} bytes; limit 65536")


def test_event_just_under_64_kib_is_accepted() -> None:
    doc = base(user_agent="")
    doc["user_agent"] = "a" * (MAX_EVENT_BYTES - len(orjson.dumps(doc)))
    assert len(orjson.dumps(doc)) == MAX_EVENT_BYTES
    assert decode(orjson.dumps(doc)).events


def test_message_over_1_mib_is_refused_whole() -> None:
    events = [base(id=f"e{i}", user_agent="a" * 60_000) for i in range(18)]
    value = orjson.dumps(events)
    assert len(value) > MAX_BATCH_BYTES
    result = decode(value)
    assert result.events == []
    assert [e.reason for e in result.errors] == [f"message is {len(value)} bytes; limit 1048576"]
    assert result.errors[0].payload == value


def test_big_element_of_a_batch_is_refused_alone() -> None:
    big = base(id="big", user_agent="a" * MAX_EVENT_BYTES)
    result = decode(orjson.dumps([base(id="a"), big, base(id="b")]))
    assert [e.id for e in result.events] == ["a", "b"]
    (error,) = result.errors
    assert error.element_index == 1
    assert error.reason.startswith("event is ") and error.reason.endswith("limit 65536")
    assert orjson.loads(error.payload) == big


def test_batch_keeps_good_elements_and_dead_letters_each_bad_one_with_its_bytes() -> None:
    elements: list[Any] = [base(id="a"), base(id="b", type="nope"), 7, base(id="c"), base(ts=0)]
    result = decode(orjson.dumps(elements))
    assert [e.id for e in result.events] == ["a", "c"]
    assert [(e.element_index, orjson.loads(e.payload)) for e in result.errors] == [
        (1, elements[1]),
        (2, 7),
        (4, elements[4]),
    ]
    assert result.errors[0].reason.startswith("unknown type 'nope'")
    assert result.errors[1].reason == "event must be a JSON object, got integer"
    assert "before 2000-01-01" in result.errors[2].reason


def _users_in(partition: int, num_partitions: int, count: int) -> list[int]:
    users = (u for u in range(1, 100_000) if partition_for_user(u, num_partitions) == partition)
    return [next(users) for _ in range(count)]


def test_batch_element_outside_the_partition_is_dead_lettered_alone() -> None:
    inside = _users_in(2, 6, 2)
    outside = _users_in(3, 6, 1)[0]
    elements = [base(id="a", user_id=inside[0]), base(id="x", user_id=outside)]
    elements.append(base(id="b", user_id=inside[1]))
    result = decode(orjson.dumps(elements), partition=2, num_partitions=6)
    assert [e.id for e in result.events] == ["a", "b"]
    (error,) = result.errors
    assert error.element_index == 1
    assert error.reason == (
        f"user {outside} belongs to partition 3 of 6, not 2 "
        "(key = decimal user id, Kafka's murmur2 partitioner)"
    )


def test_single_event_outside_its_partition_is_refused_whole() -> None:
    user = _users_in(1, 4, 1)[0]
    value = orjson.dumps(base(user_id=user))
    assert decode(value, partition=1, num_partitions=4).events
    result = decode(value, partition=0, num_partitions=4)
    assert result.events == []
    assert result.errors[0].payload == value
    assert result.errors[0].reason.startswith(f"user {user} belongs to partition 1 of 4, not 0")


def test_single_event_key_must_be_its_user_id() -> None:
    value = orjson.dumps(base(user_id=42))
    assert decode(value, key=b"42").events
    result = decode(value, key=b"43")
    assert result.errors[0].reason == "message key b'43' is not the user id 42 as decimal text"


def test_partition_without_partition_count_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="both partition and num_partitions"):
        decode(orjson.dumps(base()), partition=1)


def test_future_bound_follows_the_receive_time() -> None:
    value = orjson.dumps(base(ts=NOW + 2 * MAX_FUTURE_MS))
    assert decode(value).errors
    assert decode(value, received_at_ms=NOW + MAX_FUTURE_MS).events


# ---------------------------------------------------------------------------------------------
# Encoding and building


def test_to_json_leaves_out_absent_fields_and_writes_ts_as_ms() -> None:
    event = Event("e1", EventType.UPVOTED, NOW, 5, object_type=ObjectType.POST, object_id=9)
    assert orjson.loads(event.to_json()) == {
        "id": "e1",
        "type": "upvoted",
        "ts": NOW,
        "user_id": 5,
        "object_type": "post",
        "object_id": 9,
    }


def test_event_new_fills_id_and_ts_and_validates() -> None:
    before = int(time.time() * 1000)
    event = Event.new("question_asked", 3, object_type="post", object_id=4, thread_id=4)
    assert len(event.id) == 32 and event.type is EventType.QUESTION_ASKED
    assert before <= event.ts_ms <= int(time.time() * 1000) + 1
    dated = Event.new(EventType.ACTIVITY, 3, ts=datetime(2024, 5, 1, 14, tzinfo=timezone(
        timedelta(hours=2))), id="fixed")  # fmt: skip
    assert dated.ts == datetime(2024, 5, 1, 12, tzinfo=UTC) and dated.id == "fixed"
    with pytest.raises(InvalidEvent, match="unknown type 'asked'"):
        Event.new("asked", 3)
    with pytest.raises(InvalidEvent, match="field 'user_id'"):
        Event.new("activity", 0)
    with pytest.raises(InvalidEvent, match="timezone-aware"):
        Event.new("activity", 1, ts=datetime(2024, 5, 1))


def test_encode_batch_is_a_json_array() -> None:
    events = [Event("a", EventType.ACTIVITY, NOW, 1), Event("b", EventType.ACTIVITY, NOW, 2)]
    value = encode_batch([e.to_json() for e in events])
    assert decode(value).events == events


def test_parse_event_raises_invalid_event_with_reason() -> None:
    with pytest.raises(InvalidEvent) as info:
        parse_event(base(user_id=None), received_at_ms=NOW)
    assert info.value.reason == "field 'user_id': must be an integer in 1..2**63-1, got null None"


def test_ms_datetime_helpers_are_exact() -> None:
    dt = datetime(2024, 2, 29, 23, 59, 59, 999000, tzinfo=UTC)
    assert ms_to_datetime(datetime_to_ms(dt)) == dt
    assert datetime_to_ms(datetime(2024, 1, 1, 0, 0, 0, 999, tzinfo=UTC)) % 1000 == 0


def test_user_record_round_trip_and_rules() -> None:
    user = UserRecord(7, "ann", "ann@example.org", datetime(2024, 5, 1, 12, tzinfo=UTC), True,
                      Role.MODERATOR, (3, 4))  # fmt: skip
    assert orjson.loads(user.to_json())["joined_at"] == "2024-05-01T12:00:00.000Z"
    assert UserRecord.from_json(user.to_json()) == user
    assert user.key == b"7"
    as_ms = orjson.dumps(user.to_dict() | {"joined_at": 1714564800000})
    assert UserRecord.from_json(as_ms) == user
    cases: list[tuple[dict[str, Any], str]] = [
        ({"role": "owner"}, "field 'role': must be one of admin, moderator, user, blocked"),
        ({"group_ids": [1, "2"]}, "field 'group_ids': must be an array of group ids"),
        ({"group_ids": [{"group_id": 2, "since": "soon"}]}, "'soon' is not RFC 3339"),
        ({"group_ids": [{"since": 5}]}, "field 'group_ids': must be an array of group ids"),
        ({"group_ids": [3, {"group_id": 3}]}, "must be a list without repeated groups"),
        ({"organization_id": -1}, "field 'organization_id'"),
        ({"updated_at": True}, "field 'updated_at': must be an RFC 3339 string"),
        ({"is_active": 1}, "field 'is_active': must be a boolean"),
        ({"user_id": 0}, "field 'user_id'"),
        ({"joined_at": "soon"}, "field 'joined_at': 'soon' is not RFC 3339"),
    ]
    for change, reason in cases:
        with pytest.raises(InvalidEvent, match=re.escape(reason)):
            UserRecord.from_json(orjson.dumps(user.to_dict() | change))
    with pytest.raises(InvalidEvent, match="value must be a JSON object"):
        UserRecord.from_json(b"[]")


def test_user_record_membership_details_round_trip() -> None:
    since = datetime(2023, 1, 2, 3, tzinfo=UTC)
    user = UserRecord(7, "ann", "ann@example.org", datetime(2022, 5, 1, tzinfo=UTC), True,
                      Role.USER, (3, 4), ((4, since),), organization_id=2**62 + 5,
                      updated_at=datetime(2024, 1, 1, tzinfo=UTC))  # fmt: skip
    wire = orjson.loads(user.to_json())
    assert wire["group_ids"] == [3, {"group_id": 4, "since": "2023-01-02T03:00:00.000Z"}]
    assert wire["organization_id"] == 2**62 + 5
    assert UserRecord.from_json(user.to_json()) == user
    plain = orjson.loads(UserRecord(*user[:7]).to_json())
    assert "organization_id" not in plain and "updated_at" not in plain


def test_group_record_round_trip_and_rules() -> None:
    group = GroupRecord(3, "Staff", True)
    assert GroupRecord.from_json(group.to_json()) == group
    assert group.key == b"3"
    with pytest.raises(InvalidEvent, match="field 'used_for_analytics': must be a boolean"):
        GroupRecord.from_json(b'{"group_id": 3, "name": "x", "used_for_analytics": "yes"}')
    with pytest.raises(InvalidEvent, match="not JSON"):
        GroupRecord.from_json(b"{")


# ---------------------------------------------------------------------------------------------
# JSON Schema


def test_shipped_schema_file_equals_the_generated_schema() -> None:
    shipped = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert shipped == event_json_schema(), (
        "streams/schema/event.schema.json is stale: run "
        "python -c 'from streams.event_schema import write_event_json_schema as w; w()'"
    )


_ANNOTATIONS = {"$schema", "$id", "title", "description", "$comment", "format", "$defs"}


def _schema_accepts(schema: dict[str, Any], value: Any, root: dict[str, Any]) -> bool:
    """A small JSON Schema (2020-12) checker for exactly the keywords our schema uses.

    `jsonschema` is not a dependency; an unknown keyword fails the test rather than being
    ignored, so this cannot silently accept what a real validator would check.
    """
    for keyword, arg in schema.items():
        if keyword in _ANNOTATIONS or keyword == "additionalProperties" and arg is True:
            continue
        check = _KEYWORDS.get(keyword)
        if check is None:
            raise AssertionError(f"schema keyword {keyword!r} not understood by the test checker")
        if not check(arg, value, root, schema):
            return False
    return True


def _is_type(name: str, value: Any) -> bool:
    if name == "integer":
        return (type(value) is int) or (type(value) is float and value.is_integer())
    return {
        "null": value is None,
        "string": isinstance(value, str),
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
        "boolean": isinstance(value, bool),
    }[name]


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_KEYWORDS: dict[str, Any] = {
    "type": lambda a, v, r, s: any(_is_type(t, v) for t in ([a] if isinstance(a, str) else a)),
    "enum": lambda a, v, r, s: any(v == x and type(v) is type(x) for x in a),
    "required": lambda a, v, r, s: not isinstance(v, dict) or all(k in v for k in a),
    "properties": lambda a, v, r, s: (
        not isinstance(v, dict) or all(_schema_accepts(a[k], v[k], r) for k in a if k in v)
    ),
    "minLength": lambda a, v, r, s: not isinstance(v, str) or len(v) >= a,
    "maxLength": lambda a, v, r, s: not isinstance(v, str) or len(v) <= a,
    "minimum": lambda a, v, r, s: not _numeric(v) or v >= a,
    "maximum": lambda a, v, r, s: not _numeric(v) or v <= a,
    "pattern": lambda a, v, r, s: (
        not isinstance(v, str) or re.search(a.replace("$", r"\Z"), v) is not None
    ),
    "oneOf": lambda a, v, r, s: sum(_schema_accepts(x, v, r) for x in a) == 1,
    "allOf": lambda a, v, r, s: all(_schema_accepts(x, v, r) for x in a),
    "not": lambda a, v, r, s: not _schema_accepts(a, v, r),
    "if": lambda a, v, r, s: not _schema_accepts(a, v, r) or _schema_accepts(s["then"], v, r),
    "then": lambda a, v, r, s: True,  # evaluated by "if"
    "$ref": lambda a, v, r, s: _schema_accepts(r["$defs"][a.removeprefix("#/$defs/")], v, r),
    "items": lambda a, v, r, s: not isinstance(v, list) or all(_schema_accepts(a, x, r) for x in v),
    "minItems": lambda a, v, r, s: not isinstance(v, list) or len(v) >= a,
}

# Documents where validator and schema agree, both ways.
AGREEING_CASES: list[Any] = [
    base(),
    base(ts="2025-12-31T23:00:00+02:00"),
    base(ts="2025-12-31t23:00:00.123456z"),
    base(ip="10.0.0.1", user_agent="UA", object_type="thread", object_id=1, thread_id=1),
    base(object_type=None, object_id=None, extra="ignored"),
    [base(id="a"), base(id="b")],
    base(id=...),
    base(id=""),
    base(id="x" * 65),
    base(type="unknown"),
    base(ts="2025-12-31T23:00:00"),
    base(ts=MIN_TS_MS - 1),
    base(ts=True),
    base(user_id=0),
    base(user_id="1"),
    base(user_id=2**63),
    base(ip="x" * 65),
    base(user_agent=5),
    base(object_type="post"),
    base(object_id=3),
    base(object_type="comment", object_id=3),
    base(object_type="post", object_id=None),
    base(thread_id=0),
    base(post_id="1"),
    [],
    [base(), 5],
    "event",
    None,
]

# Documents only the validator can judge; the schema's $comment lists these rules.
VALIDATOR_ONLY_CASES: list[Any] = [
    base(ts="2025-02-30T00:00:00Z"),  # not a calendar date
    base(ts=NOW + MAX_FUTURE_MS + 1),  # relative to the receive time
    base(user_id=42.0),  # JSON Schema counts 42.0 as an integer; the contract wants 42
    base(user_agent="a" * MAX_EVENT_BYTES),  # byte size
]


@pytest.mark.parametrize("doc", AGREEING_CASES)
def test_schema_and_validator_agree(doc: Any) -> None:
    schema = event_json_schema()
    accepted = not decode(orjson.dumps(doc)).errors
    assert _schema_accepts(schema, doc, schema) == accepted


@pytest.mark.parametrize("doc", VALIDATOR_ONLY_CASES)
def test_rules_beyond_the_schema_are_the_validators(doc: Any) -> None:
    schema = event_json_schema()
    assert _schema_accepts(schema, doc, schema)
    assert decode(orjson.dumps(doc)).errors


def test_schema_lists_the_contract() -> None:
    schema = event_json_schema()
    event = schema["$defs"]["event"]
    assert event["required"] == ["id", "type", "ts", "user_id"]
    assert event["properties"]["type"]["enum"] == [t.value for t in EventType]
    assert set(event["properties"]) == {
        "id", "type", "ts", "user_id", "ip", "user_agent",
        "object_type", "object_id", "thread_id", "post_id",
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Properties

ids = st.text(min_size=1, max_size=64)
db_ids = st.integers(1, MAX_ID)
objects = st.one_of(st.just((None, None)), st.tuples(st.sampled_from(list(ObjectType)), db_ids))


@st.composite
def events(draw: st.DrawFn) -> Event:
    object_type, object_id = draw(objects)
    return Event(
        id=draw(ids),
        type=draw(st.sampled_from(list(EventType))),
        ts_ms=draw(st.integers(MIN_TS_MS, NOW + MAX_FUTURE_MS)),
        user_id=draw(db_ids),
        ip=draw(st.none() | st.text(max_size=64)),
        user_agent=draw(st.none() | st.text(max_size=200)),
        object_type=object_type,
        object_id=object_id,
        thread_id=draw(st.none() | db_ids),
        post_id=draw(st.none() | db_ids),
    )


@given(events())
def test_valid_event_round_trips_unchanged(event: Event) -> None:
    assert decode(event.to_json()) == DecodeResult([event], [])
    assert decode(event.to_json(), key=str(event.user_id).encode()).events == [event]


@given(st.lists(events(), min_size=1, max_size=20), st.integers(1, 12))
def test_valid_batch_of_one_partition_round_trips_unchanged(
    batch: list[Event], num_partitions: int
) -> None:
    partition = partition_for_user(batch[0].user_id, num_partitions)
    same = [e for e in batch if partition_for_user(e.user_id, num_partitions) == partition]
    value = encode_batch([e.to_json() for e in same])
    result = decode(value, partition=partition, num_partitions=num_partitions)
    assert result == DecodeResult(same, [])


@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_raise(value: bytes) -> None:
    result = decode(value, partition=0, num_partitions=3)
    assert len(result.events) + len(result.errors) >= 1
    assert all(isinstance(e.reason, str) and e.reason for e in result.errors)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)  # fmt: skip
field_names = st.sampled_from(
    ["id", "type", "ts", "user_id", "ip", "user_agent", "object_type", "object_id", "thread_id",
     "post_id"]
)  # fmt: skip


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(field_names, json_values), max_size=4), events())
def test_damaged_events_are_refused_or_valid_never_raise(
    damage: list[tuple[str, Any]], event: Event
) -> None:
    doc = event.to_dict()
    for name, value in damage:
        doc[name] = value
    try:
        value_bytes = orjson.dumps(doc)
    except orjson.JSONEncodeError:  # an integer beyond 64 bits: not something JSON carries here
        return
    result = decode(value_bytes)
    for accepted in result.events:  # anything accepted re-encodes to a valid event
        assert decode(accepted.to_json()).events == [accepted]
        assert type(accepted.user_id) is int and 0 < accepted.user_id <= MAX_ID


@given(
    st.integers(MIN_TS_MS, NOW),
    st.integers(-23 * 60 - 59, 23 * 60 + 59),
    st.sampled_from(["", ".{ms}", ".{ms}999", ".{ms}123456"]),
    st.booleans(),
)
def test_ts_as_text_and_as_ms_normalise_equally(
    ms: int, offset_minutes: int, fraction: str, lower: bool
) -> None:
    if fraction == "":
        ms -= ms % 1000
    zone = timezone(timedelta(minutes=offset_minutes))
    local = ms_to_datetime(ms).astimezone(zone)
    sign = "-" if offset_minutes < 0 else "+"
    hours, minutes = divmod(abs(offset_minutes), 60)
    suffix = "Z" if offset_minutes == 0 else f"{sign}{hours:02d}:{minutes:02d}"
    text = local.strftime("%Y-%m-%dT%H:%M:%S") + fraction.format(ms=f"{ms % 1000:03d}") + suffix
    if lower:
        text = text.lower()
    as_text = decode(orjson.dumps(base(ts=text))).events
    as_ms = decode(orjson.dumps(base(ts=ms))).events
    assert as_text == as_ms and as_ms[0].ts_ms == ms


# ---------------------------------------------------------------------------------------------
# Speed (generous bound: a regression guard on a noisy 2-core machine, not a benchmark)


def test_validator_decodes_a_batch_fast() -> None:
    users = _users_in(0, 6, 300)
    batch = encode_batch([
        orjson.dumps(base(id=f"e{i}", user_id=users[i % 300], ip="10.0.0.1", user_agent="UA",
                          object_type="post", object_id=i + 1, thread_id=1, post_id=i + 1))
        for i in range(500)
    ])  # fmt: skip
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(10):
            result = decode(batch, partition=0, num_partitions=6)
        best = min(best, time.perf_counter() - started)
    assert len(result.events) == 500 and not result.errors
    per_event_us = best / 5000 * 1e6
    assert per_event_us < 25, f"{per_event_us:.1f} µs/event"
