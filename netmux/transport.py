"""The TCP transport: one non-blocking socket between the reactor and a handler.

Where it sits: above the reactor, below the handler. It owns one connected,
non-blocking socket and its write buffer. Bytes flow up (readable -> one
``recv`` -> ``handler.data_received``) and down (``write`` -> ``send`` at once
if nothing is queued, else into the buffer, flushed when the socket is
writable). The method names are asyncio's Transport's.

Design notes, the why of the code below:

* **Send at once, buffer the rest.** Most writes fit in the kernel's send
  buffer, so ``write`` tries ``send`` first and only buffers what the kernel
  refused; the reactor watches for writability only while bytes are buffered,
  so an idle connection costs the selector nothing.
* **Linear buffering.** The buffer is one ``bytearray``: appending is amortised
  O(1), and deleting sent bytes from its front moves a start offset instead of
  the data (CPython shrinks it geometrically), so a single 100 MiB write or a
  million small ones cost linear time.
* **Flow control.** Above the high-water mark the handler hears
  ``pause_writing``; at or below the low-water mark, ``resume_writing``.
  The marks' default and rule are ``water_marks()``'s, for every transport.
  ``Handler``'s defaults pause reading meanwhile, which bounds an echo's memory
  against a peer that never reads.
* **EAGAIN and EINTR are silent**: the socket was not ready after all (another
  wake-up raced us, or a signal arrived); the selector will tell us again.
  ECONNRESET, EPIPE and friends end the connection: ``connection_lost(exc)``.
* **close() flushes first**: it stops reading, lets the buffer drain, then
  closes. ``abort()`` drops the buffer. Either way ``connection_lost`` runs
  exactly once, on a later turn of the loop, never from inside the handler
  method that asked for it.
* **Handler errors cost one connection**, by errors.py's one rule: any
  exception raised by a handler method (any BaseException: asyncio.CancelledError
  too) is logged once on the ``netmux`` logger with its traceback, and that
  connection alone is aborted. SystemExit and KeyboardInterrupt
  (``errors.PROPAGATE``) abort it too, and then propagate out of the reactor:
  whatever escapes a handler, the transport is left closed and consistent, and
  ``connection_lost`` follows on the next turn the loop makes (or in
  ``server_close()``/``Reactor.close()``), told an Exception (``lost_reason``).
* **Fairness: a handler's share of a turn.** One read hands the handler at
  most ``Reactor.read_buffer_size`` (64 KiB); a handler with more work than a
  turn's share (pipelined requests, a fan-out) does a share, calls
  ``yield_turn(callback)`` and returns: reading stops and ``callback`` goes
  on next turn, after the other connections had theirs. It is a state of
  its own (``_yields``), beside the handler's ``pause_reading``, so neither
  undoes the other. Pinned by tests/test_fairness.py.
* **A closed reactor**: no loop will flush, so ``close()`` then acts as
  ``abort()`` (the descriptor is released, ``connection_lost`` runs at once).

* **One read, no copy.** Each read event does one ``recv(read_buffer_size)``
  and hands the ``bytes`` it returns up as they are: CPython allocates the
  64 KiB, the kernel fills it, and it is shrunk in place to what came. That
  costs 1,100 fewer instructions per echoed message than a ``recv_into`` the
  reactor's shared ``read_buffer`` and an exact-size copy out of it (the
  keyword parsing of ``recv_into``, a memoryview slice, the copy), and at
  64 KiB a whole ``memcpy`` less (bench/README.md). 64 KiB stays under glibc's
  mmap threshold (128 KiB), so the allocation never costs an ``mmap``/``munmap``
  pair: that is what made a 256 KiB ``recv`` 3x slower once. Activity stamps read
  ``reactor.turn_time``, one clock read per turn, not one per message.
* **Files queue behind bytes, at no cost to bytes.** ``sendfile()`` queues a
  file region (``sendfile.py``: ``os.sendfile`` without copying it through
  Python, or read and send where it cannot). The one hook here is a named
  mode, ``_files_queued``: while it is on, the write buffer is a
  ``SendQueue`` (bytes and regions, in order) flushed by ``_send_queued``;
  once drained, a bytearray again. ``write()`` does not know: the queue
  answers what it asks of a bytearray (truth, ``len``, ``+=``).
* **close() waits for the peer's FIN** before releasing the descriptor (at
  most ``LINGER_SECONDS``), so unread input cannot turn into an RST that
  destroys the tail of the reply (``_close_after_peer``).

What it never does: parse or frame the bytes (handlers and framers do), block
(every socket call is non-blocking; EAGAIN waits for the next readiness),
read while the handler has paused it or yielded its turn, or let a handler's
exception reach the reactor (errors.py's rule, applied in ``_handler_failed``).

``SocketTransport`` holds what the TCP and UDP transports share (reading on
and off, water marks, closing exactly once); ``DatagramTransport`` in
``udp.py`` is the UDP counterpart.
"""
from __future__ import annotations

import _socket
import fcntl
import logging
import socket
import struct
import sys
import termios
from typing import TYPE_CHECKING, Any, Callable, Iterable, List, Optional, Tuple

from .errors import PROPAGATE, lost_reason
from .reactor import Reactor, Timer
from .sendfile import FileRegion, SendQueue, check_file_region, region_count

if TYPE_CHECKING:
    from .framing import BytesLike

__all__ = ["TCPTransport"]

logger = logging.getLogger("netmux")

# Errors that a peer causes by going away: logged at DEBUG, they are ordinary.
_PEER_GONE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, TimeoutError)


def byte_view(data: Any) -> memoryview:
    """A flat byte view of any bytes-like object; TypeError for anything else (str, int)."""
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(f"data must be a bytes-like object, not {type(data).__name__}") from None
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


# Byte counts the kernel keeps for a TCP socket (Linux 4.1+), read by
# _kernel_counts: struct tcp_info (linux/tcp.h) holds tcpi_state in its first
# byte and the u64 tcpi_bytes_acked, tcpi_bytes_received at byte 120.
_TCP_INFO = getattr(socket, "TCP_INFO", None) if sys.platform.startswith("linux") else None
_TCP_INFO_COUNTS = struct.Struct("=QQ")
_TCP_INFO_COUNTS_AT = 120
# And what tells that the send queue is empty (Linux 4.6+), so that SIOCOUTQ
# need not be asked: u32 tcpi_unacked (segments in flight) at byte 24 and
# u32 tcpi_notsent_bytes (queued, never sent) at byte 144. Both 0: every byte
# handed over was acknowledged, the common case when a connection closes.
_TCP_INFO_U32 = struct.Struct("=I")
_TCP_INFO_UNACKED_AT = 24
_TCP_INFO_NOTSENT_AT = 144
# States (include/net/tcp_states.h) once the peer's FIN came: it is counted as
# one byte received. And once ours went: one byte sent (acked or queued).
_PEER_FIN_STATES = frozenset({6, 8, 9, 11})      # TIME_WAIT, CLOSE_WAIT, LAST_ACK, CLOSING
_OUR_FIN_STATES = frozenset({4, 5, 6, 9, 11})    # FIN_WAIT1, FIN_WAIT2, TIME_WAIT, LAST_ACK, CLOSING


# The C socket type's own family attribute: a plain int, where socket.socket's
# property converts it to an enum member each time it is read (a microsecond
# of a churned connection's few dozen).
_SOCKET_FAMILY: Any = _socket.socket.family


def _kernel_counts_for(sock: socket.socket) -> bool:
    """True when the kernel counts this socket's bytes (TCP where TCP_INFO exists)."""
    if _TCP_INFO is None:
        return False
    try:
        family = _SOCKET_FAMILY.__get__(sock)
    except TypeError:
        family = sock.family        # a stand-in for a socket (tests)
    return family in (socket.AF_INET, socket.AF_INET6)


def _kernel_counts(sock: socket.socket, fin_received: bool, fin_sent: bool) -> Optional[Tuple[int, int]]:
    """``(received, sent)`` data bytes of a TCP socket as the kernel counts them,
    or None where it does not (a Unix socket, not Linux, a kernel before 4.1,
    which then reports no bytes at all).

    The kernel counts what it received from the peer, read or not, and what
    the peer acknowledged; each FIN counts one. So what we read is received
    less what waits unread (SIOCINQ, FIN not included) less the peer's FIN, and
    what we handed over is acknowledged plus what waits in the send queue
    (SIOCOUTQ, our FIN included) less our FIN. Whether a FIN came or went is
    what the caller knows (EOF read, ``shutdown`` done) or the state says
    (the closed state alone cannot tell a finished exchange from a reset).
    """
    if _TCP_INFO is None:       # the caller asks only for a socket _kernel_counts_for() took
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 256)
        if len(info) < _TCP_INFO_COUNTS_AT + _TCP_INFO_COUNTS.size:
            return None
        # Two syscalls spared when the answer is known (a churned connection
        # closes with both): after EOF nothing waits unread; an empty send
        # queue shows in the info already.
        unread = 0 if fin_received else _ioctl_int(sock, termios.FIONREAD)
        unsent = 0 if _send_queue_empty(info) else _ioctl_int(sock, termios.TIOCOUTQ)
    except OSError:
        return None
    acked, received = _TCP_INFO_COUNTS.unpack_from(info, _TCP_INFO_COUNTS_AT)
    state = info[0]
    return (received - unread - (fin_received or state in _PEER_FIN_STATES),
            acked + unsent - (fin_sent or state in _OUR_FIN_STATES))


def _send_queue_empty(info: bytes) -> bool:
    """True when a ``TCP_INFO`` answer shows nothing in flight and nothing queued
    (False when the kernel is too old to say)."""
    if len(info) < _TCP_INFO_NOTSENT_AT + _TCP_INFO_U32.size:
        return False
    in_flight: int = _TCP_INFO_U32.unpack_from(info, _TCP_INFO_UNACKED_AT)[0]
    queued: int = _TCP_INFO_U32.unpack_from(info, _TCP_INFO_NOTSENT_AT)[0]
    return in_flight == 0 and queued == 0


class _CountingSocket:
    """A socket the kernel keeps no byte counts for (a Unix one): its ``recv``
    and ``send`` count what they move; every other name is the socket's own."""

    __slots__ = ("socket", "received", "sent")

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock
        self.received = self.sent = 0

    def recv(self, size: int) -> bytes:
        data: bytes = self.socket.recv(size)
        self.received += len(data)
        return data

    def send(self, data: Any) -> int:
        sent: int = self.socket.send(data)
        self.sent += sent
        return sent

    def __getattr__(self, name: str) -> Any:
        return getattr(self.socket, name)


def _ioctl_int(sock: socket.socket, request: int) -> int:
    value: int = struct.unpack("i", fcntl.ioctl(sock.fileno(), request, b"\0\0\0\0"))[0]
    return value

#: Every write buffer's default high-water mark (asyncio's); the low one is a quarter of it.
DEFAULT_HIGH_WATER = 64 * 1024


def water_marks(high: Optional[int] = None, low: Optional[int] = None) -> Tuple[int, int]:
    """``(high, low)`` from what ``set_write_buffer_limits`` was given: high defaults
    to ``DEFAULT_HIGH_WATER`` (or ``4 * low``), low to ``high // 4``; ValueError
    unless ``0 <= low <= high`` (NaN included)."""
    if high is None:
        high = DEFAULT_HIGH_WATER if low is None else 4 * low
    if low is None:
        low = high // 4
    if not 0 <= low <= high:
        raise ValueError(f"need 0 <= low <= high, got high={high!r} low={low!r}")
    return high, low


def _ask_socket(question: Callable[[], Any]) -> Any:
    """``getpeername()`` or ``getsockname()``, None where the socket cannot say."""
    try:
        return question()
    except OSError:
        return None


class SocketTransport:
    """What every socket transport shares: reading on and off, the flow-control
    marks, closing exactly once, and asyncio's introspection names.

    A subclass owns its write side (a byte buffer, a datagram queue) and says
    how much it holds (``get_write_buffer_size``), what to drop on close
    (``_drop_pending``), and how a handler's exception is treated
    (``_call_handler``).
    """

    __slots__ = (
        "reactor", "_sock", "_fileno", "_handler", "_on_lost", "_reading", "_registered_reader",
        "_closing", "_lost", "_lost_exc", "_lost_called", "_high_water", "_low_water",
        "_writing_paused", "_drain_waiters", "_peername", "_sockname", "__weakref__",
    )

    def __init__(self, reactor: Reactor, sock: socket.socket, handler: Any, peername: Any,
                 on_lost: Optional[Callable[[Any], None]]) -> None:
        self.reactor = reactor
        self._sock: Any = sock          # a socket, or a _CountingSocket around one
        self._fileno = sock.fileno()
        self._handler = handler
        self._on_lost = on_lost
        self._reading = True             # what the handler asked for
        self._registered_reader = False  # what the selector is told
        self._closing = False
        self._lost = False
        self._lost_exc: Optional[Exception] = None
        self._lost_called = False
        self._high_water, self._low_water = water_marks()
        self._writing_paused = False
        self._drain_waiters: Optional[List[List[Any]]] = None   # when_drained(), while any wait
        self._peername = peername
        self._sockname = None

    def __repr__(self) -> str:
        state = "lost" if self._lost else "closing" if self._closing else "open"
        return f"<{type(self).__name__} fd={self._fileno} {state} peer={self._peername}>"

    # ------------------------------------------------------------------
    # Reading on and off
    # ------------------------------------------------------------------
    def _wants_reading(self) -> bool:
        return self._reading and not self._closing

    def _update_reader(self) -> None:
        """Register for reading exactly when the handler wants data and more can come."""
        want = self._wants_reading()
        if want != self._registered_reader:
            self._registered_reader = want
            if want:
                self.reactor.add_reader(self._fileno, self._read_ready)
            else:
                self.reactor.remove_reader(self._fileno)

    def _read_ready(self) -> None:  # pragma: no cover - every transport defines it
        raise NotImplementedError

    def pause_reading(self) -> None:
        """Stop delivering incoming data until ``resume_reading()``; the kernel buffers meanwhile."""
        self._reading = False
        if not self._lost:
            self._update_reader()

    def resume_reading(self) -> None:
        """Undo ``pause_reading()``."""
        self._reading = True
        if not self._lost:
            self._update_reader()

    def is_reading(self) -> bool:
        """True when the transport delivers incoming data (not paused, not closing)."""
        return self._reading and not self._closing

    # ------------------------------------------------------------------
    # Flow control
    # ------------------------------------------------------------------
    def get_write_buffer_size(self) -> int:  # pragma: no cover - every transport defines it
        """Bytes written but not yet handed to the kernel."""
        raise NotImplementedError

    def get_write_buffer_limits(self) -> Tuple[int, int]:
        """``(low, high)``, as asyncio returns them."""
        return (self._low_water, self._high_water)

    def set_write_buffer_limits(self, high: Optional[int] = None, low: Optional[int] = None) -> None:
        """Set the flow-control marks: default high 64 KiB, low ``high // 4``."""
        self._high_water, self._low_water = water_marks(high, low)
        self._follow_water_marks(self.get_write_buffer_size())

    def _follow_water_marks(self, size: int) -> None:
        """Flow control, the one place it is decided: ``pause_writing`` once ``size``
        (what is buffered) rises above the high-water mark, ``resume_writing`` once it
        drains to the low one after a pause; each once per crossing. Called where the
        size changes the way that matters (a write buffers, a flush drains, the marks
        move); the resumed handler may write again at once."""
        if self._writing_paused:
            if size <= self._low_water:
                self._writing_paused = False
                self._call_handler("resume_writing")
        elif size > self._high_water:
            self._writing_paused = True
            self._call_handler("pause_writing")
        if self._drain_waiters is not None and size <= self._low_water and not self._lost:
            self._drained()

    def when_drained(self, callback: Callable[[], Any]) -> Callable[[], None]:
        """Call ``callback()`` once the write buffer is at or below the low-water mark,
        the marks as they stand then (on the next turn if it is already); returns a
        zero-argument cancel. What ``sendall()`` waits for: no ``resume_writing``
        comes for a buffer that never rose above the high mark, and borrowing the
        marks to make one would change what the user set. A transport that closes
        drops the callbacks uncalled (its handler hears ``connection_lost``); an
        exception from one is a handler error."""
        if self.get_write_buffer_size() <= self._low_water:
            return self.reactor.call_soon(callback).cancel
        entry = [callback]
        if self._drain_waiters is None:
            self._drain_waiters = []
        self._drain_waiters.append(entry)
        return entry.clear

    def _drained(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters or [], None
        for entry in waiters:
            if entry and not self._lost:
                self._run_callback(entry[0], (), "when_drained callback")

    def _run_callback(self, callback: Callable[..., Any], args: Tuple[Any, ...], what: str) -> bool:
        """Run a callback the handler handed us (a continuation, a deadline, a drain
        wait) under the handler's rule; False if it raised (the connection is aborted)."""
        try:
            callback(*args)
        except BaseException as exc:
            self._handler_failed(exc, getattr(callback, "__name__", what))
            return False
        return True

    def _handler_failed(self, exc: BaseException, method: str) -> None:  # pragma: no cover
        raise NotImplementedError

    def _call_handler(self, method: str, *args: Any) -> None:  # pragma: no cover
        raise NotImplementedError

    # ------------------------------------------------------------------
    # Closing, exactly once
    # ------------------------------------------------------------------
    def close(self) -> None:
        """Stop reading, flush everything buffered, then close. No data is lost.

        On a closed reactor nothing can flush any more: it acts as ``abort()``."""
        if self.reactor.is_closed():
            self.abort()
            return
        if self._closing:
            return
        self._closing = True
        self._update_reader()
        if not self.get_write_buffer_size():
            self._force_close(None, linger=True)

    def abort(self) -> None:
        """Close now, dropping anything buffered."""
        self._force_close(None)

    def close_now(self) -> None:
        """Close at once and tell the handler before returning: for a front door
        that is closing (``server_close()``). What the kernel takes at once is
        still handed to it (``_send_what_fits``); the rest is dropped."""
        if not self._lost:
            self._send_what_fits()
        self.abort()
        self._call_connection_lost()

    def _send_what_fits(self) -> None:
        """Hand the kernel what it takes now, never waiting (a subclass's)."""

    def is_closing(self) -> bool:
        """True once ``close()`` or ``abort()`` was called or the connection was lost."""
        return self._closing

    def _drop_pending(self) -> None:
        """Forget what waits to be sent, and any timer of the subclass's."""

    def _close_socket(self, linger: bool) -> None:
        self._sock.close()

    def _force_close(self, exc: Optional[BaseException], linger: bool = False) -> None:
        """Release the socket now (``linger``: after the peer's FIN, see
        ``_close_after_peer``, for a flushed ``close()``); ``connection_lost(exc)`` runs on the next turn
        (at once when the reactor is closed: no turn will come)."""
        if self._lost:
            return
        self._lost = True
        self._closing = True
        self._lost_exc = lost_reason(exc)     # an Exception or None, as asyncio types it
        self._drop_pending()
        reactor = self.reactor
        if self._registered_reader:
            reactor.remove_reader(self._fileno)    # a no-op on a closed reactor
        reactor.remove_writer(self._fileno)
        self._registered_reader = False
        closed = reactor.is_closed()
        self._close_socket(linger and not closed)
        if closed:
            self._call_connection_lost()
        else:
            reactor.call_soon(self._call_connection_lost)
            reactor.track_in_flight(self, self._call_connection_lost)   # run by close() if no turn comes

    def _call_connection_lost(self) -> None:
        """Tell the handler, exactly once; then the front door's bookkeeping."""
        if self._lost_called:
            return
        self._lost_called = True
        self.reactor.forget_in_flight(self)
        try:
            self._handler.connection_lost(self._lost_exc)
        except PROPAGATE:
            raise
        except BaseException:
            logger.exception("%r: handler connection_lost() raised", self)
        finally:
            if self._on_lost is not None:
                self._on_lost(self)

    # ------------------------------------------------------------------
    # Introspection
    # ------------------------------------------------------------------
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``'peername'``, ``'sockname'`` or ``'socket'``, as asyncio names them."""
        if name == "socket":
            sock = self._sock
            return sock.socket if sock.__class__ is _CountingSocket else sock
        if name == "peername":
            if self._peername is None and not self._lost:
                self._peername = _ask_socket(self._sock.getpeername)
            return default if self._peername is None else self._peername
        if name == "sockname":
            if not self._lost:   # not cached while open: a UDP socket is bound by its first send
                self._sockname = _ask_socket(self._sock.getsockname)
            return default if self._sockname is None else self._sockname
        return default

    def get_protocol(self) -> Any:
        """The handler this transport delivers to (asyncio's name)."""
        return self._handler


class TCPTransport(SocketTransport):
    """A connected stream socket, TCP or Unix, driven by a reactor, delivering to
    one handler.

    Built by ``TCPServer``, ``UnixServer`` and ``connect()``; user code gets it in
    ``handler.connection_made(transport)``. The name is asyncio's and API.md's:
    a Unix connection differs only in having no TCP_NODELAY and a ``peername``
    that is usually ``''``.
    """

    __slots__ = (
        "_buffer", "_eof_received", "_eof_requested", "_last_activity", "_idle_timeout",
        "_idle_timer", "_yields", "_server", "_files_queued", "_timers",
        "_received", "_sent", "handler_failed", "_draining", "_read_size",
    )

    def __init__(self, reactor: Reactor, sock: socket.socket, handler: Any, *,
                 peername: Any = None, idle_timeout: Optional[float] = None, server: Any = None,
                 on_lost: Optional[Callable[["TCPTransport"], None]] = None,
                 sockname: Any = None) -> None:
        super().__init__(reactor, sock, handler, peername, on_lost)
        self._sockname = sockname          # known to a server whose listener has one address
        self._buffer: Any = bytearray()    # a SendQueue while files are queued
        self._files_queued = False         # sendfile()'s mode: the buffer is a SendQueue
        self._eof_received = False
        self._eof_requested = False
        self._last_activity = reactor.time()     # the reactor's clock: virtual in tests
        self._idle_timeout = idle_timeout
        self._idle_timer: Optional[Timer] = None
        self._yields = 0                   # continuations queued by yield_turn()
        self._server = server              # get_extra_info("server"): None for connect()
        self._timers: Optional[List[Timer]] = None   # call_later()'s, cancelled on close
        # Bytes read and sent (count_bytes): asked of the kernel where it counts
        # them (TCP on Linux), at no cost per message; elsewhere (a Unix socket)
        # the socket is wrapped in a _CountingSocket that counts each call. Why
        # not count here: an int sum past 256 is a new object per addition,
        # which cost 3 % per echoed message each way under the instruction
        # guard (bench/instructions), and even a test of a flag costs 1 %.
        self._received = self._sent = 0
        if not _kernel_counts_for(sock):
            self._sock = _CountingSocket(sock)
        #: True once a handler method raised and cost this connection (``stats()``).
        self.handler_failed = False
        self._draining = False             # start_drain() was called
        self._read_size = reactor.read_buffer_size    # one read's share of a turn (fairness)

    # ------------------------------------------------------------------
    # Start-up
    # ------------------------------------------------------------------
    def start(self) -> None:
        """Tell the handler ``connection_made``, then start reading (and the idle
        timer): called once, by the front door that made the transport."""
        try:
            self._handler.connection_made(self)
        except BaseException as exc:
            self._handler_failed(exc, "connection_made")
            return
        if self._idle_timeout is not None and not self._lost:
            self._idle_timer = self.reactor.call_later(self._idle_timeout, self._check_idle)
        self._update_reader()

    # ------------------------------------------------------------------
    # Reading: readable -> one recv -> handler
    # ------------------------------------------------------------------
    def _read_ready(self) -> None:
        try:
            data = self._sock.recv(self._read_size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fatal_error(exc, "recv")
            return
        if data:
            self._last_activity = self.reactor.turn_time
            try:
                self._handler.data_received(data)
            except BaseException as exc:
                self._handler_failed(exc, "data_received")
        else:
            self._read_eof()

    def _read_eof(self) -> None:
        self._eof_received = True
        self._update_reader()
        try:
            keep_open = self._handler.eof_received()
        except BaseException as exc:
            self._handler_failed(exc, "eof_received")
            return
        if not keep_open:
            self.close()

    def _wants_reading(self) -> bool:
        return self._reading and not self._closing and not self._eof_received and not self._yields

    # ------------------------------------------------------------------
    # Fairness: a handler's share of a turn
    # ------------------------------------------------------------------
    def yield_turn(self, callback: Callable[..., Any], *args: Any) -> None:
        """Go on with ``callback(*args)`` on the next turn, reading nothing meanwhile.

        For a handler with more work than its share of one turn (a batch of
        pipelined requests, a fan-out): it does its share, calls this and
        returns, and the reactor serves the other connections first. Reading
        stops until every continuation queued this way has run without
        yielding again, so nothing new piles up behind the work left, and EOF
        cannot overtake it; the handler's own ``pause_reading()`` state is not
        touched (``is_reading()`` still reports it). Continuations run FIFO; a
        transport closing or lost before its turn drops them uncalled (no work
        is left on a closed connection). An exception from ``callback`` is a
        handler error: logged once, it aborts this connection only.
        """
        if self._closing:
            return
        self._yields += 1
        self._update_reader()
        self.reactor.call_soon(self._continue_turn, callback, args)

    def count_bytes(self) -> Tuple[int, int]:
        """``(received, sent)``: bytes read from the socket, and handed to the
        kernel (written but still in our buffer: not yet), so far; fixed once
        the connection is lost. Asked of the kernel over TCP on Linux, counted
        per call elsewhere (``_CountingSocket``). For ``stats()``."""
        sock = self._sock
        if sock.__class__ is _CountingSocket:
            return sock.received, sock.sent
        if not self._lost:
            counts = _kernel_counts(sock, self._eof_received, self._eof_requested and not self._buffer)
            if counts is not None:
                self._received, self._sent = counts
        return self._received, self._sent

    # ------------------------------------------------------------------
    # Draining: the front door stops, the handler ends at a boundary
    # ------------------------------------------------------------------
    def start_drain(self) -> None:
        """The front door is draining (``shutdown(grace=...)``): tell the handler,
        once, through its optional ``drain_started()`` (``Handler`` and ``Layer``
        have one; an ``asyncio.Protocol`` has none and is left to finish or be
        closed at the grace deadline). It is how a handler hears the drain:
        it ends at its next message boundary. What the peer has sent already is
        read first (one read). Nothing on a closing transport; an exception
        from the handler costs the connection, as any handler error."""
        if self._draining or self._closing:
            return
        self._draining = True
        if self._wants_reading():
            # What the peer sent before the drain (a request queued in the
            # kernel, a connection taken from the backlog) reaches the handler
            # first: without it, a handler would take its unread request for
            # a boundary. One read, as a turn gives; EAGAIN says nothing came.
            self._read_ready()
            if self._closing:
                return
        drain_started = getattr(self._handler, "drain_started", None)
        if drain_started is not None:
            self._run_callback(drain_started, (), "drain_started")

    # ------------------------------------------------------------------
    # Deadlines: a connection's own timers
    # ------------------------------------------------------------------
    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer:
        """``callback(*args)`` after ``delay`` seconds, as the connection's own timer:
        a deadline a handler sets (a request head not complete in time, an answer
        awaited) and clears with ``timer.cancel()``. Unlike the reactor's, it is
        cancelled when the connection closes, and an exception from ``callback``
        is a handler error (logged once, it aborts this connection). On a
        closing transport it is returned cancelled: no work is left."""
        timer = self.reactor.call_later(delay, self._deadline, callback, args)
        if self._closing:
            timer.cancel()
            return timer
        timers = self._timers
        if timers is None:
            timers = self._timers = []
        elif len(timers) >= 8:              # a deadline set and cleared per request
            timers[:] = [kept for kept in timers if kept.pending()]
        timers.append(timer)
        return timer

    def _deadline(self, callback: Callable[..., Any], args: Tuple[Any, ...]) -> None:
        if not self._closing:
            self._run_callback(callback, args, "call_later callback")

    def _continue_turn(self, callback: Callable[..., Any], args: Tuple[Any, ...]) -> None:
        self._yields -= 1
        if not self._closing and self._run_callback(callback, args, "yield_turn callback"):
            self._update_reader()

    # ------------------------------------------------------------------
    # Writing: send at once, buffer the rest, flush when writable
    # ------------------------------------------------------------------
    def write(self, data: BytesLike) -> None:
        """Send ``data`` (any bytes-like object) in order after everything written before.

        Raises TypeError for anything not bytes-like, ConnectionError once the
        transport is closing or lost, RuntimeError after ``write_eof()``.
        """
        # The hot path, kept whole (radon C): each check costs every message, a
        # helper call would cost more than the branches it hides.
        if data.__class__ is not bytes:
            data = byte_view(data)
        if self._closing:
            raise ConnectionError(f"write() on a closed or closing transport: {self!r}")
        if self._eof_requested:
            raise RuntimeError("write() after write_eof()")
        if not data:
            return
        buffer = self._buffer
        if not buffer:
            try:
                sent = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._fatal_error(exc, "send")
                return
            if sent == len(data):
                self._last_activity = self.reactor.turn_time
                return
            if sent:
                self._last_activity = self.reactor.turn_time
                data = memoryview(data)[sent:]
            self.reactor.add_writer(self._fileno, self._write_ready)
        buffer += data                      # copies: the caller may reuse its bytearray
        if len(buffer) > self._high_water:
            self._follow_water_marks(len(buffer))

    def writelines(self, chunks: Iterable[BytesLike]) -> None:
        """Write every bytes-like object of an iterable, in order: joined first, so
        many small pieces cost one ``send``, not one each."""
        self.write(b"".join(chunks))

    def _write_ready(self) -> None:
        buffer = self._buffer
        if self._lost or not buffer:
            return
        try:
            sent = self._sock.send(buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fatal_error(exc, "send")
            return
        del buffer[:sent]
        self._last_activity = self.reactor.turn_time
        if self._writing_paused or self._drain_waiters is not None:
            self._follow_water_marks(len(buffer))   # resume_writing: it may write more
        if buffer or self._lost or self._files_queued:   # resume_writing may have sendfile()d
            return
        self.reactor.remove_writer(self._fileno)
        self._flushed()

    def _flushed(self) -> None:
        """Everything written has reached the kernel: what waited for that now happens."""
        if self._closing:
            self._force_close(None, linger=True)
        elif self._eof_requested:
            self._shutdown_write()

    def write_eof(self) -> None:
        """Half-close: send FIN once everything buffered is flushed. Reading goes on."""
        if self._closing or self._eof_requested:
            return
        self._eof_requested = True
        if not self._buffer:
            self._shutdown_write()

    def _shutdown_write(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self._fatal_error(exc, "shutdown")

    def can_write_eof(self) -> bool:
        """TCP can half-close: always True."""
        return True

    def get_write_buffer_size(self) -> int:
        """Bytes written but not yet handed to the kernel, queued file regions included."""
        return len(self._buffer)

    # ------------------------------------------------------------------
    # Sending files: the write buffer becomes a queue, only while needed
    # ------------------------------------------------------------------
    def sendfile(self, file: Any, offset: int = 0, count: Optional[int] = None) -> None:
        """Queue ``count`` bytes of ``file`` from ``offset`` (``None``: to its end as it is
        now) to be sent in order with ``write()``; returns at once.

        ``os.sendfile`` moves the bytes without copying them through Python; where it
        is missing or refuses (a file it cannot map, a socket type it does not serve)
        the region is read and sent in 256 KiB pieces instead. The file stays open
        and is never closed by us. Unlike asyncio's ``loop.sendfile`` (a coroutine
        that returns the count sent and moves the file position), this returns None
        and never uses nor moves the file position (reads are at explicit offsets),
        so one open file may be queued many times. Queued file bytes count in
        ``get_write_buffer_size()``, hence for ``pause_writing``, without being held
        in memory. ``close()`` sends them first; ``abort()`` drops them.

        Raises TypeError or ValueError for a bad argument (a text file, an offset
        that is not an int >= 0, a count that is not a positive int), ConnectionError
        once closing or lost, RuntimeError after ``write_eof()``. A file that turns
        out shorter than the region, or is closed before it is sent, aborts the
        connection (logged once): the peer was promised those bytes.
        """
        check_file_region(file, offset, count)
        if self._closing:
            raise ConnectionError(f"sendfile() on a closed or closing transport: {self!r}")
        if self._eof_requested:
            raise RuntimeError("sendfile() after write_eof()")
        count = region_count(file, offset, count)
        if not count:
            return
        if not self._files_queued:          # the hook: from now on the queue's writer
            self._files_queued = True
            self._buffer = SendQueue(self._buffer)
            self.reactor.add_writer(self._fileno, self._send_queued)   # replaces _write_ready
        queue = self._buffer
        queue.add_region(FileRegion(file, offset, count))
        self._follow_water_marks(len(queue))

    def _send_queued(self) -> None:
        """Writable while the write buffer is a queue: send until the kernel is full."""
        queue = self._buffer
        if self._lost or not self._files_queued:
            return
        sock = self._sock
        counted = sock.sent if sock.__class__ is _CountingSocket else 0
        try:
            sent = queue.send(sock)
        except (OSError, ValueError, EOFError) as exc:   # the socket's, or the file's
            self._fatal_error(exc, "sendfile")
            return
        if sock.__class__ is _CountingSocket:
            sock.sent = counted + sent          # os.sendfile went around its send()
        if sent:
            self._last_activity = self.reactor.turn_time
        if not queue:
            self._buffer = bytearray()                  # drained: back to the bytes path
            self._files_queued = False
            self.reactor.remove_writer(self._fileno)
        self._follow_water_marks(len(self._buffer))    # resume_writing: it may write or queue more
        if not (self._buffer or self._lost):
            self._flushed()

    # ------------------------------------------------------------------
    # Closing
    # ------------------------------------------------------------------
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``'peername'``, ``'sockname'``, ``'socket'``, and ``'server'``: the server
        that accepted the connection (None for ``connect()``), which a handler asks
        ``is_closed()`` when its connection ends (how ``server_close()`` ends a
        StreamHandler's ``handle()``, through any layers: they pass the name down)."""
        if name == "server":
            return self._server if self._server is not None else default
        return super().get_extra_info(name, default)

    def _send_what_fits(self) -> None:
        """``close_now()``'s last flush: what the kernel did not take is logged."""
        if self._buffer:
            if self._files_queued:
                self._send_queued()
            else:
                self._write_ready()
        unsent = len(self._buffer)
        if unsent and not self._lost:
            logger.warning("%r: closed with the server; %d buffered bytes dropped", self, unsent)

    def _fatal_error(self, exc: BaseException, where: str) -> None:
        if isinstance(exc, _PEER_GONE):
            logger.debug("%r: %s failed: %s", self, where, exc)
        else:
            logger.warning("%r: %s failed: %s", self, where, exc)
        self._force_close(exc)

    def _handler_failed(self, exc: BaseException, method: str) -> None:
        """One place where a handler's exception is logged, once, and costs its
        connection. SystemExit and KeyboardInterrupt are not logged (they stop the
        program, whoever catches them reports them): the connection is aborted,
        so nothing is left half-registered, then they propagate."""
        self.handler_failed = True
        if isinstance(exc, PROPAGATE):
            self._force_close(exc)
            raise exc
        logger.error("%r: handler %s() raised; aborting this connection", self, method, exc_info=exc)
        self._force_close(exc)

    def _call_handler(self, method: str, *args: Any) -> None:
        try:
            getattr(self._handler, method)(*args)
        except BaseException as exc:
            self._handler_failed(exc, method)

    def _drop_pending(self) -> None:
        self._buffer = bytearray()      # file regions too; their files stay open (the caller's)
        self._files_queued = False
        self._drain_waiters = None
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        timers, self._timers = self._timers, None
        for timer in timers or ():
            timer.cancel()

    def _force_close(self, exc: Optional[BaseException], linger: bool = False) -> None:
        if not self._lost:      # both names outlive the socket, as in asyncio: connection_lost may log them
            self.get_extra_info("peername")
            if self._sockname is None:      # a stream socket's is fixed: the server may have said it
                self.get_extra_info("sockname")
            if self._server is not None:
                self.count_bytes()  # and the byte counts, while the kernel has them (for stats())
        super()._force_close(exc, linger)

    def _close_socket(self, linger: bool) -> None:
        """A flushed ``close()`` waits for the peer's FIN, unless it came already."""
        if linger and not self._eof_received:
            _close_after_peer(self.reactor, self._sock)
        else:
            self._sock.close()

    def _check_idle(self) -> None:
        """Close after ``idle_timeout`` seconds with no byte either way.

        One timer per connection, pushed back lazily: activity only stamps a
        time, and the timer re-arms itself for the remainder when it fires. A
        connection already closing but unable to flush (a peer that does not
        read) is aborted at its next idle deadline.
        """
        self._idle_timer = None
        timeout = self._idle_timeout
        if self._lost or timeout is None:
            return
        idle_for = self.reactor.time() - self._last_activity
        if idle_for < timeout:
            self._idle_timer = self.reactor.call_later(timeout - idle_for, self._check_idle)
            return
        logger.debug("%r: idle for %.1f s, closing", self, idle_for)
        if self._closing:
            self.abort()
        else:
            self.close()
            if not self._lost:
                self._last_activity = self.reactor.time()
                self._idle_timer = self.reactor.call_later(timeout, self._check_idle)


#: Longest time a closed connection waits for its peer's FIN before its socket closes.
LINGER_SECONDS = 2.0


def _close_after_peer(reactor: Any, sock: socket.socket) -> None:
    """Close ``sock`` without losing what we sent: FIN now, close after the peer's FIN.

    Why not just ``close()``: if bytes from the peer are unread when a socket
    closes (a pipelined request, data sent while we were closing), Linux
    answers with RST at once, which throws away what is still in our send
    queue and can make the peer discard what it has not read yet: the tail of
    our reply. So we half-close (the peer reads our data, then EOF), keep
    reading and discarding, and close once the peer closes too, or after
    ``LINGER_SECONDS`` at most, as web servers do ("lingering close"). The
    handler has already been told ``connection_lost``; the reactor closes any
    lingering socket when it is closed itself.
    """
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        sock.close()              # already reset: nothing left to protect
        return
    fileno = sock.fileno()

    def finish() -> None:
        timer.cancel()
        reactor.forget_in_flight(fileno)
        reactor.remove_reader(fileno)
        sock.close()

    def discard() -> None:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            finish()

    reactor.add_reader(fileno, discard)
    timer = reactor.call_later(LINGER_SECONDS, finish)
    reactor.track_in_flight(fileno, finish)
