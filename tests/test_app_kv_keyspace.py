"""kv's keyspace (netmux/apps/kvkeyspace.py, kvdb.py): databases, names, SCAN, expiry, against redis-server 7.0."""
from __future__ import annotations

from typing import List, Set

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from netmux.apps.kvstore import Store
import kvdiff
from kvdiff import run, servers  # noqa: F401 (a fixture)


NAMES = """
set "" empty
set a 1
keys **
keys *
keys ?*
keys a
rename nokey b
renamenx nokey b
rename a a
renamenx a a
set b 2
renamenx a b
rename a c
get c
get a
set t 1 ex 100
rename t t2
ttl t2
copy c c
copy c d
copy c d
copy c d replace
copy c d replace replace
copy c d db x
copy c d db 16
copy c d db 3 replace
copy c d bogus
copy nokey d
type c
type nokey
touch c d nokey
unlink c nokey
exists c d d
del d d
dbsize
object encoding b
object encoding nokey
set big 12345678901234567890
object encoding big
set long 0123456789012345678901234567890123456789012345
object encoding long
append b 4
object encoding b
object refcount b
set n 100
object refcount n
set n 10001
object refcount n
object freq n
object idletime nokey
object help
object nosuch n
object encoding
incrbyfloat f 3
object encoding f
copy f g
object encoding g
setrange r 0 12
object encoding r
copy r r2
object encoding r2
bitop or o n n
object encoding o
"""

DATABASES = """
set k db0
select 1
get k
set k db1
select 16
select -1
select x
select 0
get k
swapdb 0 1
get k
swapdb 0 16
swapdb x 0
swapdb 0 x
swapdb 0 0
move k 1
move k 0
move k 16
move k x
set m here
move m 2
exists m
select 2
get m
set m also
select 0
set m again
move m 2
select 2
get m
move nokey 0
copy m m db 0
select 0
get m
flushall bad
flushdb bad
flushdb async
flushall sync
dbsize
"""

EXPIRY = """
set a 1
expireat a x
expireat a 99999999999999999
pexpireat a 9223372036854775807
expiretime a
pexpiretime a
expire a 9223372036854775807
expire a -9223372036854776
expire a 100
expiretime nokey
pexpiretime nokey
persist a
expiretime a
expire a 100 nx
expire a 100 nx
expire a 200 xx gt
expire a 50 gt
expire a 50 lt
expire a 10 nx xx
expire a 10 gt lt
expire a 10 bogus
expireat a 1 nx
pexpireat a 1
exists a
set b 1
expireat b 1
exists b
set c 1
pexpire c -1
exists c
persist nokey
ttl nokey
pttl nokey
set d 1
ttl d
"""

SCANS = """
scan x
scan 0 count 0
scan 0 count -1
scan 0 count x
scan 0 match
scan 0 type nope
scan 0 bogus 1
scan 18446744073709551615
scan 18446744073709551616
scan -1
scan ""
scan 0 count 10 match * type string
randomkey
"""


@pytest.mark.clients
@pytest.mark.parametrize("script", [NAMES, DATABASES, EXPIRY, SCANS], ids=["names", "databases", "expiry", "scan"])
def test_keyspace_commands_answer_as_redis_server(servers, script):
    # KEYS * lists in the hash table's order (test_keys_double_star_... checks its set)
    assert kvdiff.differences(servers, script, ignore=["keys *"]) == []


KEYSPACE_KEYS = st.sampled_from([b"a", b"b", b"c"])
KEYSPACE_COMMANDS = st.one_of(
    st.tuples(st.sampled_from([b"SET", b"APPEND"]), KEYSPACE_KEYS, st.sampled_from([b"1", b"x"])),
    st.tuples(st.sampled_from([b"RENAME", b"RENAMENX"]), KEYSPACE_KEYS, KEYSPACE_KEYS),
    st.tuples(st.just(b"COPY"), KEYSPACE_KEYS, KEYSPACE_KEYS, st.sampled_from([b"REPLACE", b"DB"]),
              st.sampled_from([b"0", b"1", b"REPLACE"])),
    st.tuples(st.sampled_from([b"MOVE"]), KEYSPACE_KEYS, st.sampled_from([b"0", b"1", b"16"])),
    st.tuples(st.sampled_from([b"SELECT"]), st.sampled_from([b"0", b"1"])),
    st.tuples(st.sampled_from([b"SWAPDB"]), st.sampled_from([b"0", b"1"]), st.sampled_from([b"0", b"1"])),
    st.tuples(st.sampled_from([b"TYPE", b"EXISTS", b"DEL", b"TTL", b"PERSIST", b"EXPIRETIME", b"GET",
                               b"OBJECT"]), KEYSPACE_KEYS),
    st.tuples(st.sampled_from([b"EXPIRE", b"PEXPIREAT", b"EXPIREAT"]), KEYSPACE_KEYS,
              st.sampled_from([b"100", b"-1", b"0", b"4102444800", b"4102444800000"]),
              st.sampled_from([b"NX", b"XX", b"GT", b"LT"])),
    st.tuples(st.sampled_from([b"DBSIZE"])),
).map(list)


@pytest.mark.clients
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(KEYSPACE_COMMANDS, min_size=1, max_size=12))
def test_generated_keyspace_commands_answer_as_redis_server(servers, commands):
    kvdiff.same_replies(servers, [[b"OBJECT", b"ENCODING", command[1]] if command[0] == b"OBJECT" else command
                                  for command in commands])


@pytest.mark.clients
def test_a_full_scan_returns_the_same_keys_as_redis_server(servers):
    redis_connection, kv_connection = servers.connect()
    try:
        for connection in (redis_connection, kv_connection):
            connection.call(b"FLUSHALL")
            connection.pipeline([[b"SET", b"key:%d" % index, b"v"] for index in range(500)]
                                + [[b"SET", b"other:%d" % index, b"v"] for index in range(50)])
        assert full_scan(kv_connection, b"MATCH", b"key:*", b"COUNT", b"7") == \
            full_scan(redis_connection, b"MATCH", b"key:*", b"COUNT", b"7") == {b"key:%d" % i for i in range(500)}
        assert full_scan(kv_connection, b"TYPE", b"list") == full_scan(redis_connection, b"TYPE", b"list") == set()
    finally:
        servers.disconnect()


def full_scan(connection: kvdiff.RespConnection, *options: bytes) -> Set[bytes]:
    found: Set[bytes] = set()
    cursor = b"0"
    for _ in range(10_000):
        cursor, keys = connection.call(b"SCAN", cursor, *options)
        found.update(keys)
        if cursor == b"0":
            return found
    raise AssertionError("the scan did not end")


# ----------------------------------------------------------------------
# SCAN's guarantee under writes, without a server
# ----------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["set", "del"]), st.integers(0, 60)), max_size=80),
       st.integers(1, 20))
def test_scan_returns_every_key_present_for_the_whole_scan_whatever_is_written_meanwhile(writes, count):
    store = Store()
    for index in range(40):
        run(store, "SET", f"k{index}", "v")
    present = {f"k{index}".encode() for index in range(40)}
    seen: List[bytes] = []
    cursor = b"0"
    writes = list(writes)
    for _ in range(1000):
        reply = store.execute([b"SCAN", cursor, b"COUNT", b"%d" % count])
        cursor, keys = parse_scan(reply)
        seen += keys
        if writes:                                # a write between two calls of the scan
            action, index = writes.pop(0)
            key = f"k{index}".encode()
            run(store, "SET" if action == "set" else "DEL", key, *(["v"] if action == "set" else []))
            if action == "del":
                present.discard(key)
        if cursor == b"0":
            break
    for action, index in writes:
        if action == "del":
            present.discard(f"k{index}".encode())
    assert present <= set(seen)


def parse_scan(reply: bytes) -> tuple:
    lines = reply.split(b"\r\n")
    cursor = lines[2]
    keys = lines[5::2][:int(lines[3][1:])]
    return cursor, keys


def test_more_scans_than_kept_end_the_oldest_one_with_cursor_zero():
    store = Store()
    for index in range(100):
        run(store, "SET", index, "v")
    first = parse_scan(run(store, "SCAN", 0, "COUNT", 10))[0]
    for _ in range(16):
        run(store, "SCAN", 0, "COUNT", 10)
    assert run(store, "SCAN", first) == b"*2\r\n$1\r\n0\r\n*0\r\n"


def test_keys_double_star_does_not_match_the_empty_key():
    store = Store()
    run(store, "SET", "", "v")
    run(store, "SET", "a", "v")
    assert run(store, "KEYS", "**") == b"*1\r\n$1\r\na\r\n"
    assert sorted(run(store, "KEYS", "*").split(b"\r\n")) == sorted(b"*2\r\n$0\r\n\r\n$1\r\na\r\n".split(b"\r\n"))


def test_randomkey_skips_expired_keys_and_answers_null_when_empty():
    store = Store()
    assert run(store, "RANDOMKEY") == b"$-1\r\n"
    run(store, "SET", "gone", "v", "PX", 1)
    run(store, "SET", "here", "v")
    store.databases[0].expires[b"gone"] = 1            # long past
    assert all(run(store, "RANDOMKEY") == b"$4\r\nhere\r\n" for _ in range(20))
