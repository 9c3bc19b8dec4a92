"""The sans-IO RESP2 parser of the kv server: bytes in, commands out, under any chunking."""
from __future__ import annotations

import re
from typing import List, Optional

import pytest
from hypothesis import given, settings, strategies as st

from netmux.apps import resp
from netmux.apps.resp import MAX_ARGUMENTS, MAX_BULK, MAX_INLINE, MAX_QUERY, ProtocolError, RespParser, split_inline


def encode(command: List[bytes]) -> bytes:
    return b"*%d\r\n" % len(command) + b"".join(b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in command)


def cut(data: bytes, points: List[int]) -> List[bytes]:
    """``data`` cut at the given offsets (any order, duplicates allowed)."""
    edges = [0] + sorted(point % (len(data) + 1) for point in points) + [len(data)]
    return [data[start:end] for start, end in zip(edges, edges[1:])]


def feed(parser: RespParser, data: bytes) -> List[List[bytes]]:
    """What one feed completed, also when it raised (the commands before the fault)."""
    try:
        return parser.feed(data)
    except ProtocolError as exc:
        return exc.commands


def feed_all(parser: RespParser, chunks: List[bytes]) -> List[List[bytes]]:
    commands: List[List[bytes]] = []
    for chunk in chunks:
        commands += feed(parser, chunk)
    return commands


commands_strategy = st.lists(st.lists(st.binary(max_size=40), min_size=1, max_size=5), min_size=1, max_size=8)
inline_word = st.binary(min_size=1, max_size=10).filter(
    lambda word: not any(c in word for c in b" \t\r\n\x0b\x0c*\"'\x00"))


@settings(max_examples=300, deadline=None)
@given(commands_strategy, st.lists(st.integers(min_value=0), max_size=30))
def test_multibulk_requests_come_out_whole_under_any_chunking(commands, points):
    stream = b"".join(encode(command) for command in commands)
    parser = RespParser()
    assert feed_all(parser, cut(stream, points)) == commands
    assert parser.buffered == 0 and parser.error is None


@settings(max_examples=200, deadline=None)
@given(commands_strategy, st.lists(st.integers(min_value=0), max_size=30))
def test_each_feed_returns_exactly_the_commands_its_data_completed(commands, points):
    ends, stream = [], b""
    for command in commands:
        stream += encode(command)
        ends.append(len(stream))
    parser, fed = RespParser(), 0
    for chunk in cut(stream, points):
        before = sum(end <= fed for end in ends)
        fed += len(chunk)
        assert len(feed(parser, chunk)) == sum(end <= fed for end in ends) - before


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(inline_word, min_size=1, max_size=4), min_size=1, max_size=6),
       st.lists(st.integers(min_value=0), max_size=20), st.booleans())
def test_inline_commands_split_on_whitespace_with_either_line_ending(commands, points, crlf):
    ending = b"\r\n" if crlf else b"\n"
    stream = b"".join(b" ".join(command) + ending for command in commands)
    assert feed_all(RespParser(), cut(stream, points)) == commands


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(min_value=0), max_size=10))
def test_arbitrary_bytes_stay_bounded_and_a_fault_is_sticky(garbage, points):
    parser = RespParser(max_bulk=100)
    for chunk in cut(garbage, points):
        if parser.error is not None:
            with pytest.raises(ProtocolError):
                parser.feed(chunk)
            break
        feed(parser, chunk)
        assert parser.buffered <= max(MAX_INLINE, 100 + 2) + 1


def as_the_server_feeds(stream: bytes, first: int) -> List[bytes]:
    """``stream`` cut after ``first`` bytes, then in 16 KiB slices (kv.py's _PARSE_SLICE, Redis's read)."""
    rest = stream[first:]
    return [stream[:first]] + [rest[start:start + 16384] for start in range(0, len(rest), 16384)]


# Each checked against redis-server 7.0.15 with a raw socket: the same message, then the close.
@pytest.mark.parametrize("stream, message", [
    (b"*1\r\n$-5\r\n", "invalid bulk length"),
    (b"*1\r\n$-1\r\n", "invalid bulk length"),
    (b"*1\r\n$536870913\r\n", "invalid bulk length"),
    (b"*1\r\n$99999999999999999999\r\n", "invalid bulk length"),
    (b"*1\r\n$04\r\nPING\r\n", "invalid bulk length"),
    (b"*1\r\n$ 3\r\nabc\r\n", "invalid bulk length"),
    (b"*1\r\n$+3\r\nabc\r\n", "invalid bulk length"),
    (b"*1\r\n$\r\n", "invalid bulk length"),
    (b"*2147483648\r\n", "invalid multibulk length"),
    (b"*-0\r\n", "invalid multibulk length"),
    (b"*-99999999999999999999\r\n", "invalid multibulk length"),
    (b"*01\r\n$4\r\nPING\r\n", "invalid multibulk length"),
    (b"*+1\r\n$4\r\nPING\r\n", "invalid multibulk length"),
    (b"*1x\r\n", "invalid multibulk length"),
    (b"*1\n$4\r\nPING\r\n", "invalid multibulk length"),
    (b"*\r\n", "invalid multibulk length"),
    (b"*1" + b"1" * 40 + b"\r\n", "invalid multibulk length"),
    (b"*1\r\n:3\r\n", "expected '$', got ':'"),
    (b"*1\r\n\xe9\r\n", "expected '$', got '\xe9'"),
    (b'ECHO "abc"def\r\n', "unbalanced quotes in request"),
    (b"ECHO 'abc'def\r\n", "unbalanced quotes in request"),
    (b'ECHO "abc\r\n', "unbalanced quotes in request"),
    (b"ECHO 'a\\'\r\n", "unbalanced quotes in request"),
    (b'ECHO "a\\"\r\n', "unbalanced quotes in request"),
    (b'ECHO "a""b"\r\n', "unbalanced quotes in request"),
    (b"*" + b"1" * (MAX_INLINE + 1), "too big mbulk count string"),
    (b"*1\r\n$" + b"1" * (MAX_INLINE + 1), "too big bulk count string"),
    (b"GET " + b"k" * (200 * 1024) + b"\r\n", "too big inline request"),
    (b"GET " + b"k" * (200 * 1024), "too big inline request"),
    # A NUL before a line's end: Redis's strchr never finds the end, so the line
    # waits for more, and the connection fails once 64 KiB are held.
    (b"*1\x00\r\n" + b"PING\r\n" * 11000, "too big mbulk count string"),
    (b"*1\r\n$4\x00\r\n" + b"PING\r\n" * 11000, "too big bulk count string"),
    (b"ECHO a\x00b\r\n" + b"PING\r\n" * 11000, "too big inline request"),
], ids=lambda value: repr(value[:24]) if isinstance(value, bytes) else None)
def test_malformed_requests_are_sticky_protocol_errors_worded_as_redis(stream, message):
    for first in (16384, 1, 5, 300):
        parser = RespParser()
        for chunk in as_the_server_feeds(stream, first):
            if parser.error is not None:
                break
            assert feed(parser, chunk) == []
            assert parser.buffered <= MAX_INLINE
        assert str(parser.error) == message, first
        with pytest.raises(ProtocolError, match=re.escape(message)):
            parser.feed(b"PING\r\n")


@pytest.mark.parametrize("stream, reply", [
    (b"*1\r\n:3\r\n", b"-ERR Protocol error: expected '$', got ':'\r\n"),
    (b"*1\r\n\xe9\r\n", b"-ERR Protocol error: expected '$', got '\xe9'\r\n"),    # the byte, raw
    (b"*1\r\n\n\r\n", b"-ERR Protocol error: expected '$', got ' '\r\n"),         # no line break in it
    (b"*1\r\n\r\n", b"-ERR Protocol error: expected '$', got ' '\r\n"),           # an empty line: its \r
])
def test_the_protocol_error_reply_is_redis_byte_for_byte(stream, reply):
    with pytest.raises(ProtocolError) as raised:
        RespParser().feed(stream)
    assert raised.value.reply() == reply


def test_a_bulk_body_is_followed_by_two_bytes_redis_does_not_check():
    assert RespParser().feed(b"*1\r\n$4\r\nPINGxx*1\r\n$4\r\nPING\r\n") == [[b"PING"], [b"PING"]]


def test_a_length_line_ends_at_its_first_cr_and_the_byte_after_it_whatever_it_is():
    parser = RespParser()
    assert parser.feed(b"*1\rX$4\r") == []
    assert parser.feed(b"\nPING\r\n") == [[b"PING"]]


def test_a_nul_before_a_line_end_stalls_the_connection_as_redis_strchr_does():
    for stream in (b"*1\x00\r\n$4\r\nPING\r\n", b"*1\r\n$4\x00\r\nPING\r\nPING\r\n", b"ECHO \"a\x00b\"\r\nPING\r\n",
                   b"*1\r\n\x00\r\n"):
        parser = RespParser()
        assert feed_all(parser, [stream, b"PING\r\n"]) == [] and parser.error is None


def test_commands_before_a_fault_come_with_the_error_as_framing_errors_frames_do():
    parser = RespParser()
    with pytest.raises(ProtocolError) as raised:
        parser.feed(b"PING\r\n" + encode([b"GET", b"k"]) + b"*1\r\n$-7\r\n")
    assert raised.value.commands == [[b"PING"], [b"GET", b"k"]]
    assert parser.error is raised.value


def test_a_bulk_of_exactly_max_bulk_is_fine_one_more_is_not():
    parser = RespParser(max_bulk=5)
    assert feed(parser, encode([b"SET", b"k", b"12345"])) == [[b"SET", b"k", b"12345"]]
    assert feed(parser, encode([b"SET", b"k", b"123456"])) == []
    assert str(parser.error) == "invalid bulk length"


def test_an_oversized_bulk_fails_at_its_header_before_any_body_is_buffered():
    parser = RespParser(max_bulk=1000)
    feed(parser, b"*2\r\n$3\r\nSET\r\n$1001\r\n")
    assert parser.error is not None and parser.buffered == 0


def test_binary_values_with_nul_and_crlf_inside_are_kept_exactly():
    value = b"\x00\r\n*3\r\n$\xff" * 10
    assert RespParser().feed(encode([b"SET", b"\x00k", value])) == [[b"SET", b"\x00k", value]]


def test_empty_and_negative_multibulk_counts_and_blank_inline_lines_run_nothing():
    stream = b"*0\r\n*-1\r\n*-10\r\n*-9223372036854775808\r\n\r\n   \r\n\n\x0b\r\n\r\r\n"
    assert RespParser().feed(stream + encode([b"PING"])) == [[b"PING"]]


def test_a_large_value_fed_byte_by_byte_is_held_not_reparsed():
    # The held bytes are joined only when the announced bulk can be complete:
    # the parser's progress is kept between feeds (linear work).
    value = bytes(range(256)) * 64
    stream = encode([b"SET", b"k", value])
    parser = RespParser()
    joins = 0
    for index in range(len(stream)):
        got = feed(parser, stream[index:index + 1])
        joins += parser.buffered == 0
        if got:
            assert got == [[b"SET", b"k", value]]
    assert parser.buffered == 0
    assert joins <= 20       # once per header/argument, not once per byte


def test_the_default_limits_are_redis_7_own():
    assert (MAX_ARGUMENTS, MAX_INLINE, MAX_BULK, MAX_QUERY) == (2**31 - 1, 65536, 512 * 2**20, 2**30)
    parser = RespParser()
    assert (parser.max_bulk, parser.max_total) == (MAX_BULK, MAX_QUERY)
    assert feed(parser, b"*2147483647\r\n$536870912\r\n") == [] and parser.error is None


def test_memory_follows_what_was_sent_not_what_was_announced():
    parser = RespParser()
    parser.feed(b"*2147483647\r\n" + b"$0\r\n\r\n" * 10 + b"$536870912\r\nabc")
    assert parser.buffered == 3 and parser.error is None


def test_one_request_may_not_announce_more_than_max_total_bytes():
    parser = RespParser(max_bulk=10, max_total=25)
    assert feed(parser, encode([b"MSET", b"a", b"x" * 10, b"b", b"x" * 9])) == [[b"MSET", b"a", b"x" * 10, b"b", b"x" * 9]]
    assert feed(parser, b"*5\r\n$4\r\nMSET\r\n$1\r\na\r\n$10\r\n" + b"x" * 10 + b"\r\n$1\r\nb\r\n$10\r\n") == []
    assert str(parser.error) == "too big request" and parser.buffered == 0
    assert RespParser(max_bulk=1000).max_total == MAX_QUERY


@pytest.mark.parametrize("limits", [{"max_bulk": -1}, {"max_total": -1}])
def test_negative_limits_are_refused(limits):
    with pytest.raises(ValueError):
        RespParser(**limits)


@pytest.mark.parametrize("reply, encoded", [
    (resp.bulk(b"ab"), b"$2\r\nab\r\n"), (resp.bulk(None), b"$-1\r\n"), (resp.integer(-3), b":-3\r\n"),
    (resp.error("ERR x\r\ny"), b"-ERR x  y\r\n"), (resp.array([b":1\r\n", b"$-1\r\n"]), b"*2\r\n:1\r\n$-1\r\n"),
])
def test_reply_encoders(reply, encoded):
    assert reply == encoded


# ----------------------------------------------------------------------
# Inline commands: Redis's sdssplitargs, transliterated from sds.c as the reference
# ----------------------------------------------------------------------
def sdssplitargs(line: bytes) -> Optional[List[bytes]]:
    """sds.c's loop, statement for statement (C's isspace; a NUL ends the string)."""
    line += b"\x00"
    space = b" \t\n\r\x0b\x0c"
    hexdigits = b"0123456789abcdefABCDEF"
    escaped = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("a"): 7}
    p, words = 0, []
    while True:
        while line[p] and line[p] in space:
            p += 1
        if not line[p]:
            return words
        inq = insq = done = False
        current = bytearray()
        while not done:
            c = line[p]
            if inq:
                if c == 92 and line[p + 1] == ord("x") and line[p + 2] and line[p + 2] in hexdigits \
                        and line[p + 3] and line[p + 3] in hexdigits:
                    current.append(int(line[p + 2:p + 4], 16))
                    p += 3
                elif c == 92 and line[p + 1]:
                    p += 1
                    current.append(escaped.get(line[p], line[p]))
                elif c == 34:
                    if line[p + 1] and line[p + 1] not in space:
                        return None
                    done = True
                elif not c:
                    return None
                else:
                    current.append(c)
            elif insq:
                if c == 92 and line[p + 1] == 39:
                    p += 1
                    current.append(39)
                elif c == 39:
                    if line[p + 1] and line[p + 1] not in space:
                        return None
                    done = True
                elif not c:
                    return None
                else:
                    current.append(c)
            elif c in b" \n\r\t\x00":
                done = True
            elif c == 34:
                inq = True
            elif c == 39:
                insq = True
            else:
                current.append(c)
            if line[p]:
                p += 1
        words.append(bytes(current))


inline_byte = st.sampled_from(b" \t\r\x0b\x0c\x1c\"'\\xnrtba0fFgG7\xe9")


@settings(max_examples=2000, deadline=None)
@given(st.lists(inline_byte, max_size=40).map(bytes))
def test_inline_lines_split_as_redis_sdssplitargs_does(line):
    assert split_inline(line) == sdssplitargs(line)


@pytest.mark.parametrize("line, words", [
    (b'SET "a b" c', [b"SET", b"a b", b"c"]),
    (b'SET k "x"', [b"SET", b"k", b"x"]),
    (b'ECHO "\\x41\\x4a\\x4"', [b"ECHO", b"AJx4"]),
    (b'ECHO "\\n\\r\\t\\b\\a\\z\\\\\\""', [b"ECHO", b'\n\r\t\x08\x07z\\"']),
    (b"ECHO 'a\\'b\\n'", [b"ECHO", b"a'b\\n"]),
    (b'ECHO a"b c"', [b"ECHO", b"ab c"]),
    (b"ECHO '' \"\"", [b"ECHO", b"", b""]),
    (b"ECHO a\x0bb\x0cc", [b"ECHO", b"a\x0bb\x0cc"]),
    (b'ECHO "a"\x0bb', [b"ECHO", b"a", b"b"]),
    (b'ECHO "abc"def', None), (b"ECHO 'abc", None),
])
def test_inline_quoting_as_redis_cli_users_type_it(line, words):
    assert split_inline(line) == words


def test_an_inline_line_ends_at_lf_and_one_cr_before_it_is_dropped():
    assert RespParser().feed(b'ECHO "a\rb"\r\nECHO a\rb\r\r\n') == [[b"ECHO", b"a\rb"], [b"ECHO", b"a", b"b"]]


def test_unbalanced_quotes_come_after_the_commands_before_them():
    with pytest.raises(ProtocolError) as raised:
        RespParser().feed(b'PING\r\nSET "a b" c\r\nECHO "x\r\nPING\r\n')
    assert raised.value.commands == [[b"PING"], [b"SET", b"a b", b"c"]]
    assert str(raised.value) == "unbalanced quotes in request"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.binary(max_size=8).filter(lambda word: b"\x00" not in word), min_size=1, max_size=4),
                min_size=1, max_size=6), st.lists(st.integers(min_value=0), max_size=20))
def test_words_quoted_as_redis_cli_quotes_them_come_back_whole_under_any_chunking(commands, points):
    def quote(word: bytes) -> bytes:               # sdscatrepr, as redis-cli --no-raw prints a value
        return b'"' + b"".join(b"\\x%02x" % byte for byte in word) + b'"'
    stream = b"".join(b" ".join(quote(word) for word in command) + b"\r\n" for command in commands)
    assert feed_all(RespParser(), cut(stream, points)) == commands


def test_long_unfinished_lines_fed_byte_by_byte_are_parsed_once_not_once_per_byte(monkeypatch):
    parses = []
    parse = RespParser._parse
    monkeypatch.setattr(RespParser, "_parse", lambda self, data, commands, position: parses.append(1) or parse(self, data, commands, position))
    for stream in (b"ECHO " + b"x" * 60000 + b"\r\n",                   # inline: waits for its LF
                   b"*1\x00" + b"1" * 60000,                             # a NUL: stalled, never re-read
                   b"*1\r\n$" + b"1" * 60000):                          # a length line: waits for its CR
        parser, parses[:] = RespParser(), []
        for index in range(len(stream)):
            feed(parser, stream[index:index + 1])
        assert len(parses) <= 3, stream[:10]


# The fast path (resp._parse_whole) against the general parse alone, on streams of
# whole requests mixed with the near misses it must leave to the general parse.
near_miss = st.sampled_from([b"*0\r\n", b"*-1\r\n", b"*01\r\n$1\r\na\r\n", b"*+1\r\n$1\r\na\r\n",
                             b"*1\r\n$01\r\na\r\n", b"*1\r\n$+1\r\na\r\n", b"*1\r\n$2\r\na\r\n\r\n",
                             b"*1\r\n$1\r\nab\r\n", b"*1\r\n$1\ra\r\n", b"*1\r\n$1\r\na\rx", b"*1\rx$1\r\na\r\n",
                             b"*1\r\n$-1\r\n", b"*1\r\n\r\n", b"*1\r\n$1\x00\r\na\r\n", b"PING\r\n", b"\r\n",
                             b"*2\r\n$1\r\na\r\n",
                             b"*1\r\n$4\r\na\r\nb\r\n", b"*2\r\n$3\r\n$1\r\n$1\r\na\r\n", b"x", b"\r", b"\n"])
stream_piece = st.one_of(commands_strategy.map(lambda commands: b"".join(map(encode, commands))), near_miss,
                         st.binary(max_size=12))


def general_only(parser: RespParser) -> RespParser:
    parser._whole_limit = -1        # no feed is short enough for the fast path: the general parse alone
    return parser


def outcome(parser: RespParser, chunks: List[bytes]):
    return feed_all(parser, chunks), parser.error and str(parser.error), parser.buffered


@settings(max_examples=500, deadline=None)
@given(st.lists(stream_piece, max_size=12), st.lists(st.integers(min_value=0), max_size=6),
       st.sampled_from([MAX_BULK, 5]))
def test_the_fast_path_reads_exactly_what_the_general_parse_reads(pieces, points, max_bulk):
    chunks = cut(b"".join(pieces), points)
    assert outcome(RespParser(max_bulk), chunks) == outcome(general_only(RespParser(max_bulk)), chunks)


def test_the_fast_path_takes_whole_requests_and_stops_at_the_first_it_cannot():
    requests = encode([b"SET", b"k", b"v"]) + encode([b"GET", b"\x00\r"])
    for tail in (b"", b"*1\r\n$4\r\nPI", b"PING\r\n", b"*1\r\n$01\r\nx\r\n"):
        commands: List[List[bytes]] = []
        assert resp._parse_whole(requests + tail, commands) == len(requests)
        assert commands == [[b"SET", b"k", b"v"], [b"GET", b"\x00\r"]]


@pytest.mark.parametrize("odd", [encode([b"MSET"] + [b"k"] * 70),              # many arguments
                                 encode([b"SET", b"k", b"v" * 5000]),           # over _LENGTHS's 4,095 bytes
                                 encode([b"SET", b"k", b"a\r\nb"]),             # a line end inside a value
                                 b"*1\r\n$01\r\nx\r\n", b"PING\r\n"])
def test_requests_the_fast_path_checks_one_by_one_or_leaves_are_read_as_the_general_parse_reads(odd):
    whole = encode([b"GET", b"k"]) * 3
    for stream in (whole + odd + whole, odd + whole, whole + odd):
        for chunks in ([stream], cut(stream, [len(stream) // 2])):
            fast, general = RespParser(), general_only(RespParser())
            assert outcome(fast, chunks) == outcome(general, chunks)
            assert fast.error is None or odd == b"*1\r\n$01\r\nx\r\n"
