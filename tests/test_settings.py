"""Settings: defaults, environment and .env, and start-up errors that name the setting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from forum_analytics.settings import BrokerFlavor, SettingsError, load_settings


def test_defaults_match_the_design(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("ANALYTICS_"):
            monkeypatch.delenv(name)
    s = load_settings()
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert s.topic_partitions == 6
    assert s.clickhouse_url == "http://default:@127.0.0.1:8123/forum_analytics"
    assert s.clickhouse_database == "forum_analytics"
    assert (s.session_timeout_minutes, s.grace_minutes, s.time_zone) == (30, 10, "UTC")
    assert (s.api_host, s.api_port) == ("127.0.0.1", 8000)
    assert s.kafka_broker_flavor is BrokerFlavor.KAFKA
    assert s.raw_events_ttl_days is None


def test_environment_and_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("ANALYTICS_GRACE_MINUTES=5\nANALYTICS_TOPIC_PARTITIONS=3\n")
    monkeypatch.setenv("ANALYTICS_TOPIC_PARTITIONS", "12")  # the environment wins over .env
    monkeypatch.setenv(
        "ANALYTICS_NAMED_SEGMENTS", '[{"name": "Staff", "slug": "staff", "group_ids": [1]}]'
    )
    s = load_settings()
    assert s.grace_minutes == 5
    assert s.topic_partitions == 12
    assert [(c.slug, c.name, c.group_ids) for c in s.named_segments] == [("staff", "Staff", (1,))]


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("ANALYTICS_API_PORT", "eighty", "valid integer"),
        ("ANALYTICS_TOPIC_PARTITIONS", "0", "greater than or equal to 1"),
        ("ANALYTICS_TIME_ZONE", "Mars/Olympus", "unknown time zone"),
        ("ANALYTICS_CLICKHOUSE_URL", "clickhouse:8123", "http://user:password@host"),
        ("ANALYTICS_KAFKA_BOOTSTRAP", "localhost", "host:port"),
        ("ANALYTICS_NAMED_SEGMENTS", "[not json", "valid JSON"),
        ("ANALYTICS_KAFKA_BROKER_FLAVOR", "redpanda", "'kafka' or 'tansu'"),
    ],
)
def test_bad_setting_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str, why: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert name in str(info.value)
    assert why in str(info.value)


def test_cli_stops_on_a_bad_setting_without_a_traceback(tmp_path: Path) -> None:
    env = dict(os.environ, ANALYTICS_GRACE_MINUTES="-3")
    proc = subprocess.run(
        [sys.executable, "-m", "forum_analytics", "migrate"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "ANALYTICS_GRACE_MINUTES" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
