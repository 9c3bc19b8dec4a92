"""RESP2, the Redis protocol, sans-IO: bytes in, commands (lists of bytes) out.

Where it sits: under ``kv.py``, beside ``netmux.framing``. It imports no
socket and no reactor; its tests feed bytes (``tests/test_app_resp.py``), and
``tests/test_app_kv_differential.py`` sends the same bytes to redis-server.

A client sends either a *multibulk* request, ``*2\\r\\n$3\\r\\nGET\\r\\n$1\\r\\nk\\r\\n``,
or an *inline* one, ``GET k\\r\\n`` (what a human types into ``nc``). Both
become ``[b"GET", b"k"]``. Both are read exactly as redis-server 7.0 reads
them (networking.c), quirks included, because a client cannot tell the two
servers apart otherwise:

* An inline line ends at ``\\n`` (one ``\\r`` before it dropped) and is split by
  ``split_inline``, Redis's ``sdssplitargs``: blanks separate words; in double
  quotes ``\\xHH``, ``\\n``, ``\\r``, ``\\t``, ``\\b``, ``\\a`` and ``\\<any>``;
  in single quotes only ``\\'``; a closing quote followed by anything but a
  blank, or a quote left open, is "unbalanced quotes in request".
* A length line (``*N``, ``$N``) ends at its first ``\\r`` and the byte after
  it, whatever that byte is; ``N`` is strict decimal (no ``+``, no leading
  zero); ``*0`` and any negative count are skipped; after a bulk body two
  bytes are skipped unchecked (Redis does not look at them).
* Redis finds line ends with ``strchr``, which stops at a NUL byte: a NUL
  before the end of a line means the line never ends for Redis. We do the
  same (the connection waits, then fails at the 64 KiB line limit).

Linear work, whatever the chunking:

* The common case -- whole multibulk requests in one ``recv``, as every client
  library and ``redis-benchmark -P`` send them -- takes the fast path,
  ``_parse_whole``: one ``bytes.split`` on ``\\r\\n``, a dict lookup and a
  slice per request, and one list compare for all the ``$`` lines at once, so
  the work per argument runs in C (about a third of the general parse's
  instructions; ``bench/kv_parser.py``). It takes only what it can prove the
  general parse would read the same way, and hands it the rest.
* The general parse reads straight from the ``bytes`` the transport hands us:
  an argument is one slice, no copy into a buffer first.
* A request cut between two reads keeps its progress (arguments done, the
  bulk length announced), so the next read resumes where the last stopped and
  nothing is parsed twice. Held bytes are only re-joined when a frame can
  have completed: the announced bulk is all there, or a line's end arrived.
  A 1 MiB value sent one byte at a time costs one join, not a million.

Limits, Redis's defaults, checked as soon as they are known; memory follows
what the client sent, never what it announced (nothing is preallocated):
a bulk string over ``max_bulk`` (proto-max-bulk-len, 512 MiB; ``--max-request``
of ``python -m netmux kv``) or a count over ``2**31 - 1`` (Redis 7's limit, not
6's 1,048,576); an unfinished line held past 64 KiB (PROTO_INLINE_MAX_SIZE:
"too big inline request", "too big mbulk count string", "too big bulk count
string"; like Redis this is checked on what is held after a read, and the
server feeds 16 KiB at a time as Redis reads); and, ours, one request whose
arguments add up to more than ``max_total`` (1 GiB, client-query-buffer-limit,
where Redis would close without a word). Errors are sticky: the stream is
bad, and the caller replies ``-ERR Protocol error: ...`` (``error_reply``) and
closes.
"""
from __future__ import annotations

import re
from functools import lru_cache
from itertools import chain
from typing import List, Optional, Tuple, Union

__all__ = ["ProtocolError", "RespParser", "MAX_ARGUMENTS", "MAX_INLINE", "MAX_BULK", "MAX_QUERY",
           "split_inline", "bulk", "error", "integer", "array"]

MAX_ARGUMENTS = (1 << 31) - 1    # Redis 7: "invalid multibulk length" above INT_MAX
MAX_INLINE = 64 * 1024           # Redis's PROTO_INLINE_MAX_SIZE: an unfinished line, any kind
MAX_BULK = 512 * 1024 * 1024     # Redis's proto-max-bulk-len default
MAX_QUERY = 1024 * 1024 * 1024   # Redis's client-query-buffer-limit default
_TOO_BIG = {"inline": "too big inline request", "*": "too big mbulk count string",
            "$": "too big bulk count string"}


class ProtocolError(ValueError):
    """The peer broke RESP: the message is the text after ``-ERR Protocol error: ``.

    Reported as ``netmux.FramingError`` is: raised by the ``feed`` that met the bad
    input, with ``commands``, the whole commands that feed completed before it
    (well-formed: the caller runs them before giving up), and sticky (any later
    ``feed`` raises it again; ``RespParser.error`` keeps it)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.commands: List["Command"] = []

    def reply(self) -> bytes:
        """The error reply Redis sends, byte for byte (a byte it quotes is sent raw)."""
        text = str(self).replace("\r", " ").replace("\n", " ")
        return b"-ERR Protocol error: %s\r\n" % text.encode("latin-1", "replace")


Command = List[bytes]


class RespParser:
    """Incremental RESP2 request parser: ``feed(data)`` returns the whole commands.

    ``feed`` returns every command completed by ``data``, in order. When the
    data breaks the protocol it raises a ``ProtocolError`` whose ``commands``
    are those completed before the fault (as ``FramingError.frames``); ``error``
    keeps it, and any later ``feed`` raises it again.
    """

    __slots__ = ("max_bulk", "max_total", "error", "_held", "_need", "_stalled", "_arguments",
                 "_remaining", "_bulk_length", "_budget", "_whole_limit")

    def __init__(self, max_bulk: int = MAX_BULK, max_total: Optional[int] = None) -> None:
        if max_bulk < 0 or (max_total is not None and max_total < 0):
            raise ValueError("limits must not be negative")
        self.max_bulk = max_bulk
        self.max_total = MAX_QUERY if max_total is None else max_total
        # No argument of a feed this long can break a limit: _parse_whole may take it.
        self._whole_limit = min(self.max_bulk, self.max_total)
        self.error: Optional[ProtocolError] = None
        self._held = bytearray()       # bytes of a request not yet complete
        self._need = 0                 # len(_held) a bulk body waits for; 0: waiting for a line
        self._stalled = False          # a NUL came before the line's end: it never ends (strchr)
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
                    self._check_held()
                    return commands
                data = bytes(held)
                held.clear()
            position = 0
            # Whole requests first, in C (see _parse_whole); the general parse takes the rest.
            if self._arguments is None and data[:1] == b"*" and len(data) <= self._whole_limit:
                position = _parse_whole(data, commands)
            position = self._parse(data, commands, position)
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

    def _line_kind(self) -> str:
        """What the held line is: ``inline``, a count (``*``) or a bulk length (``$``)."""
        if self._arguments is not None:
            return "$"
        return "*" if self._held[:1] == b"*" else "inline"

    def _may_complete(self, data: bytes) -> bool:
        """Whether the held bytes, ``data`` just added, can end a frame (else: keep holding)."""
        if self._stalled:
            return False
        held = self._held
        if self._need:
            return len(held) >= self._need
        if self._line_kind() == "inline":
            return b"\n" in data
        # A length line ends at a "\r" and one more byte: look from the byte before data.
        return held.find(b"\r", len(held) - len(data) - 1, len(held) - 1) >= 0

    def _check_held(self) -> None:
        """A line still unfinished: fail once more than Redis would hold is held."""
        if not self._need and len(self._held) > MAX_INLINE:
            raise ProtocolError(_TOO_BIG[self._line_kind()])

    def _stall(self, position: int) -> int:
        """A NUL in the line: Redis's strchr never finds its end; hold until the limit."""
        self._stalled = True
        return position

    # ------------------------------------------------------------------
    # The general parse: from ``position`` in ``data``, return where it stopped
    # ------------------------------------------------------------------
    def _parse(self, data: bytes, commands: List[Command], position: int) -> int:
        size = len(data)
        self._need = 0
        while position < size:
            if self._arguments is None:
                if data[position] != 42:                     # not b"*": an inline command
                    end = data.find(b"\n", position)
                    if end < 0:
                        return position
                    line = data[position:end]
                    # No quote, NUL, \v or \f (nearly always): bytes.split() is Redis's split.
                    arguments = line.split() if _plain(line) else self._unusual_line(line)
                    if arguments is None:
                        return self._stall(position)
                    position = end + 1
                    if arguments:
                        commands.append(arguments)
                    continue
                end = data.find(b"\r", position)
                if end < 0 or end + 2 > size:
                    return position
                count = _multibulk_length(data[position + 1:end])
                if count is None:
                    return self._stall(position)
                position = end + 2
                if count <= 0:                                # *0 and *-N: nothing to run
                    continue
                self._arguments = []
                self._remaining = count
                self._budget = self.max_total
            position = self._parse_bulks(data, position)
            if self._remaining or self._stalled:
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
        max_bulk = self.max_bulk
        while remaining:
            if length < 0:
                end = find(b"\r", position)
                if end < 0 or end + 2 > size:
                    break
                digits = data[position + 1:end]
                if data[position] != 36 or end - position > 19 or not digits.isdigit() or (
                        digits[0] == 48 and end - position > 2):  # not b"$N": the slow path
                    length = self._bulk_header(data[position:end])
                    if length < 0:
                        self._stall(position)
                        break
                else:
                    length = int(digits)
                if length > max_bulk:
                    raise ProtocolError("invalid bulk length")
                budget -= length
                if budget < 0:
                    raise ProtocolError("too big request")
                position = end + 2
            end = position + length
            if end + 2 > size:
                self._need = length + 2        # what the held bytes must reach
                break
            append(data[position:end])         # the two bytes after it: skipped, as Redis does
            position = end + 2
            length = -1
            remaining -= 1
        self._remaining = remaining
        self._bulk_length = length
        self._budget = budget
        return position

    @staticmethod
    def _unusual_line(line: bytes) -> Optional[Command]:
        """An inline line with quotes, \\v, \\f or a NUL: its words; None: a NUL (stall)."""
        if b"\x00" in line:
            return None
        words = split_inline(line[:-1] if line[-1:] == b"\r" else line)
        if words is None:
            raise ProtocolError("unbalanced quotes in request")
        return words

    @staticmethod
    def _bulk_header(line: bytes) -> int:
        """A ``$`` line the fast path refused: its length, -1 (a NUL: stall) or the error."""
        if b"\x00" in line:
            return -1
        if line[:1] != b"$":            # empty: the line is its \r alone, which Redis names
            raise ProtocolError(f"expected '$', got '{chr(line[0]) if line else chr(13)}'")
        length = _string2ll(line[1:])
        if length is None or length < 0:
            raise ProtocolError("invalid bulk length")
        return length


# ----------------------------------------------------------------------
# The fast path: whole multibulk requests, parsed by bytes methods in C
# ----------------------------------------------------------------------
_WHOLE_ARGUMENTS = 1024         # more arguments than this: the general parse
_COUNTS = {b"*%d" % count: count for count in range(1, _WHOLE_ARGUMENTS + 1)}


def _parse_whole(data: bytes, commands: List[Command]) -> int:
    """Append the whole multibulk requests at the start of ``data`` to ``commands``;
    return where the first one it cannot take begins (partial, inline or odd).

    One ``split`` on ``\\r\\n`` cuts the lines, and a loop of a dict lookup and
    two slices per request takes, as its arguments, the parts after a count line
    of ``_COUNTS`` (strict decimal, 1 to 1,024). That is right when every ``$``
    line between them is the canonical ``$<length>`` of the part after it: then
    each argument is whole, ends at a ``\\r\\n`` and no line holds a NUL, so the
    general parse reads exactly these arguments. All requests are checked at
    once, in C: the list of their ``$`` lines must equal the list ``_LENGTHS``
    makes of their arguments' lengths. When it does not (a value holds a
    ``\\r\\n``, a length has a leading zero, a value is 4,096 bytes or more,
    longer than ``_LENGTHS`` knows), ``_parse_checked`` checks the requests one
    by one and stops at the first that fails. What it leaves, the general parse takes, with
    every quirk and error. The caller guarantees no argument can be over a limit
    (``data`` is shorter than both).
    """
    parts = data.split(b"\r\n")
    last = len(parts) - 1               # parts[last] ends no line: never an argument here
    index = 0
    headers: List[bytes] = []
    counts, append, extend, first = _COUNTS, commands.append, headers.extend, len(commands)
    while index < last:
        count = counts.get(parts[index])
        if count is None:
            break
        end = index + 2 * count         # the last argument's part
        if end >= last:
            break
        append(parts[index + 2:end + 1:2])
        extend(parts[index + 1:end:2])
        index = end + 1
    if index == 0:
        return 0
    try:
        if headers == list(map(_LENGTHS.__getitem__, map(len, chain.from_iterable(commands[first:])))):
            return len(data) - len(parts[last]) if index == last else sum(map(len, parts[:index])) + 2 * index
    except IndexError:                  # a value longer than _LENGTHS knows
        pass
    del commands[first:]
    return _parse_checked(parts, last, commands)


_LENGTHS = [b"$%d" % length for length in range(4096)]     # length -> its $ line, for the common sizes


def _parse_checked(parts: List[bytes], last: int, commands: List[Command]) -> int:
    """``_parse_whole``'s loop with each request's ``$`` lines checked before it is taken."""
    index = 0
    counts, append, join = _COUNTS, commands.append, b"\r\n".join
    while index < last:
        count = counts.get(parts[index])
        if count is None:
            break
        end = index + 2 * count
        if end >= last:
            break
        arguments = parts[index + 2:end + 1:2]
        if _headers(count) % tuple(map(len, arguments)) != join(parts[index + 1:end:2]):
            break
        append(arguments)
        index = end + 1
    return sum(map(len, parts[:index])) + 2 * index


@lru_cache(maxsize=64)
def _headers(count: int) -> bytes:
    """The format of the ``$`` lines of ``count`` arguments, ``\\r\\n`` between them."""
    return b"\r\n".join([b"$%d"] * count)


_LONG_LONG = re.compile(rb"0|-?[1-9][0-9]{0,18}")


def _string2ll(digits: bytes) -> Optional[int]:
    """Redis's ``string2ll``: strict decimal in C's long long, or None."""
    if not _LONG_LONG.fullmatch(digits):
        return None
    number = int(digits)
    return number if -(1 << 63) <= number < (1 << 63) else None


def _multibulk_length(digits: bytes) -> Optional[int]:
    """The count after ``*`` (zero or negative: a request to skip); None: a NUL (stall)."""
    if digits.isdigit() and len(digits) < 10 and digits[0] != 48:    # 1 to 999,999,999: no regex
        return int(digits)
    count = _string2ll(digits)
    if count is not None and count <= MAX_ARGUMENTS:
        return count
    if b"\x00" in digits:
        return None
    raise ProtocolError("invalid multibulk length")


# ----------------------------------------------------------------------
# Inline commands: Redis's sdssplitargs
# ----------------------------------------------------------------------
_SPACE = b" \t\n\r\x0b\x0c"                      # C's isspace: skipped between words
_BLANKS = re.compile(rb"[ \t\n\r\x0b\x0c]*")
_BARE = re.compile(rb"[^ \t\n\r\x00\"']*")       # a word's unquoted part (\v, \f stay in it)
_DOUBLE = re.compile(rb'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_SINGLE = re.compile(rb"'((?:[^'\\]|\\'|\\(?!'))*)'")
_ESCAPE = re.compile(rb"\\(x[0-9a-fA-F]{2}|.)", re.DOTALL)
_ESCAPED = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"a": b"\a"}
_plain = re.compile(rb"[^\"'\x0b\x0c\x00]*").fullmatch   # no quote, \v, \f, NUL: bytes.split() is Redis's


def _unescape(match: "re.Match[bytes]") -> bytes:
    code = match.group(1)
    return bytes([int(code[1:], 16)]) if len(code) == 3 else _ESCAPED.get(code, code)


def split_inline(line: bytes) -> Optional[List[bytes]]:
    """An inline command's words as Redis's ``sdssplitargs`` makes them; None: unbalanced quotes.

    ``line`` has no NUL and no line ending (the parser took them off). A word is
    an unquoted part, then possibly one quoted part, which must be followed by a
    blank or the end: ``a"b c"`` is ``ab c``, ``"a"b`` is unbalanced.
    """
    if _plain(line):
        return line.split()
    words: List[bytes] = []
    position, size = _after_blanks(line, 0), len(line)
    while position < size:
        bare = _BARE.match(line, position)
        word, position = bare.group(), bare.end()    # type: ignore[union-attr]  # "*": always
        if position < size and line[position] in b"\"'":
            quoted = _quoted(line, position)
            if quoted is None:
                return None
            part, position = quoted
            word += part
        words.append(word)
        position = _after_blanks(line, position)
    return words


def _quoted(line: bytes, position: int) -> Optional[Tuple[bytes, int]]:
    """The quoted part at ``position``, unescaped, and where it ends; None: unbalanced."""
    double = line[position] == 34
    match = (_DOUBLE if double else _SINGLE).match(line, position)
    if match is None or (match.end() < len(line) and line[match.end()] not in _SPACE):
        return None
    inner = match.group(1)
    return (_ESCAPE.sub(_unescape, inner) if double else inner.replace(b"\\'", b"'")), match.end()


def _after_blanks(line: bytes, position: int) -> int:
    return _BLANKS.match(line, position).end()          # type: ignore[union-attr]  # "*": always


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
