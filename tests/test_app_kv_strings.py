"""kv's string commands (netmux/apps/kvstrings.py, kvfloat.py) against redis-server 7.0, byte for byte."""
from __future__ import annotations

from fractions import Fraction


import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from netmux.apps.kvfloat import format_long_double, parse_long_double, round_long_double
from netmux.apps.kvstore import Store
import kvdiff
from kvdiff import run, servers  # noqa: F401 (a fixture)


# ----------------------------------------------------------------------
# Side by side with redis-server: each script's replies must be equal
# ----------------------------------------------------------------------
SET_FAMILY = """
set k v
setnx k w
setnx n 1
setex e 100 v
ttl e
setex e 0 v
setex e -1 v
setex e x v
setex e 9223372036854775807 v
psetex p 100000 v
pttl p
psetex p 0 v
getset k new
getset missing v
getdel k
getdel k
get k
getex e
getex e persist
ttl e
getex e ex 50
ttl e
getex e px 0
getex e exat 1
get e
getex missing ex 0
getex p persist ex 10
getex p keepttl
getex p ex
getex p bogus
getex p ex 10 ex 20
ttl p
getex p ex 10 px 20
set k v get
set k v nx get
set k v xx keepttl get
mset a 1 b 2 c 3
mset a 1 b
msetnx a 1 d 4
msetnx d 4 e 5
msetnx d 4 e
mget a b d e nokey
strlen a
strlen nokey
"""

NUMBERS = """
set n 10
incr n
decr n
incrby n 5
decrby n 5
incrby n -9223372036854775808
decrby n -9223372036854775808
set n 9223372036854775807
incr n
set n -9223372036854775808
decr n
set n 1.5
incr n
incrbyfloat n 0.1
incrbyfloat n 1e400
incrbyfloat f 0.1
incrbyfloat f 0.2
incrbyfloat f -0.3
incrbyfloat f 1.5e300
incrbyfloat g 3
incrbyfloat g -3
incrbyfloat h 0x10
incrbyfloat h 0x1p-3
incrbyfloat h " 1"
incrbyfloat h "1 "
incrbyfloat h inf
incrbyfloat h -inf
incrbyfloat h nan
incrbyfloat h abc
incrbyfloat h ""
incrbyfloat h +5
incrbyfloat h .5
incrbyfloat h 5.
incrbyfloat h 1e-5000
incrbyfloat h 1e5000
incrbyfloat h 1E3
set e 1e5
incrbyfloat e 0
set e 10.50
incrbyfloat e 0
set e " 1"
incrbyfloat e 1
set e 12345678901234567890
incrbyfloat e 1
incrbyfloat e 0.000000000000000001
"""

RANGES = """
set s "Hello World"
getrange s 0 4
getrange s -5 -1
getrange s -1 -5
getrange s 5 1
getrange s 0 -100
getrange s -100 -50
getrange s 100 200
getrange s 0 9223372036854775807
getrange s -9223372036854775808 5
getrange s x 1
getrange nokey 0 10
substr s 1 3
setrange s 6 Redis
get s
setrange s 20 tail
get s
setrange s -1 x
setrange s x x
setrange nokey 5 ""
exists nokey
setrange nokey2 3 abc
get nokey2
setrange s 0 ""
setrange s 536870911 x
setrange s 536870912 x
append s more
append new fresh
get new
set v 100
append v 1
incr v
lcs s nokey
set a ohmytext
set b mynewtext
lcs a b
lcs a b len
lcs a b idx
lcs a b idx minmatchlen 4
lcs a b idx withmatchlen
lcs a b idx minmatchlen 4 withmatchlen
lcs a b len idx
lcs a b bogus
lcs a b minmatchlen
lcs a b minmatchlen x
lcs a a
lcs nokey nokey2
"""

BITS = """
setbit b 7 1
setbit b 7 0
setbit b 100 1
get b
getbit b 100
getbit b 101
getbit b 999999
getbit nokey 0
setbit b 7 2
setbit b -1 1
setbit b x 1
setbit b 4294967295 1
setbit b 4294967296 1
getbit b 4294967296
set s foobar
bitcount s
bitcount s 0 0
bitcount s 1 1
bitcount s 1 -2
bitcount s -2 -1
bitcount s -1 -2
bitcount s 5 30 bit
bitcount s 0 -1 bit
bitcount s 1 1 byte
bitcount s 1
bitcount s 1 2 nope
bitcount s x 1
bitcount nokey x y
bitcount nokey
set z "\\x00\\x00\\x00"
bitpos s 1
bitpos s 0
bitpos z 1
bitpos z 0
bitpos s 1 2
bitpos s 0 2 -1
bitpos s 1 -1
bitpos s 1 7 15 bit
bitpos s 0 7 15 bit
bitpos s 1 0 -1 bit
bitpos s 2
bitpos nokey 1
bitpos nokey 0
bitpos s 1 x
bitpos s 1 0 1 word
bitpos s 1 -20 -10
bitpos s 1 -10 -20
set ff "\\xff\\xff"
bitpos ff 0
bitpos ff 0 0
bitpos ff 0 0 -1
bitpos ff 1 3 5 bit
set e ""
bitpos e 0
bitpos e 1
bitcount e
set x1 abc
set x2 "ab\\xff\\x01"
bitop and d1 x1 x2
get d1
bitop or d1 x1 x2 nokey
get d1
bitop xor d1 x1 x2
get d1
bitop not d1 x2
get d1
bitop not d1 x1 x2
bitop nand d1 x1
bitop and d1 nokey nokey2
exists d1
bitfield bf set u8 0 255 get u8 0 get i8 0 get u4 4
bitfield bf incrby u8 #1 300 get u8 #1
bitfield bf overflow sat incrby u8 0 300 overflow fail incrby u8 0 300 overflow wrap incrby i8 0 200
bitfield bf set i64 0 -1 get i64 0 get u63 1
bitfield bf set u64 0 1
bitfield bf set i0 0 1
bitfield bf set i8 x 1
bitfield bf set i8 0 x
bitfield bf overflow bad
bitfield bf get
bitfield bf bogus
bitfield nokey get u8 0
exists nokey
bitfield bf get u8 #-1
bitfield_ro bf get u8 0 set u8 0 1
bitfield_ro bf get u8
bitfield_ro bf get u8 0 get i4 2
bitfield_ro bf foo
bitfield_ro bf overflow sat get u8 0
"""


@pytest.mark.clients
@pytest.mark.parametrize("script", [SET_FAMILY, NUMBERS, RANGES, BITS], ids=["set", "numbers", "ranges", "bits"])
def test_string_commands_answer_as_redis_server(servers, script):
    # PTTL is in milliseconds: the two servers' clocks are read a moment apart (TTL's second is safe)
    assert kvdiff.differences(servers, script, ignore=["pttl"]) == []


STRING_KEYS = st.sampled_from([b"a", b"b", b"c"])
STRING_VALUES = st.sampled_from([b"", b"0", b"1", b"-1", b"10.5", b"1e3", b"abc", b"\xff\x00", b"9223372036854775807",
                                 b"-5", b"0x10", b"inf", b"3.0e-2"])
INDEXES = st.sampled_from([b"0", b"1", b"-1", b"2", b"-3", b"7", b"100", b"x"])
STRING_COMMANDS = st.one_of(
    st.tuples(st.sampled_from([b"SET", b"APPEND", b"GETSET", b"SETNX", b"INCRBYFLOAT", b"INCRBY"]), STRING_KEYS,
              STRING_VALUES),
    st.tuples(st.sampled_from([b"GET", b"GETDEL", b"STRLEN", b"INCR", b"DECR", b"BITCOUNT"]), STRING_KEYS),
    st.tuples(st.sampled_from([b"GETRANGE", b"BITCOUNT"]), STRING_KEYS, INDEXES, INDEXES),
    st.tuples(st.just(b"BITPOS"), STRING_KEYS, st.sampled_from([b"0", b"1"]), INDEXES, INDEXES,
              st.sampled_from([b"BIT", b"BYTE"])),
    st.tuples(st.just(b"SETRANGE"), STRING_KEYS, INDEXES, STRING_VALUES),
    st.tuples(st.sampled_from([b"SETBIT", b"GETBIT"]), STRING_KEYS, INDEXES, st.sampled_from([b"0", b"1"])),
    st.tuples(st.just(b"BITOP"), st.sampled_from([b"AND", b"OR", b"XOR", b"NOT"]), STRING_KEYS, STRING_KEYS),
    st.tuples(st.just(b"LCS"), STRING_KEYS, STRING_KEYS, st.sampled_from([b"LEN", b"IDX", b"WITHMATCHLEN"])),
    st.tuples(st.just(b"MSETNX"), STRING_KEYS, STRING_VALUES, STRING_KEYS, STRING_VALUES),
).map(list)


@pytest.mark.clients
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(STRING_COMMANDS, min_size=1, max_size=10))
def test_generated_string_commands_answer_as_redis_server(servers, commands):
    kvdiff.same_replies(servers, commands)


# ----------------------------------------------------------------------
# Without a server: costs and the long double
# ----------------------------------------------------------------------
def test_setrange_and_setbit_stop_at_proto_max_bulk_len_without_allocating():
    store = Store()
    store.settings.proto_max_bulk_len = 1 << 20           # below what CONFIG SET allows: a test's shortcut
    assert run(store, "SETRANGE", "k", (1 << 20) - 1, "x") == b":1048576\r\n"
    assert run(store, "SETRANGE", "k", 1 << 20, "x").startswith(b"-ERR string exceeds maximum allowed size")
    assert run(store, "SETBIT", "b", (1 << 23) - 1, 1) == b":0\r\n"
    assert run(store, "SETBIT", "b", 1 << 23, 1) == b"-ERR bit offset is not an integer or out of range\r\n"
    assert run(store, "STRLEN", "b") == b":1048576\r\n"


def test_bitcount_and_bitpos_over_a_big_value_run_in_c():
    import time
    store = Store()
    store.databases[0].data[b"big"] = b"\x00" * (32 << 20) + b"\x01"
    started = time.perf_counter()
    assert run(store, "BITCOUNT", "big") == b":1\r\n"
    assert run(store, "BITPOS", "big", 1) == b":%d\r\n" % ((32 << 20) * 8 + 7)
    assert run(store, "BITCOUNT", "big", 1, -1, "BIT") == b":1\r\n"
    assert time.perf_counter() - started < 2.0          # a Python loop over 32 MiB would take many seconds


def test_lcs_past_its_table_limit_is_refused_at_once():
    store = Store()
    run(store, "SET", "a", b"x" * 10_000)
    run(store, "SET", "b", b"y" * 10_000)
    assert run(store, "LCS", "a", "b").startswith(b"-ERR Insufficient memory")
    run(store, "SET", "a", b"x")
    run(store, "SET", "b", b"y" * 40_000)
    assert run(store, "LCS", "a", "b").startswith(b"-ERR Insufficient memory")


def reference_lcs(first: bytes, second: bytes) -> bytes:
    """Redis's dynamic programme and walk, cell by cell (lcsCommand in t_string.c)."""
    table = [[0] * (len(second) + 1) for _ in range(len(first) + 1)]
    for i in range(1, len(first) + 1):
        for j in range(1, len(second) + 1):
            table[i][j] = (table[i - 1][j - 1] + 1 if first[i - 1] == second[j - 1]
                           else max(table[i - 1][j], table[i][j - 1]))
    i, j, text = len(first), len(second), bytearray()
    while i > 0 and j > 0:
        if first[i - 1] == second[j - 1]:
            text.append(first[i - 1])
            i, j = i - 1, j - 1
        elif table[i - 1][j] > table[i][j - 1]:
            i -= 1
        else:
            j -= 1
    return bytes(reversed(text))


@settings(max_examples=300, deadline=None)
@given(st.text("abc", max_size=40).map(str.encode), st.text("abc", max_size=40).map(str.encode))
def test_the_bit_parallel_lcs_walks_as_redis_table_does(first, second):
    store = Store()
    run(store, "SET", "a", first)
    run(store, "SET", "b", second)
    expected = reference_lcs(first, second)
    assert run(store, "LCS", "a", "b") == b"$%d\r\n%s\r\n" % (len(expected), expected)
    assert run(store, "LCS", "a", "b", "LEN") == b":%d\r\n" % len(expected)


@settings(max_examples=300)
@given(st.integers(min_value=-10 ** 30, max_value=10 ** 30), st.integers(min_value=0, max_value=40))
def test_a_long_double_prints_and_parses_back_to_itself(mantissa, digits):
    value = round_long_double(Fraction(mantissa, 10 ** digits))
    assert not isinstance(value, float)
    text = format_long_double(value)
    assert parse_long_double(text) is not None
    assert format_long_double(parse_long_double(text)) == text     # type: ignore[arg-type]


@settings(max_examples=300)
@given(st.binary(max_size=12))
def test_parse_long_double_never_raises(text):
    value = parse_long_double(text)
    assert value is None or isinstance(value, (Fraction, float))
