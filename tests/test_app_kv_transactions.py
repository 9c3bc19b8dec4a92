"""kv's transactions (netmux/apps/kvsession.py, kvdb.py's watches): MULTI/EXEC/DISCARD/WATCH/UNWATCH as redis-server 7.0."""
from __future__ import annotations

from typing import List, Tuple

import pytest
import redis
from hypothesis import HealthCheck, given, settings, strategies as st

from netmux.apps.kv import KVHandler
from netmux.apps.kvdb import Database
from netmux.apps.kvstore import Store
from netmux.testing import drive
import kvdiff
from kvdiff import RecordingKV, servers  # noqa: F401 (a fixture)
from conftest import WAYS, run_one_way, wait_until


ONE_CLIENT = """
multi
multi
watch a
set a 1
nosuch
get
exec
exec
discard
multi
set a 1
incr a
get a
set a x
incr a
exec
multi
exec
multi
unwatch
exec
multi
exec x
exec
multi
select 1
set k in1
exec
get k
select 0
get k
multi
set k 1
discard
discard
get k
multi
subscribe x
exec
multi
ping
exec
echo x
exec
"""


@pytest.mark.clients
def test_one_clients_transactions_answer_as_redis_server(servers):
    assert kvdiff.differences(servers, ONE_CLIENT) == []


def both_ways(servers: kvdiff.Servers, steps: List[Tuple[int, str]]) -> List[Tuple[str, object, object]]:
    """Run (client number, command) steps on two clients of each server; the differing replies."""
    first, second = servers.connect(), servers.connect()
    clients = [first, second]
    try:
        for redis_connection, kv_connection in clients:
            assert redis_connection.call(b"FLUSHALL") == kv_connection.call(b"FLUSHALL")
        found = []
        for number, line in steps:
            redis_connection, kv_connection = clients[number]
            command = kvdiff.words(line)
            expected, got = redis_connection.call(*command), kv_connection.call(*command)
            if expected != got:
                found.append((line, expected, got))
        return found
    finally:
        servers.disconnect()


# What invalidates a WATCH: (setup on client 1, the write on client 1) -> EXEC's reply is null.
WRITES = [
    ("set k 1", "set k 2"), ("set k 1", "set k 1"), ("", "set k 1"), ("set k 1", "del k"), ("", "del k"),
    ("set k 1", "expire k 100"), ("set k 1", "persist k"), ("set k 1 ex 100", "persist k"),
    ("set k 1", "append k x"), ("set k 1", "incr k"), ("set k 1", "setrange k 0 x"), ("set k 1", "setbit k 0 1"),
    ("set k 1", "flushdb"), ("", "flushdb"), ("set k 1", "flushall"), ("set k 1", "rename k j"),
    ("set j 1", "rename j k"), ("set k 1", "move k 1"), ("select 1", "swapdb 0 1"), ("set k 1", "swapdb 0 1"),
    ("set k 1", "getdel k"), ("set k 1", "getex k ex 100"), ("set k 1", "getex k"), ("set j 1", "copy j k"),
    ("set k 1", "expire k 100 gt"), ("set k 1", "set k 2 nx"), ("", "bitop not k j"), ("set k 1", "mset k 1"),
    ("set k 1", "incrbyfloat k 1"), ("set k 10", "bitfield k get u8 0"), ("set k 1", "unlink k nokey"),
]


@pytest.mark.clients
@pytest.mark.parametrize("setup, write", WRITES, ids=[write for _, write in WRITES])
def test_a_watch_fails_on_the_writes_redis_counts(servers, setup, write):
    steps = [(1, setup)] if setup else []
    steps += [(0, "watch k"), (1, write), (1, "select 0"), (0, "multi"), (0, "get k"), (0, "exec"),
              (0, "get k")]
    assert both_ways(servers, steps) == []


@pytest.mark.clients
def test_a_watch_and_expiry_as_redis_server(servers):
    steps = [(0, "set k 1 px 300"), (0, "watch k"), (0, "multi"), (0, "ping")]
    assert both_ways(servers, steps) == []
    # Expired between WATCH and EXEC: the transaction fails, on both.
    first, second = servers.connect(), servers.connect()
    try:
        for redis_connection, kv_connection in (first, second):
            for connection in (redis_connection, kv_connection):
                connection.call(b"FLUSHALL")
        replies = []
        for connection in first:
            connection.call(b"SET", b"k", b"1", b"PX", b"150")
            connection.call(b"WATCH", b"k")
        gone(second, b"k")                   # another client sees it expire: the outcome is compared
        for connection in first:
            connection.call(b"MULTI")
            connection.call(b"PING")
            replies.append(connection.call(b"EXEC"))
        assert replies == [None, None]
        # Already expired at WATCH: its deletion is no change, EXEC runs.
        replies = []
        for connection in first:
            connection.call(b"SET", b"gone", b"1", b"PX", b"1")
        gone(second, b"gone")
        for connection in first:
            connection.call(b"WATCH", b"gone")
            connection.call(b"MULTI")
            connection.call(b"PING")
            replies.append(connection.call(b"EXEC"))
        assert replies == [[b"+PONG\r\n"], [b"+PONG\r\n"]]
    finally:
        servers.disconnect()


def gone(connections: Tuple[kvdiff.RespConnection, kvdiff.RespConnection], key: bytes) -> None:
    """Poll both servers (another client's connections) until ``key`` has expired, 5 s at most."""
    wait_until(lambda: all(connection.call(b"EXISTS", key) == 0 for connection in connections), timeout=5)


@pytest.mark.clients
def test_watch_of_other_keys_and_after_unwatch_does_not_fail(servers):
    steps = [(0, "watch k"), (1, "set other 1"), (0, "multi"), (0, "set k 1"), (0, "exec"),
             (0, "watch k"), (0, "unwatch"), (1, "set k 3"), (0, "multi"), (0, "get k"), (0, "exec"),
             (0, "watch k"), (0, "multi"), (0, "discard"), (1, "set k 4"), (0, "multi"), (0, "exec"),
             (0, "select 1"), (0, "watch k"), (1, "set k 5"), (0, "multi"), (0, "exec"), (0, "select 0")]
    assert both_ways(servers, steps) == []


TRANSACTION_COMMANDS = st.sampled_from(["multi", "exec", "discard", "watch a", "watch b", "unwatch", "set a 1",
                                        "incr a", "get a", "get", "nosuch", "del b", "exec x", "select 1",
                                        "select 0", "ping"])


@pytest.mark.clients
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 1), TRANSACTION_COMMANDS), min_size=1, max_size=14))
def test_generated_transactions_of_two_clients_answer_as_redis_server(servers, steps):
    assert both_ways(servers, steps) == []


@pytest.mark.clients
def test_redis_py_pipelines_run_as_transactions(servers):
    for host, port in (servers.redis_address, servers.kv.address):
        client = redis.Redis(host=host, port=port, protocol=2)
        try:
            client.flushall()
            with client.pipeline() as pipe:
                pipe.set("a", 1).incr("a").get("a")
                assert pipe.execute() == [True, 2, b"2"]
            with client.pipeline() as pipe:
                pipe.watch("a")
                pipe.multi()
                pipe.incr("a")
                client.set("a", 10)                  # another write before EXEC
                with pytest.raises(redis.WatchError):
                    pipe.execute()
            assert client.transaction(lambda pipe: pipe.multi() or pipe.incr("a"), "a") == [11]
        finally:
            client.close()


# ----------------------------------------------------------------------
# Without a server: the handler, any chunking, and the cost of no watcher
# ----------------------------------------------------------------------
@pytest.mark.parametrize("way", WAYS)
def test_a_transaction_runs_whole_however_the_handler_runs(way):
    data = b"MULTI\r\nSET a 1\r\nINCR a\r\nEXEC\r\nQUIT\r\n"
    outcome = run_one_way(way, lambda: RecordingKV(Store(), 1 << 20), data)
    assert outcome.written == b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n:2\r\n+OK\r\n"


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 60), max_size=8))
def test_queued_replies_are_the_same_under_any_chunking(points):
    data = b"WATCH k\r\nMULTI\r\nSET k 1\r\nNOSUCH\r\nEXEC\r\nMULTI\r\nGET k\r\nEXEC\r\n"
    edges = [0] + sorted(min(point, len(data)) for point in points) + [len(data)]
    written = drive(lambda: KVHandler(Store(), 1 << 20), [data[a:b] for a, b in zip(edges, edges[1:])]).written
    assert written == (b"+OK\r\n+OK\r\n+QUEUED\r\n-ERR unknown command 'NOSUCH', with args beginning with: \r\n"
                       b"-EXECABORT Transaction discarded because of previous errors.\r\n+OK\r\n+QUEUED\r\n*1\r\n$-1\r\n")


def test_a_write_with_no_watcher_only_tests_an_empty_dict():
    """WATCH costs nothing per write while nobody watches: the write path asks
    ``db.watched`` (empty: falsy) and never calls ``touched``."""
    store = Store()
    calls = []
    store.db.touched = lambda key: calls.append(key)          # type: ignore[method-assign]
    for words in ([b"SET", b"k", b"v"], [b"INCR", b"n"], [b"APPEND", b"k", b"x"], [b"DEL", b"k"],
                  [b"EXPIRE", b"n", b"100"], [b"SETRANGE", b"s", b"2", b"x"], [b"FLUSHDB"]):
        store.execute(words)
    assert calls == [] and store.db.watched == {}
    store.execute([b"WATCH", b"n"])
    store.execute([b"INCR", b"n"])
    assert calls == [b"n"]


def test_the_watch_registry_is_emptied_by_exec_discard_unwatch_and_disconnect():
    store = Store()
    for ending in ([b"EXEC"], [b"DISCARD"]):
        store.execute([b"WATCH", b"a", b"b"])
        store.execute([b"MULTI"])
        store.execute(ending)
        assert all(not db.watched for db in store.databases)
    conversation = drive(lambda: KVHandler(store, 1 << 20), [b"WATCH a\r\nSELECT 3\r\nWATCH a\r\n"])
    assert conversation.written == b"+OK\r\n+OK\r\n+OK\r\n" and conversation.closed
    assert all(not db.watched for db in store.databases) and isinstance(store.databases[3], Database)
