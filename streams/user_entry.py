"""What the worker keeps per user: the incremental `UserState` and the hour deltas not yet final.

An hour's figures are written to ClickHouse once the partition's watermark makes the hour final
(streams.watermark); until then its deltas add up here, so a busy hour costs one row, not one
per batch. After that, a late event's delta is final at once: it is written as a correction.

The entry is one value of the worker's Faust table (key: the user id as decimal text), so it
survives a crash through the table's changelog; `to_bytes`/`from_bytes` are that record.
"""

from __future__ import annotations

import struct
from typing import Final

from streams.hourly import FIELDS
from streams.user_state import StateConfig, UserState

__all__ = ["UserEntry"]

_N: Final = len(FIELDS)
_LENGTH: Final = struct.Struct("<I")
_HOUR: Final = struct.Struct(f"<q{_N}q")


class UserEntry:
    """A user's `UserState` plus `pending`: hour start (epoch ms) → summed, unwritten deltas."""

    __slots__ = ("pending", "state")

    def __init__(self, state: UserState, pending: dict[int, list[int]] | None = None) -> None:
        self.state = state
        self.pending: dict[int, list[int]] = pending if pending is not None else {}

    @classmethod
    def new(cls, user_id: int, config: StateConfig) -> UserEntry:
        return cls(UserState(user_id, config))

    @property
    def user_id(self) -> int:
        return self.state.user_id

    def add_deltas(self, deltas: dict[int, tuple[int, ...]]) -> None:
        """Sum hour deltas into `pending`; an hour whose sum returns to zero is dropped."""
        for hour, values in deltas.items():
            row = self.pending.get(hour)
            if row is None:
                self.pending[hour] = list(values)
                continue
            for i, value in enumerate(values):
                row[i] += value
            if not any(row):
                del self.pending[hour]

    def is_empty(self) -> bool:
        """Nothing left worth a table record: no sessions, ids or pending hours."""
        return not self.pending and self.state.is_empty()

    def to_bytes(self) -> bytes:
        state = self.state.to_bytes()
        parts = [_LENGTH.pack(len(state)), state, _LENGTH.pack(len(self.pending))]
        parts.extend(_HOUR.pack(hour, *row) for hour, row in sorted(self.pending.items()))
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes, config: StateConfig) -> UserEntry:
        """Restore an entry; `ValueError` for a damaged record or another configuration."""
        view = memoryview(data)
        (size,) = _LENGTH.unpack_from(view, 0)
        pos = _LENGTH.size + size
        state = UserState.from_bytes(bytes(view[_LENGTH.size : pos]), config)
        (count,) = _LENGTH.unpack_from(view, pos)
        pos += _LENGTH.size
        if len(view) != pos + count * _HOUR.size:
            raise ValueError("user entry record has the wrong length")
        pending = {}
        for _ in range(count):
            hour, *row = _HOUR.unpack_from(view, pos)
            pending[hour] = row
            pos += _HOUR.size
        return cls(state, pending)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UserEntry):
            return NotImplemented
        return self.state == other.state and self.pending == other.pending

    __hash__ = None  # type: ignore[assignment]  # mutable
