"""URL segments of the report views: parsing and validation, kept free of FastAPI.

Each parser raises `BadSegment` with a message that names the accepted forms, which the
routes turn into a 404 (an unknown path is "not found", as Askbot's URLs are).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from clickhouse.segment_figures import ALL_USERS
from forum_analytics.segments import Segment, Segments

ACTIVITY_TYPES: dict[str, tuple[str, ...]] = {
    "all-activity": (
        "user_registered",
        "logged_in",
        "logged_out",
        "question_viewed",
        "answer_viewed",
        "upvoted",
        "downvoted",
        "vote_canceled",
        "question_asked",
        "answer_posted",
        "question_commented",
        "answer_commented",
        "question_retagged",
    ),
    "registered": ("user_registered",),
    "logged-in": ("logged_in",),
    "logged-out": ("logged_out",),
    "question-viewed": ("question_viewed",),
    "answer-viewed": ("answer_viewed",),
    "content-voted": ("upvoted", "downvoted", "vote_canceled"),
    "content-upvoted": ("upvoted",),
    "content-downvoted": ("downvoted",),
    "question-posted": ("question_asked",),
    "answer-posted": ("answer_posted",),
    "question-commented": ("question_commented",),
    "answer-commented": ("answer_commented",),
    "content-commented": ("question_commented", "answer_commented"),
    "question-retagged": ("question_retagged",),
    "any-content-posted": (
        "question_asked",
        "answer_posted",
        "question_commented",
        "answer_commented",
    ),
}


class BadSegment(ValueError):
    """A URL segment that is not one of the accepted forms."""


@dataclass(frozen=True)
class ContentFilter:
    """`all-content`, `thread:<id>` or `post:<id>`."""

    kind: str  # "all", "thread" or "post"
    id: int | None = None


@dataclass(frozen=True)
class UsersFilter:
    """Whose events or figures a view shows: `all-users`, a segment (named or the default),
    `group:<id>` or `user:<id>`."""

    kind: str  # "all", "segment", "group" or "user"
    id: int | None = None
    segment: Segment | None = None
    group_ids: frozenset[int] = frozenset()
    """The groups that decide membership: the segment's or the group itself; for the default
    segment, the named segments' groups, whose members it leaves out."""

    @property
    def excludes(self) -> bool:
        """True for the default segment: its users are those in none of `group_ids`."""
        return self.segment is not None and self.segment.is_default


_ID_FORM = re.compile(r"^(thread|post|user|group):([1-9][0-9]{0,18})$")


def parse_activity(value: str) -> tuple[str, ...]:
    """The event types an activity slug selects."""
    if value not in ACTIVITY_TYPES:
        raise BadSegment(f"unknown activity {value!r}; accepted: {', '.join(ACTIVITY_TYPES)}")
    return ACTIVITY_TYPES[value]


def parse_content(value: str) -> ContentFilter:
    if value == "all-content":
        return ContentFilter("all")
    match = _ID_FORM.match(value)
    if match and match.group(1) in ("thread", "post"):
        return ContentFilter(match.group(1), int(match.group(2)))
    raise BadSegment(f"unknown content {value!r}; accepted: all-content, thread:<id>, post:<id>")


def parse_users(value: str, segments: Segments) -> UsersFilter:
    """`all-users`, a segment's slug, `group:<id>` or `user:<id>`; the error lists the slugs
    configured (ANALYTICS_NAMED_SEGMENTS, ANALYTICS_DEFAULT_SEGMENT)."""
    if value == ALL_USERS:
        return UsersFilter("all")
    segment = segments.by_slug(value)
    if segment is not None:
        groups = segments.named_group_ids if segment.is_default else segment.group_ids
        return UsersFilter("segment", segment=segment, group_ids=groups)
    match = _ID_FORM.match(value)
    if match and match.group(1) == "user":
        return UsersFilter("user", int(match.group(2)))
    if match and match.group(1) == "group":
        return UsersFilter("group", int(match.group(2)), group_ids=frozenset({int(match.group(2))}))
    slugs = ", ".join(segments.all_slugs())
    raise BadSegment(
        f"unknown users {value!r}; accepted: {ALL_USERS}, a segment ({slugs}), group:<id>, "
        "user:<id>"
    )
