"""Socket activation: servers on a listening socket handed over (sock=, --fd N, systemd's LISTEN_FDS)."""
from __future__ import annotations

import os
import signal
import socket

import pytest

import netmux
from netmux.activation import inherited_socket, listen_fds, server_for_socket, socket_from_fd

from conftest import Echo, ServerProcess, recv_exactly, run_and_recv


def listening(family: int = socket.AF_INET, address=("127.0.0.1", 0)) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind(address)
    sock.listen()
    return sock


# ----------------------------------------------------------------------
# sock=: the front doors serve a socket they are given
# ----------------------------------------------------------------------
@pytest.mark.parametrize("layer", [False, True], ids=["socket", "counting-layer"])
def test_a_tcp_server_serves_the_socket_it_is_given_and_closes_it(layer):
    handed = listening()
    reactor = netmux.Reactor()
    factory = (lambda: netmux.CountingLayer(Echo())) if layer else Echo
    server = netmux.TCPServer(None, factory, reactor=reactor, sock=handed)
    try:
        assert server.server_address == handed.getsockname() and server.socket is handed
        assert not handed.getblocking()
        with socket.create_connection(server.server_address, timeout=5) as client:
            client.sendall(b"handed over")
            assert run_and_recv(reactor, client, 11) == b"handed over"
    finally:
        server.server_close()
        reactor.close()
    assert handed.fileno() == -1              # the server owns what it serves, as asyncio's


def test_a_unix_server_serves_a_handed_socket_and_leaves_its_file(tmp_path):
    path = str(tmp_path / "activated.sock")
    handed = listening(socket.AF_UNIX, path)
    reactor = netmux.Reactor()
    server = server_for_socket(handed, Echo, reactor=reactor)
    try:
        assert isinstance(server, netmux.UnixServer) and server.server_address == path
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)
            client.sendall(b"unix")
            assert run_and_recv(reactor, client, 4) == b"unix"
    finally:
        server.server_close()
        reactor.close()
    assert os.path.exists(path)               # its owner (the service manager) removes it


def test_server_for_socket_makes_a_tcp_server_with_the_options_given():
    reactor = netmux.Reactor()
    server = server_for_socket(listening(), Echo, reactor=reactor, max_connections=3, proxy_protocol=True)
    try:
        assert isinstance(server, netmux.TCPServer)
        assert server.max_connections == 3 and server.proxy_protocol
    finally:
        server.server_close()
        reactor.close()


def test_bad_sockets_are_refused_before_serving(tmp_path):
    unix = listening(socket.AF_UNIX, str(tmp_path / "u"))
    tcp = listening()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    bound = socket.socket()
    bound.bind(("127.0.0.1", 0))
    try:
        with pytest.raises(ValueError, match="not both or neither"):
            netmux.TCPServer(("127.0.0.1", 0), Echo, sock=tcp)
        with pytest.raises(ValueError, match="not both or neither"):
            netmux.TCPServer(None, Echo)
        with pytest.raises(ValueError, match="stream socket"):
            netmux.TCPServer(None, Echo, sock=udp)
        with pytest.raises(ValueError, match="not listening"):
            netmux.TCPServer(None, Echo, sock=bound)
        with pytest.raises(ValueError, match="UnixServer"):
            netmux.TCPServer(None, Echo, sock=unix)
        with pytest.raises(ValueError, match="TCPServer"):
            netmux.UnixServer(None, Echo, sock=tcp)
        with pytest.raises(TypeError):
            netmux.TCPServer(None, Echo, sock=tcp.fileno())
    finally:
        for sock in (unix, tcp, udp, bound):
            sock.close()


# ----------------------------------------------------------------------
# systemd's protocol, in this process
# ----------------------------------------------------------------------
def test_listen_fds_meant_for_another_process_are_ignored_and_unset(monkeypatch):
    monkeypatch.setenv("LISTEN_PID", str(os.getppid()))
    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv("LISTEN_FDNAMES", "web")
    assert listen_fds() == []
    assert not {"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} & set(os.environ)


@pytest.mark.parametrize("count", ["x", "-1", ""])
def test_a_malformed_listen_fds_is_an_error(monkeypatch, count):
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", count)
    with pytest.raises(ValueError):
        listen_fds()


def test_no_descriptor_and_no_environment_means_bind_as_usual(monkeypatch):
    monkeypatch.delenv("LISTEN_PID", raising=False)
    assert inherited_socket(None) is None


def test_socket_from_fd_refuses_what_is_not_a_socket():
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(OSError):
            socket_from_fd(read_end)
        with pytest.raises(ValueError):
            socket_from_fd(-1)
    finally:
        os.close(read_end)
        os.close(write_end)


# ----------------------------------------------------------------------
# The command line: a socket handed over by a parent process
# ----------------------------------------------------------------------
def echo_once(address, family=socket.AF_INET, payload=b"activated") -> bytes:
    with socket.socket(family) as client:
        client.settimeout(5)
        client.connect(address)
        client.sendall(payload)
        return recv_exactly(client, len(payload))


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["one-process", "two-workers"])
def test_fd_n_serves_the_socket_a_parent_hands_over(workers):
    handed = listening()
    process = ServerProcess(["--fd", str(handed.fileno())] + workers, pass_fds=(handed.fileno(),))
    try:
        assert process.address == handed.getsockname()
        for _ in range(5):
            assert echo_once(process.address) == b"activated"
        assert process.stop(signal.SIGTERM) == 0
    finally:
        process.stop(signal.SIGKILL)
        handed.close()


# As systemd starts a service: the socket as descriptor 3, LISTEN_FDS=1 and
# LISTEN_PID set to the pid of the process it then executes (exec keeps the pid).
SYSTEMD = """
import os, sys
fd = int(sys.argv[1])
if fd != 3:
    os.dup2(fd, 3)
    os.close(fd)
os.set_inheritable(3, True)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid() if sys.argv[2] == "self" else 1))
os.execv(sys.executable, [sys.executable, "-m", "netmux"] + sys.argv[3:])
"""


def test_listen_fds_from_systemd_is_served_without_any_option():
    handed = listening()
    fd = handed.fileno()
    process = ServerProcess([str(fd), "self", "--port", "1"], code=SYSTEMD, pass_fds=(fd,))
    try:
        assert process.address == handed.getsockname()      # not port 1: the socket handed over
        assert echo_once(process.address) == b"activated"
        assert process.stop(signal.SIGTERM) == 0
    finally:
        process.stop(signal.SIGKILL)
        handed.close()


def test_listen_fds_of_a_unix_socket_serves_chat_on_it(tmp_path):
    path = str(tmp_path / "chat.sock")
    handed = listening(socket.AF_UNIX, path)
    fd = handed.fileno()
    process = ServerProcess([str(fd), "self", "chat"], code=SYSTEMD, pass_fds=(fd,),
                            address_pattern=None)
    try:
        process.wait_for_log(r"server on " + path)
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(5)
            client.connect(path)
            assert client.recv(100).startswith(b"* ")          # chat's welcome
        assert process.stop(signal.SIGTERM) == 0
    finally:
        process.stop(signal.SIGKILL)
        handed.close()


def test_listen_fds_for_another_pid_is_ignored_and_the_server_binds_its_own_port():
    handed = listening()
    fd = handed.fileno()
    process = ServerProcess([str(fd), "other", "--port", "0"], code=SYSTEMD, pass_fds=(fd,))
    try:
        assert process.address != handed.getsockname()
        assert echo_once(process.address) == b"activated"
    finally:
        process.stop(signal.SIGKILL)
        handed.close()


def test_fd_of_a_socket_that_is_not_listening_is_refused_before_anything_starts():
    bound = socket.socket()
    bound.bind(("127.0.0.1", 0))
    process = ServerProcess(["--fd", str(bound.fileno()), "--workers", "2"], pass_fds=(bound.fileno(),),
                            address_pattern=None)
    try:
        assert process.process.wait(20) == 1
    finally:
        process.stop(signal.SIGKILL)
        bound.close()
    assert "not listening" in process.log and "worker" not in process.log


@pytest.mark.parametrize("arguments, code", [(["udp-echo", "--fd", "0"], 2), (["--fd", "-1"], 2),
                                             (["--fd", "0", "--unix", "/tmp/x"], 2), (["--fd", "0"], 1)])
def test_fd_mistakes_are_reported(arguments, code):
    process = ServerProcess(arguments, address_pattern=None)   # fd 0: stdin, not a socket
    try:
        assert process.process.wait(20) == code
    finally:
        process.stop(signal.SIGKILL)
    assert "Traceback" not in process.log
