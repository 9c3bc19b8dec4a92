"""Shared fixtures: servers in a background thread or a subprocess, polling with a deadline, leak checks."""
from __future__ import annotations

import gc
import os
import platform
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest

import netmux
from netmux.testing import VirtualClock, drive

# The repository root: the working directory and PYTHONPATH of every child
# process, since netmux is not installed.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.005) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate}")
        time.sleep(interval)


def run_until(reactor: netmux.Reactor, predicate: Callable[[], Any], timeout: float = 5.0) -> None:
    """Turn ``reactor`` in this thread until ``predicate()`` holds; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate}")
        reactor.run_once(0.02)


# The system calls a reactor sleeps in (epoll_wait/epoll_pwait, poll/ppoll,
# select/pselect6, epoll_pwait2), by machine: the number that
# /proc/self/task/TID/syscall shows while a thread is blocked in one.
_WAIT_SYSCALLS = {"x86_64": {7, 23, 232, 270, 271, 281, 441}, "aarch64": {22, 72, 73, 441}}


def sleeping_in_poll(thread: threading.Thread) -> bool:
    """True while ``thread`` is blocked in the kernel in epoll, poll or select.

    The deterministic signal that a reactor has entered its wait (instead of a
    ``time.sleep`` that hopes it has): Linux's /proc names the system call a
    blocked thread is in, whichever path the reactor polls with. A thread that
    runs, or waits for the GIL (a futex), is not sleeping in poll."""
    waits = _WAIT_SYSCALLS.get(platform.machine())
    if waits is None:
        pytest.skip(f"no table of poll system calls for {platform.machine()}")
    try:
        with open(f"/proc/self/task/{thread.native_id}/syscall") as status:
            first = status.read().split(maxsplit=1)[0]
    except (OSError, IndexError):
        return False                       # not started yet, or already gone
    return first.isdigit() and int(first) in waits


def run_in_a_thread_until_it_sleeps(function: Callable[[], Any]) -> Callable[[Callable[[], Any]], None]:
    """Start ``function`` (a reactor's run or run_once) in a thread and wait until it
    sleeps in the poller, or fails first; return ``finish(wake)``, which calls ``wake()``
    from this thread, joins, and re-raises what the thread raised."""
    raised: List[BaseException] = []

    def target() -> None:
        try:
            function()
        except BaseException as exc:        # for finish() to re-raise in the test
            raised.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    wait_until(lambda: raised or sleeping_in_poll(thread))

    def finish(wake: Callable[[], Any]) -> None:
        if not raised:
            wake()
        thread.join(5)
        assert not thread.is_alive(), "the wake-up did not end the wait"
        if raised:
            raise raised[0]

    return finish


def readable(sock: Any, timeout: float = 5.0) -> None:
    """Wait until the kernel says ``sock`` (a socket, a pipe) is readable: bytes queued,
    or a connection waiting on a listener; what a reader registered on it would be woken for."""
    ready, _, _ = select.select([sock], [], [], timeout)
    assert ready, f"{sock} not readable within {timeout} s"


def run_and_recv(reactor: netmux.Reactor, sock: socket.socket, count: Optional[int] = None,
                 timeout: float = 10.0) -> bytes:
    """Read ``count`` bytes from a client socket (None: to the peer's FIN or RST) while
    ``reactor`` turns in this thread; fail at the deadline."""
    sock.setblocking(False)
    received = bytearray()
    deadline = time.monotonic() + timeout
    while count is None or len(received) < count:
        assert time.monotonic() < deadline, f"{len(received)} bytes of {count or 'all up to EOF'}"
        reactor.run_once(0.005)
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    return bytes(received)


def _ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not _ipv6_available(), reason="no IPv6 loopback in this kernel")


def recv_exactly(sock: socket.socket, count: int, timeout: float = 10.0) -> bytes:
    """Read exactly ``count`` bytes from a blocking socket, or fail at the deadline."""
    sock.settimeout(timeout)
    chunks: List[bytes] = []
    received = 0
    while received < count:
        chunk = sock.recv(min(count - received, 1 << 20))
        if not chunk:
            raise AssertionError(f"EOF after {received} of {count} bytes")
        chunks.append(chunk)
        received += len(chunk)
    return b"".join(chunks)


def recv_until_eof(sock: socket.socket, timeout: float = 10.0, limit: int = 1 << 30) -> bytes:
    """Read until the peer's FIN (bounded in time and size)."""
    sock.settimeout(timeout)
    chunks: List[bytes] = []
    total = 0
    while total <= limit:
        chunk = sock.recv(1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
    raise AssertionError("peer sent more than the limit")


class Echo(netmux.Handler):
    """The reference handler: writes back what it reads."""

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class Recorder(netmux.Handler):
    """Keeps every event, for assertions from the test thread."""

    def __init__(self) -> None:
        self.events: List[str] = []
        self.data = bytearray()
        self.lost: List[Any] = []              # the exceptions connection_lost got
        self.lost_event = threading.Event()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self) -> None:
        self.events.append("eof")

    def connection_lost(self, exc: Any) -> None:
        self.events.append("lost")
        self.lost.append(exc)
        self.lost_event.set()


class ServingThread:
    """A TCPServer running ``serve_forever`` in a background thread."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.thread = threading.Thread(target=server.serve_forever, name="netmux-test-server", daemon=True)
        self.thread.start()
        wait_until(lambda: server._serving_thread is not None)

    @property
    def address(self) -> tuple:
        return self.server.server_address

    def connect(self, timeout: float = 10.0) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(self.address[:2])
        return sock

    def call(self, function: Callable[..., Any], *args: Any, timeout: float = 5.0) -> Any:
        """Run ``function(*args)`` on the reactor's thread and return its result."""
        done = threading.Event()
        result: List[Any] = []

        def run() -> None:
            try:
                result.append(function(*args))
            finally:
                done.set()

        self.server.reactor.call_soon_threadsafe(run)
        assert done.wait(timeout), "the reactor did not run the call in time"
        return result[0]

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(5)
        assert not self.thread.is_alive(), "serve_forever() did not return"
        self.server.server_close()


def keeping(store: List[Any], factory: Callable[[], Any]) -> Callable[[], Any]:
    """A handler factory that also appends each handler it makes to ``store``."""
    def make() -> Any:
        store.append(factory())
        return store[-1]
    return make


class Logged(Echo):
    """An echo that notes "made" and "lost" in the list its factory hands it."""

    def __init__(self, log: List[str]) -> None:
        self.log = log

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.log.append("made")

    def connection_lost(self, exc: Any) -> None:
        self.log.append("lost")


def check_max_connections(reactor: netmux.Reactor, make_server: Callable[[Any], Any],
                          connect: Callable[[Any], socket.socket]) -> None:
    """The max_connections contract of any stream server, the reactor turning here.

    ``make_server(factory)`` builds the server on ``reactor`` with max_connections=2;
    ``connect(server)`` opens a blocking client. A third client that the kernel has queued
    is not accepted while two are open (the listener is readable, so a wrong accept
    would happen in the first turn), and is accepted once one of them closes, after
    that connection's connection_lost has returned."""
    log: List[str] = []
    server = make_server(lambda: Logged(log))
    clients: List[socket.socket] = []
    try:
        clients += [connect(server), connect(server)]
        run_until(reactor, lambda: log == ["made", "made"])
        clients.append(connect(server))
        clients[2].sendall(b"waiting")
        readable(server.socket)              # queued on the listener: an accept would find it
        for _ in range(5):
            reactor.run_once(0)
        assert log == ["made", "made"] and server.connections == 2
        clients[0].close()
        assert run_and_recv(reactor, clients[2], 7) == b"waiting"
        assert log == ["made", "made", "lost", "made"]
    finally:
        for client in clients:
            client.close()
        server.server_close()


def check_idle_timeout(make_server: Callable[[netmux.Reactor], Any],
                       connect: Callable[[Any], socket.socket]) -> None:
    """The idle_timeout contract of any stream server, on virtual time over real sockets.

    ``make_server(reactor)`` builds an echo server with idle_timeout=0.3 on the
    given reactor (its clock a VirtualClock); ``connect(server)`` opens a blocking
    client. A silent connection is closed once 0.3 s pass; one that sends a byte
    every 0.1 s is spared, and closed in its turn once it falls silent."""
    clock = VirtualClock()
    reactor = netmux.Reactor(clock=clock)
    server = make_server(reactor)
    idle, busy = connect(server), connect(server)
    try:
        run_until(reactor, lambda: server.connections == 2)
        for _ in range(10):                  # a virtual second, a byte from busy every 0.1 s
            clock.advance(0.1)
            busy.sendall(b"!")
            assert run_and_recv(reactor, busy, 1) == b"!"
        assert run_and_recv(reactor, idle) == b""      # closed meanwhile
        busy.sendall(b"alive")
        assert run_and_recv(reactor, busy, 5) == b"alive"
        clock.advance(0.35)                  # past the timeout, clear of float rounding
        assert run_and_recv(reactor, busy) == b""
    finally:
        idle.close()
        busy.close()
        server.server_close()
        reactor.close()


def child_env() -> Dict[str, str]:
    """The environment for a Python child process that imports netmux from ROOT."""
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


class ServerProcess:
    """A netmux command line in a subprocess (``python -m netmux ARGS``, or
    ``python -c CODE ARGS``), its stderr read as a log without blocking.

    ``address_pattern`` (a regex with the host and port as groups) is waited
    for in the log and gives ``address``; None waits for nothing.
    """

    def __init__(self, args: List[str], code: Optional[str] = None,
                 address_pattern: Optional[str] = r"server on (\S+):(\d+)",
                 pass_fds: tuple = (), env: Optional[Dict[str, str]] = None,
                 start_new_session: bool = False) -> None:
        command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "netmux"]
        self.process = subprocess.Popen(command + args, stderr=subprocess.PIPE, env=dict(child_env(), **(env or {})),
                                        cwd=ROOT, pass_fds=pass_fds, start_new_session=start_new_session)
        os.set_blocking(self.process.stderr.fileno(), False)
        self.log = ""
        if address_pattern is not None:
            match = self.wait_for_log(address_pattern)
            self.address = (match.group(1), int(match.group(2)))

    def read_log(self) -> str:
        """Everything the child has logged so far."""
        chunk = self.process.stderr.read()
        if chunk:
            self.log += chunk.decode(errors="replace")
        return self.log

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> "re.Match[str]":
        """Read the child's stderr until ``pattern`` appears (bounded in time)."""
        deadline = time.monotonic() + timeout
        while True:
            exited = self.process.poll() is not None     # before the read: then it has all the output
            seen = len(self.log)
            match = re.search(pattern, self.read_log())
            if match:
                return match
            if time.monotonic() > deadline or exited:
                raise AssertionError(f"no {pattern!r} in the server's log:\n{self.log}")
            if len(self.log) == seen:
                time.sleep(0.01)

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def stop(self, signum: int = signal.SIGINT) -> int:
        """Send ``signum`` unless it has exited, wait for the exit code (killing
        at the deadline), and read the rest of the log. Safe to call again."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(10)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            if not self.process.stderr.closed:
                self.read_log()
                self.process.stderr.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., ServingThread]]:
    """``serve(handler_factory, **server_kwargs)`` -> a ServingThread, stopped at teardown."""
    running: List[ServingThread] = []

    def start(factory: Any, address: tuple = ("127.0.0.1", 0), **kwargs: Any) -> ServingThread:
        serving = ServingThread(netmux.TCPServer(address, factory, **kwargs))
        running.append(serving)
        return serving

    yield start
    for serving in running:
        serving.stop()


@pytest.fixture
def reactor() -> Iterator[netmux.Reactor]:
    r = netmux.Reactor()
    yield r
    r.close()


@pytest.fixture
def one_connection(reactor: netmux.Reactor) -> Iterator[Callable[..., Any]]:
    """``one_connection(factory=Recorder)`` -> (handler, client socket): a TCPServer on
    ``reactor`` (turned in the test's thread) and one accepted connection, closed at teardown."""
    opened: List[Any] = []

    def start(factory: Callable[[], Any] = Recorder) -> Any:
        handlers: List[Any] = []
        server = netmux.TCPServer(("127.0.0.1", 0), keeping(handlers, factory), reactor=reactor)
        opened.append(server)
        client = socket.create_connection(server.server_address, timeout=5)
        opened.append(client)
        run_until(reactor, lambda: handlers)
        return handlers[0], client

    yield start
    for item in reversed(opened):
        if isinstance(item, socket.socket):
            item.close()
        else:
            item.server_close()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Every test ends with the threads and file descriptors it started with."""
    threads = threading.active_count()
    fds = _open_fds()
    yield
    deadline = time.monotonic() + 5
    while (threading.active_count() > threads or _open_fds() > fds) and time.monotonic() < deadline:
        gc.collect()      # a test's unreferenced sockets close when collected
        time.sleep(0.01)
    assert threading.active_count() <= threads, f"leaked threads: {threading.enumerate()}"
    assert _open_fds() <= fds, f"leaked file descriptors: {_open_fds() - fds}"


# ----------------------------------------------------------------------
# One handler, three ways: over a socket, under a CountingLayer, under drive()
# ----------------------------------------------------------------------
WAYS = ["socket", "layer", "drive"]


class Outcome:
    """What one run of a handler gave, whichever way it ran."""

    def __init__(self, handler: Any, written: bytes, lost: bool, lost_exc: Optional[BaseException]) -> None:
        self.handler, self.written, self.lost, self.lost_exc = handler, written, lost, lost_exc


def run_one_way(way: str, factory: Callable[[], Any], data: bytes, *, eof: bool = True,
        done: Callable[[Any], bool] = lambda handler: handler.lost) -> Outcome:
    """Run one handler against a peer that sends ``data`` in one go (then FIN when
    ``eof``); return once ``done(handler)`` holds (by default: connection_lost ran)."""
    if way == "drive":
        conversation = drive(factory, [data], eof=eof)
        return Outcome(conversation.handler, conversation.written, conversation.closed,
                       conversation.lost_exc)
    made: List[Any] = []

    def make() -> Any:
        handler = factory()
        made.append(handler)
        return netmux.CountingLayer(handler) if way == "layer" else handler

    reactor = netmux.Reactor()
    server = netmux.TCPServer(("127.0.0.1", 0), make, reactor=reactor)
    client = socket.create_connection(server.server_address[:2])
    try:
        client.sendall(data)          # all in the kernel before the server's first read
        if eof:
            client.shutdown(socket.SHUT_WR)
        run_until(reactor, lambda: made and done(made[0]), timeout=20)
        client.settimeout(0)
        written = bytearray()
        try:
            while True:
                piece = client.recv(1 << 20)
                if not piece:
                    break
                written += piece
        except (BlockingIOError, ConnectionResetError):
            pass                      # an aborted connection may answer with RST
        handler = made[0]
        return Outcome(handler, bytes(written), handler.lost, handler.lost_exc)
    finally:
        client.close()
        server.server_close()
        reactor.close()


# ----------------------------------------------------------------------
# Real clients (marker `clients`): skipped with a reason naming the package when
# the program is missing; .ci/run sets NETMUX_REQUIRE_CLIENTS=1, so CI fails instead.
# ----------------------------------------------------------------------
_CLIENT_PROGRAMS = {
    "test_proxy.py": [("haproxy", "haproxy")],
    "test_app_kv.py": [("redis-cli", "redis-tools"), ("redis-benchmark", "redis-tools"),
                       ("redis-server", "redis-server")],
    "test_app_kv_differential.py": [("redis-server", "redis-server")],
    **{f"test_app_kv_{family}.py": [("redis-server", "redis-server")]
       for family in ("strings", "keyspace", "transactions", "pubsub", "admin")},
    "test_app_http.py": [("curl", "curl"), ("wrk", "wrk")],
    "test_app_http_nginx.py": [("nginx", "nginx-light")],
    "test_app_chat.py": [("nc", "netcat-openbsd")],
    "test_stats.py": [("promtool", "prometheus")],
    "test_docs.py": [("openssl", "openssl")],
    "test_tls.py": [("openssl", "openssl"), ("curl", "curl"), ("redis-cli", "redis-tools"),
                    ("redis-benchmark", "redis-tools")],
}


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("clients") is None:
        return
    import shutil
    missing = sorted({package for program, package in _CLIENT_PROGRAMS.get(item.path.name, [])
                      if shutil.which(program) is None})
    if not missing:
        return
    reason = f"needs {', '.join(missing)} (Debian: apt-get install {' '.join(missing)})"
    if os.environ.get("NETMUX_REQUIRE_CLIENTS") == "1":
        pytest.fail(f"{reason}: NETMUX_REQUIRE_CLIENTS=1 makes this a failure", pytrace=False)
    pytest.skip(reason)
