"""Group membership history, and what a change to it means for the group figures.

A membership is an interval [since, until) of a user in a group (DESIGN.md "Semantics"). The
forum sends users' current group lists (`forum-users`); this module turns each new list into
interval changes:

* a group that appears opens an interval. Its `since` is the one the forum gives (an entry
  `{"group_id": g, "since": ts}`), else the user's registration for the first interval in that
  group (initial imports: the membership covers the user's history), else the time of the
  change (a user who left and comes back is not a member in between);
* a group that disappears closes the open interval at the time of the change (`until`): the
  hours before it stay counted;
* a `since` the forum changes on an open interval moves it;
* the user's email-domain organization (`organization_id`, or the worker's own assignment) is
  sticky: it opens at the registration and stays open when later records do not mention it,
  as Askbot keeps organization members whose email changes.

Group figures are the members' hours while they were members: a user's hour counts toward a
group if the user was a member at any moment of it. The worker keeps that true exactly:

* every hour row it writes is also written to each group covering that hour (`fan_out`);
* a membership change adds or removes the user's already-written hours whose coverage changed
  (`corrections`). Hours not written yet are fanned out when they are, with the memberships of
  that moment, so they are never counted twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple
from zoneinfo import ZoneInfo

from streams.partition_processor import HourRow
from streams.timebuckets import hour_end_ms

__all__ = [
    "GroupHourRow",
    "Interval",
    "MembershipChange",
    "change_memberships",
    "corrections",
    "covers",
    "fan_out",
]


@dataclass(frozen=True)
class Interval:
    """A membership [since_ms, until_ms) (until None: still a member). `version` orders the
    stored versions of one interval (its key: group, user, since): the time of the change
    that made it, or one more than the version before."""

    group_id: int
    since_ms: int
    until_ms: int | None = None
    organization: bool = False
    version: int = 0

    @property
    def is_open(self) -> bool:
        return self.until_ms is None

    def key(self) -> tuple[int, int]:
        return (self.group_id, self.since_ms)


class GroupHourRow(NamedTuple):
    """A change to a member's hour in a group, in `streams.hourly.FIELDS` order."""

    group_id: int
    user_id: int
    hour_ms: int
    values: tuple[int, ...]


@dataclass(frozen=True)
class MembershipChange:
    """The user's intervals after a record, and the interval versions to store (an interval
    removed outright is stored with `deleted`)."""

    intervals: tuple[Interval, ...]
    written: tuple[Interval, ...] = ()
    deleted: tuple[Interval, ...] = ()


def covers(interval: Interval, hour_ms: int, zone: ZoneInfo) -> bool:
    """Whether the member was in the group at any moment of the local hour starting at
    `hour_ms`."""
    if interval.since_ms >= hour_end_ms(hour_ms, zone):
        return False
    return interval.until_ms is None or interval.until_ms > hour_ms


def _covered(intervals: Iterable[Interval], hour_ms: int, zone: ZoneInfo) -> set[int]:
    return {i.group_id for i in intervals if covers(i, hour_ms, zone)}


def fan_out(
    hours: Iterable[HourRow], intervals: Mapping[int, Sequence[Interval]], zone: ZoneInfo
) -> list[GroupHourRow]:
    """Each hour row once for every group the user was in during that hour."""
    out = []
    for row in hours:
        for group_id in sorted(_covered(intervals.get(row.user_id, ()), row.hour_ms, zone)):
            out.append(GroupHourRow(group_id, row.user_id, row.hour_ms, row.values))
    return out


def corrections(
    user_id: int,
    old: Sequence[Interval],
    new: Sequence[Interval],
    written: Mapping[int, tuple[int, ...]],
    zone: ZoneInfo,
) -> list[GroupHourRow]:
    """The group rows that make the user's written hours (`hour start → totals`) agree with
    the new intervals: + for hours a group now covers and did not, - for the reverse."""
    out = []
    for hour_ms in sorted(written):
        before = _covered(old, hour_ms, zone)
        after = _covered(new, hour_ms, zone)
        values = written[hour_ms]
        for group_id in sorted(after - before):
            out.append(GroupHourRow(group_id, user_id, hour_ms, values))
        negative = tuple(-v for v in values)
        for group_id in sorted(before - after):
            out.append(GroupHourRow(group_id, user_id, hour_ms, negative))
    return out


def change_memberships(
    current: Sequence[Interval],
    wanted: Mapping[int, int | None],
    organization_id: int | None,
    joined_ms: int,
    change_ms: int,
) -> MembershipChange:
    """Apply a record: `wanted` maps each group of the record to the `since` the forum gave
    (None when it did not say); `organization_id` is the user's organization (None: keep the
    one the user has). See the module docstring for the rules."""
    intervals = {i.key(): i for i in current}
    written: list[Interval] = []
    deleted: list[Interval] = []
    open_by_group = {i.group_id: i for i in current if i.is_open}
    organization = organization_id
    if organization is None:
        organization = next((i.group_id for i in current if i.is_open and i.organization), None)
    targets = dict(wanted)
    if organization is not None and organization not in targets:
        targets[organization] = None
    for group_id, since in sorted(targets.items()):
        is_org = group_id == organization and group_id not in wanted
        existing = open_by_group.get(group_id)
        if existing is not None:
            if since is not None and since != existing.since_ms:
                deleted.append(_next(existing, change_ms))
                del intervals[existing.key()]
                existing = None
            else:
                continue
        start = _opening(current, group_id, since, joined_ms, change_ms, is_org)
        opened = Interval(group_id, start, None, is_org, change_ms)
        intervals[opened.key()] = opened
        written.append(opened)
    for group_id, interval in sorted(open_by_group.items()):
        if group_id in targets or interval.key() not in intervals:
            continue
        until = max(change_ms, interval.since_ms)
        if until == interval.since_ms:  # never a member for a moment: no interval at all
            deleted.append(_next(interval, change_ms))
            del intervals[interval.key()]
            continue
        closed = replace(_next(interval, change_ms), until_ms=until)
        intervals[closed.key()] = closed
        written.append(closed)
    ordered = tuple(sorted(intervals.values(), key=lambda i: (i.group_id, i.since_ms)))
    return MembershipChange(ordered, tuple(written), tuple(deleted))


def _next(interval: Interval, change_ms: int) -> Interval:
    """The interval's next version: later than its last and than any earlier change, so a
    key deleted and then opened again by a later change ends up open."""
    return replace(interval, version=max(interval.version + 1, change_ms))


def _opening(
    current: Sequence[Interval],
    group_id: int,
    since: int | None,
    joined_ms: int,
    change_ms: int,
    is_org: bool,
) -> int:
    """Where a new interval starts: never inside an earlier interval of the same group."""
    earlier = [i for i in current if i.group_id == group_id and not i.is_open]
    if since is None:
        since = joined_ms if (is_org or not earlier) else change_ms
    floor = max((i.until_ms for i in earlier if i.until_ms is not None), default=None)
    return since if floor is None else max(since, floor)
