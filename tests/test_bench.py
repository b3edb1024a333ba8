"""`forum-analytics bench` runs end to end on its own broker and ClickHouse (speed is reported,
never asserted: BENCHMARKS.md)."""

from __future__ import annotations

from forum_analytics.bench import run_bench


def test_bench_measures_both_paths_on_the_same_messages() -> None:
    result = run_bench(events=3_000, users=200)
    assert result.events == 3_000
    assert result.consumer_seconds > 0 and result.worker_seconds > 0
    table = result.table()
    assert "raw aiokafka consumer" in table and "worker, end to end" in table
    assert "ratio worker / consumer" in table
