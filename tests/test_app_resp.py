"""The sans-IO RESP2 parser of the kv server: bytes in, commands out, under any chunking."""
from __future__ import annotations

from typing import List

import pytest
from hypothesis import given, settings, strategies as st

from netmux.apps import resp
from netmux.apps.resp import MAX_ARGUMENTS, MAX_INLINE, ProtocolError, RespParser


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
inline_word = st.binary(min_size=1, max_size=10).filter(lambda word: not any(c in word for c in b" \t\r\n\x0b\x0c*"))


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


@pytest.mark.parametrize("stream, message", [
    (b"*1\r\n$-5\r\n", "invalid bulk length"),
    (b"*1\r\n$-1\r\n", "invalid bulk length"),
    (b"*1\r\n$1048577\r\n", "invalid bulk length"),
    (b"*1\r\n$99999999999999999999\r\n", "invalid bulk length"),
    (b"*1048577\r\n", "invalid multibulk length"),
    (b"*-2\r\n", "invalid multibulk length"),
    (b"*1x\r\n", "invalid multibulk length"),
    (b"*1\r\n$1\x00\r\n", "invalid bulk length"),
    (b"*\x00\r\n", "invalid multibulk length"),
    (b"*1\r\n$ 3\r\nabc\r\n", "invalid bulk length"),
    (b"*1\r\n$+3\r\nabc\r\n", "invalid bulk length"),
    (b"*1\r\n:3\r\n", "expected '$', got ':'"),
    (b"*1\r\n$3\r\nabcXY", "bulk string not followed by CRLF"),
    (b"*1" + b"1" * 40, "too big length line"),
    (b"*1\r\n$" + b"1" * 40, "too big length line"),
    (b"GET " + b"k" * (200 * 1024) + b"\r\n", "too big inline request"),
    (b"GET " + b"k" * (200 * 1024), "too big inline request"),
], ids=lambda value: repr(value[:24]) if isinstance(value, bytes) else None)
def test_malformed_requests_are_sticky_protocol_errors(stream, message):
    bytewise = [bytes([byte]) for byte in stream[:300]] + ([stream[300:]] if len(stream) > 300 else [])
    for chunks in ([stream], [stream[:1], stream[1:]], bytewise):
        parser = RespParser()
        for chunk in chunks:
            if parser.error is not None:
                break
            assert feed(parser, chunk) == []
        assert str(parser.error) == message, chunks[:3]
        assert parser.buffered <= MAX_INLINE + 1
        with pytest.raises(ProtocolError, match="Protocol|length|request|CRLF|expected"):
            parser.feed(b"PING\r\n")


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


def test_empty_and_null_multibulk_and_blank_inline_lines_run_nothing():
    assert RespParser().feed(b"*0\r\n*-1\r\n\r\n   \r\n\n" + encode([b"PING"])) == [[b"PING"]]


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


def test_the_argument_count_limit_is_redis_own():
    assert MAX_ARGUMENTS == 1024 * 1024
    parser = RespParser()
    assert feed(parser, b"*1048576\r\n") == [] and parser.error is None


def test_one_request_may_not_announce_more_than_max_total_bytes():
    parser = RespParser(max_bulk=10, max_total=25)
    assert feed(parser, encode([b"MSET", b"a", b"x" * 10, b"b", b"x" * 9])) == [[b"MSET", b"a", b"x" * 10, b"b", b"x" * 9]]
    assert feed(parser, b"*5\r\n$4\r\nMSET\r\n$1\r\na\r\n$10\r\n" + b"x" * 10 + b"\r\n$1\r\nb\r\n$10\r\n") == []
    assert str(parser.error) == "too big request" and parser.buffered == 0
    assert RespParser(max_bulk=1000).max_total == 64000


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
