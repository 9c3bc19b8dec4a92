"""TCPServer over real loopback sockets: concurrency, lifecycle, limits, errors."""
from __future__ import annotations

import errno
import functools
import logging
import os
import random
import selectors
import socket
import struct
import threading
import warnings
import time

from typing import Any, List

import pytest

import netmux
from conftest import (Echo, Recorder, ServingThread, check_idle_timeout, check_max_connections,
                      keeping, readable, recv_exactly, recv_until_eof, run_until, sleeping_in_poll, wait_until)
from netmux.testing import VirtualClock


def test_two_hundred_interleaved_clients_each_get_their_own_bytes(serve):
    server = serve(Echo)
    rng = random.Random(2)
    clients = [server.connect() for _ in range(200)]
    sent = {i: bytearray() for i in range(200)}
    received = {i: bytearray() for i in range(200)}
    try:
        for round_number in range(5):
            order = list(range(200))
            rng.shuffle(order)
            for i in order:
                message = f"<{i}:{round_number}>".encode() * rng.randint(1, 300)
                clients[i].sendall(message)
                sent[i] += message
        with selectors.DefaultSelector() as selector:
            for i, client in enumerate(clients):
                client.setblocking(False)
                selector.register(client, selectors.EVENT_READ, i)
            deadline = time.monotonic() + 20
            while any(len(received[i]) < len(sent[i]) for i in sent):
                assert time.monotonic() < deadline, "echoes did not all arrive"
                for key, _ in selector.select(1):
                    received[key.data] += key.fileobj.recv(65536)
        for i in sent:
            assert received[i] == sent[i]
    finally:
        for client in clients:
            client.close()


def test_ipv6_loopback(serve):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this kernel")
    server = serve(Echo, ("::1", 0))
    assert server.server.socket.family == socket.AF_INET6
    with server.connect() as client:
        client.sendall(b"six")
        assert recv_exactly(client, 3) == b"six"


def test_port_zero_is_resolved_and_address_in_use_is_the_kernel_error(serve):
    server = serve(Echo)
    host, port = server.address
    assert port != 0
    with pytest.raises(OSError) as info:
        netmux.TCPServer((host, port), Echo)
    assert info.value.errno == errno.EADDRINUSE


def test_non_callable_factory_is_a_type_error():
    for bad in ("not callable", None, 42, Echo()):
        with pytest.raises(TypeError):
            netmux.TCPServer(("127.0.0.1", 0), bad)


def test_the_server_binds_and_listens_at_construction():
    with netmux.TCPServer(("127.0.0.1", 0), Echo) as server:
        # No loop turn yet: the kernel completes the handshake from the listen backlog.
        socket.create_connection(server.server_address, timeout=5).close()


def test_so_reuseaddr_lets_a_new_server_bind_while_a_closed_connection_is_in_time_wait():
    reactor = netmux.Reactor()
    handlers = []
    try:
        with netmux.TCPServer(("127.0.0.1", 0), keeping(handlers, Recorder),
                              reactor=reactor) as server:
            address = server.server_address
            with socket.create_connection(address, timeout=5):
                run_until(reactor, lambda: handlers)
                handlers[0].transport.close()       # the server side closes first: TIME_WAIT on it
                run_until(reactor, lambda: handlers[0].lost)
        netmux.TCPServer(address, Echo, reactor=reactor).server_close()
    finally:
        reactor.close()


def test_handler_that_raises_is_logged_once_and_costs_its_connection_only(serve, caplog):
    class Fragile(Echo):
        def data_received(self, data):
            if data.startswith(b"crash"):
                raise ValueError("handler bug")
            super().data_received(data)

    server = serve(Fragile)
    with caplog.at_level(logging.WARNING, logger="netmux"):
        with server.connect() as good, server.connect() as bad:
            bad.sendall(b"crash")
            assert recv_until_eof(bad) == b""
            good.sendall(b"fine")
            assert recv_exactly(good, 4) == b"fine"
        wait_until(lambda: any(r.exc_info for r in caplog.records))
    failures = [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], ValueError)]
    assert len(failures) == 1
    assert failures[0].levelno >= logging.WARNING


def test_exceptions_in_every_handler_method_are_contained(serve, caplog):
    lost_calls = []

    class Bad(netmux.Handler):
        where = None

        def connection_made(self, transport):
            super().connection_made(transport)
            if self.where == "made":
                raise RuntimeError("made")

        def data_received(self, data):
            if data == b"eof":
                return
            raise RuntimeError("data")

        def eof_received(self):
            raise RuntimeError("eof")

        def connection_lost(self, exc):
            lost_calls.append(type(exc).__name__)
            raise RuntimeError("lost")

    kinds = iter(["made", None, None])

    def factory():
        handler = Bad()
        handler.where = next(kinds)
        return handler

    server = serve(factory)

    def raised_in_connection_lost():
        return [r for r in caplog.records if r.exc_info and str(r.exc_info[1]) == "lost"]

    with caplog.at_level(logging.WARNING, logger="netmux"):
        with server.connect() as a:
            assert recv_until_eof(a) == b""
        with server.connect() as b:
            b.sendall(b"boom")
            assert recv_until_eof(b) == b""
        with server.connect() as c:
            c.shutdown(socket.SHUT_WR)
            assert recv_until_eof(c) == b""
        wait_until(lambda: len(raised_in_connection_lost()) == 3)
        server.call(lambda: None)     # a full reactor turn: a second log would have come
    assert lost_calls == ["RuntimeError"] * 3
    assert len(raised_in_connection_lost()) == 3          # once per connection
    with server.connect() as d:       # still serving
        assert d.fileno() >= 0


def test_failing_factory_drops_that_connection_only(serve, caplog):
    attempts = []

    def factory():
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("factory failed")
        return Echo()

    server = serve(factory)
    with caplog.at_level(logging.ERROR, logger="netmux"):
        with server.connect() as first:
            assert recv_until_eof(first) == b""
    failures = [r for r in caplog.records if r.exc_info]
    assert len(failures) == 1 and "factory failed" in str(failures[0].exc_info[1])
    with server.connect() as second:
        second.sendall(b"ok")
        assert recv_exactly(second, 2) == b"ok"


def test_shutdown_from_another_thread_returns_within_a_second_even_when_idle():
    server = netmux.TCPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        wait_until(lambda: sleeping_in_poll(thread))   # in epoll with no timer: only a wake-up ends it
        start = time.monotonic()
        server.shutdown()
        elapsed = time.monotonic() - start
        thread.join(5)
        assert not thread.is_alive()
        assert elapsed < 1.0
        server.shutdown()             # after serve_forever() returned: harmless
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()
        server.server_close()


def test_serve_forever_serves_again_after_shutdown():
    with netmux.TCPServer(("127.0.0.1", 0), Echo) as server:
        for _ in range(2):
            serving = ServingThread(server)
            with serving.connect() as client:
                client.sendall(b"again")
                assert recv_exactly(client, 5) == b"again"
            server.shutdown()
            serving.thread.join(5)
            assert not serving.thread.is_alive()


def test_shutdown_when_not_serving_returns_at_once_and_twice_is_fine():
    with netmux.TCPServer(("127.0.0.1", 0), Echo) as server:
        start = time.monotonic()
        server.shutdown()
        server.shutdown()
        assert time.monotonic() - start < 0.5


def test_shutdown_before_serve_forever_starts_is_not_lost():
    """A thread that starts serving just after shutdown() still stops (no deadlock)."""
    server = netmux.TCPServer(("127.0.0.1", 0), Echo)
    server.shutdown()
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    thread.join(5)
    server.server_close()
    assert not thread.is_alive()


def test_shutdown_from_inside_a_handler():
    server = netmux.TCPServer(("127.0.0.1", 0), type("Stopper", (netmux.Handler,), {
        "data_received": lambda self, data: server.shutdown()}))
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    wait_until(lambda: server.reactor.is_running())
    with socket.create_connection(server.server_address, timeout=5) as client:
        client.sendall(b"stop")
        thread.join(5)
    assert not thread.is_alive()
    server.server_close()


def test_server_close_runs_every_connection_lost_before_returning():
    lost = []

    class Tracked(Echo):
        def connection_lost(self, exc):
            lost.append(exc)

    server = netmux.TCPServer(("127.0.0.1", 0), Tracked)
    serving = ServingThread(server)
    clients = [serving.connect() for _ in range(5)]
    wait_until(lambda: server.connections == 5)
    server.shutdown()
    serving.thread.join(5)
    server.server_close()             # serve_forever() no longer runs
    assert len(lost) == 5
    for client in clients:
        assert recv_until_eof(client) == b""
        client.close()
    server.server_close()             # idempotent


def test_context_manager_closes_the_listening_socket_and_every_connection():
    reactor = netmux.Reactor()
    handlers = []
    try:
        with netmux.TCPServer(("127.0.0.1", 0), keeping(handlers, Recorder),
                              reactor=reactor) as server:
            assert isinstance(server, netmux.TCPServer)
            address = server.server_address
            client = socket.create_connection(address, timeout=5)
            run_until(reactor, lambda: handlers)
        assert handlers[0].events == ["made", "lost"]
        client.close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address, timeout=2).close()
    finally:
        reactor.close()


class UpperDatagrams(netmux.DatagramHandler):
    def datagram_received(self, data, addr):
        self.transport.sendto(data.upper(), addr)


def test_servers_share_one_reactor_and_any_zero_argument_callable_is_a_factory():
    reactor = netmux.Reactor()
    servers = [netmux.TCPServer(("127.0.0.1", 0), factory, reactor=reactor)
               for factory in (Echo, lambda: Echo(), functools.partial(Echo))]
    datagrams = netmux.UDPServer(("127.0.0.1", 0), UpperDatagrams, reactor=reactor)
    thread = threading.Thread(target=reactor.run)
    thread.start()
    try:
        for server in servers:
            with socket.create_connection(server.server_address, timeout=5) as client:
                client.sendall(b"shared")
                assert recv_exactly(client, 6) == b"shared"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(5)
            client.sendto(b"dgram", datagrams.server_address)
            assert client.recvfrom(100)[0] == b"DGRAM"
    finally:
        reactor.call_soon_threadsafe(reactor.stop)
        thread.join(5)
        for server in servers:
            server.server_close()
        datagrams.server_close()
        reactor.close()


def test_max_connections_pauses_accepting_and_resumes_below(reactor):
    check_max_connections(
        reactor, lambda factory: netmux.TCPServer(("127.0.0.1", 0), factory, reactor=reactor, max_connections=2),
        lambda server: socket.create_connection(server.server_address, timeout=5))


def test_idle_timeout_closes_silent_connections_and_spares_busy_ones():
    check_idle_timeout(lambda reactor: netmux.TCPServer(("127.0.0.1", 0), Echo, reactor=reactor, idle_timeout=0.3),
                       lambda server: socket.create_connection(server.server_address, timeout=5))


def test_outgoing_bytes_count_as_activity_for_the_idle_timeout():
    clock = VirtualClock()
    reactor = netmux.Reactor(clock=clock)
    ticks = []

    class Ticker(Recorder):
        def connection_made(self, transport):
            super().connection_made(transport)
            self.tick()

        def tick(self):
            if not self.transport.is_closing():
                self.transport.write(b"t")
                ticks.append(clock.now)
                self.transport.reactor.call_later(0.05, self.tick)

    handlers = []
    server = netmux.TCPServer(("127.0.0.1", 0), keeping(handlers, Ticker),
                              reactor=reactor, idle_timeout=0.3)
    try:
        with socket.create_connection(server.server_address, timeout=5):
            run_until(reactor, lambda: handlers)
            while clock.now < 0.75:                 # 2.5 idle timeouts of only outgoing bytes
                clock.advance(0.05)
                run_until(reactor, lambda: ticks[-1] == clock.now)
            assert len(ticks) == 16 and handlers[0].events == ["made"]
            handlers[0].transport.close()
    finally:
        server.server_close()
        reactor.close()


def test_idle_timeout_aborts_a_peer_that_never_reads(serve):
    class Flood(netmux.Handler):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.set_write_buffer_limits(high=1 << 30)
            transport.write(b"f" * 20_000_000)

    server = serve(Flood, idle_timeout=0.2)
    client = server.connect()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    wait_until(lambda: server.server.connections == 0, timeout=5)
    client.close()


def test_server_close_from_inside_a_handler_ends_serve_forever():
    lost = []

    class Closer(netmux.Handler):
        def data_received(self, data):
            server.server_close()

        def connection_lost(self, exc):
            lost.append(exc)

    server = netmux.TCPServer(("127.0.0.1", 0), Closer)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    wait_until(lambda: server.reactor.is_running())
    with socket.create_connection(server.server_address, timeout=5) as client:
        client.sendall(b"close")
        assert recv_until_eof(client) == b""
        thread.join(5)
    assert not thread.is_alive()
    assert len(lost) == 1
    assert server.reactor.is_closed()


def test_reuse_port_lets_two_servers_share_a_port():
    with netmux.TCPServer(("127.0.0.1", 0), Echo, reuse_port=True) as first:
        port = first.server_address[1]
        with netmux.TCPServer(("127.0.0.1", port), Echo, reuse_port=True) as second:
            assert second.server_address == ("127.0.0.1", port)
            assert second.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1


def test_bad_limits_are_value_errors():
    for kwargs in ({"max_connections": 0}, {"max_connections": -1}, {"max_connections": float("nan")},
                   {"idle_timeout": 0}, {"idle_timeout": -1}):
        with pytest.raises(ValueError):
            netmux.TCPServer(("127.0.0.1", 0), Echo, **kwargs)


def test_server_close_hands_the_kernel_what_it_takes_and_logs_what_it_drops(caplog):
    class Writer(netmux.Handler):
        def data_received(self, data):
            self.transport.set_write_buffer_limits(high=1 << 30)
            self.transport.write(b"w" * 50_000_000)     # far more than the socket buffers hold

    server = netmux.TCPServer(("127.0.0.1", 0), Writer)
    serving = ServingThread(server)
    client = serving.connect()
    client.sendall(b"go")
    wait_until(lambda: server.connections == 1 and list(server._connections)[0].get_write_buffer_size())
    server.shutdown()
    serving.thread.join(5)
    with caplog.at_level(logging.WARNING, logger="netmux"):
        server.server_close()
    dropped = [r for r in caplog.records if "buffered bytes dropped" in r.getMessage()]
    assert len(dropped) == 1
    received = recv_until_eof(client, timeout=10)
    client.close()
    assert 0 < len(received) < 50_000_000 and set(received) == {ord("w")}


def test_connection_churn_leaves_no_connection_or_descriptor_behind(serve):
    """500 connections opened, used and closed in waves (some by reset): the server ends
    with none open and its process with no more descriptors than it began with."""
    server = serve(Echo)
    fds_before = len(os.listdir("/proc/self/fd"))
    for wave in range(5):
        clients = [server.connect() for _ in range(100)]
        for i, client in enumerate(clients):
            client.sendall(b"%d" % i)
        for i, client in enumerate(clients):
            assert recv_exactly(client, len(b"%d" % i)) == b"%d" % i
            if i % 3 == 0:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
        wait_until(lambda: server.server.connections == 0)
    wait_until(lambda: server.server.reactor.statistics()["in_flight"] == 0)
    assert len(os.listdir("/proc/self/fd")) <= fds_before


# ----------------------------------------------------------------------
# Hardening (issue 8)
# ----------------------------------------------------------------------
def test_a_nan_idle_timeout_is_a_value_error_and_inf_means_never():
    with pytest.raises(ValueError):
        netmux.TCPServer(("127.0.0.1", 0), Echo, idle_timeout=float("nan"))
    for never in (float("inf"), 40 * 24 * 3600.0):     # beyond epoll's ~24.8 days
        server = netmux.TCPServer(("127.0.0.1", 0), Echo, idle_timeout=never)
        try:
            with socket.create_connection(server.server_address, timeout=5) as client:
                deadline = time.monotonic() + 5
                while server.connections == 0 and time.monotonic() < deadline:
                    server.reactor.run_once(0.02)    # raised OverflowError before the poll cap
                client.sendall(b"ping")
                server.reactor.run_once(0.05)
                assert recv_exactly(client, 4) == b"ping"
                assert server.connections == 1
        finally:
            server.server_close()


class _Cancelled(BaseException):
    """Like asyncio.CancelledError: a BaseException that is not SystemExit/KeyboardInterrupt."""


@pytest.mark.parametrize("where", ["factory", "made", "data", "eof", "lost"])
def test_a_handlers_base_exception_costs_its_connection_only(serve, caplog, where):
    import asyncio

    class Raiser(asyncio.Protocol):
        doomed = False                      # only the first connection's handler raises

        def connection_made(self, transport):
            self.transport = transport
            if self.doomed and where == "made":
                raise asyncio.CancelledError()

        def data_received(self, data):
            if self.doomed and where == "data":
                raise _Cancelled("data")
            self.transport.write(data)

        def eof_received(self):
            if self.doomed and where == "eof":
                raise _Cancelled("eof")

        def connection_lost(self, exc):
            if self.doomed and where == "lost":
                raise _Cancelled("lost")

    made = []

    def factory():
        made.append(1)
        if where == "factory" and len(made) == 1:
            raise _Cancelled("factory")
        handler = Raiser()
        handler.doomed = len(made) == 1
        return handler

    server = serve(factory)
    with caplog.at_level(logging.WARNING, logger="netmux"):
        with server.connect() as victim:
            try:
                victim.sendall(b"x")
                victim.shutdown(socket.SHUT_WR)
                recv_until_eof(victim)
            except OSError:
                pass            # aborted before or with our byte unread: RST, ENOTCONN
        wait_until(lambda: server.server.connections == 0)
        wait_until(lambda: any(r.exc_info for r in caplog.records))
        assert server.thread.is_alive()                        # serve_forever() goes on
        with server.connect() as other:                        # and serves the next one
            other.sendall(b"still here")
            assert recv_exactly(other, 10) == b"still here"
    failures = [r for r in caplog.records if r.exc_info and r.levelno >= logging.WARNING]
    assert len(failures) == 1


def test_a_second_serve_forever_is_refused_without_touching_the_first():
    server = netmux.TCPServer(("127.0.0.1", 0), Echo)
    serving = ServingThread(server)
    try:
        with pytest.raises(RuntimeError):
            server.serve_forever()                    # from another thread
        refused = []

        def from_a_handler():
            try:
                server.serve_forever()
            except RuntimeError as exc:
                refused.append(exc)

        serving.call(from_a_handler)
        assert len(refused) == 1
        started = time.monotonic()
        server.shutdown()                             # still stops the first call
        serving.thread.join(5)
        assert not serving.thread.is_alive() and time.monotonic() - started < 2
    finally:
        server.shutdown()
        serving.thread.join(5)
        server.server_close()


def test_keyboard_interrupt_in_connection_made_aborts_that_connection_and_frees_its_slot():
    """The rule: a SystemExit/KeyboardInterrupt from a handler method aborts that
    connection (connection_lost follows on a later turn), then propagates."""
    interrupt = [True]
    lost = []

    class Interrupted(Echo):
        def connection_made(self, transport):
            super().connection_made(transport)
            if interrupt:
                interrupt.clear()
                raise KeyboardInterrupt

        def connection_lost(self, exc):
            lost.append(exc)

    server = netmux.TCPServer(("127.0.0.1", 0), Interrupted, max_connections=1, idle_timeout=30)
    try:
        with socket.create_connection(server.server_address, timeout=5) as first:
            with pytest.raises(KeyboardInterrupt):
                server.serve_forever()
            assert server.connections == 1 and lost == []   # connection_lost comes next turn
            assert recv_until_eof(first) == b""             # aborted: the peer sees the end
        serving = ServingThread(server)                     # serve again
        try:
            wait_until(lambda: server.connections == 0)
            assert len(lost) == 1 and isinstance(lost[0], ConnectionAbortedError)
            assert isinstance(lost[0].__cause__, KeyboardInterrupt)   # errors.lost_reason
            with serving.connect() as second:               # the slot is free again
                second.sendall(b"echo")
                assert recv_exactly(second, 4) == b"echo"
        finally:
            serving.stop()
    finally:
        server.server_close()


def test_server_close_after_its_shared_reactor_closed_still_closes_every_connection():
    reactor = netmux.Reactor()
    lost = []

    class Counted(Echo):
        def connection_lost(self, exc):
            lost.append(exc)

    server = netmux.TCPServer(("127.0.0.1", 0), Counted, reactor=reactor)
    clients = [socket.create_connection(server.server_address, timeout=5) for _ in range(3)]
    try:
        deadline = time.monotonic() + 5
        while server.connections < 3 and time.monotonic() < deadline:
            reactor.run_once(0.02)
        assert server.connections == 3
        reactor.close()
        server.server_close()
        assert server.connections == 0 and len(lost) == 3
        for client in clients:
            assert recv_until_eof(client) == b""           # their sockets are closed
        assert server.socket.fileno() == -1
    finally:
        for client in clients:
            client.close()


def test_backlog_zero_still_accepts(serve):
    server = serve(Echo, backlog=0)
    for _ in range(3):
        with server.connect() as client:
            client.sendall(b"hello")
            assert recv_exactly(client, 5) == b"hello"


def test_a_server_on_a_closed_reactor_is_a_runtime_error_that_leaks_nothing():
    # The autouse no_leaks fixture fails the test if a listening socket stays open.
    closed = netmux.Reactor()
    closed.close()
    with pytest.raises(RuntimeError):
        netmux.TCPServer(("127.0.0.1", 0), Echo, reactor=closed)
    with pytest.raises(RuntimeError):
        netmux.UDPServer(("127.0.0.1", 0), netmux.DatagramHandler, reactor=closed)


@pytest.mark.parametrize("name", ["daemon_threads", "block_on_close"])
def test_socketservers_thread_settings_on_a_subclass_warn_that_they_are_ignored(name):
    with pytest.warns(UserWarning, match=rf"^Ported\.{name} is ignored: netmux starts no thread"):
        type("Ported", (netmux.TCPServer,), {name: True})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        type("Plain", (netmux.TCPServer,), {"allow_reuse_address": True})   # not a thread setting


# ----------------------------------------------------------------------
# Connection storms: the kernel's queue is emptied first, set-up is bounded per turn
# ----------------------------------------------------------------------
class _Arrivals(netmux.Handler):
    """Notes who was set up, in order; the tenth set-up opens ``late`` more clients
    (they land in the kernel's queue while the server is busy setting up)."""

    def __init__(self, made: List[Any], late: List[socket.socket], address: Any) -> None:
        self.made, self.late, self.address = made, late, address

    def connection_made(self, transport: Any) -> None:
        self.made.append(transport.get_extra_info("peername"))
        if len(self.made) == 10:
            self.late += [socket.create_connection(self.address, timeout=5) for _ in range(30)]


def _storm_server(reactor: netmux.Reactor, made: List[Any], late: List[socket.socket],
                  **kwargs: Any) -> netmux.TCPServer:
    holder: List[Any] = []
    server = netmux.TCPServer(("127.0.0.1", 0), lambda: _Arrivals(made, late, holder[0]),
                              reactor=reactor, backlog=64, **kwargs)
    holder.append(server.server_address)
    return server


def test_a_storm_is_accepted_first_and_served_first_come_first_served(reactor):
    made: List[Any] = []
    late: List[socket.socket] = []
    server = _storm_server(reactor, made, late)
    clients = [socket.create_connection(server.server_address, timeout=5) for _ in range(64)]
    try:
        readable(server.socket)
        reactor.run_once(0)
        # The 30 that came while the first 64 were set up were accepted when
        # the 64th set-up emptied the kernel's queue again, and set up after.
        assert len(made) == 94 and not server._pending
        assert made == [client.getsockname() for client in clients + late]
    finally:
        for client in clients + late:
            client.close()
        server.server_close()


def _accepted_in_waves(server: Any, waves: int) -> List[socket.socket]:
    """``waves`` backlogs' worth of clients, accepted (not set up) a wave at a time:
    the kernel's queue holds one backlog."""
    clients: List[socket.socket] = []
    for _ in range(waves):
        clients += [socket.create_connection(server.server_address, timeout=5) for _ in range(64)]
        readable(server.socket)
        server._accept_queued()
    assert len(server._pending) == 64 * waves
    return clients


def test_set_up_is_bounded_per_turn_to_two_backlogs_oldest_first(reactor):
    made: List[Any] = []
    server = _storm_server(reactor, made, [])
    clients = _accepted_in_waves(server, 5)
    try:
        server._set_up_pending()            # as the listener's event does: a backlog now
        assert len(made) == 64
        reactor.run_once(0)                 # the queued callback: one more this turn
        assert len(made) == 128
        for turn in (192, 256, 320):        # then one a turn, I/O between them
            reactor.run_once(0)
            assert len(made) == turn
        assert made == [client.getsockname() for client in clients]
    finally:
        for client in clients:
            client.close()
        server.server_close()


def test_accepted_connections_not_set_up_yet_count_toward_max_connections(reactor):
    made: List[Any] = []
    late: List[socket.socket] = []
    server = _storm_server(reactor, made, late, max_connections=70)
    clients = [socket.create_connection(server.server_address, timeout=5) for _ in range(64)]
    try:
        readable(server.socket)
        for _ in range(4):
            reactor.run_once(0)
        assert len(made) == 70 and server.connections == 70 and not server._pending
        assert not server._accepting          # 24 wait in the kernel's queue, not with us
    finally:
        for client in clients + late:
            client.close()
        server.server_close()


class _PeerEcho(netmux.Handler):
    """Echoes, and keeps the peer's address as its transport gives it."""

    peers: List[Any] = []

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.peers.append(transport.get_extra_info("peername"))

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def _try_recv(sock: socket.socket) -> bytes:
    """One byte if the non-blocking ``sock`` has one now, else b""."""
    try:
        return sock.recv(1)
    except BlockingIOError:
        return b""


def test_a_storm_under_a_layer_is_served_while_a_busy_client_keeps_its_turns(reactor):
    # The accept queue below a layer (PROXY: each connection's handler is made
    # only once its header is read), with one client already served echoing as
    # fast as it can meanwhile: it must be answered in the turns the storm's
    # set-up takes, not after them, and every storm connection is served with
    # the address its header names.
    _PeerEcho.peers = []
    server = netmux.TCPServer(("127.0.0.1", 0), _PeerEcho, reactor=reactor, backlog=16, proxy_protocol=True)
    header = b"PROXY TCP4 192.0.2.%d 198.51.100.1 %d 443\r\n"
    busy = socket.create_connection(server.server_address, timeout=5)
    storm: List[socket.socket] = []
    try:
        busy.sendall(header % (1, 1000) + b"b")
        busy.setblocking(False)
        run_until(reactor, lambda: _try_recv(busy) == b"b")
        assert _PeerEcho.peers == [("192.0.2.1", 1000)]
        for _ in range(6):          # the kernel's queue holds a backlog: take it in waves
            storm += [socket.create_connection(server.server_address, timeout=5) for _ in range(16)]
            readable(server.socket)
            server._accept_queued()
        assert len(server._pending) == 96
        for index, client in enumerate(storm):
            client.sendall(header % (2 + index, 2000 + index) + b"s")
        busy.sendall(b"b")
        server._set_up_pending()    # what the listener's event does next: a backlog now, the rest later
        echoes_while_setting_up = 0
        deadline = time.monotonic() + 10
        while len(_PeerEcho.peers) < 97 and time.monotonic() < deadline:
            reactor.run_once(0.05)
            if _try_recv(busy) == b"b":
                echoes_while_setting_up += len(_PeerEcho.peers) < 97
                busy.sendall(b"b")
        assert len(_PeerEcho.peers) == 97
        assert echoes_while_setting_up >= 1
        assert sorted(_PeerEcho.peers[1:], key=lambda peer: peer[1]) == [
            (f"192.0.2.{2 + index}", 2000 + index) for index in range(96)]
        for client in storm:
            client.settimeout(5)
            assert client.recv(1) == b"s"
    finally:
        for client in storm + [busy]:
            client.close()
        server.server_close()


@pytest.mark.parametrize("how", ["drain", "close"])
def test_accepted_connections_are_served_by_a_drain_and_closed_by_server_close(reactor, how):
    made: List[Any] = []
    server = _storm_server(reactor, made, [])
    clients = _accepted_in_waves(server, 2)
    try:
        if how == "drain":
            server.shutdown(grace=5)        # not serving: the drain begins now
            assert len(made) == 128 and server.is_draining() and not server._pending
        else:
            server.server_close()
            assert not made and not server._pending
            for client in clients:          # closed, never set up: EOF or a reset
                try:
                    assert client.recv(1) == b""
                except ConnectionResetError:
                    pass
    finally:
        for client in clients:
            client.close()
        server.server_close()
