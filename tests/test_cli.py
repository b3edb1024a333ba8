"""The `forum-analytics` command's own paths: `clickhouse serve` and `tokens`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx

from clickhouse.client import connect
from clickhouse.migrate import migrate
from forum_analytics.ports import free_port
from tests.helpers import start_cli, wait_until


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "forum_analytics", *args],
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_clickhouse_serve_uses_the_settings_users_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "ANALYTICS_CLICKHOUSE_URL": f"http://default:s3cret@127.0.0.1:{port}/forum_analytics",
        "ANALYTICS_CLICKHOUSE_ANALYST_USER": "reader",
        "ANALYTICS_CLICKHOUSE_ANALYST_PASSWORD": "r-pw",
    }
    args = ["clickhouse", "serve", "--path", str(tmp_path / "ch"), "--port", str(port)]
    server = start_cli(args, env, tmp_path / "serve.log")
    base = f"http://127.0.0.1:{port}/"
    try:
        wait_until(lambda: _pings(base), timeout=60, what="the server")
        query = {"query": "SELECT 1"}
        assert httpx.get(base, params=query, auth=("default", "s3cret")).text == "1\n"
        assert httpx.get(base, params=query, auth=("default", "")).status_code in (401, 403)
        assert httpx.get(base, params=query, auth=("reader", "r-pw")).text == "1\n"
        write = httpx.post(base, content="CREATE TABLE t (x UInt8) ENGINE = Memory",
                           auth=("reader", "r-pw"))  # fmt: skip
        assert write.headers["X-ClickHouse-Exception-Code"] == "164"  # READONLY

        held = _cli(*args[:-1], str(free_port()), env=env)  # same data directory
        assert held.returncode != 0
        assert str(tmp_path / "ch") in held.stderr and "Traceback" not in held.stderr

        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def _pings(base: str) -> bool:
    try:
        return httpx.get(base + "ping", timeout=1).text == "Ok.\n"
    except httpx.HTTPError:
        return False


def test_tokens_create_list_revoke(clickhouse_server: Any) -> None:
    database = f"cli_{uuid.uuid4().hex[:10]}"
    url = f"http://default:@127.0.0.1:{clickhouse_server.port}/{database}"
    migrate(url, database)
    env = {"ANALYTICS_CLICKHOUSE_URL": url}
    try:
        created = _cli("tokens", "create", "--role", "moderator", "--name", "Mia", env=env)
        assert created.returncode == 0, created.stderr
        token = created.stdout.strip().splitlines()[-1]
        assert token.startswith("fa_") and " " not in token
        token_id = token.split("_")[1]

        listed = _cli("tokens", "list", env=env)
        assert token_id in listed.stdout and "moderator" in listed.stdout
        assert token not in listed.stdout  # the secret is never shown again
        assert "active" in listed.stdout

        assert _cli("tokens", "revoke", token_id, env=env).returncode == 0
        assert "revoked" in _cli("tokens", "list", env=env).stdout
        again = _cli("tokens", "revoke", token_id, env=env)
        assert again.returncode == 1 and "no active token" in again.stderr

        bad_role = _cli("tokens", "create", "--role", "user", "--name", "x", env=env)
        assert bad_role.returncode == 2 and "admin or moderator" in bad_role.stderr
    finally:
        connect(url, database="").command(f"DROP DATABASE IF EXISTS {database}")


def test_commands_report_an_unreachable_clickhouse_in_one_line() -> None:
    env = {"ANALYTICS_CLICKHOUSE_URL": f"http://default:@127.0.0.1:{free_port()}/x"}
    result = _cli("migrate", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("migrate: cannot reach ClickHouse at 127.0.0.1:")
    assert "Connection refused" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_verify_says_when_clickhouse_is_unreachable_apart_from_differences() -> None:
    env = {"ANALYTICS_CLICKHOUSE_URL": f"http://default:@127.0.0.1:{free_port()}/x"}
    result = _cli("verify", "--silent", env=env)
    assert result.returncode == 3
    assert result.stderr.startswith("verify: cannot reach ClickHouse")
