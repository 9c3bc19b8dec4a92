"""netmux.sockets: address meaning, binding, socket files, TCP_NODELAY, front-door checks."""
from __future__ import annotations

import errno
import os
import pathlib
import shutil
import socket
import tempfile
from typing import Iterator, List

import pytest

import netmux
from netmux import sockets
from conftest import needs_ipv6


@pytest.fixture
def short_dir() -> Iterator[str]:
    """A directory whose paths fit in sun_path (about 107 bytes); tmp_path may not."""
    path = tempfile.mkdtemp(prefix="nm-", dir="/tmp")
    yield path
    shutil.rmtree(path)


def dead_socket_file(path: str) -> None:
    """Leave a socket file behind as a killed server would: bound, closed, not unlinked."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(path)


# ----------------------------------------------------------------------
# Front-door checks
# ----------------------------------------------------------------------
@pytest.mark.parametrize("not_callable", [None, 3, "Echo", netmux.Handler()])
def test_a_factory_that_is_not_callable_is_a_type_error(not_callable):
    with pytest.raises(TypeError, match="handler_factory must be callable"):
        sockets.check_handler_factory(not_callable)
    sockets.check_handler_factory(netmux.Handler)
    sockets.check_handler_factory(lambda: None)


def test_a_closed_reactor_is_a_runtime_error_and_none_is_fine():
    reactor = netmux.Reactor()
    sockets.check_reactor_open(reactor)
    sockets.check_reactor_open(None)
    reactor.close()
    with pytest.raises(RuntimeError, match="closed"):
        sockets.check_reactor_open(reactor)


# ----------------------------------------------------------------------
# What an address means
# ----------------------------------------------------------------------
def test_str_bytes_and_pathlike_are_unix_paths_and_tuples_are_not():
    assert sockets.is_unix_address("/run/x.sock")
    assert sockets.is_unix_address("127.0.0.1:9")          # a file name, now
    assert sockets.is_unix_address(b"/run/x.sock")
    assert sockets.is_unix_address(pathlib.Path("/run/x.sock"))
    for other in (("127.0.0.1", 9), ["::1", 9], 9, None):
        assert not sockets.is_unix_address(other)
    assert sockets.unix_path(pathlib.Path("/run/x.sock")) == "/run/x.sock"
    assert sockets.unix_path(b"/run/x") == b"/run/x"
    for empty in ("", b"", pathlib.PurePath("")):
        if os.fspath(empty) == ".":
            continue        # PurePath("") is "." : a name, not empty
        with pytest.raises(ValueError, match="empty"):
            sockets.unix_path(empty)


def test_split_host_port_takes_pairs_and_longer_ipv6_tuples_only():
    assert sockets.split_host_port(("127.0.0.1", 9)) == ("127.0.0.1", 9)
    assert sockets.split_host_port(["::1", 9, 0, 0]) == ("::1", 9)
    for bad in (9, ("127.0.0.1",), None, b"ab"):
        with pytest.raises(TypeError, match="tuple or a Unix socket path"):
            sockets.split_host_port(bad)


def test_address_family_follows_the_host():
    assert sockets.address_family("") == socket.AF_INET
    assert sockets.address_family(None) == socket.AF_INET
    assert sockets.address_family("127.0.0.1") == socket.AF_INET
    assert sockets.address_family("::1") == socket.AF_INET6
    assert sockets.address_family("localhost") == socket.AF_INET    # IPv4 preferred


# ----------------------------------------------------------------------
# Binding
# ----------------------------------------------------------------------
def test_listen_tcp_binds_non_blocking_with_reuse_address_and_resolves_the_port():
    with sockets.listen_tcp(("127.0.0.1", 0), 5) as sock:
        assert not sock.getblocking()
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        host, port = sockets.bound_address(sock)
        assert host == "127.0.0.1" and port > 0
        with socket.create_connection((host, port), timeout=5):
            pass


@needs_ipv6
def test_bound_address_of_ipv6_is_a_pair():
    with sockets.listen_tcp(("::1", 0), 5) as sock:
        assert sock.family == socket.AF_INET6
        address = sockets.bound_address(sock)
        assert len(address) == 2 and address[0] == "::1"


def test_a_failed_bind_closes_the_socket_it_made():
    # The autouse no_leaks fixture counts descriptors: a leak fails the test.
    with sockets.bound_socket(("127.0.0.1", 0), socket.SOCK_DGRAM, reuse_address=False,
                              reuse_port=False) as taken:
        for _ in range(3):
            with pytest.raises(OSError) as info:
                sockets.bound_socket(taken.getsockname(), socket.SOCK_DGRAM, reuse_address=False,
                                     reuse_port=False)
            assert info.value.errno == errno.EADDRINUSE


def test_set_nodelay_on_tcp_only():
    with sockets.listen_tcp(("127.0.0.1", 0), 5) as listener, \
            socket.create_connection(listener.getsockname(), timeout=5) as client:
        assert not client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        sockets.set_nodelay(client)
        assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    left, right = socket.socketpair()
    with left, right:
        sockets.set_nodelay(left)       # a Unix socket: nothing to set, nothing raised
        left.sendall(b"x")
        assert right.recv(1) == b"x"


# ----------------------------------------------------------------------
# Unix socket files
# ----------------------------------------------------------------------
def test_listen_unix_creates_the_file_and_remove_deletes_it_once(short_dir):
    path = os.path.join(short_dir, "s")
    sock, socket_file = sockets.listen_unix(path, 5)
    with sock:
        assert not sock.getblocking()
        assert os.path.exists(path) and socket_file is not None
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)
        socket_file.remove()
        assert not os.path.exists(path)
        socket_file.remove()              # a second time: nothing, no error


def test_a_stale_socket_file_is_replaced(short_dir):
    path = os.path.join(short_dir, "s")
    dead_socket_file(path)
    with pytest.raises(ConnectionRefusedError), socket.socket(socket.AF_UNIX) as client:
        client.connect(path)              # stale: nobody listens
    sock, socket_file = sockets.listen_unix(path, 5)
    with sock:
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)          # ours now: the kernel queues the connection
        conn, _ = sock.accept()
        conn.close()
        socket_file.remove()


def test_a_live_socket_file_is_address_in_use_and_left_alone(short_dir):
    path = os.path.join(short_dir, "s")
    live, live_file = sockets.listen_unix(path, 5)
    with live:
        inode = os.stat(path).st_ino
        with pytest.raises(OSError) as info:
            sockets.listen_unix(path, 5)
        assert info.value.errno == errno.EADDRINUSE
        assert os.stat(path).st_ino == inode
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)          # the live server still owns its path
        live_file.remove()


def test_a_live_server_with_a_full_backlog_is_still_live(short_dir):
    # A non-blocking connect to a full backlog is EAGAIN, not ECONNREFUSED:
    # the probe must take that for a live server, never for a stale file.
    path = os.path.join(short_dir, "s")
    live, live_file = sockets.listen_unix(path, 0)
    queued: List[socket.socket] = []
    try:
        for _ in range(16):
            client = socket.socket(socket.AF_UNIX)
            client.setblocking(False)
            queued.append(client)
            if client.connect_ex(path) == errno.EAGAIN:
                break
        else:
            pytest.fail("the backlog never filled")
        with pytest.raises(OSError) as info:
            sockets.listen_unix(path, 5)
        assert info.value.errno == errno.EADDRINUSE
        assert os.path.exists(path)
    finally:
        for client in queued:
            client.close()
        live_file.remove()
        live.close()


@pytest.mark.parametrize("kind", ["file", "directory", "fifo", "symlink"])
def test_a_path_that_is_not_a_socket_is_refused_and_never_removed(short_dir, kind):
    path = os.path.join(short_dir, "s")
    if kind == "file":
        with open(path, "w") as file:
            file.write("precious")
    elif kind == "directory":
        os.mkdir(path)
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        os.symlink(os.path.join(short_dir, "elsewhere"), path)
    with pytest.raises(OSError) as info:
        sockets.listen_unix(path, 5)
    assert info.value.errno == errno.EADDRINUSE
    assert "not a socket" in str(info.value)
    assert os.path.lexists(path)
    if kind == "file":
        with open(path) as file:
            assert file.read() == "precious"


def test_remove_leaves_a_socket_file_that_replaced_ours(short_dir):
    path = os.path.join(short_dir, "s")
    ours, ours_file = sockets.listen_unix(path, 5)
    theirs, _ = sockets.listen_unix(os.path.join(short_dir, "t"), 5)
    with ours, theirs:
        os.rename(os.path.join(short_dir, "t"), path)    # moved over ours while we listen
        ours_file.remove()
        assert os.path.exists(path)
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)
        conn, _ = theirs.accept()        # it was theirs that the path led to
        conn.close()
    os.unlink(path)


def test_remove_finds_a_relative_path_after_a_chdir(short_dir, monkeypatch):
    monkeypatch.chdir(short_dir)
    sock, socket_file = sockets.listen_unix("rel.sock", 5)
    with sock:
        monkeypatch.chdir("/")
        socket_file.remove()
    assert not os.path.exists(os.path.join(short_dir, "rel.sock"))


def test_an_abstract_name_has_no_file():
    name = f"\0netmux-test-{os.getpid()}"
    sock, socket_file = sockets.listen_unix(name, 5)
    with sock:
        assert socket_file is None
        with pytest.raises(OSError) as info:       # taken: no stale-file logic applies
            sockets.listen_unix(name, 5)
        assert info.value.errno == errno.EADDRINUSE
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(name)


def test_a_path_too_long_is_the_kernel_error_and_leaks_nothing(short_dir):
    with pytest.raises(OSError):
        sockets.listen_unix(os.path.join(short_dir, "x" * 200), 5)


@pytest.mark.parametrize("host", ["127.0.0.1", pytest.param("::1", marks=needs_ipv6)])
def test_accepted_sockname_is_what_each_accepted_socket_says(host):
    with sockets.listen_tcp((host, 0), 8) as listener:
        known = sockets.accepted_sockname(listener)
        with socket.create_connection(listener.getsockname()[:2], timeout=5) as client:
            listener.setblocking(True)
            accepted, _ = listener.accept()
            with accepted:
                assert known == accepted.getsockname() == client.getpeername()


@pytest.mark.parametrize("host", ["0.0.0.0", pytest.param("::", marks=needs_ipv6)])
def test_a_wildcard_listener_knows_no_single_sockname(host):
    with sockets.listen_tcp((host, 0), 8) as listener:
        assert sockets.accepted_sockname(listener) is None


def test_a_unix_listener_is_not_asked_for_a_sockname(short_dir):
    sock, socket_file = sockets.listen_unix(os.path.join(short_dir, "s"), 8)
    with sock:
        assert sockets.accepted_sockname(sock) is None
        assert socket_file is not None
        socket_file.remove()
