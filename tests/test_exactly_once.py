"""Exactly once under chaos, on the real broker and ClickHouse (issue 3's acceptance).

Each run streams 50,000 events of 500 users over three days through worker processes, then
checks the streamed `sessions`, `hourly_user_summary` and `daily_user_summary` against
`verify`'s batch recomputation from `events` (0 differences) and the hourly event total against
the workload's own count of distinct events. The runs: (a) plain; (b) the worker killed with
SIGKILL five times at random moments and restarted; (c) a second worker joining and the first
leaving mid-stream; (d) ClickHouse stopped for 30 s mid-stream; (e) 5% of events sent twice;
(f) 2% of events sent hours after their hour was final, some beyond the state's retention
(read back from ClickHouse).

The workload ends before yesterday; a last event per partition at the current time moves every
watermark past it, so every hour of the workload is final when it is checked.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from clickhouse.client import connect
from clickhouse.process import EmbeddedClickHouse
from clickhouse.verify import verify
from clickhouse.verify_segments import verify_segments
from forum_analytics.processes import stop
from forum_analytics.segments import Segment, Segments
from forum_analytics.settings import load_settings
from streams.broker import EmbeddedBroker
from streams.events import Event, EventType, GroupRecord, Role, UserRecord
from streams.partitioning import partition_for_user
from tests.helpers import wait_until
from tests.pipeline import PARTITIONS, Pipeline, start_pipeline
from tests.workload import DAY, Workload, build

pytestmark = pytest.mark.timeout(600)

CHUNKS = 12


def _workload(seed: int, *, duplicates: float = 0.0, late: float = 0.0) -> Workload:
    now = int(time.time() * 1000)
    return build(seed=seed, end_ms=now - DAY, duplicates=duplicates, late=late)


def _chunks(events: list[Event], n: int = CHUNKS) -> list[list[Event]]:
    size = -(-len(events) // n)
    return [events[i : i + size] for i in range(0, len(events), size)]


def _close_the_hours(pipe: Pipeline) -> None:
    """One event now on every partition: every watermark passes the workload's last hour."""
    now = int(time.time() * 1000)
    events = []
    for partition in range(PARTITIONS):
        user = next(
            u for u in range(9_000_000, 9_001_000) if partition_for_user(u, PARTITIONS) == partition
        )
        events.append(Event(f"now-{uuid.uuid4().hex}", EventType.ACTIVITY, now, user))
    pipe.send(events)


def _settled(pipe: Pipeline, workload: Workload) -> bool:
    client = connect(pipe.db_url)
    total = client.query(
        "SELECT sum(num_events) FROM hourly_user_summary WHERE day BETWEEN {a:Date} AND {b:Date}",
        parameters={"a": workload.first_day, "b": workload.last_day},
    ).result_rows[0][0]
    if total != workload.unique:
        return False
    settings = load_settings(clickhouse_url=pipe.db_url)
    return verify(client, settings, workload.first_day, workload.last_day, limit=5).ok


def _check(pipe: Pipeline, workload: Workload) -> None:
    """Wait for the streamed figures to settle, then run `verify` as an operator would."""
    _close_the_hours(pipe)
    try:
        wait_until(lambda: _settled(pipe, workload), timeout=240, interval=3, what="exact figures")
    except AssertionError:
        report = verify(
            connect(pipe.db_url),
            load_settings(clickhouse_url=pipe.db_url),
            workload.first_day,
            workload.last_day,
            limit=10,
        )
        raise AssertionError(f"{report}\n--- worker log tail ---\n{pipe.log()[-4000:]}") from None
    args = ["verify", "--from", str(workload.first_day), "--to", str(workload.last_day)]
    result = subprocess.run(
        [sys.executable, "-m", "forum_analytics", *args],
        env=_env(pipe),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    sessions = connect(pipe.db_url).query("SELECT sum(sign) FROM sessions").result_rows[0][0]
    assert sessions > 1000  # the workload has thousands of sessions; all of them were written


def _env(pipe: Pipeline) -> dict[str, str]:
    return dict(os.environ, **pipe.env)


def _stop_all(pipe: Pipeline) -> None:
    codes = [stop(w, timeout=20) for w in pipe.workers]
    assert codes[-1] == 0, pipe.log()[-3000:]


@pytest.fixture
def run(kafka_broker: EmbeddedBroker, clickhouse_server: Any, tmp_path: Path) -> Any:
    pipes: list[Pipeline] = []

    def start(port: int | None = None, **env: str) -> Pipeline:
        pipe = start_pipeline(kafka_broker, port or clickhouse_server.port, tmp_path, **env)
        pipes.append(pipe)
        return pipe

    yield start
    for pipe in pipes:
        for worker in pipe.workers:
            stop(worker, timeout=20)


def _stream(pipe: Pipeline, workload: Workload) -> None:
    """Send the workload in chunks, check every figure, stop the workers cleanly."""
    for chunk in _chunks(workload.events):
        pipe.send(chunk)
    _check(pipe, workload)
    _stop_all(pipe)


def test_a_plain_stream(run: Any) -> None:
    _stream(run(), _workload(1))


GROUPS = [GroupRecord(g, f"group {g}", g != 5) for g in range(1, 6)]
MEMBERSHIP_ROUNDS = {0: 0, 4: 1, 8: 2}
"""Chunk index → membership round published before that chunk."""


def _memberships(workload: Workload, seed: int) -> list[list[UserRecord]]:
    """Three rounds of user records: a first load, then two rounds of joins and leaves dated
    inside the workload, so they correct figures already written."""
    rng = random.Random(seed)
    first = datetime.combine(workload.first_day, datetime.min.time(), UTC)
    days = (workload.last_day - workload.first_day).days + 1

    def some_time() -> datetime:
        return first + timedelta(days=rng.random() * days)

    rounds = []
    for round_ in range(3):
        records = []
        for user in sorted({e.user_id for e in workload.events}):
            if round_ and rng.random() < 0.7:
                continue  # most users do not change
            groups = tuple(sorted(rng.sample(range(1, 6), rng.choice([0, 1, 1, 2]))))
            since: tuple[tuple[int, datetime], ...] = ()
            if groups and rng.random() < 0.3:
                since = ((groups[0], some_time()),)
            records.append(
                UserRecord(
                    user,
                    f"u{user}",
                    f"u{user}@example.org",
                    first - timedelta(days=30),
                    True,
                    Role.USER,
                    groups,
                    since,
                    updated_at=some_time() if round_ else None,
                )  # fmt: skip
            )
        rounds.append(records)
    return rounds


def test_b_worker_killed_five_times(run: Any) -> None:
    """Membership changes mid-stream too: group figures stay exact through the kills."""
    workload = _workload(2, duplicates=0.01, late=0.01)
    rounds = _memberships(workload, 2)
    rng = random.Random(2)
    pipe = run()
    pipe.publish(groups=GROUPS)
    kills = set(rng.sample(range(CHUNKS - 1), 5))
    for i, chunk in enumerate(_chunks(workload.events)):
        if i in MEMBERSHIP_ROUNDS:
            pipe.publish(rounds[MEMBERSHIP_ROUNDS[i]])
        pipe.send(chunk)
        if i in kills:
            time.sleep(rng.uniform(0.0, 3.0))  # mid-batch, mid-step or mid-recovery
            pipe.worker.kill()
            pipe.worker.wait()
            pipe.worker = pipe.start_worker()
    _check(pipe, workload)
    _stop_all(pipe)
    assert pipe.log().count("Starting...") >= 6
    _check_groups(pipe, workload)


def _check_groups(pipe: Pipeline, workload: Workload) -> None:
    """The run had real group figures (verify compared them): members, moves and rows; and
    two overlapping segments' totals agree with their recomputation from the group rows."""
    assert pipe.count("SELECT count() FROM group_members FINAL") > 300
    assert pipe.count("SELECT count() FROM group_members FINAL WHERE until IS NOT NULL") > 20
    assert pipe.count("SELECT sum(num_events) FROM group_member_hours") > 10_000
    segments = Segments(
        (
            Segment("one-two", "1 and 2", "", frozenset({1, 2}), False),
            Segment("two-three", "2 and 3", "", frozenset({2, 3}), False),
        ),
        Segment("rest", "Rest of Users", "", frozenset(), True),
    )
    client = connect(pipe.db_url)
    for first, last in ((workload.first_day, workload.last_day), (workload.last_day,) * 2):
        assert verify_segments(client, segments, first, last, ZoneInfo("UTC")) == []


def test_c_workers_join_and_leave(run: Any) -> None:
    workload = _workload(3, duplicates=0.01, late=0.01)
    rounds = _memberships(workload, 3)
    pipe = run()
    pipe.publish(groups=GROUPS)
    first = pipe.worker
    chunks = _chunks(workload.events)
    for i, chunk in enumerate(chunks):
        if i in MEMBERSHIP_ROUNDS:
            pipe.publish(rounds[MEMBERSHIP_ROUNDS[i]])
        pipe.send(chunk)
        if i == len(chunks) // 3:
            wait_until(
                lambda: pipe.count("SELECT count() FROM events") > 0,
                timeout=60,
                what="the first worker at work",
            )
            pipe.worker = pipe.start_worker()  # a second worker: partitions rebalance
        if i == 2 * len(chunks) // 3:
            wait_until(
                lambda: pipe.log().count("partitions assigned") >= 3,
                timeout=90,
                what="the second worker's partitions",
            )
            assert stop(first, timeout=30) == 0  # the first leaves: they move again
    _check(pipe, workload)
    _stop_all(pipe)
    assert pipe.log().count("partitions assigned") >= 4
    _check_groups(pipe, workload)


def test_d_clickhouse_down_for_30_seconds(run: Any, tmp_path: Path) -> None:
    workload = _workload(4, duplicates=0.01, late=0.01)
    server = EmbeddedClickHouse(tmp_path / "ch-d").start()
    try:
        pipe = run(port=server.port)
        chunks = _chunks(workload.events)
        half = len(chunks) // 2
        for chunk in chunks[:half]:
            pipe.send(chunk)
        server.stop()
        down_since = time.monotonic()
        for chunk in chunks[half:]:
            pipe.send(chunk)  # the broker takes them; the worker waits for ClickHouse
        time.sleep(max(0.0, 30 - (time.monotonic() - down_since)))
        server.start()
        _check(pipe, workload)
        assert "ClickHouse unavailable" in pipe.log()
        _stop_all(pipe)
    finally:
        server.stop()


def test_e_five_percent_duplicates(run: Any) -> None:
    workload = _workload(5, duplicates=0.05)
    assert len(workload.events) >= 52_000
    _stream(run(), workload)


def test_f_two_percent_late_some_beyond_retention(run: Any) -> None:
    workload = _workload(6, late=0.02)
    pipe = run(ANALYTICS_STATE_RETENTION_HOURS="1")
    _stream(pipe, workload)
    counts = re.search(r"(\d+) late and (\d+) beyond-retention events", pipe.log())
    assert counts, pipe.log()[-2000:]
    late, beyond = map(int, counts.groups())
    assert late >= 100 and beyond >= 50  # corrections, some of them read back from ClickHouse
