"""The TCP transport over real loopback sockets: writes, buffering, flow control, closing."""
from __future__ import annotations

import asyncio
import socket
import struct
import time

import pytest

import netmux
from conftest import (Echo, Recorder, readable, recv_exactly, recv_until_eof, run_and_recv,
                      run_until, wait_until)


@pytest.mark.parametrize("how", ["close", "abort"])
def test_write_after_close_or_abort_raises_connection_error(serve, how):
    seen = []

    class Closer(netmux.Handler):
        def connection_made(self, transport):
            super().connection_made(transport)
            getattr(transport, how)()
            for data in (b"late", "str"):
                try:
                    transport.write(data)
                except Exception as exc:
                    seen.append(type(exc))

    server = serve(Closer)
    with server.connect():
        wait_until(lambda: len(seen) == 2)
    assert seen == [ConnectionError, TypeError]


@pytest.mark.parametrize("bad", ["text", 42, None, [1, 2]])
def test_write_rejects_what_is_not_bytes_like(serve, bad):
    errors = []

    class Writer(netmux.Handler):
        def connection_made(self, transport):
            super().connection_made(transport)
            try:
                transport.write(bad)
            except TypeError as exc:
                errors.append(exc)
            transport.write(bytearray(b"ok"))
            transport.write(memoryview(b"!!"))
            transport.write(memoryview(b"x?x")[1:2])
            transport.write(b"")
            transport.writelines([b"a", bytearray(b"b"), memoryview(b"c")])
            transport.writelines(bytes([c]) for c in b"gen")      # any iterable
            transport.close()

    server = serve(Writer)
    with server.connect() as client:
        assert recv_until_eof(client) == b"ok!!?abcgen"
    assert len(errors) == 1


def test_write_after_write_eof_raises_runtime_error(serve):
    errors = []

    class HalfCloser(netmux.Handler):
        def connection_made(self, transport):
            super().connection_made(transport)
            assert transport.can_write_eof()
            transport.write(b"bye")
            transport.write_eof()
            try:
                transport.write(b"more")
            except RuntimeError as exc:
                errors.append(exc)

        def eof_received(self):
            return None

    server = serve(HalfCloser)
    with server.connect() as client:
        assert recv_until_eof(client) == b"bye"
    wait_until(lambda: errors)


def test_sixteen_mib_then_close_arrives_whole_before_eof(serve):
    payload = bytes(range(256)) * (16 * 4096)        # 16 MiB

    buffered_at_close = []

    class Sender(netmux.Handler):
        def connection_made(self, transport):
            super().connection_made(transport)
            # A small kernel send buffer, so that close() surely finds bytes left to
            # flush (a kernel that autotunes large buffers once took all 16 MiB).
            transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
            transport.write(payload)
            buffered_at_close.append(transport.get_write_buffer_size())
            transport.close()

    server = serve(Sender)
    with server.connect() as client:
        received = recv_until_eof(client, timeout=30)
    assert buffered_at_close[0] > 0, "close() found nothing buffered: the test tested nothing"
    assert len(received) == len(payload)
    assert received == payload


def test_half_close_round_trip(serve):
    class Reverser(netmux.Handler):
        def connection_made(self, transport):
            super().connection_made(transport)
            self.received = bytearray()

        def data_received(self, data):
            self.received += data

        def eof_received(self):
            self.transport.write(bytes(reversed(self.received)))
            self.transport.close()
            return True

    server = serve(Reverser)
    with server.connect() as client:
        client.sendall(b"abcdef" * 1000)
        client.shutdown(socket.SHUT_WR)
        assert recv_until_eof(client) == bytes(reversed(b"abcdef" * 1000))


def test_write_eof_keeps_reading(serve):
    greeting = b"greeting" * 250_000              # 2 MB: the FIN waits for the flush

    class EofFirst(Recorder):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.write(greeting)
            transport.write_eof()

    handler = EofFirst()
    server = serve(lambda: handler)
    with server.connect() as client:
        assert recv_until_eof(client) == greeting
        client.sendall(b"still heard")
        wait_until(lambda: bytes(handler.data) == b"still heard")
    assert handler.lost_event.wait(5)
    assert handler.events == ["made", "eof", "lost"]


def test_eof_received_true_keeps_write_side_open(serve):
    class LateReply(Recorder):
        def eof_received(self):
            super().eof_received()
            self.transport.reactor.call_later(0.05, self.reply)
            return True

        def reply(self):
            self.transport.write(b"after eof")
            self.transport.close()

    handler = LateReply()
    server = serve(lambda: handler)
    with server.connect() as client:
        client.shutdown(socket.SHUT_WR)
        assert recv_until_eof(client) == b"after eof"
    assert handler.lost_event.wait(5)
    assert handler.events == ["made", "eof", "lost"] and handler.lost == [None]


def test_eof_received_falsy_closes_after_flushing_what_it_wrote(serve):
    class Reply(netmux.Handler):
        def eof_received(self):
            self.transport.write(b"z" * 3_000_000)

    server = serve(Reply)
    with server.connect() as client:
        client.shutdown(socket.SHUT_WR)
        assert recv_until_eof(client) == b"z" * 3_000_000


def test_partial_sends_on_tiny_buffers_keep_order(serve):
    """Small kernel buffers force EAGAIN and partial sends on most writes."""
    chunks = [bytes([i % 251]) * (1 + (i * 7919) % 5000) for i in range(2000)]
    expected = b"".join(chunks)
    buffered_sizes = []

    class Writer(netmux.Handler):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            transport.set_write_buffer_limits(high=1 << 30)
            for chunk in chunks:
                transport.write(chunk)
                buffered_sizes.append(transport.get_write_buffer_size())
            transport.close()

    server = serve(Writer)
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.settimeout(10)
    client.connect(server.address)
    with client:
        received = bytearray()
        while True:
            chunk = client.recv(1000)      # small reads: the sender hits EAGAIN repeatedly
            if not chunk:
                break
            received += chunk
    assert bytes(received) == expected
    assert max(buffered_sizes) > 0, "the kernel never pushed back: the test did not test buffering"


def test_write_copies_a_mutable_buffer(serve):
    class Mutator(netmux.Handler):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            data = bytearray(b"a" * 1_000_000)
            transport.write(data)           # most of it is buffered
            data[:] = b"b" * 1_000_000      # the caller reuses its buffer
            transport.write(data)
            transport.close()

    server = serve(Mutator)
    with server.connect() as client:
        assert recv_until_eof(client) == b"a" * 1_000_000 + b"b" * 1_000_000


def test_many_small_writes_while_buffered_arrive_in_order(serve):
    count = 200_000

    class Small(netmux.Handler):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.set_write_buffer_limits(high=1 << 30)
            pack = struct.Struct("!I").pack
            for i in range(count):
                transport.write(pack(i))
            transport.close()

    server = serve(Small)
    with server.connect() as client:
        received = recv_until_eof(client, timeout=30)
    assert received == b"".join(struct.pack("!I", i) for i in range(count))


def test_pause_and_resume_writing_follow_the_water_marks(serve):
    calls = []

    class Flow(netmux.Handler):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            transport.set_write_buffer_limits(high=100_000, low=10_000)
            assert transport.get_write_buffer_limits() == (10_000, 100_000)
            transport.write(b"x" * 1_000_000)
            calls.append(("after write", transport.get_write_buffer_size()))

        def pause_writing(self):
            calls.append(("pause", self.transport.get_write_buffer_size()))

        def resume_writing(self):
            calls.append(("resume", self.transport.get_write_buffer_size()))
            self.transport.close()

    server = serve(Flow)
    with server.connect() as client:
        assert len(recv_until_eof(client)) == 1_000_000
    names = [name for name, _ in calls]
    assert names == ["pause", "after write", "resume"]
    assert calls[0][1] > 100_000
    assert calls[2][1] <= 10_000


def test_set_write_buffer_limits_validates():
    sock_a, sock_b = socket.socketpair()
    reactor = netmux.Reactor()
    try:
        sock_a.setblocking(False)
        transport = netmux.TCPTransport(reactor, sock_a, netmux.Handler())
        transport.set_write_buffer_limits()
        assert transport.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
        transport.set_write_buffer_limits(low=100)
        assert transport.get_write_buffer_limits() == (100, 400)
        transport.set_write_buffer_limits(high=40_000)
        assert transport.get_write_buffer_limits() == (10_000, 40_000)   # low: a quarter
        for high, low in ((10, 20), (-1, None), (None, -5)):
            with pytest.raises(ValueError):
                transport.set_write_buffer_limits(high=high, low=low)
    finally:
        sock_a.close()
        sock_b.close()
        reactor.close()


def test_pause_reading_stops_data_received(reactor, one_connection):
    handler, client = one_connection()
    transport = handler.transport
    assert transport.is_reading()
    transport.pause_reading()
    assert not transport.is_reading()
    client.sendall(b"held back")
    readable(transport.get_extra_info("socket"))   # a registered reader would be woken now
    for _ in range(3):
        reactor.run_once(0)
    assert handler.data == b""
    transport.resume_reading()
    assert transport.is_reading()
    run_until(reactor, lambda: handler.data == b"held back")


def test_abort_drops_the_buffer_and_reports_lost_once(serve):
    class Aborter(Recorder):
        def connection_made(self, transport):
            super().connection_made(transport)
            assert not transport.is_closing()
            transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            transport.set_write_buffer_limits(high=1 << 30)
            transport.write(b"z" * 5_000_000)
            assert transport.get_write_buffer_size() > 0
            transport.abort()
            transport.abort()
            transport.close()
            assert transport.is_closing()

    handler = Aborter()
    server = serve(lambda: handler)
    with server.connect() as client:
        received = recv_until_eof(client)
    assert len(received) < 5_000_000
    assert handler.lost_event.wait(5)
    assert handler.events == ["made", "lost"]
    assert handler.lost == [None]


def test_peer_reset_mid_stream_reports_the_error_and_serves_others(serve):
    handlers = []

    class Tracked(Recorder):
        def data_received(self, data):
            super().data_received(data)
            self.transport.write(data)

    def factory():
        handlers.append(Tracked())
        return handlers[-1]

    server = serve(factory)
    victim = server.connect()
    victim.sendall(b"x" * 100_000)
    wait_until(lambda: handlers and len(handlers[0].data) > 0)
    victim.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    victim.close()                       # RST, with echoed data unread
    assert handlers[0].lost_event.wait(5)
    assert handlers[0].events.count("lost") == 1
    assert isinstance(handlers[0].lost[0], (ConnectionError, type(None)))

    def write_after_loss():
        try:
            handlers[0].transport.write(b"too late")
        except ConnectionError as exc:
            return exc
        return None

    assert isinstance(server.call(write_after_loss), ConnectionError)
    assert handlers[0].transport.is_closing()
    with server.connect() as other:
        other.sendall(b"still here")
        assert recv_exactly(other, 10) == b"still here"


def test_connection_lost_exactly_once_on_every_path(serve):
    handlers = []

    class Counting(Recorder):
        def data_received(self, data):
            if data == b"close":
                self.transport.close()
                self.transport.close()
                self.transport.abort()
            elif data == b"abort":
                self.transport.abort()
                self.transport.close()
            elif data == b"raise":
                self.transport.close()
                raise RuntimeError("after close")

    def factory():
        handlers.append(Counting())
        return handlers[-1]

    server = serve(factory)
    for command in (b"close", b"abort", b"raise", b"", b"eof"):
        with server.connect() as client:
            if command == b"eof":
                client.shutdown(socket.SHUT_WR)
            elif command:
                client.sendall(command)
            if command:
                recv_until_eof(client)
    wait_until(lambda: len(handlers) == 5 and all(h.lost_event.is_set() for h in handlers))
    server.call(lambda: None)     # a full reactor turn: a second connection_lost would have run
    for handler in handlers:
        assert handler.events.count("lost") == 1, handler.events
        assert handler.events[0] == "made"


def test_extra_info_names_both_ends(serve):
    info = {}

    class Info(netmux.Handler):
        def connection_made(self, transport):
            super().connection_made(transport)
            info["peername"] = transport.get_extra_info("peername")
            info["sockname"] = transport.get_extra_info("sockname")
            info["socket"] = transport.get_extra_info("socket")
            info["missing"] = transport.get_extra_info("nothing", "dflt")
            info["missing without default"] = transport.get_extra_info("nothing")
            info["reactor"] = transport.reactor
            transport.close()

    server = serve(Info)
    with server.connect() as client:
        recv_until_eof(client)
        assert info["peername"][:2] == client.getsockname()[:2]
        assert info["sockname"][:2] == server.address[:2]
        assert isinstance(info["socket"], socket.socket)
        assert info["missing"] == "dflt" and info["missing without default"] is None
        assert info["reactor"] is server.server.reactor


def test_an_asyncio_protocol_runs_unchanged(serve):
    lost = []

    class AsyncioEcho(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data.upper())

        def connection_lost(self, exc):
            lost.append(exc)

    server = serve(AsyncioEcho)
    with server.connect() as client:
        client.sendall(b"asyncio names")
        assert recv_exactly(client, 13) == b"ASYNCIO NAMES"
        client.shutdown(socket.SHUT_WR)       # asyncio's default eof_received: close
        assert recv_until_eof(client) == b""
    wait_until(lambda: lost)
    assert lost == [None]


def test_slow_reader_cannot_grow_the_echo_buffer_without_bound(reactor):
    """The default backpressure: the echo's buffer stays near the high-water mark,
    reading stops, and the peer is stopped by the kernel; nothing is lost."""
    handlers, sizes = [], []

    class Watched(Echo):
        def connection_made(self, transport):
            super().connection_made(transport)
            handlers.append(self)

        def data_received(self, data):
            super().data_received(data)
            sizes.append(self.transport.get_write_buffer_size())

    with netmux.TCPServer(("127.0.0.1", 0), Watched, reactor=reactor) as server:
        with socket.create_connection(server.server_address, timeout=5) as client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            client.setblocking(False)
            run_until(reactor, lambda: handlers)
            transport, sent, block = handlers[0].transport, 0, b"s" * 65536
            while transport.is_reading() and sent < 64 << 20:   # until the echo pushes back
                try:
                    sent += client.send(block)
                except BlockingIOError:
                    pass
                reactor.run_once(0)
            assert not transport.is_reading(), f"the echo took {sent} bytes without pushing back"
            while True:                                        # now the kernel stops the peer
                try:
                    sent += client.send(block)
                except BlockingIOError:
                    break
                reactor.run_once(0)
                assert sent < 64 << 20, "the peer was never stopped"
            assert max(sizes) < 64 * 1024 + 256 * 1024 + 1       # high water + one recv
            assert run_and_recv(reactor, client, sent) == b"s" * sent   # nothing lost while paused


def test_close_with_unread_input_still_delivers_the_whole_reply(serve):
    """Closing with the peer's bytes unread must not turn into RST and truncate the reply."""
    reply = bytes(range(256)) * (32 * 1024)              # 8 MiB

    handlers = []

    class ReplyThenClose(netmux.Handler):
        def connection_made(self, transport):
            super().connection_made(transport)
            handlers.append(self)

        def data_received(self, data):
            self.transport.write(reply)
            self.transport.close()                       # more input is on its way, unread

    server = serve(ReplyThenClose)
    with server.connect() as client:
        client.sendall(b"request")
        wait_until(lambda: handlers and handlers[0].transport.is_closing())
        # In the server's receive queue (sendall returns once the kernel has it),
        # after close() stopped reading: it is never read.
        client.sendall(b"pipelined junk " * 20_000)
        received = recv_until_eof(client, timeout=20)
    assert len(received) == len(reply)
    assert received == reply


def test_a_closed_connection_lingers_at_most_a_few_seconds_for_the_peers_fin(serve):
    class Closer(netmux.Handler):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.write(b"bye")
            transport.close()

    server = serve(Closer)
    reactor = server.server.reactor
    with server.connect() as client:
        assert recv_until_eof(client) == b"bye"
        wait_until(lambda: reactor.statistics()["in_flight"] == 1)   # we hold our end open, so it waits
    wait_until(lambda: reactor.statistics()["in_flight"] == 0)   # our FIN lets it close at once
    with server.connect() as silent:
        assert recv_until_eof(silent) == b"bye"
        start = time.monotonic()
        wait_until(lambda: reactor.statistics()["in_flight"] == 0,
                   timeout=netmux.transport.LINGER_SECONDS + 3)
        assert time.monotonic() - start < netmux.transport.LINGER_SECONDS + 1


# ----------------------------------------------------------------------
# Hardening (issue 8): transports outliving their reactor
# ----------------------------------------------------------------------
def test_close_on_a_closed_reactor_acts_as_abort_and_reports_lost_once():
    reactor = netmux.Reactor()
    ours, peer = socket.socketpair()
    try:
        handler = netmux.connect_socket(ours, Recorder, reactor=reactor)
        reactor.close()                       # the transport is not the reactor's to close
        handler.transport.close()             # raised RuntimeError, leaking the descriptor
        handler.transport.close()
        assert ours.fileno() == -1            # released
        assert handler.events == ["made", "lost"] and handler.lost == [None]
        peer.settimeout(5)
        assert peer.recv(10) == b""
    finally:
        ours.close()
        peer.close()


def test_a_connection_lost_queued_when_the_reactor_closes_is_delivered():
    reactor = netmux.Reactor()
    pairs = [socket.socketpair() for _ in range(2)]
    try:
        handlers = [netmux.connect_socket(pair[0], Recorder, reactor=reactor) for pair in pairs]
        handlers[0].transport.abort()         # connection_lost queued for the next turn
        handlers[1].transport.close()         # flushed close: queued too
        assert handlers[0].events == ["made"] and handlers[1].events == ["made"]
        reactor.close()                       # no turn will come: close() delivers them
        assert [h.events for h in handlers] == [["made", "lost"]] * 2
        reactor.close()
        assert [h.events for h in handlers] == [["made", "lost"]] * 2
    finally:
        for a, b in pairs:
            a.close()
            b.close()


class NamesAtLost(Recorder):
    def connection_lost(self, exc):
        super().connection_lost(exc)
        self.names = (self.transport.get_extra_info("peername"), self.transport.get_extra_info("sockname"))


@pytest.mark.parametrize("how", ["peer closes", "close", "abort"])
def test_both_names_are_still_known_in_connection_lost_on_a_server(reactor, one_connection, how):
    handler, client = one_connection(NamesAtLost)
    expected = (client.getsockname(), client.getpeername())
    if how == "peer closes":
        client.close()
    else:
        getattr(handler.transport, how)()
    run_until(reactor, lambda: handler.lost)
    assert handler.names == expected


def test_both_names_are_still_known_in_connection_lost_on_a_client(reactor):
    with netmux.TCPServer(("127.0.0.1", 0), Echo, reactor=reactor) as server:
        handler = netmux.connect(server.server_address, NamesAtLost, reactor=reactor)
        run_until(reactor, lambda: handler.events == ["made"])
        handler.transport.close()
        run_until(reactor, lambda: handler.lost)
        assert handler.names[0] == server.server_address
        assert handler.names[1][0] == "127.0.0.1" and handler.names[1][1] > 0


def test_write_buffer_size_counts_the_unsent_bytes(reactor, one_connection):
    handler, client = one_connection()
    transport = handler.transport
    assert transport.get_write_buffer_size() == 0
    transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    transport.set_write_buffer_limits(high=1 << 30)
    transport.write(b"w" * (4 << 20))
    assert 0 < transport.get_write_buffer_size() <= 4 << 20
    assert run_and_recv(reactor, client, 4 << 20) == b"w" * (4 << 20)
    run_until(reactor, lambda: transport.get_write_buffer_size() == 0)
