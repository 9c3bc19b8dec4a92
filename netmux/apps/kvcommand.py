"""What every kv command family shares, sans-IO: how a command is declared, looked up and refused.

Where it sits: under the command families (``kvstrings.py``, ``kvkeyspace.py``,
``kvadmin.py``, ``kvsession.py``) and ``kvstore.py``, which assembles them.
A command is a method ``do_NAME(self, args) -> bytes`` marked ``@command(arity)``
with Redis's arity; ``command_table`` reads the marks into a table and
``execute`` runs one command from it, turning a ``CommandError`` into Redis's
error reply, worded as Redis words it (clients and Redis's own tests match the
text). It owns no data and does no I/O.
"""
from __future__ import annotations

import re
import sys
from typing import Any, Callable, Dict, List, Tuple, Union

from netmux.apps.resp import error

__all__ = ["CommandError", "CommandTable", "command", "command_table", "execute", "subcommand", "to_int",
           "arity_error", "OK", "NULL", "EMPTY_ARRAY", "SYNTAX_ERROR", "LLONG_MAX", "LLONG_MIN"]

OK = b"+OK\r\n"
NULL = b"$-1\r\n"
EMPTY_ARRAY = b"*0\r\n"
SYNTAX_ERROR = "ERR syntax error"
LLONG_MAX = (1 << 63) - 1           # C's long long: Redis's integers and deadlines
LLONG_MIN = -(1 << 63)
_INTEGER = re.compile(rb"0|-?[1-9][0-9]{0,18}")   # Redis's string2ll: no "+", space, zeros, "-0"

Method = Callable[..., bytes]
# name (lower and upper case) -> (bound do_NAME method, Redis's arity, the word counts it allows:
# ``len(args) in lengths`` is the arity check in one step, for kv.py's hot path)
CommandTable = Dict[bytes, Tuple[Callable[[List[bytes]], bytes], int, range]]


class CommandError(Exception):
    """A command refused: the message is the RESP error text (``ERR ...``)."""


def to_int(value: Union[bytes, bytearray], message: str = "ERR value is not an integer or out of range") -> int:
    """Parse an integer argument or stored value as strictly as Redis does (a C long long)."""
    if value.isdigit() and len(value) < 19 and (value[0] != 48 or len(value) == 1):   # no regex: INCR is hot
        return int(value)
    if _INTEGER.fullmatch(value):
        number = int(value)
        if LLONG_MIN <= number <= LLONG_MAX:
            return number
    raise CommandError(message)


def command(arity: int) -> Callable[[Method], Method]:
    """Mark ``do_NAME`` as the command NAME, with Redis's arity beside it
    (``n``: exactly ``n`` words with the name; ``-n``: at least ``n``)."""
    def mark(method: Method) -> Method:
        method.arity = arity  # type: ignore[attr-defined]
        return method
    return mark


def arities(cls: type) -> Dict[str, int]:
    """name -> arity of every ``do_NAME`` method of ``cls`` (its bases included).
    A ``do_`` method without its ``@command`` mark is an AttributeError: never hidden."""
    names = sorted({name for klass in cls.__mro__ for name in vars(klass) if name.startswith("do_")})
    return {name[3:]: getattr(cls, name).arity for name in names}


def command_table(owner: Any) -> CommandTable:
    """The commands of ``owner`` (its marked ``do_NAME`` methods), bound, under both cases."""
    table: CommandTable = {}
    for name, arity in arities(type(owner)).items():
        lengths = range(arity, arity + 1) if arity > 0 else range(-arity, sys.maxsize)
        entry = (getattr(owner, "do_" + name), arity, lengths)
        table[name.encode()] = table[name.upper().encode()] = entry
    return table


def lookup(table: CommandTable, name: bytes) -> Any:
    """The table's entry for ``name`` in any case, or None."""
    return table.get(name) or table.get(name.lower())


def execute(table: CommandTable, args: List[bytes]) -> bytes:
    """Look ``args[0]`` up in ``table`` (any case), check the arity, run it, and turn
    a CommandError into its error reply. Other exceptions propagate."""
    entry = table.get(args[0]) or table.get(args[0].lower())
    if entry is None:
        return unknown_command(args)
    function, arity, _ = entry
    if not arity_holds(len(args), arity):
        return error(str(arity_error(args)))
    try:
        return function(args)
    except CommandError as exc:
        return error(str(exc))


def check(table: CommandTable, args: List[bytes]) -> bytes:
    """The error reply ``execute`` would give before running ``args`` (unknown, arity),
    or b"" when it would run: what MULTI checks before queueing a command."""
    entry = lookup(table, args[0])
    if entry is None:
        return unknown_command(args)
    if not arity_holds(len(args), entry[1]):
        return error(str(arity_error(args)))
    return b""


def arity_holds(count: int, arity: int) -> bool:
    """Redis's arity: ``n`` means exactly ``n`` words with the name, ``-n`` at least ``n``."""
    return count == arity or (arity < 0 and count >= -arity)


def arity_error(args: List[bytes], subcommand: bool = False) -> CommandError:
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
    if not arity_holds(len(args), arity):
        raise arity_error(args, subcommand=True)
    return name


def unknown_command(args: List[bytes]) -> bytes:
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
