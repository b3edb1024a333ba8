"""One visit to the forum: what a user does, step by step, and how long they think between.

A visit is a generator that alternates `Think(ms)` and `Step(...)`. The engine resumes it only
when the think time has passed, so a step's effect on the board (a new question, an answer, a
vote) happens at the step's own time, and another visitor cannot read a question before it was
asked.

Proportions (per step, when the step applies; otherwise it is a plain request): question views
34, other requests (`activity`) 20, answer views 16, upvotes 5.5, answers 2.2, downvotes 1.3,
answer comments 1.3, question comments 1.1, questions 0.9, vote cancels 0.7, retags 0.25
(staff retag four times as often).
A visit starts with `user_registered` (a registration) or, one time in five, `logged_in`, and
ends after about twelve steps, with `logged_out` one time in eight. So views ≫ votes >
answers > questions, as on a real Q&A site.

Think times: mostly a few seconds to a few minutes (log-normal, median 35 s); 5% around the
inactivity timeout (exactly it, one second over it, or within five minutes of it) and 2%
longer breaks within the same visit, so sessions split and continue on both sides of the rule.
"""

from __future__ import annotations

import math
import random
from collections.abc import Generator
from dataclasses import dataclass

from forum.content import Board, Thread
from streams.events import EventType, ObjectType

__all__ = ["Step", "Think", "VisitSteps", "think_ms", "visit"]

MINUTE_MS = 60_000
_END_CHANCE = 0.085
_MAX_STEPS = 80
_ACTIONS: tuple[tuple[EventType, float], ...] = (
    (EventType.QUESTION_VIEWED, 34),
    (EventType.ACTIVITY, 20),
    (EventType.ANSWER_VIEWED, 16),
    (EventType.UPVOTED, 5.5),
    (EventType.ANSWER_POSTED, 2.2),
    (EventType.DOWNVOTED, 1.3),
    (EventType.ANSWER_COMMENTED, 1.3),
    (EventType.QUESTION_COMMENTED, 1.1),
    (EventType.QUESTION_ASKED, 0.9),
    (EventType.VOTE_CANCELED, 0.7),
    (EventType.QUESTION_RETAGGED, 0.25),
)
_KINDS = [kind for kind, _ in _ACTIONS]
_WEIGHTS = [weight for _, weight in _ACTIONS]
_STAFF_WEIGHTS = [w * 4 if k is EventType.QUESTION_RETAGGED else w for k, w in _ACTIONS]


@dataclass(frozen=True, slots=True)
class Think:
    """Wait this long before the next step."""

    ms: int


@dataclass(frozen=True, slots=True)
class Step:
    """One request that produces an event, with what it is about."""

    type: EventType
    object_type: ObjectType | None = None
    object_id: int | None = None
    thread_id: int | None = None
    post_id: int | None = None


VisitSteps = Generator[Think | Step, None, None]


def think_ms(rng: random.Random, timeout_ms: int) -> int:
    """A pause between two requests of a visit (see the module docstring)."""
    r = rng.random()
    if r < 0.01:
        return timeout_ms  # exactly the timeout: the session goes on
    if r < 0.02:
        return timeout_ms + 1000  # just over it: a new session
    if r < 0.05:
        return max(1000, rng.randint(timeout_ms - 5 * MINUTE_MS, timeout_ms + 5 * MINUTE_MS))
    if r < 0.07:
        return rng.randint(timeout_ms + 5 * MINUTE_MS, 3 * timeout_ms + 5 * MINUTE_MS)
    pause = rng.lognormvariate(math.log(35_000), 0.9)
    return max(1000, min(int(pause), 15 * MINUTE_MS))


def visit(
    rng: random.Random,
    user_id: int,
    board: Board,
    timeout_ms: int,
    *,
    registering: bool = False,
    staff: bool = False,
) -> VisitSteps:
    """The steps of one visit (see the module docstring)."""
    me = _Visitor(rng, user_id, board, staff)
    if registering:
        yield me.about_me(EventType.USER_REGISTERED)
    elif rng.random() < 0.2:
        yield me.about_me(EventType.LOGGED_IN)
    else:
        yield me.act()
    for _ in range(_MAX_STEPS):
        if rng.random() < _END_CHANCE:
            break
        yield Think(think_ms(rng, timeout_ms))
        yield me.act()
    if rng.random() < 0.125:
        yield Think(think_ms(rng, timeout_ms))
        yield me.about_me(EventType.LOGGED_OUT)


class _Visitor:
    """The visitor's state during a visit: the thread they are reading."""

    def __init__(self, rng: random.Random, user_id: int, board: Board, staff: bool) -> None:
        self.rng = rng
        self.user = user_id
        self.board = board
        self.weights = _STAFF_WEIGHTS if staff else _WEIGHTS
        self.thread: Thread | None = None

    def about_me(self, kind: EventType) -> Step:
        return Step(kind, ObjectType.USER, self.user)

    def act(self) -> Step:
        """The next request; an action that does not apply now is a plain request."""
        kind = self.rng.choices(_KINDS, self.weights)[0]
        step = self._try(kind)
        return step if step is not None else Step(EventType.ACTIVITY)

    def _try(self, kind: EventType) -> Step | None:
        if kind is EventType.ACTIVITY:
            return Step(kind)
        if kind is EventType.QUESTION_VIEWED:
            self.thread = self.board.pick(self.rng)
            return None if self.thread is None else self._on(kind, self.thread.question)
        if kind is EventType.QUESTION_ASKED:
            self.thread = self.board.ask(self.rng, self.user)
            return self._on(kind, self.thread.question)
        if kind is EventType.VOTE_CANCELED:
            return self._cancel()
        thread = self.thread
        if thread is None:
            return None
        if kind is EventType.QUESTION_RETAGGED:
            return Step(
                kind, ObjectType.THREAD, thread.thread_id, thread.thread_id, thread.question
            )
        return self._in_thread(kind, thread)

    def _in_thread(self, kind: EventType, thread: Thread) -> Step | None:
        rng = self.rng
        if kind is EventType.ANSWER_VIEWED:
            return self._on(kind, rng.choice(thread.answers)) if thread.answers else None
        if kind is EventType.ANSWER_POSTED:
            return self._on(kind, self.board.answer(thread, self.user))
        if kind is EventType.QUESTION_COMMENTED:
            return self._on(kind, self.board.comment(thread, self.user))
        if kind is EventType.ANSWER_COMMENTED:
            return self._on(kind, self.board.comment(thread, self.user)) if thread.answers else None
        return self._vote(kind, thread)

    def _vote(self, kind: EventType, thread: Thread) -> Step | None:
        """A vote on someone else's post the user has not voted on (a click on a post the user
        already voted on cancels instead, as in Askbot's web UI)."""
        post = self.rng.choice(thread.posts())
        mine = self.board.votes.setdefault(self.user, {})
        if self.board.authors.get(post) == self.user or post in mine:
            return None
        mine[post] = 1 if kind is EventType.UPVOTED else -1
        return self._on(kind, post)

    def _cancel(self) -> Step | None:
        """The user takes back one of their votes (they went back to that thread)."""
        mine = self.board.votes.get(self.user)
        if not mine:
            return None
        post = self.rng.choice(sorted(mine))
        del mine[post]
        self.thread = self.board.threads[post]
        return self._on(EventType.VOTE_CANCELED, post)

    def _on(self, kind: EventType, post: int) -> Step:
        assert self.thread is not None
        return Step(kind, ObjectType.POST, post, self.thread.thread_id, post)
