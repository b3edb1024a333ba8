"""`forum-analytics dev`: the whole stack on one machine, stopped cleanly as one.

Start order: broker → ClickHouse → migrations → admin token → worker → API. Stop order is
the reverse, on Ctrl-C, SIGTERM, or when any part dies, within `STOP_BUDGET_SECONDS`.
Every child runs in its own session and dies with this process, so nothing is orphaned.

The dev broker (Tansu, memory storage) loses every topic and offset when it stops. The
worker re-reads nothing after a restart of `dev`; ClickHouse keeps its data under
`--data-dir`, so reports still show what was ingested before.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from urllib.parse import quote

import httpx
from clickhouse_connect.driver.client import Client

from api.tokens import Role, create_token
from clickhouse.client import connect
from clickhouse.migrate import migrate
from clickhouse.process import EmbeddedClickHouse
from clickhouse.retention import apply_raw_events_ttl
from forum.catalogue import segment_settings
from forum_analytics.ports import free_port
from forum_analytics.processes import spawn, stop
from forum_analytics.settings import Settings
from streams.broker import EmbeddedBroker

STOP_BUDGET_SECONDS = 15.0
ACTIVITY_PATH = "/analytics/activity/all-activity/all-content/all-users/all-time/"


@dataclass(frozen=True)
class Simulation:
    """`dev --simulate`: a simulated forum feeding the stack (`forum-analytics simulate`)."""

    days: int = 21
    rate: float = 5.0
    users: int = 500
    seed: int = 1


class _Stop(Exception):
    """Raised in the main thread by SIGTERM/SIGINT to unwind into the orderly shutdown."""


def _raise_stop(signum: int, _frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


class DevStack:
    """Runs and supervises the dev stack's processes."""

    def __init__(
        self,
        settings: Settings,
        *,
        data_dir: Path,
        kafka_port: int,
        clickhouse_port: int,
        api_port: int,
        simulation: Simulation | None = None,
    ) -> None:
        self.settings = settings
        self.simulation = simulation
        self.data_dir = data_dir.resolve()
        self.kafka_port = kafka_port or free_port()
        self.clickhouse_port = clickhouse_port or free_port()
        self.api_port = api_port or free_port()
        self.logs = self.data_dir / "logs"
        self.ready_file = self.data_dir / "worker.ready"
        self.broker: EmbeddedBroker | None = None
        self.clickhouse: EmbeddedClickHouse | None = None
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def run(self) -> int:
        """Start everything, wait for Ctrl-C/SIGTERM or a dead part, stop everything."""
        previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        code = 0
        try:
            self._start()
            code = self._supervise()
        except _Stop as why:
            print(f"\nstopping ({why})...", flush=True)
        except Exception as exc:  # noqa: BLE001 - a start-up failure is reported, not traced
            print(f"forum-analytics dev: could not start: {exc}", file=sys.stderr, flush=True)
            code = 1
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_IGN)  # finish the shutdown uninterrupted
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return code

    def _env(self) -> dict[str, str]:
        assert self.broker is not None and self.clickhouse is not None
        env = dict(os.environ)
        env.update(
            ANALYTICS_KAFKA_BOOTSTRAP=self.broker.bootstrap,
            ANALYTICS_KAFKA_BROKER_FLAVOR="tansu",
            ANALYTICS_KAFKA_SESSION_TIMEOUT_SECONDS="6",
            ANALYTICS_CLICKHOUSE_URL=self.clickhouse_url,
            ANALYTICS_API_PORT=str(self.api_port),
            ANALYTICS_WORKER_READY_FILE=str(self.ready_file),
            PYTHONUNBUFFERED="1",
        )
        if self.simulation is not None and not (
            self.settings.named_segments or self.settings.default_segment
        ):
            env.update(segment_settings())  # the simulated forum's segments, unless set
        return env

    @property
    def clickhouse_url(self) -> str:
        credentials = f"default:{quote(self.settings.clickhouse_password, safe='')}"
        return f"http://{credentials}@127.0.0.1:{self.clickhouse_port}/{self.database}"

    @property
    def database(self) -> str:
        return self.settings.clickhouse_database

    def _start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        print(f"forum-analytics dev: data in {self.data_dir}, logs in {self.logs}", flush=True)
        self.broker = EmbeddedBroker(port=self.kafka_port, log_path=self.logs / "broker.log")
        self.broker.start()
        print(f"  Kafka (Tansu)   {self.broker.bootstrap}", flush=True)
        self.clickhouse = EmbeddedClickHouse(
            self.data_dir / "clickhouse",
            port=self.clickhouse_port,
            default_password=self.settings.clickhouse_password,
            analyst_user=self.settings.clickhouse_analyst_user,
            analyst_password=self.settings.clickhouse_analyst_password,
            log_path=self.logs / "clickhouse.log",
        )
        self.clickhouse.start()
        migrate(self.clickhouse_url, self.database)
        client = connect(self.clickhouse_url)
        print(f"  {apply_raw_events_ttl(client, self.settings.raw_events_ttl_days)}", flush=True)
        token = create_token(client, name="dev admin", role=Role.ADMIN)
        print(f"  ClickHouse      http://127.0.0.1:{self.clickhouse_port}/", flush=True)
        analyst = self.settings.clickhouse_analyst_user
        print(f"  (analysts: user {analyst!r}, read-only, database {self.database!r})", flush=True)
        cmd = [sys.executable, "-m", "forum_analytics"]
        self.ready_file.unlink(missing_ok=True)
        self.children.append(
            ("worker", spawn([*cmd, "worker"], env=self._env(), log_path=self.logs / "worker.log"))
        )
        self.children.append(
            ("api", spawn([*cmd, "api"], env=self._env(), log_path=self.logs / "api.log"))
        )
        base = f"http://127.0.0.1:{self.api_port}"
        self._wait_http(f"{base}/healthz", "api")
        self._wait_for(self.ready_file.exists, "worker", timeout=60)
        if self.simulation is not None:
            self._start_simulation(client, cmd)
        print(f"  API             {base}/analytics/", flush=True)
        print(f"  Activity (JSON) {base}{ACTIVITY_PATH}")
        print(f"  API docs        {base}/docs")
        print("Stack is up; Ctrl-C stops it. Admin token (send as Authorization: Bearer):")
        print(token, flush=True)

    def _start_simulation(self, client: Client, cmd: list[str]) -> None:
        """The simulated forum: history first unless ClickHouse already has events (a
        restart), then live traffic until the stack stops."""
        assert self.simulation is not None
        sim = self.simulation
        has_history = client.query("SELECT count() > 0 FROM events").result_rows[0][0]
        args = [*cmd, "simulate", "--live", "--rate", f"{sim.rate:g}", "--users", str(sim.users)]
        args += ["--seed", str(sim.seed), "--silent"]
        if not has_history:
            args += ["--backfill", str(sim.days)]
        log = self.logs / "simulate.log"
        self.children.append(("simulate", spawn(args, env=self._env(), log_path=log)))
        history = "events already stored" if has_history else f"{sim.days} days of history"
        print(f"  Simulation      {sim.users} users: {history}, then {sim.rate:g} events/s live")

    def _wait_http(self, url: str, name: str, timeout: float = 30.0) -> None:
        def answers() -> bool:
            try:
                return httpx.get(url, timeout=1.0).status_code < 500
            except httpx.HTTPError:
                return False

        self._wait_for(answers, name, timeout)

    def _wait_for(self, ready: Callable[[], bool], name: str, timeout: float) -> None:
        """Poll `ready` while checking that no child died; fail after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_children()
            if ready():
                return
            time.sleep(0.2)
        raise RuntimeError(f"{name} was not ready within {timeout:.0f}s; see {self.logs}")

    def _check_children(self) -> None:
        for name, proc in self.children:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with code {proc.returncode}; see {self.logs / (name + '.log')}"
                )

    def _supervise(self) -> int:
        while True:
            try:
                self._check_children()
            except RuntimeError as exc:
                print(f"forum-analytics dev: {exc}", file=sys.stderr, flush=True)
                return 1
            time.sleep(0.5)

    def _stop_all(self) -> None:
        deadline = time.monotonic() + STOP_BUDGET_SECONDS - 1.0
        for _name, proc in reversed(self.children):
            stop(proc, timeout=max(0.5, deadline - time.monotonic() - 3.0))
        if self.clickhouse is not None:
            self.clickhouse.stop(timeout=max(0.5, deadline - time.monotonic() - 1.0))
        if self.broker is not None:
            self.broker.stop(timeout=max(0.5, deadline - time.monotonic()))
        print("stopped.", flush=True)
