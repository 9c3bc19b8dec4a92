"""Acceptance tests written from /work/shared/API.md alone: the public contract, as a user reads it.

Each test pins one statement of API.md over real loopback sockets (or netmux.testing where
the page says so). Only public names are used: no private attribute, no module internals.
"""
from __future__ import annotations

import asyncio
import errno
import functools
import gc
import logging
import math
import os
import pathlib
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, List

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import netmux
import netmux.framing
import netmux.testing
from tests.conftest import run_until, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOOP = ("127.0.0.1", 0)


# --------------------------------------------------------------------------- helpers

def client(srv: Any, timeout: float = 5.0) -> socket.socket:
    """A blocking client socket connected to a TCP server's address."""
    return socket.create_connection(srv.server_address[:2], timeout=timeout)


def spin(r: netmux.Reactor, turns: int = 10) -> None:
    """Run a bounded number of short loop turns (to show something does NOT happen)."""
    for _ in range(turns):
        r.run_once(0.01)


def read_all(r: netmux.Reactor, sock: socket.socket, count: int, timeout: float = 10.0) -> bytes:
    """Read ``count`` bytes from a client while the reactor turns in this same thread."""
    sock.setblocking(False)
    got = bytearray()
    deadline = time.monotonic() + timeout
    while len(got) < count:
        assert time.monotonic() < deadline, f"only {len(got)} of {count} bytes"
        r.run_once(0.005)
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            continue
        if not chunk:
            break
        got += chunk
    return bytes(got)


def read_to_eof(r: netmux.Reactor, sock: socket.socket, timeout: float = 10.0) -> bytes:
    sock.setblocking(False)
    got = bytearray()
    deadline = time.monotonic() + timeout
    while True:
        assert time.monotonic() < deadline, f"no EOF after {len(got)} bytes"
        r.run_once(0.005)
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            continue
        except ConnectionResetError:
            return bytes(got)
        if not chunk:
            return bytes(got)
        got += chunk


class Record(netmux.Handler):
    """Keeps every event of one connection."""

    def __init__(self) -> None:
        self.events: List[Any] = []
        self.data = bytearray()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self) -> Any:
        self.events.append("eof")
        return None

    def connection_lost(self, exc: Any) -> None:
        self.events.append(("lost", exc))


class Echo(netmux.Handler):
    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def made_factory(store: List[Any], cls: Callable[[], Any] = Record) -> Callable[[], Any]:
    def factory() -> Any:
        handler = cls()
        store.append(handler)
        return handler
    return factory


def warnings_with_traceback(caplog: Any, level: int = logging.WARNING) -> List[logging.LogRecord]:
    return [rec for rec in caplog.records
            if rec.name.startswith("netmux") and rec.levelno >= level and rec.exc_info]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(LOOP)
        return sock.getsockname()[1]


@pytest.fixture
def r():
    reactor = netmux.Reactor()
    yield reactor
    reactor.close()


# --------------------------------------------------------------------------- layers

PUBLIC_NAMES = [
    "Reactor", "Handler", "Transport", "TCPTransport", "TCPServer", "UnixServer", "UDPServer",
    "DatagramHandler", "connect", "LineFramer", "NetstringFramer", "LengthPrefixFramer",
    "FramingError", "FramedHandler", "LineHandler", "StreamHandler", "IncompleteReadError",
    "sleep", "timeout", "CancelledError",
]


@pytest.mark.parametrize("name", PUBLIC_NAMES)
def test_layers_every_public_name_is_exported_from_netmux(name):
    assert hasattr(netmux, name)


@pytest.mark.parametrize("name", ["LineFramer", "NetstringFramer", "LengthPrefixFramer", "FramingError"])
def test_layers_netmux_reexports_the_framing_module_names(name):
    assert getattr(netmux, name) is getattr(netmux.framing, name)


def test_layers_error_types_have_their_documented_bases():
    assert issubclass(netmux.FramingError, ValueError)
    assert issubclass(netmux.IncompleteReadError, EOFError)
    assert issubclass(netmux.CancelledError, BaseException)
    assert not issubclass(netmux.CancelledError, Exception)


def test_layers_framing_imports_no_socket_and_no_reactor():
    code = ("import sys; import netmux.framing as f; "
            "print(sorted(n for n in vars(f) if n in ('socket', 'selectors', 'reactor')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


# --------------------------------------------------------------------------- reactor

def test_reactor_call_soon_runs_in_fifo_order(r):
    seen: List[int] = []
    for i in range(20):
        r.call_soon(seen.append, i)
    r.run_once(0)
    assert seen == list(range(20))


def test_reactor_call_soon_returns_a_cancellable_timer(r):
    seen: List[int] = []
    timer = r.call_soon(seen.append, 1)
    r.call_soon(seen.append, 2)
    timer.cancel()
    r.run_once(0)
    assert seen == [2]


def test_reactor_call_later_runs_in_deadline_order(r):
    seen: List[str] = []
    r.call_later(0.06, seen.append, "c")
    r.call_later(0.02, seen.append, "a")
    r.call_later(0.04, seen.append, "b")
    run_until(r, lambda: len(seen) == 3)
    assert seen == ["a", "b", "c"]


def test_reactor_call_later_does_not_run_early(r):
    fired: List[float] = []
    start = time.monotonic()
    r.call_later(0.1, lambda: fired.append(time.monotonic()))
    run_until(r, lambda: fired)
    assert fired[0] - start >= 0.09


def test_reactor_call_at_uses_the_reactor_clock(r):
    assert abs(r.time() - time.monotonic()) < 1.0
    seen: List[str] = []
    now = r.time()
    r.call_at(now + 0.04, seen.append, "late")
    r.call_at(now + 0.01, seen.append, "early")
    r.call_at(now - 5, seen.append, "past")
    run_until(r, lambda: len(seen) == 3)
    assert seen == ["past", "early", "late"]


def test_reactor_cancelled_call_later_never_runs(r):
    seen: List[int] = []
    r.call_later(0.01, seen.append, 1).cancel()
    r.call_later(0.03, seen.append, 2)
    run_until(r, lambda: seen)
    spin(r, 3)
    assert seen == [2]


@pytest.mark.parametrize("method", ["call_later", "call_at"])
def test_reactor_nan_delay_or_deadline_is_a_value_error(r, method):
    with pytest.raises(ValueError):
        getattr(r, method)(math.nan, lambda: None)


@pytest.mark.parametrize("method", ["call_later", "call_at"])
def test_reactor_infinite_delay_never_runs_and_does_not_block_polls(r, method):
    seen: List[int] = []
    timer = getattr(r, method)(math.inf, seen.append, 1)
    start = time.monotonic()
    r.run_once(0)
    r.run_once(0.05)
    assert time.monotonic() - start < 1.0
    assert seen == []
    timer.cancel()


def test_reactor_negative_delay_runs_soon(r):
    seen: List[int] = []
    r.call_later(-1, seen.append, 1)
    run_until(r, lambda: seen)


@pytest.mark.parametrize("method,args", [
    ("call_soon", ()), ("call_later", (0.1,)), ("call_at", (0.0,)), ("call_soon_threadsafe", ()),
])
def test_reactor_scheduling_on_a_closed_reactor_is_a_runtime_error(method, args):
    r = netmux.Reactor()
    r.close()
    with pytest.raises(RuntimeError):
        getattr(r, method)(*args, lambda: None)


def test_reactor_close_twice_is_harmless():
    r = netmux.Reactor()
    r.close()
    r.close()


@pytest.mark.parametrize("timeout", [0, -1, -math.inf])
def test_reactor_run_once_with_non_positive_timeout_polls_and_returns(r, timeout):
    start = time.monotonic()
    r.run_once(timeout)
    assert time.monotonic() - start < 0.5


def test_reactor_run_once_runs_callbacks_already_queued(r):
    seen: List[int] = []
    r.call_soon(seen.append, 1)
    r.run_once(0)
    assert seen == [1]


def test_reactor_run_once_returns_at_its_timeout_when_idle(r):
    start = time.monotonic()
    r.run_once(0.05)
    assert 0.03 <= time.monotonic() - start < 1.0


def test_reactor_run_until_stop(r):
    seen: List[int] = []
    r.call_soon(seen.append, 1)
    r.call_later(0.02, r.stop)
    r.run()
    assert seen == [1]


def test_reactor_call_soon_threadsafe_wakes_a_blocked_select_at_once(r):
    seen: List[float] = []
    thread = threading.Thread(target=r.run_once, args=(30,))
    thread.start()
    time.sleep(0.05)          # let it block in select: the point of this test
    start = time.monotonic()
    r.call_soon_threadsafe(lambda: seen.append(time.monotonic()))
    thread.join(5)
    assert not thread.is_alive()
    assert seen and seen[0] - start < 1.0


def test_reactor_call_soon_threadsafe_stops_run_from_another_thread(r):
    thread = threading.Thread(target=r.run)
    thread.start()
    time.sleep(0.05)
    start = time.monotonic()
    r.call_soon_threadsafe(r.stop)
    thread.join(5)
    assert not thread.is_alive()
    assert time.monotonic() - start < 1.0


def test_reactor_callback_exception_is_logged_at_error_and_loop_goes_on(r, caplog):
    caplog.set_level(logging.DEBUG, logger="netmux")
    seen: List[int] = []

    def boom() -> None:
        raise ZeroDivisionError("boom")
    r.call_soon(boom)
    r.call_soon(seen.append, 1)
    r.call_later(0.01, boom)
    r.call_later(0.02, seen.append, 2)
    run_until(r, lambda: len(seen) == 2)
    errors = [rec for rec in caplog.records if rec.name.startswith("netmux") and rec.levelno == logging.ERROR]
    assert len(errors) == 2
    assert all(rec.exc_info and rec.exc_info[0] is ZeroDivisionError for rec in errors)


def test_reactor_reader_callback_exception_is_logged_and_loop_goes_on(r, caplog):
    caplog.set_level(logging.DEBUG, logger="netmux")
    a, b = socket.socketpair()
    with a, b:
        def boom() -> None:
            a.recv(10)
            raise KeyError("reader")
        r.add_reader(a, boom)
        b.send(b"x")
        run_until(r, lambda: any(rec.levelno == logging.ERROR for rec in caplog.records))
        seen: List[int] = []
        r.call_soon(seen.append, 1)
        run_until(r, lambda: seen)
        r.remove_reader(a)


@pytest.mark.parametrize("exc", [SystemExit, KeyboardInterrupt])
def test_reactor_system_exit_and_keyboard_interrupt_propagate(r, exc):
    def raiser() -> None:
        raise exc()
    r.call_soon(raiser)
    with pytest.raises(exc):
        r.run_once(0)
    r.call_soon(raiser)
    with pytest.raises(exc):
        r.run()


def test_reactor_add_and_remove_reader(r):
    a, b = socket.socketpair()
    with a, b:
        got: List[bytes] = []
        r.add_reader(a, lambda tag: got.append(tag + a.recv(10)), b"r:")
        b.send(b"hi")
        run_until(r, lambda: got)
        assert got == [b"r:hi"]
        r.remove_reader(a)
        b.send(b"again")
        spin(r, 5)
        assert got == [b"r:hi"]


def test_reactor_add_and_remove_writer(r):
    a, b = socket.socketpair()
    with a, b:
        count: List[int] = []
        r.add_writer(a, count.append, 1)
        run_until(r, lambda: count)
        r.remove_writer(a)
        n = len(count)
        spin(r, 5)
        assert len(count) == n


def test_reactor_serves_every_server_built_on_it_with_run(r):
    srv = netmux.TCPServer(LOOP, Echo, reactor=r)
    udp = netmux.UDPServer(LOOP, UdpEcho, reactor=r)
    try:
        thread = threading.Thread(target=r.run)
        thread.start()
        try:
            with client(srv) as sock:
                sock.sendall(b"ping")
                assert sock.recv(10) == b"ping"
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.settimeout(5)
                u.sendto(b"dgram", udp.server_address)
                assert u.recvfrom(100)[0] == b"DGRAM"
        finally:
            r.call_soon_threadsafe(r.stop)
            thread.join(5)
    finally:
        srv.server_close()
        udp.server_close()


# --------------------------------------------------------------------------- handler

def test_handler_defaults():
    assert netmux.Handler.transport is None
    h = netmux.Handler()
    assert h.eof_received() is None


class ProtocolEcho(asyncio.Protocol):
    lost: List[Any] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data.upper())

    def connection_lost(self, exc: Any) -> None:
        ProtocolEcho.lost.append(exc)


def test_handler_asyncio_protocol_subclass_works_unchanged(r):
    ProtocolEcho.lost = []
    srv = netmux.TCPServer(LOOP, ProtocolEcho, reactor=r)
    try:
        with client(srv) as sock:
            sock.sendall(b"hello")
            assert read_all(r, sock, 5) == b"HELLO"
            sock.shutdown(socket.SHUT_WR)
            assert read_to_eof(r, sock) == b""
        run_until(r, lambda: ProtocolEcho.lost)
        assert ProtocolEcho.lost == [None]
    finally:
        srv.server_close()


def test_handler_eof_falsy_closes_after_flushing(r):
    class Reply(netmux.Handler):
        def eof_received(self) -> None:
            self.transport.write(b"z" * 3_000_000)
    srv = netmux.TCPServer(LOOP, Reply, reactor=r)
    try:
        with client(srv) as sock:
            sock.shutdown(socket.SHUT_WR)
            assert read_to_eof(r, sock) == b"z" * 3_000_000
    finally:
        srv.server_close()


def test_handler_eof_true_keeps_write_side_open(r):
    handlers: List[Any] = []

    class Keep(Record):
        def eof_received(self) -> bool:
            super().eof_received()
            self.transport.reactor.call_later(0.02, self.late)
            return True

        def late(self) -> None:
            self.transport.write(b"late reply")
            self.transport.close()
    srv = netmux.TCPServer(LOOP, made_factory(handlers, Keep), reactor=r)
    try:
        with client(srv) as sock:
            sock.shutdown(socket.SHUT_WR)
            assert read_to_eof(r, sock) == b"late reply"
        run_until(r, lambda: ("lost", None) in handlers[0].events)
        assert handlers[0].events == ["made", "eof", ("lost", None)]
    finally:
        srv.server_close()


class Boom(Exception):
    pass


def _failing(method: str) -> Callable[[], Any]:
    """A Record whose ``method`` raises Boom (after recording)."""
    class Failing(Record):
        pass

    def raising(self: Any, *args: Any) -> Any:
        getattr(Record, method)(self, *args)
        raise Boom(method)
    setattr(Failing, method, raising)
    return Failing


@pytest.mark.parametrize("method", ["connection_made", "data_received", "eof_received"])
def test_handler_exception_logs_warning_aborts_that_connection_only(r, caplog, method):
    caplog.set_level(logging.DEBUG, logger="netmux")
    handlers: List[Any] = []
    srv = netmux.TCPServer(LOOP, made_factory(handlers, _failing(method)), reactor=r)
    good = netmux.TCPServer(LOOP, Echo, reactor=r)
    try:
        with client(srv) as bad, client(good) as ok:
            bad.sendall(b"data")
            if method == "eof_received":
                bad.shutdown(socket.SHUT_WR)
            read_to_eof(r, bad)
            ok.sendall(b"still here")
            assert read_all(r, ok, 10) == b"still here"
        run_until(r, lambda: handlers and handlers[0].events[-1][0] == "lost")
        lost = [e for e in handlers[0].events if isinstance(e, tuple)]
        assert len(lost) == 1
        records = warnings_with_traceback(caplog)
        assert len([rec for rec in records if rec.exc_info[0] is Boom]) == 1
    finally:
        srv.server_close()
        good.server_close()


def test_handler_factory_exception_is_logged_and_server_goes_on(r, caplog):
    caplog.set_level(logging.DEBUG, logger="netmux")
    calls: List[int] = []

    def factory() -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise Boom("factory")
        return Echo()
    srv = netmux.TCPServer(LOOP, factory, reactor=r)
    try:
        with client(srv) as first:
            first.sendall(b"x")
            read_to_eof(r, first)
        with client(srv) as second:
            second.sendall(b"ok")
            assert read_all(r, second, 2) == b"ok"
        assert [rec.exc_info[0] for rec in warnings_with_traceback(caplog)] == [Boom]
    finally:
        srv.server_close()


def test_handler_connection_lost_exception_is_logged_once(r, caplog):
    caplog.set_level(logging.DEBUG, logger="netmux")
    handlers: List[Any] = []
    srv = netmux.TCPServer(LOOP, made_factory(handlers, _failing("connection_lost")), reactor=r)
    try:
        with client(srv):
            run_until(r, lambda: handlers)
        run_until(r, lambda: warnings_with_traceback(caplog))
        spin(r, 3)
        assert len([e for e in handlers[0].events if isinstance(e, tuple)]) == 1
        assert len(warnings_with_traceback(caplog)) == 1
    finally:
        srv.server_close()


def test_handler_default_backpressure_bounds_an_echo_to_a_peer_that_never_reads(r):
    handlers: List[Any] = []
    srv = netmux.TCPServer(LOOP, made_factory(handlers, Echo), reactor=r)
    try:
        with client(srv) as sock:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            sent = 0
            chunk = b"e" * 65536
            stalled = 0
            deadline = time.monotonic() + 20
            while sent < (256 << 20) and stalled < 50 and time.monotonic() < deadline:
                r.run_once(0.002)
                try:
                    sent += sock.send(chunk)
                    stalled = 0
                except BlockingIOError:
                    stalled += 1
            assert stalled >= 50, f"the peer could push {sent} bytes: the echo did not push back"
            transport = handlers[0].transport
            assert not transport.is_reading()
            assert transport.get_write_buffer_size() <= 4 * 65536 + 4 * 1048576
            assert read_all(r, sock, sent) == b"e" * sent
    finally:
        srv.server_close()


# --------------------------------------------------------------------------- transport

@pytest.fixture
def pair(r):
    """(server-side handler, client socket) over real loopback, reactor turned in this thread."""
    handlers: List[Any] = []
    srv = netmux.TCPServer(LOOP, made_factory(handlers), reactor=r)
    sock = client(srv)
    run_until(r, lambda: handlers)
    yield handlers[0], sock
    sock.close()
    srv.server_close()


@pytest.mark.parametrize("bad", ["text", 42, None, [b"x"]])
def test_transport_write_of_non_bytes_is_a_type_error(pair, bad):
    handler, _ = pair
    with pytest.raises(TypeError):
        handler.transport.write(bad)


def test_transport_write_accepts_any_bytes_like(r, pair):
    handler, sock = pair
    t = handler.transport
    t.write(b"a")
    t.write(bytearray(b"b"))
    t.write(memoryview(b"xcx")[1:2])
    t.write(b"")
    assert read_all(r, sock, 3) == b"abc"


@pytest.mark.parametrize("how", ["close", "abort"])
def test_transport_write_after_close_or_abort_is_a_connection_error(pair, how):
    handler, _ = pair
    getattr(handler.transport, how)()
    with pytest.raises(ConnectionError):
        handler.transport.write(b"late")


def test_transport_write_after_connection_lost_is_a_connection_error(r, pair):
    handler, sock = pair
    sock.close()
    run_until(r, lambda: handler.events[-1][0] == "lost")
    with pytest.raises(ConnectionError):
        handler.transport.write(b"late")


def test_transport_write_after_write_eof_is_a_runtime_error(pair):
    handler, _ = pair
    handler.transport.write_eof()
    with pytest.raises(RuntimeError):
        handler.transport.write(b"late")


def test_transport_writelines_takes_any_iterable(r, pair):
    handler, sock = pair
    handler.transport.writelines(bytes([c]) for c in b"gen")
    handler.transport.writelines([b"-", bytearray(b"list"), memoryview(b"!")])
    assert read_all(r, sock, 8) == b"gen-list!"


def test_transport_write_eof_half_closes_after_flush(r, pair):
    handler, sock = pair
    t = handler.transport
    assert t.can_write_eof() is True
    t.write(b"q" * 2_000_000)
    t.write_eof()
    assert read_to_eof(r, sock) == b"q" * 2_000_000
    sock.setblocking(True)
    sock.sendall(b"still open")
    run_until(r, lambda: bytes(handler.data) == b"still open")


def test_transport_close_flushes_everything_then_closes(r, pair):
    handler, sock = pair
    t = handler.transport
    t.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    payload = os.urandom(1 << 20) * 2
    t.write(payload)
    t.close()
    assert t.is_closing()
    assert read_to_eof(r, sock) == payload
    run_until(r, lambda: handler.events[-1] == ("lost", None))


def test_transport_abort_drops_the_buffer(r, pair):
    handler, sock = pair
    t = handler.transport
    t.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    t.write(b"d" * (16 << 20))
    t.abort()
    assert t.is_closing()
    assert len(read_to_eof(r, sock)) < 16 << 20
    run_until(r, lambda: handler.events[-1][0] == "lost")
    assert len([e for e in handler.events if isinstance(e, tuple)]) == 1


def test_transport_is_closing_is_false_while_open(pair):
    handler, _ = pair
    assert handler.transport.is_closing() is False


def test_transport_pause_and_resume_reading(r, pair):
    handler, sock = pair
    t = handler.transport
    assert t.is_reading() is True
    t.pause_reading()
    assert t.is_reading() is False
    sock.sendall(b"held")
    spin(r, 10)
    assert handler.data == b""
    t.resume_reading()
    assert t.is_reading() is True
    run_until(r, lambda: handler.data == b"held")


def test_transport_write_buffer_size_counts_unsent_bytes(r, pair):
    handler, sock = pair
    t = handler.transport
    assert t.get_write_buffer_size() == 0
    t.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    t.write(b"w" * (4 << 20))
    assert 0 < t.get_write_buffer_size() <= 4 << 20
    assert read_all(r, sock, 4 << 20) == b"w" * (4 << 20)
    run_until(r, lambda: t.get_write_buffer_size() == 0)


class FlowRecorder(Record):
    def pause_writing(self) -> None:
        self.events.append(("pause", self.transport.get_write_buffer_size()))

    def resume_writing(self) -> None:
        self.events.append(("resume", self.transport.get_write_buffer_size()))


@pytest.fixture
def flow(r):
    handlers: List[Any] = []
    srv = netmux.TCPServer(LOOP, made_factory(handlers, FlowRecorder), reactor=r)
    sock = client(srv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    run_until(r, lambda: handlers)
    handlers[0].transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    yield handlers[0], sock
    sock.close()
    srv.server_close()


def _fill_until_paused(handler: Any, step: int = 1024, limit: int = 16 << 20) -> int:
    t = handler.transport
    written = 0
    while not any(e[0] == "pause" for e in handler.events if isinstance(e, tuple)) and written < limit:
        t.write(b"p" * step)
        written += step
    return written


def test_transport_default_high_water_is_64_kib_and_low_is_a_quarter(r, flow):
    handler, sock = flow
    written = _fill_until_paused(handler)
    pauses = [e for e in handler.events if isinstance(e, tuple) and e[0] == "pause"]
    assert len(pauses) == 1
    assert 65536 < pauses[0][1] <= 65536 + 1024
    read_all(r, sock, written)
    run_until(r, lambda: any(isinstance(e, tuple) and e[0] == "resume" for e in handler.events))
    resume = [e for e in handler.events if isinstance(e, tuple) and e[0] == "resume"]
    assert len(resume) == 1 and resume[0][1] <= 16384


def test_transport_set_write_buffer_limits_high_only_sets_low_to_a_quarter(r, flow):
    handler, sock = flow
    t = handler.transport
    t.set_write_buffer_limits(high=40000)
    written = _fill_until_paused(handler, step=100)
    pause = [e for e in handler.events if isinstance(e, tuple) and e[0] == "pause"][0]
    assert 40000 < pause[1] <= 40100
    # drain slowly: resume must come at or below 10000
    sock.setblocking(False)
    got = 0
    deadline = time.monotonic() + 10
    while not any(isinstance(e, tuple) and e[0] == "resume" for e in handler.events):
        assert time.monotonic() < deadline
        r.run_once(0.002)
        try:
            got += len(sock.recv(512))
        except BlockingIOError:
            pass
    resume = [e for e in handler.events if isinstance(e, tuple) and e[0] == "resume"][0]
    assert resume[1] <= 10000
    read_all(r, sock, written - got)


@pytest.mark.parametrize("high,low", [(-1, None), (10, 20), (None, -5)])
def test_transport_set_write_buffer_limits_rejects_bad_values(pair, high, low):
    handler, _ = pair
    with pytest.raises(ValueError):
        handler.transport.set_write_buffer_limits(high=high, low=low)


def test_transport_get_extra_info(r, pair):
    handler, sock = pair
    t = handler.transport
    assert t.get_extra_info("peername") == sock.getsockname()
    assert t.get_extra_info("sockname") == sock.getpeername()
    assert isinstance(t.get_extra_info("socket"), socket.socket) or hasattr(t.get_extra_info("socket"), "fileno")
    assert t.get_extra_info("no such name") is None
    assert t.get_extra_info("no such name", "dflt") == "dflt"


def test_transport_reactor_and_interface(r, pair):
    handler, _ = pair
    assert handler.transport.reactor is r
    assert isinstance(handler.transport, netmux.Transport)
    assert isinstance(handler.transport, netmux.TCPTransport)


def test_transport_sendfile_in_order_with_write_and_leaves_file_open(r, pair, tmp_path):
    handler, sock = pair
    path = tmp_path / "data.bin"
    content = os.urandom(300_000)
    path.write_bytes(content)
    with open(path, "rb") as f:
        t = handler.transport
        t.write(b"<")
        t.sendfile(f, 5, 200_000)
        t.write(b"|")
        t.sendfile(f)
        t.write(b">")
        expected = b"<" + content[5:200_005] + b"|" + content + b">"
        assert read_all(r, sock, len(expected)) == expected
        assert not f.closed
        f.seek(0)
        assert f.read(3) == content[:3]


def test_transport_sendfile_then_close_flushes(r, pair, tmp_path):
    handler, sock = pair
    path = tmp_path / "data.bin"
    path.write_bytes(b"0123456789" * 50_000)
    with open(path, "rb") as f:
        handler.transport.sendfile(f, offset=10)
        handler.transport.close()
        assert read_to_eof(r, sock) == (b"0123456789" * 50_000)[10:]
        assert not f.closed


# --------------------------------------------------------------------------- TCPServer

def test_server_address_resolves_port_zero(r):
    with netmux.TCPServer(LOOP, Echo, reactor=r) as srv:
        host, port = srv.server_address[:2]
        assert host == "127.0.0.1" and port > 0


def test_server_ipv6_loopback(r):
    try:
        socket.socket(socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6")
    with netmux.TCPServer(("::1", 0), Echo, reactor=r) as srv:
        assert srv.server_address[0] == "::1" and srv.server_address[1] > 0
        with socket.create_connection(srv.server_address[:2], timeout=5) as sock:
            sock.sendall(b"v6")
            assert read_all(r, sock, 2) == b"v6"


def test_server_binds_and_listens_at_construction(r):
    with netmux.TCPServer(LOOP, Echo, reactor=r) as srv:
        with client(srv):     # the kernel completes the handshake before any loop turn
            pass


@pytest.mark.parametrize("factory", [Echo, lambda: Echo(), functools.partial(Echo)])
def test_server_any_zero_argument_callable_is_a_factory(r, factory):
    with netmux.TCPServer(LOOP, factory, reactor=r) as srv, client(srv) as sock:
        sock.sendall(b"f")
        assert read_all(r, sock, 1) == b"f"


@pytest.mark.parametrize("bad", [None, 42, "Echo", Echo()])
def test_server_non_callable_factory_is_a_type_error(r, bad):
    with pytest.raises(TypeError):
        netmux.TCPServer(LOOP, bad, reactor=r)


def test_server_address_in_use_is_the_kernels_oserror(r):
    with netmux.TCPServer(LOOP, Echo, reactor=r) as srv:
        with pytest.raises(OSError) as info:
            netmux.TCPServer(srv.server_address, Echo, reactor=r)
        assert info.value.errno == errno.EADDRINUSE


def test_server_reuse_port_lets_two_servers_share_a_port(r):
    with netmux.TCPServer(LOOP, Echo, reactor=r, reuse_port=True, backlog=5) as one:
        with netmux.TCPServer(one.server_address, Echo, reactor=r, reuse_port=True) as two:
            assert two.server_address == one.server_address


def test_server_sets_so_reuseaddr(r):
    handlers: List[Any] = []
    with netmux.TCPServer(LOOP, made_factory(handlers), reactor=r) as srv:
        address = srv.server_address
        with client(srv):
            run_until(r, lambda: handlers)
            handlers[0].transport.close()       # server side closes first: TIME_WAIT on it
            run_until(r, lambda: handlers[0].events[-1][0] == "lost")
    with netmux.TCPServer(address, Echo, reactor=r):
        pass


def test_server_shutdown_before_serve_forever_returns_at_once():
    srv = netmux.TCPServer(LOOP, Echo)
    try:
        start = time.monotonic()
        srv.shutdown()
        assert time.monotonic() - start < 1.0
    finally:
        srv.server_close()


def test_server_shutdown_from_another_thread_is_fast_when_idle():
    srv = netmux.TCPServer(LOOP, Echo)
    thread = threading.Thread(target=srv.serve_forever)
    thread.start()
    try:
        with client(srv) as sock:          # proves it is serving
            sock.sendall(b"up")
            assert sock.recv(2) == b"up"
        time.sleep(0.1)                    # idle: select blocks
        start = time.monotonic()
        srv.shutdown()
        assert time.monotonic() - start < 0.5
        thread.join(5)
        assert not thread.is_alive()
    finally:
        srv.shutdown()
        thread.join(5)
        srv.server_close()


def test_server_shutdown_called_twice_and_after_return(r):
    srv = netmux.TCPServer(LOOP, Echo, reactor=r)
    thread = threading.Thread(target=srv.serve_forever)
    thread.start()
    wait_until(lambda: _serves(srv))
    srv.shutdown()
    thread.join(5)
    srv.shutdown()
    srv.server_close()
    srv.server_close()


def _serves(srv: Any) -> bool:
    with client(srv) as sock:
        sock.sendall(b"?")
        return sock.recv(1) == b"?"


def test_server_serve_forever_again_after_shutdown():
    with netmux.TCPServer(LOOP, Echo) as srv:
        for _ in range(2):
            thread = threading.Thread(target=srv.serve_forever)
            thread.start()
            assert _serves(srv)
            srv.shutdown()
            thread.join(5)
            assert not thread.is_alive()


def test_server_shutdown_from_a_handler_on_the_loop_thread_does_not_deadlock():
    class Stopper(netmux.Handler):
        def data_received(self, data: bytes) -> None:
            self.server.shutdown()
    holder: List[Any] = []

    def factory() -> Any:
        h = Stopper()
        h.server = holder[0]
        return h
    with netmux.TCPServer(LOOP, factory) as srv:
        holder.append(srv)
        thread = threading.Thread(target=srv.serve_forever)
        thread.start()
        with client(srv) as sock:
            sock.sendall(b"stop")
            thread.join(5)
            assert not thread.is_alive()


def test_server_close_runs_every_connection_lost_before_returning_when_not_serving(r):
    handlers: List[Any] = []
    srv = netmux.TCPServer(LOOP, made_factory(handlers), reactor=r)
    socks = [client(srv) for _ in range(3)]
    run_until(r, lambda: len(handlers) == 3)
    srv.server_close()
    for h in handlers:
        assert len([e for e in h.events if isinstance(e, tuple)]) == 1
    for s in socks:
        assert read_to_eof(r, s) == b""
        s.close()
    with pytest.raises(OSError):
        socket.create_connection(srv.server_address, timeout=2).close()


def test_server_close_after_serve_forever_ran_in_a_thread():
    handlers: List[Any] = []
    srv = netmux.TCPServer(LOOP, made_factory(handlers))
    thread = threading.Thread(target=srv.serve_forever)
    thread.start()
    socks = [client(srv) for _ in range(2)]
    wait_until(lambda: len(handlers) == 2)
    srv.shutdown()
    thread.join(5)
    srv.server_close()
    assert all(h.events[-1][0] == "lost" for h in handlers)
    for s in socks:
        s.close()


def test_server_context_manager_closes(r):
    handlers: List[Any] = []
    with netmux.TCPServer(LOOP, made_factory(handlers), reactor=r) as srv:
        assert isinstance(srv, netmux.TCPServer)
        sock = client(srv)
        run_until(r, lambda: handlers)
    assert handlers[0].events[-1][0] == "lost"
    sock.close()


def test_server_max_connections_stops_accepting_until_connection_lost_returned(r):
    order: List[str] = []

    class Counted(netmux.Handler):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            order.append("made")

        def connection_lost(self, exc: Any) -> None:
            order.append("lost-start")
            order.append("lost-end")
    srv = netmux.TCPServer(LOOP, Counted, reactor=r, max_connections=1)
    try:
        first = client(srv)
        run_until(r, lambda: order == ["made"])
        second = client(srv)
        spin(r, 20)
        assert order == ["made"]
        first.close()
        run_until(r, lambda: order.count("made") == 2)
        assert order == ["made", "lost-start", "lost-end", "made"]
        second.close()
    finally:
        srv.server_close()


def test_server_idle_timeout_closes_a_silent_connection_only(r):
    handlers: List[Any] = []
    srv = netmux.TCPServer(LOOP, made_factory(handlers), reactor=r, idle_timeout=0.3)
    try:
        silent = client(srv)
        busy = client(srv)
        run_until(r, lambda: len(handlers) == 2)
        start = time.monotonic()
        deadline = start + 0.6
        while time.monotonic() < deadline:
            busy.sendall(b".")
            spin(r, 5)
        assert handlers[0].events[-1][0] == "lost"
        assert handlers[1].events == ["made"]
        assert read_to_eof(r, silent) == b""
        silent.close()
        busy.close()
    finally:
        srv.server_close()


def test_server_idle_timeout_counts_outgoing_bytes(r):
    class Ticker(Record):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self.tick()

        def tick(self) -> None:
            if not self.transport.is_closing():
                self.transport.write(b"t")
                self.transport.reactor.call_later(0.05, self.tick)
    handlers: List[Any] = []
    srv = netmux.TCPServer(LOOP, made_factory(handlers, Ticker), reactor=r, idle_timeout=0.3)
    try:
        with client(srv) as sock:
            run_until(r, lambda: handlers)
            data = read_all(r, sock, 15)
            assert data == b"t" * 15
            assert handlers[0].events == ["made"]
            handlers[0].transport.close()
    finally:
        srv.server_close()


# --------------------------------------------------------------------------- UDP

class UdpEcho(netmux.DatagramHandler):
    def __init__(self) -> None:
        self.events: List[Any] = []

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.events.append("made")

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data.upper(), addr)

    def connection_lost(self, exc: Any) -> None:
        self.events.append(("lost", exc))


def test_udp_echo_serve_forever_shutdown_and_close():
    handlers: List[Any] = []
    with netmux.UDPServer(LOOP, made_factory(handlers, UdpEcho)) as srv:
        assert srv.server_address[1] > 0
        thread = threading.Thread(target=srv.serve_forever)
        thread.start()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.settimeout(5)
                u.sendto(b"abc", srv.server_address)
                assert u.recvfrom(100) == (b"ABC", srv.server_address)
        finally:
            start = time.monotonic()
            srv.shutdown()
            assert time.monotonic() - start < 1.0
            thread.join(5)
    assert len(handlers) == 1
    assert handlers[0].events == ["made", ("lost", None)]


def test_udp_one_handler_per_socket(r):
    handlers: List[Any] = []
    with netmux.UDPServer(LOOP, made_factory(handlers, UdpEcho), reactor=r) as srv:
        for i in range(3):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.sendto(b"x%d" % i, srv.server_address)
                u.setblocking(False)
                got: List[bytes] = []

                def poll() -> bool:
                    try:
                        got.append(u.recv(100))
                    except BlockingIOError:
                        pass
                    return bool(got)
                run_until(r, poll)
        assert len(handlers) == 1


def test_udp_address_in_use_and_bad_factory(r):
    with netmux.UDPServer(LOOP, UdpEcho, reactor=r) as srv:
        with pytest.raises(OSError):
            netmux.UDPServer(srv.server_address, UdpEcho, reactor=r)
    with pytest.raises(TypeError):
        netmux.UDPServer(LOOP, 3, reactor=r)


def test_udp_ipv6(r):
    try:
        socket.socket(socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6")
    with netmux.UDPServer(("::1", 0), UdpEcho, reactor=r) as srv:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as u:
            u.sendto(b"six", srv.server_address[:2])
            u.setblocking(False)
            got: List[bytes] = []

            def poll() -> bool:
                try:
                    got.append(u.recv(100))
                except BlockingIOError:
                    pass
                return bool(got)
            run_until(r, poll)
            assert got == [b"SIX"]


# --------------------------------------------------------------------------- clients

def test_connect_makes_the_connection_and_exchanges_bytes(r):
    with socket.socket() as listener:
        listener.bind(LOOP)
        listener.listen(1)
        handler = netmux.connect(listener.getsockname(), Record, reactor=r)
        assert isinstance(handler, Record)
        run_until(r, lambda: handler.events == ["made"])
        peer, _ = listener.accept()
        with peer:
            handler.transport.write(b"from client")
            assert read_all(r, peer, 11) == b"from client"
            peer.sendall(b"from server")
            run_until(r, lambda: handler.data == b"from server")
            peer.close()
            run_until(r, lambda: handler.events[-1][0] == "lost")
        assert handler.events == ["made", "eof", ("lost", None)]


def test_connect_refused_calls_connection_lost_with_the_oserror(r):
    port = free_port()
    handler = netmux.connect(("127.0.0.1", port), Record, reactor=r)
    run_until(r, lambda: handler.events)
    assert len(handler.events) == 1
    kind, exc = handler.events[0]
    assert kind == "lost" and isinstance(exc, ConnectionRefusedError)


def test_connect_with_timeout_calls_connection_lost_with_timeout_error(r):
    # A listener with a full accept queue drops further SYNs: the connect hangs.
    listener = socket.socket()
    fillers: List[socket.socket] = []
    try:
        listener.bind(LOOP)
        listener.listen(0)
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(listener.getsockname())
            fillers.append(s)
        start = time.monotonic()
        handler = netmux.connect(listener.getsockname(), Record, reactor=r, timeout=0.3)
        run_until(r, lambda: handler.events)
        kind, exc = handler.events[-1]
        assert kind == "lost" and isinstance(exc, TimeoutError)
        assert 0.25 <= time.monotonic() - start < 3
        assert "made" not in handler.events
    finally:
        for s in fillers:
            s.close()
        listener.close()


def test_connect_to_a_netmux_server_on_the_same_reactor(r):
    with netmux.TCPServer(LOOP, Echo, reactor=r) as srv:
        handler = netmux.connect(srv.server_address, Record, reactor=r, timeout=5)
        run_until(r, lambda: handler.events == ["made"])
        handler.transport.write(b"loop")
        run_until(r, lambda: handler.data == b"loop")
        handler.transport.close()
        run_until(r, lambda: handler.events[-1][0] == "lost")


# --------------------------------------------------------------------------- framing

FRAMERS = {
    "line": lambda: netmux.LineFramer(),
    "crlf": lambda: netmux.LineFramer(delimiter=b"\r\n"),
    "netstring": lambda: netmux.NetstringFramer(),
    "prefix": lambda: netmux.LengthPrefixFramer(),
    "prefix-H": lambda: netmux.LengthPrefixFramer(header="!H"),
    "prefix-Q": lambda: netmux.LengthPrefixFramer(header="<Q"),
    "prefix-B": lambda: netmux.LengthPrefixFramer(header="B"),
}


def _frames_for(kind: str) -> Any:
    if kind.startswith(("line", "crlf")):
        return st.lists(st.binary(max_size=40).filter(lambda b: b"\n" not in b and b"\r" not in b), max_size=8)
    if kind == "prefix-B":
        return st.lists(st.binary(max_size=255), max_size=8)
    return st.lists(st.binary(max_size=300), max_size=8)


@pytest.mark.parametrize("kind", sorted(FRAMERS))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_framing_any_split_yields_the_same_frames(kind, data):
    frames = data.draw(_frames_for(kind))
    framer = FRAMERS[kind]()
    stream = b"".join(framer.encode(f) for f in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    pieces = [stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)])]
    out: List[bytes] = []
    fed = 0
    for piece in pieces:
        got = framer.feed(piece)
        fed += len(piece)
        # each feed returns exactly the frames its data completed
        complete = 0
        checker = FRAMERS[kind]()
        complete = len(checker.feed(stream[:fed]))
        assert len(out) + len(got) == complete
        out.extend(got)
    assert out == frames
    assert framer.buffered == 0


@pytest.mark.parametrize("kind", sorted(FRAMERS))
def test_framing_encode_roundtrips_and_buffered_counts(kind):
    framer = FRAMERS[kind]()
    encoded = framer.encode(b"hello")
    assert framer.feed(encoded[:-1]) == []
    assert framer.buffered == len(encoded) - 1
    assert framer.feed(encoded[-1:]) == [b"hello"]
    assert framer.buffered == 0
    assert FRAMERS[kind]().feed(framer.encode(b"")) == [b""]


def test_framing_documented_encodings():
    assert netmux.NetstringFramer().encode(b"abc") == b"3:abc,"
    assert netmux.LineFramer().encode(b"x") == b"x\n"
    assert netmux.LineFramer(delimiter=b"\r\n").encode(b"x") == b"x\r\n"
    assert netmux.LengthPrefixFramer().encode(b"ab") == struct.pack("!I", 2) + b"ab"
    for header in ["!H", "<I", ">Q", "B", "=H"]:
        assert netmux.LengthPrefixFramer(header=header).encode(b"xyz") == struct.pack(header, 3) + b"xyz"


def test_framing_line_feed_returns_frames_in_order_and_keeps_the_rest():
    f = netmux.LineFramer()
    assert f.feed(b"a\nb\n\nc") == [b"a", b"b", b""]
    assert f.buffered == 1
    assert f.feed(b"d\n") == [b"cd"]


def test_framing_line_max_length_exact_is_fine_longer_raises_at_once():
    f = netmux.LineFramer(max_length=5)
    assert f.feed(b"12345\n") == [b"12345"]
    assert f.feed(b"12345") == []
    with pytest.raises(netmux.FramingError):
        f.feed(b"6")


def test_framing_line_trailing_partial_delimiter_does_not_count():
    f = netmux.LineFramer(delimiter=b"\r\n", max_length=5)
    assert f.feed(b"12345\r") == []
    assert f.feed(b"\n") == [b"12345"]
    g = netmux.LineFramer(delimiter=b"\r\n", max_length=5)
    with pytest.raises(netmux.FramingError):
        g.feed(b"12345\rx")


def test_framing_line_split_multibyte_delimiter():
    f = netmux.LineFramer(delimiter=b"\r\n")
    assert f.feed(b"ab\r") == []
    assert f.feed(b"\ncd\r\n") == [b"ab", b"cd"]
    assert f.feed(b"x\ry\r\n") == [b"x\ry"]


def test_framing_line_raises_without_buffering_past_the_limit():
    f = netmux.LineFramer(max_length=10)
    with pytest.raises(netmux.FramingError):
        f.feed(b"x" * 1_000_000)
    assert f.buffered <= 11


def test_framing_netstring_max_length_known_at_header():
    assert netmux.NetstringFramer(max_length=5).feed(b"5:abcde,") == [b"abcde"]
    with pytest.raises(netmux.FramingError):
        netmux.NetstringFramer(max_length=5).feed(b"6:")
    with pytest.raises(netmux.FramingError):
        netmux.NetstringFramer(max_length=5).feed(b"1" * 50)


@pytest.mark.parametrize("bad", [b"x:", b"3:abcX", b":", b"-1:", b"3;abc,", b" 3:abc,"])
def test_framing_netstring_malformed_raises(bad):
    with pytest.raises(netmux.FramingError):
        netmux.NetstringFramer().feed(bad)


def test_framing_prefix_max_length_known_at_header():
    f = netmux.LengthPrefixFramer(header="!H", max_length=5)
    assert f.feed(struct.pack("!H", 5) + b"abcde") == [b"abcde"]
    with pytest.raises(netmux.FramingError):
        f.feed(struct.pack("!H", 6))


@pytest.mark.parametrize("kind,bad", [
    ("line", b"x" * 70000),
    ("netstring", b"x:"),
    ("prefix", struct.pack("!I", 1 << 30)),
])
def test_framing_error_is_sticky(kind, bad):
    framer = FRAMERS[kind]()
    with pytest.raises(netmux.FramingError):
        framer.feed(bad)
    for more in [b"", b"ok\n", framer.encode(b"ok")]:
        with pytest.raises(netmux.FramingError):
            framer.feed(more)


def test_framing_encode_over_max_length_or_with_delimiter_is_refused():
    # encode must produce bytes feed() turns back into exactly [frame]
    for framer, frame in [(netmux.LineFramer(), b"a\nb"), (netmux.LineFramer(max_length=2), b"abc"),
                          (netmux.NetstringFramer(max_length=2), b"abc"),
                          (netmux.LengthPrefixFramer(header="B"), b"x" * 256)]:
        with pytest.raises(ValueError):
            framer.encode(frame)


class Upper(netmux.LineHandler):
    def line_received(self, line: bytes) -> None:
        self.send_line(line.upper())


def test_framing_line_handler_strips_and_appends_the_delimiter(r):
    with netmux.TCPServer(LOOP, Upper, reactor=r) as srv, client(srv) as sock:
        sock.sendall(b"one\ntw")
        sock.sendall(b"o\n")
        assert read_all(r, sock, 8) == b"ONE\nTWO\n"


def test_framing_line_handler_class_attributes_override():
    class Crlf(Upper):
        delimiter = b"\r\n"
        max_length = 4
    conv = netmux.testing.drive(Crlf, [b"ab\r", b"\ncd\n\r\n"], eof=True)
    assert conv.written == b"AB\r\nCD\n\r\n"
    conv = netmux.testing.drive(Crlf, [b"abcde\r\n"])
    assert conv.written == b"" and conv.closed


@pytest.mark.parametrize("factory", [
    netmux.NetstringFramer,
    lambda: netmux.NetstringFramer(),
    functools.partial(netmux.NetstringFramer, max_length=100),
])
def test_framing_framed_handler_framer_factory_any_zero_arg_callable(factory):
    class Net(netmux.FramedHandler):
        framer_factory = factory

        def frame_received(self, frame: bytes) -> None:
            self.send_frame(frame[::-1])
    conv = netmux.testing.drive(Net, [b"3:ab", b"c,2:xy,"])
    assert conv.written == b"3:cba,2:yx,"


def test_framing_framed_handler_framing_error_logs_warning_closes_without_reply(r, caplog):
    caplog.set_level(logging.DEBUG, logger="netmux")

    class Small(Upper):
        max_length = 8
    with netmux.TCPServer(LOOP, Small, reactor=r) as srv:
        with client(srv) as sock:
            sock.sendall(b"ok\n" + b"x" * 100)
            assert read_to_eof(r, sock) == b"OK\n"
        warned = [rec for rec in caplog.records if rec.name.startswith("netmux")
                  and rec.levelno == logging.WARNING]
        assert warned and any("framing" in rec.getMessage().lower() or (rec.exc_info and rec.exc_info[0] is netmux.FramingError)
                              for rec in warned)
        with client(srv) as sock:
            sock.sendall(b"again\n")
            assert read_all(r, sock, 6) == b"AGAIN\n"


# --------------------------------------------------------------------------- coroutine handlers

class StreamEcho(netmux.StreamHandler):
    async def handle(self) -> None:
        while True:
            data = await self.recv(1024)
            if not data:
                break
            await self.sendall(data)


def test_stream_echo_example_over_real_sockets(r):
    with netmux.TCPServer(LOOP, StreamEcho, reactor=r) as srv, client(srv) as sock:
        payload = os.urandom(300_000)
        sock.sendall(payload[:1000])
        assert read_all(r, sock, 1000) == payload[:1000]
        sock.setblocking(True)
        sock.sendall(b"bye")
        sock.shutdown(socket.SHUT_WR)
        assert read_to_eof(r, sock) == b"bye"


def test_stream_recv_returns_up_to_n_and_empty_at_every_call_after_eof():
    got: List[bytes] = []

    class H(netmux.StreamHandler):
        async def handle(self) -> None:
            got.append(await self.recv(3))
            got.append(await self.recv(100))
            got.append(await self.recv(100))
            got.append(await self.recv(100))
    conv = netmux.testing.drive(H, [b"abcdef"], eof=True)
    assert got == [b"abc", b"def", b"", b""]
    assert conv.closed and conv.lost_exc is None


def test_stream_recv_exactly_and_incomplete_read_error():
    got: List[Any] = []

    class H(netmux.StreamHandler):
        async def handle(self) -> None:
            got.append(await self.recv_exactly(4))
            try:
                await self.recv_exactly(10)
            except netmux.IncompleteReadError as exc:
                got.append((exc.partial, exc.expected, isinstance(exc, EOFError)))
    netmux.testing.drive(H, [b"ab", b"cd", b"efg"], eof=True)
    assert got == [b"abcd", (b"efg", 10, True)]


def test_stream_readline_lines_rest_then_empty():
    got: List[bytes] = []

    class H(netmux.StreamHandler):
        async def handle(self) -> None:
            for _ in range(4):
                got.append(await self.readline())
    netmux.testing.drive(H, [b"one\ntw", b"o\nrest"], eof=True)
    assert got == [b"one\n", b"two\n", b"rest", b""]


def test_stream_readline_limit_is_exact_like_line_framer():
    got: List[Any] = []

    class H(netmux.StreamHandler):
        async def handle(self) -> None:
            got.append(await self.readline(limit=5))
            try:
                await self.readline(limit=5)
            except netmux.FramingError as exc:
                got.append(type(exc))
    netmux.testing.drive(H, [b"12345\n123456\n"])
    assert got == [b"12345\n", netmux.FramingError]


def test_stream_readline_limit_raises_without_waiting_for_newline():
    got: List[Any] = []

    class H(netmux.StreamHandler):
        async def handle(self) -> None:
            try:
                await self.readline(limit=5)
            except ValueError as exc:
                got.append(type(exc))
    netmux.testing.drive(H, [b"123456"])     # no newline, no EOF
    assert got == [netmux.FramingError]


def test_stream_sendall_waits_until_at_or_below_low_water(r):
    seen: List[int] = []

    class H(netmux.StreamHandler):
        async def handle(self) -> None:
            self.transport.set_write_buffer_limits(high=8000)
            self.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            await self.sendall(b"s" * 100_000)
            seen.append(self.transport.get_write_buffer_size())
    with netmux.TCPServer(LOOP, H, reactor=r) as srv, client(srv) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        spin(r, 10)
        assert seen == []
        assert read_to_eof(r, sock) == b"s" * 100_000
        assert seen and seen[0] <= 2000


def test_stream_names_client_address_server_transport(r):
    seen: List[Any] = []

    class H(netmux.StreamHandler):
        async def handle(self) -> None:
            seen.append((self.client_address, self.server, self.transport))
    with netmux.TCPServer(LOOP, H, reactor=r) as srv, client(srv) as sock:
        run_until(r, lambda: seen)
        address, server, transport = seen[0]
        assert tuple(address[:2]) == sock.getsockname()
        assert server is srv
        assert isinstance(transport, netmux.Transport)


def test_stream_handler_works_for_connect_with_server_none(r):
    seen: List[Any] = []

    class H(netmux.StreamHandler):
        async def handle(self) -> None:
            seen.append(self.server)
            await self.sendall(b"hello")
            seen.append(await self.recv_exactly(5))
    with netmux.TCPServer(LOOP, StreamEcho, reactor=r) as srv:
        netmux.connect(srv.server_address, H, reactor=r)
        run_until(r, lambda: len(seen) == 2)
        assert seen == [None, b"hello"]


def test_stream_close_then_recv_gives_empty_and_handle_goes_on(r):
    seen: List[Any] = []

    class H(netmux.StreamHandler):
        async def handle(self) -> None:
            await self.sendall(b"last words")
            self.close()
            seen.append(await self.recv(10))
            seen.append("after")
    with netmux.TCPServer(LOOP, H, reactor=r) as srv, client(srv) as sock:
        sock.sendall(b"unread")
        assert read_to_eof(r, sock) == b"last words"
        run_until(r, lambda: len(seen) == 2)
        assert seen == [b"", "after"]


def test_stream_handle_return_closes_after_flush(r):
    class H(netmux.StreamHandler):
        async def handle(self) -> None:
            self.transport.write(b"y" * 3_000_000)
    with netmux.TCPServer(LOOP, H, reactor=r) as srv, client(srv) as sock:
        assert read_to_eof(r, sock) == b"y" * 3_000_000


def test_stream_exception_is_logged_once_with_traceback_and_aborts_only_that_one(r, caplog):
    caplog.set_level(logging.DEBUG, logger="netmux")

    class H(netmux.StreamHandler):
        async def handle(self) -> None:
            data = await self.recv(10)
            if data == b"boom":
                self.transport.write(b"buffered")
                raise Boom("handle")
            await self.sendall(data)
    with netmux.TCPServer(LOOP, H, reactor=r) as srv, client(srv) as bad, client(srv) as good:
        bad.sendall(b"boom")
        read_to_eof(r, bad)
        good.sendall(b"fine")
        assert read_all(r, good, 4) == b"fine"
        assert [rec.exc_info[0] for rec in warnings_with_traceback(caplog)] == [Boom]


def test_stream_peer_reset_is_a_connection_error_at_the_await_logged_at_debug(r, caplog):
    caplog.set_level(logging.DEBUG, logger="netmux")
    seen: List[Any] = []

    class H(netmux.StreamHandler):
        async def handle(self) -> None:
            try:
                await self.recv(10)
                await self.recv(10)
            except BaseException as exc:
                seen.append(type(exc))
                raise
    with netmux.TCPServer(LOOP, H, reactor=r) as srv:
        sock = client(srv)
        sock.sendall(b"x")
        spin(r, 5)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        run_until(r, lambda: seen)
        spin(r, 3)
        assert issubclass(seen[0], ConnectionError)
        assert not [rec for rec in caplog.records if rec.name.startswith("netmux") and rec.levelno >= logging.WARNING]


def test_stream_server_close_closes_running_handle_coroutines(r):
    seen: List[Any] = []

    class H(netmux.StreamHandler):
        async def handle(self) -> None:
            try:
                seen.append("started")
                await self.recv(10)
            except GeneratorExit:
                seen.append("generator exit")
                raise
            finally:
                seen.append("finally")
    srv = netmux.TCPServer(LOOP, H, reactor=r)
    sock = client(srv)
    run_until(r, lambda: seen)
    srv.server_close()
    assert seen == ["started", "generator exit", "finally"]
    sock.close()


def test_stream_max_buffer_class_attribute_bounds_an_unread_peer(r):
    assert netmux.StreamHandler.max_buffer == 65536

    class Lazy(netmux.StreamHandler):
        max_buffer = 4096

        async def handle(self) -> None:
            await netmux.sleep(3600)
    with netmux.TCPServer(LOOP, Lazy, reactor=r) as srv, client(srv) as sock:
        sock.setblocking(False)
        sent = 0
        stalled = 0
        deadline = time.monotonic() + 20
        while sent < (256 << 20) and stalled < 50 and time.monotonic() < deadline:
            r.run_once(0.002)
            try:
                sent += sock.send(b"m" * 65536)
                stalled = 0
            except BlockingIOError:
                stalled += 1
        assert stalled >= 50, f"the handler took {sent} bytes without reading"


def test_stream_handler_reads_everything_after_backpressure(r):
    total = 2_000_000
    seen: List[int] = []

    class Slow(netmux.StreamHandler):
        async def handle(self) -> None:
            await netmux.sleep(0.2)
            data = await self.recv_exactly(total)
            seen.append(len(data))
            await self.sendall(b"done")
    with netmux.TCPServer(LOOP, Slow, reactor=r) as srv, client(srv) as sock:
        sock.setblocking(False)
        view = memoryview(b"k" * total)
        deadline = time.monotonic() + 20
        while view:
            assert time.monotonic() < deadline
            r.run_once(0.002)
            try:
                view = view[sock.send(view):]
            except BlockingIOError:
                pass
        assert read_to_eof(r, sock) == b"done"
        assert seen == [total]


def test_tasks_sleep_timeout_spawn_result(r):
    async def work() -> str:
        await netmux.sleep(0.01)
        async with netmux.timeout(5):
            await netmux.sleep(0.01)
        return "ok"
    task = r.spawn(work())
    run_until(r, task.done)
    assert task.result() == "ok" and task.exception() is None


def test_tasks_timeout_raises_builtin_timeout_error(r):
    async def work() -> Any:
        start = r.time()
        try:
            async with netmux.timeout(0.05):
                await netmux.sleep(10)
        except TimeoutError:
            return r.time() - start
    task = r.spawn(work())
    run_until(r, task.done)
    assert 0.04 <= task.result() < 2


def test_tasks_cancel_runs_finally_and_result_raises_cancelled_error(r):
    seen: List[str] = []

    async def work() -> None:
        try:
            await netmux.sleep(10)
        finally:
            seen.append("finally")
    task = r.spawn(work())
    r.run_once(0)
    task.cancel()
    run_until(r, task.done)
    assert seen == ["finally"]
    with pytest.raises(netmux.CancelledError):
        task.result()
    with pytest.raises(netmux.CancelledError):
        task.exception()


def test_tasks_exception_is_available_and_logged_once_at_error(r, caplog):
    caplog.set_level(logging.DEBUG, logger="netmux")

    async def work() -> None:
        await netmux.sleep(0)
        raise Boom("task")
    task = r.spawn(work())
    run_until(r, task.done)
    spin(r, 2)
    assert isinstance(task.exception(), Boom)
    with pytest.raises(Boom):
        task.result()
    errors = [rec for rec in caplog.records if rec.name.startswith("netmux") and rec.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info and errors[0].exc_info[0] is Boom


def test_tasks_result_before_done_is_an_error(r):
    task = r.spawn(netmux.sleep(1))
    assert not task.done()
    with pytest.raises(Exception):
        task.result()
    task.cancel()
    run_until(r, task.done)


def test_tasks_reactor_close_closes_pending_coroutines():
    r = netmux.Reactor()
    seen: List[str] = []

    async def work() -> None:
        try:
            await netmux.sleep(100)
        finally:
            seen.append("finally")
    r.spawn(work())
    r.run_once(0)
    r.close()
    assert seen == ["finally"]


def test_tasks_no_never_awaited_warnings(recwarn):
    r = netmux.Reactor()

    async def work() -> None:
        await netmux.sleep(100)
    r.spawn(work())          # never started
    r.spawn(work())
    r.run_once(0)
    r.close()
    conv = netmux.testing.drive(StreamEcho, [b"x"])
    del conv
    gc.collect()
    assert not [w for w in recwarn.list if "never awaited" in str(w.message)]


def test_tasks_no_timer_left_armed_after_the_coroutine_ended():
    class H(netmux.StreamHandler):
        async def handle(self) -> None:
            async with netmux.timeout(30):
                await self.recv(10)
    conv = netmux.testing.drive(H, [b"x"])
    assert conv.time < 30
    assert conv.closed


def test_tasks_cancel_a_finished_task_is_harmless(r):
    async def work() -> int:
        return 7
    task = r.spawn(work())
    run_until(r, task.done)
    task.cancel()
    assert task.result() == 7


# --------------------------------------------------------------------------- Unix domain sockets

@pytest.fixture
def sock_path():
    with tempfile.TemporaryDirectory() as d:
        yield os.path.join(d, "netmux.sock")


def test_unix_server_serves_and_removes_its_file(r, sock_path):
    srv = netmux.UnixServer(sock_path, Echo, reactor=r)
    assert srv.server_address == sock_path
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(sock_path)
        sock.sendall(b"unix")
        assert read_all(r, sock, 4) == b"unix"
    srv.server_close()
    assert not os.path.exists(sock_path)


def test_unix_stale_file_is_replaced(r, sock_path):
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(sock_path)
    dead.close()
    assert os.path.exists(sock_path)
    with netmux.UnixServer(sock_path, Echo, reactor=r) as srv:
        assert srv.server_address == sock_path
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(sock_path)                 # a stale file would refuse (ECONNREFUSED)


def test_unix_live_server_is_eaddrinuse(r, sock_path):
    with netmux.UnixServer(sock_path, Echo, reactor=r):
        with pytest.raises(OSError) as info:
            netmux.UnixServer(sock_path, Echo, reactor=r)
        assert info.value.errno == errno.EADDRINUSE
        assert os.path.exists(sock_path)


def test_unix_connect_path_str_and_pathlike_and_peername(r, sock_path):
    handlers: List[Any] = []
    with netmux.UnixServer(sock_path, made_factory(handlers, Echo), reactor=r, backlog=4,
                           max_connections=10, idle_timeout=30):
        for address in (sock_path, pathlib.Path(sock_path)):
            h = netmux.connect(address, Record, reactor=r, timeout=5)
            run_until(r, lambda: h.events == ["made"])
            h.transport.write(b"ping")
            run_until(r, lambda: h.data == b"ping")
            h.transport.close()
            run_until(r, lambda: h.events[-1][0] == "lost")
        assert isinstance(handlers[0].transport.get_extra_info("peername"), (str, bytes))
        assert isinstance(handlers[0].transport, netmux.Transport)


def test_unix_connect_to_missing_path_calls_connection_lost(r, sock_path):
    h = netmux.connect(sock_path, Record, reactor=r)
    run_until(r, lambda: h.events)
    assert h.events[0][0] == "lost" and isinstance(h.events[0][1], OSError)


# --------------------------------------------------------------------------- netmux.testing

class MyLineHandler(netmux.LineHandler):
    def line_received(self, line: bytes) -> None:
        self.send_line(line.upper())


@given(netmux.testing.chunkings(b"one\ntwo\n"))
def test_mine(chunks):
    from netmux.testing import drive
    assert drive(MyLineHandler, chunks).written == b"ONE\nTWO\n"


def test_testing_drive_example_and_fields():
    from netmux.testing import drive

    class Http(netmux.Handler):
        def data_received(self, data: bytes) -> None:
            self.buf = getattr(self, "buf", b"") + data
            if self.buf.endswith(b"\r\n\r\n"):
                self.transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
                self.transport.close()
    conv = drive(Http, [b"GET ", b"/ HTTP/1.1\r\n\r\n"], eof=True)
    assert conv.written == b"HTTP/1.1 200 OK\r\n\r\n"
    assert conv.closed is True
    assert conv.lost_exc is None
    assert isinstance(conv.handler, Http)
    assert conv.time == 0


def test_testing_chunkings_cover_every_cut():
    seen = set()

    @given(netmux.testing.chunkings(b"abc"))
    @settings(max_examples=200)
    def collect(chunks):
        assert b"".join(chunks) == b"abc"
        seen.add(tuple(chunks))
    collect()
    assert len(seen) >= 3


def test_testing_virtual_time_runs_a_30_second_timer_instantly():
    class Late(netmux.Handler):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            transport.reactor.call_later(30, self.fire)

        def fire(self) -> None:
            self.transport.write(b"fired")
            self.transport.close()
    start = time.monotonic()
    conv = netmux.testing.drive(Late, [], eof=False)
    assert time.monotonic() - start < 5
    assert conv.written == b"fired" and conv.closed and conv.time >= 30


def test_testing_stream_handler_with_sleep_and_timeout():
    class H(netmux.StreamHandler):
        async def handle(self) -> None:
            await netmux.sleep(10)
            try:
                async with netmux.timeout(30):
                    await self.recv(10)
                    await self.recv(10)
            except TimeoutError:
                await self.sendall(b"timed out")
    conv = netmux.testing.drive(H, [b"x"], eof=False)
    assert conv.written == b"timed out" and conv.closed
    assert 39 <= conv.time < 41


def test_testing_no_eof_leaves_connection_open():
    conv = netmux.testing.drive(Upper, [b"a\n"], eof=False)
    assert conv.written == b"A\n" and conv.closed is False


def test_testing_handler_exception_is_lost_exc_or_closed():
    class Bad(netmux.Handler):
        def data_received(self, data: bytes) -> None:
            raise Boom("x")
    conv = netmux.testing.drive(Bad, [b"x"])
    assert conv.closed


def test_testing_imports_without_hypothesis():
    code = ("import sys; sys.modules['hypothesis'] = None\n"
            "from netmux.testing import drive\n"
            "import netmux\n"
            "print(drive(netmux.Handler, [b'x'], eof=True).closed)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


# --------------------------------------------------------------------------- command line

def _cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "netmux", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _stop(proc: subprocess.Popen, sig: int = signal.SIGINT) -> int:
    proc.send_signal(sig)
    try:
        code = proc.wait(15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        proc.stdout.close()
        proc.stderr.close()
    return code


def _connect_retry(address: Any, family: int = socket.AF_INET) -> socket.socket:
    deadline = time.monotonic() + 15
    while True:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(5)
        try:
            sock.connect(address)
            return sock
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_cli_help_lists_servers_and_options():
    out = subprocess.run([sys.executable, "-m", "netmux", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0
    for word in ["echo", "udp-echo", "chat", "kv", "http", "--host", "--port", "--unix", "8007", "127.0.0.1"]:
        assert word in out.stdout, word


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_default_is_echo_and_signals_exit_zero(sig):
    port = free_port()
    proc = _cli("--port", str(port))
    try:
        with _connect_retry(("127.0.0.1", port)) as sock:
            sock.sendall(b"cli echo")
            assert sock.recv(100) == b"cli echo"
    finally:
        assert _stop(proc, sig) == 0


@pytest.mark.parametrize("server", ["echo", "chat", "kv", "http"])
def test_cli_each_tcp_server_starts_and_stops_cleanly(server):
    port = free_port()
    proc = _cli(server, "--host", "127.0.0.1", "--port", str(port))
    try:
        _connect_retry(("127.0.0.1", port)).close()
    finally:
        assert _stop(proc) == 0


def test_cli_kv_speaks_resp():
    port = free_port()
    proc = _cli("kv", "--port", str(port))
    try:
        with _connect_retry(("127.0.0.1", port)) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            assert sock.recv(100) == b"+PONG\r\n"
    finally:
        assert _stop(proc, signal.SIGTERM) == 0


def test_cli_udp_echo():
    port = free_port()
    proc = _cli("udp-echo", "--port", str(port))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(0.2)
            deadline = time.monotonic() + 15
            while True:
                u.sendto(b"u", ("127.0.0.1", port))
                try:
                    assert u.recvfrom(10)[0] == b"u"
                    break
                except socket.timeout:
                    assert time.monotonic() < deadline
    finally:
        assert _stop(proc) == 0


def test_cli_unix_echo(sock_path):
    proc = _cli("echo", "--unix", sock_path)
    try:
        with _connect_retry(sock_path, socket.AF_UNIX) as sock:
            sock.sendall(b"over unix")
            assert sock.recv(100) == b"over unix"
    finally:
        assert _stop(proc) == 0
    assert not os.path.exists(sock_path)


# --------------------------------------------------------------------------- found while probing

class NamesAtLost(Record):
    def connection_lost(self, exc: Any) -> None:
        super().connection_lost(exc)
        self.names = (self.transport.get_extra_info("peername"), self.transport.get_extra_info("sockname"))


@pytest.mark.parametrize("how", ["peer closes", "close", "abort"])
def test_transport_names_are_still_known_in_connection_lost_on_a_server(r, how):
    handlers: List[Any] = []
    with netmux.TCPServer(LOOP, made_factory(handlers, NamesAtLost), reactor=r) as srv:
        sock = client(srv)
        run_until(r, lambda: handlers)
        expected = (sock.getsockname(), sock.getpeername())
        if how == "peer closes":
            sock.close()
        else:
            getattr(handlers[0].transport, how)()
        run_until(r, lambda: hasattr(handlers[0], "names"))
        sock.close()
        assert handlers[0].names == expected


def test_transport_names_are_still_known_in_connection_lost_on_a_client(r):
    with netmux.TCPServer(LOOP, Echo, reactor=r) as srv:
        handler = netmux.connect(srv.server_address, NamesAtLost, reactor=r)
        run_until(r, lambda: handler.events == ["made"])
        handler.transport.close()
        run_until(r, lambda: hasattr(handler, "names"))
        assert handler.names[0] == srv.server_address
        assert handler.names[1][0] == "127.0.0.1" and handler.names[1][1] > 0


@pytest.mark.parametrize("method,args", [
    ("call_soon", ()), ("call_later", (0.1,)), ("call_at", (0.0,)), ("call_soon_threadsafe", ()),
])
def test_reactor_non_callable_callback_is_a_type_error_at_once(r, method, args):
    with pytest.raises(TypeError):
        getattr(r, method)(*args, 42)


@pytest.mark.parametrize("bad", [0, -1, math.nan])
def test_server_max_connections_below_one_or_nan_is_a_value_error(r, bad):
    with pytest.raises(ValueError):
        netmux.TCPServer(LOOP, Echo, reactor=r, max_connections=bad)
