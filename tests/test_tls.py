"""netmux/tls.py: TLS as a layer, over sockets, over layers and in memory.

Certificates are made here, per test module, by trustme (a throwaway CA and a
leaf for localhost, 127.0.0.1 and ::1): no key is committed.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from typing import Any, List

import pytest

import netmux
from netmux.testing import pair
from netmux.tls import TLSLayer

from conftest import (ROOT, Echo, ServerProcess, child_env, keeping, needs_ipv6, readable, recv_exactly,
                      run_until, wait_until)
from test_stream import EchoStream

trustme = pytest.importorskip("trustme")


# ----------------------------------------------------------------------
# Certificates and contexts
# ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def ca() -> Any:
    return trustme.CA()


@pytest.fixture(scope="module")
def leaf(ca: Any) -> Any:
    return ca.issue_cert("localhost", "127.0.0.1", "::1")


@pytest.fixture(scope="module")
def files(ca: Any, leaf: Any, tmp_path_factory: Any) -> Any:
    """PEM files: ``ca``, ``cert`` (the chain) and ``key``, as the command line takes them."""
    directory = tmp_path_factory.mktemp("tls")
    paths = {"ca": directory / "ca.pem", "cert": directory / "cert.pem", "key": directory / "key.pem"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    leaf.private_key_pem.write_to_path(str(paths["key"]))
    with open(paths["cert"], "wb") as out:
        for blob in leaf.cert_chain_pems:
            out.write(blob.bytes())
    return {name: str(path) for name, path in paths.items()}


@pytest.fixture
def server_ctx(leaf: Any) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    return context


@pytest.fixture
def client_ctx(ca: Any) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def tls_socket(address: Any, context: ssl.SSLContext, hostname: str = "localhost",
               timeout: float = 10.0, **options: Any) -> ssl.SSLSocket:
    """A blocking client socket, handshake done (Python's ssl module, not ours)."""
    raw = socket.create_connection(address[:2], timeout=timeout)
    try:
        return context.wrap_socket(raw, server_hostname=hostname, **options)
    except BaseException:
        raw.close()
        raise


def tls_recv_until_eof(sock: ssl.SSLSocket, timeout: float = 20.0) -> bytes:
    """Read to the peer's close_notify: an EOF without it raises SSLEOFError
    (the socket must be made with ``suppress_ragged_eofs=False``)."""
    deadline = time.monotonic() + timeout
    chunks: List[bytes] = []
    while time.monotonic() < deadline:
        chunk = sock.recv(1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
    raise AssertionError("no EOF in time")


class Made(netmux.Handler):
    """Remembers its transport, its data, its EOF and its end (for the test thread)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.eof = False
        self.lost: List[Any] = []
        self.done = threading.Event()

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self) -> Any:
        self.eof = True
        return None

    def connection_lost(self, exc: Any) -> None:
        self.lost.append(exc)
        self.done.set()


class EchoMade(Made):
    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self.transport.write(data)


# ----------------------------------------------------------------------
# Echo over TLS: Python's client, netmux's client, OpenSSL's client
# ----------------------------------------------------------------------
def test_echo_against_pythons_ssl_client(serve: Any, server_ctx: ssl.SSLContext,
                                         client_ctx: ssl.SSLContext) -> None:
    server = serve(Echo, ssl=server_ctx)
    with tls_socket(server.address, client_ctx) as sock:
        payload = os.urandom(200_000)
        sock.sendall(payload)
        assert recv_exactly(sock, len(payload)) == payload
        assert sock.version() in ("TLSv1.2", "TLSv1.3")


class Ping(netmux.Handler):
    """A client: sends ``ping`` once connected, closes once it is echoed."""

    def __init__(self) -> None:
        self.got = b""
        self.lost: List[Any] = []
        self.info: dict = {}

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        for name in ("ssl_object", "peercert", "cipher", "compression", "alpn_protocol"):
            self.info[name] = transport.get_extra_info(name)
        self.info["is_transport"] = isinstance(transport, netmux.Transport)
        transport.write(b"ping")

    def data_received(self, data: bytes) -> None:
        self.got += data
        if self.got == b"ping":
            self.transport.close()

    def connection_lost(self, exc: Any) -> None:
        self.lost.append(exc)


def test_echo_against_a_netmux_client_on_the_same_reactor(reactor: netmux.Reactor, server_ctx: ssl.SSLContext,
                                                          client_ctx: ssl.SSLContext) -> None:
    servers: List[Any] = []
    server = netmux.TCPServer(("127.0.0.1", 0), keeping(servers, EchoMade), reactor=reactor, ssl=server_ctx)
    try:
        client = netmux.connect(server.server_address, Ping, reactor=reactor, ssl=client_ctx,
                                server_hostname="localhost")
        run_until(reactor, lambda: client.lost and servers and servers[0].lost)
        assert client.got == b"ping" and client.lost == [None]
        assert servers[0].eof and servers[0].lost == [None]      # close_notify: an EOF, no error
        assert client.info["is_transport"] and isinstance(client.info["ssl_object"], ssl.SSLObject)
        assert client.info["peercert"]["subjectAltName"]
        assert client.info["cipher"][1] in ("TLSv1.2", "TLSv1.3")
        assert client.info["alpn_protocol"] is None
    finally:
        server.server_close()


def test_hostname_verification_fails_for_the_wrong_name(reactor: netmux.Reactor, server_ctx: ssl.SSLContext,
                                                        client_ctx: ssl.SSLContext, caplog: Any) -> None:
    server = netmux.TCPServer(("127.0.0.1", 0), Echo, reactor=reactor, ssl=server_ctx)
    try:
        with caplog.at_level(logging.DEBUG, logger="netmux"):
            client = netmux.connect(server.server_address, Ping, reactor=reactor, ssl=client_ctx,
                                    server_hostname="wrong.example")
            run_until(reactor, lambda: client.lost)
        assert isinstance(client.lost[0], ssl.SSLCertVerificationError)
        assert "wrong.example" in str(client.lost[0])
        assert client.got == b"" and "ssl_object" not in client.info    # never connection_made
    finally:
        server.server_close()


def test_the_host_of_the_address_is_the_default_server_hostname(reactor: netmux.Reactor,
                                                                server_ctx: ssl.SSLContext,
                                                                client_ctx: ssl.SSLContext) -> None:
    server = netmux.TCPServer(("127.0.0.1", 0), Echo, reactor=reactor, ssl=server_ctx)
    try:
        client = netmux.connect(server.server_address, Ping, reactor=reactor, ssl=client_ctx)
        run_until(reactor, lambda: client.lost)
        assert client.got == b"ping" and client.lost == [None]    # the leaf names 127.0.0.1 too
    finally:
        server.server_close()


@pytest.mark.clients
def test_echo_against_openssl_s_client(serve: Any, server_ctx: ssl.SSLContext, files: Any) -> None:
    server = serve(Echo, ssl=server_ctx)
    host, port = server.address[:2]
    process = subprocess.Popen(
        ["openssl", "s_client", "-connect", f"{host}:{port}", "-CAfile", files["ca"],
         "-servername", "localhost", "-verify_return_error", "-quiet", "-no_ign_eof"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(b"hello over openssl\n")
        process.stdin.flush()
        readable(process.stdout, timeout=10)
        assert process.stdout.readline() == b"hello over openssl\n"
        process.stdin.close()                  # s_client sends close_notify: our echo closes
        assert process.wait(10) == 0
    finally:
        _reap(process)


def _reap(process: subprocess.Popen) -> None:
    """Kill it if it still runs, wait, close its pipes."""
    if process.poll() is None:
        process.kill()
    process.wait(10)
    for pipe in (process.stdin, process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()


@pytest.mark.clients
def test_renegotiation_is_refused(serve: Any, server_ctx: ssl.SSLContext, files: Any) -> None:
    """TLS 1.2 renegotiation asked by s_client ('R' on its input): refused; that
    connection ends with the error, the server goes on."""
    handlers: List[Any] = []
    server = serve(keeping(handlers, Made), ssl=server_ctx)
    host, port = server.address[:2]
    process = subprocess.Popen(
        ["openssl", "s_client", "-connect", f"{host}:{port}", "-CAfile", files["ca"], "-tls1_2",
         "-servername", "localhost"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert process.stdin is not None
        process.stdin.write(b"before\n")
        process.stdin.flush()
        wait_until(lambda: handlers and bytes(handlers[0].data) == b"before\n", timeout=10)
        process.stdin.write(b"R\n")
        process.stdin.flush()
        output, _ = process.communicate(timeout=20)
    finally:
        _reap(process)
    assert b"RENEGOTIATING" in output and b"no renegotiation" in output
    assert handlers[0].done.wait(10)
    assert isinstance(handlers[0].lost[0], ssl.SSLError)
    with tls_socket(server.address, _trusting(files)) as sock:          # the next one is served
        sock.sendall(b"next")


def _trusting(files: Any) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=files["ca"])


# ----------------------------------------------------------------------
# Every handler kind over TLS, with a CountingLayer above or below
# ----------------------------------------------------------------------
class EchoLines(netmux.LineHandler):
    def line_received(self, line: bytes) -> None:
        self.send_line(line)


class EchoFrames(netmux.FramedHandler):
    framer_factory = staticmethod(lambda: netmux.LengthPrefixFramer("!I"))

    def frame_received(self, frame: bytes) -> None:
        self.send_frame(frame)


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


_LINES = b"".join(b"line %d\n" % number for number in range(2000))
_FRAMES = b"".join(struct.pack("!I", 1000) + bytes([number % 256]) * 1000 for number in range(100))
KINDS = {"Handler": (Echo, _LINES), "LineHandler": (EchoLines, _LINES), "framed": (EchoFrames, _FRAMES),
         "StreamHandler": (EchoStream, _LINES), "asyncio.Protocol": (EchoProtocol, _LINES)}


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("stack", ["tls", "counting above", "counting below"])
def test_every_handler_kind_echoes_over_tls(kind: str, stack: str, serve: Any, server_ctx: ssl.SSLContext,
                                            client_ctx: ssl.SSLContext) -> None:
    factory, payload = KINDS[kind]
    counter = netmux.ByteCounter()
    if stack == "counting above":
        server = serve(lambda: netmux.CountingLayer(factory(), counter), ssl=server_ctx)
    else:
        server = serve(factory, ssl=server_ctx)
        if stack == "counting below":      # the seam: a layer below TLS sees the records
            server.server.layer_factories.append(lambda above: netmux.CountingLayer(above, counter))
    with tls_socket(server.address, client_ctx) as sock:
        sock.sendall(payload)
        assert recv_exactly(sock, len(payload)) == payload
    if stack == "counting above":
        wait_until(lambda: counter.bytes_out == len(payload))
        assert counter.bytes_in == len(payload)
    elif stack == "counting below":
        wait_until(lambda: counter.bytes_out > len(payload))      # records: framing and tags added
        assert counter.bytes_in > len(payload)


def test_a_stream_handler_over_tls_under_a_counting_layer_ends_at_server_close(
        reactor: netmux.Reactor, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    events: List[str] = []

    class Waits(netmux.StreamHandler):
        async def handle(self) -> None:
            try:
                if self.transport.get_extra_info("ssl_object") is not None:
                    events.append("ssl_object")
                await self.sendall(await self.recv(100))
                await self.recv(100)              # until server_close()
            finally:
                events.append("finally")

    counter = netmux.ByteCounter()
    server = netmux.TCPServer(("127.0.0.1", 0), lambda: netmux.CountingLayer(Waits(), counter),
                              reactor=reactor, ssl=server_ctx)
    done: List[Any] = []
    thread = threading.Thread(target=lambda: done.append(_talk_once(server.server_address, client_ctx)))
    thread.start()
    try:
        run_until(reactor, lambda: counter.bytes_out == 5)
    finally:
        server.server_close()
        thread.join(10)
    assert events == ["ssl_object", "finally"]
    assert done == [b"hello"]


def _talk_once(address: Any, context: ssl.SSLContext) -> bytes:
    with tls_socket(address, context) as sock:
        sock.sendall(b"hello")
        data = recv_exactly(sock, 5)
        try:
            sock.recv(1)                          # the server closes it
        except (OSError, ssl.SSLError):
            pass
        return data


# ----------------------------------------------------------------------
# get_extra_info, mutual TLS, ALPN
# ----------------------------------------------------------------------
def test_mutual_tls_shows_the_clients_certificate_as_peercert(serve: Any, ca: Any, leaf: Any,
                                                             client_ctx: ssl.SSLContext) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["http/1.1"])
    handlers: List[Any] = []
    server = serve(keeping(handlers, Made), ssl=context)
    client_cert = ca.issue_cert("client@example.org")
    client_cert.configure_cert(client_ctx)
    client_ctx.set_alpn_protocols(["h2", "http/1.1"])
    with tls_socket(server.address, client_ctx) as sock:
        sock.sendall(b"x")
        wait_until(lambda: handlers and handlers[0].data)
        info = server.call(lambda: {name: handlers[0].transport.get_extra_info(name)
                                    for name in ("peercert", "cipher", "compression", "alpn_protocol",
                                                 "ssl_object", "peername", "socket")})
    assert info["peercert"]["subjectAltName"] == (("email", "client@example.org"),)
    assert info["alpn_protocol"] == "http/1.1"
    assert info["compression"] is None and info["cipher"][1].startswith("TLSv1")
    assert isinstance(info["ssl_object"], ssl.SSLObject) and info["peername"][0] == "127.0.0.1"
    assert isinstance(info["socket"], socket.socket)


def test_mutual_tls_refuses_a_client_without_a_certificate(serve: Any, ca: Any, leaf: Any,
                                                          client_ctx: ssl.SSLContext, caplog: Any) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    handlers: List[Any] = []
    server = serve(keeping(handlers, Made), ssl=context)
    with caplog.at_level(logging.INFO, logger="netmux"):
        with tls_socket(server.address, client_ctx) as sock:     # TLS 1.3: the refusal comes after
            with pytest.raises((ssl.SSLError, OSError)):
                sock.sendall(b"x")
                sock.recv(1)
        wait_until(lambda: any("handshake" in record.getMessage() for record in caplog.records))
    assert not any(handler.data for handler in handlers)


# ----------------------------------------------------------------------
# The traps of the handshake: each costs one connection, logged once
# ----------------------------------------------------------------------
def _serve_in_this_thread(reactor: netmux.Reactor, context: ssl.SSLContext, **options: Any) -> Any:
    handlers: List[Any] = []
    server = netmux.TCPServer(("127.0.0.1", 0), keeping(handlers, EchoMade), reactor=reactor, ssl=context,
                              **options)
    return server, handlers


def _served(reactor: netmux.Reactor, server: Any, client_ctx: ssl.SSLContext) -> bool:
    """The next client is served: a netmux client's ping comes back."""
    client = netmux.connect(server.server_address, Ping, reactor=reactor, ssl=client_ctx,
                            server_hostname="localhost")
    run_until(reactor, lambda: client.lost)
    return client.got == b"ping"


@pytest.mark.parametrize("trickle", [False, True])
def test_a_handshake_not_done_in_time_is_dropped(trickle: bool, reactor: netmux.Reactor, server_ctx: ssl.SSLContext,
                                                 client_ctx: ssl.SSLContext) -> None:
    server = netmux.TCPServer(("127.0.0.1", 0), Echo, reactor=reactor, ssl=server_ctx,
                              ssl_handshake_timeout=0.3)
    hello = _client_hello(client_ctx)
    try:
        with socket.create_connection(server.server_address) as sock:
            sock.setblocking(False)
            start = time.monotonic()
            run_until(reactor, lambda: server.connections == 1)
            sent = 0
            while server.connections and time.monotonic() - start < 5:
                if trickle and sent < len(hello):
                    sock.send(hello[sent:sent + 1])       # a byte every 20 ms: never a whole hello
                    sent += 1
                reactor.run_once(0.02)
            elapsed = time.monotonic() - start
        assert server.connections == 0 and 0.25 < elapsed < 3
        assert server.stats()["tls_handshake_failures"] == 1
        assert _served(reactor, server, client_ctx)
        assert server.stats()["tls_handshake_failures"] == 1    # a good handshake is no failure
    finally:
        server.server_close()


def _client_hello(context: ssl.SSLContext) -> bytes:
    outgoing = ssl.MemoryBIO()
    sslobj = context.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        sslobj.do_handshake()
    return outgoing.read()


def test_plain_text_to_a_tls_port_is_logged_once_and_costs_that_connection(
        reactor: netmux.Reactor, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, caplog: Any) -> None:
    server, handlers = _serve_in_this_thread(reactor, server_ctx)
    try:
        with caplog.at_level(logging.DEBUG, logger="netmux"):
            with socket.create_connection(server.server_address) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                run_until(reactor, lambda: handlers and server.connections == 0)
                sock.settimeout(5)
                answer = sock.recv(100)
            assert answer == b""                        # FIN (OpenSSL sends no alert to HTTP)
        notable = [record for record in caplog.records if record.levelno >= logging.INFO]
        assert len(notable) == 1 and notable[0].levelno == logging.INFO and notable[0].exc_info is None
        assert "handshake" in notable[0].getMessage()
        assert handlers[0].lost == []                   # the handler never heard of it
        assert server.stats()["tls_handshake_failures"] == 1
        assert _served(reactor, server, client_ctx)
    finally:
        server.server_close()


def test_a_client_that_rejects_the_certificate_costs_that_connection(
        reactor: netmux.Reactor, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, caplog: Any) -> None:
    server, handlers = _serve_in_this_thread(reactor, server_ctx)
    stranger = ssl.create_default_context()           # does not trust our CA
    try:
        with caplog.at_level(logging.DEBUG, logger="netmux"):
            client = netmux.connect(server.server_address, Ping, reactor=reactor, ssl=stranger,
                                    server_hostname="localhost")
            run_until(reactor, lambda: client.lost and server.connections == 0)
        assert isinstance(client.lost[0], ssl.SSLCertVerificationError)
        notable = [record for record in caplog.records if record.levelno >= logging.INFO]
        # Once per side at most (the client's, and the server's when its handshake
        # was still going when the alert came), at INFO, without a traceback.
        assert 1 <= len(notable) <= 2 and all(record.levelno == logging.INFO for record in notable)
        assert all(record.exc_info is None for record in notable)
        assert handlers[0].data == b""
        assert _served(reactor, server, client_ctx)
    finally:
        server.server_close()


def test_a_reset_mid_handshake_is_logged_at_debug_only(reactor: netmux.Reactor, server_ctx: ssl.SSLContext,
                                                       client_ctx: ssl.SSLContext, caplog: Any) -> None:
    server, handlers = _serve_in_this_thread(reactor, server_ctx)
    try:
        with caplog.at_level(logging.DEBUG, logger="netmux"):
            sock = socket.create_connection(server.server_address)
            sock.sendall(_client_hello(client_ctx))
            run_until(reactor, lambda: server.connections == 1)
            reactor.run_once(0.05)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()                                # RST
            run_until(reactor, lambda: server.connections == 0)
        assert not [record for record in caplog.records if record.levelno >= logging.INFO]
        assert handlers[0].lost == []
        assert _served(reactor, server, client_ctx)
    finally:
        server.server_close()


def test_a_client_that_closes_without_reading_its_session_tickets_is_quiet(
        reactor: netmux.Reactor, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, caplog: Any) -> None:
    """TLS 1.3: the server's session tickets follow the handshake; a client that
    closes at once leaves them unread (its kernel may answer RST)."""
    server, handlers = _serve_in_this_thread(reactor, server_ctx)
    result: List[Any] = []

    def client() -> None:
        with tls_socket(server.server_address, client_ctx) as sock:
            result.append(sock.version())
    try:
        with caplog.at_level(logging.DEBUG, logger="netmux"):
            for _ in range(5):
                thread = threading.Thread(target=client)
                thread.start()
                run_until(reactor, lambda: not thread.is_alive() and server.connections == 0)
                thread.join()
        assert result == ["TLSv1.3"] * 5
        assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
        assert _served(reactor, server, client_ctx)
    finally:
        server.server_close()


# ----------------------------------------------------------------------
# Closing: close_notify then FIN, EOF, ragged EOF, an unanswered shutdown
# ----------------------------------------------------------------------
class SaysBye(netmux.Handler):
    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        transport.write(b"bye")
        transport.close()


def test_close_sends_close_notify_then_fin(serve: Any, server_ctx: ssl.SSLContext,
                                          client_ctx: ssl.SSLContext) -> None:
    server = serve(SaysBye, ssl=server_ctx)
    with tls_socket(server.address, client_ctx, suppress_ragged_eofs=False) as sock:
        assert tls_recv_until_eof(sock) == b"bye"      # SSLEOFError if no close_notify came
        raw = sock.unwrap()                            # ours back: the server's socket goes
        raw.settimeout(5)
        assert raw.recv(10) == b""                     # FIN
        raw.close()


class HalfCloses(netmux.Handler):
    """Hears the peer's EOF, keeps writing, then half-closes with write_eof()."""

    def __init__(self) -> None:
        self.events: List[str] = []

    def data_received(self, data: bytes) -> None:
        self.transport.write(data.upper())

    def eof_received(self) -> bool:
        self.events.append("eof")
        self.transport.write(b" and after EOF")
        self.transport.write_eof()
        return True

    def connection_lost(self, exc: Any) -> None:
        self.events.append(f"lost {exc}")


def test_half_close_with_close_notify_both_ways(serve: Any, server_ctx: ssl.SSLContext,
                                               client_ctx: ssl.SSLContext) -> None:
    handlers: List[Any] = []
    server = serve(keeping(handlers, HalfCloses), ssl=server_ctx)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    sslobj = client_ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with socket.create_connection(server.address[:2], timeout=10) as sock:
        _memory_handshake(sock, sslobj, incoming, outgoing)
        sslobj.write(b"hello")
        with pytest.raises(ssl.SSLWantReadError):
            sslobj.unwrap()                            # our close_notify: half-close
        sock.sendall(outgoing.read())
        received = bytearray()
        while True:                                    # until the server's close_notify
            try:
                received += sslobj.read(1000)
                continue
            except ssl.SSLWantReadError:
                chunk = sock.recv(65536)
                assert chunk, "FIN before close_notify"
                incoming.write(chunk)
            except ssl.SSLZeroReturnError:
                break
        assert bytes(received) == b"HELLO and after EOF"
        assert sock.recv(10) == b""                    # then FIN
    wait_until(lambda: handlers[0].events[-1:] == ["lost None"])
    assert handlers[0].events == ["eof", "lost None"]


def _memory_handshake(sock: socket.socket, sslobj: ssl.SSLObject, incoming: ssl.MemoryBIO,
                      outgoing: ssl.MemoryBIO) -> None:
    while True:
        try:
            sslobj.do_handshake()
            sock.sendall(outgoing.read())
            return
        except ssl.SSLWantReadError:
            sock.sendall(outgoing.read())
            chunk = sock.recv(65536)
            assert chunk
            incoming.write(chunk)


@pytest.mark.parametrize("tolerate", [False, True])
def test_a_ragged_eof_is_an_error_unless_tolerated(tolerate: bool, serve: Any, server_ctx: ssl.SSLContext,
                                                    client_ctx: ssl.SSLContext) -> None:
    handlers: List[Any] = []
    server = serve(keeping(handlers, Made), ssl=server_ctx, ssl_tolerate_ragged_eof=tolerate)
    with tls_socket(server.address, client_ctx) as sock:
        sock.sendall(b"data")
        wait_until(lambda: handlers and handlers[0].data == b"data")
        sock.shutdown(socket.SHUT_WR)                  # FIN, no close_notify
        assert handlers[0].done.wait(10)
    if tolerate:
        assert handlers[0].eof and handlers[0].lost == [None]
    else:
        assert not handlers[0].eof and isinstance(handlers[0].lost[0], ssl.SSLEOFError)


def test_application_data_after_close_notify_is_discarded(reactor: netmux.Reactor,
                                                          server_ctx: ssl.SSLContext,
                                                          client_ctx: ssl.SSLContext) -> None:
    class KeepsOpen(Made):
        def eof_received(self) -> Any:
            self.eof = True
            return True                               # we may still write

    server, handlers = _serve_in_this_thread(reactor, server_ctx)
    server.handler_factory = keeping(handlers, KeepsOpen)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    sslobj = client_ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        with socket.create_connection(server.server_address) as sock:
            thread = threading.Thread(target=_memory_handshake, args=(sock, sslobj, incoming, outgoing))
            thread.start()
            run_until(reactor, lambda: not thread.is_alive())
            thread.join()
            sslobj.write(b"before")
            with pytest.raises(ssl.SSLWantReadError):
                sslobj.unwrap()
            # Behind close_notify, a record that would be an error if it were read.
            sock.sendall(outgoing.read() + b"\x17\x03\x03\x00\x05junk!")
            run_until(reactor, lambda: handlers[0].eof)
            reactor.run_once(0.05)
            assert bytes(handlers[0].data) == b"before" and handlers[0].lost == []
            handlers[0].transport.write(b"still writing")     # our side is open
            handlers[0].transport.close()
            run_until(reactor, lambda: handlers[0].lost)
            assert handlers[0].lost == [None]
    finally:
        server.server_close()


def test_an_unanswered_shutdown_is_abandoned_after_the_timeout(reactor: netmux.Reactor,
                                                               server_ctx: ssl.SSLContext,
                                                               client_ctx: ssl.SSLContext) -> None:
    handlers: List[Any] = []
    server = netmux.TCPServer(("127.0.0.1", 0), keeping(handlers, SaysBye), reactor=reactor, ssl=server_ctx,
                              ssl_shutdown_timeout=0.3)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    sslobj = client_ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        with socket.create_connection(server.server_address) as sock:   # never answers close_notify
            thread = threading.Thread(target=_memory_handshake, args=(sock, sslobj, incoming, outgoing))
            thread.start()
            run_until(reactor, lambda: not thread.is_alive())
            thread.join()
            run_until(reactor, lambda: handlers and server.connections == 1)
            start = time.monotonic()
            run_until(reactor, lambda: server.connections == 0)
            assert 0.25 < time.monotonic() - start < 3
    finally:
        server.server_close()


# ----------------------------------------------------------------------
# Flow control and sendfile through TLS
# ----------------------------------------------------------------------
class Producer(netmux.Handler):
    """Writes ``total`` bytes in 64 KiB pieces while not paused; notes the largest
    write buffer it ever saw."""

    total = 64 << 20

    def __init__(self) -> None:
        self.sent = 0
        self.paused = False
        self.largest = 0
        self.pauses = 0

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.produce()

    def produce(self) -> None:
        while not self.paused and self.sent < self.total:
            size = min(65536, self.total - self.sent)
            self.transport.write(_pattern(self.sent, size))
            self.sent += size
            self.largest = max(self.largest, self.transport.get_write_buffer_size())
        if self.sent >= self.total and not self.paused:
            self.transport.close()

    def pause_writing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume_writing(self) -> None:
        self.paused = False
        self.transport.reactor.call_soon(self.produce)


def _pattern(offset: int, size: int) -> bytes:
    """Bytes that say where they are in the stream (a shifted byte would show)."""
    block = hashlib.sha256(str(offset // 65536).encode()).digest() * 2048
    return block[:size]


def test_64_mib_through_one_connection_byte_exact_with_backpressure(serve: Any, server_ctx: ssl.SSLContext,
                                                                    client_ctx: ssl.SSLContext) -> None:
    handlers: List[Any] = []
    server = serve(keeping(handlers, Producer), ssl=server_ctx)
    with tls_socket(server.address, client_ctx) as sock:
        wait_until(lambda: handlers and handlers[0].paused)       # the client does not read yet
        stalled = server.call(lambda: (handlers[0].sent, handlers[0].transport.get_write_buffer_size()))
        assert stalled[0] < 16 << 20          # stopped: what the kernels' buffers took, and no more
        assert stalled[1] <= 64 * 1024 + 2 * 65536 + 4096
        digest = hashlib.sha256()
        expected = hashlib.sha256()
        for offset in range(0, Producer.total, 65536):
            expected.update(_pattern(offset, 65536))
        received = 0
        sock.settimeout(20)
        while received < Producer.total:
            chunk = sock.recv(1 << 20)
            assert chunk
            digest.update(chunk)
            received += len(chunk)
        assert digest.hexdigest() == expected.hexdigest()
    producer = handlers[0]
    low, high = server.call(lambda: producer.transport.get_write_buffer_limits())
    assert producer.pauses > 1 and producer.largest <= high + 2 * 65536 + 4096


def test_a_peer_that_does_not_read_stops_the_writer_memory_bounded(serve: Any, server_ctx: ssl.SSLContext,
                                                                   client_ctx: ssl.SSLContext) -> None:
    """Plaintext queued here plus ciphertext below: what a non-reading peer costs."""
    import tracemalloc
    handlers: List[Any] = []
    tracemalloc.start()
    try:
        server = serve(keeping(handlers, Producer), ssl=server_ctx)
        with tls_socket(server.address, client_ctx):
            wait_until(lambda: handlers and handlers[0].paused)
            before = tracemalloc.get_traced_memory()[1]
            server.call(lambda: handlers[0].produce())             # asking again does not write
            size = server.call(lambda: handlers[0].transport.get_write_buffer_size())
            peak = tracemalloc.get_traced_memory()[1]
            assert handlers[0].sent < 16 << 20 and size <= 64 * 1024 + 2 * 65536 + 4096
            assert peak < 16 << 20, f"peak traced memory {peak} (before {before})"
    finally:
        tracemalloc.stop()


class SendsFile(netmux.Handler):
    path = ""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.file = open(self.path, "rb")
        transport.write(b"head:")
        transport.sendfile(self.file, 10)
        transport.write(b":tail")
        transport.close()

    def connection_lost(self, exc: Any) -> None:
        self.file.close()


def test_sendfile_through_tls_reads_the_file_in_pieces(serve: Any, server_ctx: ssl.SSLContext,
                                                       client_ctx: ssl.SSLContext, tmp_path: Any) -> None:
    content = os.urandom(24 << 20)             # more than the kernels' buffers take
    path = tmp_path / "file.bin"
    path.write_bytes(content)

    class Sends(SendsFile):
        pass
    Sends.path = str(path)
    queued, received = _held_then_received(serve, Sends, server_ctx, client_ctx)
    assert queued[0] > 8 << 20                 # file bytes counted, not read yet ...
    assert queued[1] <= 256 * 1024             # ... nor held below as ciphertext
    assert received == b"head:" + content[10:] + b":tail"


def _held_then_received(serve: Any, factory: Any, server_ctx: ssl.SSLContext,
                        client_ctx: ssl.SSLContext) -> Any:
    """``((layer's buffer size, the socket transport's), every byte to close_notify)``
    of one connection whose client reads only after the first measure."""
    handlers: List[Any] = []
    server = serve(keeping(handlers, factory), ssl=server_ctx)
    with tls_socket(server.address, client_ctx, suppress_ragged_eofs=False) as sock:
        wait_until(lambda: handlers and handlers[0].transport)
        queued = server.call(lambda: (handlers[0].transport.get_write_buffer_size(),
                                      handlers[0].transport.transport.get_write_buffer_size()))
        return queued, tls_recv_until_eof(sock)


class WritesOnce(netmux.Handler):
    """One 24 MiB write, then close."""

    data = b""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        transport.write(self.data)
        transport.close()


def test_a_large_write_is_encrypted_a_slice_at_a_time(serve: Any, server_ctx: ssl.SSLContext,
                                                      client_ctx: ssl.SSLContext) -> None:
    class Writes(WritesOnce):
        data = os.urandom(24 << 20)
    queued, received = _held_then_received(serve, Writes, server_ctx, client_ctx)
    assert queued[0] > 8 << 20                 # counted as plaintext waiting ...
    assert queued[1] <= 512 * 1024             # ... not as 24 MiB of ciphertext below
    assert received == Writes.data


# ----------------------------------------------------------------------
# Many clients, Unix sockets, reload_tls, arguments
# ----------------------------------------------------------------------
def test_100_concurrent_tls_clients(reactor: netmux.Reactor, server_ctx: ssl.SSLContext,
                                    client_ctx: ssl.SSLContext) -> None:
    server = netmux.TCPServer(("127.0.0.1", 0), Echo, reactor=reactor, ssl=server_ctx)
    try:
        clients = [netmux.connect(server.server_address, Ping, reactor=reactor, ssl=client_ctx,
                                  server_hostname="localhost") for _ in range(100)]
        run_until(reactor, lambda: all(client.lost for client in clients), timeout=60)
        assert [client.got for client in clients] == [b"ping"] * 100
        assert all(client.lost == [None] for client in clients)
    finally:
        server.server_close()


def test_a_unix_server_speaks_tls(reactor: netmux.Reactor, server_ctx: ssl.SSLContext,
                                  client_ctx: ssl.SSLContext, tmp_path: Any) -> None:
    path = str(tmp_path / "tls.sock")
    server = netmux.UnixServer(path, Echo, reactor=reactor, ssl=server_ctx)
    try:
        client = netmux.connect(path, Ping, reactor=reactor, ssl=client_ctx, server_hostname="localhost")
        run_until(reactor, lambda: client.lost)
        assert client.got == b"ping" and client.lost == [None]
    finally:
        server.server_close()


@needs_ipv6
def test_tls_over_ipv6(reactor: netmux.Reactor, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    server = netmux.TCPServer(("::1", 0), Echo, reactor=reactor, ssl=server_ctx)
    try:
        client = netmux.connect(server.server_address, Ping, reactor=reactor, ssl=client_ctx)
        run_until(reactor, lambda: client.lost)
        assert client.got == b"ping"
    finally:
        server.server_close()


def test_reload_tls_serves_new_connections_with_the_new_certificate(
        reactor: netmux.Reactor, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    other_ca = trustme.CA()
    renewed = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    other_ca.issue_cert("localhost").configure_cert(renewed)
    trusts_other = ssl.create_default_context()
    other_ca.configure_trust(trusts_other)
    servers: List[Any] = []
    server = netmux.TCPServer(("127.0.0.1", 0), keeping(servers, EchoMade), reactor=reactor, ssl=server_ctx)
    try:
        old = netmux.connect(server.server_address, Made, reactor=reactor, ssl=client_ctx,
                             server_hostname="localhost")
        run_until(reactor, lambda: servers and servers[0].transport is not None and old.transport is not None)
        server.reload_tls(renewed)
        new = netmux.connect(server.server_address, Ping, reactor=reactor, ssl=trusts_other,
                             server_hostname="localhost")
        run_until(reactor, lambda: new.lost)
        assert new.got == b"ping"
        old.transport.write(b"still here")                 # the open one keeps its certificate
        run_until(reactor, lambda: old.data == b"still here")
        old.transport.close()
        run_until(reactor, lambda: old.lost)
        assert old.lost == [None]
    finally:
        server.server_close()


def test_bad_tls_arguments_are_refused(server_ctx: ssl.SSLContext) -> None:
    with pytest.raises(TypeError):
        netmux.TCPServer(("127.0.0.1", 0), Echo, ssl="yes")
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError):
            netmux.TCPServer(("127.0.0.1", 0), Echo, ssl=server_ctx, ssl_handshake_timeout=bad)
        with pytest.raises(ValueError):
            netmux.TCPServer(("127.0.0.1", 0), Echo, ssl=server_ctx, ssl_shutdown_timeout=bad)
    with pytest.raises(ValueError):
        netmux.TCPServer(("127.0.0.1", 0), Echo, ssl_handshake_timeout=5)
    with netmux.TCPServer(("127.0.0.1", 0), Echo) as plain:
        with pytest.raises(RuntimeError):
            plain.reload_tls(server_ctx)
    with netmux.TCPServer(("127.0.0.1", 0), Echo, ssl=server_ctx) as server:
        with pytest.raises(TypeError):
            server.reload_tls(None)
    reactor = netmux.Reactor()
    try:
        with pytest.raises(TypeError):
            netmux.connect(("127.0.0.1", 1), Echo, reactor=reactor, ssl=object())
    finally:
        reactor.close()


# ----------------------------------------------------------------------
# In memory: netmux.testing drives both ends of a TLS conversation
# ----------------------------------------------------------------------
def test_pair_drives_tls_in_memory(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    result = pair(lambda: TLSLayer(Ping(), client_ctx, server_side=False,
                                   server_hostname="localhost"),
                  lambda: TLSLayer(Echo(), server_ctx, server_side=True),
                  cut=lambda data: [data[i:i + 7] for i in range(0, len(data), 7)])
    client = result.client.handler
    assert client.got == b"ping" and client.lost == [None]
    assert client.info["peercert"] and result.server.transport is not None


def test_a_silent_peer_times_out_in_virtual_time(server_ctx: ssl.SSLContext) -> None:
    from netmux.testing import drive
    conversation = drive(lambda: TLSLayer(Made(), server_ctx, server_side=True, handshake_timeout=10.0),
                         [], eof=False)
    assert conversation.closed and conversation.aborted and conversation.time == 10.0
    assert conversation.handler.handler.lost == []


# ----------------------------------------------------------------------
# The ready-made servers over TLS, with real clients (python -m netmux ... --tls-cert)
# ----------------------------------------------------------------------
def _tls_options(files: Any) -> List[str]:
    return ["--port", "0", "--tls-cert", files["cert"], "--tls-key", files["key"]]


@pytest.mark.clients
def test_curl_fetches_from_the_http_app_over_tls(files: Any, tmp_path: Any) -> None:
    pytest.importorskip("h11")
    big = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with open(big, "wb") as out:
        for number in range(100):                  # 100 MiB, a MiB at a time
            block = hashlib.sha256(b"%d" % number).digest() * 32768
            out.write(block)
            digest.update(block)
    (tmp_path / "small.txt").write_bytes(b"0123456789")
    server = ServerProcess(["http", "--root", str(tmp_path), *_tls_options(files)])
    try:
        base = f"https://localhost:{server.address[1]}"
        curl = ["curl", "--silent", "--show-error", "--fail", "--cacert", files["ca"],
                "--resolve", f"localhost:{server.address[1]}:127.0.0.1"]
        small = subprocess.run(curl + ["--write-out", "%{http_version}", f"{base}/small.txt"],
                               capture_output=True, timeout=30)
        assert small.stdout == b"01234567891.1", small.stderr     # the body, then ALPN's http/1.1
        ranged = subprocess.run(curl + ["--range", "2-5", f"{base}/small.txt"], capture_output=True, timeout=30)
        assert ranged.stdout == b"2345", ranged.stderr
        fetched = tmp_path / "fetched.bin"
        whole = subprocess.run(curl + ["--output", str(fetched), f"{base}/big.bin"], capture_output=True,
                               timeout=120)
        assert whole.returncode == 0, whole.stderr
        with open(fetched, "rb") as got:
            assert _sha256(got) == digest.hexdigest()
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.log


def _sha256(file: Any) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: file.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


@pytest.mark.clients
def test_redis_cli_and_redis_benchmark_talk_to_kv_over_tls(files: Any) -> None:
    server = ServerProcess(["kv", *_tls_options(files)])
    try:
        port = str(server.address[1])
        cli = ["redis-cli", "--tls", "--cacert", files["ca"], "-h", "127.0.0.1", "-p", port]
        assert subprocess.run(cli + ["SET", "greeting", "hello"], capture_output=True,
                              timeout=30).stdout == b"OK\n"
        assert subprocess.run(cli + ["GET", "greeting"], capture_output=True, timeout=30).stdout == b"hello\n"
        bench = subprocess.run(["redis-benchmark", "--tls", "--cacert", files["ca"], "-h", "127.0.0.1",
                                "-p", port, "-n", "2000", "-c", "10", "-t", "set,get", "-q"],
                               capture_output=True, timeout=60)
        assert bench.returncode == 0 and b"requests per second" in bench.stdout, bench.stderr
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.log


def test_the_echo_app_reloads_its_certificate_on_sighup(files: Any, tmp_path: Any) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(open(files["cert"], "rb").read())
    key.write_bytes(open(files["key"], "rb").read())
    server = ServerProcess(["echo", "--port", "0", "--tls-cert", str(cert), "--tls-key", str(key)])
    try:
        old = tls_socket(server.address, _trusting(files))
        try:
            other_ca = trustme.CA()
            renewed = other_ca.issue_cert("localhost", "127.0.0.1")
            renewed.private_key_pem.write_to_path(str(key))
            cert.write_bytes(b"".join(blob.bytes() for blob in renewed.cert_chain_pems))
            server.process.send_signal(signal.SIGHUP)
            server.wait_for_log("TLS certificate reloaded")
            trusts_other = ssl.create_default_context()
            other_ca.configure_trust(trusts_other)
            with tls_socket(server.address, trusts_other) as new:
                new.sendall(b"new")
                assert recv_exactly(new, 3) == b"new"
            old.sendall(b"old")                    # the open one keeps its certificate
            assert recv_exactly(old, 3) == b"old"
            cert.write_bytes(b"not a certificate")
            server.process.send_signal(signal.SIGHUP)
            server.wait_for_log("not reloaded")
            with tls_socket(server.address, trusts_other) as again:   # still the renewed one
                again.sendall(b"x")
                assert recv_exactly(again, 1) == b"x"
        finally:
            old.close()
    finally:
        assert server.stop() == 0


def test_tls_options_are_checked_by_the_command_line(files: Any) -> None:
    from netmux import cli
    for argv in (["echo", "--tls-key", files["key"]], ["echo", "--tls-ca", files["ca"]],
                 ["udp-echo", "--tls-cert", files["cert"]]):
        with pytest.raises(SystemExit) as exit_info:
            cli.parse_args(argv)
        assert exit_info.value.code == 2
    args = cli.parse_args(["http", "--tls-cert", files["cert"], "--tls-key", files["key"]])
    assert args.alpn_protocols == ["http/1.1"]
    result = subprocess.run([sys.executable, "-m", "netmux", "echo", "--port", "0",
                             "--tls-cert", files["ca"] + ".missing"], capture_output=True, timeout=30,
                            env=child_env(), cwd=ROOT)
    assert result.returncode == 1 and b"cannot start echo" in result.stderr


# ----------------------------------------------------------------------
# Properties: any cut of the records, any mix of writes and files, in order
# ----------------------------------------------------------------------
hypothesis = pytest.importorskip("hypothesis")
strategies = hypothesis.strategies


class Script(netmux.Handler):
    """A server that performs ``steps`` (bytes to write, or a region of ``source``
    to sendfile), then closes."""

    def __init__(self, steps: List[Any], source: Any) -> None:
        self.steps, self.source = steps, source

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        for step in self.steps:
            if isinstance(step, bytes):
                transport.write(step)
            else:
                transport.sendfile(self.source, *step)
        transport.close()


_SOURCE = bytes(range(256)) * 1024        # 256 KiB: regions of it span several pieces


@hypothesis.settings(max_examples=40, deadline=None,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(steps=strategies.lists(strategies.one_of(
                      strategies.binary(min_size=1, max_size=70_000),
                      strategies.tuples(strategies.integers(0, len(_SOURCE) - 1),
                                        strategies.integers(1, 200_000))), max_size=6),
                  piece=strategies.integers(1, 20_000))
def test_writes_and_files_arrive_in_order_whatever_the_cut(steps: List[Any], piece: int,
                                                           server_ctx: ssl.SSLContext,
                                                           client_ctx: ssl.SSLContext) -> None:
    import io
    source = io.BytesIO(_SOURCE)
    steps = [step if isinstance(step, bytes) else (step[0], min(step[1], len(_SOURCE) - step[0]))
             for step in steps]
    expected = b"".join(step if isinstance(step, bytes) else _SOURCE[step[0]:step[0] + step[1]]
                        for step in steps)
    result = pair(lambda: TLSLayer(Made(), client_ctx, server_side=False, server_hostname="localhost"),
                  lambda: TLSLayer(Script(steps, source), server_ctx, server_side=True),
                  cut=lambda data: [data[i:i + piece] for i in range(0, len(data), piece)])
    client = result.client.handler
    assert bytes(client.data) == expected
    assert client.eof and client.lost == [None]


class SaysHello(netmux.Handler):
    """Writes ``hello`` once connected, then echoes."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        wants_read_once(transport.get_extra_info("ssl_object"))
        transport.write(b"hello")

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def wants_read_once(sslobj: ssl.SSLObject) -> None:
    """The next ``write`` raises SSLWantReadError (as in a TLS 1.2 renegotiation)
    and remembers what it was asked; later ones write."""
    real = sslobj.write
    asked: List[bytes] = []

    def write(data: Any) -> int:
        asked.append(bytes(data))
        if len(asked) == 1:
            raise ssl.SSLWantReadError("the peer must speak first")
        return real(data)
    sslobj.write = write          # type: ignore[method-assign]
    sslobj.asked = asked          # type: ignore[attr-defined]


def test_a_write_that_wants_a_read_is_retried_with_the_same_bytes(server_ctx: ssl.SSLContext,
                                                                  client_ctx: ssl.SSLContext) -> None:
    class Speaks(Made):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            transport.write(b"ping")

    result = pair(lambda: TLSLayer(Speaks(), client_ctx, server_side=False, server_hostname="localhost"),
                  lambda: TLSLayer(SaysHello(), server_ctx, server_side=True))
    assert bytes(result.client.handler.data) == b"helloping"      # in order, once the ping came in
    asked = result.server.get_extra_info("ssl_object").asked
    assert asked[:2] == [b"hello", b"hello"]
