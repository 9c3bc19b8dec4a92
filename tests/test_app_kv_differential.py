"""kv against redis-server 7: the same generated requests to both, the replies compared byte for byte.

Three views of the same question -- does a client see any difference? -- each a
hypothesis test, derandomized (the same examples every run, no database):

* command sequences, one reply at a time, drawn from ``FAMILIES``: a table of
  the commands kv implements, one entry each (a new command family is one more
  entry: its argument strategies, its trailing option words, how to compare);
* the same sequences pipelined in one write (order, and errors in the middle);
* raw request streams (inline lines with quotes and escapes, multibulk requests
  with odd counts and lengths, stray bytes), sent whole and followed by EOF: every
  byte each server writes until it closes is compared, the close included.

``bench/kv_differential.py`` runs the same tests with many more examples
(``KV_DIFFERENTIAL_EXAMPLES``) and reports how many commands were compared.
The servers: redis-server (``--save "" --appendonly no``) on a free port, kv
in-process with its defaults (``KVHandler(store, MAX_BULK)``).
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import netmux
from netmux.apps.kv import KVHandler, KVServer
from netmux.apps.kvstore import Store
from netmux.apps.resp import MAX_BULK
from conftest import ServingThread, recv_until_eof, wait_until

pytestmark = pytest.mark.clients

EXAMPLES = int(os.environ.get("KV_DIFFERENTIAL_EXAMPLES", "0"))    # 0: the CI sizes below
TALLY = os.environ.get("KV_DIFFERENTIAL_TALLY")                   # a file: commands compared, appended


def examples(ci: int) -> Any:
    return settings(max_examples=EXAMPLES or ci, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# ======================================================================
# Replies: raw bytes, one reply at a time
# ======================================================================
def read_reply(file: Any) -> bytes:
    """The raw bytes of one RESP2 reply read from ``file`` (arrays whole)."""
    line = file.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError(f"the server closed in a reply: {line!r}")
    kind, count = line[:1], line[1:-2]
    if kind == b"$" and int(count) >= 0:
        return line + file.read(int(count) + 2)
    if kind == b"*" and int(count) > 0:
        return line + b"".join(read_reply(file) for _ in range(int(count)))
    return line


def elements(reply: bytes) -> List[bytes]:
    """The bulk strings of a flat array reply (KEYS), for comparing as a set."""
    lines, items, index = reply.split(b"\r\n"), [], 1
    while index + 1 < len(lines):
        items.append(lines[index + 1])
        index += 2
    return items


def exact(reply: bytes) -> Any:
    return reply


def unordered(reply: bytes) -> Any:
    """A hash table's order (KEYS) is not part of the answer."""
    return sorted(elements(reply)) if reply.startswith(b"*") else reply


def within(tolerance: int) -> Callable[[bytes], Any]:
    """An integer reply that counts time down (TTL, PTTL): equal within ``tolerance``."""
    def rounded(reply: bytes) -> Any:
        if reply.startswith(b":") and int(reply[1:]) >= 0:
            return ("a time left of about", int(reply[1:]) // (tolerance + 1))
        return reply
    return rounded


# ======================================================================
# The command table: one entry per command kv implements
# ======================================================================
KEY = st.sampled_from([b"a", b"b", b"n", b"{k}x", b""])
VALUE = st.sampled_from([b"", b"0", b"1", b"-1", b"-0", b"+1", b" 1", b"01", b"abc", b"1000", b"1.5", b"a b",
                         b"9223372036854775807", b"-9223372036854775808", b"9223372036854775808",
                         b"\x00\xff\r\n", b"*", b"[a-c]", b"\\"])
INTEGER = st.sampled_from([b"0", b"1", b"-1", b"10", b"-10", b"100000", b"9223372036854775807",
                           b"-9223372036854775808", b"9223372036854775808", b"x", b"1.5", b"", b" 1"])
# Deadlines far from now: a 1-50 ms expiry would race the two servers' clocks, not compare them.
SECONDS = st.sampled_from([b"0", b"-1", b"100", b"100000", b"9223372036854775807", b"x", b"1.5"])
MILLISECONDS = st.sampled_from([b"0", b"-5", b"100000", b"100000000", b"9223372036854775807", b"x"])
UNIX_TIME = st.sampled_from([b"1", b"4102444800", b"0", b"-1", b"x"])       # the past, 2100-01-01
PATTERN = st.sampled_from([b"*", b"a", b"?", b"[ab]", b"[^a]", b"[a-", b"\\a", b"*x", b"", b"[]]", b"**"])


def words(*choices: bytes) -> Any:
    return st.sampled_from(choices)


SET_OPTIONS = words(b"NX", b"XX", b"GET", b"KEEPTTL", b"EX", b"PX", b"EXAT", b"PXAT", b"nx", b"ex", b"100",
                    b"4102444800", b"4102444800000", b"0", b"-1", b"x", b"BOGUS")
EXPIRE_OPTIONS = words(b"NX", b"XX", b"GT", b"LT", b"nx", b"BOGUS")
ANY_WORD = st.one_of(KEY, VALUE, words(b"NX", b"GET", b"BOGUS"))


@dataclass
class Family:
    """How to draw one command: its arguments in order, then up to three ``options``
    (None: words of any kind); sometimes fewer arguments than it takes, to reach
    the arity errors. ``compare`` maps a reply to what must be equal."""

    arguments: Tuple[Any, ...] = ()
    options: Optional[Any] = None
    compare: Callable[[bytes], Any] = exact
    variadic: bool = False          # the last argument repeats (MGET k k k)

    def strategy(self, name: bytes) -> Any:
        tail = self.arguments[-1:] if self.variadic else ()
        return st.tuples(st.sampled_from([name, name.lower()]), st.tuples(*self.arguments),
                         st.lists(*tail, max_size=3) if tail else st.just([]),
                         st.lists(self.options if self.options is not None else ANY_WORD,
                                  max_size=3 if self.options is not None else 1),
                         st.integers(0, 9)).map(self._assemble)

    def _assemble(self, drawn: Tuple[Any, ...]) -> List[bytes]:
        name, arguments, repeated, options, cut = drawn
        command = [name, *arguments, *repeated, *options]
        return command[:1 + cut] if cut < len(self.arguments) and cut % 3 == 0 else command


FAMILIES: Dict[bytes, Family] = {
    b"PING": Family((), words(b"hello", b"")),
    b"ECHO": Family((VALUE,)),
    b"SET": Family((KEY, VALUE), SET_OPTIONS),
    b"GET": Family((KEY,)),
    b"DEL": Family((KEY,), variadic=True),
    b"EXISTS": Family((KEY,), variadic=True),
    b"INCR": Family((KEY,)),
    b"DECR": Family((KEY,)),
    b"INCRBY": Family((KEY, INTEGER)),
    b"DECRBY": Family((KEY, INTEGER)),
    b"MGET": Family((KEY,), variadic=True),
    b"MSET": Family((KEY, VALUE), st.one_of(KEY, VALUE)),
    b"APPEND": Family((KEY, VALUE)),
    b"STRLEN": Family((KEY,)),
    b"EXPIRE": Family((KEY, SECONDS), EXPIRE_OPTIONS),
    b"PEXPIRE": Family((KEY, MILLISECONDS), EXPIRE_OPTIONS),
    b"TTL": Family((KEY,), compare=within(1)),
    b"PTTL": Family((KEY,), compare=within(1000)),
    b"PERSIST": Family((KEY,)),
    b"KEYS": Family((PATTERN,), compare=unordered),
    b"DBSIZE": Family(()),
    b"FLUSHDB": Family((), words(b"ASYNC", b"SYNC", b"async", b"BOGUS")),
    b"FLUSHALL": Family((), words(b"ASYNC", b"SYNC", b"BOGUS")),
    b"SELECT": Family((words(b"0", b"16", b"-1", b"x", b""),)),     # 1-15: once kv has 16 databases
    b"CLIENT": Family((words(b"SETNAME", b"GETNAME", b"setname", b"BOGUS"), words(b"name", b"a b", b"")), words(b"x")),
    b"NOSUCH": Family((VALUE,)),
}
# SET's deadlines take UNIX_TIME after EXAT (seconds) too: drawn among the option words above.
COMMAND = st.sampled_from(sorted(FAMILIES)).flatmap(lambda name: FAMILIES[name].strategy(name))


def compared(command: List[bytes], reply: bytes) -> Any:
    family = FAMILIES.get(command[0].upper())
    return family.compare(reply) if family is not None else reply


# ======================================================================
# The two servers
# ======================================================================
class Connection:
    """A blocking client that sends raw bytes and reads raw replies."""

    def __init__(self, address: tuple) -> None:
        self.sock = socket.create_connection(address, timeout=10)
        self.file = self.sock.makefile("rb")

    def pipeline(self, commands: List[List[bytes]]) -> List[bytes]:
        self.sock.sendall(b"".join(encode(command) for command in commands))
        return [read_reply(self.file) for _ in commands]

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def encode(command: List[bytes]) -> bytes:
    return b"*%d\r\n" % len(command) + b"".join(b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in command)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Peers:
    redis: Connection
    kv: Connection
    redis_address: tuple
    kv_address: tuple

    def reset(self) -> None:
        assert self.redis.pipeline([[b"FLUSHALL"]]) == self.kv.pipeline([[b"FLUSHALL"]]) == [b"+OK\r\n"]


@pytest.fixture(scope="module")
def peers() -> Iterator[Peers]:
    port = free_port()
    redis_server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                     "--appendonly", "no"], stdout=subprocess.DEVNULL)
    store = Store()
    serving = ServingThread(KVServer(netmux.TCPServer(("127.0.0.1", 0), lambda: KVHandler(store, MAX_BULK)), store))
    opened: List[Connection] = []
    try:
        def connect_redis() -> bool:
            try:
                opened.append(Connection(("127.0.0.1", port)))
                return True
            except OSError:
                return False

        wait_until(connect_redis, timeout=10)
        opened.append(Connection(serving.address))
        assert opened[1].pipeline([[b"PING"]]) == [b"+PONG\r\n"]    # accepted: its socket counts from now
        yield Peers(opened[0], opened[1], ("127.0.0.1", port), serving.address)
    finally:
        for connection in opened:
            connection.close()
        serving.stop()
        redis_server.terminate()
        redis_server.wait(10)


def tally(count: int) -> None:
    if TALLY:
        with open(TALLY, "a") as file:
            file.write(f"{count}\n")


# ======================================================================
# The tests
# ======================================================================
@examples(ci=150)
@given(st.lists(COMMAND, min_size=1, max_size=12))
def test_command_sequences_answer_as_redis_server_byte_for_byte(peers, commands):
    peers.reset()
    for command in commands:
        expected, got = peers.redis.pipeline([command])[0], peers.kv.pipeline([command])[0]
        assert compared(command, got) == compared(command, expected), (command, expected, got)
    tally(len(commands))


@examples(ci=60)
@given(st.lists(COMMAND, min_size=1, max_size=30))
def test_pipelined_command_sequences_answer_as_redis_server(peers, commands):
    peers.reset()
    expected, got = peers.redis.pipeline(commands), peers.kv.pipeline(commands)
    assert [compared(*pair) for pair in zip(commands, got)] == [compared(*pair) for pair in zip(commands, expected)]
    tally(len(commands))


# Raw request streams: the parser's questions (resp.py), asked of both servers.
INLINE_NAME = words(b"PING", b"ECHO", b"echo", b"GET", b"SET", b"EXISTS", b"STRLEN", b"DEL")
INLINE_TEXT = st.lists(st.sampled_from([b"a", b"b", b"1", b" ", b"\t", b"\x0b", b"\\", b"\\x4", b"\\x41", b"\\n",
                                        b"\\'", b"x", b"\r", b'"', b"'"]), max_size=6).map(b"".join)
INLINE_WORD = st.one_of(
    INLINE_TEXT.filter(lambda text: not any(byte in text for byte in b" \t\r\"'")),       # bare
    INLINE_TEXT.map(lambda text: b'"' + text + b'"'),                                    # maybe unbalanced
    INLINE_TEXT.map(lambda text: b"'" + text + b"'"),
    st.tuples(INLINE_TEXT, INLINE_TEXT).map(lambda pair: pair[0] + b'"' + pair[1] + b'"x'),
)
INLINE_LINE = st.tuples(
    INLINE_NAME, st.lists(st.tuples(words(b" ", b"  ", b"\t", b"\x0b "), INLINE_WORD), max_size=3),
    words(b"\r\n", b"\n", b"\r\r\n", b" \r\n"),
).map(lambda drawn: drawn[0] + b"".join(space + word for space, word in drawn[1]) + drawn[2])
# A stray CR turns a multibulk request into inline lines, so any argument may run as a
# command: not SYNC, which makes a client a replica of redis-server (kv has no replication).
NOT_IN_KV = {b"SYNC"}
MULTIBULK = st.one_of(
    COMMAND.filter(lambda command: not NOT_IN_KV & {word.upper() for word in command}).map(encode),
    st.sampled_from([b"*0\r\n", b"*-1\r\n", b"*-10\r\n", b"*-0\r\n", b"*01\r\n", b"*+1\r\n", b"*1\r\n$-1\r\n",
                     b"*1\r\n$04\r\nPING\r\n", b"*1\r\n$4\r\nPINGxx", b"*1\rX$4\r\nPING\r\n", b"*1\r\n:4\r\n",
                     b"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n", b"*1\r\n$0\r\n\r\n", b"*1\r\n$\r\n", b"*\r\n",
                     b"*3000000000\r\n", b"*1\r\n$536870913\r\n", b"*1\r\n$4\x00\r\nPING\r\n"]),
)
STRAY = st.sampled_from([b"\r\n", b"\n", b"\r", b" ", b"*", b"$", b"\x00", b"\t\r\n"])
STREAM = st.lists(st.one_of(INLINE_LINE, MULTIBULK, STRAY), min_size=1, max_size=8).map(b"".join)


# HELLO's reply names the connection's id, which counts every client the server has
# had: the two servers' counts differ (the harness's own connections), not their answers.
HELLO_ID = re.compile(rb"\$2\r\nid\r\n:\d+\r\n")


def converse(address: tuple, stream: bytes) -> bytes:
    """Send ``stream`` and EOF; every byte the server writes until it closes
    (a HELLO reply's connection id made ``:ID``)."""
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(stream)
        sock.shutdown(socket.SHUT_WR)
        try:
            return HELLO_ID.sub(b"$2\r\nid\r\n:ID\r\n", recv_until_eof(sock))
        except ConnectionResetError:
            return b"<reset>"


@examples(ci=200)
@given(STREAM)
def test_raw_request_streams_get_the_same_bytes_and_close_as_from_redis_server(peers, stream):
    peers.reset()
    assert converse(peers.kv_address, stream) == converse(peers.redis_address, stream), stream
    tally(stream.count(b"\n"))
