"""The simulated forum's people, groups and memberships: plain data shared by the generator,
the publisher and the truth (the expected figures), so that each reads the same forum."""

from __future__ import annotations

from dataclasses import dataclass

from streams.events import GroupRecord, Role

__all__ = ["Device", "Forum", "Membership", "SimUser"]


@dataclass(frozen=True, slots=True)
class Device:
    """Where a user browses from: the request facts a session keeps."""

    ip: str
    user_agent: str


@dataclass(frozen=True, slots=True)
class SimUser:
    """A forum member and how they behave."""

    user_id: int
    username: str
    email: str
    joined_ms: int
    """Registration time (epoch ms); users who register inside the simulated period send a
    `user_registered` event at this instant."""
    role: Role
    utc_offset_minutes: int
    """Where the user lives: their daily rhythm follows their local clock."""
    visits_per_day: float
    """Mean visits on a weekday (heavy-tailed across users: a few regulars, many lurkers)."""
    devices: tuple[Device, ...]
    blocked_ms: int | None = None
    """A blocked user (role `blocked`) stops visiting at this instant."""


@dataclass(frozen=True, slots=True)
class Membership:
    """A user's membership of a group over [since_ms, until_ms); `until_ms` None: ongoing."""

    user_id: int
    group_id: int
    since_ms: int
    until_ms: int | None = None


@dataclass(frozen=True)
class Forum:
    """Everything the forum publishes on `forum-users` and `forum-groups`."""

    users: tuple[SimUser, ...]
    groups: tuple[GroupRecord, ...]
    memberships: tuple[Membership, ...]
