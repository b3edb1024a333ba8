"""`forum-analytics simulate`: a realistic forum's users, groups and activity, sent to Kafka.

The forum itself is in `forum/` (who, what, when); this module reads the settings, runs the
chosen modes in order (history first, then live traffic from where history ended), shows
progress, and writes the expected figures (`--truth`) from exactly the events it sent.

Time: a backfill ends at `--end` (default: now) and starts DAYS before. Its events are the same
for the same seed, users and end: pass `--end` for a reproducible forum. Users, groups and
memberships are published before any event.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import typer

from forum.engine import Engine, Outbox
from forum.history import DAY_MS, Backfill, SimulationOptions, new_board
from forum.live import LiveForum
from forum.model import Forum
from forum.population import build_forum
from forum.sending import LiveResult, send_events, send_forum, send_live
from forum.truth import compute_truth
from forum_analytics.kafka_publishing import ensure_product_topics, kafka_errors
from forum_analytics.segments import resolve_segments
from forum_analytics.settings import Settings
from streams.events import Event, ms_to_datetime, now_ms
from streams.producer import EventProducer

__all__ = ["SimulateError", "SimulateRequest", "SimulationSummary", "simulate"]


class SimulateError(Exception):
    """The simulation cannot go on (Kafka unreachable, a bad option); one line for the user."""


@dataclass(frozen=True)
class SimulateRequest:
    """The command's options, checked by the CLI."""

    seed: int = 1
    users: int = 500
    backfill_days: int | None = None
    end_ms: int | None = None
    live: bool = False
    rate: float = 20.0
    duration: float | None = None
    late: float = 0.01
    duplicates: float = 0.005
    truth: Path | None = None
    silent: bool = False


@dataclass
class SimulationSummary:
    """What was sent, for the closing lines."""

    records: int = 0
    groups: int = 0
    history_events: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    held_back: int = 0
    resent: int = 0
    live: LiveResult | None = None
    rate: float = 0.0
    truth: Path | None = None
    sent: list[Event] = field(default_factory=list)

    def lines(self, settings: Settings) -> list[str]:
        out = [
            f"published {self.groups} groups and {self.records - self.groups} user records "
            f"to {settings.topic_groups}/{settings.topic_users}"
        ]
        if self.first_ms is not None and self.last_ms is not None:
            first, last = ms_to_datetime(self.first_ms), ms_to_datetime(self.last_ms)
            out.append(
                f"history: {self.history_events:,} events from {first:%Y-%m-%d %H:%M} to "
                f"{last:%Y-%m-%d %H:%M} UTC ({self.held_back:,} held back as late, "
                f"{self.resent:,} sent twice)"
            )
        if self.live is not None:
            out.append(
                f"live: {self.live.events:,} events in {self.live.seconds:.1f} s: "
                f"{self.live.rate:,.1f} events/s (target {self.rate:g}/s)"
            )
        if self.truth is not None:
            out.append(f"expected figures written to {self.truth}")
        return out


def simulate(settings: Settings, request: SimulateRequest) -> SimulationSummary:
    """Run the request; `SimulateError` with a one-line reason if it cannot."""
    with kafka_errors(settings, SimulateError, retry=_retry_hint(request)):
        ensure_product_topics(settings)
        return asyncio.run(_simulate(settings, request))


def _retry_hint(request: SimulateRequest) -> str:
    if request.end_ms is not None and not request.live:
        return "Re-run the same command once Kafka is back: resent events count once"
    return "Run it again once Kafka is back"


async def _simulate(settings: Settings, request: SimulateRequest) -> SimulationSummary:
    timeout_ms = settings.session_timeout_minutes * 60_000
    options = SimulationOptions(request.seed, timeout_ms, request.late, request.duplicates)
    end = request.end_ms if request.end_ms is not None else now_ms()
    start = end - (request.backfill_days or 0) * DAY_MS
    forum = build_forum(request.seed, request.users, start, end)
    summary = SimulationSummary(rate=request.rate)
    sink = _sink(summary, keep=request.truth is not None)
    async with EventProducer(
        settings.kafka_bootstrap,
        events_topic=settings.topic_events,
        users_topic=settings.topic_users,
        groups_topic=settings.topic_groups,
    ) as producer:
        summary.records = await send_forum(producer, forum)
        summary.groups = len(forum.groups)
        engine = await _history(producer, forum, options, request, start, end, summary, sink)
        if request.live:
            forum = await _live(producer, forum, engine, request, summary, sink)
    if request.truth is not None:
        _write_truth(request.truth, summary, forum, settings, start)
        summary.truth = request.truth
    return summary


def _sink(summary: SimulationSummary, *, keep: bool) -> Callable[[list[Event]], None]:
    """Where sent events go: kept for the truth when one is asked for, else nowhere."""
    return summary.sent.extend if keep else _ignore


def _ignore(_events: list[Event]) -> None:
    pass


async def _history(
    producer: EventProducer,
    forum: Forum,
    options: SimulationOptions,
    request: SimulateRequest,
    start: int,
    end: int,
    summary: SimulationSummary,
    sink: Callable[[list[Event]], None],
) -> Engine:
    """Send the backfill (if asked for); the engine, to go on live from where it stopped."""
    if not request.backfill_days:
        rng = random.Random(f"{request.seed}/visits")
        prefix = f"sim{request.seed}-live{end // 1000:x}"
        return Engine(rng, new_board(rng, forum, start), options.timeout_ms, prefix)
    backfill = Backfill(forum, options, start, end)
    with _DayBar(backfill.days, request.silent) as bar:

        def seen(events: list[Event]) -> None:
            sink(events)
            first, last = min(e.ts_ms for e in events), max(e.ts_ms for e in events)
            summary.first_ms = min(summary.first_ms or first, first)
            summary.last_ms = max(summary.last_ms or last, last)

        summary.history_events = await send_events(producer, backfill.events(bar.day), seen)
    summary.held_back, summary.resent = backfill.outbox.held_back, backfill.outbox.resent
    return backfill.engine


async def _live(
    producer: EventProducer,
    forum: Forum,
    engine: Engine,
    request: SimulateRequest,
    summary: SimulationSummary,
    sink: Callable[[list[Event]], None],
) -> Forum:
    """Live traffic until --duration or SIGINT/SIGTERM; the forum with its newcomers."""
    rng = random.Random(f"{request.seed}/live")
    live = LiveForum(engine, forum, request.rate, rng)
    outbox = Outbox(random.Random(f"{request.seed}/live-outbox"), request.late, request.duplicates)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    status = _LiveStatus(request.silent)

    def sent(events: list[Event]) -> None:
        sink(events)
        status.add(len(events))

    try:
        summary.live = await send_live(
            producer,
            live,
            outbox,
            request.rate,
            duration=request.duration,
            stop=stop,
            sink=sent,
        )
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        status.close()
    summary.held_back += outbox.held_back
    summary.resent += outbox.resent
    return live.forum


def _write_truth(
    path: Path, summary: SimulationSummary, forum: Forum, settings: Settings, start: int
) -> None:
    zone = ZoneInfo(settings.time_zone)
    last = max((e.ts_ms for e in summary.sent), default=start)
    truth = compute_truth(
        summary.sent,
        forum,
        resolve_segments(settings),
        zone=zone,
        timeout_minutes=settings.session_timeout_minutes,
        first_day=_local_day(min(start, last), zone),
        last_day=_local_day(last, zone),
    )
    try:
        path.write_bytes(truth.to_json())
    except OSError as exc:
        raise SimulateError(f"cannot write {path}: {exc.strerror or exc}") from None


def _local_day(ms: int, zone: ZoneInfo) -> date:
    return datetime.fromtimestamp(ms / 1000, zone).date()


class _DayBar:
    """The backfill's progress, a day at a time, on stderr (nothing when silent)."""

    def __init__(self, days: int, silent: bool) -> None:
        self._bar = (
            None
            if silent
            else typer.progressbar(length=days, label="backfill (days)", file=sys.stderr)
        )

    def __enter__(self) -> _DayBar:
        if self._bar is not None:
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)

    def day(self) -> None:
        if self._bar is not None:
            self._bar.update(1)


class _LiveStatus:
    """A status line on stderr, redrawn once a second: events sent and the rate."""

    def __init__(self, silent: bool) -> None:
        self.silent = silent
        self.sent = 0
        self._started = now_ms()
        self._drawn = self._started

    def add(self, n: int) -> None:
        self.sent += n
        now = now_ms()
        if self.silent or now - self._drawn < 1000:
            return
        self._drawn = now
        seconds = (now - self._started) / 1000
        print(
            f"\rlive: {self.sent:,} events in {seconds:,.0f} s ({self.sent / seconds:,.1f}/s)",
            end="",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        if not self.silent and self.sent:
            print(file=sys.stderr)
