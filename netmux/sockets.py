"""Socket plumbing: the facts about sockets that every front door shares.

Where it sits: under the front doors (``server.py``, ``udp.py``,
``client.py``), beside the transports. It owns, once each:

* **what an address means**: a str, bytes or PathLike is a Unix socket path;
  a ``(host, port)`` pair is IPv6 when its host is an IPv6 literal, IPv4
  otherwise (a host name is resolved, IPv4 preferred, as socketserver does);
* **binding and listening**, with the options that must come before
  ``bind()`` (SO_REUSEADDR, SO_REUSEPORT), and reading the bound address back;
* **a Unix socket file's life**: a stale file left by a dead server is
  replaced, a live server's is refused (EADDRINUSE), a file that is not a
  socket is never touched, and only the file we bound is removed at the end;
* **per-connection options**: TCP_NODELAY, on TCP sockets only;
* **the checks a front door makes before it opens anything**: a callable
  handler factory, an open reactor, an address of the right shape. They run
  first so that a misuse raises with nothing bound, made or leaked.

What it never does: register with a reactor, make a handler, or read and write
a connection's bytes. A socket it returns is non-blocking; if a step fails,
the socket is closed before the error propagates.

Internal: its names are shared by netmux's own modules and not re-exported
from ``netmux``. Pinned by tests/test_sockets.py.
"""
from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
import stat
from typing import Any, Callable, Iterator, Optional, Tuple, Union

__all__ = [
    "check_handler_factory", "check_reactor_open", "is_unix_address", "unix_path",
    "split_host_port", "address_family", "bound_socket", "bound_address", "listen_tcp",
    "listen_unix", "adopt_listening_socket", "UnixSocketFile", "set_nodelay", "accepted_sockname",
    "IPAddress", "UnixAddress", "UnixPath",
]

#: An IP address as the front doors take it: ``(host, port)``, or IPv6's
#: ``(host, port, flowinfo, scope_id)``. For a type checker a str port is an
#: error (at run time the kernel's TypeError).
IPAddress = Union[Tuple[str, int], Tuple[str, int, int, int]]
#: A Unix socket path as a user gives it: a str, bytes or PathLike.
UnixAddress = Union[str, bytes, os.PathLike[str], os.PathLike[bytes]]
#: A Unix socket path as the kernel takes it (``os.fspath`` of a ``UnixAddress``).
UnixPath = Union[str, bytes]


# ======================================================================
# Checks every front door makes first
# ======================================================================
def check_handler_factory(handler_factory: Callable[[], Any]) -> None:
    """TypeError unless ``handler_factory`` is callable (a class, a function, a lambda)."""
    if not callable(handler_factory):
        raise TypeError(f"handler_factory must be callable, not {type(handler_factory).__name__}")


def check_reactor_open(reactor: Any) -> None:
    """RuntimeError for a closed reactor (None is fine: the server makes its own).

    Checked before a socket is made: a closed reactor can watch nothing, so a
    server built on it would hold a listening socket that nobody accepts on.
    """
    if reactor is not None and reactor.is_closed():
        raise RuntimeError("the reactor is closed")


# ======================================================================
# What an address means
# ======================================================================
def is_unix_address(address: Any) -> bool:
    """True for a str, bytes or PathLike address: a Unix socket path."""
    return isinstance(address, (str, bytes, os.PathLike))


def unix_path(address: Any) -> UnixPath:
    """The path of a str, bytes or PathLike address; ValueError when empty (the
    kernel would pick an abstract name no one can know)."""
    path: UnixPath = os.fspath(address)
    if not path:
        raise ValueError("a Unix socket path must not be empty")
    return path


def _is_abstract(path: UnixPath) -> bool:
    """Linux's abstract namespace: a leading NUL, no file in the file system."""
    return path[:1] in ("\0", b"\0")


def split_host_port(address: Any) -> Tuple[Any, int]:
    """``(host, port)`` of an IP address tuple (IPv6's flowinfo and scope_id
    may follow); TypeError for anything else."""
    if not isinstance(address, (tuple, list)) or len(address) < 2:
        raise TypeError(f"address must be a (host, port) tuple or a Unix socket path, not {address!r}")
    return address[0], address[1]


def address_family(host: Any) -> int:
    """IPv6 for an IPv6 literal, IPv4 for '' and IPv4 literals; a name is resolved,
    preferring IPv4 as socketserver does."""
    if host in ("", None):
        return socket.AF_INET
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, None, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    families = [info[0] for info in infos]
    return socket.AF_INET if socket.AF_INET in families else families[0]


# ======================================================================
# Binding and listening
# ======================================================================
@contextlib.contextmanager
def _closed_on_failure(sock: socket.socket) -> Iterator[socket.socket]:
    """Close ``sock`` if a step in the block fails, so a failed constructor leaks nothing."""
    try:
        yield sock
    except BaseException:
        sock.close()
        raise


def bound_socket(address: IPAddress, kind: int, *, reuse_address: bool, reuse_port: bool) -> socket.socket:
    """A non-blocking IP socket of ``kind`` bound to ``address``, its family chosen by the host."""
    with _closed_on_failure(socket.socket(address_family(address[0]), kind)) as sock:
        if reuse_address:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.setblocking(False)
    return sock


def bound_address(sock: socket.socket) -> IPAddress:
    """``(host, port)`` of a bound IP socket, port resolved. IPv6 gives the same pair
    (flow info and a zero scope dropped) so ``socket.create_connection`` takes it."""
    address: IPAddress = sock.getsockname()
    if len(address) == 4 and address[3] == 0:     # AF_INET6
        return address[:2]
    return address


def listen_tcp(address: IPAddress, backlog: int, *, reuse_port: bool = False) -> socket.socket:
    """A non-blocking TCP socket bound to ``address`` and listening.

    SO_REUSEADDR is on: a restarted server binds at once, its predecessor's
    connections still in TIME_WAIT notwithstanding.
    """
    with _closed_on_failure(bound_socket(address, socket.SOCK_STREAM, reuse_address=True,
                                         reuse_port=reuse_port)) as sock:
        sock.listen(backlog)
    return sock


def adopt_listening_socket(sock: socket.socket) -> socket.socket:
    """A listening stream socket someone else bound (socket activation, a parent
    process), made non-blocking; ValueError for anything else.

    Checked before a server takes it: a datagram socket or one that is not
    listening would only fail at the first ``accept()``, long after the
    mistake. (The flag is set on the open file description, which a parent
    sharing the socket sees too; a listener that only hands it over never
    accepts itself, so that is harmless.)
    """
    if not isinstance(sock, socket.socket):
        raise TypeError(f"sock must be a socket.socket, not {type(sock).__name__}")
    if sock.type != socket.SOCK_STREAM:
        raise ValueError(f"a server needs a stream socket, not {sock.type!r}")
    listening = getattr(socket, "SO_ACCEPTCONN", None)
    if listening is not None and not sock.getsockopt(socket.SOL_SOCKET, listening):
        raise ValueError(f"the socket is not listening (call listen() first): {sock!r}")
    sock.setblocking(False)
    return sock


# ======================================================================
# Unix socket files
# ======================================================================
class UnixSocketFile:
    """The socket file a Unix server bound, known by its (device, inode).

    Only that file is removed at the end: if someone replaced it meanwhile
    (moved another socket over it, or deleted ours and bound anew), the path
    names *their* socket now and must be left alone. Inode numbers are reused
    once a file is gone, so the comparison is exact only while the inode is
    pinned: a bound socket holds a reference to its file, hence ``remove()``
    must run while the listening socket is still open. The path is kept
    absolute, so a later ``os.chdir`` does not send the removal elsewhere.
    """

    def __init__(self, path: UnixPath) -> None:
        self.path = os.path.abspath(path)
        self._identity: Optional[Tuple[int, int]] = _identity(self.path)

    def remove(self) -> None:
        """Unlink the file if it is still ours; at most once. Call it before
        closing the socket (see the class). Never raises: a file we cannot
        remove is only left behind, and the next server replaces it as stale."""
        identity, self._identity = self._identity, None
        if identity is None or _identity(self.path) != identity:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass


def _identity(path: UnixPath) -> Optional[Tuple[int, int]]:
    """(device, inode) of the socket file at ``path``; None if there is none."""
    try:
        status = os.lstat(path)
    except OSError:
        return None
    return (status.st_dev, status.st_ino) if stat.S_ISSOCK(status.st_mode) else None


def listen_unix(path: UnixPath, backlog: int) -> Tuple[socket.socket, Optional[UnixSocketFile]]:
    """A non-blocking Unix stream socket bound to ``path`` and listening, with the
    file it created (None for an abstract name, which has no file).

    A socket file at ``path`` is probed first (see ``_replace_if_stale``);
    anything else there is refused.
    """
    with _closed_on_failure(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)) as sock:
        _bind_unix(sock, path)
        sock.listen(backlog)
        sock.setblocking(False)
    return sock, None if _is_abstract(path) else UnixSocketFile(path)


def _bind_unix(sock: socket.socket, path: UnixPath) -> None:
    try:
        sock.bind(path)
    except OSError as exc:
        # EADDRINUSE: something exists at the path (or the abstract name is taken).
        if exc.errno != errno.EADDRINUSE or _is_abstract(path) or not _replace_if_stale(path):
            raise
        sock.bind(path)     # a racing server may still win: then its EADDRINUSE is ours


def _replace_if_stale(path: UnixPath) -> bool:
    """Remove a socket file no server listens on; return whether bind() may retry.

    The kernel keeps no link between a socket file and a listener, so a server
    that died without cleaning up leaves a file that blocks every later bind.
    A connect tells the two apart: ECONNREFUSED means nobody listens (stale);
    success or EAGAIN (a full backlog) means a live server, and a live
    server's file is never taken. The probe is non-blocking, since a blocking
    connect to a full backlog would wait. A regular file, a directory, a FIFO
    at the path are raised as EADDRINUSE and left alone.
    """
    identity = _identity(path)
    if identity is None:
        if os.path.lexists(path):
            raise OSError(errno.EADDRINUSE, f"{os.fsdecode(path)!r} exists and is not a socket; "
                                            "not replacing it")
        return True     # it vanished meanwhile: bind again
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.setblocking(False)
        code = probe.connect_ex(path)
    if code == errno.ENOENT:
        return True
    if code in (0, errno.EAGAIN):
        raise OSError(errno.EADDRINUSE, f"{os.fsdecode(path)!r}: a server is listening there")
    if code != errno.ECONNREFUSED:
        raise OSError(code, os.strerror(code), os.fsdecode(path))    # EACCES, ...
    if _identity(path) == identity:     # still the file we probed, not a newcomer's
        os.unlink(path)
    return True


# ======================================================================
# Per-connection options
# ======================================================================
def accepted_sockname(listener: socket.socket) -> Optional[IPAddress]:
    """The local address of every connection a TCP listener accepts, when it is
    one: the listener's own, unless it is bound to a wildcard (0.0.0.0, ::),
    when each connection's depends on the interface it came in on (None).

    Known once, it spares a ``getsockname()`` per connection.
    """
    if listener.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    address: IPAddress = listener.getsockname()
    if ipaddress.ip_address(address[0].split("%")[0]).is_unspecified:
        return None
    return address


def set_nodelay(sock: socket.socket, is_tcp: Optional[bool] = None) -> None:
    """TCP_NODELAY on a TCP socket; nothing on others (a Unix socket has no Nagle).

    Nagle's algorithm holds a small write back until the previous one is
    acknowledged; a request/response protocol then waits a delayed-ACK
    period (up to 40 ms on Linux) per exchange. Our transport already writes
    whole buffers at once, so there is nothing for Nagle to coalesce.
    ``is_tcp``: what a caller knows already (a server, of its listener), so
    the family is not asked again.
    """
    if is_tcp is None:
        is_tcp = sock.family in (socket.AF_INET, socket.AF_INET6)
    if is_tcp:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass    # the connection broke already; the transport's first recv will say so
