"""The embedded ClickHouse server, driven by real clients over real HTTP.

Every test talks to a ``python -m clickhouse.server`` subprocess with
clickhouse-connect or raw HTTP (httpx), exactly as the worker, the API and
analysts will. Most share the session server (each in its own database);
lifecycle tests start their own.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from clickhouse.process import EmbeddedClickHouse, EmbeddedClickHouseError
from tests.fixtures.clickhouse import ANALYST_PASSWORD, ANALYST_USER, clickhouse_client

ERROR_BODY = re.compile(
    r"^Code: (\d+)\. DB::Exception: .+ \(([A-Z_]+)\) \(version [^)]+\)\n$", re.S
)


@pytest.fixture
def http(clickhouse_server: EmbeddedClickHouse) -> Iterator[httpx.Client]:
    """Raw HTTP to the shared server, as the default user."""
    base = f"http://{clickhouse_server.host}:{clickhouse_server.port}"
    with httpx.Client(base_url=base, timeout=30) as client:
        yield client


def _db(client: Client) -> str:
    return str(client.database)


def _error_code(response: httpx.Response) -> int:
    """The exception code, checked to agree between header and ClickHouse-style body."""
    match = ERROR_BODY.match(response.text)
    assert match, f"not a ClickHouse error body: {response.text!r}"
    assert response.headers["X-ClickHouse-Exception-Code"] == match.group(1)
    return int(match.group(1))


# -- basics -------------------------------------------------------------------


def test_ping_root_and_replicas_status_answer_ok(http: httpx.Client) -> None:
    for path in ("/ping", "/", "/replicas_status"):
        response = http.get(path)
        assert response.status_code == 200, path
        assert response.text == "Ok.\n", path


def test_query_by_url_body_or_both_with_default_tab_separated_output(http: httpx.Client) -> None:
    by_url = http.get("/", params={"query": "SELECT 1, 'a'"})
    by_post_url = http.post("/", params={"query": "SELECT 2, 'b'"})
    by_body = http.post("/", content=b"SELECT 3, 'c'")
    both = http.post("/", params={"query": "SELECT 4,"}, content=b"'d'")
    assert [r.text for r in (by_url, by_post_url, by_body, both)] == [
        "1\ta\n",
        "2\tb\n",
        "3\tc\n",
        "4\td\n",
    ]
    assert by_url.headers["X-ClickHouse-Format"] == "TabSeparated"


def test_response_headers_clickhouse_connect_reads(http: httpx.Client) -> None:
    query_id = str(uuid.uuid4())
    response = http.post(
        "/", params={"query_id": query_id}, content=b"SELECT number FROM numbers(7)"
    )
    assert response.status_code == 200
    assert response.headers["X-ClickHouse-Query-Id"] == query_id
    assert response.headers["X-ClickHouse-Timezone"]
    assert response.headers["X-ClickHouse-Server-Display-Name"]
    summary = json.loads(response.headers["X-ClickHouse-Summary"])
    assert summary["result_rows"] == "7"
    assert response.text.splitlines() == [str(i) for i in range(7)]


def test_output_format_from_query_param_header_and_non_streamable_format(
    http: httpx.Client,
) -> None:
    sql = b"SELECT number AS n FROM numbers(3)"
    by_param = http.post("/", params={"default_format": "JSONEachRow"}, content=sql)
    by_header = http.post("/", headers={"X-ClickHouse-Format": "CSVWithNames"}, content=sql)
    in_query = http.post("/", content=sql + b" FORMAT JSON")
    assert [json.loads(line)["n"] for line in by_param.text.splitlines()] == [0, 1, 2]
    assert by_header.text == '"n"\n0\n1\n2\n'
    document = json.loads(in_query.text)  # one complete JSON document, not one per chunk
    assert document["rows"] == 3
    assert in_query.headers["X-ClickHouse-Format"] == "JSON"
    assert in_query.headers["Content-Type"].startswith("application/json")


def test_ddl_through_clickhouse_connect(ch_client: Client) -> None:
    ch_client.command("CREATE TABLE t (id UInt64, name String) ENGINE = MergeTree ORDER BY id")
    ch_client.command("ALTER TABLE t ADD COLUMN score Float64 DEFAULT 0")
    described = ch_client.query("DESCRIBE TABLE t").result_rows
    assert [(row[0], row[1]) for row in described] == [
        ("id", "UInt64"),
        ("name", "String"),
        ("score", "Float64"),
    ]
    assert ch_client.command("EXISTS TABLE t") == 1
    assert ch_client.command("SELECT version()") == ch_client.server_version
    ch_client.command("DROP TABLE t")
    assert ch_client.command("EXISTS TABLE t") == 0


# -- inserts --------------------------------------------------------------------

ALL_TYPES_DDL = """
CREATE TABLE all_types (
    s String, lc LowCardinality(String),
    u8 UInt8, u16 UInt16, u32 UInt32, u64 UInt64,
    i8 Int8, i16 Int16, i32 Int32, i64 Int64,
    f Float64, dt DateTime, dt64 DateTime64(3, 'UTC'), d Date,
    ns Nullable(String), ni Nullable(Int32), arr Array(String), arr_n Array(UInt32),
    id UUID, flag Bool, m Map(String, UInt64), dec Decimal(18, 4)
) ENGINE = MergeTree ORDER BY u64
"""


def _all_types_rows() -> list[list[Any]]:
    utc = dt.UTC
    return [
        [
            "héllo\ttab'quote", "lc-a", 255, 65535, 4294967295, 18446744073709551615,
            -128, -32768, -2147483648, -9223372036854775808,
            3.5, dt.datetime(2024, 2, 29, 12, 30, 5), dt.datetime(2024, 1, 2, 3, 4, 5, 678000, utc),
            dt.date(2024, 12, 31), None, None, [], [],
            uuid.UUID("12345678-1234-5678-1234-567812345678"), True, {}, Decimal("-12345.6789"),
        ],
        [
            "", "lc-b", 0, 0, 0, 1, 127, 32767, 2147483647, 9223372036854775807,
            -0.25, dt.datetime(1970, 1, 2, 0, 0, 0), dt.datetime(2030, 6, 1, 0, 0, 0, 1000, utc),
            dt.date(1970, 1, 1), "not null", -7, ["x", "y,z"], [1, 2, 3],
            uuid.UUID(int=0), False, {"k": 1, "k2": 2}, Decimal("0.0001"),
        ],
    ]  # fmt: skip


def _normalise(value: Any) -> Any:
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


@pytest.mark.parametrize("compress", [True, False, "gzip", "zstd"])
def test_insert_every_column_type_through_clickhouse_connect(
    clickhouse_server: EmbeddedClickHouse, ch_client: Client, compress: bool | str
) -> None:
    """clickhouse-connect sends ``INSERT ... FORMAT Native`` (lz4-compressed by default)."""
    ch_client.command(ALL_TYPES_DDL)
    client = clickhouse_client(clickhouse_server, _db(ch_client), compress=compress)
    rows = _all_types_rows()
    summary = client.insert("all_types", rows, column_names=_ALL_TYPES_COLUMNS)
    assert summary.written_rows == 2
    got = client.query(
        f"SELECT {', '.join(_ALL_TYPES_COLUMNS)} FROM all_types ORDER BY u64 DESC"
    ).result_rows
    client.close()
    assert len(got) == 2
    for expected, actual in zip(rows, got, strict=True):
        assert [_normalise(v) for v in actual] == [_normalise(v) for v in expected]


_ALL_TYPES_COLUMNS = [
    "s", "lc", "u8", "u16", "u32", "u64", "i8", "i16", "i32", "i64", "f", "dt", "dt64", "d",
    "ns", "ni", "arr", "arr_n", "id", "flag", "m", "dec",
]  # fmt: skip


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _bstr(text: str) -> bytes:
    raw = text.encode()
    return _varint(len(raw)) + raw


ROWS = [(1, "one"), (2, "two, with comma"), (3, 'three "quoted"\ttab')]


def _native() -> bytes:
    ids = b"".join(struct.pack("<I", i) for i, _ in ROWS)
    names = b"".join(_bstr(n) for _, n in ROWS)
    return (
        _varint(2) + _varint(len(ROWS))
        + _bstr("id") + _bstr("UInt32") + ids
        + _bstr("name") + _bstr("String") + names
    )  # fmt: skip


def _row_binary() -> bytes:
    return b"".join(struct.pack("<I", i) + _bstr(n) for i, n in ROWS)


def _text_rows(fmt: str) -> bytes:
    if fmt == "JSONEachRow":
        return "".join(json.dumps({"id": i, "name": n}) + "\n" for i, n in ROWS).encode()
    if fmt.startswith("CSV"):
        lines = [f'{i},"{n.replace(chr(34), chr(34) * 2)}"' for i, n in ROWS]
        header = ['"id","name"'] if fmt == "CSVWithNames" else []
    else:
        lines = [f"{i}\t{n.replace(chr(9), chr(92) + 't')}" for i, n in ROWS]
        header = ["id\tname"] if fmt == "TabSeparatedWithNames" else []
    return "\n".join(header + lines).encode() + b"\n"


RAW_FORMATS: dict[str, Callable[[], bytes]] = {
    "Native": _native,
    "RowBinary": _row_binary,
    "RowBinaryWithNamesAndTypes": lambda: (
        _varint(2) + _bstr("id") + _bstr("name") + _bstr("UInt32") + _bstr("String") + _row_binary()
    ),
    "JSONEachRow": lambda: _text_rows("JSONEachRow"),
    "CSV": lambda: _text_rows("CSV"),
    "CSVWithNames": lambda: _text_rows("CSVWithNames"),
    "TSV": lambda: _text_rows("TSV"),
    "TabSeparatedWithNames": lambda: _text_rows("TabSeparatedWithNames"),
}


@pytest.mark.parametrize("statement_in", ["url", "body"])
@pytest.mark.parametrize("fmt", list(RAW_FORMATS))
def test_raw_http_insert_formats(
    http: httpx.Client, ch_client: Client, fmt: str, statement_in: str
) -> None:
    ch_client.command("CREATE TABLE t (id UInt32, name String) ENGINE = MergeTree ORDER BY id")
    statement = f"INSERT INTO t FORMAT {fmt}"
    data = RAW_FORMATS[fmt]()
    params = {"database": _db(ch_client)}
    if statement_in == "url":
        response = http.post("/", params={**params, "query": statement}, content=data)
    else:
        response = http.post("/", params=params, content=statement.encode() + b"\n" + data)
    assert response.status_code == 200, response.text
    assert json.loads(response.headers["X-ClickHouse-Summary"])["written_rows"] == "3"
    assert ch_client.query("SELECT id, name FROM t ORDER BY id").result_rows == ROWS


def test_insert_values_and_chunked_gzip_request_body(http: httpx.Client, ch_client: Client) -> None:
    ch_client.command("CREATE TABLE t (id UInt32, name String) ENGINE = Memory")
    params = {"database": _db(ch_client)}
    values = http.post("/", params=params, content=b"INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    assert values.status_code == 200, values.text

    csv = "".join(f"{i},row{i}\n" for i in range(3, 20003)).encode()
    packed = gzip.compress(csv)

    def pieces() -> Iterator[bytes]:  # a generator body is sent chunked
        for start in range(0, len(packed), 4096):
            yield packed[start : start + 4096]

    response = http.post(
        "/",
        params={**params, "query": "INSERT INTO t FORMAT CSV"},
        headers={"Content-Encoding": "gzip"},
        content=pieces(),
    )
    assert response.status_code == 200, response.text
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert ch_client.command("SELECT count(), sum(id) FROM t") == [
        "20002",
        str(sum(range(1, 20003))),
    ]


def test_gzip_response_when_compression_enabled(http: httpx.Client) -> None:
    sql = b"SELECT number FROM numbers(100000)"
    expected = "".join(f"{i}\n" for i in range(100000)).encode()
    headers = {"Accept-Encoding": "gzip"}
    with http.stream(
        "POST", "/", params={"enable_http_compression": "1"}, headers=headers, content=sql
    ) as response:
        raw = b"".join(response.iter_raw())
    assert response.headers["Content-Encoding"] == "gzip"
    assert len(raw) < len(expected) / 2
    assert gzip.decompress(raw) == expected

    with http.stream(
        "POST", "/", params={"enable_http_compression": "0"}, headers=headers, content=sql
    ) as plain:
        assert "Content-Encoding" not in plain.headers
        assert b"".join(plain.iter_raw()) == expected


# -- parameters and settings ----------------------------------------------------


def test_parameterized_queries_server_and_client_side(
    http: httpx.Client, ch_client: Client
) -> None:
    server_side = ch_client.query(
        "SELECT {n:UInt32} * 2, {s:String}", parameters={"n": 21, "s": "it's"}
    )
    assert server_side.result_rows == [(42, "it's")]
    client_side = ch_client.query("SELECT %(n)s * 2, %(s)s", parameters={"n": 21, "s": "it's"})
    assert client_side.result_rows == [(42, "it's")]
    # Long bind parameters make clickhouse-connect switch to a multipart/form-data body.
    many = list(range(3000))
    result = ch_client.query("SELECT length({ids:Array(UInt32)})", parameters={"ids": many})
    assert result.result_rows == [(3000,)]
    raw = http.get("/", params={"query": "SELECT {x:String}", "param_x": "a\\tb"})
    assert raw.text == "a\\tb\n"  # TSV re-escapes the tab the parameter unescaped


def test_unknown_setting_is_rejected_like_clickhouse(http: httpx.Client) -> None:
    response = http.get("/", params={"query": "SELECT 1", "no_such_setting": "1"})
    assert response.status_code == 404
    assert _error_code(response) == 115
    assert "no_such_setting" in response.text


def test_url_settings_are_applied(http: httpx.Client) -> None:
    sql = {"query": "SELECT number FROM numbers(10)"}
    limited = http.get("/", params={**sql, "max_result_rows": "5", "result_overflow_mode": "throw"})
    assert limited.status_code != 200
    assert _error_code(limited) == 396  # TOO_MANY_ROWS_OR_BYTES
    assert http.get("/", params=sql).status_code == 200
    quoted = http.get(
        "/",
        params={
            "query": "SELECT toUInt64(5) AS x FORMAT JSONEachRow",
            "output_format_json_quote_64bit_integers": "1",
        },
    )
    assert quoted.text == '{"x":"5"}\n'


def test_settings_and_database_from_url_do_not_leak_into_a_session(
    http: httpx.Client, ch_client: Client
) -> None:
    session = {"session_id": str(uuid.uuid4())}
    sql = "SELECT count() FROM numbers(10)"
    limited = http.post(
        "/", params={**session, "max_rows_to_read": "5", "database": _db(ch_client)}, content=sql
    )
    assert _error_code(limited) == 158  # TOO_MANY_ROWS
    assert http.post("/", params=session, content=sql).text == "10\n"
    current = http.post("/", params=session, content="SELECT currentDatabase()")
    assert current.text == "default\n"


def test_session_keeps_set_and_temporary_tables(http: httpx.Client) -> None:
    session = {"session_id": str(uuid.uuid4())}
    other = {"session_id": str(uuid.uuid4())}

    def run(params: dict[str, str], sql: str) -> httpx.Response:
        response = http.post("/", params=params, content=sql)
        assert response.status_code == 200, response.text
        return response

    run(session, "CREATE TEMPORARY TABLE tmp (x UInt8)")
    run(session, "INSERT INTO tmp VALUES (1), (2)")
    run(session, "SET max_result_rows = 1")
    run({**session, "max_threads": "1"}, "SELECT 1")  # a URL setting on top of the SET
    assert run(session, "SELECT count() FROM tmp").text == "2\n"
    assert run(session, "SELECT getSetting('max_result_rows')").text == "1\n"
    assert run(other, "SELECT getSetting('max_result_rows')").text == "0\n"
    missing = http.post("/", params={**other, "session_check": "1", "session_id": "nope"})
    assert _error_code(missing) == 372


def test_insert_deduplication_token_drops_a_retried_insert(ch_client: Client) -> None:
    ch_client.command(
        "CREATE TABLE t (id UInt32) ENGINE = MergeTree ORDER BY id "
        "SETTINGS non_replicated_deduplication_window = 100"
    )
    rows = [[1], [2], [3]]
    first = ch_client.insert("t", rows, settings={"insert_deduplication_token": "batch-1"})
    assert first.written_rows == 3
    ch_client.insert("t", rows, settings={"insert_deduplication_token": "batch-1"})  # a retry
    assert ch_client.command("SELECT count() FROM t") == 3
    ch_client.insert("t", rows, settings={"insert_deduplication_token": "batch-2"})
    assert ch_client.command("SELECT count() FROM t") == 6


# -- results ----------------------------------------------------------------------


def test_large_result_is_streamed(ch_client: Client) -> None:
    rows = 3_000_000
    count = total = blocks = 0
    with ch_client.query_row_block_stream(f"SELECT number FROM numbers({rows})") as stream:
        for block in stream:
            blocks += 1
            count += len(block)
            total += sum(row[0] for row in block)
    assert count == rows
    assert total == rows * (rows - 1) // 2
    assert blocks > 1


def test_streamed_response_is_chunked_and_starts_before_the_query_ends(
    http: httpx.Client,
) -> None:
    sql = b"SELECT number, sleepEachRow(0.2) FROM numbers(5) SETTINGS max_block_size = 1"
    started = time.monotonic()
    with http.stream("POST", "/", content=sql) as response:
        pieces = response.iter_bytes()
        first = next(pieces)
        first_at = time.monotonic() - started
        rest = b"".join(pieces)
    elapsed = time.monotonic() - started
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert (first + rest).decode().splitlines() == [f"{i}\t0" for i in range(5)]
    assert first_at < elapsed / 2


def test_error_after_streaming_started_reaches_clients(
    http: httpx.Client, ch_client: Client
) -> None:
    sql = "SELECT throwIf(number = 1500000) FROM numbers(3000000)"
    with pytest.raises(DatabaseError, match="395"), ch_client.query_row_block_stream(sql) as s:
        for _block in s:
            pass
    with http.stream("POST", "/", content=sql.encode()) as response:
        body = b"".join(response.iter_bytes())
    tag = response.headers["X-ClickHouse-Exception-Tag"]
    assert response.status_code == 200  # too late for a status: the error is in the body
    assert f"__exception__\r\n{tag}\r\nCode: 395.".encode() in body
    assert body.endswith(f" {tag}\r\n__exception__\r\n".encode())


# -- errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "sql", "status", "code"),
    [
        ({}, "SELEC 1", 400, 62),
        ({}, "SELECT * FROM no_such_table", 404, 60),
        ({"database": "no_such_db"}, "SELECT 1", 404, 81),
        ({}, "SELECT 1; SELECT 2", 400, 62),
        ({}, "SELECT no_such_function(1)", 404, 46),
    ],
)
def test_errors_have_clickhouse_status_code_header_and_body(
    http: httpx.Client, params: dict[str, str], sql: str, status: int, code: int
) -> None:
    response = http.post("/", params=params, content=sql)
    assert response.status_code == status
    assert _error_code(response) == code


def test_clickhouse_connect_raises_database_error_with_server_text(ch_client: Client) -> None:
    with pytest.raises(DatabaseError) as err:
        ch_client.query("SELECT * FROM no_such_table")
    assert "Code: 60" in str(err.value)
    assert "no_such_table" in str(err.value)
    with pytest.raises(DatabaseError, match="Code: 62"):
        ch_client.command("SELEC 1")


# -- users --------------------------------------------------------------------------


def test_analyst_reads_but_cannot_write(
    clickhouse_server: EmbeddedClickHouse, ch_client: Client, http: httpx.Client
) -> None:
    ch_client.command("CREATE TABLE t (id UInt32) ENGINE = MergeTree ORDER BY id")
    ch_client.insert("t", [[1], [2]])
    analyst = clickhouse_client(clickhouse_server, _db(ch_client), ANALYST_USER, ANALYST_PASSWORD)
    assert analyst.query("SELECT sum(id) FROM t", settings={"max_threads": 1}).result_rows == [(3,)]
    with pytest.raises(DatabaseError, match="164"):
        analyst.insert("t", [[3]])
    with pytest.raises(DatabaseError, match="164"):
        analyst.command("CREATE TABLE t2 (id UInt32) ENGINE = Memory")
    with pytest.raises(DatabaseError, match="164"):
        analyst.command("SET readonly = 0")
    analyst.close()
    auth = (ANALYST_USER, ANALYST_PASSWORD)
    refused = http.post("/", auth=auth, content=f"DROP TABLE {_db(ch_client)}.t")
    assert refused.status_code == 500  # ClickHouse maps READONLY to 500
    assert _error_code(refused) == 164
    assert ch_client.command("SELECT count() FROM t") == 2


def test_credentials_from_basic_auth_headers_or_params(http: httpx.Client) -> None:
    analyst_headers = {"X-ClickHouse-User": ANALYST_USER, "X-ClickHouse-Key": ANALYST_PASSWORD}
    as_analyst = [
        http.post("/", auth=(ANALYST_USER, ANALYST_PASSWORD), content="SELECT currentUser()"),
        http.post("/", headers=analyst_headers, content="SELECT getSetting('readonly')"),
        http.post(
            "/",
            params={"user": ANALYST_USER, "password": ANALYST_PASSWORD},
            content="SELECT getSetting('readonly')",
        ),
    ]
    assert [r.status_code for r in as_analyst] == [200, 200, 200]
    assert [r.text for r in as_analyst[1:]] == ["2\n", "2\n"]  # read-only sessions
    assert http.post("/", content="SELECT getSetting('readonly')").text == "0\n"
    mixed = http.post(
        "/", auth=(ANALYST_USER, ANALYST_PASSWORD), params={"user": "default"}, content="SELECT 1"
    )
    assert _error_code(mixed) == 516


@pytest.mark.parametrize(
    "auth", [(ANALYST_USER, "wrong"), ("nobody", ""), ("default", "not-empty")]
)
def test_wrong_credentials_are_refused(
    clickhouse_server: EmbeddedClickHouse, http: httpx.Client, auth: tuple[str, str]
) -> None:
    response = http.post("/", auth=auth, content="SELECT 1")
    assert response.status_code == 403  # AUTHENTICATION_FAILED, as clickhouse-server answers
    assert _error_code(response) == 516
    assert "Authentication failed" in response.text
    with pytest.raises(DatabaseError, match="516"):
        clickhouse_client(clickhouse_server, username=auth[0], password=auth[1])


def test_get_requests_are_read_only(http: httpx.Client, ch_client: Client) -> None:
    params = {"database": _db(ch_client)}
    create = "CREATE TABLE t (id UInt32) ENGINE = Memory"
    refused = http.get("/", params={**params, "query": create})
    assert _error_code(refused) == 164
    assert "method GET implies readonly" in refused.text
    assert http.post("/", params=params, content=create).status_code == 200
    assert http.get("/", params={**params, "query": "SELECT count() FROM t"}).text == "0\n"


# -- concurrency --------------------------------------------------------------------


def test_concurrent_clients_insert_and_read_exact_counts(
    clickhouse_server: EmbeddedClickHouse, ch_client: Client
) -> None:
    ch_client.command("CREATE TABLE t (writer UInt8, n UInt32) ENGINE = MergeTree ORDER BY n")
    batches, batch_size = 20, 500
    errors: list[BaseException] = []

    def writer(number: int) -> None:
        try:
            client = clickhouse_client(clickhouse_server, _db(ch_client))
            for batch in range(batches):
                start = batch * batch_size
                client.insert("t", [[number, start + i] for i in range(batch_size)])
                seen = client.command(f"SELECT count() FROM t WHERE writer = {number}")
                assert seen == start + batch_size
            client.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    expected = batches * batch_size
    assert ch_client.query(
        "SELECT writer, count(), uniqExact(n) FROM t GROUP BY writer ORDER BY writer"
    ).result_rows == [
        (1, expected, expected),
        (2, expected, expected),
    ]


def test_long_query_does_not_stall_short_ones(clickhouse_server: EmbeddedClickHouse) -> None:
    long_done = threading.Event()
    timings: dict[str, float] = {}

    def long_query() -> None:
        client = clickhouse_client(clickhouse_server)
        started = time.monotonic()
        client.command("SELECT sleep(2)")
        timings["long"] = time.monotonic() - started
        long_done.set()
        client.close()

    short = clickhouse_client(clickhouse_server)
    thread = threading.Thread(target=long_query)
    thread.start()
    time.sleep(0.3)  # let the long query get going
    started = time.monotonic()
    for _ in range(5):
        assert short.command("SELECT 1") == 1
    timings["short"] = time.monotonic() - started
    finished_first = not long_done.is_set()
    thread.join()
    short.close()
    assert finished_first, timings
    assert timings["short"] < timings["long"] / 2, timings


# -- lifecycle ----------------------------------------------------------------------


def test_sigterm_exits_cleanly_and_a_restart_keeps_the_data(tmp_path: Path) -> None:
    server = EmbeddedClickHouse(tmp_path / "data")
    with server:
        client = clickhouse_client(server)
        client.command("CREATE TABLE kept (id UInt32) ENGINE = MergeTree ORDER BY id")
        client.insert("kept", [[1], [2], [3]])
        client.close()
        in_flight: dict[str, Any] = {}

        def slow_query() -> None:
            with httpx.Client(timeout=30) as http:
                in_flight["response"] = http.post(server.url, content=b"SELECT sleep(1), 7")

        thread = threading.Thread(target=slow_query)
        thread.start()
        time.sleep(0.3)
        assert server.stop() == 0  # SIGTERM: the in-flight query may finish, then exit 0
        assert not server.running
        thread.join()
        assert in_flight["response"].text == "0\t7\n"
        assert "stopped" in server.stderr_tail()

        port = server.port
        server.start()
        assert server.port == port  # same URL after a restart
        client = clickhouse_client(server)
        assert client.query("SELECT id FROM kept ORDER BY id").result_rows == [(1,), (2,), (3,)]
        client.close()
    assert server.stop() == 0


def test_second_server_on_the_same_directory_is_refused(
    clickhouse_server: EmbeddedClickHouse,
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "clickhouse.server", "--path", str(clickhouse_server.path),
         "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(clickhouse_server.path.resolve()) in lines[0]
    assert f"pid {clickhouse_server.pid}" in lines[0]

    duplicate = EmbeddedClickHouse(clickhouse_server.path, startup_timeout=30)
    with pytest.raises(EmbeddedClickHouseError, match="already in use"):
        duplicate.start()
    duplicate.close()


# -- protocol edge cases ----------------------------------------------------------------


def test_a_truncated_insert_body_is_not_committed(
    clickhouse_server: EmbeddedClickHouse, ch_client: Client
) -> None:
    ch_client.command("CREATE TABLE t (id UInt32) ENGINE = MergeTree ORDER BY id")
    body = b"".join(b"%d\n" % i for i in range(1000))
    head = (
        f"POST /?database={_db(ch_client)}&query=INSERT%20INTO%20t%20FORMAT%20CSV HTTP/1.1\r\n"
        f"Host: localhost\r\nContent-Length: {len(body) + 100}\r\n\r\n"
    )
    with socket.create_connection((clickhouse_server.host, clickhouse_server.port)) as sock:
        sock.sendall(head.encode() + body)
        sock.shutdown(socket.SHUT_WR)  # the client dies 100 bytes short
        sock.settimeout(30)
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
    assert answer.startswith(b"HTTP/1.1 500"), answer[:200]
    assert b"X-ClickHouse-Exception-Code: 33" in answer
    assert ch_client.command("SELECT count() FROM t") == 0


def test_one_session_serves_one_request_at_a_time(clickhouse_server: EmbeddedClickHouse) -> None:
    base = f"http://{clickhouse_server.host}:{clickhouse_server.port}"
    session = {"session_id": str(uuid.uuid4())}
    slow: dict[str, httpx.Response] = {}

    def run_slow() -> None:
        with httpx.Client(base_url=base, timeout=30) as client:
            slow["response"] = client.post("/", params=session, content="SELECT sleep(1)")

    thread = threading.Thread(target=run_slow)
    thread.start()
    time.sleep(0.4)
    with httpx.Client(base_url=base, timeout=30) as client:
        locked = client.post("/", params=session, content="SELECT 1")
        thread.join()
        after = client.post("/", params=session, content="SELECT 1")
    assert _error_code(locked) == 373  # SESSION_IS_LOCKED
    assert slow["response"].text == "0\n"
    assert after.text == "1\n"


def test_analyst_cannot_lift_read_only_through_url_settings(http: httpx.Client) -> None:
    auth = (ANALYST_USER, ANALYST_PASSWORD)
    lifted = http.post("/", auth=auth, params={"readonly": "0"}, content="SELECT 1")
    assert _error_code(lifted) == 164
    in_query = http.post("/", auth=auth, content="SELECT 1 SETTINGS readonly = 0")
    assert _error_code(in_query) == 164


def test_unknown_content_encoding_is_refused(http: httpx.Client) -> None:
    response = http.post("/", headers={"Content-Encoding": "rot13"}, content=b"SELECT 1")
    assert response.status_code == 500
    assert _error_code(response) == 89  # UNKNOWN_COMPRESSION_METHOD


def test_analyst_cannot_reach_files_network_or_processes(http: httpx.Client) -> None:
    """chDB has no grants; the server refuses what an analyst without source grants can't do."""
    auth = (ANALYST_USER, ANALYST_PASSWORD)
    for sql in (
        "SELECT * FROM file('/proc/self/environ', 'LineAsString')",
        "SELECT * FROM `url` ('http://127.0.0.1:1/', 'LineAsString')",
        "SELECT count() FROM (SELECT * FROM executable('x.sh', 'TSV', 'a String'))",
    ):
        refused = http.post("/", auth=auth, content=sql)
        assert refused.status_code == 403, sql
        assert _error_code(refused) == 497, sql
    allowed = http.post("/", auth=auth, content="SELECT sum(number) FROM numbers(4)")
    assert allowed.text == "6\n"
    outfile = http.post("/", content="SELECT 1 INTO OUTFILE '/tmp/never-written.csv'")
    assert _error_code(outfile) == 358  # INTO_OUTFILE_NOT_ALLOWED, for every user
    assert not Path("/tmp/never-written.csv").exists()
