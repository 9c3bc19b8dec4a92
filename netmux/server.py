"""Servers: the front doors that wire a listening socket to transports and handlers.

Where it sits: beside the transports, on top of the reactor. A stream server
owns the listening socket and the set of open connections; for each accepted
socket it makes a handler with the user's factory and a ``TCPTransport`` to
drive it. Its shape is socketserver's (``serve_forever``, ``shutdown``,
``server_close``, a context manager), so a blocking server moves over with few
edits.

Three classes, one job each: ``ServerLifecycle`` (serving and stopping, shared
with ``UDPServer``), ``_StreamServer`` (accepting, limits, closing), and the
two front doors that differ only in how they listen: ``TCPServer`` on a port,
``UnixServer`` on a socket file. Binding itself, and a socket file's life,
are ``sockets.py``'s.

What it never does: read or write a connection's bytes (the transport does),
or install signal handlers (the command line does that).
Pinned by tests/test_server.py and tests/test_unix.py.
"""
from __future__ import annotations

import errno
import logging
import socket
import threading
from typing import Any, Callable, List, Optional, Set, TypeVar

from .errors import PROPAGATE
from .reactor import Reactor, Timer, positive_seconds
from .sockets import (IPAddress, UnixAddress, UnixPath, UnixSocketFile, bound_address,
                      check_handler_factory, check_reactor_open, listen_tcp, listen_unix,
                      set_nodelay, unix_path)
from .tls import DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_SHUTDOWN_TIMEOUT, TLSSettings, check_context, tls_settings
from .transport import TCPTransport

__all__ = ["TCPServer", "UnixServer"]

logger = logging.getLogger("netmux")

# accept() errors that mean "out of descriptors or kernel memory": the pending
# connection stays in the backlog, so the listening socket stays readable and a
# naive loop would spin at 100 % CPU. We stop watching it and retry later.
_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 1.0


_Server = TypeVar("_Server", bound="ServerLifecycle")


class ServerLifecycle:
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
            if self._serving_thread is not None:
                # Refused before touching anything: the running call's state is
                # what shutdown() relies on.
                raise RuntimeError("serve_forever() is already running")
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


class _StreamServer(ServerLifecycle):
    """What every stream server does once it listens: accepting (in batches,
    backing off when out of descriptors), the set of open connections,
    ``max_connections``, ``idle_timeout``, and closing them all.

    A subclass says only how it listens: ``_listen()`` binds
    ``self.server_address`` (socketserver's ``server_bind``), may replace it
    with the address actually bound, and returns the listening socket.
    """

    def __init__(self, server_address: Any, handler_factory: Callable[[], Any], *,
                 reactor: Optional[Reactor], backlog: int,
                 max_connections: Optional[int], idle_timeout: Optional[float],
                 tls: Optional[TLSSettings] = None) -> None:
        check_handler_factory(handler_factory)
        check_reactor_open(reactor)
        if max_connections is not None and not max_connections >= 1:    # NaN too
            raise ValueError("max_connections must be at least 1")
        positive_seconds("idle_timeout", idle_timeout)     # NaN too; inf: never
        self.handler_factory = handler_factory
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.server_address = server_address
        self._backlog = backlog
        self._tls = tls
        #: What wraps each connection's handler, top first: each takes the handler
        #: (or layer) above and returns the layer below it. TLS is the first; a
        #: layer that must see the bytes before TLS (a PROXY header) goes after it.
        self.layer_factories: List[Callable[[Any], Any]] = [self._tls_layer] if tls else []
        self.socket = self._listen()
        self._connections: Set[TCPTransport] = set()
        self._accepting = False
        self._backoff: Optional[float] = None   # seconds, while out of descriptors
        self._backoff_timer: Optional[Timer] = None
        self._init_lifecycle(reactor)
        self._update_accepting()

    def _listen(self) -> socket.socket:  # pragma: no cover - every server defines it
        raise NotImplementedError

    def fileno(self) -> int:
        """The listening socket's descriptor, as socketserver offers it."""
        return self.socket.fileno()

    # ------------------------------------------------------------------
    # Accepting
    # ------------------------------------------------------------------
    def _update_accepting(self) -> None:
        """Watch the listening socket exactly when a new connection may be taken."""
        want = (not self._closed and self._backoff_timer is None and not self.reactor.is_closed()
                and (self.max_connections is None or len(self._connections) < self.max_connections))
        if want != self._accepting:
            self._accepting = want
            if want:
                self.reactor.add_reader(self.socket, self._accept_ready)
            else:
                self.reactor.remove_reader(self.socket)

    def _accept_ready(self) -> None:
        # Accept in a batch: under a connection storm one readiness event
        # drains up to a backlog's worth, instead of one per loop turn; and at
        # least one, since listen(0) is valid (Linux still queues one).
        for _ in range(max(self._backlog, 1)):
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
            set_nodelay(conn)
            handler = self._layered(self.handler_factory())
        except PROPAGATE:
            conn.close()
            raise
        except BaseException:
            logger.exception("handler factory %r failed; dropping connection from %r",
                             self.handler_factory, address)
            conn.close()
            return
        transport = TCPTransport(self.reactor, conn, handler, peername=address,
                                 idle_timeout=self.idle_timeout, on_lost=self._connection_lost,
                                 server=self)
        self._connections.add(transport)
        self._update_accepting()
        transport.start()

    def _layered(self, handler: Any) -> Any:
        """``handler`` wrapped in ``layer_factories``, top first: what the transport drives."""
        for make_layer in self.layer_factories:
            handler = make_layer(handler)
        return handler

    def _tls_layer(self, handler: Any) -> Any:
        assert self._tls is not None
        return self._tls.wrap(handler)         # the context as it is now: reload_tls()

    def reload_tls(self, context: Any) -> None:
        """New connections use ``context`` (a renewed certificate); open ones keep
        theirs. Thread-safe (one assignment), so a signal handler may call it.
        TypeError for anything but an ``ssl.SSLContext``, RuntimeError on a
        server built without ``ssl=``."""
        if self._tls is None:
            raise RuntimeError("reload_tls() on a server built without ssl=")
        self._tls.context = check_context(context)

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
        # Also when the reactor was closed under us: the connections are still
        # ours to close (a transport closes without a loop, see _force_close).
        if self._backoff_timer is not None:
            self._backoff_timer.cancel()
            self._backoff_timer = None
        self._update_accepting()
        for transport in list(self._connections):
            transport.close_now()
        self._close_listening_socket()
        self._close_owned_reactor()

    def _close_listening_socket(self) -> None:
        self.socket.close()

    @property
    def connections(self) -> int:
        """How many connections are open now."""
        return len(self._connections)


class TCPServer(_StreamServer):
    """A TCP server: one handler per connection, all on one reactor.

    Binds and listens in the constructor (SO_REUSEADDR on); ``("::1", 0)`` is
    IPv6. ``handler_factory`` is any zero-argument callable returning a handler.

    ``ssl``: an ``ssl.SSLContext`` to speak TLS (``netmux.tls``: the handshake
    runs on the reactor, the handler hears ``connection_made`` once it is done);
    ``ssl_handshake_timeout`` and ``ssl_shutdown_timeout`` are seconds (None:
    never); ``ssl_tolerate_ragged_eof`` takes a TCP EOF without close_notify as
    the peer's EOF instead of an error. ``reload_tls()`` swaps the context.
    """

    server_address: IPAddress

    def __init__(self, server_address: IPAddress, handler_factory: Callable[[], Any], *,
                 reactor: Optional[Reactor] = None, backlog: int = 128, reuse_port: bool = False,
                 max_connections: Optional[int] = None, idle_timeout: Optional[float] = None,
                 ssl: Any = None, ssl_handshake_timeout: Optional[float] = DEFAULT_HANDSHAKE_TIMEOUT,
                 ssl_shutdown_timeout: Optional[float] = DEFAULT_SHUTDOWN_TIMEOUT,
                 ssl_tolerate_ragged_eof: bool = False) -> None:
        self.reuse_port = reuse_port
        tls = tls_settings(ssl, ssl_handshake_timeout, ssl_shutdown_timeout, ssl_tolerate_ragged_eof)
        super().__init__(server_address, handler_factory, reactor=reactor, backlog=backlog,
                         max_connections=max_connections, idle_timeout=idle_timeout, tls=tls)

    def _listen(self) -> socket.socket:
        sock = listen_tcp(self.server_address, self._backlog, reuse_port=self.reuse_port)
        self.server_address = bound_address(sock)      # the port resolved when 0 was asked
        return sock


class UnixServer(_StreamServer):
    """A Unix domain stream server: TCPServer's lifecycle, limits and idle
    timeout, on a socket file instead of a port.

    ``path`` is a str, bytes or PathLike (``server_address`` is it as a str or
    bytes); a leading NUL names Linux's abstract namespace (no file). A socket
    file left by a dead server is replaced; a live server's is OSError
    (EADDRINUSE), and so is a path that exists but is not a socket, which is
    left alone. ``server_close()`` removes the file, if it is still the one
    this server created. Connections use the same ``TCPTransport`` (minus
    TCP_NODELAY); their ``peername`` is what the kernel gives, usually ``''``.
    ``ssl`` and its companions as TCPServer's.
    """

    server_address: UnixPath

    def __init__(self, path: UnixAddress, handler_factory: Callable[[], Any], *,
                 reactor: Optional[Reactor] = None, backlog: int = 128,
                 max_connections: Optional[int] = None, idle_timeout: Optional[float] = None,
                 ssl: Any = None, ssl_handshake_timeout: Optional[float] = DEFAULT_HANDSHAKE_TIMEOUT,
                 ssl_shutdown_timeout: Optional[float] = DEFAULT_SHUTDOWN_TIMEOUT,
                 ssl_tolerate_ragged_eof: bool = False) -> None:
        self._socket_file: Optional[UnixSocketFile] = None
        tls = tls_settings(ssl, ssl_handshake_timeout, ssl_shutdown_timeout, ssl_tolerate_ragged_eof)
        super().__init__(unix_path(path), handler_factory, reactor=reactor, backlog=backlog,
                         max_connections=max_connections, idle_timeout=idle_timeout, tls=tls)

    def _listen(self) -> socket.socket:
        sock, self._socket_file = listen_unix(self.server_address, self._backlog)
        return sock

    def _close_listening_socket(self) -> None:
        # The file first: while our socket is open, no other server can find
        # the file stale and take the path, and its inode cannot be reused.
        if self._socket_file is not None:
            self._socket_file.remove()
        super()._close_listening_socket()
