"""UDP: the datagram transport and the UDP server, on the same reactor as TCP.

Where it sits: beside ``transport.py`` and ``server.py``, doing for datagrams
what they do for streams. ``DatagramTransport`` drives one UDP socket for one
``DatagramHandler`` (asyncio's DatagramProtocol names); ``UDPServer`` binds it
with socketserver's shape. ``netmux.open_datagram`` (client.py) makes the
client side.

A UDP socket is one endpoint shared by every peer that talks to it, so the
rules differ from a stream's in three places:

* **No stream, no partial sends.** ``recvfrom`` returns one whole datagram
  and ``sendto`` sends one whole datagram or nothing. The write side is a
  queue of ``(datagram, address)`` pairs, not a byte buffer.
* **Errors belong to a peer, not to the socket.** An ICMP "port
  unreachable" comes back as ECONNREFUSED from the next ``recv``/``send`` on
  a connected socket; a datagram too big for the route is EMSGSIZE. They go
  to ``handler.error_received(exc)`` and the endpoint stays open.
* **A handler's exception costs one datagram, not the endpoint.** Aborting
  a TCP connection ends one conversation; closing a UDP server's socket would
  end all of them because of one malformed datagram. So an exception from
  ``datagram_received``, ``error_received``, ``pause_writing`` or
  ``resume_writing`` is logged once (ERROR, with traceback) and the endpoint
  goes on. Only ``connection_made`` failing aborts it: the handler never got
  ready, so nothing it would do afterwards can be trusted. SystemExit and
  KeyboardInterrupt propagate (``reactor.PROPAGATE``), leaving the endpoint
  as it was (or aborted, from ``connection_made``).
* **A bad address is refused at once**, queue or no queue: ``sendto`` checks
  it as the kernel's path would (TypeError, OverflowError), so a datagram that
  can never go is not queued. One that still fails in the flush is dropped and
  reported to ``error_received``, never retried forever.

Pinned by tests/test_udp.py.
"""
from __future__ import annotations

import errno
import logging
import socket
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Deque, Optional, Tuple

from .errors import PROPAGATE
from .reactor import Reactor
from .server import ServerLifecycle
from .sockets import IPAddress, bound_address, bound_socket, check_handler_factory, check_reactor_open
from .transport import byte_view, SocketTransport

if TYPE_CHECKING:
    from .framing import BytesLike

__all__ = ["DatagramTransport", "UDPServer"]

logger = logging.getLogger("netmux")

# sendto() errors that mean "not now", not "never": keep the datagram queued.
# EAGAIN: the socket's send buffer is full (BlockingIOError). ENOBUFS: the
# device queue is full although the socket buffer is not, so the socket still
# selects writable; waiting for writability would spin, so we retry on a timer.
_ENOBUFS_RETRY_DELAY = 0.01


def _check_address(family: Any, addr: Any) -> None:
    """Raise what ``socket.sendto`` raises for a malformed IP address (TypeError,
    OverflowError), without sending: ``(host, port)``, or up to ``(host, port,
    flowinfo, scope_id)`` for IPv6. A host name is left to the kernel's path
    (resolving it would block here); other families are not checked."""
    if family == socket.AF_INET:
        longest, kind = 2, "(host, port)"
    elif family == socket.AF_INET6:
        longest, kind = 4, "(host, port[, flowinfo, scope_id])"
    else:
        return
    if not isinstance(addr, tuple) or not 2 <= len(addr) <= longest:
        raise TypeError(f"{family.name} address must be a {kind} tuple, not {addr!r}")
    host = addr[0]
    if not isinstance(host, (str, bytes, bytearray)):
        raise TypeError(f"host must be str, bytes or bytearray, not {type(host).__name__}")
    for name, value, top in zip(("port", "flowinfo", "scope_id"), addr[1:], (0xFFFF, 0xFFFFF, 0xFFFFFFFF)):
        if not isinstance(value, int):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
        if not 0 <= value <= top:
            raise OverflowError(f"{name} must be 0-{top}, not {value}")


class DatagramTransport(SocketTransport):
    """A UDP socket driven by a reactor, delivering every datagram to one handler.

    Built by ``UDPServer`` and ``open_datagram()``; user code gets it in
    ``handler.connection_made(transport)``. ``remote_address`` is the peer of a
    connected socket (``sendto(data)`` then needs no address), None otherwise.
    """

    #: Bytes per ``recvfrom``: the largest UDP payload is 65,507 bytes over IPv4
    #: and 65,527 over IPv6, so every datagram arrives whole, never truncated.
    max_datagram_size = 65535

    #: Datagrams read per readiness event at most, so one flooded socket cannot
    #: starve the rest of the loop.
    max_reads_per_event = 32

    def __init__(self, reactor: Reactor, sock: socket.socket, handler: Any, *,
                 remote_address: Any = None,
                 on_lost: Optional[Callable[["DatagramTransport"], None]] = None) -> None:
        super().__init__(reactor, sock, handler, remote_address, on_lost)
        self._remote_address = remote_address
        self._queue: Deque[Tuple[bytes, Any]] = deque()
        self._queue_size = 0               # bytes in _queue
        self._writer_registered = False
        self._retry_timer: Any = None      # armed after ENOBUFS
        self._family = getattr(sock, "family", None)

    # ------------------------------------------------------------------
    # Start-up
    # ------------------------------------------------------------------
    def start(self) -> None:
        """Tell the handler ``connection_made``, then start reading: called once,
        by the front door that made the transport."""
        try:
            self._handler.connection_made(self)
        except BaseException as exc:
            if isinstance(exc, PROPAGATE):
                self._force_close(exc)
                raise
            logger.error("%r: handler connection_made() raised; closing this endpoint",
                         self, exc_info=exc)
            self._force_close(exc)
            return
        self._update_reader()

    # ------------------------------------------------------------------
    # Reading: readable -> recvfrom, datagram by datagram -> handler
    # ------------------------------------------------------------------
    def _read_ready(self) -> None:
        buffer = self.reactor.read_buffer[:self.max_datagram_size]    # the reactor's, shared
        for _ in range(self.max_reads_per_event):
            if not self._registered_reader:
                return      # the handler paused or closed us meanwhile
            try:
                size, address = self._sock.recvfrom_into(buffer)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # A pending ICMP error, reported once and then cleared by the
                # kernel: it concerns one peer, the socket goes on.
                self._call_handler("error_received", exc)
                continue
            self._call_handler("datagram_received", buffer[:size].tobytes(), address)   # one copy

    # ------------------------------------------------------------------
    # Writing: send at once, queue on EAGAIN/ENOBUFS, flush in order
    # ------------------------------------------------------------------
    def sendto(self, data: BytesLike, addr: Any = None) -> None:
        """Send ``data`` (bytes-like, possibly empty) as one datagram to ``addr``.

        On a connected socket ``addr`` may be None (or the remote address
        itself). Datagrams go out in the order given; when the kernel cannot
        take one now it is queued. An error the kernel reports for this datagram
        (ECONNREFUSED, EMSGSIZE, ...) goes to ``handler.error_received``.

        Raises TypeError for anything not bytes-like, ValueError for a missing
        or foreign address, TypeError or OverflowError for a malformed one (also
        while datagrams are queued), ConnectionError once the transport is closing.
        """
        if data.__class__ is not bytes:
            data = bytes(byte_view(data))  # copies: it may wait in the queue
        if self._remote_address is not None:
            if addr is not None and tuple(addr)[:2] != tuple(self._remote_address)[:2]:
                raise ValueError(f"this socket is connected to {self._remote_address!r}, "
                                 f"cannot send to {addr!r}")
            addr = None
        elif addr is None:
            raise ValueError("sendto() needs an address on an unconnected socket")
        else:
            _check_address(self._family, addr)
        if self._closing:
            raise ConnectionError(f"sendto() on a closed or closing transport: {self!r}")
        if not self._queue:
            try:
                self._send(data, addr)
                return
            except (BlockingIOError, InterruptedError):
                self._set_writer(True)
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    self._call_handler("error_received", exc)
                    return
                self._retry_later()
        self._queue.append((data, addr))
        self._queue_size += len(data)
        self._follow_water_marks(self._queue_size)

    def _send(self, data: bytes, addr: Any) -> None:
        if addr is None:
            self._sock.send(data)
        else:
            self._sock.sendto(data, addr)

    def _write_ready(self) -> None:
        queue = self._queue
        while queue and not self._lost:
            data, addr = queue[0]
            try:
                self._send(data, addr)
            except (BlockingIOError, InterruptedError):
                return      # still full: the selector will call again
            except (OSError, TypeError, ValueError, OverflowError) as exc:
                if isinstance(exc, OSError) and exc.errno == errno.ENOBUFS:
                    self._set_writer(False)
                    self._retry_later()
                    return
                # This datagram is lost, never retried: it would fail forever.
                queue.popleft()
                self._queue_size -= len(data)
                if not isinstance(exc, OSError):    # an address the check let through
                    error = OSError(errno.EINVAL, f"sendto {addr!r}: {exc}")
                    error.__cause__ = exc
                    exc = error
                self._call_handler("error_received", exc)
            else:
                queue.popleft()
                self._queue_size -= len(data)
            self._follow_water_marks(self._queue_size)
        if queue or self._lost:
            return
        self._set_writer(False)
        if self._closing:
            self._force_close(None)

    def _set_writer(self, want: bool) -> None:
        """Watch for writability exactly while datagrams are queued."""
        if want != self._writer_registered:
            self._writer_registered = want
            if want:
                self.reactor.add_writer(self._fileno, self._write_ready)
            else:
                self.reactor.remove_writer(self._fileno)

    def _retry_later(self) -> None:
        if self._retry_timer is None:
            self._retry_timer = self.reactor.call_later(_ENOBUFS_RETRY_DELAY, self._retry)

    def _retry(self) -> None:
        self._retry_timer = None
        if self._queue and not self._lost:
            self._set_writer(True)

    def get_write_buffer_size(self) -> int:
        """Bytes of datagrams queued, not yet handed to the kernel."""
        return self._queue_size

    # ------------------------------------------------------------------
    # Handler calls: errors.py's rule, the endpoint goes on
    # ------------------------------------------------------------------
    def _call_handler(self, method: str, *args: Any) -> None:
        try:
            getattr(self._handler, method)(*args)
        except BaseException as exc:
            self._handler_failed(exc, method)

    def _handler_failed(self, exc: BaseException, method: str) -> None:
        """One place where a handler's exception is logged, once; the endpoint goes on."""
        if isinstance(exc, PROPAGATE):
            raise exc
        logger.error("%r: handler %s() raised; endpoint stays open", self, method, exc_info=exc)

    # ------------------------------------------------------------------
    # Closing
    # ------------------------------------------------------------------
    def _drop_pending(self) -> None:
        self._queue.clear()
        self._queue_size = 0
        self._writer_registered = False
        if self._retry_timer is not None:
            self._retry_timer.cancel()
            self._retry_timer = None


class UDPServer(ServerLifecycle):
    """A UDP server: one socket, one handler for every peer, on a reactor.

    Binds in the constructor; ``("::1", 0)`` is IPv6. ``handler_factory`` is
    called once, here, and the handler's ``connection_made`` runs before the
    constructor returns, so ``srv.handler.transport`` is usable at once (to
    send the first datagram, say). A datagram that makes the handler raise is
    logged and dropped; the server goes on (see ``DatagramTransport``).
    """

    def __init__(self, server_address: IPAddress, handler_factory: Callable[[], Any], *,
                 reactor: Optional[Reactor] = None, reuse_port: bool = False) -> None:
        check_handler_factory(handler_factory)
        check_reactor_open(reactor)
        self.handler_factory = handler_factory
        self.socket = self._bind(server_address, reuse_port)
        self.server_address = bound_address(self.socket)
        self._init_lifecycle(reactor)
        try:
            self.handler = handler_factory()
        except BaseException:
            self.socket.close()
            self._close_owned_reactor()
            raise
        self.transport = DatagramTransport(self.reactor, self.socket, self.handler)
        self.transport.start()

    @staticmethod
    def _bind(address: IPAddress, reuse_port: bool) -> socket.socket:
        # No SO_REUSEADDR, unlike TCP: on a datagram socket it lets a second
        # server bind the same port and silently steal half the traffic.
        # There is no TIME_WAIT to step over, so a restart binds at once.
        return bound_socket(address, socket.SOCK_DGRAM, reuse_address=False, reuse_port=reuse_port)

    def fileno(self) -> int:
        """The socket's descriptor, as socketserver offers it."""
        return self.socket.fileno()

    def server_close(self) -> None:
        """Close the socket, dropping queued datagrams; the handler's
        ``connection_lost`` has run when this returns."""
        self._stop_serving_elsewhere()
        if self._closed:
            return
        self._closed = True
        self.transport.close_now()
        self._close_owned_reactor()
