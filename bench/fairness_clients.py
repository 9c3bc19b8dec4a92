#!/usr/bin/env python3
"""The clients of bench/fairness.py: the well-behaved one that measures, and the hostile ones.

    python bench/fairness_clients.py KIND PORT SECONDS     # one hostile client, as fairness.py runs it

The well-behaved client (``measure_http``, ``measure_ping``, ``measure_chat``)
runs in fairness.py's own process: a request every few milliseconds for a
window, each timed, each capped (no answer within the cap: the cap, and a
failure). A hostile client runs in a child process of its own (this file as a
script, under ``nice``), so its work never holds up the measurer's; it stops
at SIGTERM or after SECONDS and prints one JSON line about what it did.
Every loop here is bounded in count and in time; only 127.0.0.1 is used.
"""
import argparse
import json
import math
import select
import selectors
import signal
import socket
import time
from typing import Any, Callable, Dict, List, Optional

HOST = "127.0.0.1"
STALL = 0.050             # a request slower than this is a stall (the bound)
KV_PATTERN = b"a*" * (512 * 1024)        # 1 MiB: netmux kv's default --max-request, inclusive
HTTP_GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
HTTP_GET_CLOSE = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


# ======================================================================
# Small blocking clients, shared by the measurer and the hostile clients
# ======================================================================
def resp_command(*words: bytes) -> bytes:
    """One request in RESP, the protocol of redis and netmux kv."""
    return b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(word), word) for word in words)


class RespReader:
    """Reads whole RESP replies from a blocking socket, each within a deadline."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("no reply in time")
        self.sock.settimeout(remaining)
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.buffer += data

    def _line(self, deadline: float) -> bytes:
        while True:
            end = self.buffer.find(b"\r\n")
            if end >= 0:
                line = bytes(self.buffer[:end])
                del self.buffer[:end + 2]
                return line
            self._fill(deadline)

    def reply(self, deadline: float) -> Any:
        """The next reply: bytes, int, a list, None, or an ``Exception`` for an error reply."""
        line = self._line(deadline)
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            return Exception(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            while len(self.buffer) < size + 2:
                self._fill(deadline)
            value = bytes(self.buffer[:size])
            del self.buffer[:size + 2]
            return value
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self.reply(deadline) for _ in range(count)]
        raise ConnectionError(f"not RESP: {line[:40]!r}")

    def lines(self, count: int, deadline: float) -> None:
        """Skip ``count`` one-line replies (+OK, :1), as a pipelined batch gets them."""
        while True:
            found = self.buffer.count(b"\r\n")
            if found >= count:
                for _ in range(count):
                    del self.buffer[:self.buffer.find(b"\r\n") + 2]
                return
            self._fill(deadline)


def http_get(port: int, cap: float) -> None:
    """One ``GET /`` with Connection: close on a new connection; raises unless a 200 comes whole."""
    deadline = time.monotonic() + cap
    with socket.create_connection((HOST, port), timeout=cap) as sock:
        sock.sendall(HTTP_GET_CLOSE)
        answer = bytearray()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout("no answer in time")
            sock.settimeout(remaining)
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    if not answer.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(f"answer {bytes(answer[:20])!r}")


# ======================================================================
# The well-behaved client: a timed series of requests
# ======================================================================
class Samples:
    """Latencies of the measured requests (seconds), each a failure when it hit its cap."""

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.latencies: List[float] = []
        self.stamps: List[float] = []        # wall-clock start of each request
        self.failures = 0
        self.errors: Dict[str, int] = {}

    def add(self, started: float, latency: float) -> None:
        self.stamps.append(started)
        self.latencies.append(latency)

    def fail(self, started: float, cap: float, error: BaseException) -> None:
        self.add(started, cap)
        self.failures += 1
        name = type(error).__name__
        self.errors[name] = self.errors.get(name, 0) + 1

    def summary(self) -> Dict[str, Any]:
        ordered = sorted(self.latencies)

        def rank(fraction: float) -> Optional[float]:        # nearest rank
            if not ordered:
                return None
            return ordered[min(len(ordered), max(1, math.ceil(fraction * len(ordered)))) - 1]

        return {"metric": self.metric, "n": len(ordered), "failures": self.failures,
                "errors": self.errors, "p50": rank(0.50), "p99": rank(0.99),
                "max": ordered[-1] if ordered else None,
                "stalls": sum(1 for latency in ordered if latency > STALL)}


def timed_series(metric: str, attempt: Callable[[float], None], window: float, cap: float,
                 gap: float) -> Samples:
    """Call ``attempt(cap)`` every ``gap`` seconds for ``window`` seconds; an attempt that
    raises (its own cap included) counts as ``cap``. Bounded: at most window / gap attempts."""
    samples = Samples(metric)
    end = time.monotonic() + window
    for _ in range(int(window / gap) + 1):
        if time.monotonic() >= end:
            break
        started, begin = time.time(), time.perf_counter()
        try:
            attempt(cap)
            samples.add(started, time.perf_counter() - begin)
        except (OSError, ConnectionError, ValueError) as error:
            samples.fail(started, cap, error)
        time.sleep(gap)
    return samples


def measure_http(port: int, window: float, cap: float, gap: float) -> List[Samples]:
    return [timed_series("GET / (new conn)", lambda limit: http_get(port, limit), window, cap, gap)]


def measure_ping(port: int, window: float, cap: float, gap: float) -> List[Samples]:
    """PING on one connection of its own, every ``gap``; a new connection after a failure."""
    connection: List[Optional[RespReader]] = [None]

    def ping(limit: float) -> None:
        deadline = time.monotonic() + limit
        try:
            reader = connection[0]
            if reader is None:
                sock = socket.create_connection((HOST, port), timeout=limit)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                reader = connection[0] = RespReader(sock)
            reader.sock.sendall(b"PING\r\n")
            if reader.reply(deadline) != b"PONG":
                raise ConnectionError("not PONG")
        except (OSError, ConnectionError, ValueError):
            if connection[0] is not None:
                connection[0].sock.close()
                connection[0] = None
            raise

    try:
        return [timed_series("PING", ping, window, cap, gap)]
    finally:
        if connection[0] is not None:
            connection[0].sock.close()


def measure_chat(port: int, window: float, cap: float, gap: float) -> List[Samples]:
    """A new member each time: connect until its welcome line, then ``/who`` until its answer."""
    welcome, who = Samples("welcome (new member)"), Samples("/who")
    end = time.monotonic() + window
    for _ in range(int(window / gap) + 1):
        if time.monotonic() >= end:
            break
        started, begin = time.time(), time.perf_counter()
        deadline = time.monotonic() + cap
        step = welcome
        try:
            with socket.create_connection((HOST, port), timeout=cap) as sock:
                buffer = bytearray()
                read_until(sock, buffer, b"* welcome", deadline)
                welcome.add(started, time.perf_counter() - begin)
                step, started, begin = who, time.time(), time.perf_counter()
                deadline = time.monotonic() + cap
                sock.sendall(b"/who\r\n")
                read_until(sock, buffer, b"* in lobby:", deadline)
                who.add(started, time.perf_counter() - begin)
        except (OSError, ConnectionError) as error:
            step.fail(started, cap, error)
        time.sleep(gap)
    return [welcome, who]


def read_until(sock: socket.socket, buffer: bytearray, marker: bytes, deadline: float) -> None:
    """Read into ``buffer`` until ``marker`` starts a line; drop the marker and all before it.
    Each byte is searched once (a remembered offset), however much flood comes first."""
    searched = 0
    while True:
        if buffer.startswith(marker):
            del buffer[:len(marker)]
            return
        found = buffer.find(b"\n" + marker, max(0, searched - len(marker)))
        if found >= 0:
            del buffer[:found + 1 + len(marker)]
            return
        searched = len(buffer)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("no answer in time")
        sock.settimeout(remaining)
        data = sock.recv(1 << 18)
        if not data:
            raise ConnectionError("the server closed the connection")
        buffer += data


# ======================================================================
# Hostile clients (each in a child: python bench/fairness_clients.py KIND PORT SECONDS)
# ======================================================================
class _Stop(Exception):
    """SIGTERM from the parent: report and leave."""


def hostile_pipeline(port: int, deadline: float, stats: Dict[str, Any], request: bytes = HTTP_GET,
                     token: bytes = b"HTTP/1.1 ", batch: int = 10000) -> None:
    """Send ``batch`` pipelined requests per send, at most two batches unanswered, and read
    the answers (counting ``token``); a new connection when the server closes one."""
    payload = request * batch
    stats.update(connections=0, requests=0, responses=0, closed_by_server=0)
    selector = selectors.DefaultSelector()
    while time.monotonic() < deadline and stats["connections"] < 10000:
        sock = socket.create_connection((HOST, port), timeout=2)
        sock.setblocking(False)
        stats["connections"] += 1
        selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        pending, outstanding, tail = memoryview(b""), 0, b""
        try:
            while time.monotonic() < deadline:
                writing = bool(pending) or outstanding < 2 * batch
                selector.modify(sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if writing else 0))
                for _, events in selector.select(0.2):
                    if events & selectors.EVENT_READ:
                        data = sock.recv(1 << 18)
                        if not data:
                            raise ConnectionError("closed")
                        chunk = tail + data
                        answered = chunk.count(token)
                        tail = chunk[-(len(token) - 1):]
                        stats["responses"] += answered
                        outstanding -= answered
                    if events & selectors.EVENT_WRITE:
                        if not pending and outstanding < 2 * batch:
                            pending = memoryview(payload)
                            outstanding += batch
                            stats["requests"] += batch
                        if pending:
                            pending = pending[sock.send(pending):]
        except (ConnectionError, OSError):
            stats["closed_by_server"] += 1
        finally:
            selector.unregister(sock)
            sock.close()


def hostile_slowloris(port: int, deadline: float, stats: Dict[str, Any], clients: int = 20) -> None:
    """``clients`` connections, each sending one byte of a never-ending request head per
    second; records when the server closes each one and what it said first."""
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
    opened, socks = [], []
    for _ in range(clients):
        sock = socket.create_connection((HOST, port), timeout=2)
        sock.setblocking(False)
        socks.append(sock)
        opened.append(time.monotonic())
    closed: List[Optional[float]] = [None] * clients
    answers: List[str] = [""] * clients
    stats.update(clients=clients, closed_after=closed, answers=answers, opened=opened)
    for second in range(len(head)):
        if time.monotonic() >= deadline:
            break
        for index, sock in enumerate(socks):
            if closed[index] is None:
                try:
                    sock.send(head[second:second + 1])
                except OSError:
                    closed[index] = time.monotonic() - opened[index]
        tick = time.monotonic() + 1.0
        while time.monotonic() < min(tick, deadline):
            open_socks = [sock for index, sock in enumerate(socks) if closed[index] is None]
            if not open_socks:
                time.sleep(max(0.0, min(tick, deadline) - time.monotonic()))
                break
            readable, _, _ = select.select(open_socks, [], [], max(0.0, min(tick, deadline) - time.monotonic()))
            for sock in readable:
                index = socks.index(sock)
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                if data and not answers[index]:
                    answers[index] = data.split(b"\r\n", 1)[0].decode(errors="replace")
                if not data:
                    closed[index] = time.monotonic() - opened[index]


def hostile_keys(port: int, deadline: float, stats: Dict[str, Any]) -> None:
    """KEYS with a 1 MiB pattern, then CONFIG GET with four, again and again (1,000 keys
    stored first); records each command's own time."""
    commands = {"KEYS": resp_command(b"KEYS", KV_PATTERN),
                "CONFIG GET": resp_command(b"CONFIG", b"GET", *[KV_PATTERN] * 4)}
    times: Dict[str, List[float]] = {name: [] for name in commands}
    stats.update(times=times, errors=[], connections=0)
    reader = _kv_connect(port, stats)
    pairs = [word for index in range(1000) for word in (b"key:%d" % index, b"value")]
    reader.sock.sendall(resp_command(b"MSET", *pairs))
    reader.reply(deadline)
    for _ in range(10000):
        for name, command in commands.items():
            if time.monotonic() >= deadline:
                return
            begin = time.perf_counter()
            try:
                reader.sock.sendall(command)
                answer = reader.reply(deadline)
            except (OSError, ConnectionError) as error:
                stats["errors"].append(f"{name}: {error!r}")
                reader.sock.close()
                reader = _kv_connect(port, stats)
                continue
            times[name].append(time.perf_counter() - begin)
            if isinstance(answer, Exception) and len(stats["errors"]) < 10:
                stats["errors"].append(f"{name}: {answer}")


def hostile_append(port: int, deadline: float, stats: Dict[str, Any]) -> None:
    """A 64 MiB value built by 64 APPENDs of 1 MiB, then rounds of 300 one-byte APPENDs
    (pipelined) until the deadline; records each round's time."""
    reader = _kv_connect(port, stats)
    chunk = b"x" * (1 << 20)
    reader.sock.sendall(resp_command(b"DEL", b"big"))
    reader.reply(deadline)
    begin = time.perf_counter()
    reader.sock.sendall(resp_command(b"APPEND", b"big", chunk) * 64)
    reader.lines(64, deadline)
    stats["build_seconds"] = time.perf_counter() - begin
    rounds: List[float] = []
    stats["rounds"] = rounds
    batch = resp_command(b"APPEND", b"big", b"y") * 300
    for _ in range(100000):
        if time.monotonic() >= deadline:
            return
        begin = time.perf_counter()
        reader.sock.sendall(batch)
        reader.lines(300, deadline)
        rounds.append(time.perf_counter() - begin)


def hostile_expire(port: int, deadline: float, stats: Dict[str, Any], keys: int = 600000) -> None:
    """``keys`` keys ``SET k v PXAT t``, pipelined 5,000 at a time, then DEL'eted (100 keys a
    command); then idle, connected, past t. t must come after the DELs, on a fast server or a
    slow one: 5,000 keys are set and deleted first (with a PXAT an hour away, so they never
    expire), and t is now + 1.5 times that, scaled to ``keys``, + 2 s. The first line printed
    is ``{"t": t}`` (Unix seconds), so that the measurer knows how long to go on."""
    reader = _kv_connect(port, stats)
    begin = time.perf_counter()
    _set_and_delete(reader, b"c:", 5000, b"%d" % (time.time() * 1000 + 3600 * 1000), deadline)
    estimate = (time.perf_counter() - begin) * keys / 5000
    when = time.time() + 1.5 * estimate + 2.0
    stats["t"] = when
    print(json.dumps({"t": when}), flush=True)
    _set_and_delete(reader, b"e:", keys, b"%d" % (when * 1000), deadline, stats)
    while time.monotonic() < deadline:
        time.sleep(0.1)


def _set_and_delete(reader: RespReader, prefix: bytes, keys: int, pxat: bytes, deadline: float,
                    stats: Optional[Dict[str, Any]] = None) -> None:
    for base in range(0, keys, 5000):
        names = [prefix + b"%d" % index for index in range(base, min(keys, base + 5000))]
        reader.sock.sendall(b"".join(resp_command(b"SET", name, b"v", b"PXAT", pxat) for name in names))
        reader.lines(len(names), deadline)
    if stats is not None:
        stats["set_done"] = time.time()
    for base in range(0, keys, 5000):
        commands = [resp_command(b"DEL", *[prefix + b"%d" % index for index in range(start, min(keys, start + 100))])
                    for start in range(base, min(keys, base + 5000), 100)]
        reader.sock.sendall(b"".join(commands))
        reader.lines(len(commands), deadline)
    if stats is not None:
        stats["del_done"] = time.time()


def hostile_chat(port: int, deadline: float, stats: Dict[str, Any], readers: int = 10) -> None:
    """``readers`` members reading everything, one member sending ``a\\n`` as fast as it can."""
    selector = selectors.DefaultSelector()
    members = []
    for _ in range(readers + 1):
        sock = socket.create_connection((HOST, port), timeout=2)
        sock.setblocking(False)
        members.append(sock)
    flooder = members[-1]
    received = {sock: 0 for sock in members}
    stats.update(lines_sent=0, dropped=0, flooder_dropped=False)
    for sock in members:
        selector.register(sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if sock is flooder else 0), sock)
    flood = memoryview(b"a\n" * 32768)
    pending = flood
    sent = 0
    while time.monotonic() < deadline and sent < 1 << 32 and received:
        for key, events in selector.select(0.2):
            sock = key.data
            if events & selectors.EVENT_READ:
                try:
                    data = sock.recv(1 << 18)
                except OSError:
                    data = b""
                if not data:
                    selector.unregister(sock)
                    del received[sock]
                    if sock is flooder:             # the server told it and let it go
                        stats["flooder_dropped"] = True
                        break
                    stats["dropped"] += 1
                    continue
                received[sock] += data.count(b"\n")
            if events & selectors.EVENT_WRITE:
                written = sock.send(pending)
                sent += written
                stats["lines_sent"] = sent // 2
                pending = pending[written:] or flood
        stats["lines_received_min"] = min((count for sock, count in received.items() if sock is not flooder),
                                          default=0)


def _kv_connect(port: int, stats: Dict[str, Any]) -> RespReader:
    stats["connections"] = stats.get("connections", 0) + 1
    if stats["connections"] > 1000:
        raise ConnectionError("too many reconnections")
    return RespReader(socket.create_connection((HOST, port), timeout=5))


HOSTILES: Dict[str, Callable[[int, float, Dict[str, Any]], None]] = {
    "http-pipeline": hostile_pipeline,
    "slowloris": hostile_slowloris,
    "kv-ping-pipeline": lambda port, deadline, stats: hostile_pipeline(
        port, deadline, stats, request=b"PING\r\n", token=b"PONG"),
    "kv-keys": hostile_keys,
    "kv-append": hostile_append,
    "kv-expire": hostile_expire,
    "chat-flood": hostile_chat,
}


def hostile_main(kind: str, port: int, seconds: float) -> None:
    """Run hostile ``kind`` until ``seconds`` have passed or SIGTERM; print its stats as JSON."""
    stats: Dict[str, Any] = {}

    def on_term(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise _Stop()

    signal.signal(signal.SIGTERM, on_term)
    begin = time.monotonic()
    try:
        HOSTILES[kind](port, begin + seconds, stats)
    except _Stop:
        pass
    except Exception as error:              # reported to the parent, in the table's notes
        stats["error"] = repr(error)[:200]
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    stats["seconds"] = time.monotonic() - begin
    if "opened" in stats:                   # slowloris: the age of each connection still open
        now = time.monotonic()
        stats["open_for"] = [round(now - opened, 1) for opened in stats.pop("opened")]
    print(json.dumps(stats), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="one hostile client of bench/fairness.py")
    parser.add_argument("kind", choices=sorted(HOSTILES))
    parser.add_argument("port", type=int)
    parser.add_argument("seconds", type=float, help="stop after this long at the latest")
    args = parser.parse_args()
    hostile_main(args.kind, args.port, args.seconds)


if __name__ == "__main__":
    main()
