"""Just enough SQL lexing to route an HTTP request the way clickhouse-server does.

ClickHouse concatenates the ``query`` URL parameter, a newline and the request
body, parses the statement and, for ``INSERT ... FORMAT X`` / ``VALUES``, reads
the rest of the stream as data. chDB takes the statement and the data
separately (``send_insert``), so the server must find where the statement ends
without parsing the data (which may be binary). It also needs the output format
named by a trailing ``FORMAT`` clause, to know whether a result can be streamed
chunk by chunk. A full parser is not needed: tokens, quoting, comments and
bracket depth are enough, and the engine still parses everything for real.

Works on bytes so binary data after the statement is never decoded.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

_WORD_RE = re.compile(rb"[A-Za-z_][A-Za-z0-9_$]*")
_SPACE_RE = re.compile(rb"[ \t\n\r\f\v]+")
_NUMBER_RE = re.compile(rb"[0-9][0-9A-Za-z_.]*")


@dataclass(frozen=True)
class Token:
    """A lexical token: ``kind`` is word, string, quoted, punct or number."""

    kind: str
    text: bytes
    start: int
    end: int
    depth: int

    @property
    def upper(self) -> str:
        return self.text.decode("latin-1").upper() if self.kind == "word" else ""


@dataclass(frozen=True)
class InsertData:
    """An INSERT whose data follows the statement in the request stream."""

    statement: bytes
    format: str
    data_offset: int


def _skip_block_comment(text: bytes, pos: int) -> int:
    """Skip a (possibly nested, as in ClickHouse) ``/* */`` comment starting at pos."""
    depth = 0
    n = len(text)
    while pos < n:
        if text.startswith(b"/*", pos):
            depth += 1
            pos += 2
        elif text.startswith(b"*/", pos):
            depth -= 1
            pos += 2
            if depth == 0:
                return pos
        else:
            pos += 1
    return n


def _skip_quoted(text: bytes, pos: int, quote: int) -> int:
    """Skip a quoted literal or identifier; backslash escapes and doubled quotes."""
    n = len(text)
    pos += 1
    while pos < n:
        ch = text[pos]
        if ch == 0x5C:  # backslash
            pos += 2
            continue
        if ch == quote:
            if pos + 1 < n and text[pos + 1] == quote:
                pos += 2
                continue
            return pos + 1
        pos += 1
    return n


def tokens(text: bytes, start: int = 0) -> Iterator[Token]:
    """Yield tokens of ``text`` from ``start``, skipping whitespace and comments."""
    pos = start
    depth = 0
    n = len(text)
    while pos < n:
        ch = text[pos]
        if m := _SPACE_RE.match(text, pos):
            pos = m.end()
        elif text.startswith(b"--", pos) or ch == 0x23:  # "--" or "#" line comment
            eol = text.find(b"\n", pos)
            pos = n if eol < 0 else eol + 1
        elif text.startswith(b"/*", pos):
            pos = _skip_block_comment(text, pos)
        elif ch in (0x27, 0x22, 0x60):  # ' " `
            end = _skip_quoted(text, pos, ch)
            yield Token("string" if ch == 0x27 else "quoted", text[pos:end], pos, end, depth)
            pos = end
        elif m := _WORD_RE.match(text, pos):
            yield Token("word", m.group(), pos, m.end(), depth)
            pos = m.end()
        elif m := _NUMBER_RE.match(text, pos):
            yield Token("number", m.group(), pos, m.end(), depth)
            pos = m.end()
        else:
            if ch in b"([{":
                depth += 1
            yield Token("punct", text[pos : pos + 1], pos, pos + 1, depth)
            if ch in b")]}":
                depth = max(0, depth - 1)
            pos += 1


def first_keyword(text: bytes) -> str:
    """The statement's leading keyword in upper case ("" if there is none)."""
    for tok in tokens(text):
        return tok.upper
    return ""


def _data_start_after_format(text: bytes, pos: int) -> int:
    """Where data begins after ``FORMAT name``, by ClickHouse's rule.

    Spaces and tabs are skipped, then at most one line break: data starts on
    the next line if there is one, so binary data starting with a blank byte
    is not eaten.
    """
    n = len(text)
    while pos < n and text[pos] in b" \t\f":
        pos += 1
    if pos < n and text[pos] == 0x0D:
        pos += 1
    if pos < n and text[pos] == 0x0A:
        pos += 1
    return pos


def _skip_insert_target(toks: Iterator[Token]) -> Token | None:
    """Consume ``INTO [TABLE] name`` or ``INTO FUNCTION f(...)``; return the next token."""
    tok = next(toks, None)
    while tok is not None and tok.upper != "INTO":
        tok = next(toks, None)
    tok = next(toks, None)
    if tok is not None and tok.upper == "TABLE":
        tok = next(toks, None)
    if tok is not None and tok.upper == "FUNCTION":
        next(toks, None)  # the function name; its "(" follows
        tok = next(toks, None)
        while tok is not None and not (tok.text == b")" and tok.depth == 1):
            tok = next(toks, None)
        return next(toks, None)
    # table name, possibly db.table
    tok = next(toks, None)
    while tok is not None and tok.text == b".":
        next(toks, None)
        tok = next(toks, None)
    return tok


def find_insert_data(text: bytes) -> InsertData | None:
    """Locate inline data of ``INSERT ... FORMAT x`` / ``INSERT ... VALUES``.

    Returns None for anything that is not an INSERT carrying data in the
    stream (``INSERT ... SELECT``, other statements), which then run whole.
    """
    toks = tokens(text)
    first = next(toks, None)
    if first is None or first.upper != "INSERT":
        return None
    tok = _skip_insert_target(toks)
    while tok is not None:
        if tok.depth == 0 and tok.kind == "word":
            word = tok.upper
            if word in ("SELECT", "WITH", "FROM"):
                return None
            if word == "VALUES":
                return InsertData(text[: tok.start].rstrip(), "Values", tok.end)
            if word == "FORMAT":
                name = next(toks, None)
                if name is None or name.kind not in ("word", "quoted"):
                    return None
                fmt = name.text.decode("utf-8").strip('`"')
                return InsertData(
                    text[: tok.start].rstrip(), fmt, _data_start_after_format(text, name.end)
                )
        tok = next(toks, None)
    return None


def output_format(text: bytes) -> str | None:
    """The format named by a query's own trailing ``FORMAT`` clause, if any.

    Only a top-level ``FORMAT name`` followed by nothing but an optional
    ``SETTINGS ...`` clause or ``;`` counts, so columns or functions called
    ``format`` are not mistaken for the clause.
    """
    toks = list(tokens(text))
    found: str | None = None
    for i, tok in enumerate(toks):
        if tok.depth != 0 or tok.upper != "FORMAT" or i + 1 >= len(toks):
            continue
        name = toks[i + 1]
        if name.kind not in ("word", "quoted"):
            continue
        rest = toks[i + 2 :]
        if not rest or rest[0].text == b";" or rest[0].upper == "SETTINGS":
            found = name.text.decode("utf-8").strip('`"')
    return found
