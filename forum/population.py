"""Who is on the simulated forum: users, their groups and membership history, as data.

Realistic on purpose, because demos and benchmarks should look like a forum and tests should meet
what a forum sends:

* about 80% registered before the simulated period (spread over two years, more of them
  recently), the rest register during it, with a `user_registered` event;
* 45% use a company address (an email-domain organization, member since registration), the rest
  webmail (no organization);
* how active a user is follows a heavy tail: a few regulars, many occasional visitors, a third
  who barely come;
* user 1 is the administrator, about 2% are moderators (both in Staff), about 2% get blocked
  during the period and stop visiting;
* Beta testers join throughout the period and a third of them leave again (membership history);
  the Newsletter group is not used for analytics.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from forum.catalogue import (
    BETA_TESTERS,
    COMPANIES,
    FIRST_NAMES,
    LAST_NAMES,
    NEWSLETTER,
    STAFF,
    TIME_ZONES,
    USER_AGENTS,
    WEBMAIL,
    forum_groups,
    organization_ids,
)
from forum.model import Device, Forum, Membership, SimUser
from streams.events import Role, UserRecord, ms_to_datetime

__all__ = ["build_forum", "new_user", "organization_of", "user_record", "user_records"]

DAY_MS = 86_400_000
_HISTORY_DAYS = 730
_COMPANY_SHARE = 0.45


def build_forum(seed: int, users: int, start_ms: int, end_ms: int) -> Forum:
    """The forum's `users` users (ids 1..users), its groups and memberships; the simulated
    period is [start_ms, end_ms). The same arguments give the same forum.

    Who a user is (name, email, role, habits) depends on the seed and the id only, so a
    forum simulated again over another period has the same people; when they registered,
    got blocked or joined the beta depends on the period too."""
    taken: set[str] = set()
    people: list[SimUser] = []
    memberships: list[Membership] = []
    for user_id in range(1, users + 1):
        who = random.Random(f"{seed}/user/{user_id}")
        when = random.Random(f"{seed}/user/{user_id}/{start_ms}/{end_ms}")
        user = _user(who, when, user_id, start_ms, end_ms, taken)
        people.append(user)
        memberships.extend(_memberships(who, when, user, start_ms, end_ms))
    return Forum(tuple(people), forum_groups(), tuple(memberships))


def new_user(rng: random.Random, user_id: int, joined_ms: int, taken: set[str]) -> SimUser:
    """Someone registering now (live mode)."""
    return _person(rng, user_id, joined_ms, taken, Role.USER, None)


def _user(
    who: random.Random,
    when: random.Random,
    user_id: int,
    start_ms: int,
    end_ms: int,
    taken: set[str],
) -> SimUser:
    """A member: `who` decides who they are, `when` when things happened to them."""
    joined = _joined(when, start_ms, end_ms)
    role = Role.USER
    blocked = None
    if user_id == 1:
        role = Role.ADMIN
    elif who.random() < 0.02:
        role = Role.MODERATOR
    elif who.random() < 0.02:
        role = Role.BLOCKED
        blocked = when.randrange(max(joined, start_ms), max(joined, start_ms, end_ms - 1) + 1)
    return _person(who, user_id, joined, taken, role, blocked)


def _person(
    rng: random.Random,
    user_id: int,
    joined: int,
    taken: set[str],
    role: Role,
    blocked: int | None,
) -> SimUser:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    username = _unique(f"{first}.{last}", taken)
    if rng.random() < _COMPANY_SHARE:
        company = rng.choices(COMPANIES, [c.weight for c in COMPANIES])[0]
        email = f"{username}@{company.domain}"
    else:
        domain = rng.choices([d for d, _ in WEBMAIL], [w for _, w in WEBMAIL])[0]
        email = f"{first}{last}{rng.randrange(10, 1000)}@{domain}"
    offset = rng.choices([o for o, _ in TIME_ZONES], [w for _, w in TIME_ZONES])[0]
    return SimUser(
        user_id=user_id,
        username=username,
        email=email,
        joined_ms=joined,
        role=role,
        utc_offset_minutes=offset,
        visits_per_day=_visits_per_day(rng, role),
        devices=tuple(_device(rng) for _ in range(rng.choice((1, 1, 2, 2, 3)))),
        blocked_ms=blocked,
    )


def _joined(rng: random.Random, start_ms: int, end_ms: int) -> int:
    """80% before the period (more of them recently), the rest during it."""
    if end_ms > start_ms and rng.random() < 0.2:
        return rng.randrange(start_ms, end_ms)
    back = int(rng.random() ** 1.5 * _HISTORY_DAYS * DAY_MS)
    return start_ms - back - rng.randrange(1, DAY_MS)


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}{n}"
    taken.add(candidate)
    return candidate


def _visits_per_day(rng: random.Random, role: Role) -> float:
    """Mean weekday visits: staff come daily, the rest follow a heavy tail."""
    if role in (Role.ADMIN, Role.MODERATOR):
        return rng.uniform(1.5, 4.0)
    if rng.random() < 0.35:
        return 0.03
    return min(6.0, 0.12 * rng.paretovariate(1.4))


def _device(rng: random.Random) -> Device:
    """A browser on an address from the documentation ranges (RFC 5737, RFC 3849)."""
    agent = rng.choices([a for a, _ in USER_AGENTS], [w for _, w in USER_AGENTS])[0]
    if rng.random() < 0.6:
        net = rng.choice(("192.0.2", "198.51.100", "203.0.113"))
        return Device(f"{net}.{rng.randrange(1, 255)}", agent)
    return Device(f"2001:db8:{rng.randrange(1, 0xFFFF):x}::{rng.randrange(1, 0xFFFF):x}", agent)


def _memberships(
    who: random.Random, when: random.Random, user: SimUser, start_ms: int, end_ms: int
) -> Iterator[Membership]:
    organization = organization_of(user)
    if organization is not None:
        yield Membership(user.user_id, organization, user.joined_ms)
    if user.role in (Role.ADMIN, Role.MODERATOR):
        yield Membership(user.user_id, STAFF, user.joined_ms)
    if who.random() < 0.3:
        yield Membership(user.user_id, NEWSLETTER, user.joined_ms)
    first = max(user.joined_ms, start_ms - 30 * DAY_MS)
    if user.role != Role.BLOCKED and end_ms - first > 2 and who.random() < 0.12:
        since = when.randrange(first, end_ms - 1)
        until = None
        if who.random() < 0.33 and end_ms - since > 2:
            until = when.randrange(since + 1, end_ms)
        yield Membership(user.user_id, BETA_TESTERS, since, until)


def organization_of(user: SimUser) -> int | None:
    """The user's email-domain organization group, if their address is a company's."""
    domain = user.email.rsplit("@", 1)[1]
    by_name = organization_ids()
    return next((by_name[c.name] for c in COMPANIES if c.domain == domain), None)


def user_records(forum: Forum) -> list[UserRecord]:
    """What the forum publishes on `forum-users`: each user with every membership they ever
    had (each with its `since`), then, for memberships that ended, a record without the group
    whose `updated_at` is the leaving time, in time order."""
    by_user: dict[int, list[Membership]] = {}
    for m in forum.memberships:
        by_user.setdefault(m.user_id, []).append(m)
    first = [user_record(u, by_user.get(u.user_id, []), None) for u in forum.users]
    users = {u.user_id: u for u in forum.users}
    ended = sorted((m for m in forum.memberships if m.until_ms is not None), key=_until)
    later = [
        user_record(
            users[m.user_id],
            [o for o in by_user[m.user_id] if o.until_ms is None or o.until_ms > _until(m)],
            _until(m),
        )
        for m in ended
    ]
    return first + later


def _until(m: Membership) -> int:
    assert m.until_ms is not None
    return m.until_ms


def user_record(user: SimUser, memberships: list[Membership], updated_ms: int | None) -> UserRecord:
    """The user's `forum-users` record as the forum shows them at `updated_ms` (None: as of
    their registration or the first load): their groups then, each with its `since`."""
    current = [m for m in memberships if updated_ms is None or m.since_ms <= updated_ms]
    return UserRecord(
        user_id=user.user_id,
        username=user.username,
        email=user.email,
        joined_at=ms_to_datetime(user.joined_ms),
        is_active=user.role != Role.BLOCKED,
        role=user.role,
        group_ids=tuple(m.group_id for m in current),
        group_since=tuple((m.group_id, ms_to_datetime(m.since_ms)) for m in current),
        organization_id=organization_of(user),
        updated_at=None if updated_ms is None else ms_to_datetime(updated_ms),
    )
