"""Per-partition event-time watermarks: monotone, idle advance, skew clamp, finality."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.watermark import DEFAULT_MAX_SKEW_MS, PartitionWatermark, is_final

HOUR = 3_600_000
MINUTE = 60_000
NOW = 1_790_000_000_000  # a fixed "wall clock" keeps the tests exact


def test_live_partition_follows_its_events() -> None:
    wm = PartitionWatermark()
    assert wm.advance(NOW) is None  # nothing seen: no watermark, nothing final
    for step in range(5):
        wm.observe(NOW + step * 1000, received_at_ms=NOW + step * 1000, wall_ms=NOW + step * 1000)
    assert wm.value_ms == NOW + 4000


def test_idle_partition_advances_with_the_wall_clock_from_its_last_event() -> None:
    wm = PartitionWatermark()
    wm.observe(NOW, received_at_ms=NOW, wall_ms=NOW)
    assert wm.advance(NOW + 7 * MINUTE) == NOW + 7 * MINUTE
    hour_end = NOW + 10 * MINUTE
    assert not is_final(hour_end, wm.value_ms, grace_ms=10 * MINUTE)
    wm.advance(hour_end + 10 * MINUTE)
    assert is_final(hour_end, wm.value_ms, grace_ms=10 * MINUTE)


def test_backfill_does_not_rush_ahead_but_closes_while_idle() -> None:
    three_weeks_ago = NOW - 21 * 24 * HOUR
    wm = PartitionWatermark()
    for n in range(120):  # two hours of history read in two seconds of wall time
        wm.observe(three_weeks_ago + n * MINUTE, received_at_ms=NOW, wall_ms=NOW + n * 16)
    last_event = three_weeks_ago + 119 * MINUTE
    assert wm.advance(NOW + 2000) == last_event + 2000 - 119 * 16
    last_hour_end = three_weeks_ago + 2 * HOUR
    assert is_final(three_weeks_ago + HOUR, wm.value_ms, grace_ms=0)
    assert not is_final(last_hour_end, wm.value_ms, grace_ms=10 * MINUTE)
    wm.advance(NOW + 119 * 16 + (last_hour_end + 10 * MINUTE - last_event))
    assert is_final(last_hour_end, wm.value_ms, grace_ms=10 * MINUTE)


def test_a_clock_far_ahead_is_clamped_to_the_receive_time() -> None:
    wm = PartitionWatermark()
    wm.observe(NOW + 23 * HOUR, received_at_ms=NOW, wall_ms=NOW)
    assert wm.value_ms == NOW + DEFAULT_MAX_SKEW_MS


def test_finality_boundary_is_inclusive() -> None:
    assert is_final(HOUR, HOUR + 10 * MINUTE, grace_ms=10 * MINUTE)
    assert not is_final(HOUR, HOUR + 10 * MINUTE - 1, grace_ms=10 * MINUTE)
    assert not is_final(HOUR, None, grace_ms=0)


steps = st.lists(
    st.one_of(
        st.tuples(st.just("event"), st.integers(-3 * HOUR, 3 * HOUR), st.integers(0, HOUR)),
        st.tuples(st.just("tick"), st.just(0), st.integers(0, HOUR)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_never_moves_backwards_nor_past_what_it_has_seen(plan: list[tuple[str, int, int]]) -> None:
    wm = PartitionWatermark()
    wall = NOW
    previous: int | None = None
    bound: int | None = None
    for kind, offset, wait in plan:
        wall += wait
        if kind == "event":
            ts = wall + offset
            wm.observe(ts, received_at_ms=wall, wall_ms=wall)
            clamped = min(ts, wall + DEFAULT_MAX_SKEW_MS)
            bound = clamped if bound is None else max(bound, clamped)
        else:
            wm.advance(wall)
        if previous is not None:
            assert wm.value_ms is not None and wm.value_ms >= previous
        if wm.value_ms is not None:
            assert bound is not None and wm.value_ms <= max(bound, wall)
        previous = wm.value_ms
