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

Stopping has two speeds. ``shutdown()`` stops ``serve_forever()`` and leaves
the connections to ``server_close()``. ``shutdown(grace=seconds)`` drains:
it accepts what the kernel has queued already, closes the listening socket
(so new connections are refused, not left in a backlog nobody reads), tells
every connection (``transport.start_drain()``, which reaches the handler's
``drain_started()`` through every layer) so each ends at its next message
boundary, waits for them up to ``grace`` seconds, closes the rest, and then
stops ``serve_forever()``. ``stats()`` counts what went through the server
and adds the reactor's ``health()``: connections and errors are counted as
they come and go, bytes by the transports (``count_bytes``), nothing per byte.

Accepting is two steps so that a storm of connections is not dropped by the
kernel: a readable listening socket is emptied at once into a bounded queue
of accepted sockets (an accept is a few microseconds), and those are set up
(handler, transport, registration: the expensive part) a backlog's worth at
a time, at most two a turn, oldest first. See ``_accept_queued``.

What it never does: read or write a connection's bytes (the transport does),
or install signal handlers (the command line does that).
Pinned by tests/test_server.py and tests/test_unix.py (the drain:
tests/test_drain.py; stats: tests/test_stats.py).
"""
from __future__ import annotations

import errno
import logging
import socket
import threading
import warnings
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Set, Tuple, TypeVar, Union

from .errors import PROPAGATE
from .proxy import DEFAULT_HEADER_TIMEOUT, ProxyProtocolLayer, check_header_timeout
from .reactor import Reactor, Timer, positive_seconds
from .sockets import (IPAddress, UnixAddress, UnixPath, UnixSocketFile, accepted_sockname,
                      adopt_listening_socket, bound_address, check_handler_factory, check_reactor_open, listen_tcp,
                      listen_unix, set_nodelay, unix_path)
from .tls import (DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_SHUTDOWN_TIMEOUT, TLSSettings, check_context,
                  tls_settings)
from .transport import TCPTransport

__all__ = ["TCPServer", "UnixServer"]

logger = logging.getLogger("netmux")

# accept() errors that mean "out of descriptors or kernel memory": the pending
# connection stays in the backlog, so the listening socket stays readable and a
# naive loop would spin at 100 % CPU. We stop watching it and retry later.
_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# Accepting (see _StreamServer._accept_queued): accepted sockets waiting to be
# set up, at most this many backlogs; the queue is emptied again after this
# many set-ups.
_PENDING_BACKLOGS = 16
_SET_UP_BETWEEN_ACCEPTS = 64
_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 1.0


# socketserver's per-connection thread settings, which a port may carry over to a
# netmux server subclass: there is no such thread here, so they would do nothing
# in silence. Defining one warns instead (docs/from-socketserver.md says the same).
_THREAD_SETTINGS = {
    "daemon_threads": "netmux starts no thread per connection: there is none to make a daemon",
    "block_on_close": "netmux starts no thread per connection: server_close() closes "
                      "every connection before it returns",
}

_Server = TypeVar("_Server", bound="ServerLifecycle")


def _accepter(listener: Any) -> Callable[[], Tuple[socket.socket, Any]]:
    """``listener.accept``, for a plain socket as the standard library does it
    minus what it asks again for every connection: the listener's family and
    type, each an enum conversion (a microsecond of a connection's five)."""
    accept_fd = getattr(listener, "_accept", None) if listener.__class__ is socket.socket else None
    if accept_fd is None:
        own: Callable[[], Tuple[socket.socket, Any]] = listener.accept
        return own                  # a subclass, a stand-in: its own accept()
    family, kind, proto = int(listener.family), int(listener.type), listener.proto

    def accept() -> Tuple[socket.socket, Any]:
        fd, address = accept_fd()
        return socket.socket(family, kind, proto, fileno=fd), address
    return accept

#: What ``stats()`` returns: counts (ints), seconds (floats), and a callback's name.
Stats = Dict[str, Union[int, float, str]]


def check_grace(grace: float) -> float:
    """A drain's grace period: seconds, 0 (close at once) or more, inf meaning
    wait for every connection; ValueError for a negative number or NaN."""
    if not grace >= 0:
        raise ValueError(f"grace must be 0 or more seconds, not {grace!r}")
    return grace


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

    def shutdown(self, grace: Optional[float] = None) -> None:
        """Stop ``serve_forever()``; from another thread, return once it has returned.

        ``grace``: a server with connections drains first (see ``_StreamServer``);
        for one without (UDP) it changes nothing but the check of its value."""
        if grace is not None:
            check_grace(grace)
        self._stop_serving()

    def _stop_serving(self) -> None:
        """``shutdown()`` without a drain: the one place serving is stopped."""
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

    def stats(self) -> Stats:
        """The reactor's ``health()``, its names prefixed ``loop_``: what a server
        without connections can tell (a stream server adds its counts)."""
        return {f"loop_{name}": value for name, value in self.reactor.health().items()}

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
    with the address actually bound, and returns the listening socket; or,
    given a listening socket (``sock=``, as asyncio's ``create_server``: socket
    activation, a socket inherited from a parent), ``_adopt(sock)`` takes it
    and says its address. ``proxy_protocol``: every connection starts with a
    PROXY header (``proxy.py``), read by a layer below the handler's.
    """

    def __init__(self, server_address: Any, handler_factory: Callable[[], Any], *,
                 reactor: Optional[Reactor], backlog: int,
                 max_connections: Optional[int], idle_timeout: Optional[float],
                 proxy_protocol: bool = False, proxy_header_timeout: float = DEFAULT_HEADER_TIMEOUT,
                 sock: Optional[socket.socket] = None, tls: Optional[TLSSettings] = None) -> None:
        check_handler_factory(handler_factory)
        check_reactor_open(reactor)
        if max_connections is not None and not max_connections >= 1:    # NaN too
            raise ValueError("max_connections must be at least 1")
        positive_seconds("idle_timeout", idle_timeout)     # NaN too; inf: never
        check_header_timeout(proxy_header_timeout)
        if (sock is None) == (server_address is None):
            raise ValueError("give a server address or a listening socket (sock=), not both or neither")
        self.handler_factory = handler_factory
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.proxy_protocol = proxy_protocol
        self.proxy_header_timeout = proxy_header_timeout
        self.server_address = server_address
        self._backlog = backlog
        self._tls = tls
        #: What wraps each connection's handler, top first: each takes the handler
        #: (or layer) above and returns the layer below it. TLS is the first; the
        #: PROXY header comes before every other byte on the wire (TLS records
        #: too), so its layer is last.
        self.layer_factories: List[Callable[[Any], Any]] = [self._tls_layer] if tls else []
        if proxy_protocol:
            self.layer_factories.append(self._proxy_layer)
        self.socket = self._listen() if sock is None else self._adopt(adopt_listening_socket(sock))
        self._sockname = accepted_sockname(self.socket)   # every connection's, if it is one
        self._tcp = self.socket.family in (socket.AF_INET, socket.AF_INET6)   # TCP_NODELAY applies
        # The listening socket's accept(), rebuilt if ``self.socket`` is replaced.
        self._accepter_of: Any = self.socket
        self._accept: Callable[[], Tuple[socket.socket, Any]] = _accepter(self.socket)
        self._connections: Set[TCPTransport] = set()
        #: Accepted sockets not set up yet (see ``_accept_queued``), oldest first.
        self._pending: Deque[Tuple[socket.socket, Any]] = deque()
        self._set_up_scheduled = False
        self._accepting = False
        self._listening = True                  # the listening socket is open
        # Counters for stats(): what closed connections carried is added up
        # when they close; open ones are asked when stats() is.
        self._total = 0
        self._closed_bytes_in = 0
        self._closed_bytes_out = 0
        self._accept_backoffs = 0
        self._handler_errors = 0
        #: TLS handshakes that failed, counted by the TLS layer (0 without TLS).
        self.tls_handshake_failures = 0
        self._drain_timer: Optional[Timer] = None   # the grace deadline, while draining
        self._draining = False
        self._backoff: Optional[float] = None   # seconds, while out of descriptors
        self._backoff_timer: Optional[Timer] = None
        self._init_lifecycle(reactor)
        self._update_accepting()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, why in _THREAD_SETTINGS.items():
            if name in vars(cls):
                warnings.warn(f"{cls.__qualname__}.{name} is ignored: {why}", UserWarning, stacklevel=2)

    def _listen(self) -> socket.socket:  # pragma: no cover - every server defines it
        raise NotImplementedError

    def _adopt(self, sock: socket.socket) -> socket.socket:  # pragma: no cover - every server defines it
        raise NotImplementedError

    def fileno(self) -> int:
        """The listening socket's descriptor, as socketserver offers it."""
        return self.socket.fileno()

    # ------------------------------------------------------------------
    # Accepting
    # ------------------------------------------------------------------
    def _update_accepting(self) -> None:
        """Watch the listening socket exactly when a new connection may be taken."""
        want = (not self._closed and not self._draining and self._backoff_timer is None
                and not self.reactor.is_closed()
                and (self.max_connections is None
                     or len(self._connections) + len(self._pending) < self.max_connections))
        if want != self._accepting:
            self._accepting = want
            if want:
                self.reactor.add_reader(self.socket, self._accept_ready)
            else:
                self.reactor.remove_reader(self.socket)

    def _accept_ready(self) -> None:
        """The listening socket is readable: empty the kernel's queue, then set up
        a backlog's worth of what was accepted (``_set_up_pending``)."""
        self._accept_queued()
        self._set_up_pending()

    def _accept_queued(self) -> None:
        """Accept what the kernel queued, cheaply, into ``_pending``.

        Why accept before setting up: while a storm of connections arrives,
        the kernel's accept queue (the backlog) fills in microseconds; a
        handshake finished into a full queue is dropped and its client waits
        for a retransmit, a whole second. An accept costs a few microseconds,
        a handler and transport far more, so the queue is emptied first (and
        again every ``_SET_UP_BETWEEN_ACCEPTS`` set-ups) and the set-up work
        follows, bounded per turn. What is taken is bounded too: by
        ``_PENDING_BACKLOGS`` backlogs, and by ``max_connections`` counting
        the accepted ones not set up yet.
        """
        room = self._pending_room()
        if self._accepter_of is not self.socket:      # replaced (a stand-in, in tests)
            self._accepter_of, self._accept = self.socket, _accepter(self.socket)
        accept = self._accept
        while room > 0 and self._accepting:
            try:
                conn, address = accept()
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
            self._pending.append((conn, address))
            room -= 1
            if room == 0:
                self._update_accepting()    # max_connections reached, counting these
        self._backoff = None        # accept works again: the next starvation starts small

    def _pending_room(self) -> int:
        # At least one, since listen(0) is valid (Linux still queues one).
        room = max(self._backlog, 1) * _PENDING_BACKLOGS - len(self._pending)
        if self.max_connections is not None:
            room = min(room, self.max_connections - len(self._connections) - len(self._pending))
        return room

    def _set_up_later(self) -> None:
        self._set_up_scheduled = False
        self._set_up_pending()

    def _set_up_pending(self) -> None:
        """Set up accepted connections, oldest first, a backlog's worth at a time;
        the rest from a queued callback. A turn sets up at most two backlogs'
        worth: one from the listener's event, one from the callback (what a
        queued callback queues runs on the next turn, Reactor._run_ready)."""
        pending = self._pending
        for count in range(1, min(len(pending), max(self._backlog, 1)) + 1):
            if self._closed:
                return              # a handler closed the server: server_close() took the rest
            self._new_connection(*pending.popleft())
            if count % _SET_UP_BETWEEN_ACCEPTS == 0 and self._accepting:
                self._accept_queued()
        if pending and not self._set_up_scheduled:
            self._set_up_scheduled = True
            self.reactor.call_soon(self._set_up_later)

    def _back_off(self, exc: OSError) -> None:
        """Out of descriptors: stop watching the socket, retry later (never spin)."""
        self._accept_backoffs += 1
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
            set_nodelay(conn, self._tcp)
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
                                 server=self, sockname=self._sockname)
        self._connections.add(transport)
        self._total += 1
        self._update_accepting()
        transport.start()

    def _layered(self, handler: Any) -> Any:
        """``handler`` wrapped in ``layer_factories``, top first: what the transport drives."""
        for make_layer in self.layer_factories:
            handler = make_layer(handler)
        return handler

    def _proxy_layer(self, handler: Any) -> Any:
        return ProxyProtocolLayer(handler, header_timeout=self.proxy_header_timeout)

    def _tls_layer(self, handler: Any) -> Any:
        assert self._tls is not None
        layer = self._tls.wrap(handler)        # the context as it is now: reload_tls()
        layer.on_handshake_failure = self._count_tls_failure
        return layer

    def _count_tls_failure(self) -> None:
        self.tls_handshake_failures += 1

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
        received, sent = transport.count_bytes()
        self._closed_bytes_in += received
        self._closed_bytes_out += sent
        self._handler_errors += transport.handler_failed
        if self._draining:
            if not self._connections:
                self._drain_finished()
        elif self._accepting is False:
            self._update_accepting()

    # ------------------------------------------------------------------
    # Draining: shutdown(grace=...)
    # ------------------------------------------------------------------
    def shutdown(self, grace: Optional[float] = None) -> None:
        """Stop ``serve_forever()``; from another thread, return once it has returned
        (at once when it is not running; never deadlocks).

        Without ``grace``, the connections stay open for ``server_close()``.
        With ``grace`` (seconds, 0 or more; inf waits for every connection):
        stop accepting (what the kernel queued is accepted first, then the
        listening socket is closed, so later connections are refused), tell
        every connection's handler (``drain_started()``), let the connections
        finish and flush for up to ``grace`` seconds, close the rest
        (``close_now``), then stop. A drain under way is not restarted: a second
        call can only bring its deadline closer (``grace=0``: close the rest now).
        The drain runs on the reactor: from another thread it is handed over and
        waited for; from the serving thread (a handler, a signal callback) it
        begins on the next turn. When nothing runs the reactor, it begins now
        and completes whenever the reactor runs next (``serve_forever()``
        included, which then returns once it is done).
        """
        if grace is None or self._closed or self.reactor.is_closed():
            super().shutdown(grace)
            return
        check_grace(grace)
        with self._lifecycle_lock:
            serving = self._serving_thread
        if serving is not None or self.reactor.is_running():
            self.reactor.call_soon_threadsafe(self._drain, grace)
        else:
            self._drain(grace)
        if serving is not None and serving != threading.get_ident():
            self._stopped.wait()

    def _drain(self, grace: float) -> None:
        """On the reactor's thread: begin the drain, or bring its deadline closer."""
        if self._closed:
            return
        deadline = self.reactor.time() + grace
        if self._draining:
            timer = self._drain_timer
            if timer is not None and deadline < timer.when:
                timer.cancel()
                self._drain_timer = self.reactor.call_at(deadline, self._drain_deadline)
            return
        if self._accepting:
            self._accept_queued()   # what the kernel queued already is served, not reset
        while self._pending:
            self._new_connection(*self._pending.popleft())
        self._draining = True
        logger.info("server on %s: draining %d connections (grace %g s)",
                    self.server_address, len(self._connections), grace)
        self._update_accepting()
        self._close_listening_socket()
        for transport in list(self._connections):
            transport.start_drain()
        if self._connections:
            self._drain_timer = self.reactor.call_at(deadline, self._drain_deadline)
        else:
            self._drain_finished()

    def _drain_deadline(self) -> None:
        """The grace period is over: close what is left, flushing what the kernel takes."""
        self._drain_timer = None
        logger.warning("server on %s: grace period over; closing %d connections",
                       self.server_address, len(self._connections))
        for transport in list(self._connections):
            transport.close_now()       # its connection_lost runs now: the last one finishes the drain

    def _drain_finished(self) -> None:
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        logger.info("server on %s: drained", self.server_address)
        self._stop_serving()

    def is_draining(self) -> bool:
        """True once a drain (``shutdown(grace=...)``) has begun."""
        return self._draining

    # ------------------------------------------------------------------
    # Counting
    # ------------------------------------------------------------------
    def stats(self) -> Stats:
        """What went through this server, counted (for ``--stats``, ``--metrics``):

        * ``open``: connections open now; ``total``: connections accepted so far;
        * ``bytes_in``, ``bytes_out``: bytes read from and handed to the sockets
          of every connection so far (open ones included), below any layer;
        * ``paused``: open connections whose reading is paused (backpressure,
          ``pause_reading``); ``paused_writing``: those above their high-water mark;
        * ``accept_backoffs``: times ``accept()`` ran out of descriptors and backed off;
        * ``handler_errors``: connections a handler's exception cost;
        * ``tls_handshake_failures``: counted by the TLS layer (0 without TLS);
        * ``draining``: 1 while a drain is under way;
        * the reactor's ``health()`` as ``loop_turns``, ``loop_select_seconds``,
          ``loop_callback_seconds``, ``loop_slowest_callback``,
          ``loop_slowest_callback_seconds`` (see ``Reactor.health``).

        Its cost is one pass over the open connections; nothing is counted per byte.
        """
        connections = list(self._connections)
        carried = [transport.count_bytes() for transport in connections]
        counts: Stats = {
            "open": len(connections),
            "total": self._total,
            "bytes_in": self._closed_bytes_in + sum(received for received, _ in carried),
            "bytes_out": self._closed_bytes_out + sum(sent for _, sent in carried),
            "paused": sum(1 for t in connections if not t.is_reading() and not t.is_closing()),
            "paused_writing": sum(1 for t in connections
                                  if t.get_write_buffer_size() > t.get_write_buffer_limits()[1]),
            "accept_backoffs": self._accept_backoffs,
            "handler_errors": self._handler_errors,
            "tls_handshake_failures": self.tls_handshake_failures,
            "draining": int(self._draining),
        }
        counts.update(super().stats())
        return counts

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
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        while self._pending:        # accepted, never set up: no handler to tell
            self._pending.popleft()[0].close()
        for transport in list(self._connections):
            transport.close_now()
        self._close_listening_socket()
        self._close_owned_reactor()

    def _close_listening_socket(self) -> None:
        """Close the listening socket, once (a drain closes it before ``server_close``)."""
        if self._listening:
            self._listening = False
            self._unlisten()

    def _unlisten(self) -> None:
        self.socket.close()

    @property
    def connections(self) -> int:
        """How many connections are open now."""
        return len(self._connections)


class TCPServer(_StreamServer):
    """A TCP server: one handler per connection, all on one reactor.

    Binds and listens in the constructor (SO_REUSEADDR on); ``("::1", 0)`` is
    IPv6. ``handler_factory`` is any zero-argument callable returning a handler.

    ``sock``: serve this listening TCP socket instead of binding one (then
    ``server_address`` is None and is read from it; ``backlog`` and
    ``reuse_port`` are the socket's own already). ``proxy_protocol=True``:
    each connection starts with a PROXY v1 or v2 header from a load balancer,
    the client's address then being ``get_extra_info('peername')``; a header
    missing after ``proxy_header_timeout`` seconds or malformed closes it.
    ``ssl``: an ``ssl.SSLContext`` to speak TLS (``netmux.tls``: the handshake
    runs on the reactor, the handler hears ``connection_made`` once it is done);
    ``ssl_handshake_timeout`` and ``ssl_shutdown_timeout`` are seconds (None:
    never); ``ssl_tolerate_ragged_eof`` takes a TCP EOF without close_notify as
    the peer's EOF instead of an error. ``reload_tls()`` swaps the context.
    """

    server_address: IPAddress

    def __init__(self, server_address: Optional[IPAddress], handler_factory: Callable[[], Any], *,
                 reactor: Optional[Reactor] = None, backlog: int = 128, reuse_port: bool = False,
                 max_connections: Optional[int] = None, idle_timeout: Optional[float] = None,
                 proxy_protocol: bool = False, proxy_header_timeout: float = DEFAULT_HEADER_TIMEOUT,
                 sock: Optional[socket.socket] = None,
                 ssl: Any = None, ssl_handshake_timeout: Optional[float] = DEFAULT_HANDSHAKE_TIMEOUT,
                 ssl_shutdown_timeout: Optional[float] = DEFAULT_SHUTDOWN_TIMEOUT,
                 ssl_tolerate_ragged_eof: bool = False) -> None:
        self.reuse_port = reuse_port
        tls = tls_settings(ssl, ssl_handshake_timeout, ssl_shutdown_timeout, ssl_tolerate_ragged_eof)
        super().__init__(server_address, handler_factory, reactor=reactor, backlog=backlog,
                         max_connections=max_connections, idle_timeout=idle_timeout,
                         proxy_protocol=proxy_protocol, proxy_header_timeout=proxy_header_timeout,
                         sock=sock, tls=tls)

    def _listen(self) -> socket.socket:
        sock = listen_tcp(self.server_address, self._backlog, reuse_port=self.reuse_port)
        self.server_address = bound_address(sock)      # the port resolved when 0 was asked
        return sock

    def _adopt(self, sock: socket.socket) -> socket.socket:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            raise ValueError(f"TCPServer needs a TCP socket, not {sock.family!r} (UnixServer?)")
        self.server_address = bound_address(sock)
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
    ``sock`` and ``proxy_protocol`` as TCPServer's; a socket handed over this
    way (path None) has its file left alone at the end: its owner made it.
    ``ssl`` and its companions as TCPServer's.
    """

    server_address: UnixPath

    def __init__(self, path: Optional[UnixAddress], handler_factory: Callable[[], Any], *,
                 reactor: Optional[Reactor] = None, backlog: int = 128,
                 max_connections: Optional[int] = None, idle_timeout: Optional[float] = None,
                 proxy_protocol: bool = False, proxy_header_timeout: float = DEFAULT_HEADER_TIMEOUT,
                 sock: Optional[socket.socket] = None,
                 ssl: Any = None, ssl_handshake_timeout: Optional[float] = DEFAULT_HANDSHAKE_TIMEOUT,
                 ssl_shutdown_timeout: Optional[float] = DEFAULT_SHUTDOWN_TIMEOUT,
                 ssl_tolerate_ragged_eof: bool = False) -> None:
        self._socket_file: Optional[UnixSocketFile] = None
        tls = tls_settings(ssl, ssl_handshake_timeout, ssl_shutdown_timeout, ssl_tolerate_ragged_eof)
        super().__init__(None if path is None else unix_path(path), handler_factory, reactor=reactor,
                         backlog=backlog, max_connections=max_connections, idle_timeout=idle_timeout,
                         proxy_protocol=proxy_protocol, proxy_header_timeout=proxy_header_timeout,
                         sock=sock, tls=tls)

    def _adopt(self, sock: socket.socket) -> socket.socket:
        if sock.family != socket.AF_UNIX:
            raise ValueError(f"UnixServer needs a Unix socket, not {sock.family!r} (TCPServer?)")
        self.server_address = sock.getsockname()
        return sock

    def _listen(self) -> socket.socket:
        sock, self._socket_file = listen_unix(self.server_address, self._backlog)
        return sock

    def _unlisten(self) -> None:
        # The file first: while our socket is open, no other server can find
        # the file stale and take the path, and its inode cannot be reused.
        if self._socket_file is not None:
            self._socket_file.remove()
        super()._unlisten()
