"""Framing: turn a TCP byte stream into whole messages, sans-IO.

TCP delivers a stream of bytes, not messages: one ``recv()`` may return half a
line, or three lines and the start of a fourth. A *framer* is the small state
machine that sits between the stream and the application. It takes bytes in
(``feed``) and hands whole frames out; ``encode`` does the reverse. It owns a
receive buffer and nothing else: this module imports no socket and no reactor,
so every framer is tested by feeding it bytes, and works as well on a file, a
pipe or an asyncio protocol as on a netmux transport.

Three framings ship here:

* ``LineFramer``: frames end with a delimiter (``b"\\n"``, ``b"\\r\\n"``, any
  non-empty bytes), which is stripped.
* ``NetstringFramer``: ``b"3:abc,"``, D. J. Bernstein's netstrings.
* ``LengthPrefixFramer``: a fixed-size unsigned length (any ``struct`` integer
  format) followed by that many payload bytes.

The receive buffer follows h11's ``_receivebuffer``: one ``bytearray`` per
framer; the parse walks a read position forward over it and the consumed bytes
are dropped once per ``feed`` (one ``del buffer[:position]``), not once per
frame. A line framer remembers how far it has already searched for the
delimiter, so feeding a long line one byte at a time costs linear time, never a
rescan. When the buffer holds less than the new chunk -- the common case with
large reads -- frames are sliced straight out of the bytes handed to ``feed``
(joined to the short tail, if any) and only the incomplete tail is kept.

Limits and errors are explicit and sticky. ``max_length`` bounds a payload
(delimiter, netstring punctuation and length prefix not counted); a longer
frame raises ``FramingError`` as soon as the framer can know it, so a framer
never holds more than ``max_length`` plus one delimiter or header. Malformed
input raises ``FramingError`` naming what was wrong and its offset in the
stream. After an error the stream is bad: the framer drops its buffer and every
later ``feed`` raises again.

What it never does: import a socket, the reactor or the handler layer (as
h11 imports no I/O). ``FramedHandler`` and ``LineHandler``, which plug a
framer into a handler, live beside the other handlers in ``handler.py``.
"""

from __future__ import annotations

import re
import struct
from typing import Any, List, Optional, Union

__all__ = [
    "FramingError",
    "LineFramer",
    "NetstringFramer",
    "LengthPrefixFramer",
]

# What feed() and encode() accept: anything exposing the buffer protocol.
BytesLike = Union[bytes, bytearray, memoryview]


class FramingError(ValueError):
    """The byte stream cannot be framed: a frame over the limit, a bad header.

    ``offset`` is the position in the stream (bytes fed since the framer was
    made) of the offending byte or of the start of the offending frame, or
    ``None`` when the error concerns ``encode``. ``frames`` holds the frames
    that the failing ``feed`` completed before it reached the bad input: they
    were well-formed, and a consumer that wants "every frame before the error"
    independently of how the stream was chunked handles them before giving up.
    """

    def __init__(self, message: str, offset: Optional[int] = None) -> None:
        super().__init__(message)
        self.offset = offset
        self.frames: List[bytes] = []


# ---------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------


def check_count(name: str, value: int) -> int:
    """``value`` when it is an int >= 0 (a length limit, a byte count), else
    TypeError or ValueError naming ``name``. The one such check: the framers'
    ``max_length`` and StreamHandler's ``recv``/``readline`` arguments."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


# ---------------------------------------------------------------------------
# The receive buffer shared by every framer
# ---------------------------------------------------------------------------
class _Framer:
    """The receive buffer, the stream offset and the sticky error.

    A subclass implements ``_parse(data, frames)``: parse ``data`` (the
    unconsumed bytes, buffered tail first) from index 0, append each whole
    frame to ``frames`` and return how many bytes the frames consumed. Any
    position the subclass remembers between feeds is relative to the first
    unconsumed byte, and it shifts them itself by the returned count.
    """

    def __init__(self, max_length: int) -> None:
        self._max_length = check_count("max_length", max_length)
        self._buffer = bytearray()
        self._offset = 0  # stream offset of self._buffer[0]
        self._error: Optional[FramingError] = None

    @property
    def max_length(self) -> int:
        """The largest payload, in bytes, that this framer accepts."""
        return self._max_length

    @property
    def buffered(self) -> int:
        """How many bytes are held for an incomplete frame (0 after an error)."""
        return len(self._buffer)

    def feed(self, data: BytesLike) -> List[bytes]:
        """Take the next bytes of the stream; return the frames they completed.

        ``data`` is any bytes-like object, possibly empty. The frames come back
        in stream order as ``bytes``. Raises ``FramingError`` for a frame over
        ``max_length`` or malformed input (its ``frames`` attribute holds the
        frames completed before the error), and again on every call after
        that. Raises ``TypeError`` for an object that is not bytes-like.
        """
        if self._error is not None:
            raise FramingError(
                f"the stream already failed ({self._error}); this framer takes no more input",
                self._error.offset,
            )
        buffer = self._buffer
        unconsumed: Union[bytes, bytearray]
        if not buffer:
            # Nothing held: parse the caller's bytes in place, copy only the tail.
            unconsumed = data if type(data) is bytes else bytes(memoryview(data))
        elif len(buffer) < len(data):
            # A short tail before a big chunk: join them into bytes, so that
            # frames are sliced out as bytes (one copy, not two). Still
            # linear: the copy costs at most twice the new data.
            unconsumed = bytes(buffer) + data  # TypeError for str, int...
            buffer.clear()
        else:
            # A long tail (a big frame arriving in small pieces): append in
            # place, amortised O(len(data)), never a copy of the whole tail.
            buffer += data
            unconsumed = buffer
        if not unconsumed:
            return []

        frames: List[bytes] = []
        try:
            consumed = self._parse(unconsumed, frames)
        except FramingError as error:
            error.frames = frames
            self._error = error
            self._buffer = bytearray()  # the stream is bad: hold nothing for it
            raise

        self._offset += consumed
        if unconsumed is buffer:
            if consumed:
                del buffer[:consumed]
        elif consumed < len(unconsumed):
            buffer += memoryview(unconsumed)[consumed:]
        return frames

    def encode(self, frame: BytesLike) -> bytes:
        """Return the bytes that ``feed`` turns back into exactly ``[frame]``."""
        raise NotImplementedError

    def _parse(self, data: Union[bytes, bytearray], frames: List[bytes]) -> int:
        raise NotImplementedError

    def _payload(self, frame: BytesLike) -> bytes:
        """``frame`` as bytes, refused when it is over ``max_length``."""
        payload = frame if frame.__class__ is bytes else bytes(memoryview(frame))
        if len(payload) > self._max_length:
            raise FramingError(
                f"cannot encode a frame of {len(payload)} bytes: max_length is {self._max_length}"
            )
        return payload

    def __repr__(self) -> str:
        state = "failed" if self._error is not None else f"buffered={self.buffered}"
        return f"<{type(self).__name__} max_length={self._max_length} {state}>"


# ---------------------------------------------------------------------------
# Lines
# ---------------------------------------------------------------------------


class LineFramer(_Framer):
    """Frames that end with ``delimiter``; the frames come out without it.

    ``delimiter`` is any non-empty bytes and may arrive split across feeds.
    A line longer than ``max_length`` raises ``FramingError`` once more than
    ``max_length`` bytes are known to precede the delimiter: the bytes at the
    end of the buffer that could still be the start of a delimiter do not
    count yet, so the framer never holds more than
    ``max_length + len(delimiter) - 1`` bytes.
    """

    def __init__(self, delimiter: bytes = b"\n", max_length: int = 65536) -> None:
        if not isinstance(delimiter, (bytes, bytearray, memoryview)):
            raise TypeError(f"delimiter must be bytes, not {type(delimiter).__name__}")
        delimiter = bytes(delimiter)
        if not delimiter:
            raise ValueError("delimiter must not be empty")
        super().__init__(max_length)
        self._delimiter = delimiter
        # Where the next delimiter search starts, relative to the first
        # unconsumed byte: everything before it is known to hold no delimiter.
        self._search_from = 0

    @property
    def delimiter(self) -> bytes:
        """The bytes that end every line."""
        return self._delimiter

    def encode(self, frame: BytesLike) -> bytes:
        """Return ``frame + delimiter``.

        Raises ``FramingError`` when the frame is over ``max_length``, or when
        the delimiter would be found anywhere but at the end of the encoded
        bytes (the frame contains it, or ends with a part of it that makes an
        earlier match): that frame would not come back whole.
        """
        # bytes within the limit (a line per reply: the hot path) skip the helper
        if frame.__class__ is bytes and len(frame) <= self._max_length:
            payload = frame
        else:
            payload = self._payload(frame)
        delimiter = self._delimiter
        encoded = payload + delimiter
        # One byte: ``in`` is the same test and takes no argument parsing, unlike find().
        if (delimiter in payload if len(delimiter) == 1
                else encoded.find(delimiter) != len(payload)):
            raise FramingError(
                f"cannot encode a frame that contains the delimiter {self._delimiter!r}"
            )
        return encoded

    def feed(self, data: BytesLike) -> List[bytes]:
        """Take the next bytes of the stream; return the lines they completed
        (``_Framer.feed``, with a shortcut for the common chunk: one whole line)."""
        if not self._buffer and data.__class__ is bytes and self._error is None:
            # Nothing held, so no search position either: a chunk that is one
            # line within the limit (a request, a reply) is framed in one find.
            delimiter = self._delimiter
            end = len(data) - len(delimiter)
            if end <= self._max_length and data.find(delimiter) == end and end >= 0:
                self._offset += end + len(delimiter)
                return [data[:end]]
        return _Framer.feed(self, data)

    def _parse(self, data: Union[bytes, bytearray], frames: List[bytes]) -> int:
        delimiter = self._delimiter
        width = len(delimiter)
        max_length = self._max_length
        position = 0
        search_from = self._search_from
        end = len(data)
        while True:
            # A delimiter starting past position + max_length would end a line
            # that is too long: never search (nor wait) beyond that.
            limit = position + max_length + width
            if search_from >= end:          # all consumed: no find() call to say so
                break
            found = data.find(delimiter, search_from, limit)
            if found < 0:
                break
            frames.append(data[position:found])     # type: ignore[arg-type]  # bytes below
            position = search_from = found + width
        if data.__class__ is not bytes and frames:      # slices of a held bytearray tail
            frames[:] = [bytes(frame) for frame in frames]
        if end >= limit:
            self._too_long(position)
        if end - position > max_length:
            # The tail may end with the first bytes of a delimiter; the line
            # is only known to be too long if it is so without them.
            if end - self._partial_delimiter(data, position) - position > max_length:
                self._too_long(position)
        # No delimiter starts before end - width + 1: the next search begins
        # there, so a line fed byte by byte is scanned once, not once per byte.
        search_from = end - width + 1
        self._search_from = search_from - position if search_from > position else 0
        return position

    def _partial_delimiter(self, data: Union[bytes, bytearray], position: int) -> int:
        """Length of the longest end of ``data[position:]`` that begins a delimiter."""
        delimiter = self._delimiter
        for size in range(min(len(delimiter) - 1, len(data) - position), 0, -1):
            if data.endswith(delimiter[:size]):
                return size
        return 0

    def _too_long(self, position: int) -> None:
        raise FramingError(
            f"line starting at stream offset {self._offset + position} is longer than "
            f"max_length ({self._max_length} bytes) without a delimiter {self._delimiter!r}",
            self._offset + position,
        )


# ---------------------------------------------------------------------------
# Netstrings
# ---------------------------------------------------------------------------


class NetstringFramer(_Framer):
    """D. J. Bernstein's netstrings: ``b"3:abc,"`` carries ``b"abc"``.

    The length is ASCII decimal digits, not empty and without leading zeros
    (``b"0:,"`` is the empty frame; ``b"03:abc,"`` is refused), so every frame
    has exactly one encoding. A length over ``max_length`` raises
    ``FramingError`` as soon as its digits show it, before the ``':'``.
    """

    def __init__(self, max_length: int = 1 << 20) -> None:
        super().__init__(max_length)
        self._max_digits = len(str(self._max_length))
        # While a frame's payload is awaited: where it starts and where its
        # ',' must be, relative to the first unconsumed byte; -1 while the
        # length is still being read.
        self._payload_start = -1
        self._comma = -1

    def encode(self, frame: BytesLike) -> bytes:
        """Return ``b"<length>:<frame>,"``; ``FramingError`` over ``max_length``."""
        payload = self._payload(frame)
        return b"%d:%s," % (len(payload), payload)

    def _parse(self, data: Union[bytes, bytearray], frames: List[bytes]) -> int:
        end = len(data)
        position = 0
        payload_start, comma = self._payload_start, self._comma
        while True:
            if comma < 0:
                # The length is at most max_digits digits: look no further
                # for its ':', so a header without one fails at once.
                colon = data.find(b":", position, position + self._max_digits + 1)
                if colon < 0:
                    self._check_digits(data[position : position + self._max_digits + 1], position)
                    break
                digits = data[position:colon]
                # The common case inline: digits, no leading zero, within the limit.
                if digits.isdigit() and (digits[0] != 0x30 or colon - position == 1):
                    length = int(digits)
                    if length > self._max_length:
                        self._check_digits(digits, position)  # raises, saying why
                elif colon == position:
                    raise FramingError(
                        f"netstring length is empty at stream offset {self._offset + position}",
                        self._offset + position,
                    )
                else:
                    length = self._check_digits(digits, position)  # raises, saying why
                payload_start = colon + 1
                comma = payload_start + length
            if comma >= end:
                break
            if data[comma] != 0x2C:  # b","
                raise FramingError(
                    f"netstring expected ',' at stream offset {self._offset + comma}, "
                    f"found {bytes(data[comma : comma + 1])!r}",
                    self._offset + comma,
                )
            frames.append(bytes(data[payload_start:comma]))
            position = comma + 1
            payload_start = comma = -1

        if comma >= 0:
            payload_start -= position
            comma -= position
        self._payload_start, self._comma = payload_start, comma
        return position

    def _check_digits(self, digits: Union[bytes, bytearray], position: int) -> int:
        """Validate the (possibly partial) length ``digits``; return its value."""
        if not digits.isdigit():  # ASCII digits only, for bytes: find the culprit
            for index, byte in enumerate(digits):
                if not 0x30 <= byte <= 0x39:
                    offset = self._offset + position + index
                    raise FramingError(
                        f"netstring length: expected a digit or ':' at stream offset {offset}, "
                        f"found {bytes(digits[index : index + 1])!r}",
                        offset,
                    )
        if len(digits) > 1 and digits[0] == 0x30:
            raise FramingError(
                f"netstring length has a leading zero at stream offset {self._offset + position}",
                self._offset + position,
            )
        value = int(digits) if digits else 0
        if value > self._max_length:
            # Without leading zeros, more digits only make it larger.
            raise FramingError(
                f"netstring at stream offset {self._offset + position} is longer than "
                f"max_length ({self._max_length} bytes): its length reads {bytes(digits)!r}",
                self._offset + position,
            )
        return value


# ---------------------------------------------------------------------------
# Length prefixes
# ---------------------------------------------------------------------------

# One unsigned integer, with an optional byte order: "!I", "<Q", "B", "=H"...
_UNSIGNED_HEADER = re.compile(r"[@=<>!]?[BHILQ]")


class LengthPrefixFramer(_Framer):
    """A fixed-size unsigned length, then that many payload bytes.

    ``header`` is a ``struct`` format of one unsigned integer with an optional
    byte order (``"!H"``, ``"!I"``, ``"<Q"``, ``"B"``...); the length counts
    the payload only: ``encode(frame) == struct.pack(header, len(frame)) +
    frame``. A length over ``max_length`` raises ``FramingError`` as soon as
    the header is read, before any of the payload is buffered.
    """

    def __init__(self, header: str = "!I", max_length: int = 1 << 20) -> None:
        if isinstance(header, bytes):
            header = header.decode("ascii")
        if not isinstance(header, str):
            raise TypeError(f"header must be a struct format string, not {type(header).__name__}")
        if not _UNSIGNED_HEADER.fullmatch(header):
            raise ValueError(
                f"header must be one unsigned struct integer (B, H, I, L or Q) with an "
                f"optional byte order (@, =, <, >, !), got {header!r}"
            )
        super().__init__(max_length)
        self._header = struct.Struct(header)
        self._largest = (1 << (8 * self._header.size)) - 1
        # Where the awaited frame ends, relative to the first unconsumed byte;
        # -1 while its header is incomplete.
        self._frame_end = -1

    @property
    def header(self) -> str:
        """The ``struct`` format of the length prefix."""
        return self._header.format

    def encode(self, frame: BytesLike) -> bytes:
        """Return the packed length followed by ``frame``.

        Raises ``FramingError`` for a frame over ``max_length`` or too long for
        the header to count.
        """
        payload = self._payload(frame)
        if len(payload) > self._largest:
            raise FramingError(
                f"cannot encode a frame of {len(payload)} bytes: "
                f"header {self.header!r} counts at most {self._largest}"
            )
        return self._header.pack(len(payload)) + payload

    def _parse(self, data: Union[bytes, bytearray], frames: List[bytes]) -> int:
        header = self._header
        header_size = header.size
        end = len(data)
        position = 0
        frame_end = self._frame_end
        while True:
            if frame_end < 0:
                if end - position < header_size:
                    break
                (length,) = header.unpack_from(data, position)
                if length > self._max_length:
                    raise FramingError(
                        f"length prefix at stream offset {self._offset + position} announces "
                        f"{length} bytes, over max_length ({self._max_length} bytes)",
                        self._offset + position,
                    )
                frame_end = position + header_size + length
            if frame_end > end:
                break
            frames.append(bytes(data[position + header_size : frame_end]))
            position = frame_end
            frame_end = -1

        self._frame_end = frame_end - position if frame_end >= 0 else -1
        return position


def __getattr__(name: str) -> Any:
    """``FramedHandler`` and ``LineHandler`` moved to the handler layer (handler.py),
    so that this module stays sans-IO; code that imports them from here still
    gets them, imported only when asked for."""
    if name in ("FramedHandler", "LineHandler"):
        from . import handler
        return getattr(handler, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
