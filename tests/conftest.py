"""Shared test set-up: real broker and real ClickHouse fixtures live in tests/fixtures/."""

pytest_plugins = ["tests.fixtures.clickhouse", "tests.fixtures.kafka"]
