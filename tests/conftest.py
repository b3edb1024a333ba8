"""Shared test set-up: real broker and real ClickHouse fixtures live in tests/fixtures/.

At the end of the run, any process the tests started and left behind fails the run.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.helpers import alive_pids, descendants

pytest_plugins = ["tests.fixtures.clickhouse", "tests.fixtures.kafka"]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    deadline = time.monotonic() + 10
    leftovers = alive_pids(descendants(os.getpid()))
    while leftovers and time.monotonic() < deadline:
        time.sleep(0.2)
        leftovers = alive_pids(descendants(os.getpid()))
    if leftovers:
        names = [_cmdline(p) for p in leftovers]
        print(f"\nprocesses left behind by the tests: {names}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline") as f:
            return f.read().replace("\0", " ")[:160]
    except OSError:
        return str(pid)
