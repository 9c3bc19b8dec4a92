"""The graceful drain: TCPServer.shutdown(grace=...), drain_started() through every
layer, the apps ending at their next message boundary, the command line's signals."""
from __future__ import annotations

import asyncio
import math
import signal
import socket
import threading
import time
from typing import Any, List

import pytest

import netmux
from conftest import ServerProcess, keeping, recv_exactly, recv_until_eof, run_and_recv, run_until, wait_until
from netmux.apps.kv import KVHandler
from netmux.apps.kvstore import Store
from netmux.testing import drive, pair


class Upper(netmux.LineHandler):
    """A request/response handler that ends at its next line boundary on a drain."""

    def line_received(self, line: bytes) -> None:
        self.send_line(line.upper())
        if self.draining and not self.framer.buffered:
            self.transport.close()

    def drain_started(self) -> None:
        super().drain_started()
        if not self.framer.buffered:
            self.transport.close()


class Stays(netmux.Handler):
    """Never ends on its own: the grace deadline must end it."""

    def __init__(self) -> None:
        self.drains = 0
        self.lost: List[Any] = []

    def drain_started(self) -> None:
        self.drains += 1

    def connection_lost(self, exc: Any) -> None:
        self.lost.append(exc)


def _server(reactor: netmux.Reactor, factory: Any, **kwargs: Any) -> netmux.TCPServer:
    return netmux.TCPServer(("127.0.0.1", 0), factory, reactor=reactor, **kwargs)


# ----------------------------------------------------------------------
# The server's side
# ----------------------------------------------------------------------
@pytest.mark.parametrize("layered", [False, True], ids=["plain", "CountingLayer"])
def test_a_client_mid_request_gets_its_answer_then_the_connection_ends(reactor, layered):
    handlers: List[Any] = []
    factory = keeping(handlers, Upper)
    server = _server(reactor, (lambda: netmux.CountingLayer(factory())) if layered else factory)
    idle = socket.create_connection(server.server_address, timeout=5)
    busy = socket.create_connection(server.server_address, timeout=5)
    try:
        run_until(reactor, lambda: len(handlers) == 2)
        busy.sendall(b"half a li")
        run_until(reactor, lambda: any(handler.framer.buffered == 9 for handler in handlers))
        server.shutdown(grace=10)           # the reactor is not running: the drain begins now
        assert server.is_draining()
        run_until(reactor, lambda: server.connections == 1)    # the idle one closed at once
        busy.sendall(b"ne\nnever read\n")
        replies = bytearray()
        busy.setblocking(False)

        def answered() -> bool:
            try:
                replies.extend(busy.recv(100))
            except BlockingIOError:
                pass
            return server.connections == 0
        run_until(reactor, answered)
        busy.settimeout(5)
        replies += recv_until_eof(busy)
        assert bytes(replies) == b"HALF A LINE\n"     # answered, then closed at the boundary
        assert recv_until_eof(idle) == b""            # no request in hand: closed at once
    finally:
        idle.close()
        busy.close()
        server.server_close()


def test_new_connections_are_refused_once_the_drain_began(reactor):
    server = _server(reactor, Stays)
    address = server.server_address
    server.shutdown(grace=0)
    run_until(reactor, lambda: server.connections == 0)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=5).close()
    server.server_close()


def test_connections_queued_in_the_backlog_are_accepted_and_drained_not_reset(reactor):
    handlers: List[Any] = []
    server = _server(reactor, keeping(handlers, Upper))
    clients = [socket.create_connection(server.server_address, timeout=5) for _ in range(5)]
    try:
        for client in clients:
            client.sendall(b"hi\n")        # queued: the reactor has not turned yet
        server.shutdown(grace=10)
        assert len(handlers) == 5           # taken from the backlog before the socket closed
        run_until(reactor, lambda: server.connections == 0)
        for client in clients:
            assert recv_until_eof(client) == b"HI\n"
    finally:
        for client in clients:
            client.close()
        server.server_close()


def test_the_grace_deadline_closes_what_is_left_and_stops_serving(serve):
    handlers: List[Stays] = []
    serving = serve(keeping(handlers, Stays))
    client = serving.connect()
    try:
        wait_until(lambda: handlers)
        started = time.monotonic()
        serving.server.shutdown(grace=0.3)  # from another thread: returns once drained
        elapsed = time.monotonic() - started
        assert 0.3 <= elapsed < 5
        assert not serving.thread.is_alive() or serving.thread.join(5) is None
        assert handlers[0].drains == 1 and handlers[0].lost == [None]
        assert recv_until_eof(client) == b""
    finally:
        client.close()


def test_a_second_shutdown_with_grace_zero_forces_the_drain(serve):
    handlers: List[Stays] = []
    serving = serve(keeping(handlers, Stays))
    client = serving.connect()
    try:
        wait_until(lambda: handlers)
        serving.server.reactor.call_soon_threadsafe(serving.server.shutdown, 3600)
        wait_until(lambda: serving.server.is_draining())
        started = time.monotonic()
        serving.server.shutdown(grace=0)
        assert time.monotonic() - started < 5
        assert handlers[0].lost == [None] and handlers[0].drains == 1
    finally:
        client.close()


def test_a_drain_with_no_connection_stops_serve_forever_at_once(serve):
    serving = serve(Stays)
    started = time.monotonic()
    serving.server.shutdown(grace=math.inf)
    assert time.monotonic() - started < 2
    serving.thread.join(5)
    assert not serving.thread.is_alive()


def test_shutdown_with_grace_from_a_handler_does_not_wait_for_itself(serve):
    class Stopper(netmux.Handler):
        def data_received(self, data: bytes) -> None:
            self.transport.write(data)
            self.transport.get_extra_info("server").shutdown(grace=60)

    serving = serve(Stopper)
    client = serving.connect()
    try:
        client.sendall(b"stop")
        assert recv_exactly(client, 4) == b"stop"
        wait_until(serving.server.is_draining)
        assert serving.thread.is_alive()    # a plain Handler finishes when the peer closes
        client.close()
        serving.thread.join(10)
        assert not serving.thread.is_alive()
    finally:
        client.close()


@pytest.mark.parametrize("grace", [-1, -0.001, math.nan, "10"])
def test_a_bad_grace_is_refused(reactor, grace):
    server = _server(reactor, Stays)
    try:
        with pytest.raises((ValueError, TypeError)):
            server.shutdown(grace=grace)
        assert not server.is_draining()
    finally:
        server.server_close()


def test_shutdown_without_grace_keeps_its_meaning(serve):
    handlers: List[Stays] = []
    serving = serve(keeping(handlers, Stays))
    client = serving.connect()
    try:
        wait_until(lambda: handlers)
        serving.server.shutdown()
        serving.thread.join(5)
        assert handlers[0].drains == 0 and handlers[0].lost == []   # left for server_close()
    finally:
        client.close()


def test_an_asyncio_protocol_without_drain_started_is_drained_by_the_deadline(reactor):
    lost: List[Any] = []

    class Plain(asyncio.Protocol):
        def connection_lost(self, exc: Any) -> None:
            lost.append(exc)

    server = _server(reactor, Plain)
    client = socket.create_connection(server.server_address, timeout=5)
    try:
        run_until(reactor, lambda: server.connections == 1)
        server.shutdown(grace=0.05)
        run_until(reactor, lambda: lost)
        assert lost == [None]
    finally:
        client.close()
        server.server_close()


def test_a_raising_drain_started_costs_only_its_connection(reactor, caplog):
    class Bad(netmux.Handler):
        def drain_started(self) -> None:
            raise RuntimeError("bad drain")

    server = _server(reactor, Bad)
    client = socket.create_connection(server.server_address, timeout=5)
    try:
        run_until(reactor, lambda: server.connections == 1)
        server.shutdown(grace=60)
        run_until(reactor, lambda: server.connections == 0)
        assert "bad drain" in caplog.text and server.stats()["handler_errors"] == 1
    finally:
        client.close()
        server.server_close()


def test_a_stream_handler_sees_the_drain_and_ends_at_its_boundary(reactor):
    class Lines(netmux.StreamHandler):
        async def handle(self) -> None:
            while not self.draining:
                line = await self.readline()
                if not line:
                    break
                await self.sendall(line.upper())

    server = _server(reactor, Lines)
    client = socket.create_connection(server.server_address, timeout=5)
    try:
        client.sendall(b"one\n")
        assert run_and_recv(reactor, client, 4) == b"ONE\n"     # now waiting in readline
        server.shutdown(grace=10)
        client.sendall(b"two\n")            # handled: readline was waiting, then the loop ends
        run_until(reactor, lambda: server.connections == 0)
        client.settimeout(5)
        assert recv_until_eof(client) == b"TWO\n"
    finally:
        client.close()
        server.server_close()


# ----------------------------------------------------------------------
# The apps, and drive()/pair(): what a handler sees of a drain
# ----------------------------------------------------------------------
def _kv() -> KVHandler:
    return KVHandler(Store(), 1 << 20)


def test_kv_answers_the_command_in_hand_then_closes(reactor):
    store = Store()
    server = _server(reactor, lambda: KVHandler(store, 1 << 20))
    client = socket.create_connection(server.server_address, timeout=5)
    try:
        client.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$")
        run_until(reactor, lambda: server.connections == 1)
        reactor.run_once(0.05)
        server.shutdown(grace=10)
        reactor.run_once(0)
        client.sendall(b"1\r\nv\r\n*1\r\n$4\r\nPING\r\n")
        run_until(reactor, lambda: server.connections == 0)
        assert recv_until_eof(client) == b"+OK\r\n+PONG\r\n"
        assert store.data[b"k"] is not None
    finally:
        client.close()
        server.server_close()


def test_kv_idle_closes_at_once_under_drive():
    conversation = drive(_kv, [b"*1\r\n$4\r\nPING\r\n"], eof=False, drain_at=1.0)
    assert conversation.written == b"+PONG\r\n" and conversation.closed and conversation.time == 1.0


def test_chat_members_hear_the_drain_and_leave():
    from netmux.apps.chat import Chat, ChatMember
    chat = Chat(65536)
    conversation = drive(lambda: ChatMember(chat), [b"hello\n"], eof=False, drain_at=2.0)
    assert conversation.written.endswith(b"* the server is shutting down\r\n")
    assert conversation.closed and not conversation.aborted and not chat.nicks


def test_chat_waits_for_a_half_typed_line():
    from netmux.apps.chat import Chat, ChatMember
    chat = Chat(65536)
    other = ChatMember(chat)     # noqa: F841 - nobody else in the room: no fan-out needed
    conversation = drive(lambda: ChatMember(chat), [b"/nick al"], eof=False, drain_at=1.0, grace=5.0)
    assert not conversation.aborted and conversation.closed
    assert conversation.time == 6.0          # the line never ended: the grace period did


def test_http_keepalive_closes_at_once_and_a_request_in_hand_gets_connection_close():
    pytest.importorskip("h11")
    from netmux.apps.http import HTTPHandler, Site
    site = Site()
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    idle = drive(lambda: HTTPHandler(site), [request], eof=False, drain_at=1.0)
    assert idle.closed and idle.time == 1.0 and idle.written.count(b"HTTP/1.1 200") == 1
    assert b"connection: close" not in idle.written.lower()     # answered before the drain

    # The drain comes while the head is half in: the answer says Connection: close.
    class Client(netmux.Handler):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            transport.write(request[:10])
            transport.call_later(2.0, transport.write, request[10:])
            self.received = bytearray()

        def data_received(self, data: bytes) -> None:
            self.received += data

    run = pair(Client, lambda: HTTPHandler(site), drain_at=1.0)
    assert b"200 OK" in run.client.received and b"connection: close" in bytes(run.client.received).lower()
    assert run.server_conversation.closed and run.time == 2.0


def test_http_clients_mid_request_under_load_all_get_their_answer_with_connection_close(reactor):
    """20 keep-alive clients: each has had one answer and sent half of its next
    request head when the drain begins; each gets its whole answer, marked
    Connection: close, then EOF; none is cut."""
    pytest.importorskip("h11")
    from netmux.apps.http import HELLO_PAGE, HTTPHandler, Site
    site = Site()
    server = _server(reactor, lambda: HTTPHandler(site))
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    clients = [socket.create_connection(server.server_address, timeout=5) for _ in range(20)]
    try:
        for client in clients:
            client.sendall(request)
        for client in clients:
            first = b""
            while not first.endswith(HELLO_PAGE):        # bounded: run_and_recv fails at its deadline
                first += run_and_recv(reactor, client, 1)
            assert b"connection: close" not in first.lower()
            client.sendall(request[:9])
        reactor.run_once(0.01)
        server.shutdown(grace=30)
        for client in clients:
            client.sendall(request[9:])
        run_until(reactor, lambda: server.connections == 0, timeout=20)
        for client in clients:
            answer = recv_until_eof(client)
            assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(HELLO_PAGE)
            assert b"connection: close" in answer.lower()
    finally:
        for client in clients:
            client.close()
        server.server_close()


def test_echo_echoes_to_the_end_then_closes_when_quiet():
    from netmux.apps.echo import EchoHandler
    conversation = drive(EchoHandler, [b"a", b"b"], eof=False, drain_at=0.0)
    assert conversation.written == b"ab" and conversation.closed
    assert conversation.time == EchoHandler.drain_quiet


def test_drive_models_the_grace_deadline_and_an_unmoved_handler():
    conversation = drive(netmux.Handler, [b"x"], eof=False, drain_at=1.0, grace=2.0)
    assert conversation.handler.draining and conversation.closed and conversation.time == 3.0
    assert [event for _, event, _ in conversation.events if event in ("drain_started", "grace_over")] == [
        "drain_started", "grace_over"]
    with pytest.raises(ValueError):
        drive(netmux.Handler, [], drain_at=-1.0)


def test_drain_started_passes_through_a_counting_layer_under_drive():
    inner: List[Any] = []
    conversation = drive(lambda: netmux.CountingLayer(keeping(inner, Upper)()), [b"ab"], eof=False,
                         drain_at=0.5, grace=1.0)
    assert inner[0].draining and conversation.closed and conversation.time == 1.5   # half a line: grace


# ----------------------------------------------------------------------
# The command line: SIGTERM/SIGINT drain with exit code 0, a second signal forces
# ----------------------------------------------------------------------
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_fifty_clients_mid_transfer_get_everything_and_the_exit_code_is_zero(signum):
    server = ServerProcess(["echo", "--port", "0", "--grace", "10"])
    payload = bytes(range(256)) * 256            # 64 KiB each
    clients = [socket.create_connection(server.address, timeout=10) for _ in range(50)]
    received = [bytearray() for _ in clients]
    try:
        for client in clients:
            client.sendall(payload[:40000])
        server.process.send_signal(signum)
        server.wait_for_log("draining")
        for client in clients:
            client.sendall(payload[40000:])      # still read and echoed during the drain

        def read_all() -> None:
            for client, got in zip(clients, received):
                got += recv_exactly(client, len(payload))

        reader = threading.Thread(target=read_all)
        reader.start()
        reader.join(30)
        assert not reader.is_alive()
        assert all(bytes(got) == payload for got in received)
        assert server.process.wait(15) == 0
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(server.address, timeout=5).close()
    finally:
        for client in clients:
            client.close()
        server.stop()
    assert "drained" in server.log


def test_a_second_signal_closes_what_is_left_at_once():
    server = ServerProcess(["chat", "--port", "0", "--grace", "60"])
    client = socket.create_connection(server.address, timeout=10)
    try:
        client.sendall(b"half a li")              # chat waits for the end of this line
        time_sent = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        server.wait_for_log("draining")
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(10) == 0
        assert time.monotonic() - time_sent < 10
    finally:
        client.close()
        server.stop()
    assert "closing every connection now" in server.log


def test_grace_must_be_a_finite_number_of_seconds():
    import subprocess
    import sys
    from conftest import ROOT, child_env
    for bad in ("-1", "nan", "inf", "soon"):
        result = subprocess.run([sys.executable, "-m", "netmux", "--grace", bad], capture_output=True,
                                env=child_env(), cwd=ROOT, timeout=30)
        assert result.returncode == 2 and b"--grace" in result.stderr
