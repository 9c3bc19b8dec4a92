"""UDP: DatagramTransport, UDPServer and open_datagram() over real loopback sockets."""
from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import threading
import time
from typing import Any, Callable, Iterator, List

import pytest

import netmux
from conftest import ServerProcess, ServingThread, keeping, needs_ipv6, readable, run_until, wait_until




# ----------------------------------------------------------------------
# Helpers and fixtures
# ----------------------------------------------------------------------
class UDPEcho(netmux.DatagramHandler):
    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


class Recorder(netmux.DatagramHandler):
    """Keeps every event, for assertions."""

    def __init__(self):
        self.events: List[Any] = []
        self.datagrams: List[Any] = []
        self.errors: List[OSError] = []
        self.lost: List[Any] = []

    def connection_made(self, transport):
        super().connection_made(transport)
        self.events.append("made")

    def datagram_received(self, data, addr):
        self.datagrams.append((data, addr))

    def error_received(self, exc):
        self.errors.append(exc)

    def pause_writing(self):
        self.events.append("pause")

    def resume_writing(self):
        self.events.append("resume")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.append(exc)


@pytest.fixture
def serve_udp() -> Iterator[Callable[..., ServingThread]]:
    """``serve_udp(handler_factory, address)`` -> a UDPServer serving in a thread."""
    running: List[ServingThread] = []

    def start(factory: Any, address: tuple = ("127.0.0.1", 0)) -> ServingThread:
        serving = ServingThread(netmux.UDPServer(address, factory))
        running.append(serving)
        return serving

    yield start
    for serving in running:
        serving.stop()


def udp_client(server: ServingThread, timeout: float = 5.0) -> socket.socket:
    family = socket.AF_INET6 if ":" in server.address[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.settimeout(timeout)
    sock.connect(server.address[:2])
    return sock


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on (UDP ports are free again at once: no TIME_WAIT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class SendBuffer:
    """Wraps a UDP socket; its sends fail with ``error`` while ``error`` is set.

    Stands in for a kernel whose send buffer is full (EAGAIN) or whose device
    queue is (ENOBUFS): on loopback a real UDP send almost never blocks.
    """

    def __init__(self, sock: socket.socket, error: Any = None) -> None:
        self.sock = sock
        self.error = error
        self.attempts = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def family(self) -> int:
        return self.sock.family

    def _attempt(self) -> None:
        self.attempts += 1
        if self.error is not None:
            raise self.error

    def sendto(self, data, addr):
        self._attempt()
        return self.sock.sendto(data, addr)

    def send(self, data):
        self._attempt()
        return self.sock.send(data)

    def recvfrom_into(self, buffer):
        return self.sock.recvfrom_into(buffer)

    def getsockname(self):
        return self.sock.getsockname()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def wrapped(reactor):
    """A DatagramTransport over a SendBuffer, plus a blocking receiver it sends to."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    fake = SendBuffer(sock)
    handler = Recorder()
    transport = netmux.DatagramTransport(reactor, fake, handler)
    transport.start()
    yield transport, fake, handler, receiver
    transport.abort()
    reactor.run_once(0)
    receiver.close()


# ----------------------------------------------------------------------
# Echo across many peers
# ----------------------------------------------------------------------
def test_ten_clients_times_a_hundred_datagrams_are_all_echoed_in_order(serve_udp):
    server = serve_udp(UDPEcho)
    clients = [udp_client(server) for _ in range(10)]
    received = {i: [] for i in range(10)}
    try:
        window = 5      # datagrams in flight per client: well inside the kernel's buffers
        for start in range(0, 100, window):
            for i, client in enumerate(clients):
                for n in range(start, start + window):
                    client.send(f"client {i} datagram {n}".encode())
            for i, client in enumerate(clients):
                for _ in range(window):
                    received[i].append(client.recv(65535))
    finally:
        for client in clients:
            client.close()
    for i in range(10):
        assert received[i] == [f"client {i} datagram {n}".encode() for n in range(100)]


@pytest.mark.parametrize("size", [0, 1, 65507])
def test_datagrams_from_empty_to_the_largest_ipv4_payload_arrive_whole(serve_udp, size):
    server = serve_udp(UDPEcho)
    payload = os.urandom(size)
    with udp_client(server) as client:
        client.send(payload)
        assert client.recv(70000) == payload


@needs_ipv6
def test_udp_over_ipv6_echoes_the_largest_ipv6_payload(serve_udp):
    server = serve_udp(UDPEcho, ("::1", 0))
    assert server.address[0] == "::1"
    payload = os.urandom(65527)         # 65,535 minus the 8-byte UDP header
    with udp_client(server) as client:
        client.send(payload)
        assert client.recv(70000) == payload


# ----------------------------------------------------------------------
# Errors cost a datagram, never the endpoint
# ----------------------------------------------------------------------
class Fragile(UDPEcho):
    def datagram_received(self, data, addr):
        if data == b"boom":
            raise RuntimeError("bad datagram")
        super().datagram_received(data, addr)


def test_a_raising_handler_is_logged_once_and_the_server_goes_on(serve_udp, caplog):
    server = serve_udp(Fragile)
    with caplog.at_level(logging.ERROR, logger="netmux"), udp_client(server) as client:
        client.send(b"boom")
        client.send(b"after")
        assert client.recv(100) == b"after"
    records = [r for r in caplog.records if r.name == "netmux" and r.levelno >= logging.ERROR]
    assert len(records) == 1
    assert records[0].exc_info and isinstance(records[0].exc_info[1], RuntimeError)
    assert not server.server.transport.is_closing()


def test_a_reply_to_a_vanished_peer_does_not_stop_the_server(serve_udp):
    server = serve_udp(UDPEcho)
    for _ in range(3):
        gone = udp_client(server)
        gone.send(b"reply to nobody")
        gone.close()                # the echo goes to a closed port
    with udp_client(server) as client:
        client.send(b"still here")
        assert client.recv(100) == b"still here"


def test_port_unreachable_on_a_connected_socket_goes_to_error_received(reactor):
    port = free_udp_port()
    handler = netmux.open_datagram(("127.0.0.1", port), Recorder, reactor=reactor)
    handler.transport.sendto(b"anyone?")
    run_until(reactor, lambda: handler.errors)
    assert isinstance(handler.errors[0], ConnectionRefusedError)
    assert handler.errors[0].errno == errno.ECONNREFUSED
    assert not handler.transport.is_closing() and handler.lost == []

    # The endpoint is still good: once something listens there, it talks.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", port))
        peer.settimeout(5)
        handler.transport.sendto(b"hello")
        data, address = peer.recvfrom(100)
        assert data == b"hello"
        peer.sendto(b"welcome", address)
        run_until(reactor, lambda: handler.datagrams)
    assert handler.datagrams == [(b"welcome", ("127.0.0.1", port))]
    handler.transport.close()
    run_until(reactor, lambda: handler.lost)
    assert handler.events == ["made", "lost"] and handler.lost == [None]


def test_an_oversized_datagram_goes_to_error_received(reactor):
    handler = netmux.open_datagram(None, Recorder, reactor=reactor, local_address=("127.0.0.1", 0))
    handler.transport.sendto(b"x" * 70000, ("127.0.0.1", 9))
    assert isinstance(handler.errors[0], OSError) and handler.errors[0].errno == errno.EMSGSIZE
    assert not handler.transport.is_closing()
    handler.transport.abort()
    run_until(reactor, lambda: handler.lost)


def test_raising_error_received_is_logged_and_the_endpoint_stays_open(reactor, caplog):
    class Raises(Recorder):
        def error_received(self, exc):
            raise RuntimeError("error handler broke")

    handler = netmux.open_datagram(("127.0.0.1", free_udp_port()), Raises, reactor=reactor)
    with caplog.at_level(logging.ERROR, logger="netmux"):
        handler.transport.sendto(b"x")
        run_until(reactor, lambda: any(r.exc_info for r in caplog.records))
    assert not handler.transport.is_closing()
    handler.transport.close()
    run_until(reactor, lambda: handler.lost)
    assert handler.lost == [None]


# ----------------------------------------------------------------------
# Sending: EAGAIN and ENOBUFS queue, in order; flow control
# ----------------------------------------------------------------------
def test_sends_refused_with_eagain_are_queued_and_flushed_in_order(reactor, wrapped):
    transport, fake, handler, receiver = wrapped
    address = receiver.getsockname()
    fake.error = BlockingIOError(errno.EAGAIN, "send buffer full")
    for n in range(5):
        transport.sendto(b"datagram %d" % n, address)
    assert fake.attempts == 1                 # queued behind the first: no send out of order
    assert transport.get_write_buffer_size() == 5 * len(b"datagram 0")
    assert reactor.statistics()["writers"] == 1   # the reactor watches for writable
    reactor.run_once(0)                       # still full: nothing goes, nothing is lost
    assert transport.get_write_buffer_size() == 5 * len(b"datagram 0")

    fake.error = None
    run_until(reactor, lambda: transport.get_write_buffer_size() == 0)
    assert [receiver.recv(100) for _ in range(5)] == [b"datagram %d" % n for n in range(5)]
    assert reactor.statistics()["writers"] == 0   # idle: the selector is not asked
    transport.sendto(b"direct", address)                    # an empty queue sends at once
    assert receiver.recv(100) == b"direct"


def test_queue_above_high_water_pauses_and_below_low_water_resumes_the_writer(reactor, wrapped):
    transport, fake, handler, receiver = wrapped
    address = receiver.getsockname()
    transport.set_write_buffer_limits(high=3000, low=1000)
    assert transport.get_write_buffer_limits() == (1000, 3000)
    fake.error = BlockingIOError(errno.EAGAIN, "send buffer full")
    for n in range(3):
        transport.sendto(bytes([n]) * 1000, address)
    assert handler.events == ["made"]          # 3000 is not above 3000
    transport.sendto(bytes([3]) * 1000, address)
    assert handler.events == ["made", "pause"]
    fake.error = None
    run_until(reactor, lambda: transport.get_write_buffer_size() == 0)
    assert handler.events == ["made", "pause", "resume"]
    assert [receiver.recv(2000)[0] for _ in range(4)] == [0, 1, 2, 3]


def test_enobufs_queues_and_retries_on_a_timer_without_spinning(reactor, wrapped):
    transport, fake, handler, receiver = wrapped
    address = receiver.getsockname()
    fake.error = OSError(errno.ENOBUFS, "No buffer space available")
    transport.sendto(b"first", address)
    transport.sendto(b"second", address)
    assert handler.errors == []                 # not an error: a reason to wait
    deadline = time.monotonic() + 0.2
    while time.monotonic() < deadline:
        reactor.run_once(0.01)
    # The socket selects writable all along; retrying on writability would
    # have tried thousands of times by now.
    assert 2 <= fake.attempts <= 40
    fake.error = None
    run_until(reactor, lambda: transport.get_write_buffer_size() == 0)
    assert [receiver.recv(100), receiver.recv(100)] == [b"first", b"second"]


def test_close_sends_the_queued_datagrams_then_reports_connection_lost(reactor, wrapped):
    transport, fake, handler, receiver = wrapped
    fake.error = BlockingIOError(errno.EAGAIN, "send buffer full")
    for n in range(3):
        transport.sendto(b"%d" % n, receiver.getsockname())
    transport.close()
    assert transport.is_closing() and not transport.is_reading()
    reactor.run_once(0)
    assert handler.lost == []                   # still flushing
    fake.error = None
    run_until(reactor, lambda: handler.lost)
    assert [receiver.recv(10) for _ in range(3)] == [b"0", b"1", b"2"]
    assert handler.events == ["made", "lost"] and handler.lost == [None]


def test_abort_drops_the_queue_and_reports_connection_lost_once(reactor, wrapped):
    transport, fake, handler, receiver = wrapped
    fake.error = BlockingIOError(errno.EAGAIN, "send buffer full")
    transport.sendto(b"dropped", receiver.getsockname())
    transport.abort()
    transport.abort()
    transport.close()
    assert handler.lost == []                    # on a later turn, not inside abort()
    for _ in range(3):
        reactor.run_once(0)
    assert handler.lost == [None] and transport.get_write_buffer_size() == 0
    receiver.settimeout(0.05)
    with pytest.raises(socket.timeout):
        receiver.recv(100)


def test_sendto_refuses_misuse(reactor):
    handler = netmux.open_datagram(None, Recorder, reactor=reactor, local_address=("127.0.0.1", 0))
    connected = netmux.open_datagram(("127.0.0.1", free_udp_port()), Recorder, reactor=reactor)
    try:
        with pytest.raises(TypeError):
            handler.transport.sendto("text", ("127.0.0.1", 9))
        with pytest.raises(ValueError):
            handler.transport.sendto(b"where to?")
        with pytest.raises(ValueError):
            connected.transport.sendto(b"x", ("127.0.0.1", 9))
        connected.transport.sendto(b"x", connected.transport.get_extra_info("peername"))
    finally:
        handler.transport.close()
        connected.transport.close()
    with pytest.raises(ConnectionError):
        handler.transport.sendto(b"late", ("127.0.0.1", 9))
    run_until(reactor, lambda: handler.lost and connected.lost)


# ----------------------------------------------------------------------
# UDPServer lifecycle
# ----------------------------------------------------------------------
def test_server_binds_at_once_and_resolves_port_zero():
    with netmux.UDPServer(("127.0.0.1", 0), Recorder) as server:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1" and port > 0
        assert server.handler.events == ["made"]
        assert server.handler.transport.get_extra_info("sockname")[:2] == (host, port)
        assert server.handler.transport.get_extra_info("peername") is None
        assert server.handler.transport.get_extra_info("socket") is server.socket
        assert server.handler.transport.reactor is server.reactor
    assert server.handler.events == ["made", "lost"]


class RecordingEcho(Recorder):
    def datagram_received(self, data, addr):
        super().datagram_received(data, addr)
        self.transport.sendto(data.upper(), addr)


def test_server_close_has_run_connection_lost_when_it_returns_exactly_once():
    server = netmux.UDPServer(("127.0.0.1", 0), RecordingEcho)
    serving = threading.Thread(target=server.serve_forever)
    serving.start()
    try:
        wait_until(lambda: server._serving_thread is not None)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(5)
            client.sendto(b"abc", server.server_address)
            assert client.recvfrom(100) == (b"ABC", server.server_address)   # from the server's address
        started = time.monotonic()
        server.shutdown()
        assert time.monotonic() - started < 1.0
        serving.join(5)
        assert not serving.is_alive()
    finally:
        server.server_close()
    assert server.handler.lost == [None]
    server.server_close()
    assert server.handler.lost == [None] and server.handler.events == ["made", "lost"]


def test_one_handler_serves_every_peer_of_the_socket(reactor):
    made = []
    with netmux.UDPServer(("127.0.0.1", 0), keeping(made, RecordingEcho),
                          reactor=reactor) as server:
        for i in range(3):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.setblocking(False)
                client.sendto(b"x%d" % i, server.server_address)
                run_until(reactor, lambda: len(server.handler.datagrams) == i + 1)
                readable(client)                              # and its reply came back
        assert made == [server.handler] and len({addr for _, addr in server.handler.datagrams}) == 3


def test_server_rejects_a_factory_that_is_not_callable():
    with pytest.raises(TypeError):
        netmux.UDPServer(("127.0.0.1", 0), Recorder())


def test_binding_a_port_in_use_is_the_kernels_oserror():
    with netmux.UDPServer(("127.0.0.1", 0), Recorder) as first:
        with pytest.raises(OSError) as info:
            netmux.UDPServer(first.server_address, Recorder)
    assert info.value.errno == errno.EADDRINUSE


def test_a_raising_connection_made_closes_the_endpoint_with_that_error(reactor, caplog):
    class Broken(Recorder):
        def connection_made(self, transport):
            raise RuntimeError("cannot start")

    with caplog.at_level(logging.ERROR, logger="netmux"):
        server = netmux.UDPServer(("127.0.0.1", 0), Broken, reactor=reactor)
        run_until(reactor, lambda: server.handler.lost)
    assert isinstance(server.handler.lost[0], RuntimeError)
    assert [r for r in caplog.records if r.exc_info]
    server.server_close()
    assert len(server.handler.lost) == 1


# ----------------------------------------------------------------------
# One reactor, one thread: a UDP server and its clients
# ----------------------------------------------------------------------
@pytest.mark.parametrize("host", ["127.0.0.1", pytest.param("::1", marks=needs_ipv6)])
def test_server_and_datagram_clients_share_one_reactor_and_one_thread(reactor, host):
    server = netmux.UDPServer((host, 0), UDPEcho, reactor=reactor)
    connected = netmux.open_datagram(server.server_address, Recorder, reactor=reactor)
    unconnected = netmux.open_datagram(None, Recorder, reactor=reactor, local_address=(host, 0))
    try:
        for n in range(20):
            connected.transport.sendto(b"c%d" % n)
            unconnected.transport.sendto(b"u%d" % n, server.server_address)
        run_until(reactor, lambda: len(connected.datagrams) == 20 and len(unconnected.datagrams) == 20)
        assert [d for d, _ in connected.datagrams] == [b"c%d" % n for n in range(20)]
        assert [d for d, _ in unconnected.datagrams] == [b"u%d" % n for n in range(20)]
        assert {a[:2] for _, a in unconnected.datagrams} == {server.server_address[:2]}
    finally:
        connected.transport.close()
        unconnected.transport.close()
        server.server_close()
    run_until(reactor, lambda: connected.lost and unconnected.lost)
    assert connected.lost == [None] and unconnected.lost == [None]


def test_open_datagram_without_addresses_is_bound_by_the_kernel_on_first_send(reactor):
    with netmux.UDPServer(("127.0.0.1", 0), UDPEcho, reactor=reactor) as server:
        client = netmux.open_datagram(None, Recorder, reactor=reactor)
        client.transport.sendto(b"hi", server.server_address)
        assert client.transport.get_extra_info("sockname")[1] != 0
        run_until(reactor, lambda: client.datagrams)
        client.transport.close()
        run_until(reactor, lambda: client.lost)


# ----------------------------------------------------------------------
# python -m netmux udp-echo
# ----------------------------------------------------------------------
def test_command_line_udp_echo_echoes_and_stops_on_sigint():
    server = ServerProcess(["udp-echo", "--port", "0"])
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(5)
            client.sendto(b"ping", server.address)
            assert client.recv(100) == b"ping"
        assert server.stop(signal.SIGINT) == 0
    finally:
        server.stop(signal.SIGKILL)


def test_udp_echo_is_registered_on_the_default_port():
    from netmux import apps
    assert apps.load("udp-echo").DEFAULT_PORT == 8007


# ----------------------------------------------------------------------
# Hardening (issue 8): a bad address while datagrams are queued
# ----------------------------------------------------------------------
BAD_ADDRESSES = [("127.0.0.1", 70000), ("127.0.0.1", -1), "127.0.0.1", ("127.0.0.1",),
                 (12, 34), ("127.0.0.1", "port")]


@pytest.mark.parametrize("bad", BAD_ADDRESSES)
def test_a_bad_address_raises_at_once_also_while_datagrams_are_queued(reactor, wrapped, bad):
    transport, fake, handler, receiver = wrapped
    with pytest.raises((TypeError, OverflowError, ValueError)) as unqueued:
        transport.sendto(b"x", bad)                      # the kernel's path: raises at once
    fake.error = BlockingIOError(errno.EAGAIN, "send buffer full")
    transport.sendto(b"queued", receiver.getsockname())
    with pytest.raises(unqueued.type):
        transport.sendto(b"x", bad)                      # was queued, then failed in the flush
    assert transport.get_write_buffer_size() == len(b"queued")
    fake.error = None
    run_until(reactor, lambda: transport.get_write_buffer_size() == 0)
    assert receiver.recv(100) == b"queued"


def test_the_flush_drops_a_datagram_that_still_fails_and_reports_it(reactor, wrapped, caplog):
    transport, fake, handler, receiver = wrapped
    address = receiver.getsockname()
    fake.error = BlockingIOError(errno.EAGAIN, "send buffer full")
    transport.sendto(b"first", address)
    transport._queue.append((b"doomed", ("127.0.0.1", 70000)))   # passed a check, fails to send
    transport._queue_size += len(b"doomed")
    transport.sendto(b"last", address)
    fake.error = None
    with caplog.at_level(logging.ERROR, logger="netmux"):
        run_until(reactor, lambda: transport.get_write_buffer_size() == 0, timeout=2)
    assert [receiver.recv(100) for _ in range(2)] == [b"first", b"last"]
    assert len(handler.errors) == 1 and isinstance(handler.errors[0], OSError)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]   # no traceback per turn
    transport.close()
    run_until(reactor, lambda: handler.lost)
