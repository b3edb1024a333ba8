"""`forum-analytics dev`: the whole stack comes up, shows an event, and stops cleanly."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx

from clickhouse.client import connect
from streams.events import Event, EventType
from streams.producer import EventProducer
from tests.helpers import alive_pids, descendants, start_cli, wait_until


def _output(log: Path) -> str:
    return log.read_text(errors="replace") if log.exists() else ""


def _send(bootstrap: str, event: Event) -> None:
    async def send() -> None:
        async with EventProducer(bootstrap) as producer:
            await producer.send(event)

    asyncio.run(send())


def _start_dev(tmp_path: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    """`forum-analytics dev` on free ports; returns once it says the stack is up (or died)."""
    args = ["dev", "--data-dir", str(tmp_path / "data"), *extra]
    args += ["--kafka-port", "0", "--clickhouse-port", "0", "--api-port", "0"]
    proc = start_cli(args, {}, log)
    try:
        wait_until(
            lambda: "Stack is up" in _output(log) or proc.poll() is not None,
            timeout=120,
            what="the dev stack",
        )
    except AssertionError:
        proc.kill()
        proc.wait()
        raise
    return proc


def test_dev_stack_runs_end_to_end_and_stops_cleanly(tmp_path: Path) -> None:
    log = tmp_path / "dev.log"
    proc = _start_dev(tmp_path, log)
    try:
        out = _output(log)
        assert proc.poll() is None, out
        token = out.strip().splitlines()[-1]
        assert token.startswith("fa_")
        bootstrap = re.search(r"Kafka \(Tansu\)\s+(\S+)", out).group(1)  # type: ignore[union-attr]
        api = re.search(r"API\s+(http://\S+)/analytics/", out).group(1)  # type: ignore[union-attr]
        assert (tmp_path / "data" / "worker.ready").exists()  # "up" means the worker joined
        children = descendants(proc.pid)
        assert len(children) >= 4, children  # broker, ClickHouse, worker, API

        event = Event.new(EventType.QUESTION_ASKED, 77, object_type="post", object_id=5)
        _send(bootstrap, event)
        url = f"{api}/analytics/activity/all-activity/all-content/user:77/all-time/"
        headers = {"Authorization": f"Bearer {token}"}

        def listed() -> bool:
            response = httpx.get(url, headers=headers, timeout=5)
            return [e["id"] for e in response.json()["events"]] == [event.id]

        wait_until(listed, timeout=60, what="the event in the Activity view")

        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, _output(log)[-3000:]
    assert elapsed < 15, f"took {elapsed:.1f}s to stop"
    assert alive_pids(children) == [], "dev left processes behind"
    assert "stopped." in _output(log)
    assert not (tmp_path / "data" / "worker.ready").exists()


def _stop_dev(proc: subprocess.Popen[bytes], log: Path) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0, _output(log)[-3000:]


def test_dev_simulate_shows_history_and_live_traffic_within_a_minute(tmp_path: Path) -> None:
    log = tmp_path / "dev.log"
    args = ("--simulate", "--simulate-days", "14", "--simulate-rate", "10")
    proc = _start_dev(tmp_path, log, *args, "--simulate-users", "300")
    up = time.monotonic()
    try:
        out = _output(log)
        assert "Simulation      300 users: 14 days of history, then 10 events/s live" in out, out
        token = out.strip().splitlines()[-1]
        api = re.search(r"API\s+(http://\S+)/analytics/", out).group(1)  # type: ignore[union-attr]
        port = re.search(r"ClickHouse\s+http://127.0.0.1:(\d+)/", out).group(1)  # type: ignore[union-attr]
        client = connect(f"http://default:@127.0.0.1:{port}/forum_analytics")
        url = f"{api}/analytics/activity/all-activity/all-content/all-users/all-time/?format=json"
        headers = {"Authorization": f"Bearer {token}"}

        def live_events() -> bool:
            newest = httpx.get(url, headers=headers, timeout=5).json()["events"]
            return bool(newest) and time.time() - _epoch(newest[0]["ts"]) < 30

        def history_days() -> int:
            sql = "SELECT uniqExact(day) FROM daily_user_summary WHERE num_events > 0"
            return int(client.query(sql).result_rows[0][0])

        wait_until(live_events, timeout=60, what="live events in the Activity view")
        wait_until(lambda: history_days() >= 13, timeout=max(1, 60 - (time.monotonic() - up)))
        shown = time.monotonic() - up
        print(f"\ndev --simulate: history and live events shown {shown:.1f} s after up")
        assert (tmp_path / "data" / "logs" / "simulate.log").exists()
        _stop_dev(proc, log)
        log = tmp_path / "restart.log"
        proc = _start_dev(tmp_path, log, *args)  # a restart keeps the history, adds live traffic
        assert "events already stored, then 10 events/s live" in _output(log), _output(log)
        _stop_dev(proc, log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_dev_reports_a_taken_port_clearly(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["dev", "--data-dir", str(tmp_path), "--kafka-port", str(port)]
        args += ["--clickhouse-port", "0", "--api-port", "0"]
        proc = subprocess.run(
            [sys.executable, "-m", "forum_analytics", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1
    assert "could not start" in proc.stderr and str(port) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_no_orphans_even_when_dev_is_killed(tmp_path: Path) -> None:
    """SIGKILL gives dev no chance to clean up: its children must end by themselves."""
    log = tmp_path / "dev.log"
    proc = _start_dev(tmp_path, log)
    try:
        children = descendants(proc.pid)
        assert len(children) >= 4, _output(log)
    finally:
        proc.kill()
        proc.wait()
    wait_until(lambda: not alive_pids(children), timeout=30, what="the children to exit")
