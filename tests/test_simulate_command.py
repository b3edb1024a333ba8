"""`forum-analytics simulate` end to end: a backfill through the real broker, worker and
ClickHouse equals its own expected figures (`--truth`) and passes `verify`; live traffic holds
its rate; bad options are refused with a message."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from clickhouse.client import connect
from forum.catalogue import segment_settings
from forum.population import build_forum
from forum.truth import Truth
from forum_analytics.ports import free_port
from forum_analytics.processes import stop
from forum_analytics.segments import resolve_segments
from forum_analytics.settings import load_settings
from streams.broker import EmbeddedBroker
from streams.events import Event, EventType
from streams.partitioning import partition_for_user
from tests.helpers import wait_until
from tests.pipeline import PARTITIONS, Pipeline, start_pipeline
from tests.truth_check import truth_differences

ZONE = "Asia/Kolkata"  # hours start at :30 UTC: the worker and the truth must agree on that
OUTSIDERS = 10**6  # the test's own helper users (watermark pushers) start here


@pytest.fixture
def pipe(
    kafka_broker: EmbeddedBroker, clickhouse_server: Any, tmp_path: Path
) -> Iterator[Pipeline]:
    pipeline = start_pipeline(
        kafka_broker,
        clickhouse_server.port,
        tmp_path,
        ANALYTICS_TIME_ZONE=ZONE,
        **segment_settings(),
    )
    yield pipeline
    assert stop(pipeline.worker, timeout=20) == 0, pipeline.log()[-3000:]


def _simulate(pipe: Pipeline, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "forum_analytics", "simulate", *args],
        env=dict(os.environ, **pipe.env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _push_watermarks(pipe: Pipeline) -> None:
    """One event now on every partition, from users outside the forum: the worker's watermarks
    pass the simulated days, so all their hours become final."""
    now = int(time.time() * 1000)
    events = []
    for partition in range(PARTITIONS):
        user = next(
            u
            for u in range(OUTSIDERS, OUTSIDERS + 1000)
            if partition_for_user(u, PARTITIONS) == partition
        )
        events.append(Event(uuid.uuid4().hex, EventType.ACTIVITY, now, user))
    pipe.send(events)


def test_backfill_through_the_pipeline_equals_its_truth(pipe: Pipeline, tmp_path: Path) -> None:
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    truth_file = tmp_path / "truth.json"
    args = ["--backfill", "4", "--users", "200", "--seed", "11", "--end", f"{end:%Y-%m-%d}"]
    args += ["--late", "0.03", "--duplicates", "0.02", "--truth", str(truth_file)]
    result = _simulate(pipe, *args)
    assert result.returncode == 0, result.stderr
    assert "history:" in result.stdout and "held back as late" in result.stdout, result.stdout
    truth = Truth.from_json(truth_file.read_bytes())
    assert truth.events.sent > truth.events.unique > 1000  # duplicates were sent
    assert all(truth.events.by_type.values()), truth.events.by_type  # every type

    _push_watermarks(pipe)
    sql = "SELECT sum(num_events) FROM hourly_user_summary WHERE user_id < {n:UInt64}"
    wait_until(
        lambda: pipe.count(sql, n=OUTSIDERS) == truth.events.unique,
        timeout=180,
        what="every simulated event in a final hour",
    )
    # forum-users is read beside forum-events, not in order with it: wait for it too
    wait_until(lambda: pipe.count("SELECT count() FROM users FINAL") == 200, timeout=60)
    wait_until(lambda: pipe.count("SELECT count() FROM groups FINAL") == 13, timeout=60)
    intervals = "SELECT count() FROM group_members FINAL WHERE user_id < {n:UInt64}"
    end_ms = int(end.timestamp() * 1000)
    memberships = len(build_forum(11, 200, end_ms - 4 * 86_400_000, end_ms).memberships)
    wait_until(lambda: pipe.count(intervals, n=OUTSIDERS) == memberships, timeout=60)

    verify = _cli_verify(pipe, truth)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    settings = load_settings(clickhouse_url=pipe.db_url, time_zone=ZONE, **_segment_fields())
    differences = truth_differences(
        connect(pipe.db_url), truth, resolve_segments(settings), max_user=OUTSIDERS
    )
    assert differences == [], "\n".join(differences[:40])


def _cli_verify(pipe: Pipeline, truth: Truth) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "forum_analytics", "verify", "--silent"]
        + ["--from", truth.first_day.isoformat(), "--to", truth.last_day.isoformat()],
        env=dict(os.environ, **pipe.env),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _segment_fields() -> dict[str, str]:
    return {
        "named_segments": segment_settings()["ANALYTICS_NAMED_SEGMENTS"],
        "default_segment": segment_settings()["ANALYTICS_DEFAULT_SEGMENT"],
    }


def test_live_traffic_holds_its_rate_and_every_event_arrives(
    pipe: Pipeline, tmp_path: Path
) -> None:
    """The rate over 30 s, as the simulator measured it, within 10% of the target (it paces
    on the monotonic clock; only a stalled machine could miss); printed for the record."""
    rate, seconds = 200, 30
    truth_file = tmp_path / "truth.json"
    result = _simulate(
        pipe,
        *["--live", "--rate", str(rate), "--duration", str(seconds), "--users", "300"],
        *["--seed", "5", "--truth", str(truth_file)],
    )
    assert result.returncode == 0, result.stderr
    found = re.search(r"live: ([\d,]+) events in ([\d.]+) s: ([\d,.]+) events/s", result.stdout)
    assert found, result.stdout
    sent, measured = int(found[1].replace(",", "")), float(found[3].replace(",", ""))
    print(f"\nlive mode: {sent} events in {found[2]} s = {measured} events/s (target {rate})")
    assert abs(measured - rate) <= 0.1 * rate
    assert abs(sent - rate * seconds) <= 0.1 * rate * seconds
    truth = Truth.from_json(truth_file.read_bytes())
    assert truth.events.sent >= sent  # plus the late events sent when it stopped
    wait_until(
        lambda: pipe.count("SELECT uniqExact(id) FROM events") == truth.events.unique,
        timeout=120,
        what="every live event stored",
    )


# ---------------------------------------------------------------------------------------------
# Options and failures


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "forum_analytics", "simulate", *args],
        env=dict(os.environ, **(env or {})),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "say what to send: --backfill DAYS, --live, or both"),
        (("--backfill", "2", "--live", "--end", "2026-01-01"), "--end with --live would leave"),
        (("--end", "2026-01-01"), "--end is the end of the history: it needs --backfill"),
        (("--backfill", "2", "--duration", "5"), "--duration is for live traffic"),
        (("--backfill", "2", "--end", "yesterday"), "--end must be a date like 2026-03-01"),
        (("--backfill", "2", "--end", "2026-01-01T10:00:00"), "a time with its offset"),
        (("--backfill", "2", "--end", "2999-01-01"), "is in the future"),
        (("--backfill", "0"), "--backfill"),
        (("--live", "--rate", "0"), "--rate"),
        (("--live", "--late", "0.9"), "--late"),
    ],
)
def test_bad_options_are_refused_with_a_message(args: tuple[str, ...], message: str) -> None:
    result = _cli(*args)
    assert result.returncode == 2, result
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_settings_example_matches_the_simulated_groups() -> None:
    result = _cli("--settings-example")
    assert result.returncode == 0, result.stderr
    env = dict(line.split("=", 1) for line in result.stdout.strip().splitlines())
    values = {name: value.strip("'") for name, value in env.items()}
    assert values == segment_settings()
    segments = resolve_segments(load_settings(**_segment_fields()))
    assert [s.slug for s in segments.named] == ["customers", "partners", "staff"]
    assert segments.default.slug == "community"


def test_an_unreachable_broker_is_one_line_and_exit_1() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    result = _cli("--backfill", "1", env={"ANALYTICS_KAFKA_BOOTSTRAP": bootstrap})
    assert result.returncode == 1, result
    assert result.stderr.strip().startswith(f"simulate: cannot reach Kafka at {bootstrap}")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_rerun_of_the_same_backfill_counts_once(pipe: Pipeline, tmp_path: Path) -> None:
    """Same seed, users and --end: the same events with the same ids, so sending them twice
    (an interrupted run, re-run) stores and counts each event once."""
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=2)
    truth_file = tmp_path / "truth.json"
    args = ["--backfill", "1", "--users", "40", "--seed", "3", "--end", end.isoformat()]
    args += ["--silent", "--truth", str(truth_file)]
    for _ in range(2):
        result = _simulate(pipe, *args)
        assert result.returncode == 0, result.stderr
    unique = Truth.from_json(truth_file.read_bytes()).events.unique
    _push_watermarks(pipe)
    pushed = "SELECT count() FROM events WHERE user_id >= {n:UInt64}"
    wait_until(lambda: pipe.count(pushed, n=OUTSIDERS) == PARTITIONS, timeout=120)
    stored = "SELECT count() FROM events WHERE user_id < {n:UInt64}"
    assert pipe.count(stored, n=OUTSIDERS) == unique
    counted = "SELECT sum(num_events) FROM hourly_user_summary WHERE user_id < {n:UInt64}"
    wait_until(lambda: pipe.count(counted, n=OUTSIDERS) == unique, timeout=120)
