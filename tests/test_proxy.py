"""The PROXY protocol: the sans-IO reader, the layer (socket, CountingLayer, drive), and HAProxy in front."""
from __future__ import annotations

import inspect
import ipaddress
import logging
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
from typing import Any, List, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import netmux
from netmux.proxy import (V2_SIGNATURE, ProxyHeader, ProxyHeaderReader, ProxyProtocolError,
                          ProxyProtocolLayer)
from netmux.testing import chunkings, drive

from conftest import ROOT, ServerProcess, recv_exactly, recv_until_eof, run_until, wait_until


# ----------------------------------------------------------------------
# Headers as a balancer writes them
# ----------------------------------------------------------------------
def v1(source: Any = ("192.0.2.7", 40000), destination: Any = ("198.51.100.1", 443)) -> bytes:
    family = "TCP6" if ":" in source[0] else "TCP4"
    return (f"PROXY {family} {source[0]} {destination[0]} {source[1]} {destination[1]}\r\n").encode()


def v2(source: Any = ("192.0.2.7", 40000), destination: Any = ("198.51.100.1", 443), *,
       command: int = 1, tlvs: bytes = b"", family: Optional[int] = None) -> bytes:
    if command == 0 and family is None:
        family, addresses = 0x0, b""
    elif isinstance(source, str):
        family, addresses = 0x3, struct.pack("!108s108s", source.encode(), destination.encode())
    else:
        packed = [ipaddress.ip_address(host).packed for host in (source[0], destination[0])]
        family = 0x2 if len(packed[0]) == 16 else 0x1
        addresses = packed[0] + packed[1] + struct.pack("!HH", source[1], destination[1])
    body = addresses + tlvs
    return V2_SIGNATURE + bytes([0x20 | command, family << 4 | 0x1]) + struct.pack("!H", len(body)) + body


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def read(data: bytes) -> ProxyHeader:
    reader = ProxyHeaderReader()
    header = reader.feed(data)
    assert header is not None
    return header


VALID = {
    "v1-tcp4": (v1(), ProxyHeader(1, "PROXY", ("192.0.2.7", 40000), ("198.51.100.1", 443))),
    "v1-tcp6": (v1(("2001:db8::7", 1), ("2001:db8::1", 65535)),
                ProxyHeader(1, "PROXY", ("2001:db8::7", 1, 0, 0), ("2001:db8::1", 65535, 0, 0))),
    "v1-unknown": (b"PROXY UNKNOWN whatever follows\r\n", ProxyHeader(1, "PROXY", None, None)),
    "v2-inet": (v2(), ProxyHeader(2, "PROXY", ("192.0.2.7", 40000), ("198.51.100.1", 443))),
    "v2-inet6": (v2(("2001:db8::7", 5), ("::1", 80)),
                 ProxyHeader(2, "PROXY", ("2001:db8::7", 5, 0, 0), ("::1", 80, 0, 0))),
    "v2-unix": (v2("/run/client.sock", "/run/server.sock"),
                ProxyHeader(2, "PROXY", "/run/client.sock", "/run/server.sock")),
    "v2-tlvs": (v2(tlvs=tlv(0x01, b"h2") + tlv(0x04, b"\0" * 300)),        # ALPN, NOOP: skipped
                ProxyHeader(2, "PROXY", ("192.0.2.7", 40000), ("198.51.100.1", 443))),
    "v2-local": (v2(command=0), ProxyHeader(2, "LOCAL", None, None)),
    "v2-local-ignores-addresses": (v2(command=0, family=0x1), ProxyHeader(2, "LOCAL", None, None)),
}

INVALID = {
    "not-proxy": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "v1-lowercase": b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    "v1-bad-family": b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
    "v1-family-mismatch": b"PROXY TCP4 ::1 ::1 1 2\r\n",
    "v1-port-too-big": b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
    "v1-leading-zero": b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n",
    "v1-negative": b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
    "v1-double-space": b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
    "v1-missing-field": b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
    "v1-bare-lf": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n" + b"x" * 120,
    "v1-not-ascii": "PROXY TCP4 1.2.3.4 5.6.7.8 1 ２\r\n".encode(),
    "v1-too-long": b"PROXY UNKNOWN " + b"x" * 92 + b"\r\n",     # 108 bytes with its CRLF
    "v2-bad-signature": V2_SIGNATURE[:-1] + b"X" + v2()[12:],
    "v2-version-1": V2_SIGNATURE + b"\x11" + v2()[13:],
    "v2-command-2": V2_SIGNATURE + b"\x22" + v2()[13:],
    "v2-family-4": V2_SIGNATURE + b"\x21\x41" + v2()[14:],
    "v2-datagram": V2_SIGNATURE + b"\x21\x12" + v2()[14:],
    "v2-short-addresses": V2_SIGNATURE + b"\x21\x21" + v2()[14:],    # INET6 in an INET-sized block
}


# ----------------------------------------------------------------------
# The reader, sans-IO
# ----------------------------------------------------------------------
@pytest.mark.parametrize("name", VALID)
def test_reader_parses_each_kind_of_header(name):
    data, expected = VALID[name]
    reader = ProxyHeaderReader()
    assert reader.feed(data + b"payload") == expected
    assert reader.rest == b"payload"


@pytest.mark.parametrize("name", INVALID)
def test_reader_refuses_each_malformed_header_and_stays_refused(name):
    reader = ProxyHeaderReader()
    with pytest.raises(ProxyProtocolError):
        reader.feed(INVALID[name])
    with pytest.raises(ProxyProtocolError):
        reader.feed(v1())                        # the error is sticky: the stream is bad


def test_v1_of_exactly_107_bytes_is_the_longest_accepted():
    line = b"PROXY UNKNOWN " + b"x" * 91 + b"\r\n"
    assert len(line) == 107 and read(line) == ProxyHeader(1, "PROXY", None, None)
    longest = v1(("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff1", 65535),
                 ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff2", 65535))
    assert read(longest).source[1] == 65535


def test_addresses_are_written_as_the_socket_module_writes_a_peers():
    # inet_ntop's form, the one getpeername() gives a direct connection: an
    # IPv4-mapped address keeps its dotted quad, IPv6 is compressed, lower case.
    line = b"PROXY TCP6 ::FFFF:192.0.2.1 2001:DB8:0:0:0:0:0:1 1 2\r\n"
    header = read(line)
    assert header.source == ("::ffff:192.0.2.1", 1, 0, 0)
    assert header.destination == ("2001:db8::1", 2, 0, 0)
    mapped = v2(("::ffff:192.0.2.1", 1, 0, 0), ("::1", 2, 0, 0))
    assert read(mapped).source == ("::ffff:192.0.2.1", 1, 0, 0)
    for bad in (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",      # a scope means nothing to us
                b"PROXY TCP4 010.0.0.1 10.0.0.2 1 2\r\n",    # leading zeros: octal to some
                b"PROXY TCP4 10.0.0.1\x00 10.0.0.2 1 2\r\n"):
        with pytest.raises(ProxyProtocolError, match="bad TCP"):
            ProxyHeaderReader().feed(bad)


def test_v1_refused_at_107_bytes_without_crlf_before_more_arrives():
    reader = ProxyHeaderReader()
    assert reader.feed(b"PROXY UNKNOWN " + b"x" * 92) is None          # 106 bytes: may still end
    with pytest.raises(ProxyProtocolError, match="107"):
        reader.feed(b"x")


def test_wrong_first_byte_is_refused_at_once():
    with pytest.raises(ProxyProtocolError, match="not a PROXY protocol header"):
        ProxyHeaderReader().feed(b"G")
    with pytest.raises(ProxyProtocolError):
        ProxyHeaderReader().feed(b"\x16\x03\x01")     # a TLS ClientHello straight at the port


def test_v2_waits_for_its_declared_length_and_no_more():
    data = v2(tlvs=tlv(0x04, b"\0" * 1000))
    reader = ProxyHeaderReader()
    assert reader.feed(data[:-1]) is None and reader.buffered == len(data) - 1
    assert reader.feed(data[-1:] + b"after") is not None and reader.rest == b"after"


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(VALID)), st.data())
def test_any_chunking_of_a_valid_header_gives_the_same_header_and_rest(name, data):
    header_bytes, expected = VALID[name]
    stream = header_bytes + b"after the header"
    chunks = data.draw(chunkings(stream, max_pieces=30))
    reader = ProxyHeaderReader()
    got, rest = None, b""
    for chunk in chunks:
        if got is None:
            got = reader.feed(chunk)
            rest = reader.rest
        else:
            rest += chunk
    assert got == expected and rest == b"after the header"


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(INVALID)), st.data())
def test_any_chunking_of_a_malformed_header_is_refused(name, data):
    chunks = data.draw(chunkings(INVALID[name], max_pieces=30))
    reader = ProxyHeaderReader()
    with pytest.raises(ProxyProtocolError):
        for chunk in chunks:
            assert reader.feed(chunk) is None


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300),
                 st.binary(max_size=120).map(lambda tail: b"PROXY " + tail),
                 st.binary(max_size=300).map(lambda tail: V2_SIGNATURE + tail)))
def test_arbitrary_bytes_give_a_header_none_or_proxy_protocol_error_only(data):
    reader = ProxyHeaderReader()
    try:
        reader.feed(data)
    except ProxyProtocolError:
        return
    assert reader.buffered <= max(len(data), 16 + 65535)


# ----------------------------------------------------------------------
# The layer: over a socket, under a CountingLayer, under drive()
# ----------------------------------------------------------------------
class Peer(netmux.Handler):
    """Says the peername it was given, then echoes; notes every event."""

    def __init__(self) -> None:
        self.events: List[str] = []
        self.lost = False
        self.lost_exc: Optional[BaseException] = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.events.append("made")
        peer = transport.get_extra_info("peername")
        balancer = transport.get_extra_info("proxy_peername")
        transport.write(f"{peer[0]} {peer[1]} {balancer is not None}\n".encode())

    def data_received(self, data: bytes) -> None:
        self.events.append("data")
        self.transport.write(data)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.events.append("lost")
        self.lost, self.lost_exc = True, exc


WAYS = ["socket", "layer", "drive"]


def run_proxied(way: str, data: bytes, *, timeout: float = 10.0) -> Any:
    """One connection sending ``data`` then FIN to a server with proxy_protocol=True;
    returns (handlers made, bytes the client got)."""
    made: List[Peer] = []

    def handler() -> Peer:
        made.append(Peer())
        return made[-1]

    if way == "drive":
        conversation = drive(lambda: ProxyProtocolLayer(handler(), header_timeout=timeout), [data])
        return made, conversation.written
    factory = (lambda: netmux.CountingLayer(handler())) if way == "layer" else handler
    reactor = netmux.Reactor()
    server = netmux.TCPServer(("127.0.0.1", 0), factory, reactor=reactor, proxy_protocol=True,
                              proxy_header_timeout=timeout)
    client = socket.create_connection(server.server_address)
    try:
        client.sendall(data)
        client.shutdown(socket.SHUT_WR)
        client.setblocking(False)
        received = bytearray()

        def done() -> bool:
            try:
                chunk = client.recv(65536)
            except BlockingIOError:
                return False
            except ConnectionResetError:
                return True
            received.extend(chunk)
            return not chunk
        run_until(reactor, done)
        run_until(reactor, lambda: server.connections == 0)
        return made, bytes(received)
    finally:
        client.close()
        server.server_close()
        reactor.close()


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("header", [v1(("203.0.113.9", 5555)), v2(("203.0.113.9", 5555))], ids=["v1", "v2"])
def test_the_handler_sees_the_clients_address_and_only_the_bytes_after_the_header(way, header):
    made, received = run_proxied(way, header + b"hello")
    assert received == b"203.0.113.9 5555 True\nhello"
    assert made[0].events == ["made", "data", "lost"]


@pytest.mark.parametrize("way", WAYS)
def test_a_local_header_keeps_the_connections_own_address(way):
    made, received = run_proxied(way, v2(command=0) + b"ping")
    own = "192.0.2.2 50000" if way == "drive" else "127.0.0.1 "
    assert received.startswith(own.encode()) and received.endswith(b"True\nping")


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("data", [b"GET / HTTP/1.0\r\n\r\n", INVALID["v1-too-long"], v1()[:-3]],
                         ids=["no-header", "v1-too-long", "cut-by-fin"])
def test_a_missing_or_malformed_header_closes_with_one_log_line_and_no_handler(way, data, caplog):
    caplog.set_level(logging.WARNING, logger="netmux")
    made, received = run_proxied(way, data)
    assert made == [] or made[0].events == []        # a factory may run; the handler is never made
    assert received == b""
    lines = [record for record in caplog.records if "PROXY" in record.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["v1", "v2"]), st.data())
def test_any_chunking_through_the_layer_gives_the_handler_exactly_the_bytes_after_the_header(kind, data):
    header = (v1 if kind == "v1" else v2)(("203.0.113.9", 5555))
    chunks = data.draw(chunkings(header + b"one two three", max_pieces=20))
    made: List[Peer] = []
    conversation = drive(lambda: ProxyProtocolLayer(made.append(Peer()) or made[-1]), chunks)
    assert conversation.written == b"203.0.113.9 5555 True\none two three"
    assert made[0].events[0] == "made" and made[0].events[-1] == "lost"


class AddressOf(netmux.StreamHandler):
    """A coroutine handler: socketserver's client_address is the client's, not the balancer's."""

    async def handle(self) -> None:
        line = await self.readline()
        await self.sendall(b"%s %d %s" % (self.client_address[0].encode(), self.client_address[1], line))


def test_a_stream_handlers_client_address_is_the_one_the_header_names():
    conversation = drive(lambda: ProxyProtocolLayer(AddressOf()), [v2(("198.51.100.20", 61000)) + b"hi\n"])
    assert conversation.written == b"198.51.100.20 61000 hi\n"


def test_a_silent_connection_is_closed_at_the_header_timeout_in_virtual_time(caplog):
    caplog.set_level(logging.WARNING, logger="netmux")
    made: List[Peer] = []
    conversation = drive(lambda: ProxyProtocolLayer(made.append(Peer()) or made[-1], header_timeout=3),
                         [b"PROXY TCP4 "], eof=False)
    assert conversation.closed and conversation.aborted and conversation.time == pytest.approx(3)
    assert made[0].events == [] and conversation.written == b""
    assert "incomplete PROXY header after 3 s" in caplog.text


def test_a_health_check_that_closes_without_a_byte_is_logged_at_debug_only(caplog):
    caplog.set_level(logging.DEBUG, logger="netmux")
    conversation = drive(lambda: ProxyProtocolLayer(Peer()), [])
    assert conversation.closed
    assert [r.levelno for r in caplog.records if "PROXY" in r.getMessage()] == [logging.DEBUG]


def test_bytes_after_the_header_wait_while_the_handler_pauses_reading():
    class Paused(Peer):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            transport.pause_reading()
            transport.call_later(1.0, transport.resume_reading)

    conversation = drive(lambda: ProxyProtocolLayer(Paused()), [v2() + b"early", b"late"])
    assert conversation.written.endswith(b"earlylate")


@pytest.mark.parametrize("value", [0, -1, float("nan"), None])
def test_a_header_timeout_must_be_positive(value):
    with pytest.raises(ValueError):
        ProxyProtocolLayer(Peer(), header_timeout=value)
    with pytest.raises(ValueError):
        netmux.TCPServer(("127.0.0.1", 0), Peer, proxy_protocol=True, proxy_header_timeout=value)


def test_ipv6_balancer_and_a_unix_socket_server_carry_the_header_too(tmp_path):
    reactor = netmux.Reactor()
    servers = [netmux.UnixServer(str(tmp_path / "s"), Peer, reactor=reactor, proxy_protocol=True)]
    try:
        servers.append(netmux.TCPServer(("::1", 0), Peer, reactor=reactor, proxy_protocol=True))
    except OSError:
        pass                                    # no IPv6 loopback here
    try:
        for server in servers:
            family = socket.AF_UNIX if isinstance(server, netmux.UnixServer) else socket.AF_INET6
            with socket.socket(family) as client:
                client.connect(server.server_address)
                client.sendall(v1(("2001:db8::5", 7), ("2001:db8::1", 80)))
                client.setblocking(False)
                got = bytearray()

                def line() -> bool:
                    try:
                        got.extend(client.recv(100))
                    except BlockingIOError:
                        pass
                    return got.endswith(b"\n")
                run_until(reactor, line)
                assert bytes(got) == b"2001:db8::5 7 True\n"
    finally:
        for server in servers:
            server.server_close()
        reactor.close()


# ----------------------------------------------------------------------
# HAProxy in front of two netmux processes (Debian's haproxy)
# ----------------------------------------------------------------------
BACKEND = """
import os, ssl, sys, netmux
class Says(netmux.Handler):
    def connection_made(self, transport):
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        balancer = transport.get_extra_info("proxy_peername")
        transport.write(f"{os.getpid()} {peer[0]} {peer[1]} {balancer[0]}\\n".encode())
        transport.close()
tls = {}
if len(sys.argv) > 1:                  # certificate, key: TLS terminated here, below the balancer
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(sys.argv[1], sys.argv[2])
    tls = {"ssl": context}
server = netmux.TCPServer(("127.0.0.1", 0), Says, proxy_protocol=True, **tls)
print("server on %s:%d" % server.server_address, file=sys.stderr, flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    pass
server.server_close()
"""

#: The configuration README's "Deploying" shows, with the ports filled in.
HAPROXY_CONFIG = """\
global
    maxconn 1024
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend netmux_front
    bind 127.0.0.1:{front}
    default_backend netmux_workers
backend netmux_workers
    balance roundrobin
    server one 127.0.0.1:{one} {send}
    server two 127.0.0.1:{two} {send}
"""


def test_the_readme_shows_the_configuration_this_test_runs():
    with open(os.path.join(ROOT, "README.md")) as readme:
        text = readme.read()
    assert HAPROXY_CONFIG.format(front=8000, one=8001, two=8002, send="send-proxy-v2") in text


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


HAS_TLS = "ssl" in inspect.signature(netmux.TCPServer).parameters


def certificate(tmp_path) -> Any:
    """A certificate for 127.0.0.1 from a throw-away CA (trustme), its key, and a
    client context trusting that CA."""
    trustme = pytest.importorskip("trustme")
    authority = trustme.CA()
    issued = authority.issue_cert("127.0.0.1")
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    issued.cert_chain_pems[0].write_to_path(cert)
    issued.private_key_pem.write_to_path(key)
    client = ssl.create_default_context()
    authority.configure_trust(client)
    return cert, key, client


@pytest.mark.skipif(not HAS_TLS, reason="TCPServer(ssl=) is not in this tree")
@pytest.mark.parametrize("header", [v1(("203.0.113.9", 5555)), v2(("203.0.113.9", 5555))], ids=["v1", "v2"])
def test_tls_is_read_above_the_proxy_header(header, serve, tmp_path):
    cert, key, client_context = certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    serving = serve(lambda: netmux.CountingLayer(Peer()), proxy_protocol=True, ssl=context)
    with serving.connect() as raw:
        raw.sendall(header)                    # the balancer's header, then the client's TLS
        with client_context.wrap_socket(raw, server_hostname="127.0.0.1") as client:
            client.sendall(b"secret")
            assert recv_exactly(client, 28) == b"203.0.113.9 5555 True\nsecret"


@pytest.mark.clients
@pytest.mark.parametrize("send, tls", [("send-proxy", False), ("send-proxy-v2", False),
                                       pytest.param("send-proxy-v2", True, marks=pytest.mark.skipif(
                                           not HAS_TLS, reason="TCPServer(ssl=) is not in this tree"))],
                         ids=["v1", "v2", "v2-tls"])
def test_haproxy_in_front_balances_and_the_handlers_see_the_real_client_ports(send, tls, tmp_path):
    haproxy = shutil.which("haproxy")
    assert haproxy is not None
    cert, key, client_context = certificate(tmp_path) if tls else (None, None, None)
    backends = [ServerProcess([cert, key] if tls else [], code=BACKEND) for _ in range(2)]
    process = None
    try:
        front = free_port()
        config = tmp_path / "haproxy.cfg"
        config.write_text(HAPROXY_CONFIG.format(front=front, one=backends[0].address[1],
                                                two=backends[1].address[1], send=send))
        process = subprocess.Popen([haproxy, "-db", "-f", str(config)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", front), timeout=1).close()
                return True
            except OSError:
                assert process.poll() is None, "haproxy exited"
                return False
        wait_until(listening, timeout=10)
        pids = set()
        for _ in range(10):
            with socket.create_connection(("127.0.0.1", front), timeout=5) as raw:
                port_used = raw.getsockname()
                client = client_context.wrap_socket(raw, server_hostname="127.0.0.1") if tls else raw
                pid, host, port, balancer = recv_until_eof(client).decode().split()
                assert (host, int(port)) == port_used                 # the real client port
                assert balancer == "127.0.0.1"
                pids.add(int(pid))
        assert pids == {backend.process.pid for backend in backends}
        with socket.create_connection(backends[0].address, timeout=5) as direct:
            direct.sendall(b"hello without a header\r\n")
            assert recv_until_eof(direct) == b""                     # refused: no handler ran
        backends[0].wait_for_log("not a PROXY protocol header")
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for backend in backends:
            backend.stop(signal.SIGINT)
