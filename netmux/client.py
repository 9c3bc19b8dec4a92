"""Clients: outgoing TCP and Unix connections and datagram endpoints on a reactor.

Where it sits: beside the servers, on top of the reactor. ``connect()`` turns
an address into a connected socket without ever blocking the loop, then hands
it to the same ``TCPTransport`` the servers use, so a handler cannot tell an
accepted connection from an outgoing one. ``open_datagram()`` does the same for
UDP with a ``DatagramTransport``. One thread can therefore be a server and a
client at once: a proxy, a bridge, a health checker.

How a non-blocking connect works, and why the code below looks the way it does:

1. ``getaddrinfo`` turns the host into addresses, IPv6 and IPv4. For an IP
   literal it answers at once; for a host name it may ask DNS and **block**
   the calling thread, so resolve names before a busy loop starts, or pass
   literals.
2. ``connect_ex`` on a non-blocking socket returns EINPROGRESS at once: the
   SYN is sent and the handshake goes on in the kernel.
3. When the socket turns writable the handshake is over, for better or
   worse; ``SO_ERROR`` says which (0, ECONNREFUSED, ETIMEDOUT, ...). A
   wake-up is only a hint, though (trio's rule): SO_ERROR 0 is proven a
   success by ``getpeername()``; ENOTCONN there means "still connecting",
   and we wait on.
4. On failure the next address is tried (``localhost`` may be ``::1`` first
   while the server listens on 127.0.0.1 only); the timeout, if any, covers
   every attempt together.

A Unix socket path (a str, bytes or PathLike address) takes the same road
with one address and no handshake: the kernel answers ``connect`` at once,
connected, or ECONNREFUSED/ENOENT. One case differs: a listener whose backlog
is full makes a non-blocking Unix connect fail with EAGAIN instead of waiting
(TCP would keep retrying its SYN), and the socket is not left connecting, so
its writability means nothing. We try again on a timer, as a blocking
connect would wait; the timeout, if any, bounds it.

What it never does: raise a connection failure at the caller. The outcome
always arrives on the loop, exactly once: ``connection_made(transport)``, or
``connection_lost(exc)`` with the OSError (a ``socket.gaierror`` when the name
does not resolve, ``TimeoutError`` when the timeout elapses,
``ConnectionAbortedError`` when the reactor is closed first), and no socket is
left open behind it. Only a misuse (a factory that is not callable, an address
that is neither a pair nor a path, a closed reactor) raises at once.

Pinned by tests/test_client.py.
"""
from __future__ import annotations

import errno
import logging
import os
import socket
from typing import Any, Callable, List, Optional, Tuple, TypeVar, Union, cast

from .errors import PROPAGATE
from .reactor import Reactor, positive_seconds
from .sockets import (IPAddress, UnixAddress, address_family, check_handler_factory,
                      check_reactor_open, is_unix_address, set_nodelay, split_host_port, unix_path)
from .tls import DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_SHUTDOWN_TIMEOUT, tls_settings
from .transport import TCPTransport
from .udp import DatagramTransport

__all__ = ["connect", "connect_socket", "open_datagram"]

logger = logging.getLogger("netmux")

# How long a Unix connect waits before trying a full backlog again.
_UNIX_RETRY_DELAY = 0.02

#: The handler a client front door makes and returns, typed as its factory makes it.
_Handler = TypeVar("_Handler")


def connect(address: Union[IPAddress, UnixAddress], handler_factory: Callable[[], _Handler], *,
            reactor: Reactor, timeout: Optional[float] = None, ssl: Any = None,
            server_hostname: Optional[str] = None,
            ssl_handshake_timeout: Optional[float] = DEFAULT_HANDSHAKE_TIMEOUT,
            ssl_shutdown_timeout: Optional[float] = DEFAULT_SHUTDOWN_TIMEOUT) -> _Handler:
    """Start a connection to ``address`` on ``reactor``; return the handler.

    ``address`` is ``(host, port)`` for TCP (or an IPv6 ``(host, port,
    flowinfo, scope_id)``, kept whole), or a str, bytes or PathLike for a Unix
    socket path.

    The handler is made at once with ``handler_factory()``; it hears
    ``connection_made(transport)`` once the connection is up, or
    ``connection_lost(exc)`` if it cannot be made: the OSError of the last
    attempt (ConnectionRefusedError for a closed port or a socket file nobody
    listens on, FileNotFoundError for a missing path, ``socket.gaierror`` for
    a name that does not resolve), or ``TimeoutError`` once ``timeout`` seconds
    have passed. Either call comes from the reactor loop, never from inside
    ``connect()``, and exactly one of them comes.

    Resolving a host name blocks the calling thread (``getaddrinfo``); an IP
    literal such as ``"127.0.0.1"`` or ``"::1"`` does not. ``timeout`` starts
    once the name is resolved and covers every address tried.

    ``ssl``: an ``ssl.SSLContext`` (or True: ``ssl.create_default_context()``)
    to speak TLS over the connection (``netmux.tls``); ``connection_made`` then
    comes once the handshake is done, and a failed handshake (a certificate
    that does not verify, a wrong host name) is ``connection_lost(exc)`` with
    the ``ssl.SSLError``. ``server_hostname`` is checked against the
    certificate and sent as SNI; by default the host of ``address``.
    ``ssl_handshake_timeout``/``ssl_shutdown_timeout``: as TCPServer's.

    Raises TypeError for a factory that is not callable or an address that is
    neither a pair nor a path (or an ``ssl`` that is not a context), ValueError for a timeout that is not positive
    (NaN included; inf means none) or an empty path, RuntimeError on a closed
    reactor (before anything is made or opened); the factory's own exception
    propagates.
    """
    check_handler_factory(handler_factory)
    connector: _Connector
    if is_unix_address(address):
        connector = _UnixConnector(reactor, unix_path(address), timeout)
    else:
        host, port = split_host_port(address)
        connector = _Connector(reactor, host, port, timeout)
        connector.ipv6_extra = tuple(cast(IPAddress, address)[2:4])
        server_hostname = host if server_hostname is None else server_hostname
    positive_seconds("timeout", timeout)
    tls = tls_settings(ssl, ssl_handshake_timeout, ssl_shutdown_timeout, server_side=False)
    check_reactor_open(reactor)
    handler = connector.handler = handler_factory()
    if tls is not None:       # the TLS layer between the socket and the handler
        connector.handler = tls.wrap(handler, server_hostname)
    connector._begin()
    return handler


class _Connector:
    """One pending TCP connect: tries each resolved address in turn, then hands over."""

    def __init__(self, reactor: Reactor, host: Any, port: Any, timeout: Optional[float]) -> None:
        self.reactor = reactor
        self.handler: Any = None          # set by connect() once the arguments are checked
        self.host = host
        self.port = port
        self.timeout = timeout
        self._addresses: List[Any] = []   # getaddrinfo() entries
        self._retry_timer: Any = None     # armed while a Unix backlog is full
        self._errors: List[OSError] = []
        self._sock: Optional[socket.socket] = None
        self._timer: Any = None
        self._done = False
        # An IPv6 address's (flowinfo, scope_id) as the caller gave them:
        # getaddrinfo() drops them, and a link-local address (what getsockname()
        # returns) cannot be reached without its scope (EINVAL). As asyncio.
        self.ipv6_extra: Tuple[int, ...] = ()

    def __repr__(self) -> str:
        return f"<connect to {self._target()}>"

    def _target(self) -> str:
        """The address for messages."""
        return f"{self.host}:{self.port}"

    def _resolve(self) -> List[Any]:
        """getaddrinfo() entries to try in turn (this call may block on DNS)."""
        return socket.getaddrinfo(self.host, self.port, socket.AF_UNSPEC,
                                  socket.SOCK_STREAM, socket.IPPROTO_TCP)

    def _begin(self) -> None:
        try:
            self._addresses = self._resolve()
        except OSError as exc:             # socket.gaierror: the name does not resolve
            self._fail(exc)
            return
        if self.timeout is not None:
            self._timer = self.reactor.call_later(self.timeout, self._timed_out)
        self._try_next()

    def _try_next(self) -> None:
        """Start connecting to the next address; fail once none is left."""
        while self._addresses:
            family, type_, proto, _, sockaddr = self._addresses.pop(0)
            if family == socket.AF_INET6 and self.ipv6_extra:
                flowinfo, scope_id = (self.ipv6_extra + (0,))[:2]
                # A scope given in the host ("fe80::1%eth0") wins over a zero one.
                sockaddr = sockaddr[:2] + (flowinfo or sockaddr[2], scope_id or sockaddr[3])
            sock = None
            try:
                sock = socket.socket(family, type_, proto)
                sock.setblocking(False)
                code = sock.connect_ex(sockaddr)
            except OSError as exc:          # EMFILE, an address family the host lacks, ...
                if sock is not None:
                    sock.close()
                self._errors.append(exc)
                continue
            if code == errno.EAGAIN and family == socket.AF_UNIX:
                sock.close()
                self._retry_later((family, type_, proto, "", sockaddr))
                return
            if code in (0, errno.EINPROGRESS):
                self._sock = sock
                self.reactor.track_in_flight(sock.fileno(), self._abandon)
                # Writable means the handshake is over; on loopback it may
                # already be (code 0), and the selector reports that too.
                self.reactor.add_writer(sock, self._connect_ready)
                return
            sock.close()
            self._errors.append(OSError(code, f"connect to {sockaddr!r}: {os.strerror(code)}"))
        self._fail(self._combined_error())

    def _connect_ready(self) -> None:
        sock = self._sock
        if sock is None:
            return          # a wake-up after the attempt ended (timed out meanwhile)
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        try:
            if code:
                # OSError(code, ...) builds the matching subclass: ConnectionRefusedError, ...
                raise OSError(code, f"connect to {self._target()}: {os.strerror(code)}")
            peername = sock.getpeername()
        except OSError as exc:
            if exc.errno == errno.ENOTCONN:
                # No error and no peer: the handshake is still going on and this
                # wake-up was spurious. A reset meanwhile would have set SO_ERROR,
                # which the next wake-up reads.
                return
            self._let_go(sock).close()
            self._errors.append(exc)
            self._try_next()
            return
        self._let_go(sock)
        self._succeed(sock, peername)

    def _succeed(self, sock: socket.socket, peername: Any) -> None:
        self._done = True
        self._sock = None
        if self._timer is not None:
            self._timer.cancel()
        set_nodelay(sock)
        transport = TCPTransport(self.reactor, sock, self.handler, peername=peername)
        transport.start()

    def _retry_later(self, address_info: Any) -> None:
        """A Unix listener's backlog is full (see the top of this module): try
        the same path again shortly."""
        self._addresses.insert(0, address_info)
        self._retry_timer = self.reactor.call_later(_UNIX_RETRY_DELAY, self._retry)
        self.reactor.track_in_flight(self, self._abandon)    # no socket is in flight meanwhile

    def _retry(self) -> None:
        self._retry_timer = None
        self.reactor.forget_in_flight(self)
        self._try_next()

    def _stop_trying(self) -> None:
        """Close the attempt in flight and forget the addresses left."""
        if self._sock is not None:
            self._let_go(self._sock).close()
        if self._retry_timer is not None:
            self._retry_timer.cancel()
            self._retry_timer = None
            self.reactor.forget_in_flight(self)
        self._addresses = []

    def _timed_out(self) -> None:
        self._timer = None
        if self._done:
            return
        self._stop_trying()
        self._fail(TimeoutError(f"connect to {self._target()} timed out after {self.timeout} s"))

    def _let_go(self, sock: socket.socket) -> socket.socket:
        """Stop watching the attempt's socket; the caller closes it or hands it on."""
        self.reactor.forget_in_flight(sock.fileno())
        self.reactor.remove_writer(sock)
        self._sock = None
        return sock

    def _abandon(self) -> None:
        """The reactor is closing with this connect in flight: close its socket and
        tell the handler at once, since no loop turn will come."""
        self._stop_trying()
        self._fail(ConnectionAbortedError(f"connect to {self._target()}: the reactor was closed"),
                   now=True)

    def _combined_error(self) -> OSError:
        """The one error, or the first when all agree, else one naming them all (as asyncio)."""
        errors = self._errors
        if not errors:
            return OSError(f"getaddrinfo returned no address for {self.host!r}")
        if len({str(error) for error in errors}) == 1 or len({error.errno for error in errors}) == 1:
            return errors[0]
        return OSError(f"connect to {self._target()} failed: "
                       + "; ".join(str(error) for error in errors))

    def _fail(self, exc: Exception, now: bool = False) -> None:
        """Report ``exc`` exactly once: on a later turn of the loop, or ``now`` when
        the reactor is closing and no turn will come."""
        if self._done:
            return
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if now:
            self._call_connection_lost(exc)
        else:
            self.reactor.call_soon(self._call_connection_lost, exc)
            # Delivered by Reactor.close() if the reactor closes before its turn.
            self.reactor.track_in_flight(self, lambda: self._call_connection_lost(exc))

    def _call_connection_lost(self, exc: Exception) -> None:
        self.reactor.forget_in_flight(self)
        logger.debug("%r failed: %s", self, exc)
        try:
            self.handler.connection_lost(exc)
        except PROPAGATE:
            raise
        except BaseException:
            logger.exception("%r: handler connection_lost() raised", self)


class _UnixConnector(_Connector):
    """One pending Unix connect: a path resolves to itself, and no handshake
    runs, so the outcome is known at the first try (or EAGAIN: try again)."""

    def __init__(self, reactor: Reactor, path: Any, timeout: Optional[float]) -> None:
        super().__init__(reactor, None, None, timeout)
        self.path = path

    def _target(self) -> str:
        return repr(self.path)

    def _resolve(self) -> List[Any]:
        return [(socket.AF_UNIX, socket.SOCK_STREAM, 0, "", self.path)]


def connect_socket(sock: socket.socket, handler_factory: Callable[[], _Handler], *,
                   reactor: Reactor) -> _Handler:
    """Drive a stream socket that is already connected (a ``socketpair()`` end, a
    socket inherited or accepted elsewhere) with a handler on ``reactor``.

    asyncio's ``connect_accepted_socket``: the socket is made non-blocking, the
    handler is made and hears ``connection_made`` before this returns, and from
    then on it is the same ``TCPTransport`` as any other connection. Returns
    the handler. A failing factory raises here, with the socket left open and
    untouched by the reactor, since the caller still owns it.
    """
    check_handler_factory(handler_factory)
    check_reactor_open(reactor)
    handler = handler_factory()
    sock.setblocking(False)
    set_nodelay(sock)
    TCPTransport(reactor, sock, handler).start()
    return handler


def open_datagram(remote_address: Optional[IPAddress], handler_factory: Callable[[], _Handler], *,
                  reactor: Reactor, local_address: Optional[IPAddress] = None,
                  reuse_port: bool = False) -> _Handler:
    """Open a UDP endpoint on ``reactor``; return its handler, already connected to its transport.

    * ``remote_address`` given: the socket is *connected* to it. The handler
      sends with ``transport.sendto(data)``, hears only that peer, and hears
      ``error_received(ConnectionRefusedError)`` when nothing listens there
      (the kernel turns the ICMP "port unreachable" into that). The endpoint
      stays open after such an error.
    * ``remote_address`` None: an unconnected socket; ``sendto(data, addr)``
      to anyone. It is bound to ``local_address`` if given, else the kernel
      picks an IPv4 port on the first send.

    ``local_address`` binds the socket first (its host sets the family);
    ``reuse_port`` sets SO_REUSEPORT before binding. All of
    this happens before the call returns, so unlike ``connect()`` it raises
    OSError itself (an address in use, a name that does not resolve), and
    ``connection_made`` has run on return. ``connection_lost`` follows
    ``transport.close()`` or ``abort()`` on a later turn. Resolving a host name
    blocks (``getaddrinfo``); an IP literal does not.
    """
    check_handler_factory(handler_factory)
    check_reactor_open(reactor)
    family: int = socket.AF_INET
    if local_address is not None:
        family = address_family(split_host_port(local_address)[0])
    target = None
    if remote_address is not None:
        host, port = split_host_port(remote_address)
        infos = socket.getaddrinfo(host, port, family if local_address is not None else socket.AF_UNSPEC,
                                   socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        family, target = infos[0][0], infos[0][4]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setblocking(False)
        if local_address is not None:
            sock.bind(local_address)
        if target is not None:
            sock.connect(target)        # no handshake: this only fixes the peer
            target = sock.getpeername()
        handler = handler_factory()
    except BaseException:
        sock.close()
        raise
    transport = DatagramTransport(reactor, sock, handler, remote_address=target)
    transport.start()
    return handler
