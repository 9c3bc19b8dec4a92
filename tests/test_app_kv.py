"""The kv server over real sockets: pipelining, backpressure, redis-cli, redis-benchmark, redis-py, hostile input."""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Iterator, List, Optional

import pytest
import redis
from hypothesis import HealthCheck, given, settings, strategies as st

import netmux
from netmux.apps import kv
from netmux.apps.kv import KVHandler, KVServer
from netmux.apps.kvstore import Store
from netmux.apps.resp import bulk
from netmux.testing import Conversation, drive
from kvdiff import RespConnection, free_port
from conftest import (ROOT, WAYS, ServerProcess, ServingThread, recv_exactly, recv_until_eof, run_one_way,
                      run_until, wait_until)

RUNNER = "import sys; from netmux.apps.kv import main; sys.exit(main(sys.argv[1:]))"


# ======================================================================
# One connection, in-process server
# ======================================================================
def drive_handler(chunks: List[bytes]) -> Conversation:
    return drive(lambda: KVHandler(Store(), max_request=1 << 20), chunks)


PIPELINE = (b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\na\r\nb\x00\r\n" + b"INCR n\r\nINCR n\n"
            + b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n" + b"*3\r\n$4\r\nMGET\r\n$1\r\nk\r\n$1\r\nn\r\n"
            + b"FOO\r\n*1\r\n$4\r\nQUIT\r\nPING\r\n")
PIPELINE_REPLIES = (b"+OK\r\n:1\r\n:2\r\n$5\r\na\r\nb\x00\r\n*2\r\n$5\r\na\r\nb\x00\r\n$1\r\n2\r\n"
                    b"-ERR unknown command 'FOO', with args beginning with: \r\n+OK\r\n")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(PIPELINE)), max_size=25))
def test_pipelined_replies_are_the_same_under_any_chunking(points):
    edges = [0] + sorted(points) + [len(PIPELINE)]
    conversation = drive_handler([PIPELINE[start:end] for start, end in zip(edges, edges[1:])])
    assert conversation.written == PIPELINE_REPLIES and conversation.closed and not conversation.aborted


@pytest.fixture
def kv_server() -> Iterator[ServingThread]:
    store = Store()
    server = KVServer(netmux.TCPServer(("127.0.0.1", 0), lambda: KVHandler(store, 1000)), store)
    serving = ServingThread(server)
    yield serving
    serving.stop()


def exchange(serving: ServingThread, data: bytes) -> bytes:
    """Send ``data``, half-close, read until the server closes."""
    with serving.connect() as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        return recv_until_eof(sock)


def test_pipelined_replies_come_in_order_in_one_batch(kv_server):
    requests = b"".join(b"*3\r\n$3\r\nSET\r\n$2\r\nk%d\r\n$1\r\n%d\r\n" % (i % 10, i % 10) for i in range(500))
    requests += b"".join(b"GET k%d\r\n" % (i % 10) for i in range(500))
    assert exchange(kv_server, requests) == b"+OK\r\n" * 500 + b"".join(
        b"$1\r\n%d\r\n" % (i % 10) for i in range(500))


def test_quit_answers_ok_after_earlier_replies_and_closes(kv_server):
    assert exchange(kv_server, b"PING\r\nQUIT\r\nPING\r\n") == b"+PONG\r\n+OK\r\n"


def test_client_setname_getname_setinfo(kv_server):
    reply = exchange(kv_server, b"CLIENT GETNAME\r\nCLIENT SETNAME me\r\nCLIENT GETNAME\r\n"
                                b"CLIENT SETNAME a\x01b\r\nCLIENT SETINFO LIB-NAME x\r\nCLIENT NOPE\r\n")
    assert reply.split(b"\r\n")[:5] == [b"$-1", b"+OK", b"$2", b"me", b"-ERR Client names cannot contain "
                                        b"spaces, newlines or special characters."]
    assert b"+OK\r\n-ERR unknown subcommand 'NOPE'" in reply


def test_protocol_error_replies_after_the_good_commands_and_closes_only_that_connection(kv_server):
    with kv_server.connect() as bystander:
        reply = exchange(kv_server, b"PING\r\n*1\r\n$-5\r\nPING\r\n")
        assert reply == b"+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"
        bystander.sendall(b"PING\r\n")
        assert bystander.recv(100) == b"+PONG\r\n"


def test_a_bulk_over_max_request_is_a_protocol_error(kv_server):
    assert exchange(kv_server, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1001\r\n") == \
        b"-ERR Protocol error: invalid bulk length\r\n"


def test_a_peer_that_does_not_read_is_paused_and_every_reply_arrives_once_it_reads(kv_server):
    value = b"x" * 1000
    exchange(kv_server, b"*3\r\n$3\r\nSET\r\n$1\r\nv\r\n$1000\r\n" + value + b"\r\n")
    count = 5000                                   # 5 MB of replies to 35 KB of requests
    with kv_server.connect() as sock:
        sock.sendall(b"GET v\r\n" * count)

        def paused_handler() -> Any:
            handlers = [transport.get_protocol() for transport in kv_server.server._connections]
            return [handler for handler in handlers if handler._paused]

        handler = wait_until(lambda: kv_server.call(paused_handler), timeout=10)[0]
        buffered = kv_server.call(handler.transport.get_write_buffer_size)
        assert buffered < 2 * kv._BATCH + 2000        # high water + one batch, not 5 MB
        sock.shutdown(socket.SHUT_WR)
        received = recv_until_eof(sock)
    assert received == (b"$1000\r\n" + value + b"\r\n") * count


# ======================================================================
# Fairness (issue 16): a turn's share of commands, then the others' turn
# ======================================================================
def kv_handler(store: Optional[Store] = None) -> KVHandler:
    return KVHandler(Store() if store is None else store, 1 << 20)


class RecordingKV(KVHandler):
    """KVHandler that notes its connection_lost, as run_one_way() waits for."""

    lost, lost_exc = False, None

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        super().connection_lost(exc)
        self.lost, self.lost_exc = True, exc


@pytest.mark.parametrize("way", WAYS)
def test_a_pipelined_read_is_answered_whole_and_in_order_however_it_runs(way):
    count = 3000                                   # 24 KB: two parse slices, 24 turns
    outcome = run_one_way(way, lambda: RecordingKV(Store(), 1 << 20), b"INCR n\r\n" * count + b"QUIT\r\nINCR n\r\n")
    assert outcome.written == b"".join(b":%d\r\n" % i for i in range(1, count + 1)) + b"+OK\r\n"
    assert outcome.lost and outcome.lost_exc is None


@pytest.mark.parametrize("layered", [False, True])
def test_each_turn_runs_at_most_commands_per_turn_then_yields(layered):
    count, share = 1000, KVHandler.commands_per_turn
    factory = (lambda: netmux.CountingLayer(kv_handler())) if layered else kv_handler
    conversation = drive(factory, [b"PING\r\n" * count])
    assert conversation.written == b"+PONG\r\n" * count
    assert max(len(write) for write in conversation.writes) <= share * len(b"+PONG\r\n")
    yields = [event for event in conversation.events if event[1] == "yield_turn"]
    assert len(yields) == count // share           # 1000 = 7 shares of 128 + 104: 7 yields


@pytest.mark.parametrize("layered", [False, True])
def test_one_pipelining_client_cannot_hold_another_clients_command(layered):
    """Both clients' bytes are in the kernel before the server's first turn: the
    polite GET must run within a few shares of the hog's INCRs, not after all
    6,000 (before the budget it ran after every command of the hog's read)."""
    store = Store()
    reactor = netmux.Reactor()
    factory = (lambda: netmux.CountingLayer(kv_handler(store))) if layered else (lambda: kv_handler(store))
    server = netmux.TCPServer(("127.0.0.1", 0), factory, reactor=reactor)
    hog = socket.create_connection(server.server_address[:2])
    polite = socket.create_connection(server.server_address[:2])
    try:
        hog.sendall(b"INCR hog\r\n" * 6000)        # 60 KB: one read
        polite.sendall(b"GET hog\r\n")
        run_until(reactor, lambda: store.data.get(b"hog") == b"6000", timeout=20)
        polite.settimeout(10)
        reply = polite.recv(100)
    finally:
        hog.close()
        polite.close()
        server.server_close()
        reactor.close()
    seen = 0 if reply == b"$-1\r\n" else int(reply.split(b"\r\n")[1])
    assert seen <= 4 * KVHandler.commands_per_turn, f"the polite GET waited for {seen} INCRs"


class SlowPeer:
    """A transport whose peer reads only when the test says so (``drain``), with
    TCPTransport's flow control: ``pause_writing`` above the high mark,
    ``resume_writing`` at or below the low one, also while closing (close
    flushes first), and a ConnectionError for a write after close."""

    high, low = 64 * 1024, 16 * 1024

    def __init__(self, handler: KVHandler) -> None:
        self.handler = handler
        self.buffer, self.sent = bytearray(), bytearray()
        self.closing = self.paused = False
        self.reading = True
        self.continuations: List[Any] = []
        handler.connection_made(self)

    def write(self, data: bytes) -> None:
        if self.closing:
            raise ConnectionError("write() on a closing transport")
        self.buffer += data
        if len(self.buffer) > self.high and not self.paused:
            self.paused = True
            self.handler.pause_writing()

    def drain(self, count: int) -> None:
        self.sent += self.buffer[:count]
        del self.buffer[:count]
        if self.paused and len(self.buffer) <= self.low:
            self.paused = False
            self.handler.resume_writing()

    def turn(self) -> None:
        """One turn of the loop: the continuations queued before it, then the peer reads 4 KiB."""
        continuations, self.continuations = self.continuations, []
        for callback, args in continuations:
            if not self.closing:
                callback(*args)
        self.drain(4096)

    def yield_turn(self, callback: Any, *args: Any) -> None:
        if not self.closing:
            self.continuations.append((callback, args))

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


@pytest.mark.parametrize("size", [10_000, 20_000, 100_000])
def test_quit_after_a_paused_backlog_runs_nothing_twice_and_ok_comes_last(size):
    """Issue 18: QUIT left the backlog in place, and the resume_writing() that the
    closing flush brings (when QUIT's own write crossed the high mark) ran it again:
    INCRs twice, then a write on the closed transport. Before the fix, counts 13
    (10 KB values) and 7, 11, 15 (20 KB) failed here, every time."""
    for count in range(1, 16):
        store = Store()
        store.data[b"big"] = b"x" * size
        peer = SlowPeer(kv_handler(store))
        peer.handler.data_received(b"GET big\r\nINCR n\r\n" * count + b"QUIT\r\nINCR n\r\n")
        for _ in range(100_000):
            if peer.closing and not peer.buffer:
                break
            peer.turn()
        assert store.data[b"n"] == b"%d" % count
        assert bytes(peer.sent) == b"".join(bulk(b"x" * size) + b":%d\r\n" % i
                                            for i in range(1, count + 1)) + b"+OK\r\n"
        assert not peer.continuations


@pytest.mark.parametrize("count", [7, 11, 15])
def test_quit_behind_a_slow_reader_over_a_socket_delivers_every_reply_once(count):
    """The same over loopback: the client reads 4 KiB a turn through a small receive
    buffer; every reply arrives once, +OK last, and the counter is n."""
    store = Store()
    store.data[b"big"] = b"x" * 20_000
    reactor = netmux.Reactor()
    server = netmux.TCPServer(("127.0.0.1", 0), lambda: kv_handler(store), reactor=reactor)
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(server.server_address[:2])
    client.setblocking(False)
    received = bytearray()
    try:
        client.sendall(b"GET big\r\nINCR n\r\n" * count + b"QUIT\r\nINCR n\r\n")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            reactor.run_once(0.001)
            try:
                piece = client.recv(4096)
            except BlockingIOError:
                continue
            if not piece:
                break
            received += piece
    finally:
        client.close()
        server.server_close()
        reactor.close()
    assert bytes(received) == b"".join(bulk(b"x" * 20_000) + b":%d\r\n" % i
                                       for i in range(1, count + 1)) + b"+OK\r\n"
    assert store.data[b"n"] == b"%d" % count


# ======================================================================
# The real clients against a kv subprocess
# ======================================================================
@pytest.fixture
def kv_process(tmp_path) -> Iterator[Any]:
    started: List[ServerProcess] = []

    def start(*args: str) -> ServerProcess:
        started.append(ServerProcess(["--port", "0", *args], code=RUNNER))
        return started[-1]

    yield start
    for process in started:
        process.stop(signal.SIGKILL)


def cli(server: ServerProcess, *words: str) -> str:
    result = subprocess.run(["redis-cli", "-h", server.address[0], "-p", str(server.address[1]), *words],
                            capture_output=True, timeout=30, check=True)
    return result.stdout.decode()


@pytest.mark.clients
def test_redis_cli_set_get_incr_expire_ttl_mget_and_unknown_command(kv_process):
    server = kv_process()
    assert cli(server, "SET", "greeting", "hello world") == "OK\n"
    assert cli(server, "GET", "greeting") == "hello world\n"
    assert cli(server, "INCR", "counter") == "1\n"
    assert cli(server, "INCRBY", "counter", "41") == "42\n"
    assert cli(server, "EXPIRE", "greeting", "100") == "1\n"
    assert cli(server, "TTL", "greeting") == "100\n"
    assert cli(server, "MGET", "greeting", "nothing", "counter") == "hello world\n\n42\n"
    assert cli(server, "FOO", "bar") == "ERR unknown command 'FOO', with args beginning with: 'bar' \n\n"
    assert cli(server, "PING") == "PONG\n"


@pytest.mark.clients
@pytest.mark.parametrize("pipeline", ["1", "16"])
def test_redis_benchmark_runs_without_errors(kv_process, pipeline):
    server = kv_process()
    result = subprocess.run(["redis-benchmark", "-h", server.address[0], "-p", str(server.address[1]),
                             "-t", "ping,set,get", "-n", "20000", "-P", pipeline, "-q", "--csv"],
                            capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.decode().splitlines() if line and not line.startswith('"test"')]
    assert {row.split(",")[0].strip('"') for row in rows} >= {"PING_INLINE", "PING_MBULK", "SET", "GET"}
    assert b"rror" not in result.stderr + result.stdout
    assert len(cli(server, "GET", "key:__rand_int__")) == 4   # the 3-byte value SET wrote, and "\n"
    assert server.process.poll() is None


def test_redis_py_typed_paths_read_back_what_was_set(kv_process):
    server = kv_process()
    client = redis.Redis(host=server.address[0], port=server.address[1], socket_timeout=10, protocol=2)
    try:
        assert client.ping() is True
        values = {f"key{i}": os.urandom(i * 37) for i in range(50)}
        assert client.mset(values) is True
        assert client.mget(list(values)) == list(values.values())
        assert client.set("n", 10) and client.incr("n") == 11 and client.decrby("n", 20) == -9
        assert client.set("once", "a", nx=True) and client.set("once", "b", nx=True) is None
        assert client.set("t", "v", px=60000) and 59000 <= client.pttl("t") <= 60000
        assert client.append("t", "w") == 2 and client.strlen("t") == 2 and client.get("t") == b"vw"
        assert client.exists("t", "n", "none") == 2 and client.delete("t", "none") == 1
        assert set(client.keys("key1*")) == {f"key1{d}".encode() for d in [""] + list("0123456789")} & \
            {k.encode() for k in values}
        assert client.dbsize() == 52                # 50 keys, "n", "once"
        with pytest.raises(redis.ResponseError, match="not an integer"):
            client.incr("key5")
        pipe = client.pipeline(transaction=False)
        for i in range(100):
            pipe.set(f"p{i}", i).get(f"p{i}")
        assert pipe.execute() == [item for i in range(100) for item in (True, str(i).encode())]
        assert client.flushdb() is True and client.dbsize() == 0
    finally:
        client.close()


# ----------------------------------------------------------------------
# Fairness over real sockets (issue 16): one client's heavy work, another's PING
# ----------------------------------------------------------------------
def resp_command(*words: Any) -> bytes:
    args = [word if isinstance(word, bytes) else str(word).encode() for word in words]
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in args)


def ping_while(address: tuple, busy: Any, timeout: float = 60.0) -> List[float]:
    """PING every 2 ms on a connection of its own while ``busy()`` runs in a thread;
    the round-trip times, in seconds (``busy``'s exception is raised here)."""
    failures: List[BaseException] = []

    def run() -> None:
        try:
            busy()
        except BaseException as exc:            # re-raised in the test's thread
            failures.append(exc)

    thread = threading.Thread(target=run)
    latencies: List[float] = []
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        thread.start()
        deadline = time.monotonic() + timeout
        while thread.is_alive() and time.monotonic() < deadline:
            started = time.perf_counter()
            sock.sendall(b"PING\r\n")
            assert recv_exactly(sock, 7) == b"+PONG\r\n"
            latencies.append(time.perf_counter() - started)
            time.sleep(0.002)
    thread.join(timeout)
    if failures:
        raise failures[0]
    return latencies


def test_a_pipelining_client_leaves_another_clients_ping_fast(kv_process):
    server = kv_process()
    rounds, count = 10, 10_000

    def pipeline() -> None:
        with socket.create_connection(server.address, timeout=60) as sock:
            for _ in range(rounds):
                sock.sendall(b"*1\r\n$4\r\nPING\r\n" * count)
                assert recv_exactly(sock, 7 * count, timeout=60) == b"+PONG\r\n" * count

    latencies = ping_while(server.address, pipeline)
    # Before: the whole read (256 KiB, 18,000 commands) in one turn, p50 20 ms, p99 66 ms.
    assert latencies and max(latencies) < 0.2, max(latencies)


def test_keys_and_config_get_with_1_mib_patterns_do_not_stall_the_server(kv_process):
    server = kv_process()
    pattern = b"a*" * (1 << 19)                                     # 1 MiB

    def hostile() -> None:
        with socket.create_connection(server.address, timeout=60) as sock:
            sock.sendall(resp_command("SET", "k", "v"))
            assert recv_exactly(sock, 5) == b"+OK\r\n"
            for words in (("KEYS", pattern), ("CONFIG", "GET", pattern, pattern, pattern, pattern)) * 3:
                sock.sendall(resp_command(*words))
                assert recv_exactly(sock, 4) == b"*0\r\n"

    started = time.perf_counter()
    latencies = ping_while(server.address, hostile)
    # Before: 4.25 s for one KEYS, 17.7 s for one CONFIG GET, the server stalled throughout.
    assert time.perf_counter() - started < 10 and max(latencies) < 0.5, max(latencies)


def test_one_byte_appends_to_a_64_mib_value_do_not_stall_the_server(kv_process):
    server = kv_process()

    def appender() -> None:
        with socket.create_connection(server.address, timeout=60) as sock:
            for index in range(64):
                sock.sendall(resp_command("APPEND", "big", b"x" * (1 << 20)))
                expected = b":%d\r\n" % ((index + 1) << 20)
                assert recv_exactly(sock, len(expected)) == expected
            sock.sendall(resp_command("APPEND", "big", "y") * 300)
            expected = b"".join(b":%d\r\n" % ((64 << 20) + index) for index in range(1, 301))
            assert recv_exactly(sock, len(expected), timeout=60) == expected

    latencies = ping_while(server.address, appender)
    # Before: each APPEND copied the value: 12.8 s for the 300, the PING waited throughout.
    assert max(latencies) < 0.5, max(latencies)


def test_deadlines_deleted_before_they_come_do_not_freeze_the_server_at_their_time(kv_process):
    server = kv_process()
    count, batch = 300_000, 10_000
    with socket.create_connection(server.address, timeout=60) as sock:
        def send_batches(make: Any, reply_size: int) -> None:
            for first in range(0, count, batch):
                sock.sendall(b"".join(make(index) for index in range(first, first + batch)))
                recv_exactly(sock, reply_size * batch, timeout=60)

        started = time.time()
        sock.sendall(b"".join(resp_command("SET", b"p%d" % i, "v") for i in range(batch)))
        recv_exactly(sock, 5 * batch, timeout=60)
        pace = time.time() - started                 # one batch; SETs then DELs: 2 * count / batch
        at = int((time.time() + 5 * pace * count / batch + 2.0) * 1000)
        send_batches(lambda index: resp_command("SET", b"k%d" % index, "v", "PXAT", at), 5)
        send_batches(lambda index: resp_command("DEL", b"k%d" % index), 4)
        remaining = at / 1000 - time.time()
    assert remaining > 0.2, "the DELs took longer than planned: the deadline is already past"
    # Every entry is stale now; PING across the deadline (the old sweep popped them all in one call).
    latencies = ping_while(server.address, lambda: time.sleep(remaining + 1.0), timeout=120)
    assert max(latencies) < 0.25, max(latencies)


def test_active_expiry_frees_keys_nobody_reads(kv_process):
    server = kv_process()
    client = redis.Redis(host=server.address[0], port=server.address[1], socket_timeout=10, protocol=2)
    try:
        pipe = client.pipeline(transaction=False)
        for i in range(3000):
            pipe.set(f"e{i}", "v", px=50)
        pipe.set("stays", "v")
        pipe.execute()
        wait_until(lambda: client.dbsize() == 1, timeout=10)   # DBSIZE touches no key: the sweep did it
        assert client.get("stays") == b"v"
    finally:
        client.close()


@pytest.mark.clients       # redis-cli writes and reads the keys
def test_dump_survives_a_sigterm_restart(kv_process, tmp_path):
    path = str(tmp_path / "store.dump")
    first = kv_process("--dump", path)
    assert cli(first, "SET", "k", "v1") == "OK\n"
    assert cli(first, "SET", "ttl", "v2", "EX", "1000") == "OK\n"
    assert cli(first, "SAVE") == "OK\n"
    assert cli(first, "SET", "after-save", "v3") == "OK\n"
    assert first.stop(signal.SIGTERM) == 0
    assert "saved 3 keys" in first.log
    second = kv_process("--dump", path)
    assert cli(second, "MGET", "k", "ttl", "after-save") == "v1\nv2\nv3\n"
    assert 990 <= int(cli(second, "TTL", "ttl")) <= 1000
    assert sorted(os.listdir(tmp_path)) == ["store.dump"]


def test_a_corrupt_dump_stops_the_start_instead_of_being_overwritten(tmp_path):
    path = tmp_path / "store.dump"
    path.write_bytes(b"not a dump at all")
    result = subprocess.run([sys.executable, "-c", RUNNER, "--port", "0", "--dump", str(path)],
                            cwd=ROOT, capture_output=True, timeout=30)
    assert result.returncode != 0 and b"not a netmux kv dump" in result.stderr
    assert path.read_bytes() == b"not a dump at all"


# ======================================================================
# Hostile input: costs one connection, the server answers on, memory stays bounded
# ======================================================================
HOSTILE = [
    b"*1\r\n$-1\r\n", b"*1\r\n$-99999999999\r\n", b"*1\r\n$99999999999999999999999\r\n",
    b"*99999999999\r\n", b"*-5\r\n", b"*1\r\n$1048577\r\n", b"*2\r\n$3\r\nGET\r\n$1\x00\r\n",
    b"\x00\x00\x00\x00*\x00\r\n", b"*1\r\n$3\r\nGETXX", b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nab",
    b"GET " + b"k" * (200 * 1024) + b"\r\n", b"*1" + b"9" * 5000, b"$5\r\nhello\r\n",
    b"*2\r\n:1\r\n:2\r\n", b"*1\r\n$4\r\nPING\r\n" * 3 + b"*1\r\n$4\r\nPIN",
]


def send_and_drain(address: tuple, payload: bytes) -> bytes:
    with socket.create_connection(address, timeout=10) as sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass                               # the server may close before we finish sending
        try:
            return recv_until_eof(sock)
        except ConnectionResetError:
            return b""


def assert_still_answers(address: tuple) -> None:
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        assert sock.recv(100) == b"+PONG\r\n"


def test_hand_picked_hostile_requests_cost_one_connection_and_memory_stays_bounded(kv_process):
    server = kv_process()
    for payload in HOSTILE:                     # warm up
        send_and_drain(server.address, payload)
    baseline = server.rss_bytes()
    with socket.create_connection(server.address, timeout=10) as bystander:
        for _ in range(20):
            for payload in HOSTILE:
                reply = send_and_drain(server.address, payload)
                assert reply == b"" or reply.startswith((b"-ERR Protocol error", b"+PONG", b"-ERR unknown command",
                                                         b"-ERR wrong number")), reply[:80]
        bystander.sendall(b"PING\r\n")
        assert bystander.recv(100) == b"+PONG\r\n"
    assert_still_answers(server.address)
    assert server.rss_bytes() - baseline < 20 * 1024 * 1024


def test_a_huge_inline_line_is_refused_at_64_kib_without_buffering_the_rest(kv_process):
    server = kv_process()
    reply = send_and_drain(server.address, b"SET k " + b"v" * (200 * 1024) + b"\r\n")
    assert reply in (b"", b"-ERR Protocol error: too big inline request\r\n")
    assert_still_answers(server.address)


@pytest.fixture(scope="module")
def shared_kv() -> Iterator[ServerProcess]:
    process = ServerProcess(["--port", "0"], code=RUNNER)
    yield process
    process.stop(signal.SIGKILL)


resp_fragment = st.sampled_from([b"*", b"$", b"\r\n", b"-1", b"0", b"3", b"99999999999", b"GET", b"\x00", b" ",
                                 b"*1\r\n", b"$4\r\nPING\r\n", b"\n", b":"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.binary(max_size=200), st.lists(resp_fragment, max_size=30).map(b"".join)))
def test_generated_garbage_costs_only_its_connection(shared_kv, garbage):
    send_and_drain(shared_kv.address, garbage)
    assert_still_answers(shared_kv.address)
    assert shared_kv.process.poll() is None


def test_a_dump_in_a_missing_directory_stops_the_start(tmp_path):
    result = subprocess.run([sys.executable, "-c", RUNNER, "--port", "0", "--dump", str(tmp_path / "no" / "d")],
                            cwd=ROOT, capture_output=True, timeout=30)
    assert result.returncode != 0 and b"the dump's directory does not exist" in result.stderr


def test_module_interface_for_the_command_line():
    import argparse
    parser = argparse.ArgumentParser()
    kv.add_arguments(parser)
    args = parser.parse_args(["--max-request", "10", "--dump", "/tmp/x"])
    assert (args.max_request, args.dump) == (10, "/tmp/x")
    with pytest.raises(SystemExit):
        parser.parse_args(["--max-request", "-1"])
    assert kv.DEFAULT_PORT == 6379 and kv.DESCRIPTION
    reactor = netmux.Reactor()
    try:
        args.host, args.port, args.dump = "127.0.0.1", 0, None
        server = kv.make_server(args, reactor)
        assert server.reactor is reactor and server.server_address[1] != 0
        server.server_close()
    finally:
        reactor.close()


# ======================================================================
# Found by attacking kv (the hostile-user pass)
# ======================================================================
@pytest.mark.clients
def test_kv_serves_redis_cli_on_a_unix_socket_and_saves_its_dump_at_sigterm(tmp_path):
    path, dump = str(tmp_path / "kv.sock"), str(tmp_path / "kv.dump")
    server = ServerProcess(["kv", "--unix", path, "--dump", dump], address_pattern=None)
    try:
        server.wait_for_log("server on")
        assert f"kv server on {path} " in server.read_log(), server.log

        def unix_cli(*words: str) -> str:
            return subprocess.run(["redis-cli", "-s", path, *words], capture_output=True,
                                  timeout=30, check=True).stdout.decode()

        assert unix_cli("SET", "k", "over unix") == "OK\n"
        assert unix_cli("GET", "k") == "over unix\n"
        assert "tcp_port:0" in unix_cli("INFO")
        assert server.stop(signal.SIGTERM) == 0
        assert "saved 1 keys" in server.log and not os.path.exists(path)
    finally:
        server.stop(signal.SIGKILL)
    restored = Store(dump_path=dump)
    assert restored.load() == 1 and restored.data == {b"k": b"over unix"}


# ----------------------------------------------------------------------
# Differential: the same commands to kv and to a real redis-server
# ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def kv_and_redis() -> Iterator[Any]:
    port = free_port()
    redis_server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                     "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    store = Store()
    serving = ServingThread(KVServer(netmux.TCPServer(("127.0.0.1", 0), lambda: KVHandler(store, 1 << 20)),
                                     store))
    connections: List[RespConnection] = []
    try:
        def connect_redis() -> Any:
            try:
                connections.append(RespConnection(("127.0.0.1", port)))
                return True
            except OSError:
                return False

        wait_until(connect_redis, timeout=10)
        connections.append(RespConnection(serving.address))
        assert connections[-1].call(b"PING") == b"+PONG\r\n"     # accepted: its socket counts from now
        yield connections
    finally:
        for connection in connections:
            connection.close()
        serving.stop()
        redis_server.terminate()
        redis_server.wait(10)


KEYS_ = st.sampled_from([b"a", b"b", b"n"])
VALUES = st.sampled_from([b"", b"0", b"1", b"-1", b"-0", b"+1", b" 1", b"01", b"abc", b"1000", b"1.5",
                          b"9223372036854775807", b"-9223372036854775808", b"9223372036854775808",
                          b"9223372036854775", b"-9223372036854776", b"[^]", b"*"])
WORDS = st.sampled_from([b"NX", b"XX", b"GT", b"LT", b"EX", b"PX", b"EXAT", b"PXAT", b"KEEPTTL", b"GET",
                         b"nx", b"ex", b"BOGUS"])
ARGUMENT = st.one_of(KEYS_, VALUES, WORDS)
# PEXPIRE k 1 races the clock: whether the key is gone by the next command depends on
# which server took longer, not on what it does (it failed once: EXISTS said 1 and 2).
PEXPIRE_AMOUNTS = VALUES.filter(lambda value: value != b"1")
ODD_NAMES = [b"GET", b"SET", b"DEL", b"INCR", b"INCRBY", b"DECRBY", b"MSET", b"APPEND", b"EXPIRE", b"TTL",
             b"PERSIST", b"KEYS", b"DBSIZE", b"ECHO", b"PING", b"SELECT", b"FLUSHDB", b"CONFIG", b"COMMAND",
             b"CLIENT", b"NOSUCH", b"set", b"get"]


def _shaped(name: bytes, *parts: Any) -> Any:
    """``name`` with the arguments ``parts`` draw, then up to two trailing option words."""
    return st.tuples(*parts, st.lists(st.one_of(WORDS, VALUES), max_size=2)).map(
        lambda drawn: [name, *drawn[:-1], *drawn[-1]])


COMMAND_ = st.one_of(
    _shaped(b"SET", KEYS_, VALUES), _shaped(b"GET", KEYS_), _shaped(b"INCR", KEYS_),
    _shaped(b"INCRBY", KEYS_, VALUES), _shaped(b"DECRBY", KEYS_, VALUES), _shaped(b"APPEND", KEYS_, VALUES),
    _shaped(b"EXPIRE", KEYS_, VALUES), _shaped(b"PEXPIRE", KEYS_, PEXPIRE_AMOUNTS), _shaped(b"TTL", KEYS_),
    _shaped(b"PERSIST", KEYS_), _shaped(b"KEYS", VALUES), _shaped(b"MGET", KEYS_, KEYS_),
    _shaped(b"MSET", KEYS_, VALUES), _shaped(b"DEL", KEYS_), _shaped(b"EXISTS", KEYS_, KEYS_),
    _shaped(b"STRLEN", KEYS_), _shaped(b"DECR", KEYS_),
    st.builds(lambda name, args: [name, *args], st.sampled_from(ODD_NAMES), st.lists(ARGUMENT, max_size=5)),
)


def _comparable(command: List[bytes], reply: Any) -> Any:
    name = command[0].upper()
    if name == b"KEYS" and isinstance(reply, list):
        return sorted(reply)                       # a hash table's order
    if name in (b"CONFIG", b"COMMAND", b"SELECT") and not (isinstance(reply, bytes) and reply.startswith(b"-")):
        return "not compared"                      # kv: a few parameters, no docs, db 0 only
    if name == b"CLIENT" and len(command) > 1 and command[1].upper() in (b"SETINFO", b"HELP", b"ID",
                                                                          b"LIST", b"INFO"):
        return "not compared"                      # kv: only what redis-cli and redis-py send
    return reply


@pytest.mark.clients
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(COMMAND_, min_size=1, max_size=12))
def test_kv_replies_as_redis_server_does(kv_and_redis, commands):
    redis_connection, kv_connection = kv_and_redis
    assert redis_connection.call(b"FLUSHALL") == kv_connection.call(b"FLUSHALL") == b"+OK\r\n"
    for command in commands:
        expected, got = redis_connection.call(*command), kv_connection.call(*command)
        if command[0].upper() == b"TTL" and isinstance(expected, int) and expected >= 0:
            assert abs(expected - got) <= 1, (command, expected, got)     # a second may tick between
            continue
        assert _comparable(command, got) == _comparable(command, expected), command
    # Pipelined, good and bad mixed: the same replies, in order.
    assert redis_connection.call(b"FLUSHALL") == kv_connection.call(b"FLUSHALL")
    commands = [command for command in commands if command[0].upper() not in (b"TTL", b"PTTL")]
    expected, got = redis_connection.pipeline(commands), kv_connection.pipeline(commands)
    assert [_comparable(*pair) for pair in zip(commands, got)] == [_comparable(*pair) for pair in zip(commands, expected)]


# ======================================================================
# Requests read as redis-server reads them (issue 18), the same over a socket,
# a Layer and drive(): the replies below are redis-server 7.0.15's, byte for byte
# ======================================================================
REDIS_READ = (b'SET "a b" \'it\\\'s\'\r\nGET "a b"\r\nECHO "\\x41\\n"\r\n*-10\r\n*0\r\n'
              b"*1\r\n$4\r\nPINGxx" + b'ECHO "abc"def\r\nPING\r\n')
REDIS_REPLIES = (b"+OK\r\n$4\r\nit's\r\n$2\r\nA\n\r\n+PONG\r\n"
                 b"-ERR Protocol error: unbalanced quotes in request\r\n")


@pytest.mark.parametrize("way", WAYS)
def test_quoted_inline_commands_skipped_counts_and_unbalanced_quotes_answer_as_redis(way):
    outcome = run_one_way(way, lambda: RecordingKV(Store(), kv.MAX_BULK), REDIS_READ)
    assert outcome.written == REDIS_REPLIES
    assert outcome.lost


@pytest.mark.parametrize("way", WAYS)
def test_a_nul_before_a_line_end_waits_as_redis_does_until_the_peer_closes(way):
    outcome = run_one_way(way, lambda: RecordingKV(Store(), kv.MAX_BULK), b"PING\r\n*1\x00\r\nPING\r\nPING\r\n")
    assert outcome.written == b"+PONG\r\n" and outcome.lost and outcome.lost_exc is None


def test_the_default_max_request_is_redis_proto_max_bulk_len():
    parser = argparse.ArgumentParser()
    kv.add_arguments(parser)
    assert parser.parse_args([]).max_request == 512 * 1024 * 1024
