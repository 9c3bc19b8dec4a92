"""Tests for netmux.framing: the sans-IO framers and the framed handlers.

The framers are checked against naive reference models that read the stream
one byte at a time and are obviously right: whatever the chunking, a framer
must return the frames the model found, each from the ``feed`` whose chunk
completed it, and raise ``FramingError`` from the very ``feed`` whose chunk
holds the byte at which the model knew the stream was bad. Linear time is
checked by counting the bytes the line framer searches, not by timing.
"""
from __future__ import annotations

import functools
import logging
import struct
from typing import Callable, List, NamedTuple, Optional, Tuple

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from netmux.framing import (
    FramedHandler,
    FramingError,
    LengthPrefixFramer,
    LineFramer,
    LineHandler,
    NetstringFramer,
)
from netmux.testing import drive

# Enough examples to matter for the properties every framer must keep; the
# whole file still runs in a few seconds.
CORE = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EDGE = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------
# Reference models: one byte at a time, no cleverness
# ---------------------------------------------------------------------------


class ModelError(Exception):
    """The model found the stream bad at this byte."""


class LineModel:
    def __init__(self, delimiter: bytes, max_length: int) -> None:
        self.delimiter, self.max_length = delimiter, max_length
        self.pending = b""

    def byte(self, value: bytes) -> Optional[bytes]:
        self.pending += value
        if self.pending.endswith(self.delimiter):
            # Checked after every byte, so this is the first occurrence.
            line = self.pending[: -len(self.delimiter)]
            self.pending = b""
            return line
        # The earliest place a delimiter could still start.
        earliest = min(
            start
            for start in range(len(self.pending) + 1)
            if self.delimiter.startswith(self.pending[start:])
        )
        if earliest > self.max_length:
            raise ModelError
        return None


class NetstringModel:
    def __init__(self, max_length: int) -> None:
        self.max_length = max_length
        self.digits: Optional[bytes] = b""  # None once the ':' was read
        self.length = 0
        self.pending = b""

    def byte(self, value: bytes) -> Optional[bytes]:
        if self.digits is not None:
            if value == b":":
                if not self.digits:
                    raise ModelError
                self.length, self.digits = int(self.digits), None
                return None
            if not value.isdigit():
                raise ModelError
            self.digits += value
            if len(self.digits) > 1 and self.digits.startswith(b"0"):
                raise ModelError
            if int(self.digits) > self.max_length:
                raise ModelError
            return None
        if len(self.pending) < self.length:
            self.pending += value
            return None
        if value != b",":
            raise ModelError
        frame, self.pending, self.digits = self.pending, b"", b""
        return frame

    @property
    def held(self) -> int:
        if self.digits is not None:
            return len(self.digits)
        return len(str(self.length)) + 1 + len(self.pending)


class PrefixModel:
    def __init__(self, header: str, max_length: int) -> None:
        self.header, self.max_length = struct.Struct(header), max_length
        self.pending = b""

    def byte(self, value: bytes) -> Optional[bytes]:
        self.pending += value
        size = self.header.size
        if len(self.pending) < size:
            return None
        (length,) = self.header.unpack_from(self.pending)
        if length > self.max_length:
            raise ModelError
        if len(self.pending) == size + length:
            frame, self.pending = self.pending[size:], b""
            return frame
        return None


class Trace(NamedTuple):
    frames: List[Tuple[int, bytes]]  # each frame with the stream offset of its last byte
    error_at: Optional[int]  # the offset of the byte that made the stream bad
    held: List[int]  # held[n]: bytes held for an incomplete frame after n bytes


def model_run(model, stream: bytes) -> Trace:
    trace = Trace([], None, [0])
    for offset in range(len(stream)):
        try:
            frame = model.byte(stream[offset : offset + 1])
        except ModelError:
            return trace._replace(error_at=offset)
        if frame is not None:
            trace.frames.append((offset, frame))
        trace.held.append(model.held if hasattr(model, "held") else len(model.pending))
    return trace


# ---------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------

DELIMITERS = [b"\n", b"\r\n", b"\0", b"--", b"aa", b"abab", b"aba", b"\r\n\r\n", b"xyz"]
HEADERS = ["B", "!H", "<H", ">I", "=I", "!I", "@L", "<Q", "!Q"]


class Kind(NamedTuple):
    """One framer configuration, how to build it and its model, what to feed it."""

    name: str
    make: Callable[[], object]
    model: Callable[[], object]
    alphabet: bytes  # bytes that make interesting payloads and junk for it
    bound: int  # the most it may ever hold
    sized: Callable[[int], bytes]  # a wire frame of this payload size, whatever the limit


@st.composite
def kinds(draw, max_length=st.integers(0, 40)) -> Kind:
    limit = draw(max_length)
    which = draw(st.sampled_from(["line", "netstring", "prefix"]))
    if which == "line":
        delimiter = draw(st.sampled_from(DELIMITERS) | st.binary(min_size=1, max_size=4))
        alphabet = bytes(sorted(set(delimiter + b"ab\r\n")))
        return Kind(
            f"LineFramer({delimiter!r}, {limit})",
            lambda: LineFramer(delimiter, limit),
            lambda: LineModel(delimiter, limit),
            alphabet,
            limit + len(delimiter) - 1,
            lambda size: b"q" * size + delimiter,
        )
    if which == "netstring":
        return Kind(
            f"NetstringFramer({limit})",
            lambda: NetstringFramer(limit),
            lambda: NetstringModel(limit),
            b"0123:,a",
            len(str(limit)) + 1 + limit,
            lambda size: b"%d:%s," % (size, b"q" * size),
        )
    header = draw(st.sampled_from(HEADERS))
    size = struct.calcsize(header)
    return Kind(
        f"LengthPrefixFramer({header!r}, {limit})",
        lambda: LengthPrefixFramer(header, limit),
        lambda: PrefixModel(header, limit),
        b"\0\1\2\5a",
        size + limit - 1,
        lambda length: struct.pack(header, min(length, (1 << 8 * size) - 1)) + b"q" * length,
    )


def encodable_frames(draw, kind: Kind, framer, max_frames: int = 12) -> List[bytes]:
    """Frames the framer can encode, rich in its delimiter and digit bytes."""
    frames = []
    for _ in range(draw(st.integers(0, max_frames))):
        size = draw(st.integers(0, framer.max_length))
        frame = bytes(draw(st.lists(st.sampled_from(kind.alphabet), min_size=size, max_size=size)))
        try:
            framer.encode(frame)
        except FramingError:
            continue  # a line holding its delimiter: not a frame of this framing
        frames.append(frame)
    return frames


def cut(draw, stream: bytes) -> List[bytes]:
    """Cut ``stream`` at hypothesis-chosen points; repeated points make empty chunks."""
    points = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=len(stream) + 4)))
    bounds = [0] + points + [len(stream)]
    return [stream[a:b] for a, b in zip(bounds, bounds[1:])]


def as_bytes_like(draw, chunk: bytes):
    wrap = draw(st.sampled_from([bytes, bytearray, memoryview]))
    return wrap(chunk)


def check_feeds(draw, kind: Kind, stream: bytes,
                chunks: Optional[List[bytes]] = None) -> Tuple[List[bytes], Optional[FramingError]]:
    """Feed ``stream`` cut at random (or as ``chunks``) and hold the framer to the
    model, chunk by chunk."""
    framer = kind.make()
    expected, error_at, held = model_run(kind.model(), stream)
    received: List[bytes] = []
    start = 0
    for chunk in cut(draw, stream) if chunks is None else chunks:
        end = start + len(chunk)
        completed = [frame for offset, frame in expected if start <= offset < end]
        if error_at is not None and start <= error_at < end:
            with pytest.raises(FramingError) as caught:
                framer.feed(as_bytes_like(draw, chunk))
            # The frames the chunk completed before the bad byte ride on the error.
            assert caught.value.frames == completed, kind.name
            assert framer.buffered == 0
            return received + caught.value.frames, caught.value
        frames = framer.feed(as_bytes_like(draw, chunk))
        assert frames == completed, kind.name
        assert all(type(frame) is bytes for frame in frames)
        received += frames
        # buffered is the unframed tail: what the model holds after the same bytes.
        assert framer.buffered == held[end], kind.name
        assert framer.buffered <= kind.bound, kind.name
        start = end
    assert error_at is None
    return received, None


# ---------------------------------------------------------------------------
# Every framer: round trip and exact per-feed results
# ---------------------------------------------------------------------------


@CORE
@given(st.data())
def test_encoded_frames_come_back_whole_and_in_order_however_the_stream_is_cut(data):
    kind = data.draw(kinds())
    frames = encodable_frames(data.draw, kind, kind.make())
    stream = b"".join(kind.make().encode(frame) for frame in frames)
    received, error = check_feeds(data.draw, kind, stream)
    assert error is None
    assert received == frames


@CORE
@given(st.data())
def test_any_stream_frames_like_the_byte_at_a_time_model_and_fails_at_the_same_byte(data):
    # Valid frames mixed with junk: over-long lines, bad netstring lengths,
    # missing commas, huge prefixes. The framer must agree with the model on
    # every frame and raise in the feed holding the byte where the stream
    # became provably bad -- never later, never earlier.
    kind = data.draw(kinds())
    encoder = kind.make()
    pieces = []
    for _ in range(data.draw(st.integers(0, 6))):
        piece = data.draw(st.sampled_from(["frames", "junk", "near the limit"]))
        if piece == "frames":
            pieces += [encoder.encode(frame) for frame in encodable_frames(data.draw, kind, encoder, 3)]
        elif piece == "junk":
            pieces.append(bytes(data.draw(st.lists(st.sampled_from(kind.alphabet), max_size=60))))
        else:  # a payload of max_length - 1 .. max_length + 2 bytes
            size = max(0, encoder.max_length + data.draw(st.integers(-1, 2)))
            pieces.append(kind.sized(size))
    check_feeds(data.draw, kind, b"".join(pieces))


@CORE
@given(st.data())
def test_a_stream_fed_a_frame_per_chunk_frames_like_the_model(data):
    # The request-reply shape (one whole frame per read): LineFramer takes a
    # shortcut for it (one find, no _parse), which must agree with the model,
    # junk and over-long lines included, and leave the stream offsets right.
    kind = data.draw(kinds())
    encoder = kind.make()
    chunks = []
    for _ in range(data.draw(st.integers(0, 8))):
        piece = data.draw(st.sampled_from(["frame", "junk", "near the limit"]))
        if piece == "frame":
            chunks += [encoder.encode(frame) for frame in encodable_frames(data.draw, kind, encoder, 1)]
        elif piece == "junk":
            chunks.append(bytes(data.draw(st.lists(st.sampled_from(kind.alphabet), max_size=20))))
        else:
            chunks.append(kind.sized(max(0, encoder.max_length + data.draw(st.integers(-1, 2)))))
    check_feeds(data.draw, kind, b"".join(chunks), chunks)


def test_a_line_per_feed_keeps_the_stream_offset_for_a_later_error():
    framer = LineFramer(b"\r\n", max_length=4)
    assert framer.feed(b"ab\r\n") == [b"ab"] and framer.feed(b"abcd\r\n") == [b"abcd"]
    with pytest.raises(FramingError) as caught:
        framer.feed(b"abcde\r\n")                  # one byte over: not the shortcut
    assert caught.value.offset == 4 + 6


@EDGE
@given(st.data())
def test_feeding_byte_by_byte_or_all_at_once_gives_the_same_frames(data):
    kind = data.draw(kinds())
    encoder = kind.make()
    stream = b"".join(encoder.encode(frame) for frame in encodable_frames(data.draw, kind, encoder))
    whole = kind.make().feed(stream)
    one_by_one = kind.make()
    assert [frame for i in range(len(stream)) for frame in one_by_one.feed(stream[i : i + 1])] == whole


# ---------------------------------------------------------------------------
# Limits: over-long frames fail as soon as known, holding no more than the limit
# ---------------------------------------------------------------------------


@EDGE
@given(delimiter=st.sampled_from(DELIMITERS), max_length=st.integers(0, 50), step=st.integers(1, 9))
def test_an_over_long_line_fails_at_its_first_byte_past_max_length(delimiter, max_length, step):
    framer = LineFramer(delimiter, max_length)
    line = b"q" * max_length  # no byte of any delimiter in DELIMITERS
    for start in range(0, max_length, step):  # up to max_length bytes are fine
        assert framer.feed(line[start : start + step]) == []
        assert framer.buffered == min(start + step, max_length)
    with pytest.raises(FramingError, match="stream offset 0 is longer than max_length") as caught:
        framer.feed(b"q")
    assert caught.value.offset == 0
    assert framer.buffered == 0


def test_a_line_of_exactly_max_length_is_accepted_one_byte_longer_is_not():
    assert LineFramer(b"\r\n", 4).feed(b"abcd\r\n") == [b"abcd"]
    assert LineFramer(b"\r\n", 4).feed(b"abcd\r") == []  # "\r" may start the delimiter
    with pytest.raises(FramingError, match="stream offset 0"):
        LineFramer(b"\r\n", 4).feed(b"abcde")
    with pytest.raises(FramingError):
        LineFramer(b"\r\n", 4).feed(b"abcd\r\r")  # the first "\r" is payload after all


def test_a_line_framer_stops_searching_at_the_limit_of_a_huge_chunk():
    framer = LineFramer(b"\n", 10)
    with pytest.raises(FramingError) as caught:
        framer.feed(b"ok\n" + b"x" * 1_000_000 + b"\n")
    assert caught.value.frames == [b"ok"]
    assert caught.value.offset == 3
    assert framer.buffered == 0


@EDGE
@given(header=st.sampled_from(HEADERS), max_length=st.integers(0, 1000), over=st.integers(1, 1000))
def test_a_length_prefix_over_max_length_fails_once_the_header_is_read(header, max_length, over):
    size = struct.calcsize(header)
    length = max_length + over
    assume(length < 1 << (8 * size))
    encoded = struct.pack(header, length)
    framer = LengthPrefixFramer(header, max_length)
    for index in range(size - 1):
        assert framer.feed(encoded[index : index + 1]) == []
    with pytest.raises(FramingError, match=f"announces {length} bytes"):
        framer.feed(encoded[size - 1 :] + b"payload that is never buffered")
    assert framer.buffered == 0


@EDGE
@given(max_length=st.integers(0, 10**7), over=st.integers(1, 10**7))
def test_a_netstring_length_over_max_length_fails_on_its_digits_before_the_colon(max_length, over):
    digits = str(max_length + over).encode()
    framer = NetstringFramer(max_length)
    fails_at = next(i for i in range(1, len(digits) + 1) if int(digits[:i]) > max_length)
    assert framer.feed(digits[: fails_at - 1]) == []
    with pytest.raises(FramingError, match="longer than max_length"):
        framer.feed(digits[fails_at - 1 : fails_at])


@pytest.mark.parametrize(
    "stream, message",
    [
        (b"x", r"expected a digit or ':' at stream offset 0, found b'x'"),
        (b"3:abc,12a", r"expected a digit or ':' at stream offset 8, found b'a'"),
        (b":", r"length is empty at stream offset 0"),
        (b"3:abc,:", r"length is empty at stream offset 6"),
        (b"01:a,", r"leading zero at stream offset 0"),
        (b"00:", r"leading zero at stream offset 0"),
        (b"3:abcd", r"expected ',' at stream offset 5, found b'd'"),
        (b"0:,1:a;", r"expected ',' at stream offset 6, found b';'"),
        (b"-1:", r"expected a digit or ':' at stream offset 0"),
        (b" 1:a,", r"expected a digit or ':' at stream offset 0"),
    ],
)
def test_a_malformed_netstring_names_the_fault_and_its_stream_offset(stream, message):
    framer = NetstringFramer(100)
    with pytest.raises(FramingError, match=message):
        for index in range(len(stream)):
            framer.feed(stream[index : index + 1])


def test_netstring_zero_length_and_exact_max_length_are_fine():
    framer = NetstringFramer(3)
    assert framer.feed(b"0:,3:abc,") == [b"", b"abc"]
    with pytest.raises(FramingError):
        framer.feed(b"4")


# ---------------------------------------------------------------------------
# Sticky errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, bad",
    [
        (lambda: LineFramer(b"\n", 3), b"abcd"),
        (NetstringFramer, b"x"),
        (lambda: LengthPrefixFramer("!H", 1), b"\0\2"),
    ],
    ids=["line", "netstring", "prefix"],
)
def test_after_a_framing_error_every_feed_raises_again(make, bad):
    framer = make()
    with pytest.raises(FramingError) as first:
        framer.feed(bad)
    for later in (b"", b"ok\n", b"\n", b"0:,", b"\0\0"):
        with pytest.raises(FramingError, match="already failed") as again:
            framer.feed(later)
        assert again.value.offset == first.value.offset
        assert again.value.frames == []
    assert framer.buffered == 0


# ---------------------------------------------------------------------------
# Linear time, by counting the bytes searched
# ---------------------------------------------------------------------------


class CountingBuffer(bytearray):
    """A receive buffer that counts how many bytes ``find`` is asked to scan."""

    scanned = 0
    finds = 0
    compactions = 0

    def find(self, sub, start=0, end=None):  # type: ignore[override]
        stop = len(self) if end is None else min(end, len(self))
        CountingBuffer.scanned += max(0, stop - start)
        CountingBuffer.finds += 1
        return super().find(sub, start, end)

    def __delitem__(self, key):
        CountingBuffer.compactions += 1
        super().__delitem__(key)


@pytest.fixture
def counting_buffer():
    CountingBuffer.scanned = CountingBuffer.finds = CountingBuffer.compactions = 0
    return CountingBuffer


@pytest.mark.parametrize("delimiter", [b"\n", b"\r\n", b"abab"])
def test_a_long_line_fed_one_byte_at_a_time_is_searched_once_not_rescanned(counting_buffer, delimiter):
    size = 1 << 20  # 1 MiB, one feed per byte
    framer = LineFramer(delimiter, max_length=size)
    framer._buffer = counting_buffer()
    feed = framer.feed
    byte = b"x"
    for _ in range(size):
        feed(byte)
    assert framer.buffered == size
    # Each byte is searched about once (a delimiter's width of overlap per feed);
    # a rescanning framer would need ~size**2 / 2 = 5.5e11.
    assert counting_buffer.scanned <= size * len(delimiter) + len(delimiter)
    assert feed(delimiter) == [byte * size]
    assert framer.buffered == 0


def test_many_frames_in_one_feed_compact_the_buffer_at_most_once(counting_buffer):
    framer = LineFramer()
    framer._buffer = counting_buffer()
    framer.feed(b"x" * 20_000)  # a long tail: the next feed appends to the buffer
    lines = framer.feed(b"\n" + b"line\n" * 3_000 + b"tail")
    assert len(lines) == 3_001 and lines[0] == b"x" * 20_000
    assert counting_buffer.compactions == 1
    assert framer.buffered == 4
    framer.feed(b"\n" + b"line\n" * 3_000 + b"tail")  # a short tail: joined, nothing to compact
    assert counting_buffer.compactions == 1
    assert framer.buffered == 4


# ---------------------------------------------------------------------------
# Encoding and construction
# ---------------------------------------------------------------------------


def test_encode_matches_the_documented_wire_formats():
    assert LineFramer().encode(b"hi") == b"hi\n"
    assert LineFramer(b"\r\n").encode(bytearray(b"hi")) == b"hi\r\n"
    assert NetstringFramer().encode(b"abc") == b"3:abc,"
    assert NetstringFramer().encode(memoryview(b"")) == b"0:,"
    assert LengthPrefixFramer("!I").encode(b"abc") == struct.pack("!I", 3) + b"abc"
    assert LengthPrefixFramer("<Q").encode(b"") == bytes(8)


@pytest.mark.parametrize(
    "delimiter, frame",
    [(b"\n", b"a\nb"), (b"\r\n", b"a\r\nb"), (b"abab", b"ab"), (b"aa", b"a"), (b"--", b"x-")],
)
def test_line_encode_refuses_a_frame_that_would_not_round_trip(delimiter, frame):
    with pytest.raises(FramingError, match="contains the delimiter"):
        LineFramer(delimiter).encode(frame)


def test_encode_refuses_frames_over_max_length_or_the_header_range():
    for framer in (LineFramer(max_length=2), NetstringFramer(2), LengthPrefixFramer("!I", 2)):
        assert framer.encode(b"ab")
        with pytest.raises(FramingError, match="max_length is 2"):
            framer.encode(b"abc")
    with pytest.raises(FramingError, match="counts at most 255"):
        LengthPrefixFramer("B", 1000).encode(b"x" * 256)


def test_length_prefix_header_must_be_one_unsigned_integer():
    for good in ("B", "H", "!H", "<I", ">L", "=Q", "@I", b"!I"):
        LengthPrefixFramer(good)
    for bad in ("i", "!h", "q", "!II", "2I", "!", "", "f", "!I ", "N"):
        with pytest.raises(ValueError):
            LengthPrefixFramer(bad)
    with pytest.raises(TypeError):
        LengthPrefixFramer(4)  # type: ignore[arg-type]


def test_constructor_arguments_are_checked():
    with pytest.raises(ValueError):
        LineFramer(b"")
    with pytest.raises(TypeError):
        LineFramer("\n")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        NetstringFramer(-1)
    with pytest.raises(TypeError):
        LineFramer(max_length=1.5)  # type: ignore[arg-type]


def test_feed_refuses_what_is_not_bytes_like_and_stays_usable():
    framer = LineFramer()
    for junk in ("text\n", 5, None):
        with pytest.raises(TypeError):
            framer.feed(junk)  # type: ignore[arg-type]
    framer.feed(b"held")
    with pytest.raises(TypeError):
        framer.feed("text\n")  # type: ignore[arg-type]
    assert framer.feed(b"\n") == [b"held"]


def test_framing_error_is_a_value_error_and_netmux_exports_the_framing_names():
    import netmux
    import netmux.framing

    assert issubclass(FramingError, ValueError)
    for name in netmux.framing.__all__:
        assert getattr(netmux, name) is getattr(netmux.framing, name)
    assert issubclass(FramedHandler, netmux.Handler)


# ---------------------------------------------------------------------------
# FramedHandler and LineHandler, driven by netmux.testing (no sockets)
# ---------------------------------------------------------------------------


class Recorder(LineHandler):
    def __init__(self) -> None:
        self.lines: List[bytes] = []

    def line_received(self, line: bytes) -> None:
        self.lines.append(line)
        if line == b"quit":
            self.transport.close()
        else:
            self.send_line(line.upper())


def test_line_handler_delivers_lines_without_delimiter_and_send_line_appends_it():
    conversation = drive(Recorder, [b"he", b"llo\nwor", b"ld\n", b"", b"partial"], eof=False)
    assert conversation.handler.lines == [b"hello", b"world"]
    assert conversation.written == b"HELLO\nWORLD\n"


def test_line_handler_subclass_delimiter_and_max_length_make_its_framer():
    class Crlf(Recorder):
        delimiter = b"\r\n"
        max_length = 5

    handler = drive(Crlf, [b"a\nb\r\n"]).handler
    assert handler.lines == [b"a\nb"]
    assert handler.framer.max_length == 5 and handler.framer.delimiter == b"\r\n"


def test_each_connection_gets_its_own_framer():
    first, second = drive(Recorder, [b"one"], eof=False).handler, drive(Recorder, [b"two\n"]).handler
    assert first.lines == [] and second.lines == [b"two"]
    assert first.framer is not second.framer and first.framer.buffered == 3


@pytest.mark.parametrize("factory", [lambda: NetstringFramer(10), NetstringFramer,
                                     functools.partial(NetstringFramer, 10)],
                         ids=["function", "class", "partial"])
def test_framed_handler_factory_may_be_any_zero_argument_callable_and_is_not_bound(factory):
    class Frames(FramedHandler):
        framer_factory = factory

        def __init__(self) -> None:
            self.frames: List[bytes] = []

        def frame_received(self, frame: bytes) -> None:
            self.frames.append(frame)
            self.send_frame(frame[::-1])

    conversation = drive(Frames, [b"3:abc,2:", b"xy,"])
    assert conversation.handler.frames == [b"abc", b"xy"]
    assert conversation.written == b"3:cba,2:yx,"


def test_a_framing_error_delivers_earlier_frames_logs_once_and_closes_without_reply(caplog):
    class Short(Recorder):
        max_length = 4

    with caplog.at_level(logging.WARNING, logger="netmux"):
        conversation = drive(Short, [b"ok\nthis line is far too long", b"more\n", b"\n"])
        conversation.handler.data_received(b"late\n")   # as a layer might still pass it: ignored
    assert conversation.handler.lines == [b"ok"]
    assert conversation.written == b"OK\n"
    assert conversation.closed and not conversation.aborted and conversation.lost_exc is None
    records = [r for r in caplog.records if r.name == "netmux"]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    assert "longer than max_length" in records[0].getMessage()


def test_a_handler_that_closes_mid_batch_gets_no_further_frames():
    conversation = drive(Recorder, [b"a\nquit\nb\nc\n", b"d\n"])
    assert conversation.handler.lines == [b"a", b"quit"]
    assert conversation.written == b"A\n"


def test_an_exception_in_frame_received_propagates_to_the_transport_which_aborts(caplog):
    class Boom(LineHandler):
        def line_received(self, line: bytes) -> None:
            raise RuntimeError(line)

    with caplog.at_level(logging.WARNING, logger="netmux"):
        conversation = drive(Boom, [b"x\ny\n"])
    assert conversation.aborted and repr(conversation.lost_exc) == "RuntimeError(b'x')"
    assert [r.exc_info[1] for r in caplog.records] == [conversation.lost_exc]


def test_a_framed_handler_works_when_connection_made_skips_super():
    class Bare(Recorder):
        def connection_made(self, transport) -> None:
            self.transport = transport

    assert drive(Bare, [b"x\n"]).handler.lines == [b"x"]


# ---------------------------------------------------------------------------
# The guide's examples
# ---------------------------------------------------------------------------


def test_the_framing_guide_examples_run_as_written():
    import doctest
    import os

    guide = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "framing.md")
    result = doctest.testfile(guide, module_relative=False, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 15 and result.failed == 0, result


def test_an_incomplete_frame_at_eof_is_reported_not_silently_dropped(caplog):
    with caplog.at_level(logging.WARNING, logger="netmux"):
        conversation = drive(Recorder, [b"whole\nhalf a li"])
    assert conversation.closed and conversation.lost_exc is None     # eof_received was falsy
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "9 bytes dropped" in warnings[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="netmux"):
        drive(Recorder, [b"whole\n"])
    assert not caplog.records


def test_framing_is_sans_io_it_imports_no_socket_reactor_or_handler_layer():
    """h11's purity: importing the framers loads no I/O module and no handler base class."""
    import os
    import subprocess
    import sys
    code = ("import sys, importlib.util, os; "
            "spec = importlib.util.spec_from_file_location('framing_alone', os.path.join('netmux', 'framing.py')); "
            "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module); "
            "print(sorted(m for m in ('socket', 'selectors', 'select', 'netmux.handler', 'netmux.reactor', 'asyncio') "
            "if m in sys.modules))")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_framed_handlers_still_import_from_netmux_framing():
    import netmux.framing
    assert netmux.framing.LineHandler is netmux.LineHandler
    assert netmux.framing.FramedHandler is netmux.FramedHandler


def test_a_framed_handler_may_answer_a_framing_error_before_the_default_close():
    """framing_error() is the one place the default lives (log, close without reply);
    a subclass answers first, then calls it."""
    import netmux
    from netmux.testing import drive

    class Polite(netmux.LineHandler):
        max_length = 4

        def line_received(self, line):
            self.send_line(line)

        def framing_error(self, error):
            self.transport.write(b"ERR too long\n")      # longer than a frame may be: raw
            super().framing_error(error)

    conversation = drive(Polite, [b"ok\ntoolong\n", b"never\n"], eof=False)
    assert conversation.written == b"ok\nERR too long\n"
    assert conversation.closed and conversation.lost_exc is None
    silent = drive(type("Silent", (netmux.LineHandler,), {"max_length": 4}), [b"toolong\n"], eof=False)
    assert silent.written == b"" and silent.closed
