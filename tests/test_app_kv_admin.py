"""kv's server and connection commands (netmux/apps/kvadmin.py, kvsession.py): what clients and harnesses ask first."""
from __future__ import annotations

import time


import pytest
import redis

from netmux.apps.kvstore import Store
import kvdiff
from kvdiff import run, servers  # noqa: F401 (a fixture)


SERVER = """
function flush
function flush async
function flush sync
function flush bad
function flush a b
function nosuch
function
config get maxmemory
config get maxmemory-policy
config get save
config get appendonly
config get databases
config get proto-max-bulk-len
config get client-output-buffer-limit
config get timeout
config get lazyfree-lazy-user-flush
config get nothing
config get
config
config bogus
config set foo bar
config set maxmemory
config set maxmemory x
config set maxmemory 10mb
config get maxmemory
config set maxmemory 0
config set maxmemory 1 maxmemory 2
config set maxmemory 1 foo 2
config set appendonly maybe
config set appendonly no
config set hz x
config set hz 0
config get hz
config set hz 10
config set databases 3
config set proto-max-bulk-len 100
config set proto-max-bulk-len 1mb
config get proto-max-bulk-len
config set proto-max-bulk-len 512mb
config set maxmemory-policy nope
config set maxmemory-policy allkeys-lru
config get maxmemory-policy
config set maxmemory-policy noeviction
config set client-output-buffer-limit "pubsub 1mb 0 0"
config get client-output-buffer-limit
config set client-output-buffer-limit "pubsub 33554432 8388608 60"
config set save "3600 1"
config get save
config set save ""
config resetstat
config resetstat x
config rewrite
debug sleep 0
debug sleep 0.01
debug set-active-expire 1
debug jmap
debug nosuch
debug
debug object nokey
debug reload
hello x
hello 4
hello 1
hello 2 nosuch
hello 2 auth
hello 2 setname
client getname
client setname ""
client getname
client setname "a b"
client setname ok
client getname
client nosuch
client
client kill 1.2.3.4:5
client kill id 99999
client kill id x
client kill id -1
client kill addr 1.2.3.4:5 skipme no
client kill bogus 1
client kill type nope
client kill user nobody
client kill user default
client kill maxage x
client kill
reset
client getname
ping
echo hi
"""


@pytest.mark.clients
def test_server_commands_answer_as_redis_server(servers):
    assert kvdiff.differences(servers, SERVER) == []


@pytest.mark.clients
def test_hello_and_client_id_agree_and_carry_redis_fields(servers):
    redis_connection, kv_connection = servers.connect()
    try:
        for connection in (redis_connection, kv_connection):
            fields = connection.call(b"HELLO", b"2", b"SETNAME", b"me")
            hello = dict(zip(fields[::2], fields[1::2]))
            assert hello[b"id"] == connection.call(b"CLIENT", b"ID")
            assert (hello[b"server"], hello[b"proto"], hello[b"mode"], hello[b"role"], hello[b"modules"]) == \
                (b"redis", 2, b"standalone", b"master", [])
            assert hello[b"version"].startswith(b"7.0.") and connection.call(b"CLIENT", b"GETNAME") == b"me"
    finally:
        servers.disconnect()


@pytest.mark.clients
def test_info_has_the_fields_clients_and_harnesses_read(servers):
    redis_connection, kv_connection = servers.connect()
    try:
        for connection in (redis_connection, kv_connection):
            connection.call(b"FLUSHALL")
            connection.call(b"SET", b"a", b"1", b"EX", b"100")
            connection.call(b"SET", b"b", b"1")
        infos = [parse_info(connection.call(b"INFO")) for connection in (redis_connection, kv_connection)]
        for name in ("redis_version", "redis_mode", "arch_bits", "cluster_enabled", "connected_clients",
                     "used_memory", "role", "tcp_port", "uptime_in_seconds", "process_id", "run_id", "db0",
                     "maxmemory", "loading", "rdb_changes_since_last_save", "total_connections_received",
                     "expired_keys", "pubsub_channels", "used_cpu_sys", "hz", "aof_enabled"):
            assert name in infos[1], name
            assert name in infos[0], name
        for name in ("redis_mode", "arch_bits", "cluster_enabled", "role", "db0", "maxmemory", "loading",
                     "aof_enabled", "pubsub_channels"):
            assert infos[0][name] == infos[1][name], name
        assert infos[1]["redis_version"].startswith("7.0.")
        sections = [[line for line in connection.call(b"INFO", b"everything").split(b"\r\n") if line.startswith(b"#")]
                    for connection in (redis_connection, kv_connection)]
        assert set(sections[1]) <= set(sections[0])
        assert redis_connection.call(b"INFO", b"nothing") == kv_connection.call(b"INFO", b"nothing") == b""
    finally:
        servers.disconnect()


def parse_info(text: bytes) -> dict:
    return dict(line.split(":", 1) for line in text.decode().split("\r\n") if line and not line.startswith("#"))


@pytest.mark.clients
def test_redis_py_starts_a_session_and_reads_info_time_and_config(servers):
    host, port = servers.kv.address
    client = redis.Redis(host=host, port=port, protocol=2)
    try:
        info = client.info()
        assert info["arch_bits"] in (32, 64) and info["cluster_enabled"] == 0 and info["redis_version"] >= "7.0"
        seconds, microseconds = client.time()
        assert abs(seconds + microseconds / 1e6 - time.time()) < 5
        assert client.config_get("maxmemory*") == {"maxmemory": "0", "maxmemory-policy": "noeviction"}
        assert client.config_set("maxmemory", "0") and client.function_flush() and client.select(15)
        assert client.client_id() > 0 and client.client_setname("test") and client.client_getname() == "test"
    finally:
        client.close()


def test_time_reads_the_stores_clock():
    store = Store(clock=lambda: 1700000000.25)
    assert run(store, "TIME") == b"*2\r\n$10\r\n1700000000\r\n$6\r\n250000\r\n"


def test_debug_set_active_expire_stops_the_sweep_not_lazy_expiry():
    now = [1000.0]
    store = Store(clock=lambda: now[0])
    run(store, "SET", "k", "v", "PX", 100)
    assert run(store, "DEBUG", "SET-ACTIVE-EXPIRE", 0) == b"+OK\r\n" and store.active_expire is False
    now[0] += 1
    assert len(store.data) == 1 and run(store, "GET", "k") == b"$-1\r\n" and not store.data


def test_config_set_client_output_buffer_limit_reaches_the_pubsub_limits():
    store = Store()
    assert store.settings.pubsub_limits == (32 * 1024 * 1024, 8 * 1024 * 1024, 60)
    assert run(store, "CONFIG", "SET", "client-output-buffer-limit", "pubsub 2mb 1mb 5") == b"+OK\r\n"
    assert store.settings.pubsub_limits == (2 * 1024 * 1024, 1024 * 1024, 5)
    assert run(store, "CONFIG", "SET", "client-output-buffer-limit", "pubsub 1 2").startswith(
        b"-ERR CONFIG SET failed (possibly related to argument 'client-output-buffer-limit')")


@pytest.mark.clients
def test_client_kill_closes_the_other_connection_and_oneself_after_the_reply(servers):
    killer, victim = servers.connect()[1], servers.connect()[1]
    try:
        victim_id = victim.call(b"CLIENT", b"ID")
        assert killer.call(b"CLIENT", b"KILL", b"ID", b"%d" % victim_id) == 1
        assert victim.sock.recv(100) == b""                     # closed by the server
        own = killer.call(b"CLIENT", b"ID")
        killer.send(b"CLIENT", b"KILL", b"ID", b"%d" % own, b"SKIPME", b"no")
        killer.send(b"PING")
        assert killer.read() == 1 and killer.sock.recv(100) == b""       # the PING never ran
    finally:
        servers.disconnect()
