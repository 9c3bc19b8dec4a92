"""UnixServer and connect(path) over real Unix domain sockets, and ``--unix`` on the command line."""
from __future__ import annotations

import errno
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Iterator, List

import pytest

import netmux
from conftest import (ROOT, Echo, Recorder, ServerProcess, ServingThread, check_idle_timeout,
                      check_max_connections, child_env, recv_exactly, recv_until_eof, run_until)


@pytest.fixture
def path() -> Iterator[str]:
    """A socket path that fits in sun_path (about 107 bytes; tmp_path may not)."""
    directory = tempfile.mkdtemp(prefix="nm-", dir="/tmp")
    yield os.path.join(directory, "s")
    shutil.rmtree(directory)


@pytest.fixture
def serve_unix(path) -> Iterator[Any]:
    """``serve_unix(factory, **kwargs)`` -> a ServingThread with a UnixServer on ``path``."""
    running: List[ServingThread] = []

    def start(factory: Any, **kwargs: Any) -> ServingThread:
        running.append(ServingThread(netmux.UnixServer(path, factory, **kwargs)))
        return running[-1]

    yield start
    for serving in running:
        serving.stop()


def unix_client(path: str, timeout: float = 10.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(path)
    return sock


def dead_socket_file(path: str) -> None:
    """What a killed server leaves: a socket file nobody listens on."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(path)


# ----------------------------------------------------------------------
# Serving
# ----------------------------------------------------------------------
def test_echo_over_a_unix_socket_with_many_clients(serve_unix, path):
    server = serve_unix(Echo)
    assert server.server.server_address == path
    clients = [unix_client(path) for _ in range(20)]
    try:
        for i, client in enumerate(clients):
            client.sendall(b"<%d>" % i * 1000)
        for i, client in enumerate(clients):
            assert recv_exactly(client, len(b"<%d>" % i) * 1000) == b"<%d>" % i * 1000
    finally:
        for client in clients:
            client.close()


def test_the_peername_is_what_the_kernel_gives_and_no_tcp_nodelay(serve_unix, path):
    seen: List[Any] = []

    class Peer(netmux.Handler):
        def connection_made(self, transport):
            seen.append((transport.get_extra_info("peername"), transport.get_extra_info("sockname"),
                         transport.get_extra_info("socket").family))
            transport.close()

    serve_unix(Peer)
    with unix_client(path) as client:
        assert recv_until_eof(client) == b""
    assert seen == [("", path, socket.AF_UNIX)]       # an unbound client has no name


def test_max_connections_pauses_accepting_and_resumes_below(reactor, path):
    check_max_connections(reactor, lambda factory: netmux.UnixServer(path, factory, reactor=reactor,
                                                                      max_connections=2),
                          lambda server: unix_client(path))


def test_idle_timeout_closes_a_silent_connection(path):
    check_idle_timeout(lambda reactor: netmux.UnixServer(path, Echo, reactor=reactor, idle_timeout=0.3),
                       lambda server: unix_client(path))


def test_a_stream_handler_serves_over_a_unix_socket(serve_unix, path):
    class Upper(netmux.StreamHandler):
        async def handle(self):
            while True:
                line = await self.readline()
                if not line:
                    break
                await self.sendall(line.upper())

    serve_unix(Upper)
    with unix_client(path) as client:
        client.sendall(b"one\ntwo\n")
        client.shutdown(socket.SHUT_WR)
        assert recv_until_eof(client) == b"ONE\nTWO\n"


# ----------------------------------------------------------------------
# The socket file
# ----------------------------------------------------------------------
def test_server_close_removes_the_file_and_a_pathlike_is_the_same_path(path):
    with netmux.UnixServer(pathlib.Path(path), Echo) as server:
        assert server.server_address == path and isinstance(server.server_address, str)
        assert os.path.exists(path)
    assert not os.path.exists(path)


def test_a_stale_file_is_replaced(path):
    dead_socket_file(path)
    reactor = netmux.Reactor()
    try:
        with netmux.UnixServer(path, Echo, reactor=reactor):
            client = netmux.connect(path, Recorder, reactor=reactor)
            run_until(reactor, lambda: "made" in client.events)
            client.transport.write(b"fresh")
            run_until(reactor, lambda: client.data == b"fresh")
            client.transport.abort()
            run_until(reactor, lambda: client.lost)
        assert not os.path.exists(path)
    finally:
        reactor.close()


def test_a_live_servers_file_is_address_in_use_and_keeps_serving(serve_unix, path):
    serve_unix(Echo)
    for _ in range(3):
        with pytest.raises(OSError) as info:
            netmux.UnixServer(path, Echo)
        assert info.value.errno == errno.EADDRINUSE
    with unix_client(path) as client:
        client.sendall(b"still")
        assert recv_exactly(client, 5) == b"still"


def test_a_regular_file_is_refused_and_left_alone(path):
    with open(path, "w") as file:
        file.write("precious")
    with pytest.raises(OSError) as info:
        netmux.UnixServer(path, Echo)
    assert info.value.errno == errno.EADDRINUSE and "not a socket" in str(info.value)
    with open(path) as file:
        assert file.read() == "precious"


def test_server_close_leaves_a_file_that_replaced_ours(path):
    server = netmux.UnixServer(path, Echo)
    other = path + "2"
    with socket.socket(socket.AF_UNIX) as theirs:
        theirs.bind(other)
        os.rename(other, path)            # someone moved their socket over ours
        server.server_close()
        assert os.path.exists(path)
    os.unlink(path)


def test_misuse_raises_before_binding_and_leaves_no_file(path):
    closed = netmux.Reactor()
    closed.close()
    for args, kwargs, error in [((path, "Echo"), {}, TypeError),
                                ((path, Echo), {"reactor": closed}, RuntimeError),
                                ((path, Echo), {"max_connections": 0}, ValueError),
                                ((path, Echo), {"idle_timeout": float("nan")}, ValueError),
                                (("", Echo), {}, ValueError)]:
        with pytest.raises(error):
            netmux.UnixServer(*args, **kwargs)
        assert not os.path.exists(path)


def test_an_abstract_name_serves_without_a_file():
    name = f"\0netmux-test-{os.getpid()}-{time.monotonic_ns()}"
    with netmux.UnixServer(name, Echo) as server:
        thread = ServingThread(server)
        try:
            with unix_client(name) as client:
                client.sendall(b"abstract")
                assert recv_exactly(client, 8) == b"abstract"
        finally:
            thread.stop()


# ----------------------------------------------------------------------
# connect(path)
# ----------------------------------------------------------------------
def test_connect_to_a_path_and_a_pathlike(reactor, path):
    with netmux.UnixServer(path, Echo, reactor=reactor):
        for address in (path, pathlib.Path(path), os.fsencode(path)):
            client = netmux.connect(address, Recorder, reactor=reactor, timeout=5)
            assert client.events == []
            run_until(reactor, lambda: "made" in client.events)
            assert client.transport.get_extra_info("peername") in (path, os.fsencode(path))
            assert client.transport.get_extra_info("socket").family == socket.AF_UNIX
            client.transport.write(b"ping")
            run_until(reactor, lambda: client.data == b"ping")
            client.transport.close()
            run_until(reactor, lambda: client.lost)
            assert client.lost == [None]


def test_connect_failures_arrive_as_connection_lost(reactor, path):
    missing = netmux.connect(path, Recorder, reactor=reactor)
    dead_socket_file(path)
    refused = netmux.connect(path, Recorder, reactor=reactor)
    assert missing.events == [] and refused.events == []      # never from inside connect()
    run_until(reactor, lambda: missing.lost and refused.lost)
    assert missing.events == ["lost"] and isinstance(missing.lost[0], FileNotFoundError)
    assert refused.events == ["lost"] and isinstance(refused.lost[0], ConnectionRefusedError)
    assert path in str(refused.lost[0])


def full_backlog(path: str) -> Any:
    """A listener with listen(0) and clients queued until a connect says EAGAIN."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(0)
    queued: List[socket.socket] = []
    for _ in range(16):
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.setblocking(False)
        queued.append(client)
        if client.connect_ex(path) == errno.EAGAIN:
            queued.pop().close()
            return listener, queued
    raise AssertionError("the backlog never filled")


def test_connect_to_a_full_backlog_waits_and_then_connects(reactor, path):
    listener, queued = full_backlog(path)
    try:
        client = netmux.connect(path, Recorder, reactor=reactor, timeout=10)
        deadline = time.monotonic() + 0.2
        while time.monotonic() < deadline:
            reactor.run_once(0.02)
        assert client.events == []          # still trying, not failed, not spinning
        for _ in queued:
            listener.accept()[0].close()    # room in the backlog again
        run_until(reactor, lambda: "made" in client.events)
        client.transport.abort()
        run_until(reactor, lambda: client.lost)
    finally:
        for sock in queued:
            sock.close()
        listener.close()


def test_connect_to_a_full_backlog_times_out_or_is_abandoned_with_the_reactor(path):
    listener, queued = full_backlog(path)
    reactor = netmux.Reactor()
    try:
        timed = netmux.connect(path, Recorder, reactor=reactor, timeout=0.1)
        run_until(reactor, lambda: timed.lost)
        assert isinstance(timed.lost[0], TimeoutError)
        abandoned = netmux.connect(path, Recorder, reactor=reactor)
        reactor.run_once(0)
        reactor.close()                      # while it waits to retry
        assert abandoned.events == ["lost"]
        assert isinstance(abandoned.lost[0], ConnectionAbortedError)
    finally:
        reactor.close()
        for sock in queued:
            sock.close()
        listener.close()


# ----------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------
def test_python_m_netmux_echo_unix_answers_and_removes_the_file_at_sigterm(path):
    server = ServerProcess(["echo", "--unix", path], address_pattern=None)
    try:
        # The file appears at bind(), a moment before listen(): wait for the log.
        server.wait_for_log("server on")
        assert f"echo server on {path} " in server.read_log(), server.log
        with unix_client(path) as client:
            client.sendall(b"over unix")
            assert recv_exactly(client, 9) == b"over unix"
        assert server.stop(signal.SIGTERM) == 0
        assert f"echo server on {path} stopped" in server.log
        assert not os.path.exists(path)
    finally:
        server.stop(signal.SIGKILL)


@pytest.mark.parametrize("server", ["udp-echo"])
def test_servers_without_unix_sockets_refuse_unix_with_a_usage_error(server, path):
    result = subprocess.run([sys.executable, "-m", "netmux", server, "--unix", path], cwd=ROOT,
                            env=child_env(), capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "--unix" in result.stderr and "Traceback" not in result.stderr
    assert not os.path.exists(path)


@pytest.mark.parametrize("server", ["chat", "http", "kv"])
def test_stream_apps_build_a_unix_server_from_unix(server, path):
    from netmux import apps, cli
    args = cli.parse_args([server, "--unix", path])
    reactor = netmux.Reactor()
    try:
        made = apps.load(server).make_server(args, reactor)
        try:
            inner = made.server if server == "kv" else made       # KVServer wraps its server
            assert isinstance(inner, netmux.UnixServer) and made.server_address == path
        finally:
            made.server_close()
        assert not os.path.exists(path)
    finally:
        reactor.close()
