"""The simulated forum's fixed cast: companies and webmail domains, groups, names, browsers,
where users live, and the segment settings that match the groups.

Fictional companies on realistic domains, chosen to exercise Askbot's organization rule
(`streams.organizations`): a hyphenated label (`umbrella-research.de` → `Umbrella-Research`), a
multi-part public suffix (`initech.co.uk` → `Initech`), mail subdomains (`mail.globex.com` →
`Globex`), and webmail domains that must give no organization.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from streams.events import GroupRecord
from streams.organizations import organization_name

__all__ = [
    "BETA_TESTERS",
    "COMPANIES",
    "FIRST_NAMES",
    "LAST_NAMES",
    "NEWSLETTER",
    "STAFF",
    "TIME_ZONES",
    "USER_AGENTS",
    "WEBMAIL",
    "Company",
    "forum_groups",
    "segment_settings",
]

STAFF = 1
"""Administrators and moderators."""
BETA_TESTERS = 2
"""Users join it over time and some leave: membership history."""
NEWSLETTER = 3
"""Not used for analytics: its members belong to the default segment."""
_ORGANIZATIONS_FIRST_ID = 101


@dataclass(frozen=True)
class Company:
    """An employer whose staff use the forum: a customer or a partner."""

    domain: str
    kind: str  # "customer" or "partner"
    weight: float  # share of the forum's company users

    @property
    def name(self) -> str:
        """The organization group's name, by Askbot's rule."""
        name = organization_name(f"someone@{self.domain}")
        assert name is not None, self.domain
        return name


COMPANIES: tuple[Company, ...] = (
    Company("acme-corp.com", "customer", 6),
    Company("mail.globex.com", "customer", 5),
    Company("initech.co.uk", "customer", 4),
    Company("umbrella-research.de", "customer", 3),
    Company("hooli.io", "customer", 3),
    Company("soylent.com.au", "customer", 2),
    Company("tyrell.co.jp", "customer", 1),
    Company("stark-industries.com", "partner", 3),
    Company("eu.wayne-enterprises.com", "partner", 2),
    Company("cyberdyne.systems", "partner", 1),
)

WEBMAIL: tuple[tuple[str, float], ...] = (
    ("gmail.com", 40),
    ("outlook.com", 12),
    ("yahoo.com", 10),
    ("hotmail.com", 8),
    ("icloud.com", 6),
    ("proton.me", 4),
    ("gmx.de", 4),
    ("web.de", 3),
    ("mail.ru", 3),
    ("qq.com", 3),
    ("yandex.ru", 2),
    ("rediffmail.com", 2),
)

FIRST_NAMES: tuple[str, ...] = (
    "ada", "alan", "amara", "anil", "ann", "aziz", "bea", "bob", "carla", "chen", "dana",
    "dmitri", "eli", "emma", "farah", "femi", "gus", "hana", "ivan", "jin", "joao", "kai",
    "lars", "lea", "liam", "maya", "mei", "nia", "noah", "olga", "omar", "pia", "priya",
    "raj", "rosa", "sam", "sara", "taro", "uma", "vera", "wei", "yara", "yusuf", "zoe",
)  # fmt: skip
LAST_NAMES: tuple[str, ...] = (
    "adams", "baker", "chen", "costa", "diaz", "dubois", "evans", "fischer", "garcia", "gupta",
    "haddad", "ito", "jansen", "kim", "kowalski", "lee", "mensah", "muller", "nakamura",
    "novak", "okafor", "olsen", "patel", "rossi", "santos", "silva", "smith", "tanaka",
    "volkov", "wang", "weber", "young",
)  # fmt: skip

USER_AGENTS: tuple[tuple[str, float], ...] = (
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36",
        30,
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
        "Gecko) Version/18.1 Safari/605.1.15",
        14,
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
        "like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
        16,
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Mobile Safari/537.36",
        14,
    ),
    ("Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0", 8),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
        10,
    ),
)

TIME_ZONES: tuple[tuple[int, float], ...] = (
    (-8 * 60, 12),  # US west coast
    (-5 * 60, 18),  # US east coast
    (-3 * 60, 5),  # South America
    (0, 10),  # UK, West Africa
    (60, 20),  # central Europe
    (3 * 60, 6),  # Moscow, East Africa
    (5 * 60 + 30, 14),  # India
    (8 * 60, 10),  # China, Singapore
    (9 * 60, 5),  # Japan, Korea
)
"""UTC offsets of where users live (minutes) and their weights: a global forum."""


def organization_ids() -> dict[str, int]:
    """Each company's organization group id, by company name."""
    return {c.name: _ORGANIZATIONS_FIRST_ID + i for i, c in enumerate(COMPANIES)}


def forum_groups() -> tuple[GroupRecord, ...]:
    """Every group of the forum, as published on `forum-groups`."""
    fixed = (
        GroupRecord(STAFF, "Staff", True),
        GroupRecord(BETA_TESTERS, "Beta testers", True),
        GroupRecord(NEWSLETTER, "Newsletter", False),
    )
    organizations = tuple(
        GroupRecord(group_id, name, True) for name, group_id in organization_ids().items()
    )
    return fixed + organizations


def segment_settings() -> dict[str, str]:
    """`ANALYTICS_NAMED_SEGMENTS` and `ANALYTICS_DEFAULT_SEGMENT` for this forum's groups:
    customers, partners and staff, and the community (everyone else, beta testers and
    newsletter readers included)."""
    ids = organization_ids()

    def of_kind(kind: str) -> list[int]:
        return [ids[c.name] for c in COMPANIES if c.kind == kind]

    named = [
        {
            "name": "Customers",
            "slug": "customers",
            "description": "Staff of customer companies (email-domain organizations)",
            "group_ids": of_kind("customer"),
        },
        {
            "name": "Partners",
            "slug": "partners",
            "description": "Staff of partner companies",
            "group_ids": of_kind("partner"),
        },
        {
            "name": "Staff",
            "slug": "staff",
            "description": "Administrators and moderators of the forum",
            "group_ids": [STAFF],
        },
    ]
    default = {"name": "Community", "slug": "community", "description": "Everyone else"}
    return {
        "ANALYTICS_NAMED_SEGMENTS": orjson.dumps(named).decode(),
        "ANALYTICS_DEFAULT_SEGMENT": orjson.dumps(default).decode(),
    }
