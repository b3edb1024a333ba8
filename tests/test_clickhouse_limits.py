"""The embedded server bounds queries running at once, as clickhouse-server does."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import httpx

from forum_analytics.ports import free_port
from forum_analytics.processes import spawn, stop
from tests.helpers import wait_until


def _pings(base: str) -> bool:
    try:
        return httpx.get(base + "ping", timeout=1).text == "Ok.\n"
    except httpx.HTTPError:
        return False


def test_queries_beyond_the_limit_are_refused_with_code_202(tmp_path: Path) -> None:
    port = free_port()
    args = [sys.executable, "-m", "clickhouse.server", "--path", str(tmp_path / "d")]
    args += ["--port", str(port), "--max-concurrent-queries", "1"]
    server = spawn(args, log_path=tmp_path / "server.log")
    base = f"http://127.0.0.1:{port}/"
    try:
        wait_until(lambda: _pings(base), timeout=60, what="the server")
        slow: list[httpx.Response] = []

        def run_slow_query() -> None:
            while True:  # a probe below may take the only slot first: retry until we hold it
                response = httpx.post(base, content="SELECT sleep(2)", timeout=30)
                if response.status_code != 503:
                    slow.append(response)
                    return

        running = threading.Thread(target=run_slow_query)
        running.start()

        def refusal() -> httpx.Response | None:
            response = httpx.post(base, content="SELECT 1")
            return response if response.status_code == 503 else None

        refused = wait_until(refusal, timeout=10, interval=0.05, what="a refusal")
        assert refused is not None
        assert refused.headers["X-ClickHouse-Exception-Code"] == "202"
        assert "Maximum: 1" in refused.text
        assert "TOO_MANY_SIMULTANEOUS_QUERIES" in refused.text
        running.join()
        assert slow[0].status_code == 200
        assert httpx.post(base, content="SELECT 1").text == "1\n"  # the slot is free again
    finally:
        assert stop(server, timeout=15) == 0
