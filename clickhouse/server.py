"""The embedded ClickHouse server: chDB behind ClickHouse's HTTP interface.

A chDB data directory can be open in one process only, so this server is how
every other process (the Faust worker, the API, analysts with any ClickHouse
client) reaches the embedded database. Run it with
``forum-analytics clickhouse serve`` or ``python -m clickhouse.server``.

Lifecycle: take an exclusive lock on the data directory (before chDB opens
it, so a second server fails fast with a clear message), open the engine,
serve until SIGTERM/SIGINT, then stop accepting, let in-flight requests
finish for a few seconds, close chDB so everything is flushed, exit 0.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

from clickhouse.auth import DEFAULT_USERS, UserSpec
from clickhouse.engine import Engine
from clickhouse.handler import DEFAULT_MAX_CONCURRENT_QUERIES, ClickHouseHTTPServer
from forum_analytics.processes import die_with_parent

log = logging.getLogger("clickhouse.server")

LOCK_FILE_NAME = ".embedded-server.lock"
SHUTDOWN_GRACE_SECONDS = 4.0  # for in-flight requests to finish on their own
CANCEL_GRACE_SECONDS = 2.0  # then for streams and inserts to stop at their next chunk
SESSION_REAP_SECONDS = 5.0
EXIT_START_FAILED = 1
EXIT_ADDRESS_IN_USE = 98  # the process manager retries on another port
DEFAULT_PASSWORD_ENV = "CHDB_SERVER_DEFAULT_PASSWORD"
ANALYST_PASSWORD_ENV = "CHDB_SERVER_ANALYST_PASSWORD"


class ServerStartError(RuntimeError):
    """The server could not start; ``str()`` is the one-line reason for the user."""

    exit_code = EXIT_START_FAILED


class DataDirectoryInUse(ServerStartError):
    """Another process holds the data directory."""


class AddressInUse(ServerStartError):
    """The port is taken."""

    exit_code = EXIT_ADDRESS_IN_USE


class DataDirLock:
    """An exclusive ``flock`` on a file inside the data directory, holding our pid.

    The kernel drops the lock when the process dies, so a crash never leaves
    a stale lock behind; the pid in the file only serves the error message.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = path / LOCK_FILE_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.read(fd, 64).decode("ascii", "replace").strip()
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            who = f"pid {holder}" if holder.isdigit() else "unknown pid"
            raise DataDirectoryInUse(
                f"ClickHouse data directory {self.path} is already in use by another "
                f"process ({who}); refusing to start"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _open_engine(path: Path) -> Engine:
    """Open chDB on the path, explaining failures (e.g. a notebook holding it open)."""
    try:
        return Engine(str(path))
    except Exception as exc:
        status = path / "status"
        holder = ""
        if status.exists():
            first_line = status.read_text(errors="replace").splitlines()[:1]
            holder = f"; chDB status file says {first_line[0]}" if first_line else ""
        raise ServerStartError(
            f"cannot open chDB data directory {path}: {str(exc).strip()}{holder}"
        ) from None


def _bind(
    host: str, port: int, engine: Engine, users: Mapping[str, UserSpec], max_queries: int
) -> ClickHouseHTTPServer:
    try:
        return ClickHouseHTTPServer((host, port), engine, users, max_queries)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise AddressInUse(f"cannot listen on {host}:{port}: address already in use") from None
        raise ServerStartError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _install_signal_handlers(stop: threading.Event) -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # signals can only be handled on the main thread; the caller stops us

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def _reap_sessions(engine: Engine, stop: threading.Event) -> None:
    while not stop.wait(SESSION_REAP_SECONDS):
        engine.reap_sessions()


def serve(
    path: Path,
    port: int,
    host: str = "127.0.0.1",
    users: Mapping[str, UserSpec] | None = None,
    stop: threading.Event | None = None,
    max_concurrent_queries: int = DEFAULT_MAX_CONCURRENT_QUERIES,
) -> bool:
    """Serve the chDB database in ``path`` over ClickHouse's HTTP interface until stopped.

    Stops on SIGTERM/SIGINT (when called on the main thread) or when ``stop``
    is set. Raises ServerStartError (DataDirectoryInUse, AddressInUse) with a
    one-line message if it cannot start. ``users`` defaults to ``default``
    with an empty password.

    Requests still running after the shutdown grace period are abandoned;
    normal interpreter shutdown would then tear the engine down under their
    threads, so on the main thread (where serve() owns the process) it ends the
    process with ``os._exit(0)``; elsewhere it returns False. Returns True
    after a clean stop.
    """
    path = Path(path).resolve()
    stop = stop or threading.Event()
    lock = DataDirLock(path)
    lock.acquire()
    try:
        engine = _open_engine(path)
        try:
            server = _bind(host, port, engine, users or DEFAULT_USERS, max_concurrent_queries)
            finished = _run_until_stopped(server, engine, stop)
        finally:
            engine.close()
    finally:
        lock.release()
    log.info("stopped; data in %s flushed", path)
    if not finished and threading.current_thread() is threading.main_thread():
        logging.shutdown()
        os._exit(0)
    return finished


def _run_until_stopped(server: ClickHouseHTTPServer, engine: Engine, stop: threading.Event) -> bool:
    """Serve until ``stop``; True if every in-flight request finished in the grace period."""
    _install_signal_handlers(stop)
    threading.Thread(target=_reap_sessions, args=(engine, stop), daemon=True).start()
    loop = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2})
    loop.start()
    host, port = server.server_address[:2]
    log.info(
        "ClickHouse HTTP interface (chDB %s) listening on http://%s:%s/, data in %s",
        engine.version, host, port, engine.path,
    )  # fmt: skip
    try:
        while not stop.wait(1.0):
            pass
    finally:
        stop.set()
        server.begin_shutdown()
        server.shutdown()
        server.server_close()
        loop.join()
    return _finish_in_flight(server, engine)


def _finish_in_flight(server: ClickHouseHTTPServer, engine: Engine) -> bool:
    """Let running requests end; then cancel streams and inserts between chunks."""
    if server.wait_idle(SHUTDOWN_GRACE_SECONDS):
        return True
    log.warning("cancelling requests still running after %.0fs", SHUTDOWN_GRACE_SECONDS)
    engine.cancelled.set()
    if server.wait_idle(CANCEL_GRACE_SECONDS):
        return True
    log.warning("requests still running; abandoning them")
    return False


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m clickhouse.server",
        description="Serve a chDB data directory over ClickHouse's HTTP interface.",
    )
    parser.add_argument("--path", required=True, type=Path, help="chDB data directory")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--default-password",
        default=os.environ.get(DEFAULT_PASSWORD_ENV, ""),
        help=f"password of user 'default' (or ${DEFAULT_PASSWORD_ENV}, kept out of ps)",
    )
    parser.add_argument("--analyst-user", default=None, help="name of a read-only user")
    parser.add_argument(
        "--analyst-password",
        default=os.environ.get(ANALYST_PASSWORD_ENV, ""),
        help=f"password of the read-only user (or ${ANALYST_PASSWORD_ENV})",
    )
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--max-concurrent-queries",
        type=int,
        default=DEFAULT_MAX_CONCURRENT_QUERIES,
        help="queries running at once; more are refused with code 202, as ClickHouse does",
    )
    parser.add_argument(
        "--parent-pid",
        type=int,
        default=None,
        help="exit (SIGTERM) when this process, our parent, dies (Linux)",
    )
    return parser.parse_args(argv)


def users_from_options(
    default_password: str, analyst_user: str | None, analyst_password: str
) -> dict[str, UserSpec]:
    """The user table from CLI-style options: ``default`` plus an optional analyst."""
    users = {"default": UserSpec(password=default_password)}
    if analyst_user:
        users[analyst_user] = UserSpec(password=analyst_password, readonly=True)
    return users


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the process exit code."""
    args = _parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    users = users_from_options(args.default_password, args.analyst_user, args.analyst_password)
    if args.parent_pid is not None:
        die_with_parent(args.parent_pid)
    try:
        serve(
            args.path,
            args.port,
            args.host,
            users,
            max_concurrent_queries=args.max_concurrent_queries,
        )
    except ServerStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
