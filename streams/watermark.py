"""Event-time watermarks per partition, and which hours they make final.

An hour's summary is final once the partition's watermark passes the hour's end plus the
grace period (DESIGN.md "Semantics"). The watermark is the latest event time the partition
has shown, with two corrections:

* It never moves backwards, so an hour once final stays final; a late event becomes a
  correction, never a reason to reopen the hour.
* An idle partition's watermark advances with the wall clock, from its last event: with no
  new events, event time is presumed to pass as fast as real time (capped at the wall clock
  itself). A live forum's partition therefore closes its hours on time even when its users
  are quiet, while a backfill of old history does not rush ahead while it is being read.

Event times far ahead of the record's receive time (a producer with a wrong clock) are
clamped to the receive time plus `max_skew_ms` before they move the watermark, so one bad
clock cannot make every other event late.

Everything here is a pure function of its inputs: the worker records the watermark it used
for a batch, so a replay after a crash reaches the same decisions.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PartitionWatermark", "is_final"]

DEFAULT_MAX_SKEW_MS = 5 * 60 * 1000


def is_final(hour_end_ms: int, watermark_ms: int | None, grace_ms: int) -> bool:
    """True when an hour ending at `hour_end_ms` can no longer change but by correction."""
    return watermark_ms is not None and watermark_ms >= hour_end_ms + grace_ms


@dataclass
class PartitionWatermark:
    """The watermark of one partition; `observe` events, `advance` with the wall clock."""

    max_skew_ms: int = DEFAULT_MAX_SKEW_MS
    value_ms: int | None = None  # the watermark itself; None until the first event
    max_event_ms: int | None = None  # the latest (clamped) event time seen
    last_event_wall_ms: int | None = None  # wall-clock time at which that was seen

    def observe(self, ts_ms: int, received_at_ms: int, wall_ms: int) -> None:
        """Account for an event of time `ts_ms` whose record was received at `received_at_ms`."""
        event_ms = min(ts_ms, received_at_ms + self.max_skew_ms)
        if self.max_event_ms is None or event_ms >= self.max_event_ms:
            self.max_event_ms = event_ms
            self.last_event_wall_ms = wall_ms
        self._raise_to(event_ms)

    def advance(self, wall_ms: int) -> int | None:
        """Move an idle partition's watermark with the wall clock; return the watermark."""
        if self.max_event_ms is not None and self.last_event_wall_ms is not None:
            idle_ms = max(0, wall_ms - self.last_event_wall_ms)
            self._raise_to(min(wall_ms, self.max_event_ms + idle_ms))
        return self.value_ms

    def _raise_to(self, candidate_ms: int) -> None:
        if self.value_ms is None or candidate_ms > self.value_ms:
            self.value_ms = candidate_ms
