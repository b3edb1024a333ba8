"""Membership intervals and group rows: the rules one by one, and a property that incremental
fan-out plus corrections always equals a batch recomputation from the final intervals."""

from __future__ import annotations

from collections import defaultdict
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.memberships import (
    GroupHourRow,
    Interval,
    change_memberships,
    corrections,
    covers,
    fan_out,
)
from streams.partition_processor import HourRow

UTC = ZoneInfo("UTC")
KOLKATA = ZoneInfo("Asia/Kolkata")
H = 3_600_000
JOINED = 100 * H


def test_a_first_membership_starts_at_registration() -> None:
    change = change_memberships((), {1: None}, None, JOINED, 500 * H)
    assert change.intervals == (Interval(1, JOINED, None, False, 500 * H),)
    assert change.written == change.intervals and change.deleted == ()


def test_the_forum_given_since_wins() -> None:
    change = change_memberships((), {1: 300 * H}, None, JOINED, 500 * H)
    assert [i.since_ms for i in change.intervals] == [300 * H]


def test_leaving_closes_at_the_change_and_rejoining_starts_at_the_next() -> None:
    joined = change_memberships((), {1: None}, None, JOINED, 200 * H).intervals
    left = change_memberships(joined, {}, None, JOINED, 300 * H)
    assert left.intervals == (Interval(1, JOINED, 300 * H, False, 300 * H),)
    back = change_memberships(left.intervals, {1: None}, None, JOINED, 400 * H)
    assert [(i.since_ms, i.until_ms) for i in back.intervals] == [
        (JOINED, 300 * H),
        (400 * H, None),
    ]
    assert back.written == (Interval(1, 400 * H, None, False, 400 * H),)


def test_a_since_inside_an_earlier_interval_starts_after_it() -> None:
    left = (Interval(1, JOINED, 300 * H, False, 3),)
    back = change_memberships(left, {1: 250 * H}, None, JOINED, 400 * H)
    assert back.intervals[-1].since_ms == 300 * H


def test_a_changed_since_moves_the_open_interval() -> None:
    current = (Interval(1, JOINED, None, False, 7),)
    change = change_memberships(current, {1: 150 * H}, None, JOINED, 500 * H)
    assert change.deleted == (Interval(1, JOINED, None, False, 500 * H),)
    assert change.intervals == (Interval(1, 150 * H, None, False, 500 * H),)


def test_unchanged_records_change_nothing() -> None:
    current = change_memberships((), {1: None, 2: 120 * H}, 9, JOINED, 200 * H).intervals
    again = change_memberships(current, {1: None, 2: 120 * H}, 9, JOINED, 300 * H)
    assert again.intervals == current and not again.written and not again.deleted


def test_the_organization_is_sticky_and_starts_at_registration() -> None:
    org = change_memberships((), {}, 9, JOINED, 500 * H).intervals
    assert org == (Interval(9, JOINED, None, True, 500 * H),)
    later = change_memberships(org, {1: None}, None, JOINED, 600 * H)
    assert {i.group_id for i in later.intervals if i.is_open} == {1, 9}
    moved = change_memberships(later.intervals, {1: None}, 10, JOINED, 700 * H)
    closed = [i for i in moved.intervals if i.group_id == 9]
    assert closed[0].until_ms == 700 * H
    assert [i for i in moved.intervals if i.group_id == 10][0].organization


def test_a_membership_that_never_lasted_is_deleted_not_closed() -> None:
    current = (Interval(1, 500 * H, None, False, 1),)
    change = change_memberships(current, {}, None, JOINED, 400 * H)
    assert change.intervals == () and change.deleted[0].since_ms == 500 * H


def test_an_hour_counts_if_the_user_was_a_member_at_any_moment_of_it() -> None:
    joined_1230 = Interval(1, 12 * H + H // 2, 15 * H)
    assert not covers(joined_1230, 11 * H, UTC)
    assert covers(joined_1230, 12 * H, UTC)
    assert covers(joined_1230, 14 * H, UTC)
    assert not covers(joined_1230, 15 * H, UTC)  # until is exclusive
    # Kolkata's local hours start at :30 UTC: the local hour 12:30..13:30 UTC holds 12:30.
    assert covers(joined_1230, 12 * H + H // 2, KOLKATA)
    assert not covers(joined_1230, 11 * H + H // 2, KOLKATA)


def test_fan_out_writes_each_covering_group_once() -> None:
    intervals = {7: (Interval(1, 0, None), Interval(2, 5 * H, None), Interval(3, 0, 2 * H))}
    rows = fan_out([HourRow(7, 4 * H, (1, 2)), HourRow(8, 4 * H, (5, 5))], intervals, UTC)
    assert rows == [GroupHourRow(1, 7, 4 * H, (1, 2))]


def test_corrections_add_and_remove_written_hours() -> None:
    old = (Interval(1, 0, None), Interval(2, 0, None))
    new = (Interval(1, 0, 3 * H), Interval(2, 0, None), Interval(3, 2 * H, None))
    written = {H: (1,), 2 * H: (2,), 3 * H: (4,)}
    assert corrections(7, old, new, written, UTC) == [
        GroupHourRow(3, 7, 2 * H, (2,)),
        GroupHourRow(3, 7, 3 * H, (4,)),
        GroupHourRow(1, 7, 3 * H, (-4,)),
    ]


# -- the property ---------------------------------------------------------------------------

GROUPS = st.sampled_from([1, 2, 3])
HOURS = st.integers(min_value=90, max_value=130)
RECORD = st.tuples(
    st.dictionaries(GROUPS, st.one_of(st.none(), HOURS.map(lambda h: h * H + 17))),
    st.one_of(st.none(), st.sampled_from([8, 9])),
)
OPERATION = st.one_of(
    st.tuples(st.just("hours"), st.lists(st.tuples(HOURS, st.integers(-3, 5)), max_size=4)),
    st.tuples(st.just("record"), RECORD),
)


@settings(max_examples=300, deadline=None)
@given(operations=st.lists(OPERATION, max_size=12), zone=st.sampled_from([UTC, KOLKATA]))
def test_incremental_group_rows_equal_the_batch_recomputation(
    operations: list[tuple[str, object]], zone: ZoneInfo
) -> None:
    """Hours written over time, fanned out with the memberships of their moment, plus the
    corrections of every membership change, sum to each written hour once per group that
    covers it under the final intervals; and a group's intervals never overlap."""
    intervals: tuple[Interval, ...] = ()
    written: dict[int, int] = defaultdict(int)
    rows: list[GroupHourRow] = []
    clock = 140 * H
    for kind, payload in operations:
        clock += H
        if kind == "hours":
            assert isinstance(payload, list)
            hour_rows = [HourRow(7, h * H, (v,)) for h, v in payload]
            for hour_row in hour_rows:
                written[hour_row.hour_ms] += hour_row.values[0]
            rows.extend(fan_out(hour_rows, {7: intervals}, zone))
        else:
            assert isinstance(payload, tuple)
            wanted, organization = payload
            change = change_memberships(intervals, wanted, organization, JOINED, clock)
            totals = {h: (v,) for h, v in written.items()}
            rows.extend(corrections(7, intervals, change.intervals, totals, zone))
            intervals = change.intervals
    actual: dict[tuple[int, int], int] = defaultdict(int)
    for row in rows:
        actual[(row.group_id, row.hour_ms)] += row.values[0]
    expected = {
        (i.group_id, hour): value
        for hour, value in written.items()
        for i in intervals
        if covers(i, hour, zone)
    }
    assert {k: v for k, v in actual.items() if v} == {k: v for k, v in expected.items() if v}
    by_group: dict[int, list[Interval]] = defaultdict(list)
    for interval in intervals:
        by_group[interval.group_id].append(interval)
    for spans in by_group.values():
        spans.sort(key=lambda i: i.since_ms)
        for a, b in zip(spans, spans[1:], strict=False):
            assert a.until_ms is not None and a.until_ms <= b.since_ms
