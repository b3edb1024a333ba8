"""URL segments of the report views: parsing and validation, kept free of FastAPI.

Each parser raises `BadSegment` with a message that names the accepted forms, which the
routes turn into a 404 (an unknown path is "not found", as Askbot's URLs are).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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
    """`all-users` or `user:<id>` (segments and groups come with the Users view)."""

    kind: str  # "all" or "user"
    id: int | None = None


_ID_FORM = re.compile(r"^(thread|post|user):([1-9][0-9]{0,18})$")


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


def parse_users(value: str) -> UsersFilter:
    if value == "all-users":
        return UsersFilter("all")
    match = _ID_FORM.match(value)
    if match and match.group(1) == "user":
        return UsersFilter("user", int(match.group(2)))
    raise BadSegment(f"unknown users {value!r}; accepted: all-users, user:<id>")
