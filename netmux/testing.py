"""Testing handlers without sockets: in-memory transports on virtual time.

Where it sits: beside the front doors, for tests. ``drive()`` makes one
handler on a ``MemoryTransport``, feeds it a script of chunks, runs a real
``Reactor`` on a ``VirtualClock`` until nothing more can happen, and returns a
``Conversation``: what the handler wrote, whether it closed, what
``connection_lost`` got. ``pair()`` wires two handlers to each other the same
way. ``chunkings()`` and ``streams()`` are hypothesis strategies that cut a
byte stream every way a kernel may, so a test catches the first bug of network
code: taking one ``recv()`` for one message.

What it models, TCPTransport's contract (``netmux.Transport``):

* each chunk is one ``data_received``, one per turn of the loop (as one read
  event per turn), then ``eof_received`` once every chunk is in, and its falsy
  return closes after flushing; nothing is delivered while the handler has
  paused reading, has yielded its turn (``yield_turn``: until the continuation
  has run) or is closing: the chunks wait, as in a kernel buffer;
* the connection's own timers (``call_later``: on the virtual clock, cancelled
  at close) and ``when_drained``, with TCPTransport's rules;
* ``write`` and friends with TCPTransport's errors (TypeError, ConnectionError
  once closing or lost, RuntimeError after ``write_eof``), ``close`` flushes
  then closes, ``abort`` drops, ``connection_lost`` exactly once on a later turn;
  a handler's exception is logged once on the ``netmux`` logger and aborts the
  connection;
* flow control: a peer that reads takes every write at once; one that does not
  (``peer_reads=False``, or not yet: a number of seconds) leaves the bytes in the
  write buffer, so ``pause_writing`` fires above the high-water mark and
  ``resume_writing`` once the peer reads;
* a server's drain, as a handler sees it (``drain_at=``, ``grace=``): its
  ``drain_started()`` once (``start_drain``), then, if it has not closed within
  the grace period, the connection closed under it (what the peer took is
  kept, the rest dropped, ``connection_lost(None)``), as ``close_now`` does.

What it does not model: a kernel. There are no partial sends (a write is all
taken or, with a non-reading peer, all buffered), no socket buffers of finite
size between ``pair()``'s two ends, no resets racing with data, no socket
(``get_extra_info('socket')`` is the default).

Virtual time: the reactor is an ordinary ``Reactor`` whose clock only moves
when ``run_until_quiet`` moves it. Each step runs one turn; when no callback is
queued, the clock jumps to the earliest timer, so a 30 s timeout (or
``netmux.sleep(30)``) takes one jump and no real time. The run ends when no
callback and no timer is left (I/O is not waited for), or at ``until``. A
timer that re-arms itself forever would never end it: after ``max_jumps``
jumps (10,000 by default) without reaching ``until``, ``NotQuietError`` says so
instead of hanging.

hypothesis is imported only by ``chunkings()`` and ``streams()``; the rest of
the module needs nothing but the standard library. Pinned by
tests/test_testing.py.
"""
from __future__ import annotations

import logging
import math
import os
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

from .errors import PROPAGATE, lost_reason
from .framing import BytesLike
from .reactor import Reactor, Timer
from .sendfile import check_file_region
from .transport import byte_view, water_marks

__all__ = [
    "drive", "pair", "Conversation", "Pair", "MemoryTransport", "VirtualClock",
    "run_until_quiet", "NotQuietError", "chunkings", "streams", "Stream",
]

logger = logging.getLogger("netmux")

#: Timer jumps ``run_until_quiet`` allows before deciding the run never ends.
MAX_JUMPS = 10_000
#: Turns of the loop it allows (a callback that re-queues itself forever).
MAX_TURNS = 1_000_000

#: The addresses ``get_extra_info`` reports (TEST-NET-1, RFC 5737: never real).
CLIENT_ADDRESS = ("192.0.2.2", 50000)
SERVER_ADDRESS = ("192.0.2.1", 8007)


def _as_bytes(data: Any) -> bytes:
    """A copy of any bytes-like object; TCPTransport's TypeError for anything else."""
    return bytes(byte_view(data))


# ----------------------------------------------------------------------
# Virtual time
# ----------------------------------------------------------------------
class VirtualClock:
    """A clock that moves only when told: ``Reactor(clock=VirtualClock())``."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds`` (not negative, not NaN)."""
        if not seconds >= 0:
            raise ValueError(f"a clock only moves forward, not by {seconds!r}")
        self.now += seconds

    def __repr__(self) -> str:
        return f"<VirtualClock now={self.now:.6f}>"


class NotQuietError(RuntimeError):
    """``run_until_quiet`` gave up: callbacks or timers kept coming past its bounds."""


def run_until_quiet(reactor: Reactor, clock: VirtualClock, *, until: Optional[float] = None,
                    max_jumps: int = MAX_JUMPS, max_turns: int = MAX_TURNS) -> None:
    """Run ``reactor`` (made with ``clock=clock``) until nothing more can happen.

    Each step is one ``run_once(0)``: it polls file descriptors without
    waiting, then runs due timers and queued callbacks. When nothing is queued
    the clock jumps to the earliest timer. It returns when no callback and no
    timer is left, or when the next timer is after ``until`` (a time on
    ``clock``; the clock is then left at ``until``). Sockets are polled but never
    waited for: use it where every byte is already queued, as in memory.

    Raises NotQuietError after ``max_jumps`` jumps or ``max_turns`` turns, a
    ValueError for a NaN ``until``.
    """
    if until is not None and math.isnan(until):
        raise ValueError("until must be a time, not NaN")
    jumps = 0
    for _ in range(max_turns):
        reactor.run_once(0)
        deadline = reactor.next_deadline()
        if deadline is None:
            return
        if deadline > clock.now:
            if until is not None and deadline > until:
                clock.now = max(clock.now, until)
                return
            if jumps == max_jumps:
                raise NotQuietError(
                    f"still busy after {max_jumps} timer jumps (virtual time {clock.now:g} s): "
                    "a timer that re-arms itself forever? pass until= to stop at a time")
            jumps += 1
            clock.now = deadline
    raise NotQuietError(f"still busy after {max_turns} turns: a callback that re-queues itself forever?")


# ----------------------------------------------------------------------
# The in-memory transport
# ----------------------------------------------------------------------
class MemoryTransport:
    """A stream transport with TCPTransport's semantics and no socket.

    Made by ``drive()`` and ``pair()``; a handler gets it in
    ``connection_made``. What the handler wrote is in ``writes``; the incoming
    side is a queue of chunks delivered one per turn while reading.
    """

    def __init__(self, reactor: Reactor, handler: Any, *, peername: Any = CLIENT_ADDRESS,
                 sockname: Any = SERVER_ADDRESS, peer_reads: bool = True) -> None:
        self.reactor = reactor
        self._handler = handler
        self._peername, self._sockname = peername, sockname
        self.peer_reads = peer_reads      # False: written bytes stay in the buffer
        #: Every write the handler made (bytes-like copied), in order.
        self.writes: List[bytes] = []
        #: What left the buffer toward the peer.
        self.sent = bytearray()
        #: ``(virtual time, event, detail)`` for each thing that happened.
        self.events: List[Tuple[float, str, Any]] = []
        self._buffer = bytearray()
        self._high_water, self._low_water = water_marks()
        self._writing_paused = False
        self._drain_waiters: List[List[Any]] = []    # when_drained() callbacks waiting
        self._timers: List[Timer] = []                # call_later()'s, cancelled on close
        self._reading = True
        self._closing = self._lost = self._lost_called = False
        self._lost_exc: Optional[Exception] = None
        self.aborted = False
        self._eof_requested = self.eof_written = False
        self._eof_received = False
        self._inbound: Deque[bytes] = deque()
        self._inbound_eof = False
        self._pump_queued = False
        self._yields = 0                  # continuations queued by yield_turn()
        self._draining = False            # start_drain() was called
        self._grace_timer: Optional[Timer] = None   # the drain's deadline (drive's grace=)
        # Where bytes and our FIN go once sent (pair() wires these to the other end).
        self._on_sent: Optional[Callable[[bytes], None]] = None
        self._on_eof: Optional[Callable[[], None]] = None
        self._fin_sent = False

    def __repr__(self) -> str:
        state = "lost" if self._lost else "closing" if self._closing else "open"
        return f"<MemoryTransport {state} peer={self._peername}>"

    def _log(self, event: str, detail: Any = None) -> None:
        self.events.append((self.reactor.time(), event, detail))

    # ------------------------------------------------------------------
    # Handler calls: one place catches, logs once, aborts
    # ------------------------------------------------------------------
    def _call(self, method: str, *args: Any) -> Tuple[bool, Any]:
        return self._call_function(getattr(self._handler, method), method, *args)

    def _call_function(self, function: Callable[..., Any], name: str, *args: Any) -> Tuple[bool, Any]:
        """TCPTransport's rule: any exception costs the connection (logged once);
        SystemExit and KeyboardInterrupt abort it too, then propagate."""
        try:
            return True, function(*args)
        except BaseException as exc:
            self._log("handler_error", exc)
            self.aborted = True
            if isinstance(exc, PROPAGATE):
                self._force_close(exc)
                raise
            logger.error("%r: handler %s() raised; aborting this connection", self, name, exc_info=exc)
            self._force_close(exc)
            return False, None

    def start(self) -> None:
        """``connection_made``, then deliver whatever is queued, from the next turn on."""
        self._log("connection_made")
        ok, _ = self._call("connection_made", self)
        if ok:
            self._queue_pump()

    # ------------------------------------------------------------------
    # Incoming: a queue of chunks, one data_received per turn
    # ------------------------------------------------------------------
    def _receive(self, chunk: bytes) -> None:
        if chunk and not self._lost and not self._inbound_eof:
            self._inbound.append(chunk)
            self._queue_pump()

    def _receive_eof(self) -> None:
        if not self._lost:
            self._inbound_eof = True
            self._queue_pump()

    def _queue_pump(self) -> None:
        if (not self._pump_queued and self.is_reading() and not self._yields
                and not self._eof_received and (self._inbound or self._inbound_eof)):
            self._pump_queued = True
            self.reactor.call_soon(self._pump)

    def _pump(self) -> None:
        self._pump_queued = False
        if not self.is_reading() or self._yields or self._eof_received:
            return
        if self._inbound:
            chunk = self._inbound.popleft()
            self._log("data_received", len(chunk))
            self._call("data_received", chunk)
            self._queue_pump()
        elif self._inbound_eof:
            self._eof_received = True
            self._log("eof_received")
            ok, keep_open = self._call("eof_received")
            if ok and not keep_open:
                self.close()

    @property
    def pending(self) -> List[bytes]:
        """Chunks not delivered yet (held while reading is paused or after close)."""
        return list(self._inbound)

    def pause_reading(self) -> None:
        """Stop delivering chunks until ``resume_reading()``; they wait meanwhile."""
        self._log("pause_reading")
        self._reading = False

    def resume_reading(self) -> None:
        """Deliver again, from the next turn."""
        self._log("resume_reading")
        self._reading = True
        if not self._lost:
            self._queue_pump()

    def is_reading(self) -> bool:
        """True while incoming data is delivered (not paused, not closing)."""
        return self._reading and not self._closing

    def yield_turn(self, callback: Callable[..., Any], *args: Any) -> None:
        """``callback(*args)`` on the next turn, no chunk delivered until it has run
        without yielding again (TCPTransport's fairness contract)."""
        if self._closing:
            return
        self._log("yield_turn")
        self._yields += 1
        self.reactor.call_soon(self._continue_turn, callback, args)

    def _continue_turn(self, callback: Callable[..., Any], args: Tuple[Any, ...]) -> None:
        self._yields -= 1
        if self._closing:
            return
        name = getattr(callback, "__name__", "yield_turn callback")
        ok, _ = self._call_function(callback, name, *args)
        if ok and not self._lost:
            self._queue_pump()

    # ------------------------------------------------------------------
    # Outgoing
    # ------------------------------------------------------------------
    def write(self, data: BytesLike) -> None:
        """Record ``data`` and send it (or buffer it while the peer does not read).

        TypeError for anything not bytes-like, ConnectionError once closing or
        lost, RuntimeError after ``write_eof()``: TCPTransport's rules, in its order.
        """
        data = _as_bytes(data)
        if self._closing:
            raise ConnectionError(f"write() on a closed or closing transport: {self!r}")
        if self._eof_requested:
            raise RuntimeError("write() after write_eof()")
        if not data:
            return
        self.writes.append(data)
        self._buffer += data
        self._flush()
        if len(self._buffer) > self._high_water and not self._lost:
            self._pause_writing()

    def writelines(self, chunks: Iterable[BytesLike]) -> None:
        """Joined first, then one ``write``, as TCPTransport does."""
        self.write(b"".join(chunks))

    def sendfile(self, file: Any, offset: int = 0, count: Optional[int] = None) -> None:
        """Write ``count`` bytes of ``file`` from ``offset`` (to its end when None), read
        now; the file stays open and its position is unchanged. TCPTransport's errors,
        in its order."""
        check_file_region(file, offset, count)
        if self._closing:
            raise ConnectionError(f"sendfile() on a closed or closing transport: {self!r}")
        if self._eof_requested:
            raise RuntimeError("sendfile() after write_eof()")
        self.write(_read_region(file, offset, count))

    def _flush(self) -> None:
        """A reading peer takes the whole buffer: send it, then what waited for the flush."""
        if not self.peer_reads or self._lost or not self._buffer:
            return
        data = bytes(self._buffer)
        self._buffer.clear()
        self.sent += data
        if self._on_sent is not None:
            self._on_sent(data)
        self._resume_writing()
        if self._buffer or self._lost:
            return
        if self._closing:
            self._force_close(None)
        elif self._eof_requested:
            self._send_eof()

    def _peer_starts_reading(self) -> None:
        self._log("peer_reads")
        self.peer_reads = True
        self._flush()

    def write_eof(self) -> None:
        """Half-close once everything written is sent; reading goes on."""
        if self._closing or self._eof_requested:
            return
        self._log("write_eof")
        self._eof_requested = True
        if not self._buffer:
            self._send_eof()

    def _send_eof(self) -> None:
        self.eof_written = True
        self._send_fin()

    def _send_fin(self) -> None:
        if not self._fin_sent:
            self._fin_sent = True
            if self._on_eof is not None:
                self._on_eof()

    def can_write_eof(self) -> bool:
        """Always True, as for TCP."""
        return True

    # ------------------------------------------------------------------
    # Flow control
    # ------------------------------------------------------------------
    def get_write_buffer_size(self) -> int:
        """Bytes written but not taken by the peer yet."""
        return len(self._buffer)

    def get_write_buffer_limits(self) -> Tuple[int, int]:
        """``(low, high)``."""
        return (self._low_water, self._high_water)

    def set_write_buffer_limits(self, high: Optional[int] = None, low: Optional[int] = None) -> None:
        """Set the marks (default high 64 KiB, low ``high // 4``); may pause or resume at once."""
        self._high_water, self._low_water = high, low = water_marks(high, low)
        if len(self._buffer) > high:
            self._pause_writing()
        else:
            self._resume_writing()

    def _pause_writing(self) -> None:
        if not self._writing_paused:
            self._writing_paused = True
            self._log("pause_writing")
            self._call("pause_writing")

    def _resume_writing(self) -> None:
        """``resume_writing`` once the buffer is at or below the low mark again; then
        the ``when_drained`` callbacks."""
        if self._writing_paused and len(self._buffer) <= self._low_water:
            self._writing_paused = False
            self._log("resume_writing")
            self._call("resume_writing")
        if self._drain_waiters and len(self._buffer) <= self._low_water and not self._lost:
            waiters, self._drain_waiters = self._drain_waiters, []
            for entry in waiters:
                if entry and not self._lost:
                    self._call_function(entry[0], "when_drained callback")

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer:
        """A timer of the connection's on the virtual clock: TCPTransport's contract
        (cancelled when the connection closes; an exception costs the connection)."""
        timer = self.reactor.call_later(delay, self._deadline, callback, args)
        if self._closing:
            timer.cancel()
        else:
            self._timers = [kept for kept in self._timers if kept.pending()] + [timer]
        return timer

    def _deadline(self, callback: Callable[..., Any], args: Tuple[Any, ...]) -> None:
        if not self._closing:
            self._call_function(callback, getattr(callback, "__name__", "call_later callback"), *args)

    def when_drained(self, callback: Callable[[], Any]) -> Callable[[], None]:
        """``callback()`` once the buffer is at or below the low mark (next turn if
        it is already); returns a cancel. TCPTransport's contract."""
        if len(self._buffer) <= self._low_water:
            return self.reactor.call_soon(callback).cancel
        entry: List[Any] = [callback]
        self._drain_waiters.append(entry)
        return entry.clear

    # ------------------------------------------------------------------
    # A server's drain, as the handler sees it
    # ------------------------------------------------------------------
    def start_drain(self) -> None:
        """TCPTransport's: one chunk the peer sent is delivered first, then the
        handler's ``drain_started()`` (if it has one), once, not on a closing
        connection; its exception costs the connection."""
        if self._draining or self._closing:
            return
        self._draining = True
        if self._inbound and self.is_reading() and not self._yields and not self._eof_received:
            self._pump()          # TCPTransport reads what the peer sent before telling the handler
            if self._closing:
                return
        self._log("drain_started")
        drain_started = getattr(self._handler, "drain_started", None)
        if drain_started is not None:
            self._call_function(drain_started, "drain_started")

    def _grace_over(self) -> None:
        """The grace period ended with the connection open: closed under the handler."""
        if not self._lost:
            self._log("grace_over")
            self._flush()
            self._force_close(None)

    # ------------------------------------------------------------------
    # Closing, exactly once
    # ------------------------------------------------------------------
    def close(self) -> None:
        """Stop reading, send everything buffered, then close."""
        if self._closing:
            return
        self._log("close")
        self._closing = True
        if not self._buffer:
            self._force_close(None)

    def abort(self) -> None:
        """Close now, dropping the buffer."""
        if not self._lost:
            self._log("abort")
            self.aborted = True
        self._force_close(None)

    def is_closing(self) -> bool:
        """True once ``close()`` or ``abort()`` was called or the connection was lost."""
        return self._closing

    def _force_close(self, exc: Optional[BaseException]) -> None:
        if self._lost:
            return
        self._lost = self._closing = True
        self._lost_exc = lost_reason(exc)
        self._buffer.clear()
        self._inbound.clear()
        self._drain_waiters = []
        for timer in self._timers:
            timer.cancel()
        self._timers = []
        if self._grace_timer is not None:
            self._grace_timer.cancel()
        self._send_fin()
        if self.reactor.is_closed():
            self._call_connection_lost()
        else:
            self.reactor.call_soon(self._call_connection_lost)

    def _call_connection_lost(self) -> None:
        if self._lost_called:
            return
        self._lost_called = True
        self._log("connection_lost", self._lost_exc)
        try:
            self._handler.connection_lost(self._lost_exc)
        except PROPAGATE:
            raise
        except BaseException:
            logger.exception("%r: handler connection_lost() raised", self)

    # ------------------------------------------------------------------
    # Introspection
    # ------------------------------------------------------------------
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``'peername'`` and ``'sockname'`` (made-up addresses); there is no ``'socket'``."""
        if name == "peername":
            return self._peername
        if name == "sockname":
            return self._sockname
        return default

    def get_protocol(self) -> Any:
        """The handler this transport delivers to."""
        return self._handler


def _read_region(file: Any, offset: int, count: Optional[int]) -> bytes:
    """``count`` bytes of ``file`` from ``offset`` (to its end when None), its position kept."""
    try:
        fileno = file.fileno()
    except (AttributeError, OSError):
        fileno = None
    if fileno is None:                                   # io.BytesIO and the like
        position = file.tell()
        try:
            file.seek(offset)
            data: bytes = file.read() if count is None else file.read(count)
            return data
        finally:
            file.seek(position)
    if count is None:
        count = max(os.fstat(fileno).st_size - offset, 0)
    pieces = []
    while count > 0:
        piece = os.pread(fileno, min(count, 1 << 20), offset)
        if not piece:
            break
        pieces.append(piece)
        offset += len(piece)
        count -= len(piece)
    return b"".join(pieces)


# ----------------------------------------------------------------------
# What happened
# ----------------------------------------------------------------------
@dataclass
class Conversation:
    """What one handler did, as ``drive()`` or ``pair()`` saw it once all was quiet."""

    written: bytes                        #: everything the handler wrote, in order
    writes: List[bytes]                   #: the same, one item per write
    sent: bytes                           #: what the peer took (all of it unless it did not read)
    closed: bool                          #: close() or abort() was called, or the connection was lost
    aborted: bool                         #: abort() was called, or a handler exception aborted it
    eof_written: bool                     #: write_eof() was called and its FIN went out
    lost: bool                            #: connection_lost() was called
    lost_exc: Optional[Exception]         #: what connection_lost() got
    reads_paused: bool                    #: the handler left reading paused
    pending: List[bytes]                  #: chunks never delivered
    buffered: int                         #: bytes left in the write buffer
    time: float                           #: virtual seconds that passed
    handler: Any = field(repr=False)
    transport: MemoryTransport = field(repr=False)
    events: List[Tuple[float, str, Any]] = field(repr=False, default_factory=list)

    @classmethod
    def _of(cls, transport: MemoryTransport, elapsed: float) -> "Conversation":
        return cls(
            written=b"".join(transport.writes), writes=list(transport.writes), sent=bytes(transport.sent),
            closed=transport.is_closing(), aborted=transport.aborted, eof_written=transport.eof_written,
            lost=transport._lost_called, lost_exc=transport._lost_exc, reads_paused=not transport._reading,
            pending=transport.pending, buffered=transport.get_write_buffer_size(), time=elapsed,
            handler=transport.get_protocol(), transport=transport, events=list(transport.events))


def _peer_reads_delay(peer_reads: Union[bool, float]) -> Optional[float]:
    """None for True/False; else the seconds after which the peer starts reading."""
    if isinstance(peer_reads, bool):
        return None
    if not peer_reads >= 0:
        raise ValueError(f"peer_reads must be True, False or seconds >= 0, not {peer_reads!r}")
    return float(peer_reads)


def _schedule_drain(reactor: Reactor, transport: MemoryTransport, drain_at: Optional[float],
                    grace: float) -> None:
    """At virtual time ``drain_at`` a drain begins; ``grace`` seconds later it closes what is left."""
    if drain_at is None:
        return
    if not (drain_at >= 0 and grace >= 0):
        raise ValueError(f"drain_at and grace must be seconds >= 0, not {drain_at!r} and {grace!r}")

    def begin() -> None:
        transport.start_drain()
        if math.isfinite(grace) and not transport._lost:    # cancelled if it closes first
            transport._grace_timer = reactor.call_later(grace, transport._grace_over)

    reactor.call_at(drain_at, begin)


def drive(handler_factory: Callable[[], Any], chunks: Iterable[Any], *, eof: bool = True,
          peer_reads: Union[bool, float] = True, until: Optional[float] = None,
          max_jumps: int = MAX_JUMPS, drain_at: Optional[float] = None,
          grace: float = math.inf) -> Conversation:
    """Run one handler against a scripted peer, with no socket, on virtual time.

    ``handler_factory()`` is called once (its exception propagates); the
    handler gets a ``MemoryTransport`` in ``connection_made``. Each chunk of
    ``chunks`` (bytes-like; empty ones are skipped, as no read returns zero
    bytes) becomes one ``data_received``, one per turn; then, when ``eof``,
    ``eof_received``. Every callback, timer and coroutine runs until nothing
    more can happen, or until virtual time ``until`` (seconds from the start).

    ``peer_reads``: True, the peer takes every write at once; False, it never
    reads (writes stay buffered: ``pause_writing`` fires above high water); a
    number, it starts reading after that many virtual seconds.

    ``drain_at``: the server begins a drain at that virtual time (the handler's
    ``drain_started()``); ``grace`` seconds later (inf: never) the connection is
    closed if the handler has not closed it, as ``shutdown(grace=...)`` does.

    Raises NotQuietError when timers keep coming forever (see ``run_until_quiet``).
    The reactor is closed before returning; the Conversation is taken just before.
    """
    script = [_as_bytes(chunk) for chunk in chunks]
    delay = _peer_reads_delay(peer_reads)
    clock = VirtualClock()
    reactor = Reactor(clock=clock)
    try:
        handler = handler_factory()
        transport = MemoryTransport(reactor, handler, peer_reads=peer_reads is True)
        for chunk in script:
            transport._receive(chunk)
        if eof:
            transport._receive_eof()
        if delay is not None:
            reactor.call_later(delay, transport._peer_starts_reading)
        _schedule_drain(reactor, transport, drain_at, grace)
        transport.start()
        run_until_quiet(reactor, clock, until=until, max_jumps=max_jumps)
        return Conversation._of(transport, clock.now)
    finally:
        reactor.close()


# ----------------------------------------------------------------------
# Two handlers, wired to each other
# ----------------------------------------------------------------------
@dataclass
class Pair:
    """The two ends ``pair()`` ran: handlers and their conversations."""

    client: Any
    server: Any
    client_conversation: Conversation
    server_conversation: Conversation
    time: float


def _wire(sender: MemoryTransport, receiver: MemoryTransport,
          cut: Optional[Callable[[bytes], Sequence[bytes]]], failures: List[BaseException]) -> None:
    """Bytes ``sender`` sends reach ``receiver`` on a later turn, cut by ``cut``; so does its FIN.

    What is sent within one turn arrives together (a real peer's recv may
    coalesce writes), then ``cut`` splits it into the chunks delivered.
    """
    waiting = bytearray()
    state = {"queued": False, "eof": False}

    def deliver() -> None:
        state["queued"] = False
        if waiting:
            data = bytes(waiting)
            waiting.clear()
            pieces = [data] if cut is None else [_as_bytes(piece) for piece in cut(data)]
            if b"".join(pieces) != data:
                failures.append(ValueError(f"cut() must return pieces that join back into its input; "
                                           f"got {pieces!r} for {data!r}"))
                return
            for piece in pieces:
                receiver._receive(piece)
        if state["eof"]:
            receiver._receive_eof()

    def queue() -> None:
        if not state["queued"]:
            state["queued"] = True
            sender.reactor.call_soon(deliver)

    def on_sent(data: bytes) -> None:
        waiting.extend(data)
        queue()

    def on_eof() -> None:
        state["eof"] = True
        queue()

    sender._on_sent, sender._on_eof = on_sent, on_eof


def pair(client_factory: Callable[[], Any], server_factory: Callable[[], Any], *,
         cut: Optional[Callable[[bytes], Sequence[bytes]]] = None, until: Optional[float] = None,
         max_jumps: int = MAX_JUMPS, drain_at: Optional[float] = None, grace: float = math.inf) -> Pair:
    """Run a client handler against a server handler through memory, on virtual time.

    Each side's writes reach the other on a later turn, what one turn sent
    arriving together, split by ``cut(data) -> list of pieces`` when given
    (the pieces must join back into ``data``): ``cut=lambda d: [d[i:i+1] for i
    in range(len(d))]`` delivers byte by byte. A FIN (``write_eof``, ``close``,
    ``abort``) reaches the other side as EOF after the bytes before it; bytes
    sent to a side that has closed are dropped. The server's ``connection_made``
    runs first. Runs until quiet, as ``drive()``; ValueError for a bad ``cut``.
    ``drain_at`` and ``grace``: the server side's drain, as ``drive()``'s.
    """
    clock = VirtualClock()
    reactor = Reactor(clock=clock)
    failures: List[BaseException] = []
    try:
        server = server_factory()
        client = client_factory()
        server_side = MemoryTransport(reactor, server, peername=CLIENT_ADDRESS, sockname=SERVER_ADDRESS)
        client_side = MemoryTransport(reactor, client, peername=SERVER_ADDRESS, sockname=CLIENT_ADDRESS)
        _wire(server_side, client_side, cut, failures)
        _wire(client_side, server_side, cut, failures)
        _schedule_drain(reactor, server_side, drain_at, grace)
        server_side.start()
        client_side.start()
        run_until_quiet(reactor, clock, until=until, max_jumps=max_jumps)
        if failures:
            raise failures[0]
        return Pair(client, server, Conversation._of(client_side, clock.now),
                    Conversation._of(server_side, clock.now), clock.now)
    finally:
        reactor.close()


# ----------------------------------------------------------------------
# hypothesis strategies (hypothesis is imported here only)
# ----------------------------------------------------------------------
class Stream(NamedTuple):
    """One example of ``streams()``: the messages, their encoded bytes, and the cut."""

    messages: List[Any]
    data: bytes
    chunks: List[bytes]


def chunkings(data: Any, *, max_pieces: Optional[int] = None) -> Any:
    """A hypothesis strategy for every way to cut ``data`` into non-empty pieces.

    From whole to one byte per piece; at most ``max_pieces`` pieces when given
    (an int >= 1). It shrinks toward fewer cuts, so a failure is reported with
    the fewest pieces that still break the test. Empty ``data`` gives ``[]``.
    """
    from hypothesis import strategies as st

    data = _as_bytes(data)
    if max_pieces is not None and (isinstance(max_pieces, bool) or not isinstance(max_pieces, int)
                                   or max_pieces < 1):
        raise ValueError(f"max_pieces must be an int >= 1 or None, not {max_pieces!r}")
    if len(data) <= 1:
        return st.just([data] if data else [])
    most_cuts = len(data) - 1 if max_pieces is None else min(max_pieces - 1, len(data) - 1)
    cuts = st.lists(st.integers(1, len(data) - 1), unique=True, max_size=most_cuts)
    return cuts.map(lambda points: _cut_at(data, sorted(points)))


def _cut_at(data: bytes, points: List[int]) -> List[bytes]:
    edges = [0] + points + [len(data)]
    return [data[start:end] for start, end in zip(edges, edges[1:])]


def streams(messages: Any, encode: Callable[[Any], Any], *, max_messages: int = 10,
            max_pieces: Optional[int] = None) -> Any:
    """A hypothesis strategy for a stream of encoded messages cut anywhere (``Stream`` objects).

    ``messages``: a strategy for one message (lists of up to ``max_messages``
    are drawn) or a fixed sequence of messages. ``encode(message)`` gives its
    bytes (``framer.encode``, say). Each example's ``chunks`` is one way to cut
    the concatenated ``data``, as ``chunkings()``.
    """
    from hypothesis import strategies as st
    from hypothesis.strategies import SearchStrategy

    if isinstance(messages, SearchStrategy):
        lists = st.lists(messages, max_size=max_messages)
    else:
        lists = st.just(list(messages))

    @st.composite
    def draw_stream(draw: Any) -> Stream:
        drawn = draw(lists)
        data = b"".join(_as_bytes(encode(message)) for message in drawn)
        return Stream(drawn, data, draw(chunkings(data, max_pieces=max_pieces)))

    return draw_stream()
