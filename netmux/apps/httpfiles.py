"""httpfiles: what HTTP says about serving a file, sans-IO: validators, preconditions, ranges.

Where it sits: under ``netmux.apps.http``, which hands it a request's header
fields (bytes, as h11 gives them) and a file's size and modification time, and
gets decisions back: a status, the byte ranges to send, the bytes that frame
them. It imports no socket, no reactor and no h11, opens no file and reads no
clock (the caller passes ``now``): its tests feed it values. It never raises
on what a client sends: a field it cannot read is ignored or refused as RFC
9110 says, and a number of thousands of digits is never converted.

**Validators** (RFC 9110 8.8). ``Last-Modified`` is the file's mtime in whole
seconds. The ``ETag`` is strong and made as nginx makes it, from the mtime and
the size in hexadecimal (``"6b12e935-c"``), so a cache sees the same tag from
netmux and from nginx serving the same files. Both change when a file is
written or replaced, except by a write of the same size within the same
second, which nginx misses too.

**Preconditions** (RFC 9110 13.2.2), evaluated in this order before any range:

1. ``If-Match``: unless ``*`` or one of its tags matches the ETag (strong
   comparison: a ``W/`` tag never does), 412 Precondition Failed.
2. Else ``If-Unmodified-Since``: a valid date the file was modified after: 412.
3. ``If-None-Match``: ``*`` or one of its tags matches (weak comparison): 304
   Not Modified for GET and HEAD.
4. Else ``If-Modified-Since`` (GET and HEAD): a valid date, not in the future
   (RFC 9110 13.1.3 calls that invalid), the file was not modified after: 304.
5. ``If-Range`` (with a ``Range``): an ETag that matches strongly, or exactly
   the ``Last-Modified`` date of a file at least a second old (a file changed
   within this second may change again and keep its date): the ranges are
   served; anything else is a changed file, and the whole of it is sent (200).
   A resumed download never splices new bytes onto old ones.

A date is one of HTTP's three formats (RFC 9110 5.6.7), else the field is
ignored.

**Ranges** (RFC 9110 14) are read as nginx reads them: ``bytes=`` (any case)
and a comma-separated list of ``first-last``, ``first-`` or ``-suffix`` (spaces
allowed around them); another unit is ignored (200), a malformed list is 416.
A range that starts past the end is dropped; none left, 416 with
``Content-Range: bytes */size``. One range is a 206 with its
``Content-Range``; several are one 206 ``multipart/byteranges`` body, in the
order asked, as nginx frames it. More than ``max_ranges`` of them, or ranges
whose lengths add up to more than the file (overlapping ones that ask for
bytes twice over), get the whole file, 200, as nginx does: a client cannot make
a small file cost a large answer. An empty file has no ranges (200).

**Where nginx (1.22, its defaults) differs**, netmux follows RFC 9110:
If-None-Match makes If-Modified-Since ignored (nginx requires both to match for
a 304), If-Match makes If-Unmodified-Since ignored and an invalid
If-Unmodified-Since date is ignored (nginx: 412 for either), If-Modified-Since
gives 304 for any date at or after the mtime (nginx's default is an exact
match), and a range end past 2**63 is the end of the file (nginx: 416).

test-case-name: tests/test_app_http_files.py
"""
from __future__ import annotations

import calendar
import email.utils
import re
import time
from typing import List, Optional, Sequence, Tuple, Union

__all__ = ["entity_tag", "http_date", "parse_http_date", "header", "preconditions", "if_range_holds",
           "byte_ranges", "multipart", "Piece"]

#: Header fields as h11 gives them: ``(lowercase name, value)``.
Fields = Sequence[Tuple[bytes, bytes]]
#: A piece of a response body: bytes to write, or ``(offset, count)`` of the file.
Piece = Union[bytes, Tuple[int, int]]


# ----------------------------------------------------------------------
# Validators
# ----------------------------------------------------------------------
def entity_tag(size: int, mtime: int) -> bytes:
    """The file's strong ETag, as nginx makes it: ``"<mtime hex>-<size hex>"``."""
    return b'"%x-%x"' % (mtime, size)


def http_date(seconds: int) -> bytes:
    """``seconds`` (a Unix time) as an IMF-fixdate: ``Fri, 04 Dec 2026 16:24:21 GMT``."""
    return email.utils.formatdate(seconds, usegmt=True).encode()


def header(fields: Fields, name: bytes) -> Optional[bytes]:
    """The first value of the field ``name`` (lowercase), or None."""
    for key, value in fields:
        if key == name:
            return value
    return None


def _list_header(fields: Fields, name: bytes) -> Optional[bytes]:
    """Every line of a list field, joined as one list (RFC 9110 5.3), or None."""
    values = [value for key, value in fields if key == name]
    return b", ".join(values) if values else None


# ----------------------------------------------------------------------
# HTTP dates (RFC 9110 5.6.7): the IMF-fixdate, and the two obsolete forms a
# recipient must still read. Fixed widths: a year has four digits (two in
# RFC 850's), so no value overflows and no number is long.
# ----------------------------------------------------------------------
_DAY = rb"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_LONG_DAY = rb"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MONTHS = {name: number for number, name in enumerate(
    (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"), 1)}
_MONTH = rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_TIME = rb"([0-9]{2}):([0-9]{2}):([0-9]{2})"
_IMF_FIXDATE = re.compile(_DAY + rb", ([0-9]{2}) " + _MONTH + rb" ([0-9]{4}) " + _TIME + rb" GMT\Z")
_RFC850_DATE = re.compile(_LONG_DAY + rb", ([0-9]{2})-" + _MONTH + rb"-([0-9]{2}) " + _TIME + rb" GMT\Z")
_ASCTIME_DATE = re.compile(_DAY + rb" " + _MONTH + rb" ([0-9 ][0-9]) " + _TIME + rb" ([0-9]{4})\Z")


def parse_http_date(value: bytes, now: int) -> Optional[int]:
    """An HTTP date as a Unix time, or None when it is not one (then the field is
    ignored). ``now`` places RFC 850's two-digit years: one more than 50 years
    ahead is the century before (RFC 9110 5.6.7)."""
    match = _IMF_FIXDATE.match(value)
    if match:
        day, month, year, hour, minute, second = match.groups()
        return _timestamp(int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second))
    match = _RFC850_DATE.match(value)
    if match:
        day, month, short_year, hour, minute, second = match.groups()
        this_year = time.gmtime(now).tm_year
        year = this_year // 100 * 100 + int(short_year)
        if year > this_year + 50:
            year -= 100
        return _timestamp(year, _MONTHS[month], int(day), int(hour), int(minute), int(second))
    match = _ASCTIME_DATE.match(value)
    if match:
        month, day, hour, minute, second, year = match.groups()      # day: " 6", "06" or "16"
        return _timestamp(int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second))
    return None


def _timestamp(year: int, month: int, day: int, hour: int, minute: int, second: int) -> Optional[int]:
    if year < 1 or not 1 <= day <= calendar.monthrange(year, month)[1]:
        return None
    if hour > 23 or minute > 59 or second > 60:      # 60: a leap second, as RFC 5322 allows
        return None
    return calendar.timegm((year, month, day, hour, minute, second))


# ----------------------------------------------------------------------
# Entity-tags and the preconditions (RFC 9110 8.8.3, 13.1, 13.2.2)
# ----------------------------------------------------------------------
# One element of a list of entity-tags: [W/]"opaque", or an empty element (RFC 9110 5.6.1).
# An opaque tag may hold a comma, so the list is scanned, never split.
_TAG_ELEMENT = re.compile(rb'[ \t]*(?:(W/)?"([\x21\x23-\x7e\x80-\xff]*)")?[ \t]*(?:,|\Z)')


def _tag_matches(value: bytes, tag: bytes, *, weak: bool) -> bool:
    """Whether the list ``value`` (``*`` or entity-tags) matches our strong ``tag``;
    a malformed list matches nothing. ``weak``: a ``W/`` tag may match (RFC 9110 8.8.3.2)."""
    if value.strip(b" \t") == b"*":
        return True
    opaque = tag[1:-1]
    position = 0
    while position < len(value):
        element = _TAG_ELEMENT.match(value, position)
        if element is None or element.end() == position:
            return False
        position = element.end()
        if element.group(2) == opaque and (weak or element.group(1) is None):
            return True
    return False


def preconditions(fields: Fields, method: bytes, tag: bytes, mtime: int, now: int) -> int:
    """RFC 9110 13.2.2's evaluation for a file with ETag ``tag`` modified at ``mtime``:
    412, 304, or 200 (go on, ranges next)."""
    if_match = _list_header(fields, b"if-match")
    if if_match is not None:
        if not _tag_matches(if_match, tag, weak=False):
            return 412
    else:
        unmodified = header(fields, b"if-unmodified-since")
        date = None if unmodified is None else parse_http_date(unmodified, now)
        if date is not None and mtime > date:
            return 412
    safe = method == b"GET" or method == b"HEAD"
    if_none_match = _list_header(fields, b"if-none-match")
    if if_none_match is not None:
        if _tag_matches(if_none_match, tag, weak=True):
            return 304 if safe else 412
    elif safe:
        modified = header(fields, b"if-modified-since")
        date = None if modified is None else parse_http_date(modified, now)
        if date is not None and mtime <= date <= now:
            return 304
    return 200


def if_range_holds(value: bytes, tag: bytes, mtime: int, now: int) -> bool:
    """Whether an If-Range validator names this very file (RFC 9110 13.1.5): then its
    Range is served, else the whole file."""
    if value.startswith(b'"') or value.startswith(b"W/"):
        return value == tag                          # strong comparison: a W/ tag is false
    date = parse_http_date(value, now)
    return date is not None and date == mtime and mtime < now


# ----------------------------------------------------------------------
# Ranges (RFC 9110 14), read as nginx reads them
# ----------------------------------------------------------------------
#: Beyond any file: a byte position with more significant digits than 20 is taken as this.
_FAR = 10 ** 20


def _position(digits: bytes) -> int:
    """A byte position from its decimal digits, without converting thousands of them
    (quadratic, and a ValueError past 4,300 digits since Python 3.11)."""
    significant = digits.lstrip(b"0")
    return _FAR if len(significant) > 20 else int(significant or b"0")


def _range_spec(spec: bytes, size: int) -> Optional[Tuple[int, int]]:
    """``(start, end)`` (end exclusive, maybe empty) of one range-spec of a ``size``-byte
    file; None when malformed. Only spaces are skipped, as nginx skips them."""
    spec = spec.strip(b" ")
    if spec.startswith(b"-"):                        # the last N bytes
        suffix = spec[1:]
        if not suffix.isdigit():
            return None
        return max(0, size - _position(suffix)), size
    first, dash, last = spec.partition(b"-")
    first, last = first.rstrip(b" "), last.lstrip(b" ")
    if not dash or not first.isdigit() or not (last == b"" or last.isdigit()):
        return None
    start = _position(first)
    return start, size if last == b"" else min(_position(last) + 1, size)


def byte_ranges(value: bytes, size: int, max_ranges: int) -> Optional[List[Tuple[int, int]]]:
    """The ``(offset, count)`` ranges a ``Range`` value asks of a ``size``-byte file,
    in its order. None: serve the whole file (another unit, an empty file, more than
    ``max_ranges`` ranges, or more bytes than the file holds). An empty list: 416."""
    if len(value) < 7 or value[:6].lower() != b"bytes=" or size == 0:
        return None
    ranges: List[Tuple[int, int]] = []
    total = 0
    for spec in value[6:].split(b","):
        span = _range_spec(spec, size)
        if span is None:
            return []
        start, end = span
        if start < end:                              # else it starts past the end: dropped
            ranges.append((start, end - start))
            total += end - start
            if len(ranges) > max_ranges:
                return None
    if ranges and total > size:
        return None
    return ranges


def multipart(ranges: Sequence[Tuple[int, int]], size: int, content_type: bytes,
              boundary: bytes) -> Tuple[List[Piece], int]:
    """A ``multipart/byteranges`` body for several ranges, framed as nginx frames it:
    its pieces (part heads, file regions, the closing line) and its length."""
    pieces: List[Piece] = []
    length = 0
    for offset, count in ranges:
        head = (b"\r\n--%s\r\nContent-Type: %s\r\nContent-Range: bytes %d-%d/%d\r\n\r\n"
                % (boundary, content_type, offset, offset + count - 1, size))
        pieces += [head, (offset, count)]
        length += len(head) + count
    closing = b"\r\n--%s--\r\n" % boundary
    pieces.append(closing)
    return pieces, length + len(closing)
