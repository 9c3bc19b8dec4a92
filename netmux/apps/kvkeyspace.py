"""The keyspace commands of kv (DEL, KEYS, SCAN, RENAME, COPY, MOVE, SWAPDB, the expiry family, OBJECT...), sans-IO.

Where it sits: a command family mixed into ``kvstore.Store``; it works on
``self.db`` (the client's SELECTed ``kvdb.Database``) and, for MOVE, COPY and
SWAPDB, on ``self.databases``. Replies and errors are redis-server 7.0's.

What a client's argument costs stays linear: KEYS matches Redis's glob in
O(pattern x key) (``kvglob``), SCAN visits COUNT keys a call from a snapshot
of the key list (``Database.scan``), RANDOMKEY walks to a random position in
C. Tests: ``tests/test_app_kv_keyspace.py``.
"""
from __future__ import annotations

import itertools
import random
import re
from typing import List, Optional

from netmux.apps.kvcommand import LLONG_MAX, LLONG_MIN, NULL, OK, SYNTAX_ERROR, CommandError, command, subcommand, to_int
from netmux.apps.kvdb import Database, Text, Value
from netmux.apps.kvglob import glob
from netmux.apps.resp import array, bulk, integer

__all__ = ["KeyspaceCommands", "database_index", "DATABASES"]

DATABASES = 16                      # Redis's default: SELECT 0 to 15
_CURSOR = re.compile(rb"[+-]?[0-9]*")          # what strtoul takes whole
_SHARED_INTEGERS = 10000            # Redis shares the objects of 0..9999: OBJECT REFCOUNT says so
_OBJECT_HELP = [
    "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "ENCODING <key>",
    "    Return the kind of internal representation used in order to store the value",
    "    associated with a <key>.",
    "FREQ <key>",
    "    Return the access frequency index of the <key>. The returned integer is",
    "    proportional to the logarithm of the recent access frequency of the key.",
    "IDLETIME <key>",
    "    Return the idle time of the <key>, that is the approximated number of",
    "    seconds elapsed since the last access to the key.",
    "REFCOUNT <key>",
    "    Return the number of references of the value associated with the specified",
    "    <key>.",
    "HELP",
    "    Prints this help.",
]


def database_index(argument: bytes, message: str = "ERR value is not an integer or out of range") -> int:
    """A database number as SELECT, MOVE, COPY and SWAPDB read it (``message`` when it
    is not an integer); out of 0..15 is Redis's 'DB index is out of range'."""
    index = to_int(argument, message)
    if not 0 <= index < DATABASES:
        raise CommandError("ERR DB index is out of range")
    return index


def encoding(value: Value) -> bytes:
    """OBJECT ENCODING: what Redis would have chosen for this string."""
    if isinstance(value, bytearray):
        return b"raw"               # changed in place (APPEND, SETRANGE, SETBIT): Redis's too
    if len(value) <= 20 and not isinstance(value, Text):
        try:
            to_int(value)
            return b"int"
        except CommandError:
            pass
    return b"embstr" if len(value) <= 44 else b"raw"


class KeyspaceCommands:
    """Keys as a whole: existence, names, databases, deadlines (see the module's note)."""

    db: Database
    databases: List[Database]

    # ------------------------------------------------------------------
    # Existence and names
    # ------------------------------------------------------------------
    @command(-2)
    def do_del(self, args: List[bytes]) -> bytes:
        db = self.db
        return integer(sum(db.lookup(key) is not None and db.delete(key) for key in args[1:]))

    do_unlink = do_del

    @command(-2)
    def do_exists(self, args: List[bytes]) -> bytes:
        return integer(sum(self.db.lookup(key) is not None for key in args[1:]))

    do_touch = do_exists

    @command(2)
    def do_type(self, args: List[bytes]) -> bytes:
        return b"+none\r\n" if self.db.lookup(args[1]) is None else b"+string\r\n"

    @command(2)
    def do_keys(self, args: List[bytes]) -> bytes:
        data = self.db.data
        if args[1] == b"*":                 # Redis lists every key unmatched (the empty one too)
            keys = list(data)
        else:
            match = glob(args[1], max(map(len, data), default=-1))
            keys = [key for key in data if match(key)]
        return array([bulk(key) for key in keys if self.db.lookup(key) is not None])

    @command(-2)
    def do_scan(self, args: List[bytes]) -> bytes:
        cursor = _cursor(args[1])
        count, pattern, kind = 10, None, None
        for index in range(2, len(args), 2):
            option = args[index].upper()
            if index + 1 >= len(args) or option not in (b"COUNT", b"MATCH", b"TYPE"):
                raise CommandError(SYNTAX_ERROR)
            if option == b"COUNT":
                count = to_int(args[index + 1])
                if count < 1:
                    raise CommandError(SYNTAX_ERROR)
            elif option == b"MATCH":
                pattern = args[index + 1]
            else:
                kind = args[index + 1].lower()
        cursor, keys = self.db.scan(cursor, count)
        if pattern is not None and pattern != b"*":
            match = glob(pattern, max(map(len, keys), default=-1))
            keys = [key for key in keys if match(key)]
        if kind is not None and kind != b"string":
            keys = []
        lookup = self.db.lookup
        return array([bulk(b"%d" % cursor), array([bulk(key) for key in keys if lookup(key) is not None])])

    @command(1)
    def do_randomkey(self, args: List[bytes]) -> bytes:
        data = self.db.data
        for _ in range(len(data)):          # expired keys go as they are met
            position = random.randrange(len(data))
            key = next(itertools.islice(data, position, None))
            if self.db.lookup(key) is not None:
                return bulk(key)
        return NULL

    @command(3)
    def do_rename(self, args: List[bytes]) -> bytes:
        return OK if self._rename(args[1], args[2], replace=True) else b":0\r\n"

    @command(3)
    def do_renamenx(self, args: List[bytes]) -> bytes:
        return b":1\r\n" if self._rename(args[1], args[2], replace=False) else b":0\r\n"

    def _rename(self, source: bytes, target: bytes, replace: bool) -> bool:
        db = self.db
        value = db.lookup(source)
        if value is None:
            raise CommandError("ERR no such key")
        if source == target or (not replace and db.lookup(target) is not None):
            return source == target and replace
        deadline = db.expires.get(source)
        db.delete(source)
        db.put(target, value)
        if deadline is not None:
            db.set_deadline(target, deadline)
        return True

    @command(-3)
    def do_copy(self, args: List[bytes]) -> bytes:
        target_db, replace = self.db, False
        index = 3
        while index < len(args):
            option = args[index].upper()
            if option == b"REPLACE":
                replace = True
            elif option == b"DB" and index + 1 < len(args):
                index += 1
                target_db = self.databases[database_index(args[index])]
            else:
                raise CommandError(SYNTAX_ERROR)
            index += 1
        if target_db is self.db and args[1] == args[2]:
            raise CommandError("ERR source and destination objects are the same")
        return b":1\r\n" if self._copy(self.db, args[1], target_db, args[2], replace) else b":0\r\n"

    @staticmethod
    def _copy(source_db: Database, source: bytes, target_db: Database, target: bytes, replace: bool) -> bool:
        value = source_db.lookup(source)
        if value is None or (not replace and target_db.lookup(target) is not None):
            return False
        target_db.put(target, value if isinstance(value, bytes) else bytearray(value))     # its own copy
        deadline = source_db.expires.get(source)
        if deadline is not None:
            target_db.set_deadline(target, deadline)
        return True

    @command(3)
    def do_move(self, args: List[bytes]) -> bytes:
        target_db = self.databases[database_index(args[2])]
        if target_db is self.db:
            raise CommandError("ERR source and destination objects are the same")
        if not self._copy(self.db, args[1], target_db, args[1], replace=False):
            return b":0\r\n"
        self.db.delete(args[1])
        return b":1\r\n"

    @command(3)
    def do_swapdb(self, args: List[bytes]) -> bytes:
        first = database_index(args[1], "ERR invalid first DB index")
        second = database_index(args[2], "ERR invalid second DB index")
        if first != second:
            self.databases[first].swap(self.databases[second])
        return OK

    @command(1)
    def do_dbsize(self, args: List[bytes]) -> bytes:
        return integer(len(self.db.data))

    @command(-1)
    def do_flushdb(self, args: List[bytes]) -> bytes:
        _flush_mode(args)
        self.db.clear()
        return OK

    @command(-1)
    def do_flushall(self, args: List[bytes]) -> bytes:
        _flush_mode(args)
        for db in self.databases:
            db.clear()
        return OK

    @command(-2)
    def do_object(self, args: List[bytes]) -> bytes:
        name = subcommand(args, {b"ENCODING": 3, b"REFCOUNT": 3, b"IDLETIME": 3, b"FREQ": 3, b"HELP": 2})
        if name == b"HELP":
            return array([b"+%s\r\n" % line.encode() for line in _OBJECT_HELP])
        value = self.db.lookup(args[2])
        if value is None:
            return NULL
        if name == b"ENCODING":
            return bulk(encoding(value))
        if name == b"REFCOUNT":
            shared = encoding(value) == b"int" and 0 <= int(value) < _SHARED_INTEGERS
            return integer(2147483647 if shared else 1)
        if name == b"IDLETIME":
            return b":0\r\n"                # access times are not kept (README: what differs)
        raise CommandError("ERR An LFU maxmemory policy is not selected, access frequency not tracked. "
                           "Please note that when switching between policies at runtime LRU and LFU "
                           "data will take some time to adjust.")

    # ------------------------------------------------------------------
    # Deadlines
    # ------------------------------------------------------------------
    @command(-3)
    def do_expire(self, args: List[bytes]) -> bytes:
        return self._expire(args, 1000, relative=True)

    @command(-3)
    def do_pexpire(self, args: List[bytes]) -> bytes:
        return self._expire(args, 1, relative=True)

    @command(-3)
    def do_expireat(self, args: List[bytes]) -> bytes:
        return self._expire(args, 1000, relative=False)

    @command(-3)
    def do_pexpireat(self, args: List[bytes]) -> bytes:
        return self._expire(args, 1, relative=False)

    def _expire(self, args: List[bytes], unit: int, relative: bool) -> bytes:
        # Redis's order: the options first, then the number, then the key.
        options = _expire_options(args[3:])
        amount = to_int(args[2])
        # A time in the past is allowed (the key is deleted); an overflow of C's long long is not.
        invalid = CommandError(f"ERR invalid expire time in '{args[0].lower().decode()}' command")
        if amount > LLONG_MAX // unit or amount < -(-LLONG_MIN // unit):      # C's division truncates
            raise invalid
        deadline = amount * unit + (self.db.now_ms() if relative else 0)
        if deadline > LLONG_MAX:
            raise invalid
        db, key = self.db, args[1]
        if db.lookup(key) is None:
            return b":0\r\n"
        current = db.expires.get(key)
        if ((b"NX" in options and current is not None) or (b"XX" in options and current is None)
                or (b"GT" in options and (current is None or deadline <= current))
                or (b"LT" in options and current is not None and deadline >= current)):
            return b":0\r\n"
        db.set_deadline(key, deadline)
        return b":1\r\n"

    @command(2)
    def do_ttl(self, args: List[bytes]) -> bytes:
        return self._ttl(args[1], 1000)

    @command(2)
    def do_pttl(self, args: List[bytes]) -> bytes:
        return self._ttl(args[1], 1)

    def _ttl(self, key: bytes, unit: int) -> bytes:
        deadline = self._deadline_of(key)
        if deadline < 0:
            return integer(deadline)
        return integer(max(0, deadline - self.db.now_ms() + unit // 2) // unit)

    def _deadline_of(self, key: bytes) -> int:
        """``key``'s deadline in Unix ms; -2 when there is no such key, -1 when it has none."""
        if self.db.lookup(key) is None:
            return -2
        return self.db.expires.get(key, -1)

    @command(2)
    def do_expiretime(self, args: List[bytes]) -> bytes:
        deadline = self._deadline_of(args[1])
        return integer(deadline if deadline < 0 else (deadline + 500) // 1000)      # rounded, as Redis's

    @command(2)
    def do_pexpiretime(self, args: List[bytes]) -> bytes:
        return integer(self._deadline_of(args[1]))

    @command(2)
    def do_persist(self, args: List[bytes]) -> bytes:
        found = self.db.lookup(args[1]) is not None and self.db.persist(args[1])
        return b":1\r\n" if found else b":0\r\n"


def _cursor(argument: bytes) -> int:
    """SCAN's cursor as Redis's strtoul reads it: an unsigned long, a minus wrapping around."""
    if not _CURSOR.fullmatch(argument):
        raise CommandError("ERR invalid cursor")
    digits = argument.lstrip(b"+-")
    number = int(digits) if digits else 0
    if number >= 1 << 64:
        raise CommandError("ERR invalid cursor")
    return (-number) % (1 << 64) if argument.startswith(b"-") else number


def _expire_options(words: List[bytes]) -> "set[bytes]":
    options = {word.upper() for word in words}
    for word in words:
        if word.upper() not in (b"NX", b"XX", b"GT", b"LT"):
            raise CommandError(f"ERR Unsupported option {word.decode('utf-8', 'replace')}")
    if b"NX" in options and len(options) > 1:
        raise CommandError("ERR NX and XX, GT or LT options at the same time are not compatible")
    if {b"GT", b"LT"} <= options:
        raise CommandError("ERR GT and LT options at the same time are not compatible")
    return options


def _flush_mode(args: List[bytes]) -> Optional[bytes]:
    """FLUSHDB's and FLUSHALL's optional SYNC or ASYNC (both flush at once here)."""
    if len(args) > 2 or (len(args) == 2 and args[1].upper() not in (b"SYNC", b"ASYNC")):
        raise CommandError(SYNTAX_ERROR)
    return args[1].upper() if len(args) == 2 else None
