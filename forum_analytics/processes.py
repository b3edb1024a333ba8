"""Child processes that cannot outlive their parent, and their orderly shutdown."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1
PARENT_PID_ENV = "FORUM_ANALYTICS_PARENT_PID"


def die_with_parent(parent_pid: int | None = None) -> None:
    """Ask the kernel to SIGTERM this process when its parent dies (Linux; elsewhere a no-op).

    Run in a child before exec (`preexec_fn`) or first thing in its main. With `parent_pid`,
    also catch a parent that died before the request took effect.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if parent_pid is not None and os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGTERM)


def die_with_parent_if_asked() -> None:
    """In a process started by `spawn` (a Python entry point), tie its life to the parent's.

    Done by the child at start-up rather than in `preexec_fn`, which is unsafe in a parent
    that runs threads.
    """
    parent = os.environ.pop(PARENT_PID_ENV, None)
    if parent and parent.isdigit():
        die_with_parent(int(parent))


def spawn(
    args: Sequence[str], *, env: dict[str, str] | None = None, log_path: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start a `forum-analytics` command in its own session (the terminal's Ctrl-C reaches only
    the parent, which stops children in order), tied to the parent's life (the child calls
    `die_with_parent_if_asked`), output to `log_path`."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    child_env = dict(os.environ if env is None else env)
    child_env[PARENT_PID_ENV] = str(os.getpid())  # the child calls die_with_parent() itself
    try:
        return subprocess.Popen(
            list(args),
            env=child_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        if log_path:
            out.close()  # type: ignore[union-attr]


def stop(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    """SIGTERM, wait up to `timeout`, then SIGKILL; return the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL) if _is_group_leader(proc) else proc.kill()
            proc.wait()
    return proc.returncode


def _is_group_leader(proc: subprocess.Popen[bytes]) -> bool:
    try:
        return os.getpgid(proc.pid) == proc.pid
    except ProcessLookupError:
        return False


def wait_any(procs: Sequence[subprocess.Popen[bytes]], poll: float = 0.2) -> None:
    """Block until one of `procs` exits (the caller then stops the rest)."""
    while all(p.poll() is None for p in procs):
        time.sleep(poll)
