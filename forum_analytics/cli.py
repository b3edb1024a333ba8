"""The `forum-analytics` command.

Sub-commands import their stage lazily, so `--help` is instant and a bad setting is
reported (by name, without a stack trace) before anything starts.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time
from functools import partial
from pathlib import Path
from typing import Annotated, Any, NoReturn
from urllib.parse import urlsplit

import typer

from forum_analytics.settings import Settings, SettingsError, get_settings

app = typer.Typer(
    name="forum-analytics",
    help="Streaming analytics for Q&A forums.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
clickhouse_app = typer.Typer(help="The embedded ClickHouse server (chDB behind HTTP).")
tokens_app = typer.Typer(help="API tokens for the report API.")
app.add_typer(clickhouse_app, name="clickhouse")
app.add_typer(tokens_app, name="tokens")
users_app = typer.Typer(help="Users and groups: the forum-users and forum-groups topics.")
app.add_typer(users_app, name="users")
groups_app = typer.Typer(help="Analytics groups: organizations from users' email domains.")
app.add_typer(groups_app, name="groups")

Silent = Annotated[bool, typer.Option("--silent", help="Print nothing but errors.")]


def _settings() -> Settings:
    try:
        return get_settings()
    except SettingsError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


@contextmanager
def _clickhouse_errors(command: str, code: int = 1) -> Iterator[None]:
    """Report ClickHouse being unreachable or refusing, in one line, with exit code `code`."""
    from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

    logging.getLogger("clickhouse_connect").setLevel(logging.CRITICAL)  # we say it once, below
    try:
        yield
    except OperationalError as exc:
        parts = urlsplit(get_settings().clickhouse_url)
        errno = re.search(r"\[Errno \d+\] [^\"')]+", str(exc))
        reason = errno.group(0) if errno else _first_line(exc)
        typer.echo(
            f"{command}: cannot reach ClickHouse at {parts.hostname}:{parts.port}: {reason}",
            err=True,
        )
        raise typer.Exit(code) from None
    except ClickHouseError as exc:
        typer.echo(f"{command}: ClickHouse error: {_first_line(exc)}", err=True)
        raise typer.Exit(code) from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else repr(exc)


def _logging(level: int = logging.INFO) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per health probe is noise


@app.command()
def dev(
    data_dir: Annotated[Path, typer.Option(help="Where the dev stack keeps its data.")] = Path(
        ".dev-data"
    ),
    kafka_port: Annotated[int, typer.Option(help="Broker port; 0 picks a free one.")] = 9092,
    clickhouse_port: Annotated[int, typer.Option(help="ClickHouse port; 0: free.")] = 8123,
    api_port: Annotated[int | None, typer.Option(help="API port; 0: free.")] = None,
    simulate: Annotated[
        bool,
        typer.Option(
            "--simulate", help="Feed it a simulated forum: weeks of history, then live traffic."
        ),
    ] = False,
    simulate_days: Annotated[int, typer.Option(min=1, max=365, help="Days of history.")] = 21,
    simulate_rate: Annotated[
        float, typer.Option(min=0.1, max=100_000, help="Live events per second.")
    ] = 5.0,
    simulate_users: Annotated[int, typer.Option(min=1, max=1_000_000, help="Members.")] = 500,
) -> None:
    """Run the whole stack on this machine: broker, ClickHouse, migrations, worker, API."""
    from forum_analytics.dev import DevStack, Simulation

    settings = _settings()
    _logging()
    stack = DevStack(
        settings,
        data_dir=data_dir,
        kafka_port=kafka_port,
        clickhouse_port=clickhouse_port,
        api_port=settings.api_port if api_port is None else api_port,
        simulation=Simulation(simulate_days, simulate_rate, simulate_users) if simulate else None,
    )
    raise typer.Exit(stack.run())


@app.command()
def worker() -> None:
    """Consume `forum-events` and write to ClickHouse (runs until SIGTERM)."""
    from streams.worker import run_worker

    settings = _settings()
    _logging()
    raise typer.Exit(run_worker(settings))


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Default: ANALYTICS_API_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Default: ANALYTICS_API_PORT.")] = None,
) -> None:
    """Serve the report API and pages."""
    import uvicorn

    from api.app import create_app

    settings = _settings()
    _logging()
    uvicorn.run(
        create_app(settings),
        host=host or settings.api_host,
        port=settings.api_port if port is None else port,
        log_level="info",
        timeout_graceful_shutdown=5,
    )


@app.command()
def migrate(silent: Silent = False) -> None:
    """Create the database, apply pending migrations and the raw-events TTL (safe to re-run)."""
    from clickhouse.client import connect
    from clickhouse.migrate import MigrationError
    from clickhouse.migrate import migrate as run_migrations
    from clickhouse.retention import apply_raw_events_ttl

    settings = _settings()

    def say(message: str) -> None:
        if not silent:
            typer.echo(message)

    with _clickhouse_errors("migrate"):
        try:
            applied = run_migrations(
                settings.clickhouse_url, settings.clickhouse_database, progress=say
            )
        except MigrationError as exc:
            typer.echo(f"migrate: {exc}", err=True)
            raise typer.Exit(1) from None
        # Retention is a setting, not a migration: it follows ANALYTICS_RAW_EVENTS_TTL_DAYS.
        client = connect(settings.clickhouse_url, database=settings.clickhouse_database)
        try:
            retention = apply_raw_events_ttl(client, settings.raw_events_ttl_days)
        finally:
            client.close()
    say(f"{len(applied)} migration(s) applied; schema is up to date.")
    say(retention)


@clickhouse_app.command("serve")
def clickhouse_serve(
    path: Annotated[Path, typer.Option(help="chDB data directory (created if missing).")],
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8123,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
) -> None:
    """Serve an embedded ClickHouse (chDB) over ClickHouse's HTTP interface.

    Users: `default`, with the password of ANALYTICS_CLICKHOUSE_URL, and the read-only
    analyst, ANALYTICS_CLICKHOUSE_ANALYST_USER / _PASSWORD.
    """
    from clickhouse.server import ServerStartError, serve, users_from_options

    settings = _settings()
    _logging()
    users = users_from_options(
        settings.clickhouse_password,
        settings.clickhouse_analyst_user,
        settings.clickhouse_analyst_password,
    )
    try:
        serve(path, port, host, users)
    except ServerStartError as exc:
        typer.echo(f"clickhouse serve: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None


@tokens_app.command("create")
def tokens_create(
    role: Annotated[str, typer.Option(help="admin or moderator.")],
    name: Annotated[str, typer.Option(help="Who or what the token is for.")],
) -> None:
    """Create an API token; it is printed once, alone on the last line."""
    from api.tokens import Role, create_token
    from clickhouse.client import connect

    try:
        parsed = Role(role)
    except ValueError:
        typer.echo(f"--role must be admin or moderator, not {role!r}", err=True)
        raise typer.Exit(2) from None
    with _clickhouse_errors("tokens create"):
        token = create_token(connect(_settings().clickhouse_url), name=name, role=parsed)
    typer.echo(f"Created {parsed.value} token {name!r}. Keep it now; it is not shown again:")
    typer.echo(token)


@tokens_app.command("list")
def tokens_list() -> None:
    """List tokens (ids, names, roles; never the secrets)."""
    from api.tokens import list_tokens
    from clickhouse.client import connect

    with _clickhouse_errors("tokens list"):
        tokens = list_tokens(connect(_settings().clickhouse_url))
    for info in tokens:
        state = f"revoked {info.revoked_at:%Y-%m-%d %H:%M}" if info.revoked_at else "active"
        typer.echo(
            f"{info.token_id}  {info.role:<9}  {info.created_at:%Y-%m-%d}  {state}  {info.name}"
        )


@tokens_app.command("revoke")
def tokens_revoke(token_id: Annotated[str, typer.Argument(help="The id shown by `list`.")]) -> None:
    """Revoke a token at once."""
    from api.tokens import revoke_token
    from clickhouse.client import connect

    with _clickhouse_errors("tokens revoke"):
        revoked = revoke_token(connect(_settings().clickhouse_url), token_id)
    if not revoked:
        typer.echo(f"no active token with id {token_id!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {token_id}")


@users_app.command("import")
def users_import(
    file: Annotated[Path, typer.Argument(help="JSON Lines: one user or group object a line.")],
    silent: Silent = False,
) -> None:
    """Publish users and groups from JSON Lines, groups first (a first load).

    The whole file is checked first: if any line is bad, every bad line is listed and
    nothing is published. Exit codes: 0 published, 1 bad or unreadable file or Kafka
    unreachable, 2 bad settings.
    """
    from forum_analytics.user_import import (
        UserImportError,
        describe_errors,
        open_producer,
        read_import_file,
        send_records,
        summary,
    )

    settings = _settings()
    try:
        parsed = read_import_file(file)
        if parsed.errors:
            for line in describe_errors(parsed.errors):
                typer.echo(f"users import: {line}", err=True)
            raise typer.Exit(1)
        with open_producer(settings) as producer:
            _with_progress(parsed.total, silent, partial(send_records, producer, parsed))
    except UserImportError as exc:
        typer.echo(f"users import: {exc}", err=True)
        raise typer.Exit(1) from None
    if not silent:
        typer.echo(summary(parsed, settings))


def _with_progress(total: int, silent: bool, send: Callable[..., None]) -> None:
    """Run `send`, with a progress bar on stderr (advanced by the callback `send` is given)
    unless `silent`."""
    if silent:
        send()
        return
    with typer.progressbar(length=total, label="publishing", file=sys.stderr) as bar:
        send(bar.update)


@groups_app.command("from-email-domains")
def groups_from_email_domains(silent: Silent = False) -> None:
    """Put each user in their email domain's organization group (webmail: none).

    Reads users and groups from ClickHouse and publishes only what changes (new or
    re-enabled groups first, then users) to forum-groups/forum-users; the worker applies
    them. Safe to re-run. Exit codes: 0 done, 1 ClickHouse or Kafka unreachable, 2 bad
    settings.
    """
    from datetime import UTC, datetime

    from forum_analytics.organizations_command import (
        OrganizationsError,
        open_publisher,
        plan_organizations,
        read_groups,
        read_users,
        send_plan,
    )

    settings = _settings()
    try:
        users, groups = read_users(settings), read_groups(settings)
        plan = plan_organizations(users, groups, datetime.now(UTC))
        if plan.total:
            with open_publisher(settings) as producer:
                _with_progress(plan.total, silent, partial(send_plan, producer, plan))
    except OrganizationsError as exc:
        typer.echo(f"groups from-email-domains: {exc}", err=True)
        raise typer.Exit(1) from None
    if not silent:
        typer.echo(plan.summary())


@app.command()
def simulate(
    backfill: Annotated[
        int | None,
        typer.Option(
            "--backfill",
            metavar="DAYS",
            min=1,
            max=3650,
            help="Send DAYS of history, ending at --end, as fast as the broker takes it.",
        ),
    ] = None,
    live: Annotated[
        bool, typer.Option("--live", help="Send live traffic (now), after any history.")
    ] = False,
    rate: Annotated[
        float, typer.Option(min=0.1, max=1_000_000, help="Live events per second.")
    ] = 20.0,
    duration: Annotated[
        float | None,
        typer.Option(min=1, help="Seconds of live traffic (default: until Ctrl-C or SIGTERM)."),
    ] = None,
    users: Annotated[int, typer.Option(min=1, max=10_000_000, help="Forum members.")] = 500,
    seed: Annotated[int, typer.Option(help="Same seed, users and --end: same forum.")] = 1,
    end: Annotated[
        str | None,
        typer.Option(
            help="End of the history: YYYY-MM-DD (midnight UTC) or RFC 3339 (default: now)."
        ),
    ] = None,
    late: Annotated[float, typer.Option(min=0, max=0.5, help="Share of events sent late.")] = 0.01,
    duplicates: Annotated[
        float, typer.Option(min=0, max=0.5, help="Share of events sent twice.")
    ] = 0.005,
    truth: Annotated[
        Path | None,
        typer.Option(help="Write the expected figures of what was sent to this JSON file."),
    ] = None,
    settings_example: Annotated[
        bool,
        typer.Option(
            "--settings-example", help="Print segment settings matching the groups, and exit."
        ),
    ] = False,
    silent: Silent = False,
) -> None:
    """Simulate a realistic forum: users, groups, visits, every event type, sent to Kafka.

    Users and groups are published first. Exit codes: 0 sent, 1 Kafka unreachable or a
    file not writable, 2 bad options or settings.
    """
    from forum.catalogue import segment_settings
    from forum_analytics.simulate_command import SimulateError, SimulateRequest
    from forum_analytics.simulate_command import simulate as run_simulation

    if settings_example:
        for name, value in segment_settings().items():
            typer.echo(f"{name}='{value}'")
        return
    if end is not None and backfill is None:
        _usage("simulate: --end is the end of the history: it needs --backfill")
    if backfill is None and not live:
        _usage("simulate: say what to send: --backfill DAYS, --live, or both")
    if end is not None and live:
        _usage("simulate: --end with --live would leave a gap: live traffic starts now")
    if duration is not None and not live:
        _usage("simulate: --duration is for live traffic: it needs --live")
    end_ms = None if end is None else _end_ms(end)
    settings = _settings()
    request = SimulateRequest(
        seed, users, backfill, end_ms, live, rate, duration, late, duplicates, truth, silent
    )
    try:
        summary = run_simulation(settings, request)
    except SimulateError as exc:
        typer.echo(f"simulate: {exc}", err=True)
        raise typer.Exit(1) from None
    if not silent:
        for line in summary.lines(settings):
            typer.echo(line)


def _usage(message: str) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(2)


def _end_ms(text: str) -> int:
    """--end as epoch ms: a date (midnight UTC) or a time with its UTC offset, not in the
    future."""
    from streams.events import datetime_to_ms, now_ms

    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            moment = datetime.combine(date.fromisoformat(text), time(), UTC)
        else:
            moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        _usage(
            "simulate: --end must be a date like 2026-03-01 or a time with its offset like "
            f"2026-03-01T12:00:00Z, not {text!r}"
        )
    ms = datetime_to_ms(moment)
    if ms > now_ms():
        _usage(f"simulate: --end {text} is in the future: history ends now at the latest")
    return ms


@app.command()
def verify(
    from_day: Annotated[
        str | None, typer.Option("--from", help="First day (YYYY-MM-DD, in the time zone).")
    ] = None,
    to_day: Annotated[str | None, typer.Option("--to", help="Last day, inclusive.")] = None,
    limit: Annotated[
        int, typer.Option(min=0, help="Print at most N differences (all are counted).")
    ] = 50,
    silent: Silent = False,
) -> None:
    """Recompute sessions and summaries from `events`; print every difference.

    Exit codes: 0 no difference, 1 differences, 2 bad arguments, 3 ClickHouse unreachable.
    """
    from clickhouse.client import connect
    from clickhouse.verify import verify as run_verify

    def day(option: str, value: str | None) -> date | None:
        if value is None:
            return None
        # date.fromisoformat also takes 20260301 and 2026-W09; the contract is YYYY-MM-DD only.
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            try:
                return date.fromisoformat(value)
            except ValueError:
                pass
        typer.echo(f"verify: {option} must be a date like 2026-03-01, not {value!r}", err=True)
        raise typer.Exit(2)

    first, last = day("--from", from_day), day("--to", to_day)
    if first and last and first > last:
        typer.echo(f"verify: --from {first} is after --to {last}", err=True)
        raise typer.Exit(2)
    settings = _settings()

    def progress(message: str) -> None:
        if not silent:
            typer.echo(message, err=True)

    with _clickhouse_errors("verify", code=3):
        client = connect(settings.clickhouse_url)
        try:
            report = run_verify(client, settings, first, last, limit=limit, progress=progress)
            progress("checking segment totals")
            segments = _segment_differences(client, settings, first, last)
        finally:
            client.close()
    shown = report.differences[:limit]
    for difference in shown:
        typer.echo(str(difference))
    more = f"; {len(shown)} shown (--limit {limit})" if len(shown) < report.total else ""
    typer.echo(report.summary() + more)
    for segment_difference in segments:
        typer.echo(str(segment_difference))
    raise typer.Exit(0 if report.ok and not segments else 1)


def _segment_differences(
    client: Any, settings: Settings, first: date | None, last: date | None
) -> list[Any]:
    """Segment totals over the range (default: every day with data) against their
    recomputation from the group rows; nothing to check before migration 0005."""
    from zoneinfo import ZoneInfo

    from clickhouse.verify_segments import verify_segments
    from forum_analytics.segments import resolve_segments

    tables = client.query("SELECT name FROM system.tables WHERE database = currentDatabase()")
    if ("group_member_hours",) not in {tuple(r) for r in tables.result_rows}:
        return []
    bounds = client.query("SELECT min(day), max(day), count() FROM hourly_user_summary")
    low, high, rows = bounds.result_rows[0]
    if not rows:
        return []
    zone = ZoneInfo(settings.time_zone)
    return list(
        verify_segments(client, resolve_segments(settings), first or low, last or high, zone)
    )


@app.command()
def bench(
    events: Annotated[int, typer.Option(min=1000, help="Events to send.")] = 100_000,
    users: Annotated[int, typer.Option(min=1, help="Distinct users.")] = 2_000,
    quick: Annotated[bool, typer.Option(help="20,000 events: a smoke run.")] = False,
) -> None:
    """Measure the worker's events/s against a raw consumer that only decodes, in one run.

    Starts its own broker and ClickHouse in a temporary directory; prints a Markdown table.
    """
    from forum_analytics.bench import run_bench

    result = run_bench(20_000 if quick else events, users)
    typer.echo(result.table())


def main() -> None:
    """Console entry point."""
    from forum_analytics.processes import die_with_parent_if_asked

    die_with_parent_if_asked()
    app()


if __name__ == "__main__":
    main()
