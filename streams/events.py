"""The event contract of topic `forum-events`: types, a fast validator, encoders, partitioning.

DESIGN.md "Event contract" is the source of truth; this module is its executable form, and
`streams.event_schema` (shipped as `streams/schema/event.schema.json`) its declarative one.

Decisions the contract leaves open, made here:

* `ts` is normalised to integer epoch milliseconds (`Event.ts_ms`): comparing and bucketing
  integers is what the worker does all day, and it is the cheapest form. `Event.ts` gives an
  aware UTC `datetime` when one is wanted. RFC 3339 strings are truncated to the millisecond.
* A timestamp is accepted from 2000-01-01T00:00:00Z up to `MAX_FUTURE_MS` (1 day) after the
  receive time the caller passes. Callers should pass the Kafka record's timestamp rather than the
  wall clock, so that a redelivered message is judged exactly as it was the first time.
* Unknown top-level fields are ignored (not kept, not rejected): a forum may send newer fields
  before the worker knows them, and that must not dead-letter its events.
* An optional field that is JSON `null` counts as absent. `object_type` and `object_id` come
  together or not at all. Ids (`user_id`, `object_id`, `thread_id`, `post_id`) are integers in
  1..2**63-1 (a Java long, ClickHouse Int64/UInt64 safe). `ip` is a string of at most 64
  characters, kept as given (not parsed: forums send proxy lists and placeholders).
* A message is decoded into a `DecodeResult`, never an exception: whole-message failures (not
  JSON, too big, neither object nor array, empty array, a single event that is bad) carry the
  original bytes; in a batch, each bad element is dead-lettered alone with its re-encoded bytes
  and its index, while the good elements go on. Nothing is lost and one bad event does not
  take 499 good ones with it.
* The partition rule (a user's events live in murmur2(key) % partitions) is checked for every
  event, single or batched, when the caller gives the partition: a producer using another
  partitioner (librdkafka's default is CRC32: set `partitioner=murmur2_random`) would split
  users' sessions across workers, and dead-lettering says so loudly.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final, NamedTuple

import orjson

from streams.partitioning import partition_for_user

__all__ = [
    "COMMENT_TYPES",
    "CONTENT_TYPES",
    "LOGGED_TYPES",
    "MAX_BATCH_BYTES",
    "MAX_EVENT_BYTES",
    "MAX_FUTURE_MS",
    "MAX_ID",
    "MAX_ID_LENGTH",
    "MAX_IP_LENGTH",
    "MIN_TS_MS",
    "VOTE_TYPES",
    "DecodeError",
    "DecodeResult",
    "Event",
    "EventType",
    "GroupRecord",
    "InvalidEvent",
    "ObjectType",
    "Role",
    "UserRecord",
    "datetime_to_ms",
    "decode_message",
    "encode_batch",
    "ms_to_datetime",
    "now_ms",
    "parse_event",
    "parse_group",
    "parse_user",
]

MAX_EVENT_BYTES: Final = 64 * 1024
"""An event (a single-event message, or one element of a batch re-encoded) above this is bad."""
MAX_BATCH_BYTES: Final = 1024 * 1024
"""A message above this is bad, whatever it holds."""
MAX_FUTURE_MS: Final = 24 * 60 * 60 * 1000
"""How far after the receive time a `ts` may be: clocks drift, a day does not."""
MIN_TS_MS: Final = 946_684_800_000
"""2000-01-01T00:00:00Z: anything earlier is a bug (a zero, a seconds-for-milliseconds mix-up)."""
MAX_ID: Final = 2**63 - 1
MAX_ID_LENGTH: Final = 64
MAX_IP_LENGTH: Final = 64

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)


class EventType(StrEnum):
    """The 14 event types. Members are `str`, so they compare equal to the wire names."""

    USER_REGISTERED = "user_registered"
    LOGGED_IN = "logged_in"
    LOGGED_OUT = "logged_out"
    QUESTION_VIEWED = "question_viewed"
    ANSWER_VIEWED = "answer_viewed"
    UPVOTED = "upvoted"
    DOWNVOTED = "downvoted"
    VOTE_CANCELED = "vote_canceled"
    QUESTION_ASKED = "question_asked"
    ANSWER_POSTED = "answer_posted"
    QUESTION_COMMENTED = "question_commented"
    ANSWER_COMMENTED = "answer_commented"
    QUESTION_RETAGGED = "question_retagged"
    ACTIVITY = "activity"


class ObjectType(StrEnum):
    """What an event is about (`object_type`)."""

    USER = "user"
    POST = "post"
    THREAD = "thread"


VOTE_TYPES: Final = frozenset(
    {EventType.UPVOTED, EventType.DOWNVOTED, EventType.VOTE_CANCELED}
)  # Askbot's `content-voted`
COMMENT_TYPES: Final = frozenset(
    {EventType.QUESTION_COMMENTED, EventType.ANSWER_COMMENTED}
)  # Askbot's `content-commented`
CONTENT_TYPES: Final = frozenset(
    {EventType.QUESTION_ASKED, EventType.ANSWER_POSTED} | COMMENT_TYPES
)  # Askbot's `any-content-posted`
LOGGED_TYPES: Final = frozenset(EventType) - {EventType.ACTIVITY}
"""Types listed in the event log; `activity` only keeps sessions alive."""

_TYPES: Final[dict[str, EventType]] = {t.value: t for t in EventType}
_OBJECT_TYPES: Final[dict[str, ObjectType]] = {t.value: t for t in ObjectType}
_ACCEPTED_TYPES: Final = ", ".join(t.value for t in EventType)

# RFC 3339 date-time (section 5.6), ASCII digits only. Shared with the JSON Schema's pattern.
_RFC3339_CORE: Final = (
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}"
    r"(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_RFC3339: Final = re.compile(_RFC3339_CORE, re.ASCII)


class InvalidEvent(ValueError):
    """Input that breaks the contract; `reason` is short, specific and safe to store in the DLQ."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Event(NamedTuple):
    """One validated event. A NamedTuple because building one is 4x cheaper than a frozen
    dataclass, and the worker builds tens of thousands a second; it is just as immutable.

    Build events from untrusted input with `parse_event`/`decode_message`, and in forum code with
    `Event.new`, which validates; the plain constructor trusts its arguments.
    """

    id: str
    type: EventType
    ts_ms: int
    user_id: int
    ip: str | None = None
    user_agent: str | None = None
    object_type: ObjectType | None = None
    object_id: int | None = None
    thread_id: int | None = None
    post_id: int | None = None

    @classmethod
    def new(
        cls,
        type: EventType | str,
        user_id: int,
        *,
        ts: datetime | int | str | None = None,
        id: str | None = None,
        ip: str | None = None,
        user_agent: str | None = None,
        object_type: ObjectType | str | None = None,
        object_id: int | None = None,
        thread_id: int | None = None,
        post_id: int | None = None,
    ) -> Event:
        """Build and validate an event; `ts` defaults to now, `id` to a random UUID (hex).

        Raises `InvalidEvent` at once, in the forum's own request, rather than letting a bad
        event travel to the dead-letter topic.
        """
        if isinstance(ts, datetime):
            ts = datetime_to_ms(ts)
        fields: dict[str, Any] = {
            "id": uuid.uuid4().hex if id is None else id,
            "type": type.value if isinstance(type, EventType) else type,
            "ts": now_ms() if ts is None else ts,
            "user_id": user_id,
            "ip": ip,
            "user_agent": user_agent,
            "object_type": object_type.value
            if isinstance(object_type, ObjectType)
            else object_type,
            "object_id": object_id,
            "thread_id": thread_id,
            "post_id": post_id,
        }
        return parse_event(fields, received_at_ms=now_ms())

    @property
    def ts(self) -> datetime:
        """The event time as an aware UTC datetime."""
        return ms_to_datetime(self.ts_ms)

    def to_dict(self) -> dict[str, Any]:
        """The wire form: `ts` as epoch milliseconds, absent optional fields left out."""
        out: dict[str, Any] = {
            "id": self.id,
            "type": str(self.type),  # str(): also right for a hand-built Event with a plain str
            "ts": self.ts_ms,
            "user_id": self.user_id,
        }
        for name in _OPTIONAL_FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = str(value) if name == "object_type" else value
        return out

    def to_json(self) -> bytes:
        """Compact UTF-8 JSON of `to_dict()`; what the producer puts on the wire."""
        return orjson.dumps(self.to_dict())


_OPTIONAL_FIELDS: Final = ("ip", "user_agent", "object_type", "object_id", "thread_id", "post_id")
_new_event = tuple.__new__  # skips NamedTuple's __new__ wrapper: half the construction cost


class DecodeError(NamedTuple):
    """A dead-letter candidate: the bytes to keep, why they were refused, and where from.

    `element_index` is None when the whole message failed (then `payload` is the original message
    bytes); otherwise it is the element's position in the batch and `payload` its JSON.
    """

    payload: bytes
    reason: str
    element_index: int | None = None


class DecodeResult(NamedTuple):
    """What one Kafka message yields: the good events in order, and everything refused."""

    events: list[Event]
    errors: list[DecodeError]


def now_ms() -> int:
    """Wall-clock epoch milliseconds."""
    return time.time_ns() // 1_000_000


def ms_to_datetime(ms: int) -> datetime:
    """Epoch milliseconds to an aware UTC datetime (exact: no float rounding)."""
    return _EPOCH + timedelta(milliseconds=ms)


def datetime_to_ms(dt: datetime) -> int:
    """An aware datetime to epoch milliseconds, truncated; naive datetimes are refused,
    because guessing their zone is how hours end up shifted."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise InvalidEvent("field 'ts': datetime must be timezone-aware")
    return (dt - _EPOCH) // _ONE_MS


# ---------------------------------------------------------------------------------------------
# Validation


def _json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _field_error(obj: Mapping[str, Any], name: str, expected: str) -> InvalidEvent:
    """Slow path only: a precise reason for a field that failed the fast checks."""
    if name not in obj:
        return InvalidEvent(f"field '{name}': missing")
    value = obj[name]
    return InvalidEvent(
        f"field '{name}': must be {expected}, got {_json_type(value)} {value!r:.80}"
    )


def _parse_ts_string(text: str, field: str = "ts") -> int:
    """RFC 3339 text (offset required) to epoch ms; fraction beyond ms is truncated."""
    if _RFC3339.fullmatch(text) is None:
        raise InvalidEvent(
            f"field '{field}': {text!r:.80} is not RFC 3339 with an offset "
            "(e.g. 2024-05-01T12:00:00Z) nor integer epoch milliseconds"
        )
    try:
        parsed = datetime.fromisoformat(text.upper())
    except ValueError as exc:
        raise InvalidEvent(
            f"field '{field}': {text!r:.80} is not a valid date-time: {exc}"
        ) from None
    return (parsed - _EPOCH) // _ONE_MS


def _parse_ts(obj: Mapping[str, Any], ts: object) -> int:
    if type(ts) is int:
        return ts
    if type(ts) is str:
        return _parse_ts_string(ts)
    raise _field_error(obj, "ts", "an RFC 3339 string or integer epoch milliseconds")


def _check_ts(ts_ms: int, max_ts: int) -> None:
    if ts_ms < MIN_TS_MS:
        raise InvalidEvent(f"field 'ts': {_ms_text(ts_ms)} is before 2000-01-01")
    if ts_ms > max_ts:
        raise InvalidEvent(
            f"field 'ts': {_ms_text(ts_ms)} is more than 1 day after the receive time "
            f"{_ms_text(max_ts - MAX_FUTURE_MS)}"
        )


def _ms_text(ms: int) -> str:
    """Epoch ms as RFC 3339 UTC text, or the bare number when out of datetime's range."""
    try:
        return ms_to_datetime(ms).isoformat().replace("+00:00", "Z")
    except OverflowError:
        return f"{ms} ms"


def _is_id(value: object) -> bool:
    return type(value) is int and 0 < value <= MAX_ID


_ID_RULE: Final = "an integer in 1..2**63-1"


def _check_optional(obj: Mapping[str, Any]) -> tuple[Any, ...]:
    """The optional fields, validated; a separate function keeps the common path short."""
    get = obj.get
    ip = get("ip")
    if ip is not None and (type(ip) is not str or len(ip) > MAX_IP_LENGTH):
        raise _field_error(obj, "ip", f"a string of at most {MAX_IP_LENGTH} characters")
    user_agent = get("user_agent")
    if user_agent is not None and type(user_agent) is not str:
        raise _field_error(obj, "user_agent", "a string")
    object_type = get("object_type")
    object_id = get("object_id")
    if object_type is not None or object_id is not None:
        object_type = _check_object(obj, object_type, object_id)
    thread_id = get("thread_id")
    if thread_id is not None and not _is_id(thread_id):
        raise _field_error(obj, "thread_id", _ID_RULE)
    post_id = get("post_id")
    if post_id is not None and not _is_id(post_id):
        raise _field_error(obj, "post_id", _ID_RULE)
    return ip, user_agent, object_type, object_id, thread_id, post_id


def _check_object(obj: Mapping[str, Any], object_type: object, object_id: object) -> ObjectType:
    if object_type is None:
        raise InvalidEvent("field 'object_type': missing (required with 'object_id')")
    if object_id is None:
        raise InvalidEvent("field 'object_id': missing (required with 'object_type')")
    kind = _OBJECT_TYPES.get(object_type) if type(object_type) is str else None
    if kind is None:
        raise _field_error(obj, "object_type", "one of user, post, thread")
    if not _is_id(object_id):
        raise _field_error(obj, "object_id", _ID_RULE)
    return kind


def _validate(obj: object, max_ts: int) -> Event:
    """The hot path: plain type checks on `orjson.loads` output, no allocation until success."""
    if type(obj) is not dict:
        raise InvalidEvent(f"event must be a JSON object, got {_json_type(obj)}")
    get = obj.get
    event_id = get("id")
    if type(event_id) is not str or not 0 < len(event_id) <= MAX_ID_LENGTH:
        raise _field_error(obj, "id", f"a string of 1..{MAX_ID_LENGTH} characters")
    type_name = get("type")
    event_type = _TYPES.get(type_name) if type(type_name) is str else None
    if event_type is None:
        if type(type_name) is str:
            raise InvalidEvent(f"unknown type {type_name!r:.80}; accepted: {_ACCEPTED_TYPES}")
        raise _field_error(obj, "type", "a string")
    ts_ms = _parse_ts(obj, get("ts"))
    if not MIN_TS_MS <= ts_ms <= max_ts:
        _check_ts(ts_ms, max_ts)
    user_id = get("user_id")
    if type(user_id) is not int or not 0 < user_id <= MAX_ID:
        raise _field_error(obj, "user_id", _ID_RULE)
    if len(obj) == 4:  # the four required fields and nothing else: skip the optional checks
        return _new_event(Event, (event_id, event_type, ts_ms, user_id) + _NO_OPTIONALS)
    return _new_event(Event, (event_id, event_type, ts_ms, user_id) + _check_optional(obj))


_NO_OPTIONALS: Final = (None,) * len(_OPTIONAL_FIELDS)


def parse_event(obj: object, *, received_at_ms: int) -> Event:
    """Validate one decoded JSON value as an event; raises `InvalidEvent` with the reason."""
    return _validate(obj, received_at_ms + MAX_FUTURE_MS)


def _check_partition(event: Event, partition: int, num_partitions: int) -> None:
    actual = partition_for_user(event.user_id, num_partitions)
    if actual != partition:
        raise InvalidEvent(
            f"user {event.user_id} belongs to partition {actual} of {num_partitions}, "
            f"not {partition} (key = decimal user id, Kafka's murmur2 partitioner)"
        )


def _reencode(element: object) -> bytes:
    """A batch element's bytes for the DLQ; cannot fail on what orjson itself decoded."""
    try:
        return orjson.dumps(element)
    except (TypeError, orjson.JSONEncodeError):  # pragma: no cover - defensive
        return repr(element).encode("utf-8", "backslashreplace")


def _whole(value: bytes, reason: str) -> DecodeResult:
    return DecodeResult([], [DecodeError(value, reason)])


def decode_message(
    value: bytes | None,
    *,
    partition: int | None = None,
    num_partitions: int | None = None,
    received_at_ms: int,
    key: bytes | None = None,
) -> DecodeResult:
    """Decode one `forum-events` message into events and dead-letter candidates; never raises
    for bad input (arguments that are bugs raise `ValueError`).

    `partition`/`num_partitions`: where the message was read; given both, every event's user must
    map there. `received_at_ms`: the reference for the future bound (pass the record timestamp).
    `key`: if given, a single-event message's `user_id` must be its key (batches are checked by
    partition alone, as their key is just one of their users).
    """
    if (partition is None) != (num_partitions is None):
        raise ValueError("give both partition and num_partitions, or neither")
    if value is None:
        return _whole(b"", "null value (tombstone): events are never deleted")
    size = len(value)
    if size > MAX_BATCH_BYTES:
        return _whole(value, f"message is {size} bytes; limit {MAX_BATCH_BYTES}")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return _whole(value, f"not JSON: {exc}")
    max_ts = received_at_ms + MAX_FUTURE_MS
    if type(doc) is dict:
        return _decode_single(value, doc, max_ts, partition, num_partitions, key)
    if type(doc) is list:
        return _decode_batch(value, doc, max_ts, partition, num_partitions)
    return _whole(value, f"message must be a JSON object or array, got {_json_type(doc)}")


def _decode_single(
    value: bytes,
    doc: dict[str, Any],
    max_ts: int,
    partition: int | None,
    num_partitions: int | None,
    key: bytes | None,
) -> DecodeResult:
    if len(value) > MAX_EVENT_BYTES:
        return _whole(value, f"event is {len(value)} bytes; limit {MAX_EVENT_BYTES}")
    try:
        event = _validate(doc, max_ts)
        if key is not None and key != str(event.user_id).encode():
            raise InvalidEvent(
                f"message key {key[:40]!r} is not the user id {event.user_id} as decimal text"
            )
        if num_partitions is not None and partition is not None:
            _check_partition(event, partition, num_partitions)
    except InvalidEvent as exc:
        return _whole(value, exc.reason)
    return DecodeResult([event], [])


def _decode_batch(
    value: bytes,
    doc: list[Any],
    max_ts: int,
    partition: int | None,
    num_partitions: int | None,
) -> DecodeResult:
    if not doc:
        return _whole(value, "empty batch: a batch message must hold at least one event")
    # Only a message over the event limit can hold an element over it: skip re-encoding otherwise.
    measure = len(value) > MAX_EVENT_BYTES
    check = num_partitions is not None and partition is not None
    events: list[Event] = []
    errors: list[DecodeError] = []
    for index, element in enumerate(doc):
        try:
            if measure:
                _check_element_size(element)
            event = _validate(element, max_ts)
            if check:
                _check_partition(event, partition, num_partitions)  # type: ignore[arg-type]
        except InvalidEvent as exc:
            errors.append(DecodeError(_reencode(element), exc.reason, index))
            continue
        events.append(event)
    return DecodeResult(events, errors)


def _check_element_size(element: object) -> None:
    size = len(_reencode(element))
    if size > MAX_EVENT_BYTES:
        raise InvalidEvent(f"event is {size} bytes; limit {MAX_EVENT_BYTES}")


def encode_batch(encoded_events: list[bytes]) -> bytes:
    """Join already-encoded events into one batch message value (a JSON array)."""
    return b"[" + b",".join(encoded_events) + b"]"


# ---------------------------------------------------------------------------------------------
# Dimension records: topics `forum-users` and `forum-groups` (compacted, key = the id)


class Role(StrEnum):
    """A user's role on the forum; `blocked` users still have history."""

    ADMIN = "admin"
    MODERATOR = "moderator"
    USER = "user"
    BLOCKED = "blocked"


_ROLES: Final[dict[str, Role]] = {r.value: r for r in Role}


class UserRecord(NamedTuple):
    """A `forum-users` value. On the wire `joined_at` is RFC 3339 UTC text (humans read these
    topics and the JSON Lines imports); integer epoch milliseconds are accepted too."""

    user_id: int
    username: str
    email: str
    joined_at: datetime
    is_active: bool
    role: Role
    group_ids: tuple[int, ...] = ()
    group_since: tuple[tuple[int, datetime], ...] = ()
    """(group id, since) for the groups whose joining time the forum gives: on the wire a
    `group_ids` entry `{"group_id": 7, "since": "2024-05-01T12:00:00Z"}` instead of `7`."""
    organization_id: int | None = None
    """The user's email-domain organization (set by `groups from-email-domains`)."""
    updated_at: datetime | None = None
    """When the change happened (default: the Kafka record's time); a group that leaves the
    list ends its membership then."""

    @property
    def key(self) -> bytes:
        return str(self.user_id).encode()

    def to_dict(self) -> dict[str, Any]:
        since = dict(self.group_since)
        out: dict[str, Any] = {
            "user_id": self.user_id,
            "username": self.username,
            "email": self.email,
            "joined_at": _utc_text(self.joined_at),
            "is_active": self.is_active,
            "role": self.role.value,
            "group_ids": [
                {"group_id": g, "since": _utc_text(since[g])} if g in since else g
                for g in self.group_ids
            ],
        }
        if self.organization_id is not None:
            out["organization_id"] = self.organization_id
        if self.updated_at is not None:
            out["updated_at"] = _utc_text(self.updated_at)
        return out

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_json(cls, value: bytes) -> UserRecord:
        """Decode and validate a `forum-users` value; raises `InvalidEvent`."""
        return parse_user(_loads_object(value))


class GroupRecord(NamedTuple):
    """A `forum-groups` value; only groups `used_for_analytics` get group figures."""

    group_id: int
    name: str
    used_for_analytics: bool

    @property
    def key(self) -> bytes:
        return str(self.group_id).encode()

    def to_dict(self) -> dict[str, Any]:
        return {
            "group_id": self.group_id,
            "name": self.name,
            "used_for_analytics": self.used_for_analytics,
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_json(cls, value: bytes) -> GroupRecord:
        """Decode and validate a `forum-groups` value; raises `InvalidEvent`."""
        return parse_group(_loads_object(value))


def _utc_text(dt: datetime) -> str:
    """RFC 3339 UTC with milliseconds, e.g. 2024-05-01T12:00:00.000Z."""
    return ms_to_datetime(datetime_to_ms(dt)).isoformat(timespec="milliseconds")[:-6] + "Z"


def _loads_object(value: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"not JSON: {exc}") from None
    if type(doc) is not dict:
        raise InvalidEvent(f"value must be a JSON object, got {_json_type(doc)}")
    return doc


def _require(obj: Mapping[str, Any], name: str, kind: type, expected: str) -> Any:
    value = obj.get(name)
    if type(value) is not kind:
        raise _field_error(obj, name, expected)
    return value


def _require_id(obj: Mapping[str, Any], name: str) -> int:
    value = obj.get(name)
    if not _is_id(value):
        raise _field_error(obj, name, _ID_RULE)
    return int(value)  # type: ignore[arg-type]


def parse_user(obj: Mapping[str, Any]) -> UserRecord:
    """Validate a decoded `forum-users` value (unknown fields ignored, as for events)."""
    joined = obj.get("joined_at")
    if type(joined) is int:
        joined_at = ms_to_datetime(joined)
    elif type(joined) is str:
        joined_at = ms_to_datetime(_parse_ts_string(joined, "joined_at"))
    else:
        raise _field_error(obj, "joined_at", "an RFC 3339 string or integer epoch milliseconds")
    role_name = obj.get("role")
    role = _ROLES.get(role_name) if isinstance(role_name, str) else None
    if role is None:
        raise _field_error(obj, "role", "one of " + ", ".join(r.value for r in Role))
    group_ids, group_since = _parse_groups(obj)
    organization_id = obj.get("organization_id")
    if organization_id is not None and not _is_id(organization_id):
        raise _field_error(obj, "organization_id", _ID_RULE)
    updated_at = _optional_time(obj, "updated_at")
    return UserRecord(
        user_id=_require_id(obj, "user_id"),
        username=_require(obj, "username", str, "a string"),
        email=_require(obj, "email", str, "a string"),
        joined_at=joined_at,
        is_active=_require(obj, "is_active", bool, "a boolean"),
        role=role,
        group_ids=group_ids,
        group_since=group_since,
        organization_id=organization_id,
        updated_at=updated_at,
    )


_GROUPS_RULE: Final = (
    'an array of group ids (integers in 1..2**63-1) or {"group_id": id, "since": time} objects'
)


def _parse_groups(
    obj: Mapping[str, Any],
) -> tuple[tuple[int, ...], tuple[tuple[int, datetime], ...]]:
    """`group_ids`: plain ids, or objects that also say since when (RFC 3339 or epoch ms)."""
    entries = obj.get("group_ids", [])
    if type(entries) is not list:
        raise _field_error(obj, "group_ids", _GROUPS_RULE)
    ids: list[int] = []
    since: list[tuple[int, datetime]] = []
    for entry in entries:
        if _is_id(entry):
            ids.append(int(entry))
            continue
        if type(entry) is not dict or not _is_id(entry.get("group_id")):
            raise _field_error(obj, "group_ids", _GROUPS_RULE)
        group_id = int(entry["group_id"])
        ids.append(group_id)
        when = _optional_time(entry, "since")
        if when is not None:
            since.append((group_id, when))
    if len(set(ids)) != len(ids):
        raise _field_error(obj, "group_ids", "a list without repeated groups")
    return tuple(ids), tuple(since)


def _optional_time(obj: Mapping[str, Any], name: str) -> datetime | None:
    value = obj.get(name)
    if value is None:
        return None
    if type(value) is int:
        return ms_to_datetime(value)
    if type(value) is str:
        return ms_to_datetime(_parse_ts_string(value, name))
    raise _field_error(obj, name, "an RFC 3339 string or integer epoch milliseconds")


def parse_group(obj: Mapping[str, Any]) -> GroupRecord:
    """Validate a decoded `forum-groups` value."""
    return GroupRecord(
        group_id=_require_id(obj, "group_id"),
        name=_require(obj, "name", str, "a string"),
        used_for_analytics=_require(obj, "used_for_analytics", bool, "a boolean"),
    )
