"""The embedded server's protocol pieces that need no server: SQL scanning,
error parsing, parameter sorting, credentials and compression negotiation."""

from __future__ import annotations

import gzip
import io

import pytest

from clickhouse.auth import UserSpec, authenticate, extract_credentials
from clickhouse.compression import choose_response_encoding, request_decoder, response_encoder
from clickhouse.errors import ClickHouseError, http_status_for
from clickhouse.http_protocol import RequestBody, is_streamable, parse_params
from clickhouse.sql_scan import find_insert_data, output_format


@pytest.mark.parametrize(
    ("statement", "clause", "data", "fmt"),
    [
        (b"INSERT INTO t (a, b)", b" FORMAT Native\n", b"\x20\x01", "Native"),
        (b"insert into db.t", b" values", b" (1, 'x')", "Values"),
        (b"INSERT INTO format", b" FORMAT CSV ", b"1,2", "CSV"),
        (b"INSERT INTO t SETTINGS x = 'FORMAT JSON'", b" FORMAT TSV\r\n", b"1", "TSV"),
        (b"/* c */ INSERT -- FORMAT CSV\nINTO t", b" FORMAT RowBinary\n", b"", "RowBinary"),
        (b"INSERT INTO FUNCTION file('f', 'CSV')", b" FORMAT CSV\n", b"1", "CSV"),
    ],
)
def test_find_insert_data(statement: bytes, clause: bytes, data: bytes, fmt: str) -> None:
    text = statement + clause + data
    found = find_insert_data(text)
    assert found is not None
    assert (found.statement, found.format, text[found.data_offset :]) == (statement, fmt, data)


@pytest.mark.parametrize("text", [b"INSERT INTO t SELECT * FROM s", b"SELECT 1 FORMAT CSV", b""])
def test_statements_without_inline_data(text: bytes) -> None:
    assert find_insert_data(text) is None


def test_insert_data_starts_after_one_line_break_only() -> None:
    """Binary data may begin with blanks or a newline byte; only one separator is eaten."""
    found = find_insert_data(b"INSERT INTO t FORMAT RowBinary \n\n \x00")
    assert found is not None
    assert b"INSERT INTO t FORMAT RowBinary \n\n \x00"[found.data_offset :] == b"\n \x00"


@pytest.mark.parametrize(
    ("sql", "fmt"),
    [
        (b"SELECT 1 FORMAT JSON", "JSON"),
        (b"SELECT 1 FORMAT CSV;", "CSV"),
        (b"SELECT 1 AS format FORMAT Native SETTINGS max_threads = 1", "Native"),
        (b"SELECT format FROM t", None),
        (b"SELECT format('{}', 1)", None),
        (b"SELECT 'FORMAT JSON'", None),
        (b"SELECT 1 -- FORMAT JSON", None),
        (b"SELECT (SELECT 1 FORMAT JSON)", None),
    ],
)
def test_output_format(sql: bytes, fmt: str | None) -> None:
    assert output_format(sql) == fmt


def test_chdb_error_text_is_split_into_code_message_and_name() -> None:
    err = ClickHouseError.from_text(
        "Streaming query failed: Code: 60. DB::Exception: Unknown table 'x'. (UNKNOWN_TABLE)"
    )
    assert (err.code, err.name, err.message) == (60, "UNKNOWN_TABLE", "Unknown table 'x'.")
    nested = ClickHouseError.from_text(
        "Code: 164. DB::Exception: Code: 164. DB::Exception: Cannot modify 'readonly'. "
        "(READONLY) (version 26.9.2.1). (READONLY)"
    )
    assert nested.code == 164
    rendered = err.render("1.2.3")
    assert rendered == "Code: 60. DB::Exception: Unknown table 'x'. (UNKNOWN_TABLE) (version 1.2.3)"


@pytest.mark.parametrize(
    ("code", "status"),
    [(62, 400), (27, 400), (60, 404), (81, 404), (115, 404), (516, 403), (194, 401), (164, 500)],
)
def test_http_status_follows_clickhouse(code: int, status: int) -> None:
    assert http_status_for(code) == status


def test_params_are_sorted_into_protocol_settings_and_bind_parameters() -> None:
    params = parse_params(
        [
            ("query", "SELECT {x:UInt8}"),
            ("database", "db"),
            ("param_x", "1"),
            ("max_threads", "2"),
            ("max_threads", "3"),
            ("enable_http_compression", "1"),
            ("session_id", "s"),
            ("wait_end_of_query", "1"),
            ("user", "u"),
        ]
    )
    assert params.user_params == {"x": "1"}
    assert params.settings == {"max_threads": "3"}  # the last one wins
    assert params.http_settings == {"enable_http_compression": "1"}
    assert (params.database, params.session_id, params.wait_end_of_query) == ("db", "s", True)
    with pytest.raises(ClickHouseError) as err:
        parse_params([("bad-name", "1")])
    assert err.value.code == 115
    with pytest.raises(ClickHouseError) as err:
        parse_params([("compress", "1")])
    assert err.value.code == 48


def test_credentials_sources_and_mixing() -> None:
    basic = {"Authorization": "Basic " + "dTpwdw=="}  # u:pw
    assert extract_credentials(basic, {}) == ("u", "pw")
    assert extract_credentials({"X-ClickHouse-User": "u", "X-ClickHouse-Key": "k"}, {}) == (
        "u",
        "k",
    )
    assert extract_credentials({}, {"user": "u", "password": "p"}) == ("u", "p")
    assert extract_credentials({}, {}) == ("default", "")
    with pytest.raises(ClickHouseError, match="simultaneously"):
        extract_credentials(basic, {"user": "u"})
    users = {"default": UserSpec(), "a": UserSpec("pw", readonly=True)}
    assert authenticate(users, "a", "pw").readonly
    for user, password in (("a", "nope"), ("ghost", ""), ("default", "x")):
        with pytest.raises(ClickHouseError) as err:
            authenticate(users, user, password)
        assert err.value.code == 516


def test_response_encoding_follows_server_preference_and_q_values() -> None:
    assert choose_response_encoding("gzip, zstd") == "zstd"
    assert choose_response_encoding("lz4,zstd,gzip,deflate") == "zstd"
    assert choose_response_encoding("zstd;q=0, gzip") == "gzip"
    assert choose_response_encoding("br") is None
    assert choose_response_encoding(None) is None
    encoder = response_encoder("gzip")
    data = encoder.compress(b"abc" * 1000) + encoder.finish()
    assert gzip.decompress(data) == b"abc" * 1000


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "zstd", "lz4"])
def test_request_bodies_decode_across_frames_and_chunked_framing(encoding: str) -> None:
    payload = b"".join(b"%d,row\n" % i for i in range(50000))
    halves = (payload[:1000], payload[1000:])
    frames = []
    for half in halves:  # two independent frames, as clickhouse-connect sends per block
        encoder = response_encoder(encoding)
        frames.append(encoder.compress(half) + encoder.finish())
    compressed = b"".join(frames)
    chunked = (
        b"".join(
            b"%x\r\n%s\r\n" % (len(compressed[i : i + 3000]), compressed[i : i + 3000])
            for i in range(0, len(compressed), 3000)
        )
        + b"0\r\n\r\n"
    )
    headers = {"Transfer-Encoding": "chunked", "Content-Encoding": encoding}
    body = RequestBody(io.BytesIO(chunked), headers)
    assert body.read_all() == payload


def test_corrupt_and_unknown_encodings_are_errors() -> None:
    with pytest.raises(ClickHouseError) as err:
        request_decoder("rot13")
    assert err.value.code == 89
    body = RequestBody(
        io.BytesIO(b"not gzip at all"), {"Content-Length": "15", "Content-Encoding": "gzip"}
    )
    with pytest.raises(ClickHouseError) as err:
        body.read_all()
    assert err.value.code == 271


def test_only_concatenable_formats_are_streamed() -> None:
    assert all(is_streamable(f) for f in ("Native", "TabSeparated", "JSONEachRow", "CSV"))
    assert not any(is_streamable(f) for f in ("JSON", "CSVWithNames", "Pretty", "Parquet"))
