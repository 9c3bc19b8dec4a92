"""netmux.apps.httpfiles, sans-IO: validators, HTTP dates, RFC 9110's preconditions and byte
ranges, fed values (no socket, no clock). The same decisions over a socket, and beside nginx,
are in test_app_http.py and test_app_http_nginx.py."""
from __future__ import annotations

import calendar
import time
from typing import List, Optional, Tuple

import pytest
from hypothesis import given, settings, strategies as st

from netmux.apps import httpfiles as files

NOW = 1_796_400_000                       # Fri, 04 Dec 2026 (a fixed "now": no clock here)
MTIME = NOW - 3600
SIZE = 12
TAG = files.entity_tag(SIZE, MTIME)
LATER = files.http_date(MTIME + 60).decode()
EARLIER = files.http_date(MTIME - 60).decode()
EXACT = files.http_date(MTIME).decode()


# ----------------------------------------------------------------------
# Validators and dates
# ----------------------------------------------------------------------
def test_the_etag_is_nginx_s_mtime_and_size_in_hex():
    assert files.entity_tag(12, 0x6B12E935) == b'"6b12e935-c"'        # as nginx 1.22 sent it
    assert files.entity_tag(0, 0) == b'"0-0"'


def test_the_three_http_date_formats_are_read():
    """RFC 9110 5.6.7's example, in its three forms."""
    expected = calendar.timegm((1994, 11, 6, 8, 49, 37))
    for value in (b"Sun, 06 Nov 1994 08:49:37 GMT", b"Sunday, 06-Nov-94 08:49:37 GMT",
                  b"Sun Nov  6 08:49:37 1994", b"Sun Nov 06 08:49:37 1994"):
        assert files.parse_http_date(value, NOW) == expected, value


@pytest.mark.parametrize("value", [
    b"Fri, 01 Jan 99999999999 00:00:00 GMT",      # a huge year (it raised OverflowError)
    b"Fri, 01 Jan 99999 00:00:00 GMT",
    b"Fri, 01 Jan 2026 00:00:00 +99999999999",     # a huge offset
    b"Fri, 01 Jan 2026 00:00:00 +0000",            # an offset is not HTTP's
    b"Fri, 01 Jan 2026 00:00:00 gmt", b"fri, 01 Jan 2026 00:00:00 GMT", b"Fri, 01 jan 2026 00:00:00 GMT",
    b"Fri, 31 Feb 2026 00:00:00 GMT", b"Fri, 00 Jan 2026 00:00:00 GMT", b"Fri, 01 Jan 2026 24:00:00 GMT",
    b"Fri, 01 Jan 2026 00:60:00 GMT", b"Fri, 01 Jan 2026 00:00:61 GMT", b"Fri, 01 Jan 0000 00:00:00 GMT",
    b"Fri, 01 Jan 2026 00:00:00 GMT junk", b"Fri, 1 Jan 2026 00:00:00 GMT", b"", b"0", b"9" * 5000,
    b"Friday, 01-Jan-2026 00:00:00 GMT", b"Fri Jan  1 00:00:00 26", b"Fri Jan    1 00:00:00 2026",
])
def test_what_is_not_an_http_date_is_none(value):
    assert files.parse_http_date(value, NOW) is None


def test_a_two_digit_year_more_than_50_years_ahead_is_the_century_before():
    assert time.gmtime(files.parse_http_date(b"Thursday, 01-Jan-70 00:00:00 GMT", NOW)).tm_year == 2070
    assert time.gmtime(files.parse_http_date(b"Friday, 01-Jan-76 00:00:00 GMT", NOW)).tm_year == 2076
    assert time.gmtime(files.parse_http_date(b"Monday, 01-Jan-77 00:00:00 GMT", NOW)).tm_year == 1977


@given(st.integers(0, 253402300799))
def test_every_date_we_write_reads_back_in_each_format(seconds):
    written = files.http_date(seconds)
    assert files.parse_http_date(written, NOW) == seconds
    moment = time.gmtime(seconds)
    asctime = time.strftime("%a %b %d %H:%M:%S %Y", moment).encode()
    assert files.parse_http_date(asctime, NOW) == seconds
    if abs(moment.tm_year - 2026) < 50:
        rfc850 = time.strftime("%A, %d-%b-%y %H:%M:%S GMT", moment).encode()
        assert files.parse_http_date(rfc850, NOW) == seconds


@given(st.binary(max_size=60) | st.text(alphabet="0123456789 ,:-+ADFGJMNOSTWacdeghlnoprtuy", max_size=40).map(str.encode))
@settings(max_examples=500)
def test_any_bytes_are_a_date_or_none_never_an_exception(value):
    result = files.parse_http_date(value, NOW)
    assert result is None or isinstance(result, int)


# ----------------------------------------------------------------------
# Preconditions: RFC 9110 13.2.2's order
# ----------------------------------------------------------------------
def _decide(*fields: Tuple[str, str], method: bytes = b"GET") -> int:
    headers = [(name.lower().encode(), value.encode()) for name, value in fields]
    return files.preconditions(headers, method, TAG, MTIME, NOW)


@pytest.mark.parametrize("fields, status", [
    ([], 200),
    # If-None-Match: weak comparison; "*" matches any file; it makes If-Modified-Since ignored.
    ([("If-None-Match", '"x"'), ("If-Modified-Since", LATER)], 200),       # the case: was 304
    ([("If-None-Match", "*")], 304),                                         # was 200
    ([("If-None-Match", TAG.decode())], 304),
    ([("If-None-Match", "W/" + TAG.decode())], 304),
    ([("If-None-Match", '"a", "b,c" , ' + TAG.decode())], 304),
    ([("If-None-Match", '"a"'), ("If-None-Match", TAG.decode())], 304),     # two lines, one list
    ([("If-None-Match", TAG.decode()), ("If-Modified-Since", EARLIER)], 304),  # nginx: 200
    ([("If-None-Match", TAG.decode()[:-1])], 200),                           # malformed: no match
    ([("If-None-Match", "")], 200),
    # If-Modified-Since alone: at or after the mtime, not in the future.
    ([("If-Modified-Since", EXACT)], 304),
    ([("If-Modified-Since", LATER)], 304),                                   # nginx (exact): 200
    ([("If-Modified-Since", EARLIER)], 200),
    ([("If-Modified-Since", files.http_date(NOW + 60).decode())], 200),     # the future is invalid
    ([("If-Modified-Since", "Fri, 01 Jan 99999 00:00:00 GMT")], 200),
    ([("If-Modified-Since", "yesterday")], 200),
    # If-Match: strong comparison.
    ([("If-Match", '"x"')], 412),
    ([("If-Match", "W/" + TAG.decode())], 412),
    ([("If-Match", '"x", ' + TAG.decode())], 200),
    ([("If-Match", "*")], 200),
    # If-Unmodified-Since: only without If-Match; an invalid date is ignored.
    ([("If-Unmodified-Since", EARLIER)], 412),
    ([("If-Unmodified-Since", EXACT)], 200),
    ([("If-Unmodified-Since", "garbage")], 200),                             # nginx: 412
    ([("If-Match", TAG.decode()), ("If-Unmodified-Since", EARLIER)], 200),  # nginx: 412
    # 412 comes before 304.
    ([("If-Match", '"x"'), ("If-None-Match", TAG.decode())], 412),
    ([("If-Unmodified-Since", EARLIER), ("If-Modified-Since", LATER)], 412),
], ids=lambda value: repr(value) if isinstance(value, list) else str(value))
def test_preconditions_follow_rfc_9110_order(fields, status):
    assert _decide(*fields) == status
    assert _decide(*fields, method=b"HEAD") == status


def test_if_none_match_on_a_method_that_changes_things_is_412_and_if_modified_since_is_for_get():
    assert _decide(("If-None-Match", "*"), method=b"PUT") == 412
    assert _decide(("If-Modified-Since", LATER), method=b"PUT") == 200


@pytest.mark.parametrize("value, holds", [
    (TAG, True), (b"W/" + TAG, False), (b'"x"', False), (TAG + b" ", False),
    (EXACT.encode(), True), (LATER.encode(), False), (EARLIER.encode(), False),
    (b"garbage", False), (b"", False), (b"Fri, 01 Jan 99999999999 00:00:00 GMT", False),
])
def test_if_range_holds_for_the_same_etag_or_exactly_the_last_modified_date(value, holds):
    assert files.if_range_holds(value, TAG, MTIME, NOW) is holds


def test_an_if_range_date_of_a_file_changed_this_second_is_weak():
    assert files.if_range_holds(files.http_date(NOW), TAG, NOW, NOW) is False
    assert files.if_range_holds(files.http_date(NOW - 1), TAG, NOW - 1, NOW) is True


# ----------------------------------------------------------------------
# Ranges, as nginx reads them
# ----------------------------------------------------------------------
HUGE = "9" * 5000


@pytest.mark.parametrize("value, ranges", [
    ("bytes=0-1", [(0, 2)]), ("Bytes=0-1", [(0, 2)]), ("bytes=5-", [(5, 7)]), ("bytes=-3", [(9, 3)]),
    ("bytes=-30", [(0, 12)]), ("bytes=3-100", [(3, 9)]), (f"bytes=0-{HUGE}", [(0, 12)]),
    (f"bytes=-{HUGE}", [(0, 12)]), ("bytes=" + "0" * 5000 + "7-10", [(7, 4)]),
    ("bytes=0-1,5-6", [(0, 2), (5, 2)]), ("bytes=5-6,0-1", [(5, 2), (0, 2)]),    # in the order asked
    ("bytes= 0-1 , 5 - 6", [(0, 2), (5, 2)]), ("bytes=0-5,3-8", [(0, 6), (3, 6)]),
    ("bytes=0-1,20-30", [(0, 2)]),                                  # past the end: dropped
    # 416: nothing satisfiable, or malformed (nginx's answer to both).
    ("bytes=12-", []), (f"bytes={HUGE}-", []), ("bytes=-0", []), ("bytes=20-30,40-50", []),
    ("bytes=9-2", []), ("bytes=0-1,x", []), ("bytes=0-1,,5-6", []), ("bytes=0-1,", []), ("bytes=-", []),
    ("bytes=- 5", []), ("bytes=1-2-3", []), ("bytes=\t0-1", []), ("bytes=a-b", []), ("bytes=\u0661-2", []),
    # None, the whole file: not bytes, too much, too many.
    ("lines=0-1", None), ("bytes = 0-1", None), ("bytes=", None), ("bytes", None),
    ("bytes=0-8,3-8", None),                                        # 15 bytes of a 12-byte file
    ("bytes=" + ",".join(["0-0"] * 3), None),                       # 3 > max_ranges (2)
])
def test_ranges_are_read_as_nginx_reads_them(value, ranges):
    assert files.byte_ranges(value.encode(), SIZE, max_ranges=2) == ranges


def test_an_empty_file_has_no_ranges():
    for value in (b"bytes=0-1", b"bytes=-5", b"bytes=0-"):
        assert files.byte_ranges(value, 0, max_ranges=100) is None


def test_the_cap_counts_ranges_that_are_served():
    assert files.byte_ranges(b"bytes=0-0,1-1,50-60,70-80", SIZE, max_ranges=2) == [(0, 1), (1, 1)]


@given(st.binary(max_size=80) | st.lists(st.sampled_from(
    ["bytes=", "Bytes=", "-", ",", " ", "0", "1", "5", "11", "12", "99999999999999999999999", "\t"]),
    max_size=20).map(lambda parts: "".join(parts).encode()), st.integers(0, 40), st.integers(1, 5))
@settings(max_examples=1000)
def test_any_range_value_gives_ranges_within_the_file_or_a_decision(value, size, max_ranges):
    ranges = files.byte_ranges(value, size, max_ranges)
    if ranges is None or ranges == []:
        return
    assert 1 <= len(ranges) <= max_ranges
    assert sum(count for _, count in ranges) <= size
    for offset, count in ranges:
        assert 0 <= offset and count >= 1 and offset + count <= size


@given(st.integers(1, 1 << 40), st.data())
def test_one_well_formed_range_is_exactly_its_bytes(size, data):
    first = data.draw(st.integers(0, size - 1))
    last = data.draw(st.integers(first, size + 100))
    assert files.byte_ranges(b"bytes=%d-%d" % (first, last), size, 1) == [(first, min(last, size - 1) - first + 1)]


# ----------------------------------------------------------------------
# multipart/byteranges, framed as nginx frames it
# ----------------------------------------------------------------------
def test_a_multipart_body_is_framed_as_nginx_frames_it():
    content = b"hello, file\n"
    pieces, length = files.multipart([(0, 2), (5, 2)], len(content), b"text/plain", b"00000000000000000001")
    body = b"".join(piece if isinstance(piece, bytes) else content[piece[0]:piece[0] + piece[1]]
                    for piece in pieces)
    # nginx 1.22's answer to "Range: bytes=0-1,5-6" for this file, byte for byte:
    assert body == (b"\r\n--00000000000000000001\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-1/12\r\n\r\n"
                    b"he\r\n--00000000000000000001\r\nContent-Type: text/plain\r\nContent-Range: bytes 5-6/12\r\n\r\n"
                    b", \r\n--00000000000000000001--\r\n")
    assert length == len(body) == 198


@given(st.lists(st.tuples(st.integers(0, 99), st.integers(1, 100)), min_size=2, max_size=10))
def test_the_multipart_length_is_the_length_of_its_pieces(spans):
    ranges = [(offset, min(count, 100 - offset)) for offset, count in spans]
    pieces, length = files.multipart(ranges, 100, b"application/octet-stream", b"b" * 20)
    regions: List[Optional[Tuple[int, int]]] = [piece for piece in pieces if not isinstance(piece, bytes)]
    assert regions == ranges
    assert length == sum(len(piece) if isinstance(piece, bytes) else piece[1] for piece in pieces)
