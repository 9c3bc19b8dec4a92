"""RESP2, the Redis protocol, sans-IO: bytes in, commands (lists of bytes) out.

Where it sits: under ``kv.py``, beside ``netmux.framing``. It imports no
socket and no reactor; its tests feed bytes (``tests/test_app_resp.py``).

A client sends either a *multibulk* request, ``*2\\r\\n$3\\r\\nGET\\r\\n$1\\r\\nk\\r\\n``,
or an *inline* one, ``GET k\\r\\n`` (what a human types into ``nc``). Both
become ``[b"GET", b"k"]``.

Linear work, whatever the chunking:

* The common case -- whole requests in one ``recv`` -- is parsed straight from
  the ``bytes`` the transport hands us: an argument is one slice, no copy into
  a buffer first.
* A request cut between two reads keeps its progress (arguments done, the
  bulk length announced), so the next read resumes where the last stopped and
  nothing is parsed twice. Held bytes are only re-joined when a frame can
  have completed: the announced bulk is all there, or a line ended (a ``\\n``
  arrived). A 1 MiB value sent one byte at a time costs one join, not a
  million.

Limits, checked as soon as they are known and never buffering past them
(Redis's own numbers): a bulk string over ``max_bulk`` bytes (the ``--max-request``
of ``python -m netmux kv``), more than 1,048,576 arguments, an inline line over
64 KiB, a length line over 32 bytes; and, where Redis relies on its 1 GiB
query-buffer limit, one request whose arguments add up to more than ``max_total``
bytes (64 × ``max_bulk`` unless given), so that a single MSET cannot take all memory. Anything malformed -- a negative or
non-decimal length, a missing ``\\r\\n`` after a bulk, a ``*`` request whose
items are not ``$`` bulks -- is a protocol error. Errors are sticky: the
stream is bad, and the caller replies ``-ERR Protocol error: ...`` and closes.
"""
from __future__ import annotations

from typing import List, Optional, Union

__all__ = ["ProtocolError", "RespParser", "MAX_ARGUMENTS", "MAX_INLINE", "bulk", "error", "integer",
           "array"]

MAX_ARGUMENTS = 1024 * 1024      # Redis: "invalid multibulk length" above this
MAX_INLINE = 64 * 1024           # Redis's PROTO_INLINE_MAX_SIZE
_MAX_LENGTH_LINE = 32            # "*1048576" or "$1048576" are 8 bytes; 32 is generous


class ProtocolError(ValueError):
    """The peer broke RESP: the message is the text after ``-ERR Protocol error: ``.

    Reported as ``netmux.FramingError`` is: raised by the ``feed`` that met the bad
    input, with ``commands``, the whole commands that feed completed before it
    (well-formed: the caller runs them before giving up), and sticky (any later
    ``feed`` raises it again; ``RespParser.error`` keeps it)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.commands: List["Command"] = []


Command = List[bytes]


class RespParser:
    """Incremental RESP2 request parser: ``feed(data)`` returns the whole commands.

    ``feed`` returns every command completed by ``data``, in order. When the
    data breaks the protocol it raises a ``ProtocolError`` whose ``commands``
    are those completed before the fault (as ``FramingError.frames``); ``error``
    keeps it, and any later ``feed`` raises it again.
    """

    __slots__ = ("max_bulk", "max_total", "error", "_held", "_need", "_arguments", "_remaining",
                 "_bulk_length", "_budget")

    def __init__(self, max_bulk: int = 1 << 20, max_total: Optional[int] = None) -> None:
        if max_bulk < 0 or (max_total is not None and max_total < 0):
            raise ValueError("limits must not be negative")
        self.max_bulk = max_bulk
        self.max_total = 64 * max_bulk if max_total is None else max_total
        self.error: Optional[ProtocolError] = None
        self._held = bytearray()       # bytes of a request not yet complete
        self._need = 0                 # len(_held) a bulk body waits for; 0: waiting for a line
        self._arguments: Optional[Command] = None   # a multibulk request in progress
        self._remaining = 0            # its arguments still to come
        self._bulk_length = -1         # the current argument's announced length; -1: not read yet
        self._budget = 0               # bytes the request in progress may still announce

    @property
    def buffered(self) -> int:
        """How many bytes are held for an incomplete request."""
        return len(self._held)

    def feed(self, data: bytes) -> List[Command]:
        """Every command that ``data`` completes; see the class docstring for errors."""
        if self.error is not None:
            raise self.error
        commands: List[Command] = []
        held = self._held
        try:
            if held:
                held += data
                if not self._may_complete(data):
                    return commands
                data = bytes(held)
                held.clear()
            position = self._parse(data, commands)
            if position < len(data):
                held += memoryview(data)[position:]
                self._check_held()
        except ProtocolError as exc:
            self.error = exc
            held.clear()
            self._arguments = None
            exc.commands = commands
            raise
        return commands

    def _may_complete(self, data: bytes) -> bool:
        """Whether the held bytes plus ``data`` can end a frame (else: keep holding)."""
        if self._need:
            return len(self._held) >= self._need
        if b"\n" in data:
            return True
        self._check_held()
        return False

    def _check_held(self) -> None:
        """A line still unterminated: fail as soon as it is longer than allowed."""
        if self._need:
            return
        held = self._held
        if self._arguments is None and held[:1] != b"*":
            if len(held) > MAX_INLINE:
                raise ProtocolError("too big inline request")
        elif len(held) > _MAX_LENGTH_LINE:
            raise ProtocolError("too big length line")

    # ------------------------------------------------------------------
    # The parse proper: from position 0 of ``data``, return where it stopped
    # ------------------------------------------------------------------
    def _parse(self, data: bytes, commands: List[Command]) -> int:
        position = 0
        size = len(data)
        self._need = 0
        while position < size:
            if self._arguments is None:
                if data[position] != 42:                     # not b"*": an inline command
                    end = data.find(b"\n", position)
                    if end < 0:
                        return position
                    line = data[position:end]
                    position = end + 1
                    if len(line) > MAX_INLINE:
                        raise ProtocolError("too big inline request")
                    arguments = line.split()
                    if arguments:
                        commands.append(arguments)
                    continue
                end = data.find(b"\r\n", position, position + _MAX_LENGTH_LINE + 2)
                if end < 0:
                    return self._unterminated(data, position)
                count = _multibulk_length(data[position + 1:end])
                position = end + 2
                if count > MAX_ARGUMENTS:
                    raise ProtocolError("invalid multibulk length")
                if count <= 0:                                # *0 and *-1: nothing to run
                    continue
                self._arguments = []
                self._remaining = count
                self._budget = self.max_total
            position = self._parse_bulks(data, position)
            if self._remaining:
                return position
            commands.append(self._arguments)
            self._arguments = None
        return position

    def _parse_bulks(self, data: bytes, position: int) -> int:
        """Read the current request's ``$`` arguments while they are whole.

        The hot loop of the server: one ``find``, one ``int`` and one slice per
        argument, and no call of our own (a helper call per argument was measurable).
        """
        append = self._arguments.append                       # type: ignore[union-attr]
        find = data.find
        size = len(data)
        remaining = self._remaining
        length = self._bulk_length
        budget = self._budget
        while remaining:
            if length < 0:
                if position >= size:
                    break
                if data[position] != 36:                      # b"$"
                    raise ProtocolError(f"expected '$', got {chr(data[position])!r}")
                end = find(b"\r\n", position, position + _MAX_LENGTH_LINE + 2)
                if end < 0:
                    self._unterminated(data, position)
                    break
                digits = data[position + 1:end]
                if not digits.isdigit():
                    raise ProtocolError("invalid bulk length")
                length = int(digits)
                if length > self.max_bulk:
                    raise ProtocolError("invalid bulk length")
                budget -= length
                if budget < 0:
                    raise ProtocolError("too big request")
                position = end + 2
            end = position + length
            if end + 2 > size:
                self._need = length + 2        # what the held bytes must reach
                break
            if data[end] != 13 or data[end + 1] != 10:        # b"\r\n"
                raise ProtocolError("bulk string not followed by CRLF")
            append(data[position:end])
            position = end + 2
            length = -1
            remaining -= 1
        self._remaining = remaining
        self._bulk_length = length
        self._budget = budget
        return position

    @staticmethod
    def _unterminated(data: bytes, position: int) -> int:
        """A length line without its CRLF: wait for more, unless it is already too long."""
        if len(data) - position > _MAX_LENGTH_LINE + 1:
            raise ProtocolError("too big length line")
        return position


def _multibulk_length(digits: bytes) -> int:
    """The count after ``*``: a decimal, or -1 (a null request, which Redis ignores)."""
    if digits.isdigit():
        return int(digits)
    if digits == b"-1":
        return -1
    raise ProtocolError("invalid multibulk length")


# ----------------------------------------------------------------------
# Replies: each returns the encoded bytes
# ----------------------------------------------------------------------
def bulk(value: Union[bytes, bytearray, None]) -> bytes:
    """A bulk string (a copy of ``value``); None is the null bulk ``$-1``."""
    if value is None:
        return b"$-1\r\n"
    return b"$%d\r\n%s\r\n" % (len(value), value)


def integer(value: int) -> bytes:
    """An integer reply."""
    return b":%d\r\n" % value


def error(message: str) -> bytes:
    """An error reply: ``message`` starts with its kind (``ERR``, ``WRONGTYPE``)."""
    return b"-%s\r\n" % message.replace("\r", " ").replace("\n", " ").encode("utf-8", "replace")


def array(items: List[bytes]) -> bytes:
    """An array of already encoded replies."""
    return b"*%d\r\n%s" % (len(items), b"".join(items))
