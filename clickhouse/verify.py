"""`forum-analytics verify`: recompute the streamed tables from `events` and list every difference.

The worker maintains `sessions`, `hourly_user_summary` and `daily_user_summary` incrementally,
one batch of events at a time, with corrections for late and redelivered events. This module
recomputes the same figures in one batch, from the raw `events` table alone, with ClickHouse SQL
written independently of the streaming code (DESIGN.md "Semantics" is the only shared source),
so a bug in the incremental path cannot hide itself by being repeated here.

All the work happens inside ClickHouse, one query per table: the recomputation, the comparison
by key (summaries: one GROUP BY over the recomputed contributions and the streamed deltas;
sessions: a FULL OUTER JOIN) and the counting. Only differing keys travel back, at most `limit`
of them per table, so the check scales with the data, not with the client's memory. Measured
with the embedded server on 2 cores: 1M events (50,000 users) in 2.5 s, 10M in 20 s (3 GB).
The four group checks add about 8 s at 1M events (100,000 intervals in 200 groups, 1.2M
member hours) and 80 s at 10M (10M member hours); on a tiny database each costs 0.3-1 s,
nearly all of it ClickHouse analysing the long query.

Semantics recomputed (DESIGN.md "Semantics"):

* An event id counts once per user: of the user's rows sharing an id, the one the stream
  applied first, which is the smallest Kafka position (`_partition`, `_offset`, `_index`).
* Sessions per user, events in (ts, id) order: a gap above the timeout starts a new session
  (exactly the timeout continues it); ip and user agent from the first event; duration in whole
  seconds, floor(last / 1 s) - floor(start / 1 s).
* Hours are local hours of `ANALYTICS_TIME_ZONE`, keyed by the UTC instant they start at
  (`_hour_start_sql` says how, and why not `toStartOfHour`); `day` is the hour's local date.
* Time on site: each session's span split at hour boundaries, in whole seconds that telescope
  (a session's hours add up to its duration).

Comparison rules: streamed summary rows are signed deltas, so they are summed per key and a key
whose sums are all zero is absent; streamed sessions are collapsed by summing `sign` per row
version, and compared by (user_id, start), since session ids may be made differently.

Groups (migration 0005; checked only where its tables exist, so an older database still
verifies). A member's hour counts toward a group if the member was in it at any moment of the
hour (DESIGN.md "Groups"); every group counts in the rollup tables, only `used_for_analytics`
ones in the views. Membership intervals are read from `group_members FINAL` (deleted versions
hidden) by their raw `since`/`until` instants only: the worker's helper columns (`since_hour`,
`since_day`, `until_hour`, `until_day`) are never read, so a wrong one shows in the views that
use them. Recomputed:

* `group_member_hours`: each recomputed user hour, once per group with an interval that
  overlaps the hour (two intervals of one group in one hour still count it once);
* `group_member_days`: those hours summed by their local day;
* `hourly_group_summary`, `daily_group_summary`: per analytics group and period, the sums of
  its member rows; `num_active_users` the members whose period has `num_events` > 0;
  `num_users_added` the intervals whose `since` falls in the period; `num_users` the intervals
  holding the period's last instant; one row for every period from the group's first
  membership or stored row to the latest such period of any analytics group, as the views
  emit them (a row of zeros is the same as no row).

Purged users' rows live on under anonymous ids (>= 2**63) whose events are gone: their
`group_member_hours` rows are taken as stored (not compared), their days are checked against
those hours, and the views are expected to count them.

Limits of what `events` still tells: it is a ReplacingMergeTree ordered by (ts, id), so copies of
an id with the same ts are merged into the last one inserted, whose position is not the first;
for copies with equal fields (plain redeliveries) that changes nothing here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

from clickhouse_connect.driver.client import Client

from forum_analytics.settings import Settings

__all__ = [
    "ROW",
    "SESSION_FIELDS",
    "SUMMARY_FIELDS",
    "TABLES",
    "Difference",
    "VerifyReport",
    "verify",
]

Value = int | str | datetime | date | None
"""A key part or a compared value as reported: ints, strings, UTC datetimes, dates; None when the
row is absent on that side."""

SESSIONS: Final = "sessions"
HOURLY: Final = "hourly_user_summary"
DAILY: Final = "daily_user_summary"
TABLES: Final = (SESSIONS, HOURLY, DAILY)
"""The tables every database has; `VerifyReport.counts` always holds them."""
GROUP_HOURS: Final = "group_member_hours"
GROUP_DAYS: Final = "group_member_days"
HOURLY_GROUPS: Final = "hourly_group_summary"
DAILY_GROUPS: Final = "daily_group_summary"
GROUP_TABLES: Final = (GROUP_HOURS, GROUP_DAYS, HOURLY_GROUPS, DAILY_GROUPS)
"""The group rollups (migration 0005), checked after `TABLES` when the database has them."""
ROW: Final = "row"
"""`Difference.field` for a key that exists on one side only."""

#: Summary counter → the event types it counts (`num_events` counts every type).
_COUNTED_TYPES: Final[dict[str, tuple[str, ...]]] = {
    "num_questions": ("question_asked",),
    "num_answers": ("answer_posted",),
    "num_upvotes": ("upvoted",),
    "num_downvotes": ("downvoted",),
    "question_views": ("question_viewed",),
    "answer_views": ("answer_viewed",),
    "num_comments": ("question_commented", "answer_commented"),
    "num_retags": ("question_retagged",),
    "num_vote_cancels": ("vote_canceled",),
    "num_logins": ("logged_in",),
}
SUMMARY_FIELDS: Final = (*_COUNTED_TYPES, "num_events", "time_on_site")
"""The compared columns of both summary tables, in table order."""
GROUP_VIEW_FIELDS: Final = ("num_users", "num_users_added", "num_active_users")
"""The group views' own columns, compared before their summed `SUMMARY_FIELDS`."""

#: User ids from here up are the anonymous members a GDPR purge leaves behind (their raw
#: events are deleted): their group rows cannot be recomputed and are taken as stored.
_ANONYMOUS: Final = 2**63

#: Sessions whose first event falls in the hour (migration 0004). Compared in each summary
#: table that has the column, so a database migrated before 0004 can still be checked.
_STARTED: Final = "num_sessions_started"

#: Compared session columns. `rows` is the number of live (uncancelled) row versions for the
#: key: anything but 1 means a duplicated, unmatched-cancel or not-replaced session row.
SESSION_FIELDS: Final = ("last_activity", "duration", "ip", "user_agent", "event_count", "rows")

#: Hour boundaries of every real time zone are at least 15 minutes apart (Pacific/Chatham has a
#: 15-minute local hour on DST days), so sampling a session every 10 minutes meets each hour it
#: overlaps.
_SAMPLE_SECONDS: Final = 600

#: A local date starts and ends within this of its UTC namesake (offsets lie within -12 h ..
#: +14 h): with the timeout added, it bounds the events that can touch a range of local days.
_ZONE_MARGIN: Final = timedelta(days=2)

#: ClickHouse's Date range: an open end of the day range is one of these.
_DATE_MIN: Final = date(1970, 1, 1)
_DATE_MAX: Final = date(2149, 6, 6)

_SETTINGS: Final[dict[str, Any]] = {
    "join_use_nulls": 0,  # an absent side reads as defaults, and its `present` marker as 0
    "max_query_size": 1_000_000,  # the generated SQL is long (the hour expression repeats)
}


@dataclass(frozen=True)
class Difference:
    """One difference: in `table`, at `key`, `field` is `expected` (recomputed from events) but
    `actual` (streamed). `field` is `ROW` ("row") when the key exists on one side only; the
    present side's value is then the row's non-zero values as text, the other side's None."""

    table: str
    key: tuple[tuple[str, Value], ...]
    field: str
    expected: Value
    actual: Value

    def __str__(self) -> str:
        key = " ".join(f"{name}={_show(value, quote=False)}" for name, value in self.key)
        quote = self.field != ROW  # a whole row is already a text of name=value pairs
        return (
            f"{self.table} {key}: {self.field}: expected {_show(self.expected, quote=quote)}, "
            f"actual {_show(self.actual, quote=quote)}"
        )


@dataclass
class VerifyReport:
    """What `verify` found. `counts` counts every difference per table (a row present on one
    side only counts once); `differences` lists them, at most `limit` per table, ordered by key;
    `keys` counts the differing keys per table. `tables` lists the tables checked.

    `counts` and `keys` hold `TABLES` always and a group table (`GROUP_TABLES`) only when it
    differs, so a report, and its summary line, read as they did before the group tables
    existed whenever those agree."""

    first_day: date | None
    last_day: date | None
    tables: tuple[str, ...] = TABLES
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    keys: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    differences: list[Difference] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def ok(self) -> bool:
        return self.total == 0

    def summary(self) -> str:
        """One line: the verdict and the count per table (a group table when it differs)."""
        shown = [t for t in self.tables if t in TABLES or self.counts.get(t)]
        per_table = ", ".join(f"{table} {self.counts.get(table, 0)}" for table in shown)
        if self.ok:
            return f"verify: no differences ({per_table})"
        return f"verify: {self.total} difference(s): {per_table}"


def verify(
    client: Client,
    settings: Settings,
    first_day: date | None = None,
    last_day: date | None = None,
    *,
    limit: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> VerifyReport:
    """Recompute sessions and both summaries from `events` (and, where the database has them,
    the group rollups from `events` and `group_members`) and compare them with the tables.

    `first_day`/`last_day` (inclusive, local dates in `settings.time_zone`) restrict the check:
    summaries and group rows by their day (or their hour's day), sessions by the local day of
    their start. Sessions are still recomputed from whole user histories, so hours inside the
    range get time on site from sessions that began before it, and `num_users` still counts
    memberships that began before it. `limit` caps the differences listed per table (None:
    all); `counts` always counts all of them.
    """
    if first_day and last_day and first_day > last_day:
        raise ValueError(f"first day {first_day} is after last day {last_day}")
    group_tables = _group_tables(client)
    report = VerifyReport(first_day, last_day, (*TABLES, *group_tables))
    context = _Context(
        settings.session_timeout_minutes * 60_000,
        first_day,
        last_day,
        frozenset(t for t in (HOURLY, DAILY, *group_tables) if _has_column(client, t, _STARTED)),
    )
    params = context.parameters(settings.time_zone)
    for table in report.tables:
        if progress:
            source = "events and group_members" if table in GROUP_TABLES else "events"
            progress(f"verify: recomputing {table} from {source}")
        began = time.monotonic()
        sql = _table_diff_sql(table, context, limit)
        rows = client.query(sql, parameters=params, settings=_SETTINGS).named_results()
        _collect(report, table, context.fields(table), list(rows), limit)
        report.seconds[table] = time.monotonic() - began
        if progress:
            progress(
                f"verify: {table}: {report.counts.get(table, 0)} difference(s) "
                f"in {report.seconds[table]:.1f} s"
            )
    return report


# -- SQL ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    """What the generated SQL depends on, besides the query parameters."""

    timeout_ms: int
    first_day: date | None
    last_day: date | None
    started_in: frozenset[str]
    """The summary tables that have the optional `num_sessions_started` column."""

    @property
    def ranged(self) -> bool:
        return self.first_day is not None or self.last_day is not None

    def fields(self, table: str) -> tuple[str, ...]:
        if table == SESSIONS:
            return SESSION_FIELDS
        summed = (*SUMMARY_FIELDS, _STARTED) if table in self.started_in else SUMMARY_FIELDS
        return (*GROUP_VIEW_FIELDS, *summed) if table in _VIEW_PERIODS else summed

    @property
    def with_started(self) -> bool:
        """Whether the recomputed hours carry `num_sessions_started` (either table wants it)."""
        return bool(self.started_in)

    def parameters(self, time_zone: str) -> dict[str, Any]:
        """Query parameters. The day range is clipped to the days ClickHouse's Date holds; the
        event window is a superset of the events that can touch the range's sessions (any
        session overlapping the range has an event in it or within the timeout of it)."""
        first = max(self.first_day or _DATE_MIN, _DATE_MIN)
        last = min(self.last_day or _DATE_MAX, _DATE_MAX)
        margin = _ZONE_MARGIN + timedelta(milliseconds=self.timeout_ms)
        return {
            "tz": time_zone,
            "timeout_ms": self.timeout_ms,
            "first_day": first,
            "last_day": last,
            "window_from_ms": _epoch_ms(first) - _ms(margin),
            "window_to_ms": _epoch_ms(last + timedelta(days=1)) + _ms(margin),
        }


def _epoch_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1000


def _ms(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)


def _has_column(client: Client, table: str, column: str) -> bool:
    """Whether the current database's `table` has `column` (schema-tolerant comparisons)."""
    result = client.query(
        "SELECT count() FROM system.columns "
        "WHERE database = currentDatabase() AND table = {t:String} AND name = {c:String}",
        parameters={"t": table, "c": column},
    )
    return bool(result.result_rows[0][0])


def _group_tables(client: Client) -> tuple[str, ...]:
    """The group rollups this database has, in check order: none unless the membership and
    group tables they are recomputed from exist too (a database migrated before 0005)."""
    result = client.query(
        "SELECT name FROM system.tables WHERE database = currentDatabase() "
        "AND name IN {names:Array(String)}",
        parameters={"names": [*GROUP_TABLES, "group_members", "groups"]},
    )
    present = {row[0] for row in result.result_rows}
    if not {"group_members", "groups"} <= present:
        return ()
    return tuple(t for t in GROUP_TABLES if t in present)


def _offset_sql(seconds: str) -> str:
    """The time zone's UTC offset (seconds) at an instant given in epoch seconds."""
    return f"timeZoneOffset(toDateTime({seconds}, {{tz:String}}))"


def _hour_start_sql(t: str) -> str:
    """The start (epoch seconds) of the local hour holding instant `t` (epoch seconds).

    Why not `toStartOfHour(t, tz)`: ClickHouse's date tables assume whole-hour offset changes,
    and put hour starts half an hour off for the rest of the day after a 30-minute DST change
    (Australia/Lord_Howe) or a change at :45 (Pacific/Chatham). A local hour here is a maximal
    run of instants with the same local date, hour and offset, as the streaming worker defines
    it: its boundaries are the local hh:00:00 instants and the instants the offset changes. So:
    w = the last local hh:00:00 at or before t under t's offset; if the offset at w is still t's,
    w is the start; otherwise the offset changed in (w, t] and the change is the start, found to
    the second by a minute then a second scan (only for instants in such an hour). Checked equal
    to streams.timebuckets for UTC and for half-hour, quarter-hour and DST zones, at random
    instants of 2000-2030 and densely around DST changes; the one exception is ClickHouse's own
    offset table, which rounds transitions to 15 minutes (America/St_Johns's 00:01 changes
    before 2011).
    """
    off_t = _offset_sql(t)
    w = f"({t} - (({t} + {off_t}) % 3600))"
    minute = f"arrayFirst(k -> {_offset_sql(f'{w} + 60 * k')} = {off_t}, range(1, 61))"
    base = f"({w} + 60 * ({minute} - 1))"
    second = f"arrayFirst(j -> {_offset_sql(f'{base} + j')} = {off_t}, range(1, 61))"
    return f"if({_offset_sql(w)} = {off_t}, {w}, {base} + {second})"


def _deduplicated_sql(ctx: _Context) -> str:
    """Each event id once per user: the copy with the smallest Kafka position, the one the stream
    applied first. Per user, because that is all the stream can see: a user's events share one
    partition, and an id resent under another user is another user's event. Deduplicating over
    the whole table (and only then filtering users) keeps the winner
    the same whatever the range. With a range, only users with events near it are kept, with
    their whole history, so every session that touches the range is recomputed whole.

    Two phases, for speed: the ids seen more than once are found by a 64-bit hash (a fixed-size
    GROUP BY key, cheap), and only their rows go through `argMin` grouped by the id itself; every
    other row passes as it is. A hash collision only sends a unique id down the exact path.
    Grouping all 10M rows with their values costs three times as much.
    """
    users = ""
    if ctx.ranged:
        users = (
            "WHERE user_id IN (SELECT DISTINCT user_id FROM events WHERE ts >= "
            "fromUnixTimestamp64Milli({window_from_ms:Int64}, 'UTC') AND ts < "
            "fromUnixTimestamp64Milli({window_to_ms:Int64}, 'UTC'))"
        )
    repeated = "(SELECT cityHash64(user_id, id) AS h FROM events GROUP BY h HAVING count() > 1)"
    return f"""
        SELECT id, user_id, ms, type, ip, user_agent
        FROM (
            SELECT
                id, user_id, toUnixTimestamp64Milli(ts) AS ms, toString(type) AS type, ip,
                user_agent
            FROM events
            WHERE cityHash64(user_id, id) NOT IN {repeated}
            UNION ALL
            SELECT id, user_id, e.1 AS ms, e.2 AS type, e.3 AS ip, e.4 AS user_agent
            FROM (
                SELECT
                    id,
                    user_id,
                    argMin(
                        (toUnixTimestamp64Milli(ts), toString(type), ip, user_agent),
                        (_partition, _offset, _index)
                    ) AS e
                FROM events
                WHERE cityHash64(user_id, id) IN {repeated}
                GROUP BY user_id, id
            )
        )
        {users}"""


def _sessions_sql(ctx: _Context) -> str:
    """Expected sessions: per user, in (ts, id) order, a new session wherever the gap to the
    previous event exceeds the timeout; ip and user agent of the first event by (ts, id)."""
    order = "PARTITION BY user_id ORDER BY ms, id"
    return f"""
        SELECT
            user_id,
            min(ms) AS start_ms,
            max(ms) AS last_ms,
            argMin(ip, (ms, id)) AS ip,
            argMin(user_agent, (ms, id)) AS user_agent,
            toInt64(count()) AS event_count
        FROM (
            SELECT
                user_id, ms, id, ip, user_agent,
                sum(new) OVER ({order} ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
                    AS session_no
            FROM (
                SELECT
                    user_id, ms, id, ip, user_agent,
                    toUInt32(ms - lagInFrame(ms, 1, ms) OVER
                        ({order} ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)
                        > {{timeout_ms:Int64}}) AS new
                FROM ({_deduplicated_sql(ctx)})
            )
        )
        GROUP BY user_id, session_no"""


def _expected_sessions_sql(ctx: _Context) -> str:
    """Expected `sessions` rows whose start's local day is in the range."""
    return f"""
        SELECT
            toUInt8(1) AS present,
            user_id,
            fromUnixTimestamp64Milli(start_ms, 'UTC') AS start,
            fromUnixTimestamp64Milli(last_ms, 'UTC') AS last_activity,
            intDiv(last_ms, 1000) - intDiv(start_ms, 1000) AS duration,
            ip,
            user_agent,
            event_count,
            toInt64(1) AS rows
        FROM ({_sessions_sql(ctx)})
        WHERE toDate(start, {{tz:String}}) BETWEEN {{first_day:Date}} AND {{last_day:Date}}"""


def _actual_sessions_sql() -> str:
    """Streamed sessions, collapsed: each row version's signs summed, versions netting zero
    dropped; `rows` counts the live versions left for the key (abs, so a dangling cancel shows)
    and the values are those of the version with the largest net count."""
    return """
        SELECT
            toUInt8(1) AS present,
            user_id,
            start,
            argMax(last_activity, net) AS last_activity,
            argMax(toInt64(duration), net) AS duration,
            argMax(ip, net) AS ip,
            argMax(user_agent, net) AS user_agent,
            argMax(toInt64(event_count), net) AS event_count,
            sum(abs(net)) AS rows
        FROM (
            SELECT
                user_id, start, session_id, last_activity, duration, ip, user_agent,
                event_count, sum(toInt64(sign)) AS net
            FROM sessions
            WHERE toDate(start, {tz:String}) BETWEEN {first_day:Date} AND {last_day:Date}
            GROUP BY user_id, start, session_id, last_activity, duration, ip, user_agent,
                event_count
            HAVING net != 0
        )
        GROUP BY user_id, start"""


def _pieces_sql() -> tuple[str, str]:
    """A session's hours and time on site, from `start_s`/`last_s` (its first and last instant
    in whole epoch seconds): (sorted hour starts, [(hour start, whole seconds)]).

    The hours it overlaps are the distinct hour starts of instants sampled every
    `_SAMPLE_SECONDS` from its start, plus its last instant. Piece i runs from
    max(start, hour i) to hour i+1 (or the last instant); hour boundaries are whole seconds, so
    floor(end) - floor(begin) telescopes to the session's duration. Zero-second pieces are
    dropped, as the streaming worker does.
    """
    sample = f"start_s + {_SAMPLE_SECONDS} * k"
    samples = (
        f"arrayConcat(arrayMap(k -> {sample}, "
        f"range(toUInt64(intDiv(last_s - start_s, {_SAMPLE_SECONDS}) + 1))), [last_s])"
    )
    hours = f"arraySort(arrayDistinct(arrayMap(s -> {_hour_start_sql('s')}, {samples})))"
    piece = "(h, if(i < length(hours), hours[i + 1], last_s) - greatest(h, start_s))"
    pieces = f"arrayFilter(p -> p.2 > 0, arrayMap((h, i) -> {piece}, hours, arrayEnumerate(hours)))"
    return hours, pieces


def _contributions_sql(ctx: _Context) -> str:
    """What each event and each session adds to its hours, one row per addition, not summed:
    (user_id, hour_s, day, the summary fields). An event adds 1 to `num_events` and to its
    type's counter in its own local hour; a session adds its pieces of time on site (and, with
    `num_sessions_started`, 1 to its first hour). Summing by hour gives the hourly figures,
    and summing by `day` gives the daily ones directly (a local hour lies in one local date)."""
    hours, pieces = _pieces_sql()
    counters = ",\n".join(
        f"toInt64(type IN ({', '.join(repr(t) for t in types)})) AS {name}"
        for name, types in _COUNTED_TYPES.items()
    )
    zeros = ", ".join(f"toInt64(0) AS {name}" for name in _COUNTED_TYPES)
    # With `num_sessions_started`, each session adds a zero-second piece flagged as its start.
    all_pieces = (
        f"arrayPushFront(arrayMap(p -> (p.1, p.2, 0), {pieces}), (hours[1], 0, 1))"
        if ctx.with_started
        else pieces
    )
    started_event = f", toInt64(0) AS {_STARTED}" if ctx.with_started else ""
    started_piece = f", toInt64(piece.3) AS {_STARTED}" if ctx.with_started else ""
    return f"""
        SELECT *, toDate(toDateTime(hour_s, {{tz:String}})) AS day
        FROM (
            SELECT
                user_id,
                {_hour_start_sql("intDiv(ms, 1000)")} AS hour_s,
                {counters},
                toInt64(1) AS num_events,
                toInt64(0) AS time_on_site{started_event}
            FROM ({_deduplicated_sql(ctx)})
            UNION ALL
            SELECT
                user_id,
                piece.1 AS hour_s,
                {zeros},
                toInt64(0) AS num_events,
                toInt64(piece.2) AS time_on_site{started_piece}
            FROM (
                SELECT
                    user_id,
                    intDiv(start_ms, 1000) AS start_s,
                    intDiv(last_ms, 1000) AS last_s,
                    {hours} AS hours,
                    {all_pieces} AS all_pieces
                FROM ({_sessions_sql(ctx)})
            )
            ARRAY JOIN all_pieces AS piece
        )"""


_KEYS: Final[dict[str, tuple[str, ...]]] = {
    SESSIONS: ("user_id", "start"),
    HOURLY: ("user_id", "hour", "day"),
    DAILY: ("user_id", "day"),
    # `day` is part of the key, as in `hourly_user_summary`: a wrong day shows as a missing
    # and an extra row, since `group_member_days` rolls hours up by that column.
    GROUP_HOURS: ("group_id", "hour", "user_id", "day"),
    GROUP_DAYS: ("group_id", "day", "user_id"),
    HOURLY_GROUPS: ("group_id", "hour"),
    DAILY_GROUPS: ("group_id", "day"),
}


def _sides_sql(keys: Sequence[str], fields: Sequence[str], expected: str, actual: str) -> str:
    """Both sides of a table per key, summed in one GROUP BY over the expected rows (side 0)
    and the stored ones (side 1), each a query with the key and field columns: cheaper than
    summing each side and joining, and a key is present on a side when its sums there are not
    all zero (so signed deltas need no collapsing first)."""
    key_list = ", ".join(keys)
    columns = ", ".join(fields)
    sums = ", ".join(
        f"sumIf({f}, side = 0) AS expected_{f}, sumIf({f}, side = 1) AS actual_{f}" for f in fields
    )
    return f"""
        SELECT
            {key_list},
            {sums}
        FROM (
            SELECT toUInt8(0) AS side, {key_list}, {columns} FROM ({expected})
            UNION ALL
            SELECT toUInt8(1) AS side, {key_list}, {columns} FROM ({actual})
        )
        GROUP BY {key_list}"""


def _summary_sides_sql(table: str, ctx: _Context) -> str:
    """Both sides of a per-user summary table: the expected contributions and the streamed
    signed deltas, by `_sides_sql`."""
    keys = ", ".join(_KEYS[table])
    columns = ", ".join(ctx.fields(table))
    hour = "toDateTime(hour_s, 'UTC') AS hour, " if table == HOURLY else ""
    expected = f"""
        SELECT user_id, {hour}day, {columns}
        FROM ({_contributions_sql(ctx)})
        WHERE day BETWEEN {{first_day:Date}} AND {{last_day:Date}}"""
    actual = f"""
        SELECT {keys}, {columns}
        FROM {table}
        WHERE day BETWEEN {{first_day:Date}} AND {{last_day:Date}}"""
    return _sides_sql(_KEYS[table], ctx.fields(table), expected, actual)


def _session_sides_sql(ctx: _Context) -> str:
    """Both sides of `sessions` per (user_id, start): the expected sessions FULL JOIN the
    collapsed streamed ones. Each side has one row per key already, and a join carries the
    values faster than a GROUP BY of both sides with a dozen `anyIf` states. A side's absent
    row reads as defaults (join_use_nulls = 0), so its `present` marker reads 0."""
    values = ", ".join(f"e.{f} AS expected_{f}, a.{f} AS actual_{f}" for f in SESSION_FIELDS)
    return f"""
        SELECT
            if(e.present, e.user_id, a.user_id) AS user_id,
            if(e.present, e.start, a.start) AS start,
            {values},
            e.present AS expected_present,
            a.present AS actual_present
        FROM ({_expected_sessions_sql(ctx)}) AS e
        FULL OUTER JOIN ({_actual_sessions_sql()}) AS a
            ON e.user_id = a.user_id AND e.start = a.start"""


# -- groups ------------------------------------------------------------------------------

_IN_RANGE: Final = "day BETWEEN {first_day:Date} AND {last_day:Date}"
_ANALYTICS: Final = "group_id IN (SELECT group_id FROM groups FINAL WHERE used_for_analytics)"


def _user_hours_sql(ctx: _Context, fields: Sequence[str]) -> str:
    """Each recomputed user hour in the range once, summed: (user_id, hour_s, day, fields).
    The same figures `hourly_user_summary` is checked against; they are what every group the
    user was in during the hour gets."""
    sums = ", ".join(f"sum({f}) AS {f}" for f in fields)
    return f"""
        SELECT user_id, hour_s, day, {sums}
        FROM ({_contributions_sql(ctx)})
        WHERE {_IN_RANGE} AND user_id < {_ANONYMOUS}
        GROUP BY user_id, hour_s, day"""


def _intervals_sql(analytics_only: bool, *, since_hour: bool = False) -> str:
    """The live membership intervals from their raw instants: (group_id, user_id, since_s,
    until_ms), `since_s` in whole epoch seconds (hour boundaries are whole seconds, so flooring
    keeps `since` in its hour), `until_ms` NULL while open.

    With `since_hour`, also `since_hour_s`, the start of the local hour holding `since`: the
    member was in the group at some moment of the hour starting at h exactly when since < h's
    end, i.e. since_hour_s <= h, and until > h. Comparing hour starts that way needs no hour
    ends, which are the awkward part in zones with 30- and 45-minute offset changes. (Only on
    request: the hour expression is long, and ClickHouse's analysis time grows with it.)"""
    analytics = f"AND {_ANALYTICS}" if analytics_only else ""
    hour = f", {_hour_start_sql('since_s')} AS since_hour_s" if since_hour else ""
    return f"""
        SELECT group_id, user_id, since_s, until_ms{hour}
        FROM (
            SELECT
                group_id,
                user_id,
                intDiv(toUnixTimestamp64Milli(since), 1000) AS since_s,
                toUnixTimestamp64Milli(until) AS until_ms
            FROM group_members FINAL
            WHERE is_deleted = 0 {analytics}
        )"""


def _member_hours_sql(ctx: _Context, fields: Sequence[str], analytics_only: bool) -> str:
    """Expected `group_member_hours`, summed: (group_id, hour_s, day, user_id, fields). A user
    hour goes to every group with an interval overlapping it, once per group however many of
    the group's intervals do (a member who left and came back within the hour)."""
    values = ", ".join(f"any(u.{f}) AS {f}" for f in fields)
    return f"""
        SELECT m.group_id AS group_id, u.hour_s AS hour_s, u.day AS day, u.user_id AS user_id,
            {values}
        FROM ({_user_hours_sql(ctx, fields)}) AS u
        INNER JOIN ({_intervals_sql(analytics_only, since_hour=True)}) AS m
            ON m.user_id = u.user_id
        WHERE m.since_hour_s <= u.hour_s AND (m.until_ms IS NULL OR m.until_ms > u.hour_s * 1000)
        GROUP BY m.group_id, u.hour_s, u.day, u.user_id"""


def _anonymous_hours_sql(columns: str, analytics_only: bool) -> str:
    """Anonymous members' stored `group_member_hours` rows in the range, taken as they are."""
    analytics = f"AND {_ANALYTICS}" if analytics_only else ""
    return f"""
        SELECT {columns}
        FROM group_member_hours
        WHERE user_id >= {_ANONYMOUS} AND {_IN_RANGE} {analytics}"""


def _group_hours_sides_sql(ctx: _Context) -> str:
    """`group_member_hours` of the users whose events are kept, expected against stored."""
    fields = ctx.fields(GROUP_HOURS)
    columns = ", ".join(fields)
    expected = f"""
        SELECT group_id, toDateTime(hour_s, 'UTC') AS hour, user_id, day, {columns}
        FROM ({_member_hours_sql(ctx, fields, analytics_only=False)})"""
    actual = f"""
        SELECT group_id, hour, user_id, day, {columns}
        FROM {GROUP_HOURS}
        WHERE user_id < {_ANONYMOUS} AND {_IN_RANGE}"""
    return _sides_sql(_KEYS[GROUP_HOURS], fields, expected, actual)


def _group_days_sides_sql(ctx: _Context) -> str:
    """`group_member_days`: the expected hours by day, and anonymous members' stored hours by
    day (their days must still add up to their hours)."""
    fields = ctx.fields(GROUP_DAYS)
    columns = ", ".join(fields)
    row = f"group_id, day, user_id, {columns}"
    expected = f"""
        SELECT {row} FROM ({_member_hours_sql(ctx, fields, analytics_only=False)})
        UNION ALL
        {_anonymous_hours_sql(row, analytics_only=False)}"""
    actual = f"SELECT {row} FROM {GROUP_DAYS} WHERE {_IN_RANGE}"
    return _sides_sql(_KEYS[GROUP_DAYS], fields, expected, actual)


@dataclass(frozen=True)
class _Period:
    """How a group summary view cuts time. A period is held as `p`: an hour's start in epoch
    seconds (Int64), or a local date."""

    view: str
    column: str
    """The view's period column, `hour` (DateTime, UTC) or `day` (Date)."""
    stored: str
    """The member table the view sums, whose keys (zero sums too) extend the view's rows."""

    @property
    def hourly(self) -> bool:
        return self.column == "hour"

    def of_instant(self, seconds: str) -> str:
        """The period holding an instant given in whole epoch seconds."""
        if self.hourly:
            return f"toInt64({_hour_start_sql(seconds)})"
        return f"toDate(toDateTime({seconds}, {{tz:String}}))"

    def of_row(self) -> str:
        """The period of a row with `hour` and `day` columns (`group_member_hours`, expected
        member hours) or, for days, with `day` only (`group_member_days`)."""
        return "toInt64(toUnixTimestamp(hour))" if self.hourly else "day"

    def in_range(self, p: str) -> str:
        """Whether period `p` lies in the checked days (an hour by its local day)."""
        day = f"toDate(toDateTime({p}, {{tz:String}}))" if self.hourly else p
        return f"{day} BETWEEN {{first_day:Date}} AND {{last_day:Date}}"

    def key(self, p: str) -> str:
        """The view's period column, from `p`."""
        return f"toDateTime({p}, 'UTC') AS hour" if self.hourly else f"{p} AS day"


_VIEW_PERIODS: Final = {
    HOURLY_GROUPS: _Period(HOURLY_GROUPS, "hour", GROUP_HOURS),
    DAILY_GROUPS: _Period(DAILY_GROUPS, "day", GROUP_DAYS),
}


def _member_period_rows_sql(ctx: _Context, period: _Period, fields: Sequence[str]) -> str:
    """Each analytics member's figures per period: expected member hours, and anonymous
    members' stored hours, summed by (group_id, p, user_id). `active` is 1 when the member has
    an event in the period (num_active_users sums it)."""
    columns = ", ".join(fields)
    sums = ", ".join(f"sum({f}) AS {f}" for f in fields)
    rows = f"group_id, hour, day, user_id, {columns}"
    return f"""
        SELECT group_id, p, user_id, toInt64(num_events > 0) AS active, {columns}
        FROM (
            SELECT group_id, p, user_id, {sums}
            FROM (
                SELECT group_id, {period.of_row()} AS p, user_id, {columns}
                FROM (
                    SELECT group_id, toDateTime(hour_s, 'UTC') AS hour, day, user_id, {columns}
                    FROM ({_member_hours_sql(ctx, fields, analytics_only=True)})
                    UNION ALL
                    {_anonymous_hours_sql(rows, analytics_only=True)}
                )
            )
            GROUP BY group_id, p, user_id
        )"""


def _membership_changes_sql(period: _Period) -> str:
    """(group_id, p, net, added) per analytics interval end, from the raw instants: +1 member
    and +1 added in the period holding `since`, -1 in the period holding `until`. A member
    counts at a period's end when since < end <= until, i.e. since's period <= p < until's
    period, so the running sum of `net` is `num_users`."""
    intervals = _intervals_sql(analytics_only=True)
    until = period.of_instant("intDiv(assumeNotNull(until_ms), 1000)")
    return f"""
        SELECT group_id, {period.of_instant("since_s")} AS p, toInt64(1) AS net,
            toInt64(1) AS added
        FROM ({intervals})
        UNION ALL
        SELECT group_id, {until} AS p, toInt64(-1) AS net, toInt64(0) AS added
        FROM ({intervals})
        WHERE until_ms IS NOT NULL"""


def _view_bounds_sql(period: _Period) -> str:
    """(group_id, first, last) of the rows the view emits: per analytics group from its first
    membership change or stored member row to the latest of any analytics group. Expected
    activity needs no say: it never precedes a membership (a member hour is at or after the
    period of `since`), and an expected member hour past the last bound still gets its own
    row, which the view then lacks."""
    return f"""
        SELECT group_id, min(p) AS first, max(max(p)) OVER () AS last
        FROM (
            SELECT group_id, p FROM ({_membership_changes_sql(period)})
            UNION ALL
            SELECT group_id, {period.of_row()} AS p FROM {period.stored} WHERE {_ANALYTICS}
        )
        GROUP BY group_id"""


def _instant_bounds_sql() -> str:
    """(lo, hi): the earliest and latest instant (epoch seconds) of the analytics groups'
    interval ends and stored member hours; their hours are the first and last view bounds."""
    intervals = _intervals_sql(analytics_only=True)
    return f"""
        SELECT min(t) AS lo, max(t) AS hi
        FROM (
            SELECT since_s AS t FROM ({intervals})
            UNION ALL
            SELECT intDiv(assumeNotNull(until_ms), 1000) AS t FROM ({intervals})
            WHERE until_ms IS NOT NULL
            UNION ALL
            SELECT toInt64(toUnixTimestamp(hour)) AS t FROM {GROUP_HOURS} WHERE {_ANALYTICS}
        )"""


def _hour_list_sql(period: _Period) -> str:
    """Every local hour from the earliest to the latest view bound, inside the checked days, as
    one array of hour starts: the distinct hour starts of instants every `_SAMPLE_SECONDS`
    (every local hour is longer), computed once and shared by all groups' spines. Bounded by
    raw instants, whose hours are the bounds, to spare the query more hour expressions."""
    sample = f"lo + {_SAMPLE_SECONDS} * k"
    count = f"toUInt64(intDiv(greatest(hi - lo, 0), {_SAMPLE_SECONDS})) + 1"
    samples = f"arrayPushBack(arrayMap(k -> {sample}, range({count})), hi)"
    hours = f"arrayDistinct(arrayMap(s -> {_hour_start_sql('s')}, {samples}))"
    return f"""(
        SELECT arraySort(arrayFilter(h -> {period.in_range("h")}, {hours}))
        FROM (
            SELECT
                toInt64(greatest(lo, intDiv({{window_from_ms:Int64}}, 1000))) AS lo,
                toInt64(least(hi, intDiv({{window_to_ms:Int64}}, 1000))) AS hi
            FROM ({_instant_bounds_sql()})
        )
    )"""


def _spine_sql(period: _Period, zeros: str) -> str:
    """One all-zero row (group_id, p, net, added, active, fields) for every period each
    analytics group's view rows span, inside the checked days: idle periods get a row, as the
    view gives them one."""
    if period.hourly:
        periods = f"arrayFilter(h -> h BETWEEN first AND last, {_hour_list_sql(period)})"
    else:
        lo = "greatest(first, {first_day:Date})"
        hi = "least(last, {last_day:Date})"
        periods = (
            f"arrayMap(i -> addDays({lo}, i), "
            f"range(toUInt32(greatest(dateDiff('day', {lo}, {hi}) + 1, 0))))"
        )
    return f"""
        SELECT group_id, arrayJoin({periods}) AS p, toInt64(0) AS net, toInt64(0) AS added,
            toInt64(0) AS active, {zeros}
        FROM ({_view_bounds_sql(period)})"""


def _expected_view_sql(ctx: _Context, period: _Period) -> str:
    """Expected view rows: member figures, membership changes and the spine per (group, p),
    then `num_users` as the running sum of `net` over each group's whole history (changes
    before the checked days included), kept for the periods in the checked days."""
    fields = ctx.fields(period.view)[len(GROUP_VIEW_FIELDS) :]
    columns = ", ".join(fields)
    zeros = ", ".join(f"toInt64(0) AS {f}" for f in fields)
    sums = ", ".join(f"sum({f}) AS {f}" for f in fields)
    history = "PARTITION BY group_id ORDER BY p ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"
    return f"""
        SELECT group_id, {period.key("p")}, num_users, num_users_added, num_active_users,
            {columns}
        FROM (
            SELECT
                group_id, p,
                sum(net) OVER ({history}) AS num_users,
                added AS num_users_added,
                active AS num_active_users,
                {columns}
            FROM (
                SELECT group_id, p, sum(net) AS net, sum(added) AS added,
                    sum(active) AS active, {sums}
                FROM (
                    SELECT group_id, p, toInt64(0) AS net, toInt64(0) AS added, active,
                        {columns}
                    FROM ({_member_period_rows_sql(ctx, period, fields)})
                    UNION ALL
                    SELECT group_id, p, net, added, toInt64(0) AS active, {zeros}
                    FROM ({_membership_changes_sql(period)})
                    UNION ALL
                    {_spine_sql(period, zeros)}
                )
                GROUP BY group_id, p
            )
        )
        WHERE {period.in_range("p")}"""


def _view_sides_sql(table: str, ctx: _Context) -> str:
    """A group summary view, expected (`_expected_view_sql`) against what it shows in the
    checked days (NULLs, should a client join with `join_use_nulls`, read as 0)."""
    period = _VIEW_PERIODS[table]
    fields = ctx.fields(table)
    values = ", ".join(f"toInt64(ifNull({f}, 0)) AS {f}" for f in fields)
    p = "toInt64(toUnixTimestamp(hour))" if period.hourly else "day"
    actual = f"""
        SELECT group_id, {period.column}, {values}
        FROM {table}
        WHERE {period.in_range(p)}"""
    return _sides_sql(_KEYS[table], fields, _expected_view_sql(ctx, period), actual)


def _sides_for(table: str, ctx: _Context) -> str:
    """Both sides of `table` per key, expected_* and actual_* columns."""
    if table == SESSIONS:
        return _session_sides_sql(ctx)
    if table in (HOURLY, DAILY):
        return _summary_sides_sql(table, ctx)
    if table == GROUP_HOURS:
        return _group_hours_sides_sql(ctx)
    if table == GROUP_DAYS:
        return _group_days_sides_sql(ctx)
    return _view_sides_sql(table, ctx)


def _table_diff_sql(table: str, ctx: _Context, limit: int | None) -> str:
    """The differing keys of one table, with both sides' values, ordered by key, and the
    counts of all differing keys and differences (window functions see every row before the
    LIMIT). A key on one side only counts as one difference."""
    keys = _KEYS[table]
    fields = ctx.fields(table)
    sides = _sides_for(table, ctx)
    if table == SESSIONS:
        present = "expected_present, actual_present"
    else:
        present = ", ".join(
            f"({' OR '.join(f'{side}_{f} != 0' for f in fields)}) AS {side}_present"
            for side in ("expected", "actual")
        )
    values = ", ".join(f"expected_{f}, actual_{f}" for f in fields)
    field_diffs = " + ".join(f"(expected_{f} != actual_{f})" for f in fields)
    key_cols = ", ".join(f"{k} AS key_{k}" for k in keys)
    order = ", ".join(f"key_{k}" for k in keys)
    # LIMIT 0 would drop the counts too: fetch at least one row and trim in Python.
    limit_sql = "" if limit is None else f"LIMIT {max(int(limit), 1)}"
    return f"""
        SELECT
            {key_cols},
            {present},
            {values},
            if(expected_present AND actual_present, {field_diffs},
                toUInt64(expected_present OR actual_present)) AS n_differences,
            count() OVER () AS differing_keys,
            sum(n_differences) OVER () AS total_differences
        FROM ({sides})
        WHERE n_differences > 0
        ORDER BY {order}
        {limit_sql}"""


# -- results -----------------------------------------------------------------------------


def _collect(
    report: VerifyReport,
    table: str,
    fields: Sequence[str],
    rows: list[dict[str, Any]],
    limit: int | None,
) -> None:
    """Turn one table's differing keys into counts and at most `limit` `Difference`s."""
    if not rows:
        return
    report.counts[table] = int(rows[0]["total_differences"])
    report.keys[table] = int(rows[0]["differing_keys"])
    found: list[Difference] = []
    for row in rows:
        key = tuple((k, _value(row[f"key_{k}"])) for k in _KEYS[table])
        expected = {f: _value(row[f"expected_{f}"]) for f in fields}
        actual = {f: _value(row[f"actual_{f}"]) for f in fields}
        if row["expected_present"] and row["actual_present"]:
            differing = [f for f in fields if expected[f] != actual[f]]
            found += [Difference(table, key, f, expected[f], actual[f]) for f in differing]
            if not differing:  # unequal in ClickHouse, equal once decoded (say, bad UTF-8)
                found.append(
                    Difference(
                        table, key, ROW, _row_text(table, expected), _row_text(table, actual)
                    )
                )
        elif row["expected_present"]:
            found.append(Difference(table, key, ROW, _row_text(table, expected), None))
        else:
            found.append(Difference(table, key, ROW, None, _row_text(table, actual)))
    report.differences += found if limit is None else found[:limit]


def _value(value: Any) -> Value:
    """ClickHouse values as reported: datetimes from the UTC columns made explicitly UTC."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, int | str | date) or value is None:
        return value
    return str(value)


def _row_text(table: str, values: dict[str, Value]) -> str:
    """A whole row in one string, for a key present on one side only; a summary's zero counters
    are left out (it has a dozen; "{}" stands for a row of zeros)."""
    omit_zeros = table != SESSIONS
    shown = [f"{k}={_show(v)}" for k, v in values.items() if not (omit_zeros and v == 0)]
    return "{" + " ".join(shown) + "}"


def _show(value: Value, *, quote: bool = True) -> str:
    """A value as printed: instants in ISO 8601 UTC (milliseconds when they have them)."""
    if value is None:
        return "absent"
    if isinstance(value, datetime):
        spec = "milliseconds" if value.microsecond else "seconds"
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec=spec) + "Z"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str) and quote:
        return repr(value)
    return str(value)
