"""The embedded Tansu broker: starts on a free port, answers Kafka, stops, fails clearly."""

from __future__ import annotations

import os
import socket
import stat
import time
from pathlib import Path

import pytest

import streams.broker
from forum_analytics.ports import free_port, port_is_free
from streams.broker import BrokerStartError, EmbeddedBroker, kafka_answers


def _pid_exists(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_starts_on_a_free_port_answers_and_stops_leaving_no_process(tmp_path: Path) -> None:
    broker = EmbeddedBroker(log_dir=tmp_path)
    with broker:
        assert broker.running
        assert broker.bootstrap == f"127.0.0.1:{broker.port}"
        assert kafka_answers("127.0.0.1", broker.port)
        pid = broker.pid
        assert pid is not None and _pid_exists(pid)
        assert broker.log_path == tmp_path / f"tansu-{broker.port}.log"
    assert not broker.running
    assert not _pid_exists(pid)
    assert not kafka_answers("127.0.0.1", broker.port, timeout=0.5)
    assert "listening on" in broker.log_path.read_text()
    broker.stop()  # idempotent


def test_log_path_is_used_as_given(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "broker.log"
    with EmbeddedBroker(log_path=log) as broker:
        assert broker.log_path == log
    assert f"127.0.0.1:{broker.port}" in log.read_text()


def test_start_on_a_taken_port_fails_clearly() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        assert not port_is_free(port)
        started = time.monotonic()
        with pytest.raises(BrokerStartError, match=rf"127\.0\.0\.1:{port}.*in use") as info:
            EmbeddedBroker(port=port).start()
        assert info.value.port_in_use
        assert time.monotonic() - started < 5


def test_broker_that_dies_at_start_is_reported_with_its_output(
    kafka_broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Skip the pre-check so Tansu itself meets the taken port: it panics (and exits 0), while
    the port still answers Kafka, from the other broker. That answer must not count as ours."""
    monkeypatch.setattr(streams.broker, "port_is_free", lambda port, host: True)
    broker = EmbeddedBroker(port=kafka_broker.port, start_timeout=10)
    with pytest.raises(BrokerStartError) as info:
        broker.start()
    message = str(info.value)
    assert "exited during start-up" in message
    assert "Address in use" in message or "AddrInUse" in message
    assert info.value.port_in_use
    assert not broker.running
    assert kafka_broker.running


def test_missing_binary_fails_clearly(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-tansu"
    with pytest.raises(BrokerStartError, match="no-such-tansu.*missing or not executable"):
        EmbeddedBroker(binary=missing).start()


def test_binary_that_exits_at_once_fails_with_exit_code_and_output(tmp_path: Path) -> None:
    fake = tmp_path / "fake-tansu"
    fake.write_text("#!/bin/sh\necho 'fake broker: storage exploded' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(BrokerStartError) as info:
        EmbeddedBroker(binary=fake, start_timeout=5).start()
    message = str(info.value)
    assert str(fake) in message
    assert "exit code 3" in message
    assert "storage exploded" in message


def test_binary_that_never_answers_times_out_and_is_killed(tmp_path: Path) -> None:
    fake = tmp_path / "silent-tansu"
    fake.write_text("#!/bin/sh\nexec sleep 60\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    broker = EmbeddedBroker(binary=fake, start_timeout=1, stop_timeout=1)
    with pytest.raises(BrokerStartError, match="did not answer the Kafka protocol within 1 s"):
        broker.start()
    assert broker.pid is not None and not _pid_exists(broker.pid)


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 0 < port < 65536
    assert port_is_free(port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_kafka_answers_is_false_for_a_non_kafka_server() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert not kafka_answers("127.0.0.1", port, timeout=0.3)
    assert not kafka_answers("127.0.0.1", port, timeout=0.3)


def test_session_broker_serves_the_run(kafka_broker: EmbeddedBroker) -> None:
    assert kafka_broker.running
    assert kafka_answers("127.0.0.1", kafka_broker.port)
    assert os.path.exists(f"/proc/{kafka_broker.pid}")
