"""The string commands of kv (GET, SET, INCR, the ranges, the bits...), sans-IO, as redis-server 7.0 answers them.

Where it sits: a command family mixed into ``kvstore.Store``; it reads and
writes ``self.db`` (a ``kvdb.Database``, the one the client SELECTed) and
answers encoded replies. It does no I/O.

Costs stay what the client asked for, and run in C where a value is big:
SETRANGE and SETBIT change a bytearray in place (growing it at most to
``proto-max-bulk-len``, 512 MB, Redis's limit); BITCOUNT counts with
``int.bit_count``; BITPOS finds the first interesting byte with a regex
search; BITOP works on whole integers; LCS computes Redis's table of
len(a) x len(b) cells bit-parallel (one big-integer step per byte of a), and is
refused past ``lcs_max_cells`` (ours) instead of holding the loop for long. Tests: ``tests/test_app_kv_strings.py``.
"""
from __future__ import annotations

import re
from fractions import Fraction
from typing import Any, Callable, Dict, List, Optional, Tuple

from netmux.apps.kvcommand import (LLONG_MAX, LLONG_MIN, NULL, OK, SYNTAX_ERROR, CommandError, command,
                                   to_int)
from netmux.apps.kvdb import Database, Text, Value
from netmux.apps.kvfloat import format_long_double, parse_long_double, round_long_double
from netmux.apps.resp import array, bulk, integer

__all__ = ["StringCommands", "MAX_VALUE"]

MAX_VALUE = 512 * 1024 * 1024       # Redis's proto-max-bulk-len: no value grows past it
_EXPIRES = (b"EX", b"PX", b"EXAT", b"PXAT")
_NON_ZERO_BYTE = re.compile(rb"[^\x00]")
_NON_FF_BYTE = re.compile(rb"[^\xff]")
_BITFIELD_TYPE = re.compile(rb"([iu])([0-9]{1,2})")
_BITFIELD_TYPE_ERROR = ("ERR Invalid bitfield type. Use something like i16 u8. "
                        "Note that u64 is not supported but i64 is.")
_BIT_OFFSET_ERROR = "ERR bit offset is not an integer or out of range"
_NOT_FLOAT = "ERR value is not a valid float"
_BIT_COUNT: Callable[[int], int] = getattr(int, "bit_count", lambda number: bin(number).count("1"))


class StringCommands:
    """GET, SET and the rest of Redis's string type (see the module's note)."""

    db: Database
    settings: Any               # kvadmin.Settings: proto_max_bulk_len (CONFIG SET may change it)
    lcs_max_cells: int

    # ------------------------------------------------------------------
    # GET, SET and their variants
    # ------------------------------------------------------------------
    @command(2)
    def do_get(self, args: List[bytes]) -> bytes:
        db = self.db
        value = db.data.get(args[1])
        if value is not None and db.expires:
            value = db.lookup(args[1])          # it may have expired
        if value is None:
            return NULL
        return b"$%d\r\n%s\r\n" % (len(value), value)

    @command(-3)
    def do_set(self, args: List[bytes]) -> bytes:
        db, key = self.db, args[1]
        if len(args) == 3:                       # the common case: no option
            db.data[key] = args[2]
            if db.expires:
                db.expires.pop(key, None)
            if db.watched:
                db.touched(key)
            return OK
        expire, condition, keep_ttl, get = _string_options(args, set_command=True)
        deadline = None if expire is None else self._deadline(args[0], *expire)
        old = db.lookup(key)
        if (condition == b"NX" and old is not None) or (condition == b"XX" and old is None):
            return bulk(old) if get else NULL
        db.put(key, args[2], keep_ttl)
        if deadline is not None:
            db.set_deadline(key, deadline)
        return bulk(old) if get else OK

    def _deadline(self, name: bytes, option: bytes, argument: bytes) -> int:
        """The Unix ms deadline an EX, PX, EXAT or PXAT ``option`` and its argument give."""
        amount = to_int(argument)
        unit = 1000 if option in (b"EX", b"EXAT") else 1
        if amount <= 0 or amount > LLONG_MAX // unit:
            raise _invalid_expire(name)
        deadline = amount * unit + (self.db.now_ms() if option in (b"EX", b"PX") else 0)
        if deadline > LLONG_MAX:                    # Redis: the long long overflowed
            raise _invalid_expire(name)
        return deadline

    @command(3)
    def do_setnx(self, args: List[bytes]) -> bytes:
        if self.db.lookup(args[1]) is not None:
            return b":0\r\n"
        self.db.put(args[1], args[2])
        return b":1\r\n"

    @command(4)
    def do_setex(self, args: List[bytes]) -> bytes:
        return self._set_expiring(args, b"EX")

    @command(4)
    def do_psetex(self, args: List[bytes]) -> bytes:
        return self._set_expiring(args, b"PX")

    def _set_expiring(self, args: List[bytes], option: bytes) -> bytes:
        deadline = self._deadline(args[0], option, args[2])
        self.db.put(args[1], args[3])
        self.db.set_deadline(args[1], deadline)
        return OK

    @command(3)
    def do_getset(self, args: List[bytes]) -> bytes:
        old = self.db.lookup(args[1])
        self.db.put(args[1], args[2])
        return bulk(old)

    @command(2)
    def do_getdel(self, args: List[bytes]) -> bytes:
        old = self.db.lookup(args[1])
        if old is not None:
            self.db.delete(args[1])
        return bulk(old)

    @command(-2)
    def do_getex(self, args: List[bytes]) -> bytes:
        expire, _, _, persist = _string_options(args, set_command=False)
        db, key = self.db, args[1]
        value = db.lookup(key)
        if value is None:
            return NULL
        if expire is not None:
            deadline = self._deadline(args[0], *expire)
            reply = bulk(value)
            db.set_deadline(key, deadline)
            return reply
        if persist:
            db.persist(key)
        return bulk(value)

    @command(-2)
    def do_mget(self, args: List[bytes]) -> bytes:
        db = self.db
        # No deadline set: no key can have expired, and the dict's own get does (in C).
        values = list(map(db.lookup if db.expires else db.data.get, args[1:]))
        return b"*%d\r\n%s" % (len(values), b"".join([
            NULL if value is None else b"$%d\r\n%s\r\n" % (len(value), value) for value in values]))

    @command(-3)
    def do_mset(self, args: List[bytes]) -> bytes:
        if len(args) % 2 == 0:
            raise CommandError("ERR wrong number of arguments for 'mset' command")
        db = self.db
        if db.expires or db.watched:
            for index in range(1, len(args), 2):
                db.put(args[index], args[index + 1])
        else:                           # nothing to clear or to tell: one update, in C
            db.data.update(zip(args[1::2], args[2::2]))
        return OK

    @command(-3)
    def do_msetnx(self, args: List[bytes]) -> bytes:
        if len(args) % 2 == 0:
            raise CommandError("ERR wrong number of arguments for 'msetnx' command")
        if any(self.db.lookup(args[index]) is not None for index in range(1, len(args), 2)):
            return b":0\r\n"
        self.do_mset(args)
        return b":1\r\n"

    @command(2)
    def do_strlen(self, args: List[bytes]) -> bytes:
        return integer(len(self.db.lookup(args[1]) or b""))

    # ------------------------------------------------------------------
    # Numbers
    # ------------------------------------------------------------------
    def _add(self, key: bytes, increment: int) -> bytes:
        db = self.db
        value = db.data.get(key)
        if value is not None and db.expires:
            value = db.lookup(key)              # it may have expired
        number = 0 if value is None else to_int(value)
        number += increment
        if not -(1 << 63) <= number < (1 << 63):        # a C long long; constants folded: INCR is hot
            raise CommandError("ERR increment or decrement would overflow")
        db.data[key] = b"%d" % number           # db.put(key, ..., keep_ttl=True), inlined: INCR is hot
        if db.watched:
            db.touched(key)
        return b":%d\r\n" % number

    @command(2)
    def do_incr(self, args: List[bytes]) -> bytes:
        return self._add(args[1], 1)

    @command(2)
    def do_decr(self, args: List[bytes]) -> bytes:
        return self._add(args[1], -1)

    @command(3)
    def do_incrby(self, args: List[bytes]) -> bytes:
        return self._add(args[1], to_int(args[2]))

    @command(3)
    def do_decrby(self, args: List[bytes]) -> bytes:
        decrement = to_int(args[2])
        if decrement == LLONG_MIN:          # its negation is no long long: Redis's own message
            raise CommandError("ERR decrement would overflow")
        return self._add(args[1], -decrement)

    @command(3)
    def do_incrbyfloat(self, args: List[bytes]) -> bytes:
        """Redis's long double arithmetic and printing (see kvfloat)."""
        value = self.db.lookup(args[1])
        current = Fraction(0) if value is None else parse_long_double(bytes(value))
        increment = parse_long_double(args[2])
        if current is None or increment is None:
            raise CommandError(_NOT_FLOAT)
        if isinstance(current, float) or isinstance(increment, float):
            raise CommandError("ERR increment would produce NaN or Infinity")
        total = round_long_double(current + increment)
        if isinstance(total, float):
            raise CommandError("ERR increment would produce NaN or Infinity")
        text = format_long_double(total)
        self.db.put(args[1], Text(text), keep_ttl=True)
        return bulk(text)

    # ------------------------------------------------------------------
    # Ranges
    # ------------------------------------------------------------------
    @command(3)
    def do_append(self, args: List[bytes]) -> bytes:
        db, key, tail = self.db, args[1], args[2]
        value = db.lookup(key)
        if value is None:
            db.put(key, tail)
            return integer(len(tail))
        if len(value) + len(tail) > self.settings.proto_max_bulk_len:
            raise CommandError("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
        self._growable(key, value).extend(tail)
        return integer(len(db.data[key]))

    def _growable(self, key: bytes, value: Value) -> bytearray:
        """``key``'s value as a bytearray to change in place (one copy the first time),
        its watchers told: what APPEND, SETRANGE and SETBIT write into."""
        if not isinstance(value, bytearray):
            value = self.db.data[key] = bytearray(value)
        if self.db.watched:
            self.db.touched(key)
        return value

    @command(4)
    def do_setrange(self, args: List[bytes]) -> bytes:
        offset, piece = to_int(args[2]), args[3]
        if offset < 0:
            raise CommandError("ERR offset is out of range")
        value = self.db.lookup(args[1])
        if not piece:
            return integer(0 if value is None else len(value))
        if offset + len(piece) > self.settings.proto_max_bulk_len:
            raise CommandError("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
        if value is None:
            value = self.db.data[args[1]] = bytearray()
        target = self._growable(args[1], value)
        if len(target) < offset:
            target.extend(bytes(offset - len(target)))
        target[offset:offset + len(piece)] = piece
        return integer(len(target))

    @command(4)
    def do_getrange(self, args: List[bytes]) -> bytes:
        start, end = to_int(args[2]), to_int(args[3])
        value = self.db.lookup(args[1]) or b""
        span = _clip_range(start, end, len(value))
        return bulk(b"" if span is None else value[span[0]:span[1] + 1])

    do_substr = do_getrange

    @command(-3)
    def do_lcs(self, args: List[bytes]) -> bytes:
        options = _lcs_options(args)
        first, second = (bytes(self.db.lookup(key) or b"") for key in args[1:3])
        if ((len(first) + 1) * (len(second) + 1) > self.lcs_max_cells
                or len(first) + len(second) > _LCS_MAX_WALK):
            raise CommandError("ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len")
        table = _LcsTable(first, second)
        if options[b"LEN"] and not options[b"IDX"]:
            return integer(table.length())
        matches, text = _lcs_walk(first, second, table)
        if not options[b"IDX"]:
            return bulk(text)
        return _lcs_idx_reply(matches, len(text), options)

    # ------------------------------------------------------------------
    # Bits (bit 0 is the most significant bit of byte 0, as Redis's)
    # ------------------------------------------------------------------
    @command(4)
    def do_setbit(self, args: List[bytes]) -> bytes:
        offset = self._bit_offset(args[2])
        bit = to_int(args[3], "ERR bit is not an integer or out of range")
        if bit not in (0, 1):
            raise CommandError("ERR bit is not an integer or out of range")
        value = self.db.lookup(args[1])
        if value is None:
            value = self.db.data[args[1]] = bytearray()
        target = self._growable(args[1], value)
        index = offset >> 3
        if len(target) <= index:
            target.extend(bytes(index + 1 - len(target)))
        mask = 0x80 >> (offset & 7)
        old = 1 if target[index] & mask else 0
        target[index] = (target[index] | mask) if bit else (target[index] & ~mask)
        return integer(old)

    def _bit_offset(self, argument: bytes) -> int:
        offset = to_int(argument, _BIT_OFFSET_ERROR)
        if offset < 0 or (offset >> 3) >= self.settings.proto_max_bulk_len:
            raise CommandError(_BIT_OFFSET_ERROR)
        return offset

    @command(3)
    def do_getbit(self, args: List[bytes]) -> bytes:
        offset = self._bit_offset(args[2])
        value = self.db.lookup(args[1]) or b""
        index = offset >> 3
        if index >= len(value):
            return b":0\r\n"
        return b":1\r\n" if value[index] & (0x80 >> (offset & 7)) else b":0\r\n"

    @command(-2)
    def do_bitcount(self, args: List[bytes]) -> bytes:
        value = self.db.lookup(args[1])
        if value is None:
            return b":0\r\n"
        bits = _bit_span(args[2:], len(value), find=None)
        if bits is None:
            return b":0\r\n"
        first, last = bits
        whole = int.from_bytes(value[first >> 3:(last >> 3) + 1], "big")
        whole >>= 7 - (last & 7)                       # drop the bits past the last
        whole &= (1 << (last - first + 1)) - 1         # and those before the first
        return integer(_BIT_COUNT(whole))

    @command(-3)
    def do_bitpos(self, args: List[bytes]) -> bytes:
        bit = to_int(args[2])
        if bit not in (0, 1):
            raise CommandError("ERR The bit argument must be 1 or 0.")
        value = self.db.lookup(args[1])
        if value is None:
            return integer(-1 if bit else 0)
        bits = _bit_span(args[3:], len(value), find=bit)
        if bits is None:
            return b":-1\r\n"
        found = _first_bit(value, bit, *bits)
        if found >= 0 or bit == 1 or len(args) >= 5:     # an explicit end: no zeros past it
            return integer(found)
        return integer(bits[1] + 1)

    @command(-4)
    def do_bitop(self, args: List[bytes]) -> bytes:
        operation = args[1].upper()
        if operation not in (b"AND", b"OR", b"XOR", b"NOT"):
            raise CommandError(SYNTAX_ERROR)
        if operation == b"NOT" and len(args) != 4:
            raise CommandError("ERR BITOP NOT must be called with a single source key.")
        values = [self.db.lookup(key) or b"" for key in args[3:]]
        size = max(map(len, values))
        if size == 0:
            self.db.delete(args[2])
            return b":0\r\n"
        numbers = [int.from_bytes(bytes(value).ljust(size, b"\x00"), "big") for value in values]
        result = numbers[0]
        for number in numbers[1:]:
            result = (result & number if operation == b"AND" else
                      result | number if operation == b"OR" else result ^ number)
        if operation == b"NOT":
            result ^= (1 << (8 * size)) - 1
        self.db.put(args[2], bytearray(result.to_bytes(size, "big")))     # Redis's is raw too
        return integer(size)

    @command(-2)
    def do_bitfield_ro(self, args: List[bytes]) -> bytes:
        if any(operation[0] != b"GET" for operation in _bitfield_operations(args, self._bit_offset)):
            raise CommandError("ERR BITFIELD_RO only supports the GET subcommand")
        return self.do_bitfield(args)

    @command(-2)
    def do_bitfield(self, args: List[bytes]) -> bytes:
        operations = _bitfield_operations(args, self._bit_offset)
        value = self.db.lookup(args[1])
        writes = any(operation[0] != b"GET" for operation in operations)
        if writes:
            if value is None:
                value = self.db.data[args[1]] = bytearray()
            value = self._growable(args[1], value)
        replies = [_bitfield_run(b"" if value is None else value, operation) for operation in operations]
        return array([b"$-1\r\n" if reply is None else integer(reply) for reply in replies])


# ======================================================================
# Helpers: options, ranges, bits, LCS
# ======================================================================
def _invalid_expire(name: bytes) -> CommandError:
    return CommandError(f"ERR invalid expire time in '{name.lower().decode('utf-8', 'replace')}' command")


def _string_options(args: List[bytes], set_command: bool) -> Tuple[Optional[Tuple[bytes, bytes]], bytes, bool, bool]:
    """SET's options (NX XX GET KEEPTTL and an expiry) or GETEX's (an expiry or
    PERSIST), read as Redis reads them: a repeated option is allowed (the last EX
    wins), conflicting ones are a syntax error, and the expire time is checked
    later. Returns (expiry option and argument, NX/XX, KEEPTTL, GET or PERSIST)."""
    expire: Optional[Tuple[bytes, bytes]] = None
    condition = b""
    keep_ttl = flag = False
    index = 3 if set_command else 2
    while index < len(args):
        option = args[index].upper()
        if set_command and option in (b"NX", b"XX") and condition in (b"", option):
            condition = option
        elif set_command and option == b"GET":
            flag = True
        elif set_command and option == b"KEEPTTL" and expire is None:
            keep_ttl = True
        elif not set_command and option == b"PERSIST" and expire is None:
            flag = True
        elif (option in _EXPIRES and not keep_ttl and not (flag and not set_command)
              and (expire is None or expire[0] == option) and index + 1 < len(args)):
            index += 1
            expire = (option, args[index])
        else:
            raise CommandError(SYNTAX_ERROR)
        index += 1
    return expire, condition, keep_ttl, flag


def _clip_range(start: int, end: int, length: int, reversed_is_empty: bool = True) -> Optional[Tuple[int, int]]:
    """GETRANGE's, BITCOUNT's and BITPOS's index rules: negatives count from the end,
    then clipped; None when nothing is in the range. A range of two negatives the
    wrong way round is empty at once, except for BITPOS (``reversed_is_empty``)."""
    if reversed_is_empty and start < 0 and end < 0 and start > end:
        return None
    start, end = (start + length if start < 0 else start), (end + length if end < 0 else end)
    start, end = max(start, 0), min(max(end, 0), length - 1)
    if start > end or length == 0:
        return None
    return start, end


def _bit_span(options: List[bytes], size: int, find: Optional[int]) -> Optional[Tuple[int, int]]:
    """BITCOUNT's (``find`` None) or BITPOS's optional ``start [end [BYTE|BIT]]`` as a bit
    range (first, last) in a value of ``size`` bytes; None when it is empty."""
    if find is None and len(options) not in (0, 2, 3) or len(options) > 3:
        raise CommandError(SYNTAX_ERROR)
    if not options:
        return (0, 8 * size - 1) if size else None
    start = to_int(options[0])
    in_bits = False
    if len(options) == 3:
        unit = options[2].upper()
        if unit not in (b"BIT", b"BYTE"):
            raise CommandError(SYNTAX_ERROR)
        in_bits = unit == b"BIT"
    length = 8 * size if in_bits else size
    end = to_int(options[1]) if len(options) >= 2 else length - 1
    span = _clip_range(start, end, length, reversed_is_empty=find is None)
    if span is None:
        return None
    return span if in_bits else (8 * span[0], 8 * span[1] + 7)


def _first_bit(value: Value, bit: int, first: int, last: int) -> int:
    """The first bit equal to ``bit`` in bits first..last of ``value``, or -1. The
    whole bytes between are searched by a regex, in C."""
    position = first
    while position <= last and (position & 7 or last - position < 7):
        if (value[position >> 3] >> (7 - (position & 7)) & 1) == bit:
            return position
        position += 1
    if position > last:
        return -1
    end_byte = (last + 1) >> 3
    found = (_NON_ZERO_BYTE if bit else _NON_FF_BYTE).search(value, position >> 3, end_byte)
    if found is not None:
        byte = value[found.start()] if bit else value[found.start()] ^ 0xFF
        return found.start() * 8 + 8 - byte.bit_length()
    for position in range(end_byte * 8, last + 1):
        if (value[position >> 3] >> (7 - (position & 7)) & 1) == bit:
            return position
    return -1


_LCS_FLAGS = (b"LEN", b"IDX", b"WITHMATCHLEN")
_LCS_MAX_WALK = 1 << 15             # len(a) + len(b): the walk back takes up to that many steps


def _lcs_options(args: List[bytes]) -> Dict[bytes, int]:
    options = dict.fromkeys(_LCS_FLAGS, 0)
    options[b"MINMATCHLEN"] = 0
    index = 3
    while index < len(args):
        option = args[index].upper()
        if option in _LCS_FLAGS:
            options[option] = 1
        elif option == b"MINMATCHLEN" and index + 1 < len(args):
            index += 1
            options[option] = max(0, to_int(args[index]))
        else:
            raise CommandError(SYNTAX_ERROR)
        index += 1
    if options[b"LEN"] and options[b"IDX"]:
        raise CommandError("ERR If you want both the length and indexes, please just use IDX.")
    return options


class _LcsTable:
    """The LCS lengths of every pair of prefixes, bit-parallel (Allison-Dix, Hyyro):
    row i is one integer of len(second) bits whose zeros up to bit j count the LCS
    of first[:i] and second[:j]. Building it is len(first) big-integer steps, in C;
    a cell is a mask and a popcount. It stands for Redis's table of uint32 cells."""

    def __init__(self, first: bytes, second: bytes) -> None:
        width = len(second)
        self.mask = (1 << width) - 1
        positions: Dict[int, int] = {}
        for index, byte in enumerate(second):
            positions[byte] = positions.get(byte, 0) | 1 << index
        row = self.mask
        self.rows = [row]
        for byte in first:
            matches = row & positions.get(byte, 0)
            row = ((row + matches) | (row - matches)) & self.mask
            self.rows.append(row)

    def cell(self, i: int, j: int) -> int:
        """The LCS length of first[:i] and second[:j]."""
        return j - _BIT_COUNT(self.rows[i] & ((1 << j) - 1))

    def length(self) -> int:
        return self.mask.bit_length() - _BIT_COUNT(self.rows[-1])


def _lcs_walk(first: bytes, second: bytes, table: _LcsTable) -> Tuple[List[List[int]], bytes]:
    """Redis's walk back through the table: the matched ranges (last first, each
    [first start, first end, second start, second end]) and the LCS itself."""
    i, j = len(first), len(second)
    text = bytearray()
    matches: List[List[int]] = []
    while i > 0 and j > 0:
        if first[i - 1] == second[j - 1]:
            text.append(first[i - 1])
            if matches and matches[-1][0] == i and matches[-1][2] == j:
                matches[-1][0], matches[-1][2] = i - 1, j - 1          # the range grows backwards
            else:
                matches.append([i - 1, i - 1, j - 1, j - 1])
            i, j = i - 1, j - 1
        elif table.cell(i - 1, j) > table.cell(i, j - 1):
            i -= 1
        else:
            j -= 1
    text.reverse()
    return matches, bytes(text)


def _lcs_idx_reply(matches: List[List[int]], length: int, options: Dict[bytes, int]) -> bytes:
    items = []
    for a_start, a_end, b_start, b_end in matches:
        size = a_end - a_start + 1
        if size < options[b"MINMATCHLEN"]:
            continue
        parts = [array([integer(a_start), integer(a_end)]), array([integer(b_start), integer(b_end)])]
        if options[b"WITHMATCHLEN"]:
            parts.append(integer(size))
        items.append(array(parts))
    return array([bulk(b"matches"), array(items), bulk(b"len"), integer(length)])


# BITFIELD: each operation is (GET|SET|INCRBY, signed, bits, offset, argument, overflow)
_Operation = Tuple[bytes, bool, int, int, int, bytes]


def _bitfield_operations(args: List[bytes], bit_offset: Callable[[bytes], int]) -> List[_Operation]:
    operations: List[_Operation] = []
    overflow = b"WRAP"
    index = 2
    while index < len(args):
        name = args[index].upper()
        if name == b"OVERFLOW" and index + 1 < len(args):
            overflow = args[index + 1].upper()
            if overflow not in (b"WRAP", b"SAT", b"FAIL"):
                raise CommandError("ERR Invalid OVERFLOW type specified")
            index += 2
            continue
        wanted = 3 if name == b"GET" else 4
        if name not in (b"GET", b"SET", b"INCRBY") or index + wanted > len(args):
            raise CommandError(SYNTAX_ERROR)
        signed, bits = _bitfield_type(args[index + 1])
        offset = args[index + 2]
        position = bit_offset(offset[1:]) * bits if offset.startswith(b"#") else bit_offset(offset)
        bit_offset(b"%d" % position)
        argument = to_int(args[index + 3]) if wanted == 4 else 0
        operations.append((name, signed, bits, position, argument, overflow))
        index += wanted
    return operations


def _bitfield_type(text: bytes) -> Tuple[bool, int]:
    match = _BITFIELD_TYPE.fullmatch(text)
    if match is None:
        raise CommandError(_BITFIELD_TYPE_ERROR)
    signed, bits = match.group(1) == b"i", int(match.group(2))
    if not 1 <= bits <= (64 if signed else 63):
        raise CommandError(_BITFIELD_TYPE_ERROR)
    return signed, bits


def _bitfield_run(value: Value, operation: _Operation) -> Optional[int]:
    name, signed, bits, offset, argument, overflow = operation
    current = _bitfield_get(value, signed, bits, offset)
    if name == b"GET":
        return current
    wanted = argument if name == b"SET" else current + argument
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not low <= wanted <= high:
        if overflow == b"FAIL":
            return None
        if overflow == b"SAT":
            wanted = high if wanted > high else low
        else:
            wanted &= (1 << bits) - 1
            if signed and wanted > high:
                wanted -= 1 << bits
    assert isinstance(value, bytearray)
    _bitfield_set(value, bits, offset, wanted)
    return current if name == b"SET" else wanted


def _bitfield_get(value: Value, signed: bool, bits: int, offset: int) -> int:
    first, last = offset >> 3, (offset + bits - 1) >> 3
    chunk = bytes(value[first:last + 1]).ljust(last - first + 1, b"\x00")
    number = int.from_bytes(chunk, "big") >> (7 - ((offset + bits - 1) & 7))
    number &= (1 << bits) - 1
    if signed and number >> (bits - 1):
        number -= 1 << bits
    return number


def _bitfield_set(value: bytearray, bits: int, offset: int, number: int) -> None:
    first, last = offset >> 3, (offset + bits - 1) >> 3
    if len(value) <= last:
        value.extend(bytes(last + 1 - len(value)))
    shift = 7 - ((offset + bits - 1) & 7)
    mask = ((1 << bits) - 1) << shift
    chunk = int.from_bytes(value[first:last + 1], "big")
    chunk = (chunk & ~mask) | ((number << shift) & mask)
    value[first:last + 1] = chunk.to_bytes(last - first + 1, "big")
