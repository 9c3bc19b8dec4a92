"""Redis's glob (KEYS, SCAN MATCH, CONFIG GET, PSUBSCRIBE, PUBSUB CHANNELS) as a matcher on bytes.

Where it sits: under the kv command families (``kvkeyspace.py``,
``kvadmin.py``, ``kvpubsub.py``); it imports nothing of netmux. ``glob(pattern)``
compiles a pattern once into a function ``key -> bool``; it is cached nowhere.
Tests: ``tests/test_app_kvstore.py`` (a hypothesis test against a transcription
of Redis's ``stringmatchlen``).
"""
from __future__ import annotations

import re
from typing import Callable, List, Optional, Tuple

__all__ = ["glob"]

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


def glob(pattern: bytes, longest: Optional[int] = None) -> Callable[[bytes], bool]:
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
    """The matcher of a glob cut at its stars into ``pieces`` (see ``glob``)."""
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

