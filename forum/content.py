"""The forum's questions, answers, comments and votes, so that events point at content that
exists (`thread:`/`post:` filters have meaning) and votes and cancels are consistent.

Popularity: threads are kept in a "hot list"; a thread at position p is picked with weight
1/(p+1)^1.1 (a Zipf law: a few popular threads, a long tail), and a new question enters near
the top, pushing older ones down, so recent questions draw the views.

Ids follow Askbot: threads and posts have their own sequences; a thread's question is a post,
its answers and comments are posts too.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import accumulate

__all__ = ["Board", "Thread"]

_ZIPF = 1.1


@dataclass
class Thread:
    """A question and what was posted under it."""

    thread_id: int
    question: int
    author: int
    answers: list[int] = field(default_factory=list)
    comments: list[int] = field(default_factory=list)

    def posts(self) -> list[int]:
        """Every post of the thread: question, answers, comments."""
        return [self.question, *self.answers, *self.comments]


class Board:
    """All content and every user's current votes."""

    def __init__(self) -> None:
        self.hot: list[Thread] = []
        self.authors: dict[int, int] = {}  # post id -> author
        self.threads: dict[int, Thread] = {}  # post id -> its thread
        self.votes: dict[int, dict[int, int]] = {}  # user -> {post: +1 or -1}
        self._next_thread = 1
        self._next_post = 1
        self._cumulative: list[float] = []

    def seed(self, rng: random.Random, threads: int, authors: Sequence[int]) -> None:
        """Content written before the simulated period (no events: it is history)."""
        if not authors:
            return
        for _ in range(threads):
            thread = self.ask(rng, rng.choice(authors), hot=False)
            for _ in range(rng.choice((0, 1, 1, 2, 2, 3, 5))):
                self.answer(thread, rng.choice(authors))
            for _ in range(rng.choice((0, 0, 1, 2))):
                self.comment(thread, rng.choice(authors))

    def pick(self, rng: random.Random) -> Thread | None:
        """A thread to read, popular ones more often."""
        n = len(self.hot)
        if n == 0:
            return None
        if len(self._cumulative) < n:
            weights = ((p + 1) ** -_ZIPF for p in range(2 * n))
            self._cumulative = list(accumulate(weights))
        return self.hot[bisect_right(self._cumulative, rng.random() * self._cumulative[n - 1])]

    def ask(self, rng: random.Random, author: int, *, hot: bool = True) -> Thread:
        """A new question; it enters the hot list near the top (at the end when `hot` is
        False: old content, in creation order)."""
        thread = Thread(self._next_thread, self._next_post, author)
        self._new_post(thread, author)
        self._next_thread += 1
        position = rng.randrange(min(len(self.hot), 8) + 1) if hot else len(self.hot)
        self.hot.insert(position, thread)
        return thread

    def answer(self, thread: Thread, author: int) -> int:
        post = self._new_post(thread, author)
        thread.answers.append(post)
        return post

    def comment(self, thread: Thread, author: int) -> int:
        post = self._new_post(thread, author)
        thread.comments.append(post)
        return post

    def _new_post(self, thread: Thread, author: int) -> int:
        post = self._next_post
        self._next_post += 1
        self.authors[post] = author
        self.threads[post] = thread
        return post
