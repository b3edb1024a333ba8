"""Retention of raw events: `ANALYTICS_RAW_EVENTS_TTL_DAYS` as a TTL on the `events` table.

Only `events` ever gets a TTL. The summaries (`hourly_user_summary`, `daily_user_summary`, the
group rollups), `sessions`, `users` and `groups` are the product: they are small (one row per
user and hour at most) and nothing could rebuild them once the events behind them are gone.
Raw events are the bulky part (one row per page view, with IP and user agent), so they are
what an operator may want to expire, for disk or for privacy.

What a TTL costs: everything that reads raw events works only inside the window.
- `forum-analytics verify` recomputes the summaries from `events`; for days older than the
  TTL it finds no events and reports every streamed row there as a difference. Verify recent
  days only (`--from` no earlier than N-1 days ago).
- The worker reads a user's history back from `events` for an event later than its in-memory
  state (`ANALYTICS_STATE_RETENTION_HOURS`): to tell a resent id from a new one and to join the
  sessions around it. An event older than the TTL finds no history, so a resend of an expired
  event counts again and its sessions are computed without the expired neighbours. Choose a
  TTL well beyond the lateness and redelivery the forum can produce.
- The Activity view (the event log) lists only events inside the window.

When rows go: ClickHouse removes expired rows when it merges parts (TTL merges run on their
own, by default at most every 4 hours per part: `merge_with_ttl_timeout`), not at the exact
instant they expire; until then queries still see them. `ttl_only_drop_parts` stays off (its
default): with monthly partitions (`PARTITION BY toYYYYMM(ts)`) a part can hold a whole month,
and dropping only whole parts would keep events up to a month past the TTL, too loose for a
setting that also limits how long IP addresses and user agents are kept. Fully expired parts
are dropped whole anyway, so the rewrite cost is limited to the one partition on the edge.

Setting or changing the TTL starts a background mutation that applies it to existing parts
(`materialize_ttl_after_modify`, on by default): that is what removes the old rows at once,
and also why this module issues no ALTER when the TTL is already the wanted one, so a
`migrate` on every deploy costs nothing.
"""

from __future__ import annotations

import re
from typing import Final

from clickhouse_connect.driver.client import Client

__all__ = ["RAW_EVENTS_TABLE", "apply_raw_events_ttl", "current_ttl", "ttl_expression"]

RAW_EVENTS_TABLE: Final = "events"

# The table TTL clause as ClickHouse shows it in `engine_full`, between "TTL" and "SETTINGS".
_TABLE_TTL: Final = re.compile(r"\bTTL\s+(?P<expr>.+?)(?:\s+SETTINGS\s|$)", re.DOTALL)
# Our own expression, as written or as normalised by ClickHouse (`toIntervalDay(N)`).
_OUR_TTL: Final = re.compile(
    r"^toDateTime\(ts\)\s*\+\s*(?:toIntervalDay\((?P<a>\d+)\)|INTERVAL\s+(?P<b>\d+)\s+DAY)$",
    re.IGNORECASE,
)


def ttl_expression(ttl_days: int) -> str:
    """The TTL we set: `ts` is DateTime64, and TTL needs a Date or DateTime, hence toDateTime."""
    return f"toDateTime(ts) + INTERVAL {ttl_days} DAY"


def current_ttl(client: Client, table: str = RAW_EVENTS_TABLE) -> str | None:
    """The table's TTL expression in the client's database, or None when it has none.

    Read from `system.tables.engine_full`, which is where ClickHouse keeps the table TTL
    (there is no column of its own for it).
    """
    rows = client.query(
        "SELECT engine_full FROM system.tables "
        "WHERE database = currentDatabase() AND name = {table:String}",
        parameters={"table": table},
    ).result_rows
    if not rows:
        raise LookupError(f"table {table!r} does not exist; run the migrations first")
    match = _TABLE_TTL.search(str(rows[0][0]))
    return match.group("expr").strip() if match else None


def _ttl_days(expression: str | None) -> int | None:
    """N when `expression` is our `ts + N days` TTL; None for none or anything else."""
    match = _OUR_TTL.match(expression or "")
    if match is None:
        return None
    return int(match.group("a") or match.group("b"))


def apply_raw_events_ttl(client: Client, ttl_days: int | None) -> str:
    """Make the TTL of `events` match `ttl_days` (None: keep raw events forever).

    Idempotent: the current TTL is read first and nothing is altered when it already matches.
    Returns one line for the CLI to print, saying what it did.
    """
    if ttl_days is not None and ttl_days < 1:
        raise ValueError("ttl_days must be >= 1 or None")
    current = current_ttl(client)
    current_days = _ttl_days(current)
    if ttl_days is None:
        if current is None:
            return "raw events: no TTL, kept forever (ANALYTICS_RAW_EVENTS_TTL_DAYS is unset)"
        client.command(f"ALTER TABLE {RAW_EVENTS_TABLE} REMOVE TTL")
        return f"raw events: TTL removed (was {_describe(current, current_days)}); kept forever"
    if current_days == ttl_days:
        return f"raw events: TTL unchanged, {ttl_days} day(s)"
    client.command(f"ALTER TABLE {RAW_EVENTS_TABLE} MODIFY TTL {ttl_expression(ttl_days)}")
    was = "none" if current is None else _describe(current, current_days)
    return (
        f"raw events: TTL set to {ttl_days} day(s) (was {was}); "
        "expired rows are removed as ClickHouse merges parts"
    )


def _describe(expression: str, days: int | None) -> str:
    return f"{days} day(s)" if days is not None else repr(expression)
