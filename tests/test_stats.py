"""Counters: TCPServer.stats(), the reactor's health(), the Prometheus exposition
(metrics.py, checked by promtool), --stats and --metrics."""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import sys
import time
from typing import Any, Dict, List

import pytest

import netmux
from conftest import ROOT, Echo, ServerProcess, child_env, keeping, recv_exactly, run_and_recv, run_until
from netmux.metrics import CONTENT_TYPE, MetricsServer, exposition, stats_line

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402


def _echo_bytes(reactor: netmux.Reactor, server: Any, sizes: List[int]) -> socket.socket:
    client = socket.create_connection(server.server_address, timeout=5) if isinstance(
        server.server_address, tuple) else _unix_client(server.server_address)
    for size in sizes:
        client.sendall(b"x" * size)
        assert run_and_recv(reactor, client, size) == b"x" * size
    return client


def _unix_client(path: str) -> socket.socket:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(5)
    client.connect(path)
    return client


# ----------------------------------------------------------------------
# stats(): exact counts, over TCP and Unix sockets, plain and layered
# ----------------------------------------------------------------------
@pytest.mark.parametrize("layered", [False, True], ids=["plain", "CountingLayer"])
@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_bytes_and_connections_are_counted_exactly(reactor, kind, layered):
    counter = netmux.ByteCounter()
    factory = (lambda: netmux.CountingLayer(Echo(), counter)) if layered else Echo
    with tempfile.TemporaryDirectory() as directory:
        if kind == "tcp":
            server: Any = netmux.TCPServer(("127.0.0.1", 0), factory, reactor=reactor)
        else:
            server = netmux.UnixServer(os.path.join(directory, "s"), factory, reactor=reactor)
        try:
            first = _echo_bytes(reactor, server, [1, 1000, 70000])
            stats = server.stats()
            assert (stats["open"], stats["total"], stats["bytes_in"], stats["bytes_out"]) == (1, 1, 71001, 71001)
            second = _echo_bytes(reactor, server, [5])
            first.close()
            run_until(reactor, lambda: server.connections == 1)
            stats = server.stats()
            assert (stats["open"], stats["total"], stats["bytes_in"], stats["bytes_out"]) == (1, 2, 71006, 71006)
            second.shutdown(socket.SHUT_WR)        # FIN each way: not counted as bytes
            run_until(reactor, lambda: server.connections == 0)
            second.close()
            stats = server.stats()
            assert (stats["open"], stats["bytes_in"], stats["bytes_out"]) == (0, 71006, 71006)
            if layered:
                assert (counter.bytes_in, counter.bytes_out) == (71006, 71006)
        finally:
            server.server_close()


def test_sendfile_bytes_count_as_sent(reactor):
    class SendFile(netmux.Handler):
        def data_received(self, data: bytes) -> None:
            self.transport.sendfile(payload)

    with tempfile.TemporaryFile() as payload:
        payload.write(b"f" * 300_000)
        payload.flush()
        for path in (None, "unix"):
            with tempfile.TemporaryDirectory() as directory:
                server: Any = (netmux.TCPServer(("127.0.0.1", 0), SendFile, reactor=reactor) if path is None
                               else netmux.UnixServer(os.path.join(directory, "s"), SendFile, reactor=reactor))
                try:
                    client = socket.create_connection(server.server_address, timeout=5) if path is None \
                        else _unix_client(server.server_address)
                    with client:
                        client.sendall(b"go")
                        assert len(run_and_recv(reactor, client, 300_000)) == 300_000
                        assert (server.stats()["bytes_in"], server.stats()["bytes_out"]) == (2, 300_000)
                finally:
                    server.server_close()


def test_paused_connections_and_handler_errors_are_counted(reactor):
    class Pauses(netmux.Handler):
        def data_received(self, data: bytes) -> None:
            if data == b"pause":
                self.transport.pause_reading()
            else:
                raise RuntimeError("a handler error")

    server = netmux.TCPServer(("127.0.0.1", 0), Pauses, reactor=reactor)
    paused = socket.create_connection(server.server_address, timeout=5)
    failing = socket.create_connection(server.server_address, timeout=5)
    try:
        paused.sendall(b"pause")
        run_until(reactor, lambda: server.stats()["paused"] == 1)
        failing.sendall(b"boom")
        run_until(reactor, lambda: server.stats()["handler_errors"] == 1)
        stats = server.stats()
        assert (stats["open"], stats["paused"], stats["accept_backoffs"], stats["tls_handshake_failures"]) == (
            1, 1, 0, 0)
    finally:
        paused.close()
        failing.close()
        server.server_close()


def test_an_accept_back_off_is_counted(reactor):
    """accept() out of descriptors (EMFILE), as the kernel says it: the listening
    socket, seen through a stand-in that fails its first accept."""
    import errno

    class OutOfDescriptors:
        def __init__(self, listener: socket.socket) -> None:
            self.listener, self.failed = listener, False

        def fileno(self) -> int:
            return self.listener.fileno()

        def accept(self) -> Any:
            if not self.failed:
                self.failed = True
                raise OSError(errno.EMFILE, "Too many open files")
            return self.listener.accept()

    server = netmux.TCPServer(("127.0.0.1", 0), Echo, reactor=reactor)
    listener = server.socket
    server.socket = OutOfDescriptors(listener)      # type: ignore[assignment]
    try:
        with socket.create_connection(server.server_address, timeout=5):
            run_until(reactor, lambda: server.stats()["total"] == 1)
        assert server.stats()["accept_backoffs"] == 1
    finally:
        server.socket = listener
        server.server_close()


def test_stats_carry_the_loop_health(reactor):
    server = netmux.TCPServer(("127.0.0.1", 0), Echo, reactor=reactor)
    try:
        reactor.run_once(0)
        stats = server.stats()
        assert stats["loop_turns"] >= 1 and stats["loop_select_seconds"] >= 0
        assert stats["loop_callback_seconds"] >= 0 and stats["draining"] == 0
    finally:
        server.server_close()


# ----------------------------------------------------------------------
# The loop's health
# ----------------------------------------------------------------------
def test_health_counts_turns_and_splits_time_between_select_and_callbacks():
    reactor = netmux.Reactor()
    try:
        reactor.call_soon(time.sleep, 0.05)     # a callback that blocks the loop, on purpose
        reactor.run_once(0)
        reactor.run_once(0.05)                 # nothing to do: it waits
        health = reactor.health()
        assert health["turns"] == 2
        assert health["callback_seconds"] >= 0.05 and health["select_seconds"] >= 0.04
        assert health["slowest_callback"] == "" and health["slowest_callback_seconds"] == 0.0
    finally:
        reactor.close()


def test_time_callbacks_names_the_slowest_callback_of_the_interval():
    reactor = netmux.Reactor(time_callbacks=True)

    def blocks_the_loop() -> None:
        time.sleep(0.05)

    try:
        reactor.call_soon(blocks_the_loop)
        reactor.call_later(0, lambda: None)
        reactor.run_once(0)
        health = reactor.health(reset_slowest=True)
        assert "blocks_the_loop" in str(health["slowest_callback"])
        assert health["slowest_callback_seconds"] >= 0.05
        assert reactor.health()["slowest_callback"] == ""          # a new interval
    finally:
        reactor.close()


def test_a_slow_handler_is_named_through_its_layers():
    reactor = netmux.Reactor(time_callbacks=True)

    class SlowHandler(netmux.Handler):
        def data_received(self, data: bytes) -> None:
            time.sleep(0.05)
            self.transport.write(data)

    server = netmux.TCPServer(("127.0.0.1", 0), lambda: netmux.CountingLayer(SlowHandler()), reactor=reactor)
    try:
        with socket.create_connection(server.server_address, timeout=5) as client:
            client.sendall(b"x")
            assert run_and_recv(reactor, client, 1) == b"x"
        name = str(reactor.health()["slowest_callback"])
        assert "_read_ready" in name and "SlowHandler" in name
    finally:
        server.server_close()
        reactor.close()


# ----------------------------------------------------------------------
# The exposition format, promtool, the endpoint
# ----------------------------------------------------------------------
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"\})? '
                     r'(-?[0-9.e+-]+|NaN|[+-]Inf)$')


def _check_exposition(text: str) -> Dict[str, float]:
    """A strict reading of the text format (0.0.4): HELP, then TYPE, then samples of
    that name; counters end in _total. Returns name -> value."""
    values: Dict[str, float] = {}
    lines = text.split("\n")
    assert lines[-1] == "" and all(lines[:-1])
    typed = None
    for line in lines[:-1]:
        if line.startswith("# HELP "):
            typed = None
            name = line.split()[2]
        elif line.startswith("# TYPE "):
            _, _, name_in_type, kind = line.split(" ")
            assert name_in_type == name and kind in ("counter", "gauge")
            assert (kind == "counter") == name.endswith("_total")
            typed = name
        else:
            match = _SAMPLE.match(line)
            assert match and match.group(1) == typed, line
            values[typed] = float(match.group(3))
    return values


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.sampled_from(["open", "total", "bytes_in", "loop_select_seconds", "unknown"]),
                       st.one_of(st.integers(0, 2 ** 64), st.floats(allow_nan=True, allow_infinity=True))),
       st.text(max_size=30))
def test_any_stats_make_a_well_formed_exposition(stats, callback):
    stats = dict(stats, loop_slowest_callback=callback, loop_slowest_callback_seconds=0.5)
    _check_exposition(exposition(stats).decode())


def test_promtool_accepts_the_exposition_and_counters_move_with_traffic(reactor, tmp_path):
    if shutil.which("promtool") is None:
        pytest.skip("needs prometheus (promtool)")
    server = netmux.TCPServer(("127.0.0.1", 0), Echo, reactor=reactor)
    try:
        before = exposition(server.stats()).decode()
        _echo_bytes(reactor, server, [123]).close()
        after = exposition(server.stats()).decode()
        for text in (before, after):
            result = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True,
                                    timeout=30)
            assert result.returncode == 0, result.stdout + result.stderr
        assert _check_exposition(after)["netmux_received_bytes_total"] == 123
        assert _check_exposition(after)["netmux_connections_total"] == 1
        assert _check_exposition(before)["netmux_received_bytes_total"] == 0
    finally:
        server.server_close()


def _http(reactor: netmux.Reactor, address: Any, request: bytes) -> bytes:
    with socket.create_connection(address, timeout=5) as client:
        client.sendall(request)
        return run_and_recv(reactor, client)


def test_the_metrics_endpoint_answers_a_scrape_and_nothing_else(reactor):
    server = netmux.TCPServer(("127.0.0.1", 0), Echo, reactor=reactor)
    metrics = MetricsServer(("127.0.0.1", 0), server.stats, reactor=reactor)
    try:
        answer = _http(reactor, metrics.server_address, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK") and b"Content-Type: " + CONTENT_TYPE in head
        assert b"Content-Length: %d" % len(body) in head
        _check_exposition(body.decode())
        assert _http(reactor, metrics.server_address, b"HEAD /metrics HTTP/1.0\n\n").endswith(b"\r\n\r\n")
        assert _http(reactor, metrics.server_address, b"GET / HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404")
        assert _http(reactor, metrics.server_address, b"POST /metrics HTTP/1.1\r\n\r\n").startswith(
            b"HTTP/1.1 405")
        assert _http(reactor, metrics.server_address, b"nonsense\r\n\r\n").startswith(b"HTTP/1.1 400")
        assert _http(reactor, metrics.server_address, b"GET /" + b"a" * 9000).startswith(b"HTTP/1.1 431")
        assert server.stats()["total"] == 0             # scrapes are not the watched server's traffic
    finally:
        metrics.server_close()
        server.server_close()
    with pytest.raises(TypeError):
        MetricsServer(("127.0.0.1", 0), "not callable", reactor=reactor)


def test_a_scraper_that_never_finishes_its_head_is_closed(reactor):
    from netmux.testing import drive
    from netmux.metrics import HEAD_TIMEOUT, MetricsHandler
    conversation = drive(lambda: MetricsHandler(dict), [b"GET /metr"], eof=False)
    assert conversation.closed and conversation.written == b"" and conversation.time == HEAD_TIMEOUT


def test_the_stats_line_names_every_count_and_the_loop_load():
    line = stats_line({"open": 2, "loop_callback_seconds": 3.0, "loop_select_seconds": 1.0,
                       "loop_slowest_callback": ""},
                      {"loop_callback_seconds": 1.0, "loop_select_seconds": 0.0})
    assert line == ("open=2 loop_callback_seconds=3.000 loop_select_seconds=1.000 loop_slowest_callback=- "
                    "loop_busy=66.7%")


# ----------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------
@pytest.mark.clients
def test_the_command_line_logs_stats_and_serves_metrics_that_promtool_accepts():
    server = ServerProcess(["echo", "--port", "0", "--stats", "0.2", "--metrics", "127.0.0.1:0"])
    try:
        metrics_port = int(server.wait_for_log(r"metrics on http://127\.0\.0\.1:(\d+)/metrics").group(1))
        with socket.create_connection(server.address, timeout=5) as client:
            client.sendall(b"hello")
            assert recv_exactly(client, 5) == b"hello"
            server.wait_for_log(r"stats: open=1 total=1 bytes_in=5 bytes_out=5 ")
        with socket.create_connection(("127.0.0.1", metrics_port), timeout=5) as scrape:
            scrape.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            scrape.settimeout(5)
            answer = b""
            while True:
                piece = scrape.recv(65536)
                if not piece:
                    break
                answer += piece
        body = answer.partition(b"\r\n\r\n")[2]
        result = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, timeout=30)
        assert result.returncode == 0, result.stdout + result.stderr
        assert _check_exposition(body.decode())["netmux_sent_bytes_total"] == 5
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("option", [["--stats", "0"], ["--stats", "nan"], ["--metrics", "9100"],
                                    ["--metrics", "host:99999"], ["--metrics", ":9100"]])
def test_bad_stats_and_metrics_values_are_usage_errors(option):
    result = subprocess.run([sys.executable, "-m", "netmux", *option], capture_output=True,
                            env=child_env(), cwd=ROOT, timeout=30)
    assert result.returncode == 2 and option[0].encode() in result.stderr


def test_a_metrics_address_in_use_is_a_one_line_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "netmux", "--port", "0",
                                 "--metrics", f"127.0.0.1:{port}"], capture_output=True, env=child_env(),
                                cwd=ROOT, timeout=30)
    assert result.returncode == 1 and b"cannot serve metrics" in result.stderr


# ----------------------------------------------------------------------
# The counts read at close: one getsockopt when the kernel's answer is enough
# ----------------------------------------------------------------------
class _SendAndClose(netmux.Handler):
    """Writes a reply bigger than the peer's window will take at once, then closes:
    the count at close must see the bytes still queued (SIOCOUTQ asked)."""

    def data_received(self, data: bytes) -> None:
        self.transport.write(b"y" * 3_000_000)
        self.transport.close()


def test_bytes_queued_at_close_are_counted_as_sent(reactor):
    server = netmux.TCPServer(("127.0.0.1", 0), _SendAndClose, reactor=reactor)
    try:
        with socket.create_connection(server.server_address, timeout=5) as client:
            client.sendall(b"go")
            run_until(reactor, lambda: server.stats()["bytes_in"] == 2)
            got = 0
            deadline = time.monotonic() + 10
            client.settimeout(0.01)
            while got < 3_000_000 and time.monotonic() < deadline:
                reactor.run_once(0)
                try:
                    chunk = client.recv(65536)
                except socket.timeout:
                    continue
                if not chunk:
                    break
                got += len(chunk)
            assert got == 3_000_000
            run_until(reactor, lambda: server.connections == 0)
        stats = server.stats()
        assert (stats["bytes_in"], stats["bytes_out"]) == (2, 3_000_000)
    finally:
        server.server_close()


@pytest.mark.parametrize(("unacked", "notsent", "empty"), [(0, 0, True), (1, 0, False), (0, 5, False)])
def test_the_send_queue_is_read_from_tcp_info(unacked, notsent, empty):
    from netmux import transport
    info = bytearray(232)
    info[24:28] = unacked.to_bytes(4, sys.byteorder)
    info[144:148] = notsent.to_bytes(4, sys.byteorder)
    assert transport._send_queue_empty(bytes(info)) is empty
    assert transport._send_queue_empty(bytes(info[:144])) is False     # a kernel too old to say
