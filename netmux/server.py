"""Servers: the front doors that wire a listening socket to transports and handlers.

Where it sits: beside the transports, on top of the reactor. ``TCPServer`` owns
the listening socket and the set of open connections; for each accepted
socket it makes a handler with the user's factory and a ``TCPTransport`` to
drive it. Its shape is socketserver's (``serve_forever``, ``shutdown``,
``server_close``, a context manager), so a blocking server moves over with few
edits.

What it never does: read or write a connection's bytes (the transport does),
or install signal handlers (the command line does that).
"""
from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import threading
from typing import Any, Callable, Optional, Set, TypeVar

from .reactor import Reactor, Timer
from .stream import StreamHandler
from .transport import TCPTransport

__all__ = ["TCPServer"]

logger = logging.getLogger("netmux")

# accept() errors that mean "out of descriptors or kernel memory": the pending
# connection stays in the backlog, so the listening socket stays readable and a
# naive loop would spin at 100 % CPU. We stop watching it and retry later.
_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 1.0


def _address_family(host: Any) -> int:
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


def _bound_socket(address: tuple, kind: int, *, reuse_address: bool, reuse_port: bool) -> socket.socket:
    """A non-blocking socket of ``kind`` bound to ``address``, its family chosen by the
    host; closed again if any step fails, so a failed constructor leaks nothing."""
    sock = socket.socket(_address_family(address[0]), kind)
    try:
        if reuse_address:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _bound_address(sock: socket.socket) -> tuple:
    """``(host, port)`` of a bound socket, port resolved. IPv6 gives the same pair
    (flow info and a zero scope dropped) so ``socket.create_connection`` takes it."""
    address = sock.getsockname()
    if sock.family == socket.AF_INET6 and address[3] == 0:
        return address[:2]
    return address


_Server = TypeVar("_Server", bound="_ServerLifecycle")


class _ServerLifecycle:
    """``serve_forever``/``shutdown``/context manager, shared by every server kind.

    ``shutdown()`` is thread-safe and never deadlocks: from another thread it
    stops the reactor through its wake-up socket and waits for
    ``serve_forever()`` to return; from the serving thread itself (a handler) it
    only asks, since waiting there would wait on itself. As in socketserver, a
    shutdown asked for before ``serve_forever()`` starts makes it return at once.
    """

    reactor: Reactor

    def _init_lifecycle(self, reactor: Optional[Reactor]) -> None:
        self._owns_reactor = reactor is None
        self.reactor = Reactor() if reactor is None else reactor
        self._lifecycle_lock = threading.RLock()   # a signal handler may re-enter
        self._serving_thread: Optional[int] = None
        self._shutdown_request = False
        self._stopped = threading.Event()
        self._stopped.set()
        self._closed = False

    def serve_forever(self) -> None:
        """Run the reactor, serving every connection, until ``shutdown()``."""
        with self._lifecycle_lock:
            if self._closed:
                raise RuntimeError("serve_forever() on a closed server")
            if self._shutdown_request:
                self._shutdown_request = False
                return
            self._serving_thread = threading.get_ident()
            self._stopped.clear()
        try:
            while not self._shutdown_request:
                self.reactor.run()
        finally:
            with self._lifecycle_lock:
                self._serving_thread = None
                self._shutdown_request = False
                self._stopped.set()
            if self._closed and self._owns_reactor:
                self.reactor.close()     # server_close() ran inside a handler

    def shutdown(self) -> None:
        """Stop ``serve_forever()``; from another thread, return once it has returned."""
        with self._lifecycle_lock:
            self._shutdown_request = True
            serving = self._serving_thread
            if serving is None:
                return
            self.reactor.stop()
        if serving != threading.get_ident():
            self._stopped.wait()

    def _stop_serving_elsewhere(self) -> None:
        """Before closing, stop ``serve_forever()``: from another thread, wait for it
        to let go; from a handler, ask it to return after this turn."""
        if self._serving_thread is not None:
            self.shutdown()

    def is_closed(self) -> bool:
        """True once ``server_close()`` has begun."""
        return self._closed

    def _close_owned_reactor(self) -> None:
        if self._owns_reactor and not self.reactor.is_running():
            self.reactor.close()

    def __enter__(self: _Server) -> _Server:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.server_close()

    def server_close(self) -> None:  # pragma: no cover - every server defines it
        raise NotImplementedError


class TCPServer(_ServerLifecycle):
    """A TCP server: one handler per connection, all on one reactor.

    Binds and listens in the constructor (SO_REUSEADDR on); ``("::1", 0)`` is
    IPv6. ``handler_factory`` is any zero-argument callable returning a handler.
    """

    def __init__(self, server_address: tuple, handler_factory: Callable[[], Any], *,
                 reactor: Optional[Reactor] = None, backlog: int = 128, reuse_port: bool = False,
                 max_connections: Optional[int] = None, idle_timeout: Optional[float] = None) -> None:
        if not callable(handler_factory):
            raise TypeError(f"handler_factory must be callable, not {type(handler_factory).__name__}")
        if max_connections is not None and max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive")
        self.handler_factory = handler_factory
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self._backlog = backlog
        self.socket = self._listen(server_address, backlog, reuse_port)
        self.server_address = _bound_address(self.socket)
        self._connections: Set[TCPTransport] = set()
        self._accepting = False
        self._backoff: Optional[float] = None   # seconds, while out of descriptors
        self._backoff_timer: Optional[Timer] = None
        self._init_lifecycle(reactor)
        self._update_accepting()

    @staticmethod
    def _listen(address: tuple, backlog: int, reuse_port: bool) -> socket.socket:
        # SO_REUSEADDR: a restarted server binds at once, its predecessor's
        # connections still in TIME_WAIT notwithstanding.
        sock = _bound_socket(address, socket.SOCK_STREAM, reuse_address=True, reuse_port=reuse_port)
        try:
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
        return sock

    def fileno(self) -> int:
        """The listening socket's descriptor, as socketserver offers it."""
        return self.socket.fileno()

    # ------------------------------------------------------------------
    # Accepting
    # ------------------------------------------------------------------
    def _update_accepting(self) -> None:
        """Watch the listening socket exactly when a new connection may be taken."""
        want = (not self._closed and self._backoff_timer is None
                and (self.max_connections is None or len(self._connections) < self.max_connections))
        if want != self._accepting:
            self._accepting = want
            if want:
                self.reactor.add_reader(self.socket, self._accept_ready)
            else:
                self.reactor.remove_reader(self.socket)

    def _accept_ready(self) -> None:
        # Accept in a batch: under a connection storm one readiness event
        # drains up to a backlog's worth, instead of one per loop turn.
        for _ in range(self._backlog):
            try:
                conn, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionAbortedError:
                continue            # the peer gave up while queued
            except OSError as exc:
                if exc.errno not in _RESOURCE_ERRORS:
                    logger.error("accept() failed on %r: %s", self.server_address, exc)
                    break
                self._back_off(exc)
                return
            self._new_connection(conn, address)
            if not self._accepting:
                break               # max_connections reached
        self._backoff = None        # accept works again: the next starvation starts small

    def _back_off(self, exc: OSError) -> None:
        """Out of descriptors: stop watching the socket, retry later (never spin)."""
        self._backoff = _BACKOFF_FIRST if self._backoff is None else min(self._backoff * 2, _BACKOFF_MAX)
        logger.error("accept() failed: %s; %d open; retrying in %.2f s",
                     exc, len(self._connections), self._backoff)
        self._backoff_timer = self.reactor.call_later(self._backoff, self._end_back_off)
        self._update_accepting()

    def _end_back_off(self) -> None:
        self._backoff_timer = None
        self._update_accepting()

    def _new_connection(self, conn: socket.socket, address: Any) -> None:
        try:
            conn.setblocking(False)
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            handler = self.handler_factory()
            if isinstance(handler, StreamHandler):
                handler.server = self          # socketserver's name; is_closed() ends handle()
        except Exception:
            logger.exception("handler factory %r failed; dropping connection from %r",
                             self.handler_factory, address)
            conn.close()
            return
        transport = TCPTransport(self.reactor, conn, handler, peername=address,
                                 idle_timeout=self.idle_timeout, on_lost=self._connection_lost)
        self._connections.add(transport)
        self._update_accepting()
        transport._start()

    def _connection_lost(self, transport: TCPTransport) -> None:
        """A connection counts until its ``connection_lost`` has returned: now."""
        self._connections.discard(transport)
        if self._accepting is False:
            self._update_accepting()

    # ------------------------------------------------------------------
    # Closing
    # ------------------------------------------------------------------
    def server_close(self) -> None:
        """Close the listening socket and every connection. Each connection's
        ``connection_lost`` has run when this returns."""
        self._stop_serving_elsewhere()
        if self._closed:
            return
        self._closed = True
        if not self.reactor.is_closed():
            if self._backoff_timer is not None:
                self._backoff_timer.cancel()
                self._backoff_timer = None
            self._update_accepting()
            for transport in list(self._connections):
                transport._close_now()
                transport._call_connection_lost()
        self.socket.close()
        self._close_owned_reactor()

    @property
    def connections(self) -> int:
        """How many connections are open now."""
        return len(self._connections)
