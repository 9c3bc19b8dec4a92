"""Side by side: the same commands to kv and to a real redis-server 7.0, replies compared.

The kv test files (``test_app_kv*.py``) use it for their differential tests
(marked ``clients``: they need ``redis-server``). ``Servers`` starts one
redis-server on a free port (no persistence) and one kv in a thread;
``connect()`` opens a ``RespConnection`` to each, closed by ``close()``.
A reply is parsed just enough to compare: ``+``/``-`` lines as their raw
bytes, integers as ints, bulks as bytes (None for null), arrays as lists
(None for a null array).
"""
from __future__ import annotations

import socket
import subprocess
import tempfile
from typing import Any, Iterator, List, Sequence, Tuple

import pytest

import netmux
from netmux.apps.kv import KVHandler, KVServer
from netmux.apps.kvstore import Store
from conftest import ServingThread, wait_until


class RecordingKV(KVHandler):
    """KVHandler that notes its connection_lost, as conftest's run_one_way() waits for."""

    lost, lost_exc = False, None

    def connection_lost(self, exc: Any) -> None:
        super().connection_lost(exc)
        self.lost, self.lost_exc = True, exc


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def encode(args: Sequence[bytes]) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in args)


class RespConnection:
    """A blocking RESP2 client that returns each reply parsed for comparison."""

    def __init__(self, address: tuple, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.file = self.sock.makefile("rb")

    def call(self, *args: bytes) -> Any:
        return self.pipeline([list(args)])[0]

    def pipeline(self, commands: List[List[bytes]]) -> List[Any]:
        """Send every command in one write, then read their replies."""
        self.sock.sendall(b"".join(encode(args) for args in commands))
        return [self.read() for _ in commands]

    def send(self, *args: bytes) -> None:
        self.sock.sendall(encode(args))

    def read(self) -> Any:
        line = self.file.readline()
        kind, rest = line[:1], line[1:-2]
        if kind in (b"+", b"-"):
            return line
        if kind == b":":
            return int(rest)
        if kind == b"$":
            return None if int(rest) < 0 else self.file.read(int(rest) + 2)[:-2]
        assert kind == b"*", line
        return None if int(rest) < 0 else [self.read() for _ in range(int(rest))]

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class Servers:
    """A redis-server process and a kv server thread, and connections to both."""

    def __init__(self) -> None:
        port = free_port()
        # Its own directory: DEBUG RELOAD writes dump.rdb there, not in the checkout.
        self.directory = tempfile.TemporaryDirectory(prefix="kvdiff-redis-")
        self.redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                       "--appendonly", "no", "--enable-debug-command", "yes",
                                       "--dir", self.directory.name],
                                      stdout=subprocess.DEVNULL)
        self.redis_address = ("127.0.0.1", port)
        self.store = Store()
        self.kv = ServingThread(KVServer(netmux.TCPServer(("127.0.0.1", 0), lambda: KVHandler(self.store, 1 << 20)),
                                         self.store))
        self.connections: List[RespConnection] = []

        def redis_answers() -> bool:
            try:
                RespConnection(self.redis_address).close()
                return True
            except OSError:
                return False

        wait_until(redis_answers, timeout=10)

    def connect(self) -> Tuple[RespConnection, RespConnection]:
        """A new connection to each: (redis-server's, kv's); ``disconnect()`` closes them."""
        pair = (RespConnection(self.redis_address), RespConnection(self.kv.address))
        self.connections += pair
        assert pair[1].call(b"PING") == b"+PONG\r\n"        # accepted: it counts from now
        return pair

    def disconnect(self) -> None:
        """Close every connection opened so far (a test ends with the descriptors it had)."""
        for connection in self.connections:
            connection.close()
        self.connections = []

    def close(self) -> None:
        self.disconnect()
        self.kv.stop()
        self.redis.terminate()
        self.redis.wait(10)
        self.directory.cleanup()


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    """Both servers for a test module (import this fixture), stopped at its end."""
    both = Servers()
    try:
        yield both
    finally:
        both.close()


def run(store: Store, *words: object) -> bytes:
    """``store.execute`` of ``words``, each bytes or anything ``str()`` makes a word of."""
    return store.execute([word if isinstance(word, bytes) else str(word).encode() for word in words])


def same_replies(servers: Servers, commands: List[List[bytes]]) -> None:
    """Run ``commands`` on a fresh pair of connections after FLUSHALL: each reply the same."""
    redis_connection, kv_connection = servers.connect()
    try:
        assert redis_connection.call(b"FLUSHALL") == kv_connection.call(b"FLUSHALL")
        for command in commands:
            assert kv_connection.call(*command) == redis_connection.call(*command), command
    finally:
        servers.disconnect()


def words(line: str) -> List[bytes]:
    """A command written as redis-cli's words, quotes and escapes allowed: 'SET k "a\\x00b"'."""
    import codecs
    import shlex
    return [codecs.escape_decode(word.encode("latin-1"))[0] for word in shlex.split(line)]


def differences(servers: Servers, script: str, ignore: Sequence[str] = ()) -> List[Tuple[str, Any, Any]]:
    """Run each line of ``script`` on a fresh connection pair (after FLUSHALL) and list
    the lines whose replies differ: (line, redis-server's, kv's). A line starting
    with one of ``ignore`` is run but not compared."""
    redis_connection, kv_connection = servers.connect()
    try:
        assert redis_connection.call(b"FLUSHALL") == kv_connection.call(b"FLUSHALL") == b"+OK\r\n"
        found = []
        for line in script.strip().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            command = words(line)
            expected, got = redis_connection.call(*command), kv_connection.call(*command)
            if expected != got and not line.upper().startswith(tuple(prefix.upper() for prefix in ignore)):
                found.append((line, expected, got))
        return found
    finally:
        servers.disconnect()
