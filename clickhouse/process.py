"""Run the embedded ClickHouse server as a subprocess (tests, the dev stack).

``EmbeddedClickHouse`` starts ``python -m clickhouse.server`` on a free port,
waits until ``/ping`` answers, and stops it with SIGTERM (SIGKILL if it hangs).
The server's stderr goes to ``log_path`` (default: a temporary file removed by
``close()``); its tail is quoted when the server fails to come up, so a broken
start explains itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from clickhouse.server import ANALYST_PASSWORD_ENV, DEFAULT_PASSWORD_ENV, EXIT_ADDRESS_IN_USE
from forum_analytics.ports import free_port

_PORT_ATTEMPTS = 5


class EmbeddedClickHouseError(RuntimeError):
    """The server subprocess did not start (message includes its stderr tail)."""


class EmbeddedClickHouse:
    """A ``clickhouse.server`` subprocess serving one chDB data directory.

    Usable as a context manager. ``url`` is the default user's URL
    (``http://default:@127.0.0.1:PORT/``); ``url_for()`` builds others, e.g.
    for the read-only analyst (``analyst_url``).
    """

    def __init__(
        self,
        path: Path | str,
        port: int | None = None,
        host: str = "127.0.0.1",
        default_password: str = "",
        analyst_user: str | None = None,
        analyst_password: str = "",
        startup_timeout: float = 60.0,
        log_level: str = "INFO",
        log_path: Path | None = None,
    ) -> None:
        self.path = Path(path)
        self.host = host
        self.default_password = default_password
        self.analyst_user = analyst_user
        self.analyst_password = analyst_password
        self.startup_timeout = startup_timeout
        self.log_level = log_level
        self._fixed_port = port
        self._port: int | None = port
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Path | None = log_path
        self._own_log = log_path is None
        self._timed_out = False

    # -- addresses -----------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise EmbeddedClickHouseError("server not started")
        return self._port

    def url_for(self, user: str, password: str, database: str = "") -> str:
        """``http://user:password@host:port/database`` with proper escaping."""
        auth = f"{quote(user, safe='')}:{quote(password, safe='')}"
        return f"http://{auth}@{self.host}:{self.port}/{database}"

    @property
    def url(self) -> str:
        return self.url_for("default", self.default_password)

    @property
    def analyst_url(self) -> str:
        if not self.analyst_user:
            raise EmbeddedClickHouseError("no analyst user configured")
        return self.url_for(self.analyst_user, self.analyst_password)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> EmbeddedClickHouse:
        """Start the server and wait until it answers ``/ping``."""
        if self._proc is not None and self._proc.poll() is None:
            return self
        if self._log is None:
            self._own_log = True
            fd, name = tempfile.mkstemp(prefix="chdb-server-", suffix=".log")
            os.close(fd)
            self._log = Path(name)
        previous = self._port  # a restart keeps its URL if the port is still free
        for _attempt in range(_PORT_ATTEMPTS):
            self._port = self._fixed_port or previous or free_port(self.host)
            previous = None
            self._proc = self._spawn()
            if self._wait_ready():
                return self
            if self._fixed_port is not None or self._proc.returncode != EXIT_ADDRESS_IN_USE:
                break
        raise EmbeddedClickHouseError(self._failure_message())

    def _spawn(self) -> subprocess.Popen[bytes]:
        cmd = [
            sys.executable, "-m", "clickhouse.server",
            "--path", str(self.path), "--port", str(self._port), "--host", self.host,
            "--log-level", self.log_level, "--parent-pid", str(os.getpid()),
        ]  # fmt: skip
        if self.analyst_user:
            cmd += ["--analyst-user", self.analyst_user]
        env = {
            **os.environ,
            DEFAULT_PASSWORD_ENV: self.default_password,
            ANALYST_PASSWORD_ENV: self.analyst_password,
        }
        assert self._log is not None
        with self._log.open("ab") as log:
            # Own session: a terminal's Ctrl-C reaches only the parent, which stops us in order.
            return subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,
            )

    def _wait_ready(self) -> bool:
        """True once /ping answers; False if the process exits or time runs out."""
        assert self._proc is not None
        self._timed_out = False
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            if self._ping():
                return True
            time.sleep(0.05)
        self._timed_out = True
        self.stop()
        return False

    def _ping(self) -> bool:
        try:
            url = f"http://{self.host}:{self._port}/ping"
            with urllib.request.urlopen(url, timeout=1.0) as response:
                return bool(response.read() == b"Ok.\n")
        except (urllib.error.URLError, OSError):
            return False

    def _failure_message(self) -> str:
        rc = self._proc.returncode if self._proc is not None else None
        what = f"exited with code {rc}"
        if self._timed_out:
            what = f"did not answer /ping within {self.startup_timeout:.0f}s"
        return (
            f"embedded ClickHouse server for {self.path} {what}; stderr tail:\n{self.stderr_tail()}"
        )

    def stderr_tail(self, lines: int = 30) -> str:
        """The last lines the server wrote to stderr."""
        if self._log is None:
            return ""
        try:
            text = self._log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL. Returns the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def close(self) -> None:
        """Stop the server and remove its log file (unless the caller chose the path)."""
        self.stop()
        if self._log is not None and self._own_log:
            with contextlib.suppress(OSError):
                self._log.unlink()
            self._log = None

    def __enter__(self) -> EmbeddedClickHouse:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
