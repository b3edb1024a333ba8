"""User segments: the one place that parses, validates and resolves the segment settings.

`ANALYTICS_NAMED_SEGMENTS` and `ANALYTICS_DEFAULT_SEGMENT` are read by the report API, by
`forum-analytics verify` and by the CLI. Askbot computes "the default segment" three different
ways in three places (askbot-reference.md §5); here it is computed once, by `resolve_segments`,
and every part asks `get_segments()`.

Membership (DESIGN.md, "Semantics"):

* a named segment holds the users who are in any of its groups;
* the default segment holds every other user, including users in no group at all;
* segments may overlap: a group may be listed in several named segments, and a user in groups
  of two named segments belongs to both;
* segment figures count each user once per segment, however many of the segment's groups the
  user is in (the SQL that does the counting lives with the queries, not here).

Configuration (JSON in the environment variables):

* `ANALYTICS_NAMED_SEGMENTS`: a list of `{"name", "slug", "description"?, "group_ids"}`; the
  list order is the display order.
* `ANALYTICS_DEFAULT_SEGMENT`: an object `{"name"?, "slug"?, "description"?}`. It has no
  `group_ids`: the default segment is "every other user".

Validation is strict, because a typo in a segment silently changes every figure of a report:

* unknown keys are refused (`groups` for `group_ids` must not pass), with a suggestion;
* `name`: a non-empty string; `description`: a string (default '');
* `slug`: 1..50 characters of `a-z`, `0-9` and `-`, starting with a letter or digit, so that it
  is a URL path segment as it stands. `all-users` is refused: it is the report URLs' word for the
  overview. Anything with `:` (`group:<id>`, `user:<id>`) is already outside the character set;
  plain `group` or `user` are accepted, because the URL parser only treats `group:`/`user:`
  followed by an id specially, so they cannot be confused;
* slugs are unique across the named segments and the *resolved* default segment (so a named
  segment called `rest` clashes with the implicit default `rest`);
* `group_ids`: a non-empty list of integers in 1..2**63-1 (group ids are ClickHouse UInt64 keys
  that also fit a signed 64-bit integer), without duplicates within one segment.

Names are not required to be unique: only slugs address segments.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from forum_analytics.settings import Settings

NAMED_SEGMENTS_VAR = "ANALYTICS_NAMED_SEGMENTS"
DEFAULT_SEGMENT_VAR = "ANALYTICS_DEFAULT_SEGMENT"

MAX_GROUP_ID = 2**63 - 1
SLUG_MAX_LENGTH = 50
# Words the report URLs use in the users-segment position; a segment may not take them.
RESERVED_SLUGS = frozenset({"all-users"})

# Askbot's defaults for the default segment (askbot-reference.md §5).
ALL_USERS_SLUG, ALL_USERS_NAME = "all", "All Users"
REST_SLUG, REST_NAME = "rest", "Rest of Users"

_SLUG = re.compile(rf"[a-z0-9][a-z0-9-]{{0,{SLUG_MAX_LENGTH - 1}}}")
_SLUG_RULE = (
    f"slug must be 1..{SLUG_MAX_LENGTH} characters of a-z, 0-9 and '-', "
    "starting with a letter or digit"
)
_GROUP_IDS_RULE = "group_ids must be a non-empty list of integers in 1..2**63-1"
_NAMED_KEYS = ("name", "slug", "description", "group_ids")
_NAMED_REQUIRED = ("name", "slug", "group_ids")
_DEFAULT_KEYS = ("name", "slug", "description")


class SegmentConfigError(ValueError):
    """One or more problems in a segment setting, each a line meant for the operator.

    `settings.load_settings` prefixes each line with the environment variable's name.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


class NamedSegmentConfig(BaseModel):
    """One validated entry of `ANALYTICS_NAMED_SEGMENTS` (built by `parse_named_segments`).

    Strict and closed, as a backstop: the readable checks happen in `parse_named_segments`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str
    slug: str
    description: str = ""
    group_ids: tuple[int, ...]


class DefaultSegmentConfig(BaseModel):
    """A validated `ANALYTICS_DEFAULT_SEGMENT`: every key optional, missing ones resolved later.

    Kept apart from the resolved `Segment` because "empty" matters: an empty configuration with
    named segments means `rest`, a partial one is completed from the `all` defaults.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str | None = None
    slug: str | None = None
    description: str | None = None

    @property
    def is_empty(self) -> bool:
        """True when no key is set: `{}` means the same as an unset variable."""
        return self.name is None and self.slug is None and self.description is None


@dataclass(frozen=True)
class Segment:
    """A resolved segment, as the reports show it.

    `group_ids` is empty for the default segment, whose members are defined by exclusion
    (`Segments.named_group_ids`), not by groups of its own.
    """

    slug: str
    name: str
    description: str
    group_ids: frozenset[int]
    is_default: bool


@dataclass(frozen=True)
class Segments:
    """The named segments in display order and the default segment ("every other user").

    A user in any group of a named segment is in that segment (possibly in several, since
    segments may overlap) and not in the default segment; every other user, including a user
    in no group, is in the default segment.
    """

    named: tuple[Segment, ...]
    default: Segment

    def __post_init__(self) -> None:
        # Cheap invariants, so a hand-built Segments cannot break the membership rules.
        if not self.default.is_default or self.default.group_ids:
            raise ValueError("the default segment must be marked default and have no groups")
        if any(s.is_default or not s.group_ids for s in self.named):
            raise ValueError("named segments must not be default and must have groups")
        slugs = self.all_slugs()
        if len(set(slugs)) != len(slugs):
            raise ValueError(f"segment slugs must be unique, got {list(slugs)}")

    def in_display_order(self) -> tuple[Segment, ...]:
        """The named segments in configured order, then the default segment (Askbot's order)."""
        return (*self.named, self.default)

    def all_slugs(self) -> tuple[str, ...]:
        """Every slug, in display order."""
        return tuple(s.slug for s in self.in_display_order())

    def by_slug(self, slug: str) -> Segment | None:
        """The segment with this slug, or None (the URL layer turns None into a 404)."""
        return next((s for s in self.in_display_order() if s.slug == slug), None)

    @property
    def named_group_ids(self) -> frozenset[int]:
        """The union of the named segments' groups: a user in any of them is NOT in the default."""
        return frozenset().union(*(s.group_ids for s in self.named))

    def segments_of_groups(self, group_ids: Iterable[int]) -> list[Segment]:
        """The segments of a user in these groups.

        The named segments that share a group with the user, each once and in display order;
        the default segment alone when there is none. Never both: the default segment is exactly
        the users outside every named segment.
        """
        groups = frozenset(group_ids)
        named = [s for s in self.named if s.group_ids & groups]
        return named or [self.default]


# ---------------------------------------------------------------------------------------------
# Parsing and validation (called by the settings validators)


def _show(value: object, limit: int = 60) -> str:
    """A short JSON-ish rendering of a bad value for an error message."""
    text = json.dumps(value, default=repr)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _decode(raw: object, what: str) -> object:
    """JSON text (a keyword override, or what the settings source left undecoded) → a value.

    A string may also be an already decoded JSON string (`"rest"`): text that does not look
    like a JSON list or object is returned as is, to be refused as the wrong type.
    """
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        if raw.strip()[:1] in ("", "[", "{"):
            raise SegmentConfigError([f"must be valid JSON ({what})"]) from None
        return raw


def _unknown_keys(keys: Iterable[object], allowed: Sequence[str]) -> list[str]:
    problems = []
    for key in keys:
        if key in allowed:
            continue
        hint = difflib.get_close_matches(str(key), allowed, n=1)
        did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
        problems.append(f"unknown key {key!r}{did_you_mean}; allowed keys: {', '.join(allowed)}")
    return problems


def _check_name(value: object) -> list[str]:
    if isinstance(value, str) and value.strip():
        return []
    return [f"name must be a non-empty string (got {_show(value)})"]


def _check_description(value: object) -> list[str]:
    if isinstance(value, str):
        return []
    return [f"description must be a string (got {_show(value)})"]


def _check_slug(value: object) -> list[str]:
    if not isinstance(value, str) or not _SLUG.fullmatch(value):
        return [f"{_SLUG_RULE} (got {_show(value)})"]
    if value in RESERVED_SLUGS:
        return [f"slug {value!r} is reserved by the report URLs; choose another"]
    return []


def _is_group_id(value: object) -> bool:
    # bool is an int subclass: `true` is not a group id.
    return type(value) is int and 1 <= value <= MAX_GROUP_ID


def _check_group_ids(value: object) -> list[str]:
    if not isinstance(value, list | tuple) or not value or not all(_is_group_id(g) for g in value):
        return [f"{_GROUP_IDS_RULE} (got {_show(value)})"]
    repeated = sorted({g for g in value if value.count(g) > 1})
    if repeated:
        listed = ", ".join(str(g) for g in repeated)
        return [f"group_ids lists group {listed} more than once"]
    return []


def _entry_label(index: int, entry: Mapping[Any, object]) -> str:
    """`entry 2 (slug 'staff')`: 1-based, as people count, with what identifies it best."""
    slug, name = entry.get("slug"), entry.get("name")
    if isinstance(slug, str) and slug:
        return f"entry {index} (slug {slug!r})"
    if isinstance(name, str) and name:
        return f"entry {index} (name {name!r})"
    return f"entry {index}"


def parse_named_segments(raw: object) -> tuple[NamedSegmentConfig, ...]:
    """Validate `ANALYTICS_NAMED_SEGMENTS` (already JSON-decoded), reporting every problem.

    Accepts a list of mappings (or of `NamedSegmentConfig`, for keyword overrides). Raises
    `SegmentConfigError` with one line per problem, each naming the entry and the key.
    """
    raw = _decode(raw, "a JSON list of segment objects")
    if not isinstance(raw, list | tuple):
        raise SegmentConfigError(
            [
                "must be a JSON list of objects "
                '{"name", "slug", "description" (optional), "group_ids"}'
            ]
        )
    problems: list[str] = []
    configs: list[NamedSegmentConfig] = []
    first_use: dict[str, int] = {}
    for index, item in enumerate(raw, start=1):
        entry = item.model_dump() if isinstance(item, NamedSegmentConfig) else item
        if not isinstance(entry, Mapping):
            problems.append(
                f"entry {index}: must be an object with name, slug, group_ids "
                f"and optional description (got {_show(entry)})"
            )
            continue
        found = _unknown_keys(entry, _NAMED_KEYS)
        found += [f"missing key {key!r}" for key in _NAMED_REQUIRED if key not in entry]
        if "name" in entry:
            found += _check_name(entry["name"])
        if "slug" in entry:
            found += _check_slug(entry["slug"])
        if "description" in entry:
            found += _check_description(entry["description"])
        if "group_ids" in entry:
            found += _check_group_ids(entry["group_ids"])
        slug = entry.get("slug")
        if not found and isinstance(slug, str):
            if slug in first_use:
                found.append(f"slug {slug!r} is already used by entry {first_use[slug]}")
            else:
                first_use[slug] = index
        label = _entry_label(index, entry)
        problems += [f"{label}: {problem}" for problem in found]
        if not found:
            configs.append(
                NamedSegmentConfig(
                    name=entry["name"],
                    slug=entry["slug"],
                    description=entry.get("description", ""),
                    group_ids=tuple(entry["group_ids"]),
                )
            )
    if problems:
        raise SegmentConfigError(problems)
    return tuple(configs)


def parse_default_segment(raw: object) -> DefaultSegmentConfig | None:
    """Validate `ANALYTICS_DEFAULT_SEGMENT` (already JSON-decoded); None means unset.

    Every key is optional; a key that is present must be valid (JSON `null` is refused rather
    than read as "absent", so a half-edited value does not silently fall back to a default).
    """
    raw = _decode(raw, "a JSON object")
    if raw is None or isinstance(raw, DefaultSegmentConfig):
        return raw
    if not isinstance(raw, Mapping):
        raise SegmentConfigError(
            ['must be a JSON object {"name", "slug", "description"}, every key optional']
        )
    problems: list[str] = []
    for key in raw:
        if key == "group_ids":
            problems.append(
                "unknown key 'group_ids': the default segment has no groups, it holds every "
                f"user outside the named segments (set groups in {NAMED_SEGMENTS_VAR})"
            )
        else:
            problems += _unknown_keys([key], _DEFAULT_KEYS)
    if "name" in raw:
        problems += _check_name(raw["name"])
    if "slug" in raw:
        problems += _check_slug(raw["slug"])
    if "description" in raw:
        problems += _check_description(raw["description"])
    if problems:
        raise SegmentConfigError(problems)
    return DefaultSegmentConfig(
        name=raw.get("name"), slug=raw.get("slug"), description=raw.get("description")
    )


def check_unique_default_slug(
    named: Sequence[NamedSegmentConfig], config: DefaultSegmentConfig | None
) -> None:
    """Refuse a resolved default slug that a named segment also uses (the URL would be ambiguous).

    Checked against the *resolved* slug, so `rest` or `all` chosen by the defaulting rule count.
    """
    default = resolve_default(config, has_named_segments=bool(named))
    for index, segment in enumerate(named, start=1):
        if segment.slug != default.slug:
            continue
        if config is not None and config.slug is not None:
            what = f"slug {default.slug!r}"
        elif default.slug == REST_SLUG:
            what = (
                f"the default segment's slug is {default.slug!r} (Askbot's rule when named "
                "segments exist and this setting is unset or empty), which"
            )
        else:
            what = f"the default segment's slug is {default.slug!r} (no slug is set here), which"
        raise SegmentConfigError(
            [
                f"{what} is also the slug of {NAMED_SEGMENTS_VAR} entry {index}; slugs must be "
                "unique: set another slug here or rename that entry"
            ]
        )


# ---------------------------------------------------------------------------------------------
# Resolution


def resolve_default(config: DefaultSegmentConfig | None, *, has_named_segments: bool) -> Segment:
    """The default segment, by Askbot's rule (askbot-reference.md §5).

    Named segments and an empty or absent configuration → `rest`, "Rest of Users" (the default
    segment is then really the rest); otherwise missing keys come from `all`, "All Users"
    (with no named segments, the default segment is everyone). Description defaults to ''.
    """
    config = config or DefaultSegmentConfig()
    if has_named_segments and config.is_empty:
        slug, name = REST_SLUG, REST_NAME
    else:
        slug = config.slug if config.slug is not None else ALL_USERS_SLUG
        name = config.name if config.name is not None else ALL_USERS_NAME
    description = config.description if config.description is not None else ""
    return Segment(slug, name, description, frozenset(), is_default=True)


def resolve_segments(settings: Settings) -> Segments:
    """The segments, a pure function of `named_segments` and `default_segment` (both validated)."""
    named = tuple(
        Segment(c.slug, c.name, c.description, frozenset(c.group_ids), is_default=False)
        for c in settings.named_segments
    )
    default = resolve_default(settings.default_segment, has_named_segments=bool(named))
    return Segments(named, default)


@lru_cache(maxsize=1)
def get_segments() -> Segments:
    """The process-wide segments, resolved once from `get_settings()`."""
    # Imported here: settings imports this module for the config models.
    from forum_analytics.settings import get_settings

    return resolve_segments(get_settings())
