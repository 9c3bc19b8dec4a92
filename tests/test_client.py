"""connect(): outgoing TCP connections on the reactor, beside servers on the same loop."""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import select
import socket
import time
from typing import Any, List

import pytest

import netmux
from conftest import Echo, Recorder, needs_ipv6, run_and_recv, run_in_a_thread_until_it_sleeps, run_until


# ----------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------
def closed_port(family: int = socket.AF_INET, host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on: bound, never listened, closed."""
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


# ----------------------------------------------------------------------
# Success: a server and its client on one reactor, one thread
# ----------------------------------------------------------------------
class PingPong(Recorder):
    """Sends ``ping n``, waits for its echo, a hundred times, then closes."""

    rounds = 100

    def connection_made(self, transport):
        super().connection_made(transport)
        self.replies = 0
        transport.write(b"ping 0\n")

    def data_received(self, data):
        super().data_received(data)
        while b"\n" in self.data:
            line, _, rest = bytes(self.data).partition(b"\n")
            self.data = bytearray(rest)
            assert line == b"ping %d" % self.replies
            self.replies += 1
            if self.replies == self.rounds:
                self.transport.close()
            else:
                self.transport.write(b"ping %d\n" % self.replies)


@pytest.mark.parametrize("host", ["127.0.0.1", pytest.param("::1", marks=needs_ipv6)])
def test_server_and_client_on_one_reactor_in_one_thread_exchange_messages(reactor, host):
    with netmux.TCPServer((host, 0), Echo, reactor=reactor) as server:
        client = netmux.connect(server.server_address, PingPong, reactor=reactor, timeout=5)
        assert client.events == []                  # nothing happens inside connect()
        run_until(reactor, lambda: client.lost)
        assert client.replies == 100
        assert client.events == ["made", "lost"] and client.lost == [None]
        peer = client.transport.get_extra_info("peername")
        assert peer[:2] == server.server_address[:2]
        run_until(reactor, lambda: server.connections == 0)


def test_connect_returns_its_handler_which_talks_to_any_listener_and_hears_its_eof(reactor):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        handler = netmux.connect(listener.getsockname(), Recorder, reactor=reactor)
        assert isinstance(handler, Recorder)
        run_until(reactor, lambda: handler.events == ["made"])
        peer, _ = listener.accept()
        with peer:
            handler.transport.write(b"from client")
            assert run_and_recv(reactor, peer, 11) == b"from client"
            peer.sendall(b"from server")
            run_until(reactor, lambda: handler.data == b"from server")
        run_until(reactor, lambda: handler.lost)
        assert handler.events == ["made", "eof", "lost"] and handler.lost == [None]


def test_connected_transport_is_the_servers_kind_with_nodelay(reactor):
    with netmux.TCPServer(("127.0.0.1", 0), Echo, reactor=reactor) as server:
        client = netmux.connect(server.server_address, Recorder, reactor=reactor)
        run_until(reactor, lambda: client.events)
        transport = client.transport
        assert isinstance(transport, netmux.TCPTransport) and transport.reactor is reactor
        sock = transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert not sock.getblocking()
        transport.close()
        run_until(reactor, lambda: client.lost)


def test_a_timeout_does_not_fire_once_connected(reactor):
    with netmux.TCPServer(("127.0.0.1", 0), Echo, reactor=reactor) as server:
        client = netmux.connect(server.server_address, Recorder, reactor=reactor, timeout=0.1)
        run_until(reactor, lambda: client.events)
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            reactor.run_once(0.05)
        assert client.events == ["made"]
        client.transport.write(b"still up")
        run_until(reactor, lambda: client.data == b"still up")
        client.transport.close()
        run_until(reactor, lambda: client.lost)
        assert client.lost == [None]


# ----------------------------------------------------------------------
# A relay: a server handler that connects onward, backpressure on both legs
# ----------------------------------------------------------------------
SMALL_BUFFER = 32 * 1024     # kernel socket buffers, so that 10 MiB must back up


def shrink_buffers(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)


class Leg(netmux.Handler):
    """One side of the relay: forwards what it reads to ``other``.

    Backpressure: when *our* write buffer rises above high water, stop reading
    the *other* leg (its data is what fills us), and read it again once we drain.
    """

    def __init__(self, other: "Leg" = None):
        self.other = other
        self.pauses = 0
        self.largest_buffer = 0
        self.lost: List[Any] = []

    def data_received(self, data):
        self.other.transport.write(data)
        self.other.largest_buffer = max(self.other.largest_buffer,
                                        self.other.transport.get_write_buffer_size())

    def pause_writing(self):
        self.pauses += 1
        self.other.transport.pause_reading()

    def resume_writing(self):
        self.other.transport.resume_reading()

    def connection_lost(self, exc):
        self.lost.append(exc)
        if self.other is not None and self.other.transport is not None:
            self.other.transport.close()


class Inbound(Leg):
    """The leg a client connected to; it connects onward when it starts."""

    upstream: Any = None
    instances: List["Inbound"] = []

    def connection_made(self, transport):
        super().connection_made(transport)
        Inbound.instances.append(self)
        transport.pause_reading()                   # nothing to forward to yet
        self.other = netmux.connect(self.upstream, lambda: Outbound(self), reactor=transport.reactor,
                                    timeout=5)

    def eof_received(self):
        self.other.transport.write_eof()            # pass the half-close on
        return True


class Outbound(Leg):
    def connection_made(self, transport):
        super().connection_made(transport)
        shrink_buffers(transport.get_extra_info("socket"))
        self.other.transport.resume_reading()

    def eof_received(self):
        self.other.transport.close()                # flushes, then closes
        return None

    def connection_lost(self, exc):
        if self.transport is None:                  # never connected
            self.other.transport.abort()
        super().connection_lost(exc)


class Pusher(netmux.Handler):
    """Writes 10 MiB and a FIN; reads only once the relay has backed up both ways."""

    def __init__(self, payload: bytes):
        self.payload = payload
        self.received = hashlib.sha256()
        self.count = 0
        self.lost: List[Any] = []
        self.waited = 0.0

    def connection_made(self, transport):
        super().connection_made(transport)
        shrink_buffers(transport.get_extra_info("socket"))
        transport.pause_reading()
        transport.write(self.payload)
        transport.write_eof()
        self.started = time.monotonic()
        transport.reactor.call_later(0.01, self.maybe_read)

    def maybe_read(self):
        relays = Inbound.instances
        backed_up = relays and relays[0].pauses and relays[0].other.pauses
        self.waited = time.monotonic() - self.started
        if backed_up or self.waited > 5:
            self.transport.resume_reading()
        else:
            self.transport.reactor.call_later(0.01, self.maybe_read)

    def pause_writing(self):
        pass        # this client only writes once: let its own buffer hold it

    def resume_writing(self):
        pass

    def data_received(self, data):
        self.received.update(data)
        self.count += len(data)

    def connection_lost(self, exc):
        self.lost.append(exc)


def test_a_relay_passes_ten_mebibytes_intact_with_backpressure_on_both_legs(reactor, monkeypatch):
    monkeypatch.setattr(Inbound, "instances", [])
    payload = os.urandom(10 * 1024 * 1024)
    upstream = netmux.TCPServer(("127.0.0.1", 0), Echo, reactor=reactor)
    relay = netmux.TCPServer(("127.0.0.1", 0), Inbound, reactor=reactor)
    for listener in (upstream.socket, relay.socket):
        shrink_buffers(listener)                    # accepted sockets inherit these
    monkeypatch.setattr(Inbound, "upstream", upstream.server_address)
    try:
        client = netmux.connect(relay.server_address, lambda: Pusher(payload), reactor=reactor)
        run_until(reactor, lambda: client.lost, timeout=20)
    finally:
        relay.server_close()
        upstream.server_close()
    assert client.lost == [None]
    assert client.count == len(payload)
    assert client.received.digest() == hashlib.sha256(payload).digest()

    inbound = Inbound.instances[0]
    outbound = inbound.other
    assert inbound.pauses >= 1, "the leg towards the client never backed up"
    assert outbound.pauses >= 1, "the leg towards the upstream never backed up"
    assert client.waited < 5, "the relay did not back up both ways in time"
    # Memory bound: a leg's buffer holds at most high water plus one read.
    bound = 64 * 1024 + netmux.Reactor.read_buffer_size
    assert inbound.largest_buffer <= bound and outbound.largest_buffer <= bound
    assert inbound.lost == [None] and outbound.lost == [None]


# ----------------------------------------------------------------------
# Failures: connection_lost(exc), exactly once, on a later turn
# ----------------------------------------------------------------------
def test_connect_to_a_closed_port_reports_connection_refused(reactor):
    client = netmux.connect(("127.0.0.1", closed_port()), Recorder, reactor=reactor)
    assert client.events == []
    run_until(reactor, lambda: client.lost)
    for _ in range(3):
        reactor.run_once(0)
    assert client.events == ["lost"]
    assert isinstance(client.lost[0], ConnectionRefusedError)
    assert client.lost[0].errno == errno.ECONNREFUSED


@needs_ipv6
def test_connect_to_a_closed_ipv6_port_reports_connection_refused(reactor):
    client = netmux.connect(("::1", closed_port(socket.AF_INET6, "::1")), Recorder, reactor=reactor)
    run_until(reactor, lambda: client.lost)
    assert client.events == ["lost"] and isinstance(client.lost[0], ConnectionRefusedError)


def fill_backlog(listener: socket.socket, sockets: List[socket.socket]) -> None:
    """Connect without accepting until a connect stays in progress: the accept
    queue is full, and Linux now drops SYNs to this listener."""
    address = listener.getsockname()
    for _ in range(16):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sockets.append(sock)
        code = sock.connect_ex(address)
        if code == 0:
            continue
        assert code == errno.EINPROGRESS
        _, writable, _ = select.select([], [sock], [], 0.3)
        if not writable:
            return
    pytest.skip("the listener's backlog never filled")


def test_connect_with_a_timeout_to_a_full_backlog_reports_timeout_error(reactor):
    sockets: List[socket.socket] = []
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        fill_backlog(listener, sockets)
        started = time.monotonic()
        client = netmux.connect(listener.getsockname(), Recorder, reactor=reactor, timeout=0.3)
        run_until(reactor, lambda: client.lost, timeout=3)
        elapsed = time.monotonic() - started
        for _ in range(3):
            reactor.run_once(0)
    finally:
        for sock in sockets:
            sock.close()
        listener.close()
    assert client.events == ["lost"]
    assert type(client.lost[0]) is TimeoutError
    assert 0.29 <= elapsed < 0.3 + 0.5


def test_a_name_that_does_not_resolve_is_reported_not_raised(reactor, monkeypatch):
    def no_such_name(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)
    client = netmux.connect(("no-such-host.invalid", 80), Recorder, reactor=reactor, timeout=1)
    assert client.events == []
    run_until(reactor, lambda: client.lost)
    assert client.events == ["lost"] and isinstance(client.lost[0], socket.gaierror)


def test_a_refused_address_falls_back_to_the_next_one(reactor, monkeypatch):
    with netmux.TCPServer(("127.0.0.1", 0), Echo, reactor=reactor) as server:
        refused = ("127.0.0.1", closed_port())
        good = server.server_address
        stream = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "")
        monkeypatch.setattr(socket, "getaddrinfo",
                            lambda *args, **kwargs: [stream + (refused,), stream + (good,)])
        client = netmux.connect(("example.test", 0), Recorder, reactor=reactor, timeout=5)
        run_until(reactor, lambda: client.events)
        assert client.events == ["made"]
        assert client.transport.get_extra_info("peername") == good
        client.transport.close()
        run_until(reactor, lambda: client.lost)
        assert client.lost == [None]


def test_every_address_refused_reports_one_error_once(reactor, monkeypatch):
    stream = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "")
    addresses = [stream + (("127.0.0.1", closed_port()),) for _ in range(3)]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: addresses)
    client = netmux.connect(("example.test", 0), Recorder, reactor=reactor)
    run_until(reactor, lambda: client.lost)
    for _ in range(3):
        reactor.run_once(0)
    assert client.events == ["lost"] and isinstance(client.lost[0], ConnectionRefusedError)


def test_a_raising_connection_made_is_logged_and_costs_that_connection(reactor, caplog):
    class Broken(Recorder):
        def connection_made(self, transport):
            super().connection_made(transport)
            raise RuntimeError("handler broke")

    with netmux.TCPServer(("127.0.0.1", 0), Echo, reactor=reactor) as server:
        with caplog.at_level(logging.ERROR, logger="netmux"):
            client = netmux.connect(server.server_address, Broken, reactor=reactor)
            run_until(reactor, lambda: client.lost)
        assert client.events == ["made", "lost"] and isinstance(client.lost[0], RuntimeError)
        assert len([r for r in caplog.records if r.exc_info]) == 1
        run_until(reactor, lambda: server.connections == 0)


# ----------------------------------------------------------------------
# Misuse raises at once
# ----------------------------------------------------------------------
def test_misuse_raises_at_once(reactor):
    with pytest.raises(TypeError):
        netmux.connect(("127.0.0.1", 9), Recorder(), reactor=reactor)
    for not_an_address in (9, ("127.0.0.1",), None):
        with pytest.raises(TypeError):
            netmux.connect(not_an_address, Recorder, reactor=reactor)
    with pytest.raises(ValueError):
        netmux.connect(("127.0.0.1", 9), Recorder, reactor=reactor, timeout=0)
    with pytest.raises(ZeroDivisionError):
        netmux.connect(("127.0.0.1", 9), lambda: 1 / 0, reactor=reactor)


def test_a_host_port_string_is_a_unix_path_and_fails_on_the_loop(reactor, tmp_path, monkeypatch):
    # A str address means a Unix socket path now: "127.0.0.1:9" is a file
    # name, and no such file exists here.
    monkeypatch.chdir(tmp_path)
    handler = netmux.connect("127.0.0.1:9", Recorder, reactor=reactor)
    assert handler.events == []              # never from inside connect()
    run_until(reactor, lambda: handler.lost)
    assert handler.events == ["lost"]
    assert isinstance(handler.lost[0], FileNotFoundError)


def test_connect_socket_drives_an_already_connected_socket():
    reactor = netmux.Reactor()
    left, right = socket.socketpair()
    try:
        class Upper(netmux.Handler):
            def data_received(self, data):
                self.transport.write(data.upper())

        handler = netmux.connect_socket(left, Upper, reactor=reactor)
        assert handler.transport is not None and not left.getblocking()
        right.sendall(b"adopted")
        right.settimeout(5)
        got = b""
        deadline = time.monotonic() + 5
        while len(got) < 7 and time.monotonic() < deadline:
            reactor.run_once(0.05)
            try:
                right.setblocking(False)
                got += right.recv(100)
            except BlockingIOError:
                pass
        assert got == b"ADOPTED"
        handler.transport.abort()
        reactor.run_once(0)
    finally:
        right.close()
        reactor.close()
    with socket.socket() as unused, pytest.raises(TypeError):
        netmux.connect_socket(unused, "nope", reactor=reactor)


def test_closing_the_reactor_during_a_connect_releases_the_socket_and_tells_the_handler():
    sockets: List[socket.socket] = []
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    reactor = netmux.Reactor()
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        fill_backlog(listener, sockets)
        handler = netmux.connect(listener.getsockname(), Recorder, reactor=reactor)
        reactor.run_once(0.05)
        assert reactor.statistics()["in_flight"] == 1 and handler.events == []     # still in progress
    finally:
        reactor.close()
        for sock in sockets:
            sock.close()
        listener.close()
    assert handler.events == ["lost"]
    assert isinstance(handler.lost[0], ConnectionAbortedError)


# ----------------------------------------------------------------------
# Hardening (issue 8)
# ----------------------------------------------------------------------
def test_a_spurious_writable_wake_up_does_not_end_a_pending_connect(reactor, monkeypatch):
    """A wake-up is a hint: SO_ERROR 0 with no peer yet (ENOTCONN) means still connecting."""
    sockets: List[socket.socket] = []
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    writers: List[Any] = []                       # what the connect asks to hear on writable
    add_writer = reactor.add_writer
    monkeypatch.setattr(reactor, "add_writer",
                        lambda fileobj, callback, *args: (writers.append(callback),
                                                          add_writer(fileobj, callback, *args)))
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        fill_backlog(listener, sockets)
        handler = netmux.connect(listener.getsockname(), Recorder, reactor=reactor, timeout=10)
        reactor.run_once(0.05)
        assert reactor.statistics()["in_flight"] == 1 and len(writers) == 1
        writers[0]()                              # as a stale or spurious event would
        reactor.run_once(0)
        assert handler.events == []               # was: connection_lost(ENOTCONN)
        listener.setblocking(False)

        def accept_all_then_check():              # room in the queue: a SYN retry gets in
            while True:
                try:
                    sockets.append(listener.accept()[0])
                except BlockingIOError:
                    return handler.events

        run_until(reactor, accept_all_then_check, timeout=8)
        assert handler.events == ["made"]
        handler.transport.abort()
        run_until(reactor, lambda: handler.lost)
    finally:
        for sock in sockets:
            sock.close()
        listener.close()


def test_connect_on_a_closed_reactor_raises_and_opens_nothing():
    reactor = netmux.Reactor()
    made = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        reactor.close()
        with pytest.raises(RuntimeError):
            netmux.connect(listener.getsockname(), lambda: made.append(1) or Recorder(), reactor=reactor)
        with pytest.raises(RuntimeError):
            netmux.connect(listener.getsockname(), Recorder, reactor=reactor, timeout=1)
    assert made == []                             # no handler, and (no_leaks) no socket


@pytest.mark.parametrize("timeout", [float("inf"), 30 * 24 * 3600.0])
def test_a_connect_timeout_of_inf_or_a_month_never_overflows_the_poller(timeout):
    sockets: List[socket.socket] = []
    reactor = netmux.Reactor()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        fill_backlog(listener, sockets)          # the connect stays pending: its timer leads
        handler = netmux.connect(listener.getsockname(), Recorder, reactor=reactor, timeout=timeout)
        # run_once sleeps in the poller on that timer (OverflowError before the cap).
        finish = run_in_a_thread_until_it_sleeps(lambda: reactor.run_once(None))
        finish(lambda: reactor.call_soon_threadsafe(lambda: None))
        assert handler.events == []
    finally:
        reactor.close()
        for sock in sockets:
            sock.close()
        listener.close()
    assert isinstance(handler.lost[0], ConnectionAbortedError)
    with pytest.raises(ValueError):
        netmux.connect(("127.0.0.1", 9), Recorder, reactor=reactor, timeout=float("nan"))


@needs_ipv6
def test_connect_keeps_an_ipv6_flowinfo_and_scope_id(reactor, monkeypatch):
    connected_to = []

    class RecordingSocket(socket.socket):
        def connect_ex(self, address):
            connected_to.append(address)
            return super().connect_ex(address)

    monkeypatch.setattr(netmux.client.socket, "socket", RecordingSocket)
    scope = socket.if_nametoindex("lo")
    with socket.create_server(("::1", 0), family=socket.AF_INET6) as listener:
        port = listener.getsockname()[1]
        for address in [("::1", port, 0, 0), ("::1", port, 0, scope)]:
            handler = netmux.connect(address, Recorder, reactor=reactor)
            run_until(reactor, lambda: handler.events)
            assert handler.events == ["made"]
            assert connected_to[-1] == address       # the 4-tuple reached connect() unchanged
            handler.transport.abort()
            run_until(reactor, lambda: handler.lost)
