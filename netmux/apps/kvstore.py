"""The kv server's keyspace and commands, sans-IO: a command in, an encoded reply out.

Where it sits: under ``kv.py`` (the network side), beside ``resp.py`` (the
parser). It imports no socket and no reactor: ``Store.execute([b"GET", b"k"])``
returns ``b"$-1\\r\\n"``, so its tests need no server
(``tests/test_app_kvstore.py``).

Values are byte strings (no lists or hashes, so no ``-WRONGTYPE``); errors use
Redis's wording, which redis-cli users recognise. Expiry is Redis's: lazy (a
key past its deadline is deleted when touched) plus an active ``sweep()`` the
server calls on a timer, so keys nobody reads again do not stay in memory.
Redis samples random keys for that; we keep a heap of deadlines instead, which
finds exactly the expired keys, and bound the work per call. Deadlines are
wall-clock milliseconds, so they mean the same after a restart.

The dump file (``--dump``) is ``kvdump.py``'s: a small checked binary format,
written atomically; it is input, so it is never unpickled and a damaged one is
refused whole rather than half loaded.
"""
from __future__ import annotations

import heapq
import logging
import os
import re
import time
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, Union

from netmux import __version__
from netmux.apps.kvdump import read_dump, write_dump
from netmux.apps.resp import array, bulk, error, integer

__all__ = ["Store", "CommandError", "CommandTable", "execute", "subcommand", "write_dump", "read_dump"]

logger = logging.getLogger("netmux")

_OK = b"+OK\r\n"
_PONG = b"+PONG\r\n"
_NULL = b"$-1\r\n"
_EMPTY_ARRAY = b"*0\r\n"
_SET_EXPIRES = (b"EX", b"PX", b"EXAT", b"PXAT")
_SWEEP_BUDGET = 1000                # deadline entries one sweep() looks at, at most
_MAX_VALUE = 512 * 1024 * 1024      # Redis's proto-max-bulk-len: APPEND stops here
_INTEGER = re.compile(rb"0|-?[1-9][0-9]{0,18}")   # Redis's string2ll: no "+", space, zeros, "-0"
_LLONG_MAX = (1 << 63) - 1          # C's long long: Redis's integers and deadlines
Value = Union[bytes, bytearray]     # a stored value (see Store.data)


# name -> (do_NAME method, Redis's arity)
CommandTable = Dict[bytes, Tuple[Callable[[List[bytes]], bytes], int]]


class CommandError(Exception):
    """A command refused: the message is the RESP error text (``ERR ...``)."""


def _to_int(value: Value) -> int:
    """Parse an integer argument or stored value as strictly as Redis does."""
    if _INTEGER.fullmatch(value):
        number = int(value)
        if -(1 << 63) <= number < (1 << 63):
            return number
    raise CommandError("ERR value is not an integer or out of range")


# ======================================================================
# Redis's glob (KEYS, CONFIG GET): compiled once per command, cached nowhere
# ======================================================================
# One token of a glob: a run of stars, of "?", of escaped bytes or of plain
# bytes, or the opening of a set ("[" or "[^"; _set_body reads the rest).
# Every byte of a pattern starts a token.
_GLOB_TOKEN = re.compile(rb"""
      (?P<stars>\*+)
    | (?P<any>\?+)
    | (?P<escaped>(?:\\.)+)
    | (?P<plain>[^*?\[\\]+|\\)                  # a backslash ending the pattern is itself
    | (?P<set>\[\^?)
""", re.DOTALL | re.VERBOSE)
# A set's items as Redis's stringmatchlen reads them: "\x" is x (also "\]"),
# "a-z" is a range whose end may be "]" ("[a-]" is a..]), any other byte but
# "]" is itself. "]" ends the set, even first ("[]" is empty); a set never
# closed runs to the pattern's end.
_SET_BODY = re.compile(rb"(?:\\.|[^\]\\]-.|[^\]])*", re.DOTALL)
_SET_ITEM = re.compile(rb"\\(.)|([^\\]-.)|(.)", re.DOTALL)     # an escaped byte, a range, a byte
_MAX_STARS = 1000       # Redis 7's guard: more stars than this before the last token match nothing
_FLIP = bytes([1, 0]) + bytes(254)


def _set_body(pattern: bytes, start: int) -> Tuple[bytes, int]:
    """The items of the set opened before ``start``, and where the pattern goes on."""
    close = pattern.find(b"]", start)
    if close < 0:
        close = len(pattern)
    body = pattern[start:close]
    if b"\\" in body or b"-" in body:   # "\]" or "a-]" may carry the set past this "]"
        close = _SET_BODY.match(pattern, start).end()       # type: ignore[union-attr]
        body = pattern[start:close]
    return body, close + (pattern[close:close + 1] == b"]")


def _set_table(body: bytes, negate: bool) -> bytes:
    """A 256-byte table, 1 where a byte is in the set whose items are ``body``, or,
    ``negate``, where it is not.

    Linear, in C: ``split`` cuts the body into its items (single bytes and
    three-byte ranges are its groups), and the loop visits each distinct item
    once: at most 256 + 65,536 of them, however long the set.
    """
    table = bytearray(256)
    plain = b"\\" not in body and b"-" not in body
    for item in set(body) if plain else set(_SET_ITEM.split(body)):
        if isinstance(item, int):
            table[item] = 1
        elif item and len(item) == 1:
            table[item[0]] = 1
        elif item:
            low, high = sorted((item[0], item[2]))
            table[low:high + 1] = b"\x01" * (high - low + 1)
    return bytes(table).translate(_FLIP) if negate else bytes(table)


class _Piece:
    """The part of a glob between two stars: ``length`` tokens, each matching one byte."""

    __slots__ = ("length", "runs", "sets", "_open")

    def __init__(self) -> None:
        self.length = 0
        self.runs: List[Tuple[int, bytes]] = []     # (offset, literal bytes), the longest first
        self.sets: List[Tuple[int, bytes]] = []     # (offset, a _set_table)
        self._open: List[bytes] = []                # literal bytes not yet joined into a run

    def add_literal(self, data: bytes) -> None:
        self._open.append(data)
        self.length += len(data)

    def add_wildcard(self, count: int, table: Optional[bytes] = None) -> None:
        """``count`` tokens matching any byte, or one matching the bytes ``table`` holds."""
        self.finish()
        if table is not None:
            self.sets.append((self.length, table))
        self.length += count

    def finish(self) -> None:
        """Join the literal bytes read last into one run (one join: nothing quadratic)."""
        if self._open:
            run = b"".join(self._open)
            self.runs.append((self.length - len(run), run))
            self.runs.sort(key=lambda item: -len(item[1]))      # find() looks for the longest
            self._open = []

    def at(self, key: bytes, position: int) -> bool:
        """Whether the piece matches ``key`` from ``position`` (``length`` bytes must be there)."""
        for offset, run in self.runs:
            if not key.startswith(run, position + offset):
                return False
        for offset, table in self.sets:
            if not table[key[position + offset]]:
                return False
        return True

    def find(self, key: bytes, start: int, end: int) -> int:
        """The leftmost position in ``key[start:end]`` where the piece matches, or -1."""
        last = end - self.length
        if not self.runs:
            return next((position for position in range(start, last + 1) if self.at(key, position)), -1)
        offset, run = self.runs[0]
        stop = last + offset + len(run)
        found = key.find(run, start + offset, stop)
        while found >= 0 and not self.at(key, found - offset):
            found = key.find(run, found + 1, stop)
        return found - offset if found >= 0 else -1

    def bound(self) -> Tuple[Callable[[bytes, int], bool], Callable[[bytes, int, int], int]]:
        """``at`` and ``find``, as bytes' own ``startswith`` and ``find`` for plain bytes."""
        if self.sets or len(self.runs) != 1 or len(self.runs[0][1]) != self.length:
            return self.at, self.find
        run = self.runs[0][1]
        return (lambda key, position: key.startswith(run, position)), (lambda key, start, end: key.find(run, start, end))


def _matches_nothing(key: bytes) -> bool:
    return False


def _glob(pattern: bytes, longest: Optional[int] = None) -> Callable[[bytes], bool]:
    """Redis's glob as a matcher on bytes: ``*``, ``?``, ``[a-z]``, ``[^...]`` and ``\\x``
    (a literal x), as Redis 7's ``stringmatchlen`` reads them, odd corners included:
    a pattern matches the empty string only when it is empty itself (KEYS lists
    every key for ``*`` without matching), and one with more than 1000 stars before
    its last token matches nothing.

    Not a regex: no compile cost, no backtracking, nothing left in ``re``'s cache.
    The stars cut the pattern into pieces whose every token matches one byte; the
    first piece must match at the key's start, the last at its end, and each one
    between at its leftmost place after the one before (the leftmost is always
    right): O(len(key) * len(pattern)) at worst, runs of plain bytes compared by
    ``startswith`` and ``find``. The pattern is read a run of tokens at a time, in
    C; ``longest``, the longest key it will be asked about, stops the reading as
    soon as the pattern needs more bytes than that: a 1 MiB pattern against short
    keys costs microseconds, not a pass in Python over every byte.
    """
    pieces = [_Piece()]
    needed = 0                                      # the bytes a matching key has at least
    position = 0
    while position < len(pattern):
        token = _GLOB_TOKEN.match(pattern, position)
        assert token is not None, "every byte starts a token"
        kind, text, piece, position = token.lastgroup, token.group(), pieces[-1], token.end()
        before = piece.length
        if kind == "stars":
            piece.finish()
            pieces.append(_Piece())
        elif kind == "any":
            piece.add_wildcard(len(text))
        elif kind == "escaped":
            piece.add_literal(text[1::2])
        elif kind == "plain":
            piece.add_literal(text)
        else:                                       # a set
            body, position = _set_body(pattern, position)
            piece.add_wildcard(1, _set_table(body, text == b"[^"))
        needed += piece.length - before
        if longest is not None and needed > longest:
            return _matches_nothing
    pieces[-1].finish()
    stars = len(pieces) - 1
    if stars - (pieces[-1].length == 0) > _MAX_STARS:
        return _matches_nothing
    return _pieces_matcher(pieces)


def _pieces_matcher(pieces: List[_Piece]) -> Callable[[bytes], bool]:
    """The matcher of a glob cut at its stars into ``pieces`` (see ``_glob``)."""
    first, last = pieces[0], pieces[-1]
    first_at, last_at = first.bound()[0], last.bound()[0]
    if len(pieces) == 1:
        return lambda key: len(key) == first.length and first_at(key, 0)
    head, tail = first.length, last.length
    middle = [(piece.bound()[1], piece.length) for piece in pieces[1:-1]]

    def match(key: bytes) -> bool:
        end = len(key) - tail
        if not key or end < head or not (first_at(key, 0) and last_at(key, end)):
            return False
        position = head
        for find, length in middle:
            position = find(key, position, end)
            if position < 0:
                return False
            position += length
        return True

    return match


# ======================================================================
# The keyspace and its commands (sans-IO)
# ======================================================================
_Method = Callable[..., bytes]


def command(arity: int) -> Callable[[_Method], _Method]:
    """Mark ``Store.do_NAME`` as the command NAME, with Redis's arity beside it
    (``n``: exactly ``n`` words with the name; ``-n``: at least ``n``)."""
    def mark(method: _Method) -> _Method:
        method.arity = arity  # type: ignore[attr-defined]
        return method
    return mark


class Store:
    """The keyspace: ``execute(args)`` runs one command and returns its reply.

    ``commands`` maps a command name (lower and upper case) to ``(method,
    arity)``, Redis's arity: ``n`` means exactly ``n`` words with the name,
    ``-n`` at least ``n``. ``clock`` gives wall-clock seconds (tests pass
    their own).
    """

    def __init__(self, *, dump_path: Optional[str] = None, clock: Callable[[], float] = time.time,
                 port: int = 0) -> None:
        # A value is bytes, or a bytearray once APPEND grew it (in place: amortised
        # O(1)); every reply copies it, so nothing handed out changes afterwards.
        self.data: Dict[bytes, Value] = {}
        self.expires: Dict[bytes, int] = {}              # key -> deadline, Unix ms
        # Deadlines: a heap of (deadline, key). An entry is stale once its key has
        # another deadline or none (re-set, DEL, PERSIST, SET without one, expired).
        # Stale entries are dropped when popped, or by a compaction: once they are
        # most of the heap, it becomes _draining, moved into a new heap a sweep's
        # budget of entries at a time, one live entry per key kept (_moved: the
        # keys that have theirs in the new heap; a key set to a deadline it had
        # before has two equal entries).
        self._deadlines: List[Tuple[int, bytes]] = []
        self._draining: List[Tuple[int, bytes]] = []
        self._moved: Set[bytes] = set()
        self.dump_path = dump_path
        self.clock = clock
        self.clients = 0                                 # open connections, for INFO
        self.port = port                                 # for INFO
        self._started = clock()
        self.commands: CommandTable = {}
        for name, arity in _ARITY.items():
            entry = (getattr(self, "do_" + name), arity)
            self.commands[name.encode()] = self.commands[name.upper().encode()] = entry

    def execute(self, args: List[bytes]) -> bytes:
        """Run one command (``args[0]`` is its name) and return the encoded reply."""
        return execute(self.commands, args)

    # ------------------------------------------------------------------
    # Keys and deadlines
    # ------------------------------------------------------------------
    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def lookup(self, key: bytes) -> Optional[Value]:
        """The live value of ``key``, deleting it first if it expired (lazy expiry).
        A bytearray that APPEND may grow later: copy it to hand it out."""
        value = self.data.get(key)
        if value is not None and self.expires and key in self.expires:
            if self.expires[key] <= self._now_ms():
                self._delete(key)
                return None
        return value

    def _delete(self, key: bytes) -> bool:
        self.expires.pop(key, None)
        return self.data.pop(key, None) is not None

    def set_deadline(self, key: bytes, deadline: int) -> None:
        """Make ``key`` expire at ``deadline`` (Unix ms); past deadlines delete it now."""
        if deadline <= self._now_ms():
            self._delete(key)
        elif self.expires.get(key) != deadline:          # else its entry is there already
            self.expires[key] = deadline
            heapq.heappush(self._deadlines, (deadline, key))
            if self._draining:
                self._moved.add(key)

    def sweep(self, budget: int = _SWEEP_BUDGET) -> bool:
        """Look at up to ``budget`` deadline entries, stale ones included: drain a
        compaction, delete expired keys. True when more work is left now."""
        budget = self._drain(budget)
        now = self._now_ms()
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            if budget <= 0:
                return True
            deadline, key = heapq.heappop(heap)
            budget -= 1
            if self.expires.get(key) == deadline:
                self._delete(key)
        if not self._draining and len(heap) > 2 * len(self.expires) + _SWEEP_BUDGET:
            self._draining, self._deadlines = heap, []   # stale entries are most of it
        return bool(self._draining)

    def _drain(self, budget: int) -> int:
        """Move up to ``budget`` entries of a compaction into the heap, the live ones
        (from the end: the old list shrinks, and frees its memory, as it goes).
        Returns the budget left."""
        old, heap, expires, moved = self._draining, self._deadlines, self.expires, self._moved
        count = min(budget, len(old))
        for _ in range(count):
            entry = old.pop()
            deadline, key = entry
            if expires.get(key) == deadline and key not in moved:
                moved.add(key)
                heapq.heappush(heap, entry)
        if not old:
            self._moved = set()
        return budget - count

    def _ttl(self, key: bytes, unit: int) -> bytes:
        if self.lookup(key) is None:
            return b":-2\r\n"
        deadline = self.expires.get(key)
        if deadline is None:
            return b":-1\r\n"
        return integer(max(0, deadline - self._now_ms() + unit // 2) // unit)

    def _expire(self, args: List[bytes], unit: int) -> bytes:
        # Redis's order: the options first, then the number, then the key.
        options = {option.upper() for option in args[3:]}
        for option in args[3:]:
            if option.upper() not in (b"NX", b"XX", b"GT", b"LT"):
                raise CommandError(f"ERR Unsupported option {option.decode('utf-8', 'replace')}")
        if b"NX" in options and len(options) > 1:
            raise CommandError("ERR NX and XX, GT or LT options at the same time are not compatible")
        if {b"GT", b"LT"} <= options:
            raise CommandError("ERR GT and LT options at the same time are not compatible")
        amount = _to_int(args[2])
        # A negative time is allowed (the key is deleted); an overflow of C's long long is not.
        deadline = self._now_ms() + amount * unit
        if (unit > 1 and abs(amount) > _LLONG_MAX // unit) or deadline > _LLONG_MAX:
            raise CommandError(f"ERR invalid expire time in '{args[0].lower().decode()}' command")
        if self.lookup(args[1]) is None:
            return b":0\r\n"
        current = self.expires.get(args[1])
        if ((b"NX" in options and current is not None) or (b"XX" in options and current is None)
                or (b"GT" in options and (current is None or deadline <= current))
                or (b"LT" in options and current is not None and deadline >= current)):
            return b":0\r\n"
        self.set_deadline(args[1], deadline)
        return b":1\r\n"

    # ------------------------------------------------------------------
    # Dump file: a checked binary format, never pickle (the file is input)
    # ------------------------------------------------------------------
    def save(self) -> None:
        """Write every live key to ``dump_path`` atomically (temp file, fsync, rename)."""
        if self.dump_path is None:
            raise CommandError("ERR no dump file: start kv with --dump FILE")
        self.sweep(budget=len(self._deadlines) + len(self._draining) + 1)
        write_dump(self.dump_path, ((key, value, self.expires.get(key, -1))
                                    for key, value in self.data.items()))

    def load(self) -> int:
        """Read ``dump_path`` if it exists; keys already expired are dropped. Returns the count."""
        if self.dump_path is None or not os.path.exists(self.dump_path):
            return 0
        now = self._now_ms()
        for key, value, deadline in read_dump(self.dump_path):
            if deadline < 0 or deadline > now:
                self.data[key] = value
                if deadline >= 0:
                    self.set_deadline(key, deadline)
        return len(self.data)

    # ------------------------------------------------------------------
    # Commands: do_NAME(args) -> reply, args[0] being the name
    # ------------------------------------------------------------------
    @command(-1)
    def do_ping(self, args: List[bytes]) -> bytes:
        if len(args) > 2:
            raise _arity_error(args)
        return _PONG if len(args) == 1 else bulk(args[1])

    @command(2)
    def do_echo(self, args: List[bytes]) -> bytes:
        return bulk(args[1])

    @command(2)
    def do_get(self, args: List[bytes]) -> bytes:
        value = self.lookup(args[1])
        if value is None:
            return _NULL
        return b"$%d\r\n%s\r\n" % (len(value), value)

    @command(-3)
    def do_set(self, args: List[bytes]) -> bytes:
        key = args[1]
        if len(args) == 3:                       # the common case: no option
            self.data[key] = args[2]
            if self.expires:
                self.expires.pop(key, None)
            return _OK
        deadline, condition, keep_ttl, get = self._set_options(args)
        old = self.lookup(key)
        if (condition == b"NX" and old is not None) or (condition == b"XX" and old is None):
            return bulk(old) if get else _NULL
        self.data[key] = args[2]
        if not keep_ttl:
            self.expires.pop(key, None)
        if deadline is not None:
            self.set_deadline(key, deadline)
        return bulk(old) if get else _OK

    def _set_options(self, args: List[bytes]) -> Tuple[Optional[int], bytes, bool, bool]:
        """SET's options, read as Redis reads them: a repeated option is allowed (the
        last EX wins), conflicting ones (NX XX, EX PX, KEEPTTL EX) are a syntax error,
        and the expire time is checked only once every option has been read."""
        expire: Optional[Tuple[bytes, bytes]] = None        # (EX, PX, EXAT or PXAT; its argument)
        condition = b""
        keep_ttl = get = False
        index = 3
        while index < len(args):
            option = args[index].upper()
            if option in (b"NX", b"XX") and condition in (b"", option):
                condition = option
            elif option == b"GET":
                get = True
            elif option == b"KEEPTTL" and expire is None:
                keep_ttl = True
            elif (option in _SET_EXPIRES and not keep_ttl and (expire is None or expire[0] == option)
                  and index + 1 < len(args)):
                index += 1
                expire = (option, args[index])
            else:
                raise CommandError("ERR syntax error")
            index += 1
        deadline = None if expire is None else self._set_deadline(*expire)
        return deadline, condition, keep_ttl, get

    def _set_deadline(self, option: bytes, argument: bytes) -> int:
        """The Unix ms deadline SET's ``option`` (EX, PX, EXAT, PXAT) and its argument give."""
        amount = _to_int(argument)
        unit = 1000 if option in (b"EX", b"EXAT") else 1
        if amount <= 0 or amount > _LLONG_MAX // unit:
            raise CommandError("ERR invalid expire time in 'set' command")
        deadline = amount * unit + (self._now_ms() if option in (b"EX", b"PX") else 0)
        if deadline > _LLONG_MAX:                    # Redis: the long long overflowed
            raise CommandError("ERR invalid expire time in 'set' command")
        return deadline

    @command(-2)
    def do_del(self, args: List[bytes]) -> bytes:
        return integer(sum(self.lookup(key) is not None and self._delete(key) for key in args[1:]))

    @command(-2)
    def do_exists(self, args: List[bytes]) -> bytes:
        return integer(sum(self.lookup(key) is not None for key in args[1:]))

    def _add(self, key: bytes, increment: int) -> bytes:
        value = self.lookup(key)
        number = 0 if value is None else _to_int(value)
        number += increment
        if not -(1 << 63) <= number < (1 << 63):
            raise CommandError("ERR increment or decrement would overflow")
        self.data[key] = b"%d" % number
        return b":%d\r\n" % number

    @command(2)
    def do_incr(self, args: List[bytes]) -> bytes:
        return self._add(args[1], 1)

    @command(2)
    def do_decr(self, args: List[bytes]) -> bytes:
        return self._add(args[1], -1)

    @command(3)
    def do_incrby(self, args: List[bytes]) -> bytes:
        return self._add(args[1], _to_int(args[2]))

    @command(3)
    def do_decrby(self, args: List[bytes]) -> bytes:
        decrement = _to_int(args[2])
        if decrement == -(1 << 63):         # its negation is no long long: Redis's own message
            raise CommandError("ERR decrement would overflow")
        return self._add(args[1], -decrement)

    @command(-2)
    def do_mget(self, args: List[bytes]) -> bytes:
        return array([bulk(self.lookup(key)) for key in args[1:]])

    @command(-3)
    def do_mset(self, args: List[bytes]) -> bytes:
        if len(args) % 2 == 0:
            raise CommandError("ERR wrong number of arguments for 'mset' command")
        for index in range(1, len(args), 2):
            self.data[args[index]] = args[index + 1]
            self.expires.pop(args[index], None)
        return _OK

    @command(3)
    def do_append(self, args: List[bytes]) -> bytes:
        key, tail = args[1], args[2]
        value = self.lookup(key)
        if value is None:
            self.data[key] = tail
            return integer(len(tail))
        if len(value) + len(tail) > _MAX_VALUE:
            raise CommandError("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
        if not isinstance(value, bytearray):
            value = self.data[key] = bytearray(value)   # one copy; from now on it grows in place
        value += tail
        return integer(len(value))

    @command(2)
    def do_strlen(self, args: List[bytes]) -> bytes:
        return integer(len(self.lookup(args[1]) or b""))

    @command(-3)
    def do_expire(self, args: List[bytes]) -> bytes:
        return self._expire(args, 1000)

    @command(-3)
    def do_pexpire(self, args: List[bytes]) -> bytes:
        return self._expire(args, 1)

    @command(2)
    def do_ttl(self, args: List[bytes]) -> bytes:
        return self._ttl(args[1], 1000)

    @command(2)
    def do_pttl(self, args: List[bytes]) -> bytes:
        return self._ttl(args[1], 1)

    @command(2)
    def do_persist(self, args: List[bytes]) -> bytes:
        found = self.lookup(args[1]) is not None and self.expires.pop(args[1], None) is not None
        return b":1\r\n" if found else b":0\r\n"

    @command(2)
    def do_keys(self, args: List[bytes]) -> bytes:
        if args[1] == b"*":                 # Redis lists every key unmatched (the empty one too)
            keys = list(self.data)
        else:
            match = _glob(args[1], max(map(len, self.data), default=-1))
            keys = [key for key in self.data if match(key)]
        return array([bulk(key) for key in keys if self.lookup(key) is not None])

    @command(1)
    def do_dbsize(self, args: List[bytes]) -> bytes:
        return integer(len(self.data))

    @command(-1)
    def do_flushdb(self, args: List[bytes]) -> bytes:
        if len(args) > 2 or (len(args) == 2 and args[1].upper() not in (b"SYNC", b"ASYNC")):
            raise CommandError("ERR syntax error")
        self.data.clear()
        self.expires.clear()
        self._deadlines, self._draining, self._moved = [], [], set()
        return _OK

    do_flushall = do_flushdb

    @command(2)
    def do_select(self, args: List[bytes]) -> bytes:
        if _to_int(args[1]) != 0:
            raise CommandError("ERR DB index is out of range")
        return _OK

    @command(1)
    def do_save(self, args: List[bytes]) -> bytes:
        try:
            self.save()
        except OSError as exc:
            logger.error("kv: SAVE to %s failed: %s", self.dump_path, exc)
            raise CommandError(f"ERR saving failed: {exc.strerror or exc}")
        return _OK

    @command(-1)
    def do_info(self, args: List[bytes]) -> bytes:
        sections = {
            b"server": ["# Server", "redis_version:7.0.0", "redis_mode:standalone",
                        "netmux_version:" + __version__, f"process_id:{os.getpid()}",
                        f"tcp_port:{self.port}", f"uptime_in_seconds:{int(self.clock() - self._started)}"],
            b"clients": ["# Clients", f"connected_clients:{self.clients}"],
            b"keyspace": ["# Keyspace"] + ([f"db0:keys={len(self.data)},expires={len(self.expires)},avg_ttl=0"]
                                          if self.data else []),
        }
        wanted = {name.lower() for name in args[1:]} or {b"default"}
        if wanted & {b"all", b"everything", b"default"}:
            wanted = set(sections)
        text = "\r\n".join("\r\n".join(lines) + "\r\n" for name, lines in sections.items() if name in wanted)
        return bulk(text.encode())

    @command(-2)
    def do_config(self, args: List[bytes]) -> bytes:
        # redis-benchmark asks for "save" and "appendonly" before it starts.
        if subcommand(args, {b"GET": -3, b"SET": -4, b"RESETSTAT": 2, b"REWRITE": 2}) != b"GET":
            raise CommandError("ERR CONFIG: only CONFIG GET parameter is supported")
        known = {b"save": b"", b"appendonly": b"no", b"databases": b"1"}
        longest = max(map(len, known))
        matchers = [_glob(pattern.lower(), longest) for pattern in args[2:]]
        return array([bulk(item) for name, value in known.items()
                      if any(match(name) for match in matchers) for item in (name, value)])

    @command(-1)
    def do_hello(self, args: List[bytes]) -> bytes:
        # RESP2 only: clients that ask for RESP3 (redis-py 8 by default) must fall back.
        if len(args) > 1 and args[1] != b"2":
            raise CommandError("NOPROTO sorry, this protocol version is not supported.")
        fields = [(b"server", b"redis"), (b"version", b"7.0.0"), (b"mode", b"standalone")]
        return array([item for name, value in fields for item in (bulk(name), bulk(value))]
                     + [bulk(b"proto"), integer(2)])

    @command(-1)
    def do_command(self, args: List[bytes]) -> bytes:
        # redis-cli asks for COMMAND DOCS to show hints; an empty answer is enough.
        if len(args) > 1 and subcommand(args, {b"COUNT": 2, b"DOCS": -2, b"INFO": -2, b"LIST": -2}) == b"COUNT":
            return integer(len(_ARITY))
        return _EMPTY_ARRAY


# name -> Redis's arity (n: exactly n words with the name; -n: at least n), read
# from the @command marks: a do_ method without one fails at import, never hidden.
_ARITY = {name[3:]: getattr(Store, name).arity for name in sorted(vars(Store)) if name.startswith("do_")}


def execute(table: CommandTable, args: List[bytes]) -> bytes:
    """Look ``args[0]`` up in ``table`` (any case), check the arity, run it, and turn
    a CommandError into its error reply. Other exceptions propagate."""
    entry = table.get(args[0]) or table.get(args[0].lower())
    if entry is None:
        return _unknown_command(args)
    function, arity = entry
    if not _arity_holds(len(args), arity):
        return error(str(_arity_error(args)))
    try:
        return function(args)
    except CommandError as exc:
        return error(str(exc))


def _arity_holds(count: int, arity: int) -> bool:
    """Redis's arity: ``n`` means exactly ``n`` words with the name, ``-n`` at least ``n``."""
    return count == arity or (arity < 0 and count >= -arity)


def _arity_error(args: List[bytes], subcommand: bool = False) -> CommandError:
    """Redis's wording; a subcommand is named ``command|subcommand``."""
    name = args[0].lower() + (b"|" + args[1].lower() if subcommand else b"")
    return CommandError(f"ERR wrong number of arguments for '{name.decode('utf-8', 'replace')}' command")


def subcommand(args: List[bytes], arities: Dict[bytes, int]) -> bytes:
    """``args[1]`` upper-cased, once it is one of ``arities`` (name -> Redis's arity,
    the command's name counted) and its arity holds: else Redis's CommandError."""
    name = args[1].upper()
    arity = arities.get(name)
    if arity is None:
        raise CommandError(f"ERR unknown subcommand '{args[1][:128].decode('utf-8', 'replace')}'. "
                           f"Try {args[0].upper().decode('utf-8', 'replace')} HELP.")
    if not _arity_holds(len(args), arity):
        raise _arity_error(args, subcommand=True)
    return name


def _unknown_command(args: List[bytes]) -> bytes:
    """Redis's reply, byte for byte (server.c's processCommand): arguments quoted while
    under 128 bytes, each cut to what is left of them; the bytes as sent, but a NUL
    ends a word (C strings) and CR, LF become spaces (found by the differential test)."""
    quoted = b""
    for index in range(1, len(args)):
        if len(quoted) >= 128:
            break
        quoted += b"'%s' " % _c_string(args[index][:128 - len(quoted)])
    text = b"ERR unknown command '%s', with args beginning with: %s" % (_c_string(args[0][:128]), quoted)
    return b"-%s\r\n" % text.replace(b"\r", b" ").replace(b"\n", b" ")


def _c_string(word: bytes) -> bytes:
    """``word`` as C's ``%s`` prints it: up to its first NUL."""
    return word.split(b"\x00", 1)[0]
